//! A test-side FastCGI client (raw records, blocking std sockets) and a
//! stack of real php-fpm + `tqsup run` (forwarding only) to point it at.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Guard, Project, Tqsup, TqsupProject, eventually, free_addr, php_fpm};

pub const BEGIN: u8 = 1;
pub const ABORT: u8 = 2;
pub const END: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// One record on the wire.
pub fn record(kind: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
    assert!(content.len() <= 65535);
    let mut v = vec![1, kind];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&(content.len() as u16).to_be_bytes());
    v.push(padding);
    v.push(0);
    v.extend_from_slice(content);
    v.extend(std::iter::repeat_n(0u8, padding as usize));
    v
}

pub fn begin(id: u16, role: u16, keep_conn: bool) -> Vec<u8> {
    let r = role.to_be_bytes();
    record(BEGIN, id, &[r[0], r[1], keep_conn as u8, 0, 0, 0, 0, 0], 0)
}

fn put_len(v: &mut Vec<u8>, n: usize) {
    if n < 128 {
        v.push(n as u8);
    } else {
        v.extend_from_slice(&(n as u32 | 0x8000_0000).to_be_bytes());
    }
}

/// A name-value pair.
pub fn pair(name: &str, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    put_len(&mut v, name.len());
    put_len(&mut v, value.len());
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(value);
    v
}

/// A stream of `kind` records (≤ 65535 bytes each), then the empty one.
pub fn stream(kind: u8, id: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for c in data.chunks(65535) {
        v.extend(record(kind, id, c, 0));
    }
    v.extend(record(kind, id, &[], 0));
    v
}

/// Standard CGI params for `script` in `docroot` plus `extra`.
pub fn params(
    docroot: &Path,
    script: &str,
    query: &str,
    method: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let filename = format!("{}{}", docroot.display(), script);
    let mut v = Vec::new();
    for (n, val) in [
        ("SCRIPT_FILENAME", filename.as_str()),
        ("SCRIPT_NAME", script),
        ("REQUEST_URI", script),
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        v.extend(pair(n, val.as_bytes()));
    }
    v
}

/// A whole request: BEGIN, PARAMS stream, STDIN stream.
pub fn request(id: u16, keep_conn: bool, params: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = begin(id, 1, keep_conn);
    v.extend(stream(PARAMS, id, params));
    v.extend(stream(STDIN, id, body));
    v
}

/// A decoded record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub kind: u8,
    pub id: u16,
    pub content: Vec<u8>,
}

/// What came back for one request.
#[derive(Debug, Default, Clone)]
pub struct Response {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// (appStatus, protocolStatus)
    pub end: Option<(u32, u8)>,
}

impl Response {
    /// The CGI `Status:` (200 when absent).
    pub fn status(&self) -> u16 {
        let text = String::from_utf8_lossy(&self.stdout);
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        head.lines()
            .find_map(|l| l.strip_prefix("Status: "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or(200)
    }

    /// The body after the CGI headers.
    pub fn body(&self) -> String {
        let text = String::from_utf8_lossy(&self.stdout);
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

/// A FastCGI client connection (TCP or unix) with a read timeout.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub fn connect(addr: &str) -> Conn {
        let c = if addr.starts_with('/') {
            Conn::Unix(UnixStream::connect(addr).expect("connect"))
        } else {
            Conn::Tcp(TcpStream::connect(addr).expect("connect"))
        };
        c.set_timeout(Duration::from_secs(20));
        c
    }

    pub fn set_timeout(&self, t: Duration) {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(t)).unwrap(),
            Conn::Unix(s) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Tcp(s) => s.write_all(bytes).expect("write"),
            Conn::Unix(s) => s.write_all(bytes).expect("write"),
        }
    }

    /// Sends and reports failure instead of panicking (the peer may be gone).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(bytes),
            Conn::Unix(s) => s.write_all(bytes),
        }
    }

    pub fn shutdown_write(&self) {
        match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.read_exact(buf),
            Conn::Unix(s) => s.read_exact(buf),
        }
    }

    /// The next record; None on EOF (or reset).
    pub fn read_record(&mut self) -> Option<Rec> {
        let mut h = [0u8; 8];
        match self.read_exact(&mut h) {
            Ok(()) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("timed out waiting for a record")
            }
            Err(_) => return None,
        }
        assert_eq!(h[0], 1, "version");
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        let mut content = vec![0u8; len + h[6] as usize];
        self.read_exact(&mut content).expect("record body");
        content.truncate(len);
        Some(Rec {
            kind: h[1],
            id: u16::from_be_bytes([h[2], h[3]]),
            content,
        })
    }

    /// Whether the server closed the connection (EOF) within the timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.read_exact(&mut b) {
            Ok(()) => false,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                false
            }
            Err(_) => true,
        }
    }

    /// Reads until every id in `ids` has its END_REQUEST.
    pub fn responses(&mut self, ids: &[u16]) -> Vec<Response> {
        let mut out = vec![Response::default(); ids.len()];
        while out.iter().any(|r| r.end.is_none()) {
            let r = self
                .read_record()
                .expect("connection closed before END_REQUEST");
            let i = ids
                .iter()
                .position(|&id| id == r.id)
                .unwrap_or_else(|| panic!("record for unexpected id {}", r.id));
            match r.kind {
                STDOUT => out[i].stdout.extend(r.content),
                STDERR => out[i].stderr.extend(r.content),
                END => {
                    let c = &r.content;
                    out[i].end = Some((u32::from_be_bytes([c[0], c[1], c[2], c[3]]), c[4]));
                }
                k => panic!("unexpected record type {k}"),
            }
        }
        out
    }

    pub fn response(&mut self, id: u16) -> Response {
        self.responses(&[id]).remove(0)
    }
}

/// Options for a php-fpm + tqsup stack.
pub struct StackOpts {
    pub children: u32,
    pub max_requests: u32,
    pub queue_timeout_ms: u64,
    /// Forward listener on a unix socket instead of TCP.
    pub unix_listener: bool,
    /// Merged into tqsup's `forward:` section.
    pub forward: Value,
}

impl Default for StackOpts {
    fn default() -> Self {
        StackOpts {
            children: 4,
            max_requests: 0,
            queue_timeout_ms: 5000,
            unix_listener: false,
            forward: json!({}),
        }
    }
}

/// Real php-fpm (its own private socket, not supervised) with `tqsup run`
/// forwarding to it.
pub struct Stack {
    pub tqsup: Tqsup,
    pub fpm: Guard,
    pub fpm_socket: PathBuf,
    /// The forward listener: `127.0.0.1:port` or a socket path.
    pub addr: String,
    /// Last, so the processes are gone before the directory is removed.
    pub project: TqsupProject,
}

/// PHP scripts the forwarding tests use.
fn write_scripts(p: &Project) {
    p.write(
        "public/index.php",
        "<?php echo 'hello ', $_GET['n'] ?? '', \"\\n\";\n",
    );
    p.write(
        "public/sleep.php",
        "<?php usleep((int)($_GET['ms'] ?? 1000) * 1000); echo \"slept\\n\";\n",
    );
    p.write(
        "public/echo.php",
        "<?php $h = hash_init('sha256'); $m = hash_init('md5'); $n = 0;\n\
         $in = fopen('php://input', 'rb');\n\
         while (!feof($in)) { $c = fread($in, 65536); if ($c === false) break; $n += strlen($c); hash_update($h, $c); hash_update($m, $c); }\n\
         echo $n, ' ', hash_final($h), ' ', hash_final($m), \"\\n\";\n",
    );
    p.write(
        "public/server.php",
        "<?php $t = 0; foreach ($_SERVER as $k => $v) { if (strncmp($k, 'HTTP_X_', 7) === 0) $t += strlen($v); }\n\
         echo $t, ' ', $_SERVER['HTTP_X_SPLIT'] ?? '', \"\\n\";\n",
    );
    p.write(
        "public/big.php",
        "<?php while (ob_get_level()) ob_end_flush(); $mb = (int)($_GET['mb'] ?? 100); $c = str_repeat('x', 1048576);\n\
         header('Content-Length: ' . ($mb * 1048576)); for ($i = 0; $i < $mb; $i++) { echo $c; flush(); }\n",
    );
    p.write(
        "public/stderr.php",
        "<?php error_log('stderr-marker-' . ($_GET['m'] ?? '')); echo \"ok\\n\";\n",
    );
}

impl Stack {
    pub fn start(opts: StackOpts) -> Stack {
        let mut project = TqsupProject::new();
        write_scripts(&project);
        let fpm_socket = project.join("fpm.sock");
        // php-fpm's own ini file: not tqsup's config.
        let conf = project.write(
            "fpm.conf",
            &format!(
                "[global]\ndaemonize = no\nerror_log = /proc/self/fd/2\n[www]\nuser = www-data\ngroup = www-data\n\
                 listen = {}\nlisten.mode = 0666\nlisten.backlog = 1024\npm = static\npm.max_children = {}\n\
                 pm.max_requests = {}\nchdir = {}\ncatch_workers_output = yes\n",
                fpm_socket.display(),
                opts.children,
                opts.max_requests,
                project.join("public").display(),
            ),
        );
        let fpm = Guard::spawn(
            Command::new(php_fpm()).args(["-F", "-O", "-y"]).arg(&conf),
            project.join("fpm.log"),
        );
        let addr = if opts.unix_listener {
            project.join("forward.sock").display().to_string()
        } else {
            free_addr()
        };
        project
            .merge(json!({
                "php_fpm": {
                    "enabled": false,
                    "listen": fpm_socket,
                    "pool": { "type": "static", "max_children": opts.children },
                },
                "forward": { "listen": addr, "queue_timeout_ms": opts.queue_timeout_ms },
                "log": { "level": "info" },
            }))
            .merge(json!({ "forward": opts.forward }));
        let up = eventually(Duration::from_secs(10), || {
            fpm_socket.exists().then_some(())
        });
        assert!(up.is_some(), "php-fpm did not start");
        let tqsup = project.start();
        Stack {
            tqsup,
            fpm,
            fpm_socket,
            addr,
            project,
        }
    }

    pub fn docroot(&self) -> PathBuf {
        self.project.join("public")
    }

    pub fn conn(&self) -> Conn {
        Conn::connect(&self.addr)
    }

    /// Params for a GET of `script?query`.
    pub fn get(&self, script: &str, query: &str) -> Vec<u8> {
        params(&self.docroot(), script, query, "GET", &[])
    }

    /// Connections from anyone to php-fpm's socket right now (from
    /// /proc/net/unix: the listening socket is not counted).
    pub fn upstream_connections(&self) -> usize {
        unix_connections(&self.fpm_socket)
    }
}

/// Accepted connections on a unix socket path, from /proc/net/unix.
pub fn unix_connections(path: &Path) -> usize {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap();
    let p = path.display().to_string();
    // Columns: Num RefCount Protocol Flags Type St Inode Path. Accepted
    // sockets carry the path too, with state 03 (connected).
    text.lines()
        .filter(|l| l.ends_with(&p))
        .filter(|l| l.split_whitespace().nth(5) == Some("03"))
        .count()
}
