//! Observability against real php-fpm (DESIGN §9): `tqsup run` supervising
//! php-fpm with the forwarder and the admin endpoint on. Requests go through
//! the forwarder with the raw FastCGI client; `/metrics` is parsed strictly;
//! php-fpm's own status page is read straight from its socket to compare.

mod common;
#[path = "observability/exposition.rs"]
mod exposition;

use std::path::Path;
use std::time::Duration;

use common::{
    Project, Tqsup, TqsupProject, Value, eventually, fcgi, free_addr, json, secs, unique_name,
};
use exposition::{Metrics, check_conventions, parse_metrics};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// tqsup supervising php-fpm, forwarding on a TCP port, admin on another,
/// logging JSON; `patch` (e.g. `forward.health`) merged in.
fn start(patch: Value) -> (TqsupProject, Tqsup) {
    start_in(Project::new(), patch, None)
}

/// As [`start`], in `project`, with systemd's `NOTIFY_SOCKET`; waits until
/// `/readyz` says ready.
fn start_in(project: Project, patch: Value, notify_socket: Option<&Path>) -> (TqsupProject, Tqsup) {
    let mut p = TqsupProject::in_project(project);
    p.write(
        "public/index.php",
        "<?php echo 'hello ', $_GET['n'] ?? '', \"\\n\";\n",
    );
    p.write(
        "public/missing.php",
        "<?php http_response_code(404); echo \"nope\\n\";\n",
    );
    p.merge(json!({
        "php_fpm": {
            "document_root": "public",
            "listen": p.join("fpm.sock"),
            "pool": { "name": unique_name("obs"), "type": "static", "max_children": 3 },
        },
        "forward": { "listen": free_addr() },
        "admin": { "listen": free_addr() },
        "supervisor": { "stop_timeout_ms": 3000, "ready_timeout_ms": 5000 },
        "log": { "format": "json", "level": "info" },
    }))
    .merge(patch);
    let mut cmd = p.command(&p.run_args(&[]));
    if let Some(n) = notify_socket {
        cmd.env("NOTIFY_SOCKET", n);
    }
    let t = p.spawn_command(cmd);
    let ready = eventually(secs(20), || {
        let r = t.admin_get("/readyz")?;
        (r.status == 200).then_some(())
    });
    assert!(ready.is_some(), "never ready");
    (p, t)
}

/// GET on the admin endpoint: (status, content-type, body); None when it
/// did not answer.
fn try_http(t: &Tqsup, path: &str) -> Option<(u16, String, String)> {
    t.admin_get(path)
        .map(|r| (r.status, r.content_type(), r.text()))
}

fn http(t: &Tqsup, path: &str) -> (u16, String, String) {
    try_http(t, path).unwrap_or_else(|| panic!("GET {path} failed"))
}

fn metrics(t: &Tqsup) -> Metrics {
    let (status, _, body) = http(t, "/metrics");
    assert_eq!(status, 200);
    parse_metrics(&body).unwrap_or_else(|e| panic!("{e}\n---\n{body}"))
}

/// One request through the forwarder on its own connection: the status.
fn request(t: &Tqsup, script: &str, query: &str) -> u16 {
    let mut c = t.conn();
    let p = fcgi::params(&t.docroot(), script, query, "GET", &[]);
    c.send(&fcgi::request(1, false, &p, b""));
    c.response(1).status()
}

/// php-fpm's `pm.status_path?json`, straight from its status pool's socket
/// (`pm.status_listen`), as tqsup reads it: the status pool's own child is
/// not one of the pool's, so idle/active are the pool's.
fn php_fpm_status(p: &TqsupProject) -> serde_json::Value {
    let path = p.rendered_setting("pm.status_path");
    let mut c = fcgi::Conn::connect(&p.rendered_setting("pm.status_listen"));
    let mut params = Vec::new();
    for (n, v) in [
        ("SCRIPT_NAME", path.as_str()),
        ("SCRIPT_FILENAME", path.as_str()),
        ("REQUEST_URI", path.as_str()),
        ("REQUEST_METHOD", "GET"),
        ("QUERY_STRING", "json"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
    ] {
        params.extend(fcgi::pair(n, v.as_bytes()));
    }
    c.send(&fcgi::request(1, false, &params, b""));
    let body = c.response(1).body();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn php_fpm_master(t: &Tqsup) -> i32 {
    eventually(secs(10), || t.master()).expect("php-fpm's master")
}

const REQUESTS: &str = "tqsup_forward_requests_total";
const LATENCY_COUNT: &str = "tqsup_forward_request_duration_seconds_count";

#[test]
fn metrics_count_requests_and_mirror_php_fpm_and_logs_are_json() {
    let (p, mut t) = start(json!({
        "forward": { "health": { "interval_ms": 5000, "timeout_ms": 1000, "failure_threshold": 3 } },
    }));
    // The exposition: content type, strict parse, naming conventions.
    let (_, content_type, _) = http(&t, "/metrics");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let before = metrics(&t);
    check_conventions(&before);

    // N requests through the forwarder: 2xx, PHP's own 404, and one for
    // php-fpm's ping path (answered 404 by tqsup itself).
    let n = 12;
    let mut statuses = Vec::new();
    for i in 0..n - 2 {
        statuses.push(request(&t, "/index.php", &format!("n={i}")));
    }
    statuses.push(request(&t, "/missing.php", ""));
    let ping = p
        .rendered_setting("pm.status_path")
        .replace("/status", "/ping");
    statuses.push(request(&t, &ping, ""));
    assert_eq!(statuses.iter().filter(|&&x| x == 200).count(), n - 2);
    assert_eq!(statuses[n - 2..], [404, 404]);
    // A request is counted right after its response is written: poll.
    let after = eventually(secs(5), || {
        let m = metrics(&t);
        (m.sum(REQUESTS) - before.sum(REQUESTS) >= n as f64).then_some(m)
    })
    .expect("the request counter never caught up");
    assert_eq!(after.sum(REQUESTS) - before.sum(REQUESTS), n as f64);
    assert_eq!(
        after.get(LATENCY_COUNT) - before.get(LATENCY_COUNT),
        n as f64
    );
    let class = |m: &Metrics, c: &str| m.get(&format!("{REQUESTS}{{status=\"{c}\"}}"));
    assert_eq!(class(&after, "2xx") - class(&before, "2xx"), (n - 2) as f64);
    assert_eq!(class(&after, "4xx") - class(&before, "4xx"), 2.0);
    assert_eq!(
        after.get("tqsup_forward_errors_total{kind=\"internal_path\"}"),
        1.0
    );
    // Only forwarded requests waited for a php-fpm connection.
    let waits = "tqsup_forward_queue_wait_seconds_count";
    assert_eq!(after.get(waits) - before.get(waits), (n - 1) as f64);
    assert!(after.get("tqsup_downstream_connections_accepted_total") >= n as f64);
    assert!(after.get("tqsup_forward_received_bytes_total") > 0.0);
    assert!(after.get("tqsup_forward_sent_bytes_total") > 0.0);
    assert!(after.get("tqsup_upstream_connections_open") >= 1.0);
    assert_eq!(after.get("tqsup_forward_requests_in_flight"), 0.0);
    assert_eq!(after.get("tqsup_php_fpm_up"), 1.0);
    assert!(after.get("tqsup_php_fpm_start_time_seconds") > 1.7e9);
    check_conventions(&after);

    // php-fpm's pool gauges match its own status page. The scrape is cached
    // for a second, so compare a fresh scrape with a direct read right after
    // it.
    let matched = eventually(secs(10), || {
        std::thread::sleep(Duration::from_millis(1100));
        let m = metrics(&t);
        let st = php_fpm_status(&p);
        let direct = |k: &str| st[k].as_f64().unwrap();
        // Labelled by php-fpm's pool name, as php-fpm exporters do.
        let pool = st["pool"].as_str().unwrap();
        let ours = |name: &str| m.get(&format!("{name}{{pool=\"{pool}\"}}"));
        assert_eq!(ours("phpfpm_up"), 1.0);
        assert_eq!(ours("phpfpm_scrape_failures"), 0.0);
        assert_eq!(ours("phpfpm_total_processes"), 3.0);
        assert_eq!(direct("total processes"), 3.0, "{st}");
        assert!(ours("phpfpm_accepted_connections") <= direct("accepted conn"));
        assert!(ours("phpfpm_accepted_connections") >= n as f64 - 1.0);
        assert!(ours("phpfpm_start_since") <= direct("start since"));
        for (name, theirs) in [
            ("phpfpm_max_children_reached", "max children reached"),
            ("phpfpm_slow_requests", "slow requests"),
            ("phpfpm_listen_queue", "listen queue"),
            ("phpfpm_max_listen_queue", "max listen queue"),
            ("phpfpm_listen_queue_length", "listen queue len"),
        ] {
            assert_eq!(ours(name), direct(theirs), "{name} vs {st}");
        }
        let same = [
            ("phpfpm_idle_processes", "idle processes"),
            ("phpfpm_active_processes", "active processes"),
            ("phpfpm_max_active_processes", "max active processes"),
        ]
        .iter()
        .all(|(name, theirs)| ours(name) == direct(theirs));
        same.then_some(())
    });
    assert!(matched.is_some(), "idle/active never matched php-fpm's");

    // /status: JSON whose summary is summary()'s one line.
    let (code, content_type, body) = http(&t, "/status");
    assert_eq!((code, content_type.as_str()), (200, "application/json"));
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let summary = status["summary"].as_str().unwrap();
    check_summary(summary);
    assert!(summary.contains("3 children"), "{summary}");
    assert_eq!(status["ready"], true);
    assert_eq!(status["php_fpm"]["pool"]["total processes"], 3);
    let (code, _, body) = http(&t, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(http(&t, "/nope").0, 404);

    // log.format json: every line of tqsup's stderr is a JSON object, and
    // php-fpm's own lines are there with their level.
    assert_eq!(t.stop(secs(15)).code(), Some(0));
    let log = t.log_text();
    let mut php_fpm_ready = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nlog:\n{log}"));
        assert!(v.is_object(), "{line}");
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        if v["target"] == "php_fpm"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("ready to handle connections"))
        {
            assert_eq!(v["level"], "INFO", "{line}");
            assert!(v["pid"].is_u64() && v["pool"].is_string(), "{line}");
            php_fpm_ready = true;
        }
    }
    assert!(php_fpm_ready, "php-fpm's ready notice missing:\n{log}");
}

/// `php-fpm ready (generation G)[; T children: A active, I idle]; F in
/// flight, Q queued; breaker B; R restarts`
fn check_summary(s: &str) {
    let parts: Vec<&str> = s.split("; ").collect();
    assert!(parts.len() == 4 || parts.len() == 5, "{s}");
    let head = parts[0];
    assert!(
        [
            "php-fpm ready (generation ",
            "php-fpm starting",
            "php-fpm restarting",
            "stopping"
        ]
        .iter()
        .any(|p| head.starts_with(p)),
        "{s}"
    );
    let tail = &parts[parts.len() - 3..];
    let words: Vec<&str> = tail[0].split_whitespace().collect();
    assert!(
        words.len() == 5 && words[1..3] == ["in", "flight,"] && words[4] == "queued",
        "{s}"
    );
    assert!(
        words[0].parse::<u64>().is_ok() && words[3].parse::<u64>().is_ok(),
        "{s}"
    );
    assert!(
        ["breaker closed", "breaker open", "breaker half-open"].contains(&tail[1]),
        "{s}"
    );
    let r = tail[2].strip_suffix(" restarts").expect(s);
    assert!(r.parse::<u64>().is_ok(), "{s}");
}

#[test]
fn sd_notify_status_is_the_summary_of_status() {
    use std::os::unix::net::UnixDatagram;
    let project = Project::new();
    let path = project.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(secs(10))).unwrap();
    let (_p, t) = start_in(
        project,
        json!({
            "forward": { "health": { "interval_ms": 100, "timeout_ms": 1000, "failure_threshold": 3 } },
        }),
        Some(&path),
    );
    let mut buf = vec![0u8; 4096];
    let mut ready_seen = false;
    let mut statuses = Vec::new();
    // READY=1 with STATUS=, then refreshed STATUS= at each answered ping.
    while statuses.len() < 3 {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no sd_notify message ({e})"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        ready_seen |= msg.lines().any(|l| l == "READY=1");
        statuses.extend(
            msg.lines()
                .filter_map(|l| l.strip_prefix("STATUS="))
                .map(str::to_string),
        );
    }
    assert!(ready_seen, "{statuses:?}");
    for st in &statuses {
        check_summary(st);
        assert!(st.starts_with("php-fpm ready (generation 1); "), "{st}");
    }
    let (_, _, body) = http(&t, "/status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let summary = status["summary"].as_str().unwrap();
    check_summary(summary);
    // The same line, but /status knows php-fpm's children (it scrapes).
    let without_children: Vec<&str> = summary
        .split("; ")
        .filter(|p| !p.contains(" children: "))
        .collect();
    assert_eq!(&without_children.join("; "), statuses.last().unwrap());
}

#[test]
fn readyz_is_503_while_php_fpm_is_stopped_and_200_after_sigcont() {
    // Pings every 100 ms; a high failure threshold keeps the liveness probe
    // from replacing the stopped php-fpm (and the breaker closed) while the
    // test looks: not answering one ping is enough to be not ready.
    let (_p, t) = start(json!({
        "forward": {
            "health": { "interval_ms": 100, "timeout_ms": 300, "failure_threshold": 40, "open_ms": 300 },
        },
    }));
    let ok = (
        200,
        "text/plain; charset=utf-8".to_string(),
        "ready\n".to_string(),
    );
    assert_eq!(http(&t, "/readyz"), ok);
    let group = Pid::from_raw(php_fpm_master(&t));
    killpg(group, Signal::SIGSTOP).unwrap();
    let not_ready = eventually(secs(5), || {
        let (code, _, body) = try_http(&t, "/readyz")?;
        (code == 503).then_some(body)
    });
    let status = try_http(&t, "/status");
    let _ = killpg(group, Signal::SIGCONT);
    let body = not_ready.unwrap_or_else(|| panic!("/readyz never turned 503"));
    assert_eq!(body, "not ready: php-fpm did not answer its last ping\n");
    let (_, _, status) = status.expect("/status while stopped");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(
        status["not_ready_reason"], "php-fpm did not answer its last ping",
        "{status}"
    );
    let ready = eventually(secs(10), || {
        let r = try_http(&t, "/readyz")?;
        (r == ok).then_some(())
    });
    assert!(ready.is_some(), "/readyz did not come back");
    // It was the same php-fpm that came back, not a replacement.
    assert_eq!(php_fpm_master(&t), group.as_raw());
    let m = metrics(&t);
    assert_eq!(m.sum("tqsup_php_fpm_restarts_total"), 0.0);
    assert_eq!(m.get("tqsup_php_fpm_up"), 1.0);
    assert_eq!(m.get("tqsup_forward_breaker_state"), 0.0);
}

#[test]
fn readyz_is_503_while_the_breaker_is_open_or_php_fpm_restarts() {
    // Probe threshold 2: the forwarder's breaker opens and the supervisor's
    // liveness probe replaces the hung php-fpm, whichever comes first; tqsup
    // is not ready meanwhile and ready again with the new php-fpm.
    let (_p, t) = start(json!({
        "forward": {
            "health": { "interval_ms": 100, "timeout_ms": 300, "failure_threshold": 2, "open_ms": 300 },
        },
        "supervisor": { "backoff_initial_ms": 500 },
    }));
    let master = php_fpm_master(&t);
    killpg(Pid::from_raw(master), Signal::SIGSTOP).unwrap();
    let not_ready = eventually(secs(10), || {
        let (code, _, body) = try_http(&t, "/readyz")?;
        (code == 503).then_some(body)
    });
    let body = not_ready.unwrap_or_else(|| panic!("/readyz never turned 503"));
    assert!(body.starts_with("not ready: "), "{body}");
    let ready = eventually(secs(20), || {
        let (code, _, _) = try_http(&t, "/readyz")?;
        (code == 200).then_some(())
    });
    assert!(ready.is_some(), "/readyz did not come back");
    assert_ne!(php_fpm_master(&t), master, "the hung php-fpm was replaced");
    let m = metrics(&t);
    assert_eq!(
        m.get("tqsup_php_fpm_restarts_total{reason=\"liveness\"}"),
        1.0,
        "{m:?}"
    );
    assert!(
        m.get("tqsup_php_fpm_last_exit_code") < 0.0,
        "killed by a signal"
    );
    assert_eq!(m.get("tqsup_forward_breaker_state"), 0.0);
    assert_eq!(m.get("tqsup_php_fpm_up"), 1.0);
}
