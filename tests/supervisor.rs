//! The supervisor against real php-fpm (and two fake binaries for failures
//! php-fpm cannot be made to produce on demand). "Serving" is checked with
//! the real `cgi-fcgi` straight at php-fpm's socket.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Tqsup, TqsupProject, alive, cgi_fcgi, eventually, json, master_of, secs, unique_name,
    workers_of,
};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A project whose php-fpm listens on `fpm.sock` in it, with a pool name
/// of its own (so its processes can be found), no forwarder, quick pings
/// and a quick backoff.
fn setup() -> TqsupProject {
    let mut p = TqsupProject::new();
    p.merge(json!({
        "php_fpm": {
            "document_root": "public",
            "listen": p.join("fpm.sock"),
            "pool": { "name": unique_name("t"), "type": "static", "max_children": 2 },
        },
        "forward": {
            "enabled": false,
            "health": { "interval_ms": 200, "timeout_ms": 500, "failure_threshold": 2 },
        },
        "supervisor": { "backoff_initial_ms": 100, "stop_timeout_ms": 3000, "ready_timeout_ms": 5000 },
    }));
    p
}

fn pool(s: &TqsupProject) -> String {
    s.get("php_fpm.pool.name").as_str().unwrap().to_string()
}

/// Whether php-fpm answers `cgi-fcgi` on its socket.
fn serving(s: &TqsupProject) -> bool {
    let out = cgi_fcgi(
        &s.join("fpm.sock").display().to_string(),
        &s.join("public/index.php"),
        "/index.php",
        "",
    );
    out.out().contains("hello from php")
}

/// Every process of the pool: its workers and those of php-fpm's status
/// pool (`<pool>_status`, which answers tqsup's ping).
fn pool_pids(s: &TqsupProject) -> Vec<i32> {
    common::pids_matching(&format!("pool {}", pool(s)))
}

/// The workers of the main pool only.
fn workers(s: &TqsupProject) -> Vec<i32> {
    let name = format!("php-fpm: pool {}", pool(s));
    pool_pids(s)
        .into_iter()
        .filter(|p| common::cmdline(*p).trim() == name)
        .collect()
}

/// Starts tqsup and waits for php-fpm to be ready and serving.
fn start_ready(s: &TqsupProject) -> Tqsup {
    ready(s, s.start())
}

fn ready(s: &TqsupProject, t: Tqsup) -> Tqsup {
    t.wait_ready();
    assert!(serving(s), "ready but not serving");
    t
}

/// `tqsup run` in `s` from a copy of the binary at `exe`.
fn spawn_copy(s: &TqsupProject, exe: &Path) -> Tqsup {
    s.spawn_command(s.command_of(exe, &s.run_args(&[])))
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

fn dir_entries(p: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(p)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[test]
fn starts_ready_logs_php_fpm_at_info_and_stops_cleanly_on_sigterm() {
    let s = setup();
    let mut g = start_ready(&s);
    let log = g.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ready to handle connections"))
        .unwrap_or_else(|| panic!("php-fpm's ready line missing; log:\n{log}"));
    assert!(line.contains("INFO") && line.contains("php_fpm"), "{line}");
    assert!(
        line.contains(&format!("pool=\"{}\"", pool(&s))) || line.contains("pool="),
        "{line}"
    );
    assert!(!dir_is_empty(&s.run_dir()), "no runtime dir was made");
    let pool = workers(&s);
    assert_eq!(pool.len(), 2, "expected 2 children: {pool:?}");

    let status = g.stop(secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(
        pool_pids(&s).is_empty(),
        "php-fpm children left: {:?}",
        pool_pids(&s)
    );
    assert!(master_of(g.pid()).is_none());
    assert!(
        dir_is_empty(&s.run_dir()),
        "runtime dir left: {:?}",
        dir_entries(&s.run_dir())
    );
    assert!(g.log_text().contains("stopped"));
}

#[test]
fn a_killed_master_is_replaced_quickly() {
    // stable_after_ms short, so each run measures a first restart (backoff
    // 100 ms); the growth of the backoff is another test's business.
    let s = setup().with(json!({ "supervisor": { "stable_after_ms": 300 } }));
    let g = start_ready(&s);
    let mut times = Vec::new();
    for run in 0..5 {
        let old = g.master().expect("a php-fpm master");
        let t0 = Instant::now();
        kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
        let back = eventually(secs(10), || {
            let new = g.master()?;
            (new != old && serving(&s)).then_some(())
        });
        let took = t0.elapsed();
        assert!(back.is_some(), "run {run}: not serving again");
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
    let mut s = setup();
    let g = start_ready(&s);
    let master = g.master().unwrap();
    let name = pool(&s);
    let count = |m: i32| workers_of(m, &name).len();
    assert_eq!(count(master), 2);

    s.set("php_fpm.pool.max_children", 4).write_config();
    g.hup();
    let four = eventually(secs(15), || (count(master) == 4).then_some(()));
    assert!(
        four.is_some(),
        "expected 4 children, have {}",
        count(master)
    );
    assert_eq!(
        g.master(),
        Some(master),
        "a reload must not replace the master"
    );
    assert!(serving(&s));

    s.set("php_fpm.pool.max_children", 0).write_config();
    g.hup();
    g.expect_log("reload refused", secs(15));
    let log = g.log_text();
    let refusal = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(refusal.contains("ERROR"), "{refusal}");
    assert!(
        log.contains("php_fpm.pool.max_children"),
        "the key is not named; log:\n{log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(serving(&s), "the old php-fpm stopped serving");
    assert_eq!(g.master(), Some(master));
    assert_eq!(count(master), 4);
}

#[test]
fn php_fpm_does_not_outlive_a_sigkilled_tqsup() {
    let s = setup();
    let mut g = start_ready(&s);
    let master = g.master().unwrap();
    let pool = pool_pids(&s);
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
        pool_pids(&s)
    );

    // The next start removes the runtime dir the SIGKILLed tqsup left.
    assert!(!dir_is_empty(&s.run_dir()));
    let left = dir_entries(&s.run_dir());
    let mut g2 = start_ready(&s);
    for p in &left {
        assert!(!p.exists(), "stale runtime dir {} not removed", p.display());
    }
    assert_eq!(g2.stop(secs(15)).code(), Some(0));
}

/// A package upgrade replaces tqsup's binary while it runs; a php-fpm
/// started after that is still guarded, so a SIGKILLed tqsup leaves no
/// php-fpm behind.
#[test]
fn php_fpm_started_after_the_binary_was_replaced_is_still_guarded() {
    let s = setup();
    let bin = s.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let exe = bin.join("tqsup");
    std::fs::copy(env!("CARGO_BIN_EXE_tqsup"), &exe).unwrap();
    let mut g = spawn_copy(&s, &exe);
    g.expect_log("php-fpm is ready", secs(15));
    // The upgrade: a new file renamed over the old one (its inode is gone).
    let new = bin.join("tqsup.new");
    std::fs::copy(env!("CARGO_BIN_EXE_tqsup"), &new).unwrap();
    std::fs::rename(&new, &exe).unwrap();
    assert!(exe_of(g.pid()).ends_with("(deleted)"));
    // A restart after the upgrade spawns a new php-fpm and its guard.
    let first = g.master().unwrap();
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    let second = eventually(secs(15), || {
        g.master().filter(|m| *m != first && serving(&s))
    });
    assert!(second.is_some(), "not restarted");
    assert!(!g.log_text().contains("guard"), "guard trouble");
    let pool = pool_pids(&s);
    assert!(!pool.is_empty());
    g.signal(Signal::SIGKILL);
    let _ = g.wait(secs(5));
    let gone = eventually(secs(5), || pool.iter().all(|p| !alive(*p)).then_some(()));
    assert!(
        gone.is_some(),
        "php-fpm outlived tqsup: {:?}",
        pool_pids(&s)
    );
}

/// php-fpm exiting 0 on a SIGQUIT tqsup did not send is a failure: it is
/// restarted, and tqsup keeps running (DESIGN §6).
#[test]
fn a_stray_sigquit_to_php_fpm_is_a_failure_and_restarted() {
    let s = setup();
    let mut g = start_ready(&s);
    let master = g.master().unwrap();
    kill(Pid::from_raw(master), Signal::SIGQUIT).unwrap();
    let replaced = eventually(secs(15), || {
        g.master().filter(|m| *m != master && serving(&s))
    });
    assert!(replaced.is_some(), "not restarted");
    assert!(
        g.log_text().contains("without being asked to"),
        "{}",
        g.log_text()
    );
    assert_eq!(g.stop(secs(15)).code(), Some(0));
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
    let in_shared_tmp = |s: &TqsupProject, exe: &Path| {
        let mut cmd = s.command_of(exe, &s.run_args(&[]));
        cmd.env_remove("RUNTIME_DIRECTORY")
            .env_remove("XDG_RUNTIME_DIR")
            .env("TMPDIR", base.path());
        s.spawn_command(cmd)
    };
    // A live tqsup under another name.
    let other = setup();
    let renamed = other.join("not-tq");
    std::fs::copy(env!("CARGO_BIN_EXE_tqsup"), &renamed).unwrap();
    let g1 = in_shared_tmp(&other, &renamed);
    g1.expect_log("php-fpm is ready", secs(15));
    let theirs: Vec<PathBuf> = dir_entries(base.path())
        .into_iter()
        .filter(|p| p != &zero && p != &fifo)
        .collect();
    assert_eq!(theirs.len(), 1, "{theirs:?}");

    let s = setup();
    let t0 = Instant::now();
    let g2 = in_shared_tmp(&s, Path::new(env!("CARGO_BIN_EXE_tqsup")));
    g2.expect_log("php-fpm is ready", secs(15));
    assert!(t0.elapsed() < secs(10), "startup waited on a marker");
    let rss_kb = common::proc_status_kib(g2.pid(), "VmHWM");
    assert!(
        rss_kb < 200_000,
        "tqsup read a hostile marker: VmHWM {rss_kb} kB"
    );
    assert!(zero.join("tqsup.pid").is_symlink() && fifo.exists());
    assert!(theirs[0].exists(), "a live tqsup's runtime dir was removed");
    assert!(serving(&other), "the live tqsup was disturbed");
}

/// The target of /proc/PID/exe.
fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn a_hung_php_fpm_is_restarted_by_the_liveness_probe() {
    let s = setup();
    let g = start_ready(&s);
    let master = g.master().unwrap();
    // Stop the whole group: the master and every child hang.
    killpg(Pid::from_raw(master), Signal::SIGSTOP).unwrap();
    let replaced = eventually(secs(15), || {
        let new = g.master()?;
        (new != master && serving(&s)).then_some(())
    });
    assert!(replaced.is_some(), "not restarted");
    assert!(g.log_text().contains("stopped answering its ping"));
}

fn fake_php_fpm(s: &TqsupProject, name: &str, body: &str) -> PathBuf {
    let script = format!(
        "#!/bin/sh\n# passes `php-fpm -t`, then fails as told\nfor a in \"$@\"; do [ \"$a\" = -t ] && exit 0; done\n{body}\n"
    );
    let p = s.write(name, &script);
    common::set_mode(&p, 0o755);
    p
}

#[test]
fn a_crashing_php_fpm_is_restarted_with_growing_delays_then_tqsup_exits_1() {
    let mut s = setup();
    let fake = fake_php_fpm(&s, "fake-crash", "echo 'fake php-fpm crashing' >&2\nexit 1");
    s.merge(json!({
        "php_fpm": { "binary": fake },
        "supervisor": { "backoff_initial_ms": 50, "backoff_max_ms": 2000, "max_restarts": 4 },
    }));
    let mut g = s.spawn();
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
    let mut s = setup();
    let fake = fake_php_fpm(
        &s,
        "fake-78",
        "echo '[25-Nov-2026 20:49:17] ERROR: fake config problem in pool' >&2\nexit 78",
    );
    s.set("php_fpm.binary", fake);
    let mut g = s.spawn();
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
        dir_is_empty(&s.run_dir()),
        "runtime dir left after an error exit"
    );
}

#[test]
fn a_listen_conflict_names_the_holder() {
    let mut s = setup();
    // Another php-fpm, from its own ini file, on the socket tqsup's wants.
    let conf = s.write(
        "other-fpm.conf",
        &format!(
            "[global]\ndaemonize = no\nerror_log = /proc/self/fd/2\n[other]\nlisten = {}\nuser = www-data\npm = static\npm.max_children = 1\n",
            s.join("fpm.sock").display()
        ),
    );
    let other = common::Guard::spawn(
        std::process::Command::new(common::php_fpm())
            .args(["-F", "-O", "-y"])
            .arg(&conf),
        s.join("other.log"),
    );
    assert!(
        other.wait_log("ready to handle connections", secs(10)),
        "the other php-fpm did not start"
    );
    s.merge(json!({ "supervisor": { "backoff_initial_ms": 50, "max_restarts": 1 } }));
    let mut g = s.spawn();
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
    let mut s = setup();
    let gate = s.join("hang-t");
    let wrapper = s.write(
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
    s.set("php_fpm.binary", wrapper);
    let mut g = start_ready(&s);
    std::fs::write(&gate, "").unwrap();
    g.hup();
    g.expect_log("reloading the configuration", secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let status = g.stop(secs(20));
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < secs(10), "the stop waited for the hung -t");
    let log = g.log_text();
    let stopping = log.find("stopping (SIGTERM/SIGINT)").unwrap_or(0);
    assert!(
        !log[stopping..].contains("php-fpm started"),
        "a php-fpm was started after the stop:\n{log}"
    );
    assert!(
        pool_pids(&s).is_empty(),
        "php-fpm left: {:?}",
        pool_pids(&s)
    );
}
