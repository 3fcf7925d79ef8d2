//! The whole of `tqsup run` at once, with real php-fpm: the supervisor and the
//! forwarder sharing one view of php-fpm (requests queued across a crash are
//! served after the restart), and `run --dev` with its HTTP front, hooks and
//! config reloads.

mod common;
#[path = "common/fcgi.rs"]
mod fcgi;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Guard, Project, children, eventually, free_port, master_of, tqsup};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Workers of the main pool `www` (not `www_status`, php-fpm's status pool
/// that answers tqsup's ping).
fn children_of(pid: i32) -> usize {
    children(pid)
        .into_iter()
        .filter(|p| common::cmdline(*p).trim() == "php-fpm: pool www")
        .count()
}

#[test]
fn requests_during_a_php_fpm_crash_are_queued_and_served_after_the_restart() {
    let p = Project::new();
    let port = free_port();
    let cfg = p.write(
        "tqsup.yaml",
        &format!(
            "php_fpm:\n  pool: {{ type: static, max_children: 3 }}\nforward:\n  listen: 127.0.0.1:{port}\n  queue_timeout_ms: 10000\n\
             supervisor: {{ backoff_initial_ms: 100 }}\n"
        ),
    );
    let t = Guard::spawn(
        tqsup().args(["run", "-c"]).arg(&cfg).current_dir(p.path()),
        p.join("tqsup.log"),
    );
    assert!(
        t.wait_log("forward listener ready", secs(15)) && t.wait_log("php-fpm is ready", secs(15)),
        "{}",
        t.log_text()
    );
    let addr = format!("127.0.0.1:{port}");
    let docroot = p.join("public");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (stop, ok, failures, addr, docroot) = (
                stop.clone(),
                ok.clone(),
                failures.clone(),
                addr.clone(),
                docroot.clone(),
            );
            std::thread::spawn(move || {
                let mut conn = fcgi::Conn::connect(&addr);
                while !stop.load(Ordering::Relaxed) {
                    let params = fcgi::params(&docroot, "/index.php", "", "GET", &[]);
                    conn.send(&fcgi::request(1, true, &params, &[]));
                    let r = conn.response(1);
                    if r.status() == 200 && r.body().contains("hello from php") {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {:?}", r.status(), r.body()));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let before = ok.load(Ordering::Relaxed);
    let master = master_of(t.pid()).expect("php-fpm master");
    kill(Pid::from_raw(master), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let replaced = eventually(secs(10), || master_of(t.pid()).filter(|m| *m != master)).is_some();
    std::thread::sleep(Duration::from_millis(700));
    let after_kill = ok.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    println!(
        "served {before} before the kill, {} in the {:?} after it",
        after_kill - before,
        killed_at.elapsed()
    );
    assert!(replaced, "php-fpm was not restarted:\n{}", t.log_text());
    assert!(
        before > 0 && after_kill > before,
        "not serving after the restart:\n{}",
        t.log_text()
    );
    // Only a request php-fpm was answering when it was killed may fail (it
    // had started its response, so replaying it could run it twice): at most
    // one per client, as a 502. Everything sent during the restart waited
    // in the queue and was served: no 503 (the breaker stays closed), no
    // connection refused.
    let failures = failures.lock().unwrap();
    println!("failed: {failures:?}");
    assert!(
        failures.len() <= 6,
        "{} requests failed across the restart: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        t.log_text()
    );
    assert!(
        failures.iter().all(|f| f.starts_with("502")),
        "{failures:?}\n{}",
        t.log_text()
    );
}

/// One HTTP/1.1 GET (Connection: close) to the dev front.
fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn run_dev_serves_http_runs_hooks_and_reloads_on_config_edits() {
    let p = Project::new();
    p.write(
        "public/index.php",
        "<?php echo 'pid=', getmypid(), ' uri=', $_SERVER['REQUEST_URI'], \"\\n\";\n",
    );
    p.write("src/app.txt", "v1\n");
    let (http, fwd) = (free_port(), free_port());
    let config = |children: u32| {
        format!(
            "php_fpm:\n  pool: {{ type: static, max_children: {children} }}\nforward:\n  listen: 127.0.0.1:{fwd}\n\
             dev:\n  http_listen: 127.0.0.1:{http}\n  watch: {{ debounce_ms: 100 }}\n  hooks:\n\
             \x20   - {{ name: build, run: \"cp src/app.txt public/app.txt\", paths: [\"src/**\"], then: reload }}\n"
        )
    };
    let cfg = p.write("tqsup.yaml", &config(2));
    let t = Guard::spawn(
        tqsup()
            .args(["run", "--dev", "-c"])
            .arg(&cfg)
            .current_dir(p.path()),
        p.join("tqsup.log"),
    );
    assert!(t.wait_log("php-fpm is ready", secs(15)), "{}", t.log_text());
    // The php-fpm command is printed at start, as print-cmd prints it.
    assert!(
        t.log_text().contains(&format!(
            "-F -O -y {}",
            p.join(".tqserver/phpfpm/php-fpm.conf").display()
        )),
        "{}",
        t.log_text()
    );
    let up = eventually(secs(10), || {
        (http_get(http, "/blog/1?x=2").0 == 200).then_some(())
    });
    assert!(up.is_some(), "dev front not serving:\n{}", t.log_text());
    let (status, body) = http_get(http, "/blog/1?x=2");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("uri=/blog/1?x=2"), "{body}");
    let master = master_of(t.pid()).expect("php-fpm master");
    assert_eq!(children_of(master), 2);

    // A hook on src/** with then: reload: it runs, and php-fpm reloads.
    p.write("src/app.txt", "v2\n");
    assert!(
        t.wait_log("php-fpm reloaded", secs(10)),
        "hook did not reload:\n{}",
        t.log_text()
    );
    assert_eq!(
        std::fs::read_to_string(p.join("public/app.txt")).unwrap(),
        "v2\n"
    );
    assert_eq!(http_get(http, "/app.txt"), (200, "v2\n".to_string()));

    // Editing the config reloads it: 2 → 3 children.
    let reloads = t.log_text().matches("php-fpm reloaded").count();
    p.write("tqsup.yaml", &config(3));
    let grown = eventually(secs(15), || {
        master_of(t.pid()).filter(|m| children_of(*m) == 3)
    });
    assert!(
        grown.is_some(),
        "max_children edit not applied:\n{}",
        t.log_text()
    );
    // The new php-fpm has its children before the switch is logged.
    let logged = eventually(secs(10), || {
        (t.log_text().matches("php-fpm reloaded").count() > reloads).then_some(())
    });
    assert!(logged.is_some(), "no reload logged:\n{}", t.log_text());

    // A broken edit keeps serving and names the key.
    p.write(
        "tqsup.yaml",
        &config(3).replace("max_children: 3", "max_children: 0"),
    );
    assert!(
        t.wait_log("php_fpm.pool.max_children", secs(10)),
        "{}",
        t.log_text()
    );
    assert_eq!(http_get(http, "/").0, 200);
    t.signal(Signal::SIGTERM);
    let mut t = t;
    assert_eq!(t.wait(secs(20)).code(), Some(0), "{}", t.log_text());
}

#[test]
fn run_exits_78_when_php_fpm_rejects_the_rendered_config() {
    let p = Project::new();
    let cfg = p.write(
        "tqsup.yaml",
        &format!(
            "php_fpm:\n  user: tqsup-no-such-user\nforward:\n  listen: 127.0.0.1:{}\n",
            free_port()
        ),
    );
    let mut t = Guard::spawn(
        tqsup().args(["run", "-c"]).arg(&cfg).current_dir(p.path()),
        p.join("tqsup.log"),
    );
    assert_eq!(t.wait(secs(20)).code(), Some(78), "{}", t.log_text());
    assert!(
        t.log_text().contains("php-fpm rejected") && t.log_text().contains("tqsup-no-such-user"),
        "{}",
        t.log_text()
    );
}

/// A forward address already in use stops tqsup before php-fpm is
/// launched, naming the address and the process holding it (exit 1).
#[test]
fn a_taken_forward_address_stops_tqsup_before_php_fpm_naming_the_holder() {
    let p = Project::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = p.write("tqsup.yaml", &format!("forward:\n  listen: {addr}\n"));
    let mut t = Guard::spawn(
        tqsup().args(["run", "-c"]).arg(&cfg).current_dir(p.path()),
        p.join("tqsup.log"),
    );
    assert_eq!(t.wait(secs(20)).code(), Some(1), "{}", t.log_text());
    let log = t.log_text();
    assert!(
        log.contains(&format!("forward.listen {addr}"))
            && log.contains(&format!("held by pid {}", std::process::id())),
        "{log}"
    );
    assert!(
        !log.contains("php-fpm started"),
        "php-fpm was launched: {log}"
    );
    drop(taken);
}
