//! The last php-fpm and PHP log lines, for the dev front's error pages.
//!
//! PHP's fatal errors reach tqsup on php-fpm's stderr (the supervisor logs
//! them under the `php_fpm` target), or on FastCGI STDERR (the dev front
//! logs them under `php`). A tracing layer keeps the last of those events,
//! so the page can show them without the supervisor knowing about it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// How many lines are kept.
const KEPT: usize = 40;
/// How many lines an error page shows at most.
const PAGE_LINES: usize = 20;

/// A shared ring of recent php-fpm/PHP log lines.
#[derive(Debug, Clone, Default)]
pub struct RecentLines {
    lines: Arc<Mutex<VecDeque<(Instant, String)>>>,
}

impl RecentLines {
    pub fn push(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            if l.len() == KEPT {
                l.pop_front();
            }
            l.push_back((Instant::now(), line));
        }
    }

    /// At most `n` lines, oldest first, logged within `within`.
    pub fn last(&self, n: usize, within: Duration) -> Vec<String> {
        let Ok(l) = self.lines.lock() else {
            return Vec::new();
        };
        let since = Instant::now().checked_sub(within);
        let fresh: Vec<&String> = l
            .iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|(_, line)| line)
            .collect();
        fresh[fresh.len().saturating_sub(n)..]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// What a 502 page shows: the lines of the last minute from the last
    /// PHP fatal or parse error on (so a long stack trace cannot push the
    /// error itself out), else the last few.
    pub fn for_error_page(&self) -> Vec<String> {
        let recent = self.last(KEPT, Duration::from_secs(60));
        let start = recent
            .iter()
            .rposition(|l| l.contains("PHP Fatal error") || l.contains("PHP Parse error"))
            .unwrap_or(recent.len().saturating_sub(PAGE_LINES / 2));
        recent[start..].iter().take(PAGE_LINES).cloned().collect()
    }

    /// The layer that fills this ring from the log.
    pub fn layer(&self) -> RecentLinesLayer {
        RecentLinesLayer { ring: self.clone() }
    }
}

/// Keeps events of the `php_fpm` and `php` targets in a [`RecentLines`].
pub struct RecentLinesLayer {
    ring: RecentLines,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RecentLinesLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if target != "php_fpm" && target != "php" {
            return;
        }
        let mut v = Message(String::new());
        event.record(&mut v);
        if !v.0.is_empty() {
            self.ring.push(v.0);
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn keeps_php_lines_only_and_the_last_ones() {
        let ring = RecentLines::default();
        let subscriber = tracing_subscriber::registry().with(ring.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "php_fpm", pid = 1, "PHP message: PHP Fatal error: boom");
            tracing::warn!("not php");
            for i in 0..50 {
                tracing::warn!(target: "php", script = "/x.php", "line {i}");
            }
        });
        let last = ring.last(3, Duration::from_secs(60));
        assert_eq!(last, ["line 47", "line 48", "line 49"]);
        assert_eq!(ring.last(100, Duration::from_secs(60)).len(), KEPT);
        assert!(ring.last(3, Duration::ZERO).len() <= 3);
    }

    #[test]
    fn the_error_page_starts_at_the_last_fatal_error() {
        let ring = RecentLines::default();
        for l in [
            "ready to handle connections",
            "PHP message: PHP Fatal error: old",
        ] {
            ring.push(l.into());
        }
        assert_eq!(
            ring.for_error_page()[0],
            "PHP message: PHP Fatal error: old"
        );
        ring.push("PHP message: PHP Fatal error:  Uncaught Error: boom".into());
        for i in 0..30 {
            ring.push(format!("#{i} frame"));
        }
        let page = ring.for_error_page();
        assert_eq!(page.len(), PAGE_LINES);
        assert!(page[0].ends_with("boom"), "{page:?}");
        let quiet = RecentLines::default();
        for i in 0..30 {
            quiet.push(format!("line {i}"));
        }
        assert_eq!(quiet.for_error_page().len(), PAGE_LINES / 2);
    }
}
