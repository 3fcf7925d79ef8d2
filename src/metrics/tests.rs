//! The registry as encoded: every metric once, named by the scheme, and
//! the hot path's indexes matching their labels.

use std::collections::BTreeMap;
use std::time::Duration;

use strum::IntoEnumIterator;

use super::*;
use crate::fcgi::breaker::Position;

/// Fresh metrics (not the global ones: other tests move those), the names
/// registered and the encoding.
fn fresh() -> (&'static Metrics, Vec<String>, Registry) {
    let mut reg = Reg::default();
    let m = Box::leak(Box::new(Metrics::register(&mut reg)));
    let names = reg.names().to_vec();
    (m, names, reg.finish())
}

/// `# TYPE` lines of the encoding: family name → type, and how many times.
fn types(text: &str) -> BTreeMap<String, (String, usize)> {
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let e = types
                .entry(name.to_string())
                .or_insert((kind.to_string(), 0));
            e.1 += 1;
        }
    }
    types
}

#[test]
fn every_registered_metric_is_encoded_once_and_named_by_the_scheme() {
    let (m, names, registry) = fresh();
    // A family is encoded once it has a member: lanes and hooks are named
    // at run time, the pool by its status page.
    m.lane_queued("slow", 1);
    m.lane_entered("slow", Duration::ZERO);
    m.hook_run("build", true);
    let p = Pool { pool: "www".into() };
    let s = &m.status_page;
    for g in [
        &s.up,
        &s.scrape_failures,
        &s.start_since,
        &s.accepted_connections,
        &s.listen_queue,
        &s.max_listen_queue,
        &s.listen_queue_length,
        &s.idle_processes,
        &s.active_processes,
        &s.total_processes,
        &s.max_active_processes,
        &s.max_children_reached,
        &s.slow_requests,
    ] {
        g.get_or_create(&p).set(1);
    }
    let text = encode_registry(&registry);
    let types = types(&text);
    assert_eq!(types.len(), names.len(), "{text}");
    for name in &names {
        let (kind, times) = types
            .get(name)
            .unwrap_or_else(|| panic!("{name} not encoded:\n{text}"));
        assert_eq!(*times, 1, "{name}");
        let kind = match kind.as_str() {
            "counter" => prometheus_client::metrics::MetricType::Counter,
            "gauge" => prometheus_client::metrics::MetricType::Gauge,
            "histogram" => prometheus_client::metrics::MetricType::Histogram,
            other => panic!("{name}: {other}"),
        };
        assert!(registry::follows_scheme(name, kind), "{name}");
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: no help");
    }
    // Units come from the names.
    assert!(
        text.contains("# UNIT tqsup_forward_sent_bytes bytes"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT tqsup_forward_queue_wait_seconds seconds"),
        "{text}"
    );
}

#[test]
fn indexes_follow_the_enums() {
    for (i, k) in ForwardError::iter().enumerate() {
        assert_eq!(k as usize, i, "{k:?}");
    }
    // request_done indexes by the status' first digit.
    for (i, c) in StatusClass::iter().enumerate() {
        assert_eq!(c as usize, i, "{c:?}");
    }
    for (p, n) in [
        (Position::Closed, 0),
        (Position::HalfOpen, 1),
        (Position::Open, 2),
    ] {
        assert_eq!(p as i64, n, "the breaker gauge's help says so");
    }
    let (m, _, registry) = fresh();
    m.forward_error(ForwardError::TooManyRequests);
    for (status, class) in [
        (102, "1xx"),
        (204, "2xx"),
        (302, "3xx"),
        (404, "4xx"),
        (503, "5xx"),
        (0, "other"),
    ] {
        m.request_done(status, Duration::ZERO);
        let line = format!("tqsup_forward_requests_total{{status=\"{class}\"}} 1");
        assert!(encode_registry(&registry).contains(&line), "{line}");
    }
    assert!(
        encode_registry(&registry)
            .contains("tqsup_forward_errors_total{kind=\"too_many_requests\"} 1")
    );
}

#[test]
fn a_held_gauge_goes_back_down() {
    let (m, _, _) = fresh();
    let g = m.hold(|m| &m.queue_depth);
    assert_eq!(m.queue_depth.get(), 1);
    drop(g);
    assert_eq!(m.queue_depth.get(), 0);
}

#[test]
fn labels_are_snake_case_and_known_ones_start_at_zero() {
    let (m, _, registry) = fresh();
    m.request_done(200, Duration::from_millis(3));
    m.forward_error(ForwardError::QueueTimeout);
    m.breaker(Position::HalfOpen);
    m.php_fpm_restarted(crate::supervisor::state::Cause::ReadyTimeout);
    m.php_fpm_recycled(crate::supervisor::recycle::Reason::Lifetime);
    m.reload(false);
    m.hook_run("build", true);
    let text = encode_registry(&registry);
    for line in [
        "tqsup_forward_request_duration_seconds_count 1",
        "tqsup_forward_errors_total{kind=\"queue_timeout\"} 1",
        "tqsup_forward_errors_total{kind=\"upstream_unreachable\"} 0",
        "tqsup_forward_breaker_state 1",
        "tqsup_forward_breaker_transitions_total{state=\"half_open\"} 1",
        "tqsup_forward_breaker_transitions_total{state=\"open\"} 0",
        "tqsup_php_fpm_restarts_total{reason=\"ready_timeout\"} 1",
        "tqsup_php_fpm_restarts_total{reason=\"liveness\"} 0",
        "tqsup_php_fpm_recycles_total{reason=\"lifetime\"} 1",
        "tqsup_php_fpm_recycles_total{reason=\"memory\"} 0",
        "tqsup_php_fpm_reloads_total{result=\"failed\"} 1",
        "tqsup_php_fpm_reloads_total{result=\"ok\"} 0",
        "tqsup_dev_hook_runs_total{hook=\"build\",result=\"ok\"} 1",
        "tqsup_forward_received_bytes_total 0",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    assert_eq!(m.restarts_total(), 1);
}
