//! Running one rebuild hook: `sh -c <run>` in the project directory, in its
//! own process group, its output (stdout and stderr on one pipe, so their
//! lines keep the order the hook wrote them in) streamed line by line into
//! the log under the hook's name; the last lines are kept for the failure
//! report.

use std::collections::VecDeque;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tracing::{debug, info, warn};

use crate::config::{Hook, HookAction};
use crate::control::Control;

/// How many output lines a failure report repeats.
const TAIL_LINES: usize = 20;

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Exit code (None: killed by a signal) and the last lines of output.
    Failed {
        code: Option<i32>,
        tail: Vec<String>,
    },
    /// `sh` could not be started at all.
    NotStarted(String),
}

/// Kills the hook's process group if the run is dropped before the hook
/// exits (tqsup shutting down), so no `npm run build` is left behind.
struct GroupGuard {
    pgid: Option<i32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.filter(|p| *p > 1) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs `hook` in `base_dir` to completion.
pub async fn run(hook: &Hook, base_dir: &Path) -> Outcome {
    info!(hook = %hook.name, run = %hook.run, "running hook");
    let started = std::time::Instant::now();
    let pipe = tokio::net::unix::pipe::pipe().and_then(|(tx, rx)| {
        let out = tx.into_blocking_fd()?;
        let err = out.try_clone()?;
        Ok((rx, out, err))
    });
    let (output, out_fd, err_fd) = match pipe {
        Ok(p) => p,
        Err(e) => return Outcome::NotStarted(format!("cannot create a pipe: {e}")),
    };
    // The command (and with it the pipe's write ends) is dropped right after
    // spawning, so the read end sees EOF when the hook's processes exit.
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&hook.run)
        .current_dir(base_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_fd))
        .stderr(Stdio::from(err_fd))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(hook = %hook.name, error = %e, "hook could not be started");
            super::metrics::global().hook_run(&hook.name, false);
            return Outcome::NotStarted(e.to_string());
        }
    };
    let mut guard = GroupGuard {
        pgid: child.id().map(|p| p as i32),
    };
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let lines = stream_lines(output, &hook.name, tail.clone());
    let (status, ()) = tokio::join!(child.wait(), lines);
    guard.pgid = None;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let status: ExitStatus = match status {
        Ok(s) => s,
        Err(e) => {
            super::metrics::global().hook_run(&hook.name, false);
            return Outcome::NotStarted(e.to_string());
        }
    };
    super::metrics::global().hook_run(&hook.name, status.success());
    if status.success() {
        info!(hook = %hook.name, elapsed_ms, "hook succeeded");
        return Outcome::Succeeded;
    }
    let tail: Vec<String> = tail.lock().expect("tail lock").iter().cloned().collect();
    warn!(
        hook = %hook.name,
        exit = %status,
        elapsed_ms,
        last_lines = %tail.join("\n"),
        "hook failed; php-fpm keeps running as it is"
    );
    Outcome::Failed {
        code: status.code(),
        tail,
    }
}

/// Logs each line of `pipe` under the hook's name, keeping the last ones.
async fn stream_lines(
    pipe: impl AsyncRead + Unpin,
    hook: &str,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        info!(hook, "{line}");
        let mut t = tail.lock().expect("tail lock");
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }
}

/// What to ask the supervisor after a batch: a restart wins over a reload;
/// a reload is asked for when the config file changed or a successful hook
/// says `then: reload`. `succeeded` are the actions of the hooks that
/// succeeded.
pub fn decide(config_changed: bool, succeeded: &[(String, HookAction)]) -> Option<Control> {
    if let Some((name, _)) = succeeded.iter().find(|(_, a)| *a == HookAction::Restart) {
        return Some(Control::Restart {
            reason: format!("dev hook `{name}` succeeded (then: restart)"),
        });
    }
    if config_changed {
        return Some(Control::Reload {
            reason: "the tqsup config file changed".into(),
        });
    }
    succeeded
        .iter()
        .find(|(_, a)| *a == HookAction::Reload)
        .map(|(name, _)| Control::Reload {
            reason: format!("dev hook `{name}` succeeded (then: reload)"),
        })
}

/// Sends `request` to the supervisor, logging when nobody listens.
pub async fn send(control: &tokio::sync::mpsc::Sender<Control>, request: Control) {
    debug!(?request, "asking the supervisor");
    if control.send(request).await.is_err() {
        warn!("the supervisor is gone; request dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(run: &str) -> Hook {
        Hook {
            name: "t".into(),
            run: run.into(),
            paths: vec!["**".into()],
            then: HookAction::None,
        }
    }

    #[tokio::test]
    async fn success_and_failure_with_tail() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            run(&hook("echo hi; touch made"), dir.path()).await,
            Outcome::Succeeded
        );
        assert!(dir.path().join("made").exists(), "runs in base_dir");
        let out = run(
            &hook("for i in $(seq 1 30); do echo line$i; done; echo oops >&2; exit 3"),
            dir.path(),
        )
        .await;
        let Outcome::Failed { code, tail } = out else {
            panic!("{out:?}")
        };
        assert_eq!(code, Some(3));
        assert_eq!(tail.len(), TAIL_LINES);
        assert!(tail.contains(&"oops".to_string()));
        assert!(tail.contains(&"line30".to_string()));
        assert!(!tail.contains(&"line1".to_string()));
    }

    #[test]
    fn decide_prefers_restart_then_reload() {
        let ok = |n: &str, a| (n.to_string(), a);
        assert_eq!(decide(false, &[]), None);
        assert_eq!(decide(false, &[ok("a", HookAction::None)]), None);
        assert!(matches!(
            decide(false, &[ok("a", HookAction::Reload)]),
            Some(Control::Reload { .. })
        ));
        assert!(matches!(decide(true, &[]), Some(Control::Reload { .. })));
        assert!(matches!(
            decide(
                true,
                &[ok("a", HookAction::Reload), ok("b", HookAction::Restart)]
            ),
            Some(Control::Restart { .. })
        ));
    }
}
