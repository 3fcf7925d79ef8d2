//! The supervisor against real php-fpm (and two fake binaries for failures
//! php-fpm cannot be made to produce on demand). "Serving" is checked with
//! the real `cgi-fcgi` straight at php-fpm's socket.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Guard, Project, cgi_fcgi, children, cmdline, eventually, master_of, tqsup};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A project with a config, a private runtime base and a unique pool name.
struct Setup {
    project: Project,
    /// `RUNTIME_DIRECTORY` for tqsup: the runtime dir is made inside.
    runtime_base: PathBuf,
    pool: String,
}

impl Setup {
    fn new(extra_php_fpm: &str, supervisor: &str) -> Setup {
        let project = Project::new();
        let pool = format!("t{:08x}", rand_u32());
        let runtime_base = project.join("run");
        std::fs::create_dir(&runtime_base).unwrap();
        let s = Setup {
            project,
            runtime_base,
            pool,
        };
        s.write_config(2, extra_php_fpm, supervisor);
        s
    }

    fn sock(&self) -> PathBuf {
        self.project.join("fpm.sock")
    }

    fn write_config(&self, max_children: i64, extra_php_fpm: &str, supervisor: &str) {
        let yaml = format!(
            "php_fpm:\n  document_root: public\n  listen: {sock}\n  pool: {{ name: {pool}, type: static, max_children: {max_children} }}\n{extra_php_fpm}\
             forward:\n  enabled: false\n  health: {{ interval_ms: 200, timeout_ms: 500, failure_threshold: 2 }}\n\
             supervisor: {{ backoff_initial_ms: 100, stop_timeout_ms: 3000, ready_timeout_ms: 5000{supervisor} }}\n",
            sock = self.sock().display(),
            pool = self.pool,
        );
        self.project.write("tqsup.yaml", &yaml);
    }

    fn start(&self) -> Guard {
        self.start_binary(&mut tqsup())
    }

    /// Starts `tqsup run` from `cmd` (the test's tqsup binary, or a copy).
    fn start_binary(&self, cmd: &mut std::process::Command) -> Guard {
        Guard::spawn(
            cmd.args(["run", "-c"])
                .arg(self.project.join("tqsup.yaml"))
                .env("RUNTIME_DIRECTORY", &self.runtime_base)
                .current_dir(self.project.path()),
            self.project.join("tqsup.log"),
        )
    }

    fn serving(&self) -> bool {
        let out = cgi_fcgi(
            &self.sock().display().to_string(),
            &self.project.join("public/index.php"),
            "/index.php",
            "",
        );
        String::from_utf8_lossy(&out.stdout).contains("hello from php")
    }

    /// Every process of the pool: its workers and those of php-fpm's
    /// status pool (`<pool>_status`, which answers tqsup's ping).
    fn pool_pids(&self) -> Vec<i32> {
        common::pids_matching(&format!("pool {}", self.pool))
    }

    /// The workers of the main pool only.
    fn workers(&self) -> Vec<i32> {
        let name = format!("php-fpm: pool {}", self.pool);
        self.pool_pids()
            .into_iter()
            .filter(|p| cmdline(*p).trim() == name)
            .collect()
    }

    /// Starts tqsup and waits for php-fpm to be ready and serving.
    fn start_ready(&self) -> Guard {
        let g = self.start();
        assert!(
            g.wait_log("php-fpm is ready", Duration::from_secs(15)),
            "not ready; log:\n{}",
            g.log_text()
        );
        assert!(
            self.serving(),
            "ready but not serving; log:\n{}",
            g.log_text()
        );
        g
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn starts_ready_logs_php_fpm_at_info_and_stops_cleanly_on_sigterm() {
    let s = Setup::new("", "");
    let mut g = s.start_ready();
    let log = g.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ready to handle connections"))
        .unwrap_or_else(|| panic!("php-fpm's ready line missing; log:\n{log}"));
    assert!(line.contains("INFO") && line.contains("php_fpm"), "{line}");
    assert!(
        line.contains(&format!("pool=\"{}\"", s.pool)) || line.contains("pool="),
        "{line}"
    );
    assert!(!dir_is_empty(&s.runtime_base), "no runtime dir was made");
    let pool = s.workers();
    assert_eq!(pool.len(), 2, "expected 2 children: {pool:?}");

    g.signal(Signal::SIGTERM);
    let status = g.wait(secs(15));
    assert_eq!(status.code(), Some(0), "log:\n{}", g.log_text());
    assert!(
        s.pool_pids().is_empty(),
        "php-fpm children left: {:?}",
        s.pool_pids()
    );
    assert!(master_of(g.pid()).is_none());
    assert!(
        dir_is_empty(&s.runtime_base),
        "runtime dir left: {:?}",
        std::fs::read_dir(&s.runtime_base)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect::<Vec<_>>()
    );
    assert!(g.log_text().contains("stopped"));
}

#[test]
fn a_killed_master_is_replaced_quickly() {
    // stable_after_ms short, so each run measures a first restart (backoff
    // 100 ms); the growth of the backoff is another test's business.
    let s = Setup::new("", ", stable_after_ms: 300");
    let g = s.start_ready();
    let mut times = Vec::new();
    for run in 0..5 {
        let old = master_of(g.pid()).expect("a php-fpm master");
        let t0 = Instant::now();
        kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
        let back = eventually(secs(10), || {
            let new = master_of(g.pid())?;
            (new != old && s.serving()).then_some(())
        });
        let took = t0.elapsed();
        assert!(
            back.is_some(),
            "run {run}: not serving again; log:\n{}",
            g.log_text()
        );
        times.push(took);
        // Run longer than stable_after: the backoff is reset.
        std::thread::sleep(Duration::from_millis(600));
    }
    let mut sorted = times.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    eprintln!("recovery after kill -9 of php-fpm's master: {times:?}; median {median:?}");
    assert!(
        times[0] < Duration::from_secs(1),
        "first recovery took {:?}",
        times[0]
    );
}

#[test]
fn sighup_applies_a_good_config_and_keeps_serving_on_a_bad_one() {
    let s = Setup::new("", "");
    let g = s.start_ready();
    let master = master_of(g.pid()).unwrap();
    // Workers of the main pool only (not `<pool>_status`, php-fpm's status
    // pool that answers tqsup's ping).
    let count = |m: i32| {
        children(m)
            .into_iter()
            .filter(|p| cmdline(*p).trim() == format!("php-fpm: pool {}", s.pool))
            .count()
    };
    assert_eq!(count(master), 2);

    s.write_config(4, "", "");
    g.signal(Signal::SIGHUP);
    let four = eventually(secs(15), || (count(master) == 4).then_some(()));
    assert!(
        four.is_some(),
        "expected 4 children, have {}; log:\n{}",
        count(master),
        g.log_text()
    );
    assert_eq!(
        master_of(g.pid()),
        Some(master),
        "a reload must not replace the master"
    );
    assert!(s.serving());

    s.write_config(0, "", "");
    g.signal(Signal::SIGHUP);
    assert!(
        g.wait_log("reload refused", secs(15)),
        "no refusal logged; log:\n{}",
        g.log_text()
    );
    let log = g.log_text();
    let refusal = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(refusal.contains("ERROR"), "{refusal}");
    assert!(
        log.contains("php_fpm.pool.max_children"),
        "the key is not named; log:\n{log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.serving(), "the old php-fpm stopped serving");
    assert_eq!(master_of(g.pid()), Some(master));
    assert_eq!(count(master), 4);
}

#[test]
fn php_fpm_does_not_outlive_a_sigkilled_tqsup() {
    let s = Setup::new("", "");
    let mut g = s.start_ready();
    let master = master_of(g.pid()).unwrap();
    let pool = s.pool_pids();
    assert!(!pool.is_empty());
    g.signal(Signal::SIGKILL);
    let _ = g.wait(secs(5));
    let gone = eventually(secs(5), || {
        (!alive(master) && pool.iter().all(|p| !alive(*p))).then_some(())
    });
    assert!(
        gone.is_some(),
        "php-fpm survived: master {master} alive={}, pool {:?}",
        alive(master),
        s.pool_pids()
    );

    // The next start removes the runtime dir the SIGKILLed tqsup left.
    assert!(!dir_is_empty(&s.runtime_base));
    let left: Vec<PathBuf> = std::fs::read_dir(&s.runtime_base)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut g2 = s.start_ready();
    for p in &left {
        assert!(!p.exists(), "stale runtime dir {} not removed", p.display());
    }
    g2.signal(Signal::SIGTERM);
    assert_eq!(g2.wait(secs(15)).code(), Some(0));
}

/// A package upgrade replaces tqsup's binary while it runs; a php-fpm
/// started after that is still guarded, so a SIGKILLed tqsup leaves no
/// php-fpm behind.
#[test]
fn php_fpm_started_after_the_binary_was_replaced_is_still_guarded() {
    let s = Setup::new("", "");
    let bin = s.project.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let exe = bin.join("tqsup");
    std::fs::copy(env!("CARGO_BIN_EXE_tqsup"), &exe).unwrap();
    let mut cmd = std::process::Command::new(&exe);
    cmd.env_remove("TQSUP_CONFIG").env_remove("NOTIFY_SOCKET");
    let mut g = s.start_binary(&mut cmd);
    assert!(
        g.wait_log("php-fpm is ready", secs(15)),
        "not ready; log:\n{}",
        g.log_text()
    );
    // The upgrade: a new file renamed over the old one (its inode is gone).
    let new = bin.join("tqsup.new");
    std::fs::copy(env!("CARGO_BIN_EXE_tqsup"), &new).unwrap();
    std::fs::rename(&new, &exe).unwrap();
    assert!(cmdline_exe(g.pid()).ends_with("(deleted)"));
    // A restart after the upgrade spawns a new php-fpm and its guard.
    let first = master_of(g.pid()).unwrap();
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    let second = eventually(secs(15), || {
        master_of(g.pid()).filter(|m| *m != first && s.serving())
    });
    assert!(second.is_some(), "not restarted; log:\n{}", g.log_text());
    assert!(
        !g.log_text().contains("guard"),
        "guard trouble; log:\n{}",
        g.log_text()
    );
    let pool = s.pool_pids();
    assert!(!pool.is_empty());
    g.signal(Signal::SIGKILL);
    let _ = g.wait(secs(5));
    let gone = eventually(secs(5), || pool.iter().all(|p| !alive(*p)).then_some(()));
    assert!(
        gone.is_some(),
        "php-fpm outlived tqsup: {:?}",
        s.pool_pids()
    );
}

/// php-fpm exiting 0 on a SIGQUIT tqsup did not send is a failure: it is
/// restarted, and tqsup keeps running (DESIGN §6).
#[test]
fn a_stray_sigquit_to_php_fpm_is_a_failure_and_restarted() {
    let s = Setup::new("", "");
    let mut g = s.start_ready();
    let master = master_of(g.pid()).unwrap();
    kill(Pid::from_raw(master), Signal::SIGQUIT).unwrap();
    let replaced = eventually(secs(15), || {
        master_of(g.pid()).filter(|m| *m != master && s.serving())
    });
    assert!(replaced.is_some(), "not restarted; log:\n{}", g.log_text());
    assert!(
        g.log_text().contains("without being asked to"),
        "{}",
        g.log_text()
    );
    g.signal(Signal::SIGTERM);
    assert_eq!(g.wait(secs(15)).code(), Some(0));
}

/// Stale-directory cleanup in a shared temp dir (no RUNTIME_DIRECTORY nor
/// XDG_RUNTIME_DIR: `$TMPDIR`, here a private base standing in for /tmp)
/// trusts nothing there: a marker linked to /dev/zero or made a FIFO is
/// never read or waited on, and a live tqsup running under another name
/// keeps its directory.
#[test]
fn a_hostile_shared_temp_dir_is_not_trusted() {
    let base = tempfile::tempdir().unwrap();
    let zero = base.path().join("tqsup-run-zero");
    std::fs::create_dir(&zero).unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero.join("tqsup.pid")).unwrap();
    let fifo = base.path().join("tqsup-run-fifo");
    std::fs::create_dir(&fifo).unwrap();
    nix::unistd::mkfifo(&fifo.join("tqsup.pid"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let in_shared_tmp = |s: &Setup, cmd: &mut std::process::Command| {
        Guard::spawn(
            cmd.args(["run", "-c"])
                .arg(s.project.join("tqsup.yaml"))
                .env_remove("RUNTIME_DIRECTORY")
                .env_remove("XDG_RUNTIME_DIR")
                .env("TMPDIR", base.path())
                .current_dir(s.project.path()),
            s.project.join("tqsup.log"),
        )
    };
    // A live tqsup under another name.
    let other = Setup::new("", "");
    let renamed = other.project.join("not-tq");
    std::fs::copy(env!("CARGO_BIN_EXE_tqsup"), &renamed).unwrap();
    let g1 = in_shared_tmp(&other, &mut std::process::Command::new(&renamed));
    assert!(
        g1.wait_log("php-fpm is ready", secs(15)),
        "{}",
        g1.log_text()
    );
    let theirs: Vec<PathBuf> = std::fs::read_dir(base.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != &zero && p != &fifo)
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:?}");

    let s = Setup::new("", "");
    let t0 = Instant::now();
    let g2 = in_shared_tmp(&s, &mut tqsup());
    assert!(
        g2.wait_log("php-fpm is ready", secs(15)),
        "not ready; log:\n{}",
        g2.log_text()
    );
    assert!(t0.elapsed() < secs(10), "startup waited on a marker");
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", g2.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        rss_kb < 200_000,
        "tqsup read a hostile marker: VmHWM {rss_kb} kB"
    );
    assert!(zero.join("tqsup.pid").is_symlink() && fifo.exists());
    assert!(theirs[0].exists(), "a live tqsup's runtime dir was removed");
    assert!(other.serving(), "the live tqsup was disturbed");
}

/// The target of /proc/PID/exe.
fn cmdline_exe(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn a_hung_php_fpm_is_restarted_by_the_liveness_probe() {
    let s = Setup::new("", "");
    let g = s.start_ready();
    let master = master_of(g.pid()).unwrap();
    // Stop the whole group: the master and every child hang.
    killpg(Pid::from_raw(master), Signal::SIGSTOP).unwrap();
    let replaced = eventually(secs(15), || {
        let new = master_of(g.pid())?;
        (new != master && s.serving()).then_some(())
    });
    assert!(replaced.is_some(), "not restarted; log:\n{}", g.log_text());
    assert!(g.log_text().contains("stopped answering its ping"));
}

fn fake_php_fpm(s: &Setup, name: &str, body: &str) -> PathBuf {
    let script = format!(
        "#!/bin/sh\n# passes `php-fpm -t`, then fails as told\nfor a in \"$@\"; do [ \"$a\" = -t ] && exit 0; done\n{body}\n"
    );
    let p = s.project.write(name, &script);
    common::set_mode(&p, 0o755);
    p
}

#[test]
fn a_crashing_php_fpm_is_restarted_with_growing_delays_then_tqsup_exits_1() {
    let s = Setup::new("", "");
    let fake = fake_php_fpm(&s, "fake-crash", "echo 'fake php-fpm crashing' >&2\nexit 1");
    s.write_config(
        2,
        &format!("  binary: {}\n", fake.display()),
        ", backoff_initial_ms: 50, backoff_max_ms: 2000, max_restarts: 4",
    );
    let mut g = s.start();
    let status = g.wait(secs(30));
    let log = g.log_text();
    assert_eq!(status.code(), Some(1), "log:\n{log}");
    assert!(log.contains("supervisor.max_restarts"), "log:\n{log}");
    assert!(
        log.contains("fake php-fpm crashing"),
        "php-fpm's output is not logged:\n{log}"
    );
    let delays: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("php-fpm restart scheduled"))
        .filter_map(|l| {
            l.split("delay_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    eprintln!("restart delays (ms): {delays:?}");
    assert_eq!(delays.len(), 4, "log:\n{log}");
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "delays do not grow: {delays:?}"
    );
    assert_eq!(log.matches("php-fpm started").count(), 5, "log:\n{log}");
}

#[test]
fn php_fpm_exit_78_makes_tqsup_exit_78_without_retrying() {
    let s = Setup::new("", "");
    let fake = fake_php_fpm(
        &s,
        "fake-78",
        "echo '[25-Nov-2026 20:49:17] ERROR: fake config problem in pool' >&2\nexit 78",
    );
    s.write_config(2, &format!("  binary: {}\n", fake.display()), "");
    let mut g = s.start();
    let t0 = Instant::now();
    let status = g.wait(secs(15));
    let log = g.log_text();
    assert_eq!(status.code(), Some(78), "log:\n{log}");
    assert!(t0.elapsed() < secs(5), "took {:?}", t0.elapsed());
    assert!(
        log.contains("fake config problem in pool"),
        "php-fpm's message missing:\n{log}"
    );
    assert_eq!(log.matches("php-fpm started").count(), 1, "retried:\n{log}");
    assert!(
        dir_is_empty(&s.runtime_base),
        "runtime dir left after an error exit"
    );
}

#[test]
fn a_listen_conflict_names_the_holder() {
    let s = Setup::new("", "");
    let conf = s.project.write(
        "other-fpm.conf",
        &format!(
            "[global]\ndaemonize = no\nerror_log = /proc/self/fd/2\n[other]\nlisten = {}\nuser = www-data\npm = static\npm.max_children = 1\n",
            s.sock().display()
        ),
    );
    let other = Guard::spawn(
        std::process::Command::new(common::php_fpm())
            .args(["-F", "-O", "-y"])
            .arg(&conf),
        s.project.join("other.log"),
    );
    assert!(
        other.wait_log("ready to handle connections", secs(10)),
        "{}",
        other.log_text()
    );
    s.write_config(2, "", ", backoff_initial_ms: 50, max_restarts: 1");
    let mut g = s.start();
    let status = g.wait(secs(20));
    let log = g.log_text();
    assert_eq!(status.code(), Some(1), "log:\n{log}");
    assert!(
        log.contains(&format!("held by pid {}", other.pid())),
        "holder not named:\n{log}"
    );
}

/// A reload whose `php-fpm -t` hangs does not hold tqsup: SIGTERM during it
/// stops tqsup promptly (exit 0) and no new php-fpm is started after it.
#[test]
fn a_hung_reload_does_not_hold_a_stop() {
    let s = Setup::new("", "");
    let gate = s.project.join("hang-t");
    let wrapper = s.project.write(
        "php-fpm-wrapper",
        &format!(
            "#!/bin/sh\n# php-fpm, except that `-t` hangs once {gate} exists\n\
             for a in \"$@\"; do [ \"$a\" = -t ] && [ -e {gate} ] && exec sleep 600; done\n\
             exec {fpm} \"$@\"\n",
            gate = gate.display(),
            fpm = common::php_fpm().display(),
        ),
    );
    common::set_mode(&wrapper, 0o755);
    s.write_config(2, &format!("  binary: {}\n", wrapper.display()), "");
    let mut g = s.start_ready();
    std::fs::write(&gate, "").unwrap();
    g.signal(Signal::SIGHUP);
    assert!(
        g.wait_log("reloading the configuration", secs(10)),
        "{}",
        g.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    g.signal(Signal::SIGTERM);
    let status = g.wait(secs(20));
    assert_eq!(status.code(), Some(0), "log:\n{}", g.log_text());
    assert!(t0.elapsed() < secs(10), "the stop waited for the hung -t");
    let log = g.log_text();
    let stopping = log.find("stopping (SIGTERM/SIGINT)").unwrap_or(0);
    assert!(
        !log[stopping..].contains("php-fpm started"),
        "a php-fpm was started after the stop:\n{log}"
    );
    assert!(
        s.pool_pids().is_empty(),
        "php-fpm left: {:?}",
        s.pool_pids()
    );
}
