//! Every problem message, word for word: deliberately bad configs covering
//! every section, each with the exact text of all its problems in order.
//! Written from the behaviour before validation was restructured (issue 14),
//! so the structure can change while the messages cannot.

use super::*;

/// Loads `text` as `tqsup.yaml` in a fresh project directory (with a
/// `public/`) and returns the error, the directory written as `<base>`.
fn error_text(text: &str) -> (ConfigError, String) {
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(base.path().join("public")).unwrap();
    let text = text.replace("LONG_SOCKET", &long_socket());
    match from_str(&text, &base.path().join("tqsup.yaml"), base.path(), &[]) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(e) => (e, base.path().display().to_string()),
    }
}

/// A unix socket path over the kernel's limit.
fn long_socket() -> String {
    format!("/run/{}/fcgi.sock", "d".repeat(100))
}

fn placeholders(s: &str, base: &str) -> String {
    s.replace(base, "<base>")
        .replace(&long_socket(), "LONG_SOCKET")
}

/// (what the case covers, the config, every problem in order)
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "top level not a mapping",
        "- a\n- b\n",
        &[
            "(top level): expected a mapping of sections, found a list [\"a\",\"b\"] (fix: start the file with sections such as `php_fpm:`)",
        ],
    ),
    (
        "control characters and unknown top-level keys",
        "forwrd: {}\nzzz: 1\ndev:\n  watch:\n    paths: [ok, \"a\\tb\"]\nphp_fpm:\n  settings:\n    \"k\\u0001\": v\n",
        &[
            "dev.watch.paths[1]: contains a control character (newline, NUL, tab, …): \"a\\tb\" (fix: remove the control characters; every value must fit on one line)",
            "php_fpm.settings.k\\u{1}: key contains a control character (fix: remove the control characters from the key)",
            "forwrd: unknown key (fix: did you mean `forward`?)",
            "zzz: unknown key (fix: remove it; known keys here: admin, dev, forward, log, php_fpm, supervisor)",
            "php_fpm.settings.k\u{1}: is not a php.ini directive name (fix: use names like memory_limit or opcache.enable)",
        ],
    ),
    (
        "sections of the wrong type",
        "php_fpm: 1\nforward: [1]\nsupervisor: x\ndev: true\nadmin: 2\nlog: 3\n",
        &[
            "php_fpm: expected a mapping (key: value lines), found a number 1 (fix: set `php_fpm` to a mapping (key: value lines))",
            "forward: expected a mapping (key: value lines), found a list [1] (fix: set `forward` to a mapping (key: value lines))",
            "supervisor: expected a mapping (key: value lines), found a string \"x\" (fix: set `supervisor` to a mapping (key: value lines))",
            "dev: expected a mapping (key: value lines), found a boolean true (fix: set `dev` to a mapping (key: value lines))",
            "admin: expected a mapping (key: value lines), found a number 2 (fix: set `admin` to a mapping (key: value lines))",
            "log: expected a mapping (key: value lines), found a number 3 (fix: set `log` to a mapping (key: value lines))",
        ],
    ),
    (
        "php_fpm: every key of the wrong type",
        "php_fpm:\n  enabled: 1\n  binary: 1\n  php_ini: 1\n  listen: 1\n  transport: 1\n  pool_size: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  connect_timeout_ms: x\n  request_timeout_ms: x\n  read_timeout_ms: x\n  write_timeout_ms: x\n  document_root: 1\n  user: 1\n  group: 1\n  allow_root: x\n  settings: [1]\n  env: 1\n  pool: 1\n",
        &[
            "php_fpm.enabled: expected true or false, found a number 1 (fix: set `enabled` to true or false)",
            "php_fpm.binary: expected a program name or path, found a number 1 (fix: set `binary` to a program name or path)",
            "php_fpm.php_ini: expected a file path, found a number 1 (fix: set `php_ini` to a file path)",
            "php_fpm.listen: expected an address or socket path, found a number 1 (fix: set `listen` to an address or socket path)",
            "php_fpm.transport: expected tcp or unix, found a number 1 (fix: set `transport` to tcp or unix)",
            "php_fpm.pool: expected a mapping (key: value lines), found a number 1 (fix: set `pool` to a mapping (key: value lines))",
            "php_fpm.pool_size: expected a whole number, found a string (fix: set `pool_size` to a whole number)",
            "php_fpm.connect_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `connect_timeout_ms` to a whole number of milliseconds)",
            "php_fpm.request_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `request_timeout_ms` to a whole number of milliseconds)",
            "php_fpm.read_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `read_timeout_ms` to a whole number of milliseconds)",
            "php_fpm.write_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `write_timeout_ms` to a whole number of milliseconds)",
            "php_fpm.document_root: expected a directory path, found a number 1 (fix: set `document_root` to a directory path)",
            "php_fpm.user: expected a user or group name, found a number 1 (fix: set `user` to a user or group name)",
            "php_fpm.group: expected a user or group name, found a number 1 (fix: set `group` to a user or group name)",
            "php_fpm.allow_root: expected true or false, found a string \"x\" (fix: set `allow_root` to true or false)",
            "php_fpm.settings: expected a mapping of php.ini names to values, found a list [1] (fix: set `settings` to a mapping of php.ini names to values)",
            "php_fpm.env: expected a mapping of variable names to values, found a number 1 (fix: set `env` to a mapping of variable names to values)",
        ],
    ),
    (
        "php_fpm: every rule",
        "php_fpm:\n  enabled: false\n  pool_siz: 3\n  colour: red\n  php_ini: missing.ini\n  transport: tcp\n  pool_size: 0\n  connect_timeout_ms: 0\n  request_timeout_ms: 0\n  read_timeout_ms: 0\n  write_timeout_ms: 0\n  document_root: nowhere\n  user: bad user\n  group: \"g:x\"\n  settings: { \"bad key\": 1, memory_limit: 128M, display_errors: true }\n  env: { 1BAD: x, SECRET: \"$x\", OK: true }\n",
        &[
            "php_fpm.colour: unknown key (fix: remove it; known keys here: allow_root, binary, connect_timeout_ms, document_root, enabled, env, group, listen, php_ini, pool, pool_size, read_timeout_ms, request_timeout_ms, settings, transport, user, write_timeout_ms)",
            "php_fpm.pool_siz: unknown key (fix: did you mean `php_fpm.pool_size`?)",
            "php_fpm.php_ini: <base>/missing.ini is not a file (fix: point it at an existing php.ini or remove the key)",
            "php_fpm.transport: is `tcp` but php_fpm.listen is not set (the default is a private unix socket) (fix: set php_fpm.listen to host:port, e.g. 127.0.0.1:9001)",
            "php_fpm.listen: must be set when php_fpm.enabled is false (tqsup forwards to a php-fpm run elsewhere) (fix: set php_fpm.listen to that php-fpm's address, e.g. 127.0.0.1:9001)",
            "php_fpm.pool_size: is 0, must be from 1 to php_fpm.pool.max_children (5): each pooled connection pins one php-fpm child (fix: remove it (defaults to 5) or lower it)",
            "php_fpm.connect_timeout_ms: must be at least 1 ms, is 0 (fix: set `connect_timeout_ms` to 1 or more)",
            "php_fpm.request_timeout_ms: must be at least 1 ms, is 0 (fix: set `request_timeout_ms` to 1 or more)",
            "php_fpm.read_timeout_ms: must be at least 1 ms, is 0 (fix: set `read_timeout_ms` to 1 or more)",
            "php_fpm.write_timeout_ms: must be at least 1 ms, is 0 (fix: set `write_timeout_ms` to 1 or more)",
            "php_fpm.document_root: <base>/nowhere does not exist or is not a directory (fix: create it, or set php_fpm.document_root to your project's public directory)",
            "php_fpm.user: `bad user` is not a valid user or group name (fix: use a name such as www-data)",
            "php_fpm.group: `g:x` is not a valid user or group name (fix: use a name such as www-data)",
            "php_fpm.settings.bad key: is not a php.ini directive name (fix: use names like memory_limit or opcache.enable)",
            "php_fpm.env.1BAD: is not a valid environment variable name (fix: use letters, digits and _, not starting with a digit)",
            "php_fpm.env.SECRET: starts with `$`, which php-fpm reads as the name of its master's environment variable (the value would reach PHP as that variable's value, usually empty) (fix: php-fpm's env[] cannot carry a value starting with `$`: change the value, or pass it another way (a file the application reads))",
        ],
    ),
    (
        "transport: unix for a tcp listen",
        "php_fpm:\n  listen: 127.0.0.1:9001\n  transport: unix\n",
        &[
            "php_fpm.transport: is `unix` but php_fpm.listen is a tcp address (fix: remove `transport` (it is inferred from `listen`) or make them agree)",
        ],
    ),
    (
        "transport: tcp for a unix listen",
        "php_fpm:\n  listen: /run/x.sock\n  transport: tcp\n",
        &[
            "php_fpm.transport: is `tcp` but php_fpm.listen is a unix address (fix: remove `transport` (it is inferred from `listen`) or make them agree)",
        ],
    ),
    (
        "transport: unknown",
        "php_fpm:\n  transport: udp\n",
        &["php_fpm.transport: unknown transport `udp` (fix: use tcp or unix)"],
    ),
    (
        "endpoints that do not parse",
        "php_fpm:\n  listen: \"unix:\"\nforward:\n  listen: localhost:99999\nadmin:\n  listen: \"bad_host!:90\"\n",
        &[
            "php_fpm.listen: `unix:` needs a socket path after it (fix: write host:port (127.0.0.1:9000) or a socket path (/run/tqsup/fcgi.sock))",
            "forward.listen: port `99999` is not a number from 0 to 65535 (fix: write host:port (127.0.0.1:9000) or a socket path (/run/tqsup/fcgi.sock))",
            "admin.listen: host `bad_host!` is not a valid host name or address (fix: write host:port (127.0.0.1:9000) or a socket path (/run/tqsup/fcgi.sock))",
        ],
    ),
    (
        "endpoints: neither, too long",
        "php_fpm:\n  listen: nonsense\nforward:\n  listen: LONG_SOCKET\nadmin:\n  listen: LONG_SOCKET\n",
        &[
            "php_fpm.listen: `nonsense` is neither host:port nor a socket path (fix: write host:port (127.0.0.1:9000) or a socket path (/run/tqsup/fcgi.sock))",
            "forward.listen: the socket path LONG_SOCKET is 115 bytes; the kernel takes at most 107 (fix: use a shorter path, e.g. under /run)",
            "admin.listen: the socket path LONG_SOCKET is 115 bytes; the kernel takes at most 107 (fix: use a shorter path, e.g. under /run)",
        ],
    ),
    (
        "pool: every key of the wrong type",
        "php_fpm:\n  pool:\n    name: 1\n    type: 1\n    max_children: x\n    start_servers: x\n    min_spare_servers: x\n    max_spare_servers: x\n    max_requests: x\n    process_idle_timeout_ms: x\n    request_terminate_timeout_ms: x\n    max_memory_mb: x\n    max_lifetime_ms: x\n    max_chilren: 3\n",
        &[
            "php_fpm.pool.max_chilren: unknown key (fix: did you mean `php_fpm.pool.max_children`?)",
            "php_fpm.pool.name: expected a pool name, found a number 1 (fix: set `name` to a pool name)",
            "php_fpm.pool.type: expected static, dynamic or ondemand, found a number 1 (fix: set `type` to static, dynamic or ondemand)",
            "php_fpm.pool.max_children: expected a whole number, found a string \"x\" (fix: set `max_children` to a whole number)",
            "php_fpm.pool.min_spare_servers: expected a whole number, found a string \"x\" (fix: set `min_spare_servers` to a whole number)",
            "php_fpm.pool.max_spare_servers: expected a whole number, found a string \"x\" (fix: set `max_spare_servers` to a whole number)",
            "php_fpm.pool.start_servers: expected a whole number, found a string \"x\" (fix: set `start_servers` to a whole number)",
            "php_fpm.pool.max_requests: expected a whole number (0 = never recycle), found a string \"x\" (fix: set `max_requests` to a whole number (0 = never recycle))",
            "php_fpm.pool.process_idle_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `process_idle_timeout_ms` to a whole number of milliseconds)",
            "php_fpm.pool.request_terminate_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `request_terminate_timeout_ms` to a whole number of milliseconds)",
            "php_fpm.pool.max_memory_mb: expected a whole number of MiB (0 = off), found a string \"x\" (fix: set `max_memory_mb` to a whole number of MiB (0 = off))",
            "php_fpm.pool.max_lifetime_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `max_lifetime_ms` to a whole number of milliseconds)",
        ],
    ),
    (
        "pool: global, unknown type, idle timeout",
        "php_fpm:\n  pool:\n    name: global\n    type: sometimes\n    process_idle_timeout_ms: 0\n",
        &[
            "php_fpm.pool.name: `global` is php-fpm's own section ([global]), not a pool (fix: choose another name, e.g. www)",
            "php_fpm.pool.type: unknown process manager `sometimes` (fix: use static, dynamic or ondemand)",
            "php_fpm.pool.process_idle_timeout_ms: must be at least 1 ms, is 0 (fix: set `process_idle_timeout_ms` to 1 or more)",
        ],
    ),
    (
        "pool: a bad name",
        "php_fpm:\n  pool:\n    name: \"www]\"\n",
        &[
            "php_fpm.pool.name: `www]` has characters php-fpm does not allow in a pool name (fix: use letters, digits, `_`, `.` and `-` only)",
        ],
    ),
    (
        "dynamic: min_spare 0, max_spare over max_children",
        "php_fpm:\n  pool:\n    max_children: 4\n    min_spare_servers: 0\n    max_spare_servers: 5\n",
        &[
            "php_fpm.pool.min_spare_servers: must be at least 1 for a dynamic pool (fix: set it to 1 or more)",
            "php_fpm.pool.max_spare_servers: (5) is greater than max_children (4) (fix: lower it to 4 or less, or raise max_children)",
        ],
    ),
    (
        "dynamic: min_spare over max_spare",
        "php_fpm:\n  pool:\n    min_spare_servers: 3\n    max_spare_servers: 2\n",
        &[
            "php_fpm.pool.min_spare_servers: (3) is greater than max_spare_servers (2) (fix: php-fpm needs min_spare_servers ≤ start_servers ≤ max_spare_servers ≤ max_children)",
        ],
    ),
    (
        "dynamic: start_servers out of range",
        "php_fpm:\n  pool:\n    start_servers: 4\n    max_spare_servers: 3\n",
        &[
            "php_fpm.pool.start_servers: (4) must be from min_spare_servers (1) to max_spare_servers (3) (fix: php-fpm needs min_spare_servers ≤ start_servers ≤ max_spare_servers ≤ max_children)",
        ],
    ),
    (
        "max_children 0, pool_size too big",
        "php_fpm:\n  pool_size: 2\n  pool:\n    max_children: 0\n",
        &[
            "php_fpm.pool.max_children: must be at least 1 (fix: set it to the number of PHP requests to run at once, e.g. 5)",
            "php_fpm.pool_size: is 2, must be from 1 to php_fpm.pool.max_children (1): each pooled connection pins one php-fpm child (fix: remove it (defaults to 1) or lower it)",
        ],
    ),
    (
        "forward: every key of the wrong type",
        "forward:\n  enabled: x\n  listen: 1\n  socket_mode: 660\n  max_connections: x\n  threads: x\n  queue_timeout_ms: x\n  retry_idempotent: x\n  params_timeout_ms: x\n  stdin_timeout_ms: x\n  params_buffer_bytes: x\n  params_buffer_total_bytes: x\n  health: 1\n  lanes: 1\n  slow_request_ms: x\n  pool_idle_timeout_ms: x\n  listn: 1\n",
        &[
            "forward.listn: unknown key (fix: did you mean `forward.listen`?)",
            "forward.enabled: expected true or false, found a string \"x\" (fix: set `enabled` to true or false)",
            "forward.listen: expected an address or socket path, found a number 1 (fix: set `listen` to an address or socket path)",
            "forward.socket_mode: expected an octal mode in quotes, e.g. \"0660\", found a number 660 (fix: set `socket_mode` to an octal mode in quotes, e.g. \"0660\")",
            "forward.max_connections: expected a whole number, found a string \"x\" (fix: set `max_connections` to a whole number)",
            "forward.threads: expected a whole number (0: one per CPU but one, at most 8), found a string \"x\" (fix: set `threads` to a whole number (0: one per CPU but one, at most 8))",
            "forward.queue_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `queue_timeout_ms` to a whole number of milliseconds)",
            "forward.retry_idempotent: expected true or false, found a string \"x\" (fix: set `retry_idempotent` to true or false)",
            "forward.params_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `params_timeout_ms` to a whole number of milliseconds)",
            "forward.stdin_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `stdin_timeout_ms` to a whole number of milliseconds)",
            "forward.params_buffer_bytes: expected a whole number of bytes, found a string \"x\" (fix: set `params_buffer_bytes` to a whole number of bytes)",
            "forward.params_buffer_total_bytes: expected a whole number of bytes, found a string \"x\" (fix: set `params_buffer_total_bytes` to a whole number of bytes)",
            "forward.health: expected a mapping (key: value lines), found a number 1 (fix: set `health` to a mapping (key: value lines))",
            "forward.lanes: expected a list of lanes, found a number 1 (fix: set `lanes` to a list of lanes)",
            "forward.slow_request_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `slow_request_ms` to a whole number of milliseconds)",
            "forward.pool_idle_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `pool_idle_timeout_ms` to a whole number of milliseconds)",
        ],
    ),
    (
        "forward: every rule",
        "forward:\n  socket_mode: \"999\"\n  max_connections: 0\n  threads: 65\n  params_timeout_ms: 0\n  stdin_timeout_ms: 0\n  params_buffer_bytes: 100\n  params_buffer_total_bytes: 50\n  health: { interval_ms: 0, timeout_ms: 0, failure_threshold: 0, open_ms: 0, intervl: 1 }\n",
        &[
            "forward.socket_mode: `999` is not an octal file mode (fix: write it in quotes, e.g. \"0660\")",
            "forward.max_connections: must be at least 1 (fix: set it to 1024 or so)",
            "forward.threads: must be at most 64 (fix: leave it at 0 (auto) or set the number of CPUs)",
            "forward.params_timeout_ms: must be at least 1 ms, is 0 (fix: set `params_timeout_ms` to 1 or more)",
            "forward.stdin_timeout_ms: must be at least 1 ms, is 0 (fix: set `stdin_timeout_ms` to 1 or more)",
            "forward.params_buffer_bytes: must be at least 16384 bytes, is 100 (fix: set it to 1048576 (1 MiB, what nginx and php-fpm allow) or so)",
            "forward.params_buffer_total_bytes: must be at least forward.params_buffer_bytes (100), is 50 (fix: set it to 64 times params_buffer_bytes or so)",
            "forward.health.intervl: unknown key (fix: did you mean `forward.health.interval_ms`?)",
            "forward.health.interval_ms: must be at least 1 ms, is 0 (fix: set `interval_ms` to 1 or more)",
            "forward.health.timeout_ms: must be at least 1 ms, is 0 (fix: set `timeout_ms` to 1 or more)",
            "forward.health.failure_threshold: must be at least 1 (fix: set it to 3)",
            "forward.health.open_ms: must be at least 1 ms, is 0 (fix: set `open_ms` to 1 or more)",
        ],
    ),
    (
        "forward.health: every key of the wrong type",
        "forward:\n  socket_mode: \"07777\"\n  health: { interval_ms: x, timeout_ms: x, failure_threshold: x, open_ms: x }\n",
        &[
            "forward.socket_mode: `07777` is not an octal file mode (fix: write it in quotes, e.g. \"0660\")",
            "forward.health.interval_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `interval_ms` to a whole number of milliseconds)",
            "forward.health.timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `timeout_ms` to a whole number of milliseconds)",
            "forward.health.failure_threshold: expected a whole number, found a string \"x\" (fix: set `failure_threshold` to a whole number)",
            "forward.health.open_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `open_ms` to a whole number of milliseconds)",
        ],
    ),
    (
        "forward.lanes",
        "php_fpm:\n  pool:\n    type: static\n    max_children: 4\nforward:\n  lanes:\n    - { name: 1, match: 2, max: x, queue_timeout_ms: y }\n    - { name: \"a b\", match: \"/a/[\", max: 5 }\n    - { name: lane1, match: x, max: 4, colour: red }\n",
        &[
            "forward.lanes[0].name: expected a name, found a number 1 (fix: set `name` to a name)",
            "forward.lanes[0].match: expected a path glob or prefix, found a number 2 (fix: set `match` to a path glob or prefix)",
            "forward.lanes[0].match: `` does not start with `/` (fix: match on the path as SCRIPT_NAME or REQUEST_URI has it, e.g. \"/export/*\" or \"/report.php\")",
            "forward.lanes[0].max: expected a whole number ≥ 1, found a string \"x\" (fix: set `max` to a whole number ≥ 1)",
            "forward.lanes[0].max: is 0 (or missing): the lane's requests could never run (fix: set how many pooled connections the lane may hold at once, e.g. 1)",
            "forward.lanes[0].queue_timeout_ms: expected a whole number of milliseconds, found a string \"y\" (fix: set `queue_timeout_ms` to a whole number of milliseconds)",
            "forward.lanes[1].name: `a b` is not a simple name (fix: use letters, digits, `_`, `.` and `-` (it becomes a metric label))",
            "forward.lanes[1].match: `/a/[` is not a valid glob: error parsing glob '/a/[': unclosed character class; missing ']' (fix: fix the pattern)",
            "forward.lanes[2].colour: unknown key (fix: remove it; known keys here: match, max, name, queue_timeout_ms)",
            "forward.lanes[2].name: `lane1` is used by another lane (fix: give each lane its own name)",
            "forward.lanes[2].match: `x` does not start with `/` (fix: match on the path as SCRIPT_NAME or REQUEST_URI has it, e.g. \"/export/*\" or \"/report.php\")",
            "forward.lanes[1].max: (5) is more than php_fpm.pool_size (4): the lane could take the whole pool and more (fix: make it smaller than the pool, leaving connections for everything else)",
        ],
    ),
    (
        "forward.lanes: not lanes",
        "forward:\n  lanes: [1]\n",
        &[
            "forward.lanes: expected a list of lanes, found a list [1] (fix: set `lanes` to a list of lanes)",
        ],
    ),
    (
        "supervisor: every key of the wrong type",
        "supervisor:\n  restart: 1\n  backoff_initial_ms: x\n  backoff_max_ms: x\n  stable_after_ms: x\n  max_restarts: x\n  restart_window_ms: x\n  ready_timeout_ms: x\n  stop_timeout_ms: x\n  restrt: 1\n",
        &[
            "supervisor.restrt: unknown key (fix: did you mean `supervisor.restart`?)",
            "supervisor.restart: expected always, on-failure or never, found a number 1 (fix: set `restart` to always, on-failure or never)",
            "supervisor.backoff_initial_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `backoff_initial_ms` to a whole number of milliseconds)",
            "supervisor.backoff_max_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `backoff_max_ms` to a whole number of milliseconds)",
            "supervisor.stable_after_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `stable_after_ms` to a whole number of milliseconds)",
            "supervisor.max_restarts: expected a whole number (0 = unlimited), found a string \"x\" (fix: set `max_restarts` to a whole number (0 = unlimited))",
            "supervisor.restart_window_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `restart_window_ms` to a whole number of milliseconds)",
            "supervisor.ready_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `ready_timeout_ms` to a whole number of milliseconds)",
            "supervisor.stop_timeout_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `stop_timeout_ms` to a whole number of milliseconds)",
        ],
    ),
    (
        "supervisor: every rule",
        "supervisor:\n  restart: sometimes\n  backoff_initial_ms: 500\n  backoff_max_ms: 100\n  restart_window_ms: 0\n  ready_timeout_ms: 0\n",
        &[
            "supervisor.restart: unknown policy `sometimes` (fix: use always, on-failure or never)",
            "supervisor.backoff_max_ms: (100) is less than backoff_initial_ms (500) (fix: make backoff_max_ms at least backoff_initial_ms)",
            "supervisor.restart_window_ms: must be at least 1 ms, is 0 (fix: set `restart_window_ms` to 1 or more)",
            "supervisor.ready_timeout_ms: must be at least 1 ms, is 0 (fix: set `ready_timeout_ms` to 1 or more)",
        ],
    ),
    (
        "supervisor: zero backoff",
        "supervisor:\n  backoff_initial_ms: 0\n  backoff_max_ms: 0\n",
        &[
            "supervisor.backoff_initial_ms: must be at least 1 ms, is 0 (fix: set `backoff_initial_ms` to 1 or more)",
            "supervisor.backoff_max_ms: must be at least 1 ms, is 0 (fix: set `backoff_max_ms` to 1 or more)",
        ],
    ),
    (
        "dev: every key of the wrong type",
        "dev:\n  enabled: x\n  config_dir: 1\n  http_listen: 1\n  watch: 1\n  hooks: 1\n  hook: 1\n",
        &[
            "dev.hook: unknown key (fix: did you mean `dev.hooks`?)",
            "dev.enabled: expected true or false, found a string \"x\" (fix: set `enabled` to true or false)",
            "dev.config_dir: expected a directory path, found a number 1 (fix: set `config_dir` to a directory path)",
            "dev.http_listen: expected host:port, e.g. 127.0.0.1:8000, found a number 1 (fix: set `http_listen` to host:port, e.g. 127.0.0.1:8000)",
            "dev.watch: expected a mapping (key: value lines), found a number 1 (fix: set `watch` to a mapping (key: value lines))",
            "dev.hooks: expected a list of hooks, found a number 1 (fix: set `hooks` to a list of hooks)",
        ],
    ),
    (
        "dev: every rule",
        "dev:\n  http_listen: /tmp/x.sock\n  watch:\n    paths: x\n    ignore: [\"[\", ok, \"{a\"]\n    gitignore: x\n    debounce_ms: x\n    poll_interval_ms: x\n    debounce: 1\n  hooks:\n    - { name: a, run: \"\", paths: [], then: x }\n    - { name: a, run: 1, paths: [\"[z\", ok], then: sometimes, extra: 1 }\n    - { name: 1, paths: 1, then: 1 }\n",
        &[
            "dev.http_listen: `/tmp/x.sock` is not host:port (fix: write e.g. 127.0.0.1:8000)",
            "dev.watch.debounce: unknown key (fix: did you mean `dev.watch.debounce_ms`?)",
            "dev.watch.paths: expected a list of paths, found a string \"x\" (fix: set `paths` to a list of paths)",
            "dev.watch.gitignore: expected true or false, found a string \"x\" (fix: set `gitignore` to true or false)",
            "dev.watch.ignore[0]: `[` is not a valid glob: error parsing glob '[': unclosed character class; missing ']' (fix: fix the pattern)",
            "dev.watch.ignore[2]: `{a` is not a valid glob: error parsing glob '{a': unclosed alternate group; missing '}' (maybe escape '{' with '[{]'?) (fix: fix the pattern)",
            "dev.watch.debounce_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `debounce_ms` to a whole number of milliseconds)",
            "dev.watch.poll_interval_ms: expected a whole number of milliseconds, found a string \"x\" (fix: set `poll_interval_ms` to a whole number of milliseconds)",
            "dev.hooks[0].run: is missing (fix: set `run` to the command to execute, e.g. \"npm run build\")",
            "dev.hooks[0].paths: is empty: the hook would never run (fix: list the globs that trigger it, e.g. [\"assets/**\"])",
            "dev.hooks[0].then: unknown action `x` (fix: use reload, restart or none)",
            "dev.hooks[1].extra: unknown key (fix: remove it; known keys here: name, paths, run, then)",
            "dev.hooks[1].name: `a` is used by another hook (fix: give each hook its own name)",
            "dev.hooks[1].run: expected a shell command, found a number 1 (fix: set `run` to a shell command)",
            "dev.hooks[1].run: is missing (fix: set `run` to the command to execute, e.g. \"npm run build\")",
            "dev.hooks[1].paths[0]: `[z` is not a valid glob: error parsing glob '[z': unclosed character class; missing ']' (fix: fix the pattern)",
            "dev.hooks[1].then: unknown action `sometimes` (fix: use reload, restart or none)",
            "dev.hooks[2].name: expected a name, found a number 1 (fix: set `name` to a name)",
            "dev.hooks[2].run: is missing (fix: set `run` to the command to execute, e.g. \"npm run build\")",
            "dev.hooks[2].paths: expected a list of globs, found a number 1 (fix: set `paths` to a list of globs)",
            "dev.hooks[2].paths: is empty: the hook would never run (fix: list the globs that trigger it, e.g. [\"assets/**\"])",
            "dev.hooks[2].then: expected reload, restart or none, found a number 1 (fix: set `then` to reload, restart or none)",
        ],
    ),
    (
        "dev: watch lists of the wrong type",
        "dev:\n  watch:\n    ignore: 1\n  hooks: [1]\n",
        &[
            "dev.watch.ignore: expected a list of names or globs, found a number 1 (fix: set `ignore` to a list of names or globs)",
            "dev.hooks: expected a list of hooks, found a list [1] (fix: set `hooks` to a list of hooks)",
        ],
    ),
    (
        "admin and log: wrong types",
        "admin:\n  listen: 1\n  lisen: 2\nlog:\n  format: 1\n  level: 1\n  access: [1]\n  acess: 1\n",
        &[
            "admin.lisen: unknown key (fix: did you mean `admin.listen`?)",
            "admin.listen: expected an address such as 127.0.0.1:9100, found a number 1 (fix: set `listen` to an address such as 127.0.0.1:9100)",
            "log.acess: unknown key (fix: did you mean `log.access`?)",
            "log.format: expected text or json, found a number 1 (fix: set `format` to text or json)",
            "log.level: expected a level such as info or debug, found a number 1 (fix: set `level` to a level such as info or debug)",
            "log.access: expected true, false or a file path, found a list [1] (fix: set `access` to true, false or a file path)",
        ],
    ),
    (
        "log: every rule, then lanes against pool_size",
        "php_fpm:\n  pool_size: 2\nforward:\n  lanes:\n    - { match: /x, max: 3 }\nlog:\n  format: xml\n  level: \"info,[\"\n  access: 5\n",
        &[
            "log.format: unknown format `xml` (fix: use text or json)",
            "log.level: `info,[` is not a log filter: invalid filter directive (fix: use error, warn, info, debug or trace)",
            "log.access: `5` is neither true, false nor a file path (fix: write true (into tqsup's log), false, or the path of a file)",
            "forward.lanes[0].max: (3) is more than php_fpm.pool_size (2): the lane could take the whole pool and more (fix: make it smaller than the pool, leaving connections for everything else)",
        ],
    ),
    (
        "log: an empty access path",
        "log:\n  access: \"  \"\n",
        &[
            "log.access: `  ` is neither true, false nor a file path (fix: write true (into tqsup's log), false, or the path of a file)",
        ],
    ),
    (
        "legacy: unknown keys, legacy names, leaf fixes",
        "php:\n  binary: 1\n  bogus: 2\n  settings:\n    \"a b\": 1\n    c: \"x\\ny\"\n  pool:\n    max_workers: lots\n    manager: sometimes\n    request_timeout: x\n    foo: 1\ndocument_root: nowhere\nlogging: {}\n",
        &[
            "php.bogus: unknown key in a legacy TQServer worker file (fix: remove it; TQServer keys tqsup maps here: binary, config_file, settings, pool)",
            "php.pool.foo: unknown key in a legacy TQServer worker file (fix: remove it; TQServer keys tqsup maps here: manager, mode, max_workers, start_workers, min_workers, max_spare_workers, max_requests, request_timeout, idle_timeout)",
            "php.pool.request_timeout: expected a whole number of seconds, found a string \"x\" (fix: set `request_timeout` to a whole number of seconds)",
            "php_fpm.settings.c: contains a control character (newline, NUL, tab, …): \"x\\ny\" (fix: remove the control characters; every value must fit on one line)",
            "php.binary: expected a program name or path, found a number 1 (fix: set `binary` to a program name or path)",
            "php.pool.manager: unknown process manager `sometimes` (fix: use static, dynamic or ondemand)",
            "php.pool.max_workers: expected a whole number, found a string \"lots\" (fix: set `max_workers` to a whole number)",
            "document_root: <base>/nowhere does not exist or is not a directory (fix: create it, or set php_fpm.document_root to your project's public directory)",
            "php_fpm.settings.a b: is not a php.ini directive name (fix: use names like memory_limit or opcache.enable)",
        ],
    ),
    (
        "legacy: fixes name the legacy key, in its unit",
        "php:\n  config_file: 1\n  pool:\n    idle_timeout: 0\n    start_workers: x\n",
        &[
            "php.config_file: expected a file path, found a number 1 (fix: set `config_file` to a file path)",
            "php.pool.start_workers: expected a whole number, found a string \"x\" (fix: set `start_workers` to a whole number)",
            "php.pool.idle_timeout: must be at least 1 ms, is 0 (fix: set `idle_timeout` to 1 or more)",
        ],
    ),
];

#[test]
fn every_problem_message_is_word_for_word() {
    let mut failed = Vec::new();
    for (name, text, want) in CASES {
        let (e, base) = error_text(text);
        let got: Vec<String> = e
            .problems()
            .iter()
            .map(|p| placeholders(&p.to_string(), &base))
            .collect();
        if std::env::var_os("TQSUP_PRINT_MESSAGES").is_some() {
            println!("=== {name}");
            for l in &got {
                println!("            {l:?},");
            }
        }
        if got != *want {
            failed.push(format!(
                "{name}:\n--- want\n{}\n--- got\n{}",
                want.join("\n"),
                got.join("\n")
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// The one line `check` prints: the file, the count, every problem joined.
#[test]
fn the_error_line_joins_every_problem_in_order() {
    let (e, base) = error_text(
        "php_fpm:\n  pool:\n    max_children: 0\nforward:\n  listen: nowhere\nlog:\n  format: xml\n",
    );
    assert_eq!(
        placeholders(&e.to_string(), &base),
        "<base>/tqsup.yaml: 3 problems: \
         php_fpm.pool.max_children: must be at least 1 (fix: set it to the number of PHP requests to run at once, e.g. 5); \
         forward.listen: `nowhere` is neither host:port nor a socket path (fix: write host:port (127.0.0.1:9000) or a socket path (/run/tqsup/fcgi.sock)); \
         log.format: unknown format `xml` (fix: use text or json)"
    );
}

/// Each closed set's table names every value once, in the order messages
/// list them.
#[test]
fn every_choice_word_names_one_value() {
    fn round_trip<T: Choice + std::fmt::Debug>(list: &str) {
        for &(word, value) in T::WORDS {
            assert_eq!(T::from_word(word), Some(value), "{word}");
            assert_eq!(value.word(), word);
        }
        assert_eq!(T::one_of(), list);
        assert_eq!(T::from_word("sometimes"), None);
    }
    round_trip::<PoolKind>("static, dynamic or ondemand");
    round_trip::<RestartPolicy>("always, on-failure or never");
    round_trip::<HookAction>("reload, restart or none");
    round_trip::<LogFormat>("text or json");
}
