//! All of tqsup's signal handling, in one place: the process signals become
//! a stream of [`Signal`] values that `app.rs` turns into actions. Library
//! code never installs a handler anywhere else.

use futures_util::StreamExt as _;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook_tokio::Signals as Raw;

/// What a signal asks tqsup to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: graceful stop (DESIGN §6).
    Terminate,
    /// SIGHUP: re-read the config and reload php-fpm if it is good.
    Reload,
    /// SIGUSR1: forwarded to php-fpm, which reopens its logs.
    ReopenLogs,
}

/// Maps a raw signal number; None for one tqsup did not ask for.
pub fn classify(signo: i32) -> Option<Signal> {
    match signo {
        SIGTERM | SIGINT => Some(Signal::Terminate),
        SIGHUP => Some(Signal::Reload),
        SIGUSR1 => Some(Signal::ReopenLogs),
        _ => None,
    }
}

/// The signal stream. Handlers are installed by [`Signals::install`] and
/// removed when this is dropped.
pub struct Signals {
    raw: Raw,
}

impl Signals {
    /// Installs handlers for SIGTERM, SIGINT, SIGHUP and SIGUSR1. Call once,
    /// early in `run`, inside the tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals {
            raw: Raw::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])?,
        })
    }

    /// The next signal (cancel-safe).
    pub async fn recv(&mut self) -> Option<Signal> {
        loop {
            let signo = self.raw.next().await?;
            if let Some(s) = classify(signo) {
                return Some(s);
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.raw.handle().close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_signal_has_a_meaning() {
        assert_eq!(classify(SIGTERM), Some(Signal::Terminate));
        assert_eq!(classify(SIGINT), Some(Signal::Terminate));
        assert_eq!(classify(SIGHUP), Some(Signal::Reload));
        assert_eq!(classify(SIGUSR1), Some(Signal::ReopenLogs));
        assert_eq!(classify(signal_hook::consts::signal::SIGUSR2), None);
    }
}
