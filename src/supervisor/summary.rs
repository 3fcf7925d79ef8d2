//! The one-line summary of tqsup's state, shared by systemd's `STATUS=`
//! (sent by the supervisor) and `/status` (the admin endpoint, which adds
//! php-fpm's child counts from its status page).

use crate::fcgi::breaker::{self, Position, SharedBreaker};
use crate::fcgi::upstream::PhpFpmState;

/// php-fpm's children as its status page counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildCounts {
    pub total: u64,
    pub active: u64,
    pub idle: u64,
}

/// How `/status` and the summary name a breaker position.
pub fn breaker_word(p: Position) -> String {
    <&str>::from(p).replace('_', "-")
}

/// The one-line summary shared by `/status` and systemd's `STATUS=`.
pub fn summary(
    state: &PhpFpmState,
    children: Option<ChildCounts>,
    breaker: Option<&SharedBreaker>,
) -> String {
    let forward = crate::fcgi::metrics::global();
    let head = match state {
        PhpFpmState::Starting => "php-fpm starting".to_string(),
        PhpFpmState::Ready { backend } => {
            format!("php-fpm ready (generation {})", backend.generation)
        }
        PhpFpmState::Restarting => "php-fpm restarting".to_string(),
        PhpFpmState::Stopped => "stopping".to_string(),
    };
    let children = match children {
        Some(c) => format!(
            "; {} children: {} active, {} idle",
            c.total, c.active, c.idle
        ),
        None => String::new(),
    };
    let breaker = breaker_word(breaker::position(breaker));
    format!(
        "{head}{children}; {} in flight, {} queued; breaker {breaker}; {} restarts",
        forward.in_flight.get(),
        forward.queue_depth.get(),
        super::metrics::global().restarts_total()
    )
}
