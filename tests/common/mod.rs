//! Shared helpers for the integration tests: temp projects, the real tqsup
//! binary as a subprocess with a hard timeout, and real php-fpm / cgi-fcgi.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The tqsup binary built by cargo for this test run.
pub fn tqsup() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tqsup"));
    c.env_remove("TQSUP_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET");
    c
}

/// A temp project: `public/index.php` and whatever files the test adds.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tqsup-test-")
            .tempdir()
            .unwrap();
        // php-fpm children may run as www-data when tests run as root.
        set_mode(dir.path(), 0o755);
        let p = Project { dir };
        p.write("public/index.php", "<?php echo \"hello from php\\n\";\n");
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parent directories, world-readable).
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
            let mut d = parent.to_path_buf();
            while d.starts_with(self.path()) && d != self.path() {
                set_mode(&d, 0o755);
                d.pop();
            }
        }
        std::fs::write(&p, text).unwrap();
        set_mode(&p, 0o644);
        p
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a command to completion with a hard timeout: it runs in its own
/// process group, and past `timeout` the whole group (its children too) is
/// SIGKILLed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    use std::os::unix::process::CommandExt as _;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_timeout(&mut child, timeout).unwrap_or_else(|| {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let status = child.wait().unwrap();
        eprintln!("command timed out after {timeout:?}, its group killed: {cmd:?}");
        status
    });
    Output {
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

/// Polls `f` until it returns Some or the timeout passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A child process killed (with its process group) when dropped, so a failing
/// test never leaves php-fpm or nginx behind. Its stderr goes to a file.
pub struct Guard {
    pub child: Child,
    pub log: PathBuf,
}

impl Guard {
    /// Spawns `cmd` in its own process group, stdout+stderr to `log`.
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Guard {
        use std::os::unix::process::CommandExt;
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .expect("spawn");
        Guard { child, log }
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

    /// Waits for exit, or kills the group and panics with the log.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match wait_timeout(&mut self.child, timeout) {
            Some(s) => s,
            None => panic!(
                "process did not exit within {timeout:?}; log:\n{}",
                self.log_text()
            ),
        }
    }

    /// Polls the log until it contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        eventually(timeout, || self.log_text().contains(needle).then_some(())).is_some()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
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

/// A FastCGI request with the real `cgi-fcgi` (libfcgi-bin) to `addr`
/// (host:port or socket path). Returns its stdout (CGI headers + body).
pub fn cgi_fcgi(addr: &str, script_filename: &Path, script_name: &str, query: &str) -> Output {
    run_with_timeout(
        Command::new("cgi-fcgi")
            .args(["-bind", "-connect", addr])
            .env_clear()
            .env("SCRIPT_FILENAME", script_filename)
            .env("SCRIPT_NAME", script_name)
            .env("REQUEST_METHOD", "GET")
            .env("QUERY_STRING", query)
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("GATEWAY_INTERFACE", "CGI/1.1"),
        Duration::from_secs(15),
    )
}

/// The php-fpm binary tests use (Debian's php-fpm8.2 unless TQSUP_PHP_FPM).
pub fn php_fpm() -> PathBuf {
    if let Some(p) = std::env::var_os("TQSUP_PHP_FPM") {
        return p.into();
    }
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("php-fpm") {
                    return e.path();
                }
            }
        }
    }
    panic!("php-fpm not installed: run scripts/install-deps.sh");
}

/// Pids of live processes whose command line contains `needle`.
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Children of `pid`, over all its threads (tokio spawns from any of them).
pub fn children(pid: i32) -> Vec<i32> {
    tqsup::fcgi::peer::children_of(pid as u32)
        .into_iter()
        .map(|p| p as i32)
        .collect()
}

/// A process's command line, NULs as spaces ("" when it is gone).
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// php-fpm's master: the child of tqsup that is a php-fpm master.
pub fn master_of(tqsup: i32) -> Option<i32> {
    children(tqsup)
        .into_iter()
        .find(|p| cmdline(*p).contains("php-fpm: master"))
}
