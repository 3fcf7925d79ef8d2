//! tqsup's own requests to php-fpm: the readiness and liveness ping
//! (`ping.path`, expecting `pong`), the forwarder's health check and the
//! admin scrape of `pm.status_path?json`. One request per connection through
//! the one client (`fcgi::client`), everything under one timeout, the
//! response read whole (it is small).

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::cgi_head;
use super::client::{self, Output};
use crate::config::Endpoint;

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

/// One FastCGI request with `params` and an empty body, all within
/// `timeout`, through the one client (`fcgi::client`); the response read
/// whole and its head parsed by `fcgi::cgi_head`.
pub async fn request(
    endpoint: &Endpoint,
    params: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, ProbeError> {
    let work = async {
        let conn =
            client::connect(endpoint, timeout)
                .await
                .map_err(|source| ProbeError::Connect {
                    endpoint: endpoint.to_string(),
                    source,
                })?;
        let params: Vec<(Vec<u8>, Vec<u8>)> = params
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let (writer, mut reader) = client::start(conn, &params).await?;
        writer.finish().await?;
        let mut stdout = BytesMut::new();
        let mut stderr = BytesMut::new();
        loop {
            match reader.next().await? {
                Some(Output::Stdout(b)) => stdout.extend_from_slice(&b),
                Some(Output::Stderr(b)) => stderr.extend_from_slice(&b),
                Some(Output::End { app_status, .. }) => {
                    return split_response(stdout.freeze(), stderr.freeze(), app_status);
                }
                None => return Err(ProbeError::Protocol("no END_REQUEST")),
            }
            if stdout.len() + stderr.len() > MAX_RESPONSE {
                return Err(ProbeError::Protocol("response too large"));
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ProbeError::Timeout(timeout))?
}

/// Splits CGI output into its parsed head and the body.
fn split_response(stdout: Bytes, stderr: Bytes, app_status: u32) -> Result<Response, ProbeError> {
    let (head, body_at) = match cgi_head::parse_head(&stdout) {
        Ok(Some(h)) => h,
        Ok(None) => return Err(ProbeError::Protocol("no blank line after the CGI headers")),
        Err(_) => return Err(ProbeError::Protocol("a malformed CGI response head")),
    };
    Ok(Response {
        status: head.status.as_u16(),
        headers: head
            .headers
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect(),
        body: stdout.slice(body_at..),
        stderr,
        app_status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fcgi::codec;

    #[test]
    fn headers_are_split_from_the_body() {
        let r = split_response(
            Bytes::from_static(b"Status: 404 Not Found\r\nContent-type: text/plain\r\n\r\nnope"),
            Bytes::new(),
            0,
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.headers[0], ("Content-type".into(), "text/plain".into()));
        assert_eq!(&r.body[..], b"nope");
    }

    #[tokio::test]
    async fn a_whole_response_is_read_through_the_client() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fpm.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = vec![0u8; 256];
            let _ = s.read(&mut seen).await.unwrap();
            let mut out = BytesMut::new();
            codec::encode(
                &mut out,
                codec::STDOUT,
                1,
                b"Content-type: text/plain\r\n\r\npo",
            );
            codec::encode(&mut out, codec::STDERR, 1, b"warn");
            codec::encode(&mut out, codec::STDOUT, 1, b"ng");
            codec::encode_end(&mut out, 1, 0, codec::REQUEST_COMPLETE);
            s.write_all(&out).await.unwrap();
        });
        let ep = Endpoint::Unix(path);
        ping(&ep, "/ping", Duration::from_secs(2)).await.unwrap();
        server.await.unwrap();
    }
}
