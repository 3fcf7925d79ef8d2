//! Debouncing changes into batches, and the scheduling rule for hooks: a
//! batch runs once the changes have been quiet for `debounce` (or have kept
//! coming for `max_delay`); a batch that is still running when new changes
//! arrive finishes first, then one more batch covers them. Never two at
//! once, never a lost change.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Changed paths collected since the last batch was taken.
#[derive(Debug)]
pub struct Batcher {
    pending: BTreeSet<PathBuf>,
    /// When the first pending change arrived (bounds the wait under a
    /// continuous stream of changes).
    first: Option<Instant>,
    /// When the latest pending change arrived (the debounce runs from it).
    last: Option<Instant>,
    debounce: Duration,
    max_delay: Duration,
}

impl Batcher {
    /// `max_delay` is how long a never-quiet stream of changes can hold a
    /// batch back: 20 debounces, at least a second.
    pub fn new(debounce: Duration) -> Self {
        Batcher {
            pending: BTreeSet::new(),
            first: None,
            last: None,
            debounce,
            max_delay: (debounce * 20).max(Duration::from_secs(1)),
        }
    }

    pub fn add(&mut self, path: PathBuf, now: Instant) {
        self.pending.insert(path);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending changes become a batch; `None` when nothing pends.
    pub fn due_at(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.debounce).min(first + self.max_delay))
    }

    /// Takes every pending change as one batch (sorted, deduplicated).
    pub fn take(&mut self) -> Vec<PathBuf> {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.pending).into_iter().collect()
    }
}

/// A running batch.
pub type BatchFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Receives changed paths from `changes` and calls `run` with each batch,
/// one at a time, until `shutdown` (a running batch is dropped then) or
/// until `changes` closes and everything pending has run.
pub async fn schedule(
    mut changes: mpsc::UnboundedReceiver<PathBuf>,
    debounce: Duration,
    mut run: impl FnMut(Vec<PathBuf>) -> BatchFuture,
    shutdown: CancellationToken,
) {
    let mut batcher = Batcher::new(debounce);
    let mut running: Option<BatchFuture> = None;
    let mut open = true;
    loop {
        let due = batcher.due_at();
        if !open && due.is_none() && running.is_none() {
            return;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
            }
            change = changes.recv(), if open => match change {
                Some(path) => batcher.add(path, Instant::now()),
                None => open = false,
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)),
                if running.is_none() && due.is_some() => {
                running = Some(run(batcher.take()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Log {
        /// (start, end, batch) of each run, in ms since the test start.
        runs: Vec<(u128, u128, Vec<PathBuf>)>,
    }

    /// Starts a scheduler whose batches each take `work`, recording them.
    fn start(
        debounce_ms: u64,
        work_ms: u64,
    ) -> (
        mpsc::UnboundedSender<PathBuf>,
        Arc<Mutex<Log>>,
        tokio::task::JoinHandle<()>,
        Instant,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Log::default()));
        let t0 = Instant::now();
        let l = log.clone();
        let task = tokio::spawn(schedule(
            rx,
            Duration::from_millis(debounce_ms),
            move |batch| {
                let l = l.clone();
                Box::pin(async move {
                    let s = t0.elapsed().as_millis();
                    tokio::time::sleep(Duration::from_millis(work_ms)).await;
                    let e = t0.elapsed().as_millis();
                    l.lock().unwrap().runs.push((s, e, batch));
                })
            },
            CancellationToken::new(),
        ));
        (tx, log, task, t0)
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[tokio::test(start_paused = true)]
    async fn one_change_runs_after_the_debounce() {
        let (tx, log, task, _) = start(150, 10);
        tx.send(p("a")).unwrap();
        drop(tx);
        task.await.unwrap();
        let runs = &log.lock().unwrap().runs;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0, 150);
        assert_eq!(runs[0].2, vec![p("a")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_batch() {
        let (tx, log, task, _) = start(150, 10);
        for i in 0..50 {
            tx.send(p(&format!("f{}", i % 7))).unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(tx);
        task.await.unwrap();
        let runs = &log.lock().unwrap().runs;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!(runs[0].0, 245 + 150);
        assert_eq!(runs[0].2.len(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn changes_during_a_run_get_exactly_one_more_run() {
        let (tx, log, task, t0) = start(100, 1000);
        tx.send(p("a")).unwrap();
        // The first run is 100..1100; these arrive while it runs.
        tokio::time::sleep_until(t0 + Duration::from_millis(300)).await;
        tx.send(p("b")).unwrap();
        tokio::time::sleep_until(t0 + Duration::from_millis(900)).await;
        tx.send(p("c")).unwrap();
        tx.send(p("a")).unwrap();
        drop(tx);
        task.await.unwrap();
        let runs = &log.lock().unwrap().runs;
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].2, vec![p("a")]);
        // Second run starts right when the first ends (changes long quiet).
        assert_eq!(runs[1].0, 1100);
        assert_eq!(runs[1].2, vec![p("a"), p("b"), p("c")]);
        // Never two at once.
        assert!(runs[1].0 >= runs[0].1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_never_quiet_stream_still_runs() {
        let (tx, log, task, _) = start(100, 10);
        for i in 0..300 {
            tx.send(p(&format!("f{i}"))).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(tx);
        task.await.unwrap();
        let runs = &log.lock().unwrap().runs;
        // 15 s of changes every 50 ms, max delay 2 s: about one run per 2 s.
        assert!((7..=9).contains(&runs.len()), "{}", runs.len());
        let total: usize = runs.iter().map(|r| r.2.len()).sum();
        assert_eq!(total, 300, "every change is in some batch");
        for w in runs.windows(2) {
            assert!(w[1].0 >= w[0].1, "overlap: {w:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_with_changes_pending() {
        let (tx, rx) = mpsc::unbounded_channel();
        let token = CancellationToken::new();
        let ran = Arc::new(Mutex::new(0));
        let r = ran.clone();
        let task = tokio::spawn(schedule(
            rx,
            Duration::from_millis(100),
            move |_| {
                *r.lock().unwrap() += 1;
                Box::pin(async {})
            },
            token.clone(),
        ));
        tx.send(p("a")).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        token.cancel();
        task.await.unwrap();
        assert_eq!(*ran.lock().unwrap(), 0);
    }
}
