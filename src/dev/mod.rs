//! Dev mode (DESIGN §8): the file watcher, rebuild hooks, config-file
//! reloads and the dev HTTP front, run beside the supervisor, which they ask
//! for reloads and restarts through [`Control`] requests.
//!
//! ```text
//! notify ─▶ watch (ignore, new dirs) ─▶ batch (debounce, one at a time)
//!        ─▶ hooks (sh -c, output to log) ─▶ Control::Reload / Restart
//! dev.http_listen ─▶ http ─▶ route ─▶ static_files | php (fastcgi) ─▶ php-fpm
//! ```

mod batch;
mod cgi;
mod error_page;
mod filter;
mod gitignore;
mod hooks;
mod http;
pub mod metrics;
mod php;
mod range;
mod route;
mod static_files;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{Config, Endpoint, Hook};
use crate::control::Control;
pub use crate::logging::RecentLines;
use filter::{HookSet, IgnoreSet};

use batch::schedule;

/// Where the dev HTTP front sends PHP requests, and the document root it
/// serves and names in SCRIPT_FILENAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhpTarget {
    /// The forward listener when `forward.enabled` (so requests share its
    /// upstream pool), else php-fpm's own endpoint.
    pub endpoint: Endpoint,
    /// Absolute.
    pub document_root: PathBuf,
}

impl PhpTarget {
    /// The target for `config`, given php-fpm's endpoint as rendered
    /// (`RenderedFiles::endpoint`).
    pub fn for_config(config: &Config, php_fpm_endpoint: &Endpoint) -> Self {
        PhpTarget {
            endpoint: if config.forward.enabled {
                config.forward.listen.clone()
            } else {
                php_fpm_endpoint.clone()
            },
            document_root: config.php_fpm.document_root.clone(),
        }
    }
}

/// How many of a batch's paths its log line names.
const FIRST_PATHS: usize = 3;

/// What the dev front's error pages can tell about php-fpm; both parts
/// are optional (tests, forward-only mode).
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    /// The supervisor's view: not running, restarting, ready.
    pub state: Option<tokio::sync::watch::Receiver<crate::fcgi::upstream::PhpFpmState>>,
    /// The last php-fpm/PHP log lines (filled by a tracing layer).
    pub recent: Option<RecentLines>,
}

/// What a batch of changes is checked against; replaced when the config
/// file changes and still loads.
struct Batches {
    base_dir: PathBuf,
    config_file: Option<PathBuf>,
    hooks: RwLock<HookSet>,
    ignore: Arc<RwLock<IgnoreSet>>,
    control: mpsc::Sender<Control>,
    /// The config dev mode started with (to say what needs a tqsup restart).
    started: Arc<Config>,
}

impl Batches {
    async fn run(self: Arc<Self>, batch: Vec<PathBuf>) {
        let config_changed = self.config_file.as_ref().is_some_and(|f| batch.contains(f));
        if config_changed {
            self.reread_config();
        }
        let hooks: Vec<Hook> = self
            .hooks
            .read()
            .expect("hooks lock")
            .matching(&batch)
            .into_iter()
            .cloned()
            .collect();
        // Once per batch, however many files it holds.
        let first: Vec<_> = batch
            .iter()
            .take(FIRST_PATHS)
            .map(|p| p.strip_prefix(&self.base_dir).unwrap_or(p).display())
            .collect();
        debug!(
            changes = batch.len(),
            first = ?first,
            hooks = hooks.len(),
            config_changed,
            "batch of changes"
        );
        let mut succeeded = Vec::new();
        for hook in hooks {
            if hooks::run(&hook, &self.base_dir).await == hooks::Outcome::Succeeded {
                succeeded.push((hook.name.clone(), hook.then));
            }
        }
        if let Some(request) = hooks::decide(config_changed, &succeeded) {
            info!(?request, "asking the supervisor");
            hooks::send(&self.control, request).await;
        }
    }

    /// Takes the new hooks and ignore list from an edited config file. The
    /// supervisor does the php-fpm side of the reload (and reports a bad
    /// file too); a bad file here keeps the old hooks.
    fn reread_config(&self) {
        let Some(file) = &self.config_file else {
            return;
        };
        let new = match crate::config::load(file) {
            Ok((c, _)) => c,
            Err(e) => {
                warn!(error = %e, "the edited config file has problems; dev hooks unchanged, php-fpm keeps its config");
                return;
            }
        };
        match (
            HookSet::new(&new.base_dir, &new.dev.hooks),
            IgnoreSet::new(&new.dev.watch.ignore),
        ) {
            (Ok(h), Ok(i)) => {
                *self.hooks.write().expect("hooks lock") = h;
                *self.ignore.write().expect("ignore lock") = i;
            }
            (Err(e), _) | (_, Err(e)) => warn!(error = %e, "bad glob in the edited config"),
        }
        let old = &self.started;
        if new.dev.http_listen != old.dev.http_listen
            || new.dev.watch.paths != old.dev.watch.paths
            || new.dev.watch.poll_interval != old.dev.watch.poll_interval
            || new.dev.watch.debounce != old.dev.watch.debounce
            || new.php_fpm.document_root != old.php_fpm.document_root
        {
            warn!(
                "dev.http_listen, dev.watch paths/timing and php_fpm.document_root take effect when tqsup restarts"
            );
        }
    }
}

/// Runs dev mode until `shutdown`: the watcher and hooks, and with
/// `dev.http_listen` the HTTP front sending PHP requests to `php`.
///
/// Returns an error only when it cannot start (bad glob, watcher, port in
/// use); every watch is in place and the port bound before it first awaits
/// anything long.
pub async fn run_dev(
    config: Arc<Config>,
    control: mpsc::Sender<Control>,
    php: PhpTarget,
    diagnostics: Diagnostics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let dev = &config.dev;
    let ignore = Arc::new(RwLock::new(
        IgnoreSet::new(&dev.watch.ignore).context("dev.watch.ignore")?,
    ));
    let hook_set = HookSet::new(&config.base_dir, &dev.hooks).context("dev.hooks paths")?;
    let config_file = config.source.as_deref().map(absolute);
    let watcher = {
        let (w, base, file, dir, ig) = (
            dev.watch.clone(),
            config.base_dir.clone(),
            config_file.clone(),
            dev.config_dir.clone(),
            ignore.clone(),
        );
        tokio::task::spawn_blocking(move || {
            watch::FileWatcher::start(&w, &base, file.as_deref(), &dir, ig)
        })
        .await
        .context("starting the file watcher")??
    };
    let listener = match &dev.http_listen {
        Some(listen) => Some(http::bind(
            listen,
            dev.http_listen_next_free,
            crate::config::ZERO_CONFIG_HTTP_LAST_PORT,
        )?),
        None => None,
    };
    // The one line a developer looks for, on stdout, whatever the log does.
    if let Some(addr) = listener
        .as_ref()
        .map(crate::fcgi::listen::Listener::local_addr)
    {
        println!("Serving http://{addr} \u{2014} Ctrl-C to stop");
    }
    if config.source.is_none() && config.forward.enabled {
        println!(
            "FastCGI for a web server of your own: {}",
            config.forward.listen
        );
    }
    info!(
        paths = ?dev.watch.paths,
        hooks = dev.hooks.len(),
        polling = dev.watch.poll_interval.is_some(),
        "dev mode: watching for changes"
    );

    let tracker = TaskTracker::new();
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let (w, raw) = watcher;
    tracker.spawn(w.run(raw, changes_tx, shutdown.clone()));
    let batches = Arc::new(Batches {
        base_dir: config.base_dir.clone(),
        config_file,
        hooks: RwLock::new(hook_set),
        ignore,
        control,
        started: config.clone(),
    });
    tracker.spawn(schedule(
        changes_rx,
        dev.watch.debounce,
        move |batch| Box::pin(batches.clone().run(batch)),
        shutdown.clone(),
    ));
    if let Some(listener) = listener {
        let front = Arc::new(http::Front {
            root: php.document_root.clone(),
            target: php.endpoint.clone(),
            connect_timeout: config.php_fpm.connect_timeout,
            read_timeout: config.php_fpm.read_timeout,
            diagnostics,
        });
        tracker.spawn(http::serve(listener, front, shutdown.clone()));
    }
    tracker.close();
    shutdown.cancelled().await;
    tracker.wait().await;
    debug!("dev mode stopped");
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    crate::config::normalize(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
}
