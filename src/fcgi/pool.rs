//! The upstream pool (DESIGN §7): at most `pool_size` persistent connections
//! to the current php-fpm ([`Backend`]), each carrying one request at a
//! time; a FIFO queue with a timeout in front of them; idle connections
//! checked with a real peek before reuse, retired after php-fpm's
//! `max_requests`, and closed after their idle lifetime.
//!
//! The pool follows the supervisor's [`PhpFpmState`]: while php-fpm is not
//! ready, requests wait in the queue; when a backend is retired (restart,
//! reload), its queue moves on to the next one. Failures are tagged with
//! their backend's generation and count for the breaker only while that
//! php-fpm is the current, ready one: a restart, reload or kill tqsup knows
//! about never opens the breaker, and neither does saturation.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use super::backend::Backend;
use super::backend::Idle;
use super::breaker::{Breaker, SharedBreaker};
use super::lanes::{LaneGate, Lanes};
use super::metrics;
use super::upstream::PhpFpmState;
pub use lease::Lease;
use lease::connect;

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

struct Inner {
    /// `forward.lanes`, shared with the admin endpoint's /status.
    lanes: Arc<Lanes>,
    state: watch::Receiver<PhpFpmState>,
    breaker: Arc<Mutex<Breaker>>,
    settings: PoolSettings,
}

/// Cheap to clone; all clones share one pool.
#[derive(Clone)]
pub struct UpstreamPool {
    inner: Arc<Inner>,
}

/// A full listen backlog: php-fpm is busy, not broken.
fn is_saturation(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(nix::libc::EAGAIN)
}

impl UpstreamPool {
    pub fn new(state: watch::Receiver<PhpFpmState>, settings: PoolSettings) -> Self {
        Self::with_lanes(state, settings, Arc::new(Lanes::default()))
    }

    /// A pool whose requests may belong to `lanes`.
    pub fn with_lanes(
        state: watch::Receiver<PhpFpmState>,
        settings: PoolSettings,
        lanes: Arc<Lanes>,
    ) -> Self {
        let breaker = Breaker::new(settings.failure_threshold, settings.open);
        Self::with_breaker(state, settings, lanes, Arc::new(Mutex::new(breaker)))
    }

    /// A pool whose breaker is shared (the admin endpoint reads it).
    pub fn with_breaker(
        state: watch::Receiver<PhpFpmState>,
        settings: PoolSettings,
        lanes: Arc<Lanes>,
        breaker: SharedBreaker,
    ) -> Self {
        UpstreamPool {
            inner: Arc::new(Inner {
                lanes,
                state,
                breaker,
                settings,
            }),
        }
    }

    /// The lanes requests may belong to.
    pub fn lanes(&self) -> &Lanes {
        &self.inner.lanes
    }

    /// The current backend, if php-fpm is ready.
    pub fn current(&self) -> Option<Arc<Backend>> {
        match &*self.inner.state.borrow() {
            PhpFpmState::Ready { backend } => Some(backend.clone()),
            _ => None,
        }
    }

    /// How long a connect may take.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.settings.connect_timeout
    }

    /// Whether `backend` is the php-fpm serving now.
    pub fn is_current_backend(&self, backend: &Arc<Backend>) -> bool {
        self.is_current(backend.generation)
    }

    /// Waits up to `grace` for php-fpm `generation` to stop being the
    /// current one (the supervisor saw its master die); whether it did.
    pub async fn replaced_within(&self, generation: u64, grace: Duration) -> bool {
        let mut state = self.inner.state.clone();
        let gone = state.wait_for(|s| match s {
            PhpFpmState::Ready { backend } => {
                backend.generation != generation || backend.is_retired()
            }
            _ => true,
        });
        tokio::time::timeout(grace, gone).await.is_ok()
    }

    /// Whether `generation` is the php-fpm serving now.
    fn is_current(&self, generation: u64) -> bool {
        self.current()
            .is_some_and(|b| b.generation == generation && !b.is_retired())
    }

    /// Follows the php-fpm state: a new backend resets the breaker (a fresh
    /// php-fpm owes nothing for the old one's failures); reaps idle
    /// connections that are closed or too old, until `shutdown`.
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
        let mut generation = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = state.changed(), if watching => match r {
                    Ok(()) => {
                        let now = match &*state.borrow_and_update() {
                            PhpFpmState::Ready { backend } => Some(backend.generation),
                            _ => None,
                        };
                        if now.is_some() && now != generation {
                            self.inner.breaker.lock().unwrap().reset();
                            generation = now;
                        }
                    }
                    Err(_) => watching = false,
                },
                _ = tick.tick() => self.reap(Instant::now()),
            }
        }
        if let Some(b) = self.current() {
            b.close_idle();
        }
    }

    /// Drops idle connections that are closed, readable or too old.
    pub fn reap(&self, now: Instant) {
        let Some(b) = self.current() else { return };
        let lifetime = self.inner.settings.idle_lifetime;
        b.idle
            .lock()
            .unwrap()
            .retain(|i| !expired(i, lifetime, now) && i.conn.is_quiet());
    }

    /// Number of idle pooled connections to the current php-fpm.
    pub fn idle_count(&self) -> usize {
        self.current().map_or(0, |b| b.idle_count())
    }

    /// The breaker, shared with the health probe.
    pub fn breaker(&self) -> Arc<Mutex<Breaker>> {
        self.inner.breaker.clone()
    }

    /// php-fpm answered a whole request on `lease`.
    pub fn report_success(&self, lease: &Lease) {
        lease.backend.response_completed();
        self.inner.breaker.lock().unwrap().success();
    }

    /// A real failure of php-fpm `generation` (refused, reset, gone). It
    /// counts only while that php-fpm is the current, ready one: failures
    /// of a php-fpm the supervisor is restarting, reloading or has killed
    /// are explained already.
    pub fn report_failure(&self, generation: u64) {
        if self.is_current(generation) {
            self.inner.breaker.lock().unwrap().failure(Instant::now());
        }
    }

    /// Waits until php-fpm is ready; its backend. `Stopped` when tqsup stops.
    async fn ready_backend(
        state: &mut watch::Receiver<PhpFpmState>,
        deadline: Instant,
        not: Option<u64>,
    ) -> Result<Arc<Backend>, AcquireError> {
        let found = tokio::time::timeout_at(
            deadline,
            state.wait_for(|s| match s {
                PhpFpmState::Ready { backend } => {
                    !backend.is_retired() && Some(backend.generation) != not
                }
                PhpFpmState::Stopped => true,
                _ => false,
            }),
        )
        .await;
        match found {
            Ok(Ok(s)) => match &*s {
                PhpFpmState::Ready { backend } => Ok(backend.clone()),
                _ => Err(AcquireError::Stopped),
            },
            Ok(Err(_)) => Err(AcquireError::Stopped),
            Err(_) => Err(AcquireError::QueueTimeout),
        }
    }

    /// Waits (FIFO, until `deadline`) for a connection to the current
    /// php-fpm. While php-fpm restarts or reloads, waits for the next one.
    pub async fn acquire(&self, deadline: Instant) -> Result<Lease, AcquireError> {
        self.acquire_in(deadline, None).await
    }

    /// [`acquire`](Self::acquire) for a request of `lane`: it first waits
    /// (FIFO, until `deadline`) for room in the lane, then for a connection.
    pub async fn acquire_in(
        &self,
        deadline: Instant,
        lane: Option<&LaneGate>,
    ) -> Result<Lease, AcquireError> {
        if !self
            .inner
            .breaker
            .lock()
            .unwrap()
            .allows_request(Instant::now())
        {
            return Err(AcquireError::BreakerOpen);
        }
        let queued = metrics::global().hold(|m| &m.queue_depth);
        let room = match lane {
            Some(l) => Some(l.enter(deadline).await.ok_or(AcquireError::QueueTimeout)?),
            None => None,
        };
        let r = self.lease(deadline, None).await;
        drop(queued);
        r.map(|mut lease| {
            lease.lane = room;
            lease
        })
    }

    /// A fresh connection for a replay, to a php-fpm other than `not` when
    /// given (the one that just died: wait for the supervisor's next one).
    pub async fn acquire_fresh(
        &self,
        deadline: Instant,
        not: Option<u64>,
    ) -> Result<Lease, AcquireError> {
        self.lease_inner(deadline, not, false).await
    }

    async fn lease(&self, deadline: Instant, not: Option<u64>) -> Result<Lease, AcquireError> {
        self.lease_inner(deadline, not, true).await
    }

    async fn lease_inner(
        &self,
        deadline: Instant,
        not: Option<u64>,
        reuse: bool,
    ) -> Result<Lease, AcquireError> {
        let inner = &self.inner;
        let m = metrics::global();
        let mut state = inner.state.clone();
        loop {
            let backend = Self::ready_backend(&mut state, deadline, not).await?;
            let permit = tokio::select! {
                biased;
                p = backend.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    // Retired while we waited: on to the next php-fpm.
                    Err(_) => continue,
                },
                _ = tokio::time::sleep_until(deadline) => return Err(AcquireError::QueueTimeout),
            };
            if reuse && let Some(i) = take_idle(&backend, inner.settings.idle_lifetime) {
                return Ok(Lease {
                    _busy: backend.hold(),
                    backend,
                    _permit: permit,
                    conn: i.conn,
                    held: i.held,
                    buf: i.buf,
                    reused: true,
                    served: i.served,
                    open: i.open,
                    _busy_gauge: m.hold(|m| &m.upstream_busy),
                    lane: None,
                });
            }
            loop {
                match connect(&backend.endpoint, inner.settings.connect_timeout).await {
                    Ok(conn) => {
                        return Ok(Lease {
                            _busy: backend.hold(),
                            backend,
                            _permit: permit,
                            conn,
                            // Learnt when it is first given back.
                            held: None,
                            buf: BytesMut::with_capacity(16 * 1024),
                            reused: false,
                            served: 0,
                            open: m.hold(|m| &m.upstream_open),
                            _busy_gauge: m.hold(|m| &m.upstream_busy),
                            lane: None,
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
                        // php-fpm may be going away: give the supervisor a
                        // moment to say so, then wait for the next one. Only
                        // a failure the supervisor does not explain counts
                        // for the breaker.
                        if backend.is_retired() {
                            break;
                        }
                        let wait = (Instant::now() + inner.settings.connect_timeout).min(deadline);
                        let _ = tokio::time::timeout_at(wait, state.changed()).await;
                        if backend.is_retired() || !self.is_current(backend.generation) {
                            break;
                        }
                        self.report_failure(backend.generation);
                        return Err(AcquireError::Unreachable(e));
                    }
                }
            }
        }
    }
}

/// The most recently used idle connection that is provably open. Taking
/// the newest keeps the oldest idle so they age out (and php-fpm's process
/// manager can shrink a dynamic pool).
fn take_idle(backend: &Backend, lifetime: Option<Duration>) -> Option<Idle> {
    let now = Instant::now();
    let mut idle = backend.idle.lock().unwrap();
    while let Some(i) = idle.pop() {
        if !expired(&i, lifetime, now) && backend.lendable(&i.held) && i.conn.is_quiet() {
            return Some(i);
        }
    }
    None
}

fn expired(i: &Idle, lifetime: Option<Duration>, now: Instant) -> bool {
    lifetime.is_some_and(|l| now.duration_since(i.since) >= l)
}

mod lease;

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
