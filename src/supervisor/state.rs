//! The supervisor as a pure state machine: phases, the events that move
//! between them, and the actions the task performs. No I/O and no clock:
//! [`next`] is told when each event happened, so every transition is tested
//! table by table. The reload rules are in `state/reload.rs`.

mod reload;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RestartPolicy;
use crate::exit;
pub use reload::{Prepared, Reload, Step};

/// Where php-fpm is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Nothing launched yet.
    Idle,
    /// Launched, waiting for the first `pong`.
    Starting,
    /// Answering pings since `since`.
    Running { since: Instant },
    /// Being killed or stopped on purpose; the exit that follows is expected.
    /// `counted`: the exit counts as a failure (hung, not ready) or not (a
    /// requested restart).
    Replacing {
        counted: bool,
        reason: String,
        cause: Cause,
    },
    /// Waiting out the backoff before the next start.
    Backoff,
    /// Graceful stop in progress.
    Stopping,
    /// The supervisor is finished; tqsup exits with `code`.
    Done { code: u8, message: Option<String> },
}

/// The phase plus what the restart policy remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub phase: Phase,
    /// Consecutive failed runs: the backoff exponent. Reset by a run that
    /// stayed ready for `stable_after`.
    pub attempt: u32,
    /// When recent restarts were scheduled (within `restart_window`).
    pub restarts: VecDeque<Instant>,
    /// Consecutive failed liveness probes of the running php-fpm.
    pub probe_failures: u32,
    /// The reload in progress and the one pending.
    pub reload: Reload,
}

impl Default for State {
    fn default() -> Self {
        State {
            phase: Phase::Idle,
            attempt: 0,
            restarts: VecDeque::new(),
            probe_failures: 0,
            reload: Reload::default(),
        }
    }
}

/// How php-fpm's process ended, classified by `child.rs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    /// Exit status 0.
    Clean,
    /// Exit 78 without an address conflict: php-fpm rejected its config.
    Config(String),
    /// Its listen address is held by someone else (exit 70, "another FPM
    /// instance", "Address already in use"); the message names the holder.
    Conflict(String),
    /// Anything else: a non-zero exit or a signal.
    Failed(String),
}

/// Why php-fpm is restarted: the `reason` label of the restarts metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Cause {
    /// It exited (or could not be launched).
    Exit,
    /// It stopped answering its liveness ping.
    Liveness,
    /// It never answered its first ping.
    ReadyTimeout,
    /// A restart was asked for.
    Requested,
}

impl Cause {
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Begin supervising.
    Start,
    /// The ping answered `pong`.
    Ready,
    /// No `pong` within `ready_timeout`.
    ReadyTimeout,
    /// A liveness probe ended. `alive`: it answered, or responses kept
    /// completing since the last one (evidence of life that needs no free
    /// child); `error` says what the probe saw otherwise.
    Probe { alive: bool, error: String },
    /// php-fpm's master process ended (or could not be spawned).
    Exited { exit: ExitKind },
    /// The backoff delay is over.
    BackoffElapsed,
    /// Restart php-fpm on purpose (Control::Restart; a reload that changed
    /// php-fpm's address or command line).
    Restart { reason: String },
    /// tqsup is stopping.
    Stop,
    /// A reload was asked for (SIGHUP, a dev hook or watch).
    ReloadRequested { reason: String },
    /// The reload's preparation ended (the task holds what it prepared).
    ReloadPrepared(Prepared),
    /// After SIGUSR2: php-fpm answered its ping again (`ok`), or not in
    /// time.
    Reloaded { ok: bool },
}

/// Something the task must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Launch php-fpm (and publish `Starting`).
    Spawn,
    /// Probe the ping until `pong` (→ Ready) or `ready_timeout` (→ ReadyTimeout).
    AwaitReady,
    /// Publish `Ready` with the next generation; sd-notify READY=1.
    PublishReady,
    /// Publish `Restarting`.
    PublishDown,
    /// SIGKILL php-fpm's process group (hung or never ready).
    Kill,
    /// Graceful stop of php-fpm: SIGQUIT, wait, SIGTERM, SIGKILL the group.
    Quit,
    /// Wait the backoff for this attempt, then BackoffElapsed.
    Backoff { attempt: u32 },
    /// Log why a restart is coming (and count it under `cause`).
    LogRestart { reason: String, cause: Cause },
    /// php-fpm proved alive: systemd's watchdog and status may hear it.
    Alive,
    /// A probe failed, `failures` in a row (of `threshold`): log it.
    ProbeFailed {
        failures: u32,
        threshold: u32,
        error: String,
    },
    /// The supervisor is done: tqsup exits with this code.
    Exit { code: u8, message: Option<String> },
    /// Start a reload: RELOADING=1, validate the new config aside (and,
    /// beside, start the new php-fpm), then ReloadPrepared.
    StartReload { reason: String },
    /// Log that a reload request waits for the reload or start in progress.
    DeferReload { reason: String },
    /// Log that a reload request came during a stop and is dropped.
    IgnoreReload { reason: String },
    /// Drop the reload in progress (a php-fpm it started is killed).
    AbandonReload,
    /// Log why the prepared reload was refused (every problem).
    LogRefusal,
    /// Switch to the php-fpm prepared beside: it becomes the running one
    /// and is published ready; the old one is retired.
    SwitchToNew,
    /// Drop what was prepared (a php-fpm started beside is stopped).
    DiscardNew,
    /// Take in the prepared generation (its files are written): the next
    /// start of php-fpm uses it.
    KeepForNextStart,
    /// Take in the prepared generation, close the idle pooled connections
    /// (publish `Starting`), send php-fpm SIGUSR2, and wait for it to
    /// answer again (→ Reloaded).
    SignalUsr2,
    /// Count a reload as applied or failed (the reloads metric).
    CountReload { ok: bool },
    /// The reload is over: READY=1 (after RELOADING=1) to systemd.
    ReloadEnded,
}

/// The restart policy, from `supervisor.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub restart: RestartPolicy,
    pub stable_after: Duration,
    /// 0 = unlimited.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// Failed liveness probes in a row that mean php-fpm hangs (≥ 1).
    pub failure_threshold: u32,
}

impl Policy {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let s = &config.supervisor;
        Policy {
            restart: s.restart,
            stable_after: s.stable_after,
            max_restarts: s.max_restarts,
            restart_window: s.restart_window,
            failure_threshold: config.forward.health.failure_threshold.max(1),
        }
    }
}

/// The transition function: the next state and the actions to perform.
/// `now` is when the event happened (the restart window counts from it).
pub fn next(policy: &Policy, state: State, event: Event, now: Instant) -> (State, Vec<Action>) {
    let mut s = state;
    // Finished is final.
    if matches!(s.phase, Phase::Done { .. }) {
        return (s, vec![]);
    }
    let (mut actions, event) = match event {
        Event::ReloadRequested { reason } => {
            (reload::requested(&mut s.reload, &s.phase, reason), None)
        }
        Event::ReloadPrepared(p) => reload::prepared(&mut s.reload, &s.phase, p),
        Event::Reloaded { ok } => (reload::reloaded(&mut s.reload, &s.phase, ok), None),
        Event::Stop => (reload::stopped(&mut s.reload), Some(Event::Stop)),
        event => (vec![], Some(event)),
    };
    if let Some(event) = event {
        let (ns, mut more) = transition(policy, s, event, now);
        s = ns;
        actions.append(&mut more);
    }
    actions.extend(reload::start_pending(&mut s.reload, &s.phase));
    (s, actions)
}

/// The lifecycle of php-fpm: start, ready, probes, exits, restarts, stop.
fn transition(policy: &Policy, state: State, event: Event, now: Instant) -> (State, Vec<Action>) {
    use Action as A;
    use Phase as P;
    let mut s = state;
    let phase = std::mem::replace(&mut s.phase, P::Idle);
    let (phase, actions) = match (phase, event) {
        (done @ P::Done { .. }, _) => (done, vec![]),

        (P::Idle, Event::Start) => (P::Starting, vec![A::Spawn, A::AwaitReady]),
        (P::Idle | P::Backoff, Event::Stop) => done(exit::OK, None),

        (P::Starting, Event::Ready) => {
            s.probe_failures = 0;
            (P::Running { since: now }, vec![A::PublishReady])
        }
        (P::Starting, Event::ReadyTimeout) => (
            P::Replacing {
                counted: true,
                reason: "php-fpm did not answer its ping within supervisor.ready_timeout_ms".into(),
                cause: Cause::ReadyTimeout,
            },
            vec![A::Kill],
        ),
        (running @ P::Running { .. }, Event::Probe { alive: true, .. }) => {
            s.probe_failures = 0;
            (running, vec![A::Alive])
        }
        (
            P::Running { since },
            Event::Probe {
                alive: false,
                error,
            },
        ) => {
            s.probe_failures += 1;
            if s.probe_failures < policy.failure_threshold {
                let failed = A::ProbeFailed {
                    failures: s.probe_failures,
                    threshold: policy.failure_threshold,
                    error,
                };
                (P::Running { since }, vec![failed])
            } else {
                // Hung. A long stable run that ends in a hang starts the
                // backoff anew, like one that ends in an exit.
                s.probe_failures = 0;
                if now.saturating_duration_since(since) >= policy.stable_after {
                    s.attempt = 0;
                }
                let reason = format!(
                    "php-fpm stopped answering its ping ({} probes in a row; last: {error})",
                    policy.failure_threshold
                );
                (
                    P::Replacing {
                        counted: true,
                        reason,
                        cause: Cause::Liveness,
                    },
                    vec![A::PublishDown, A::Kill],
                )
            }
        }
        (P::Starting | P::Running { .. }, Event::Restart { reason }) => (
            P::Replacing {
                counted: false,
                reason,
                cause: Cause::Requested,
            },
            vec![A::PublishDown, A::Quit],
        ),
        (P::Starting | P::Running { .. } | P::Replacing { .. }, Event::Stop) => {
            (P::Stopping, vec![A::PublishDown, A::Quit])
        }

        (P::Starting, Event::Exited { exit }) => {
            return after_failure(policy, s, exit, false, now, Cause::Exit);
        }
        (P::Running { since }, Event::Exited { exit }) => {
            if now.saturating_duration_since(since) >= policy.stable_after {
                s.attempt = 0;
            }
            return after_failure(policy, s, exit, true, now, Cause::Exit);
        }
        (
            P::Replacing {
                counted: false,
                reason,
                cause,
            },
            Event::Exited { .. },
        ) => (
            P::Starting,
            vec![A::LogRestart { reason, cause }, A::Spawn, A::AwaitReady],
        ),
        (
            P::Replacing {
                counted: true,
                reason,
                cause,
            },
            Event::Exited { .. },
        ) => {
            return after_failure(policy, s, ExitKind::Failed(reason), false, now, cause);
        }
        (P::Stopping, Event::Exited { .. }) => done(exit::OK, None),

        (P::Backoff, Event::BackoffElapsed) => (P::Starting, vec![A::Spawn, A::AwaitReady]),
        (P::Backoff, Event::Restart { reason }) => (
            P::Starting,
            vec![
                A::LogRestart {
                    reason,
                    cause: Cause::Requested,
                },
                A::Spawn,
                A::AwaitReady,
            ],
        ),

        // Anything else is not a transition (e.g. a late ready probe).
        (phase, _) => (phase, vec![]),
    };
    s.phase = phase;
    (s, actions)
}

fn done(code: u8, message: Option<String>) -> (Phase, Vec<Action>) {
    (
        Phase::Done {
            code,
            message: message.clone(),
        },
        vec![Action::Exit { code, message }],
    )
}

/// php-fpm went down on its own (or was killed for being hung): exit or
/// schedule a restart, as the policy says.
fn after_failure(
    policy: &Policy,
    mut s: State,
    exit: ExitKind,
    was_ready: bool,
    now: Instant,
    cause: Cause,
) -> (State, Vec<Action>) {
    let mut actions = Vec::new();
    if was_ready {
        actions.push(Action::PublishDown);
    }
    let reason = match exit {
        ExitKind::Config(message) => {
            let message = format!("php-fpm rejected its configuration: {message}");
            let (phase, mut a) = done(exit::CONFIG, Some(message));
            actions.append(&mut a);
            s.phase = phase;
            return (s, actions);
        }
        // Only an exit tqsup did not ask for comes here: php-fpm exiting 0
        // on a SIGQUIT or SIGTERM someone else sent (a stray `pkill`) left
        // the site down, so it is a failure whatever its status.
        ExitKind::Clean => {
            "php-fpm exited with status 0 without being asked to (a SIGQUIT or SIGTERM tqsup did not send?)".to_string()
        }
        ExitKind::Conflict(m) | ExitKind::Failed(m) => m,
    };
    if policy.restart == RestartPolicy::Never {
        let (phase, mut a) = done(
            exit::FAILURE,
            Some(format!(
                "{reason}; not restarting (supervisor.restart: never)"
            )),
        );
        actions.append(&mut a);
        s.phase = phase;
        return (s, actions);
    }
    // The restart budget: at most max_restarts within restart_window.
    while let Some(first) = s.restarts.front() {
        if now.saturating_duration_since(*first) >= policy.restart_window {
            s.restarts.pop_front();
        } else {
            break;
        }
    }
    if policy.max_restarts > 0 && s.restarts.len() as u32 >= policy.max_restarts {
        let (phase, mut a) = done(
            exit::FAILURE,
            Some(format!(
                "php-fpm failed {} times within {} ms (supervisor.max_restarts {} in supervisor.restart_window_ms {}); giving up; last failure: {reason}",
                s.restarts.len() + 1,
                policy.restart_window.as_millis(),
                policy.max_restarts,
                policy.restart_window.as_millis(),
            )),
        );
        actions.append(&mut a);
        s.phase = phase;
        return (s, actions);
    }
    s.restarts.push_back(now);
    actions.push(Action::LogRestart { reason, cause });
    actions.push(Action::Backoff { attempt: s.attempt });
    s.attempt = s.attempt.saturating_add(1);
    s.phase = Phase::Backoff;
    (s, actions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;
    use Phase as P;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(restart: RestartPolicy) -> Policy {
        Policy {
            restart,
            stable_after: ms(10_000),
            max_restarts: 3,
            restart_window: ms(60_000),
            failure_threshold: 3,
        }
    }

    fn probe(alive: bool) -> Event {
        Event::Probe {
            alive,
            error: if alive { "" } else { "timeout" }.into(),
        }
    }

    fn at(phase: Phase) -> State {
        State {
            phase,
            ..State::default()
        }
    }

    fn crash() -> Event {
        Event::Exited {
            exit: ExitKind::Failed("exit 1".into()),
        }
    }

    /// (from, event, to, actions) rows, checked one by one.
    fn check(p: &Policy, t0: Instant, rows: Vec<(Phase, Event, Phase, Vec<Action>)>) {
        for (i, (from, event, to, actions)) in rows.into_iter().enumerate() {
            let (s, a) = next(p, at(from.clone()), event.clone(), t0);
            assert_eq!(
                (&s.phase, &a),
                (&to, &actions),
                "row {i}: {from:?} + {event:?}"
            );
        }
    }

    #[test]
    fn lifecycle_table() {
        let t0 = Instant::now();
        let running = P::Running { since: t0 };
        check(
            &policy(RestartPolicy::OnFailure),
            t0,
            vec![
                (
                    P::Idle,
                    Event::Start,
                    P::Starting,
                    vec![A::Spawn, A::AwaitReady],
                ),
                (
                    P::Starting,
                    Event::Ready,
                    running.clone(),
                    vec![A::PublishReady],
                ),
                (
                    P::Starting,
                    Event::ReadyTimeout,
                    P::Replacing {
                        counted: true,
                        reason:
                            "php-fpm did not answer its ping within supervisor.ready_timeout_ms"
                                .into(),
                        cause: Cause::ReadyTimeout,
                    },
                    vec![A::Kill],
                ),
                (
                    running.clone(),
                    probe(true),
                    running.clone(),
                    vec![A::Alive],
                ),
                (
                    running.clone(),
                    Event::Restart {
                        reason: "asked".into(),
                    },
                    P::Replacing {
                        counted: false,
                        reason: "asked".into(),
                        cause: Cause::Requested,
                    },
                    vec![A::PublishDown, A::Quit],
                ),
                (
                    P::Replacing {
                        counted: false,
                        reason: "asked".into(),
                        cause: Cause::Requested,
                    },
                    crash(),
                    P::Starting,
                    vec![
                        A::LogRestart {
                            reason: "asked".into(),
                            cause: Cause::Requested,
                        },
                        A::Spawn,
                        A::AwaitReady,
                    ],
                ),
                (
                    P::Backoff,
                    Event::BackoffElapsed,
                    P::Starting,
                    vec![A::Spawn, A::AwaitReady],
                ),
                // late or meaningless events change nothing
                (running.clone(), Event::Ready, running.clone(), vec![]),
                (
                    running.clone(),
                    Event::BackoffElapsed,
                    running.clone(),
                    vec![],
                ),
                (P::Idle, Event::Ready, P::Idle, vec![]),
            ],
        );
    }

    #[test]
    fn stop_table() {
        let t0 = Instant::now();
        let stopped = P::Done {
            code: 0,
            message: None,
        };
        let exit0 = A::Exit {
            code: 0,
            message: None,
        };
        check(
            &policy(RestartPolicy::Always),
            t0,
            vec![
                (P::Idle, Event::Stop, stopped.clone(), vec![exit0.clone()]),
                (
                    P::Backoff,
                    Event::Stop,
                    stopped.clone(),
                    vec![exit0.clone()],
                ),
                (
                    P::Starting,
                    Event::Stop,
                    P::Stopping,
                    vec![A::PublishDown, A::Quit],
                ),
                (
                    P::Running { since: t0 },
                    Event::Stop,
                    P::Stopping,
                    vec![A::PublishDown, A::Quit],
                ),
                (
                    P::Replacing {
                        counted: true,
                        reason: "x".into(),
                        cause: Cause::Liveness,
                    },
                    Event::Stop,
                    P::Stopping,
                    vec![A::PublishDown, A::Quit],
                ),
                // whatever php-fpm's status, a requested stop ends with 0
                (P::Stopping, crash(), stopped.clone(), vec![exit0.clone()]),
                (stopped.clone(), Event::Start, stopped.clone(), vec![]),
            ],
        );
    }

    #[test]
    fn exit_classification_table() {
        let restart = |reason: &str| {
            vec![
                A::LogRestart {
                    reason: reason.into(),
                    cause: Cause::Exit,
                },
                A::Backoff { attempt: 0 },
            ]
        };
        let config = ExitKind::Config("ERROR: bad".into());
        let config_done = P::Done {
            code: 78,
            message: Some("php-fpm rejected its configuration: ERROR: bad".into()),
        };
        let config_exit = A::Exit {
            code: 78,
            message: Some("php-fpm rejected its configuration: ERROR: bad".into()),
        };
        for restart_policy in [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ] {
            // 78 is never retried, whatever the policy
            check(
                &policy(restart_policy),
                Instant::now(),
                vec![(
                    P::Starting,
                    Event::Exited {
                        exit: config.clone(),
                    },
                    config_done.clone(),
                    vec![config_exit.clone()],
                )],
            );
        }
        check(
            &policy(RestartPolicy::OnFailure),
            Instant::now(),
            vec![
                (P::Starting, crash(), P::Backoff, restart("exit 1")),
                (
                    P::Starting,
                    Event::Exited {
                        exit: ExitKind::Conflict("held by pid 7".into()),
                    },
                    P::Backoff,
                    restart("held by pid 7"),
                ),
                (
                    P::Starting,
                    Event::Exited {
                        exit: ExitKind::Clean,
                    },
                    P::Backoff,
                    restart(UNASKED_EXIT),
                ),
            ],
        );
        check(
            &policy(RestartPolicy::Always),
            Instant::now(),
            vec![(
                P::Starting,
                Event::Exited {
                    exit: ExitKind::Clean,
                },
                P::Backoff,
                restart(UNASKED_EXIT),
            )],
        );
        check(
            &policy(RestartPolicy::Never),
            Instant::now(),
            vec![(
                P::Starting,
                crash(),
                P::Done {
                    code: 1,
                    message: Some("exit 1; not restarting (supervisor.restart: never)".into()),
                },
                vec![A::Exit {
                    code: 1,
                    message: Some("exit 1; not restarting (supervisor.restart: never)".into()),
                }],
            )],
        );
    }

    #[test]
    fn a_ready_php_fpm_that_dies_is_published_down_first() {
        let t0 = Instant::now();
        let (s, a) = next(
            &policy(RestartPolicy::OnFailure),
            at(P::Running { since: t0 }),
            crash(),
            t0 + ms(5),
        );
        assert_eq!(s.phase, P::Backoff);
        assert_eq!(a[0], A::PublishDown);
        assert_eq!(a[2], A::Backoff { attempt: 0 });
    }

    const UNASKED_EXIT: &str = "php-fpm exited with status 0 without being asked to (a SIGQUIT or SIGTERM tqsup did not send?)";

    #[test]
    fn a_hang_after_a_stable_run_resets_the_backoff() {
        let p = Policy {
            max_restarts: 0,
            ..policy(RestartPolicy::OnFailure)
        };
        let t0 = Instant::now();
        // The third failed probe in a row is the hang.
        let hang = || probe(false);
        let s = State {
            phase: P::Running { since: t0 },
            attempt: 5,
            probe_failures: 2,
            ..State::default()
        };
        // A short run that hangs keeps the exponent…
        let (short, _) = next(&p, s.clone(), hang(), t0 + ms(500));
        assert_eq!(short.attempt, 5);
        // …a stable one starts over: the kill's exit backs off from 0.
        let (s, _) = next(&p, s, hang(), t0 + ms(10_000));
        let (_, a) = next(&p, s, crash(), t0 + ms(10_010));
        assert!(a.contains(&A::Backoff { attempt: 0 }), "{a:?}");
    }

    #[test]
    fn backoff_grows_then_resets_after_a_stable_run() {
        let p = Policy {
            max_restarts: 0,
            ..policy(RestartPolicy::OnFailure)
        };
        let t0 = Instant::now();
        let mut s = State::default();
        let mut attempts = Vec::new();
        for i in 0..4 {
            s.phase = P::Starting;
            let (ns, a) = next(&p, s, crash(), t0 + ms(i * 100));
            attempts.extend(a.iter().filter_map(|a| match a {
                A::Backoff { attempt } => Some(*attempt),
                _ => None,
            }));
            s = ns;
        }
        assert_eq!(attempts, vec![0, 1, 2, 3]);
        // a short run keeps growing
        s.phase = P::Running { since: t0 };
        let (ns, a) = next(&p, s, crash(), t0 + ms(9_999));
        assert!(a.contains(&A::Backoff { attempt: 4 }));
        // a run of stable_after resets the exponent
        let mut s = ns;
        s.phase = P::Running { since: t0 };
        let (_, a) = next(&p, s, crash(), t0 + ms(10_000));
        assert!(a.contains(&A::Backoff { attempt: 0 }));
    }

    #[test]
    fn too_many_restarts_in_the_window_give_up_with_exit_1() {
        let p = policy(RestartPolicy::Always);
        let t0 = Instant::now();
        let mut s = State::default();
        for i in 0..3 {
            s.phase = P::Starting;
            let (ns, a) = next(&p, s, crash(), t0 + ms(i * 1000));
            assert!(
                matches!(a.last(), Some(A::Backoff { .. })),
                "restart {i}: {a:?}"
            );
            s = ns;
        }
        s.phase = P::Starting;
        let (ns, a) = next(&p, s.clone(), crash(), t0 + ms(3000));
        match (&ns.phase, a.as_slice()) {
            (
                P::Done {
                    code: 1,
                    message: Some(m),
                },
                [A::Exit { code: 1, .. }],
            ) => {
                assert!(m.contains("supervisor.max_restarts"), "{m}");
                assert!(m.contains("exit 1"), "{m}");
            }
            other => panic!("expected exit 1, got {other:?}"),
        }
        // restarts older than the window no longer count
        let (ns, a) = next(&p, s, crash(), t0 + ms(60_500));
        assert_eq!(ns.phase, P::Backoff, "{a:?}");
        assert_eq!(ns.restarts.len(), 3);
    }

    #[test]
    fn a_hung_php_fpm_killed_counts_as_a_failure() {
        let t0 = Instant::now();
        let replacing = P::Replacing {
            counted: true,
            reason: "hung".into(),
            cause: Cause::Liveness,
        };
        let (s, a) = next(
            &policy(RestartPolicy::OnFailure),
            at(replacing),
            crash(),
            t0,
        );
        assert_eq!(s.phase, P::Backoff);
        assert_eq!(
            a,
            vec![
                A::LogRestart {
                    reason: "hung".into(),
                    cause: Cause::Liveness,
                },
                A::Backoff { attempt: 0 }
            ]
        );
    }

    #[test]
    fn probes_count_in_a_row_and_evidence_of_life_resets_them() {
        let p = policy(RestartPolicy::OnFailure);
        let t0 = Instant::now();
        let mut s = at(P::Running { since: t0 });
        for n in 1..=2 {
            let (ns, a) = next(&p, s, probe(false), t0);
            assert_eq!(
                a,
                vec![A::ProbeFailed {
                    failures: n,
                    threshold: 3,
                    error: "timeout".into()
                }]
            );
            s = ns;
        }
        // A probe that answered (or responses that kept completing) resets.
        let (s, a) = next(&p, s, probe(true), t0);
        assert_eq!((s.probe_failures, a), (0, vec![A::Alive]));
        let mut s = s;
        for _ in 0..2 {
            s = next(&p, s, probe(false), t0).0;
        }
        let (s, a) = next(&p, s, probe(false), t0 + ms(100));
        assert_eq!(
            s.phase,
            P::Replacing {
                counted: true,
                reason: "php-fpm stopped answering its ping (3 probes in a row; last: timeout)"
                    .into(),
                cause: Cause::Liveness,
            }
        );
        assert_eq!(a, vec![A::PublishDown, A::Kill]);
        assert_eq!(s.probe_failures, 0);
        // Probes outside Running change nothing.
        for phase in [P::Starting, P::Backoff, P::Stopping] {
            let (ns, a) = next(&p, at(phase.clone()), probe(false), t0);
            assert_eq!((ns.phase, ns.probe_failures, a), (phase, 0, vec![]));
        }
    }

    #[test]
    fn restarts_are_labelled_with_their_cause() {
        let p = policy(RestartPolicy::OnFailure);
        let t0 = Instant::now();
        let cause_of = |phase: Phase, event: Event| {
            let (s, a) = next(&p, at(phase), event, t0);
            // A kill or quit first: the exit that follows carries the cause.
            let (_, a) = if a.iter().any(|a| matches!(a, A::Kill | A::Quit)) {
                next(&p, s, crash(), t0)
            } else {
                (s, a)
            };
            a.iter().find_map(|a| match a {
                A::LogRestart { cause, .. } => Some(*cause),
                _ => None,
            })
        };
        let running = P::Running { since: t0 };
        assert_eq!(cause_of(running.clone(), crash()), Some(Cause::Exit));
        assert_eq!(cause_of(P::Starting, crash()), Some(Cause::Exit));
        assert_eq!(
            cause_of(P::Starting, Event::ReadyTimeout),
            Some(Cause::ReadyTimeout)
        );
        let hung = State {
            probe_failures: 2,
            ..at(running.clone())
        };
        let (s, _) = next(&p, hung, probe(false), t0);
        let (_, a) = next(&p, s, crash(), t0);
        assert!(a.contains(&A::LogRestart {
            reason: "php-fpm stopped answering its ping (3 probes in a row; last: timeout)".into(),
            cause: Cause::Liveness
        }));
        assert_eq!(
            cause_of(
                running,
                Event::Restart {
                    reason: "asked".into()
                }
            ),
            Some(Cause::Requested)
        );
        assert_eq!(
            cause_of(
                P::Backoff,
                Event::Restart {
                    reason: "asked".into()
                }
            ),
            Some(Cause::Requested)
        );
    }
}
