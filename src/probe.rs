//! A small self-contained FastCGI client for tqsup's own requests to
//! php-fpm: the readiness and liveness ping (`ping.path`, expecting `pong`),
//! the forwarder's health check and the admin scrape of `pm.status_path?json`.
//!
//! One request per connection, no keep-alive, everything under one timeout.
//! It is not the forwarder (which streams); a response is read whole and is
//! expected to be small.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Endpoint;

use crate::fcgi::codec::{self, END_REQUEST, STDERR, STDOUT};

const REQUEST_ID: u16 = 1;
/// A response bigger than this is refused (status pages are a few KB).
const MAX_RESPONSE: usize = 4 << 20;

/// What php-fpm answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// From the `Status:` header; 200 when absent (CGI's rule).
    pub status: u16,
    /// CGI headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Everything after the blank line.
    pub body: Bytes,
    /// FCGI_STDERR content (PHP warnings), if any.
    pub stderr: Bytes,
    /// FCGI_END_REQUEST's appStatus.
    pub app_status: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to php-fpm at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("php-fpm connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer from php-fpm within {0:?}")]
    Timeout(Duration),
    #[error("php-fpm sent a malformed response: {0}")]
    Protocol(&'static str),
    #[error("php-fpm answered the ping with status {status} and {body:?}, not `pong`")]
    NotPong { status: u16, body: String },
}

/// A GET of `script_name?query` with the usual CGI params.
pub async fn get(
    endpoint: &Endpoint,
    script_name: &str,
    query: &str,
    timeout: Duration,
) -> Result<Response, ProbeError> {
    let uri = if query.is_empty() {
        script_name.to_string()
    } else {
        format!("{script_name}?{query}")
    };
    let params = [
        ("SCRIPT_NAME", script_name),
        ("SCRIPT_FILENAME", script_name),
        ("REQUEST_URI", uri.as_str()),
        ("DOCUMENT_URI", script_name),
        ("REQUEST_METHOD", "GET"),
        ("QUERY_STRING", query),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_SOFTWARE", "tqsup"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("CONTENT_LENGTH", "0"),
    ];
    request(endpoint, &params, timeout).await
}

/// php-fpm's ping: ok only when it answers `pong`.
pub async fn ping(endpoint: &Endpoint, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let r = get(endpoint, path, "", timeout).await?;
    if r.status == 200 && r.body.trim_ascii() == b"pong" {
        Ok(())
    } else {
        Err(ProbeError::NotPong {
            status: r.status,
            body: String::from_utf8_lossy(&r.body).chars().take(200).collect(),
        })
    }
}

/// One FastCGI request with `params` and an empty body, all within `timeout`.
pub async fn request(
    endpoint: &Endpoint,
    params: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, ProbeError> {
    let work = async {
        match endpoint {
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|source| connect_error(endpoint, source))?;
                exchange(s, params).await
            }
            Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|source| connect_error(endpoint, source))?;
                s.set_nodelay(true)?;
                exchange(s, params).await
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

fn connect_error(endpoint: &Endpoint, source: std::io::Error) -> ProbeError {
    ProbeError::Connect {
        endpoint: endpoint.to_string(),
        source,
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    params: &[(&str, &str)],
) -> Result<Response, ProbeError> {
    s.write_all(&encode_request(params)).await?;
    s.flush().await?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut stdout = BytesMut::new();
    let mut stderr = BytesMut::new();
    loop {
        while let Some((kind, content)) = decode_record(&mut buf)? {
            match kind {
                STDOUT => stdout.extend_from_slice(&content),
                STDERR => stderr.extend_from_slice(&content),
                END_REQUEST => {
                    if content.len() < 4 {
                        return Err(ProbeError::Protocol("short END_REQUEST"));
                    }
                    let app_status = (&content[..4]).get_u32();
                    return split_response(stdout.freeze(), stderr.freeze(), app_status);
                }
                _ => {}
            }
            if stdout.len() + stderr.len() > MAX_RESPONSE {
                return Err(ProbeError::Protocol("response too large"));
            }
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Err(ProbeError::Protocol("connection closed before END_REQUEST"));
        }
    }
}

/// BEGIN_REQUEST(responder, no keep-conn) + PARAMS + empty PARAMS + empty
/// STDIN, framed by the one codec (`fcgi::codec`), whole pairs per record.
fn encode_request(params: &[(&str, &str)]) -> BytesMut {
    let mut out = BytesMut::new();
    codec::encode_begin(&mut out, REQUEST_ID, codec::ROLE_RESPONDER, 0);
    let mut body = BytesMut::new();
    for (name, value) in params {
        codec::put_pair(&mut body, name.as_bytes(), value.as_bytes());
    }
    // tqsup's own params are a few short pairs: they always fit a record.
    codec::reframe_params(&mut out, REQUEST_ID, &body)
        .expect("probe params fit in FastCGI records");
    codec::encode(&mut out, codec::STDIN, REQUEST_ID, &[]);
    out
}

/// One whole record from `buf`, or None when more bytes are needed.
fn decode_record(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>, ProbeError> {
    match codec::decode(buf) {
        Ok(record) => Ok(record.map(|r| (r.kind, r.content))),
        Err(_) => Err(ProbeError::Protocol("not a FastCGI 1.0 record")),
    }
}

/// Splits CGI output into headers and body.
fn split_response(stdout: Bytes, stderr: Bytes, app_status: u32) -> Result<Response, ProbeError> {
    let (head_len, sep) = match find(&stdout, b"\r\n\r\n") {
        Some(i) => (i, 4),
        None => match find(&stdout, b"\n\n") {
            Some(i) => (i, 2),
            None => return Err(ProbeError::Protocol("no blank line after the CGI headers")),
        },
    };
    let head = String::from_utf8_lossy(&stdout[..head_len]).into_owned();
    let mut headers = Vec::new();
    let mut status = 200;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(status);
        }
        headers.push((name.trim().to_string(), value));
    }
    Ok(Response {
        status,
        headers,
        body: stdout.slice(head_len + sep..),
        stderr,
        app_status,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fcgi::codec::{BEGIN_REQUEST, PARAMS, STDIN};

    #[test]
    fn a_request_is_well_framed() {
        let mut out = encode_request(&[("SCRIPT_NAME", "/ping")]);
        let mut kinds = Vec::new();
        while let Some((kind, content)) = decode_record(&mut out).unwrap() {
            kinds.push((kind, content.len()));
        }
        assert!(out.is_empty());
        assert_eq!(
            kinds,
            vec![
                (BEGIN_REQUEST, 8),
                (PARAMS, 2 + 11 + 5),
                (PARAMS, 0),
                (STDIN, 0)
            ]
        );
    }

    #[test]
    fn headers_are_split_from_the_body() {
        let r = split_response(
            Bytes::from_static(b"Status: 404 Not Found\r\nContent-type: text/plain\r\n\r\nnope"),
            Bytes::new(),
            0,
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.headers[1], ("Content-type".into(), "text/plain".into()));
        assert_eq!(&r.body[..], b"nope");
    }

    #[test]
    fn partial_records_wait_for_more_bytes() {
        let mut all = BytesMut::new();
        codec::encode(&mut all, STDOUT, REQUEST_ID, b"hello");
        let mut part = BytesMut::from(&all[..10]);
        assert!(decode_record(&mut part).unwrap().is_none());
    }
}
