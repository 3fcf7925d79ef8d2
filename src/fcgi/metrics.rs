//! The forwarder's metrics (`tqsup_forward_*`, `tqsup_upstream_*`,
//! `tqsup_downstream_*`) and what its hot path calls: each an index into
//! pre-created counters or an atomic, except the lanes' (named at run time).

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use strum::EnumCount;

use super::breaker::Position;
pub use crate::metrics::GaugeGuard;
use crate::metrics::registry::{HistogramOf, label_values, metrics, request_buckets, wait_buckets};

/// Status classes of forwarded responses; the index is the status' first
/// digit, 0 for anything else.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter, strum::EnumCount, strum::IntoStaticStr,
)]
pub enum StatusClass {
    #[strum(serialize = "other")]
    Other,
    #[strum(serialize = "1xx")]
    Informational,
    #[strum(serialize = "2xx")]
    Success,
    #[strum(serialize = "3xx")]
    Redirection,
    #[strum(serialize = "4xx")]
    ClientError,
    #[strum(serialize = "5xx")]
    ServerError,
}

/// Errors the forwarder answers itself (or closes on), by kind.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter, strum::EnumCount, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum ForwardError {
    QueueTimeout,
    BreakerOpen,
    UpstreamUnreachable,
    UpstreamClosed,
    Timeout,
    BadRequest,
    ClientAborted,
    /// A request for php-fpm's ping or status path (answered 404).
    InternalPath,
    /// More requests multiplexed on one connection than allowed (503).
    TooManyRequests,
}

label_values!(StatusClass, ForwardError, Position);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: ForwardError,
}

/// A `forward.lanes` name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Lane {
    lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabel {
    state: Position,
}

metrics! {
    /// The forwarder's metrics. Its hot path reads the gauges and counters
    /// as fields (`m.in_flight`) and the labelled ones through methods.
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
    }
}

/// The forwarder's metrics in the process-wide registry.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(crate::metrics::register)
}

impl Metrics {
    /// Increments `gauge` until the returned guard is dropped (a request in
    /// flight, a request in the queue, a connection open).
    pub fn hold(&'static self, gauge: fn(&Metrics) -> &Gauge) -> GaugeGuard {
        crate::metrics::hold(gauge(self))
    }

    /// A response went out with this CGI status (0 when none was parsed).
    pub fn request_done(&self, status: u16, elapsed: Duration) {
        // StatusClass lists the classes in digit order (a test checks).
        let class = match status / 100 {
            c @ 1..=5 => c as usize,
            _ => 0,
        };
        self.requests[class].inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    pub fn forward_error(&self, kind: ForwardError) {
        // `indexed` made them in declaration order.
        self.errors[kind as usize].inc();
    }

    /// A request joined (`+1`) or left (`-1`) lane `lane`'s queue.
    pub fn lane_queued(&self, lane: &str, delta: i64) {
        self.lane_queue_depth
            .get_or_create(&Lane { lane: lane.into() })
            .inc_by(delta);
    }

    /// A request entered lane `lane` after waiting `waited`.
    pub fn lane_entered(&self, lane: &str, waited: Duration) {
        let label = Lane { lane: lane.into() };
        self.lane_requests.get_or_create(&label).inc();
        self.lane_queue_wait
            .get_or_create(&label)
            .observe(waited.as_secs_f64());
    }

    pub fn queue_waited(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// The breaker moved to `state` (mirrored, never read back).
    pub fn breaker(&self, state: Position) {
        let previous = self.breaker_state.set(state as i64);
        if previous != state as i64 {
            self.breaker_transitions
                .get_or_create(&BreakerLabel { state })
                .inc();
        }
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
