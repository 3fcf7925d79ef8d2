//! One php-fpm master process: spawned in its own process group with a
//! parent-death signal, its output streamed into the log, its end
//! classified, its group killed when it is gone.
//!
//! php-fpm's children survive a SIGKILLed master (measured: they keep
//! serving, orphaned). So besides PR_SET_PDEATHSIG on the master, a small
//! guard process (tqsup itself, re-executed) sits in php-fpm's process group
//! reading a pipe from tqsup: when tqsup dies, however it dies, the pipe
//! closes and the guard SIGKILLs the whole group.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::task::JoinHandle;

use super::group;
use super::logs::{self, LogShared};
use super::state::ExitKind;
use crate::config::Endpoint;

/// The environment variable that turns `tqsup run` into a guard for the
/// process group it names (see the module doc).
pub const GUARD_ENV: &str = "TQSUP_INTERNAL_GUARD_PGID";
/// How long php-fpm gets after SIGTERM before the group is SIGKILLed.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for a SIGKILLed group to be gone.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// A running php-fpm master.
pub struct PhpFpm {
    child: tokio::process::Child,
    /// Also its process group id.
    pid: u32,
    logs: Arc<LogShared>,
    /// The stdout and stderr readers; they end at EOF.
    readers: Vec<JoinHandle<()>>,
    /// The guard process; dropping its stdin tells it tqsup is gone.
    guard: Option<tokio::process::Child>,
    /// Where it listens, to name the holder of a conflicting address.
    endpoint: Endpoint,
    /// Set once the exit status is known.
    status: Option<ExitStatus>,
}

impl PhpFpm {
    /// Launches `command` (from `render::php_fpm_command`).
    pub fn spawn(command: &[OsString], pool: &str, endpoint: &Endpoint) -> std::io::Result<Self> {
        let (program, args) = command
            .split_first()
            .expect("a php-fpm command has a program");
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove(GUARD_ENV)
            .process_group(0);
        let parent = std::process::id() as i32;
        // The one unsafe block of tqsup: `pre_exec` runs in the forked child
        // before exec, where only async-signal-safe calls are allowed; prctl
        // and getppid are plain syscalls. PR_SET_PDEATHSIG makes the kernel
        // SIGKILL php-fpm's master when tqsup's spawning thread (a tokio
        // worker, alive as long as the runtime) dies; re-checking the parent
        // closes the race where tqsup died before the prctl.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                if nix::unistd::getppid().as_raw() != parent {
                    return Err(std::io::Error::other(
                        "tqsup exited while launching php-fpm",
                    ));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or_default();
        let logs = LogShared::new(pool.to_string(), pid);
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(logs::stream(out, "stdout", logs.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(logs::stream(err, "stderr", logs.clone())));
        }
        // php-fpm never runs unguarded: without the guard its children
        // would outlive a SIGKILLed tqsup (holding its sockets and ports).
        let guard = match spawn_guard(pid) {
            Ok(g) => Some(g),
            Err(e) => {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                return Err(std::io::Error::other(format!(
                    "cannot start the guard of php-fpm's process group, so php-fpm was stopped: {e}"
                )));
            }
        };
        Ok(PhpFpm {
            child,
            pid,
            logs,
            readers,
            guard,
            endpoint: endpoint.clone(),
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn logs(&self) -> &Arc<LogShared> {
        &self.logs
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(Pid::from_raw(self.pid as i32), sig);
        }
    }

    /// Waits for the master to exit (cancel-safe).
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let s = match self.child.wait().await {
            Ok(s) => s,
            // Only when the pid was reaped elsewhere: treat it as a kill.
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(9),
        };
        self.status = Some(s);
        s
    }

    /// SIGKILL the group (a hung master and its children).
    pub fn kill(&self) {
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }

    /// Graceful stop, in order: SIGQUIT (children finish their request),
    /// wait `grace`, SIGTERM, then SIGKILL whatever is left of the group.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal(Signal::SIGQUIT);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            tracing::warn!(
                pid = self.pid,
                ?grace,
                "php-fpm did not stop after SIGQUIT; sending SIGTERM"
            );
            self.signal(Signal::SIGTERM);
            if tokio::time::timeout(TERM_GRACE, self.wait()).await.is_err() {
                tracing::warn!(
                    pid = self.pid,
                    "php-fpm did not stop after SIGTERM; sending SIGKILL to its group"
                );
            }
        }
        self.kill();
        self.wait().await;
    }

    /// After the master's exit: kill what is left of its group, wait for it
    /// to be gone (it may hold the socket), drain the log readers, and
    /// classify the exit.
    pub async fn finish(mut self) -> ExitKind {
        let kind = self.exit_kind().await;
        self.reap_group().await;
        kind
    }

    /// After the master's exit: how it ended, from its status and its last
    /// log lines (waited for briefly when it exited on its own: they say
    /// why). Its children are left alone.
    pub async fn exit_kind(&mut self) -> ExitKind {
        use std::os::unix::process::ExitStatusExt;
        let status = self.wait().await;
        let code = status.code().map(i64::from);
        let code = code.or(status.signal().map(|s| -i64::from(s)));
        super::metrics::global().php_fpm_exited(code.unwrap_or(-1));
        if status.signal().is_none() {
            // Readers that end are done with; the others are waited for
            // again when the group is reaped.
            let mut open = Vec::new();
            for mut r in self.readers.drain(..) {
                if tokio::time::timeout(Duration::from_millis(300), &mut r)
                    .await
                    .is_err()
                {
                    open.push(r);
                }
            }
            self.readers = open;
        }
        classify(status, &self.logs.recent(), &self.endpoint)
    }

    /// Kills what is left of the group (children of a master that died,
    /// done with their requests or not) and waits until it is gone.
    pub async fn reap_group(mut self) {
        self.wait().await;
        self.kill();
        wait_group_gone(self.pid).await;
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_millis(300), r).await;
        }
        drop(self.guard.take());
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

/// Classifies an exit from its status and php-fpm's last lines.
pub fn classify(status: ExitStatus, recent: &[String], endpoint: &Endpoint) -> ExitKind {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return ExitKind::Clean;
    }
    // Only php-fpm's own lines explain its exit: a PHP script can write
    // anything to stderr.
    let own: Vec<&str> = recent
        .iter()
        .map(String::as_str)
        .filter(|l| super::logs::is_master_line(l))
        .collect();
    let text = own.join("\n");
    let complaint = crate::phpfpm_test::complaint(&text, status);
    let lower = text.to_ascii_lowercase();
    let conflict = status.code() == Some(70)
        || lower.contains("another fpm instance")
        || lower.contains("address already in use");
    if conflict {
        let holder = match crate::fcgi::listen::holder(endpoint) {
            Some((pid, name)) => format!("; held by pid {pid} ({name})"),
            None => String::new(),
        };
        return ExitKind::Conflict(format!(
            "php-fpm cannot listen on {endpoint}: {complaint}{holder}"
        ));
    }
    match (status.code(), status.signal()) {
        (Some(78), _) => ExitKind::Config(complaint),
        (Some(code), _) => {
            ExitKind::Failed(format!("php-fpm exited with status {code}: {complaint}"))
        }
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
            ExitKind::Failed(format!("php-fpm was killed by signal {sig} ({name})"))
        }
        (None, None) => ExitKind::Failed(format!("php-fpm ended: {status}")),
    }
}

/// Re-executes tqsup as the guard of php-fpm's process group `pgid`.
///
/// Through `/proc/self/exe`, not the path tqsup was started from: a package
/// upgrade replaces that file while tqsup runs (its path then reads
/// "… (deleted)"), but the magic link still executes the running binary.
fn spawn_guard(pgid: u32) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new("/proc/self/exe")
        .arg("run")
        .env(GUARD_ENV, pgid.to_string())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(pgid as i32)
        .spawn()
}

/// The guard's whole life, when `GUARD_ENV` is set: wait for EOF on stdin
/// (tqsup is gone, or done with this php-fpm), then SIGKILL the group
/// (itself included). Returns None when this process is not a guard.
pub fn guard_main_if_requested() -> Option<u8> {
    let pgid: i32 = std::env::var(GUARD_ENV).ok()?.parse().ok()?;
    let mut sink = [0u8; 64];
    loop {
        match std::io::Read::read(&mut std::io::stdin(), &mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    Some(0)
}

/// Waits until no live (non-zombie) process is left in group `pgid`, except
/// our own guard, which dies with the group.
async fn wait_group_gone(pgid: u32) {
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    while group::group_has_live_members(pgid) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(pgid, "php-fpm's process group is still alive after SIGKILL");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exits_are_classified() {
        let ep = Endpoint::Unix("/nonexistent/tqsup-test.sock".into());
        assert_eq!(classify(exit(0), &[], &ep), ExitKind::Clean);
        let rejected = vec![
            "[30-Nov-2026 01:38:15] ERROR: [pool www] cannot get uid for user 'nobody2'"
                .to_string(),
        ];
        assert_eq!(
            classify(exit(78), &rejected, &ep),
            ExitKind::Config("ERROR: [pool www] cannot get uid for user 'nobody2'".into())
        );
        let conflict = vec![
            "[30-Nov-2026 01:38:15] ERROR: Another FPM instance seems to already listen on /x.sock"
                .to_string(),
        ];
        assert!(
            matches!(classify(exit(78), &conflict, &ep), ExitKind::Conflict(m) if m.contains("Another FPM instance"))
        );
        assert!(matches!(
            classify(exit(70), &[], &ep),
            ExitKind::Conflict(_)
        ));
        // A PHP script writing php-fpm's words is not php-fpm.
        let forged = vec!["PHP says: Address already in use".to_string()];
        assert!(matches!(
            classify(exit(1), &forged, &ep),
            ExitKind::Failed(_)
        ));
        assert!(
            matches!(classify(exit(1), &[], &ep), ExitKind::Failed(m) if m.contains("status 1"))
        );
        assert!(
            matches!(classify(ExitStatus::from_raw(9), &[], &ep), ExitKind::Failed(m) if m.contains("SIGKILL"))
        );
    }
}
