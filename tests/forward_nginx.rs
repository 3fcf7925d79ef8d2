//! Real nginx (upstream keepalive, `fastcgi_keep_conn on`) → tqsup → real
//! php-fpm, and the pool's bounds seen from outside (DESIGN §1, §7).

mod common;

use std::time::{Duration, Instant};

use common::fcgi::*;
use common::http::curl_raw;
use common::nginx::Nginx;

/// nginx in front of the stack's forward listener.
fn nginx(s: &Stack) -> Nginx {
    Nginx::start(&s.project, &s.addr, &s.docroot())
}

/// curl's stdout (it must succeed).
fn curl(args: &[&str]) -> String {
    curl_raw(args).out()
}

#[test]
fn nginx_get_post_big_response_and_stderr() {
    let s = Stack::start(StackOpts::default());
    let n = nginx(&s);
    let base = format!("http://127.0.0.1:{}", n.port);

    assert_eq!(
        curl(&[&format!("{base}/index.php?n=nginx")]),
        "hello nginx\n"
    );

    // A 10 MiB POST whose hashes PHP echoes back.
    let file = s.project.join("upload.bin");
    let data = common::varied_bytes(10 * 1024 * 1024);
    std::fs::write(&file, &data).unwrap();
    let sha = common::sha256_file(&file);
    let got = curl(&[
        "--data-binary",
        &format!("@{}", file.display()),
        "-H",
        "Content-Type: application/octet-stream",
        &format!("{base}/echo.php"),
    ]);
    let parts: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(parts[0], data.len().to_string(), "{got}");
    assert_eq!(parts[1], sha, "{got}");

    // A 100 MiB streamed response; tqsup's peak memory stays bounded.
    let size = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{http_code}",
        &format!("{base}/big.php?mb=100"),
    ]);
    assert_eq!(size, "104857600 200");
    let hwm = common::proc_status_kib(s.tqsup.pid(), "VmHWM");
    assert!(hwm < 64 * 1024, "tqsup VmHWM {hwm} KiB");

    // PHP's stderr reaches nginx's error log.
    assert_eq!(curl(&[&format!("{base}/stderr.php?m=xyzzy")]), "ok\n");
    let logged = common::eventually(Duration::from_secs(5), || {
        n.error_log_text()
            .contains("stderr-marker-xyzzy")
            .then_some(())
    });
    assert!(logged.is_some(), "nginx error log: {}", n.error_log_text());
    drop(n.guard);
}

#[test]
fn two_children_two_connections_queue_then_503() {
    let s = Stack::start(StackOpts {
        children: 2,
        queue_timeout_ms: 1500,
        ..StackOpts::default()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sock = s.fpm_socket.clone();
    let st = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut max = 0;
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            max = max.max(unix_connections(&sock));
            std::thread::sleep(Duration::from_millis(5));
        }
        max
    });
    let slow = |ms: u32| {
        let addr = s.addr.clone();
        let p = s.get("/sleep.php", &format!("ms={ms}"));
        std::thread::spawn(move || {
            let t = Instant::now();
            let mut c = Conn::connect(&addr);
            c.send(&request(1, true, &p, b""));
            let r = c.response(1);
            (r, t.elapsed())
        })
    };
    // Three concurrent 800 ms requests: the third waits for a free
    // connection and is served after the first two.
    let hs: Vec<_> = (0..3).map(|_| slow(800)).collect();
    let mut rs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    rs.sort_by_key(|(_, t)| *t);
    for (r, _) in &rs {
        assert_eq!(r.body(), "slept\n", "{r:?}");
    }
    assert!(
        rs[2].1 >= Duration::from_millis(1500),
        "third was queued: {:?}",
        rs[2].1
    );
    // Three concurrent 3 s requests: the third gets 503 after queue_timeout.
    let hs: Vec<_> = (0..3).map(|_| slow(3000)).collect();
    let mut rs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    rs.sort_by_key(|(_, t)| *t);
    assert_eq!(rs[0].0.status(), 503, "{:?}", rs[0].0);
    assert!(String::from_utf8_lossy(&rs[0].0.stdout).contains("Retry-After:"));
    assert!(
        rs[0].1 >= Duration::from_millis(1400) && rs[0].1 < Duration::from_millis(2500),
        "{:?}",
        rs[0].1
    );
    assert_eq!(rs[1].0.body(), "slept\n");
    assert_eq!(rs[2].0.body(), "slept\n");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let max = sampler.join().unwrap();
    assert!(
        (1..=2).contains(&max),
        "upstream connections seen at once: {max}"
    );
}

#[test]
fn max_requests_with_kept_alive_requests_all_succeed() {
    let s = Stack::start(StackOpts {
        children: 2,
        max_requests: 3,
        ..StackOpts::default()
    });
    let n = nginx(&s);
    // 20 requests on one kept-alive client connection through nginx.
    let urls: Vec<String> = (0..20)
        .map(|i| format!("http://127.0.0.1:{}/index.php?n={i}", n.port))
        .collect();
    let args: Vec<&str> = urls.iter().map(String::as_str).collect();
    let out = curl(&args);
    let expect: String = (0..20).map(|i| format!("hello {i}\n")).collect();
    assert_eq!(out, expect);
    // And 20 on one raw connection straight to tqsup.
    let mut c = s.conn();
    for i in 0..20 {
        c.send(&request(
            1,
            true,
            &s.get("/index.php", &format!("n={i}")),
            b"",
        ));
        assert_eq!(c.response(1).body(), format!("hello {i}\n"));
    }
}
