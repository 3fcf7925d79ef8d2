//! `php_fpm:`: the php-fpm tqsup runs (or forwards to), its environment and
//! php.ini settings.

use super::*;
use crate::config::defaults;

/// `php_fpm.transport`: only checked against `listen`, which it must match.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    Unix,
}

impl Choice for Transport {
    const WHAT: &'static str = "transport";
    const WORDS: &'static [(&'static str, Self)] = &[("tcp", Self::Tcp), ("unix", Self::Unix)];
}

const NO_LISTEN: &str =
    "must be set when php_fpm.enabled is false (tqsup forwards to a php-fpm run elsewhere)";
const AGREE: &str = "remove `transport` (it is inferred from `listen`) or make them agree";
const TCP_LISTEN: &str = "set php_fpm.listen to host:port, e.g. 127.0.0.1:9001";
const DOLLAR: &str = "starts with `$`, which php-fpm reads as the name of its master's environment variable (the value would reach PHP as that variable's value, usually empty)";
const DOLLAR_FIX: &str = "php-fpm's env[] cannot carry a value starting with `$`: change the value, or pass it another way (a file the application reads)";

pub(super) fn read(c: &mut Checker, r: &RawPhpFpm) -> PhpFpm {
    let enabled = c.or(key!(r.enabled), true, BOOL);
    let binary = c.get(key!(r.binary), "a program name or path");
    let binary = binary.filter(|b| b != "auto");
    let php_ini = c.get(key!(r.php_ini), "a file path").map(|p| c.path(&p));
    if let Some(ini) = php_ini.as_ref().filter(|ini| !ini.is_file()) {
        let fix = "point it at an existing php.ini or remove the key";
        c.problem("php_ini", format!("{} is not a file", ini.display()), fix);
    }
    let listen = c.endpoint(key!(r.listen), "an address or socket path");
    transport_agrees(c, r, &listen);
    let fix = "set php_fpm.listen to that php-fpm's address, e.g. 127.0.0.1:9001";
    c.require(enabled || listen.is_some(), "listen", NO_LISTEN, fix);
    let pool = c.section(key!(r.pool), pool::read);
    let max = pool.max_children;
    let pool_size = c.or(key!(r.pool_size), max, WHOLE);
    let why = format!(
        "is {pool_size}, must be from 1 to php_fpm.pool.max_children ({max}): each pooled connection pins one php-fpm child"
    );
    let fix = format!("remove it (defaults to {max}) or lower it");
    c.require((1..=max).contains(&pool_size), "pool_size", why, fix);
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
    let unset = "not set (the default is a private unix socket)";
    let (t, listen_is, fix) = match (c.choice(key!(r.transport)), listen) {
        (Some(Transport::Tcp), Some(Endpoint::Unix(_))) => ("tcp", "a unix address", AGREE),
        (Some(Transport::Unix), Some(Endpoint::Tcp(_))) => ("unix", "a tcp address", AGREE),
        (Some(Transport::Tcp), None) => ("tcp", unset, TCP_LISTEN),
        _ => return,
    };
    let why = format!("is `{t}` but php_fpm.listen is {listen_is}");
    c.problem("transport", why, fix);
}

/// `document_root`, which must be a directory.
fn document_root(c: &mut Checker, r: &RawPhpFpm) -> PathBuf {
    let root = c.get(key!(r.document_root), "a directory path");
    let root = root.map(|d| c.path(&d));
    let root = root.unwrap_or_else(|| defaults::document_root(c.ctx.base_dir, c.ctx.embedded));
    let why = format!("{} does not exist or is not a directory", root.display());
    let fix = "create it, or set php_fpm.document_root to your project's public directory";
    c.require(root.is_dir(), "document_root", why, fix);
    root
}

/// The pool's user or group.
fn account(c: &mut Checker, key: Key<String>) -> Option<String> {
    let id = c.get(key, "a user or group name");
    if let Some(bad) = id.as_ref().filter(|id| !name_ok(id, NAME)) {
        let message = format!("`{bad}` is not a valid user or group name");
        c.problem(key.0, message, "use a name such as www-data");
    }
    id
}

/// php.ini settings: a directive name each, and whether php-fpm takes the
/// value as a flag (`php_admin_flag`) or a value.
fn settings(c: &mut Checker, r: &RawPhpFpm) -> BTreeMap<String, PhpSetting> {
    let expect = "a mapping of php.ini names to values";
    let mut out = BTreeMap::new();
    for (k, v) in c.or(key!(r.settings), BTreeMap::new(), expect) {
        let value = v.text();
        let word = |w: &&str| value.eq_ignore_ascii_case(w);
        let flag = matches!(v, Scalar::Bool(_)) || FLAG_WORDS.iter().any(word);
        if name_ok(&k, "_.") {
            out.insert(k, PhpSetting { value, flag });
        } else {
            let (key, fix) = (format!("settings.{k}"), DIRECTIVE_FIX);
            c.problem(&key, "is not a php.ini directive name", fix);
        }
    }
    out
}

const DIRECTIVE_FIX: &str = "use names like memory_limit or opcache.enable";
/// The words php.ini reads as a flag.
const FLAG_WORDS: [&str; 6] = ["on", "off", "true", "false", "yes", "no"];

/// The pool's `env[]`: tqsup's own `PHP_*` variables, then the config's.
fn env(c: &mut Checker, r: &RawPhpFpm) -> BTreeMap<String, String> {
    let expect = "a mapping of variable names to values";
    let raw = c.or(key!(r.env), BTreeMap::new(), expect);
    // A value starting with `$` is read by php-fpm as the name of one of
    // its master's environment variables, so it cannot be passed through
    // `env[]`: such PHP_* variables are left out (and `render` warns).
    let passed = |(k, v): &&(String, String)| {
        k.starts_with("PHP_")
            && env_name_ok(k)
            && !v.starts_with('$')
            && !v.contains(char::is_control)
    };
    let mut out: BTreeMap<_, _> = c.ctx.environment.iter().filter(passed).cloned().collect();
    for (k, v) in raw {
        let value = match v {
            Scalar::Bool(b) => u8::from(b).to_string(),
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

/// An environment variable name: letters, digits and `_`, not starting
/// with a digit.
fn env_name_ok(k: &str) -> bool {
    name_ok(k, "_") && !k.starts_with(|ch: char| ch.is_ascii_digit())
}
