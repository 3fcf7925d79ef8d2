//! The FastCGI 1.0 wire format, with no I/O: records, name-value pairs and
//! the PARAMS re-framer php-fpm needs (DESIGN §7).
//!
//! "Need more bytes" is `Ok(None)`, not an error. Decoding splits whole
//! records off a `BytesMut` without copying their content.

use bytes::{BufMut, Bytes, BytesMut};

/// The only protocol version there is.
pub const VERSION: u8 = 1;
/// Size of a record header.
pub const HEADER_LEN: usize = 8;
/// Largest content (and, for php-fpm, content + padding) of one record.
pub const MAX_CONTENT: usize = 65535;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;
pub const DATA: u8 = 8;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

pub const ROLE_RESPONDER: u16 = 1;
pub const FLAG_KEEP_CONN: u8 = 1;

pub const REQUEST_COMPLETE: u8 = 0;
pub const CANT_MPX_CONN: u8 = 1;
pub const OVERLOADED: u8 = 2;
pub const UNKNOWN_ROLE: u8 = 3;

/// Input that is not FastCGI; the connection it came on cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("unsupported FastCGI version {0}")]
    BadVersion(u8),
    #[error("a name-value pair's length runs past the end of its data")]
    BadPairLength,
}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub request_id: u16,
    pub content_len: u16,
    pub padding_len: u8,
}

impl Header {
    /// Parses 8 bytes; only version 1 is accepted.
    pub fn parse(b: &[u8]) -> Result<Header, CodecError> {
        if b[0] != VERSION {
            return Err(CodecError::BadVersion(b[0]));
        }
        Ok(Header {
            kind: b[1],
            request_id: u16::from_be_bytes([b[2], b[3]]),
            content_len: u16::from_be_bytes([b[4], b[5]]),
            padding_len: b[6],
        })
    }

    /// The whole record: header, content and padding.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.content_len as usize + self.padding_len as usize
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let id = self.request_id.to_be_bytes();
        let len = self.content_len.to_be_bytes();
        [
            VERSION,
            self.kind,
            id[0],
            id[1],
            len[0],
            len[1],
            self.padding_len,
            0,
        ]
    }
}

/// One decoded record; padding already dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub request_id: u16,
    pub content: Bytes,
}

/// The header of the first record in `buf` and its whole length, once the
/// whole record (padding included) is there.
pub fn peek_frame(buf: &[u8]) -> Result<Option<(Header, usize)>, CodecError> {
    if buf.len() < HEADER_LEN {
        // A wrong version is visible from the first byte; say so at once.
        if let Some(&v) = buf.first()
            && v != VERSION
        {
            return Err(CodecError::BadVersion(v));
        }
        return Ok(None);
    }
    let h = Header::parse(&buf[..HEADER_LEN])?;
    let n = h.frame_len();
    Ok((buf.len() >= n).then_some((h, n)))
}

/// Splits the first whole record off `buf`.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Record>, CodecError> {
    let Some((h, n)) = peek_frame(buf)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(n);
    let _ = frame.split_to(HEADER_LEN);
    frame.truncate(h.content_len as usize);
    Ok(Some(Record {
        kind: h.kind,
        request_id: h.request_id,
        content: frame.freeze(),
    }))
}

/// Rewrites the request id of the record whose header starts `frame`.
pub fn set_request_id(frame: &mut [u8], id: u16) {
    frame[2..4].copy_from_slice(&id.to_be_bytes());
}

/// Appends one record (no padding).
///
/// Content longer than [`MAX_CONTENT`] is never written with a truncated
/// length (that would desynchronise the peer): it is split into consecutive
/// records of the same type, which is right for the stream types (PARAMS,
/// STDIN, STDOUT, STDERR, DATA). Callers building a single-record type
/// (GET_VALUES_RESULT, END_REQUEST...) keep their content within one record
/// themselves; this is only the last guard.
pub fn encode(out: &mut BytesMut, kind: u8, request_id: u16, content: &[u8]) {
    if content.len() > MAX_CONTENT {
        return encode_stream(out, kind, request_id, content);
    }
    put_header(out, kind, request_id, content.len());
    out.put_slice(content);
}

/// Appends a record header for `content_len` bytes of content, no padding.
///
/// # Panics
/// When `content_len` exceeds [`MAX_CONTENT`]: a wrong length on the wire
/// cannot be taken back, a panic ends only the task that made it.
pub fn put_header(out: &mut BytesMut, kind: u8, request_id: u16, content_len: usize) {
    out.put_slice(&header(kind, request_id, content_len));
}

/// The header of a record of `content_len` bytes, no padding (panics as
/// [`put_header`]).
pub fn header(kind: u8, request_id: u16, content_len: usize) -> [u8; HEADER_LEN] {
    let content_len = u16::try_from(content_len)
        .unwrap_or_else(|_| panic!("FastCGI record content of {content_len} bytes"));
    Header {
        kind,
        request_id,
        content_len,
        padding_len: 0,
    }
    .to_bytes()
}

/// Appends `content` as a stream of records of at most `MAX_CONTENT` bytes
/// (no terminator).
pub fn encode_stream(out: &mut BytesMut, kind: u8, request_id: u16, content: &[u8]) {
    for chunk in content.chunks(MAX_CONTENT) {
        encode(out, kind, request_id, chunk);
    }
}

/// Appends FCGI_BEGIN_REQUEST.
pub fn encode_begin(out: &mut BytesMut, request_id: u16, role: u16, flags: u8) {
    out.put_slice(&begin_record(request_id, role, flags));
}

/// The whole FCGI_BEGIN_REQUEST record, for writing in place.
pub fn begin_record(request_id: u16, role: u16, flags: u8) -> [u8; 2 * HEADER_LEN] {
    let mut rec = [0u8; 2 * HEADER_LEN];
    rec[..HEADER_LEN].copy_from_slice(&header(BEGIN_REQUEST, request_id, HEADER_LEN));
    rec[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&role.to_be_bytes());
    rec[HEADER_LEN + 2] = flags;
    rec
}

/// Appends FCGI_END_REQUEST.
pub fn encode_end(out: &mut BytesMut, request_id: u16, app_status: u32, protocol_status: u8) {
    let a = app_status.to_be_bytes();
    encode(
        out,
        END_REQUEST,
        request_id,
        &[a[0], a[1], a[2], a[3], protocol_status, 0, 0, 0],
    );
}

/// Appends FCGI_UNKNOWN_TYPE for a management record of type `kind`.
pub fn encode_unknown_type(out: &mut BytesMut, kind: u8) {
    encode(out, UNKNOWN_TYPE, 0, &[kind, 0, 0, 0, 0, 0, 0, 0]);
}

/// The body of FCGI_BEGIN_REQUEST: (role, flags), or None when it is not 8 bytes.
pub fn parse_begin(content: &[u8]) -> Option<(u16, u8)> {
    (content.len() == 8).then(|| (u16::from_be_bytes([content[0], content[1]]), content[2]))
}

/// The protocol status of an FCGI_END_REQUEST body (reserved bytes ignored).
pub fn end_protocol_status(content: &[u8]) -> Option<u8> {
    content.get(4).copied()
}

/// Appends a name-value pair with 1- or 4-byte lengths.
pub fn put_pair(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    put_len(out, name.len());
    put_len(out, value.len());
    out.put_slice(name);
    out.put_slice(value);
}

fn put_len(out: &mut BytesMut, n: usize) {
    if n < 128 {
        out.put_u8(n as u8);
    } else {
        out.put_u32(n as u32 | 0x8000_0000);
    }
}

/// Encoded size of a pair.
pub fn pair_len(name: &[u8], value: &[u8]) -> usize {
    let l = |n: usize| if n < 128 { 1 } else { 4 };
    l(name.len()) + l(value.len()) + name.len() + value.len()
}

/// Iterates the pairs of a complete PARAMS (or GET_VALUES) stream.
pub fn pairs(data: &[u8]) -> Pairs<'_> {
    Pairs { data }
}

/// Iterator over name-value pairs; yields one error and stops on bad lengths.
pub struct Pairs<'a> {
    data: &'a [u8],
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let r = split_pair(self.data);
        match r {
            Some((name, value, rest)) => {
                self.data = rest;
                Some(Ok((name, value)))
            }
            None => {
                self.data = &[];
                Some(Err(CodecError::BadPairLength))
            }
        }
    }
}

fn split_pair(d: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (nl, d) = take_len(d)?;
    let (vl, d) = take_len(d)?;
    if d.len() < nl.checked_add(vl)? {
        return None;
    }
    let (name, d) = d.split_at(nl);
    let (value, rest) = d.split_at(vl);
    Some((name, value, rest))
}

fn take_len(d: &[u8]) -> Option<(usize, &[u8])> {
    let first = *d.first()?;
    if first < 128 {
        return Some((first as usize, &d[1..]));
    }
    let b = d.get(..4)?;
    let n = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
    Some((n, &d[4..]))
}

/// A pair php-fpm cannot take: pairs are parsed record by record there, so one
/// must fit whole in a single record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReframeError {
    #[error("a parameter of {0} bytes does not fit in one FastCGI record")]
    PairTooLarge(usize),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Re-frames a complete PARAMS stream for php-fpm: whole pairs per record,
/// content ≤ 65535 (no padding), then the empty terminator record.
pub fn reframe_params(
    out: &mut BytesMut,
    request_id: u16,
    params: &[u8],
) -> Result<(), ReframeError> {
    if params.len() <= MAX_CONTENT {
        // Check every pair (lengths must be sound) then send all in one record.
        for p in pairs(params) {
            p?;
        }
        if !params.is_empty() {
            encode(out, PARAMS, request_id, params);
        }
        encode(out, PARAMS, request_id, &[]);
        return Ok(());
    }
    let mut start = 0;
    let mut rest = params;
    let mut len = 0;
    while !rest.is_empty() {
        let (name, value, tail) = split_pair(rest).ok_or(CodecError::BadPairLength)?;
        let n = pair_len(name, value);
        if n > MAX_CONTENT {
            return Err(ReframeError::PairTooLarge(n));
        }
        if len + n > MAX_CONTENT {
            encode(out, PARAMS, request_id, &params[start..start + len]);
            start += len;
            len = 0;
        }
        len += n;
        rest = tail;
    }
    if len > 0 {
        encode(out, PARAMS, request_id, &params[start..start + len]);
    }
    encode(out, PARAMS, request_id, &[]);
    Ok(())
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
