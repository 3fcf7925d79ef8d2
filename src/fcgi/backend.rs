//! One php-fpm instance as the upstream pool sees it: its endpoint, the
//! permits that bound the connections to it (`pool_size`), its idle pooled
//! connections and the leases in flight.
//!
//! The supervisor makes a `Backend` for every php-fpm it publishes as
//! ready and retires it when that php-fpm goes away or is replaced: a
//! retired backend lends nothing more, drops its idle connections at once
//! (so php-fpm's children can quit) and lets the supervisor wait until its
//! last request is done before stopping the old php-fpm (DESIGN §6, reload).

use std::collections::HashMap;
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
    /// The php-fpm child holding its other end, when tqsup recycles.
    pub held: Option<Held>,
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
    /// Which child holds which connection, when tqsup recycles children
    /// itself (`pool.max_memory_mb`, `pool.max_lifetime_ms`).
    children: Option<Children>,
}

/// The children of one php-fpm master and the pooled connections they
/// hold, so a child can be recycled without failing a request: its
/// connections are lent no more, closed once idle, and only then is it
/// asked to quit.
#[derive(Debug)]
pub struct Children {
    /// php-fpm's master.
    pub master: u32,
    /// `php-fpm: pool <name>`: the command line of the pool's workers.
    worker_title: String,
    /// Connections held, by child pid.
    held: Mutex<HashMap<u32, usize>>,
    /// Children being recycled (and whether they were sent SIGQUIT).
    recycling: Mutex<HashMap<u32, bool>>,
}

impl Children {
    pub fn new(master: u32, pool: &str) -> Self {
        Children {
            master,
            worker_title: format!("php-fpm: pool {pool}"),
            held: Mutex::new(HashMap::new()),
            recycling: Mutex::new(HashMap::new()),
        }
    }

    /// The pool's workers now (not the master's status-pool child).
    pub fn workers(&self) -> Vec<u32> {
        super::peer::children_of(self.master)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c).trim_end_matches(['\0', ' ']) == self.worker_title
                })
            })
            .collect()
    }

    /// Pooled connections child `pid` holds.
    pub fn held_by(&self, pid: u32) -> usize {
        self.held.lock().unwrap().get(&pid).copied().unwrap_or(0)
    }

    pub fn is_recycling(&self, pid: u32) -> bool {
        self.recycling.lock().unwrap().contains_key(&pid)
    }

    /// Children being recycled.
    pub fn recycling(&self) -> Vec<u32> {
        self.recycling.lock().unwrap().keys().copied().collect()
    }

    /// Marks `pid` for recycling: its connections are lent no more.
    pub fn start_recycling(&self, pid: u32) {
        self.recycling.lock().unwrap().entry(pid).or_insert(false);
    }

    /// Whether `pid` may be asked to quit now (it holds no connection and
    /// was not asked yet); marks it asked.
    pub fn ready_to_quit(&self, pid: u32) -> bool {
        let held = self.held.lock().unwrap();
        let mut r = self.recycling.lock().unwrap();
        match r.get_mut(&pid) {
            Some(asked @ false) if held.get(&pid).copied().unwrap_or(0) == 0 => {
                *asked = true;
                true
            }
            _ => false,
        }
    }

    /// Whether `pid` was asked to quit.
    pub fn asked_to_quit(&self, pid: u32) -> bool {
        self.recycling.lock().unwrap().get(&pid) == Some(&true)
    }

    /// `pid` is gone.
    pub fn forget(&self, pid: u32) {
        self.recycling.lock().unwrap().remove(&pid);
    }
}

/// One pooled connection counted as held by child `pid`.
#[derive(Debug)]
pub(super) struct Held {
    backend: Arc<Backend>,
    pub pid: u32,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(c) = &self.backend.children {
            let mut held = c.held.lock().unwrap();
            if let Some(n) = held.get_mut(&self.pid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(&self.pid);
                }
            }
        }
    }
}

/// Who holds a new connection.
pub(super) enum Holder {
    /// Not tracked (recycling off, or the child could not be found).
    Unknown,
    Child(Held),
    /// A child being recycled took it: close it and connect again.
    Recycling,
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
        Self::with_children(generation, endpoint, status, pool_size, max_requests, None)
    }

    /// A backend that tracks which child holds each connection (recycling).
    pub fn with_children(
        generation: u64,
        endpoint: Endpoint,
        status: Option<Endpoint>,
        pool_size: u32,
        max_requests: u32,
        children: Option<Children>,
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
            children,
        })
    }

    /// The children registry, when tqsup recycles.
    pub fn children(&self) -> Option<&Children> {
        self.children.as_ref()
    }

    /// Which child took the new connection `conn`.
    pub(super) fn identify(self: &Arc<Self>, conn: &Stream) -> Holder {
        let Some(c) = &self.children else {
            return Holder::Unknown;
        };
        let workers = c.workers();
        let Some(pid) = super::peer::holder(conn, &workers) else {
            tracing::debug!(?workers, "no php-fpm child found holding a new connection");
            return Holder::Unknown;
        };
        let recycling = c.recycling.lock().unwrap();
        if recycling.contains_key(&pid) {
            return Holder::Recycling;
        }
        *c.held.lock().unwrap().entry(pid).or_insert(0) += 1;
        tracing::debug!(pid, "a new pooled connection is held by this php-fpm child");
        Holder::Child(Held {
            backend: self.clone(),
            pid,
        })
    }

    /// Closes the idle connections child `pid` holds.
    pub fn close_idle_of(&self, pid: u32) {
        let closed: Vec<Idle> = {
            let mut idle = self.idle.lock().unwrap();
            let (gone, keep) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| i.held.as_ref().is_some_and(|h| h.pid == pid));
            *idle = keep;
            gone
        };
        drop(closed);
    }

    /// Whether a connection held by `held` may be lent again.
    pub(super) fn lendable(&self, held: &Option<Held>) -> bool {
        match (&self.children, held) {
            (Some(c), Some(h)) => !c.is_recycling(h.pid),
            _ => true,
        }
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
