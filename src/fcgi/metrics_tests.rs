//! The forwarder's metrics as encoded: the hot path's indexes match their
//! labels, and a held gauge goes back down.

use std::time::Duration;

use strum::IntoEnumIterator;

use super::*;
use crate::metrics::registry::fresh;

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
    let (m, reg) = fresh::<Metrics>();
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
        assert!(reg.encode().contains(&line), "{line}");
    }
    assert!(
        reg.encode()
            .contains("tqsup_forward_errors_total{kind=\"too_many_requests\"} 1")
    );
}

#[test]
fn a_held_gauge_goes_back_down() {
    let (m, _) = fresh::<Metrics>();
    let g = m.hold(|m| &m.queue_depth);
    assert_eq!(m.queue_depth.get(), 1);
    drop(g);
    assert_eq!(m.queue_depth.get(), 0);
}

#[test]
fn labels_are_snake_case_and_known_ones_start_at_zero() {
    let (m, reg) = fresh::<Metrics>();
    m.request_done(200, Duration::from_millis(3));
    m.forward_error(ForwardError::QueueTimeout);
    m.breaker(Position::HalfOpen);
    let text = reg.encode();
    for line in [
        "tqsup_forward_request_duration_seconds_count 1",
        "tqsup_forward_errors_total{kind=\"queue_timeout\"} 1",
        "tqsup_forward_errors_total{kind=\"upstream_unreachable\"} 0",
        "tqsup_forward_breaker_state 1",
        "tqsup_forward_breaker_transitions_total{state=\"half_open\"} 1",
        "tqsup_forward_breaker_transitions_total{state=\"open\"} 0",
        "tqsup_forward_received_bytes_total 0",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
}
