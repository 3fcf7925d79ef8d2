//! The CGI/1.1 side of the dev HTTP front: the FastCGI parameters for a
//! request (the response head is parsed by `fcgi::cgi_head`). Pure: no I/O.

use std::net::SocketAddr;
use std::path::Path;

use hyper::HeaderMap;

/// A PHP script chosen by routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// URL path of the script, e.g. `/index.php`.
    pub script_name: String,
    /// Decoded rest of the URL after the script, e.g. `/blog/42`; may be empty.
    pub path_info: String,
}

/// What the parameters are built from.
pub struct RequestInfo<'a> {
    pub method: &'a str,
    /// The path as received (still percent-encoded).
    pub raw_path: &'a str,
    /// The query string without `?` (empty when none).
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The body length, when known (sent as CONTENT_LENGTH).
    pub content_length: Option<u64>,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub document_root: &'a Path,
    pub script: &'a Script,
}

fn pair(out: &mut Vec<(Vec<u8>, Vec<u8>)>, name: &str, value: impl AsRef<[u8]>) {
    out.push((name.as_bytes().to_vec(), value.as_ref().to_vec()));
}

/// The FastCGI parameters for one request, as nginx's `fastcgi_params`
/// plus a front controller's SCRIPT_NAME/PATH_INFO split would set them.
pub fn params(req: &RequestInfo<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut p = Vec::with_capacity(32 + req.headers.len());
    let root = req.document_root.to_string_lossy();
    let root = root.trim_end_matches('/');
    let request_uri = if req.query.is_empty() {
        req.raw_path.to_string()
    } else {
        format!("{}?{}", req.raw_path, req.query)
    };
    pair(&mut p, "GATEWAY_INTERFACE", "CGI/1.1");
    pair(
        &mut p,
        "SERVER_SOFTWARE",
        concat!("tqsup/", env!("CARGO_PKG_VERSION")),
    );
    pair(&mut p, "SERVER_PROTOCOL", "HTTP/1.1");
    pair(&mut p, "REQUEST_SCHEME", "http");
    pair(&mut p, "REQUEST_METHOD", req.method);
    pair(&mut p, "REQUEST_URI", &request_uri);
    pair(&mut p, "QUERY_STRING", req.query);
    pair(&mut p, "DOCUMENT_ROOT", root);
    pair(&mut p, "SCRIPT_NAME", &req.script.script_name);
    pair(
        &mut p,
        "SCRIPT_FILENAME",
        format!("{root}{}", req.script.script_name),
    );
    pair(
        &mut p,
        "DOCUMENT_URI",
        format!("{}{}", req.script.script_name, req.script.path_info),
    );
    if !req.script.path_info.is_empty() {
        pair(&mut p, "PATH_INFO", &req.script.path_info);
        pair(
            &mut p,
            "PATH_TRANSLATED",
            format!("{root}{}", req.script.path_info),
        );
    }
    if let Some(ct) = req.headers.get(hyper::header::CONTENT_TYPE) {
        pair(&mut p, "CONTENT_TYPE", ct.as_bytes());
    }
    if let Some(len) = req.content_length {
        pair(&mut p, "CONTENT_LENGTH", len.to_string());
    }
    pair(&mut p, "REMOTE_ADDR", req.remote.ip().to_string());
    pair(&mut p, "REMOTE_PORT", req.remote.port().to_string());
    pair(&mut p, "SERVER_ADDR", req.local.ip().to_string());
    pair(&mut p, "SERVER_PORT", req.local.port().to_string());
    let host = req
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(strip_port)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| req.local.ip().to_string());
    pair(&mut p, "SERVER_NAME", host);
    // php-cgi with cgi.force_redirect wants it; harmless for php-fpm.
    pair(&mut p, "REDIRECT_STATUS", "200");
    for name in req.headers.keys() {
        let n = name.as_str();
        // CONTENT_* are sent above; `Proxy` would become HTTP_PROXY
        // (httpoxy); a name with `_` could impersonate one with `-`.
        if n == "content-type" || n == "content-length" || n == "proxy" || n.contains('_') {
            continue;
        }
        let sep: &[u8] = if n == "cookie" { b"; " } else { b", " };
        let mut value = Vec::new();
        for (i, v) in req.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(sep);
            }
            value.extend_from_slice(v.as_bytes());
        }
        let key = format!("HTTP_{}", n.to_ascii_uppercase().replace('-', "_"));
        p.push((key.into_bytes(), value));
    }
    p
}

/// `host` or `host:port` or `[v6]:port` → the host part.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

pub use crate::fcgi::cgi_head::{Head, parse_head};

#[cfg(test)]
mod tests {
    use super::*;

    fn info_params(headers: &HeaderMap, script: &Script, query: &str) -> Vec<(String, String)> {
        let req = RequestInfo {
            method: "POST",
            raw_path: "/blog/4%202",
            query,
            headers,
            content_length: Some(5),
            remote: "127.0.0.1:5555".parse().unwrap(),
            local: "127.0.0.1:8000".parse().unwrap(),
            document_root: Path::new("/srv/app/public/"),
            script,
        };
        params(&req)
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
        p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn front_controller_params() {
        let mut h = HeaderMap::new();
        h.insert("host", "localhost:8000".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        h.append("x-thing", "a".parse().unwrap());
        h.append("x-thing", "b".parse().unwrap());
        h.append("cookie", "a=1".parse().unwrap());
        h.append("cookie", "b=2".parse().unwrap());
        h.insert("proxy", "http://evil".parse().unwrap());
        h.insert("x_under", "1".parse().unwrap());
        let s = Script {
            script_name: "/index.php".into(),
            path_info: "/blog/4 2".into(),
        };
        let p = info_params(&h, &s, "x=1");
        assert_eq!(get(&p, "SCRIPT_NAME"), Some("/index.php"));
        assert_eq!(
            get(&p, "SCRIPT_FILENAME"),
            Some("/srv/app/public/index.php")
        );
        assert_eq!(get(&p, "DOCUMENT_ROOT"), Some("/srv/app/public"));
        assert_eq!(get(&p, "PATH_INFO"), Some("/blog/4 2"));
        assert_eq!(get(&p, "REQUEST_URI"), Some("/blog/4%202?x=1"));
        assert_eq!(get(&p, "QUERY_STRING"), Some("x=1"));
        assert_eq!(get(&p, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(get(&p, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&p, "CONTENT_LENGTH"), Some("5"));
        assert_eq!(get(&p, "SERVER_NAME"), Some("localhost"));
        assert_eq!(get(&p, "SERVER_PORT"), Some("8000"));
        assert_eq!(get(&p, "REMOTE_PORT"), Some("5555"));
        assert_eq!(get(&p, "HTTP_HOST"), Some("localhost:8000"));
        assert_eq!(get(&p, "HTTP_X_THING"), Some("a, b"));
        assert_eq!(get(&p, "HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get(&p, "HTTP_PROXY"), None);
        assert_eq!(get(&p, "HTTP_X_UNDER"), None);
        assert_eq!(get(&p, "HTTP_CONTENT_TYPE"), None);
    }

    #[test]
    fn direct_script_has_no_path_info() {
        let s = Script {
            script_name: "/info.php".into(),
            path_info: String::new(),
        };
        let p = info_params(&HeaderMap::new(), &s, "");
        assert_eq!(get(&p, "PATH_INFO"), None);
        assert_eq!(get(&p, "QUERY_STRING"), Some(""));
        assert_eq!(get(&p, "REQUEST_URI"), Some("/blog/4%202"));
        assert_eq!(get(&p, "SERVER_NAME"), Some("127.0.0.1"));
    }

    #[test]
    fn strip_port_handles_v6() {
        assert_eq!(strip_port("[::1]:8000"), "::1");
        assert_eq!(strip_port("example.test"), "example.test");
        assert_eq!(strip_port("example.test:80"), "example.test");
    }
}
