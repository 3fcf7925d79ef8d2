//! The upstream pool (DESIGN §7): at most `pool_size` persistent connections
//! to php-fpm, each carrying one request at a time; a FIFO queue with a
//! timeout in front of them; idle connections dropped on EOF, on a new
//! php-fpm generation and after their idle lifetime.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::io::Stream;
use crate::config::Endpoint;
use crate::metrics::{self, GaugeGuard};
use crate::upstream::PhpFpmState;

/// The pool's fixed settings.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    /// None: idle connections live until php-fpm closes them.
    pub idle_lifetime: Option<Duration>,
    pub failure_threshold: u32,
    pub open: Duration,
}

/// Why no connection was handed out.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("no php-fpm connection became free in time")]
    QueueTimeout,
    #[error("the circuit breaker is open")]
    BreakerOpen,
    #[error("php-fpm unreachable: {0}")]
    Unreachable(io::Error),
    #[error("php-fpm is stopped")]
    Stopped,
}

/// A pooled connection and the read buffer that goes with it.
struct Idle {
    conn: Stream,
    buf: BytesMut,
    generation: u64,
    since: Instant,
    /// Counts the connection in `upstream_connections_open`.
    open: GaugeGuard,
    /// Counts it in `upstream_connections_idle`.
    _idle: GaugeGuard,
}

struct Inner {
    /// One permit per allowed connection; tokio's semaphore is FIFO, which is
    /// the queue.
    permits: Arc<Semaphore>,
    /// The pool size the permits currently add up to.
    size: AtomicU32,
    idle: Mutex<Vec<Idle>>,
    /// The generation idle connections must belong to.
    generation: AtomicU64,
    state: watch::Receiver<PhpFpmState>,
    breaker: Arc<Mutex<Breaker>>,
    settings: PoolSettings,
}

/// Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct UpstreamPool {
    inner: Arc<Inner>,
}

/// One connection lent to one request. Dropping it closes the connection;
/// [`Lease::release`] gives it back.
pub struct Lease {
    pool: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
    generation: u64,
    endpoint: Endpoint,
    conn: Stream,
    /// The response read buffer (empty when lent).
    pub buf: BytesMut,
    /// Whether the connection was pooled (so it may have died while idle).
    pub reused: bool,
    /// Counts the connection in `upstream_connections_open`.
    open: GaugeGuard,
    /// Counts it in `upstream_connections_busy`.
    _busy: GaugeGuard,
}

impl Lease {
    pub fn stream(&self) -> &Stream {
        &self.conn
    }

    /// The connection and its read buffer, borrowed together.
    pub fn parts(&mut self) -> (&Stream, &mut BytesMut) {
        (&self.conn, &mut self.buf)
    }

    /// Replaces a connection found dead by a fresh one (for a replay).
    /// When php-fpm itself is gone, waits (until `deadline`) for the
    /// supervisor to publish a new one and connects there.
    pub async fn reconnect(&mut self, deadline: Instant) -> io::Result<()> {
        let mut state = self.pool.state.clone();
        loop {
            let err = match connect(&self.endpoint, self.pool.settings.connect_timeout).await {
                Ok(conn) => {
                    self.conn = conn;
                    self.buf.clear();
                    self.reused = false;
                    return Ok(());
                }
                Err(e) => e,
            };
            if !is_saturation(&err) {
                metrics::global().upstream_connect_errors.inc();
            }
            // A failure counts for the breaker only when the supervisor does
            // not explain it with a new php-fpm before `deadline`.
            let count_failure = || {
                if !is_saturation(&err) {
                    self.pool.breaker.lock().unwrap().failure(Instant::now());
                }
            };
            let next = tokio::time::timeout_at(
                deadline,
                state.wait_for(|s| match s {
                    PhpFpmState::Ready { generation, .. } => *generation != self.generation,
                    PhpFpmState::Stopped => true,
                    _ => false,
                }),
            )
            .await;
            match next {
                Ok(Ok(s)) => match &*s {
                    PhpFpmState::Ready {
                        generation,
                        endpoint,
                        ..
                    } => {
                        self.generation = *generation;
                        self.endpoint = endpoint.clone();
                    }
                    _ => return Err(err),
                },
                _ => {
                    count_failure();
                    return Err(err);
                }
            }
        }
    }

    /// Returns a connection whose last exchange ended cleanly.
    pub fn release(self) {
        let pool = self.pool.clone();
        if self.generation != pool.generation.load(Ordering::Acquire)
            || !self.buf.is_empty()
            || self.conn.looks_closed()
        {
            return;
        }
        let mut idle = pool.idle.lock().unwrap();
        idle.push(Idle {
            conn: self.conn,
            buf: self.buf,
            generation: self.generation,
            since: Instant::now(),
            open: self.open,
            _idle: metrics::global().hold(|m| &m.upstream_idle),
        });
    }
}

async fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Stream> {
    match tokio::time::timeout(timeout, Stream::connect(endpoint)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

fn is_saturation(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(nix::libc::EAGAIN)
}

impl UpstreamPool {
    pub fn new(state: watch::Receiver<PhpFpmState>, settings: PoolSettings) -> Self {
        let breaker = Breaker::new(settings.failure_threshold, settings.open);
        let pool = UpstreamPool {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(0)),
                size: AtomicU32::new(0),
                idle: Mutex::new(Vec::new()),
                generation: AtomicU64::new(0),
                state,
                breaker: Arc::new(Mutex::new(breaker)),
                settings,
            }),
        };
        let current = pool.inner.state.borrow().clone();
        pool.apply_state(&current);
        pool
    }

    /// Takes in a new php-fpm state: a new generation drops idle connections
    /// and closes the breaker; `pool_size` resizes the permits.
    pub fn apply_state(&self, state: &PhpFpmState) {
        let PhpFpmState::Ready {
            generation,
            pool_size,
            ..
        } = state
        else {
            return;
        };
        let old = self.inner.generation.swap(*generation, Ordering::AcqRel);
        if old != *generation {
            self.inner.idle.lock().unwrap().clear();
            self.inner.breaker.lock().unwrap().reset();
        }
        let want = (*pool_size).max(1);
        let had = self.inner.size.swap(want, Ordering::AcqRel);
        if want > had {
            self.inner.permits.add_permits((want - had) as usize);
        } else if want < had {
            let permits = self.inner.permits.clone();
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(had - want).await {
                    p.forget();
                }
            });
        }
    }

    /// Follows the php-fpm state and reaps idle connections until `shutdown`.
    pub async fn maintain(self, shutdown: CancellationToken) {
        let mut state = self.inner.state.clone();
        let period = self
            .inner
            .settings
            .idle_lifetime
            .map(|l| (l / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)))
            .unwrap_or(Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        let mut watching = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = state.changed(), if watching => match r {
                    Ok(()) => {
                        let s = state.borrow_and_update().clone();
                        self.apply_state(&s);
                    }
                    Err(_) => watching = false,
                },
                _ = tick.tick() => self.reap(Instant::now()),
            }
        }
        self.inner.idle.lock().unwrap().clear();
    }

    /// Drops idle connections that are closed, readable or too old.
    pub fn reap(&self, now: Instant) {
        let lifetime = self.inner.settings.idle_lifetime;
        self.inner
            .idle
            .lock()
            .unwrap()
            .retain(|i| !expired(i, lifetime, now) && !i.conn.looks_closed());
    }

    /// Number of idle pooled connections.
    pub fn idle_count(&self) -> usize {
        self.inner.idle.lock().unwrap().len()
    }

    /// The breaker, shared with the health probe.
    pub fn breaker(&self) -> Arc<Mutex<Breaker>> {
        self.inner.breaker.clone()
    }

    /// php-fpm answered a whole request.
    pub fn report_success(&self) {
        self.inner.breaker.lock().unwrap().success();
    }

    /// A real failure: refused, reset, gone.
    pub fn report_failure(&self) {
        self.inner.breaker.lock().unwrap().failure(Instant::now());
    }

    /// Waits (FIFO, until `deadline`) for a connection. `probe` skips the
    /// breaker check (the health probe is what closes it).
    pub async fn acquire(&self, deadline: Instant, probe: bool) -> Result<Lease, AcquireError> {
        let inner = &self.inner;
        if !probe && !inner.breaker.lock().unwrap().allows_request(Instant::now()) {
            return Err(AcquireError::BreakerOpen);
        }
        let queued = (!probe).then(|| metrics::global().hold(|m| &m.queue_depth));
        let permit =
            match tokio::time::timeout_at(deadline, inner.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(AcquireError::Stopped),
                Err(_) => return Err(AcquireError::QueueTimeout),
            };
        drop(queued);
        let m = metrics::global();
        let mut state = inner.state.clone();
        loop {
            let (generation, endpoint) = {
                let seen = match tokio::time::timeout_at(
                    deadline,
                    state.wait_for(|s| s.is_ready() || *s == PhpFpmState::Stopped),
                )
                .await
                {
                    Ok(Ok(s)) => Some(s.clone()),
                    Ok(Err(_)) => None,
                    Err(_) => return Err(AcquireError::QueueTimeout),
                };
                let s = seen.unwrap_or_else(|| state.borrow().clone());
                match s {
                    PhpFpmState::Ready {
                        generation,
                        endpoint,
                        ..
                    } => (generation, endpoint),
                    _ => return Err(AcquireError::Stopped),
                }
            };
            if let Some(i) = self.take_idle(generation) {
                return Ok(Lease {
                    pool: inner.clone(),
                    _permit: permit,
                    generation,
                    endpoint,
                    conn: i.conn,
                    buf: i.buf,
                    reused: true,
                    open: i.open,
                    _busy: m.hold(|m| &m.upstream_busy),
                });
            }
            match connect(&endpoint, inner.settings.connect_timeout).await {
                Ok(conn) => {
                    return Ok(Lease {
                        pool: inner.clone(),
                        _permit: permit,
                        generation,
                        endpoint,
                        conn,
                        buf: BytesMut::with_capacity(16 * 1024),
                        reused: false,
                        open: m.hold(|m| &m.upstream_open),
                        _busy: m.hold(|m| &m.upstream_busy),
                    });
                }
                Err(e) if is_saturation(&e) => {
                    // A full listen backlog: wait like any queued request.
                    if Instant::now() + Duration::from_millis(5) >= deadline {
                        return Err(AcquireError::QueueTimeout);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    m.upstream_connect_errors.inc();
                    // php-fpm may be restarting: wait a little for the
                    // supervisor to say so, then try again. Only a failure
                    // the supervisor does not explain counts for the breaker,
                    // so a restart never opens it.
                    let wait = (Instant::now() + inner.settings.connect_timeout).min(deadline);
                    match tokio::time::timeout_at(wait, state.changed()).await {
                        Ok(Ok(())) => continue,
                        _ => {
                            self.report_failure();
                            return Err(AcquireError::Unreachable(e));
                        }
                    }
                }
            }
        }
    }

    fn take_idle(&self, generation: u64) -> Option<Idle> {
        let lifetime = self.inner.settings.idle_lifetime;
        let now = Instant::now();
        let mut idle = self.inner.idle.lock().unwrap();
        while let Some(i) = idle.pop() {
            if i.generation == generation && !expired(&i, lifetime, now) && !i.conn.looks_closed() {
                return Some(i);
            }
        }
        None
    }
}

fn expired(i: &Idle, lifetime: Option<Duration>, now: Instant) -> bool {
    lifetime.is_some_and(|l| now.duration_since(i.since) >= l)
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
