//! `Range` requests on static files (RFC 9110 §14): one byte range, open
//! (`bytes=N-`) or suffix (`bytes=-N`), answered 206; a range past the end
//! 416; several ranges, or a `Range` the client sent with an `If-Range`
//! that no longer matches, the whole file (200), which the RFC allows.
//!
//! Pure: headers in, a decision out.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderMap};

/// How to answer a GET of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200, the whole file.
    Whole,
    /// 206, bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416, `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// The answer to `req`'s `Range` (and `If-Range`) for a file of `len`
/// bytes whose validators are `etag` and `mtime`.
pub fn answer(req: &HeaderMap, len: u64, etag: &str, mtime: SystemTime) -> Answer {
    let Some(range) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Answer::Whole;
    };
    if let Some(if_range) = req.get(header::IF_RANGE) {
        let current = if_range
            .to_str()
            .ok()
            .is_some_and(|v| if_range_matches(v.trim(), etag, mtime));
        if !current {
            return Answer::Whole;
        }
    }
    parse(range, len)
}

/// `If-Range` holds a strong ETag (compared strongly) or an HTTP date
/// (equal to the file's, to the second).
fn if_range_matches(value: &str, etag: &str, mtime: SystemTime) -> bool {
    if value.starts_with('"') {
        return value == etag;
    }
    if value.starts_with("W/") {
        return false;
    }
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok();
    httpdate::parse_http_date(value)
        .ok()
        .is_some_and(|d| secs(d).is_some() && secs(d) == secs(mtime))
}

/// Parses a `Range` value against a length. Anything it does not
/// understand (another unit, a syntax error) is ignored, as the RFC says:
/// the whole file.
pub fn parse(value: &str, len: u64) -> Answer {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Answer::Whole;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return Answer::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Answer::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(last) {
            Some(0) => Answer::Unsatisfiable,
            Some(_) if len == 0 => Answer::Unsatisfiable,
            Some(n) => Answer::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => Answer::Whole,
        },
        // bytes=N- and bytes=N-M.
        (false, _) => {
            let Some(start) = num(first) else {
                return Answer::Whole;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match num(last) {
                    Some(e) if e >= start => e,
                    _ => return Answer::Whole,
                }
            };
            if start >= len {
                Answer::Unsatisfiable
            } else {
                Answer::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        (true, true) => Answer::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn single_ranges() {
        let p = |v: &str| parse(v, 1000);
        assert_eq!(p("bytes=0-99"), Answer::Partial { start: 0, end: 99 });
        assert_eq!(
            p("bytes=500-"),
            Answer::Partial {
                start: 500,
                end: 999
            }
        );
        assert_eq!(
            p("bytes=-100"),
            Answer::Partial {
                start: 900,
                end: 999
            }
        );
        assert_eq!(p("bytes=-5000"), Answer::Partial { start: 0, end: 999 });
        assert_eq!(
            p("bytes=990-2000"),
            Answer::Partial {
                start: 990,
                end: 999
            }
        );
        assert_eq!(p("bytes=1000-"), Answer::Unsatisfiable);
        assert_eq!(p("bytes=-0"), Answer::Unsatisfiable);
        assert_eq!(parse("bytes=-1", 0), Answer::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Answer::Unsatisfiable);
    }

    #[test]
    fn what_is_not_understood_gets_the_whole_file() {
        for v in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes 0-1",
        ] {
            assert_eq!(parse(v, 1000), Answer::Whole, "{v}");
        }
    }

    #[test]
    fn if_range() {
        let mtime = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, "bytes=0-9".parse().unwrap());
        let partial = Answer::Partial { start: 0, end: 9 };
        assert_eq!(answer(&h, 100, "\"t\"", mtime), partial);
        h.insert(header::IF_RANGE, "\"t\"".parse().unwrap());
        assert_eq!(answer(&h, 100, "\"t\"", mtime), partial);
        h.insert(header::IF_RANGE, "\"old\"".parse().unwrap());
        assert_eq!(answer(&h, 100, "\"t\"", mtime), Answer::Whole);
        h.insert(header::IF_RANGE, "W/\"t\"".parse().unwrap());
        assert_eq!(answer(&h, 100, "\"t\"", mtime), Answer::Whole);
        let date = httpdate::fmt_http_date(mtime);
        h.insert(header::IF_RANGE, date.parse().unwrap());
        assert_eq!(answer(&h, 100, "\"t\"", mtime), partial);
        let older = httpdate::fmt_http_date(mtime - Duration::from_secs(1));
        h.insert(header::IF_RANGE, older.parse().unwrap());
        assert_eq!(answer(&h, 100, "\"t\"", mtime), Answer::Whole);
    }
}
