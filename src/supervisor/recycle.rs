//! Graceful worker recycling beyond `pm.max_requests` (DESIGN §6):
//! `pool.max_memory_mb` and `pool.max_lifetime_ms`.
//!
//! Twice a second the pool's workers are read from /proc: their private
//! memory — `RssAnon` from /proc/PID/status, one small read: PHP's heap and
//! the chunks its allocator keeps cached after a big request are anonymous
//! private memory, while opcache and the binary are shared (`RssShmem`,
//! `RssFile`) and would make RSS count every child's share of them; PSS
//! would divide shared pages fairly but needs /proc/PID/smaps_rollup, a walk
//! of every mapping — and their age (/proc/PID/stat's start time).
//!
//! A child over a limit is recycled without failing a request: the backend
//! lends its pooled connection no more, closes it once idle (at once when
//! it is idle now, after its request otherwise), and only when the child
//! holds no connection does it get SIGQUIT (a php-fpm child finishes its
//! request first; this one has none). php-fpm's master starts a fresh one.
//! At most a quarter of the pool waits to quit at a time.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::Pool;
use crate::fcgi::backend::{Backend, Children};

/// Why a child is recycled: the `reason` label of the recycles metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    Memory,
    Lifetime,
}

impl Reason {
    pub fn label(self) -> &'static str {
        self.into()
    }
}

/// One look at the pool: asks recycled children that hold no connection
/// to quit, forgets the ones that are gone, and starts recycling children
/// over a limit — at most a quarter of the pool (at least one) waiting to
/// quit at a time, so capacity never drops by more than that.
pub fn tick(backend: &Backend, pool: &Pool) {
    let Some(children) = backend.children() else {
        return;
    };
    let mut waiting = 0;
    for pid in children.recycling() {
        if !alive(pid) {
            children.forget(pid);
        } else if children.ready_to_quit(pid) {
            quit(pid);
        } else if !children.asked_to_quit(pid) {
            waiting += 1;
        }
    }
    let limit = (backend.pool_size / 4).max(1) as usize;
    for pid in children.workers() {
        if waiting >= limit {
            return;
        }
        if children.is_recycling(pid) {
            continue;
        }
        let Some((reason, rss_kb, age)) = over_limit(pid, pool) else {
            continue;
        };
        let held = children.held_by(pid);
        start(backend, children, pid);
        super::metrics::global().php_fpm_recycled(reason);
        tracing::info!(
            pid,
            reason = reason.label(),
            rss_anon_kb = rss_kb,
            age_s = age.as_secs(),
            held,
            "recycling a php-fpm child: no new request goes to it; it quits after its current one"
        );
        if children.ready_to_quit(pid) {
            quit(pid);
        } else {
            waiting += 1;
        }
    }
}

/// SIGQUIT: php-fpm's child finishes its request (it has none: it holds
/// no connection of tqsup's) and exits; the master starts a fresh one.
fn quit(pid: u32) {
    tracing::debug!(pid, "recycled php-fpm child holds no connection; SIGQUIT");
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGQUIT);
}

/// Marks `pid` and closes its idle connection now.
fn start(backend: &Backend, children: &Children, pid: u32) {
    children.start_recycling(pid);
    backend.close_idle_of(pid);
}

/// Whether `pid` is over a limit: why, its private memory (kB) and age.
fn over_limit(pid: u32, pool: &Pool) -> Option<(Reason, u64, std::time::Duration)> {
    let rss_kb = rss_anon_kb(pid)?;
    let age = age(pid)?;
    if pool.max_memory_mb > 0 && rss_kb >= pool.max_memory_mb * 1024 {
        return Some((Reason::Memory, rss_kb, age));
    }
    if !pool.max_lifetime.is_zero() && age >= pool.max_lifetime {
        return Some((Reason::Lifetime, rss_kb, age));
    }
    None
}

/// `RssAnon` of /proc/PID/status, in kB.
pub fn rss_anon_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// How long `pid` has run: /proc/uptime minus its start time.
fn age(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at ") ".
    let after = stat.rsplit_once(") ")?.1;
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()? as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let age = uptime - start_ticks as f64 / ticks;
    Some(std::time::Duration::from_secs_f64(age.max(0.0)))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_memory_and_age_read_from_proc() {
        let me = std::process::id();
        assert!(rss_anon_kb(me).is_some_and(|kb| kb > 0));
        let a = age(me).unwrap();
        assert!(a < std::time::Duration::from_secs(24 * 3600), "{a:?}");
        assert!(alive(me));
    }
}
