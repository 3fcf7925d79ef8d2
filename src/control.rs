//! Requests to the supervisor from signals, dev-mode hooks, the config
//! watcher and (later) the admin endpoint. Reloads are serialized by the
//! supervisor, which handles one request at a time.

/// What someone asks the supervisor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config file, render a new file set, `php-fpm -t` it, and
    /// only if good swap it in and SIGUSR2 php-fpm (or restart it when its
    /// listen address changed). A bad config keeps the old one serving.
    Reload { reason: String },
    /// Stop php-fpm gracefully and start it again with the current config.
    Restart { reason: String },
    /// Forward SIGUSR1: php-fpm reopens its logs.
    ReopenLogs,
}
