//! The forward listener against slow, stalled, abusive and half-closing
//! clients (DESIGN §7 "Clients are bounded"), driven with raw FastCGI
//! records in front of a real php-fpm.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fcgi::*;
use common::{TqsupProject, free_addr, json, ms, proc_status_kib};

fn pairs(ps: &[(&str, &[u8])]) -> Vec<u8> {
    ps.iter().flat_map(|(n, v)| pair(n, v)).collect()
}

/// Request id 1 of `c`'s answer, read with a deadline: (response, time).
fn timed_response(c: &mut Conn, id: u16) -> (Response, Duration) {
    let t = Instant::now();
    let r = c.response(id);
    (r, t.elapsed())
}

#[test]
fn get_values_answers_each_known_name_once_in_one_record() {
    let s = Stack::start(StackOpts::default());
    let mut c = s.conn();
    // A huge unknown name next to known ones.
    let huge = "N".repeat(60_000);
    let mut q = pair(&huge, b"");
    q.extend(pair("FCGI_MAX_CONNS", b""));
    q.extend(pair("FCGI_MPXS_CONNS", b""));
    let mut wire = record(GET_VALUES, 0, &q, 0);
    // A known name 3800 times: echoing each would need 68 KB, more than a
    // record can say (the old `as u16` length desynchronised the client).
    let q: Vec<u8> = (0..3800).flat_map(|_| pair("FCGI_MAX_REQS", b"")).collect();
    assert!(q.len() <= 65535);
    wire.extend(record(GET_VALUES, 0, &q, 0));
    c.send(&wire);
    let mut got = Vec::new();
    for _ in 0..2 {
        let r = c.read_record().unwrap();
        assert_eq!((r.kind, r.id), (GET_VALUES_RESULT, 0));
        got.push(String::from_utf8_lossy(&r.content).into_owned());
    }
    assert_eq!(
        got[0],
        "\u{e}\u{4}FCGI_MAX_CONNS1024\u{f}\u{1}FCGI_MPXS_CONNS1"
    );
    // The real per-connection cap, not max_connections.
    assert_eq!(got[1], "\u{d}\u{3}FCGI_MAX_REQS128");
    // Still in sync.
    c.send(&request(1, true, &s.get("/index.php", "n=sync"), b""));
    assert_eq!(c.response(1).body(), "hello sync\n");
}

#[test]
fn params_and_stdin_timeouts() {
    let s = Stack::start(StackOpts {
        forward: json!({ "params_timeout_ms": 800, "stdin_timeout_ms": 800 }),
        ..StackOpts::default()
    });
    let docroot = s.docroot();

    // A connection that says nothing is closed after params_timeout.
    let mut silent = s.conn();
    silent.set_timeout(Duration::from_secs(5));
    let t = Instant::now();
    assert!(silent.closed(), "a silent connection is closed");
    assert!(
        (ms(700)..ms(3000)).contains(&t.elapsed()),
        "{:?}",
        t.elapsed()
    );

    let mut c = s.conn();
    // PARAMS that never end: a local 408, the connection stays usable.
    let p = s.get("/index.php", "");
    let mut wire = begin(1, 1, true);
    wire.extend(record(PARAMS, 1, &p[..10], 0));
    c.send(&wire);
    let (r, took) = timed_response(&mut c, 1);
    assert_eq!(r.status(), 408, "{r:?}");
    assert!(took >= ms(600) && took < ms(3000), "{took:?}");
    // A bodyless request whose empty STDIN never comes.
    let mut wire = begin(2, 1, true);
    wire.extend(stream(PARAMS, 2, &p));
    c.send(&wire);
    assert_eq!(timed_response(&mut c, 2).0.status(), 408);
    // A body that stops coming: php-fpm's connection is closed, 408.
    let p = params(
        &docroot,
        "/echo.php",
        "",
        "POST",
        &[("CONTENT_LENGTH", "10")],
    );
    let mut wire = begin(3, 1, true);
    wire.extend(stream(PARAMS, 3, &p));
    wire.extend(record(STDIN, 3, b"abc", 0));
    c.send(&wire);
    let (r, took) = timed_response(&mut c, 3);
    assert_eq!(r.status(), 408, "{r:?}");
    assert!(took >= ms(600) && took < ms(5000), "{took:?}");
    // The same connection still serves, and idling between requests is
    // not a timeout (keep-alive).
    c.send(&request(4, true, &s.get("/index.php", "n=4"), b""));
    assert_eq!(c.response(4).body(), "hello 4\n");
    std::thread::sleep(ms(1500));
    c.send(&request(5, true, &s.get("/index.php", "n=5"), b""));
    assert_eq!(c.response(5).body(), "hello 5\n");
}

/// Distinct bytes for a body, and what PHP's echo.php says about it.
fn upload(len: usize) -> (Vec<u8>, String) {
    let body = common::varied_bytes(len);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("body");
    std::fs::write(&f, &body).unwrap();
    let sha = common::sha256_file(&f);
    (body, format!("{len} {sha} "))
}

/// A POST to echo.php with its body in records of `chunk` bytes.
fn post(docroot: &Path, id: u16, body: &[u8], chunk: usize) -> Vec<u8> {
    let len = body.len().to_string();
    let p = params(
        docroot,
        "/echo.php",
        "",
        "POST",
        &[("CONTENT_LENGTH", &len)],
    );
    let mut wire = begin(id, 1, true);
    wire.extend(stream(PARAMS, id, &p));
    for c in body.chunks(chunk) {
        wire.extend(record(STDIN, id, c, 0));
    }
    wire.extend(record(STDIN, id, &[], 0));
    wire
}

#[test]
fn abort_is_answered_at_once_behind_queued_uploads() {
    let s = Stack::start(StackOpts {
        children: 1,
        ..StackOpts::default()
    });
    let docroot = s.docroot();
    // The only child is busy.
    let mut busy = s.conn();
    busy.send(&request(1, true, &s.get("/sleep.php", "ms=2500"), b""));
    std::thread::sleep(ms(300));
    let (body, said) = upload(100_000);

    // A queued upload (more records than its task's channel holds), then
    // ABORT for it.
    let mut a = s.conn();
    a.send(&post(&docroot, 1, &body, 10_000));
    std::thread::sleep(ms(200));
    let t = Instant::now();
    a.send(&record(ABORT, 1, &[], 0));
    let r = a.response(1);
    let took = t.elapsed();
    assert!(took < ms(100), "ABORT behind a queued upload took {took:?}");
    assert_eq!((r.end, r.stdout.len()), (Some((0, 0)), 0));

    // Two multiplexed requests, both queued: the first an upload, the
    // second bodyless; ABORT for the second is answered at once, and the
    // first is served in full when the child is free.
    let mut m = s.conn();
    let mut wire = post(&docroot, 1, &body, 10_000);
    wire.extend(request(2, true, &s.get("/index.php", "n=2"), b""));
    m.send(&wire);
    std::thread::sleep(ms(200));
    let t = Instant::now();
    m.send(&record(ABORT, 2, &[], 0));
    let r = m.response(2);
    let took = t.elapsed();
    assert!(
        took < ms(100),
        "ABORT of a multiplexed request took {took:?}"
    );
    assert_eq!(r.end, Some((0, 0)));
    assert_eq!(busy.response(1).body(), "slept\n");
    let r = m.response(1);
    assert!(r.body().starts_with(&said), "{said} / {}", r.body());
}

#[test]
fn a_half_closed_client_still_gets_its_responses() {
    let s = Stack::start(StackOpts::default());
    let docroot = s.docroot();
    let (body, said) = upload(200_000);
    let mut c = s.conn();
    let mut wire = request(1, true, &s.get("/sleep.php", "ms=300"), b"");
    wire.extend(request(2, true, &s.get("/index.php", "n=2"), b""));
    wire.extend(post(&docroot, 3, &body, 32_768));
    c.send(&wire);
    c.shutdown_write();
    let rs = c.responses(&[1, 2, 3]);
    assert_eq!(rs[0].body(), "slept\n");
    assert_eq!(rs[1].body(), "hello 2\n");
    assert!(rs[2].body().starts_with(&said), "{:?}", rs[2]);
    assert!(c.closed(), "closed once every response is out");

    // Without KEEP_CONN, as cgi-fcgi does.
    let mut c = s.conn();
    c.send(&request(1, false, &s.get("/index.php", "n=once"), b""));
    c.shutdown_write();
    assert_eq!(c.response(1).body(), "hello once\n");
    assert!(c.closed());
}

/// 200 clients each send BEGIN and 900 KiB of PARAMS (15 records of 60 KB,
/// one round every 20 ms) and never end them. tqsup buffers at most
/// `params_buffer_total_bytes` (64 MiB) of them, answers the rest 503 as
/// they go over, keeps serving ordinary requests, answers the stalled ones
/// 408 at `params_timeout_ms` and closes them; its peak RSS stays within the
/// bound README states.
#[test]
fn stalled_params_stay_within_the_budgets() {
    const CLIENTS: usize = 200;
    let s = Stack::start(StackOpts {
        forward: json!({ "params_timeout_ms": 4000 }),
        ..StackOpts::default()
    });
    let pid = s.tqsup.pid();
    let mut warm = s.conn();
    warm.send(&request(1, true, &s.get("/index.php", "n=warm"), b""));
    assert_eq!(warm.response(1).body(), "hello warm\n");
    let base = proc_status_kib(pid, "VmRSS");

    let value = vec![b'h'; 60_000];
    let records: Vec<Vec<u8>> = (0..15)
        .map(|i| record(PARAMS, 1, &pair(&format!("HTTP_X_H{i}"), &value), 0))
        .collect();
    let started = Instant::now();
    let mut conns: Vec<Conn> = (0..CLIENTS)
        .map(|_| {
            let mut c = s.conn();
            c.send(&begin(1, 1, false));
            c
        })
        .collect();
    let mut open = vec![true; CLIENTS];
    for r in &records {
        for (c, open) in conns.iter_mut().zip(&mut open) {
            // A client answered 503 is closed: its writes fail.
            *open = *open && c.try_send(r).is_ok();
        }
        std::thread::sleep(ms(20));
    }
    let sent = started.elapsed();
    assert!(sent < ms(3500), "sending took {sent:?}, past the timeout");

    // Meanwhile an ordinary request is served.
    let mut other = s.conn();
    other.send(&request(1, false, &s.get("/index.php", "n=other"), b""));
    let r = other.response(1);
    assert_eq!(r.body(), "hello other\n", "{r:?}");
    let peak = proc_status_kib(pid, "VmHWM");

    // Every stalled client is answered (503 at once, or 408 at the
    // timeout) and closed.
    let (mut s503, mut s408) = (0, 0);
    for c in &mut conns {
        c.set_timeout(Duration::from_secs(10));
        match c.response(1).status() {
            503 => s503 += 1,
            408 => s408 += 1,
            other => panic!("status {other}"),
        }
        assert!(c.closed());
    }
    let closed = started.elapsed();
    assert!(closed < Duration::from_secs(9), "closed after {closed:?}");
    // 7/8 of 64 MiB holds about 57 of them; the reserve is for ordinary ones.
    assert!((40..=70).contains(&s408), "408: {s408}, 503: {s503}");
    assert_eq!(s408 + s503, CLIENTS);
    let bound = base + 64 * 1024 + CLIENTS as u64 * 192 + 16 * 1024;
    eprintln!("RSS: base {base} KiB, peak {peak} KiB, bound {bound} KiB; 408: {s408}, 503: {s503}");
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB over {bound} KiB (base {base} KiB)"
    );
}

/// Params for `script_name` under `docroot` with `extra`.
fn params_for(docroot: &Path, script_name: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let filename = format!("{}{script_name}", docroot.display());
    let mut v = pairs(&[
        ("SCRIPT_FILENAME", filename.as_bytes()),
        ("SCRIPT_NAME", script_name.as_bytes()),
        ("REQUEST_METHOD", b"GET"),
        ("QUERY_STRING", b""),
        ("GATEWAY_INTERFACE", b"CGI/1.1"),
        ("SERVER_PROTOCOL", b"HTTP/1.1"),
    ]);
    v.extend(pairs(extra));
    v
}

#[test]
fn the_internal_token_is_refused_in_any_param() {
    // tqsup supervising php-fpm, so php-fpm has the internal paths.
    let mut p = TqsupProject::new();
    p.merge(json!({
        "php_fpm": {
            "document_root": "public",
            "listen": p.join("fpm.sock"),
            "pool": { "type": "static", "max_children": 2 },
        },
        "forward": { "listen": free_addr() },
        "log": { "level": "info" },
    }));
    p.write(
        "public/index.php",
        "<?php echo 'hello ', $_GET['n'] ?? '', \"\\n\";\n",
    );
    let t = p.start();
    let docroot = p.join("public");
    let params = |script: &str, extra: &[(&str, &[u8])]| params_for(&docroot, script, extra);
    let status = p.rendered_setting("pm.status_path");
    let ping = status.replace("/status", "/ping");
    let prefix = status.trim_end_matches("/status").to_string();
    assert!(prefix.starts_with("/.tqsup-"), "{prefix}");
    // php-fpm itself does answer it, straight from its socket.
    let mut direct = Conn::connect(&p.join("fpm.sock").display().to_string());
    direct.send(&request(1, false, &params(&status, &[]), b""));
    assert!(direct.response(1).body().contains("pool:"));

    let translated = format!("{}{status}", docroot.display());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("SCRIPT_NAME status", params(&status, &[])),
        ("SCRIPT_NAME ping", params(&ping, &[])),
        (
            "SCRIPT_NAME with //",
            params(&format!("/{}", status.replacen("/", "//", 2)), &[]),
        ),
        (
            "REDIRECT_URL + PATH_TRANSLATED",
            params(
                "/index.php",
                &[
                    ("REDIRECT_URL", status.as_bytes()),
                    ("PATH_TRANSLATED", translated.as_bytes()),
                ],
            ),
        ),
        (
            "PATH_INFO",
            params("/index.php", &[("PATH_INFO", status.as_bytes())]),
        ),
        (
            "REQUEST_URI",
            params("/index.php", &[("REQUEST_URI", ping.as_bytes())]),
        ),
        (
            "another param's value",
            params(
                "/index.php",
                &[("HTTP_X_ANY", format!("a{prefix}b").as_bytes())],
            ),
        ),
        (
            "another param's name",
            params("/index.php", &[(&format!("HTTP{prefix}"), b"x")]),
        ),
    ];
    let mut c = t.conn();
    for (i, (name, p)) in cases.iter().enumerate() {
        let id = i as u16 + 1;
        c.send(&request(id, true, p, b""));
        let r = c.response(id);
        assert_eq!(r.status(), 404, "{name}: {r:?}");
        let body = r.body();
        assert!(
            !body.contains("pool:") && !body.contains("pong") && !body.contains("hello"),
            "{name}: {body}"
        );
    }
    // Ordinary requests still pass.
    c.send(&request(99, true, &params("/index.php", &[]), b""));
    assert_eq!(c.response(99).body(), "hello \n");
}

#[test]
fn a_full_listener_closes_the_connection_idle_longest_never_a_busy_one() {
    let s = Stack::start(StackOpts {
        forward: json!({ "max_connections": 2 }),
        ..StackOpts::default()
    });
    // Two kept-alive connections, each served once, then idle (`a` first).
    let mut a = s.conn();
    a.send(&request(1, true, &s.get("/index.php", "n=a"), b""));
    assert_eq!(a.response(1).body(), "hello a\n");
    std::thread::sleep(ms(50));
    let mut b = s.conn();
    b.send(&request(1, true, &s.get("/index.php", "n=b"), b""));
    assert_eq!(b.response(1).body(), "hello b\n");
    // A third client is served at once: the connection idle longest made
    // room (today's web servers keep such connections forever).
    let mut c = s.conn();
    c.set_timeout(Duration::from_secs(5));
    let t = Instant::now();
    c.send(&request(1, true, &s.get("/index.php", "n=c"), b""));
    assert_eq!(c.response(1).body(), "hello c\n", "{}", s.tqsup.log_text());
    assert!(t.elapsed() < ms(1000), "{:?}", t.elapsed());
    a.set_timeout(Duration::from_secs(5));
    assert!(a.closed(), "the longest idle connection was closed");
    // `b` is still served.
    b.send(&request(2, true, &s.get("/index.php", "n=b2"), b""));
    assert_eq!(b.response(2).body(), "hello b2\n");

    // Both slots busy (`b` and `c` each running a 1.5 s script): a new
    // client waits for one of them to end instead of cutting it.
    b.send(&request(3, true, &s.get("/sleep.php", "ms=1500"), b""));
    c.send(&request(2, true, &s.get("/sleep.php", "ms=1500"), b""));
    std::thread::sleep(ms(200));
    let mut d = s.conn();
    d.set_timeout(Duration::from_secs(10));
    let t = Instant::now();
    d.send(&request(1, true, &s.get("/index.php", "n=d"), b""));
    // The busy ones finish: then the one idle longest of them makes room.
    assert_eq!(b.response(3).body(), "slept\n");
    assert_eq!(c.response(2).body(), "slept\n");
    assert_eq!(d.response(1).body(), "hello d\n", "{}", s.tqsup.log_text());
    assert!(
        t.elapsed() >= ms(1000),
        "d waited for a slot: {:?}",
        t.elapsed()
    );
}

#[test]
fn a_record_left_half_sent_between_requests_is_bounded_by_params_timeout() {
    let s = Stack::start(StackOpts {
        forward: json!({ "params_timeout_ms": 800 }),
        ..StackOpts::default()
    });
    let mut c = s.conn();
    c.set_timeout(Duration::from_secs(5));
    c.send(&request(1, true, &s.get("/index.php", "n=1"), b""));
    assert_eq!(c.response(1).body(), "hello 1\n");
    // Idle between requests is fine: still served after twice the timeout.
    std::thread::sleep(ms(1700));
    c.send(&request(2, true, &s.get("/index.php", "n=2"), b""));
    assert_eq!(c.response(2).body(), "hello 2\n");
    // Three bytes of a header, then nothing: closed after params_timeout.
    c.send(&begin(3, 1, true)[..3]);
    let t = Instant::now();
    assert!(c.closed(), "a half-sent record is not held forever");
    assert!(
        (ms(600)..ms(3000)).contains(&t.elapsed()),
        "{:?}",
        t.elapsed()
    );
}
