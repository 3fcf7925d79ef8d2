//! `dev:`: the dev HTTP front, the file watcher and the hooks it runs.

use super::*;
use crate::config::parse_endpoint;

pub(super) fn read(c: &mut Checker, r: &RawDev) -> Dev {
    let enabled = c.or(key!(r.enabled), false, BOOL);
    let config_dir = c.or(key!(r.config_dir), CONFIG_DIR.into(), "a directory path");
    let embedded = c.ctx.embedded;
    let http_listen = c.get(key!(r.http_listen), "host:port, e.g. 127.0.0.1:8000");
    let http_listen = http_listen.or_else(|| embedded.then(|| ZERO_CONFIG_HTTP_LISTEN.into()));
    if let Some(h) = &http_listen
        && !matches!(parse_endpoint(c.ctx.base_dir, h), Ok(Endpoint::Tcp(_)))
    {
        let why = format!("`{h}` is not host:port");
        c.problem("http_listen", why, "write e.g. 127.0.0.1:8000");
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
    let (paths, ignore) = (strings(WATCH_PATHS), strings(WATCH_IGNORE));
    let paths: Vec<String> = c.or(key!(r.paths), paths, "a list of paths");
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
        let why = format!("`{name}` is used by another hook");
        let fix = "give each hook its own name";
        c.require(names.insert(name.clone()), "name", why, fix);
        let run = c.or(key!(h.run), String::new(), "a shell command");
        let fix = "set `run` to the command to execute, e.g. \"npm run build\"";
        c.require(!run.trim().is_empty(), "run", "is missing", fix);
        let paths = c.or(key!(h.paths), Vec::new(), "a list of globs");
        let (why, fix) = ("is empty: the hook would never run", EMPTY_HOOK_FIX);
        c.require(!paths.is_empty(), "paths", why, fix);
        c.globs("paths", &paths);
        Hook {
            name,
            run,
            paths,
            then: c.choice(key!(h.then)).unwrap_or(HOOK_THEN),
        }
    })
}

const EMPTY_HOOK_FIX: &str = "list the globs that trigger it, e.g. [\"assets/**\"]";
