//! A request's head for php-fpm (BEGIN_REQUEST, the PARAMS stream and, for a
//! bodyless request, the empty STDIN) collected in one buffer straight from
//! the client's PARAMS records, charged against the buffer budgets, and what
//! tqsup reads from the params, in one pass.

use bytes::{BufMut, BytesMut};

use crate::fcgi::codec::{self, CodecError, HEADER_LEN, MAX_CONTENT, ReframeError};
use crate::fcgi::listener::Charge;

/// BEGIN_REQUEST (header + body) then the header of the one PARAMS record
/// the params go in when they fit (nearly always).
const PREFIX: usize = 3 * HEADER_LEN;
/// Room kept at the end for the empty PARAMS and the empty STDIN records.
const TAIL: usize = 2 * HEADER_LEN;

/// Which budget a PARAMS record did not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The connection's own (`params_buffer_bytes`): 431.
    Connection,
    /// The one shared by all connections (`params_buffer_total_bytes`): 503.
    Global,
}

/// The head being collected. Its capacity is what is charged.
#[derive(Debug, Default)]
pub struct Head {
    buf: BytesMut,
    /// The params are framed for php-fpm (PARAMS ended).
    framed: bool,
}

/// A buffer kept for the connection's next head is at most this big (an
/// idle connection holds it).
pub const KEEP_FOR_REUSE: usize = 8 * 1024;

impl Head {
    /// A head collected in `buf` (a finished request's, cleared), so a
    /// connection's requests reuse one allocation. Its capacity is charged
    /// up front; a buffer the budgets cannot take is dropped.
    pub fn reusing(mut buf: BytesMut, room: usize, charge: &mut Charge) -> Head {
        buf.clear();
        let cap = buf.capacity();
        if !(PREFIX + TAIL..=KEEP_FOR_REUSE.min(room)).contains(&cap) || !charge.grow(cap) {
            return Head::default();
        }
        buf.put_bytes(0, PREFIX);
        Head { buf, framed: false }
    }

    /// The params collected so far (the content of the PARAMS stream).
    pub fn params(&self) -> &[u8] {
        self.buf.get(PREFIX..).unwrap_or(&[])
    }

    /// Appends a PARAMS record's content. `room` is what the connection's
    /// budget has left; growth is also charged to the global budget.
    pub fn push(&mut self, content: &[u8], room: usize, charge: &mut Charge) -> Result<(), Over> {
        let needed = self.buf.len().max(PREFIX) + content.len() + TAIL;
        let cap = self.buf.capacity();
        if needed > cap {
            if needed - cap > room {
                return Err(Over::Connection);
            }
            // Double (amortised growth) but never past what the budget allows;
            // one copy per growth, like a Vec.
            let new_cap = needed.max(cap * 2).min(cap + room);
            if !charge.grow(new_cap - cap) {
                return Err(Over::Global);
            }
            let mut b = BytesMut::with_capacity(new_cap);
            if self.buf.is_empty() {
                b.put_bytes(0, PREFIX);
            } else {
                b.extend_from_slice(&self.buf);
            }
            self.buf = b;
        }
        self.buf.extend_from_slice(content);
        Ok(())
    }

    /// The PARAMS stream ended: frames the params for php-fpm (request id 1,
    /// KEEP_CONN). In place when they fit one record; otherwise re-framed
    /// into a new buffer, whole pairs per record (the charge follows).
    pub fn frame(&mut self, charge: &mut Charge) -> Result<(), ReframeError> {
        if self.buf.is_empty() {
            self.buf.reserve(PREFIX + TAIL);
            self.buf.put_bytes(0, PREFIX);
            charge.set(self.buf.capacity());
        }
        let begin = codec::begin_record(1, codec::ROLE_RESPONDER, codec::FLAG_KEEP_CONN);
        let n = self.buf.len() - PREFIX;
        if n <= MAX_CONTENT {
            self.buf[..2 * HEADER_LEN].copy_from_slice(&begin);
            self.buf[2 * HEADER_LEN..PREFIX].copy_from_slice(&codec::header(codec::PARAMS, 1, n));
            if n > 0 {
                codec::put_header(&mut self.buf, codec::PARAMS, 1, 0);
            }
        } else {
            // Each record costs a header; a pair is at most MAX_CONTENT, so
            // records are at least half full.
            let records = n / (MAX_CONTENT / 2) + 2;
            let mut out = BytesMut::with_capacity(2 * HEADER_LEN + n + records * HEADER_LEN + TAIL);
            out.put_slice(&begin);
            codec::reframe_params(&mut out, 1, self.params())?;
            charge.set(out.capacity());
            self.buf = out;
        }
        self.framed = true;
        Ok(())
    }

    /// The framed head for the request's exchange, with the empty STDIN when
    /// the request has no body.
    pub fn finish(mut self, stdin_end: bool) -> BytesMut {
        debug_assert!(self.framed);
        if stdin_end {
            codec::put_header(&mut self.buf, codec::STDIN, 1, 0);
        }
        self.buf
    }
}

/// What tqsup reads from a request's params.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParamsSeen<'a> {
    pub content_length: &'a [u8],
    pub method: &'a [u8],
    /// For `forward.lanes` and the access log.
    pub script_name: &'a [u8],
    pub request_uri: &'a [u8],
    /// For the access log.
    pub remote_addr: &'a [u8],
}

/// One pass over the pairs of a complete PARAMS stream (which also checks
/// that every length is sound).
pub fn read_params(params: &[u8]) -> Result<ParamsSeen<'_>, CodecError> {
    let mut seen = ParamsSeen::default();
    for p in codec::pairs(params) {
        let (n, v) = p?;
        match n {
            b"CONTENT_LENGTH" => seen.content_length = v,
            b"REQUEST_METHOD" => seen.method = v,
            b"SCRIPT_NAME" => seen.script_name = v,
            b"REQUEST_URI" => seen.request_uri = v,
            b"REMOTE_ADDR" => seen.remote_addr = v,
            _ => {}
        }
    }
    Ok(seen)
}

/// CONTENT_LENGTH: absent or empty is `None` (same as `0` on a bodyless
/// request); anything but a whole number is an error.
pub fn content_length(v: &[u8]) -> Result<Option<u64>, ()> {
    let t = std::str::from_utf8(v).map_err(|_| ())?.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse().map(Some).map_err(|_| ())
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
