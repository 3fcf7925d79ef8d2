//! The reload rules, table by table (DESIGN §6).

use std::time::Duration;

use tokio::time::Instant;

use super::super::{Action as A, Cause, Event, ExitKind, Phase as P, Policy, State, next};
use super::{INTERRUPTED, Prepared, Reload, Step};
use crate::config::RestartPolicy;

fn policy() -> Policy {
    Policy {
        restart: RestartPolicy::OnFailure,
        stable_after: Duration::from_secs(10),
        max_restarts: 0,
        restart_window: Duration::from_secs(60),
        failure_threshold: 3,
    }
}

/// A state: its phase, the reload step in progress, the pending reason.
fn st(phase: P, step: Option<Step>, pending: Option<&str>) -> State {
    State {
        phase,
        reload: Reload {
            step,
            pending: pending.map(String::from),
        },
        ..State::default()
    }
}

fn hup(reason: &str) -> Event {
    Event::ReloadRequested {
        reason: reason.into(),
    }
}

fn prepared(kind: Prepared) -> Event {
    Event::ReloadPrepared(kind)
}

fn start(reason: &str) -> A {
    A::StartReload {
        reason: reason.into(),
    }
}

fn defer(reason: &str) -> A {
    A::DeferReload {
        reason: reason.into(),
    }
}

fn moved() -> Prepared {
    Prepared::Restart {
        why: "php-fpm's listen address changed (a -> b)".into(),
    }
}

fn crash() -> Event {
    Event::Exited {
        exit: ExitKind::Failed("exit 1".into()),
    }
}

/// (from, event, to, actions) rows, checked one by one.
fn check(rows: Vec<(State, Event, State, Vec<A>)>) {
    for (i, (from, event, to, actions)) in rows.into_iter().enumerate() {
        let (s, a) = next(&policy(), from.clone(), event.clone(), Instant::now());
        assert_eq!((&s, &a), (&to, &actions), "row {i}: {from:?} + {event:?}");
    }
}

/// Events applied in order from `s`; the actions of each.
fn run(mut s: State, events: Vec<Event>, t0: Instant) -> (State, Vec<Vec<A>>) {
    let mut out = Vec::new();
    for e in events {
        let (ns, a) = next(&policy(), s, e, t0);
        s = ns;
        out.push(a);
    }
    (s, out)
}

#[test]
fn a_request_starts_a_reload_only_while_php_fpm_runs_and_none_is_in_progress() {
    let t0 = Instant::now();
    let running = P::Running { since: t0 };
    let replacing = P::Replacing {
        counted: false,
        reason: "asked".into(),
        cause: Cause::Requested,
    };
    let done = P::Done {
        code: 0,
        message: None,
    };
    let preparing = Some(Step::Preparing);
    let signaled = Some(Step::Signaled);
    check(vec![
        // running, no reload: it starts now
        (
            st(running.clone(), None, None),
            hup("SIGHUP"),
            st(running.clone(), preparing, None),
            vec![start("SIGHUP")],
        ),
        // a reload in progress (either step): one more after it
        (
            st(running.clone(), preparing, None),
            hup("SIGHUP"),
            st(running.clone(), preparing, Some("SIGHUP")),
            vec![defer("SIGHUP")],
        ),
        (
            st(running.clone(), signaled, None),
            hup("SIGHUP"),
            st(running.clone(), signaled, Some("SIGHUP")),
            vec![defer("SIGHUP")],
        ),
        // php-fpm starting, restarting or backing off: after its start
        (
            st(P::Idle, None, None),
            hup("SIGHUP"),
            st(P::Idle, None, Some("SIGHUP")),
            vec![defer("SIGHUP")],
        ),
        (
            st(P::Starting, None, None),
            hup("SIGHUP"),
            st(P::Starting, None, Some("SIGHUP")),
            vec![defer("SIGHUP")],
        ),
        (
            st(replacing.clone(), None, None),
            hup("SIGHUP"),
            st(replacing.clone(), None, Some("SIGHUP")),
            vec![defer("SIGHUP")],
        ),
        (
            st(P::Backoff, preparing, None),
            hup("SIGHUP"),
            st(P::Backoff, preparing, Some("SIGHUP")),
            vec![defer("SIGHUP")],
        ),
        // stopping: dropped; done: nothing
        (
            st(P::Stopping, None, None),
            hup("SIGHUP"),
            st(P::Stopping, None, None),
            vec![A::IgnoreReload {
                reason: "SIGHUP".into(),
            }],
        ),
        (
            st(done.clone(), None, None),
            hup("SIGHUP"),
            st(done, None, None),
            vec![],
        ),
    ]);
}

#[test]
fn what_a_prepared_reload_means_depends_on_whether_php_fpm_still_runs() {
    let t0 = Instant::now();
    let running = P::Running { since: t0 };
    let preparing = Some(Step::Preparing);
    let applied = |first: A| vec![first, A::CountReload { ok: true }, A::ReloadEnded];
    let refused = vec![A::LogRefusal, A::CountReload { ok: false }, A::ReloadEnded];
    check(vec![
        // refused: logged and counted, php-fpm keeps serving
        (
            st(running.clone(), preparing, None),
            prepared(Prepared::Refused),
            st(running.clone(), None, None),
            refused.clone(),
        ),
        (
            st(P::Backoff, preparing, None),
            prepared(Prepared::Refused),
            st(P::Backoff, None, None),
            refused,
        ),
        // beside: switch to the new php-fpm, retire the old one
        (
            st(running.clone(), preparing, None),
            prepared(Prepared::Beside),
            st(running.clone(), None, None),
            applied(A::SwitchToNew),
        ),
        // signal: SIGUSR2, then wait for php-fpm to answer again
        (
            st(running.clone(), preparing, None),
            prepared(Prepared::Signal),
            st(running.clone(), Some(Step::Signaled), None),
            vec![A::SignalUsr2],
        ),
        // the listen address (or command line) changed: the one restart
        (
            st(running.clone(), preparing, None),
            prepared(moved()),
            st(
                P::Replacing {
                    counted: false,
                    reason: "php-fpm's listen address changed (a -> b)".into(),
                    cause: Cause::Requested,
                },
                None,
                None,
            ),
            vec![
                A::KeepForNextStart,
                A::CountReload { ok: true },
                A::ReloadEnded,
                A::PublishDown,
                A::Quit,
            ],
        ),
        // nothing in preparation: whatever arrives is dropped
        (
            st(running.clone(), None, None),
            prepared(Prepared::Beside),
            st(running.clone(), None, None),
            vec![A::DiscardNew],
        ),
        (
            st(running.clone(), Some(Step::Signaled), None),
            prepared(Prepared::Signal),
            st(running.clone(), Some(Step::Signaled), None),
            vec![A::DiscardNew],
        ),
    ]);
}

#[test]
fn a_reload_finishing_while_php_fpm_is_down_waits_for_its_start() {
    let replacing = P::Replacing {
        counted: true,
        reason: "hung".into(),
        cause: Cause::Liveness,
    };
    let preparing = Some(Step::Preparing);
    let applied = |first: A| vec![first, A::CountReload { ok: true }, A::ReloadEnded];
    let mut rows = Vec::new();
    for down in [P::Starting, P::Backoff, replacing] {
        rows.extend([
            // beside: the new php-fpm goes; the reload runs once more
            // after the restart (replacing a pending request's reason)
            (
                st(down.clone(), preparing, Some("SIGHUP")),
                prepared(Prepared::Beside),
                st(down.clone(), None, Some(INTERRUPTED)),
                vec![A::DiscardNew, A::ReloadEnded],
            ),
            // signal or restart: the files are written; the next start
            // reads them, and no restart is added
            (
                st(down.clone(), preparing, None),
                prepared(Prepared::Signal),
                st(down.clone(), None, None),
                applied(A::KeepForNextStart),
            ),
            (
                st(down.clone(), preparing, None),
                prepared(moved()),
                st(down.clone(), None, None),
                applied(A::KeepForNextStart),
            ),
        ]);
    }
    check(rows);
}

#[test]
fn after_sigusr2_php_fpm_is_published_ready_again_if_it_still_runs() {
    let t0 = Instant::now();
    let running = P::Running { since: t0 };
    let signaled = Some(Step::Signaled);
    let mut rows = Vec::new();
    for ok in [true, false] {
        rows.extend([
            (
                st(running.clone(), signaled, None),
                Event::Reloaded { ok },
                st(running.clone(), None, None),
                vec![A::CountReload { ok }, A::PublishReady, A::ReloadEnded],
            ),
            // php-fpm went down after SIGUSR2: its restart publishes it
            (
                st(P::Backoff, signaled, None),
                Event::Reloaded { ok },
                st(P::Backoff, None, None),
                vec![A::CountReload { ok }, A::ReloadEnded],
            ),
        ]);
    }
    // no SIGUSR2 sent: nothing to finish
    rows.push((
        st(running.clone(), Some(Step::Preparing), None),
        Event::Reloaded { ok: true },
        st(running, Some(Step::Preparing), None),
        vec![],
    ));
    check(rows);
}

#[test]
fn a_stop_abandons_the_reload_and_drops_the_pending_one() {
    let t0 = Instant::now();
    let running = P::Running { since: t0 };
    let quit = vec![A::AbandonReload, A::PublishDown, A::Quit];
    let exit0 = A::Exit {
        code: 0,
        message: None,
    };
    let stopped = P::Done {
        code: 0,
        message: None,
    };
    check(vec![
        (
            st(running.clone(), Some(Step::Preparing), Some("SIGHUP")),
            Event::Stop,
            st(P::Stopping, None, None),
            quit.clone(),
        ),
        (
            st(running.clone(), Some(Step::Signaled), None),
            Event::Stop,
            st(P::Stopping, None, None),
            quit,
        ),
        (
            st(P::Backoff, Some(Step::Preparing), None),
            Event::Stop,
            st(stopped.clone(), None, None),
            vec![A::AbandonReload, exit0.clone()],
        ),
        // only a pending one: dropped, nothing to abandon
        (
            st(P::Starting, None, Some("SIGHUP")),
            Event::Stop,
            st(P::Stopping, None, None),
            vec![A::PublishDown, A::Quit],
        ),
        // and nothing starts one afterwards
        (
            st(P::Stopping, None, None),
            crash(),
            st(stopped, None, None),
            vec![exit0],
        ),
    ]);
}

#[test]
fn any_number_of_requests_during_a_reload_make_one_more_reload() {
    let t0 = Instant::now();
    let running = P::Running { since: t0 };
    let (s, a) = run(
        st(running.clone(), None, None),
        vec![hup("1"), hup("2"), hup("3"), hup("4")],
        t0,
    );
    assert_eq!(
        a,
        vec![
            vec![start("1")],
            vec![defer("2")],
            vec![defer("3")],
            vec![defer("4")]
        ]
    );
    assert_eq!(s, st(running.clone(), Some(Step::Preparing), Some("4")));
    // The first reload ends: the one more starts at once, with the latest
    // reason; when it ends, nothing more.
    let (s, a) = run(
        s,
        vec![prepared(Prepared::Beside), prepared(Prepared::Refused)],
        t0,
    );
    assert_eq!(
        a,
        vec![
            vec![
                A::SwitchToNew,
                A::CountReload { ok: true },
                A::ReloadEnded,
                start("4")
            ],
            vec![A::LogRefusal, A::CountReload { ok: false }, A::ReloadEnded],
        ]
    );
    assert_eq!(s, st(running.clone(), None, None));
    // Through SIGUSR2 likewise: the pending one waits for php-fpm's answer.
    let (s, a) = run(
        s,
        vec![
            hup("a"),
            prepared(Prepared::Signal),
            hup("b"),
            hup("c"),
            Event::Reloaded { ok: true },
        ],
        t0,
    );
    assert_eq!(
        a,
        vec![
            vec![start("a")],
            vec![A::SignalUsr2],
            vec![defer("b")],
            vec![defer("c")],
            vec![
                A::CountReload { ok: true },
                A::PublishReady,
                A::ReloadEnded,
                start("c")
            ],
        ]
    );
    assert_eq!(s, st(running, Some(Step::Preparing), None));
}

#[test]
fn requests_during_a_start_make_one_reload_once_php_fpm_is_ready() {
    let t0 = Instant::now();
    let running = P::Running { since: t0 };
    // During the first start, and during a restart's backoff and start.
    for from in [P::Idle, P::Backoff] {
        let first = if from == P::Idle {
            Event::Start
        } else {
            Event::BackoffElapsed
        };
        let (s, a) = run(
            st(from, None, None),
            vec![hup("1"), first, hup("2"), hup("3"), Event::Ready],
            t0,
        );
        assert_eq!(
            a,
            vec![
                vec![defer("1")],
                vec![A::Spawn, A::AwaitReady],
                vec![defer("2")],
                vec![defer("3")],
                vec![A::PublishReady, start("3")],
            ]
        );
        assert_eq!(s, st(running.clone(), Some(Step::Preparing), None));
    }
}

#[test]
fn a_listen_change_is_the_one_reload_that_restarts() {
    let t0 = Instant::now();
    let why = "php-fpm's listen address changed (a -> b)";
    let (s, a) = run(
        st(P::Running { since: t0 }, None, None),
        vec![hup("SIGHUP"), prepared(moved()), crash(), Event::Ready],
        t0,
    );
    assert_eq!(
        a,
        vec![
            vec![start("SIGHUP")],
            vec![
                A::KeepForNextStart,
                A::CountReload { ok: true },
                A::ReloadEnded,
                A::PublishDown,
                A::Quit,
            ],
            // the requested restart: no backoff, not counted as a failure
            vec![
                A::LogRestart {
                    reason: why.into(),
                    cause: Cause::Requested,
                },
                A::Spawn,
                A::AwaitReady,
            ],
            // and no reload after it
            vec![A::PublishReady],
        ]
    );
    assert_eq!(s.attempt, 0);
    assert_eq!(s.reload, Reload::default());
}

#[test]
fn no_other_reload_becomes_a_restart() {
    let t0 = Instant::now();
    let phases = [
        P::Starting,
        P::Running { since: t0 },
        P::Replacing {
            counted: true,
            reason: "hung".into(),
            cause: Cause::Liveness,
        },
        P::Backoff,
    ];
    let restarting = |a: &A| {
        matches!(
            a,
            A::Spawn | A::Kill | A::Quit | A::PublishDown | A::Backoff { .. }
        )
    };
    for phase in phases {
        for (step, event) in [
            (Step::Preparing, prepared(Prepared::Refused)),
            (Step::Preparing, prepared(Prepared::Beside)),
            (Step::Preparing, prepared(Prepared::Signal)),
            (Step::Signaled, Event::Reloaded { ok: false }),
        ] {
            let from = st(phase.clone(), Some(step), None);
            let (s, a) = next(&policy(), from, event.clone(), t0);
            assert_eq!(s.phase, phase, "{phase:?} + {event:?}");
            assert!(!a.iter().any(restarting), "{phase:?} + {event:?}: {a:?}");
        }
    }
}

#[test]
fn a_restart_during_a_reload_runs_the_reload_again_after_it() {
    let t0 = Instant::now();
    let (s, a) = run(
        st(P::Running { since: t0 }, None, None),
        vec![
            hup("SIGHUP"),
            Event::Restart {
                reason: "asked".into(),
            },
            crash(),
            // the new php-fpm was ready beside the one restarted meanwhile
            prepared(Prepared::Beside),
            Event::Ready,
        ],
        t0,
    );
    assert_eq!(a[1], vec![A::PublishDown, A::Quit]);
    assert_eq!(a[3], vec![A::DiscardNew, A::ReloadEnded]);
    assert_eq!(a[4], vec![A::PublishReady, start(INTERRUPTED)]);
    assert_eq!(s.reload.step, Some(Step::Preparing));
}

#[test]
fn a_reload_is_never_started_while_another_is_in_progress() {
    let t0 = Instant::now();
    let phases = [
        P::Idle,
        P::Starting,
        P::Running { since: t0 },
        P::Backoff,
        P::Stopping,
    ];
    let events = [
        hup("x"),
        Event::Ready,
        Event::BackoffElapsed,
        crash(),
        Event::Probe {
            alive: true,
            error: String::new(),
        },
        Event::Stop,
        prepared(Prepared::Refused),
        prepared(Prepared::Beside),
        prepared(Prepared::Signal),
        prepared(moved()),
        Event::Reloaded { ok: true },
    ];
    for phase in phases {
        for step in [None, Some(Step::Preparing), Some(Step::Signaled)] {
            for pending in [None, Some("p")] {
                for event in &events {
                    let from = st(phase.clone(), step, pending);
                    let (s, a) = next(&policy(), from.clone(), event.clone(), t0);
                    let starts = a
                        .iter()
                        .filter(|a| matches!(a, A::StartReload { .. }))
                        .count();
                    let ended = a.contains(&A::ReloadEnded) || a.contains(&A::DiscardNew);
                    let ctx = format!("{from:?} + {event:?}: {a:?}");
                    assert!(starts <= 1, "{ctx}");
                    if starts == 1 {
                        assert!(step.is_none() || ended, "{ctx}");
                        assert_eq!(s.reload.step, Some(Step::Preparing), "{ctx}");
                    }
                    // one pending at most, never lost while php-fpm may
                    // still be started (only a stop drops it)
                    if pending.is_some() && starts == 0 && *event != Event::Stop {
                        assert!(s.reload.pending.is_some(), "{ctx}");
                    }
                }
            }
        }
    }
}
