//! `php_fpm.pool:` in php-fpm's own terms, held to php-fpm's own rules so
//! that `tqsup check` fails where php-fpm would.

use std::time::Duration;

use super::{Checker, WHOLE, name_ok};
use crate::config::defaults::*;
use crate::config::model::{Pool, PoolKind};
use crate::config::raw::RawPool;

const SPARE_RULE: &str =
    "php-fpm needs min_spare_servers ≤ start_servers ≤ max_spare_servers ≤ max_children";

pub(super) fn read(c: &mut Checker, r: &RawPool) -> Pool {
    let name = c.or(key!(r.name), POOL_NAME.to_string(), "a pool name");
    if !name_ok(&name) {
        let message = format!("`{name}` has characters php-fpm does not allow in a pool name");
        c.problem(
            "name",
            message,
            "use letters, digits, `_`, `.` and `-` only",
        );
    } else if name.eq_ignore_ascii_case("global") {
        let message = "`global` is php-fpm's own section ([global]), not a pool";
        c.problem(
            "name",
            message,
            format!("choose another name, e.g. {POOL_NAME}"),
        );
    }
    let kind = c.choice(("type", &r.kind)).unwrap_or(POOL_KIND);
    let max_children = c.or(key!(r.max_children), MAX_CHILDREN, WHOLE);
    if max_children < 1 {
        let fix =
            format!("set it to the number of PHP requests to run at once, e.g. {MAX_CHILDREN}");
        c.problem("max_children", "must be at least 1", fix);
    }
    // Unset spare counts are derived to fit the ones that are set.
    let min_spare = c.or(key!(r.min_spare_servers), MIN_SPARE_SERVERS, WHOLE);
    let start_set = r.start_servers.get().copied().unwrap_or(0);
    let max_spare = MAX_SPARE_SERVERS
        .max(start_set)
        .max(min_spare)
        .min(max_children.max(1));
    let max_spare = c.or(key!(r.max_spare_servers), max_spare, WHOLE);
    let start = min_spare + max_spare.saturating_sub(min_spare) / 2;
    let start = c.or(key!(r.start_servers), start, WHOLE);
    if kind == PoolKind::Dynamic && max_children >= 1 {
        if min_spare < 1 {
            let message = "must be at least 1 for a dynamic pool";
            c.problem("min_spare_servers", message, "set it to 1 or more");
        }
        if max_spare > max_children {
            let message = format!("({max_spare}) is greater than max_children ({max_children})");
            let fix = format!("lower it to {max_children} or less, or raise max_children");
            c.problem("max_spare_servers", message, fix);
        }
        if min_spare > max_spare {
            let message = format!("({min_spare}) is greater than max_spare_servers ({max_spare})");
            c.problem("min_spare_servers", message, SPARE_RULE);
        } else if start < min_spare || start > max_spare {
            let message = format!(
                "({start}) must be from min_spare_servers ({min_spare}) to max_spare_servers ({max_spare})"
            );
            c.problem("start_servers", message, SPARE_RULE);
        }
    }
    Pool {
        name,
        kind,
        max_children: max_children.max(1),
        start_servers: start,
        min_spare_servers: min_spare,
        max_spare_servers: max_spare,
        max_requests: c.or(
            key!(r.max_requests),
            0,
            "a whole number (0 = never recycle)",
        ),
        process_idle_timeout: c.ms(key!(r.process_idle_timeout_ms), PROCESS_IDLE_TIMEOUT, 1),
        request_terminate_timeout: c.ms(key!(r.request_terminate_timeout_ms), Duration::ZERO, 0),
        max_memory_mb: c.or(key!(r.max_memory_mb), 0, "a whole number of MiB (0 = off)"),
        max_lifetime: c.ms(key!(r.max_lifetime_ms), Duration::ZERO, 0),
    }
}
