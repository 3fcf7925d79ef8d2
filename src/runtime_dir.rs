//! The runtime directory: a fresh 0700 directory holding the rendered
//! php-fpm files and its private sockets (DESIGN §5). Removed when tqsup
//! stops; one left behind by a SIGKILLed tqsup is removed at the next start.
//! In dev mode it is `dev.config_dir`, kept.
//!
//! Ownership is a lock, not a name: each directory holds a `tqsup.pid`
//! marker (0600) that its tqsup keeps `flock`ed for its whole life; the
//! kernel drops the lock when that tqsup dies, however it dies. The base
//! directory may be world-writable (`/tmp`), so stale-directory cleanup
//! trusts nothing another user can make: it only looks at directories owned
//! by tqsup's own user (lstat, no symlinks), opens markers without following
//! links and without blocking, and only regular files owned by that user.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg, OFlag};

/// Directory names start with this, so stale ones can be recognised.
const PREFIX: &str = "tqsup-run-";
/// The marker file: the pid of the tqsup that made the directory (for
/// people), locked by it (for tqsup).
const MARKER: &str = "tqsup.pid";
/// Staging directories of a reload, inside the runtime directory.
const STAGE_PREFIX: &str = ".tqsup-stage-";

/// Where php-fpm's files live while tqsup runs.
#[derive(Debug)]
pub struct RuntimeDir {
    /// Absolute path.
    path: PathBuf,
    /// Some for a temporary directory (removed on drop); None when kept.
    temp: Option<tempfile::TempDir>,
    /// The marker, locked while this tqsup lives.
    _lock: Option<Flock<File>>,
}

impl RuntimeDir {
    /// A fresh temporary directory in `$RUNTIME_DIRECTORY` (systemd),
    /// `$XDG_RUNTIME_DIR` or the temp dir (`$TMPDIR`, `/tmp`), after removing
    /// stale ones there.
    pub fn create_temporary() -> anyhow::Result<Self> {
        let base = base_dir();
        remove_stale(&base);
        let temp = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&base)
            .with_context(|| format!("creating the runtime directory in {}", base.display()))?;
        let path = private_dir(temp.path())?;
        let lock = lock_marker(&path)?;
        Ok(RuntimeDir {
            path,
            temp: Some(temp),
            _lock: Some(lock),
        })
    }

    /// A kept directory (dev mode's `dev.config_dir`), created 0700; staging
    /// directories a SIGKILLed tqsup left in it are removed.
    pub fn kept(dir: &Path) -> anyhow::Result<Self> {
        let path = private_dir(dir)?;
        remove_stages(&path);
        Ok(RuntimeDir {
            path,
            temp: None,
            _lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh 0700 directory for a candidate file set: see [`staging_beside`].
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

/// A fresh 0700 directory inside the running directory `dir` for a
/// candidate file set (reload): rendered and tested there before anything
/// touches the running files. Removed when dropped, and with `dir` (so a
/// SIGKILL leaves none behind in a shared base directory).
pub fn staging_beside(dir: &Path) -> anyhow::Result<tempfile::TempDir> {
    let stage = tempfile::Builder::new()
        .prefix(STAGE_PREFIX)
        .tempdir_in(dir)
        .with_context(|| format!("creating a staging directory in {}", dir.display()))?;
    private_dir(stage.path())?;
    Ok(stage)
}

/// Creates the marker (0600, never through a link) and locks it.
fn lock_marker(dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = dir.join(MARKER);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))?;
    std::io::Write::write_all(&mut *lock, std::process::id().to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(lock)
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

/// Whether `dir` is a real directory (not a link) owned by tqsup's user.
fn ours(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.file_type().is_dir() && m.uid() == nix::unistd::geteuid().as_raw())
}

/// Whether the owner of runtime directory `dir` is gone: its marker is a
/// regular file of ours that nobody holds locked. Anything else (a link, a
/// FIFO, a device, someone else's file, a lock held) says "leave it alone".
fn owner_gone(dir: &Path) -> bool {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(dir.join(MARKER))
    {
        Ok(f) => f,
        Err(_) => return false,
    };
    let regular_and_ours = file
        .metadata()
        .is_ok_and(|m| m.file_type().is_file() && m.uid() == nix::unistd::geteuid().as_raw());
    regular_and_ours && Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
}

/// Removes runtime directories in `base` whose owner tqsup is gone.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = e.path();
        if !ours(&dir) || !owner_gone(&dir) {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed a stale runtime directory left by a tqsup that is gone")
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a stale runtime directory")
            }
        }
    }
}

/// Removes staging directories left in `dir` (by a SIGKILLed reload).
fn remove_stages(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(STAGE_PREFIX) && ours(&p) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Creates `dir` (and parents) with mode 0700, or tightens it to 0700.
pub fn private_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    let abs = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    Ok(crate::config::normalize(&abs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn dir_with_marker(base: &Path, name: &str) -> PathBuf {
        let d = base.join(format!("{PREFIX}{name}"));
        std::fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn stale_dirs_of_dead_owners_are_removed_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let stale = dir_with_marker(base.path(), "old");
        std::fs::write(stale.join(MARKER), "99999999").unwrap();
        // A live owner under any name: the lock says so, not the pid.
        let live = dir_with_marker(base.path(), "live");
        let _held = lock_marker(&live).unwrap();
        let other = base.path().join("unrelated");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join(MARKER), "99999999").unwrap();
        remove_stale(base.path());
        assert!(!stale.exists());
        assert!(live.exists());
        assert!(other.exists());
    }

    #[test]
    fn hostile_markers_are_never_followed_read_or_waited_on() {
        let base = tempfile::tempdir().unwrap();
        let link = dir_with_marker(base.path(), "link");
        std::os::unix::fs::symlink("/dev/zero", link.join(MARKER)).unwrap();
        let fifo = dir_with_marker(base.path(), "fifo");
        nix::unistd::mkfifo(&fifo.join(MARKER), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let dev = dir_with_marker(base.path(), "dirmarker");
        std::fs::create_dir(dev.join(MARKER)).unwrap();
        // A runtime dir name that is a link to a directory elsewhere.
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join(MARKER), "1").unwrap();
        let dirlink = base.path().join(format!("{PREFIX}dirlink"));
        std::os::unix::fs::symlink(target.path(), &dirlink).unwrap();
        let t0 = Instant::now();
        remove_stale(base.path());
        assert!(t0.elapsed() < Duration::from_secs(2), "it waited");
        for d in [&link, &fifo, &dev] {
            assert!(d.exists(), "{} was touched", d.display());
        }
        assert!(target.path().join(MARKER).exists(), "followed a link");
        assert!(dirlink.exists());
    }

    #[test]
    fn dirs_of_another_user_are_left_alone() {
        if !nix::unistd::geteuid().is_root() {
            return; // needs root to make a directory of another user
        }
        let base = tempfile::tempdir().unwrap();
        let theirs = dir_with_marker(base.path(), "theirs");
        std::fs::write(theirs.join(MARKER), "99999999").unwrap();
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&theirs, Some(nobody), None).unwrap();
        remove_stale(base.path());
        assert!(theirs.exists());
    }

    #[test]
    fn the_marker_is_private_and_locked() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let d = dir_with_marker(base.path(), "mine");
        let lock = lock_marker(&d).unwrap();
        let mode = std::fs::metadata(d.join(MARKER))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!owner_gone(&d), "locked while the owner lives");
        drop(lock);
        assert!(owner_gone(&d), "free once it is gone");
    }

    #[test]
    fn staging_dirs_live_inside_and_leftovers_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let kept = base.path().join("kept");
        let left = {
            let r = RuntimeDir::kept(&kept).unwrap();
            let s = r.staging().unwrap();
            assert!(s.path().starts_with(&kept));
            s.keep()
        };
        assert!(left.exists());
        let _r = RuntimeDir::kept(&kept).unwrap();
        assert!(!left.exists(), "a SIGKILLed reload's stage was left");
    }
}
