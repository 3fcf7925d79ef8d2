//! Validate, then apply (DESIGN §6): a reload re-reads the config, renders
//! it into a fresh staging directory (inside the running one), has php-fpm
//! test it there, and only
//! then writes the same file set into the running directory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::child::PhpFpm;
use super::state::{Event, Policy, Prepared};
use super::{liveness_interval, retire, sd_reloading, wait_ready};
use crate::config::Endpoint;
use crate::config::{self, Config, ConfigError};

use crate::fcgi::upstream::PhpFpmState;
use crate::render::InternalPaths;

pub use crate::generation::Generation;

/// A tested candidate, not yet applied.
#[derive(Debug)]
pub struct Candidate(Generation);

/// Re-reads `path`, renders into a staging directory beside `dir`, and runs
/// `php-fpm -t` there. Nothing in `dir` changes.
pub async fn prepare(
    path: &Path,
    dir: &Path,
    paths: &InternalPaths,
    dev: bool,
) -> anyhow::Result<Candidate> {
    let (config, _notes) = config::load(path)?;
    if !config.php_fpm.enabled {
        anyhow::bail!(
            "php_fpm.enabled: false cannot be applied by a reload; fix: restart tqsup to stop launching php-fpm"
        );
    }
    let stage = crate::runtime_dir::staging_beside(dir)?;
    let staged = Generation::prepare(config, paths, stage.path(), dev)?;
    staged.write()?;
    staged.test().await?;
    Ok(Candidate(staged.moved_to(paths, dir, dev)?))
}

impl Candidate {
    /// Writes the files into the running directory (each by atomic rename)
    /// and removes pool files of a renamed pool.
    pub fn apply(self) -> anyhow::Result<Generation> {
        let g = self.0;
        g.write()?;
        Ok(g)
    }

    pub fn generation(&self) -> &Generation {
        &self.0
    }

    pub fn into_generation(self) -> Generation {
        self.0
    }
}

/// What a reload needs to know, taken from the supervisor when it starts.
pub struct ReloadCtx {
    /// The config file to re-read.
    pub path: PathBuf,
    /// The running directory.
    pub dir: PathBuf,
    pub paths: InternalPaths,
    pub dev: bool,
    /// The generation running now.
    pub running: Generation,
    /// The instance number a php-fpm started beside the running one gets.
    pub instance: u64,
}

/// How a reload step ended.
pub enum ReloadDone {
    /// The new config was not applied; the running php-fpm keeps serving.
    Refused(anyhow::Error),
    /// A new php-fpm with the new config answers its ping beside the
    /// running one: switch to it and retire the old one.
    Beside {
        generation: Box<Generation>,
        child: Box<PhpFpm>,
        instance: u64,
    },
    /// The new files are written where the running php-fpm reads them:
    /// send it SIGUSR2.
    Signal { generation: Box<Generation> },
    /// After SIGUSR2: whether php-fpm answered its ping again.
    Signaled(bool),
    /// The change needs a restart (php-fpm's fixed address or command).
    Restart {
        generation: Box<Generation>,
        why: String,
    },
}

/// Runs a reload up to the point where the supervisor switches: validates
/// the new config aside, then (when tqsup owns php-fpm's endpoint) starts
/// the new php-fpm on sockets of its own and waits for its `pong`.
pub async fn run(ctx: ReloadCtx) -> ReloadDone {
    match run_inner(ctx).await {
        Ok(done) => done,
        Err(e) => ReloadDone::Refused(e),
    }
}

async fn run_inner(ctx: ReloadCtx) -> anyhow::Result<ReloadDone> {
    let candidate = prepare(&ctx.path, &ctx.dir, &ctx.paths, ctx.dev).await?;
    let new = candidate.generation();
    let old = &ctx.running;
    for key in restart_only_changes(&old.config, &new.config) {
        tracing::warn!(
            key,
            "{key} changed: a reload cannot apply it; restart tqsup for it to take effect"
        );
    }
    if super::owns_endpoint(&new.config) {
        let mut generation = candidate.into_generation();
        generation.write_instance(&ctx.paths, ctx.dev, ctx.instance)?;
        let pool = &generation.config.php_fpm.pool.name;
        let child = PhpFpm::spawn(&generation.command, pool, &generation.files.endpoint)
            .with_context(|| {
                format!("cannot launch {}", generation.command[0].to_string_lossy())
            })?;
        tracing::info!(pid = child.pid(), endpoint = %generation.files.endpoint, "new config tested; php-fpm started beside the running one");
        let within = generation.config.supervisor.ready_timeout;
        let ping = ctx.paths.ping.clone();
        if !super::wait_ready(generation.files.status.clone(), ping, within).await {
            anyhow::bail!(
                "the new php-fpm did not answer its ping within supervisor.ready_timeout_ms ({} ms); it was stopped",
                within.as_millis()
            );
        }
        return Ok(ReloadDone::Beside {
            generation: Box::new(generation),
            child: Box::new(child),
            instance: ctx.instance,
        });
    }
    let moved = old.files.endpoint != new.files.endpoint;
    let new_command = old.command != new.command;
    let generation = Box::new(candidate.apply()?);
    if moved {
        let why = format!(
            "php-fpm's listen address changed ({} -> {})",
            old.files.endpoint, generation.files.endpoint
        );
        return Ok(ReloadDone::Restart { generation, why });
    }
    if new_command {
        let why = "php-fpm's command line changed".to_string();
        return Ok(ReloadDone::Restart { generation, why });
    }
    Ok(ReloadDone::Signal { generation })
}

/// The keys that differ between `old` and `new` but that a reload cannot
/// apply: the forward listener, the admin endpoint, logging and dev mode
/// are set up once when tqsup starts. Logged at each reload, so no change
/// is silently ignored.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! compare {
        ($($key:literal => $($field:ident).+),* $(,)?) => {
            $( if old.$($field).+ != new.$($field).+ { out.push($key); } )*
        };
    }
    compare!(
        "forward.enabled" => forward.enabled,
        "forward.listen" => forward.listen,
        "forward.socket_mode" => forward.socket_mode,
        "forward.max_connections" => forward.max_connections,
        "forward.queue_timeout_ms" => forward.queue_timeout,
        "forward.retry_idempotent" => forward.retry_idempotent,
        "forward.params_timeout_ms" => forward.params_timeout,
        "forward.stdin_timeout_ms" => forward.stdin_timeout,
        "forward.params_buffer_bytes" => forward.params_buffer,
        "forward.params_buffer_total_bytes" => forward.params_buffer_total,
        "forward.health.open_ms" => forward.health.open,
        "forward.lanes" => forward.lanes,
        "forward.slow_request_ms" => forward.slow_request,
        "forward.pool_idle_timeout_ms" => forward.pool_idle_timeout,
        "log.access" => log.access,
        "php_fpm.connect_timeout_ms" => php_fpm.connect_timeout,
        "php_fpm.request_timeout_ms" => php_fpm.request_timeout,
        "php_fpm.read_timeout_ms" => php_fpm.read_timeout,
        "php_fpm.write_timeout_ms" => php_fpm.write_timeout,
        "admin.listen" => admin.listen,
        "log.format" => log.format,
        "log.level" => log.level,
        "dev.http_listen" => dev.http_listen,
        "dev.watch" => dev.watch,
        "dev.hooks" => dev.hooks,
    );
    out
}

/// Logs why a reload was refused: every config problem on its own line,
/// naming its key.
pub fn log_refusal(err: &anyhow::Error) {
    let problems = err
        .chain()
        .find_map(|c| c.downcast_ref::<ConfigError>())
        .map(ConfigError::problems)
        .unwrap_or_default();
    for p in problems {
        tracing::error!(key = %p.key, fix = %p.fix, "reload refused: {}: {}", p.key, p.message);
    }
    tracing::error!("reload refused; php-fpm keeps serving the previous config: {err:#}");
}

/// The supervisor's side of a reload: it performs what the state machine
/// decided (`state/reload.rs`), running the reload and holding what it
/// prepared until the actions that follow take it.
impl super::Supervisor {
    /// Validate, then apply (DESIGN §6): the new config is rendered and
    /// tested aside; then (when tqsup owns the endpoint) a new php-fpm
    /// starts beside the running one. Ends in a [`ReloadDone`].
    pub(super) fn start_reload(&mut self, reason: String) {
        tracing::info!(reason, "reloading the configuration");
        sd_reloading();
        let Some(path) = self.setup.generation.config.source.clone() else {
            let e = anyhow::anyhow!(
                "tqsup runs on its built-in default config; there is no file to re-read"
            );
            self.reload = Some(Box::pin(std::future::ready(ReloadDone::Refused(e))));
            return;
        };
        let ctx = ReloadCtx {
            path,
            dir: self.setup.dir.clone(),
            paths: self.setup.paths.clone(),
            dev: self.setup.dev,
            running: self.setup.generation.clone(),
            instance: self.instance + 1,
        };
        self.reload = Some(Box::pin(run(ctx)));
    }

    /// A finished reload step as the state machine's event; what it
    /// prepared is held for the actions that follow.
    pub(super) fn reload_event(&mut self, done: ReloadDone) -> Event {
        let kind = match &done {
            ReloadDone::Refused(_) => Prepared::Refused,
            ReloadDone::Beside { .. } => Prepared::Beside,
            ReloadDone::Signal { .. } => Prepared::Signal,
            ReloadDone::Restart { why, .. } => Prepared::Restart { why: why.clone() },
            ReloadDone::Signaled(ok) => return Event::Reloaded { ok: *ok },
        };
        self.prepared = Some(done);
        Event::ReloadPrepared(kind)
    }

    /// Logs why the prepared reload was refused.
    pub(super) fn log_prepared_refusal(&mut self) {
        match self.prepared.take() {
            Some(ReloadDone::Refused(e)) => log_refusal(&e),
            _ => unexpected("LogRefusal"),
        }
    }

    /// The php-fpm started beside becomes the running one, published
    /// ready; the old one finishes its requests, then stops (`retire.rs`).
    pub(super) fn switch_to_new(&mut self) {
        let Some(ReloadDone::Beside {
            generation,
            child,
            instance,
        }) = self.prepared.take()
        else {
            return unexpected("SwitchToNew");
        };
        let old_child = self.child.replace(*child);
        let old_files = std::mem::replace(&mut self.setup.generation, *generation).files;
        self.instance = instance;
        self.apply_settings();
        let old_backend = self.backend.take();
        self.publish_ready();
        let grace = self.setup.generation.config.supervisor.stop_timeout;
        if let Some(old) = old_child {
            self.retiring.spawn(retire::replaced(
                old,
                old_backend,
                old_files,
                grace,
                self.stop.clone(),
            ));
        }
        tracing::info!("php-fpm reloaded");
    }

    /// Takes in the prepared generation (its files are written where
    /// php-fpm reads them): the next start uses it.
    pub(super) fn keep_for_next_start(&mut self) {
        match self.prepared.take() {
            Some(ReloadDone::Signal { generation } | ReloadDone::Restart { generation, .. }) => {
                self.setup.generation = *generation;
                self.apply_settings();
                tracing::info!("new config written; php-fpm will start with it");
            }
            _ => unexpected("KeepForNextStart"),
        }
    }

    /// Takes in the prepared generation and has the running php-fpm reload
    /// it (SIGUSR2); then waits for it to answer again (→ `Signaled`).
    pub(super) fn signal_usr2(&mut self) {
        let Some(ReloadDone::Signal { generation }) = self.prepared.take() else {
            return unexpected("SignalUsr2");
        };
        self.setup.generation = *generation;
        self.apply_settings();
        // Idle pooled connections pin children until
        // process_control_timeout: close them first (publishing a
        // non-ready state retires the backend).
        self.publish(PhpFpmState::Starting);
        self.backend = None;
        let child = self.child.as_ref().expect("running");
        tracing::info!(
            pid = child.pid(),
            "new config tested; sending SIGUSR2 to php-fpm"
        );
        let notices = child.logs().ready_notices();
        child.signal(Signal::SIGUSR2);
        let g = &self.setup.generation;
        let within = g.config.supervisor.ready_timeout;
        let (endpoint, ping) = (g.files.status.clone(), self.setup.paths.ping.clone());
        self.reload = Some(Box::pin(async move {
            ReloadDone::Signaled(await_reloaded(notices, endpoint, ping, within).await)
        }));
    }

    /// Takes in the settings of a reloaded config that apply without a
    /// restart: the restart policy, backoff and liveness interval.
    fn apply_settings(&mut self) {
        let config = &self.setup.generation.config;
        let s = &config.supervisor;
        self.policy = Policy::from_config(config);
        match Backoff::try_new(s.backoff_initial, s.backoff_max, Backoff::JITTER) {
            Ok(b) => self.backoff = b,
            Err(e) => tracing::warn!(error = %e, "keeping the previous backoff"),
        }
        self.liveness = liveness_interval(config);
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

/// An action found no prepared payload of the kind the state machine was
/// told of: a bug in the task, logged rather than fatal.
fn unexpected(action: &str) {
    tracing::error!(
        action,
        "bug: no prepared reload of the kind this action takes"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_a_reload_cannot_apply_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("public")).unwrap();
        let load = |text: &str| {
            let path = dir.path().join("tqsup.yaml");
            std::fs::write(&path, text).unwrap();
            config::load(&path).unwrap().0
        };
        let old = load("forward:\n  listen: 127.0.0.1:9000\n");
        let same = load(
            "forward:\n  listen: 127.0.0.1:9000\nphp_fpm:\n  pool:\n    max_children: 9\n    max_spare_servers: 3\n",
        );
        assert!(restart_only_changes(&old, &same).is_empty());
        let new = load(
            "forward:\n  listen: 127.0.0.1:9001\n  queue_timeout_ms: 1\nlog:\n  level: debug\n",
        );
        assert_eq!(
            restart_only_changes(&old, &new),
            ["forward.listen", "forward.queue_timeout_ms", "log.level"]
        );
    }
}
