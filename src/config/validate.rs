//! From the raw layer to a [`Config`]: defaults, php-fpm's own rules, and
//! every problem collected at once (DESIGN §4).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::model::*;
use super::problem::Problem;
use super::raw::*;

/// What validation needs besides the parsed document.
pub struct Context<'a> {
    /// Relative paths resolve against this (the config file's directory).
    pub base_dir: &'a Path,
    /// The embedded default: document root `./public` if it exists, else `.`.
    pub embedded: bool,
    /// tqsup's environment; its `PHP_*` variables go to the pool's `env[]`.
    pub environment: &'a [(String, String)],
    /// Legacy key names to show instead of the mapped ones (`legacy.rs`).
    pub aliases: &'a HashMap<String, String>,
}

/// Collects problems while reading fields.
struct Checker<'a> {
    ctx: &'a Context<'a>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, message: impl Into<String>, fix: impl Into<String>) {
        let key = match self.ctx.aliases.get(key) {
            Some(legacy) => legacy.clone(),
            None => key.to_string(),
        };
        self.problems.push(Problem {
            key,
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// The field's value, or `default` when unset; a wrongly typed value is
    /// reported and replaced by the default so validation can go on.
    fn take<T: Clone>(&mut self, key: &str, field: &Field<T>, default: T, expect: &str) -> T {
        self.opt(key, field, expect).unwrap_or(default)
    }

    fn opt<T: Clone>(&mut self, key: &str, field: &Field<T>, expect: &str) -> Option<T> {
        match field {
            Field::Unset => None,
            Field::Set(v) => Some(v.clone()),
            Field::Bad { value, .. } => {
                self.problem(
                    key,
                    format!("expected {expect}, found {}", describe(value)),
                    format!("set `{}` to {expect}", leaf(key)),
                );
                None
            }
        }
    }

    fn ms(&mut self, key: &str, field: &Field<u64>, default: u64, min: u64) -> Duration {
        let v = self.take(key, field, default, "a whole number of milliseconds");
        if v < min {
            self.problem(
                key,
                format!("must be at least {min} ms, is {v}"),
                format!("set `{}` to {min} or more", leaf(key)),
            );
        }
        Duration::from_millis(v)
    }

    /// A nested section, or an empty one when unset or of the wrong type.
    fn section<T: Default + Clone>(&mut self, key: &str, field: &Field<T>) -> T {
        self.opt(key, field, "a mapping (key: value lines)")
            .unwrap_or_default()
    }

    fn unknown<T: Default + Serialize>(&mut self, section: &str, unknown: &Unknown) {
        let known = known_keys::<T>();
        for key in unknown.keys() {
            let path = join_key(section, key);
            let fix = match closest(key, &known) {
                Some(k) => format!("did you mean `{}`?", join_key(section, k)),
                None => format!("remove it; known keys here: {}", known.join(", ")),
            };
            self.problem(&path, "unknown key", fix);
        }
    }
}

fn join_key(section: &str, key: &str) -> String {
    if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    }
}

fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// The known key most like `key`, when one is close enough to be a typo.
pub fn closest<'k>(key: &str, known: &'k [String]) -> Option<&'k String> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    };
    if text.len() > 40 {
        kind.to_string()
    } else {
        format!("{kind} {text}")
    }
}

/// Reports every string (and mapping key) holding a control character: such
/// a value could smuggle a directive into the rendered php-fpm files.
fn control_characters(path: &str, value: &Value, problems: &mut Vec<Problem>) {
    let bad = |s: &str| s.chars().any(|c| c.is_control());
    match value {
        Value::String(s) if bad(s) => problems.push(Problem {
            key: path.to_string(),
            message: format!(
                "contains a control character (newline, NUL, tab, …): {}",
                Value::String(s.clone())
            ),
            fix: "remove the control characters; every value must fit on one line".into(),
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                control_characters(&format!("{path}[{i}]"), item, problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let p = join_key(path, k);
                if bad(k) {
                    problems.push(Problem {
                        key: p.escape_debug().to_string(),
                        message: "key contains a control character".into(),
                        fix: "remove the control characters from the key".into(),
                    });
                }
                control_characters(&p, v, problems);
            }
        }
        _ => {}
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    normalize(&joined)
}

/// Removes `.` components and folds `..` lexically (no symlink resolution).
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Parses `host:port`, `[v6]:port`, `/abs/path`, `unix:path` or a relative
/// path containing `/` or ending in `.sock`.
pub fn parse_endpoint(base: &Path, s: &str) -> Result<Endpoint, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("`unix:` needs a socket path after it".into());
        }
        return Ok(Endpoint::Unix(resolve(base, p)));
    }
    if s.starts_with('/') || s.starts_with("./") || s.ends_with(".sock") {
        return Ok(Endpoint::Unix(resolve(base, s)));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is neither host:port nor a socket path"))?;
    if port.parse::<u16>().is_err() {
        return Err(format!("port `{port}` is not a number from 0 to 65535"));
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    if !host_ok {
        return Err(format!("host `{host}` is not a valid host name or address"));
    }
    Ok(Endpoint::Tcp(s.to_string()))
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn scalar_text(s: &Scalar) -> String {
    match s {
        Scalar::Bool(b) => if *b { "on" } else { "off" }.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => s.clone(),
    }
}

/// Validates a parsed document (already in the tqsup schema).
pub fn validate(
    doc: &Value,
    source: Option<PathBuf>,
    ctx: &Context,
) -> Result<Config, Vec<Problem>> {
    let mut early = Vec::new();
    control_characters("", doc, &mut early);
    if !doc.is_object() && !doc.is_null() {
        early.push(Problem {
            key: "(top level)".into(),
            message: format!("expected a mapping of sections, found {}", describe(doc)),
            fix: "start the file with sections such as `php_fpm:`".into(),
        });
        return Err(early);
    }
    let raw: RawConfig = serde_json::from_value(doc.clone()).unwrap_or_default();
    let mut c = Checker {
        ctx,
        problems: early,
    };
    c.unknown::<RawConfig>("", &raw.unknown);
    let php_fpm = php_fpm(&mut c, &raw.php_fpm);
    let forward = forward(&mut c, &raw.forward);
    let supervisor = supervisor(&mut c, &raw.supervisor);
    let dev = dev(&mut c, &raw.dev);
    let admin = {
        let a = c.section("admin", &raw.admin);
        c.unknown::<RawAdmin>("admin", &a.unknown);
        let listen = c.opt(
            "admin.listen",
            &a.listen,
            "an address such as 127.0.0.1:9100",
        );
        listen.and_then(|l| endpoint(&mut c, "admin.listen", &l))
    };
    let log = log(&mut c, &raw.log);
    for (i, lane) in forward.lanes.iter().enumerate() {
        if lane.max > php_fpm.pool_size {
            c.problem(
                &format!("forward.lanes[{i}].max"),
                format!(
                    "({}) is more than php_fpm.pool_size ({}): the lane could take the whole pool and more",
                    lane.max, php_fpm.pool_size
                ),
                "make it smaller than the pool, leaving connections for everything else",
            );
        }
    }
    if c.problems.is_empty() {
        Ok(Config {
            source,
            base_dir: ctx.base_dir.to_path_buf(),
            php_fpm,
            forward,
            supervisor,
            dev,
            admin: Admin { listen: admin },
            log,
        })
    } else {
        Err(c.problems)
    }
}

/// The longest unix socket path the kernel takes (`sun_path` is 108 bytes
/// with its NUL): a longer one is silently truncated by php-fpm and fails
/// to bind or connect elsewhere.
pub const MAX_SOCKET_PATH: usize = 107;

/// Why a unix socket path cannot be used, if it cannot.
pub fn socket_path_problem(p: &Path) -> Option<String> {
    let len = p.as_os_str().len();
    (len > MAX_SOCKET_PATH).then(|| {
        format!(
            "the socket path {} is {len} bytes; the kernel takes at most {MAX_SOCKET_PATH}",
            p.display()
        )
    })
}

fn endpoint(c: &mut Checker, key: &str, s: &str) -> Option<Endpoint> {
    match parse_endpoint(c.ctx.base_dir, s) {
        Ok(Endpoint::Unix(p)) if socket_path_problem(&p).is_some() => {
            c.problem(
                key,
                socket_path_problem(&p).unwrap_or_default(),
                "use a shorter path, e.g. under /run",
            );
            None
        }
        Ok(e) => Some(e),
        Err(why) => {
            c.problem(
                key,
                why,
                "write host:port (127.0.0.1:9000) or a socket path (/run/tqsup/fcgi.sock)",
            );
            None
        }
    }
}

fn php_fpm(c: &mut Checker, field: &Field<RawPhpFpm>) -> PhpFpm {
    let r = c.section("php_fpm", field);
    c.unknown::<RawPhpFpm>("php_fpm", &r.unknown);
    let enabled = c.take("php_fpm.enabled", &r.enabled, true, "true or false");
    let binary = c
        .opt("php_fpm.binary", &r.binary, "a program name or path")
        .filter(|b| b != "auto");
    let php_ini = c
        .opt("php_fpm.php_ini", &r.php_ini, "a file path")
        .map(|p| resolve(c.ctx.base_dir, &p));
    if let Some(ini) = &php_ini
        && !ini.is_file()
    {
        c.problem(
            "php_fpm.php_ini",
            format!("{} is not a file", ini.display()),
            "point it at an existing php.ini or remove the key",
        );
    }
    let listen_text = c.opt("php_fpm.listen", &r.listen, "an address or socket path");
    let listen = listen_text.and_then(|l| endpoint(c, "php_fpm.listen", &l));
    if let Some(t) = c.opt("php_fpm.transport", &r.transport, "tcp or unix") {
        match (t.as_str(), &listen) {
            ("tcp", Some(Endpoint::Unix(_))) | ("unix", Some(Endpoint::Tcp(_))) => c.problem(
                "php_fpm.transport",
                format!(
                    "is `{t}` but php_fpm.listen is a {} address",
                    if t == "tcp" { "unix" } else { "tcp" }
                ),
                "remove `transport` (it is inferred from `listen`) or make them agree",
            ),
            ("tcp", None) => c.problem(
                "php_fpm.transport",
                "is `tcp` but php_fpm.listen is not set (the default is a private unix socket)",
                "set php_fpm.listen to host:port, e.g. 127.0.0.1:9001",
            ),
            ("tcp" | "unix", _) => {}
            _ => c.problem(
                "php_fpm.transport",
                format!("unknown transport `{t}`"),
                "use tcp or unix",
            ),
        }
    }
    if !enabled && listen.is_none() {
        c.problem(
            "php_fpm.listen",
            "must be set when php_fpm.enabled is false (tqsup forwards to a php-fpm run elsewhere)",
            "set php_fpm.listen to that php-fpm's address, e.g. 127.0.0.1:9001",
        );
    }
    let pool = pool(c, &r.pool);
    let pool_size = c.take(
        "php_fpm.pool_size",
        &r.pool_size,
        pool.max_children,
        "a whole number",
    );
    if pool_size < 1 || pool_size > pool.max_children {
        c.problem(
            "php_fpm.pool_size",
            format!(
                "is {pool_size}, must be from 1 to php_fpm.pool.max_children ({}): each pooled connection pins one php-fpm child",
                pool.max_children
            ),
            format!("remove it (defaults to {}) or lower it", pool.max_children),
        );
    }
    let connect_timeout = c.ms("php_fpm.connect_timeout_ms", &r.connect_timeout_ms, 1000, 1);
    let request_timeout = c.ms(
        "php_fpm.request_timeout_ms",
        &r.request_timeout_ms,
        60000,
        1,
    );
    let read_timeout = c.ms("php_fpm.read_timeout_ms", &r.read_timeout_ms, 30000, 1);
    let write_timeout = c.ms("php_fpm.write_timeout_ms", &r.write_timeout_ms, 30000, 1);
    let document_root = match c.opt(
        "php_fpm.document_root",
        &r.document_root,
        "a directory path",
    ) {
        Some(d) => resolve(c.ctx.base_dir, &d),
        None if c.ctx.embedded => {
            let public = c.ctx.base_dir.join("public");
            if public.is_dir() {
                public
            } else {
                c.ctx.base_dir.to_path_buf()
            }
        }
        None => c.ctx.base_dir.join("public"),
    };
    if !document_root.is_dir() {
        c.problem(
            "php_fpm.document_root",
            format!(
                "{} does not exist or is not a directory",
                document_root.display()
            ),
            "create it, or set php_fpm.document_root to your project's public directory",
        );
    }
    let mut ids = |key: &str, f: &Field<String>| {
        let v = c.opt(key, f, "a user or group name");
        if let Some(name) = &v
            && !name_ok(name)
        {
            c.problem(
                key,
                format!("`{name}` is not a valid user or group name"),
                "use a name such as www-data",
            );
        }
        v
    };
    let user = ids("php_fpm.user", &r.user);
    let group = ids("php_fpm.group", &r.group);
    let allow_root = c.take("php_fpm.allow_root", &r.allow_root, false, "true or false");
    let settings = settings(c, &r.settings);
    let env = env(c, &r.env);
    PhpFpm {
        enabled,
        binary,
        php_ini,
        listen,
        pool_size,
        connect_timeout,
        request_timeout,
        read_timeout,
        write_timeout,
        document_root,
        user,
        group,
        allow_root,
        settings,
        env,
        pool,
    }
}

fn settings(
    c: &mut Checker,
    field: &Field<BTreeMap<String, Scalar>>,
) -> BTreeMap<String, PhpSetting> {
    let raw = c.take(
        "php_fpm.settings",
        field,
        BTreeMap::new(),
        "a mapping of php.ini names to values",
    );
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let key = format!("php_fpm.settings.{k}");
        if k.is_empty()
            || !k
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.')
        {
            c.problem(
                &key,
                "is not a php.ini directive name",
                "use names like memory_limit or opcache.enable",
            );
            continue;
        }
        let value = scalar_text(&v);
        let flag = matches!(v, Scalar::Bool(_))
            || matches!(
                value.to_ascii_lowercase().as_str(),
                "on" | "off" | "true" | "false" | "yes" | "no"
            );
        out.insert(k, PhpSetting { value, flag });
    }
    out
}

fn env(c: &mut Checker, field: &Field<BTreeMap<String, Scalar>>) -> BTreeMap<String, String> {
    let raw = c.take(
        "php_fpm.env",
        field,
        BTreeMap::new(),
        "a mapping of variable names to values",
    );
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    // A value starting with `$` is read by php-fpm as the name of one of
    // its master's environment variables, so it cannot be passed through
    // `env[]`: such PHP_* variables are left out (and `render` warns).
    for (k, v) in c.ctx.environment {
        if k.starts_with("PHP_")
            && !v.chars().any(|ch| ch.is_control())
            && !v.starts_with('$')
            && valid_env_name(k)
        {
            out.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in raw {
        if !valid_env_name(&k) {
            c.problem(
                &format!("php_fpm.env.{k}"),
                "is not a valid environment variable name",
                "use letters, digits and _, not starting with a digit",
            );
            continue;
        }
        let value = match v {
            Scalar::Bool(b) => if b { "1" } else { "0" }.to_string(),
            other => scalar_text(&other),
        };
        if value.starts_with('$') {
            c.problem(
                &format!("php_fpm.env.{k}"),
                "starts with `$`, which php-fpm reads as the name of its master's environment variable (the value would reach PHP as that variable's value, usually empty)",
                "php-fpm's env[] cannot carry a value starting with `$`: change the value, or pass it another way (a file the application reads)",
            );
            continue;
        }
        out.insert(k, value);
    }
    out
}

fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && chars.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

fn pool(c: &mut Checker, field: &Field<RawPool>) -> Pool {
    let r = c.section("php_fpm.pool", field);
    c.unknown::<RawPool>("php_fpm.pool", &r.unknown);
    let name = c.take(
        "php_fpm.pool.name",
        &r.name,
        "www".to_string(),
        "a pool name",
    );
    if !name_ok(&name) {
        c.problem(
            "php_fpm.pool.name",
            format!("`{name}` has characters php-fpm does not allow in a pool name"),
            "use letters, digits, `_`, `.` and `-` only",
        );
    } else if name.eq_ignore_ascii_case("global") {
        c.problem(
            "php_fpm.pool.name",
            "`global` is php-fpm's own section ([global]), not a pool",
            "choose another name, e.g. www",
        );
    }
    let kind = match c
        .take(
            "php_fpm.pool.type",
            &r.kind,
            "dynamic".to_string(),
            "static, dynamic or ondemand",
        )
        .as_str()
    {
        "static" => PoolKind::Static,
        "dynamic" => PoolKind::Dynamic,
        "ondemand" => PoolKind::Ondemand,
        other => {
            c.problem(
                "php_fpm.pool.type",
                format!("unknown process manager `{other}`"),
                "use static, dynamic or ondemand",
            );
            PoolKind::Dynamic
        }
    };
    let max_children = c.take(
        "php_fpm.pool.max_children",
        &r.max_children,
        5,
        "a whole number",
    );
    if max_children < 1 {
        c.problem(
            "php_fpm.pool.max_children",
            "must be at least 1",
            "set it to the number of PHP requests to run at once, e.g. 5",
        );
    }
    let min_spare = c.take(
        "php_fpm.pool.min_spare_servers",
        &r.min_spare_servers,
        1,
        "a whole number",
    );
    let start_set = r.start_servers.get().copied();
    let max_spare_default = 3
        .max(start_set.unwrap_or(0))
        .max(min_spare)
        .min(max_children.max(1));
    let max_spare = c.take(
        "php_fpm.pool.max_spare_servers",
        &r.max_spare_servers,
        max_spare_default,
        "a whole number",
    );
    let start_default = min_spare + max_spare.saturating_sub(min_spare) / 2;
    let start = c.take(
        "php_fpm.pool.start_servers",
        &r.start_servers,
        start_default,
        "a whole number",
    );
    if kind == PoolKind::Dynamic && max_children >= 1 {
        let k = "php_fpm.pool";
        if min_spare < 1 {
            c.problem(
                &format!("{k}.min_spare_servers"),
                "must be at least 1 for a dynamic pool",
                "set it to 1 or more",
            );
        }
        if max_spare > max_children {
            c.problem(
                &format!("{k}.max_spare_servers"),
                format!("({max_spare}) is greater than max_children ({max_children})"),
                format!("lower it to {max_children} or less, or raise max_children"),
            );
        }
        if min_spare > max_spare {
            c.problem(&format!("{k}.min_spare_servers"), format!("({min_spare}) is greater than max_spare_servers ({max_spare})"), "php-fpm needs min_spare_servers ≤ start_servers ≤ max_spare_servers ≤ max_children");
        } else if start < min_spare || start > max_spare {
            c.problem(&format!("{k}.start_servers"), format!("({start}) must be from min_spare_servers ({min_spare}) to max_spare_servers ({max_spare})"), "php-fpm needs min_spare_servers ≤ start_servers ≤ max_spare_servers ≤ max_children");
        }
    }
    let max_requests = c.take(
        "php_fpm.pool.max_requests",
        &r.max_requests,
        0,
        "a whole number (0 = never recycle)",
    );
    let process_idle_timeout = c.ms(
        "php_fpm.pool.process_idle_timeout_ms",
        &r.process_idle_timeout_ms,
        10000,
        1,
    );
    let request_terminate_timeout = c.ms(
        "php_fpm.pool.request_terminate_timeout_ms",
        &r.request_terminate_timeout_ms,
        0,
        0,
    );
    let max_memory_mb = c.take(
        "php_fpm.pool.max_memory_mb",
        &r.max_memory_mb,
        0,
        "a whole number of MiB (0 = off)",
    );
    let max_lifetime = c.ms("php_fpm.pool.max_lifetime_ms", &r.max_lifetime_ms, 0, 0);
    Pool {
        name,
        kind,
        max_children: max_children.max(1),
        start_servers: start,
        min_spare_servers: min_spare,
        max_spare_servers: max_spare,
        max_requests,
        process_idle_timeout,
        request_terminate_timeout,
        max_memory_mb,
        max_lifetime,
    }
}

/// More forwarder threads than this only add contention.
const MAX_FORWARD_THREADS: u32 = 64;

fn forward(c: &mut Checker, field: &Field<RawForward>) -> Forward {
    let r = c.section("forward", field);
    c.unknown::<RawForward>("forward", &r.unknown);
    let enabled = c.take("forward.enabled", &r.enabled, true, "true or false");
    let listen_text = c.take(
        "forward.listen",
        &r.listen,
        "127.0.0.1:9000".to_string(),
        "an address or socket path",
    );
    let listen = if c.ctx.embedded {
        // Zero-config dev mode: the dev HTTP front is the way in; a web
        // server can still be pointed at this socket, and nothing takes
        // port 9000 from another project.
        Endpoint::Unix(c.ctx.base_dir.join(ZERO_CONFIG_FCGI_SOCKET))
    } else {
        endpoint(c, "forward.listen", &listen_text)
            .unwrap_or(Endpoint::Tcp("127.0.0.1:9000".into()))
    };
    let mode_text = c.take(
        "forward.socket_mode",
        &r.socket_mode,
        "0660".to_string(),
        "an octal mode in quotes, e.g. \"0660\"",
    );
    let socket_mode = match u32::from_str_radix(&mode_text, 8) {
        Ok(m) if m <= 0o777 && (3..=4).contains(&mode_text.len()) => m,
        _ => {
            c.problem(
                "forward.socket_mode",
                format!("`{mode_text}` is not an octal file mode"),
                "write it in quotes, e.g. \"0660\"",
            );
            0o660
        }
    };
    let max_connections = c.take(
        "forward.max_connections",
        &r.max_connections,
        1024,
        "a whole number",
    );
    if max_connections < 1 {
        c.problem(
            "forward.max_connections",
            "must be at least 1",
            "set it to 1024 or so",
        );
    }
    let threads = c.take(
        "forward.threads",
        &r.threads,
        0,
        "a whole number (0: one per CPU but one, at most 8)",
    );
    if threads > MAX_FORWARD_THREADS {
        c.problem(
            "forward.threads",
            format!("must be at most {MAX_FORWARD_THREADS}"),
            "leave it at 0 (auto) or set the number of CPUs",
        );
    }
    let queue_timeout = c.ms("forward.queue_timeout_ms", &r.queue_timeout_ms, 5000, 0);
    let retry_idempotent = c.take(
        "forward.retry_idempotent",
        &r.retry_idempotent,
        true,
        "true or false",
    );
    let params_timeout = c.ms("forward.params_timeout_ms", &r.params_timeout_ms, 10_000, 1);
    let stdin_timeout = c.ms("forward.stdin_timeout_ms", &r.stdin_timeout_ms, 30_000, 1);
    let params_buffer = c.take(
        "forward.params_buffer_bytes",
        &r.params_buffer_bytes,
        1024 * 1024,
        "a whole number of bytes",
    );
    if params_buffer < 16 * 1024 {
        c.problem(
            "forward.params_buffer_bytes",
            format!("must be at least 16384 bytes, is {params_buffer}"),
            "set it to 1048576 (1 MiB, what nginx and php-fpm allow) or so",
        );
    }
    let params_buffer_total = c.take(
        "forward.params_buffer_total_bytes",
        &r.params_buffer_total_bytes,
        64 * 1024 * 1024,
        "a whole number of bytes",
    );
    if params_buffer_total < params_buffer {
        c.problem(
            "forward.params_buffer_total_bytes",
            format!(
                "must be at least forward.params_buffer_bytes ({params_buffer}), is {params_buffer_total}"
            ),
            "set it to 64 times params_buffer_bytes or so",
        );
    }
    let h = c.section("forward.health", &r.health);
    c.unknown::<RawHealth>("forward.health", &h.unknown);
    let health = Health {
        interval: c.ms("forward.health.interval_ms", &h.interval_ms, 2000, 1),
        timeout: c.ms("forward.health.timeout_ms", &h.timeout_ms, 1000, 1),
        failure_threshold: {
            let n = c.take(
                "forward.health.failure_threshold",
                &h.failure_threshold,
                3,
                "a whole number",
            );
            if n < 1 {
                c.problem(
                    "forward.health.failure_threshold",
                    "must be at least 1",
                    "set it to 3",
                );
            }
            n.max(1)
        },
        open: c.ms("forward.health.open_ms", &h.open_ms, 5000, 1),
    };
    Forward {
        enabled,
        listen,
        socket_mode,
        max_connections: max_connections.max(1),
        threads: threads.min(MAX_FORWARD_THREADS),
        queue_timeout,
        retry_idempotent,
        params_timeout,
        stdin_timeout,
        params_buffer: usize::try_from(params_buffer).unwrap_or(usize::MAX),
        params_buffer_total: usize::try_from(params_buffer_total).unwrap_or(usize::MAX),
        health,
        lanes: lanes(c, &r.lanes, queue_timeout),
        slow_request: c.ms("forward.slow_request_ms", &r.slow_request_ms, 0, 0),
        pool_idle_timeout: (!matches!(r.pool_idle_timeout_ms, Field::Unset)).then(|| {
            c.ms(
                "forward.pool_idle_timeout_ms",
                &r.pool_idle_timeout_ms,
                0,
                0,
            )
        }),
    }
}

fn lanes(c: &mut Checker, field: &Field<Vec<RawLane>>, queue_timeout: Duration) -> Vec<Lane> {
    let raw = c.take("forward.lanes", field, Vec::new(), "a list of lanes");
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let k = format!("forward.lanes[{i}]");
        c.unknown::<RawLane>(&k, &l.unknown);
        let name = c.take(
            &format!("{k}.name"),
            &l.name,
            format!("lane{}", i + 1),
            "a name",
        );
        if !name_ok(&name) {
            c.problem(
                &format!("{k}.name"),
                format!("`{name}` is not a simple name"),
                "use letters, digits, `_`, `.` and `-` (it becomes a metric label)",
            );
        } else if !names.insert(name.clone()) {
            c.problem(
                &format!("{k}.name"),
                format!("`{name}` is used by another lane"),
                "give each lane its own name",
            );
        }
        let matches = c.take(
            &format!("{k}.match"),
            &l.matches,
            String::new(),
            "a path glob or prefix",
        );
        if !matches.starts_with('/') {
            c.problem(
                &format!("{k}.match"),
                format!("`{matches}` does not start with `/`"),
                "match on the path as SCRIPT_NAME or REQUEST_URI has it, e.g. \"/export/*\" or \"/report.php\"",
            );
        } else if let Err(e) = globset::Glob::new(&matches) {
            c.problem(
                &format!("{k}.match"),
                format!("`{matches}` is not a valid glob: {e}"),
                "fix the pattern",
            );
        }
        let max = c.take(&format!("{k}.max"), &l.max, 0, "a whole number ≥ 1");
        if max == 0 {
            c.problem(
                &format!("{k}.max"),
                "is 0 (or missing): the lane's requests could never run",
                "set how many pooled connections the lane may hold at once, e.g. 1",
            );
        }
        let queue = c.ms(
            &format!("{k}.queue_timeout_ms"),
            &l.queue_timeout_ms,
            u64::try_from(queue_timeout.as_millis()).unwrap_or(u64::MAX),
            0,
        );
        out.push(Lane {
            name,
            matches,
            max,
            queue_timeout: queue,
        });
    }
    out
}

fn supervisor(c: &mut Checker, field: &Field<RawSupervisor>) -> Supervisor {
    let r = c.section("supervisor", field);
    c.unknown::<RawSupervisor>("supervisor", &r.unknown);
    let restart = match c
        .take(
            "supervisor.restart",
            &r.restart,
            "on-failure".to_string(),
            "always, on-failure or never",
        )
        .as_str()
    {
        "always" => RestartPolicy::Always,
        "on-failure" => RestartPolicy::OnFailure,
        "never" => RestartPolicy::Never,
        other => {
            c.problem(
                "supervisor.restart",
                format!("unknown policy `{other}`"),
                "use always, on-failure or never",
            );
            RestartPolicy::OnFailure
        }
    };
    let backoff_initial = c.ms(
        "supervisor.backoff_initial_ms",
        &r.backoff_initial_ms,
        100,
        1,
    );
    let backoff_max = c.ms("supervisor.backoff_max_ms", &r.backoff_max_ms, 30000, 1);
    if backoff_max < backoff_initial {
        c.problem(
            "supervisor.backoff_max_ms",
            format!(
                "({}) is less than backoff_initial_ms ({})",
                backoff_max.as_millis(),
                backoff_initial.as_millis()
            ),
            "make backoff_max_ms at least backoff_initial_ms",
        );
    }
    Supervisor {
        restart,
        backoff_initial,
        backoff_max,
        stable_after: c.ms("supervisor.stable_after_ms", &r.stable_after_ms, 10000, 0),
        max_restarts: c.take(
            "supervisor.max_restarts",
            &r.max_restarts,
            10,
            "a whole number (0 = unlimited)",
        ),
        restart_window: c.ms(
            "supervisor.restart_window_ms",
            &r.restart_window_ms,
            60000,
            1,
        ),
        ready_timeout: c.ms("supervisor.ready_timeout_ms", &r.ready_timeout_ms, 10000, 1),
        stop_timeout: c.ms("supervisor.stop_timeout_ms", &r.stop_timeout_ms, 10000, 0),
    }
}

fn dev(c: &mut Checker, field: &Field<RawDev>) -> Dev {
    let r = c.section("dev", field);
    c.unknown::<RawDev>("dev", &r.unknown);
    let base = c.ctx.base_dir;
    let enabled = c.take("dev.enabled", &r.enabled, false, "true or false");
    let config_dir = resolve(
        base,
        &c.take(
            "dev.config_dir",
            &r.config_dir,
            ".tqserver/phpfpm".into(),
            "a directory path",
        ),
    );
    let http_listen = c
        .opt(
            "dev.http_listen",
            &r.http_listen,
            "host:port, e.g. 127.0.0.1:8000",
        )
        .or_else(|| c.ctx.embedded.then(|| ZERO_CONFIG_HTTP_LISTEN.to_string()));
    if let Some(h) = &http_listen
        && !matches!(parse_endpoint(base, h), Ok(Endpoint::Tcp(_)))
    {
        c.problem(
            "dev.http_listen",
            format!("`{h}` is not host:port"),
            "write e.g. 127.0.0.1:8000",
        );
    }
    let w = c.section("dev.watch", &r.watch);
    c.unknown::<RawWatch>("dev.watch", &w.unknown);
    let paths = c.take(
        "dev.watch.paths",
        &w.paths,
        vec![".".into()],
        "a list of paths",
    );
    let ignore = c.take(
        "dev.watch.ignore",
        &w.ignore,
        [".git", "vendor", "node_modules", ".tqserver"]
            .map(String::from)
            .to_vec(),
        "a list of names or globs",
    );
    let gitignore = c.take("dev.watch.gitignore", &w.gitignore, true, "true or false");
    for (i, g) in ignore.iter().enumerate() {
        if let Err(e) = globset::Glob::new(g) {
            c.problem(
                &format!("dev.watch.ignore[{i}]"),
                format!("`{g}` is not a valid glob: {e}"),
                "fix the pattern",
            );
        }
    }
    let debounce = c.ms("dev.watch.debounce_ms", &w.debounce_ms, 150, 0);
    let poll = c.take(
        "dev.watch.poll_interval_ms",
        &w.poll_interval_ms,
        0,
        "a whole number of milliseconds",
    );
    let watch = Watch {
        paths: paths.iter().map(|p| resolve(base, p)).collect(),
        ignore,
        gitignore,
        debounce,
        poll_interval: (poll > 0).then(|| Duration::from_millis(poll)),
    };
    let raw_hooks = c.take("dev.hooks", &r.hooks, Vec::new(), "a list of hooks");
    let mut hooks = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, h) in raw_hooks.iter().enumerate() {
        let k = format!("dev.hooks[{i}]");
        c.unknown::<RawHook>(&k, &h.unknown);
        let name = c.take(
            &format!("{k}.name"),
            &h.name,
            format!("hook{}", i + 1),
            "a name",
        );
        if !names.insert(name.clone()) {
            c.problem(
                &format!("{k}.name"),
                format!("`{name}` is used by another hook"),
                "give each hook its own name",
            );
        }
        let run = c.take(
            &format!("{k}.run"),
            &h.run,
            String::new(),
            "a shell command",
        );
        if run.trim().is_empty() {
            c.problem(
                &format!("{k}.run"),
                "is missing",
                "set `run` to the command to execute, e.g. \"npm run build\"",
            );
        }
        let globs = c.take(
            &format!("{k}.paths"),
            &h.paths,
            Vec::new(),
            "a list of globs",
        );
        if globs.is_empty() {
            c.problem(
                &format!("{k}.paths"),
                "is empty: the hook would never run",
                "list the globs that trigger it, e.g. [\"assets/**\"]",
            );
        }
        for (j, g) in globs.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                c.problem(
                    &format!("{k}.paths[{j}]"),
                    format!("`{g}` is not a valid glob: {e}"),
                    "fix the pattern",
                );
            }
        }
        let then = match c
            .take(
                &format!("{k}.then"),
                &h.then,
                "none".into(),
                "reload, restart or none",
            )
            .as_str()
        {
            "reload" => HookAction::Reload,
            "restart" => HookAction::Restart,
            "none" => HookAction::None,
            other => {
                c.problem(
                    &format!("{k}.then"),
                    format!("unknown action `{other}`"),
                    "use reload, restart or none",
                );
                HookAction::None
            }
        };
        hooks.push(Hook {
            name,
            run,
            paths: globs,
            then,
        });
    }
    Dev {
        enabled,
        config_dir,
        http_listen,
        http_listen_next_free: c.ctx.embedded,
        watch,
        hooks,
    }
}

fn log(c: &mut Checker, field: &Field<RawLog>) -> Log {
    let r = c.section("log", field);
    c.unknown::<RawLog>("log", &r.unknown);
    let format = match c
        .take("log.format", &r.format, "text".into(), "text or json")
        .as_str()
    {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            c.problem(
                "log.format",
                format!("unknown format `{other}`"),
                "use text or json",
            );
            LogFormat::Text
        }
    };
    let level = c.take(
        "log.level",
        &r.level,
        "info".into(),
        "a level such as info or debug",
    );
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        c.problem(
            "log.level",
            format!("`{level}` is not a log filter: {e}"),
            "use error, warn, info, debug or trace",
        );
    }
    let access = match c.take(
        "log.access",
        &r.access,
        Scalar::Bool(false),
        "true, false or a file path",
    ) {
        Scalar::Bool(false) => None,
        Scalar::Bool(true) => Some(None),
        Scalar::Str(p) if !p.trim().is_empty() => Some(Some(resolve(c.ctx.base_dir, &p))),
        other => {
            c.problem(
                "log.access",
                format!(
                    "`{}` is neither true, false nor a file path",
                    scalar_text(&other)
                ),
                "write true (into tqsup's log), false, or the path of a file",
            );
            None
        }
    };
    Log {
        format,
        level,
        access,
    }
}
