//! One request through the pool: queue for a php-fpm connection, send the
//! request, stream STDIN up and STDOUT/STDERR down record by record, replay
//! when a pooled connection was dead, and turn failures into CGI responses.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{self, END_REQUEST, STDERR, STDOUT};
use super::io::{self, Stream};
use super::pool::{AcquireError, Lease, UpstreamPool};
use crate::metrics::{self, ForwardError};

/// How long a fresh connection's death waits for the supervisor to say
/// php-fpm's master died (it publishes that before the children go).
const MASTER_GRACE: Duration = Duration::from_millis(100);

/// The downstream connection as request tasks see it: one writer at a time.
pub struct Down {
    pub stream: Stream,
    /// Serialises whole batches of records from concurrent requests.
    pub write_lock: tokio::sync::Mutex<()>,
    /// Cancelled when the connection is finished (client gone, protocol
    /// error, or a request without KEEP_CONN ended): requests still running
    /// on it are abandoned and their upstream connections closed.
    pub done: CancellationToken,
    pub write_timeout: Duration,
}

impl Down {
    /// Writes `bufs` as one batch; on failure the connection is finished.
    pub async fn send(&self, bufs: &mut Vec<Bytes>) -> bool {
        let _g = self.write_lock.lock().await;
        if self.done.is_cancelled() {
            return false;
        }
        let len: usize = bufs.iter().map(Bytes::len).sum();
        match io::write_all(&self.stream, bufs, self.write_timeout).await {
            Ok(()) => {
                metrics::global().sent_bytes.inc_by(len as u64);
                true
            }
            Err(e) => {
                tracing::info!(error = %e, "FastCGI client connection lost while writing");
                self.done.cancel();
                false
            }
        }
    }
}

/// STDIN from the client, already framed for php-fpm (request id 1).
#[derive(Debug)]
pub enum StdinMsg {
    Data(Bytes),
    /// The empty terminator record.
    End(Bytes),
    /// The body broke its CONTENT_LENGTH: answer this status.
    Bad(u16),
}

/// What a request carries into its task.
pub struct Job {
    /// The client's request id.
    pub id: u16,
    pub keep_conn: bool,
    /// BEGIN + re-framed PARAMS (+ the whole STDIN when `stdin_done`).
    pub head: Bytes,
    pub stdin_done: bool,
    /// GET/HEAD with `retry_idempotent`, body already in `head`.
    pub replayable: bool,
    pub arrived: Instant,
}

/// Timeouts a request runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    pub queue: Duration,
    pub request: Duration,
    pub read: Duration,
    pub write: Duration,
}

/// The STDOUT record of a CGI error response (a `Status:` header).
pub fn error_stdout(out: &mut BytesMut, id: u16, status: u16) {
    let (reason, extra) = match status {
        400 => ("Bad Request", ""),
        404 => ("Not Found", ""),
        408 => ("Request Timeout", ""),
        411 => ("Length Required", ""),
        431 => ("Request Header Fields Too Large", ""),
        502 => ("Bad Gateway", ""),
        503 => ("Service Unavailable", "Retry-After: 1\r\n"),
        504 => ("Gateway Timeout", ""),
        _ => ("Error", ""),
    };
    let body = format!(
        "Status: {status} {reason}\r\n{extra}Content-Type: text/plain\r\n\r\n{status} {reason}\n"
    );
    codec::encode(out, STDOUT, id, body.as_bytes());
}

/// A whole CGI error response: STDOUT with a `Status:` header, then END_REQUEST.
pub fn error_response(id: u16, status: u16) -> Bytes {
    let mut out = BytesMut::with_capacity(160);
    error_stdout(&mut out, id, status);
    codec::encode_end(&mut out, id, 0, codec::REQUEST_COMPLETE);
    out.freeze()
}

/// The end of a request: how its downstream connection continues.
async fn finish(down: &Down, job: &Job, mut bufs: Vec<Bytes>) {
    if down.send(&mut bufs).await && !job.keep_conn {
        down.done.cancel();
    }
}

/// Runs one request to its end. `abort` fires on FCGI_ABORT_REQUEST or when
/// the client connection is finished (`down.done`). Every request is counted
/// once in the metrics, when it ends, with the status its client got (0:
/// none).
pub async fn run(
    job: Job,
    stdin: mpsc::Receiver<StdinMsg>,
    down: Arc<Down>,
    pool: UpstreamPool,
    limits: Limits,
    abort: CancellationToken,
) {
    let m = metrics::global();
    let _in_flight = m.hold(|m| &m.in_flight);
    let (status, error) = run_inner(&job, stdin, &down, &pool, &limits, &abort).await;
    if let Some(kind) = error {
        m.forward_error(kind);
    }
    m.request_done(status, job.arrived.elapsed());
}

/// [`run`]'s work: the status the client got (0: none) and what went wrong.
async fn run_inner(
    job: &Job,
    mut stdin: mpsc::Receiver<StdinMsg>,
    down: &Down,
    pool: &UpstreamPool,
    limits: &Limits,
    abort: &CancellationToken,
) -> (u16, Option<ForwardError>) {
    let deadline = job.arrived + limits.request;
    let queue_deadline = (job.arrived + limits.queue).min(deadline);
    let lease = tokio::select! {
        r = pool.acquire(queue_deadline) => r,
        _ = abort.cancelled() => {
            aborted(down, job, &mut stdin).await;
            return (0, Some(ForwardError::ClientAborted));
        }
    };
    let lease = match lease {
        Ok(l) => l,
        Err(e) => {
            let (status, kind) = match e {
                AcquireError::QueueTimeout => (503, ForwardError::QueueTimeout),
                AcquireError::BreakerOpen => (503, ForwardError::BreakerOpen),
                AcquireError::Stopped => (503, ForwardError::UpstreamUnreachable),
                AcquireError::Unreachable(_) => (502, ForwardError::UpstreamUnreachable),
            };
            tracing::warn!(error = %e, status, "request not forwarded");
            stdin.close();
            finish(down, job, vec![error_response(job.id, status)]).await;
            return (status, Some(kind));
        }
    };
    let leased = Instant::now();
    metrics::global().queue_waited(leased - job.arrived);
    let mut ex = Exchange {
        job,
        down,
        pool,
        limits,
        stdin_open: !job.stdin_done,
        got_any: false,
        replayed: false,
        stdout_sent: false,
        status: 0,
        deadline,
    };
    match ex.pump(lease, leased, &mut stdin, abort).await {
        Outcome::Done => (ex.status, None),
        Outcome::Aborted => {
            aborted(down, job, &mut stdin).await;
            (ex.status, Some(ForwardError::ClientAborted))
        }
        Outcome::Fail(status, why) => {
            stdin.close();
            let kind = match status {
                504 => ForwardError::Timeout,
                400 => ForwardError::BadRequest,
                _ => ForwardError::UpstreamClosed,
            };
            if ex.stdout_sent {
                tracing::warn!(
                    why,
                    "response cut after its headers; closing the client connection"
                );
                down.done.cancel();
                (ex.status, Some(kind))
            } else {
                tracing::warn!(why, status, "request failed");
                finish(down, job, vec![error_response(job.id, status)]).await;
                (status, Some(kind))
            }
        }
    }
}

/// FCGI_ABORT_REQUEST answered: END_REQUEST{REQUEST_COMPLETE}, promptly.
async fn aborted(down: &Down, job: &Job, stdin: &mut mpsc::Receiver<StdinMsg>) {
    stdin.close();
    if down.done.is_cancelled() {
        return;
    }
    let mut out = BytesMut::with_capacity(16);
    codec::encode_end(&mut out, job.id, 0, codec::REQUEST_COMPLETE);
    finish(down, job, vec![out.freeze()]).await;
}

enum Outcome {
    Done,
    Aborted,
    Fail(u16, &'static str),
}

struct Exchange<'a> {
    job: &'a Job,
    down: &'a Down,
    pool: &'a UpstreamPool,
    limits: &'a Limits,
    /// More STDIN is to come from the client.
    stdin_open: bool,
    /// php-fpm sent at least one byte of this response.
    got_any: bool,
    /// A request is replayed at most once: a second death is the request's
    /// own doing (or php-fpm is really gone), not a stale connection.
    replayed: bool,
    /// A STDOUT record went downstream: errors can no longer be reported.
    stdout_sent: bool,
    /// The response's status, from its first STDOUT record (for metrics).
    status: u16,
    deadline: Instant,
}

impl Exchange<'_> {
    async fn pump(
        &mut self,
        mut lease: Lease,
        leased: Instant,
        stdin: &mut mpsc::Receiver<StdinMsg>,
        abort: &CancellationToken,
    ) -> Outcome {
        let mut pending: Vec<Bytes> = vec![self.job.head.clone()];
        let mut first = 0;
        // Activity only moves a timestamp; the one timer is re-armed when it
        // fires early (no timer-wheel work per record).
        let mut read_deadline = leased + self.limits.read;
        let timer = tokio::time::sleep_until(self.deadline.min(read_deadline));
        tokio::pin!(timer);
        let aborted = abort.cancelled();
        tokio::pin!(aborted);
        loop {
            let want_write = first < pending.len();
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            tokio::select! {
                biased;
                _ = &mut aborted => return Outcome::Aborted,
                r = lease.stream().ready(interest) => {
                    let ready = match r {
                        Ok(r) => r,
                        Err(_) => {
                            if let Some(o) = self.dead(&mut lease, &mut pending, &mut first, "php-fpm connection error").await.into_fail() {
                                return o;
                            }
                            continue;
                        }
                    };
                    if ready.is_writable() && want_write {
                        match write_some(lease.stream(), &mut pending, &mut first) {
                            Ok(true) => read_deadline = Instant::now() + self.limits.read,
                            Ok(false) => {}
                            Err(_) => {
                                if let Some(o) = self.dead(&mut lease, &mut pending, &mut first, "php-fpm closed the connection").await.into_fail() {
                                    return o;
                                }
                                continue;
                            }
                        }
                    }
                    if ready.is_readable() || ready.is_read_closed() {
                        let (up, buf) = lease.parts();
                        io::reserve_read(buf, 8192);
                        match up.try_read_buf(buf) {
                            Ok(0) => {
                                if let Some(o) = self.dead(&mut lease, &mut pending, &mut first, "php-fpm closed the connection before the response ended").await.into_fail() {
                                    return o;
                                }
                                continue;
                            }
                            Ok(_) => {
                                self.got_any = true;
                                read_deadline = Instant::now() + self.limits.read;
                                match self.forward(&mut lease, stdin).await {
                                    Step::More => {}
                                    Step::Ended => {
                                        let clean = first >= pending.len() && !self.stdin_open;
                                        self.pool.report_success(&lease);
                                        if clean {
                                            lease.release();
                                        }
                                        return Outcome::Done;
                                    }
                                    Step::Fail(o) => return o,
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => {
                                if let Some(o) = self.dead(&mut lease, &mut pending, &mut first, "php-fpm reset the connection").await.into_fail() {
                                    return o;
                                }
                                continue;
                            }
                        }
                    }
                }
                m = stdin.recv(), if self.stdin_open && !want_write => match m {
                    Some(StdinMsg::Data(b)) => { pending.clear(); first = 0; pending.push(b); }
                    Some(StdinMsg::End(b)) => { pending.clear(); first = 0; pending.push(b); self.stdin_open = false; }
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
    async fn dead(
        &mut self,
        lease: &mut Lease,
        pending: &mut Vec<Bytes>,
        first: &mut usize,
        why: &'static str,
    ) -> Replay {
        let generation = lease.backend().generation;
        if self.got_any || self.replayed {
            return Replay::No(Outcome::Fail(502, why));
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
            return Replay::No(Outcome::Fail(502, why));
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
                Ok(l) => *lease = l,
                Err(_) => return Replay::No(Outcome::Fail(502, "php-fpm unreachable")),
            }
        }
        metrics::global().replays.inc();
        pending.clear();
        pending.push(self.job.head.clone());
        *first = 0;
        Replay::Yes
    }

    /// Forwards every whole record in the read buffer, ids rewritten in place,
    /// in one downstream write.
    async fn forward(&mut self, lease: &mut Lease, stdin: &mut mpsc::Receiver<StdinMsg>) -> Step {
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
        let mut batch = Vec::with_capacity(2);
        if ended && !self.stdout_sent && !stdout {
            // nginx turns an END_REQUEST with no output into its own 502.
            self.status = 502;
            let mut e = BytesMut::with_capacity(128);
            error_stdout(&mut e, self.job.id, 502);
            batch.push(e.freeze());
        }
        batch.push(buf.split_to(at).freeze());
        if ended {
            // Lets the client reuse the id as soon as it reads END_REQUEST.
            stdin.close();
        }
        if !self.down.send(&mut batch).await {
            return Step::Fail(Outcome::Aborted);
        }
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

enum Replay {
    Yes,
    No(Outcome),
}

impl Replay {
    fn into_fail(self) -> Option<Outcome> {
        match self {
            Replay::Yes => None,
            Replay::No(o) => Some(o),
        }
    }
}

/// The status of a CGI response from the start of its first STDOUT record:
/// php-fpm writes `Status:` first when it is not 200. Nothing else is
/// parsed (the hot path): no leading `Status:` counts as 200.
fn cgi_status(content: &[u8]) -> u16 {
    match content.strip_prefix(b"Status: ") {
        Some(rest) if rest.len() >= 3 => std::str::from_utf8(&rest[..3])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        Some(_) => 0,
        None => 200,
    }
}

/// One non-blocking `writev` of what is pending; true when it wrote.
fn write_some(s: &Stream, pending: &mut [Bytes], first: &mut usize) -> std::io::Result<bool> {
    let mut slices = [std::io::IoSlice::new(&[]); 16];
    let mut k = 0;
    for b in pending[*first..].iter().take(16) {
        slices[k] = std::io::IoSlice::new(b);
        k += 1;
    }
    match s.try_write_vectored(&slices[..k]) {
        Ok(n) => {
            io::advance(pending, first, n);
            Ok(n > 0)
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::cgi_status;

    #[test]
    fn status_from_the_first_stdout_record() {
        assert_eq!(cgi_status(b"Status: 404 Not Found\r\nX: y\r\n\r\n"), 404);
        assert_eq!(cgi_status(b"Content-type: text/html\r\n\r\nhi"), 200);
        assert_eq!(cgi_status(b"Status: 5"), 0);
        assert_eq!(cgi_status(b"Status: abc"), 0);
    }
}
