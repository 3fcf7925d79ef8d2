//! The whole of `tqsup run` at once, with real php-fpm: the supervisor and the
//! forwarder sharing one view of php-fpm (requests queued across a crash are
//! served after the restart), and `run --dev` with its HTTP front, hooks and
//! config reloads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TqsupProject, eventually, fcgi, free_addr, free_port, http, json, secs};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Workers of the main pool `www` under php-fpm's master `pid`.
fn children_of(pid: i32) -> usize {
    common::workers_of(pid, "www").len()
}

#[test]
fn requests_during_a_php_fpm_crash_are_queued_and_served_after_the_restart() {
    let p = TqsupProject::new().with(json!({
        "php_fpm": { "pool": { "type": "static", "max_children": 3 } },
        "forward": { "listen": free_addr(), "queue_timeout_ms": 10000 },
        "supervisor": { "backoff_initial_ms": 100 },
    }));
    let t = p.start();
    let addr = t.forward();
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
    let master = t.master().expect("php-fpm master");
    kill(Pid::from_raw(master), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let replaced = eventually(secs(10), || t.master().filter(|m| *m != master)).is_some();
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
    assert!(replaced, "php-fpm was not restarted");
    assert!(
        before > 0 && after_kill > before,
        "not serving after the restart"
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
        "{} requests failed across the restart: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)],
    );
    assert!(
        failures.iter().all(|f| f.starts_with("502")),
        "{failures:?}"
    );
}

/// One GET (Connection: close) to the dev front: status (0 when it did not
/// answer) and body.
fn http_get(port: u16, path: &str) -> (u16, String) {
    http::get(&format!("127.0.0.1:{port}"), path)
        .map_or((0, String::new()), |r| (r.status, r.text()))
}

#[test]
fn run_dev_serves_http_runs_hooks_and_reloads_on_config_edits() {
    let mut p = TqsupProject::new();
    p.write(
        "public/index.php",
        "<?php echo 'pid=', getmypid(), ' uri=', $_SERVER['REQUEST_URI'], \"\\n\";\n",
    );
    p.write("src/app.txt", "v1\n");
    let http = free_port();
    p.merge(json!({
        "php_fpm": { "pool": { "type": "static", "max_children": 2 } },
        "forward": { "listen": free_addr() },
        "dev": {
            "http_listen": format!("127.0.0.1:{http}"),
            "watch": { "debounce_ms": 100 },
            "hooks": [{
                "name": "build",
                "run": "cp src/app.txt public/app.txt",
                "paths": ["src/**"],
                "then": "reload",
            }],
        },
    }));
    let t = p.spawn_with(&["--dev"]);
    t.expect_log("php-fpm is ready", secs(15));
    // The php-fpm command is printed at start, as print-cmd prints it.
    let command = format!(
        "-F -O -y {}",
        p.join(".tqserver/phpfpm/php-fpm.conf").display()
    );
    assert!(t.log_text().contains(&command), "{command} not logged");
    let up = eventually(secs(10), || {
        (http_get(http, "/blog/1?x=2").0 == 200).then_some(())
    });
    assert!(up.is_some(), "dev front not serving");
    let (status, body) = http_get(http, "/blog/1?x=2");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("uri=/blog/1?x=2"), "{body}");
    let master = t.master().expect("php-fpm master");
    assert_eq!(children_of(master), 2);

    // A hook on src/** with then: reload: it runs, and php-fpm reloads.
    p.write("src/app.txt", "v2\n");
    assert!(
        t.wait_log("php-fpm reloaded", secs(10)),
        "hook did not reload"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("public/app.txt")).unwrap(),
        "v2\n"
    );
    assert_eq!(http_get(http, "/app.txt"), (200, "v2\n".to_string()));

    // Editing the config reloads it: 2 → 3 children.
    let reloads = t.log_text().matches("php-fpm reloaded").count();
    p.set("php_fpm.pool.max_children", 3).write_config();
    let grown = eventually(secs(15), || t.master().filter(|m| children_of(*m) == 3));
    assert!(grown.is_some(), "max_children edit not applied");
    // The new php-fpm has its children before the switch is logged.
    let logged = eventually(secs(10), || {
        (t.log_text().matches("php-fpm reloaded").count() > reloads).then_some(())
    });
    assert!(logged.is_some(), "no reload logged");

    // A broken edit keeps serving and names the key.
    p.set("php_fpm.pool.max_children", 0).write_config();
    t.expect_log("php_fpm.pool.max_children", secs(10));
    assert_eq!(http_get(http, "/").0, 200);
    let mut t = t;
    assert_eq!(t.stop(secs(20)).code(), Some(0));
}

#[test]
fn run_exits_78_when_php_fpm_rejects_the_rendered_config() {
    let p = TqsupProject::new().with(json!({
        "php_fpm": { "user": "tqsup-no-such-user" },
        "forward": { "listen": free_addr() },
    }));
    let mut t = p.spawn();
    assert_eq!(t.wait(secs(20)).code(), Some(78));
    let log = t.log_text();
    assert!(
        log.contains("php-fpm rejected") && log.contains("tqsup-no-such-user"),
        "{log}"
    );
}

/// A forward address already in use stops tqsup before php-fpm is
/// launched, naming the address and the process holding it (exit 1).
#[test]
fn a_taken_forward_address_stops_tqsup_before_php_fpm_naming_the_holder() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let p = TqsupProject::new().with(json!({ "forward": { "listen": addr } }));
    let mut t = p.spawn();
    assert_eq!(t.wait(secs(20)).code(), Some(1));
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
