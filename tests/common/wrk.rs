//! wrk as the load generator, counting every failure exactly: a generated
//! lua script tallies each non-2xx status, each 2xx whose body lacks the
//! expected marker, and prints wrk's socket errors and max latency as
//! `LOAD …` lines that [`Report`] parses.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::run_with_timeout;

/// Length of the `payload` field of [`form_body`].
pub const PAYLOAD_LEN: usize = 400;

/// The urlencoded form every POST sends: `n=<PAYLOAD_LEN>&payload=<PAYLOAD_LEN
/// chars of [a-z0-9] repeating>` (a few hundred bytes). The PHP side checks
/// it arrived whole (see the stack's `check.php`).
pub fn form_body() -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let payload: String = (0..PAYLOAD_LEN)
        .map(|i| alphabet[i % alphabet.len()] as char)
        .collect();
    format!("n={PAYLOAD_LEN}&payload={payload}")
}

/// One request wrk sends; a run rotates through its list per thread.
#[derive(Clone, Debug)]
pub enum Req {
    Get(String),
    /// POST of [`form_body`] as `application/x-www-form-urlencoded`.
    Post(String),
}

/// A wrk run: `connections` kept-alive clients for `duration`.
#[derive(Clone, Debug)]
pub struct Load {
    pub connections: u32,
    pub duration: Duration,
    /// wrk's `--timeout`: a response slower than this counts as a timeout.
    /// Both are rounded up to whole seconds.
    pub timeout: Duration,
    /// Paths (with query) on the base URL, sent in rotation.
    pub requests: Vec<Req>,
    /// A 2xx response whose body does not contain this counts as failed.
    pub expect: String,
}

/// A wrk run in progress, on its own thread.
pub struct Running {
    thread: JoinHandle<Report>,
}

impl Running {
    /// Waits for wrk to finish (it is killed past `duration` + 30 s).
    pub fn finish(self) -> Report {
        self.thread.join().expect("wrk thread panicked")
    }
}

/// What a wrk run counted.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Whether wrk printed all the `LOAD` lines (it ran to its end).
    pub complete: bool,
    /// Responses received, whatever their status.
    pub requests: u64,
    /// 2xx responses with the expected marker.
    pub ok: u64,
    /// 2xx responses lacking the expected marker.
    pub bad_body: u64,
    /// Non-2xx responses by status.
    pub statuses: BTreeMap<u16, u64>,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub latency_max: Duration,
    /// wrk's whole stdout and stderr, for failure messages.
    pub output: String,
}

impl Report {
    pub fn non_2xx(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn status(&self, code: u16) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }

    /// connect + read + write errors and timeouts.
    pub fn socket_errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts
    }

    /// Everything that was not a good response.
    pub fn failures(&self) -> u64 {
        self.non_2xx() + self.bad_body + self.socket_errors()
    }

    /// One line with every count, for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "requests {} ok {} non-2xx {:?} bad-body {} connect {} read {} write {} timeout {} max-latency {:?}{}",
            self.requests,
            self.ok,
            self.statuses,
            self.bad_body,
            self.connect_errors,
            self.read_errors,
            self.write_errors,
            self.timeouts,
            self.latency_max,
            if self.complete { "" } else { " (INCOMPLETE)" },
        )
    }

    /// Parses the `LOAD` lines the script's `done()` prints.
    fn parse(output: String) -> Report {
        let mut r = Report::default();
        let mut seen = 0;
        for line in output.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            match f.as_slice() {
                ["LOAD", "requests", ..] => (r.requests, seen) = (n(2), seen + 1),
                ["LOAD", "ok", ..] => (r.ok, seen) = (n(2), seen + 1),
                ["LOAD", "bad_body", ..] => (r.bad_body, seen) = (n(2), seen + 1),
                ["LOAD", "status", ..] => {
                    r.statuses.insert(n(2) as u16, n(3));
                }
                ["LOAD", "errors", ..] => {
                    (r.connect_errors, r.read_errors, r.write_errors, r.timeouts) =
                        (n(3), n(5), n(7), n(9));
                    seen += 1;
                }
                ["LOAD", "latency_max_us", ..] => {
                    r.latency_max = Duration::from_micros(n(2));
                    seen += 1;
                }
                _ => {}
            }
        }
        r.complete = seen == 5;
        r.output = output;
        r
    }
}

impl Load {
    /// Starts wrk against `base_url` (`http://host:port`), writing its lua
    /// script into `dir`.
    pub fn start(&self, base_url: &str, dir: &Path) -> Running {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let script = dir.join(format!("wrk-{}.lua", RUN.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&script, self.script()).unwrap();
        let mut cmd = Command::new("wrk");
        cmd.args(["-t1", "-c"])
            .arg(self.connections.to_string())
            .arg("-d")
            .arg(whole_seconds(self.duration))
            .arg("--timeout")
            .arg(whole_seconds(self.timeout))
            .arg("-s")
            .arg(&script)
            .arg(base_url);
        let limit = self.duration + Duration::from_secs(30);
        let thread = std::thread::spawn(move || {
            let out = run_with_timeout(&mut cmd, limit);
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Report::parse(text)
        });
        Running { thread }
    }

    /// Runs wrk to its end.
    pub fn run(&self, base_url: &str, dir: &Path) -> Report {
        self.start(base_url, dir).finish()
    }

    /// The lua script: requests in rotation, per-thread tallies in
    /// `response()`, summed over threads in `done()`.
    fn script(&self) -> String {
        let requests: String = self
            .requests
            .iter()
            .map(|r| match r {
                Req::Get(path) => format!("  wrk.format(\"GET\", {}),\n", lua_str(path)),
                Req::Post(path) => format!(
                    "  wrk.format(\"POST\", {}, {{[\"Content-Type\"] = \"application/x-www-form-urlencoded\"}}, {}),\n",
                    lua_str(path),
                    lua_str(&form_body()),
                ),
            })
            .collect();
        format!(
            r#"local expect = {expect}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
local reqs
local i = 0
function init(args)
  statuses = {{}}; ok = 0; bad_body = 0
  reqs = {{
{requests}  }}
end
function request() i = i % #reqs + 1; return reqs[i] end
function response(status, headers, body)
  if status < 200 or status > 299 then
    statuses[status] = (statuses[status] or 0) + 1
  elseif body ~= nil and string.find(body, expect, 1, true) then
    ok = ok + 1
  else
    bad_body = bad_body + 1
  end
end
function done(summary, latency, requests)
  local good, bad, st = 0, 0, {{}}
  for _, t in ipairs(threads) do
    good = good + t:get("ok"); bad = bad + t:get("bad_body")
    for code, n in pairs(t:get("statuses")) do st[code] = (st[code] or 0) + n end
  end
  io.write(string.format("LOAD requests %d\n", summary.requests))
  io.write(string.format("LOAD ok %d\n", good))
  io.write(string.format("LOAD bad_body %d\n", bad))
  for code, n in pairs(st) do io.write(string.format("LOAD status %d %d\n", code, n)) end
  local e = summary.errors
  io.write(string.format("LOAD errors connect %d read %d write %d timeout %d\n", e.connect, e.read, e.write, e.timeout))
  io.write(string.format("LOAD latency_max_us %d\n", latency.max))
end
"#,
            expect = lua_str(&self.expect),
        )
    }
}

/// wrk's time argument (it takes s, m, h only): whole seconds, at least 1.
fn whole_seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64().ceil().max(1.0) as u64)
}

/// A lua string literal.
fn lua_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => out.push_str(&format!("\\{}", c as u32)),
        }
    }
    out.push('"');
    out
}
