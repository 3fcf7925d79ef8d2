//! The supervisor task: performs what the state machine (`state.rs`)
//! decides. It launches php-fpm (`child.rs`), waits for its ping, probes its
//! liveness, restarts it with backoff, reloads it on request (serialized:
//! one request at a time), publishes [`PhpFpmState`] and talks to systemd.

pub mod backoff;
pub mod child;
pub mod holder;
pub mod logs;
pub mod reload;
pub mod state;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use nix::sys::signal::Signal;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::Endpoint;
use crate::control::Control;
use crate::metrics;
use crate::probe;
use crate::upstream::{InternalPaths, PhpFpmState};
use backoff::Backoff;
use child::PhpFpm;
use reload::Generation;
use state::{Action, Event, Phase, Policy, State};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How often the readiness probe retries while php-fpm starts.
const READY_POLL: Duration = Duration::from_millis(20);

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

/// The task's state. Fields are disjoint so `select!` can borrow them.
pub struct Supervisor {
    setup: Setup,
    policy: Policy,
    backoff: Backoff,
    state: State,
    published: watch::Sender<PhpFpmState>,
    controls: mpsc::Receiver<Control>,
    stop: CancellationToken,
    /// The running php-fpm, if any.
    child: Option<PhpFpm>,
    /// The readiness probe while starting: true = pong.
    ready: Option<BoxFuture<bool>>,
    /// One liveness probe in flight.
    probe: Option<BoxFuture<Result<(), probe::ProbeError>>>,
    liveness: Interval,
    /// Consecutive failed liveness probes.
    failures: u32,
    /// The backoff sleep before a restart.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Grows at every Ready published.
    generation: u64,
    /// READY=1 has been sent to systemd.
    notified_ready: bool,
    /// Why the coming restart happens, for the restarts metric's label.
    restart_cause: &'static str,
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
        let health = &setup.generation.config.forward.health;
        let mut every = health.interval;
        if let Some(wd) = sd_notify::watchdog_enabled() {
            every = every.min(wd / 2);
        }
        let mut liveness = tokio::time::interval(every.max(Duration::from_millis(10)));
        liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Supervisor {
            policy: Policy::from_config(s),
            backoff,
            setup,
            state: State::default(),
            published,
            controls,
            stop,
            child: None,
            ready: None,
            probe: None,
            liveness,
            failures: 0,
            waiting: None,
            generation: 0,
            notified_ready: false,
            restart_cause: "exit",
        })
    }

    /// Supervises until stopped or given up.
    pub async fn run(mut self) -> Outcome {
        let mut events = std::collections::VecDeque::from([Event::Start]);
        let mut controls_open = true;
        let mut stop_seen = false;
        loop {
            while let Some(event) = events.pop_front() {
                if let Some(cause) = restart_cause(&self.state.phase, &event) {
                    self.restart_cause = cause;
                }
                let state = std::mem::take(&mut self.state);
                let (state, actions) = state::next(&self.policy, state, event, Instant::now());
                self.state = state;
                for action in actions {
                    if let Some(out) = self.perform(action, &mut events).await {
                        self.published.send_replace(PhpFpmState::Stopped);
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
                    let child = self.child.take().expect("a child that exited");
                    self.ready = None;
                    self.probe = None;
                    events.push_back(Event::Exited { exit: child.finish().await });
                }
                ok = maybe(&mut self.ready) => {
                    self.ready = None;
                    events.push_back(if ok { Event::Ready } else { Event::ReadyTimeout });
                }
                result = maybe(&mut self.probe) => {
                    self.probe = None;
                    if let Some(e) = self.liveness_result(result) {
                        events.push_back(e);
                    }
                }
                _ = maybe(&mut self.waiting) => {
                    self.waiting = None;
                    events.push_back(Event::BackoffElapsed);
                }
                _ = self.liveness.tick() => self.start_probe(),
                control = self.controls.recv(), if controls_open => match control {
                    None => controls_open = false,
                    Some(Control::Reload { reason }) => self.reload(&reason, &mut events).await,
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

    async fn perform(
        &mut self,
        action: Action,
        events: &mut std::collections::VecDeque<Event>,
    ) -> Option<Outcome> {
        let g = &self.setup.generation;
        match action {
            Action::Spawn => {
                let pool = &g.config.php_fpm.pool.name;
                match PhpFpm::spawn(&g.command, pool, &g.files.endpoint) {
                    Ok(c) => {
                        metrics::global().php_fpm_started();
                        tracing::info!(pid = c.pid(), pool = %pool, "php-fpm started");
                        self.child = Some(c);
                    }
                    Err(e) => events.push_back(Event::Exited {
                        exit: state::ExitKind::Failed(format!(
                            "cannot launch {}: {e}",
                            g.command[0].to_string_lossy()
                        )),
                    }),
                }
            }
            Action::AwaitReady => {
                let (endpoint, path) = (g.files.endpoint.clone(), self.setup.paths.ping.clone());
                let within = g.config.supervisor.ready_timeout;
                self.ready = Some(Box::pin(wait_ready(endpoint, path, within)));
            }
            Action::PublishReady => {
                self.failures = 0;
                self.publish_ready();
            }
            Action::PublishDown => {
                metrics::global().php_fpm_up.set(0);
                self.published.send_replace(PhpFpmState::Restarting);
                sd_status(&PhpFpmState::Restarting);
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
                    c.stop(g.config.supervisor.stop_timeout).await;
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
            Action::LogRestart { reason } => {
                metrics::global().php_fpm_restarted(self.restart_cause);
                tracing::warn!("restarting php-fpm: {reason}");
            }
            Action::Exit { code, message } => return Some(Outcome { code, message }),
        }
        None
    }

    fn publish_ready(&mut self) {
        self.generation += 1;
        let g = &self.setup.generation;
        let pool = &g.config.php_fpm.pool;
        let pid = self.child.as_ref().map_or(0, PhpFpm::pid);
        let ready = PhpFpmState::Ready {
            generation: self.generation,
            endpoint: g.files.endpoint.clone(),
            pool_size: g.config.php_fpm.pool_size,
        };
        metrics::global().php_fpm_up.set(1);
        self.published.send_replace(ready.clone());
        let status = crate::admin::summary(&ready, None);
        tracing::info!(pid, generation = self.generation, endpoint = %g.files.endpoint, pool = %pool.name, "php-fpm is ready");
        if self.notified_ready {
            sd(&[NotifyState::Status(&status)]);
        } else {
            self.notified_ready = true;
            sd(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
    }

    fn start_probe(&mut self) {
        if !matches!(self.state.phase, Phase::Running { .. }) || self.probe.is_some() {
            return;
        }
        let g = &self.setup.generation;
        let (endpoint, path) = (g.files.endpoint.clone(), self.setup.paths.ping.clone());
        let timeout = g.config.forward.health.timeout;
        self.probe = Some(Box::pin(async move {
            probe::ping(&endpoint, &path, timeout).await
        }));
    }

    /// Counts a liveness result; the event when the threshold is reached.
    fn liveness_result(&mut self, result: Result<(), probe::ProbeError>) -> Option<Event> {
        if !matches!(self.state.phase, Phase::Running { .. }) {
            return None;
        }
        match result {
            Ok(()) => {
                self.failures = 0;
                metrics::global().php_fpm_up.set(1);
                if std::env::var_os("NOTIFY_SOCKET").is_some() {
                    // Keeps `systemctl status` current (in flight, queued, …).
                    sd_status(&self.published.borrow());
                }
                if sd_notify::watchdog_enabled().is_some() {
                    sd(&[NotifyState::Watchdog]);
                }
                None
            }
            Err(e) => {
                self.failures += 1;
                metrics::global().php_fpm_up.set(0);
                let threshold = self
                    .setup
                    .generation
                    .config
                    .forward
                    .health
                    .failure_threshold;
                tracing::warn!(failures = self.failures, threshold, error = %e, "php-fpm liveness probe failed");
                (self.failures >= threshold.max(1)).then(|| {
                    self.failures = 0;
                    Event::LivenessFailed {
                        reason: format!("{threshold} probes in a row; last: {e}"),
                    }
                })
            }
        }
    }

    /// A reload (SIGHUP or Control::Reload): validate, then apply.
    async fn reload(&mut self, reason: &str, events: &mut std::collections::VecDeque<Event>) {
        tracing::info!(reason, "reloading the configuration");
        sd_reloading();
        let Some(path) = self.setup.generation.config.source.clone() else {
            tracing::error!(
                "reload refused: tqsup runs on its built-in default config; there is no file to re-read"
            );
            metrics::global().reload(false);
            sd(&[NotifyState::Ready]);
            return;
        };
        let prepared =
            reload::prepare(&path, &self.setup.dir, &self.setup.paths, self.setup.dev).await;
        let applied = prepared.and_then(|c| c.apply());
        let new = match applied {
            Ok(new) => new,
            Err(e) => {
                reload::log_refusal(&e);
                metrics::global().reload(false);
                sd(&[NotifyState::Ready]);
                return;
            }
        };
        let old = std::mem::replace(&mut self.setup.generation, new);
        let g = &self.setup.generation;
        let moved = old.files.endpoint != g.files.endpoint;
        let new_command = old.command != g.command;
        match (&self.state.phase, &self.child) {
            (Phase::Running { .. }, Some(child)) if !moved && !new_command => {
                tracing::info!(
                    pid = child.pid(),
                    "new config tested; sending SIGUSR2 to php-fpm"
                );
                let notices = child.logs().ready_notices();
                child.signal(Signal::SIGUSR2);
                let within = g.config.supervisor.ready_timeout;
                let (endpoint, ping) = (g.files.endpoint.clone(), self.setup.paths.ping.clone());
                let ok = await_reloaded(notices, endpoint, ping, within).await;
                metrics::global().reload(ok);
                if ok {
                    self.publish_ready();
                }
            }
            (Phase::Running { .. } | Phase::Starting, Some(_)) => {
                let why = if moved {
                    format!(
                        "php-fpm's listen address changed ({} -> {})",
                        old.files.endpoint, g.files.endpoint
                    )
                } else if new_command {
                    "php-fpm's command line changed".to_string()
                } else {
                    "a reload arrived while php-fpm was starting".to_string()
                };
                metrics::global().reload(true);
                events.push_back(Event::Restart { reason: why });
            }
            _ => {
                metrics::global().reload(true);
                tracing::info!("new config written; php-fpm will start with it");
            }
        }
        sd(&[NotifyState::Ready]);
    }
}

/// After SIGUSR2: waits for php-fpm's next "ready to handle connections"
/// and a `pong`, within `within`.
async fn await_reloaded(
    mut notices: watch::Receiver<u64>,
    endpoint: Endpoint,
    ping: String,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    let _ = tokio::time::timeout_at(deadline, notices.changed()).await;
    let left = deadline.saturating_duration_since(Instant::now());
    let ok = wait_ready(endpoint, ping, left).await;
    if ok {
        tracing::info!("php-fpm reloaded");
    } else {
        tracing::warn!(
            "php-fpm did not answer its ping after the reload; the liveness probe will decide"
        );
    }
    ok
}

/// Pings until `pong` or until `within` has passed.
async fn wait_ready(endpoint: Endpoint, path: String, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match probe::ping(&endpoint, &path, left.min(Duration::from_secs(2))).await {
            Ok(()) => return true,
            Err(e) => tracing::trace!(error = %e, "php-fpm not ready yet"),
        }
        tokio::time::sleep(READY_POLL.min(deadline.saturating_duration_since(Instant::now())))
            .await;
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

/// The metrics label for a restart that `event` (in `phase`) may cause;
/// None keeps the cause already known (the exit of a php-fpm being replaced).
fn restart_cause(phase: &Phase, event: &Event) -> Option<&'static str> {
    match (phase, event) {
        (Phase::Replacing { .. }, Event::Exited { .. }) => None,
        (_, Event::Exited { .. }) => Some("exit"),
        (_, Event::LivenessFailed { .. }) => Some("liveness"),
        (_, Event::ReadyTimeout) => Some("ready_timeout"),
        (_, Event::Restart { .. }) => Some("requested"),
        _ => None,
    }
}

/// STATUS= for systemd: the one-line summary `/status` shows too.
fn sd_status(state: &PhpFpmState) {
    sd(&[NotifyState::Status(&crate::admin::summary(state, None))]);
}

/// sd_notify, ignoring errors (no systemd is fine).
pub fn sd(states: &[NotifyState]) {
    let _ = sd_notify::notify(states);
}

/// RELOADING=1 with the monotonic timestamp systemd ≥ 253 requires.
fn sd_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => sd(&[NotifyState::Reloading, now]),
        Err(_) => sd(&[NotifyState::Reloading]),
    }
}
