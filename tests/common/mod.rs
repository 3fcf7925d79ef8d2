//! The integration tests' one harness: temp projects whose tqsup.yaml is
//! written from a typed value ([`TqsupProject`]), the real tqsup binary as
//! a subprocess with a hard timeout ([`Tqsup`], [`Ran`]), and real php-fpm,
//! nginx, cgi-fcgi and wrk. Whatever a failing test started prints the tail
//! of its log (and tqsup its /metrics) before it is killed.
// Each test binary uses its own part of the harness.
#![allow(dead_code, unused_imports)]

#[macro_use]
mod process;
pub mod fcgi;
pub mod http;
pub mod nginx;
mod project;
mod running;
pub mod site;
pub mod wrk;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use process::{Guard, LOG_TAIL_LINES, Ran, command_line, run_with_timeout, wait_timeout};
pub use project::{Project, TqsupProject, merge};
pub use running::Tqsup;
pub use serde_json::{Value, json};

/// The tqsup binary built by cargo for this test run, without the
/// environment a developer's shell may carry.
pub fn tqsup() -> Command {
    tqsup_at(Path::new(env!("CARGO_BIN_EXE_tqsup")))
}

/// [`tqsup`] for a copy of the binary at `program`.
pub fn tqsup_at(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_remove("TQSUP_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET");
    c
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:<a free port>`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A name no other test (nor test binary) running now uses, e.g. for a
/// php-fpm pool whose processes a test finds by name.
pub fn unique_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}{:x}x{n}",
        nanos ^ std::process::id().rotate_left(16)
    )
}

/// Polls `f` until it returns Some or the timeout passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A FastCGI request with the real `cgi-fcgi` (libfcgi-bin) to `addr`
/// (host:port or socket path). Its stdout is the CGI headers and body.
pub fn cgi_fcgi(addr: &str, script_filename: &Path, script_name: &str, query: &str) -> Ran {
    run_with_timeout(
        Command::new("cgi-fcgi")
            .args(["-bind", "-connect", addr])
            .env_clear()
            .env("SCRIPT_FILENAME", script_filename)
            .env("SCRIPT_NAME", script_name)
            .env("REQUEST_METHOD", "GET")
            .env("QUERY_STRING", query)
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("GATEWAY_INTERFACE", "CGI/1.1"),
        Duration::from_secs(15),
    )
}

/// The php-fpm binary tests use (Debian's php-fpm8.2 unless TQSUP_PHP_FPM).
pub fn php_fpm() -> PathBuf {
    if let Some(p) = std::env::var_os("TQSUP_PHP_FPM") {
        return p.into();
    }
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("php-fpm") {
                    return e.path();
                }
            }
        }
    }
    panic!("php-fpm not installed: run scripts/install-deps.sh");
}

/// Pids of live processes whose command line contains `needle`.
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if cmdline(pid).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Children of `pid`, over all its threads (tokio spawns from any of them).
pub fn children(pid: i32) -> Vec<i32> {
    ::tqsup::fcgi::peer::children_of(pid as u32)
        .into_iter()
        .map(|p| p as i32)
        .collect()
}

/// A process's command line, NULs as spaces ("" when it is gone).
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// php-fpm's master: the child of tqsup that is a php-fpm master.
pub fn master_of(tqsup: i32) -> Option<i32> {
    children(tqsup)
        .into_iter()
        .find(|p| cmdline(*p).contains("php-fpm: master"))
}

/// The workers of pool `pool` under php-fpm's `master` (not those of
/// `<pool>_status`, php-fpm's status pool that answers tqsup's ping).
pub fn workers_of(master: i32, pool: &str) -> Vec<i32> {
    let name = format!("php-fpm: pool {pool}");
    children(master)
        .into_iter()
        .filter(|p| cmdline(*p).trim() == name)
        .collect()
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// A `Key: <n> kB` line of /proc/<pid>/status (VmRSS, VmHWM), in KiB.
pub fn proc_status_kib(pid: i32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

/// The sha256 of a file, by `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let out = run_with_timeout(Command::new("sha256sum").arg(path), Duration::from_secs(30));
    assert_ok!(out);
    out.out().split_whitespace().next().unwrap().to_string()
}

/// `len` bytes that do not repeat quickly (for bodies checked by hash).
pub fn varied_bytes(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}
