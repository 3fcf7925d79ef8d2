//! The forward listener: accepts web-server connections on `forward.listen`
//! (TCP or unix socket), at most `max_connections` at once (see
//! [`super::slots`]), and runs one [`connection::serve`] task per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection;
use super::connection::Down;
use super::exchange::Limits;
use super::listen::{BoundSocket, Listener};
use super::pool::UpstreamPool;
use super::slots::ConnSlots;
use crate::render::InternalPaths;

/// Request bodies queued per connection while their requests cannot take
/// them yet (waiting for a php-fpm connection); past it the connection is
/// not read until they drain (backpressure). Enough for the largest record
/// and a few of nginx's 32 KiB ones, so an ABORT_REQUEST behind a queued
/// upload is still read.
pub const STDIN_QUEUE_CAP: usize = 128 * 1024;

/// What every connection and request shares.
pub struct Ctx {
    pub pool: UpstreamPool,
    /// php-fpm's ping and status paths, never forwarded.
    pub paths: InternalPaths,
    pub limits: Limits,
    pub retry_idempotent: bool,
    /// Announced in GET_VALUES.
    pub max_connections: u32,
    /// What one client may cost (timeouts, buffers).
    pub clients: ClientLimits,
    /// Connection and request tasks, waited for when draining.
    pub tracker: TaskTracker,
}

/// Bounds on slow and abusive clients (DESIGN §7 "Clients are bounded").
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// BEGIN_REQUEST to the end of PARAMS; also accept to the first BEGIN.
    pub params_timeout: Duration,
    /// Silence while a request's body is still arriving.
    pub stdin_timeout: Duration,
    /// PARAMS buffered for all requests of one connection (431 past it).
    pub params_per_conn: usize,
    /// Body bytes queued per connection (see [`STDIN_QUEUE_CAP`]).
    pub stdin_per_conn: usize,
    /// PARAMS buffered across all connections (503 past it).
    pub params_total: Arc<ParamsBudget>,
}

impl ClientLimits {
    pub fn from_config(f: &crate::config::Forward) -> Self {
        ClientLimits {
            params_timeout: f.params_timeout,
            stdin_timeout: f.stdin_timeout,
            params_per_conn: f.params_buffer,
            stdin_per_conn: STDIN_QUEUE_CAP,
            params_total: Arc::new(ParamsBudget::new(f.params_buffer_total)),
        }
    }
}

/// A request head up to this size is ordinary: it may use the budget's
/// reserve (see [`ParamsBudget`]).
pub const SMALL_HEAD: usize = 32 * 1024;

/// Bytes of request heads (BEGIN + PARAMS) held across all connections,
/// against a limit: one atomic counter, shared by [`Charge`]s.
///
/// The last eighth is kept for heads of at most [`SMALL_HEAD`] bytes, so
/// clients stalling with huge PARAMS cannot starve ordinary requests: they
/// get 503s while everyone else is still served.
#[derive(Debug)]
pub struct ParamsBudget {
    used: AtomicUsize,
    limit: usize,
    /// What heads larger than [`SMALL_HEAD`] may use in total.
    large_limit: usize,
}

impl ParamsBudget {
    pub fn new(limit: usize) -> Self {
        ParamsBudget {
            used: AtomicUsize::new(0),
            limit,
            large_limit: limit - limit / 8,
        }
    }

    /// Bytes held right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes for a head that will be `head` bytes in all.
    fn take(&self, n: usize, head: usize) -> bool {
        let limit = if head <= SMALL_HEAD {
            self.limit
        } else {
            self.large_limit
        };
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(n).filter(|&t| t <= limit)
            })
            .is_ok()
    }
}

/// One request's share of the [`ParamsBudget`], given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<ParamsBudget>,
    bytes: usize,
}

impl Charge {
    pub fn new(budget: &Arc<ParamsBudget>) -> Self {
        Charge {
            budget: budget.clone(),
            bytes: 0,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes `n` more bytes, if the budget has them.
    pub fn grow(&mut self, n: usize) -> bool {
        let ok = self.budget.take(n, self.bytes + n);
        if ok {
            self.bytes += n;
        }
        ok
    }

    /// Re-sizes the share to `n` bytes whatever the budget says (a buffer
    /// swapped for one of about the same size).
    pub fn set(&mut self, n: usize) {
        if n > self.bytes {
            self.budget
                .used
                .fetch_add(n - self.bytes, Ordering::Relaxed);
        } else {
            self.budget
                .used
                .fetch_sub(self.bytes - n, Ordering::Relaxed);
        }
        self.bytes = n;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// The bound listening socket and everything connections need.
pub struct ForwardListener {
    listener: Listener,
    ctx: Arc<Ctx>,
    /// One per open downstream connection.
    slots: Arc<ConnSlots>,
}

impl ForwardListener {
    /// The listener on an already bound socket (inside the forwarder's
    /// runtime).
    pub fn from_bound(socket: BoundSocket, ctx: Ctx) -> anyhow::Result<Self> {
        let listener = Listener::from_bound(socket).context("registering the forward listener")?;
        let slots = ConnSlots::new(ctx.max_connections as usize);
        Ok(ForwardListener {
            listener,
            ctx: Arc::new(ctx),
            slots,
        })
    }

    /// The bound address (`host:port` or the socket path), for logs and tests.
    pub fn local_addr(&self) -> String {
        self.listener.local_addr()
    }

    /// Accepts until `shutdown`, then stops accepting and waits for the
    /// requests in flight (connections close as their last request ends).
    pub async fn serve(self, shutdown: CancellationToken) {
        tracing::info!(listen = %self.local_addr(), "forward listener ready");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            // A client is here: when every slot is taken, the connection
            // idle the longest makes room (see `slots`); busy ones never do.
            let Some(slot) = self.slots.acquire(&shutdown).await else {
                break;
            };
            let down = Arc::new(Down::new(stream, self.ctx.limits.write));
            let ctx = self.ctx.clone();
            let shutdown = shutdown.clone();
            let m = super::metrics::global();
            m.downstream_accepted.inc();
            let open = m.hold(|m| &m.downstream_open);
            self.ctx.tracker.spawn(async move {
                connection::serve(down, ctx, shutdown, &slot).await;
                drop((slot, open));
            });
        }
        // Stop accepting (a unix socket's file goes with it).
        let Self { listener, ctx, .. } = self;
        drop(listener);
        ctx.tracker.close();
        ctx.tracker.wait().await;
        tracing::info!("forward listener drained");
    }
}
