//! A CGI response head (`Status:`, `Location`, headers) parsed from the
//! start of php-fpm's STDOUT into a status and header list: the one parser
//! the dev HTTP front and tqsup's own requests (ping, status page) share.
//! Pure: no I/O.

use hyper::StatusCode;

/// A parsed CGI response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: StatusCode,
    /// Headers in order, `Status` removed.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A CGI response head that can't be turned into HTTP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("the response head is larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed header line {0:?}")]
    BadLine(String),
    #[error("bad Status header {0:?}")]
    BadStatus(String),
}

/// The largest CGI response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// Parses the head at the start of `buf` (the response so far). `Ok(None)`:
/// the blank line ending it has not arrived yet. `Ok(Some((head, n)))`: the
/// body starts at `buf[n..]`.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let Some((end, body_at)) = find_blank_line(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge(MAX_HEAD));
        }
        return Ok(None);
    };
    if end > MAX_HEAD {
        return Err(HeadError::TooLarge(MAX_HEAD));
    }
    let mut status = None;
    let mut headers = Vec::new();
    for line in buf[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let lossy = || String::from_utf8_lossy(line).into_owned();
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| HeadError::BadLine(lossy()))?;
        let name = std::str::from_utf8(&line[..colon])
            .ok()
            .map(str::trim)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| HeadError::BadLine(lossy()))?;
        let value = line[colon + 1..].trim_ascii().to_vec();
        if name.eq_ignore_ascii_case("status") {
            let text = String::from_utf8_lossy(&value).into_owned();
            let code = text
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or(HeadError::BadStatus(text))?;
            status = Some(code);
        } else {
            headers.push((name.to_string(), value));
        }
    }
    // CGI: a Location with no Status is a redirect.
    let status = status.unwrap_or_else(|| {
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("location"))
        {
            StatusCode::FOUND
        } else {
            StatusCode::OK
        }
    });
    Ok(Some((Head { status, headers }, body_at)))
}

/// Where the head ends: (end of the header lines, start of the body).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + nl;
        let next = &buf[at + 1..];
        if next.starts_with(b"\n") {
            return Some((at, at + 2));
        }
        if next.starts_with(b"\r\n") {
            return Some((at, at + 3));
        }
        if next.is_empty() || next == b"\r" {
            return None;
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_with_status_and_body() {
        let buf = b"Status: 404 Not Found\r\nContent-type: text/html\r\nX-A:  b \r\n\r\nbody";
        let (head, at) = parse_head(buf).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert_eq!(
            head.headers,
            vec![
                ("Content-type".to_string(), b"text/html".to_vec()),
                ("X-A".to_string(), b"b".to_vec())
            ]
        );
        assert_eq!(&buf[at..], b"body");
    }

    #[test]
    fn location_without_status_is_302() {
        let (head, at) = parse_head(b"Location: /x\n\n").unwrap().unwrap();
        assert_eq!(head.status, StatusCode::FOUND);
        assert_eq!(at, 14);
        let (head, _) = parse_head(b"Status: 301\r\nLocation: /y\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::MOVED_PERMANENTLY);
    }

    #[test]
    fn incomplete_and_bad_heads() {
        assert_eq!(parse_head(b"Content-type: text/html\r\n"), Ok(None));
        assert_eq!(parse_head(b"Content-type: text/html\r\n\r"), Ok(None));
        assert_eq!(parse_head(b""), Ok(None));
        assert!(matches!(
            parse_head(b"no colon\r\n\r\n"),
            Err(HeadError::BadLine(_))
        ));
        assert!(matches!(
            parse_head(b"Status: abc\r\n\r\n"),
            Err(HeadError::BadStatus(_))
        ));
        let big = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse_head(&big), Err(HeadError::TooLarge(MAX_HEAD)));
    }
}
