//! The foundation end to end with the real binary and real php-fpm: every
//! shipped config loads and passes `php-fpm -t`, YAML and TOML render the
//! same bytes, the legacy mapping, bad configs with their exit codes, and the
//! `print-cmd` line starting a php-fpm that answers `cgi-fcgi`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tqsup args…` in `cwd` (the repository, for the shipped configs).
fn tq(args: &[&str], cwd: &Path) -> Ran {
    run_with_timeout(tqsup().args(args).current_dir(cwd), T)
}

fn config_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            // Web-server snippets are not tqsup configs.
            if p.file_name().is_some_and(|n| n != "webservers") {
                config_files(&p, out);
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "toml")
        ) {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_config_loads_and_passes_php_fpm_t() {
    let mut files = Vec::new();
    config_files(&repo().join("config"), &mut files);
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let o = tq(&["check", "-c", f.to_str().unwrap()], &repo());
        assert_exit!(o, 0, "{}", f.display());
        assert!(o.out().contains("config ok"), "{}", o.text());
    }
}

#[test]
fn yaml_and_toml_examples_render_byte_identical_files() {
    let out = tempfile::tempdir().unwrap();
    let render = |cfg: &str| {
        let dir = out.path().join("r");
        let o = tq(
            &[
                "render",
                "-c",
                &format!("config/{cfg}"),
                "--out",
                dir.to_str().unwrap(),
            ],
            &repo(),
        );
        assert_ok!(o);
        let main = std::fs::read(dir.join("php-fpm.conf")).unwrap();
        let pool = std::fs::read(dir.join("pool.d/www.conf")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        (main, pool)
    };
    let yaml = render("tqsup.example.yaml");
    let toml = render("tqsup.example.toml");
    assert!(
        yaml == toml,
        "YAML and TOML rendered different files:\n{}\n---\n{}",
        String::from_utf8_lossy(&yaml.1),
        String::from_utf8_lossy(&toml.1)
    );
    // Printed to stdout, too.
    let a = tq(&["render", "-c", "config/tqsup.example.yaml"], &repo());
    let b = tq(&["render", "-c", "config/tqsup.example.toml"], &repo());
    assert!(
        a.success() && a.stdout == b.stdout,
        "{}\n{}",
        a.text(),
        b.text()
    );
}

/// A project whose tqsup.yaml is `config`.
fn project_with(config: Value) -> TqsupProject {
    let p = TqsupProject::new().with(config);
    p.write_config();
    p
}

/// A project whose tqsup.yaml is `text`, as it is.
fn project_with_text(text: &str) -> TqsupProject {
    let p = TqsupProject::new();
    p.write("tqsup.yaml", text);
    p
}

#[test]
fn each_process_manager_passes_php_fpm_t_with_default_and_explicit_user() {
    let pools = [
        json!({ "type": "static", "max_children": 3 }),
        json!({
            "type": "dynamic",
            "max_children": 6,
            "start_servers": 2,
            "min_spare_servers": 1,
            "max_spare_servers": 4,
        }),
        json!({ "type": "ondemand", "max_children": 4, "process_idle_timeout_ms": 2500 }),
    ];
    for pool in pools {
        for user in [
            json!({}),
            json!({ "user": "www-data", "group": "www-data" }),
        ] {
            let mut php_fpm = user.clone();
            merge(&mut php_fpm, json!({ "pool": pool }));
            let p = project_with(json!({ "php_fpm": php_fpm }));
            let o = p.run(&["check"]);
            assert_exit!(o, 0, "{pool} {user}");
            let r = p.run(&["render"]);
            let rendered = r.out();
            let kind = pool["type"].as_str().unwrap();
            assert!(rendered.contains(&format!("pm = {kind}\n")), "{rendered}");
            if nix::unistd::Uid::effective().is_root() {
                // As root a pool needs a user: defaulted or explicit.
                assert!(rendered.contains("user = \"www-data\""), "{rendered}");
            }
        }
    }
}

#[test]
fn legacy_worker_yaml_renders_the_tqserver_pool() {
    let o = tq(&["render", "-c", "config/worker.yaml"], &repo());
    assert_ok!(o);
    let out = o.out();
    for line in [
        "pm = dynamic\n",
        "pm.max_children = 10\n",
        "pm.start_servers = 3\n",
        "pm.min_spare_servers = 2\n",
        "pm.max_requests = 1000\n",
        "request_terminate_timeout = 30s\n",
        "php_admin_value[memory_limit] = \"128M\"\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn bad_configs_exit_78_naming_the_key() {
    // (name, config, exit code, text that must appear in the one-line error)
    let table: &[(&str, &str, i32, &[&str])] = &[
        (
            "newline injection",
            "php_fpm:\n  env:\n    APP: \"x\\n[evil]\\nlisten = 0.0.0.0:9\"\n",
            78,
            &["php_fpm.env.APP", "control character"],
        ),
        (
            "unknown key",
            "php_fpm:\n  pool:\n    max_chidren: 3\n",
            78,
            &[
                "php_fpm.pool.max_chidren",
                "did you mean `php_fpm.pool.max_children`",
            ],
        ),
        (
            "wrong type",
            "php_fpm:\n  pool:\n    max_children: lots\n",
            78,
            &["php_fpm.pool.max_children", "expected a whole number"],
        ),
        (
            "spare servers",
            "php_fpm:\n  pool:\n    type: dynamic\n    max_children: 4\n    min_spare_servers: 3\n    max_spare_servers: 2\n",
            78,
            &["php_fpm.pool.min_spare_servers"],
        ),
        (
            "pool_size",
            "php_fpm:\n  pool_size: 8\n  pool:\n    max_children: 4\n",
            78,
            &["php_fpm.pool_size", "max_children (4)"],
        ),
        (
            "document root",
            "php_fpm:\n  document_root: does-not-exist\n",
            78,
            &["php_fpm.document_root", "does-not-exist"],
        ),
        (
            "two errors",
            "php_fpm:\n  pool:\n    max_children: 0\nforward:\n  listen: \"nowhere\"\n",
            78,
            &["2 problems", "php_fpm.pool.max_children", "forward.listen"],
        ),
        (
            "yaml syntax",
            "php_fpm: [\n",
            78,
            &["tqsup.yaml", "YAML syntax error"],
        ),
        (
            "binary missing",
            "php_fpm:\n  binary: /nonexistent/php-fpm\n",
            69,
            &["php-fpm not found", "apt-get install php-fpm"],
        ),
    ];
    for (name, config, code, needles) in table {
        let p = project_with_text(config);
        let o = p.run(&["check"]);
        let err = o.err();
        assert_exit!(o, *code, "{name}");
        for n in *needles {
            assert!(err.contains(n), "{name}: {n:?} not in {err}");
        }
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{name}: error must be one line: {err}"
        );
        assert!(
            err.contains("tqsup.yaml") || *code == 69,
            "{name}: file not named: {err}"
        );
    }
}

#[test]
fn usage_errors_and_missing_files() {
    let p = TqsupProject::new();
    let o = p.run(&["check", "--no-such-flag"]);
    assert_exit!(o, 2);
    let o = p.run(&["check"]);
    assert_exit!(o, 78, "no config at all");
    assert!(o.err().contains("no config file found"), "{}", o.text());
    let o = p.run(&["check", "-c", "missing.yaml"]);
    assert_exit!(o, 78);
    let o = p.run(&["--version"]);
    assert!(o.success() && o.out().starts_with("tqsup "), "{}", o.text());
}

#[test]
fn check_shows_php_fpm_complaint_for_unknown_user() {
    let p = project_with(json!({ "php_fpm": { "user": "tqsup-no-such-user" } }));
    let o = p.run(&["check"]);
    let err = o.err();
    assert_exit!(o, 78);
    assert!(
        err.contains("php-fpm rejected") && err.contains("tqsup-no-such-user"),
        "{err}"
    );
}

#[test]
fn print_cmd_starts_a_php_fpm_that_answers_cgi_fcgi() {
    let p = project_with(json!({ "php_fpm": { "pool": { "type": "static", "max_children": 2 } } }));
    let o = p.run(&["print-cmd", "--explain"]);
    assert_ok!(o);
    let stdout = o.out();
    let line = stdout.lines().next().unwrap();
    assert!(
        stdout.contains("# php-fpm: ") && stdout.contains("# version: PHP"),
        "{stdout}"
    );
    let argv = shlex::split(line).expect("shell-quoted");
    assert!(
        argv[1..5]
            == [
                "-F",
                "-O",
                "-y",
                &p.join(".tqserver/phpfpm/php-fpm.conf")
                    .display()
                    .to_string()
            ],
        "{argv:?}"
    );

    let dir = p.join(".tqserver/phpfpm");
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("php-fpm.conf")), 0o600);
    assert_eq!(mode_of(&dir.join("pool.d/www.conf")), 0o600);

    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let fpm = Guard::spawn(&mut cmd, p.join("fpm.log"));
    assert!(
        fpm.wait_log("ready to handle connections", T),
        "php-fpm did not start"
    );
    let sock = dir.join("php-fpm.sock");
    let o = cgi_fcgi(
        sock.to_str().unwrap(),
        &p.join("public/index.php"),
        "/index.php",
        "",
    );
    assert!(o.out().contains("hello from php"), "{}", o.text());
}

/// A deep project: the runtime sockets would pass the kernel's 107 bytes
/// (php-fpm silently truncates them and binds elsewhere): a clear exit 78.
#[test]
fn socket_paths_too_long_for_the_kernel_exit_78_naming_the_fix() {
    let deep = format!(".tqserver/{}", "d".repeat(110));
    let p = project_with(json!({ "dev": { "config_dir": deep } }));
    let o = p.run(&["print-cmd"]);
    assert_exit!(o, 78);
    let err = o.err();
    assert!(
        err.contains("the kernel takes at most 107") && err.contains("dev.config_dir"),
        "{err}"
    );
}

/// php-fpm's include= is a glob: a directory with `[` in its name would be
/// misread, so it is refused up front.
#[test]
fn a_config_dir_with_glob_characters_exits_78() {
    let p = project_with(json!({ "dev": { "config_dir": ".tq[1]" } }));
    let o = p.run(&["print-cmd"]);
    assert_exit!(o, 78);
    assert!(o.err().contains("glob character"), "{}", o.text());
}

/// A document root the pool user cannot read passes php-fpm -t, then every
/// request is "File not found": `check` warns, naming the directory.
#[test]
fn check_warns_when_the_pool_user_cannot_read_the_document_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (the pool runs as www-data only then)");
        return;
    }
    let p = project_with(json!({ "php_fpm": { "user": "www-data", "group": "www-data" } }));
    common::set_mode(&p.join("public"), 0o700);
    let o = p.run(&["check"]);
    assert_ok!(o);
    let err = o.err();
    assert!(
        err.contains("warning: the pool user www-data cannot read the document root")
            && err.contains("public"),
        "{err}"
    );
    common::set_mode(&p.join("public"), 0o755);
    let o = p.run(&["check"]);
    assert!(!o.err().contains("cannot read"), "{}", o.text());
}

/// `render --out` never chmods or writes into a directory of someone
/// else's files; it re-renders into its own.
#[test]
fn render_out_refuses_a_directory_it_did_not_make() {
    let p = project_with(json!({}));
    let foreign = p.join("etc");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
    common::set_mode(&foreign, 0o755);
    let o = p.run(&["render", "--out", foreign.to_str().unwrap()]);
    assert_exit!(o, 2);
    assert_eq!(mode_of(&foreign), 0o755);
    assert!(!foreign.join("php-fpm.conf").exists());
    let own = p.join("rendered");
    for _ in 0..2 {
        let o = p.run(&["render", "--out", own.to_str().unwrap()]);
        assert_ok!(o);
    }
}

/// Errors are one line with their cause chain, each cause once.
#[test]
fn a_missing_config_file_names_its_cause_once() {
    let p = project_with(json!({}));
    let o = p.run(&["check", "-c", "/nonexistent/tqsup.yaml"]);
    let err = o.err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// `user: root` outside dev mode would run PHP as root with php-fpm's -R:
/// refused (exit 78) unless `php_fpm.allow_root: true` says it is meant.
#[test]
fn a_root_pool_outside_dev_mode_needs_allow_root() {
    let p = project_with(json!({ "php_fpm": { "user": "root" } }));
    let o = p.run(&["check"]);
    assert_exit!(o, 78);
    let err = o.err();
    assert!(
        err.contains("php_fpm.user") && err.contains("php_fpm.allow_root: true"),
        "{err}"
    );
    let p = project_with(json!({ "php_fpm": { "user": "root", "allow_root": true } }));
    let o = p.run(&["check"]);
    assert_ok!(o);
}
