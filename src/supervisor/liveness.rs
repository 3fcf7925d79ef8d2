//! Whether php-fpm is alive: the readiness ping while it starts, the
//! liveness probe while it runs (on php-fpm's status pool), and how often.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Supervisor;
use super::state::{Event, Phase};
use crate::config::{Config, Endpoint};
use crate::fcgi::probe;

/// How often the readiness probe retries while php-fpm starts.
const READY_POLL: Duration = Duration::from_millis(20);

impl Supervisor {
    /// Starts a liveness probe while php-fpm runs, unless one is in flight.
    pub(super) fn start_probe(&mut self) {
        if !matches!(self.state.phase, Phase::Running { .. }) || self.probe.is_some() {
            return;
        }
        let g = &self.setup.generation;
        let (endpoint, path) = (g.files.status.clone(), self.setup.paths.ping.clone());
        let timeout = g.config.forward.health.timeout;
        self.probe = Some(Box::pin(async move {
            probe::ping(&endpoint, &path, timeout).await
        }));
    }

    /// A liveness result as the state machine's event. The probe goes to
    /// php-fpm's status pool, which the forwarder never holds, so a busy
    /// php-fpm answers it; responses completing since the last probe also
    /// prove life (the state machine counts the failures).
    pub(super) fn probe_event(&mut self, result: Result<(), probe::ProbeError>) -> Event {
        let completed = self.backend.as_ref().map_or(0, |b| b.completed());
        let progressed = completed > self.seen_completed;
        self.seen_completed = completed;
        match result {
            Ok(()) => Event::Probe {
                alive: true,
                error: String::new(),
            },
            Err(e) => {
                if progressed {
                    tracing::debug!(error = %e, "php-fpm ping failed, but responses keep completing");
                }
                Event::Probe {
                    alive: progressed,
                    error: e.to_string(),
                }
            }
        }
    }
}

/// The liveness probe's period: the health interval, and at most half of
/// systemd's watchdog interval.
pub(super) fn liveness_interval(config: &Config) -> Interval {
    let mut every = config.forward.health.interval;
    if let Some(wd) = sd_notify::watchdog_enabled() {
        every = every.min(wd / 2);
    }
    let mut liveness = tokio::time::interval(every.max(Duration::from_millis(10)));
    liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
    liveness
}

/// Pings until `pong` or until `within` has passed.
pub(super) async fn wait_ready(endpoint: Endpoint, path: String, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match probe::ping(&endpoint, &path, left.min(Duration::from_secs(2))).await {
            Ok(()) => return true,
            Err(e) => tracing::trace!(error = %e, "php-fpm not ready yet"),
        }
        tokio::time::sleep(READY_POLL.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
}
