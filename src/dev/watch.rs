//! The file watcher: notify (native events, or polling when
//! `poll_interval_ms > 0`) over `dev.watch.paths`, one non-recursive watch
//! per directory so ignored trees (`vendor`, `node_modules`) cost no
//! watches; new directories are added as they appear. The config file's
//! directory is watched too, for that file only. Ignored: `dev.watch.ignore`,
//! the project's `.gitignore`/`.ignore`/`.git/info/exclude` (unless
//! `dev.watch.gitignore: false`), and always what tqsup itself writes:
//! `.tqserver/`, `dev.config_dir`, and its own log file when stdout or
//! stderr is a file inside the project. Relevant changed paths go out on a
//! channel to the batcher, unlogged (the batch is logged once).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use notify::{Event, EventKind, RecursiveMode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::filter::{IgnoreSet, relative};
use super::gitignore::ProjectIgnores;
use crate::config::Watch;

/// Raw notify events, from notify's thread to our task.
type RawEvents = mpsc::UnboundedReceiver<notify::Result<Event>>;

/// The watcher and what it watches.
pub struct FileWatcher {
    watcher: Box<dyn notify::Watcher + Send>,
    /// The project directory (ignore patterns are relative to it).
    base_dir: PathBuf,
    /// The configured roots (for paths outside `base_dir`).
    roots: Vec<PathBuf>,
    /// Directories whose every change counts.
    dirs: HashSet<PathBuf>,
    /// The tqsup config file, whose changes always count.
    config_file: Option<PathBuf>,
    /// `dev.config_dir`: the supervisor renders there at each reload, so
    /// its changes never count, whatever the ignore list says (else a hook
    /// on `**` with `then: reload` would reload forever).
    config_dir: PathBuf,
    /// Shared with the batch runner, which replaces it on a config change.
    ignore: Arc<RwLock<IgnoreSet>>,
    /// The project's ignore files; None with `dev.watch.gitignore: false`.
    gitignore: Option<ProjectIgnores>,
    /// Where tqsup writes and must never see as a change: `.tqserver/` and
    /// its own stdout/stderr when they are regular files (a log written
    /// into the project would otherwise report itself, line after line).
    own: Vec<PathBuf>,
}

/// The regular files tqsup's stdout and stderr go to, if any.
fn own_log_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for fd in [1, 2] {
        let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) else {
            continue;
        };
        if target.is_file() && !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

/// `.tqserver/` and tqsup's own log files, with the project directory's
/// canonical spelling too (readlink gives canonical paths, notify the
/// configured ones).
fn own_paths(base_dir: &Path) -> Vec<PathBuf> {
    let mut own = vec![base_dir.join(".tqserver")];
    let canonical = base_dir.canonicalize().ok();
    for log in own_log_files() {
        if let Some(c) = &canonical
            && let Ok(rel) = log.strip_prefix(c)
        {
            own.push(base_dir.join(rel));
        }
        own.push(log);
    }
    own
}

fn is_ignore_file(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == ".gitignore" || n == ".ignore")
}

impl FileWatcher {
    /// Sets up every watch before returning, so a change made after this
    /// returns is seen.
    pub fn start(
        watch: &Watch,
        base_dir: &Path,
        config_file: Option<&Path>,
        config_dir: &Path,
        ignore: Arc<RwLock<IgnoreSet>>,
    ) -> anyhow::Result<(Self, RawEvents)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |res: notify::Result<Event>| {
            let _ = tx.send(res);
        };
        let watcher: Box<dyn notify::Watcher + Send> = match watch.poll_interval {
            Some(every) => Box::new(notify::PollWatcher::new(
                handler,
                notify::Config::default().with_poll_interval(every),
            )?),
            None => Box::new(notify::recommended_watcher(handler)?),
        };
        let mut w = FileWatcher {
            watcher,
            base_dir: base_dir.to_path_buf(),
            roots: watch.paths.clone(),
            dirs: HashSet::new(),
            config_file: config_file.map(Path::to_path_buf),
            config_dir: config_dir.to_path_buf(),
            ignore,
            gitignore: watch.gitignore.then(|| ProjectIgnores::new(base_dir)),
            own: own_paths(base_dir),
        };
        if !w.own.is_empty() {
            debug!(paths = ?w.own, "never counted as changes (written by tqsup)");
        }
        for root in &watch.paths {
            if root.is_dir() {
                w.add_tree(root, &mut Vec::new());
            } else if root.exists() {
                w.watcher
                    .watch(root, RecursiveMode::NonRecursive)
                    .with_context(|| format!("watching {}", root.display()))?;
            } else {
                warn!(path = %root.display(), "dev.watch.paths entry does not exist; not watched");
            }
        }
        if let Some(dir) = config_file.and_then(Path::parent)
            && !w.dirs.contains(dir)
        {
            w.watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {}", dir.display()))?;
        }
        debug!(directories = w.dirs.len(), "watching");
        Ok((w, rx))
    }

    fn is_ignored(&mut self, path: &Path) -> bool {
        if path.starts_with(&self.config_dir) || self.own.iter().any(|o| path.starts_with(o)) {
            return true;
        }
        if let Some(g) = &mut self.gitignore {
            g.changed(path);
            if g.is_ignored(path, path.is_dir()) {
                return true;
            }
        }
        let rel = relative(&self.base_dir, path)
            .or_else(|| self.roots.iter().find_map(|r| path.strip_prefix(r).ok()));
        let rel = rel.unwrap_or(path);
        self.ignore.read().expect("ignore lock").is_ignored(rel)
    }

    /// Watches `dir` and its subdirectories (not ignored, not symlinks),
    /// collecting the files found in `files`.
    fn add_tree(&mut self, dir: &Path, files: &mut Vec<PathBuf>) {
        if self.is_ignored(dir) || self.dirs.contains(dir) {
            return;
        }
        if let Err(e) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            warn!(path = %dir.display(), error = %e, "cannot watch directory");
            return;
        }
        self.dirs.insert(dir.to_path_buf());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                self.add_tree(&e.path(), files);
            } else {
                files.push(e.path());
            }
        }
    }

    /// Watches the directories below `dir` (itself watched) that are not
    /// ignored and not yet watched; their files are not changes.
    fn watch_unwatched(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let sub = e.path();
            if self.dirs.contains(&sub) {
                self.watch_unwatched(&sub);
            } else {
                self.add_tree(&sub, &mut Vec::new());
            }
        }
    }

    /// The changed paths one notify event stands for (after ignore rules),
    /// watching directories that just appeared.
    fn relevant(&mut self, event: Event) -> Vec<PathBuf> {
        if matches!(event.kind, EventKind::Access(_)) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for path in event.paths {
            if self.config_file.as_deref() == Some(path.as_path()) {
                out.push(path);
                continue;
            }
            let watched_parent = path.parent().is_some_and(|p| self.dirs.contains(p));
            let is_root = self.roots.contains(&path);
            if !(watched_parent || is_root) || self.is_ignored(&path) {
                continue;
            }
            if path.is_dir() {
                if !self.dirs.contains(&path) {
                    // Files may be written before the new watch is in
                    // place: count everything already inside.
                    self.add_tree(&path, &mut out);
                }
                continue;
            }
            if !path.exists() {
                // Removed or renamed away: a directory of that name made
                // later must be watched anew.
                self.dirs.remove(&path);
            }
            if self.gitignore.is_some()
                && is_ignore_file(&path)
                && let Some(dir) = path.parent()
            {
                // An edited ignore file may un-ignore directories that
                // were never watched.
                self.watch_unwatched(dir);
            }
            out.push(path);
        }
        out
    }

    /// Forwards relevant changes to `out` until shutdown or `out` closes.
    pub async fn run(
        mut self,
        mut events: RawEvents,
        out: mpsc::UnboundedSender<PathBuf>,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
            };
            match event {
                Ok(event) => {
                    for path in self.relevant(event) {
                        if out.send(path).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => warn!(error = %e, "file watcher error"),
            }
        }
    }
}
