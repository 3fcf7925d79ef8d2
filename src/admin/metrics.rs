//! php-fpm's own status page (`pm.status_path?json`) as gauges named as
//! php-fpm exporters name them (hipages/php-fpm_exporter: `phpfpm_*{pool}`),
//! so dashboards made for them work. Each holds php-fpm's own value, as the
//! exporter's do: the counting ones start again from 0 when php-fpm does,
//! which `rate()` takes as a counter reset. They are gauges because an
//! OpenMetrics counter's samples must end `_total`, which the exporter's
//! names do not. The admin endpoint sets them at each scrape
//! (`status.rs`).

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::registry::metrics;

/// php-fpm's pool, by its name on the status page.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Pool {
    pub pool: String,
}

/// One gauge per pool.
type PerPool = Family<Pool, Gauge>;

metrics! {
    /// The status page's values, each under the exporter's name.
    pub struct StatusPage {
        pub up: PerPool = metric("phpfpm_up", "1 when the last scrape of php-fpm's status page succeeded"),
        pub scrape_failures: PerPool = metric("phpfpm_scrape_failures", "Failed scrapes of php-fpm's status page"),
        pub start_since: PerPool = metric("phpfpm_start_since", "Seconds since php-fpm started"),
        pub accepted_connections: PerPool = metric("phpfpm_accepted_connections", "Requests accepted by the pool"),
        pub listen_queue: PerPool = metric("phpfpm_listen_queue", "Requests in the queue of pending connections"),
        pub max_listen_queue: PerPool = metric("phpfpm_max_listen_queue", "The most requests ever in the queue of pending connections"),
        pub listen_queue_length: PerPool = metric("phpfpm_listen_queue_length", "Size of the socket queue of pending connections"),
        pub idle_processes: PerPool = metric("phpfpm_idle_processes", "Idle children"),
        pub active_processes: PerPool = metric("phpfpm_active_processes", "Children serving a request"),
        pub total_processes: PerPool = metric("phpfpm_total_processes", "Idle + active children"),
        pub max_active_processes: PerPool = metric("phpfpm_max_active_processes", "The most children ever active at once"),
        pub max_children_reached: PerPool = metric("phpfpm_max_children_reached", "Times the pool hit pm.max_children"),
        pub slow_requests: PerPool = metric("phpfpm_slow_requests", "Requests slower than request_slowlog_timeout"),
    }
}

/// The status page's gauges in the process-wide registry.
pub fn global() -> &'static StatusPage {
    static METRICS: OnceLock<StatusPage> = OnceLock::new();
    METRICS.get_or_init(crate::metrics::register)
}
