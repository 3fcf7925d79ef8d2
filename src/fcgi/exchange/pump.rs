//! One request on its php-fpm connection: the head and STDIN up, STDOUT,
//! STDERR and END_REQUEST down, record by record with backpressure, and a
//! replay when the connection was found dead before any byte came back.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::Interest;
use tokio::time::Instant;

use super::{Job, Limits, Stdin, StdinMsg, cgi_status, close, error_stdout, recv};
use crate::fcgi::codec::{self, END_REQUEST, STDERR, STDOUT};
use crate::fcgi::connection::{Abort, Down};
use crate::fcgi::io::{self, Stream};
use crate::fcgi::metrics;
use crate::fcgi::pool::{Lease, UpstreamPool};

/// How long a fresh connection's death waits for the supervisor to say
/// php-fpm's master died (it publishes that before the children go).
const MASTER_GRACE: Duration = Duration::from_millis(100);

pub(super) enum Outcome {
    Done,
    Aborted,
    Fail(u16, &'static str),
}

pub(super) struct Exchange<'a> {
    pub(super) job: &'a Job,
    pub(super) down: &'a Down,
    pub(super) pool: &'a UpstreamPool,
    pub(super) limits: &'a Limits,
    /// More STDIN is to come from the client.
    pub(super) stdin_open: bool,
    /// php-fpm sent at least one byte of this response.
    pub(super) got_any: bool,
    /// A request is replayed at most once: a second death is the request's
    /// own doing (or php-fpm is really gone), not a stale connection.
    pub(super) replayed: bool,
    /// A STDOUT record went downstream: errors can no longer be reported.
    pub(super) stdout_sent: bool,
    /// The response's status, from its first STDOUT record (for metrics).
    pub(super) status: u16,
    pub(super) deadline: Instant,
    /// Response bytes sent to the client (for the access log).
    pub(super) sent: u64,
}

impl Exchange<'_> {
    pub(super) async fn pump(
        &mut self,
        mut lease: Lease,
        leased: Instant,
        stdin: &mut Stdin,
        abort: &Abort,
    ) -> Outcome {
        let down = self.down;
        let head = &self.job.head[..];
        let mut up = Upload::default();
        // Activity only moves a timestamp; the one timer is re-armed when it
        // fires early (no timer-wheel work per record).
        let mut read_deadline = leased + self.limits.read;
        let timer = tokio::time::sleep_until(self.deadline.min(read_deadline));
        tokio::pin!(timer);
        let aborted = down.aborted(abort);
        tokio::pin!(aborted);
        loop {
            let want_write = up.pending(head);
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            // Some(why): the php-fpm connection died.
            let died = tokio::select! {
                biased;
                _ = &mut aborted => return Outcome::Aborted,
                r = lease.stream().ready(interest) => 'ready: {
                    let Ok(ready) = r else {
                        break 'ready Some("php-fpm connection error");
                    };
                    if ready.is_writable() && want_write {
                        match up.write(lease.stream(), head) {
                            Ok(true) => read_deadline = Instant::now() + self.limits.read,
                            Ok(false) => {}
                            Err(_) => break 'ready Some("php-fpm closed the connection"),
                        }
                    }
                    if !(ready.is_readable() || ready.is_read_closed()) {
                        break 'ready None;
                    }
                    let (conn, buf) = lease.parts();
                    io::reserve_read(buf, 8192);
                    match conn.try_read_buf(buf) {
                        Ok(0) => Some("php-fpm closed the connection before the response ended"),
                        Ok(_) => {
                            self.got_any = true;
                            read_deadline = Instant::now() + self.limits.read;
                            match self.forward(&mut lease, stdin).await {
                                Step::More => None,
                                Step::Ended => {
                                    // php-fpm may answer once it has the
                                    // body, before the empty end record
                                    // reached it: when that is all that is
                                    // left, it is never sent, and the
                                    // connection stays in step.
                                    if self.stdin_open
                                        && !up.pending(head)
                                        && let Some(rx) = stdin.as_mut()
                                        && matches!(rx.try_recv(), Ok(StdinMsg::End(_)))
                                    {
                                        self.stdin_open = false;
                                    }
                                    let clean = !up.pending(head) && !self.stdin_open;
                                    self.pool.report_success(&lease);
                                    if clean {
                                        lease.release();
                                    }
                                    return Outcome::Done;
                                }
                                Step::Fail(o) => return o,
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                        Err(_) => Some("php-fpm reset the connection"),
                    }
                },
                m = recv(stdin), if self.stdin_open && !want_write => match m {
                    Some(StdinMsg::Data(b)) => {
                        up.stdin = b;
                        None
                    }
                    Some(StdinMsg::End(b)) => {
                        up.stdin = b;
                        self.stdin_open = false;
                        None
                    }
                    Some(StdinMsg::Bad(status)) => return Outcome::Fail(status, "body does not match CONTENT_LENGTH"),
                    None => return Outcome::Aborted,
                },
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= self.deadline {
                        return Outcome::Fail(504, "request timeout");
                    }
                    if now >= read_deadline {
                        return Outcome::Fail(504, "read timeout");
                    }
                    timer.as_mut().reset(self.deadline.min(read_deadline));
                    None
                }
            };
            if let Some(why) = died {
                match self.dead(&mut lease, why).await {
                    Ok(()) => up = Upload::default(),
                    Err(o) => return o,
                }
            }
        }
    }

    /// The connection died before the response ended. Replays (at most
    /// once) only what php-fpm provably did not run or is safe to run
    /// again, never into the php-fpm that just died:
    /// - a pooled connection found dead before any byte of the response
    ///   (closed while idle, or at `pm.max_requests`): replayable requests
    ///   go again on a fresh connection;
    /// - a fresh connection whose php-fpm master died (the supervisor says
    ///   so within a moment): replayable requests wait for the next php-fpm;
    /// - a fresh connection whose child died while its master lives (e.g.
    ///   `request_terminate_timeout`): the script ran; 502, and it counts
    ///   as php-fpm's failure.
    ///
    /// Ok: `lease` is a new connection and the request starts over on it.
    async fn dead(&mut self, lease: &mut Lease, why: &'static str) -> Result<(), Outcome> {
        let generation = lease.backend().generation;
        if self.got_any || self.replayed {
            return Err(Outcome::Fail(502, why));
        }
        let master_died = if lease.reused {
            !self.pool.is_current_backend(lease.backend())
        } else {
            let died = self.pool.replaced_within(generation, MASTER_GRACE).await;
            if !died {
                self.pool.report_failure(generation);
            }
            died
        };
        if !self.job.replayable || (!lease.reused && !master_died) {
            return Err(Outcome::Fail(502, why));
        }
        self.replayed = true;
        tracing::debug!(
            why,
            master_died,
            "php-fpm connection died before the response; replaying"
        );
        let replay_deadline = (self.job.arrived + self.limits.queue)
            .max(Instant::now() + self.limits.queue / 2)
            .min(self.deadline);
        let again = if master_died {
            None
        } else {
            lease.reconnect(self.pool.connect_timeout()).await.ok()
        };
        if again.is_none() {
            let not = master_died.then_some(generation);
            match self.pool.acquire_fresh(replay_deadline, not).await {
                Ok(mut l) => {
                    // The request keeps its room in its lane.
                    l.set_lane(lease.take_lane());
                    *lease = l;
                }
                Err(_) => return Err(Outcome::Fail(502, "php-fpm unreachable")),
            }
        }
        metrics::global().replays.inc();
        Ok(())
    }

    /// Forwards every whole record in the read buffer, ids rewritten in place,
    /// in one downstream write straight from the buffer.
    async fn forward(&mut self, lease: &mut Lease, stdin: &mut Stdin) -> Step {
        let buf = &mut lease.buf;
        let mut at = 0;
        let mut ended = false;
        let mut stdout = false;
        loop {
            let (h, n) = match codec::peek_frame(&buf[at..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return Step::Fail(Outcome::Fail(502, "bad FastCGI record from php-fpm")),
            };
            if h.request_id != 1 || !matches!(h.kind, STDOUT | STDERR | END_REQUEST) {
                return Step::Fail(Outcome::Fail(502, "unexpected FastCGI record from php-fpm"));
            }
            codec::set_request_id(&mut buf[at..], self.job.id);
            if h.kind == STDOUT && self.status == 0 && h.content_len > 0 {
                let start = at + codec::HEADER_LEN;
                let content = &buf[start..start + h.content_len as usize];
                self.status = cgi_status(content);
            }
            stdout |= h.kind == STDOUT;
            at += n;
            if h.kind == END_REQUEST {
                ended = true;
                break;
            }
        }
        if at == 0 {
            return Step::More;
        }
        if ended {
            // Lets the client reuse the id as soon as it reads END_REQUEST.
            close(stdin);
        }
        let sent = if ended && !self.stdout_sent && !stdout {
            // nginx turns an END_REQUEST with no output into its own 502.
            self.status = 502;
            let mut e = BytesMut::with_capacity(128);
            error_stdout(&mut e, self.job.id, 502);
            self.down.send(&[&e, &buf[..at]]).await
        } else {
            self.down.send(&[&buf[..at]]).await
        };
        buf.advance(at);
        if !sent {
            return Step::Fail(Outcome::Aborted);
        }
        self.sent += at as u64;
        self.stdout_sent |= stdout;
        if ended {
            if !self.job.keep_conn {
                self.down.done.cancel();
            }
            return Step::Ended;
        }
        Step::More
    }
}

enum Step {
    More,
    Ended,
    Fail(Outcome),
}

/// What goes up to php-fpm next: the request's head from `head_at` on, then
/// one STDIN batch at a time (the next is taken only once this one is
/// written: backpressure).
#[derive(Default)]
struct Upload {
    /// Bytes of the head written so far.
    head_at: usize,
    stdin: Bytes,
}

impl Upload {
    fn pending(&self, head: &[u8]) -> bool {
        self.head_at < head.len() || !self.stdin.is_empty()
    }

    /// One non-blocking write of what is pending; true when it wrote.
    fn write(&mut self, s: &Stream, head: &[u8]) -> std::io::Result<bool> {
        let in_head = self.head_at < head.len();
        let bytes = if in_head {
            &head[self.head_at..]
        } else {
            &self.stdin[..]
        };
        if bytes.is_empty() {
            return Ok(false);
        }
        match s.try_write(bytes) {
            Ok(n) => {
                if in_head {
                    self.head_at += n;
                } else {
                    self.stdin.advance(n);
                }
                Ok(n > 0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}
