//! The forward listener's connection slots: at most `forward.max_connections`
//! downstream connections at once, and room made for a new client by
//! closing the connection that has been idle the longest.
//!
//! Web servers keep connections to tqsup alive between requests (nginx's
//! upstream `keepalive`, HAProxy, Apache's `enablereuse`) and never close
//! them on their own. Without eviction, a full listener whose slots are all
//! held by idle kept-alive connections (more web-server workers than
//! planned, or a client that opens many and goes quiet) leaves every new
//! client in the accept backlog for good. A server closing an idle
//! kept-alive connection is ordinary (web servers reconnect, nginx retries
//! a request that failed on a cached connection); a connection with a
//! request in flight or unread bytes is never closed this way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long a full listener waits for a slot before it asks another idle
/// connection to make room (the one asked may have become busy).
const RETRY: Duration = Duration::from_millis(100);

/// Every open downstream connection, and at most `max` of them.
pub struct ConnSlots {
    permits: Arc<Semaphore>,
    /// Open connections by number, for finding the one idle longest.
    open: Mutex<HashMap<u64, Arc<Presence>>>,
    next: AtomicU64,
    /// Counts connections going idle: the order in which they did (no
    /// clock read on the request path).
    went_idle: AtomicU64,
}

/// One connection as the slots see it.
pub struct Presence {
    /// When the connection last became idle, as a [`ConnSlots::went_idle`]
    /// count (plus one); 0 while it has a request or unread bytes.
    idle_since: AtomicU64,
    /// Set by the listener: close if still idle.
    evict: AtomicBool,
    /// The connection's task while it is idle (woken for `evict`).
    waker: AtomicWaker,
}

/// A connection's slot, given back (and the connection forgotten) on drop.
pub struct ConnSlot {
    slots: Arc<ConnSlots>,
    number: u64,
    presence: Arc<Presence>,
    _permit: OwnedSemaphorePermit,
}

impl ConnSlots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnSlots {
            permits: Arc::new(Semaphore::new(max.max(1))),
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            went_idle: AtomicU64::new(0),
        })
    }

    /// Whether every slot is taken (an evicted connection closes only then).
    pub fn full(&self) -> bool {
        self.permits.available_permits() == 0
    }

    /// A slot for the next connection, waiting while all are taken by busy
    /// connections; None when `shutdown` comes first.
    pub async fn acquire(self: &Arc<Self>, shutdown: &CancellationToken) -> Option<ConnSlot> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => loop {
                self.evict_longest_idle();
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    p = self.permits.clone().acquire_owned() => break p.expect("never closed"),
                    _ = tokio::time::sleep(RETRY) => {}
                }
            },
        };
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let presence = Arc::new(Presence {
            idle_since: AtomicU64::new(0),
            evict: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        self.open.lock().unwrap().insert(number, presence.clone());
        Some(ConnSlot {
            slots: self.clone(),
            number,
            presence,
            _permit: permit,
        })
    }

    /// Asks the connection idle the longest to close; false when none is.
    pub fn evict_longest_idle(&self) -> bool {
        let open = self.open.lock().unwrap();
        let oldest = open
            .values()
            .filter(|p| p.idle_since.load(Ordering::Relaxed) != 0)
            .min_by_key(|p| p.idle_since.load(Ordering::Relaxed));
        match oldest {
            Some(p) => {
                p.evict.store(true, Ordering::Release);
                p.waker.wake();
                true
            }
            None => false,
        }
    }
}

impl ConnSlot {
    /// The connection has no request and no unread bytes (`true`), or has
    /// (`false`). Called when that changes.
    pub fn set_idle(&self, idle: bool) {
        let v = if idle {
            self.slots.went_idle.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        self.presence.idle_since.store(v, Ordering::Relaxed);
    }

    /// Ready when the listener needs this (idle) connection's slot. Polled
    /// only while idle: a request for room that came while the connection
    /// was busy is honoured later only if the listener is still full.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        let p = &self.presence;
        p.waker.register(cx.waker());
        if p.evict.swap(false, Ordering::Acquire) && self.slots.full() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// [`poll_evicted`](Self::poll_evicted) as a future.
    pub async fn evicted(&self) {
        std::future::poll_fn(|cx| self.poll_evicted(cx)).await
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.slots.open.lock().unwrap().remove(&self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_listener_closes_the_connection_idle_longest() {
        let slots = ConnSlots::new(2);
        let stop = CancellationToken::new();
        let a = slots.acquire(&stop).await.unwrap();
        let b = slots.acquire(&stop).await.unwrap();
        assert!(slots.full());
        // Nobody idle: nobody to close.
        assert!(!slots.evict_longest_idle());
        a.set_idle(true);
        tokio::time::advance(Duration::from_millis(10)).await;
        b.set_idle(true);
        // A third client: `a` has been idle longest and is asked to go.
        let third = tokio::spawn({
            let slots = slots.clone();
            let stop = stop.clone();
            async move { slots.acquire(&stop).await.is_some() }
        });
        tokio::time::timeout(Duration::from_secs(1), a.evicted())
            .await
            .expect("the longest idle connection is asked to close");
        drop(a);
        assert!(third.await.unwrap());
        // `b` was not asked.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), b.evicted())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_asked_and_a_late_request_is_dropped_when_no_longer_full() {
        let slots = ConnSlots::new(1);
        let stop = CancellationToken::new();
        let a = slots.acquire(&stop).await.unwrap();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            let stop = stop.clone();
            async move { slots.acquire(&stop).await.map(|_| ()) }
        });
        // The listener waits while the only connection is busy.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiting.is_finished());
        stop.cancel();
        assert!(waiting.await.unwrap().is_none());
        drop(a);
        // A request for room left behind while busy is not honoured once
        // there is room anyway.
        let b_slots = ConnSlots::new(2);
        let b = b_slots.acquire(&CancellationToken::new()).await.unwrap();
        b.presence.evict.store(true, Ordering::Release);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), b.evicted())
                .await
                .is_err()
        );
    }
}
