//! `forward:`: the built-in FastCGI forwarding listener, its client limits,
//! the breaker's health probe and the lanes.

use super::*;

const THREADS: &str = "a whole number (0: one per CPU but one, at most 8)";
const THREADS_FIX: &str = "leave it at 0 (auto) or set the number of CPUs";
const BYTES: &str = "a whole number of bytes";

pub(super) fn read(c: &mut Checker, r: &RawForward) -> Forward {
    let enabled = c.or(key!(r.enabled), true, BOOL);
    let listen = if c.ctx.embedded {
        // Zero-config dev mode: the dev HTTP front is the way in; a web
        // server can still be pointed at this socket, and nothing takes
        // port 9000 from another project.
        c.get(key!(r.listen), "an address or socket path");
        Endpoint::Unix(c.ctx.base_dir.join(ZERO_CONFIG_FCGI_SOCKET))
    } else {
        let listen = c.endpoint(key!(r.listen), "an address or socket path");
        listen.unwrap_or(Endpoint::Tcp(FORWARD_LISTEN.into()))
    };
    let socket_mode = socket_mode(c, r);
    let fix = format!("set it to {MAX_CONNECTIONS} or so");
    let max_connections = c.count(key!(r.max_connections), MAX_CONNECTIONS, fix);
    let threads = c.or(key!(r.threads), 0, THREADS);
    let why = format!("must be at most {MAX_FORWARD_THREADS}");
    c.require(threads <= MAX_FORWARD_THREADS, "threads", why, THREADS_FIX);
    let queue_timeout = c.ms(key!(r.queue_timeout_ms), QUEUE_TIMEOUT, 0);
    let retry_idempotent = c.or(key!(r.retry_idempotent), true, BOOL);
    let params_timeout = c.ms(key!(r.params_timeout_ms), PARAMS_TIMEOUT, 1);
    let stdin_timeout = c.ms(key!(r.stdin_timeout_ms), STDIN_TIMEOUT, 1);
    let buffer = c.or(key!(r.params_buffer_bytes), PARAMS_BUFFER, BYTES);
    let why = format!("must be at least {MIN_PARAMS_BUFFER} bytes, is {buffer}");
    let fix = format!("set it to {PARAMS_BUFFER} (1 MiB, what nginx and php-fpm allow) or so");
    c.require(buffer >= MIN_PARAMS_BUFFER, "params_buffer_bytes", why, fix);
    let key = key!(r.params_buffer_total_bytes);
    let total = c.or(key, PARAMS_BUFFER_TOTAL, BYTES);
    let why = format!("must be at least forward.params_buffer_bytes ({buffer}), is {total}");
    let fix = "set it to 64 times params_buffer_bytes or so";
    c.require(total >= buffer, "params_buffer_total_bytes", why, fix);
    let idle = key!(r.pool_idle_timeout_ms);
    Forward {
        enabled,
        listen,
        socket_mode,
        max_connections,
        threads,
        queue_timeout,
        retry_idempotent,
        params_timeout,
        stdin_timeout,
        params_buffer: usize::try_from(buffer).unwrap_or(usize::MAX),
        params_buffer_total: usize::try_from(total).unwrap_or(usize::MAX),
        health: c.section(key!(r.health), health),
        lanes: lanes(c, r, queue_timeout),
        slow_request: c.ms(key!(r.slow_request_ms), Duration::ZERO, 0),
        pool_idle_timeout: c.get(idle, MILLIS).map(Duration::from_millis),
    }
}

/// An octal file mode written as a string, e.g. "0660".
fn socket_mode(c: &mut Checker, r: &RawForward) -> u32 {
    let expect = "an octal mode in quotes, e.g. \"0660\"";
    let Some(text) = c.get(key!(r.socket_mode), expect) else {
        return SOCKET_MODE;
    };
    match u32::from_str_radix(&text, 8) {
        Ok(mode) if mode <= 0o777 && (3..=4).contains(&text.len()) => mode,
        _ => {
            let why = format!("`{text}` is not an octal file mode");
            c.problem("socket_mode", why, "write it in quotes, e.g. \"0660\"");
            SOCKET_MODE
        }
    }
}

fn health(c: &mut Checker, r: &RawHealth) -> Health {
    let fix = format!("set it to {FAILURE_THRESHOLD}");
    Health {
        interval: c.ms(key!(r.interval_ms), HEALTH_INTERVAL, 1),
        timeout: c.ms(key!(r.timeout_ms), HEALTH_TIMEOUT, 1),
        failure_threshold: c.count(key!(r.failure_threshold), FAILURE_THRESHOLD, fix),
        open: c.ms(key!(r.open_ms), BREAKER_OPEN, 1),
    }
}

const LANE_MATCH_FIX: &str =
    "match on the path as SCRIPT_NAME or REQUEST_URI has it, e.g. \"/export/*\" or \"/report.php\"";

fn lanes(c: &mut Checker, r: &RawForward, queue_timeout: Duration) -> Vec<Lane> {
    let mut names = HashSet::new();
    c.list(key!(r.lanes), "a list of lanes", |c, i, l: &RawLane| {
        let name = c.or(key!(l.name), format!("lane{}", i + 1), "a name");
        if !name_ok(&name, NAME) {
            let fix = "use letters, digits, `_`, `.` and `-` (it becomes a metric label)";
            c.problem("name", format!("`{name}` is not a simple name"), fix);
        } else if !names.insert(name.clone()) {
            let fix = "give each lane its own name";
            c.problem("name", format!("`{name}` is used by another lane"), fix);
        }
        let expect = "a path glob or prefix";
        let matches = c.or(("match", &l.matches), String::new(), expect);
        if !matches.starts_with('/') {
            let why = format!("`{matches}` does not start with `/`");
            c.problem("match", why, LANE_MATCH_FIX);
        } else {
            c.glob("match", &matches);
        }
        let max = c.or(key!(l.max), 0, "a whole number ≥ 1");
        let why = "is 0 (or missing): the lane's requests could never run";
        let fix = "set how many pooled connections the lane may hold at once, e.g. 1";
        c.require(max > 0, "max", why, fix);
        Lane {
            name,
            matches,
            max,
            queue_timeout: c.ms(key!(l.queue_timeout_ms), queue_timeout, 0),
        }
    })
}

/// A lane may not hold the whole pool (checked once both are read).
pub(super) fn lanes_fit_the_pool(c: &mut Checker, config: &Config) {
    let pool_size = config.php_fpm.pool_size;
    for (i, lane) in config.forward.lanes.iter().enumerate() {
        let max = lane.max;
        let why = format!(
            "({max}) is more than php_fpm.pool_size ({pool_size}): the lane could take the whole pool and more"
        );
        let fix = "make it smaller than the pool, leaving connections for everything else";
        let key = format!("forward.lanes[{i}].max");
        c.require(max <= pool_size, &key, why, fix);
    }
}
