//! `dev:`: the dev HTTP front, the file watcher and the hooks it runs.

use std::collections::HashSet;
use std::time::Duration;

use super::{BOOL, Checker, MILLIS};
use crate::config::defaults::*;
use crate::config::model::{Dev, Endpoint, Hook, Watch, ZERO_CONFIG_HTTP_LISTEN};
use crate::config::parse_endpoint;
use crate::config::raw::{RawDev, RawHook, RawWatch};

pub(super) fn read(c: &mut Checker, r: &RawDev) -> Dev {
    let enabled = c.or(key!(r.enabled), false, BOOL);
    let config_dir = c.or(key!(r.config_dir), CONFIG_DIR.into(), "a directory path");
    let embedded = c.ctx.embedded;
    let http_listen = c.get(key!(r.http_listen), "host:port, e.g. 127.0.0.1:8000");
    let http_listen = http_listen.or_else(|| embedded.then(|| ZERO_CONFIG_HTTP_LISTEN.into()));
    if let Some(h) = &http_listen
        && !matches!(parse_endpoint(c.ctx.base_dir, h), Ok(Endpoint::Tcp(_)))
    {
        let message = format!("`{h}` is not host:port");
        c.problem("http_listen", message, "write e.g. 127.0.0.1:8000");
    }
    Dev {
        enabled,
        config_dir: c.path(&config_dir),
        http_listen,
        http_listen_next_free: embedded,
        watch: c.section(key!(r.watch), watch),
        hooks: hooks(c, r),
    }
}

fn watch(c: &mut Checker, r: &RawWatch) -> Watch {
    let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    let paths: Vec<String> = c.or(key!(r.paths), strings(WATCH_PATHS), "a list of paths");
    let ignore = strings(WATCH_IGNORE);
    let ignore = c.or(key!(r.ignore), ignore, "a list of names or globs");
    let gitignore = c.or(key!(r.gitignore), true, BOOL);
    c.globs("ignore", &ignore);
    let debounce = c.ms(key!(r.debounce_ms), DEBOUNCE, 0);
    let poll = c.or(key!(r.poll_interval_ms), 0, MILLIS);
    Watch {
        paths: paths.iter().map(|p| c.path(p)).collect(),
        ignore,
        gitignore,
        debounce,
        poll_interval: (poll > 0).then(|| Duration::from_millis(poll)),
    }
}

fn hooks(c: &mut Checker, r: &RawDev) -> Vec<Hook> {
    let mut names = HashSet::new();
    c.list(key!(r.hooks), "a list of hooks", |c, i, h: &RawHook| {
        let name = c.or(key!(h.name), format!("hook{}", i + 1), "a name");
        if !names.insert(name.clone()) {
            let fix = "give each hook its own name";
            c.problem("name", format!("`{name}` is used by another hook"), fix);
        }
        let run = c.or(key!(h.run), String::new(), "a shell command");
        if run.trim().is_empty() {
            let fix = "set `run` to the command to execute, e.g. \"npm run build\"";
            c.problem("run", "is missing", fix);
        }
        let paths = c.or(key!(h.paths), Vec::new(), "a list of globs");
        if paths.is_empty() {
            let fix = "list the globs that trigger it, e.g. [\"assets/**\"]";
            c.problem("paths", "is empty: the hook would never run", fix);
        }
        c.globs("paths", &paths);
        let then = c.choice(key!(h.then)).unwrap_or(HOOK_THEN);
        Hook {
            name,
            run,
            paths,
            then,
        }
    })
}
