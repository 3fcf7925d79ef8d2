//! Every subsystem's metrics together, as `/metrics` encodes them: every
//! metric once, named by the scheme, and all of them registered at start-up.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::metrics::MetricType;

use super::registry::{Group, Reg, fresh, metrics};
use crate::admin::metrics::{Pool, StatusPage};

metrics! {
    /// Every group `app::register_metrics` registers.
    struct All {
        forward: crate::fcgi::metrics::Metrics = group(),
        /// Encoded without being touched: its families start at 0.
        #[expect(dead_code)]
        php_fpm: crate::supervisor::metrics::Metrics = group(),
        dev: crate::dev::metrics::Metrics = group(),
        status_page: StatusPage = group(),
    }
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
    let (m, reg) = fresh::<All>();
    // A family is encoded once it has a member: lanes and hooks are named
    // at run time, the pool by its status page.
    m.forward.lane_queued("slow", 1);
    m.forward.lane_entered("slow", Duration::ZERO);
    m.dev.hook_run("build", true);
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
    let text = reg.encode();
    let types = types(&text);
    let names = reg.names();
    assert_eq!(types.len(), names.len(), "{text}");
    for name in names {
        let (kind, times) = types
            .get(name)
            .unwrap_or_else(|| panic!("{name} not encoded:\n{text}"));
        assert_eq!(*times, 1, "{name}");
        let kind = match kind.as_str() {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            other => panic!("{name}: {other}"),
        };
        assert!(super::registry::follows_scheme(name, kind), "{name}");
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

/// What `app` registers at start-up is every group above, each once: the
/// first scrape lists every metric.
#[test]
fn start_up_registers_every_group_once() {
    crate::app::register_metrics();
    let mut all = Reg::default();
    All::register(&mut all);
    let mut expected = all.names().to_vec();
    expected.sort();
    let mut registered = super::names();
    registered.sort();
    assert_eq!(registered, expected);
    let types = types(&super::encode());
    for (name, (_, times)) in types {
        assert_eq!(times, 1, "{name}");
    }
}
