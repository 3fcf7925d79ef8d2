//! A PHP site as production runs it: real nginx (upstream keepalive) → the
//! `tqsup run` binary on a private unix socket → the php-fpm it supervises,
//! in one temp project. Plus what load and fault tests look at: php-fpm's
//! pids, tqsup's restarts, one request through nginx, and a [`Verdict`] that
//! checks every expectation and, on failure, prints the numbers with tqsup's
//! log and /metrics, nginx's error log and wrk's output.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::nginx::Nginx;
use super::wrk::{Load, PAYLOAD_LEN, Report, Running};
use super::{
    Project, Tqsup, TqsupProject, children, cmdline, eventually, free_addr, run_with_timeout, tail,
};

/// nginx → tqsup → php-fpm, stopped (tqsup gracefully, then killed) when
/// dropped.
pub struct Site {
    pub nginx: Nginx,
    pub tqsup: Tqsup,
    /// Last, so the processes are gone before the directory is removed.
    pub project: TqsupProject,
}

/// `lib/check.php`: `checked_body()` says `body-ok` when a POST carried the
/// whole form of `wrk::form_body` (and a GET no body), `body-BAD` otherwise.
fn check_php() -> String {
    format!(
        "<?php\nfunction checked_body(): string {{\n\
         \x20 $in = file_get_contents('php://input');\n\
         \x20 if ($_SERVER['REQUEST_METHOD'] === 'POST') {{\n\
         \x20   $want = substr(str_repeat('abcdefghijklmnopqrstuvwxyz0123456789', {reps}), 0, {len});\n\
         \x20   $ok = strlen($in) === (int)($_SERVER['CONTENT_LENGTH'] ?? -1)\n\
         \x20     && ($_POST['n'] ?? '') === '{len}' && ($_POST['payload'] ?? '') === $want;\n\
         \x20 }} else {{\n\
         \x20   $ok = $in === '';\n\
         \x20 }}\n\
         \x20 return ($ok ? 'body-ok' : 'body-BAD') . ' len=' . strlen($in);\n}}\n",
        reps = PAYLOAD_LEN / 36 + 1,
        len = PAYLOAD_LEN,
    )
}

/// A PHP script at `rel` printing `text` then `checked_body()`; `before` is
/// PHP run first (e.g. a sleep).
pub fn write_php(project: &Project, rel: &str, before: &str, text: &str) {
    project.write(
        rel,
        &format!(
            "<?php require '{lib}';\n{before}\necho {text}, ' ', checked_body(), \"\\n\";\n",
            lib = project.join("lib/check.php").display(),
        ),
    );
}

/// The scripts every site has, in `public/`: `index.php` ("index"),
/// `sleep.php?ms=` ("slept"), `post.php` ("version=<TQ_VERSION> pid=<pid>").
fn write_scripts(project: &Project) {
    project.write("lib/check.php", &check_php());
    write_php(project, "public/index.php", "", "'index'");
    write_php(
        project,
        "public/sleep.php",
        "usleep((int)($_GET['ms'] ?? 1000) * 1000);",
        "'slept'",
    );
    write_php(
        project,
        "public/post.php",
        "",
        "'version=' . (getenv('TQ_VERSION') ?: 'none') . ' pid=' . getmypid()",
    );
}

impl Site {
    /// A project with the common scripts and the site's config: a static
    /// pool of 4 with `php_fpm.env.TQ_VERSION` (which `post.php` prints: a
    /// value a reload must apply), health pings every 500 ms (not the 2 s
    /// default, so a wrong restart shows within a short load) and an admin
    /// endpoint for the diagnostics. A test changes the config or adds files
    /// (e.g. release dirs) before [`Site::start`].
    pub fn project() -> TqsupProject {
        let mut p = TqsupProject::new();
        write_scripts(&p);
        let (root, sock) = (p.join("public"), p.join("tqsup.sock"));
        p.merge(json!({
            "php_fpm": {
                "document_root": root,
                "env": { "TQ_VERSION": "v0" },
                "pool": { "type": "static", "max_children": 4, "max_requests": 0 },
            },
            "forward": {
                "listen": sock,
                "socket_mode": "0666",
                "queue_timeout_ms": 30000,
                "health": { "interval_ms": 500, "timeout_ms": 500, "failure_threshold": 3 },
            },
            "admin": { "listen": free_addr() },
            "supervisor": { "stop_timeout_ms": 10000 },
            "log": { "level": "info" },
        }));
        p
    }

    /// Starts tqsup, then nginx (its root is `php_fpm.document_root`), and
    /// waits until `/index.php` answers 200 through nginx.
    pub fn start(project: TqsupProject) -> Site {
        let tqsup = project.start();
        let root = PathBuf::from(project.get("php_fpm.document_root").as_str().unwrap());
        let nginx = Nginx::start(&project, &tqsup.forward(), &root);
        let site = Site {
            nginx,
            tqsup,
            project,
        };
        let ready = eventually(Duration::from_secs(15), || {
            let (status, body) = site.get("/index.php", Duration::from_secs(5));
            (status == 200 && body.contains("body-ok")).then_some(())
        });
        assert!(
            ready.is_some(),
            "site not serving:\n{}",
            site.diagnostics("startup", &[])
        );
        site
    }

    /// Changes the config and rewrites tqsup.yaml (atomically); it takes
    /// effect at the next SIGHUP.
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut TqsupProject)) {
        change(&mut self.project);
        self.project.write_config();
    }

    /// Sets `php_fpm.env.TQ_VERSION` in tqsup.yaml.
    pub fn set_version(&mut self, v: &str) {
        self.reconfigure(|p| {
            p.set("php_fpm.env.TQ_VERSION", v);
        });
    }

    pub fn hup(&self) {
        self.tqsup.hup();
    }

    /// The php-fpm master tqsup runs now.
    pub fn master(&self) -> Option<i32> {
        self.tqsup.master()
    }

    /// Every process below tqsup: php-fpm masters and their workers.
    pub fn php_fpm_pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut todo = children(self.tqsup.pid());
        while let Some(p) = todo.pop() {
            if cmdline(p).contains("php-fpm") {
                out.push(p);
            }
            todo.extend(children(p));
        }
        out
    }

    /// The workers of the main pool `www` now (not masters, not php-fpm's
    /// status pool).
    pub fn workers(&self) -> Vec<i32> {
        self.php_fpm_pids()
            .into_iter()
            .filter(|p| cmdline(*p).trim() == "php-fpm: pool www")
            .collect()
    }

    /// tqsup's log lines saying it restarted or killed php-fpm: a busy or
    /// reloading php-fpm must never cause one.
    pub fn restart_lines(&self) -> Vec<String> {
        self.tqsup
            .log_text()
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                l.contains("restarting php-fpm") || l.contains("killing")
            })
            .map(str::to_string)
            .collect()
    }

    /// One GET through nginx with curl: (status, body); status 0 when curl
    /// got no response within `timeout`.
    pub fn get(&self, path: &str, timeout: Duration) -> (u16, String) {
        let out = run_with_timeout(
            Command::new("curl")
                .args(["-sS", "--max-time"])
                .arg(format!("{:.3}", timeout.as_secs_f64()))
                .args(["-w", "\n%{http_code}"])
                .arg(format!("{}{path}", self.nginx.base_url())),
            timeout + Duration::from_secs(5),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Polls GET `path` until its body satisfies `want`; the time it took
    /// (from `since`) and the body.
    pub fn wait_for_body(
        &self,
        path: &str,
        since: Instant,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Option<(Duration, String)> {
        eventually(timeout, || {
            let (status, body) = self.get(path, Duration::from_secs(5));
            (status == 200 && want(&body)).then(|| (since.elapsed(), body))
        })
    }

    /// Starts wrk through nginx.
    pub fn load(&self, load: &Load) -> Running {
        load.start(&self.nginx.base_url(), self.project.path())
    }

    /// For a failure message: tqsup's warnings and errors, the tail of its
    /// log and its /metrics, the tail of nginx's error log, each wrk run's
    /// output. The
    /// whole logs are copied to `<target>/tmp/load-logs/<test>/` first (the
    /// project dir goes with the test).
    pub fn diagnostics(&self, test: &str, reports: &[&Report]) -> String {
        let log = self.tqsup.log_text();
        let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("load-logs")
            .join(test);
        let _ = std::fs::create_dir_all(&saved);
        let _ = std::fs::write(saved.join("tqsup.log"), &log);
        let _ = std::fs::write(saved.join("nginx-error.log"), self.nginx.error_log_text());
        let serious: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        let mut s = format!(
            "--- full logs saved in {} ---\n\
             --- tqsup log: {} WARN/ERROR line(s), the first 60 ---\n{}\n\
             --- tqsup log: the last 40 lines ---\n{}\n\
             --- nginx error log: the last 40 lines ---\n{}\n\
             --- tqsup's /metrics ---\n{}\n",
            saved.display(),
            serious.len(),
            serious[..serious.len().min(60)].join("\n"),
            tail(&log, 40),
            tail(&self.nginx.error_log_text(), 40),
            self.tqsup.metrics_text().unwrap_or_default(),
        );
        for (i, r) in reports.iter().enumerate() {
            s.push_str(&format!(
                "--- wrk run {i}: {} ---\n{}\n",
                r.summary(),
                r.output
            ));
        }
        s
    }

    /// A verdict on this site.
    pub fn verdict(&self, test: &str) -> Verdict<'_> {
        Verdict {
            site: self,
            test: test.to_string(),
            failed: Vec::new(),
            reports: Vec::new(),
        }
    }
}

/// Every expectation of a test, checked together: all numbers are printed
/// (pass or fail) and a failure panics once with the diagnostics.
pub struct Verdict<'a> {
    site: &'a Site,
    test: String,
    failed: Vec<String>,
    reports: Vec<Report>,
}

impl Verdict<'_> {
    /// Expects `cond`; `detail` says what was seen.
    pub fn check(&mut self, what: &str, cond: bool, detail: impl std::fmt::Display) {
        eprintln!(
            "[{}] {} {what}: {detail}",
            self.test,
            if cond { "ok  " } else { "FAIL" }
        );
        if !cond {
            self.failed.push(format!("{what}: {detail}"));
        }
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        let cond = got == want;
        self.check(what, cond, format!("got {got:?}, want {want:?}"));
    }

    /// Records a wrk run (for the diagnostics) and expects it to have
    /// failed nothing: no non-2xx, no bad body, no socket error.
    pub fn clean_load(&mut self, what: &str, r: &Report) {
        self.record(r);
        self.check(
            &format!("{what}: wrk ran to its end"),
            r.complete,
            r.summary(),
        );
        self.eq(&format!("{what}: non-2xx"), r.non_2xx(), 0);
        self.eq(&format!("{what}: 2xx without the marker"), r.bad_body, 0);
        self.eq(&format!("{what}: socket errors"), r.socket_errors(), 0);
        self.check(&format!("{what}: some requests served"), r.ok > 0, r.ok);
    }

    /// Keeps a wrk run's output for the diagnostics.
    pub fn record(&mut self, r: &Report) {
        eprintln!("[{}] wrk: {}", self.test, r.summary());
        self.reports.push(r.clone());
    }

    /// Expects tqsup never restarted nor killed php-fpm.
    pub fn no_restart(&mut self) {
        let lines = self.site.restart_lines();
        self.check(
            "no restart/kill in tqsup's log",
            lines.is_empty(),
            format!("{} line(s) {:?}", lines.len(), lines),
        );
    }

    /// Panics with every failed expectation and the diagnostics.
    pub fn finish(self) {
        if self.failed.is_empty() {
            return;
        }
        let reports: Vec<&Report> = self.reports.iter().collect();
        panic!(
            "{}: {} expectation(s) failed:\n  {}\n{}",
            self.test,
            self.failed.len(),
            self.failed.join("\n  "),
            self.site.diagnostics(&self.test, &reports)
        );
    }
}
