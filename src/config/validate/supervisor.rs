//! `supervisor:`: when php-fpm is restarted, how fast, and how long it may
//! take to start and stop.

use super::Checker;
use crate::config::defaults::*;
use crate::config::model::Supervisor;
use crate::config::raw::RawSupervisor;

pub(super) fn read(c: &mut Checker, r: &RawSupervisor) -> Supervisor {
    let restart = c.choice(key!(r.restart)).unwrap_or(RESTART);
    let backoff_initial = c.ms(key!(r.backoff_initial_ms), BACKOFF_INITIAL, 1);
    let backoff_max = c.ms(key!(r.backoff_max_ms), BACKOFF_MAX, 1);
    if backoff_max < backoff_initial {
        let (max, initial) = (backoff_max.as_millis(), backoff_initial.as_millis());
        let message = format!("({max}) is less than backoff_initial_ms ({initial})");
        c.problem(
            "backoff_max_ms",
            message,
            "make backoff_max_ms at least backoff_initial_ms",
        );
    }
    Supervisor {
        restart,
        backoff_initial,
        backoff_max,
        stable_after: c.ms(key!(r.stable_after_ms), STABLE_AFTER, 0),
        max_restarts: c.or(
            key!(r.max_restarts),
            MAX_RESTARTS,
            "a whole number (0 = unlimited)",
        ),
        restart_window: c.ms(key!(r.restart_window_ms), RESTART_WINDOW, 1),
        ready_timeout: c.ms(key!(r.ready_timeout_ms), READY_TIMEOUT, 1),
        stop_timeout: c.ms(key!(r.stop_timeout_ms), STOP_TIMEOUT, 0),
    }
}
