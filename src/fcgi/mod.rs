//! The built-in FastCGI forwarder (DESIGN §1, §7): one endpoint for web
//! servers, at most `pool_size` persistent connections to php-fpm behind it,
//! a FIFO queue between the two, health probe and circuit breaker.

pub mod access;
pub mod backend;
pub mod breaker;
pub mod cgi_head;
pub mod client;
pub mod codec;
mod connection;
pub mod exchange;
pub mod health;
pub mod io;
pub mod lanes;
pub mod listen;
pub mod listener;
pub mod metrics;
pub mod peer;
pub mod pool;
pub mod probe;
pub mod slots;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::render::InternalPaths;
use exchange::Limits;
use listener::{ClientLimits, Ctx, ForwardListener};
use pool::{PoolSettings, UpstreamPool};
use upstream::PhpFpmState;

/// How long an idle pooled connection lives when the process manager can
/// shrink the pool (`dynamic`, `ondemand`): a connection pins its child, so
/// a connection kept forever turns a dynamic pool into a static one and
/// never gives php-fpm's memory back. php-fpm's own maintenance runs every
/// second; a connection unused for this long is surplus at the current load.
pub const SHRINKABLE_IDLE: Duration = Duration::from_secs(3);

/// How long an idle pooled connection may live (None: until php-fpm closes
/// it). `forward.pool_idle_timeout_ms` when set (0: never); else `dynamic`
/// and `ondemand` pools: [`SHRINKABLE_IDLE`] (and, for `ondemand`, under its
/// `process_idle_timeout`), `static`: forever. `request_terminate_timeout`
/// (which kills a child idling on a kept connection) bounds every kind.
pub fn idle_lifetime(config: &Config) -> Option<Duration> {
    use crate::config::PoolKind;
    let pool = &config.php_fpm.pool;
    let mut l = match (config.forward.pool_idle_timeout, pool.kind) {
        (Some(t), _) => (!t.is_zero()).then_some(t),
        (None, PoolKind::Static) => None,
        (None, PoolKind::Dynamic) => Some(SHRINKABLE_IDLE),
        (None, PoolKind::Ondemand) => Some(if pool.process_idle_timeout.is_zero() {
            SHRINKABLE_IDLE
        } else {
            SHRINKABLE_IDLE.min(pool.process_idle_timeout.mul_f64(0.9))
        }),
    };
    if !pool.request_terminate_timeout.is_zero() {
        // Leave a margin so tqsup closes first.
        let t = pool.request_terminate_timeout.mul_f64(0.9);
        l = Some(l.map_or(t, |x: Duration| x.min(t)));
    }
    l
}

/// The environment variable that sets the number of forwarder threads when
/// `forward.threads` is left at 0 (auto); the test suite runs the
/// forwarding tests again with it set to 2.
pub const THREADS_ENV: &str = "TQSUP_FORWARD_THREADS";

/// How many forwarder threads run: `forward.threads`; when 0 (auto),
/// [`THREADS_ENV`] if set, else 1 on up to 2 CPUs and one per CPU but one
/// (at most 8) above that.
///
/// Every request hops between sockets several times: measured on two
/// cores, one single-threaded runtime costs about a fifth less CPU per
/// request than a work-stealing one (no cross-thread wake-ups), and a second
/// thread there only competes with nginx and php-fpm for the same two
/// cores. With more CPUs, one is left for the web server and php-fpm's
/// master and the rest scale the forwarder, up to 8: past that the shared
/// pool and php-fpm's children are the limit, not the forwarder (a guess:
/// only 1 and 2 threads were measured, on 2 CPUs).
pub fn forward_threads(configured: u32) -> usize {
    if configured > 0 {
        return configured as usize;
    }
    let env = std::env::var(THREADS_ENV).ok();
    if let Some(n) = env.and_then(|v| v.trim().parse::<usize>().ok())
        && n > 0
    {
        return n.min(crate::config::defaults::MAX_FORWARD_THREADS as usize);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus <= 2 { 1 } else { (cpus - 1).min(8) }
}

/// Everything the forwarder runs on: the config, the supervisor's view of
/// php-fpm, the internal paths it never forwards, the lanes and breaker it
/// shares with the admin endpoint, and its bound socket.
pub struct Forwarder {
    pub config: Arc<Config>,
    pub state: watch::Receiver<PhpFpmState>,
    pub paths: InternalPaths,
    pub lanes: Arc<lanes::Lanes>,
    pub breaker: breaker::SharedBreaker,
    pub socket: listen::BoundSocket,
}

impl Forwarder {
    /// Serves until `shutdown`, then stops accepting and returns once the
    /// requests in flight are done.
    ///
    /// The forwarder runs on threads of its own ([`forward_threads`]), apart
    /// from the supervisor's work: one thread with a single-threaded
    /// runtime, or a work-stealing runtime with that many workers. (Not one
    /// single-threaded runtime per thread: pooled php-fpm connections move
    /// between requests of any thread, and a tokio socket belongs to the
    /// runtime that opened it.)
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let threads = forward_threads(self.config.forward.threads);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tqsup-forward".into())
            .spawn(move || {
                let rt = if threads == 1 {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(threads)
                        .thread_name("tqsup-forward")
                        .enable_all()
                        .build()
                };
                let r = rt
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| rt.block_on(self.serve(shutdown)));
                let _ = done_tx.send(r);
            })?;
        done_rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the forwarder thread panicked")))
    }

    async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Forwarder {
            config,
            state,
            paths,
            lanes,
            breaker,
            socket,
        } = self;
        let php = &config.php_fpm;
        let fwd = &config.forward;
        let pool = UpstreamPool::with_breaker(
            state.clone(),
            PoolSettings {
                connect_timeout: php.connect_timeout,
                idle_lifetime: idle_lifetime(&config),
                failure_threshold: fwd.health.failure_threshold,
                open: fwd.health.open,
            },
            lanes,
            breaker,
        );
        let ctx = Ctx {
            pool: pool.clone(),
            paths: paths.clone(),
            limits: Limits {
                access: Arc::new(access::AccessLog::from_config(&config)?),
                queue: fwd.queue_timeout,
                request: php.request_timeout,
                read: php.read_timeout,
                write: php.write_timeout,
            },
            retry_idempotent: fwd.retry_idempotent,
            max_connections: fwd.max_connections,
            clients: ClientLimits::from_config(fwd),
            tracker: TaskTracker::new(),
        };
        let listener = ForwardListener::from_bound(socket, ctx)?;
        let background = CancellationToken::new();
        let maintain = tokio::spawn(pool.clone().maintain(background.clone()));
        let health = tokio::spawn(health::run(
            pool,
            state,
            paths.ping.clone(),
            fwd.health.clone(),
            background.clone(),
        ));
        listener.serve(shutdown).await;
        background.cancel();
        let _ = maintain.await;
        let _ = health.await;
        Ok(())
    }
}
