//! The validated configuration: resolved types, defaults applied (each
//! named in [`defaults`](super::defaults)), paths made absolute. It can only
//! be built by `validate::validate`, so holding a [`Config`] means every rule
//! of DESIGN §4 holds.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where a FastCGI or HTTP endpoint listens: `host:port` or a unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `host:port`, as written (resolved when binding or connecting).
    Tcp(String),
    /// An absolute unix socket path.
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => f.write_str(a),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Endpoint {
    /// The form php-fpm's `listen =` directive takes.
    pub fn php_fpm_listen(&self) -> String {
        match self {
            Endpoint::Tcp(a) => a.clone(),
            Endpoint::Unix(p) => p.display().to_string(),
        }
    }
}

/// A key that takes one of a few words (`php_fpm.pool.type`,
/// `supervisor.restart`, …). One table per type gives the parsing, the word
/// back (for rendering) and the list validation's messages name.
pub trait Choice: Copy + PartialEq + 'static {
    /// What one value is called in "unknown {WHAT} `x`".
    const WHAT: &'static str;
    /// Every word and the value it names, in the order the docs list them.
    const WORDS: &'static [(&'static str, Self)];

    /// The value `word` names, if any.
    fn from_word(word: &str) -> Option<Self> {
        Self::WORDS
            .iter()
            .find(|(w, _)| *w == word)
            .map(|&(_, v)| v)
    }

    /// The word that names this value.
    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(w, _)| w)
    }

    /// Every word, as a message lists them: "static, dynamic or ondemand".
    fn one_of() -> String {
        let words: Vec<&str> = Self::WORDS.iter().map(|(w, _)| *w).collect();
        match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.concat(),
        }
    }
}

/// php-fpm's process manager (`pm =`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Static,
    Dynamic,
    Ondemand,
}

impl Choice for PoolKind {
    const WHAT: &'static str = "process manager";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("static", Self::Static),
        ("dynamic", Self::Dynamic),
        ("ondemand", Self::Ondemand),
    ];
}

impl PoolKind {
    /// The word php-fpm's `pm =` takes.
    pub fn as_str(self) -> &'static str {
        self.word()
    }
}

/// The php-fpm pool, in php-fpm's own terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// `[name]` of the pool section; `[A-Za-z0-9_.-]+`.
    pub name: String,
    pub kind: PoolKind,
    pub max_children: u32,
    /// Only meaningful for `dynamic`; validated to be consistent regardless.
    pub start_servers: u32,
    pub min_spare_servers: u32,
    pub max_spare_servers: u32,
    /// 0 = children are never recycled.
    pub max_requests: u32,
    /// `ondemand`: an idle child exits after this.
    pub process_idle_timeout: Duration,
    /// Zero = off.
    pub request_terminate_timeout: Duration,
    /// A child whose private memory (RssAnon) passes this many MiB is
    /// recycled gracefully by tqsup; 0 = off.
    pub max_memory_mb: u64,
    /// A child older than this is recycled gracefully by tqsup; zero = off.
    pub max_lifetime: Duration,
}

impl Pool {
    /// Whether tqsup recycles children itself (memory or lifetime limit).
    pub fn recycles(&self) -> bool {
        self.max_memory_mb > 0 || !self.max_lifetime.is_zero()
    }
}

/// A php.ini value and whether php-fpm wants it as `php_admin_flag`.
#[derive(Debug, Clone, PartialEq)]
pub struct PhpSetting {
    pub value: String,
    /// on/off/true/false values go to `php_admin_flag[...]`.
    pub flag: bool,
}

/// Everything about the php-fpm that tqsup runs (or forwards to).
#[derive(Debug, Clone, PartialEq)]
pub struct PhpFpm {
    /// false: launch nothing, forward to a php-fpm run elsewhere at `listen`.
    pub enabled: bool,
    /// None = discovery (`discover.rs`).
    pub binary: Option<String>,
    /// Passed as `-c FILE`.
    pub php_ini: Option<PathBuf>,
    /// None = a unix socket inside the runtime dir.
    pub listen: Option<Endpoint>,
    /// The forwarder's persistent connections (≤ `pool.max_children`).
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Absolute; exists and is a directory.
    pub document_root: PathBuf,
    pub user: Option<String>,
    pub group: Option<String>,
    /// `user: root` outside dev mode runs PHP as root (php-fpm's `-R`):
    /// refused unless this says it is meant.
    pub allow_root: bool,
    pub settings: BTreeMap<String, PhpSetting>,
    /// `env[K] = V`, tqsup's own `PHP_*` variables included (config wins).
    pub env: BTreeMap<String, String>,
    pub pool: Pool,
}

/// The forwarder's circuit breaker and probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub open: Duration,
}

/// The built-in FastCGI forwarding listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub enabled: bool,
    pub listen: Endpoint,
    /// Unix listener only.
    pub socket_mode: u32,
    pub max_connections: u32,
    /// Forwarder threads; 0: auto (see `fcgi::forward_threads`).
    pub threads: u32,
    pub queue_timeout: Duration,
    pub retry_idempotent: bool,
    /// From a request's BEGIN_REQUEST to the end of its PARAMS (and from
    /// accepting a connection to its first BEGIN_REQUEST).
    pub params_timeout: Duration,
    /// Longest silence while a request's body is still arriving.
    pub stdin_timeout: Duration,
    /// PARAMS buffered for one connection's requests; more gets a 431.
    pub params_buffer: usize,
    /// PARAMS buffered across all connections; more gets a 503.
    pub params_buffer_total: usize,
    pub health: Health,
    /// Requests matching a lane hold at most its `max` pooled connections.
    pub lanes: Vec<Lane>,
    /// Requests slower than this are logged as a warning; zero = off.
    pub slow_request: Duration,
    /// How long a pooled php-fpm connection may stay idle before tqsup
    /// closes it. None: the default for the process manager (see
    /// `fcgi::idle_lifetime`); zero: never.
    pub pool_idle_timeout: Option<Duration>,
}

/// A lane (`forward.lanes`): the requests whose SCRIPT_NAME or REQUEST_URI
/// match hold at most `max` pooled connections at once, with a FIFO queue
/// of their own; the rest of the pool stays free for everything else.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub name: String,
    /// A glob (`*`, `?`, `[`…`]`) matched against the whole path, or else
    /// a prefix.
    pub matches: String,
    pub max: u32,
    pub queue_timeout: Duration,
}

/// When php-fpm is started again after it exits (`supervisor.restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl Choice for RestartPolicy {
    const WHAT: &'static str = "policy";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("always", Self::Always),
        ("on-failure", Self::OnFailure),
        ("never", Self::Never),
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Supervisor {
    pub restart: RestartPolicy,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub stable_after: Duration,
    /// Within `restart_window`; 0 = unlimited.
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
}

/// What a dev hook does to php-fpm after its command succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    Reload,
    Restart,
    None,
}

impl Choice for HookAction {
    const WHAT: &'static str = "action";
    const WORDS: &'static [(&'static str, Self)] = &[
        ("reload", Self::Reload),
        ("restart", Self::Restart),
        ("none", Self::None),
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub name: String,
    /// Run with `sh -c` in the project directory.
    pub run: String,
    /// Globs relative to the project directory.
    pub paths: Vec<String>,
    pub then: HookAction,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// Absolute.
    pub paths: Vec<PathBuf>,
    /// Names or globs; a path with any matching component is ignored.
    pub ignore: Vec<String>,
    /// Also honour `.gitignore`, `.ignore` and `.git/info/exclude`
    /// (`dev.watch.gitignore`, default true).
    pub gitignore: bool,
    pub debounce: Duration,
    /// Some: poll at this interval instead of native events.
    pub poll_interval: Option<Duration>,
}

/// Zero-config dev mode's HTTP front: this address, or the next free port
/// up to [`ZERO_CONFIG_HTTP_LAST_PORT`].
pub const ZERO_CONFIG_HTTP_LISTEN: &str = "127.0.0.1:8000";
pub const ZERO_CONFIG_HTTP_LAST_PORT: u16 = 8010;
/// Zero-config dev mode's forward listener, relative to the project.
pub const ZERO_CONFIG_FCGI_SOCKET: &str = ".tqserver/fcgi.sock";

#[derive(Debug, Clone, PartialEq)]
pub struct Dev {
    pub enabled: bool,
    /// Absolute; where dev mode and `print-cmd` render (kept).
    pub config_dir: PathBuf,
    pub http_listen: Option<String>,
    /// Zero-config dev mode (no config file): `http_listen` is the default
    /// [`ZERO_CONFIG_HTTP_LISTEN`] and, when that port is taken, the next
    /// free one up to [`ZERO_CONFIG_HTTP_LAST_PORT`] is used. An
    /// `http_listen` from a file is bound exactly.
    pub http_listen_next_free: bool,
    pub watch: Watch,
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub listen: Option<Endpoint>,
}

/// How tqsup writes its log lines (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Choice for LogFormat {
    const WHAT: &'static str = "format";
    const WORDS: &'static [(&'static str, Self)] = &[("text", Self::Text), ("json", Self::Json)];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter directive (`info`, `debug`, `tqsup=debug,php_fpm=info`).
    pub level: String,
    /// The access log: None = off, Some(None) = into tqsup's log,
    /// Some(Some(path)) = a file of its own.
    pub access: Option<Option<PathBuf>>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from; None for the embedded dev default.
    pub source: Option<PathBuf>,
    /// The directory relative paths were resolved against.
    pub base_dir: PathBuf,
    pub php_fpm: PhpFpm,
    pub forward: Forward,
    pub supervisor: Supervisor,
    pub dev: Dev,
    pub admin: Admin,
    pub log: Log,
}
