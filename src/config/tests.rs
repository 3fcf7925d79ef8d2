//! Validation rules, table by table, on in-memory documents.

use std::path::{Path, PathBuf};

use super::*;

fn load_text(name: &str, text: &str, env: &[(&str, &str)]) -> Result<(Config, Notes), ConfigError> {
    let base = tempfile::tempdir().unwrap().keep();
    std::fs::create_dir_all(base.join("public")).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    from_str(text, &base.join(name), &base, &env)
}

fn problems(name: &str, text: &str) -> Vec<Problem> {
    match load_text(name, text, &[]) {
        Ok(_) => panic!("expected problems for:\n{text}"),
        Err(e) => e.problems().to_vec(),
    }
}

fn keys(ps: &[Problem]) -> Vec<&str> {
    ps.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn empty_file_gives_documented_defaults() {
    let (c, _) = load_text("tqsup.yaml", "", &[]).unwrap();
    let p = &c.php_fpm.pool;
    assert_eq!(
        (
            p.kind,
            p.max_children,
            p.start_servers,
            p.min_spare_servers,
            p.max_spare_servers
        ),
        (PoolKind::Dynamic, 5, 2, 1, 3)
    );
    assert_eq!(c.php_fpm.pool_size, 5);
    assert_eq!(c.forward.listen, Endpoint::Tcp("127.0.0.1:9000".into()));
    assert_eq!(c.forward.socket_mode, 0o660);
    assert_eq!(c.supervisor.restart, RestartPolicy::OnFailure);
    assert!(c.php_fpm.listen.is_none());
    assert!(c.dev.config_dir.ends_with(".tqserver/phpfpm"));
}

#[test]
fn unknown_key_names_the_closest() {
    let ps = problems("t.yaml", "php_fpm:\n  pool:\n    max_chilren: 4\n");
    assert_eq!(keys(&ps), ["php_fpm.pool.max_chilren"]);
    assert!(
        ps[0].fix.contains("php_fpm.pool.max_children"),
        "{:?}",
        ps[0]
    );
    let ps = problems("t.yaml", "forwrd: {}\n");
    assert!(ps[0].fix.contains("`forward`"), "{:?}", ps[0]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let ps = problems(
        "t.yaml",
        "php_fpm:\n  pool:\n    max_children: many\n  pool_size: 0\nsupervisor:\n  restart: sometimes\nlog:\n  format: xml\n",
    );
    assert_eq!(
        keys(&ps),
        [
            "php_fpm.pool.max_children",
            "php_fpm.pool_size",
            "supervisor.restart",
            "log.format"
        ]
    );
}

#[test]
fn control_characters_are_rejected_anywhere() {
    let ps = problems(
        "t.yaml",
        "php_fpm:\n  env:\n    A: \"x\\nlisten = 0.0.0.0:1\"\n  settings:\n    error_log: \"a\\u0000b\"\n",
    );
    assert_eq!(keys(&ps), ["php_fpm.env.A", "php_fpm.settings.error_log"]);
    let ps = problems("t.toml", "[php_fpm.pool]\nname = \"www]\\n[evil\"\n");
    assert!(keys(&ps).contains(&"php_fpm.pool.name"), "{ps:?}");
}

#[test]
fn dynamic_spare_rules_mirror_php_fpm() {
    let table: &[(&str, &str)] = &[
        (
            "max_children: 4\n    max_spare_servers: 5",
            "php_fpm.pool.max_spare_servers",
        ),
        (
            "min_spare_servers: 3\n    max_spare_servers: 2",
            "php_fpm.pool.min_spare_servers",
        ),
        (
            "start_servers: 4\n    max_spare_servers: 3",
            "php_fpm.pool.start_servers",
        ),
        ("min_spare_servers: 0", "php_fpm.pool.min_spare_servers"),
        ("max_children: 0", "php_fpm.pool.max_children"),
    ];
    for (pool, key) in table {
        let ps = problems(
            "t.yaml",
            &format!("php_fpm:\n  pool:\n    type: dynamic\n    {pool}\n"),
        );
        assert!(keys(&ps).contains(key), "{pool}: {ps:?}");
    }
    // Unset values are derived to fit the set ones.
    let (c, _) = load_text("t.yaml", "php_fpm:\n  pool:\n    max_children: 1\n", &[]).unwrap();
    let p = c.php_fpm.pool;
    assert_eq!(
        (p.min_spare_servers, p.start_servers, p.max_spare_servers),
        (1, 1, 1)
    );
    let (c, _) = load_text(
        "t.yaml",
        "php_fpm:\n  pool:\n    max_children: 20\n    start_servers: 8\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.php_fpm.pool.max_spare_servers, 8);
}

#[test]
fn pool_size_is_at_most_max_children() {
    let ps = problems(
        "t.yaml",
        "php_fpm:\n  pool_size: 9\n  pool:\n    max_children: 4\n",
    );
    assert_eq!(keys(&ps), ["php_fpm.pool_size"]);
}

#[test]
fn missing_document_root_is_an_error() {
    let ps = problems("t.yaml", "php_fpm:\n  document_root: nowhere\n");
    assert_eq!(keys(&ps), ["php_fpm.document_root"]);
}

#[test]
fn yaml_and_toml_read_the_same() {
    let (y, _) = load_text("t.yaml", "php_fpm:\n  pool:\n    type: static\n    max_children: 3\nforward:\n  listen: /run/x.sock\n", &[]).unwrap();
    let (t, _) = load_text("t.toml", "[php_fpm.pool]\ntype = \"static\"\nmax_children = 3\n[forward]\nlisten = \"/run/x.sock\"\n", &[]).unwrap();
    assert_eq!(y.php_fpm.pool, t.php_fpm.pool);
    assert_eq!(
        y.forward.listen,
        Endpoint::Unix(PathBuf::from("/run/x.sock"))
    );
    assert_eq!(y.forward.listen, t.forward.listen);
}

#[test]
fn php_environment_is_added_and_config_wins() {
    let (c, _) = load_text(
        "t.yaml",
        "php_fpm:\n  env:\n    PHP_A: mine\n",
        &[("PHP_A", "env"), ("PHP_B", "b"), ("HOME", "/root")],
    )
    .unwrap();
    assert_eq!(c.php_fpm.env.get("PHP_A").map(String::as_str), Some("mine"));
    assert_eq!(c.php_fpm.env.get("PHP_B").map(String::as_str), Some("b"));
    assert!(!c.php_fpm.env.contains_key("HOME"));
}

#[test]
fn legacy_worker_yaml_is_mapped() {
    let text = "path: /blog\ntype: php\nenabled: true\nphp:\n  settings:\n    memory_limit: 128M\n  pool:\n    manager: dynamic\n    min_workers: 2\n    max_workers: 10\n    start_workers: 3\n    max_requests: 1000\n    request_timeout: 30\n    idle_timeout: 10\ndocument_root: ./public\nlogging:\n  level: info\n";
    let (c, notes) = load_text("worker.yaml", text, &[]).unwrap();
    assert!(notes.legacy);
    assert_eq!(notes.ignored, ["enabled", "logging", "path", "type"]);
    let p = &c.php_fpm.pool;
    assert_eq!(
        (
            p.kind,
            p.max_children,
            p.start_servers,
            p.min_spare_servers,
            p.max_requests
        ),
        (PoolKind::Dynamic, 10, 3, 2, 1000)
    );
    assert_eq!(
        p.request_terminate_timeout,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(p.process_idle_timeout, std::time::Duration::from_secs(10));
    // An unknown key inside php: is still an error, named by its legacy path.
    let ps = problems("worker.yaml", "php:\n  pool:\n    max_workrs: 3\n");
    assert_eq!(keys(&ps), ["php.pool.max_workrs"]);
    assert!(ps[0].fix.contains("max_workers"));
    // Problems are named by their legacy keys.
    let ps = problems("worker.yaml", "php:\n  pool:\n    max_workers: 0\n");
    assert!(keys(&ps).contains(&"php.pool.max_workers"), "{ps:?}");
}

#[test]
fn endpoints_parse() {
    let base = Path::new("/srv/app");
    assert_eq!(
        parse_endpoint(base, "unix:run/fcgi.sock").unwrap(),
        Endpoint::Unix("/srv/app/run/fcgi.sock".into())
    );
    assert_eq!(
        parse_endpoint(base, "[::1]:9000").unwrap(),
        Endpoint::Tcp("[::1]:9000".into())
    );
    assert!(parse_endpoint(base, "localhost:99999").is_err());
    assert!(parse_endpoint(base, "nonsense").is_err());
}

#[test]
fn client_limits_have_defaults_and_are_checked() {
    let (c, _) = load_text("t.yaml", "", &[]).unwrap();
    let f = &c.forward;
    assert_eq!(
        (f.params_timeout, f.stdin_timeout),
        (
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(30)
        )
    );
    assert_eq!(
        (f.params_buffer, f.params_buffer_total),
        (1 << 20, 64 << 20)
    );
    let (c, _) = load_text(
        "t.toml",
        "[forward]\nparams_timeout_ms = 500\nstdin_timeout_ms = 700\nparams_buffer_bytes = 65536\nparams_buffer_total_bytes = 65536\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.forward.params_timeout.as_millis(), 500);
    assert_eq!(c.forward.stdin_timeout.as_millis(), 700);
    assert_eq!(c.forward.params_buffer_total, 65536);
    let ps = problems(
        "t.yaml",
        "forward:\n  params_timeout_ms: 0\n  stdin_timeout_ms: soon\n  params_buffer_bytes: 100\n",
    );
    assert_eq!(
        keys(&ps),
        [
            "forward.params_timeout_ms",
            "forward.stdin_timeout_ms",
            "forward.params_buffer_bytes"
        ]
    );
    let ps = problems(
        "t.yaml",
        "forward:\n  params_buffer_bytes: 2097152\n  params_buffer_total_bytes: 1048576\n",
    );
    assert_eq!(keys(&ps), ["forward.params_buffer_total_bytes"]);
}

#[test]
fn env_values_starting_with_a_dollar_are_refused() {
    // php-fpm would replace "$3cr3t" by its master's variable `3cr3t`.
    let ps = problems("t.yaml", "php_fpm:\n  env:\n    DB_PASSWORD: \"$3cr3t\"\n");
    assert_eq!(keys(&ps), ["php_fpm.env.DB_PASSWORD"]);
    assert!(ps[0].message.contains("starts with `$`"), "{ps:?}");
    // …and such PHP_* variables of tqsup's environment are left out.
    let (c, _) = load_text("t.yaml", "", &[("PHP_SECRET", "$x"), ("PHP_OK", "y")]).unwrap();
    assert!(!c.php_fpm.env.contains_key("PHP_SECRET"));
    assert_eq!(c.php_fpm.env.get("PHP_OK").map(String::as_str), Some("y"));
}

#[test]
fn socket_paths_over_the_kernel_limit_are_refused() {
    let long = format!("/run/{}/fcgi.sock", "d".repeat(100));
    let ps = problems(
        "t.yaml",
        &format!("php_fpm:\n  listen: {long}\nforward:\n  listen: {long}\n"),
    );
    assert_eq!(keys(&ps), ["php_fpm.listen", "forward.listen"]);
    assert!(ps[0].message.contains("at most 107"), "{ps:?}");
}

#[test]
fn a_pool_named_global_is_refused() {
    let ps = problems("t.yaml", "php_fpm:\n  pool:\n    name: global\n");
    assert_eq!(keys(&ps), ["php_fpm.pool.name"]);
}

#[test]
fn zero_config_dev_defaults() {
    let base = tempfile::tempdir().unwrap();
    let c = embedded_default(base.path()).unwrap();
    assert_eq!(
        c.forward.listen,
        Endpoint::Unix(base.path().join(".tqserver/fcgi.sock"))
    );
    assert!(c.forward.enabled, "the dev front routes through it");
    assert_eq!(c.dev.http_listen.as_deref(), Some("127.0.0.1:8000"));
    assert!(c.dev.http_listen_next_free);
    assert!(c.dev.watch.gitignore);
    // A file keeps the documented defaults: no front, TCP 9000, exact bind.
    let (c, _) = load_text(
        "tqsup.yaml",
        "dev: { http_listen: 127.0.0.1:8000, watch: { gitignore: false } }",
        &[],
    )
    .unwrap();
    assert_eq!(c.forward.listen, Endpoint::Tcp("127.0.0.1:9000".into()));
    assert!(!c.dev.http_listen_next_free);
    assert!(!c.dev.watch.gitignore);
}

#[test]
fn lanes_are_validated_by_key() {
    let (c, _) = load_text(
        "t.yaml",
        "php_fpm:\n  pool:\n    type: static\n    max_children: 8\nforward:\n  queue_timeout_ms: 7000\n  lanes:\n    - { name: export, match: \"/export/*\", max: 1 }\n    - { name: report, match: /report.php, max: 2, queue_timeout_ms: 60000 }\n",
        &[],
    )
    .unwrap();
    let l = &c.forward.lanes;
    assert_eq!((l[0].name.as_str(), l[0].max), ("export", 1));
    assert_eq!(
        l[0].queue_timeout,
        std::time::Duration::from_millis(7000),
        "inherits"
    );
    assert_eq!(l[1].queue_timeout, std::time::Duration::from_millis(60000));
    let ps = problems(
        "t.yaml",
        "php_fpm:\n  pool:\n    type: static\n    max_children: 4\nforward:\n  lanes:\n    - { name: a, match: \"/a/[\", max: 1 }\n    - { name: a, match: x, max: 0 }\n    - { name: big, match: /b, max: 5, color: red }\n",
    );
    assert_eq!(
        keys(&ps),
        [
            "forward.lanes[0].match",
            "forward.lanes[1].name",
            "forward.lanes[1].match",
            "forward.lanes[1].max",
            "forward.lanes[2].color",
            "forward.lanes[2].max",
        ]
    );
}

#[test]
fn pooled_connections_idle_out_by_process_manager_or_as_told() {
    use crate::fcgi::idle_lifetime;
    use std::time::Duration;
    let life = |yaml: &str| idle_lifetime(&load_text("t.yaml", yaml, &[]).unwrap().0);
    assert_eq!(life("php_fpm:\n  pool:\n    type: static\n"), None);
    assert_eq!(
        life("php_fpm:\n  pool:\n    type: dynamic\n"),
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        life("php_fpm:\n  pool:\n    type: static\nforward:\n  pool_idle_timeout_ms: 500\n"),
        Some(Duration::from_millis(500))
    );
    assert_eq!(
        life("php_fpm:\n  pool:\n    type: dynamic\nforward:\n  pool_idle_timeout_ms: 0\n"),
        None,
        "0: never"
    );
}
