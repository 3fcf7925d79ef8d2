//! The runtime directory: a fresh 0700 directory holding the rendered
//! php-fpm files and its private socket (DESIGN §5). Removed when tqsup
//! stops; one left behind by a SIGKILLed tqsup is removed at the next start
//! (each holds a `tqsup.pid` marker naming its owner). In dev mode it is
//! `dev.config_dir`, kept.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Directory names start with this, so stale ones can be recognised.
const PREFIX: &str = "tqsup-run-";
/// The marker file: the pid of the tqsup that made the directory.
const MARKER: &str = "tqsup.pid";

/// Where php-fpm's files live while tqsup runs.
#[derive(Debug)]
pub struct RuntimeDir {
    /// Absolute path.
    path: PathBuf,
    /// Some for a temporary directory (removed on drop); None when kept.
    temp: Option<tempfile::TempDir>,
}

impl RuntimeDir {
    /// A fresh temporary directory in `$RUNTIME_DIRECTORY` (systemd),
    /// `$XDG_RUNTIME_DIR` or `/tmp`, after removing stale ones there.
    pub fn create_temporary() -> anyhow::Result<Self> {
        let base = base_dir();
        remove_stale(&base);
        let temp = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&base)
            .with_context(|| format!("creating the runtime directory in {}", base.display()))?;
        let path = crate::cli::private_dir(temp.path())?;
        std::fs::write(path.join(MARKER), std::process::id().to_string())
            .with_context(|| format!("writing {}", path.join(MARKER).display()))?;
        Ok(RuntimeDir {
            path,
            temp: Some(temp),
        })
    }

    /// A kept directory (dev mode's `dev.config_dir`), created 0700.
    pub fn kept(dir: &Path) -> anyhow::Result<Self> {
        Ok(RuntimeDir {
            path: crate::cli::private_dir(dir)?,
            temp: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh 0700 sibling directory for a candidate file set: see [`staging_beside`].
    pub fn staging(&self) -> anyhow::Result<tempfile::TempDir> {
        staging_beside(&self.path)
    }

    /// Removes the directory now (a kept one stays).
    pub fn remove(mut self) -> std::io::Result<()> {
        match self.temp.take() {
            Some(t) => t.close(),
            None => Ok(()),
        }
    }
}

/// A fresh 0700 directory next to `dir` for a candidate file set (reload):
/// rendered and tested there before anything touches the running files.
/// Removed when dropped.
pub fn staging_beside(dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    let parent = dir.parent().unwrap_or(Path::new("/tmp"));
    let stage = tempfile::Builder::new()
        .prefix(".tqsup-stage-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    crate::cli::private_dir(stage.path())?;
    Ok(stage)
}

fn base_dir() -> PathBuf {
    for var in ["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"] {
        if let Some(v) = std::env::var_os(var) {
            // systemd may list several directories separated by ':'.
            let first = v
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            let p = PathBuf::from(first);
            if p.is_absolute() && p.is_dir() {
                return p;
            }
        }
    }
    std::env::temp_dir()
}

/// Removes runtime directories in `base` whose owner tqsup is gone.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = e.path();
        let Ok(text) = std::fs::read_to_string(dir.join(MARKER)) else {
            continue;
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            continue;
        };
        if !owner_alive(pid) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), pid, "removed a stale runtime directory left by a tqsup that is gone")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a stale runtime directory")
                }
            }
        }
    }
}

/// Whether `pid` is a live tqsup (a reused pid running something else is not).
fn owner_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim().starts_with("tqsup"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_dirs_of_dead_owners_are_removed_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let stale = base.path().join(format!("{PREFIX}old"));
        let live = base.path().join(format!("{PREFIX}live"));
        let other = base.path().join("unrelated");
        for d in [&stale, &live, &other] {
            std::fs::create_dir(d).unwrap();
        }
        // pid_max is at most 4194304: this pid cannot exist.
        std::fs::write(stale.join(MARKER), "99999999").unwrap();
        std::fs::write(live.join(MARKER), std::process::id().to_string()).unwrap();
        std::fs::write(other.join(MARKER), "99999999").unwrap();
        remove_stale(base.path());
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(other.exists());
    }
}
