//! The listening socket of every server tqsup runs (the forward listener,
//! the admin endpoint, the dev HTTP front): an [`Endpoint`] bound, TCP or
//! unix, accepting [`Stream`]s; and who holds an address that is taken.
//!
//! Binding and serving are two steps: [`BoundSocket::bind`] runs before
//! anything else starts (a taken `forward.listen` stops tqsup before
//! php-fpm is launched) and before the runtime that will serve it exists;
//! [`Listener::from_bound`] ties it to the current runtime.

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use super::io::Stream;
use crate::config::Endpoint;

/// A bound listening socket, not yet tied to a runtime. A unix socket's
/// file is removed when it (or the [`Listener`] made from it) is dropped.
#[derive(Debug)]
pub struct BoundSocket(Socket<std::net::TcpListener, std::os::unix::net::UnixListener>);

/// A listening socket of either kind; the unix one owns its socket file.
/// (Fields drop in order: the socket closes before its file goes.)
#[derive(Debug)]
enum Socket<T, U> {
    Tcp(T),
    Unix(U, SocketFile),
}

/// A socket file tqsup bound, removed when dropped.
#[derive(Debug)]
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl BoundSocket {
    /// Binds `endpoint`. A unix socket's directory is created when missing
    /// (zero-config dev mode's `.tqserver/` may not exist yet), a stale
    /// socket file (nobody accepts on it) is replaced, and the socket gets
    /// `socket_mode` when given. The error keeps the `io::Error`
    /// (AddrInUse: see [`holder`]) for the caller to word.
    pub fn bind(endpoint: &Endpoint, socket_mode: Option<u32>) -> io::Result<BoundSocket> {
        Ok(BoundSocket(match endpoint {
            Endpoint::Tcp(addr) => {
                let l = std::net::TcpListener::bind(addr.as_str())?;
                l.set_nonblocking(true)?;
                Socket::Tcp(l)
            }
            Endpoint::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if let Some(parent) = path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent)?;
                }
                if let Ok(m) = std::fs::symlink_metadata(path)
                    && m.file_type().is_socket()
                    && std::os::unix::net::UnixStream::connect(path).is_err()
                {
                    // Stale (nobody accepts on it): replace it.
                    let _ = std::fs::remove_file(path);
                }
                let l = std::os::unix::net::UnixListener::bind(path)?;
                let file = SocketFile(path.clone());
                l.set_nonblocking(true)?;
                if let Some(mode) = socket_mode {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                }
                Socket::Unix(l, file)
            }
        }))
    }
}

/// A listening socket registered with the current runtime.
#[derive(Debug)]
pub struct Listener(Socket<TcpListener, UnixListener>);

impl Listener {
    /// The listener on an already bound socket; must run inside the runtime
    /// that will accept on it.
    pub fn from_bound(socket: BoundSocket) -> io::Result<Self> {
        Ok(Listener(match socket.0 {
            Socket::Tcp(l) => Socket::Tcp(TcpListener::from_std(l)?),
            Socket::Unix(l, file) => Socket::Unix(UnixListener::from_std(l)?, file),
        }))
    }

    /// [`BoundSocket::bind`] then [`Listener::from_bound`], for a server that
    /// binds inside its runtime.
    pub fn bind(endpoint: &Endpoint, socket_mode: Option<u32>) -> io::Result<Self> {
        Self::from_bound(BoundSocket::bind(endpoint, socket_mode)?)
    }

    /// The next connection; TCP ones with TCP_NODELAY set.
    pub async fn accept(&self) -> io::Result<Stream> {
        match &self.0 {
            Socket::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Socket::Unix(l, _) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }

    /// The bound address (`host:port`, the port chosen when 0 was asked
    /// for, or the socket path), for logs and tests.
    pub fn local_addr(&self) -> String {
        match &self.0 {
            Socket::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            Socket::Unix(_, file) => file.0.display().to_string(),
        }
    }
}

/// The pid and name of the process listening on `endpoint`, when /proc
/// tells (same user, or root): what a "cannot listen" message names.
pub fn holder(endpoint: &Endpoint) -> Option<(u32, String)> {
    let inodes = match endpoint {
        Endpoint::Unix(path) => {
            unix_listen_inodes(&std::fs::read_to_string("/proc/net/unix").ok()?, path)
        }
        Endpoint::Tcp(addr) => {
            let port: u16 = addr.rsplit(':').next()?.parse().ok()?;
            let mut all = Vec::new();
            for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
                if let Ok(text) = std::fs::read_to_string(table) {
                    all.extend(tcp_listen_inodes(&text, port));
                }
            }
            all
        }
    };
    if inodes.is_empty() {
        return None;
    }
    let pid = pid_with_socket(&inodes)?;
    // Any process may put anything in its command line: it goes into a
    // one-line error, so control characters (newlines) are escaped.
    let name = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let text = String::from_utf8_lossy(&c).replace('\0', " ");
            crate::logging::escape_controls(text.trim()).into_owned()
        })
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "?".into());
    Some((pid, name))
}

/// Inodes of listening unix sockets bound to `path` (`/proc/net/unix`).
pub fn unix_listen_inodes(table: &str, path: &Path) -> Vec<u64> {
    let want = path.to_string_lossy();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path
            let listening = u32::from_str_radix(f.get(3)?, 16).ok()? & 0x10000 != 0;
            (listening && *f.get(7)? == want).then(|| f[6].parse().ok())?
        })
        .collect()
}

/// Inodes of TCP sockets listening on `port` (`/proc/net/tcp{,6}`).
pub fn tcp_listen_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *f.get(3)? == "0A").then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// The first process with an open fd on one of these socket inodes.
fn pid_with_socket(inodes: &[u64]) -> Option<u32> {
    let pids = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok());
    super::peer::pid_holding(inodes, pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_listeners_are_found_by_path() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            000000000c9c3bf2: 00000002 00000000 00010000 0001 01 750898 /tmp/x/s.sock\n\
            000000000c9c3bf3: 00000003 00000000 00000000 0001 03 750899 /tmp/x/s.sock\n\
            000000000c9c3bf4: 00000002 00000000 00010000 0001 01 750900 /tmp/y.sock\n";
        assert_eq!(
            unix_listen_inodes(table, Path::new("/tmp/x/s.sock")),
            vec![750898]
        );
    }

    #[test]
    fn tcp_listeners_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n\
            1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0 100 0 0 10 0\n";
        assert_eq!(tcp_listen_inodes(table, 8080), vec![12345]);
        assert!(tcp_listen_inodes(table, 8081).is_empty());
    }

    #[tokio::test]
    async fn a_unix_socket_is_replaced_when_stale_refused_when_live_removed_when_dropped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/s.sock");
        let ep = Endpoint::Unix(path.clone());
        // The directory is made; the mode is set.
        let l = Listener::bind(&ep, Some(0o600)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(l.local_addr(), path.display().to_string());
        // Live: a second bind is refused, naming this process as holder.
        let e = BoundSocket::bind(&ep, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(holder(&ep).map(|h| h.0), Some(std::process::id()));
        let client = tokio::net::UnixStream::connect(&path).await.unwrap();
        assert!(matches!(l.accept().await.unwrap(), Stream::Unix(_)));
        drop((client, l));
        assert!(!path.exists(), "removed when dropped");
        // Stale: a socket file nobody accepts on is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = Listener::bind(&ep, None).unwrap();
        tokio::net::UnixStream::connect(&path).await.unwrap();
        assert!(matches!(l.accept().await.unwrap(), Stream::Unix(_)));
    }

    #[tokio::test]
    async fn a_tcp_listener_accepts_with_nodelay_and_names_its_port() {
        let l = Listener::bind(&Endpoint::Tcp("127.0.0.1:0".into()), None).unwrap();
        let addr = l.local_addr();
        assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"));
        let taken = BoundSocket::bind(&Endpoint::Tcp(addr.clone()), None).unwrap_err();
        assert_eq!(taken.kind(), io::ErrorKind::AddrInUse);
        let _client = tokio::net::TcpStream::connect(&addr).await.unwrap();
        match l.accept().await.unwrap() {
            Stream::Tcp(s) => assert!(s.nodelay().unwrap()),
            Stream::Unix(_) => panic!("a TCP listener gave a unix stream"),
        }
    }
}
