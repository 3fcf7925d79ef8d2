//! Lanes (`forward.lanes`, DESIGN §7): requests whose SCRIPT_NAME or
//! REQUEST_URI match a lane hold at most its `max` pooled connections at
//! once, waiting in a FIFO queue of their own (with their own timeout), so
//! one slow endpoint — an export, a report — cannot take every child; the
//! rest of the pool stays free for everything else. Requests matching no
//! lane use the whole pool.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::Lane;

/// How a lane recognises its requests.
#[derive(Debug)]
enum Matcher {
    /// A path starting with this.
    Prefix(String),
    /// A glob over the whole path (`*` does not cross `/`).
    Glob(globset::GlobMatcher),
}

impl Matcher {
    fn new(pattern: &str) -> Self {
        if pattern.contains(['*', '?', '[', '{']) {
            match globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
            {
                Ok(g) => return Matcher::Glob(g.compile_matcher()),
                Err(_) => return Matcher::Prefix(pattern.to_string()),
            }
        }
        Matcher::Prefix(pattern.to_string())
    }

    fn matches(&self, path: &[u8]) -> bool {
        match self {
            Matcher::Prefix(p) => path.starts_with(p.as_bytes()),
            Matcher::Glob(g) => std::str::from_utf8(path).is_ok_and(|p| {
                // REQUEST_URI carries the query string: match the path.
                let p = p.split_once('?').map_or(p, |(path, _)| path);
                g.is_match(p)
            }),
        }
    }
}

/// One lane: its matcher, its connection budget and its queue.
#[derive(Debug)]
pub struct LaneGate {
    pub name: String,
    /// The lane's maximum of pooled connections.
    pub max: u32,
    /// How long its requests wait for a connection, then 503.
    pub queue_timeout: Duration,
    matcher: Matcher,
    /// `max` permits, FIFO: the lane's queue.
    permits: Arc<Semaphore>,
    /// Requests waiting in the lane's queue now.
    queued: AtomicUsize,
}

/// A lane's connection held by one request.
#[derive(Debug)]
pub struct LanePermit {
    _permit: OwnedSemaphorePermit,
}

impl LaneGate {
    /// Waits (FIFO, until `deadline`) for room in the lane; None on timeout.
    pub async fn enter(&self, deadline: Instant) -> Option<LanePermit> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let m = super::metrics::global();
        m.lane_queued(&self.name, 1);
        let started = Instant::now();
        let r = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::Relaxed);
        m.lane_queued(&self.name, -1);
        let permit = r.ok()?.ok()?;
        m.lane_entered(&self.name, started.elapsed());
        Some(LanePermit { _permit: permit })
    }

    /// Connections the lane's requests hold now.
    pub fn in_use(&self) -> u32 {
        self.max
            .saturating_sub(self.permits.available_permits() as u32)
    }

    /// Requests waiting for room in the lane now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

/// Every configured lane, in order: the first that matches wins.
#[derive(Debug, Default)]
pub struct Lanes {
    lanes: Vec<LaneGate>,
}

impl Lanes {
    pub fn new(config: &[Lane]) -> Self {
        Lanes {
            lanes: config
                .iter()
                .map(|l| LaneGate {
                    name: l.name.clone(),
                    max: l.max.max(1),
                    queue_timeout: l.queue_timeout,
                    matcher: Matcher::new(&l.matches),
                    permits: Arc::new(Semaphore::new(l.max.max(1) as usize)),
                    queued: AtomicUsize::new(0),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// The lane of a request with this SCRIPT_NAME and REQUEST_URI.
    pub fn select(&self, script_name: &[u8], request_uri: &[u8]) -> Option<usize> {
        self.lanes
            .iter()
            .position(|l| l.matcher.matches(script_name) || l.matcher.matches(request_uri))
    }

    pub fn get(&self, i: usize) -> Option<&LaneGate> {
        self.lanes.get(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = &LaneGate> {
        self.lanes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes() -> Lanes {
        let lane = |name: &str, m: &str, max| Lane {
            name: name.into(),
            matches: m.into(),
            max,
            queue_timeout: Duration::from_secs(1),
        };
        Lanes::new(&[
            lane("export", "/export/*", 1),
            lane("report", "/report.php", 2),
        ])
    }

    #[test]
    fn requests_are_sorted_by_script_name_or_uri() {
        let l = lanes();
        assert_eq!(l.select(b"/index.php", b"/export/users.csv?x=1"), Some(0));
        assert_eq!(l.select(b"/export/a", b""), Some(0));
        assert_eq!(
            l.select(b"/export/a/b", b"/export/a/b"),
            None,
            "* stays in one segment"
        );
        assert_eq!(l.select(b"/report.php", b"/report.php?y=2"), Some(1));
        assert_eq!(l.select(b"/report.phpx", b""), Some(1), "a prefix");
        assert_eq!(l.select(b"/index.php", b"/"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_holds_at_most_max_and_queues_the_rest_fifo() {
        let l = lanes();
        let export = l.get(0).unwrap();
        let first = export.enter(Instant::now() + Duration::from_secs(1)).await;
        assert!(first.is_some());
        assert_eq!(export.in_use(), 1);
        let t0 = Instant::now();
        assert!(
            export
                .enter(t0 + Duration::from_millis(500))
                .await
                .is_none()
        );
        assert_eq!(
            Instant::now() - t0,
            Duration::from_millis(500),
            "waited its timeout"
        );
        drop(first);
        assert!(export.enter(Instant::now()).await.is_some());
        assert_eq!(export.queued(), 0);
    }
}
