//! What each key is when the config leaves it out (DESIGN §4), and the limits
//! validation holds values to: named once, for validation, the model's docs
//! and the code that depends on them. A key whose default is "off" (0) has
//! no constant.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::{HookAction, LogFormat, PoolKind, RestartPolicy};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `php_fpm.connect_timeout_ms`.
pub const CONNECT_TIMEOUT: Duration = ms(1000);
/// `php_fpm.request_timeout_ms`: a whole request through the forwarder.
pub const REQUEST_TIMEOUT: Duration = ms(60_000);
/// `php_fpm.read_timeout_ms`.
pub const READ_TIMEOUT: Duration = ms(30_000);
/// `php_fpm.write_timeout_ms`.
pub const WRITE_TIMEOUT: Duration = ms(30_000);
/// `php_fpm.document_root`, relative to the config file.
pub const DOCUMENT_ROOT: &str = "public";

/// `php_fpm.document_root` when unset: [`DOCUMENT_ROOT`] beside the config;
/// in zero-config dev mode (`embedded`) `./public` when it exists, else the
/// project itself.
pub fn document_root(base: &Path, embedded: bool) -> PathBuf {
    let public = base.join(DOCUMENT_ROOT);
    if embedded && !public.is_dir() {
        base.to_path_buf()
    } else {
        public
    }
}

/// `php_fpm.pool.name`.
pub const POOL_NAME: &str = "www";
/// `php_fpm.pool.type`.
pub const POOL_KIND: PoolKind = PoolKind::Dynamic;
/// `php_fpm.pool.max_children`.
pub const MAX_CHILDREN: u32 = 5;
/// `php_fpm.pool.min_spare_servers`.
pub const MIN_SPARE_SERVERS: u32 = 1;
/// `php_fpm.pool.max_spare_servers`, as [`max_spare_servers`] fits it.
pub const MAX_SPARE_SERVERS: u32 = 3;

/// `php_fpm.pool.max_spare_servers` when unset: [`MAX_SPARE_SERVERS`],
/// raised to fit a larger start (as written) or min spare and lowered to fit
/// max_children.
pub fn max_spare_servers(start: u32, min_spare: u32, max_children: u32) -> u32 {
    MAX_SPARE_SERVERS
        .max(start)
        .max(min_spare)
        .min(max_children.max(1))
}

/// `php_fpm.pool.start_servers` when unset: the middle of min and max spare.
pub fn start_servers(min_spare: u32, max_spare: u32) -> u32 {
    min_spare + max_spare.saturating_sub(min_spare) / 2
}
/// `php_fpm.pool.process_idle_timeout_ms` (ondemand).
pub const PROCESS_IDLE_TIMEOUT: Duration = ms(10_000);

/// `forward.listen`.
pub const FORWARD_LISTEN: &str = "127.0.0.1:9000";
/// `forward.socket_mode` (unix listener only).
pub const SOCKET_MODE: u32 = 0o660;
/// `forward.max_connections`.
pub const MAX_CONNECTIONS: u32 = 1024;
/// `forward.threads` above this only adds contention.
pub const MAX_FORWARD_THREADS: u32 = 64;
/// `forward.queue_timeout_ms`, and each lane's `queue_timeout_ms`.
pub const QUEUE_TIMEOUT: Duration = ms(5000);
/// `forward.params_timeout_ms`.
pub const PARAMS_TIMEOUT: Duration = ms(10_000);
/// `forward.stdin_timeout_ms`.
pub const STDIN_TIMEOUT: Duration = ms(30_000);
/// `forward.params_buffer_bytes`: 1 MiB, what nginx and php-fpm allow.
pub const PARAMS_BUFFER: u64 = 1024 * 1024;
/// The least `forward.params_buffer_bytes` may be.
pub const MIN_PARAMS_BUFFER: u64 = 16 * 1024;
/// `forward.params_buffer_total_bytes`.
pub const PARAMS_BUFFER_TOTAL: u64 = 64 * 1024 * 1024;
/// `forward.health.interval_ms`.
pub const HEALTH_INTERVAL: Duration = ms(2000);
/// `forward.health.timeout_ms`.
pub const HEALTH_TIMEOUT: Duration = ms(1000);
/// `forward.health.failure_threshold`.
pub const FAILURE_THRESHOLD: u32 = 3;
/// `forward.health.open_ms`.
pub const BREAKER_OPEN: Duration = ms(5000);

/// `supervisor.restart`.
pub const RESTART: RestartPolicy = RestartPolicy::OnFailure;
/// `supervisor.backoff_initial_ms`.
pub const BACKOFF_INITIAL: Duration = ms(100);
/// `supervisor.backoff_max_ms`.
pub const BACKOFF_MAX: Duration = ms(30_000);
/// `supervisor.stable_after_ms`: a run this long resets the backoff.
pub const STABLE_AFTER: Duration = ms(10_000);
/// `supervisor.max_restarts` within `restart_window_ms`.
pub const MAX_RESTARTS: u32 = 10;
/// `supervisor.restart_window_ms`.
pub const RESTART_WINDOW: Duration = ms(60_000);
/// `supervisor.ready_timeout_ms`.
pub const READY_TIMEOUT: Duration = ms(10_000);
/// `supervisor.stop_timeout_ms`.
pub const STOP_TIMEOUT: Duration = ms(10_000);

/// `dev.config_dir`, relative to the config file.
pub const CONFIG_DIR: &str = ".tqserver/phpfpm";
/// `dev.watch.paths`.
pub const WATCH_PATHS: &[&str] = &["."];
/// `dev.watch.ignore`.
pub const WATCH_IGNORE: &[&str] = &[".git", "vendor", "node_modules", ".tqserver"];
/// `dev.watch.debounce_ms`.
pub const DEBOUNCE: Duration = ms(150);
/// `dev.hooks[].then`.
pub const HOOK_THEN: HookAction = HookAction::None;

/// `log.format`.
pub const LOG_FORMAT: LogFormat = LogFormat::Text;
/// `log.level`.
pub const LOG_LEVEL: &str = "info";
