//! One downstream FastCGI connection: the read loop that decodes records,
//! keeps the state of each (multiplexed) request until its PARAMS are
//! complete, answers what tqsup answers itself, and hands requests to
//! [`exchange::run`] tasks.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{self, HEADER_LEN};
use super::exchange::{self, Down, Job, StdinMsg, error_response};
use super::listener::Ctx;
use crate::metrics::{self, ForwardError};

/// Requests multiplexed on one connection at once; more get a 503.
const MAX_REQUESTS_PER_CONN: usize = 128;

enum Phase {
    /// Collecting the PARAMS stream.
    Params(BytesMut),
    /// Bodyless request: waiting for the empty STDIN before sending it.
    AwaitStdin {
        head: BytesMut,
        replayable: bool,
        zero: bool,
    },
    /// Handed to a task; `remaining` body bytes per CONTENT_LENGTH.
    Running {
        tx: mpsc::Sender<StdinMsg>,
        abort: CancellationToken,
        remaining: u64,
    },
}

struct Slot {
    id: u16,
    keep_conn: bool,
    arrived: Instant,
    phase: Phase,
}

impl Slot {
    /// A finished request whose task has let go of its STDIN.
    fn finished(&self) -> bool {
        matches!(&self.phase, Phase::Running { tx, .. } if tx.is_closed())
    }
}

/// Input that ends the connection (logged once by the caller).
#[derive(Debug)]
struct ProtocolError(String);

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// Serves one connection until the client leaves, a request without
/// KEEP_CONN ends, bad input arrives, or (after `shutdown`) it has no
/// request left.
pub async fn serve(down: Arc<Down>, ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut conn = Conn {
        down,
        ctx,
        slots: Vec::new(),
        out: BytesMut::new(),
        close_after_flush: false,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut draining = false;
    let done = conn.down.done.clone();
    let done = done.cancelled();
    tokio::pin!(done);
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    // Re-armed every 50 ms while draining, to notice the last request end.
    let recheck = tokio::time::sleep(std::time::Duration::from_secs(3600));
    tokio::pin!(recheck);
    loop {
        if let Err(ProtocolError(why)) = conn.process(&mut buf).await {
            tracing::warn!(why, "closing FastCGI client connection on bad input");
            break;
        }
        if !conn.flush().await || conn.close_after_flush {
            break;
        }
        conn.slots.retain(|s| !s.finished());
        if draining && conn.slots.is_empty() {
            break;
        }
        super::io::reserve_read(&mut buf, 8192);
        tokio::select! {
            _ = &mut done => break,
            _ = &mut stopping, if !draining => {
                draining = true;
                recheck.as_mut().reset(Instant::now() + std::time::Duration::from_millis(50));
            }
            _ = &mut recheck, if draining => {
                recheck.as_mut().reset(Instant::now() + std::time::Duration::from_millis(50));
            }
            r = conn.down.stream.read_buf(&mut buf) => match r {
                Ok(0) => {
                    if !buf.is_empty() {
                        tracing::warn!(bytes = buf.len(), "FastCGI client closed the connection mid-record");
                    }
                    break;
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
    // Whatever is still running belongs to a client that is gone.
    conn.down.done.cancel();
}

struct Conn {
    down: Arc<Down>,
    ctx: Arc<Ctx>,
    slots: Vec<Slot>,
    /// Local answers (management records, errors) waiting to be written.
    out: BytesMut,
    close_after_flush: bool,
}

impl Conn {
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let mut bufs = vec![self.out.split().freeze()];
        self.down.send(&mut bufs).await
    }

    fn slot(&mut self, id: u16) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id && !s.finished())
    }

    /// Answers a request locally and forgets it.
    fn answer(&mut self, idx: usize, status: u16) {
        let s = self.slots.swap_remove(idx);
        tracing::info!(status, request_id = s.id, "request answered locally");
        let m = metrics::global();
        m.forward_error(match status {
            404 => ForwardError::InternalPath,
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

    async fn process(&mut self, buf: &mut BytesMut) -> Result<(), ProtocolError> {
        loop {
            if self.close_after_flush {
                return Ok(());
            }
            let (h, n) = match codec::peek_frame(buf) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return perr(e.to_string()),
            };
            let frame = buf.split_to(n);
            let content = &frame[HEADER_LEN..HEADER_LEN + h.content_len as usize];
            if h.request_id == 0 {
                self.management(h.kind, content)?;
                continue;
            }
            match h.kind {
                codec::BEGIN_REQUEST => self.begin(h.request_id, content)?,
                codec::ABORT_REQUEST => self.abort(h.request_id),
                codec::PARAMS => self.params(h.request_id, content)?,
                codec::STDIN => self.stdin(h, frame).await?,
                codec::DATA => {}
                k => return perr(format!("record type {k} is not for a FastCGI server")),
            }
        }
    }

    fn management(&mut self, kind: u8, content: &[u8]) -> Result<(), ProtocolError> {
        match kind {
            codec::GET_VALUES => {
                let mut res = BytesMut::new();
                for p in codec::pairs(content) {
                    let (name, _) = p.map_err(|e| ProtocolError(e.to_string()))?;
                    let value = match name {
                        b"FCGI_MAX_CONNS" | b"FCGI_MAX_REQS" => {
                            self.ctx.max_connections.to_string()
                        }
                        b"FCGI_MPXS_CONNS" => "1".to_string(),
                        _ => continue,
                    };
                    codec::put_pair(&mut res, name, value.as_bytes());
                }
                codec::encode(&mut self.out, codec::GET_VALUES_RESULT, 0, &res);
                Ok(())
            }
            codec::BEGIN_REQUEST..=codec::DATA => {
                perr(format!("record type {kind} on request id 0"))
            }
            _ => {
                codec::encode_unknown_type(&mut self.out, kind);
                Ok(())
            }
        }
    }

    fn begin(&mut self, id: u16, content: &[u8]) -> Result<(), ProtocolError> {
        let Some((role, flags)) = codec::parse_begin(content) else {
            return perr(format!("BEGIN_REQUEST body of {} bytes", content.len()));
        };
        if self.slot(id).is_some() {
            return perr(format!(
                "BEGIN_REQUEST for request id {id} already in progress"
            ));
        }
        let keep_conn = flags & codec::FLAG_KEEP_CONN != 0;
        if role != codec::ROLE_RESPONDER {
            codec::encode_end(&mut self.out, id, 0, codec::UNKNOWN_ROLE);
            if !keep_conn {
                self.out_then_close();
            }
            return Ok(());
        }
        self.slots.retain(|s| s.id != id);
        self.slots.push(Slot {
            id,
            keep_conn,
            arrived: Instant::now(),
            phase: Phase::Params(BytesMut::new()),
        });
        if self.slots.len() > MAX_REQUESTS_PER_CONN {
            let idx = self.slots.len() - 1;
            self.answer(idx, 503);
        }
        Ok(())
    }

    fn abort(&mut self, id: u16) {
        let Some(idx) = self.slot(id) else { return };
        match &self.slots[idx].phase {
            Phase::Running { abort, .. } => {
                // The task answers END_REQUEST and closes php-fpm's connection.
                abort.cancel();
                self.slots.swap_remove(idx);
            }
            _ => {
                let s = self.slots.swap_remove(idx);
                let m = metrics::global();
                m.forward_error(ForwardError::ClientAborted);
                m.request_done(0, s.arrived.elapsed());
                codec::encode_end(&mut self.out, id, 0, codec::REQUEST_COMPLETE);
                if !s.keep_conn {
                    self.out_then_close();
                }
            }
        }
    }

    fn params(&mut self, id: u16, content: &[u8]) -> Result<(), ProtocolError> {
        let Some(idx) = self.slot(id) else {
            return Ok(());
        };
        let Phase::Params(p) = &mut self.slots[idx].phase else {
            return Ok(());
        };
        if !content.is_empty() {
            if p.len() + content.len() > self.ctx.params_cap {
                self.answer(idx, 431);
            } else {
                p.extend_from_slice(content);
            }
            return Ok(());
        }
        let params = std::mem::take(p);
        self.params_done(idx, &params)
    }

    fn params_done(&mut self, idx: usize, params: &[u8]) -> Result<(), ProtocolError> {
        let mut script_name: &[u8] = b"";
        let mut length: &[u8] = b"";
        let mut method: &[u8] = b"";
        for p in codec::pairs(params) {
            let (n, v) = p.map_err(|e| ProtocolError(e.to_string()))?;
            match n {
                b"SCRIPT_NAME" => script_name = v,
                b"CONTENT_LENGTH" => length = v,
                b"REQUEST_METHOD" => method = v,
                _ => {}
            }
        }
        if self.ctx.paths.is_internal(script_name) {
            self.answer(idx, 404);
            return Ok(());
        }
        let length = match std::str::from_utf8(length).ok().map(str::trim) {
            Some("") => None,
            Some(t) => match t.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.answer(idx, 400);
                    return Ok(());
                }
            },
            None => {
                self.answer(idx, 400);
                return Ok(());
            }
        };
        let mut head = BytesMut::with_capacity(params.len() + 64);
        codec::encode_begin(&mut head, 1, codec::ROLE_RESPONDER, codec::FLAG_KEEP_CONN);
        match codec::reframe_params(&mut head, 1, params) {
            Ok(()) => {}
            Err(codec::ReframeError::PairTooLarge(_)) => {
                self.answer(idx, 431);
                return Ok(());
            }
            Err(codec::ReframeError::Codec(e)) => return perr(e.to_string()),
        }
        let replayable = self.ctx.retry_idempotent && matches!(method, b"GET" | b"HEAD");
        match length {
            None | Some(0) => {
                self.slots[idx].phase = Phase::AwaitStdin {
                    head,
                    replayable,
                    zero: length.is_some(),
                };
            }
            Some(n) => self.start(idx, head.freeze(), false, false, n),
        }
        Ok(())
    }

    /// Spawns the request's task.
    fn start(
        &mut self,
        idx: usize,
        head: Bytes,
        stdin_done: bool,
        replayable: bool,
        remaining: u64,
    ) {
        let slot = &mut self.slots[idx];
        let (tx, rx) = mpsc::channel(2);
        let abort = self.down.done.child_token();
        let job = Job {
            id: slot.id,
            keep_conn: slot.keep_conn,
            head,
            stdin_done,
            replayable,
            arrived: slot.arrived,
        };
        slot.phase = Phase::Running {
            tx,
            abort: abort.clone(),
            remaining,
        };
        let ctx = &self.ctx;
        ctx.tracker.spawn(exchange::run(
            job,
            rx,
            self.down.clone(),
            ctx.pool.clone(),
            ctx.limits.clone(),
            abort,
        ));
    }

    async fn stdin(&mut self, h: codec::Header, mut frame: BytesMut) -> Result<(), ProtocolError> {
        let Some(idx) = self.slot(h.request_id) else {
            return Ok(());
        };
        let len = h.content_len as u64;
        match &mut self.slots[idx].phase {
            Phase::Params(_) => perr("STDIN before the end of PARAMS"),
            Phase::AwaitStdin {
                head,
                replayable,
                zero,
            } => {
                if len > 0 {
                    let status = if *zero { 400 } else { 411 };
                    self.answer(idx, status);
                    return Ok(());
                }
                let replayable = *replayable;
                codec::encode(head, codec::STDIN, 1, &[]);
                let head = std::mem::take(head).freeze();
                self.start(idx, head, true, replayable, 0);
                Ok(())
            }
            Phase::Running { tx, remaining, .. } => {
                let msg = if len == 0 {
                    if *remaining > 0 {
                        StdinMsg::Bad(400)
                    } else {
                        frame.truncate(HEADER_LEN);
                        codec::set_request_id(&mut frame, 1);
                        frame[6] = 0;
                        StdinMsg::End(frame.freeze())
                    }
                } else if len > *remaining {
                    StdinMsg::Bad(400)
                } else {
                    *remaining -= len;
                    StdinMsg::Data(for_php_fpm(h, frame))
                };
                let tx = tx.clone();
                // Backpressure: a full channel stops reading this connection.
                let _ = tx.send(msg).await;
                Ok(())
            }
        }
    }
}

/// A STDIN record re-addressed to request id 1, padding dropped (php-fpm
/// wants content + padding ≤ 65535).
fn for_php_fpm(h: codec::Header, mut frame: BytesMut) -> Bytes {
    codec::set_request_id(&mut frame, 1);
    if h.padding_len != 0 {
        frame.truncate(HEADER_LEN + h.content_len as usize);
        frame[6] = 0;
    }
    frame.freeze()
}
