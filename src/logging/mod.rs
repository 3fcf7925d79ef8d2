//! Log output: text for humans, one JSON object per line for machines;
//! the last php-fpm/PHP lines kept for dev mode's error pages (`recent`);
//! text from other processes made safe for one log line.

mod recent;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;
pub use recent::RecentLines;

/// Installs the global subscriber. `level` is a tracing filter; `RUST_LOG`,
/// when set, wins (for debugging tqsup itself). `recent`, in dev mode,
/// also keeps the last php-fpm/PHP lines for the dev front's error pages.
pub fn init(format: LogFormat, level: &str, recent: Option<&RecentLines>) {
    let recent = recent.map(RecentLines::layer);
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(level)
                .unwrap_or_else(|_| EnvFilter::new(crate::config::defaults::LOG_LEVEL))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(recent)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .finish()
            .with(recent)
            .try_init(),
    };
}

/// `line` with control characters (but tab) escaped, so a worker's NUL or
/// ESC never reaches the text log raw.
pub fn escape_controls(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}
