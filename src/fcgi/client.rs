//! tqsup's one FastCGI client, for its own requests to php-fpm: the dev
//! HTTP front (streaming) and the ping and status page ([`super::probe`],
//! read whole). One request per connection (responder role, no
//! keep-alive), parameters and stdin written as they come, stdout/stderr
//! read record by record, all framed by `fcgi::codec`.
//!
//! The codec half (`encode_*`, [`decode`]) does no I/O; [`Connection`] owns
//! the socket and runs the read→decode loop.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::Endpoint;
use crate::fcgi::codec::{self, END_REQUEST, STDERR, STDIN, STDOUT};

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
    #[error(transparent)]
    Record(#[from] codec::CodecError),
    #[error("FCGI_END_REQUEST body is {0} bytes, expected 8")]
    EndLength(usize),
}

/// The whole request head: BEGIN_REQUEST, the PARAMS records (whole pairs
/// per record, as php-fpm needs), the empty PARAMS. Framing is the one
/// codec's (`fcgi::codec`).
pub fn encode_head(params: &[(Vec<u8>, Vec<u8>)]) -> Result<BytesMut, codec::ReframeError> {
    let mut out = BytesMut::new();
    codec::encode_begin(&mut out, REQUEST_ID, codec::ROLE_RESPONDER, 0);
    let mut pairs = BytesMut::new();
    for (name, value) in params {
        codec::put_pair(&mut pairs, name, value);
    }
    codec::reframe_params(&mut out, REQUEST_ID, &pairs)?;
    Ok(out)
}

/// Decodes one record from the front of `buf`. `Ok(None)`: need more bytes.
/// Records this client has no use for (other ids, management records) are
/// consumed and skipped.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Output>, CodecError> {
    while let Some(r) = codec::decode(buf)? {
        if r.request_id != REQUEST_ID {
            continue;
        }
        let content = r.content;
        match r.kind {
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
    Ok(None)
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
        codec::encode_stream(&mut self.buf, STDIN, REQUEST_ID, data);
        self.w.write_all(&self.buf).await
    }

    /// Ends the request body (the empty STDIN record).
    pub async fn finish(mut self) -> io::Result<()> {
        self.buf.clear();
        codec::encode(&mut self.buf, STDIN, REQUEST_ID, &[]);
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
    let head = encode_head(params).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let (r, mut w) = tokio::io::split(conn);
    w.write_all(&head).await?;
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
        codec::encode(&mut b, kind, id, content);
        b
    }

    #[test]
    fn head_is_begin_then_whole_pairs_then_the_terminator() {
        let long = vec![b'v'; 200];
        let mut head = encode_head(&[(b"A".to_vec(), long.clone())]).unwrap();
        let kinds: Vec<u8> = std::iter::from_fn(|| codec::decode(&mut head).unwrap())
            .map(|r| r.kind)
            .collect();
        assert_eq!(kinds, [codec::BEGIN_REQUEST, codec::PARAMS, codec::PARAMS]);
        let too_big = vec![b'x'; 70_000];
        assert!(encode_head(&[(b"BIG".to_vec(), too_big)]).is_err());
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
        assert!(matches!(decode(&mut bad), Err(CodecError::Record(_))));
    }

    proptest! {
        #[test]
        fn stdout_stream_roundtrips(data in proptest::collection::vec(any::<u8>(), 0..200_000), cut in 0usize..64) {
            let mut wire = BytesMut::new();
            codec::encode_stream(&mut wire, STDOUT, REQUEST_ID, &data);
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
