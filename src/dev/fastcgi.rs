//! A small streaming FastCGI client for the dev HTTP front: one request per
//! connection (responder role, no keep-alive), parameters and stdin written
//! as they come, stdout/stderr read record by record.
//!
//! The codec half (`encode_*`, [`decode`]) does no I/O; [`Connection`] owns
//! the socket and runs the read→decode loop.

use std::io;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Endpoint;

const VERSION: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const RESPONDER: u16 = 1;
const HEADER_LEN: usize = 8;
/// The largest content of one record.
pub const MAX_CONTENT: usize = 65535;
/// The request id we use (one request per connection).
const REQUEST_ID: u16 = 1;

/// One record from the application, as the dev front cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    /// FCGI_END_REQUEST: the response is complete.
    End {
        app_status: u32,
        protocol_status: u8,
    },
}

/// A malformed stream from the application.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("unsupported FastCGI version {0}")]
    Version(u8),
    #[error("FCGI_END_REQUEST body is {0} bytes, expected 8")]
    EndLength(usize),
}

/// Appends one record (header, content, padding to 8 bytes) to `out`.
/// `content` must be at most [`MAX_CONTENT`] bytes.
pub fn encode_record(kind: u8, request_id: u16, content: &[u8], out: &mut BytesMut) {
    debug_assert!(content.len() <= MAX_CONTENT);
    let padding = (8 - content.len() % 8) % 8;
    out.reserve(HEADER_LEN + content.len() + padding);
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u16(request_id);
    out.put_u16(content.len() as u16);
    out.put_u8(padding as u8);
    out.put_u8(0);
    out.put_slice(content);
    out.put_bytes(0, padding);
}

/// Appends `content` as as many records of `kind` as it takes (none when
/// empty: an empty record is the end-of-stream marker, written on purpose).
pub fn encode_stream(kind: u8, content: &[u8], out: &mut BytesMut) {
    for chunk in content.chunks(MAX_CONTENT) {
        encode_record(kind, REQUEST_ID, chunk, out);
    }
}

fn put_len(len: usize, out: &mut Vec<u8>) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
    }
}

/// Name-value pairs in FastCGI's length-prefixed encoding.
pub fn encode_params(params: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in params {
        put_len(name.len(), &mut out);
        put_len(value.len(), &mut out);
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out
}

/// The whole request head: BEGIN_REQUEST, PARAMS records, the empty PARAMS.
pub fn encode_head(params: &[(Vec<u8>, Vec<u8>)]) -> BytesMut {
    let mut out = BytesMut::new();
    let mut begin = [0u8; 8];
    begin[..2].copy_from_slice(&RESPONDER.to_be_bytes());
    encode_record(BEGIN_REQUEST, REQUEST_ID, &begin, &mut out);
    encode_stream(PARAMS, &encode_params(params), &mut out);
    encode_record(PARAMS, REQUEST_ID, &[], &mut out);
    out
}

/// Decodes one record from the front of `buf`. `Ok(None)`: need more bytes.
/// Records this client has no use for (other ids, management records) are
/// consumed and skipped.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Output>, CodecError> {
    loop {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        if buf[0] != VERSION {
            return Err(CodecError::Version(buf[0]));
        }
        let kind = buf[1];
        let id = u16::from_be_bytes([buf[2], buf[3]]);
        let len = u16::from_be_bytes([buf[4], buf[5]]) as usize;
        let padding = buf[6] as usize;
        if buf.len() < HEADER_LEN + len + padding {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let content = buf.split_to(len).freeze();
        buf.advance(padding);
        if id != REQUEST_ID {
            continue;
        }
        match kind {
            STDOUT => return Ok(Some(Output::Stdout(content))),
            STDERR => return Ok(Some(Output::Stderr(content))),
            END_REQUEST => {
                if content.len() != 8 {
                    return Err(CodecError::EndLength(content.len()));
                }
                let app_status =
                    u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                return Ok(Some(Output::End {
                    app_status,
                    protocol_status: content[4],
                }));
            }
            _ => continue,
        }
    }
}

/// Any byte stream to the application (TCP or unix socket).
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Connects to `endpoint`, giving up after `timeout`.
pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Box<dyn Stream>> {
    let attempt = async {
        let s: Box<dyn Stream> = match endpoint {
            Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr.as_str()).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        };
        Ok(s)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

/// The writing half of a request: the head is sent by [`start`], then stdin.
pub struct RequestWriter {
    w: tokio::io::WriteHalf<Box<dyn Stream>>,
    buf: BytesMut,
}

impl RequestWriter {
    /// Sends a piece of the request body.
    pub async fn stdin(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        encode_stream(STDIN, data, &mut self.buf);
        self.w.write_all(&self.buf).await
    }

    /// Ends the request body (the empty STDIN record).
    pub async fn finish(mut self) -> io::Result<()> {
        self.buf.clear();
        encode_record(STDIN, REQUEST_ID, &[], &mut self.buf);
        self.w.write_all(&self.buf).await?;
        self.w.flush().await
    }
}

/// The reading half: records from the application, in order.
pub struct ResponseReader {
    r: tokio::io::ReadHalf<Box<dyn Stream>>,
    buf: BytesMut,
    done: bool,
}

impl ResponseReader {
    /// The next record; `Ok(None)` after END_REQUEST. A connection closed
    /// before END_REQUEST is an `UnexpectedEof` error.
    pub async fn next(&mut self) -> io::Result<Option<Output>> {
        if self.done {
            return Ok(None);
        }
        loop {
            match decode(&mut self.buf) {
                Ok(Some(out)) => {
                    self.done = matches!(out, Output::End { .. });
                    return Ok(Some(out));
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if self.r.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "php-fpm closed the connection before the end of the response",
                ));
            }
        }
    }
}

/// Opens a request on `conn`: writes the head (begin + params) and returns
/// the two halves, so the body can be streamed while the response is read.
pub async fn start(
    conn: Box<dyn Stream>,
    params: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<(RequestWriter, ResponseReader)> {
    let (r, mut w) = tokio::io::split(conn);
    w.write_all(&encode_head(params)).await?;
    Ok((
        RequestWriter {
            w,
            buf: BytesMut::new(),
        },
        ResponseReader {
            r,
            buf: BytesMut::with_capacity(16 * 1024),
            done: false,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(kind: u8, id: u16, content: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        encode_record(kind, id, content, &mut b);
        b
    }

    #[test]
    fn records_are_padded_to_eight() {
        let b = record(STDOUT, 1, b"hello");
        assert_eq!(b.len(), 16);
        assert_eq!(&b[..8], &[1, STDOUT, 0, 1, 0, 5, 3, 0]);
    }

    #[test]
    fn params_use_short_and_long_lengths() {
        let long = vec![b'v'; 200];
        let enc = encode_params(&[(b"A".to_vec(), long.clone())]);
        assert_eq!(enc[0], 1);
        assert_eq!(&enc[1..5], &(200u32 | 0x8000_0000).to_be_bytes());
        assert_eq!(&enc[5..6], b"A");
        assert_eq!(&enc[6..], &long[..]);
    }

    #[test]
    fn decode_needs_whole_records_and_skips_others() {
        let mut b = record(STDOUT, 2, b"other request");
        b.extend_from_slice(&record(STDERR, 1, b"warn"));
        let whole = b.clone();
        let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(decode(&mut partial), Ok(None));
        assert_eq!(
            decode(&mut b),
            Ok(Some(Output::Stderr(Bytes::from_static(b"warn"))))
        );
        assert!(b.is_empty());
        let mut end = record(END_REQUEST, 1, &[0, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!(
            decode(&mut end),
            Ok(Some(Output::End {
                app_status: 7,
                protocol_status: 0
            }))
        );
        let mut bad = record(STDOUT, 1, b"x");
        bad[0] = 9;
        assert_eq!(decode(&mut bad), Err(CodecError::Version(9)));
    }

    proptest! {
        #[test]
        fn stdout_stream_roundtrips(data in proptest::collection::vec(any::<u8>(), 0..200_000), cut in 0usize..64) {
            let mut wire = BytesMut::new();
            encode_stream(STDOUT, &data, &mut wire);
            // Feed in pieces of arbitrary size; decoding must reassemble.
            let step = cut + 1;
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(step * 997) {
                buf.extend_from_slice(piece);
                while let Some(Output::Stdout(b)) = decode(&mut buf).unwrap() {
                    got.extend_from_slice(&b);
                }
            }
            prop_assert_eq!(got, data);
        }
    }
}
