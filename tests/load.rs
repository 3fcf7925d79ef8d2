//! Load and faults against the real thing (DESIGN §6 "Under load nothing is
//! lost", §7): wrk → nginx (upstream keepalive, `fastcgi_keep_conn on`) →
//! `tqsup run` → the php-fpm it supervises. Every failure is counted
//! exactly (non-2xx by status, 2xx with a wrong body, socket errors) and
//! every test states the numbers it allows.
//!
//! Run alone, one test at a time (each loads the 2 cores for up to ~30 s):
//! `cargo test --test load -- --test-threads=1 --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::site::{Site, write_php};
use common::wrk::{Load, Req};
use common::{json, ms};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `n` kept-alive clients POSTing the checked form to `path` for `secs`.
fn post_load(n: u32, path: &str, secs: u64, expect: &str) -> Load {
    Load {
        connections: n,
        duration: Duration::from_secs(secs),
        timeout: Duration::from_secs(10),
        requests: vec![Req::Post(path.into())],
        expect: expect.into(),
    }
}

/// The `pid=` a script printed.
fn pid_in(body: &str) -> Option<i32> {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
}

/// A saturated pool is busy, not dead: every child held by a 1.5 s request
/// and 12 more waiting in tqsup's queue for 20 s, and php-fpm is never
/// restarted (DESIGN §6 Liveness).
#[test]
fn saturated_pool_is_not_restarted() {
    let site = Site::start(Site::project());
    let master = site.master();
    let r = site
        .load(&Load {
            connections: 16,
            duration: Duration::from_secs(20),
            timeout: Duration::from_secs(10),
            requests: vec![
                Req::Get("/sleep.php?ms=1500".into()),
                Req::Post("/sleep.php?ms=1500".into()),
            ],
            expect: "slept body-ok".into(),
        })
        .finish();
    let mut v = site.verdict("saturated_pool_is_not_restarted");
    v.clean_load("16 clients on 4 children", &r);
    v.check(
        "a php-fpm master ran",
        master.is_some(),
        format!("{master:?}"),
    );
    v.eq("php-fpm master pid after the load", site.master(), master);
    v.no_restart();
    v.finish();
}

/// Pooled connections left idle after a burst pin every child; 30 s of
/// idleness later php-fpm is the same and still serves.
#[test]
fn idle_pool_after_burst_is_not_restarted() {
    let site = Site::start(Site::project());
    let master = site.master();
    let burst = site
        .load(&Load {
            connections: 8,
            duration: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            requests: vec![Req::Get("/sleep.php?ms=300".into())],
            expect: "slept body-ok".into(),
        })
        .finish();
    std::thread::sleep(Duration::from_secs(30));
    let (status, body) = site.get("/index.php", Duration::from_secs(10));
    let mut v = site.verdict("idle_pool_after_burst_is_not_restarted");
    v.clean_load("burst of 8 on 4 children", &burst);
    v.eq("php-fpm master pid after 30 s idle", site.master(), master);
    v.no_restart();
    v.check(
        "a GET after the idle period",
        status == 200 && body.contains("index body-ok"),
        format!("{status} {body:?}"),
    );
    v.finish();
}

/// Five SIGHUPs 1.5 s apart under 32 kept-alive POST clients, the config
/// changed before each: nothing fails, nothing stalls, the last config wins.
#[test]
fn sighup_under_post_load_fails_nothing() {
    let mut site = Site::start(Site::project());
    let run = site.load(&post_load(32, "/post.php", 10, "body-ok"));
    for i in 1..=5 {
        std::thread::sleep(ms(1500));
        site.set_version(&format!("v{i}"));
        site.hup();
    }
    let applied = site.wait_for_body("/post.php", Instant::now(), Duration::from_secs(20), |b| {
        b.contains("version=v5 ")
    });
    let r = run.finish();
    let mut v = site.verdict("sighup_under_post_load_fails_nothing");
    v.clean_load("32 POST clients, 5 SIGHUPs", &r);
    v.check(
        "max latency < 2 s",
        r.latency_max < Duration::from_secs(2),
        format!("{:?}", r.latency_max),
    );
    v.check(
        "the last config (TQ_VERSION=v5) is served after the reloads",
        applied.is_some(),
        format!("{applied:?}"),
    );
    v.no_restart();
    v.finish();
}

/// Six SIGHUPs within 0.3 s, the config changed before each, under POST
/// load: they coalesce into reloads that fail nothing, never a restart, and
/// the last config is applied.
#[test]
fn sighup_storm_coalesces() {
    let mut site = Site::start(Site::project());
    let run = site.load(&post_load(16, "/post.php", 8, "body-ok"));
    std::thread::sleep(ms(1500));
    for i in 1..=6 {
        site.set_version(&format!("s{i}"));
        site.hup();
        std::thread::sleep(ms(50));
    }
    let applied = site.wait_for_body("/post.php", Instant::now(), Duration::from_secs(20), |b| {
        b.contains("version=s6 ")
    });
    let r = run.finish();
    let mut v = site.verdict("sighup_storm_coalesces");
    v.clean_load("16 POST clients, 6 SIGHUPs in 0.3 s", &r);
    v.no_restart();
    v.check(
        "the last config (TQ_VERSION=s6) is served after the storm",
        applied.is_some(),
        format!("{applied:?}"),
    );
    v.finish();
}

/// A deploy: `current` switched atomically from releases/a to releases/b,
/// then SIGHUP, under GET+POST load. Nothing fails, and once a new php-fpm
/// process has answered with release b, no response says release a.
#[test]
fn deploy_switch_between_release_dirs() {
    let mut p = Site::project();
    for r in ["a", "b"] {
        write_php(
            &p,
            &format!("releases/{r}/index.php"),
            "",
            &format!("'pid=' . getmypid() . ' release {r}'"),
        );
    }
    std::os::unix::fs::symlink("releases/a", p.join("current")).unwrap();
    let current = p.join("current");
    let next = p.join("current.next");
    p.set("php_fpm.document_root", &current);
    let site = Site::start(p);
    let (_, first) = site.get("/index.php", Duration::from_secs(5));
    let mixed = |secs: u64, expect: &str| Load {
        connections: 16,
        duration: Duration::from_secs(secs),
        timeout: Duration::from_secs(10),
        requests: vec![
            Req::Get("/index.php".into()),
            Req::Post("/index.php".into()),
        ],
        expect: expect.into(),
    };
    let run = site.load(&mixed(8, "body-ok"));
    std::thread::sleep(Duration::from_secs(2));
    let old = site.php_fpm_pids();
    // ln -sfn releases/b current.next && mv -T current.next current
    std::os::unix::fs::symlink("releases/b", &next).unwrap();
    std::fs::rename(&next, &current).unwrap();
    site.hup();
    let switched = site.wait_for_body("/index.php", Instant::now(), Duration::from_secs(20), |b| {
        b.contains("release b") && pid_in(b).is_some_and(|pid| !old.contains(&pid))
    });
    let during = run.finish();
    let after = site.load(&mixed(3, "release b body-ok")).finish();
    let mut v = site.verdict("deploy_switch_between_release_dirs");
    v.check(
        "release a served first",
        first.contains("release a"),
        &first,
    );
    v.clean_load("GET+POST during the switch", &during);
    v.check(
        "a new php-fpm process serves release b",
        switched.is_some(),
        format!("{switched:?}"),
    );
    v.clean_load(
        "after the switch (any release a counts as a bad body)",
        &after,
    );
    v.no_restart();
    v.finish();
}

/// kill -9 of php-fpm's master under 32 POST clients: at most the requests
/// its 4 children were running fail, none with 503, and the site answers
/// again within 1 s.
#[test]
fn kill_9_master_under_post_load() {
    let site = Site::start(Site::project());
    let run = site.load(&post_load(32, "/post.php", 8, "body-ok"));
    std::thread::sleep(Duration::from_secs(3));
    // A master to kill (today's liveness probe may be restarting a
    // saturated php-fpm at this very moment).
    let master = common::eventually(Duration::from_secs(5), || site.master());
    let killed = Instant::now();
    if let Some(m) = master {
        kill(Pid::from_raw(m), Signal::SIGKILL).unwrap();
    }
    let back = site.wait_for_body("/index.php", killed, Duration::from_secs(10), |b| {
        b.contains("index body-ok")
    });
    let r = run.finish();
    let mut v = site.verdict("kill_9_master_under_post_load");
    v.check(
        "a php-fpm master to kill",
        master.is_some(),
        format!("{master:?}"),
    );
    v.record(&r);
    v.check("wrk ran to its end", r.complete, r.summary());
    v.check(
        "failures (non-2xx + bad body + socket errors) <= max_children 4",
        r.failures() <= 4,
        r.failures(),
    );
    v.eq("503 responses", r.status(503), 0);
    v.check(
        "200 again within 1 s of the kill",
        back.as_ref()
            .is_some_and(|(t, _)| *t <= Duration::from_secs(1)),
        format!("{:?}", back.map(|(t, _)| t)),
    );
    v.check(
        "a new php-fpm master",
        site.master().is_some_and(|m| Some(m) != master),
        format!("{master:?} -> {:?}", site.master()),
    );
    v.finish();
}

/// Processes a test stopped: continued and killed when dropped, so a
/// failing test leaves no stopped php-fpm behind.
struct Stopped(Vec<i32>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if common::cmdline(pid).contains("php-fpm") {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// A hung php-fpm (master and workers SIGSTOPped) is detected by the
/// liveness probe (interval 500 ms, threshold 3) and replaced within 10 s.
#[test]
fn sigstop_is_detected_and_restarted() {
    let site = Site::start(Site::project());
    let master = site.master().expect("php-fpm master");
    let mut pids = vec![master];
    pids.extend(common::children(master));
    let stopped = Stopped(pids);
    for &pid in &stopped.0 {
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    }
    let t = Instant::now();
    let replaced = common::eventually(Duration::from_secs(15), || {
        let m = site.master().filter(|m| *m != master)?;
        let (status, body) = site.get("/index.php", Duration::from_secs(3));
        (status == 200 && body.contains("index body-ok")).then(|| (m, t.elapsed()))
    });
    let mut v = site.verdict("sigstop_is_detected_and_restarted");
    v.check(
        "a new master serving within 10 s of SIGSTOP",
        replaced.is_some_and(|(_, t)| t <= Duration::from_secs(10)),
        format!("{replaced:?}"),
    );
    v.finish();
    drop(stopped);
}

/// Children recycled every 3 requests (pm.max_requests) under 6 kept-alive
/// POST clients: php-fpm closes the pooled connection after each child's
/// last request, and no POST is lost for it.
#[test]
fn max_requests_recycling_loses_no_post() {
    let site = Site::start(Site::project().with(json!({
        "php_fpm": { "pool": { "max_requests": 3 } },
    })));
    let r = site
        .load(&post_load(6, "/post.php", 10, "body-ok"))
        .finish();
    let mut v = site.verdict("max_requests_recycling_loses_no_post");
    v.clean_load("6 POST clients, max_requests 3", &r);
    v.finish();
}

/// A dynamic pool scales back after a burst (DESIGN §7): idle pooled
/// connections are closed after a few seconds, so php-fpm's process manager
/// can stop the surplus children, while a light load stays served.
#[test]
fn dynamic_pool_scales_back_after_a_burst() {
    let site = Site::start(Site::project().with(json!({
        "php_fpm": {
            "pool": {
                "type": "dynamic",
                "max_children": 6,
                "start_servers": 2,
                "min_spare_servers": 1,
                "max_spare_servers": 2,
            },
        },
    })));
    let burst = site
        .load(&Load {
            connections: 12,
            duration: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            requests: vec![Req::Get("/sleep.php?ms=500".into())],
            expect: "slept body-ok".into(),
        })
        .finish();
    let peak = site.workers().len();
    // One client, one request at a time: at most one busy child, so the
    // pool should settle at max_spare_servers (2) + the busy one.
    let light = site.load(&Load {
        connections: 1,
        duration: Duration::from_secs(12),
        timeout: Duration::from_secs(10),
        requests: vec![Req::Get("/sleep.php?ms=20".into())],
        expect: "slept body-ok".into(),
    });
    let shrunk = common::eventually(Duration::from_secs(11), || {
        let n = site.workers().len();
        (n <= 3).then_some(n)
    });
    let light = light.finish();
    let mut v = site.verdict("dynamic_pool_scales_back_after_a_burst");
    v.clean_load("burst of 12 on max_children 6", &burst);
    // php-fpm spawns gradually (1, 2, 4… per second), so the burst's end
    // may find 5 or 6: what matters is that it grew past what it must
    // shrink back to.
    v.check(
        "children grew past max_spare_servers + 1 in the burst",
        peak >= 5,
        peak,
    );
    v.check(
        "children back to <= max_spare_servers + 1 under light load",
        shrunk.is_some(),
        format!("{shrunk:?}, now {}", site.workers().len()),
    );
    v.clean_load("light load while the pool shrinks", &light);
    v.no_restart();
    v.finish();
}

/// Memory-based recycling (DESIGN §6): a child holding ~50 MB of private
/// memory for a big request is recycled — its pooled connection is lent no
/// more, closed after that request (which completes), then the child gets
/// SIGQUIT — while 16 keep-alive POST clients see no failure.
#[test]
fn a_child_over_max_memory_is_recycled_without_a_failed_request() {
    let project = Site::project();
    write_php(
        &project,
        "public/big.php",
        // ~50 MB of PHP heap, held for 1.5 s: the once-a-second check sees
        // the child over the limit while it serves this very request.
        "$a = []; for ($i = 0; $i < 600000; $i++) { $a[] = str_repeat('x', 40) . $i; } usleep(1500000);",
        "'big ' . getmypid()",
    );
    let site = Site::start(project.with(json!({
        "php_fpm": { "pool": { "max_memory_mb": 32 } },
    })));
    let before = site.workers();
    let run = site.load(&post_load(16, "/post.php", 10, "body-ok"));
    let mut big = Vec::new();
    for _ in 0..4 {
        std::thread::sleep(ms(1500));
        big.push(site.get("/big.php", Duration::from_secs(10)));
    }
    let r = run.finish();
    let log = site.tqsup.log_text();
    let recycled: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("recycling a php-fpm child") && l.contains("memory"))
        .collect();
    let mut v = site.verdict("a_child_over_max_memory_is_recycled_without_a_failed_request");
    v.clean_load("16 POST clients while big requests run", &r);
    v.check(
        "every big request answered",
        big.iter().all(|(s, b)| *s == 200 && b.contains("big ")),
        format!("{big:?}"),
    );
    v.check(
        "children recycled for memory",
        !recycled.is_empty(),
        format!("{} line(s): {recycled:?}", recycled.len()),
    );
    let after = site.workers();
    v.check(
        "a recycled child was replaced by a fresh one",
        before.iter().any(|p| !after.contains(p)),
        format!("{before:?} -> {after:?}"),
    );
    v.no_restart();
    v.finish();
}

/// Lifetime-based recycling: with max_lifetime_ms 2000 every child is
/// replaced (a quarter of the pool at a time) under keep-alive POST load
/// with no failure.
#[test]
fn children_past_max_lifetime_are_all_replaced() {
    let site = Site::start(Site::project().with(json!({
        "php_fpm": { "pool": { "max_lifetime_ms": 2000 } },
    })));
    let before = site.workers();
    let r = site
        .load(&post_load(16, "/post.php", 12, "body-ok"))
        .finish();
    let after = site.workers();
    let recycles = site
        .tqsup
        .log_text()
        .lines()
        .filter(|l| l.contains("recycling a php-fpm child") && l.contains("lifetime"))
        .count();
    let mut v = site.verdict("children_past_max_lifetime_are_all_replaced");
    v.clean_load("16 POST clients while children are recycled", &r);
    v.check("at least one recycle per child", recycles >= 4, recycles);
    v.check(
        "none of the first children is left",
        before.iter().all(|p| !after.contains(p)),
        format!("{before:?} -> {after:?}"),
    );
    v.eq("children now", after.len(), 4);
    v.no_restart();
    v.finish();
}

/// Lanes (DESIGN §7): on a pool of 4, 8 clients hammer a 2 s `/slow.php`
/// while 8 others ask for `/index.php`. Without a lane the slow requests
/// take every child and the fast ones wait behind them; with a `/slow*` lane
/// of 1 the fast ones keep the rest of the pool (never a 503, no wait),
/// while the slow ones queue in their own lane and get 503 past its timeout.
#[test]
fn a_lane_keeps_one_slow_endpoint_from_taking_the_pool() {
    let run = |lane: bool| {
        let project = Site::project();
        write_php(&project, "public/slow.php", "usleep(2000000);", "'slow'");
        let lanes = if lane {
            json!([{ "name": "slow", "match": "/slow*", "max": 1, "queue_timeout_ms": 3000 }])
        } else {
            json!(null)
        };
        let site = Site::start(project.with(json!({ "forward": { "lanes": lanes } })));
        let get = |path: &str, expect: &str, secs: u64| Load {
            connections: 8,
            duration: Duration::from_secs(secs),
            timeout: Duration::from_secs(20),
            requests: vec![Req::Get(path.into())],
            expect: expect.into(),
        };
        let unloaded = site.load(&get("/index.php", "index body-ok", 2)).finish();
        let slow = site.load(&get("/slow.php", "slow body-ok", 10));
        std::thread::sleep(ms(1000));
        let fast = site.load(&get("/index.php", "index body-ok", 6)).finish();
        let slow = slow.finish();
        (site, unloaded, fast, slow)
    };
    let (site, unloaded, fast, slow) = run(true);
    let (_plain, _, fast_plain, _) = run(false);
    let mut v = site.verdict("a_lane_keeps_one_slow_endpoint_from_taking_the_pool");
    v.clean_load("/index.php alone", &unloaded);
    v.clean_load("/index.php beside /slow.php in a lane of 1", &fast);
    v.check(
        "/index.php's worst latency stays near its unloaded one",
        fast.latency_max <= (unloaded.latency_max * 3).max(ms(300)),
        format!(
            "{:?} vs {:?} unloaded",
            fast.latency_max, unloaded.latency_max
        ),
    );
    v.check(
        "/slow.php: some served, the rest 503 past the lane's timeout",
        slow.ok > 0 && slow.status(503) > 0 && slow.non_2xx() == slow.status(503),
        slow.summary(),
    );
    v.check(
        "without the lane, /index.php waits behind /slow.php",
        fast_plain.latency_max >= ms(1000),
        format!(
            "{:?} without the lane vs {:?} with it",
            fast_plain.latency_max, fast.latency_max
        ),
    );
    v.no_restart();
    v.finish();
}

/// The access log (`log.access`): one line per forwarded request with the
/// client address, method, URI, script, status, bytes and the three times;
/// `forward.slow_request_ms` warns about slower requests with the same
/// fields; `log.access: true` with `log.format: json` puts them in tqsup's
/// JSON log.
#[test]
fn access_log_lines_and_slow_request_warnings() {
    let project = Site::project();
    let access = project.join("access.log");
    let site = Site::start(project.with(json!({
        "log": { "access": access },
        "forward": { "slow_request_ms": 200 },
    })));
    let a = site.get("/index.php?x=1", Duration::from_secs(10));
    let b = site.get("/sleep.php?ms=300", Duration::from_secs(10));
    let lines = common::eventually(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&access).ok()?;
        text.contains("/sleep.php").then_some(text)
    })
    .unwrap_or_default();
    let mut v = site.verdict("access_log_lines_and_slow_request_warnings");
    v.check(
        "both requests answered",
        a.0 == 200 && b.0 == 200,
        format!("{a:?} {b:?}"),
    );
    // (The harness's own readiness GETs come first.)
    let first = lines.lines().find(|l| l.contains("x=1")).unwrap_or("");
    v.check(
        "a text line per request with every field",
        first.contains(" 127.0.0.1 \"GET /index.php?x=1\" /index.php 200 ")
            && first.contains(" queue=")
            && first.contains(" php=")
            && first.contains(" total="),
        &lines,
    );
    let slow = site
        .tqsup
        .log_text()
        .lines()
        .filter(|l| l.contains("slow request"))
        .map(str::to_string)
        .collect::<Vec<_>>();
    v.check(
        "one slow-request warning, for /sleep.php",
        slow.len() == 1 && slow[0].contains("/sleep.php?ms=300") && slow[0].contains("WARN"),
        format!("{slow:?}"),
    );
    v.no_restart();
    v.finish();

    let json = Site::start(Site::project().with(json!({
        "log": { "access": true, "format": "json" },
    })));
    let c = json.get("/index.php?y=2", Duration::from_secs(10));
    let line = common::eventually(Duration::from_secs(5), || {
        json.tqsup
            .log_text()
            .lines()
            .find(|l| l.contains("/index.php?y=2"))
            .map(str::to_string)
    })
    .unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    let mut v = json.verdict("access_log_lines_and_slow_request_warnings (json)");
    v.eq("answered", c.0, 200);
    v.check(
        "a JSON log line with the request's fields",
        parsed["status"] == 200
            && parsed["script_name"] == "/index.php"
            && parsed["remote_addr"] == "127.0.0.1"
            && parsed["total_ms"].is_number(),
        &line,
    );
    v.finish();
}
