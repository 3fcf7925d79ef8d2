//! What the supervisor tells the rest of tqsup and systemd: the
//! [`PhpFpmState`] the forwarder, admin and dev front read, and READY=1,
//! STATUS= and RELOADING=1.

use sd_notify::NotifyState;

use super::Supervisor;
use super::child::PhpFpm;
use crate::fcgi::breaker::SharedBreaker;
use crate::fcgi::upstream::{Backend, PhpFpmState};

impl Supervisor {
    /// Publishes `state`; a backend that stops being the current one is
    /// retired (lends nothing more, its idle connections closed).
    pub(super) fn publish(&mut self, state: PhpFpmState) {
        let old = self.published.send_replace(state);
        if let PhpFpmState::Ready { backend } = old
            && self.published.borrow().backend() != Some(&backend)
        {
            backend.retire();
        }
    }

    /// Publishes the php-fpm that just answered its ping as ready (a new
    /// backend, the next generation) and tells systemd.
    pub(super) fn publish_ready(&mut self) {
        self.generation += 1;
        let g = &self.setup.generation;
        let pool = &g.config.php_fpm.pool;
        let pid = self.child.as_ref().map_or(0, PhpFpm::pid);
        let children = pool
            .recycles()
            .then(|| crate::fcgi::backend::Children::new(pid, &pool.name));
        let backend = Backend::with_children(
            self.generation,
            g.files.endpoint.clone(),
            Some(g.files.status.clone()),
            g.config.php_fpm.pool_size,
            pool.max_requests,
            children,
        );
        self.backend = Some(backend.clone());
        self.seen_completed = 0;
        let ready = PhpFpmState::Ready { backend };
        self.set_answering(true);
        let status = super::summary(&ready, None, self.breaker.as_ref());
        tracing::info!(pid, generation = self.generation, endpoint = %g.files.endpoint, pool = %pool.name, "php-fpm is ready");
        self.publish(ready);
        if self.notified_ready {
            sd(&[NotifyState::Status(&status)]);
        } else {
            self.notified_ready = true;
            sd(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
    }
}

/// STATUS= for systemd: the one-line summary `/status` shows too.
pub(super) fn sd_status(state: &PhpFpmState, breaker: Option<&SharedBreaker>) {
    sd(&[NotifyState::Status(&super::summary(state, None, breaker))]);
}

/// sd_notify, ignoring errors (no systemd is fine).
pub fn sd(states: &[NotifyState]) {
    let _ = sd_notify::notify(states);
}

/// RELOADING=1 with the monotonic timestamp systemd ≥ 253 requires.
pub(super) fn sd_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => sd(&[NotifyState::Reloading, now]),
        Err(_) => sd(&[NotifyState::Reloading]),
    }
}
