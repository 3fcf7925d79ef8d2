//! php-fpm's internal paths (`ping.path`, `pm.status_path`): rendered into
//! the pool's config, used by tqsup's own probes, refused by the forwarder.

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
