//! Prometheus metrics (DESIGN §9): what every subsystem's metrics share,
//! and the one registry of the whole process.
//!
//! Each subsystem owns its metrics, declared one a line with
//! [`registry::metrics!`] in its own `metrics.rs` (the forwarder's in
//! `fcgi`, the supervisor's, dev mode's hooks, php-fpm's status page in
//! `admin`), and reaches them through its own `metrics::global()`: a
//! `static OnceLock` filled by [`register`] into the one process-wide
//! registry that [`encode`] writes out. `app` registers every group at
//! start-up, so the first scrape lists them all. After that every metric is
//! a lock-free atomic: the forwarder's hot path only indexes pre-created
//! counters (no label hashing, no allocation, no lock).
//!
//! Metrics only report: nothing decides from them (`/readyz` reads the
//! supervisor's and the breaker's state). The naming scheme is in
//! `registry.rs`.

pub mod registry;

use std::sync::{LazyLock, Mutex, MutexGuard};

use prometheus_client::metrics::gauge::Gauge;

use registry::{Group, Reg, label_values};

/// How a reload or a hook run ended (the supervisor's and dev mode's
/// `result` label).
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

label_values!(Outcome);

/// Increments `gauge` until the returned guard is dropped (a request in
/// flight, a request in the queue, a connection open).
pub fn hold(gauge: &'static Gauge) -> GaugeGuard {
    gauge.inc();
    GaugeGuard(gauge)
}

/// Keeps a gauge incremented while it lives (see [`hold`]).
#[must_use = "the gauge goes back down when this is dropped"]
pub struct GaugeGuard(&'static Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for GaugeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GaugeGuard")
    }
}

/// The process-wide registry. Locked only to register a group (once per
/// group, from its subsystem's `OnceLock`) and to encode a scrape.
fn registry() -> MutexGuard<'static, Reg> {
    static REGISTRY: LazyLock<Mutex<Reg>> = LazyLock::new(Mutex::default);
    // A panic while registering leaves nothing half-done that matters.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers group `G` in the process-wide registry and returns its handles.
/// Call it once per group, from the subsystem's own
/// `static OnceLock<G>` (a second call would register every name twice).
pub fn register<G: Group>() -> G {
    G::register(&mut registry())
}

/// The names registered in the process-wide registry so far, in order
/// (for the test that start-up registers every group once).
#[cfg(test)]
pub fn names() -> Vec<String> {
    registry().names().to_vec()
}

/// The process-wide metrics in the OpenMetrics text exposition.
pub fn encode() -> String {
    registry().encode()
}

#[cfg(test)]
mod tests;
