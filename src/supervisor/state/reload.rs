//! The reload rules of the state machine (DESIGN §6): reloads are
//! serialized, requests during a reload or a start coalesce into one more
//! reload after it, what a prepared reload means depends on whether
//! php-fpm still runs, a reload never becomes a restart (except for
//! php-fpm's changed address or command line), and a stop abandons the
//! reload in progress and drops the pending one.
//!
//! The I/O task runs the reload and holds what it prepared (the new
//! generation, the php-fpm started beside); the state machine only sees
//! its payload-free [`Prepared`] kind.

use super::{Action, Event, Phase};

/// What the state machine remembers about reloads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reload {
    /// The reload in progress, if any (one at a time).
    pub step: Option<Step>,
    /// A reload asked for during a reload or a start, with the latest
    /// request's reason: one more reload afterwards, whatever the number of
    /// requests.
    pub pending: Option<String>,
}

/// Where the reload in progress is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Validating the new config aside (and, beside, starting the new
    /// php-fpm and waiting for its `pong`): ends in [`Event::ReloadPrepared`].
    Preparing,
    /// SIGUSR2 sent: waiting for php-fpm to answer again; ends in
    /// [`Event::Reloaded`].
    Signaled,
}

/// How the preparation of a reload ended, without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The new config was not applied (invalid, rejected by `php-fpm -t`,
    /// the new php-fpm never answered, no file to re-read).
    Refused,
    /// A new php-fpm with the new config answers beside the running one.
    Beside,
    /// The new files are written where the running php-fpm reads them.
    Signal,
    /// The change needs a restart: php-fpm's fixed address or command line
    /// changed (`why` says which).
    Restart { why: String },
}

/// The reason of the reload that replaces one whose new php-fpm was
/// ready beside a php-fpm that went down meanwhile.
pub const INTERRUPTED: &str = "a reload interrupted by a restart";

/// A reload was asked for: it starts now while php-fpm runs and no reload
/// is in progress; otherwise it waits (coalesced into the one pending
/// reload); during a stop it is dropped.
pub(super) fn requested(r: &mut Reload, phase: &Phase, reason: String) -> Vec<Action> {
    match phase {
        Phase::Stopping | Phase::Done { .. } => vec![Action::IgnoreReload { reason }],
        Phase::Running { .. } if r.step.is_none() => {
            r.step = Some(Step::Preparing);
            vec![Action::StartReload { reason }]
        }
        _ => {
            r.pending = Some(reason.clone());
            vec![Action::DeferReload { reason }]
        }
    }
}

/// The reload's preparation ended: what it means for php-fpm as it is now.
/// A restart it needs comes back as the event to apply next.
pub(super) fn prepared(r: &mut Reload, phase: &Phase, p: Prepared) -> (Vec<Action>, Option<Event>) {
    use Action as A;
    if r.step != Some(Step::Preparing) {
        // Nothing is being prepared (it cannot happen: a stop abandons the
        // reload): whatever was prepared goes.
        return (vec![A::DiscardNew], None);
    }
    r.step = None;
    let running = matches!(phase, Phase::Running { .. });
    let applied = |mut first: Vec<Action>| {
        first.extend([A::CountReload { ok: true }, A::ReloadEnded]);
        first
    };
    match (p, running) {
        (Prepared::Refused, _) => (
            vec![A::LogRefusal, A::CountReload { ok: false }, A::ReloadEnded],
            None,
        ),
        (Prepared::Beside, true) => (applied(vec![A::SwitchToNew]), None),
        // php-fpm went down meanwhile: its restart comes first, then the
        // reload once more (the new php-fpm is stopped).
        (Prepared::Beside, false) => {
            r.pending = Some(INTERRUPTED.into());
            (vec![A::DiscardNew, A::ReloadEnded], None)
        }
        (Prepared::Signal, true) => {
            r.step = Some(Step::Signaled);
            (vec![A::SignalUsr2], None)
        }
        // Not running: the next start reads the new files.
        (Prepared::Signal | Prepared::Restart { .. }, false) => {
            (applied(vec![A::KeepForNextStart]), None)
        }
        (Prepared::Restart { why }, true) => (
            applied(vec![A::KeepForNextStart]),
            Some(Event::Restart { reason: why }),
        ),
    }
}

/// php-fpm answered again after SIGUSR2 (`ok`), or did not in time (the
/// liveness probe decides then).
pub(super) fn reloaded(r: &mut Reload, phase: &Phase, ok: bool) -> Vec<Action> {
    if r.step != Some(Step::Signaled) {
        return vec![];
    }
    r.step = None;
    let mut actions = vec![Action::CountReload { ok }];
    if matches!(phase, Phase::Running { .. }) {
        actions.push(Action::PublishReady);
    }
    actions.push(Action::ReloadEnded);
    actions
}

/// tqsup stops: the reload in progress is abandoned, the pending one
/// dropped.
pub(super) fn stopped(r: &mut Reload) -> Vec<Action> {
    r.pending = None;
    match r.step.take() {
        Some(_) => vec![Action::AbandonReload],
        None => vec![],
    }
}

/// After every transition: the pending reload starts once php-fpm runs and
/// no reload is in progress.
pub(super) fn start_pending(r: &mut Reload, phase: &Phase) -> Option<Action> {
    if r.step.is_some() || !matches!(phase, Phase::Running { .. }) {
        return None;
    }
    let reason = r.pending.take()?;
    r.step = Some(Step::Preparing);
    Some(Action::StartReload { reason })
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
