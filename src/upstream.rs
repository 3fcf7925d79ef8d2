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
/// token made at each start of tqsup. php-fpm matches them against the
/// request path it derives from SCRIPT_NAME, but also from REDIRECT_URL (with
/// PATH_TRANSLATED), PATH_INFO and REQUEST_URI; the forward listener refuses
/// (404) any request whose params hold the token anywhere, so only tqsup
/// reaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalPaths {
    pub ping: String,
    pub status: String,
    /// `/.tqsup-<token>`: anything under it is internal.
    pub prefix: String,
    /// The searcher for `prefix`, built once: building one costs more than
    /// searching a request's params with it (a quarter of the forwarder's
    /// instructions per request when built for each).
    finder: PrefixFinder,
}

/// A [`memchr::memmem::Finder`] for [`InternalPaths::prefix`]; equal when
/// the prefixes are (it is made from it).
#[derive(Debug, Clone)]
struct PrefixFinder(memchr::memmem::Finder<'static>);

impl PartialEq for PrefixFinder {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PrefixFinder {}

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
            finder: PrefixFinder(memchr::memmem::Finder::new(prefix.as_bytes()).into_owned()),
            prefix,
        }
    }

    /// Whether the token prefix occurs anywhere in `bytes`: one vectorised
    /// pass, no allocation. Given a request's raw PARAMS stream (lengths,
    /// names and values), it finds the prefix in every name and value (each
    /// is contiguous there); it may also match across a pair's length bytes,
    /// which only someone who knows the token can write, and then refusing
    /// is right too. Matching the prefix anywhere covers `//` and `/./`
    /// forms and every variable php-fpm derives its path from.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        self.finder.0.find(bytes).is_some()
    }
}
