//! Prometheus metrics (DESIGN §9), in one registry for the whole process.
//!
//! A process-wide registry (`global()`) rather than handles threaded through
//! every constructor: tqsup is one process with one registry, every metric is
//! a lock-free atomic after start-up, and the forwarder's hot path only
//! indexes pre-created counters (no label hashing, no allocation).
//!
//! Metrics only report: nothing decides from them (`/readyz` reads the
//! supervisor's and the breaker's state). Each is declared on one line
//! ([`registry::metrics!`]), by concern: the forwarder's here and in
//! `forward.rs`, the supervisor's in `supervisor.rs`, php-fpm's own status
//! page in `status_page.rs`. The naming scheme is in `registry.rs`.

mod forward;
pub mod registry;
mod status_page;
mod supervisor;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use strum::EnumCount;

use forward::{BreakerLabel, Kind, Lane, Status};
pub use forward::{ForwardError, StatusClass};
use registry::{Group, HistogramOf, Reg, metrics, request_buckets, wait_buckets};
pub use status_page::{Pool, StatusPage};
pub use supervisor::{Dev, Outcome, PhpFpm};

metrics! {
    /// Every metric tqsup exports. The forwarder's are fields of their own
    /// (its hot path reads them as `m.in_flight`); the others are groups.
    pub struct Metrics {
        requests: [Counter; StatusClass::COUNT] = indexed("tqsup_forward_requests", "Requests answered by the forward listener, by response status class", |status| Status { status }),
        errors: [Counter; ForwardError::COUNT] = indexed("tqsup_forward_errors", "Requests the forwarder answered itself with an error, or closed, by kind", |kind| Kind { kind }),
        /// Requests being forwarded now.
        pub in_flight: Gauge = metric("tqsup_forward_requests_in_flight", "Requests being forwarded now"),
        /// Requests waiting for a php-fpm connection now.
        pub queue_depth: Gauge = metric("tqsup_forward_queue_depth", "Requests waiting for a free php-fpm connection"),
        /// Per lane (`forward.lanes`): requests that entered it, requests
        /// waiting in its queue, and how long they waited.
        lane_requests: Family<Lane, Counter> = metric("tqsup_forward_lane_requests", "Requests that entered a lane (forward.lanes)"),
        lane_queue_depth: Family<Lane, Gauge> = metric("tqsup_forward_lane_queue_depth", "Requests waiting in a lane's queue"),
        lane_queue_wait: Family<Lane, Histogram, HistogramOf> = histograms("tqsup_forward_lane_queue_wait_seconds", "Time requests waited in a lane's queue", wait_buckets),
        queue_wait: Histogram = histogram("tqsup_forward_queue_wait_seconds", "Time requests waited for a php-fpm connection", wait_buckets),
        request_duration: Histogram = histogram("tqsup_forward_request_duration_seconds", "Time from a request's start to its end", request_buckets),
        /// Open upstream connections, and how many of them are idle in the
        /// pool or serving a request.
        pub upstream_open: Gauge = metric("tqsup_upstream_connections_open", "Open connections to php-fpm"),
        pub upstream_idle: Gauge = metric("tqsup_upstream_connections_idle", "Open connections to php-fpm idle in the pool"),
        pub upstream_busy: Gauge = metric("tqsup_upstream_connections_busy", "Open connections to php-fpm serving a request"),
        pub upstream_connect_errors: Counter = metric("tqsup_upstream_connect_errors", "Failed connection attempts to php-fpm"),
        pub replays: Counter = metric("tqsup_forward_replays", "Requests replayed on a fresh php-fpm connection"),
        breaker_state: Gauge = metric("tqsup_forward_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open"),
        breaker_transitions: Family<BreakerLabel, Counter> = every("tqsup_forward_breaker_transitions", "Circuit breaker state changes, by new state", |state| BreakerLabel { state }),
        pub downstream_open: Gauge = metric("tqsup_downstream_connections_open", "Web-server connections open now"),
        pub downstream_accepted: Counter = metric("tqsup_downstream_connections_accepted", "Web-server connections accepted"),
        pub received_bytes: Counter = metric("tqsup_forward_received_bytes", "Bytes received from web servers"),
        pub sent_bytes: Counter = metric("tqsup_forward_sent_bytes", "Bytes sent to web servers"),
        /// What the supervisor did with php-fpm.
        pub php_fpm: PhpFpm = group(),
        /// Dev mode's hooks.
        pub dev: Dev = group(),
        /// php-fpm's own status page, as php-fpm exporters name it.
        pub status_page: StatusPage = group(),
    }
}

impl Metrics {
    /// Fresh metrics and the registry that encodes them.
    pub fn registered() -> (Metrics, Registry) {
        let mut reg = Reg::default();
        let m = Metrics::register(&mut reg);
        (m, reg.finish())
    }

    /// Increments `gauge` until the returned guard is dropped (a request in
    /// flight, a request in the queue, a connection open).
    pub fn hold(&'static self, gauge: fn(&Metrics) -> &Gauge) -> GaugeGuard {
        let g = gauge(self);
        g.inc();
        GaugeGuard(g)
    }
}

/// Keeps a gauge incremented while it lives (see [`Metrics::hold`]).
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

fn registered() -> &'static (Metrics, Registry) {
    static METRICS: OnceLock<(Metrics, Registry)> = OnceLock::new();
    METRICS.get_or_init(Metrics::registered)
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &registered().0
}

/// The process-wide metrics in the OpenMetrics text exposition.
pub fn encode() -> String {
    encode_registry(&registered().1)
}

/// `registry` in the OpenMetrics text exposition.
pub fn encode_registry(registry: &Registry) -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests;
