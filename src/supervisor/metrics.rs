//! The supervisor's metrics (`tqsup_php_fpm_*`): php-fpm's restarts,
//! recycles, liveness, exits and reloads.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use strum::IntoEnumIterator;

use super::recycle::Reason;
use super::state::Cause;
use crate::metrics::Outcome;
use crate::metrics::registry::{label_values, metrics};

label_values!(Cause, Reason);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Restart {
    reason: Cause,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Recycle {
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Finished {
    result: Outcome,
}

metrics! {
    /// What the supervisor did with php-fpm.
    pub struct Metrics {
        restarts: Family<Restart, Counter> = every("tqsup_php_fpm_restarts", "php-fpm restarts, by reason", |reason| Restart { reason }),
        /// Children tqsup recycled (memory, lifetime).
        recycles: Family<Recycle, Counter> = every("tqsup_php_fpm_recycles", "php-fpm children recycled by tqsup, by reason (memory, lifetime)", |reason| Recycle { reason }),
        /// Mirrors the supervisor's liveness (`Supervisor::liveness`).
        pub up: Gauge = metric("tqsup_php_fpm_up", "1 when php-fpm answered the supervisor's last ping"),
        last_exit_code: Gauge = metric("tqsup_php_fpm_last_exit_code", "Exit code of the last php-fpm exit (-signal when killed)"),
        start_time: Gauge<f64, AtomicU64> = metric("tqsup_php_fpm_start_time_seconds", "Unix time php-fpm was last started"),
        reloads: Family<Finished, Counter> = every("tqsup_php_fpm_reloads", "Reloads, by result", |result| Finished { result }),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The supervisor's metrics in the process-wide registry.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(crate::metrics::register)
}

impl Metrics {
    /// tqsup started recycling a php-fpm child.
    pub fn php_fpm_recycled(&self, reason: Reason) {
        self.recycles.get_or_create(&Recycle { reason }).inc();
    }

    /// A php-fpm restart was scheduled, for this cause.
    pub fn php_fpm_restarted(&self, reason: Cause) {
        self.restarts.get_or_create(&Restart { reason }).inc();
    }

    pub fn php_fpm_started(&self) {
        self.start_time.set(unix_now());
    }

    /// php-fpm exited with `code` (negative: killed by that signal).
    pub fn php_fpm_exited(&self, code: i64) {
        self.last_exit_code.set(code);
        self.up.set(0);
    }

    pub fn reload(&self, ok: bool) {
        let result = ok.into();
        self.reloads.get_or_create(&Finished { result }).inc();
    }

    /// Seconds since php-fpm's last start (0 when it never started), for
    /// `/status`.
    pub fn php_fpm_uptime(&self) -> f64 {
        let start = self.start_time.get();
        if start == 0.0 {
            return 0.0;
        }
        (unix_now() - start).max(0.0)
    }

    /// Total php-fpm restarts so far (all reasons), for `/status`.
    pub fn restarts_total(&self) -> u64 {
        Cause::iter()
            .map(|reason| self.restarts.get_or_create(&Restart { reason }).get())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::registry::fresh;

    #[test]
    fn every_reason_starts_at_zero_and_restarts_add_up() {
        let (m, reg) = fresh::<Metrics>();
        m.php_fpm_restarted(Cause::ReadyTimeout);
        m.php_fpm_restarted(Cause::Liveness);
        m.php_fpm_recycled(Reason::Lifetime);
        m.reload(false);
        let text = reg.encode();
        for line in [
            "tqsup_php_fpm_restarts_total{reason=\"ready_timeout\"} 1",
            "tqsup_php_fpm_recycles_total{reason=\"lifetime\"} 1",
            "tqsup_php_fpm_recycles_total{reason=\"memory\"} 0",
            "tqsup_php_fpm_reloads_total{result=\"failed\"} 1",
            "tqsup_php_fpm_reloads_total{result=\"ok\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert_eq!(m.restarts_total(), 2);
        assert_eq!(m.php_fpm_uptime(), 0.0, "never started");
        m.php_fpm_started();
        assert!(m.php_fpm_uptime() < 60.0);
    }
}
