//! `php_fpm.pool:` in php-fpm's own terms, held to php-fpm's own rules so
//! that `tqsup check` fails where php-fpm would.

use super::*;

const SPARE_RULE: &str =
    "php-fpm needs min_spare_servers ≤ start_servers ≤ max_spare_servers ≤ max_children";

pub(super) fn read(c: &mut Checker, r: &RawPool) -> Pool {
    let name = c.or(key!(r.name), POOL_NAME.to_string(), "a pool name");
    if !name_ok(&name, NAME) {
        let why = format!("`{name}` has characters php-fpm does not allow in a pool name");
        c.problem("name", why, "use letters, digits, `_`, `.` and `-` only");
    } else if name.eq_ignore_ascii_case("global") {
        let why = "`global` is php-fpm's own section ([global]), not a pool";
        let fix = format!("choose another name, e.g. {POOL_NAME}");
        c.problem("name", why, fix);
    }
    let kind = c.choice(("type", &r.kind)).unwrap_or(POOL_KIND);
    let fix = format!("set it to the number of PHP requests to run at once, e.g. {MAX_CHILDREN}");
    let max_children = c.count(key!(r.max_children), MAX_CHILDREN, fix);
    let min_spare = c.or(key!(r.min_spare_servers), MIN_SPARE_SERVERS, WHOLE);
    let start = r.start_servers.get().copied().unwrap_or(0);
    let max_spare = max_spare_servers(start, min_spare, max_children);
    let max_spare = c.or(key!(r.max_spare_servers), max_spare, WHOLE);
    let start = start_servers(min_spare, max_spare);
    let start = c.or(key!(r.start_servers), start, WHOLE);
    if kind == PoolKind::Dynamic && max_children >= 1 {
        let why = "must be at least 1 for a dynamic pool";
        let fix = "set it to 1 or more";
        c.require(min_spare >= 1, "min_spare_servers", why, fix);
        let why = format!("({max_spare}) is greater than max_children ({max_children})");
        let fix = format!("lower it to {max_children} or less, or raise max_children");
        c.require(max_spare <= max_children, "max_spare_servers", why, fix);
        if min_spare > max_spare {
            let why = format!("({min_spare}) is greater than max_spare_servers ({max_spare})");
            c.problem("min_spare_servers", why, SPARE_RULE);
        } else if !(min_spare..=max_spare).contains(&start) {
            let why = format!(
                "({start}) must be from min_spare_servers ({min_spare}) to max_spare_servers ({max_spare})"
            );
            c.problem("start_servers", why, SPARE_RULE);
        }
    }
    let recycle = "a whole number (0 = never recycle)";
    let off = "a whole number of MiB (0 = off)";
    Pool {
        name,
        kind,
        max_children: max_children.max(1),
        start_servers: start,
        min_spare_servers: min_spare,
        max_spare_servers: max_spare,
        max_requests: c.or(key!(r.max_requests), 0, recycle),
        process_idle_timeout: c.ms(key!(r.process_idle_timeout_ms), PROCESS_IDLE_TIMEOUT, 1),
        request_terminate_timeout: c.ms(key!(r.request_terminate_timeout_ms), Duration::ZERO, 0),
        max_memory_mb: c.or(key!(r.max_memory_mb), 0, off),
        max_lifetime: c.ms(key!(r.max_lifetime_ms), Duration::ZERO, 0),
    }
}
