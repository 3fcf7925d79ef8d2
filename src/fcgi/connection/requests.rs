//! The request side of a downstream connection: BEGIN, PARAMS, STDIN and
//! ABORT records move a request through its phases (collecting its head,
//! waiting for its empty STDIN, running as a task fed its body).

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Abort;
use super::body::Body;
use super::head::{self, Head, Over};
use super::{Conn, MAX_REQUESTS_PER_CONN, Phase, ProtocolError, STDIN_END, Slot, perr};
use crate::fcgi::codec::{self, HEADER_LEN};
use crate::fcgi::exchange::{self, Job, StdinMsg};
use crate::fcgi::listener::Charge;
use crate::fcgi::metrics::{self, ForwardError};

impl Conn {
    pub(super) fn begin(&mut self, id: u16, content: &[u8]) -> Result<(), ProtocolError> {
        let Some((role, flags)) = codec::parse_begin(content) else {
            return perr(format!("BEGIN_REQUEST body of {} bytes", content.len()));
        };
        if self.slot(id).is_some() {
            return perr(format!(
                "BEGIN_REQUEST for request id {id} already in progress"
            ));
        }
        self.first_begin_by = None;
        let keep_conn = flags & codec::FLAG_KEEP_CONN != 0;
        if role != codec::ROLE_RESPONDER {
            codec::encode_end(&mut self.out, id, 0, codec::UNKNOWN_ROLE);
            if !keep_conn {
                self.out_then_close();
            }
            return Ok(());
        }
        self.slots.retain(|s| s.id != id);
        let arrived = Instant::now();
        let mut charge = Charge::new(&self.ctx.clients.params_total);
        let head = Head::reusing(
            std::mem::take(&mut self.spare_head),
            self.params_room(),
            &mut charge,
        );
        self.slots.push(Slot {
            id,
            keep_conn,
            arrived,
            charge,
            lane: None,
            info: None,
            phase: Phase::Params {
                head,
                deadline: arrived + self.ctx.clients.params_timeout,
            },
        });
        if self.slots.len() > MAX_REQUESTS_PER_CONN {
            let idx = self.slots.len() - 1;
            self.answer(idx, 503);
        }
        Ok(())
    }

    pub(super) fn abort(&mut self, id: u16) {
        let Some(idx) = self.slot(id) else { return };
        match &self.slots[idx].phase {
            Phase::Running { abort, .. } => {
                // The exchange answers END_REQUEST and closes php-fpm's
                // connection.
                abort.cancel(&self.down);
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

    pub(super) fn params(&mut self, id: u16, content: &[u8]) -> Result<(), ProtocolError> {
        let Some(idx) = self.slot(id) else {
            return Ok(());
        };
        if !matches!(self.slots[idx].phase, Phase::Params { .. }) {
            return Ok(());
        }
        if content.is_empty() {
            return self.params_done(idx);
        }
        let room = self.params_room();
        let s = &mut self.slots[idx];
        let Phase::Params { head, .. } = &mut s.phase else {
            unreachable!("checked above");
        };
        match head.push(content, room, &mut s.charge) {
            Ok(()) => {}
            Err(Over::Connection) => self.answer(idx, 431),
            Err(Over::Global) => {
                tracing::warn!(
                    used = self.ctx.clients.params_total.used(),
                    "buffered PARAMS over forward.params_buffer_total_bytes"
                );
                self.answer(idx, 503);
            }
        }
        Ok(())
    }

    fn params_done(&mut self, idx: usize) -> Result<(), ProtocolError> {
        let retry = self.ctx.retry_idempotent;
        let s = &mut self.slots[idx];
        let Phase::Params { head, .. } = &mut s.phase else {
            unreachable!("params_done in the PARAMS phase only");
        };
        let params = head.params();
        // One scan of the raw stream finds the token in any name or value.
        if self.ctx.paths.found_in(params) {
            self.answer(idx, 404);
            return Ok(());
        }
        let seen = head::read_params(params).map_err(|e| ProtocolError(e.to_string()))?;
        let replayable = retry && matches!(seen.method, b"GET" | b"HEAD");
        if self.ctx.limits.access.wants_info() {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            s.info = Some(Box::new(super::super::access::RequestInfo {
                remote_addr: text(seen.remote_addr),
                method: text(seen.method),
                request_uri: text(seen.request_uri),
                script_name: text(seen.script_name),
            }));
        }
        let lanes = self.ctx.pool.lanes();
        s.lane = if lanes.is_empty() {
            None
        } else {
            lanes.select(seen.script_name, seen.request_uri)
        };
        let Ok(length) = head::content_length(seen.content_length) else {
            self.answer(idx, 400);
            return Ok(());
        };
        match head.frame(&mut s.charge) {
            Ok(()) => {}
            Err(codec::ReframeError::PairTooLarge(_)) => {
                self.answer(idx, 431);
                return Ok(());
            }
            Err(codec::ReframeError::Codec(e)) => return perr(e.to_string()),
        }
        let head = std::mem::take(head);
        match length {
            None | Some(0) => {
                s.phase = Phase::AwaitStdin {
                    head,
                    replayable,
                    zero: length.is_some(),
                    deadline: Instant::now() + self.ctx.clients.stdin_timeout,
                };
            }
            Some(n) => self.start(idx, head.finish(false), false, Some(n)),
        }
        Ok(())
    }

    /// What the connection's PARAMS budget has left.
    fn params_room(&self) -> usize {
        let used: usize = self.slots.iter().map(|s| s.charge.bytes()).sum();
        self.ctx.clients.params_per_conn.saturating_sub(used)
    }

    /// Starts the request's exchange: inline, in the connection's own task,
    /// when no other request runs there (the common case: one request at a
    /// time); in a task of its own otherwise (multiplexing). `body`: the
    /// body bytes still to come (None: the head holds the whole request).
    fn start(&mut self, idx: usize, head: BytesMut, replayable: bool, body: Option<u64>) {
        let inline = !self.inline_busy;
        let slot = &mut self.slots[idx];
        let job = Job {
            id: slot.id,
            keep_conn: slot.keep_conn,
            head,
            stdin_done: body.is_none(),
            replayable,
            arrived: slot.arrived,
            lane: slot.lane,
            info: slot.info.take(),
        };
        // A channel carries the body, and tells a task's end (an inline
        // request's end is seen by the connection itself).
        let (tx, rx) = if body.is_some() || !inline {
            let (tx, rx) = mpsc::channel(2);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let abort = if inline {
            Abort::Inline
        } else {
            Abort::Token(self.down.done.child_token())
        };
        slot.phase = Phase::Running {
            abort: abort.clone(),
            body: match (body, tx) {
                (Some(n), Some(tx)) => Body::new(tx, n),
                (_, tx) => Body::none(tx),
            },
        };
        if inline {
            self.inline_busy = true;
            self.inline_next = Some((job, rx));
            return;
        }
        let ctx = &self.ctx;
        let run = exchange::run(
            job,
            rx,
            self.down.clone(),
            ctx.pool.clone(),
            ctx.limits.clone(),
            abort,
        );
        ctx.tracker.spawn(async move {
            run.await;
        });
    }

    /// A STDIN record; `frame` (the whole record) when it has content.
    pub(super) fn stdin(
        &mut self,
        h: codec::Header,
        frame: Option<BytesMut>,
    ) -> Result<(), ProtocolError> {
        let Some(idx) = self.slot(h.request_id) else {
            return Ok(());
        };
        let len = h.content_len as u64;
        match &mut self.slots[idx].phase {
            Phase::Params { .. } => perr("STDIN before the end of PARAMS"),
            Phase::AwaitStdin {
                head,
                replayable,
                zero,
                ..
            } => {
                if len > 0 {
                    let status = if *zero { 400 } else { 411 };
                    self.answer(idx, status);
                    return Ok(());
                }
                let replayable = *replayable;
                let head = std::mem::take(head).finish(true);
                self.start(idx, head, replayable, None);
                Ok(())
            }
            Phase::Running { body, .. } => {
                if body.complete {
                    return Ok(());
                }
                body.last_input = Instant::now();
                if len == 0 {
                    // The client's own end of the body.
                    if body.remaining > 0 {
                        body.push(StdinMsg::Bad(400));
                    } else if !body.ended {
                        body.push(StdinMsg::End(Bytes::from_static(&STDIN_END)));
                    }
                    body.complete = true;
                } else if len > body.remaining {
                    body.push(StdinMsg::Bad(400));
                    body.complete = true;
                } else {
                    body.remaining -= len;
                    body.push(StdinMsg::Data(for_php_fpm(
                        h,
                        frame.expect("a record with content"),
                    )));
                    if body.remaining == 0 {
                        body.push(StdinMsg::End(Bytes::from_static(&STDIN_END)));
                        body.ended = true;
                    }
                }
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
