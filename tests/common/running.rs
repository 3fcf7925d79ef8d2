//! A running tqsup ([`Tqsup`]): the process, its log, the addresses its
//! config gave it. A test failing while it runs prints the tail of its log
//! and, when it has an admin endpoint, its /metrics; then it is stopped
//! (SIGTERM, so php-fpm goes with it) and its process group killed.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{Guard, TqsupProject, fcgi, http, master_of, wait_timeout};

/// How long startup steps (php-fpm ready, listener bound) may take.
const STARTUP: Duration = Duration::from_secs(20);

pub struct Tqsup {
    pub guard: Guard,
    /// The config it was started with.
    config: Value,
    /// The project it runs in (relative paths of the config are from here).
    dir: PathBuf,
}

impl Tqsup {
    /// Starts `cmd` with its output in `<project>/tqsup.log`.
    pub(super) fn spawn(cmd: &mut Command, project: &TqsupProject) -> Tqsup {
        Tqsup {
            guard: Guard::spawn(cmd, project.join("tqsup.log")),
            config: project.config.clone(),
            dir: project.path().to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.guard.pid()
    }

    pub fn signal(&self, sig: Signal) {
        self.guard.signal(sig);
    }

    /// SIGHUP: reload the config.
    pub fn hup(&self) {
        self.signal(Signal::SIGHUP);
    }

    pub fn alive(&self) -> bool {
        self.guard.alive()
    }

    /// Waits for it to exit; past `timeout` the test fails (and its log is
    /// printed).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        self.guard.wait(timeout)
    }

    /// SIGTERM, then waits for it to exit.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait(timeout)
    }

    pub fn log_text(&self) -> String {
        self.guard.log_text()
    }

    /// Polls the log until it contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        self.guard.wait_log(needle, timeout)
    }

    /// Asserts the log comes to contain `needle` within `timeout`.
    pub fn expect_log(&self, needle: &str, timeout: Duration) {
        assert!(
            self.wait_log(needle, timeout),
            "tqsup did not log {needle:?} within {timeout:?}"
        );
    }

    /// Waits until php-fpm is ready and the forward listener listens (those
    /// of them the config runs).
    pub fn wait_ready(&self) {
        if self.config["php_fpm"]["enabled"] != false {
            self.expect_log("php-fpm is ready", STARTUP);
        }
        if self.config["forward"]["enabled"] != false {
            self.expect_log("forward listener ready", STARTUP);
        }
    }

    /// php-fpm's master now.
    pub fn master(&self) -> Option<i32> {
        master_of(self.pid())
    }

    /// A string key of the config it runs with (`forward.listen`, …).
    pub fn setting(&self, key: &str) -> String {
        let v = key.split('.').fold(&self.config, |v, k| &v[k]);
        match v {
            Value::String(s) => s.clone(),
            Value::Null => panic!("{key} is not in the config"),
            other => other.to_string(),
        }
    }

    /// The forward listener: `host:port` or a socket path.
    pub fn forward(&self) -> String {
        self.setting("forward.listen")
    }

    /// A FastCGI connection to the forward listener.
    pub fn conn(&self) -> fcgi::Conn {
        fcgi::Conn::connect(&self.forward())
    }

    /// php-fpm's document root (`php_fpm.document_root`, default `public`).
    pub fn docroot(&self) -> PathBuf {
        match &self.config["php_fpm"]["document_root"] {
            Value::String(s) => self.dir.join(s),
            _ => self.dir.join("public"),
        }
    }

    /// The admin endpoint's `host:port`.
    pub fn admin(&self) -> String {
        self.setting("admin.listen")
    }

    /// GET on the admin endpoint; None when it did not answer.
    pub fn admin_get(&self, path: &str) -> Option<http::Reply> {
        http::get(&self.admin(), path)
    }

    /// The `/metrics` text, when there is an admin endpoint that answers.
    pub fn metrics_text(&self) -> Option<String> {
        let addr = self.config["admin"]["listen"].as_str()?;
        http::get_within(addr, "/metrics", Duration::from_secs(3)).map(|r| r.text())
    }
}

impl Drop for Tqsup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.guard.report_if_failing();
            if let Some(m) = self.metrics_text() {
                eprintln!("--- tqsup's /metrics ---\n{m}--- end of /metrics ---");
            }
        }
        // Graceful first, so php-fpm goes with tqsup; the guard kills the rest.
        if let Ok(None) = self.guard.child.try_wait() {
            self.signal(Signal::SIGTERM);
            let _ = wait_timeout(&mut self.guard.child, Duration::from_secs(5));
        }
    }
}
