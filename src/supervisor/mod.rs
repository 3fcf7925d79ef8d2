//! The supervisor task: performs what the state machine (`state.rs`)
//! decides. It launches php-fpm (`child.rs`), waits for its ping, probes its
//! liveness on php-fpm's status pool, restarts it with backoff, runs the
//! reloads the state machine starts (`reload.rs`), publishes
//! [`PhpFpmState`] and talks to systemd.
//!
//! When tqsup owns php-fpm's endpoint (forwarding on, socket in the runtime
//! dir), every php-fpm instance gets sockets of its own: a reload starts the
//! new php-fpm beside the old one and switches the pool to it once it
//! answers, and a master that dies leaves its children to finish their
//! requests while the next php-fpm starts on a fresh socket. The old
//! instance is retired in the background (`retire.rs`).

pub mod backoff;
pub mod child;
pub mod group;
mod liveness;
pub mod logs;
pub mod metrics;
mod publish;
pub mod recycle;
pub mod reload;
mod retire;
pub mod state;
mod summary;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control::Control;
use crate::fcgi::probe;
use crate::fcgi::upstream::{Backend, PhpFpmState};
use crate::render::InternalPaths;
use backoff::Backoff;
use child::PhpFpm;
use liveness::{liveness_interval, wait_ready};
pub use publish::sd;
use publish::{sd_reloading, sd_status};
use reload::{Generation, ReloadDone};
use state::{Action, Event, Phase, Policy, State};
pub use summary::{ChildCounts, breaker_word, summary};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Everything the supervisor needs to start.
pub struct Setup {
    /// The first generation, already rendered, written and tested.
    pub generation: Generation,
    /// php-fpm's internal paths (kept across reloads).
    pub paths: InternalPaths,
    /// The running directory the files live in.
    pub dir: PathBuf,
    pub dev: bool,
}

/// How the supervisor ended: tqsup exits with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: u8,
    pub message: Option<String>,
}

/// Whether php-fpm instances of `config` get sockets of their own in the
/// runtime directory (and so can run beside each other): only when tqsup
/// owns php-fpm's endpoint, i.e. it forwards and php-fpm listens on the
/// private default socket. Otherwise web servers or the dev front talk to
/// a fixed address, and a reload is php-fpm's own SIGUSR2.
pub fn owns_endpoint(config: &Config) -> bool {
    config.forward.enabled && config.php_fpm.listen.is_none()
}

/// The task's state. Fields are disjoint so `select!` can borrow them.
pub struct Supervisor {
    setup: Setup,
    policy: Policy,
    backoff: Backoff,
    state: State,
    published: watch::Sender<PhpFpmState>,
    /// Whether the published php-fpm answered its last ping (`/readyz`).
    answering: watch::Sender<bool>,
    /// The forwarder's breaker, for the `STATUS=` line.
    breaker: Option<crate::fcgi::breaker::SharedBreaker>,
    controls: mpsc::Receiver<Control>,
    stop: CancellationToken,
    /// The running php-fpm, if any.
    child: Option<PhpFpm>,
    /// The instance number of the files and sockets `setup.generation.files`
    /// were rendered for (see `render::socket_files`).
    instance: u64,
    /// php-fpm processes launched so far.
    spawned: u64,
    /// The backend of the php-fpm published as ready last.
    backend: Option<Arc<Backend>>,
    /// The readiness probe while starting: true = pong.
    ready: Option<BoxFuture<bool>>,
    /// One liveness probe in flight.
    probe: Option<BoxFuture<Result<(), probe::ProbeError>>>,
    liveness: Interval,
    /// Responses completed when liveness was last judged: responses that
    /// keep completing are evidence of life, whatever a probe says.
    seen_completed: u64,
    /// The backoff sleep before a restart.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Grows at every Ready published.
    generation: u64,
    /// READY=1 has been sent to systemd.
    notified_ready: bool,
    /// The reload step in progress, if any (the state machine's
    /// `state.reload.step` says which).
    reload: Option<BoxFuture<ReloadDone>>,
    /// What a reload prepared, held while the state machine decides on
    /// its kind and the actions that follow take it.
    prepared: Option<ReloadDone>,
    /// Old php-fpm instances finishing their requests before they stop.
    retiring: TaskTracker,
    /// Twice a second: tqsup's look at its children (`recycle.rs`).
    recycle: Interval,
}

impl Supervisor {
    pub fn new(
        setup: Setup,
        published: watch::Sender<PhpFpmState>,
        controls: mpsc::Receiver<Control>,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let s = &setup.generation.config.supervisor;
        let backoff = Backoff::try_new(s.backoff_initial, s.backoff_max, Backoff::JITTER)?;
        let liveness = liveness_interval(&setup.generation.config);
        Ok(Supervisor {
            policy: Policy::from_config(&setup.generation.config),
            backoff,
            setup,
            state: State::default(),
            published,
            answering: watch::Sender::new(false),
            breaker: None,
            controls,
            stop,
            child: None,
            instance: 1,
            spawned: 0,
            backend: None,
            ready: None,
            probe: None,
            liveness,
            seen_completed: 0,
            waiting: None,
            generation: 0,
            notified_ready: false,
            reload: None,
            prepared: None,
            retiring: TaskTracker::new(),
            recycle: tokio::time::interval(Duration::from_millis(500)),
        })
    }

    /// Whether php-fpm answered the supervisor's last ping (false until
    /// the first pong): the admin endpoint's `/readyz` reads it.
    pub fn answering(&self) -> watch::Receiver<bool> {
        self.answering.subscribe()
    }

    /// Shows the forwarder's breaker in systemd's `STATUS=` line.
    pub fn show_breaker(&mut self, breaker: crate::fcgi::breaker::SharedBreaker) {
        self.breaker = Some(breaker);
    }

    /// Publishes whether php-fpm answers its ping; `tqsup_php_fpm_up`
    /// mirrors it.
    fn set_answering(&self, yes: bool) {
        metrics::global().up.set(i64::from(yes));
        self.answering.send_replace(yes);
    }

    /// Supervises until stopped or given up.
    pub async fn run(mut self) -> Outcome {
        let mut events = std::collections::VecDeque::from([Event::Start]);
        let mut controls_open = true;
        let mut stop_seen = false;
        loop {
            while let Some(event) = events.pop_front() {
                let state = std::mem::take(&mut self.state);
                let (state, actions) = state::next(&self.policy, state, event, Instant::now());
                self.state = state;
                for action in actions {
                    if let Some(out) = self.perform(action, &mut events).await {
                        self.publish(PhpFpmState::Stopped);
                        self.finish_retiring().await;
                        return out;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled(), if !stop_seen => {
                    stop_seen = true;
                    events.push_back(Event::Stop);
                }
                _ = wait_child(&mut self.child) => {
                    let exit = self.child_exited().await;
                    events.push_back(Event::Exited { exit });
                }
                done = maybe(&mut self.reload) => {
                    self.reload = None;
                    events.push_back(self.reload_event(done));
                }
                ok = maybe(&mut self.ready) => {
                    self.ready = None;
                    events.push_back(if ok { Event::Ready } else { Event::ReadyTimeout });
                }
                result = maybe(&mut self.probe) => {
                    self.probe = None;
                    events.push_back(self.probe_event(result));
                }
                _ = maybe(&mut self.waiting) => {
                    self.waiting = None;
                    events.push_back(Event::BackoffElapsed);
                }
                _ = self.liveness.tick() => self.start_probe(),
                _ = self.recycle.tick(), if self.setup.generation.config.php_fpm.pool.recycles() => {
                    if matches!(self.state.phase, Phase::Running { .. })
                        && let Some(b) = &self.backend
                    {
                        recycle::tick(b, &self.setup.generation.config.php_fpm.pool);
                    }
                }
                control = self.controls.recv(), if controls_open => match control {
                    None => controls_open = false,
                    Some(Control::Reload { reason }) => events.push_back(Event::ReloadRequested { reason }),
                    Some(Control::Restart { reason }) => events.push_back(Event::Restart { reason }),
                    Some(Control::ReopenLogs) => {
                        if let Some(c) = &self.child {
                            tracing::info!(pid = c.pid(), "forwarding SIGUSR1 to php-fpm (reopen logs)");
                            c.signal(Signal::SIGUSR1);
                        }
                    }
                },
            }
        }
    }

    /// The running php-fpm's master exited. The forwarder hears it first (so
    /// no request goes to it and failures on it never count), then the exit
    /// is classified. When each instance has its own sockets, the children
    /// of a master that died on its own may still be running requests: they
    /// finish them (bounded by `stop_timeout_ms`) while the next php-fpm
    /// starts; otherwise the group is killed now (it holds the address).
    async fn child_exited(&mut self) -> state::ExitKind {
        let mut child = self.child.take().expect("a child that exited");
        self.ready = None;
        self.probe = None;
        let was_live = matches!(self.state.phase, Phase::Running { .. });
        if self.published.borrow().is_ready() {
            self.set_answering(false);
            self.publish(PhpFpmState::Restarting);
        }
        let exit = child.exit_kind().await;
        if was_live && owns_endpoint(&self.setup.generation.config) {
            let backend = self.backend.take();
            let files = self.setup.generation.files.clone();
            let grace = self.setup.generation.config.supervisor.stop_timeout;
            self.retiring
                .spawn(retire::orphaned(child, backend, files, grace));
        } else {
            child.reap_group().await;
        }
        exit
    }

    async fn perform(
        &mut self,
        action: Action,
        events: &mut std::collections::VecDeque<Event>,
    ) -> Option<Outcome> {
        match action {
            Action::Spawn => {
                if let Err(e) = self.spawn() {
                    events.push_back(Event::Exited {
                        exit: state::ExitKind::Failed(format!("{e:#}")),
                    });
                }
            }
            Action::AwaitReady => {
                let g = &self.setup.generation;
                let (endpoint, path) = (g.files.status.clone(), self.setup.paths.ping.clone());
                let within = g.config.supervisor.ready_timeout;
                self.ready = Some(Box::pin(wait_ready(endpoint, path, within)));
            }
            Action::PublishReady => self.publish_ready(),
            Action::PublishDown => {
                self.set_answering(false);
                self.publish(PhpFpmState::Restarting);
                sd_status(&PhpFpmState::Restarting, self.breaker.as_ref());
            }
            Action::Kill => {
                if let Some(c) = &self.child {
                    tracing::warn!(pid = c.pid(), "killing php-fpm's process group");
                    c.kill();
                }
            }
            Action::Quit => {
                if let Some(mut c) = self.child.take() {
                    self.ready = None;
                    self.probe = None;
                    let stop_timeout = self.setup.generation.config.supervisor.stop_timeout;
                    if let Some(b) = self.backend.take() {
                        // Its idle connections are closed (retired when
                        // Restarting was published): wait for the requests
                        // in flight, then php-fpm's graceful stop is quick.
                        let _ = tokio::time::timeout(stop_timeout, b.drained()).await;
                    }
                    c.stop(stop_timeout).await;
                    events.push_back(Event::Exited {
                        exit: c.finish().await,
                    });
                } else {
                    events.push_back(Event::Exited {
                        exit: state::ExitKind::Clean,
                    });
                }
            }
            Action::Backoff { attempt } => {
                let delay = self.backoff.jittered(attempt, rand::random::<f64>());
                tracing::warn!(
                    attempt = attempt + 1,
                    delay_ms = delay.as_millis() as u64,
                    "php-fpm restart scheduled"
                );
                self.waiting = Some(Box::pin(tokio::time::sleep(delay)));
            }
            Action::LogRestart { reason, cause } => {
                metrics::global().php_fpm_restarted(cause);
                tracing::warn!(cause = cause.label(), "restarting php-fpm: {reason}");
            }
            Action::Alive => {
                self.set_answering(true);
                if std::env::var_os("NOTIFY_SOCKET").is_some() {
                    // Keeps `systemctl status` current (in flight, queued, …).
                    sd_status(&self.published.borrow(), self.breaker.as_ref());
                }
                if sd_notify::watchdog_enabled().is_some() {
                    sd(&[NotifyState::Watchdog]);
                }
            }
            Action::ProbeFailed {
                failures,
                threshold,
                error,
            } => {
                self.set_answering(false);
                tracing::warn!(failures, threshold, error, "php-fpm liveness probe failed");
            }
            Action::Exit { code, message } => return Some(Outcome { code, message }),
            Action::StartReload { reason } => self.start_reload(reason),
            Action::DeferReload { reason } => tracing::info!(
                reason,
                "reload requested; it runs after the current reload or start"
            ),
            Action::IgnoreReload { reason } => {
                tracing::info!(reason, "reload requested while stopping; dropped")
            }
            // A php-fpm the reload started beside is killed on drop.
            Action::AbandonReload => self.reload = None,
            Action::LogRefusal => self.log_prepared_refusal(),
            Action::SwitchToNew => self.switch_to_new(),
            Action::DiscardNew => self.prepared = None,
            Action::KeepForNextStart => self.keep_for_next_start(),
            Action::SignalUsr2 => self.signal_usr2(),
            Action::CountReload { ok } => metrics::global().reload(ok),
            Action::ReloadEnded => sd(&[NotifyState::Ready]),
        }
        None
    }

    /// Launches php-fpm; with sockets of its own when tqsup owns the
    /// endpoint (a new instance number, its files rendered for it).
    fn spawn(&mut self) -> anyhow::Result<()> {
        let g = &mut self.setup.generation;
        if owns_endpoint(&g.config) && self.spawned > 0 {
            self.instance += 1;
            g.write_instance(&self.setup.paths, self.setup.dev, self.instance)?;
        }
        let pool = &g.config.php_fpm.pool.name;
        let c = PhpFpm::spawn(&g.command, pool, &g.files.endpoint).map_err(|e| {
            anyhow::anyhow!("cannot launch {}: {e}", g.command[0].to_string_lossy())
        })?;
        self.spawned += 1;
        metrics::global().php_fpm_started();
        tracing::info!(pid = c.pid(), pool = %pool, endpoint = %g.files.endpoint, "php-fpm started");
        self.child = Some(c);
        Ok(())
    }

    /// Waits (bounded) for the old instances being retired.
    async fn finish_retiring(&mut self) {
        self.retiring.close();
        let bound = self.setup.generation.config.supervisor.stop_timeout + Duration::from_secs(5);
        if tokio::time::timeout(bound, self.retiring.wait())
            .await
            .is_err()
        {
            tracing::warn!("old php-fpm instances did not stop in time");
        }
    }
}

async fn maybe<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn wait_child(child: &mut Option<PhpFpm>) {
    match child {
        Some(c) => {
            c.wait().await;
        }
        None => std::future::pending().await,
    }
}
