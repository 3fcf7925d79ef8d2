//! Readiness (`/readyz`, `/status`'s `ready`): decided from the
//! supervisor's state (the published php-fpm, whether it answered its last
//! ping) and the breaker's, never from metrics.

use crate::fcgi::breaker::Position;
use crate::fcgi::upstream::PhpFpmState;

/// Why tqsup is not ready, or None when it is: php-fpm is up, answered the
/// supervisor's last ping (`answering`; None when tqsup does not launch
/// php-fpm: only the forwarder's probe watches it, through the breaker),
/// and the forwarder's breaker is closed.
pub fn not_ready_reason(
    state: &PhpFpmState,
    answering: Option<bool>,
    breaker: Position,
) -> Option<String> {
    match state {
        PhpFpmState::Ready { .. } => {}
        PhpFpmState::Starting => return Some("php-fpm is starting".into()),
        PhpFpmState::Restarting => return Some("php-fpm is restarting".into()),
        PhpFpmState::Stopped => return Some("tqsup is stopping".into()),
    }
    if answering == Some(false) {
        return Some("php-fpm did not answer its last ping".into());
    }
    match breaker {
        Position::Closed => None,
        Position::HalfOpen => Some("circuit breaker half-open: php-fpm failed its probes".into()),
        Position::Open => Some("circuit breaker open: php-fpm failed its probes".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use hyper::StatusCode;
    use tokio::sync::watch;

    use super::super::{AdminView, ScrapeFn, respond};
    use super::*;
    use crate::config::Endpoint;
    use crate::fcgi::breaker::Breaker;
    use crate::fcgi::upstream::Backend;

    fn ready() -> PhpFpmState {
        let endpoint = Endpoint::Tcp("127.0.0.1:9".parse().unwrap());
        PhpFpmState::Ready {
            backend: Backend::new(1, endpoint, None, 1, 0),
        }
    }

    #[test]
    fn the_reasons() {
        use Position::*;
        let r = |s: &PhpFpmState, a, b| not_ready_reason(s, a, b);
        assert_eq!(r(&ready(), Some(true), Closed), None);
        assert_eq!(r(&ready(), None, Closed), None, "forward-only");
        let starting = r(&PhpFpmState::Starting, Some(true), Closed);
        assert_eq!(starting.as_deref(), Some("php-fpm is starting"));
        let restarting = r(&PhpFpmState::Restarting, None, Closed);
        assert_eq!(restarting.as_deref(), Some("php-fpm is restarting"));
        let silent = r(&ready(), Some(false), Closed);
        assert_eq!(
            silent.as_deref(),
            Some("php-fpm did not answer its last ping")
        );
        assert!(
            r(&ready(), Some(true), Open)
                .unwrap()
                .contains("breaker open")
        );
        assert!(r(&ready(), None, HalfOpen).unwrap().contains("half-open"));
    }

    /// `/readyz` through the admin view, with the gauges saying the
    /// opposite of the state: only the state counts.
    #[tokio::test(start_paused = true)]
    async fn readyz_follows_the_state_not_the_gauges() {
        let scrape: ScrapeFn = Arc::new(|_| Box::pin(async { anyhow::bail!("no php-fpm") }));
        let (state_tx, state) = watch::channel(PhpFpmState::Starting);
        let (answering_tx, answering) = watch::channel(false);
        let breaker = Arc::new(std::sync::Mutex::new(Breaker::new(
            1,
            Duration::from_secs(60),
        )));
        let view = AdminView::new(state, scrape)
            .with_answering(answering)
            .with_breaker(breaker.clone());
        let readyz = async || respond(&view, "/readyz").await.status();
        let up = &crate::supervisor::metrics::global().up;
        let m = crate::fcgi::metrics::global();

        up.set(1);
        assert_eq!(readyz().await, StatusCode::SERVICE_UNAVAILABLE, "starting");

        state_tx.send_replace(ready());
        answering_tx.send_replace(true);
        up.set(0);
        m.breaker(Position::Open);
        assert_eq!(readyz().await, StatusCode::OK, "ready and closed");

        answering_tx.send_replace(false);
        up.set(1);
        assert_eq!(readyz().await, StatusCode::SERVICE_UNAVAILABLE, "no pong");

        answering_tx.send_replace(true);
        breaker.lock().unwrap().failure(tokio::time::Instant::now());
        m.breaker(Position::Closed);
        assert_eq!(readyz().await, StatusCode::SERVICE_UNAVAILABLE, "open");

        breaker.lock().unwrap().success();
        assert_eq!(readyz().await, StatusCode::OK, "closed again");
        state_tx.send_replace(PhpFpmState::Restarting);
        assert_eq!(
            readyz().await,
            StatusCode::SERVICE_UNAVAILABLE,
            "restarting"
        );
    }
}
