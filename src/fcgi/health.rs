//! The health probe (DESIGN §7): every `interval`, a FastCGI request for
//! php-fpm's `ping.path` through the pool. A whole answer closes the breaker;
//! a real failure counts towards opening it; only waiting in the queue is
//! saturation and changes nothing.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::breaker::Breaker;
use super::codec;
use super::pool::{AcquireError, UpstreamPool};
use crate::upstream::PhpFpmState;

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

/// One FastCGI request for `ping`, answered within `timeout`.
pub async fn probe(pool: &UpstreamPool, ping: &str, timeout: Duration) -> ProbeOutcome {
    let deadline = Instant::now() + timeout;
    let mut lease = match pool.acquire(deadline, true).await {
        Ok(l) => l,
        Err(AcquireError::QueueTimeout) | Err(AcquireError::Stopped) => {
            return ProbeOutcome::Saturated;
        }
        Err(AcquireError::BreakerOpen) | Err(AcquireError::Unreachable(_)) => {
            return ProbeOutcome::Failure;
        }
    };
    let mut params = BytesMut::new();
    for (n, v) in [
        ("SCRIPT_NAME", ping),
        ("SCRIPT_FILENAME", ping),
        ("REQUEST_URI", ping),
        ("REQUEST_METHOD", "GET"),
        ("QUERY_STRING", ""),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ] {
        codec::put_pair(&mut params, n.as_bytes(), v.as_bytes());
    }
    let mut head = BytesMut::new();
    codec::encode_begin(&mut head, 1, codec::ROLE_RESPONDER, codec::FLAG_KEEP_CONN);
    if codec::reframe_params(&mut head, 1, &params).is_err() {
        return ProbeOutcome::Saturated;
    }
    codec::encode(&mut head, codec::STDIN, 1, &[]);
    let exchange = async {
        let mut bufs = vec![head.freeze()];
        super::io::write_all(lease.stream(), &mut bufs, timeout)
            .await
            .ok()?;
        let mut body = Vec::new();
        loop {
            match codec::decode(&mut lease.buf) {
                Ok(Some(r)) if r.kind == codec::END_REQUEST => return Some(body),
                Ok(Some(r)) if r.kind == codec::STDOUT && body.len() < 4096 => {
                    body.extend_from_slice(&r.content)
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    let (up, buf) = lease.parts();
                    super::io::reserve_read(buf, 4096);
                    if up.read_buf(buf).await.ok()? == 0 {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(Some(body)) => {
            if !body.windows(4).any(|w| w == b"pong") {
                tracing::debug!("php-fpm answered the health probe without `pong`");
            }
            if lease.buf.is_empty() {
                lease.release();
            }
            ProbeOutcome::Success
        }
        _ => ProbeOutcome::Failure,
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
