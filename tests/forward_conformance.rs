//! The forward listener driven with raw FastCGI records (DESIGN §7), in
//! front of a real php-fpm.

mod common;

use std::time::{Duration, Instant};

use common::fcgi::*;

#[test]
fn multiplexed_ids_keep_conn_and_management_records() {
    let s = Stack::start(StackOpts::default());
    let mut c = s.conn();
    // Three requests interleaved record by record on one connection.
    let reqs: Vec<Vec<u8>> = [1u16, 2, 300]
        .iter()
        .map(|&id| request(id, true, &s.get("/index.php", &format!("n={id}")), b""))
        .collect();
    let mut wire = Vec::new();
    let mut off = [0usize; 3];
    // Interleave at record boundaries: BEGIN of each, then PARAMS, then STDIN.
    for (i, r) in reqs.iter().enumerate() {
        wire.extend_from_slice(&r[..16]);
        off[i] = 16;
    }
    for (i, r) in reqs.iter().enumerate() {
        wire.extend_from_slice(&r[off[i]..]);
    }
    c.send(&wire);
    let rs = c.responses(&[1, 2, 300]);
    for (r, id) in rs.iter().zip([1, 2, 300]) {
        assert_eq!(r.body(), format!("hello {id}\n"), "{r:?}");
        assert_eq!(r.end, Some((0, 0)));
    }
    // KEEP_CONN: the same connection serves another request.
    c.send(&request(1, true, &s.get("/index.php", "n=again"), b""));
    assert_eq!(c.response(1).body(), "hello again\n");

    // GET_VALUES: known names answered, unknown left out.
    let mut q = pair("FCGI_MAX_CONNS", b"");
    q.extend(pair("FCGI_MPXS_CONNS", b""));
    q.extend(pair("FCGI_NOPE", b""));
    q.extend(pair("FCGI_MAX_REQS", b""));
    c.send(&record(GET_VALUES, 0, &q, 0));
    let r = c.read_record().unwrap();
    assert_eq!((r.kind, r.id), (GET_VALUES_RESULT, 0));
    let text = String::from_utf8_lossy(&r.content).to_string();
    assert!(text.contains("FCGI_MPXS_CONNS1"), "{text:?}");
    assert!(text.contains("FCGI_MAX_CONNS1024"), "{text:?}");
    assert!(text.contains("FCGI_MAX_REQS"), "{text:?}");
    assert!(!text.contains("NOPE"), "{text:?}");

    // An unknown management record type.
    c.send(&record(42, 0, b"whatever", 0));
    let r = c.read_record().unwrap();
    assert_eq!((r.kind, r.id, r.content[0]), (UNKNOWN_TYPE, 0, 42));

    // An unknown role (AUTHORIZER).
    c.send(&begin(5, 2, true));
    let r = c.read_record().unwrap();
    assert_eq!(
        (r.kind, r.id, r.content[4]),
        (END, 5, 3),
        "FCGI_UNKNOWN_ROLE"
    );

    // Still usable; then without KEEP_CONN the connection is closed after it.
    c.send(&request(7, false, &s.get("/index.php", "n=last"), b""));
    assert_eq!(c.response(7).body(), "hello last\n");
    assert!(c.closed(), "closed after END_REQUEST without KEEP_CONN");
}

#[test]
fn abort_during_a_long_script_answers_promptly_and_frees_php_fpm() {
    let s = Stack::start(StackOpts {
        children: 1,
        ..StackOpts::default()
    });
    let mut c = s.conn();
    c.send(&request(9, true, &s.get("/sleep.php", "ms=4000"), b""));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    c.send(&record(ABORT, 9, &[], 0));
    let r = c.response(9);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "prompt: {:?}",
        t.elapsed()
    );
    assert_eq!(r.end, Some((0, 0)));
    assert!(r.stdout.is_empty());
    // Its upstream connection was closed, not reused: the next request goes
    // on a new connection (waiting for the only child to finish its sleep).
    c.send(&request(10, true, &s.get("/index.php", "n=after"), b""));
    assert_eq!(c.response(10).body(), "hello after\n");
}

#[test]
fn params_framing_and_limits() {
    let s = Stack::start(StackOpts::default());
    let docroot = s.docroot();
    let mut c = s.conn();

    // Params split across records, mid-pair (even mid-length).
    let p = params(
        &docroot,
        "/server.php",
        "",
        "GET",
        &[("HTTP_X_SPLIT", "split-value")],
    );
    let mut wire = begin(1, 1, true);
    for chunk in p.chunks(7) {
        wire.extend(record(PARAMS, 1, chunk, 3));
    }
    wire.extend(record(PARAMS, 1, &[], 0));
    wire.extend(record(STDIN, 1, &[], 0));
    c.send(&wire);
    assert_eq!(c.response(1).body(), "11 split-value\n");

    // One 65535-byte PARAMS record (with padding) holding one pair.
    let mut base = params(&docroot, "/server.php", "", "GET", &[]);
    let name = "HTTP_X_PAD";
    let value = vec![b'p'; 65535 - 1 - 4 - name.len()];
    let big = pair(name, &value);
    assert_eq!(big.len(), 65535);
    let mut wire = begin(2, 1, true);
    wire.extend(record(PARAMS, 2, &base, 5));
    wire.extend(record(PARAMS, 2, &big, 7));
    wire.extend(record(PARAMS, 2, &[], 0));
    wire.extend(record(STDIN, 2, &[], 0));
    c.send(&wire);
    assert_eq!(c.response(2).body(), format!("{} \n", value.len()));

    // 300 KiB of params in 30 pairs of 10 KiB.
    for i in 0..30 {
        base.extend(pair(&format!("HTTP_X_H{i}"), &vec![b'h'; 10 * 1024]));
    }
    c.send(&request(3, true, &base, b""));
    let r = c.response(3);
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.body(), format!("{} \n", 30 * 10 * 1024));

    // A single pair php-fpm cannot take.
    let mut p = s.get("/server.php", "");
    p.extend(pair("HTTP_X_HUGE", &vec![b'x'; 70_000]));
    c.send(&request(4, true, &p, b""));
    assert_eq!(c.response(4).status(), 431);

    // More than the 1 MiB cap in total.
    let mut p = s.get("/server.php", "");
    for i in 0..20 {
        p.extend(pair(&format!("HTTP_X_M{i}"), &vec![b'm'; 60_000]));
    }
    c.send(&request(5, true, &p, b""));
    assert_eq!(c.response(5).status(), 431);

    // The connection is still good.
    c.send(&request(6, true, &s.get("/index.php", "n=ok"), b""));
    assert_eq!(c.response(6).body(), "hello ok\n");
}

#[test]
fn content_length_rules() {
    let s = Stack::start(StackOpts::default());
    let docroot = s.docroot();
    let mut c = s.conn();
    // A body with no CONTENT_LENGTH.
    c.send(&request(
        1,
        true,
        &params(&docroot, "/echo.php", "", "POST", &[]),
        b"abc",
    ));
    assert_eq!(c.response(1).status(), 411);
    // Shorter than CONTENT_LENGTH.
    let p = params(
        &docroot,
        "/echo.php",
        "",
        "POST",
        &[("CONTENT_LENGTH", "10")],
    );
    c.send(&request(2, true, &p, b"abc"));
    assert_eq!(c.response(2).status(), 400);
    // Longer than CONTENT_LENGTH.
    let p = params(
        &docroot,
        "/echo.php",
        "",
        "POST",
        &[("CONTENT_LENGTH", "2")],
    );
    c.send(&request(3, true, &p, b"abc"));
    assert_eq!(c.response(3).status(), 400);
    // Empty and 0 CONTENT_LENGTH on a bodyless request are fine, as is a match.
    for (id, cl) in [(4u16, ""), (5, "0")] {
        let p = params(
            &docroot,
            "/index.php",
            "n=x",
            "GET",
            &[("CONTENT_LENGTH", cl)],
        );
        c.send(&request(id, true, &p, b""));
        assert_eq!(c.response(id).body(), "hello x\n");
    }
    let p = params(
        &docroot,
        "/echo.php",
        "",
        "POST",
        &[("CONTENT_LENGTH", "3")],
    );
    c.send(&request(6, true, &p, b"abc"));
    let body = c.response(6).body();
    assert!(body.starts_with("3 ba7816bf"), "{body}");
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let s = Stack::start(StackOpts::default());
    let docroot = s.docroot();
    let mut bystander = s.conn();
    bystander.send(&request(1, true, &s.get("/index.php", "n=1"), b""));
    assert_eq!(bystander.response(1).body(), "hello 1\n");

    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "bad version",
            {
                let mut r = begin(1, 1, true);
                r[0] = 2;
                r
            },
            false,
        ),
        ("truncated header then EOF", vec![1, 1, 0], true),
        (
            "bad name-value length",
            {
                let mut r = begin(1, 1, true);
                r.extend(record(PARAMS, 1, &[4, 0x80, 0, 1, 0, b'N', b'A'], 0));
                r.extend(record(PARAMS, 1, &[], 0));
                r
            },
            false,
        ),
        ("STDIN on id 0", record(STDIN, 0, b"x", 0), false),
        (
            "BEGIN body of 9 bytes",
            record(BEGIN, 1, &[0, 1, 1, 0, 0, 0, 0, 0, 0], 0),
            false,
        ),
    ];
    for (name, bytes, eof) in cases {
        let mut c = s.conn();
        c.set_timeout(Duration::from_secs(5));
        c.send(&bytes);
        if eof {
            c.shutdown_write();
        }
        assert!(
            c.closed(),
            "{name}: connection should be closed without a response"
        );
    }
    let log = s.tqsup.log_text();
    assert!(
        log.contains("bad input") && log.contains("mid-record"),
        "{log}"
    );
    // Others unaffected; a new connection is served.
    bystander.send(&request(2, true, &s.get("/index.php", "n=2"), b""));
    assert_eq!(bystander.response(2).body(), "hello 2\n");
    let mut c = s.conn();
    c.send(&request(
        1,
        false,
        &params(&docroot, "/index.php", "n=new", "GET", &[]),
        b"",
    ));
    assert_eq!(c.response(1).body(), "hello new\n");
}

#[test]
fn unix_listener_and_cgi_fcgi() {
    let s = Stack::start(StackOpts {
        unix_listener: true,
        ..StackOpts::default()
    });
    assert_eq!(
        common::mode_of(std::path::Path::new(&s.addr)) & 0o777,
        0o660
    );
    let out = common::cgi_fcgi(
        &s.addr,
        &s.docroot().join("index.php"),
        "/index.php",
        "n=cgi",
    );
    assert_ok!(out);
    assert!(out.out().contains("hello cgi"), "{}", out.text());
}

#[test]
fn sigterm_stops_accepting_and_drains_requests_in_flight() {
    let mut s = Stack::start(StackOpts::default());
    let mut c = s.conn();
    c.send(&request(1, true, &s.get("/sleep.php", "ms=1000"), b""));
    std::thread::sleep(Duration::from_millis(300));
    s.tqsup.signal(nix::sys::signal::Signal::SIGTERM);
    let r = c.response(1);
    assert_eq!(r.body(), "slept\n", "{r:?}");
    assert!(
        c.closed(),
        "the kept-alive connection is closed once drained"
    );
    let status = s.tqsup.wait(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(s.tqsup.log_text().contains("forward listener drained"));
}
