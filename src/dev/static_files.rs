//! Static files for the dev HTTP front: content type by extension
//! (mime_guess), `ETag`/`Last-Modified`, conditional GET (304), single
//! byte ranges (206/416, see `range`), HEAD, streamed bodies.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::http::{Body, text};
use super::range::{self, Answer};

/// The validator pair for a file of `len` bytes modified at `mtime`.
pub fn etag(len: u64, mtime: SystemTime) -> String {
    let nanos = mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\"{len:x}-{nanos:x}\"")
}

/// Whether the client's cached copy is current (answer 304). `If-None-Match`
/// wins over `If-Modified-Since` when both are present (RFC 9110 §13.2.2).
pub fn not_modified(req: &HeaderMap, etag: &str, mtime: SystemTime) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        return inm.split(',').map(str::trim).any(|t| {
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.strip_prefix("W/").unwrap_or(etag)
        });
    }
    if let Some(ims) = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        // HTTP dates have whole seconds.
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        return secs(mtime) <= secs(ims);
    }
    false
}

/// The content type served for `path`.
pub fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let ess = mime.essence_str();
    if ess == "text/html" || ess == "text/plain" {
        format!("{ess}; charset=utf-8")
    } else {
        ess.to_string()
    }
}

/// Serves `path` for a GET or HEAD.
pub async fn serve(path: &Path, method: &Method, req: &HeaderMap) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed for a static file\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return text(StatusCode::FORBIDDEN, "forbidden\n");
        }
        Err(_) => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let meta = match file.metadata().await {
        Ok(m) => m,
        Err(_) => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let tag = etag(meta.len(), mtime);
    let mut builder = Response::builder()
        .header(header::ETAG, &tag)
        .header(header::LAST_MODIFIED, httpdate::fmt_http_date(mtime))
        .header(header::CACHE_CONTROL, "no-cache");
    if not_modified(req, &tag, mtime) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
            .expect("valid response");
    }
    builder = builder
        .header(header::CONTENT_TYPE, content_type(path))
        .header(header::ACCEPT_RANGES, "bytes");
    let len = meta.len();
    let (start, count) = match range::answer(req, len, &tag, mtime) {
        Answer::Whole => (0, len),
        Answer::Partial { start, end } => {
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            (start, end - start + 1)
        }
        Answer::Unsatisfiable => {
            return builder
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .header(header::CONTENT_LENGTH, 0)
                .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
                .expect("valid response");
        }
    };
    builder = builder.header(header::CONTENT_LENGTH, count);
    if method == Method::HEAD {
        return builder
            .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
            .expect("valid response");
    }
    let mut file = file;
    if start > 0
        && let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await
    {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot seek in the file: {e}\n"),
        );
    }
    let chunks = futures_util::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; (64 * 1024).min(left as usize)];
        match file.read(&mut buf).await {
            // Shorter than it was: the file shrank while being sent.
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    builder
        .body(BodyExt::boxed_unsync(StreamBody::new(chunks)))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn conditional_get() {
        let mtime = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let tag = etag(10, mtime);
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, &tag, mtime));
        h.insert(
            header::IF_NONE_MATCH,
            format!("\"x\", W/{tag}").parse().unwrap(),
        );
        assert!(not_modified(&h, &tag, mtime));
        h.insert(header::IF_NONE_MATCH, "\"other\"".parse().unwrap());
        // A non-matching tag wins over a matching date.
        h.insert(
            header::IF_MODIFIED_SINCE,
            httpdate::fmt_http_date(mtime).parse().unwrap(),
        );
        assert!(!not_modified(&h, &tag, mtime));
        h.remove(header::IF_NONE_MATCH);
        assert!(not_modified(&h, &tag, mtime));
        let older = httpdate::fmt_http_date(mtime - Duration::from_secs(5));
        h.insert(header::IF_MODIFIED_SINCE, older.parse().unwrap());
        assert!(!not_modified(&h, &tag, mtime));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Path::new("a/style.css")), "text/css");
        assert_eq!(
            content_type(Path::new("a.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("a.png")), "image/png");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
