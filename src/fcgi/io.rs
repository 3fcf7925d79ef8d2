//! One socket type for both sides (TCP or unix), used through readiness and
//! `try_*` calls on `&self`, so one task can read and write it at once and
//! a writer can send several buffers with one `writev`.

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{Interest, Ready};
use tokio::net::{TcpStream, UnixStream};

use crate::config::Endpoint;

/// A connected socket, either side.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Connects to `endpoint` with TCP_NODELAY set.
    pub async fn connect(endpoint: &Endpoint) -> io::Result<Stream> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str()).await?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Endpoint::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }

    pub async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        match self {
            Stream::Tcp(s) => s.ready(interest).await,
            Stream::Unix(s) => s.ready(interest).await,
        }
    }

    /// One non-blocking read into `buf`'s spare capacity. A short read
    /// means the socket is drained (as nginx assumes too): readiness is then
    /// cleared at once, saving the read that would only say EAGAIN.
    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let spare = buf.capacity() - buf.len();
        let mut short = None;
        let r = match self {
            Stream::Tcp(s) => s.try_io(Interest::READABLE, || {
                drained(s.try_read_buf(buf), spare, &mut short)
            }),
            Stream::Unix(s) => s.try_io(Interest::READABLE, || {
                drained(s.try_read_buf(buf), spare, &mut short)
            }),
        };
        match (r, short) {
            (Err(_), Some(n)) => Ok(n),
            (r, _) => r,
        }
    }

    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
        }
    }

    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write_vectored(bufs),
            Stream::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    /// Reads what is available into `buf` (at least one byte or EOF = 0),
    /// waiting for readiness first.
    pub async fn read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.ready(Interest::READABLE).await?;
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Whether an idle connection is provably open and silent: one
    /// non-blocking `recv(MSG_PEEK)` on the socket itself, not tokio's cached
    /// readiness (php-fpm shuts a connection right after the END_REQUEST of a
    /// child's last request under `pm.max_requests`, and the FIN may be
    /// microseconds old). EOF, stray bytes or an error: not reusable.
    pub fn is_quiet(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        let mut probe = [0u8; 1];
        let flags = nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
        matches!(
            nix::sys::socket::recv(fd, &mut probe, flags),
            Err(nix::errno::Errno::EAGAIN)
        )
    }
}

/// Turns a short read into WouldBlock (so `try_io` clears readiness),
/// keeping the count in `short`.
fn drained(r: io::Result<usize>, spare: usize, short: &mut Option<usize>) -> io::Result<usize> {
    match r {
        Ok(n) if n > 0 && n < spare => {
            *short = Some(n);
            Err(io::ErrorKind::WouldBlock.into())
        }
        r => r,
    }
}

/// Makes sure `buf` can take a read of at least `min` bytes.
pub fn reserve_read(buf: &mut BytesMut, min: usize) {
    if buf.capacity() - buf.len() < min {
        buf.reserve(min.max(16 * 1024));
    }
}

/// Writes `parts` one after the other with as few `writev` calls as the
/// socket allows. Fails with `TimedOut` past `timeout`.
pub async fn write_all(stream: &Stream, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
    // The deadline is only computed once a write would block.
    let mut deadline = None;
    // Bytes of `parts` written so far.
    let mut written = 0;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    while written < total {
        let mut slices = [IoSlice::new(&[]); 8];
        let mut k = 0;
        let mut skip = written;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            if k == slices.len() {
                break;
            }
            slices[k] = IoSlice::new(&p[skip..]);
            skip = 0;
            k += 1;
        }
        match stream.try_write_vectored(&slices[..k]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let d = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
                match tokio::time::timeout_at(d, stream.ready(Interest::WRITABLE)).await {
                    Ok(r) => r?,
                    Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
