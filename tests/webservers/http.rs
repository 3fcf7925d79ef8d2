//! The HTTP client of the web-server tests: the real `curl`, with a hard
//! timeout, its headers and body written to files and parsed here.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::run_with_timeout;

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// `curl` to `url` (no redirects followed, HTTP/1.1) with `extra` arguments;
/// scratch files go into `dir`.
pub fn curl(dir: &Path, url: &str, extra: &[&str]) -> Reply {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let head = dir.join(format!("curl-{n}.head"));
    let body = dir.join(format!("curl-{n}.body"));
    let out = run_with_timeout(
        Command::new("curl")
            .args(["-sS", "--http1.1", "--max-time", "60", "-D"])
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(extra)
            .arg(url),
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "curl {url} {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head_text = std::fs::read_to_string(&head).unwrap();
    let body = std::fs::read(&body).unwrap_or_default();
    parse_head(&head_text, body)
}

/// The last header block (curl writes `100 Continue` blocks first).
fn parse_head(text: &str, body: Vec<u8>) -> Reply {
    let block = text
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or_else(|| panic!("no response head: {text:?}"));
    let mut lines = block.lines();
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body,
    }
}

/// The sha256 of a file, by `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let out = run_with_timeout(Command::new("sha256sum").arg(path), Duration::from_secs(30));
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The sha256 of bytes (through a scratch file in `dir`).
pub fn sha256(dir: &Path, bytes: &[u8]) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let p = dir.join(format!("hash-{n}.bin"));
    std::fs::write(&p, bytes).unwrap();
    let h = sha256_file(&p);
    let _ = std::fs::remove_file(&p);
    h
}
