//! One HTTP request run by PHP over FastCGI: parameters, the request body
//! streamed to FCGI_STDIN, the CGI head mapped to the HTTP response and the
//! body streamed as PHP flushes; PHP's stderr goes to the log. When PHP
//! cannot answer (502/503/504 from the forward listener, or no answer at
//! all) the client gets `error_page`'s page instead of a bare status.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::cgi::{self, RequestInfo, Script};
use super::error_page::{self, Cause};
use super::http::{Body, Front, text};
use crate::fcgi::client::{self as fastcgi, Output, ResponseReader};

/// A request body without a length is read whole (PHP needs
/// CONTENT_LENGTH), up to this much.
const MAX_UNSIZED_BODY: usize = 64 * 1024 * 1024;
/// How long a 502 page waits for PHP's last log lines.
const LOG_GRACE: Duration = Duration::from_millis(150);

/// Connects, retrying while php-fpm is not (yet) listening, e.g. during a
/// restart, until `timeout`.
async fn connect(front: &Front) -> io::Result<Box<dyn fastcgi::Stream>> {
    let deadline = Instant::now() + front.connect_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match fastcgi::connect(&front.target, left).await {
            Ok(c) => return Ok(c),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) && Instant::now() + Duration::from_millis(50) < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `script` for `req`.
pub async fn respond(
    front: &Front,
    req: Request<Incoming>,
    script: Script,
    remote: SocketAddr,
    local: SocketAddr,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // No declared length but a body (chunked): read it whole first.
    let (buffered, body) = if declared.is_none() && !body.is_end_stream() {
        match collect_limited(body).await {
            Ok(b) => (Some(b), None),
            Err(r) => return r,
        }
    } else {
        (None, Some(body))
    };
    let content_length = declared.or(buffered.as_ref().map(|b| b.len() as u64));
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let params = cgi::params(&RequestInfo {
        method: parts.method.as_str(),
        raw_path: path,
        query,
        headers: &parts.headers,
        content_length,
        remote,
        local,
        document_root: &front.root,
        script: &script,
    });
    let unreachable = |e: io::Error| {
        warn!(endpoint = %front.target, error = %e, "php-fpm is not reachable");
        Cause::Unreachable(format!("{}: {e}", front.target))
    };
    let conn = match connect(front).await {
        Ok(c) => c,
        Err(e) => return error(front, StatusCode::BAD_GATEWAY, unreachable(e)).await,
    };
    let (mut writer, reader) = match fastcgi::start(conn, &params).await {
        Ok(halves) => halves,
        Err(e) => return error(front, StatusCode::BAD_GATEWAY, unreachable(e)).await,
    };
    // The body goes up while the response comes down.
    tokio::spawn(async move {
        let result = async {
            if let Some(b) = buffered {
                writer.stdin(&b).await?;
            }
            if let Some(mut body) = body {
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(io::Error::other)?;
                    if let Ok(data) = frame.into_data() {
                        writer.stdin(&data).await?;
                    }
                }
            }
            writer.finish().await
        }
        .await;
        if let Err(e) = result {
            debug!(error = %e, "request body not fully sent to php-fpm");
        }
    });
    read_response(front, reader, script.script_name).await
}

/// The error page for `status`; a 502's shows the last PHP log lines.
async fn error(front: &Front, status: StatusCode, cause: Cause) -> Response<Body> {
    let mut lines = Vec::new();
    if status == StatusCode::BAD_GATEWAY
        && let Some(recent) = &front.diagnostics.recent
    {
        // PHP's last words travel through php-fpm's master and tqsup's
        // log reader, and may land a moment after the connection dropped.
        tokio::time::sleep(LOG_GRACE).await;
        lines = recent.for_error_page();
    }
    let page = error_page::render(status, &cause, &lines);
    let mut resp = text(status, &page);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// Whether a CGI head is the forward listener's own error answer
/// (`Status` and a bare `Content-Type: text/plain`, maybe `Retry-After`)
/// rather than a page the application made: PHP adds a charset to any
/// text type, so an application's 503 page is left alone.
fn from_forwarder(head: &cgi::Head) -> bool {
    matches!(head.status.as_u16(), 502..=504)
        && head.headers.iter().all(|(n, v)| {
            (n.eq_ignore_ascii_case("content-type") && v == b"text/plain")
                || n.eq_ignore_ascii_case("retry-after")
        })
}

async fn collect_limited(body: Incoming) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(body, MAX_UNSIZED_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("tqsup dev: request body: {e}\n"),
        )),
    }
}

/// The next record within `silence`, logging stderr on the way.
async fn next_out(
    reader: &mut ResponseReader,
    silence: Duration,
    script: &str,
) -> io::Result<Option<Output>> {
    loop {
        let out = tokio::time::timeout(silence, reader.next())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "php-fpm went silent"))??;
        match out {
            Some(Output::Stderr(b)) => log_stderr(&b, script),
            other => return Ok(other),
        }
    }
}

fn log_stderr(b: &[u8], script: &str) {
    for line in String::from_utf8_lossy(b)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        warn!(target: "php", script, "{line}");
    }
}

async fn read_response(
    front: &Front,
    mut reader: ResponseReader,
    script: String,
) -> Response<Body> {
    let silence = front.read_timeout;
    let mut head = BytesMut::new();
    let parsed = loop {
        match next_out(&mut reader, silence, &script).await {
            Ok(Some(Output::Stdout(b))) => {
                head.extend_from_slice(&b);
                match cgi::parse_head(&head) {
                    Ok(Some(p)) => break p,
                    Ok(None) => {}
                    Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("tqsup dev: {e}\n")),
                }
            }
            Ok(Some(Output::End { .. })) | Ok(None) => {
                return error(front, StatusCode::BAD_GATEWAY, Cause::Died).await;
            }
            Ok(Some(Output::Stderr(_))) => unreachable!("logged by next_out"),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return error(front, StatusCode::GATEWAY_TIMEOUT, Cause::Timeout).await;
            }
            Err(e) => {
                debug!(script, error = %e, "no response head from php-fpm");
                return error(front, StatusCode::BAD_GATEWAY, Cause::Died).await;
            }
        }
    };
    let (cgi_head, body_at) = parsed;
    if from_forwarder(&cgi_head) {
        let state = front.diagnostics.state.as_ref().map(|s| s.borrow().clone());
        let cause = error_page::cause(cgi_head.status, state.as_ref());
        return error(front, cgi_head.status, cause).await;
    }
    let mut resp = Response::builder().status(cgi_head.status);
    for (name, value) in cgi_head.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        // Hop-by-hop headers are the HTTP server's business.
        if matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "keep-alive"
        ) {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        resp = resp.header(name, value);
    }
    let first = head.split_off(body_at).freeze();
    let state = (Some(first), Some(reader));
    let stream = futures_util::stream::unfold(state, move |(first, reader)| {
        let script = script.clone();
        async move {
            if let Some(b) = first.filter(|b| !b.is_empty()) {
                return Some((Ok(Frame::data(b)), (None, reader)));
            }
            let mut reader = reader?;
            match next_out(&mut reader, silence, &script).await {
                Ok(Some(Output::Stdout(b))) => Some((Ok(Frame::data(b)), (None, Some(reader)))),
                Ok(_) => None,
                Err(e) => {
                    warn!(script, error = %e, "php-fpm response cut short");
                    Some((Err(e), (None, None)))
                }
            }
        }
    });
    resp.body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap_or_else(|e| {
            text(
                StatusCode::BAD_GATEWAY,
                &format!("tqsup dev: bad response head: {e}\n"),
            )
        })
}
