//! One request through the pool: queue for a php-fpm connection, send the
//! request, stream STDIN up and STDOUT/STDERR down record by record, replay
//! when a pooled connection was dead, and turn failures into CGI responses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use std::task::Poll;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::{self, END_REQUEST, STDERR, STDOUT};
use super::io::{self, Stream};
use super::metrics::{self, ForwardError};
use super::pool::{AcquireError, Lease, UpstreamPool};

/// How long a fresh connection's death waits for the supervisor to say
/// php-fpm's master died (it publishes that before the children go).
const MASTER_GRACE: Duration = Duration::from_millis(100);

/// The downstream connection as requests see it: one writer at a time.
pub struct Down {
    pub stream: Stream,
    /// Serialises whole batches of records from concurrent requests (only
    /// multiplexed connections ever contend for it; uncontended it is one
    /// atomic operation, and it cannot be held across a request).
    pub write_lock: tokio::sync::Mutex<()>,
    /// Cancelled when the connection is finished (client gone, protocol
    /// error, or a request without KEEP_CONN ended): requests still running
    /// on it are abandoned and their upstream connections closed.
    pub done: CancellationToken,
    pub write_timeout: Duration,
    /// The request the connection runs inline (see [`Abort::Inline`]) is
    /// aborted; cleared by the connection when it ends.
    inline_abort: AtomicBool,
}

/// How a request learns that it is aborted (FCGI_ABORT_REQUEST, a client
/// that stopped sending its body, or the connection finished).
#[derive(Clone)]
pub enum Abort {
    /// A request running in its own task (multiplexed connections): a
    /// child of [`Down::done`].
    Token(CancellationToken),
    /// The one request a connection runs inline, in its own task: the
    /// connection's [`Down::abort_inline`], which it also calls when it is
    /// finished. Costs nothing per request: no token, no waker (the flag is
    /// set by the task that polls the exchange, which polls it again next).
    Inline,
}

impl Abort {
    /// Aborts the request (its exchange answers END_REQUEST and closes
    /// php-fpm's connection).
    pub fn cancel(&self, down: &Down) {
        match self {
            Abort::Token(t) => t.cancel(),
            Abort::Inline => down.abort_inline(),
        }
    }
}

impl Down {
    pub fn new(stream: Stream, write_timeout: Duration) -> Self {
        Down {
            stream,
            write_lock: tokio::sync::Mutex::new(()),
            done: CancellationToken::new(),
            write_timeout,
            inline_abort: AtomicBool::new(false),
        }
    }

    /// Aborts the request running inline. Only the connection's own task
    /// calls it: that task polls the inline exchange again before it waits.
    pub fn abort_inline(&self) {
        self.inline_abort.store(true, Ordering::Relaxed);
    }

    /// Readies the abort signal for the next inline request.
    pub fn reset_inline(&self) {
        self.inline_abort.store(false, Ordering::Relaxed);
    }

    /// Resolves when the request is aborted.
    async fn aborted(&self, abort: &Abort) {
        match abort {
            Abort::Token(t) => t.cancelled().await,
            Abort::Inline => {
                std::future::poll_fn(|_| {
                    if self.inline_abort.load(Ordering::Relaxed) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await
            }
        }
    }

    /// Writes `parts` as one batch; on failure the connection is finished.
    pub async fn send(&self, parts: &[&[u8]]) -> bool {
        let _g = match self.write_lock.try_lock() {
            Ok(g) => g,
            Err(_) => self.write_lock.lock().await,
        };
        if self.done.is_cancelled() {
            return false;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        match io::write_all(&self.stream, parts, self.write_timeout).await {
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

/// What a request carries into its exchange, and gets back when it ends
/// (the connection reuses `head`'s buffer for its next request).
pub struct Job {
    /// The client's request id.
    pub id: u16,
    pub keep_conn: bool,
    /// BEGIN + re-framed PARAMS (+ the whole STDIN when `stdin_done`).
    pub head: BytesMut,
    pub stdin_done: bool,
    /// GET/HEAD with `retry_idempotent`, body already in `head`.
    pub replayable: bool,
    pub arrived: Instant,
    /// Its `forward.lanes` lane, if it has one.
    pub lane: Option<usize>,
    /// What its access line says, when one may be written.
    pub info: Option<Box<super::access::RequestInfo>>,
}

/// Timeouts a request runs under, and where its access line goes.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `log.access` and `forward.slow_request_ms`.
    pub access: Arc<super::access::AccessLog>,
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
async fn finish(down: &Down, job: &Job, bytes: &[u8]) {
    if down.send(&[bytes]).await && !job.keep_conn {
        down.done.cancel();
    }
}

/// The body still to come from the client (None: all of it is in the head).
pub type Stdin = Option<mpsc::Receiver<StdinMsg>>;

/// Runs one request to its end and gives its job back. `abort` fires on
/// FCGI_ABORT_REQUEST or when the client connection is finished
/// (`down.done`). Every request is counted once in the metrics, when it
/// ends, with the status its client got (0: none).
pub async fn run(
    job: Job,
    stdin: Stdin,
    down: Arc<Down>,
    pool: UpstreamPool,
    limits: Limits,
    abort: Abort,
) -> Job {
    let m = metrics::global();
    let _in_flight = m.hold(|m| &m.in_flight);
    let mut trace = Trace::default();
    let (status, error) = run_inner(&job, stdin, &down, &pool, &limits, &abort, &mut trace).await;
    if let Some(kind) = error {
        m.forward_error(kind);
    }
    let total = job.arrived.elapsed();
    m.request_done(status, total);
    if let Some(info) = &job.info {
        let leased = trace.leased.unwrap_or_else(Instant::now);
        limits.access.record(&super::access::Entry {
            info,
            status,
            bytes: trace.bytes,
            queue: leased.saturating_duration_since(job.arrived),
            php: trace.leased.map_or(Duration::ZERO, |l| l.elapsed()),
            total,
        });
    }
    job
}

/// What the access line needs from inside the exchange.
#[derive(Debug, Default)]
struct Trace {
    /// When a php-fpm connection was got.
    leased: Option<Instant>,
    /// Response bytes sent to the client.
    bytes: u64,
}

fn close(stdin: &mut Stdin) {
    if let Some(s) = stdin {
        s.close();
    }
}

/// The next STDIN message; never resolves without a body.
async fn recv(stdin: &mut Stdin) -> Option<StdinMsg> {
    match stdin {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// [`run`]'s work: the status the client got (0: none) and what went wrong.
async fn run_inner(
    job: &Job,
    mut stdin: Stdin,
    down: &Down,
    pool: &UpstreamPool,
    limits: &Limits,
    abort: &Abort,
    trace: &mut Trace,
) -> (u16, Option<ForwardError>) {
    let deadline = job.arrived + limits.request;
    // A lane's request waits in the lane's own queue, for its own timeout.
    let lane = job.lane.and_then(|i| pool.lanes().get(i));
    let queue = lane.map_or(limits.queue, |l| l.queue_timeout);
    let queue_deadline = (job.arrived + queue).min(deadline);
    let lease = tokio::select! {
        r = pool.acquire_in(queue_deadline, lane) => r,
        _ = down.aborted(abort) => {
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
            close(&mut stdin);
            finish(down, job, &error_response(job.id, status)).await;
            return (status, Some(kind));
        }
    };
    let leased = Instant::now();
    trace.leased = Some(leased);
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
        sent: 0,
    };
    let outcome = ex.pump(lease, leased, &mut stdin, abort).await;
    trace.bytes = ex.sent;
    match outcome {
        Outcome::Done => (ex.status, None),
        Outcome::Aborted => {
            aborted(down, job, &mut stdin).await;
            (ex.status, Some(ForwardError::ClientAborted))
        }
        Outcome::Fail(status, why) => {
            close(&mut stdin);
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
                finish(down, job, &error_response(job.id, status)).await;
                (status, Some(kind))
            }
        }
    }
}

/// FCGI_ABORT_REQUEST answered: END_REQUEST{REQUEST_COMPLETE}, promptly.
async fn aborted(down: &Down, job: &Job, stdin: &mut Stdin) {
    close(stdin);
    if down.done.is_cancelled() {
        return;
    }
    let mut out = BytesMut::with_capacity(16);
    codec::encode_end(&mut out, job.id, 0, codec::REQUEST_COMPLETE);
    finish(down, job, &out).await;
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
    /// Response bytes sent to the client (for the access log).
    sent: u64,
}

impl Exchange<'_> {
    async fn pump(
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
