//! Addresses and paths as the config writes them: `host:port` or a unix
//! socket, made absolute against the config file's directory.

use std::path::{Component, Path, PathBuf};

use crate::config::model::Endpoint;

/// A path as written, absolute against `base` and normalized.
pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    normalize(&base.join(p))
}

/// Removes `.` components and folds `..` lexically (no symlink resolution).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Parses `host:port`, `[v6]:port`, `/abs/path`, `unix:path` or a relative
/// path containing `/` or ending in `.sock`.
pub fn parse_endpoint(base: &Path, s: &str) -> Result<Endpoint, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("`unix:` needs a socket path after it".into());
        }
        return Ok(Endpoint::Unix(resolve(base, p)));
    }
    if s.starts_with('/') || s.starts_with("./") || s.ends_with(".sock") {
        return Ok(Endpoint::Unix(resolve(base, s)));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` is neither host:port nor a socket path"))?;
    if port.parse::<u16>().is_err() {
        return Err(format!("port `{port}` is not a number from 0 to 65535"));
    }
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
        }
    };
    if !host_ok {
        return Err(format!("host `{host}` is not a valid host name or address"));
    }
    Ok(Endpoint::Tcp(s.to_string()))
}

/// The longest unix socket path the kernel takes (`sun_path` is 108 bytes
/// with its NUL): a longer one is silently truncated by php-fpm and fails
/// to bind or connect elsewhere.
pub const MAX_SOCKET_PATH: usize = 107;

/// Why a unix socket path cannot be used, if it cannot.
pub fn socket_path_problem(p: &Path) -> Option<String> {
    let len = p.as_os_str().len();
    (len > MAX_SOCKET_PATH).then(|| {
        format!(
            "the socket path {} is {len} bytes; the kernel takes at most {MAX_SOCKET_PATH}",
            p.display()
        )
    })
}
