//! `supervisor:`: when php-fpm is restarted, how fast, and how long it may
//! take to start and stop.

use super::*;

pub(super) fn read(c: &mut Checker, r: &RawSupervisor) -> Supervisor {
    let restart = c.choice(key!(r.restart)).unwrap_or(RESTART);
    let backoff_initial = c.ms(key!(r.backoff_initial_ms), BACKOFF_INITIAL, 1);
    let backoff_max = c.ms(key!(r.backoff_max_ms), BACKOFF_MAX, 1);
    let (max, initial) = (backoff_max.as_millis(), backoff_initial.as_millis());
    let why = format!("({max}) is less than backoff_initial_ms ({initial})");
    let fix = "make backoff_max_ms at least backoff_initial_ms";
    c.require(max >= initial, "backoff_max_ms", why, fix);
    let unlimited = "a whole number (0 = unlimited)";
    Supervisor {
        restart,
        backoff_initial,
        backoff_max,
        stable_after: c.ms(key!(r.stable_after_ms), STABLE_AFTER, 0),
        max_restarts: c.or(key!(r.max_restarts), MAX_RESTARTS, unlimited),
        restart_window: c.ms(key!(r.restart_window_ms), RESTART_WINDOW, 1),
        ready_timeout: c.ms(key!(r.ready_timeout_ms), READY_TIMEOUT, 1),
        stop_timeout: c.ms(key!(r.stop_timeout_ms), STOP_TIMEOUT, 0),
    }
}
