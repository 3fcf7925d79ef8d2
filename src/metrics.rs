//! Prometheus metrics (DESIGN §9), in one registry for the whole process.
//!
//! A process-wide registry (`global()`) rather than handles threaded through
//! every constructor: tqsup is one process with one registry, every metric is
//! a lock-free atomic after start-up, and the forwarder's hot path only
//! indexes pre-created counters (no label hashing, no allocation).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabel {
    hook: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Status classes of forwarded responses; index = first digit, 0 = unknown.
const STATUS_CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Errors the forwarder answers itself (or closes on), by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl ForwardError {
    const ALL: [ForwardError; 9] = [
        ForwardError::QueueTimeout,
        ForwardError::BreakerOpen,
        ForwardError::UpstreamUnreachable,
        ForwardError::UpstreamClosed,
        ForwardError::Timeout,
        ForwardError::BadRequest,
        ForwardError::ClientAborted,
        ForwardError::InternalPath,
        ForwardError::TooManyRequests,
    ];

    fn name(self) -> &'static str {
        match self {
            ForwardError::QueueTimeout => "queue_timeout",
            ForwardError::BreakerOpen => "breaker_open",
            ForwardError::UpstreamUnreachable => "upstream_unreachable",
            ForwardError::UpstreamClosed => "upstream_closed",
            ForwardError::Timeout => "timeout",
            ForwardError::BadRequest => "bad_request",
            ForwardError::ClientAborted => "client_aborted",
            ForwardError::InternalPath => "internal_path",
            ForwardError::TooManyRequests => "too_many_requests",
        }
    }
}

/// Breaker states as exported in `tqsup_forward_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// php-fpm's own pool status (`pm.status_path?json`), as scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct PoolStatus {
    #[serde(rename = "accepted conn", default)]
    pub accepted_conn: u64,
    #[serde(rename = "listen queue", default)]
    pub listen_queue: u64,
    #[serde(rename = "max listen queue", default)]
    pub max_listen_queue: u64,
    #[serde(rename = "idle processes", default)]
    pub idle_processes: u64,
    #[serde(rename = "active processes", default)]
    pub active_processes: u64,
    #[serde(rename = "total processes", default)]
    pub total_processes: u64,
    #[serde(rename = "max active processes", default)]
    pub max_active_processes: u64,
    #[serde(rename = "max children reached", default)]
    pub max_children_reached: u64,
    #[serde(rename = "slow requests", default)]
    pub slow_requests: u64,
}

/// Every metric tqsup exports.
pub struct Metrics {
    registry: Registry,
    requests: [Counter; 6],
    errors: [Counter; 9],
    /// Requests being forwarded now.
    pub in_flight: Gauge,
    /// Requests waiting for a php-fpm connection now.
    pub queue_depth: Gauge,
    queue_wait: Histogram,
    request_duration: Histogram,
    /// Per lane (`forward.lanes`): requests that entered it, requests
    /// waiting in its queue, and how long they waited.
    lane_requests: Family<LaneLabel, Counter>,
    lane_queue_depth: Family<LaneLabel, Gauge>,
    lane_queue_wait: Family<LaneLabel, Histogram>,
    /// Open upstream connections, and how many of them are idle in the pool.
    pub upstream_open: Gauge,
    pub upstream_idle: Gauge,
    pub upstream_busy: Gauge,
    pub upstream_connect_errors: Counter,
    pub replays: Counter,
    breaker_state: Gauge,
    breaker_transitions: Family<StateLabel, Counter>,
    pub downstream_open: Gauge,
    pub downstream_accepted: Counter,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    restarts: Family<ReasonLabel, Counter>,
    /// Children tqsup recycled (memory, lifetime).
    recycles: Family<ReasonLabel, Counter>,
    /// The sum over `restarts`' reasons, for `/status` (families can't be summed).
    restarts_sum: AtomicU64,
    pub php_fpm_up: Gauge,
    last_exit_code: Gauge,
    start_time: Gauge<f64, AtomicU64>,
    reloads: Family<ResultLabel, Counter>,
    hook_runs: Family<HookLabel, Counter>,
    pool_gauges: [Gauge; 6],
    pool_counters: [(Counter, AtomicU64); 3],
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("tqsup");
        let requests_family = Family::<StatusLabel, Counter>::default();
        r.register(
            "forward_requests",
            "Requests answered by the forward listener, by response status class",
            requests_family.clone(),
        );
        let requests = STATUS_CLASSES
            .map(|s| requests_family.get_or_create_owned(&StatusLabel { status: s.into() }));
        let errors_family = Family::<KindLabel, Counter>::default();
        r.register(
            "forward_errors",
            "Requests the forwarder answered itself with an error, or closed, by kind",
            errors_family.clone(),
        );
        let errors = ForwardError::ALL.map(|k| {
            errors_family.get_or_create_owned(&KindLabel {
                kind: k.name().into(),
            })
        });
        let m = Metrics {
            requests,
            errors,
            in_flight: Gauge::default(),
            queue_depth: Gauge::default(),
            queue_wait: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            request_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            lane_requests: Family::default(),
            lane_queue_depth: Family::default(),
            lane_queue_wait: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            upstream_open: Gauge::default(),
            upstream_idle: Gauge::default(),
            upstream_busy: Gauge::default(),
            upstream_connect_errors: Counter::default(),
            replays: Counter::default(),
            breaker_state: Gauge::default(),
            breaker_transitions: Family::default(),
            downstream_open: Gauge::default(),
            downstream_accepted: Counter::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            restarts: Family::default(),
            recycles: Family::default(),
            restarts_sum: AtomicU64::new(0),
            php_fpm_up: Gauge::default(),
            last_exit_code: Gauge::default(),
            start_time: Gauge::default(),
            reloads: Family::default(),
            hook_runs: Family::default(),
            pool_gauges: Default::default(),
            pool_counters: Default::default(),
            registry: Registry::default(),
        };
        r.register(
            "forward_requests_in_flight",
            "Requests being forwarded now",
            m.in_flight.clone(),
        );
        r.register(
            "forward_queue_depth",
            "Requests waiting for a free php-fpm connection",
            m.queue_depth.clone(),
        );
        r.register(
            "forward_lane_requests",
            "Requests that entered a lane (forward.lanes)",
            m.lane_requests.clone(),
        );
        r.register(
            "forward_lane_queue_depth",
            "Requests waiting in a lane's queue",
            m.lane_queue_depth.clone(),
        );
        r.register_with_unit(
            "forward_lane_queue_wait",
            "Time requests waited in a lane's queue",
            Unit::Seconds,
            m.lane_queue_wait.clone(),
        );
        r.register_with_unit(
            "forward_queue_wait",
            "Time requests waited for a php-fpm connection",
            Unit::Seconds,
            m.queue_wait.clone(),
        );
        r.register_with_unit(
            "forward_request_duration",
            "Time from a request's start to its end",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register(
            "upstream_connections_open",
            "Open connections to php-fpm",
            m.upstream_open.clone(),
        );
        r.register(
            "upstream_connections_idle",
            "Open connections to php-fpm idle in the pool",
            m.upstream_idle.clone(),
        );
        r.register(
            "upstream_connections_busy",
            "Open connections to php-fpm serving a request",
            m.upstream_busy.clone(),
        );
        r.register(
            "upstream_connect_errors",
            "Failed connection attempts to php-fpm",
            m.upstream_connect_errors.clone(),
        );
        r.register(
            "forward_replays",
            "Requests replayed on a fresh php-fpm connection",
            m.replays.clone(),
        );
        r.register(
            "forward_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        r.register(
            "forward_breaker_transitions",
            "Circuit breaker state changes, by new state",
            m.breaker_transitions.clone(),
        );
        r.register(
            "downstream_connections_open",
            "Web-server connections open now",
            m.downstream_open.clone(),
        );
        r.register(
            "downstream_connections_accepted",
            "Web-server connections accepted",
            m.downstream_accepted.clone(),
        );
        r.register_with_unit(
            "forward_received",
            "Bytes received from web servers",
            Unit::Bytes,
            m.received_bytes.clone(),
        );
        r.register_with_unit(
            "forward_sent",
            "Bytes sent to web servers",
            Unit::Bytes,
            m.sent_bytes.clone(),
        );
        r.register(
            "php_fpm_restarts",
            "php-fpm restarts, by reason",
            m.restarts.clone(),
        );
        r.register(
            "php_fpm_recycles",
            "php-fpm children recycled by tqsup, by reason (memory, lifetime)",
            m.recycles.clone(),
        );
        r.register(
            "php_fpm_up",
            "1 when php-fpm answers its ping",
            m.php_fpm_up.clone(),
        );
        r.register(
            "php_fpm_last_exit_code",
            "Exit code of the last php-fpm exit (-signal when killed)",
            m.last_exit_code.clone(),
        );
        r.register_with_unit(
            "php_fpm_start_time",
            "Unix time php-fpm was last started",
            Unit::Seconds,
            m.start_time.clone(),
        );
        r.register("php_fpm_reloads", "Reloads, by result", m.reloads.clone());
        r.register(
            "dev_hook_runs",
            "Dev-mode hook runs, by hook and result",
            m.hook_runs.clone(),
        );
        let pool_gauge_names = [
            (
                "phpfpm_listen_queue",
                "php-fpm: connections waiting in its listen queue",
            ),
            (
                "phpfpm_max_listen_queue",
                "php-fpm: the most connections ever waiting in its listen queue",
            ),
            ("phpfpm_idle_processes", "php-fpm: idle children"),
            (
                "phpfpm_active_processes",
                "php-fpm: children serving a request",
            ),
            ("phpfpm_total_processes", "php-fpm: children"),
            (
                "phpfpm_max_active_processes",
                "php-fpm: the most children ever active at once",
            ),
        ];
        for (g, (name, help)) in m.pool_gauges.iter().zip(pool_gauge_names) {
            r.register(name, help, g.clone());
        }
        let pool_counter_names = [
            (
                "phpfpm_accepted_connections",
                "php-fpm: connections accepted by the pool",
            ),
            (
                "phpfpm_max_children_reached",
                "php-fpm: times the pool hit pm.max_children",
            ),
            (
                "phpfpm_slow_requests",
                "php-fpm: requests slower than request_slowlog_timeout",
            ),
        ];
        for ((c, _), (name, help)) in m.pool_counters.iter().zip(pool_counter_names) {
            r.register(name, help, c.clone());
        }
        // Known label values start at 0, so rates and alerts see them
        // before the first event (hook names are only known at run time).
        for reason in ["exit", "liveness", "ready_timeout", "requested"] {
            let _ = m.restarts.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for reason in ["memory", "lifetime"] {
            let _ = m.recycles.get_or_create(&ReasonLabel {
                reason: reason.into(),
            });
        }
        for result in ["ok", "failed"] {
            let _ = m.reloads.get_or_create(&ResultLabel {
                result: result.into(),
            });
        }
        for state in ["closed", "half_open", "open"] {
            let _ = m.breaker_transitions.get_or_create(&StateLabel {
                state: state.into(),
            });
        }
        Metrics { registry: r, ..m }
    }

    /// A response went out with this CGI status (0 when none was parsed).
    pub fn request_done(&self, status: u16, elapsed: Duration) {
        let class = match status / 100 {
            c @ 1..=5 => c as usize,
            _ => 0,
        };
        self.requests[class].inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    pub fn forward_error(&self, kind: ForwardError) {
        // ALL lists the variants in declaration order.
        self.errors[kind as usize].inc();
    }

    /// Increments `gauge` until the returned guard is dropped (a request in
    /// flight, a request in the queue, a connection open).
    pub fn hold(&'static self, gauge: fn(&Metrics) -> &Gauge) -> GaugeGuard {
        let g = gauge(self);
        g.inc();
        GaugeGuard(g)
    }

    /// A request joined (`+1`) or left (`-1`) lane `lane`'s queue.
    pub fn lane_queued(&self, lane: &str, delta: i64) {
        self.lane_queue_depth
            .get_or_create(&LaneLabel { lane: lane.into() })
            .inc_by(delta);
    }

    /// A request entered lane `lane` after waiting `waited`.
    pub fn lane_entered(&self, lane: &str, waited: Duration) {
        let label = LaneLabel { lane: lane.into() };
        self.lane_requests.get_or_create(&label).inc();
        self.lane_queue_wait
            .get_or_create(&label)
            .observe(waited.as_secs_f64());
    }

    pub fn queue_waited(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    pub fn breaker(&self, state: BreakerState) {
        let previous = self.breaker_state.set(state as i64);
        if previous != state as i64 {
            let name = match state {
                BreakerState::Closed => "closed",
                BreakerState::HalfOpen => "half_open",
                BreakerState::Open => "open",
            };
            self.breaker_transitions
                .get_or_create(&StateLabel { state: name.into() })
                .inc();
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        match self.breaker_state.get() {
            1 => BreakerState::HalfOpen,
            2 => BreakerState::Open,
            _ => BreakerState::Closed,
        }
    }

    /// tqsup started recycling a php-fpm child (`memory` or `lifetime`).
    pub fn php_fpm_recycled(&self, reason: &str) {
        self.recycles
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// A php-fpm restart was scheduled; `reason` is `exit` (it ended on its
    /// own), `liveness` (stopped answering), `ready_timeout` or `requested`.
    pub fn php_fpm_restarted(&self, reason: &str) {
        self.restarts
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
        self.restarts_sum.fetch_add(1, Ordering::Relaxed);
    }

    pub fn php_fpm_started(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.start_time.set(now.as_secs_f64());
    }

    /// php-fpm exited with `code` (negative: killed by that signal).
    pub fn php_fpm_exited(&self, code: i64) {
        self.last_exit_code.set(code);
        self.php_fpm_up.set(0);
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn hook_run(&self, hook: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.hook_runs
            .get_or_create(&HookLabel {
                hook: hook.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Sets the php-fpm pool gauges from a scrape; counters advance by the
    /// difference (a restarted php-fpm starts again from zero: no step back).
    pub fn pool_status(&self, s: &PoolStatus) {
        let gauges = [
            s.listen_queue,
            s.max_listen_queue,
            s.idle_processes,
            s.active_processes,
            s.total_processes,
            s.max_active_processes,
        ];
        for (g, v) in self.pool_gauges.iter().zip(gauges) {
            g.set(v as i64);
        }
        for ((c, last), v) in self.pool_counters.iter().zip([
            s.accepted_conn,
            s.max_children_reached,
            s.slow_requests,
        ]) {
            let before = last.swap(v, Ordering::Relaxed);
            if v > before {
                c.inc_by(v - before);
            }
        }
    }

    /// Seconds since php-fpm's last start (0 when it never started).
    pub fn php_fpm_uptime(&self) -> f64 {
        let start = self.start_time.get();
        if start == 0.0 {
            return 0.0;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (now.as_secs_f64() - start).max(0.0)
    }

    /// Whether php-fpm answered the supervisor's last ping; None when tqsup
    /// does not launch php-fpm (forward-only: nothing pings it but the
    /// forwarder's health probe, which drives the breaker).
    pub fn php_fpm_answering(&self) -> Option<bool> {
        (self.start_time.get() != 0.0).then(|| self.php_fpm_up.get() == 1)
    }

    /// Total php-fpm restarts so far (all reasons).
    pub fn restarts_total(&self) -> u64 {
        self.restarts_sum.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_index_their_counters() {
        for (i, k) in ForwardError::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "{k:?}");
        }
        let m = Metrics::new();
        m.forward_error(ForwardError::TooManyRequests);
        assert!(
            m.encode()
                .contains("tqsup_forward_errors_total{kind=\"too_many_requests\"} 1")
        );
    }

    #[test]
    fn a_held_gauge_goes_back_down() {
        // Not the global one: other tests move its gauges concurrently.
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let g = m.hold(|m| &m.queue_depth);
        assert_eq!(m.queue_depth.get(), 1);
        drop(g);
        assert_eq!(m.queue_depth.get(), 0);
    }

    #[test]
    fn names_follow_conventions_and_counts_add_up() {
        let m = Metrics::new();
        m.request_done(200, Duration::from_millis(3));
        m.request_done(503, Duration::from_millis(1));
        m.forward_error(ForwardError::QueueTimeout);
        m.breaker(BreakerState::Open);
        m.pool_status(&PoolStatus {
            accepted_conn: 7,
            total_processes: 4,
            ..Default::default()
        });
        m.pool_status(&PoolStatus {
            accepted_conn: 9,
            total_processes: 4,
            ..Default::default()
        });
        let text = m.encode();
        assert!(
            text.contains("tqsup_forward_requests_total{status=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tqsup_forward_requests_total{status=\"5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tqsup_forward_request_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("tqsup_forward_errors_total{kind=\"queue_timeout\"} 1"),
            "{text}"
        );
        assert!(text.contains("tqsup_forward_breaker_state 2"), "{text}");
        assert!(
            text.contains("tqsup_phpfpm_accepted_connections_total 9"),
            "{text}"
        );
        assert!(text.contains("tqsup_phpfpm_total_processes 4"), "{text}");
        assert!(
            text.contains("tqsup_forward_received_bytes_total 0"),
            "{text}"
        );
    }
}
