//! One request through the pool: queue for a php-fpm connection, send the
//! request, stream STDIN up and STDOUT/STDERR down record by record, replay
//! when a pooled connection was dead, and turn failures into CGI responses.
//! The exchange with php-fpm itself is in [`pump`].

mod pump;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::codec::{self, STDOUT};
use super::connection::{Abort, Down};
use super::metrics::{self, ForwardError};
use super::pool::{AcquireError, UpstreamPool};
use pump::{Exchange, Outcome};

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
