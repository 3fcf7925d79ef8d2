//! The one shared view of php-fpm between the supervisor (who starts it) and
//! the forwarder, health probe, dev HTTP front and admin (who talk to it).
//!
//! The supervisor owns a `watch::Sender<PhpFpmState>`; everyone else holds a
//! receiver. While php-fpm is not `Ready`, the forwarder queues new requests
//! instead of failing them (DESIGN §7: "a php-fpm restart by the supervisor
//! holds new requests in the queue").

use std::sync::Arc;

pub use super::backend::Backend;
use crate::config::Endpoint;

/// php-fpm as the supervisor sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum PhpFpmState {
    /// Launched, not yet answering its ping.
    Starting,
    /// Answering its ping. The backend's `generation` grows at every
    /// (re)start and reload; the backend holds php-fpm's endpoint, the
    /// forwarder's connection budget for it (≤ max_children) and its pooled
    /// connections, and is retired when this php-fpm is replaced.
    Ready { backend: Arc<Backend> },
    /// Exited or failed its liveness probe; a restart is scheduled.
    Restarting,
    /// tqsup is stopping; nothing will come back.
    Stopped,
}

impl PhpFpmState {
    pub fn is_ready(&self) -> bool {
        matches!(self, PhpFpmState::Ready { .. })
    }

    /// The ready php-fpm's backend.
    pub fn backend(&self) -> Option<&Arc<Backend>> {
        match self {
            PhpFpmState::Ready { backend } => Some(backend),
            _ => None,
        }
    }

    /// The ready php-fpm's main endpoint.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.backend().map(|b| &b.endpoint)
    }
}
