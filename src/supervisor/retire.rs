//! Old php-fpm instances on their way out, each in a task of its own so the
//! supervisor goes on with the new one (DESIGN §6).
//!
//! - [`replaced`]: after a reload switched the pool to the new php-fpm, the
//!   old one finishes the requests it has (its idle pooled connections are
//!   already closed, so its idle children quit at once on SIGQUIT), then
//!   gets php-fpm's graceful stop. Bounded by `stop_timeout_ms`.
//! - [`orphaned`]: a master that died on its own leaves children that may
//!   still be running requests; they finish them (bounded by
//!   `stop_timeout_ms`) while the next php-fpm starts on its own sockets,
//!   then the group is killed.
//!
//! Either way the instance's sockets are removed once it is gone.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::child::PhpFpm;
use crate::config::Endpoint;
use crate::fcgi::upstream::Backend;
use crate::render::RenderedFiles;

/// Retires a php-fpm that a reload replaced.
pub async fn replaced(
    mut child: PhpFpm,
    backend: Option<Arc<Backend>>,
    files: RenderedFiles,
    grace: Duration,
    stop: CancellationToken,
) {
    let pid = child.pid();
    if let Some(b) = backend {
        let busy = b.busy();
        tracing::info!(
            pid,
            in_flight = busy,
            "old php-fpm finishes its requests, then stops"
        );
        tokio::select! {
            _ = b.drained() => {}
            _ = tokio::time::sleep(grace) => {
                tracing::warn!(pid, in_flight = b.busy(), ?grace, "old php-fpm still busy after stop_timeout_ms; stopping it");
            }
            _ = stop.cancelled() => {}
        }
    }
    child.stop(grace).await;
    let exit = child.exit_kind().await;
    child.reap_group().await;
    remove_sockets(&files);
    tracing::info!(pid, ?exit, "old php-fpm stopped");
}

/// Lets the children of a master that died finish their requests, then
/// kills what is left of its group.
pub async fn orphaned(
    child: PhpFpm,
    backend: Option<Arc<Backend>>,
    files: RenderedFiles,
    grace: Duration,
) {
    if let Some(b) = backend
        && b.busy() > 0
    {
        tracing::info!(
            pid = child.pid(),
            in_flight = b.busy(),
            "php-fpm's master is gone; its children finish their requests"
        );
        let _ = tokio::time::timeout(grace, b.drained()).await;
    }
    child.reap_group().await;
    remove_sockets(&files);
}

/// Removes an instance's unix sockets (php-fpm leaves them behind when it
/// is killed).
fn remove_sockets(files: &RenderedFiles) {
    for e in [&files.endpoint, &files.status] {
        if let Endpoint::Unix(p) = e
            && p.starts_with(&files.dir)
        {
            let _ = std::fs::remove_file(p);
        }
    }
}
