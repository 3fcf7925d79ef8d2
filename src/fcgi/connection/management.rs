//! Management records (request id 0) tqsup answers itself: GET_VALUES
//! with the truth about this listener, UNKNOWN_TYPE for the rest.

use bytes::BytesMut;

use super::{Conn, MAX_REQUESTS_PER_CONN, ProtocolError, perr};
use crate::fcgi::codec;

impl Conn {
    pub(super) fn management(&mut self, kind: u8, content: &[u8]) -> Result<(), ProtocolError> {
        match kind {
            codec::GET_VALUES => {
                // Each known name answered once, whatever the query repeats:
                // the answer always fits one record.
                let mut want = [false; 3];
                for p in codec::pairs(content) {
                    let (name, _) = p.map_err(|e| ProtocolError(e.to_string()))?;
                    match name {
                        b"FCGI_MAX_CONNS" => want[0] = true,
                        b"FCGI_MAX_REQS" => want[1] = true,
                        b"FCGI_MPXS_CONNS" => want[2] = true,
                        _ => {}
                    }
                }
                let values = [
                    (&b"FCGI_MAX_CONNS"[..], self.ctx.max_connections.to_string()),
                    (b"FCGI_MAX_REQS", MAX_REQUESTS_PER_CONN.to_string()),
                    (b"FCGI_MPXS_CONNS", "1".to_string()),
                ];
                let mut res = BytesMut::new();
                for ((name, value), wanted) in values.iter().zip(want) {
                    if wanted {
                        codec::put_pair(&mut res, name, value.as_bytes());
                    }
                }
                codec::encode(&mut self.out, codec::GET_VALUES_RESULT, 0, &res);
                Ok(())
            }
            codec::BEGIN_REQUEST..=codec::DATA => {
                perr(format!("record type {kind} on request id 0"))
            }
            _ => {
                codec::encode_unknown_type(&mut self.out, kind);
                Ok(())
            }
        }
    }
}
