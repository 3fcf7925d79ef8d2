//! One php-fpm instance as the upstream pool sees it: its endpoint, the
//! permits that bound the connections to it (`pool_size`), its idle pooled
//! connections and the leases in flight.
//!
//! The supervisor makes a `Backend` for every php-fpm it publishes as
//! ready and retires it when that php-fpm goes away or is replaced: a
//! retired backend lends nothing more, drops its idle connections at once
//! (so php-fpm's children can quit) and lets the supervisor wait until its
//! last request is done before stopping the old php-fpm (DESIGN §6, reload).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::io::Stream;
use crate::config::Endpoint;
use crate::metrics::GaugeGuard;

/// A pooled connection and the read buffer that goes with it.
pub(super) struct Idle {
    pub conn: Stream,
    pub buf: BytesMut,
    pub since: Instant,
    /// Requests php-fpm completed on this connection.
    pub served: u32,
    /// Counts the connection in `upstream_connections_open`.
    pub open: GaugeGuard,
    /// Counts it in `upstream_connections_idle`.
    pub _idle: GaugeGuard,
}

/// One php-fpm instance behind the pool.
pub struct Backend {
    /// Grows with every php-fpm the supervisor publishes (start, restart,
    /// reload); failures are tagged with it so stale ones never count.
    pub generation: u64,
    /// php-fpm's main pool: where requests go.
    pub endpoint: Endpoint,
    /// php-fpm's status pool (`pm.status_listen`): the ping and the status
    /// page, answered by children the pool never holds. None when php-fpm
    /// is not tqsup's (forward-only mode).
    pub status: Option<Endpoint>,
    /// At most this many connections (≤ `pm.max_children`).
    pub pool_size: u32,
    /// php-fpm's `pm.max_requests` (0: none): a child closes its connection
    /// after so many requests, so tqsup retires it then instead of sending
    /// one more request into a closing socket.
    pub max_requests: u32,
    /// One permit per allowed connection; tokio's semaphore is FIFO, which is
    /// the queue. Closed when the backend is retired.
    pub(super) permits: Arc<Semaphore>,
    pub(super) idle: Mutex<Vec<Idle>>,
    /// Leases in flight.
    busy: AtomicUsize,
    /// Woken when `busy` drops to 0.
    drained: Notify,
    /// Responses php-fpm completed: evidence of life that needs no probe.
    completed: AtomicU64,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("generation", &self.generation)
            .field("endpoint", &self.endpoint)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// The same backend, not two with equal fields: each publication of a
/// ready php-fpm is its own.
impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Backend {
    pub fn new(
        generation: u64,
        endpoint: Endpoint,
        status: Option<Endpoint>,
        pool_size: u32,
        max_requests: u32,
    ) -> Arc<Self> {
        let pool_size = pool_size.max(1);
        Arc::new(Backend {
            generation,
            endpoint,
            status,
            pool_size,
            max_requests,
            permits: Arc::new(Semaphore::new(pool_size as usize)),
            idle: Mutex::new(Vec::new()),
            busy: AtomicUsize::new(0),
            drained: Notify::new(),
            completed: AtomicU64::new(0),
        })
    }

    /// Lends nothing more: queued requests move on to the next backend, idle
    /// connections are closed now (so php-fpm's children can quit at once).
    pub fn retire(&self) {
        self.permits.close();
        self.close_idle();
    }

    pub fn is_retired(&self) -> bool {
        self.permits.is_closed()
    }

    /// Closes the idle pooled connections (php-fpm's children waiting on
    /// them are free to quit or serve others).
    pub fn close_idle(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().unwrap());
        drop(idle);
    }

    /// Idle pooled connections.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    /// Requests in flight on this backend.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// Waits until no request is in flight here.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.busy() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Responses completed so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    pub(super) fn response_completed(&self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn hold(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.clone())
    }
}

/// Counts one lease in [`Backend::busy`] while it lives.
pub(super) struct BusyGuard(pub Arc<Backend>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}
