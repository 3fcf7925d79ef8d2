//! The supervisor's metrics (php-fpm's restarts, recycles, liveness, exits,
//! reloads) and dev mode's hook runs.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use strum::IntoEnumIterator;

use super::Metrics;
use super::registry::{label_values, metrics};
use crate::supervisor::recycle::Reason;
use crate::supervisor::state::Cause;

/// How a reload or a hook run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
}

impl From<bool> for Outcome {
    fn from(ok: bool) -> Self {
        if ok { Outcome::Ok } else { Outcome::Failed }
    }
}

label_values!(Outcome, Cause, Reason);

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

/// A dev-mode hook (named in the config) and how its run ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Hook {
    hook: String,
    result: Outcome,
}

metrics! {
    /// What the supervisor did with php-fpm.
    pub struct PhpFpm {
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

metrics! {
    /// Dev mode's hooks.
    pub struct Dev {
        hook_runs: Family<Hook, Counter> = metric("tqsup_dev_hook_runs", "Dev-mode hook runs, by hook and result"),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Metrics {
    /// tqsup started recycling a php-fpm child.
    pub fn php_fpm_recycled(&self, reason: Reason) {
        self.php_fpm
            .recycles
            .get_or_create(&Recycle { reason })
            .inc();
    }

    /// A php-fpm restart was scheduled, for this cause.
    pub fn php_fpm_restarted(&self, reason: Cause) {
        self.php_fpm
            .restarts
            .get_or_create(&Restart { reason })
            .inc();
    }

    pub fn php_fpm_started(&self) {
        self.php_fpm.start_time.set(unix_now());
    }

    /// php-fpm exited with `code` (negative: killed by that signal).
    pub fn php_fpm_exited(&self, code: i64) {
        self.php_fpm.last_exit_code.set(code);
        self.php_fpm.up.set(0);
    }

    pub fn reload(&self, ok: bool) {
        let result = ok.into();
        self.php_fpm
            .reloads
            .get_or_create(&Finished { result })
            .inc();
    }

    pub fn hook_run(&self, hook: &str, ok: bool) {
        let label = Hook {
            hook: hook.into(),
            result: ok.into(),
        };
        self.dev.hook_runs.get_or_create(&label).inc();
    }

    /// Seconds since php-fpm's last start (0 when it never started), for
    /// `/status`.
    pub fn php_fpm_uptime(&self) -> f64 {
        let start = self.php_fpm.start_time.get();
        if start == 0.0 {
            return 0.0;
        }
        (unix_now() - start).max(0.0)
    }

    /// Total php-fpm restarts so far (all reasons), for `/status`.
    pub fn restarts_total(&self) -> u64 {
        Cause::iter()
            .map(|reason| {
                self.php_fpm
                    .restarts
                    .get_or_create(&Restart { reason })
                    .get()
            })
            .sum()
    }
}
