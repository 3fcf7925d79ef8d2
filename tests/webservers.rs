//! tqsup behind every common web server (issue 7): nginx, Apache 2.4
//! (mod_proxy_fcgi), Caddy 2 (php_fastcgi) and HAProxy 2.6 (fcgi-app), each
//! started for real from its snippet in `config/webservers/` (verbatim but for
//! the addresses), in front of `tqsup run` supervising real php-fpm.
//!
//! Every server gets the same six requests, through curl: a GET, a 5 MiB POST
//! echoed back by hash, a 20 MiB streamed response, a 302, a 404 with a body,
//! and PHP writing to stderr (which must not become a 502).

mod common;
#[path = "webservers/servers.rs"]
mod servers;
#[path = "webservers/stack.rs"]
mod stack;

use common::http::{Reply, curl};
use common::{Guard, sha256_file};
use stack::{BIG_MIB, POST_MIB, WebStack, big_block};

/// Runs the six checks against `server` (already started in front of
/// `tq`). A failure names the check and the reply; the server's and
/// tqsup's logs follow as their guards drop.
fn exercise(name: &str, tq: &WebStack, server: &Guard) {
    let base = format!("http://{}", tq.site);
    let scratch = tq.project.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let ctx = |what: &str, r: &Reply| format!("{name}: {what}: {r:?}");

    // A GET, by script path and through the front controller / index.
    let r = curl(&scratch, &format!("{base}/index.php?n={name}"), &[]);
    assert_eq!(r.status, 200, "{}", ctx("GET", &r));
    assert_eq!(
        r.text(),
        format!("hello {name} GET\n"),
        "{}",
        ctx("GET", &r)
    );
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{}",
        ctx("GET", &r)
    );
    assert_eq!(r.header("x-served-by"), Some("php"), "{}", ctx("GET", &r));
    let r = curl(&scratch, &format!("{base}/"), &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello front GET\n"),
        "{}",
        ctx("GET /", &r)
    );

    // A 5 MiB POST; PHP answers with its length and sha256.
    let data = common::varied_bytes(POST_MIB * 1024 * 1024);
    let upload = scratch.join("upload.bin");
    std::fs::write(&upload, &data).unwrap();
    let want = format!("{} {}\n", data.len(), sha256_file(&upload));
    let r = curl(
        &scratch,
        &format!("{base}/echo.php"),
        &[
            "--data-binary",
            &format!("@{}", upload.display()),
            "-H",
            "Content-Type: application/octet-stream",
        ],
    );
    assert_eq!(r.status, 200, "{}", ctx("POST", &r));
    assert_eq!(r.text(), want, "{}", ctx("POST", &r));

    // A 20 MiB streamed response: exact length, exact bytes, and the hash PHP
    // computed before sending.
    let r = curl(&scratch, &format!("{base}/big.php"), &[]);
    let expected: Vec<u8> = (0..BIG_MIB * 1024).flat_map(big_block).collect();
    let short = Reply {
        status: r.status,
        headers: r.headers.clone(),
        body: r.body[..r.body.len().min(64)].to_vec(),
    };
    assert_eq!(r.status, 200, "{}", ctx("big", &short));
    assert_eq!(r.body.len(), BIG_MIB << 20, "{}", ctx("big", &short));
    let got = scratch.join("big.bin");
    std::fs::write(&got, &r.body).unwrap();
    let got_hash = sha256_file(&got);
    assert_eq!(
        r.header("x-body-sha256"),
        Some(got_hash.as_str()),
        "{}",
        ctx("big", &short)
    );
    assert!(r.body == expected, "{}", ctx("big: bytes differ", &short));

    // A PHP redirect.
    let r = curl(&scratch, &format!("{base}/redirect.php"), &[]);
    assert_eq!(r.status, 302, "{}", ctx("redirect", &r));
    assert_eq!(
        r.header("location"),
        Some("/landing.php?from=redirect"),
        "{}",
        ctx("redirect", &r)
    );
    assert_eq!(r.text(), "moved\n", "{}", ctx("redirect", &r));

    // A PHP 404 keeps its body (no web-server error page).
    let r = curl(&scratch, &format!("{base}/missing.php?p=x"), &[]);
    assert_eq!(r.status, 404, "{}", ctx("404", &r));
    assert_eq!(r.text(), "no such page: x\n", "{}", ctx("404", &r));
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{}",
        ctx("404", &r)
    );

    // PHP's stderr (FastCGI STDERR records before the headers and inside the
    // body) is not a failure.
    for _ in 0..3 {
        let r = curl(&scratch, &format!("{base}/stderr.php"), &[]);
        assert_eq!(r.status, 200, "{}", ctx("stderr", &r));
        assert_eq!(r.text(), "part one\npart two\n", "{}", ctx("stderr", &r));
    }

    // tqsup is still the one serving, and still healthy.
    let r = curl(&scratch, &format!("{base}/index.php?n=again"), &[]);
    assert_eq!(r.text(), "hello again GET\n", "{}", ctx("GET after", &r));
    assert!(server.alive() && tq.tqsup.alive(), "{name} or tqsup exited");
}

#[test]
fn nginx_through_tqsup() {
    let tq = WebStack::start();
    let server = servers::nginx(&tq);
    exercise("nginx", &tq, &server);
    // PHP's stderr reaches nginx's error log (nginx logs FastCGI STDERR).
    let log = tq.project.join("nginx/logs/error.log");
    let seen = common::eventually(std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("tqsup-stderr-middle"))
    });
    assert!(seen.is_some(), "nginx error log lacks PHP's stderr");
}

#[test]
fn apache_through_tqsup() {
    let tq = WebStack::start();
    let server = servers::apache(&tq);
    exercise("apache", &tq, &server);
}

#[test]
fn caddy_through_tqsup() {
    let tq = WebStack::start();
    let server = servers::caddy(&tq);
    exercise("caddy", &tq, &server);
}

#[test]
fn haproxy_through_tqsup() {
    let tq = WebStack::start();
    let server = servers::haproxy(&tq);
    exercise("haproxy", &tq, &server);
}
