//! `php_fpm:`: the php-fpm tqsup runs (or forwards to), its environment and
//! php.ini settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::checker::Key;
use super::{BOOL, Checker, WHOLE, name_ok, pool};
use crate::config::defaults::*;
use crate::config::model::{Choice, Endpoint, PhpFpm, PhpSetting};
use crate::config::raw::{RawPhpFpm, Scalar};

/// `php_fpm.transport`: only checked against `listen`, which it must match.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    Unix,
}

impl Choice for Transport {
    const WHAT: &'static str = "transport";
    const WORDS: &'static [(&'static str, Self)] = &[("tcp", Self::Tcp), ("unix", Self::Unix)];
}

pub(super) fn read(c: &mut Checker, r: &RawPhpFpm) -> PhpFpm {
    let enabled = c.or(key!(r.enabled), true, BOOL);
    let binary = c.get(key!(r.binary), "a program name or path");
    let binary = binary.filter(|b| b != "auto");
    let php_ini = c.get(key!(r.php_ini), "a file path").map(|p| c.path(&p));
    if let Some(ini) = php_ini.as_ref().filter(|ini| !ini.is_file()) {
        let message = format!("{} is not a file", ini.display());
        let fix = "point it at an existing php.ini or remove the key";
        c.problem("php_ini", message, fix);
    }
    let listen = c.endpoint(key!(r.listen), "an address or socket path");
    transport_agrees(c, r, &listen);
    if !enabled && listen.is_none() {
        let message =
            "must be set when php_fpm.enabled is false (tqsup forwards to a php-fpm run elsewhere)";
        let fix = "set php_fpm.listen to that php-fpm's address, e.g. 127.0.0.1:9001";
        c.problem("listen", message, fix);
    }
    let pool = c.section(key!(r.pool), pool::read);
    let max = pool.max_children;
    let pool_size = c.or(key!(r.pool_size), max, WHOLE);
    if pool_size < 1 || pool_size > max {
        let message = format!(
            "is {pool_size}, must be from 1 to php_fpm.pool.max_children ({max}): each pooled connection pins one php-fpm child"
        );
        c.problem(
            "pool_size",
            message,
            format!("remove it (defaults to {max}) or lower it"),
        );
    }
    PhpFpm {
        enabled,
        binary,
        php_ini,
        listen,
        pool_size,
        connect_timeout: c.ms(key!(r.connect_timeout_ms), CONNECT_TIMEOUT, 1),
        request_timeout: c.ms(key!(r.request_timeout_ms), REQUEST_TIMEOUT, 1),
        read_timeout: c.ms(key!(r.read_timeout_ms), READ_TIMEOUT, 1),
        write_timeout: c.ms(key!(r.write_timeout_ms), WRITE_TIMEOUT, 1),
        document_root: document_root(c, r),
        user: account(c, key!(r.user)),
        group: account(c, key!(r.group)),
        allow_root: c.or(key!(r.allow_root), false, BOOL),
        settings: settings(c, r),
        env: env(c, r),
        pool,
    }
}

/// `transport`, when set, must name what `listen` is.
fn transport_agrees(c: &mut Checker, r: &RawPhpFpm, listen: &Option<Endpoint>) {
    let (message, fix) = match (c.choice(key!(r.transport)), listen) {
        (Some(t @ Transport::Tcp), Some(Endpoint::Unix(_)))
        | (Some(t @ Transport::Unix), Some(Endpoint::Tcp(_))) => {
            let other = if t == Transport::Tcp { "unix" } else { "tcp" };
            (
                format!("is `{}` but php_fpm.listen is a {other} address", t.word()),
                "remove `transport` (it is inferred from `listen`) or make them agree",
            )
        }
        (Some(Transport::Tcp), None) => (
            "is `tcp` but php_fpm.listen is not set (the default is a private unix socket)".into(),
            "set php_fpm.listen to host:port, e.g. 127.0.0.1:9001",
        ),
        _ => return,
    };
    c.problem("transport", message, fix);
}

/// `public` beside the config; in zero-config dev mode `./public` when it
/// exists, else the project itself.
fn document_root(c: &mut Checker, r: &RawPhpFpm) -> PathBuf {
    let base = c.ctx.base_dir;
    let root = match c.get(key!(r.document_root), "a directory path") {
        Some(d) => c.path(&d),
        None if c.ctx.embedded && !base.join(DOCUMENT_ROOT).is_dir() => base.to_path_buf(),
        None => base.join(DOCUMENT_ROOT),
    };
    if !root.is_dir() {
        let message = format!("{} does not exist or is not a directory", root.display());
        let fix = "create it, or set php_fpm.document_root to your project's public directory";
        c.problem("document_root", message, fix);
    }
    root
}

/// The pool's user or group.
fn account(c: &mut Checker, key: Key<String>) -> Option<String> {
    let id = c.get(key, "a user or group name");
    if let Some(bad) = id.as_ref().filter(|id| !name_ok(id)) {
        let message = format!("`{bad}` is not a valid user or group name");
        c.problem(key.0, message, "use a name such as www-data");
    }
    id
}

fn settings(c: &mut Checker, r: &RawPhpFpm) -> BTreeMap<String, PhpSetting> {
    let expect = "a mapping of php.ini names to values";
    let mut out = BTreeMap::new();
    for (k, v) in c.or(key!(r.settings), BTreeMap::new(), expect) {
        if !directive_ok(&k) {
            let fix = "use names like memory_limit or opcache.enable";
            let key = format!("settings.{k}");
            c.problem(&key, "is not a php.ini directive name", fix);
            continue;
        }
        let value = v.text();
        let word = value.to_ascii_lowercase();
        let flag_word = ["on", "off", "true", "false", "yes", "no"].contains(&word.as_str());
        let flag = matches!(v, Scalar::Bool(_)) || flag_word;
        out.insert(k, PhpSetting { value, flag });
    }
    out
}

/// The pool's `env[]`: tqsup's own `PHP_*` variables, then the config's.
fn env(c: &mut Checker, r: &RawPhpFpm) -> BTreeMap<String, String> {
    let expect = "a mapping of variable names to values";
    let raw = c.or(key!(r.env), BTreeMap::new(), expect);
    // A value starting with `$` is read by php-fpm as the name of one of
    // its master's environment variables, so it cannot be passed through
    // `env[]`: such PHP_* variables are left out (and `render` warns).
    let passed = |(k, v): &&(String, String)| {
        k.starts_with("PHP_")
            && !v.chars().any(char::is_control)
            && !v.starts_with('$')
            && env_name_ok(k)
    };
    let mut out: BTreeMap<_, _> = c.ctx.environment.iter().filter(passed).cloned().collect();
    for (k, v) in raw {
        let value = match v {
            Scalar::Bool(b) => if b { "1" } else { "0" }.to_string(),
            other => other.text(),
        };
        let key = format!("env.{k}");
        if !env_name_ok(&k) {
            let fix = "use letters, digits and _, not starting with a digit";
            c.problem(&key, "is not a valid environment variable name", fix);
        } else if value.starts_with('$') {
            c.problem(&key, DOLLAR, DOLLAR_FIX);
        } else {
            out.insert(k, value);
        }
    }
    out
}

const DOLLAR: &str = "starts with `$`, which php-fpm reads as the name of its master's environment variable (the value would reach PHP as that variable's value, usually empty)";
const DOLLAR_FIX: &str = "php-fpm's env[] cannot carry a value starting with `$`: change the value, or pass it another way (a file the application reads)";

/// A php.ini directive name: letters, digits, `_` and `.`.
fn directive_ok(k: &str) -> bool {
    let ok = |ch: char| ch.is_ascii_alphanumeric() || "_.".contains(ch);
    !k.is_empty() && k.chars().all(ok)
}

/// An environment variable name: letters, digits and `_`, not starting
/// with a digit.
fn env_name_ok(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}
