//! The one shared view of php-fpm between the supervisor (who starts it) and
//! the forwarder, health probe, dev HTTP front and admin (who talk to it).
//!
//! The supervisor owns a `watch::Sender<PhpFpmState>`; everyone else holds a
//! receiver. While php-fpm is not `Ready`, the forwarder queues new requests
//! instead of failing them (DESIGN §7: "a php-fpm restart by the supervisor
//! holds new requests in the queue").

use std::sync::Arc;

use crate::config::Endpoint;
pub use crate::fcgi::backend::Backend;

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

/// php-fpm's internal paths (`ping.path`, `pm.status_path`), holding a random
/// token made at each start of tqsup. php-fpm matches them against
/// SCRIPT_NAME; the forward listener refuses to forward them (404), so only
/// tqsup reaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalPaths {
    pub ping: String,
    pub status: String,
    /// `/.tqsup-<token>`: anything under it is internal.
    pub prefix: String,
}

impl InternalPaths {
    /// Fresh paths with a random 128-bit token.
    pub fn generate() -> Self {
        Self::from_token(rand::random())
    }

    /// Paths for a given token (stable tokens for `render` and `print-cmd`).
    pub fn from_token(token: u128) -> Self {
        let prefix = format!("/.tqsup-{token:032x}");
        InternalPaths {
            ping: format!("{prefix}/ping"),
            status: format!("{prefix}/status"),
            prefix,
        }
    }

    /// Whether a request's SCRIPT_NAME is (or is under) one of these paths.
    /// Matching the token prefix anywhere also covers `//` and `/./` forms.
    pub fn is_internal(&self, script_name: &[u8]) -> bool {
        let p = self.prefix.as_bytes();
        script_name.windows(p.len()).any(|w| w == p)
    }
}
