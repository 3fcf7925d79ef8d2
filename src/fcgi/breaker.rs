//! The circuit breaker in front of php-fpm (DESIGN §7): after
//! `failure_threshold` consecutive real failures it opens and requests get a
//! fast 503; after `open` one probe goes through (half-open) and its success
//! closes it. Saturation (queue timeout, EAGAIN) is never reported here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// One breaker shared by the forwarder's pool and health probe, the admin
/// endpoint (`/readyz`, `/status`) and the supervisor's status line.
pub type SharedBreaker = Arc<Mutex<Breaker>>;

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Refusing requests until `until`.
    Open {
        until: Instant,
    },
    /// One probe may go through; requests are still refused.
    HalfOpen {
        probing: bool,
    },
}

/// Where the breaker is, without its timers: the `state` label of
/// `tqsup_forward_breaker_transitions`, and what `/readyz` and `/status` say.
/// In gauge order (`tqsup_forward_breaker_state`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Position {
    Closed,
    HalfOpen,
    Open,
}

/// Where `breaker` is; closed when there is none (no forwarder).
pub fn position(breaker: Option<&SharedBreaker>) -> Position {
    breaker.map_or(Position::Closed, |b| {
        b.lock().expect("breaker lock").state().position()
    })
}

impl BreakerState {
    pub fn position(self) -> Position {
        match self {
            BreakerState::Closed => Position::Closed,
            BreakerState::HalfOpen { .. } => Position::HalfOpen,
            BreakerState::Open { .. } => Position::Open,
        }
    }
}

/// Consecutive-failures breaker; time passed in. State changes are mirrored
/// in the `tqsup_forward_breaker_state` metric (never read back).
#[derive(Debug, Clone)]
pub struct Breaker {
    /// Consecutive failures that open it (≥ 1).
    threshold: u32,
    /// How long it stays open before a probe is let through.
    open_for: Duration,
    /// Consecutive failures seen while closed.
    failures: u32,
    state: BreakerState,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            state: BreakerState::Closed,
        }
    }

    /// A breaker to share, from `forward.health`.
    pub fn shared(health: &crate::config::Health) -> SharedBreaker {
        Arc::new(Mutex::new(Breaker::new(
            health.failure_threshold,
            health.open,
        )))
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a request may go to php-fpm now.
    pub fn allows_request(&mut self, now: Instant) -> bool {
        self.tick(now);
        self.state == BreakerState::Closed
    }

    /// Whether a health probe may go now; in half-open, only one at a time.
    pub fn allows_probe(&mut self, now: Instant) -> bool {
        self.tick(now);
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probing: true } => false,
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                true
            }
        }
    }

    /// A request or probe reached php-fpm and got a whole response.
    pub fn success(&mut self) {
        self.failures = 0;
        if self.state != BreakerState::Closed {
            self.state = BreakerState::Closed;
            super::metrics::global().breaker(Position::Closed);
        }
    }

    /// A real failure: connect refused, reset, php-fpm gone.
    pub fn failure(&mut self, now: Instant) {
        match self.state {
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.threshold {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen { .. } => self.open(now),
            BreakerState::Open { .. } => {}
        }
    }

    /// A probe that only waited for a connection: let the next one try.
    pub fn probe_inconclusive(&mut self) {
        if self.state == (BreakerState::HalfOpen { probing: true }) {
            self.state = BreakerState::HalfOpen { probing: false };
        }
    }

    /// A fresh php-fpm (new generation): forget the old one's failures.
    pub fn reset(&mut self) {
        self.success();
    }

    fn open(&mut self, now: Instant) {
        self.failures = 0;
        self.state = BreakerState::Open {
            until: now + self.open_for,
        };
        super::metrics::global().breaker(Position::Open);
    }

    fn tick(&mut self, now: Instant) {
        if let BreakerState::Open { until } = self.state
            && now >= until
        {
            self.state = BreakerState::HalfOpen { probing: false };
            super::metrics::global().breaker(Position::HalfOpen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_only() {
        let mut b = Breaker::new(3, Duration::from_secs(5));
        let now = Instant::now();
        b.failure(now);
        b.failure(now);
        b.success();
        b.failure(now);
        b.failure(now);
        assert!(b.allows_request(Instant::now()));
        b.failure(Instant::now());
        assert!(!b.allows_request(Instant::now()));
        assert!(!b.allows_probe(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_and_its_result_decides() {
        let mut b = Breaker::new(1, Duration::from_secs(5));
        b.failure(Instant::now());
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(!b.allows_probe(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            !b.allows_request(Instant::now()),
            "requests wait for the probe"
        );
        assert!(b.allows_probe(Instant::now()));
        assert!(
            !b.allows_probe(Instant::now()),
            "only one probe in half-open"
        );
        b.failure(Instant::now());
        assert!(matches!(b.state(), BreakerState::Open { .. }));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.allows_probe(Instant::now()));
        b.success();
        assert!(b.allows_request(Instant::now()));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_inconclusive_probe_lets_the_next_one_try_and_stays_half_open() {
        let mut b = Breaker::new(1, Duration::from_secs(5));
        b.failure(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.allows_probe(Instant::now()));
        // The probe only waited for a connection (saturation): no verdict.
        b.probe_inconclusive();
        assert_eq!(b.state(), BreakerState::HalfOpen { probing: false });
        assert!(!b.allows_request(Instant::now()));
        assert!(b.allows_probe(Instant::now()), "the next probe may go");
        // Saying so outside a probe changes nothing.
        b.success();
        b.probe_inconclusive();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_closes_it() {
        let mut b = Breaker::new(1, Duration::from_secs(60));
        b.failure(Instant::now());
        assert!(!b.allows_request(Instant::now()));
        b.reset();
        assert!(b.allows_request(Instant::now()));
    }
}
