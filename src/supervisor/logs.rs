//! php-fpm's stdout and stderr, line by line, into tracing (target
//! `php_fpm`, fields `stream`, `pid`, `pool`). php-fpm's own
//! `NOTICE/WARNING/ERROR/ALERT` prefixes become levels; worker output (PHP's
//! own writes to stderr, undecorated) is kept at info; lines php-fpm split
//! at `log_limit` are joined back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

/// php-fpm's `log_limit` as rendered: a longer line arrives in pieces of
/// `LOG_LIMIT - 1` bytes.
pub const LOG_LIMIT: usize = 8192;
/// The most recent lines kept to explain an exit.
const RECENT: usize = 40;
/// A joined line is cut here (a runaway worker must not eat the memory).
const MAX_JOINED: usize = 1 << 20;

/// Levels php-fpm's lines map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Splits php-fpm's `[date] LEVEL: message` into a level and the message.
/// Worker output has no prefix and is info.
pub fn classify(line: &str) -> (Level, &str) {
    let rest = crate::phpfpm_test::strip_timestamp(line);
    for (prefix, level) in [
        ("DEBUG: ", Level::Debug),
        ("NOTICE: ", Level::Info),
        ("WARNING: ", Level::Warn),
        ("ERROR: ", Level::Error),
        ("ALERT: ", Level::Error),
    ] {
        if let Some(m) = rest.strip_prefix(prefix) {
            return (level, m);
        }
    }
    (Level::Info, line.trim_end())
}

/// Joins the pieces of a line php-fpm split at `log_limit`: a piece of
/// exactly `LOG_LIMIT - 1` bytes continues on the next line.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: Vec<u8>,
}

impl Joiner {
    /// Feeds one line (without its newline); returns a whole line when done.
    pub fn push(&mut self, piece: &[u8]) -> Option<Vec<u8>> {
        let full = piece.len() == LOG_LIMIT - 1;
        if self.pending.len() < MAX_JOINED {
            self.pending.extend_from_slice(piece);
        }
        if full {
            None
        } else {
            Some(std::mem::take(&mut self.pending))
        }
    }

    /// Whatever is left at end of stream.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// What the readers of one php-fpm process share with the supervisor.
#[derive(Debug)]
pub struct LogShared {
    pub pool: String,
    pub pid: u32,
    /// The last lines, to explain an exit (exit 78's message, the holder of
    /// an address).
    recent: Mutex<VecDeque<String>>,
    /// Counts "ready to handle connections" notices: a reload is done when
    /// it moves.
    ready: watch::Sender<u64>,
}

impl LogShared {
    pub fn new(pool: String, pid: u32) -> Arc<Self> {
        Arc::new(LogShared {
            pool,
            pid,
            recent: Mutex::new(VecDeque::new()),
            ready: watch::channel(0).0,
        })
    }

    /// The recent lines, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver of the "ready to handle connections" count.
    pub fn ready_notices(&self) -> watch::Receiver<u64> {
        self.ready.subscribe()
    }

    fn record(&self, line: &str) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(line.to_string());
        }
        if line.contains("ready to handle connections") {
            self.ready.send_modify(|n| *n += 1);
        }
    }
}

/// Reads `reader` to its end, one event per line.
pub async fn stream<R: AsyncRead + Unpin>(reader: R, stream: &'static str, shared: Arc<LogShared>) {
    let mut reader = BufReader::with_capacity(2 * LOG_LIMIT, reader);
    let mut joiner = Joiner::default();
    let mut buf = Vec::with_capacity(LOG_LIMIT);
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if let Some(line) = joiner.push(&buf) {
            emit(&line, stream, &shared);
        }
    }
    if let Some(line) = joiner.finish() {
        emit(&line, stream, &shared);
    }
}

fn emit(line: &[u8], stream: &'static str, shared: &LogShared) {
    let text = String::from_utf8_lossy(line);
    if text.trim().is_empty() {
        return;
    }
    shared.record(&text);
    let (level, message) = classify(&text);
    let (pid, pool) = (shared.pid, shared.pool.as_str());
    match level {
        Level::Debug => tracing::debug!(target: "php_fpm", stream, pid, pool, "{message}"),
        Level::Info => tracing::info!(target: "php_fpm", stream, pid, pool, "{message}"),
        Level::Warn => tracing::warn!(target: "php_fpm", stream, pid, pool, "{message}"),
        Level::Error => tracing::error!(target: "php_fpm", stream, pid, pool, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_php_fpm_prefixes() {
        let table = [
            (
                "[25-Nov-2026 21:23:25] NOTICE: ready to handle connections",
                Level::Info,
                "ready to handle connections",
            ),
            (
                "[25-Nov-2026 21:23:25] WARNING: [pool www] seems busy",
                Level::Warn,
                "[pool www] seems busy",
            ),
            (
                "[25-Nov-2026 21:23:25] ERROR: unable to bind",
                Level::Error,
                "unable to bind",
            ),
            (
                "[25-Nov-2026 21:23:25] ALERT: [pool www] user has not been defined",
                Level::Error,
                "[pool www] user has not been defined",
            ),
            ("[25-Nov-2026 21:23:25] DEBUG: x", Level::Debug, "x"),
            (
                "PHP Warning:  Undefined variable $x",
                Level::Info,
                "PHP Warning:  Undefined variable $x",
            ),
            (
                "worker says NOTICE: not a prefix",
                Level::Info,
                "worker says NOTICE: not a prefix",
            ),
        ];
        for (line, level, message) in table {
            assert_eq!(classify(line), (level, message), "{line}");
        }
    }

    #[test]
    fn split_lines_are_joined_back() {
        let mut j = Joiner::default();
        let a = vec![b'x'; LOG_LIMIT - 1];
        assert_eq!(j.push(&a), None);
        assert_eq!(j.push(&a), None);
        let whole = j.push(b"END").unwrap();
        assert_eq!(whole.len(), 2 * (LOG_LIMIT - 1) + 3);
        assert!(whole.ends_with(b"xEND"));
        assert_eq!(j.push(b"next"), Some(b"next".to_vec()));
        assert_eq!(j.finish(), None);
    }

    #[tokio::test]
    async fn a_stream_records_lines_and_counts_ready_notices() {
        let shared = LogShared::new("www".into(), 1);
        let ready = shared.ready_notices();
        let mut input =
            b"[d] NOTICE: fpm is running, pid 1\n[d] NOTICE: ready to handle connections\n"
                .to_vec();
        input.extend(vec![b'y'; LOG_LIMIT - 1]);
        input.extend(b"\nyEND\nlast without newline");
        stream(&input[..], "stderr", shared.clone()).await;
        let recent = shared.recent();
        assert_eq!(recent.len(), 4);
        assert_eq!(recent[2].len(), LOG_LIMIT + 3);
        assert_eq!(recent[3], "last without newline");
        assert_eq!(*ready.borrow(), 1);
    }
}
