//! One socket type for both sides (TCP or unix), used through readiness and
//! `try_*` calls on `&self`, so one task can read and write it at once and
//! a writer can send several buffers with one `writev`.

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
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

/// Writes every buffer of `bufs`, in order, with as few `writev` calls as the
/// socket allows; `bufs` is drained. Fails with `TimedOut` past `timeout`.
pub async fn write_all(
    stream: &Stream,
    bufs: &mut Vec<Bytes>,
    timeout: Duration,
) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    bufs.retain(|b| !b.is_empty());
    let mut first = 0;
    while first < bufs.len() {
        let n = {
            let mut slices = [IoSlice::new(&[]); 32];
            let mut k = 0;
            for b in bufs[first..].iter().take(32) {
                slices[k] = IoSlice::new(b);
                k += 1;
            }
            match stream.try_write_vectored(&slices[..k]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout_at(deadline, stream.ready(Interest::WRITABLE)).await
                    {
                        Ok(r) => r?,
                        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                    };
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        advance(bufs, &mut first, n);
    }
    bufs.clear();
    Ok(())
}

/// Consumes `n` written bytes from `bufs[first..]`.
pub fn advance(bufs: &mut [Bytes], first: &mut usize, mut n: usize) {
    while n > 0 {
        let b = &mut bufs[*first];
        if n >= b.len() {
            n -= b.len();
            *b = Bytes::new();
            *first += 1;
        } else {
            b.advance(n);
            n = 0;
        }
    }
}
