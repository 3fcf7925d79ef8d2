//! Processes a test starts: commands run to completion with a hard timeout
//! ([`Ran`], printed whole by [`Ran::text`] when an assertion on it fails)
//! and long-running ones ([`Guard`]: its process group killed when dropped,
//! the tail of its log printed when the test is failing).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{eventually, tail};

/// Lines of a process's log a failing test prints.
pub const LOG_TAIL_LINES: usize = 60;

/// A command that ran to its end (or was killed at its timeout).
#[derive(Debug)]
pub struct Ran {
    /// The command line as a shell would take it, with its directory.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Everything about it, for an assertion message: the command line, the
    /// exit status, stdout and stderr.
    pub fn text(&self) -> String {
        format!(
            "$ {}\nstatus: {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.command,
            self.status,
            self.out(),
            self.err()
        )
    }
}

/// Asserts that a [`Ran`] exited 0; the failure shows [`Ran::text`].
#[macro_export]
macro_rules! assert_ok {
    ($ran:expr $(,)?) => {{
        let ran: &$crate::common::Ran = &$ran;
        assert!(ran.success(), "command failed:\n{}", ran.text());
    }};
    ($ran:expr, $($what:tt)+) => {{
        let ran: &$crate::common::Ran = &$ran;
        assert!(ran.success(), "{}: command failed:\n{}", format_args!($($what)+), ran.text());
    }};
}

/// Asserts a [`Ran`]'s exit code; the failure shows [`Ran::text`].
#[macro_export]
macro_rules! assert_exit {
    ($ran:expr, $code:expr $(,)?) => {{
        let ran: &$crate::common::Ran = &$ran;
        assert_eq!(ran.code(), Some($code), "{}", ran.text());
    }};
    ($ran:expr, $code:expr, $($what:tt)+) => {{
        let ran: &$crate::common::Ran = &$ran;
        assert_eq!(ran.code(), Some($code), "{}:\n{}", format_args!($($what)+), ran.text());
    }};
}

/// `cmd` as a shell would take it: `cd DIR && env -u VAR VAR=value … program
/// args`.
pub fn command_line(cmd: &Command) -> String {
    let quote = |s: &std::ffi::OsStr| {
        let s = s.to_string_lossy();
        shlex::try_quote(&s).map_or_else(|_| format!("{s:?}"), |q| q.into_owned())
    };
    let mut words = Vec::new();
    if let Some(dir) = cmd.get_current_dir() {
        words.push(format!("cd {} &&", quote(dir.as_os_str())));
    }
    let (unset, set): (Vec<_>, Vec<_>) = cmd.get_envs().partition(|(_, v)| v.is_none());
    if !unset.is_empty() || !set.is_empty() {
        words.push("env".into());
    }
    words.extend(unset.iter().map(|(k, _)| format!("-u {}", quote(k))));
    words.extend(
        set.iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), quote(v.unwrap()))),
    );
    words.push(quote(cmd.get_program()));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

/// Runs a command to completion with a hard timeout: it runs in its own
/// process group, and past `timeout` the whole group (its children too) is
/// SIGKILLed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Ran {
    use std::os::unix::process::CommandExt as _;
    let command = command_line(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command}: {e}"));
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let t_out = drain(Box::new(child.stdout.take().unwrap()));
    let t_err = drain(Box::new(child.stderr.take().unwrap()));
    let status = wait_timeout(&mut child, timeout).unwrap_or_else(|| {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        eprintln!("command timed out after {timeout:?}, its group killed: {command}");
        child.wait().unwrap()
    });
    Ran {
        command,
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (with its process group) when dropped, so a failing
/// test never leaves php-fpm or nginx behind. Its stdout and stderr go to a
/// file, whose last [`LOG_TAIL_LINES`] lines are printed if the test fails
/// while it is alive.
pub struct Guard {
    pub child: Child,
    pub log: PathBuf,
    /// The command line, to say whose log is printed.
    command: String,
    /// Whether the log tail was printed already (once per failure).
    reported: bool,
}

impl Guard {
    /// Spawns `cmd` in its own process group, stdout+stderr to `log`.
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Guard {
        use std::os::unix::process::CommandExt;
        let command = command_line(cmd);
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command}: {e}"));
        Guard {
            child,
            log,
            command,
            reported: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` to the process (not its group).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Whether it runs (not exited, not a zombie).
    pub fn alive(&self) -> bool {
        super::alive(self.pid())
    }

    /// Waits for exit, or panics (the drop prints the log and kills it).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match wait_timeout(&mut self.child, timeout) {
            Some(s) => s,
            None => panic!("{} did not exit within {timeout:?}", self.command),
        }
    }

    /// Polls the log until it contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        eventually(timeout, || self.log_text().contains(needle).then_some(())).is_some()
    }

    /// Prints the tail of the log if the test is failing (once).
    pub fn report_if_failing(&mut self) {
        if std::thread::panicking() && !self.reported {
            self.reported = true;
            eprintln!(
                "--- {} (pid {}): the last {LOG_TAIL_LINES} lines of {} ---\n{}\n--- end of log ---",
                self.command,
                self.pid(),
                self.log.display(),
                tail(&self.log_text(), LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.report_if_failing();
        // Never `/bin/kill -KILL -PGID`: Debian 12's procps kill mis-parses a
        // negative pid after a signal name and kills every process (pid -1).
        let pgid = self.pid();
        if pgid > 1 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
