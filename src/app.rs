//! `tqsup run`: everything wired together under one tokio runtime and one
//! cancellation tree (a root `CancellationToken` and a `TaskTracker`; every
//! subsystem gets a child token). The shutdown order of DESIGN §6 is
//! written once, in [`shutdown`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control::Control;
use crate::exit::{self, Fatal};
use crate::fcgi::upstream::{Backend, PhpFpmState};
use crate::generation::Generation;
use crate::render;
use crate::render::InternalPaths;
use crate::runtime_dir::RuntimeDir;
use crate::signals::{Signal, Signals};
use crate::supervisor::{self, Outcome, Setup, Supervisor, child};

/// What `tqsup run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub dev: bool,
    pub verbose: u8,
}

/// Runs until SIGTERM/SIGINT (exit 0) or until php-fpm cannot be kept up.
pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    // Re-executed as the guard of a php-fpm process group (supervisor::child).
    if let Some(code) = child::guard_main_if_requested() {
        return Ok(code);
    }
    let (config, notes) = crate::config::load_or_default(args.config.as_deref(), args.dev)?;
    let dev = args.dev || config.dev.enabled;
    let level = match (args.verbose, dev) {
        (0, false) => config.log.level.clone(),
        (0 | 1, _) => "debug".to_string(),
        _ => "trace".to_string(),
    };
    // Dev mode's error pages show the last php-fpm/PHP log lines.
    let recent = dev.then(crate::dev::RecentLines::default);
    crate::logging::init(config.log.format, &level, recent.as_ref());
    if notes.legacy {
        tracing::info!(ignored = ?notes.ignored, "legacy TQServer worker.yaml mapped to tqsup's schema");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tqsup")
        .build()?;
    rt.block_on(run_async(config, dev, recent))
}

async fn run_async(
    config: Config,
    dev: bool,
    recent: Option<crate::dev::RecentLines>,
) -> anyhow::Result<u8> {
    // Handlers first: a SIGTERM during startup is a stop, not a kill.
    let mut signals = Signals::install()?;
    register_metrics();
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (state_tx, state_rx) = watch::channel(PhpFpmState::Starting);
    let (control_tx, control_rx) = mpsc::channel::<Control>(16);
    let paths = InternalPaths::generate();
    let stop_timeout = config.supervisor.stop_timeout;

    // The forward listener's address first: a taken one stops tqsup before
    // php-fpm is launched, naming the address and who holds it.
    let forward_socket = if config.forward.enabled {
        Some(bind_forward(&config)?)
    } else {
        None
    };
    // The forwarder's breaker, read by /readyz and the STATUS= line too.
    let breaker = crate::fcgi::breaker::Breaker::shared(&config.forward.health);
    // php-fpm: rendered, tested, then supervised; or forward-only mode.
    let supervisor_token = root.child_token();
    let mut php_endpoint = config.php_fpm.listen.clone();
    let mut answering = None;
    let (runtime, mut supervised) = if config.php_fpm.enabled {
        let (runtime, setup) = prepare(&config, &paths, dev).await?;
        php_endpoint = Some(setup.generation.files.endpoint.clone());
        let mut sup = Supervisor::new(
            setup,
            state_tx.clone(),
            control_rx,
            supervisor_token.clone(),
        )?;
        sup.show_breaker(breaker.clone());
        answering = Some(sup.answering());
        (Some(runtime), Some(tracker.spawn(sup.run())))
    } else {
        let endpoint = config
            .php_fpm
            .listen
            .clone()
            .ok_or_else(|| Fatal::new(exit::CONFIG, "php_fpm.enabled is false but php_fpm.listen is not set; fix: set php_fpm.listen to the address of the php-fpm to forward to"))?;
        tracing::info!(%endpoint, "php_fpm.enabled is false: launching nothing, forwarding to php-fpm at php_fpm.listen");
        state_tx.send_replace(PhpFpmState::Ready {
            backend: Backend::new(
                1,
                endpoint,
                None,
                config.php_fpm.pool_size,
                config.php_fpm.pool.max_requests,
            ),
        });
        sd_ready_forward_only(&state_tx.borrow());
        drop(control_rx);
        (None, None)
    };

    let shared = Arc::new(config.clone());
    // forward.lanes: one set, used by the forwarder, shown by /status.
    let lanes = Arc::new(crate::fcgi::lanes::Lanes::new(&config.forward.lanes));
    // forwarder: its own token, so shutdown can stop accepting first.
    let forwarder = forward_socket.map(|socket| {
        let token = root.child_token();
        let fwd = TaskTracker::new();
        let run = crate::fcgi::Forwarder {
            config: shared.clone(),
            state: state_rx.clone(),
            paths: paths.clone(),
            lanes: lanes.clone(),
            breaker: breaker.clone(),
            socket,
        }
        .run(token.clone());
        spawn_essential(&fwd, &root, "forward listener", run);
        (token, fwd)
    });
    // dev mode: watcher, hooks, dev HTTP front (Control::Reload = SIGHUP).
    if dev && let Some(endpoint) = &php_endpoint {
        let target = crate::dev::PhpTarget::for_config(&config, endpoint);
        let diagnostics = crate::dev::Diagnostics {
            state: Some(state_rx.clone()),
            recent,
        };
        let run = crate::dev::run_dev(
            shared.clone(),
            control_tx.clone(),
            target,
            diagnostics,
            root.child_token(),
        );
        spawn_essential(&tracker, &root, "dev mode", run);
    }
    // admin: /metrics /healthz /readyz /status.
    if let Some(listen) = config.admin.listen.clone() {
        let status_path = paths.status.clone();
        let timeout = config.forward.health.timeout;
        let scrape: crate::admin::ScrapeFn = Arc::new(move |endpoint| {
            let status_path = status_path.clone();
            Box::pin(async move {
                let r = crate::fcgi::probe::get(&endpoint, &status_path, "json", timeout).await?;
                Ok(r.body.to_vec())
            })
        });
        let mut view = crate::admin::AdminView::new(state_rx.clone(), scrape)
            .with_lanes(lanes.clone())
            .with_breaker(breaker.clone())
            .with_pool_name(&config.php_fpm.pool.name);
        if let Some(answering) = answering {
            view = view.with_answering(answering);
        }
        let run = crate::admin::run_admin(listen, Arc::new(view), root.child_token());
        spawn_essential(&tracker, &root, "admin endpoint", run);
    }

    let code = loop {
        tokio::select! {
            // A subsystem that cannot run (e.g. its port is taken) stops tqsup.
            _ = root.cancelled() => break Some(Err(Fatal::new(exit::FAILURE, "a subsystem failed to start (see the log above)").into())),
            signal = signals.recv() => match signal {
                Some(Signal::Terminate) | None => {
                    tracing::info!("stopping (SIGTERM/SIGINT)");
                    break None;
                }
                Some(Signal::Reload) => send(&control_tx, Control::Reload { reason: "SIGHUP".into() }),
                Some(Signal::ReopenLogs) => send(&control_tx, Control::ReopenLogs),
            },
            outcome = async { supervised.as_mut().expect("guarded").await }, if supervised.is_some() => {
                supervised = None;
                break Some(finished(outcome));
            }
        }
    };
    shutdown(ShutdownParts {
        root,
        tracker,
        forwarder,
        supervisor_token,
        supervised,
        stop_timeout,
        runtime,
    })
    .await;
    drop(state_tx);
    match code {
        None | Some(Ok(exit::OK)) => Ok(exit::OK),
        Some(Ok(other)) => Ok(other),
        Some(Err(e)) => Err(e),
    }
}

/// Renders into the runtime directory, tests with `php-fpm -t`, and builds
/// the supervisor's setup. In dev mode the directory is `dev.config_dir`
/// (kept) and the command is printed once, as `print-cmd` prints it.
async fn prepare(
    config: &Config,
    paths: &InternalPaths,
    dev: bool,
) -> anyhow::Result<(RuntimeDir, Setup)> {
    // Fails before anything is made when there is no php-fpm (exit 69) or
    // the pool would run as root by mistake (exit 78).
    crate::discover::for_config(config)?;
    render::checked_identity(config, dev)?;
    let runtime = if dev {
        RuntimeDir::kept(&config.dev.config_dir)?
    } else {
        RuntimeDir::create_temporary()?
    };
    let generation = Generation::prepare(config.clone(), paths, runtime.path(), dev)?;
    let identity = &generation.identity;
    if let Some(note) = &identity.note {
        if identity.allow_root {
            // The pool runs PHP as root: worth a warning (DESIGN §4).
            tracing::warn!("{note}");
        } else {
            tracing::info!("{note}");
        }
    }
    for w in render::identity_warnings(config, identity) {
        tracing::warn!("{w}");
    }
    generation.write()?;
    let line = render::shell_line(&generation.command);
    if dev {
        println!("{line}");
    }
    tracing::debug!(command = %line, dir = %runtime.path().display(), "php-fpm command");
    // Validate, then apply: a config php-fpm rejects is never started.
    generation.test().await?;
    let setup = Setup {
        dir: runtime.path().to_path_buf(),
        generation,
        paths: paths.clone(),
        dev,
    };
    Ok((runtime, setup))
}

/// What [`shutdown`] stops.
struct ShutdownParts {
    root: CancellationToken,
    tracker: TaskTracker,
    /// The forwarder's token and tracker, when it runs.
    forwarder: Option<(CancellationToken, TaskTracker)>,
    supervisor_token: CancellationToken,
    /// The supervisor task, unless it already ended.
    supervised: Option<tokio::task::JoinHandle<Outcome>>,
    stop_timeout: Duration,
    runtime: Option<RuntimeDir>,
}

/// The shutdown order (DESIGN §6), written once.
async fn shutdown(p: ShutdownParts) {
    supervisor::sd(&[sd_notify::NotifyState::Stopping]);
    // 1. Stop accepting, then 2. drain in-flight requests with a deadline.
    if let Some((token, forwarder)) = p.forwarder {
        token.cancel();
        forwarder.close();
        if tokio::time::timeout(p.stop_timeout, forwarder.wait())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?p.stop_timeout, "in-flight requests did not finish in time");
        }
    }
    // 3–5. php-fpm: SIGQUIT, wait stop_timeout, SIGTERM, SIGKILL the group
    // (supervisor::child::PhpFpm::stop).
    p.supervisor_token.cancel();
    if let Some(sup) = p.supervised {
        let _ = sup.await;
    }
    // Everything else (dev mode, admin) ends with the root token.
    p.root.cancel();
    p.tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), p.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not end within 5 s of shutdown");
    }
    // 6. Remove the runtime directory (a kept dev directory stays).
    if let Some(dir) = p.runtime {
        let path = dir.path().to_path_buf();
        if let Err(e) = dir.remove() {
            tracing::warn!(dir = %path.display(), error = %e, "cannot remove the runtime directory");
        }
    }
    tracing::info!("stopped");
}

/// Binds `forward.listen`; a taken address is a clear error naming it and,
/// when /proc tells, the process holding it.
fn bind_forward(config: &Config) -> anyhow::Result<crate::fcgi::listen::BoundSocket> {
    use crate::fcgi::listen;
    let fwd = &config.forward;
    listen::BoundSocket::bind(&fwd.listen, Some(fwd.socket_mode)).map_err(|e| {
        let holder = (e.kind() == std::io::ErrorKind::AddrInUse)
            .then(|| listen::holder(&fwd.listen))
            .flatten()
            .map(|(pid, name)| format!(" (held by pid {pid}: {name})"))
            .unwrap_or_default();
        Fatal::new(
            exit::FAILURE,
            format!(
                "cannot listen on forward.listen {}: {e}{holder}; fix: stop what holds it or choose another forward.listen",
                fwd.listen
            ),
        )
        .into()
    })
}

/// The supervisor's own end: its code, or an error carrying it.
fn finished(outcome: Result<Outcome, tokio::task::JoinError>) -> anyhow::Result<u8> {
    match outcome {
        Ok(Outcome {
            code,
            message: None,
        }) => Ok(code),
        Ok(Outcome {
            code,
            message: Some(m),
        }) => {
            if code == exit::OK {
                tracing::info!("{m}");
                Ok(code)
            } else {
                Err(Fatal::new(code, m).into())
            }
        }
        Err(e) => Err(Fatal::new(exit::FAILURE, format!("the supervisor task failed: {e}")).into()),
    }
}

/// Runs a subsystem tqsup cannot do without: when it fails (e.g. its port
/// is taken), the error is logged and the root token stops tqsup.
fn spawn_essential(
    tracker: &TaskTracker,
    root: &CancellationToken,
    what: &'static str,
    run: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) {
    let root = root.clone();
    tracker.spawn(async move {
        if let Err(e) = run.await {
            tracing::error!("{what}: {e:#}");
            root.cancel();
        }
    });
}

fn send(tx: &mpsc::Sender<Control>, control: Control) {
    if tx.try_send(control).is_err() {
        tracing::warn!("the supervisor is busy or gone; request dropped");
    }
}

/// Registers every subsystem's metrics in the process-wide registry, so the
/// first scrape of `/metrics` lists them all (each is registered at its
/// first use otherwise, which may come late or never).
pub fn register_metrics() {
    crate::fcgi::metrics::global();
    crate::supervisor::metrics::global();
    crate::dev::metrics::global();
    crate::admin::metrics::global();
}

/// READY=1 in forward-only mode, with the same one-line summary as `/status`.
fn sd_ready_forward_only(state: &PhpFpmState) {
    let status = format!("forward-only: {}", supervisor::summary(state, None, None));
    supervisor::sd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
}
