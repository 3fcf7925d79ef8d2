//! Log output: text for humans, one JSON object per line for machines.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is a tracing filter; `RUST_LOG`,
/// when set, wins (for debugging tqsup itself). `recent`, in dev mode,
/// also keeps the last php-fpm/PHP lines for the dev front's error pages.
pub fn init(format: LogFormat, level: &str, recent: Option<&crate::dev::RecentLines>) {
    let recent = recent.map(crate::dev::RecentLines::layer);
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
