//! The access log (`log.access`) and the slow-request warning
//! (`forward.slow_request_ms`): one line per forwarded request with the
//! client address as the web server sent it (REMOTE_ADDR), method,
//! REQUEST_URI, SCRIPT_NAME, status, response bytes, the time it waited
//! for a php-fpm connection, php-fpm's time and the total.
//!
//! Off by default, and then free: the request's params are copied only
//! when a line may be written.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::config::{Config, LogFormat};

/// One tracing event at `$level` with an entry's fields, written once for
/// the access line and the slow-request warning.
macro_rules! request_event {
    ($level:ident, $target:literal, $e:expr, $message:literal) => {{
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (e, i) = ($e, $e.info);
        tracing::$level!(
            target: $target,
            remote_addr = %i.remote_addr,
            method = %i.method,
            request_uri = %i.request_uri,
            script_name = %i.script_name,
            status = e.status,
            bytes = e.bytes,
            queue_ms = ms(e.queue),
            php_ms = ms(e.php),
            total_ms = ms(e.total),
            $message
        )
    }};
}

/// Where access lines go.
#[derive(Debug)]
enum Sink {
    Off,
    /// tqsup's own log (target `tqsup::access`), in its format.
    Log,
    /// A file of its own, appended to, one line per request.
    File(Mutex<std::fs::File>),
}

/// The access log and slow-request threshold of a forwarder.
#[derive(Debug)]
pub struct AccessLog {
    sink: Sink,
    /// Requests slower than this are logged as a warning (None: off).
    slow: Option<Duration>,
    json: bool,
}

/// What a line says about the request, copied from its params.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub remote_addr: String,
    pub method: String,
    pub request_uri: String,
    pub script_name: String,
}

/// One finished request.
pub struct Entry<'a> {
    pub info: &'a RequestInfo,
    /// The status the client got (0: none, e.g. aborted).
    pub status: u16,
    /// Bytes sent to the client for this request.
    pub bytes: u64,
    /// Waiting for a php-fpm connection.
    pub queue: Duration,
    /// From getting the connection to the end.
    pub php: Duration,
    pub total: Duration,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            sink: Sink::Off,
            slow: None,
            json: false,
        }
    }
}

impl AccessLog {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let sink = match &config.log.access {
            None => Sink::Off,
            Some(None) => Sink::Log,
            Some(Some(path)) => Sink::File(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening log.access {}", path.display()))?,
            )),
        };
        Ok(AccessLog {
            sink,
            slow: (!config.forward.slow_request.is_zero()).then_some(config.forward.slow_request),
            json: config.log.format == LogFormat::Json,
        })
    }

    /// Whether requests must carry their [`RequestInfo`].
    pub fn wants_info(&self) -> bool {
        !matches!(self.sink, Sink::Off) || self.slow.is_some()
    }

    /// Writes the request's line (and the slow warning).
    pub fn record(&self, e: &Entry<'_>) {
        if self.slow.is_some_and(|s| e.total > s) {
            request_event!(
                warn,
                "tqsup::fcgi::access",
                e,
                "slow request (forward.slow_request_ms)"
            );
        }
        match &self.sink {
            Sink::Off => {}
            Sink::Log => request_event!(info, "tqsup::access", e, "request"),
            Sink::File(f) => {
                let line = self.line(e, SystemTime::now());
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
        }
    }

    /// The file line: JSON with `log.format: json`, else text.
    fn line(&self, e: &Entry<'_>, now: SystemTime) -> String {
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        let i = e.info;
        let time = rfc3339(now);
        if self.json {
            let v = serde_json::json!({
                "time": time,
                "remote_addr": i.remote_addr,
                "method": i.method,
                "request_uri": i.request_uri,
                "script_name": i.script_name,
                "status": e.status,
                "bytes": e.bytes,
                "queue_ms": ms(e.queue),
                "php_ms": ms(e.php),
                "total_ms": ms(e.total),
            });
            format!("{v}\n")
        } else {
            format!(
                "{time} {} \"{} {}\" {} {} {} queue={}ms php={}ms total={}ms\n",
                or_dash(&i.remote_addr),
                or_dash(&i.method),
                or_dash(&i.request_uri),
                or_dash(&i.script_name),
                e.status,
                e.bytes,
                ms(e.queue),
                ms(e.php),
                ms(e.total),
            )
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// `2026-11-30T02:51:41.123Z` (UTC, milliseconds).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-30T00:53:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn lines_carry_every_field() {
        let info = RequestInfo {
            remote_addr: "10.0.0.7".into(),
            method: "POST".into(),
            request_uri: "/a?b=1".into(),
            script_name: "/index.php".into(),
        };
        let e = Entry {
            info: &info,
            status: 201,
            bytes: 1234,
            queue: Duration::from_micros(1500),
            php: Duration::from_millis(20),
            total: Duration::from_micros(21_600),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let text = AccessLog::default().line(&e, now);
        assert_eq!(
            text,
            "2026-11-30T00:53:20.000Z 10.0.0.7 \"POST /a?b=1\" /index.php 201 1234 queue=1.5ms php=20ms total=21.6ms\n"
        );
        let json = AccessLog {
            json: true,
            ..AccessLog::default()
        }
        .line(&e, now);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["status"], 201);
        assert_eq!(v["script_name"], "/index.php");
        assert_eq!(v["queue_ms"], 1.5);
    }
}
