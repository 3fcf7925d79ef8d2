//! HTTP as the tests speak it: a minimal HTTP/1.1 client for tqsup's own
//! endpoints (admin, the dev front), the parse of a raw response (chunked
//! bodies decoded), and curl for going through real web servers.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Ran, run_with_timeout};

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Headers as received, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> String {
        self.header("content-type").unwrap_or("").to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A whole raw response: head, then a body (chunked decoded); None when it
/// is not one.
pub fn parse(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let (status, headers) = parse_head(std::str::from_utf8(&raw[..end]).ok()?)?;
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..nl]).ok()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// The status line and headers.
fn parse_head(head: &str) -> Option<(u16, Vec<(String, String)>)> {
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Some((status, headers))
}

/// GET `path` from `addr` (`host:port`) with `Connection: close`; None
/// when nothing (or no whole response) came within 20 s.
pub fn get(addr: &str, path: &str) -> Option<Reply> {
    get_within(addr, path, Duration::from_secs(20))
}

pub fn get_within(addr: &str, path: &str, timeout: Duration) -> Option<Reply> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    parse(&raw)
}

/// `curl -sS --max-time 60 args…`, which must succeed.
pub fn curl_raw(args: &[&str]) -> Ran {
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "--max-time", "60"])
            .args(args),
        Duration::from_secs(90),
    );
    crate::assert_ok!(out);
    out
}

/// `curl` to `url` (no redirects followed, HTTP/1.1) with `extra`
/// arguments; its head and body files go into `dir`.
pub fn curl(dir: &Path, url: &str, extra: &[&str]) -> Reply {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let head = dir.join(format!("curl-{n}.head"));
    let body = dir.join(format!("curl-{n}.body"));
    let (head_arg, body_arg) = (head.display().to_string(), body.display().to_string());
    let mut args = vec!["--http1.1", "-D", &head_arg, "-o", &body_arg];
    args.extend(extra);
    args.push(url);
    curl_raw(&args);
    let head_text = std::fs::read_to_string(&head).unwrap();
    // The last header block (curl writes `100 Continue` blocks first).
    let block = head_text
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or_else(|| panic!("no response head: {head_text:?}"));
    let (status, headers) =
        parse_head(block).unwrap_or_else(|| panic!("bad response head: {block:?}"));
    Reply {
        status,
        headers,
        // Decoded by curl already.
        body: std::fs::read(&body).unwrap_or_default(),
    }
}
