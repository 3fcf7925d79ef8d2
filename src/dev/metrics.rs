//! Dev mode's metrics (`tqsup_dev_*`): its rebuild hooks' runs.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::Outcome;
use crate::metrics::registry::metrics;

/// A dev-mode hook (named in the config) and how its run ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Hook {
    hook: String,
    result: Outcome,
}

metrics! {
    /// Dev mode's hooks.
    pub struct Metrics {
        hook_runs: Family<Hook, Counter> = metric("tqsup_dev_hook_runs", "Dev-mode hook runs, by hook and result"),
    }
}

/// Dev mode's metrics in the process-wide registry.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(crate::metrics::register)
}

impl Metrics {
    /// Hook `hook` ran (or could not be started: not `ok`).
    pub fn hook_run(&self, hook: &str, ok: bool) {
        let label = Hook {
            hook: hook.into(),
            result: ok.into(),
        };
        self.hook_runs.get_or_create(&label).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::registry::fresh;

    #[test]
    fn a_run_is_counted_by_hook_and_result() {
        let (m, reg) = fresh::<Metrics>();
        m.hook_run("build", true);
        let text = reg.encode();
        let line = "tqsup_dev_hook_runs_total{hook=\"build\",result=\"ok\"} 1";
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
}
