//! One downstream FastCGI connection: the read loop that decodes records,
//! keeps the state of each (multiplexed) request until its PARAMS are
//! complete, answers what tqsup answers itself, runs requests through
//! [`super::exchange::run`] and feeds them their bodies, and bounds what a
//! slow or abusive client can cost (DESIGN §7 "Clients are bounded").
//!
//! One request at a time (what nginx, Apache, Caddy and HAProxy send) runs
//! inline: its exchange is a future of this connection's own task, polled
//! beside the reads, in a slot reused by every request, with the head
//! buffer reused too. A request that arrives while another runs gets a
//! task of its own (multiplexing).
//!
//! Reading the connection never waits on one request: a body the request's
//! exchange cannot take yet is queued here (see [`body`]), and only when a
//! whole connection's queue is over its budget does the connection stop
//! being read.

mod body;
mod down;
mod head;
mod management;
mod requests;
mod timeouts;

pub use down::{Abort, Down};

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt as _;
use futures_util::future::{Fuse, FusedFuture as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{self, HEADER_LEN};
use super::exchange::{self, Job, Stdin, error_response};
use super::listener::{Charge, Ctx};
use super::metrics::{self, ForwardError};
use super::slots::ConnSlot;
use body::Body;
use head::Head;

/// Requests multiplexed on one connection at once; more get a 503. This is
/// what GET_VALUES announces as FCGI_MAX_REQS.
const MAX_REQUESTS_PER_CONN: usize = 128;

/// The empty STDIN record for php-fpm (request id 1).
const STDIN_END: [u8; HEADER_LEN] = [codec::VERSION, codec::STDIN, 0, 1, 0, 0, 0, 0];

/// How often a connection that only waits for its last requests to end
/// (shutdown, or a client that half-closed) looks again.
const RECHECK: Duration = Duration::from_millis(50);

enum Phase {
    /// Collecting the PARAMS stream, until `deadline` (`params_timeout`).
    Params { head: Head, deadline: Instant },
    /// Bodyless request: waiting for the empty STDIN, until `deadline`
    /// (`stdin_timeout`).
    AwaitStdin {
        head: Head,
        replayable: bool,
        zero: bool,
        deadline: Instant,
    },
    /// Its exchange runs (inline when `abort` is [`Abort::Inline`]); its
    /// body goes through `body`.
    Running { abort: Abort, body: Body },
}

struct Slot {
    id: u16,
    keep_conn: bool,
    arrived: Instant,
    /// The head's share of the PARAMS budgets, held until the request ends
    /// (its exchange keeps the head for a replay).
    charge: Charge,
    /// The `forward.lanes` lane the request belongs to, once its PARAMS
    /// are read.
    lane: Option<usize>,
    /// What its access line says (only when one may be written).
    info: Option<Box<super::access::RequestInfo>>,
    phase: Phase,
}

impl Slot {
    /// A finished request whose exchange has let go of its STDIN.
    fn finished(&self) -> bool {
        matches!(&self.phase, Phase::Running { body, .. } if body.task_done())
    }

    /// When this request times out; a body only counts while the connection
    /// is read (`reading`): a client held back by backpressure is not slow.
    fn deadline(&self, stdin_timeout: Duration, reading: bool) -> Option<Instant> {
        match &self.phase {
            Phase::Params { deadline, .. } | Phase::AwaitStdin { deadline, .. } => Some(*deadline),
            Phase::Running { body, .. } if !body.complete && !body.ended && reading => {
                Some(body.last_input + stdin_timeout)
            }
            Phase::Running { .. } => None,
        }
    }
}

/// Input that ends the connection (logged once by the caller).
#[derive(Debug)]
struct ProtocolError(String);

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// Serves one connection until the client leaves, a request without
/// KEEP_CONN ends, bad input arrives, it stays silent past
/// `params_timeout`, (after `shutdown`, or once the client has shut its
/// sending side) it has no request left, or the listener is full and needs
/// its `slot` while it is idle.
pub async fn serve(down: Arc<Down>, ctx: Arc<Ctx>, shutdown: CancellationToken, slot: &ConnSlot) {
    let accepted = Instant::now();
    let mut conn = Conn {
        down: down.clone(),
        first_begin_by: Some(accepted + ctx.clients.params_timeout),
        partial_by: None,
        ctx,
        slots: Vec::new(),
        out: BytesMut::new(),
        close_after_flush: false,
        paused: false,
        inline_next: None,
        inline_busy: false,
        spare_head: BytesMut::new(),
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // The exchange run inline; one slot in this task for every request.
    let inline = Fuse::terminated();
    tokio::pin!(inline);
    // After `shutdown`: no longer waiting for new requests.
    let mut draining = false;
    // The client has not shut its sending side.
    let mut read_open = true;
    let done = down.done.cancelled();
    tokio::pin!(done);
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    let recheck = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(recheck);
    // The one timer for every timeout of the connection, armed at the
    // earliest; a later deadline never re-arms it (it fires early, finds
    // nothing due, and is armed again).
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // No request and no unread bytes: the listener may ask for the slot.
    let mut was_idle = false;
    loop {
        if let Err(ProtocolError(why)) = conn.process(&mut buf) {
            tracing::warn!(why, "closing FastCGI client connection on bad input");
            break;
        }
        if let Some((job, stdin)) = conn.inline_next.take() {
            let ctx = &conn.ctx;
            inline.set(
                exchange::run(
                    job,
                    stdin,
                    down.clone(),
                    ctx.pool.clone(),
                    ctx.limits.clone(),
                    Abort::Inline,
                )
                .fuse(),
            );
        }
        if !conn.out.is_empty() {
            // Written while the inline exchange goes on: it may hold the
            // writer, mid-batch.
            let out = std::mem::take(&mut conn.out);
            let mut ended = None;
            let sent = {
                let parts: [&[u8]; 1] = [&out];
                let send = down.send(&parts);
                tokio::pin!(send);
                loop {
                    tokio::select! {
                        ok = &mut send => break ok,
                        job = &mut inline => ended = Some(job),
                    }
                }
            };
            conn.out = out;
            conn.out.clear();
            if let Some(job) = ended {
                conn.inline_ended(job);
            }
            if !sent {
                break;
            }
        }
        if conn.close_after_flush {
            break;
        }
        conn.slots.retain(|s| !s.finished());
        let quiet = conn.slots.is_empty() && inline.is_terminated();
        if !quiet || buf.is_empty() {
            conn.partial_by = None;
        } else if conn.partial_by.is_none() {
            // Part of a record and no request open: the rest must come
            // within params_timeout, as a new connection's first request.
            conn.partial_by = Some(Instant::now() + conn.ctx.clients.params_timeout);
        }
        let winding_down = draining || !read_open;
        if winding_down && quiet {
            break;
        }
        let reading = read_open && conn.stdin_queued() < conn.ctx.clients.stdin_per_conn;
        conn.set_reading(reading || !read_open);
        if let Some(next) = conn.next_deadline(reading)
            && armed.is_none_or(|a| next < a)
        {
            timer.as_mut().reset(next);
            armed = Some(next);
        }
        if reading {
            super::io::reserve_read(&mut buf, 8192);
        }
        let delivering = conn.delivering();
        let idle = quiet && buf.is_empty();
        if idle != was_idle {
            slot.set_idle(idle);
            was_idle = idle;
        }
        tokio::select! {
            _ = &mut done => break,
            _ = slot.evicted(), if idle => {
                tracing::debug!("closing an idle FastCGI client connection: the listener is full");
                break;
            }
            job = &mut inline => conn.inline_ended(job),
            _ = &mut stopping, if !draining => {
                draining = true;
                recheck.as_mut().reset(Instant::now() + RECHECK);
            }
            _ = &mut recheck, if winding_down => {
                recheck.as_mut().reset(Instant::now() + RECHECK);
            }
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                if !conn.expire(Instant::now(), reading) {
                    break;
                }
            }
            _ = std::future::poll_fn(|cx| conn.poll_deliver(cx)), if delivering => {}
            r = down.stream.read_buf(&mut buf), if reading => match r {
                Ok(0) => {
                    if !buf.is_empty() {
                        tracing::warn!(bytes = buf.len(), "FastCGI client closed the connection mid-record");
                        break;
                    }
                    // Half-close: the requests it sent still get answered.
                    read_open = false;
                    conn.client_done_sending();
                    recheck.as_mut().reset(Instant::now() + RECHECK);
                }
                Ok(n) => {
                    metrics::global().received_bytes.inc_by(n as u64);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "FastCGI client connection read error");
                    break;
                }
            },
        }
    }
    // Whatever is still running belongs to a client that is gone; the
    // inline exchange sees it at once and is counted as it ends.
    down.done.cancel();
    down.abort_inline();
    if !inline.is_terminated() {
        inline.await;
    }
}

struct Conn {
    down: Arc<Down>,
    ctx: Arc<Ctx>,
    slots: Vec<Slot>,
    /// Local answers (management records, errors) waiting to be written.
    out: BytesMut,
    close_after_flush: bool,
    /// Until the first BEGIN_REQUEST: when a connection that said nothing
    /// is closed.
    first_begin_by: Option<Instant>,
    /// While part of a record waits and no request is open: when the
    /// connection is closed.
    partial_by: Option<Instant>,
    /// Not read for backpressure: body timeouts are suspended.
    paused: bool,
    /// A request to run inline, picked up by [`serve`].
    inline_next: Option<(Job, Stdin)>,
    /// A request runs inline (or is about to): the next one gets a task.
    inline_busy: bool,
    /// The head buffer of the last inline request, for the next request.
    spare_head: BytesMut,
}

impl Conn {
    /// The inline exchange ended: its slot is free, its head buffer kept.
    fn inline_ended(&mut self, job: Job) {
        self.inline_busy = false;
        self.down.reset_inline();
        self.slots.retain(|s| {
            !matches!(
                s.phase,
                Phase::Running {
                    abort: Abort::Inline,
                    ..
                }
            )
        });
        self.spare_head = job.head;
    }

    fn slot(&self, id: u16) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id && !s.finished())
    }

    /// Answers a request locally and forgets it.
    fn answer(&mut self, idx: usize, status: u16) {
        let s = self.slots.swap_remove(idx);
        tracing::info!(status, request_id = s.id, "request answered locally");
        let m = metrics::global();
        m.forward_error(match status {
            404 => ForwardError::InternalPath,
            408 => ForwardError::Timeout,
            503 => ForwardError::TooManyRequests,
            _ => ForwardError::BadRequest,
        });
        m.request_done(status, s.arrived.elapsed());
        self.out.extend_from_slice(&error_response(s.id, status));
        if !s.keep_conn {
            self.out_then_close();
        }
    }

    /// A request without KEEP_CONN was answered locally: close once `out`
    /// is written.
    fn out_then_close(&mut self) {
        self.close_after_flush = true;
    }

    /// Body bytes queued on this connection.
    fn stdin_queued(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match &s.phase {
                Phase::Running { body, .. } => body.queued(),
                _ => 0,
            })
            .sum()
    }

    /// Some body waits for room in its task's channel.
    fn delivering(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(&s.phase, Phase::Running { body, .. } if body.pending()))
    }

    fn poll_deliver(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut moved = false;
        for s in &mut self.slots {
            if let Phase::Running { body, .. } = &mut s.phase
                && body.pending()
            {
                moved |= body.poll_deliver(cx).is_ready();
            }
        }
        if moved {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The client shut its sending side: requests it has not finished
    /// sending can never finish and are dropped; the others are answered.
    fn client_done_sending(&mut self) {
        let m = metrics::global();
        let down = &self.down;
        self.slots.retain(|s| match &s.phase {
            Phase::Running { body, .. } if body.complete || body.ended => true,
            // The exchange answers END_REQUEST and closes php-fpm's
            // connection.
            Phase::Running { abort, .. } => {
                abort.cancel(down);
                false
            }
            _ => {
                m.forward_error(ForwardError::ClientAborted);
                m.request_done(0, s.arrived.elapsed());
                false
            }
        });
    }

    fn process(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        loop {
            if self.close_after_flush {
                return Ok(());
            }
            let (h, n) = match codec::peek_frame(buf) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return perr(e.to_string()),
            };
            if h.request_id != 0 && h.kind == codec::STDIN && h.content_len > 0 {
                // Body bytes go on without a copy.
                let frame = buf.split_to(n);
                self.stdin(h, Some(frame))?;
                continue;
            }
            let content = &buf[HEADER_LEN..HEADER_LEN + h.content_len as usize];
            let r = if h.request_id == 0 {
                self.management(h.kind, content)
            } else {
                match h.kind {
                    codec::BEGIN_REQUEST => self.begin(h.request_id, content),
                    codec::ABORT_REQUEST => {
                        self.abort(h.request_id);
                        Ok(())
                    }
                    codec::PARAMS => self.params(h.request_id, content),
                    codec::STDIN => self.stdin(h, None),
                    codec::DATA => Ok(()),
                    k => perr(format!("record type {k} is not for a FastCGI server")),
                }
            };
            buf.advance(n);
            r?;
        }
    }
}
