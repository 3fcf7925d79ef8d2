//! php-fpm's stdout and stderr, line by line, into tracing (target
//! `php_fpm`, fields `stream`, `pid`, `pool`). php-fpm's own
//! `NOTICE/WARNING/ERROR/ALERT` prefixes become levels; worker output (PHP's
//! own writes to stderr, undecorated) is kept at info; lines php-fpm split
//! at `log_limit` are joined back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::logging::escape_controls;

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
/// exactly `LOG_LIMIT - 1` bytes continues on the next line, unless that
/// next line is one of php-fpm's own (a master line starts a new line
/// whatever came before), or nothing more comes for [`JOIN_WAIT`] (a line
/// that was exactly 8191 bytes long on its own).
#[derive(Debug, Default)]
pub struct Joiner {
    pending: Vec<u8>,
}

/// How long a full piece waits for its continuation.
pub const JOIN_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

impl Joiner {
    /// Feeds one line (without its newline); whole lines go to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<Vec<u8>>) {
        if !self.pending.is_empty() && is_master_line(&String::from_utf8_lossy(piece)) {
            out.push(std::mem::take(&mut self.pending));
        }
        let full = piece.len() == LOG_LIMIT - 1;
        if self.pending.len() < MAX_JOINED {
            self.pending.extend_from_slice(piece);
        }
        if !full {
            out.push(std::mem::take(&mut self.pending));
        }
    }

    /// Whether a piece waits for its continuation.
    pub fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whatever is left (end of stream, or no continuation came).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// Whether `line` is php-fpm's own: `[DD-Mon-YYYY HH:MM:SS] LEVEL: …`, the
/// only lines tqsup bases decisions on (a PHP script's own output has no
/// such stamp unless it forges one).
pub fn is_master_line(line: &str) -> bool {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() > 23
        && b[0] == b'['
        && digits(1..3)
        && b[3] == b'-'
        && b[7] == b'-'
        && digits(8..12)
        && b[12] == b' '
        && digits(13..15)
        && b[15] == b':'
        && digits(16..18)
        && b[18] == b':'
        && digits(19..21)
        && b[21] == b']'
        && b[22] == b' '
        && ["DEBUG: ", "NOTICE: ", "WARNING: ", "ERROR: ", "ALERT: "]
            .iter()
            .any(|p| line[23..].starts_with(p))
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
        if is_master_line(line) && classify(line).1 == "ready to handle connections" {
            self.ready.send_modify(|n| *n += 1);
        }
    }
}

/// Reads `reader` to its end, one event per line.
pub async fn stream<R: AsyncRead + Unpin>(reader: R, stream: &'static str, shared: Arc<LogShared>) {
    let mut reader = BufReader::with_capacity(2 * LOG_LIMIT, reader);
    let mut joiner = Joiner::default();
    let mut buf = Vec::with_capacity(LOG_LIMIT);
    let mut lines = Vec::new();
    loop {
        // A piece waiting for its continuation is a line of its own if none
        // comes soon (read_until keeps what it read so far in `buf`).
        let read = reader.read_until(b'\n', &mut buf);
        let r = if joiner.waiting() {
            match tokio::time::timeout(JOIN_WAIT, read).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(line) = joiner.finish() {
                        emit(&line, stream, &shared);
                    }
                    continue;
                }
            }
        } else {
            read.await
        };
        match r {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        joiner.push(&buf, &mut lines);
        buf.clear();
        for line in lines.drain(..) {
            emit(&line, stream, &shared);
        }
    }
    if !buf.is_empty() {
        joiner.push(&buf, &mut lines);
    }
    lines.extend(joiner.finish());
    for line in lines.drain(..) {
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
    let message = escape_controls(message);
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
        let mut out = Vec::new();
        let a = vec![b'x'; LOG_LIMIT - 1];
        j.push(&a, &mut out);
        j.push(&a, &mut out);
        assert!(out.is_empty());
        j.push(b"END", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 2 * (LOG_LIMIT - 1) + 3);
        assert!(out[0].ends_with(b"xEND"));
        out.clear();
        j.push(b"next", &mut out);
        assert_eq!(out, vec![b"next".to_vec()]);
        assert_eq!(j.finish(), None);
    }

    #[test]
    fn a_master_line_after_a_full_piece_is_not_swallowed() {
        let mut j = Joiner::default();
        let mut out = Vec::new();
        let a = vec![b'x'; LOG_LIMIT - 1];
        j.push(&a, &mut out);
        j.push(
            b"[30-Nov-2026 01:38:15] WARNING: [pool www] seems busy",
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), LOG_LIMIT - 1);
        assert_eq!(classify(&String::from_utf8_lossy(&out[1])).0, Level::Warn);
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_of_exactly_8191_bytes_stands_alone() {
        let shared = LogShared::new("www".into(), 1);
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let reader = tokio::spawn(stream(r, "stderr", shared.clone()));
        use tokio::io::AsyncWriteExt as _;
        let mut line = vec![b'y'; LOG_LIMIT - 1];
        line.push(b'\n');
        w.write_all(&line).await.unwrap();
        tokio::time::sleep(JOIN_WAIT * 2).await;
        w.write_all(b"PHP Fatal error: next\n").await.unwrap();
        drop(w);
        reader.await.unwrap();
        let recent = shared.recent();
        assert_eq!(
            recent.len(),
            2,
            "{:?}",
            recent.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(recent[1], "PHP Fatal error: next");
    }

    #[test]
    fn only_php_fpm_own_lines_count_and_controls_are_escaped() {
        assert!(is_master_line(
            "[30-Nov-2026 01:38:15] NOTICE: ready to handle connections"
        ));
        assert!(!is_master_line(
            "NOTICE: PHP message: ready to handle connections"
        ));
        assert!(!is_master_line("ready to handle connections"));
        assert!(!is_master_line("[d] NOTICE: ready to handle connections"));
        assert_eq!(
            escape_controls("a\u{0}b\u{1b}[31mc\td"),
            "a\\x00b\\x1b[31mc\td"
        );
    }

    #[tokio::test]
    async fn a_stream_records_lines_and_counts_ready_notices() {
        let shared = LogShared::new("www".into(), 1);
        let ready = shared.ready_notices();
        let mut input = b"[30-Nov-2026 01:38:15] NOTICE: fpm is running, pid 1\n\
              [30-Nov-2026 01:38:15] NOTICE: ready to handle connections\n\
              a worker says: ready to handle connections\n"
            .to_vec();
        input.extend(vec![b'y'; LOG_LIMIT - 1]);
        input.extend(b"\nyEND\nlast without newline");
        stream(&input[..], "stderr", shared.clone()).await;
        let recent = shared.recent();
        assert_eq!(recent.len(), 5);
        assert_eq!(recent[3].len(), LOG_LIMIT + 3);
        assert_eq!(recent[4], "last without newline");
        assert_eq!(
            *ready.borrow(),
            1,
            "a worker's line is not php-fpm's notice"
        );
    }
}
