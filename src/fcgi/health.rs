//! The health probe (DESIGN §7): every `interval`, a FastCGI request for
//! php-fpm's `ping.path` on its status pool (`pm.status_listen`), never
//! through the upstream pool, so it cannot compete with requests for a
//! child. A `pong` closes the breaker; a real failure counts towards
//! opening it; a php-fpm that is not ready (starting, restarting, reloading)
//! is not probed at all.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::pool::UpstreamPool;
use super::upstream::PhpFpmState;

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// Refused, reset, closed, or no answer once sent.
    Failure,
    /// Only waited for a free connection: not php-fpm's fault.
    Saturated,
}

/// Probes every `interval` until `shutdown`, while `ready()` says php-fpm
/// is up, and feeds the breaker.
pub async fn run_loop<P, F, R>(
    breaker: Arc<Mutex<Breaker>>,
    interval: Duration,
    shutdown: CancellationToken,
    ready: R,
    mut probe: P,
) where
    P: FnMut() -> F,
    F: Future<Output = ProbeOutcome>,
    R: Fn() -> bool,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if !ready() || !breaker.lock().unwrap().allows_probe(Instant::now()) {
            continue;
        }
        let outcome = probe().await;
        let mut b = breaker.lock().unwrap();
        match outcome {
            ProbeOutcome::Success => b.success(),
            ProbeOutcome::Failure => {
                tracing::warn!("php-fpm health probe failed");
                b.failure(Instant::now());
            }
            ProbeOutcome::Saturated => b.probe_inconclusive(),
        }
    }
}

/// The probe loop for a pool.
pub async fn run(
    pool: UpstreamPool,
    state: watch::Receiver<PhpFpmState>,
    ping: String,
    health: crate::config::Health,
    shutdown: CancellationToken,
) {
    let breaker = pool.breaker();
    let ready = move || state.borrow().is_ready();
    let probe = || probe(&pool, &ping, health.timeout);
    run_loop(breaker, health.interval, shutdown, ready, probe).await;
}

/// One ping of the current php-fpm, answered within `timeout`. A failure
/// of a php-fpm that was replaced meanwhile proves nothing.
pub async fn probe(pool: &UpstreamPool, ping: &str, timeout: Duration) -> ProbeOutcome {
    let Some(backend) = pool.current() else {
        return ProbeOutcome::Saturated;
    };
    let endpoint = backend.status.as_ref().unwrap_or(&backend.endpoint);
    match super::probe::ping(endpoint, ping, timeout).await {
        Ok(()) => ProbeOutcome::Success,
        // A php-fpm that is not tqsup's has no status pool: its main
        // socket's children may all be held by the pool, so no answer in
        // time is only waiting.
        Err(super::probe::ProbeError::Timeout(_)) if backend.status.is_none() => {
            ProbeOutcome::Saturated
        }
        Err(e) => {
            let still = pool
                .current()
                .is_some_and(|b| b.generation == backend.generation && !b.is_retired());
            if still {
                tracing::debug!(error = %e, "php-fpm ping failed");
                ProbeOutcome::Failure
            } else {
                ProbeOutcome::Saturated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::fcgi::breaker::BreakerState;

    #[tokio::test(start_paused = true)]
    async fn failures_open_saturation_does_not_and_success_closes() {
        let breaker = Arc::new(Mutex::new(Breaker::new(3, Duration::from_secs(5))));
        let shutdown = CancellationToken::new();
        // Script: 2 saturated, 3 failures (opens), then successes.
        let script = [
            ProbeOutcome::Saturated,
            ProbeOutcome::Saturated,
            ProbeOutcome::Failure,
            ProbeOutcome::Failure,
            ProbeOutcome::Failure,
        ];
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let task = tokio::spawn(run_loop(
            breaker.clone(),
            Duration::from_secs(1),
            shutdown.clone(),
            || true,
            move || {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move { script.get(n).copied().unwrap_or(ProbeOutcome::Success) }
            },
        ));
        tokio::time::sleep(Duration::from_millis(4500)).await;
        assert_eq!(
            breaker.lock().unwrap().state(),
            BreakerState::Closed,
            "saturation is not failure"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(matches!(
            breaker.lock().unwrap().state(),
            BreakerState::Open { .. }
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // Open: no probes until open_ms has passed, then one closes it.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 5, "no probe while open");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        assert_eq!(breaker.lock().unwrap().state(), BreakerState::Closed);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn no_probe_while_php_fpm_is_not_ready() {
        let breaker = Arc::new(Mutex::new(Breaker::new(1, Duration::from_secs(5))));
        let shutdown = CancellationToken::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let task = tokio::spawn(run_loop(
            breaker,
            Duration::from_secs(1),
            shutdown.clone(),
            || false,
            move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { ProbeOutcome::Failure }
            },
        ));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        shutdown.cancel();
        task.await.unwrap();
    }
}
