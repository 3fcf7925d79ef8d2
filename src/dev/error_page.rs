//! Dev mode's 502/503/504 pages: a small HTML page naming the cause (from
//! the status and what the supervisor says about php-fpm) and, for a 502,
//! the last php-fpm/PHP log lines, where a PHP fatal error shows up.
//!
//! Pure: the page is built from values; `php` gathers them.

use hyper::StatusCode;

use crate::fcgi::upstream::PhpFpmState;

/// Why PHP did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// php-fpm is not running (starting, or stopped).
    NotRunning,
    /// php-fpm exited or failed its liveness probe; a restart is under way.
    Restarting,
    /// Every php-fpm child stayed busy past `forward.queue_timeout_ms`, or
    /// php-fpm keeps failing (the breaker is open).
    QueueFull,
    /// PHP took longer than allowed.
    Timeout,
    /// The PHP process died (or closed the connection) before answering.
    Died,
    /// The dev front could not reach the FastCGI endpoint at all.
    Unreachable(String),
}

/// The cause of a `status` the forward listener answered with, given what
/// the supervisor says about php-fpm (None: not known, e.g. forward-only).
pub fn cause(status: StatusCode, state: Option<&PhpFpmState>) -> Cause {
    let running = state.is_none_or(PhpFpmState::is_ready);
    match (status.as_u16(), state) {
        (504, _) => Cause::Timeout,
        (_, Some(PhpFpmState::Restarting)) => Cause::Restarting,
        (_, Some(PhpFpmState::Starting | PhpFpmState::Stopped)) => Cause::NotRunning,
        (503, _) if running => Cause::QueueFull,
        _ => Cause::Died,
    }
}

impl Cause {
    fn headline(&self) -> String {
        match self {
            Cause::NotRunning => "php-fpm is not running".into(),
            Cause::Restarting => "php-fpm is restarting".into(),
            Cause::QueueFull => {
                "queue full: every php-fpm child stayed busy (forward.queue_timeout_ms), or php-fpm keeps failing its health checks".into()
            }
            Cause::Timeout => {
                "timeout: PHP did not answer in time (php_fpm.read_timeout_ms / request_timeout_ms)".into()
            }
            Cause::Died => "the PHP process died before answering (see the lines below)".into(),
            Cause::Unreachable(why) => format!("tqsup's FastCGI endpoint is not reachable: {why}"),
        }
    }
}

/// The whole HTML page.
pub fn render(status: StatusCode, cause: &Cause, lines: &[String]) -> String {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font:15px/1.4 system-ui,sans-serif;margin:2em;max-width:60em}}\
         pre{{background:#f6f6f6;padding:1em;overflow:auto;white-space:pre-wrap}}</style></head>\n\
         <body>\n<h1>{t}</h1>\n<p><strong>{h}</strong></p>\n",
        t = escape(&title),
        h = escape(&cause.headline()),
    );
    if !lines.is_empty() {
        page.push_str("<p>Last php-fpm/PHP log lines:</p>\n<pre>");
        for l in lines {
            page.push_str(&escape(l));
            page.push('\n');
        }
        page.push_str("</pre>\n");
    }
    page.push_str("<p><small>tqsup dev mode; the full log is on tqsup's stderr.</small></p>\n</body></html>\n");
    page
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(cause(s(504), None), Cause::Timeout);
        assert_eq!(cause(s(503), None), Cause::QueueFull);
        assert_eq!(cause(s(502), None), Cause::Died);
        let restarting = PhpFpmState::Restarting;
        assert_eq!(cause(s(503), Some(&restarting)), Cause::Restarting);
        assert_eq!(cause(s(502), Some(&restarting)), Cause::Restarting);
        assert_eq!(
            cause(s(502), Some(&PhpFpmState::Starting)),
            Cause::NotRunning
        );
    }

    #[test]
    fn page_names_the_cause_and_escapes_lines() {
        let page = render(
            StatusCode::BAD_GATEWAY,
            &Cause::Died,
            &["PHP Fatal error: <b>boom</b> & more".into()],
        );
        assert!(page.contains("<h1>502 Bad Gateway</h1>"), "{page}");
        assert!(page.contains("the PHP process died"), "{page}");
        assert!(
            page.contains("&lt;b&gt;boom&lt;/b&gt; &amp; more"),
            "{page}"
        );
        let page = render(StatusCode::SERVICE_UNAVAILABLE, &Cause::QueueFull, &[]);
        assert!(
            page.contains("queue full") && !page.contains("<pre>"),
            "{page}"
        );
    }
}
