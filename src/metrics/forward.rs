//! The forwarder's labels and what its hot path calls: each an index into
//! pre-created counters or an atomic, except the lanes' (named at run time).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;

use super::Metrics;
use super::registry::label_values;
use crate::fcgi::breaker::Position;

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
pub(super) struct Status {
    pub status: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Kind {
    pub kind: ForwardError,
}

/// A `forward.lanes` name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct Lane {
    pub lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BreakerLabel {
    pub state: Position,
}

impl Metrics {
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
