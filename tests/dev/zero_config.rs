//! `tqsup run --dev` as a PHP developer runs it: the real binary in a temp
//! project, no config file; and the dev-mode details around it (the port
//! search, an explicit address that is taken, the 502 page, .php-version).
//!
//! Ports 8000–8010: zero-config dev mode binds there, and tests run in
//! parallel, test binaries too. Every test that starts zero-config dev mode
//! holds an exclusive flock on [`PORT_LOCK`] for its whole run, so they
//! take turns; no other test binds in that range (the others use port 0,
//! which the kernel takes from the ephemeral range, 32768 and up). What a
//! test cannot control (a process outside the tests on 8000) is measured
//! first: the test expects the first port it finds free, not 8000 itself.

use std::net::TcpListener;

use std::process::Command;

use super::*;
use common::{Ran, Tqsup, cgi_fcgi, free_addr, run_with_timeout};

/// Serializes the tests that bind 127.0.0.1:8000–8010.
const PORT_LOCK: &str = "/tmp/tqsup-tests-ports-8000-8010.lock";
/// Most lines tqsup may log in 10 s of idleness (measured: 0).
const IDLE_LINES_BOUND: usize = 5;
const STARTUP: Duration = Duration::from_secs(20);

fn lock_ports() -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PORT_LOCK)
        .unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock")
}

/// The first port from `from` to 8010 that can be bound now.
fn first_free(from: u16) -> u16 {
    (from..=8010)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 8000..=8010")
}

/// `tqsup args…` in `project` as a developer's shell runs it: no
/// `RUNTIME_DIRECTORY`; the config (if the test set one) written first.
fn dev_command(project: &TqsupProject, args: &[&str]) -> Command {
    project.write_config();
    let mut cmd = project.command(args);
    cmd.env_remove("RUNTIME_DIRECTORY");
    cmd
}

/// Runs `tqsup args…` to its end ([`dev_command`]), without `TQSUP_PHP_FPM`
/// when `own_php` (so the project chooses its php-fpm).
fn dev_run(project: &TqsupProject, args: &[&str], own_php: bool) -> Ran {
    let mut cmd = dev_command(project, args);
    if own_php {
        cmd.env_remove("TQSUP_PHP_FPM");
    }
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// Starts `tqsup run --dev` in `project`, its output into `tqsup.log`
/// inside the project, and waits for its URL line.
fn start(project: &TqsupProject) -> (Tqsup, String) {
    let g = project.spawn_command(dev_command(project, &["run", "--dev"]));
    let url = common::eventually(STARTUP, || {
        g.log_text().lines().find_map(|l| {
            let rest = l.strip_prefix("Serving ")?;
            assert!(rest.ends_with(" \u{2014} Ctrl-C to stop"), "{l}");
            Some(rest.split(' ').next()?.to_string())
        })
    })
    .unwrap_or_else(|| panic!("no `Serving` line"));
    (g, url)
}

/// A GET (Connection: close): status, content type and body.
fn http_get(url: &str, path: &str) -> Option<(u16, String, String)> {
    let r = common::http::get(url.strip_prefix("http://")?, path)?;
    Some((r.status, r.content_type(), r.text()))
}

fn get_ok(url: &str, path: &str) -> String {
    common::eventually(STARTUP, || {
        http_get(url, path)
            .filter(|(s, _, _)| *s == 200)
            .map(|r| r.2)
    })
    .unwrap_or_else(|| panic!("{url}{path} never answered 200"))
}

fn stop(mut g: Tqsup) {
    let status = g.stop(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

fn lines(g: &Tqsup) -> usize {
    g.log_text().lines().count()
}

#[test]
fn zero_config_serves_http_on_8000_or_the_next_free_port_and_stays_quiet() {
    let _ports = lock_ports();
    let project = TqsupProject::new();
    project.write(".gitignore", "/var/\n");
    project.write("src/keep.txt", "");
    let expected = first_free(8000);
    let (g, url) = start(&project);
    assert_eq!(url, format!("http://127.0.0.1:{expected}"));
    assert!(get_ok(&url, "/").contains("hello from php"));

    // The forward listener: a socket in .tqserver/, said once, not :9000.
    let socket = project.join(".tqserver/fcgi.sock");
    let said = format!(
        "FastCGI for a web server of your own: unix:{}",
        socket.display()
    );
    assert_eq!(g.log_text().matches(&said).count(), 1, "{said}");
    let out = cgi_fcgi(
        socket.to_str().unwrap(),
        &project.join("public/index.php"),
        "/index.php",
        "",
    );
    assert!(out.out().contains("hello from php"), "{}", out.text());

    // Idle with the log written into the project: a bounded number of lines.
    std::thread::sleep(Duration::from_secs(1));
    let before = lines(&g);
    std::thread::sleep(Duration::from_secs(10));
    let idle = lines(&g) - before;
    eprintln!("startup: {before} lines; 10 s idle: {idle} lines");
    assert!(
        idle <= IDLE_LINES_BOUND,
        "{idle} lines in 10 s of idleness:\n{}",
        common::tail(&g.log_text(), idle)
    );

    // A .gitignored directory written 100 times: no batch at all.
    for i in 0..100 {
        project.write(&format!("var/cache/f{}.php", i % 9), &format!("{i}"));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !g.log_text().contains("batch of changes"),
        "a batch for ignored files"
    );
    // A file that is not ignored is one batch, logged once.
    project.write("src/new.php", "<?php\n");
    let batch = common::eventually(Duration::from_secs(5), || {
        g.log_text()
            .lines()
            .find(|l| l.contains("batch of changes"))
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("no batch for src/new.php"));
    assert!(
        batch.contains("changes=1") && batch.contains("src/new.php"),
        "{batch}"
    );
    stop(g);
}

#[test]
fn zero_config_takes_the_next_port_when_8000_is_taken() {
    let _ports = lock_ports();
    // Ours, unless something outside the tests has it: taken either way.
    let _hold = TcpListener::bind("127.0.0.1:8000");
    let expected = first_free(8001);
    let project = TqsupProject::new();
    let (g, url) = start(&project);
    assert_eq!(url, format!("http://127.0.0.1:{expected}"));
    assert!(get_ok(&url, "/").contains("hello from php"));
    stop(g);
}

/// A config naming its own ports (no lock needed).
fn config_with_ports(project: &mut TqsupProject, http: u16) {
    project.merge(json!({
        "forward": { "listen": free_addr() },
        "dev": { "http_listen": format!("127.0.0.1:{http}") },
    }));
}

#[test]
fn an_explicit_http_listen_that_is_taken_fails_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut project = TqsupProject::new();
    config_with_ports(&mut project, port);
    let out = dev_run(&project, &["run", "--dev"], false);
    let err = out.err();
    assert_exit!(out, 1);
    assert!(
        err.contains(&format!("dev.http_listen 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn a_502_page_shows_the_php_fatal_error() {
    let mut project = TqsupProject::new();
    project.write(
        "public/die.php",
        "<?php\n// The fatal error is logged, then the process dies: no response.\n\
         register_shutdown_function(function () { posix_kill(getmypid(), 9); });\n\
         undefined_function_for_the_502_page();\n",
    );
    config_with_ports(&mut project, free_port());
    let (g, url) = start(&project);
    get_ok(&url, "/");
    let (status, ct, body) = http_get(&url, "/die.php").expect("a response");
    assert_eq!(status, 502, "{body}");
    assert_eq!(ct, "text/html; charset=utf-8");
    assert!(body.contains("the PHP process died"), "{body}");
    assert!(
        body.contains("PHP Fatal error:  Uncaught Error: Call to undefined function undefined_function_for_the_502_page()"),
        "{body}"
    );
    stop(g);
}

#[test]
fn php_version_file_chooses_php_fpm_or_exits_69_naming_the_version() {
    let mut project = TqsupProject::new();
    config_with_ports(&mut project, free_port());
    project.write(".php-version", "5.6\n");
    let out = dev_run(&project, &["run", "--dev"], true);
    let err = out.err();
    assert_exit!(out, 69);
    assert!(
        err.contains("php-fpm 5.6") && err.contains(".php-version"),
        "{err}"
    );
    if std::path::Path::new("/etc/debian_version").exists() {
        assert!(err.contains("apt-get install php5.6-fpm"), "{err}");
    }

    // The installed version: chosen, and --explain says by which file.
    let installed = php_fpm();
    let name = installed
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let Some(version) = name.strip_prefix("php-fpm").filter(|v| !v.is_empty()) else {
        eprintln!("php-fpm has no version in its name ({name}); skipping the positive case");
        return;
    };
    project.write(".php-version", &format!("{version}\n"));
    let out = dev_run(&project, &["print-cmd", "--explain"], true);
    let text = out.out();
    assert_ok!(out);
    let file = project.join(".php-version");
    assert!(
        text.contains(&name)
            && text.contains(&format!("{} asks for PHP {version}", file.display())),
        "{text}"
    );
}

#[test]
fn a_504_page_names_the_timeout() {
    let mut project = TqsupProject::new();
    project.write("public/slow.php", "<?php sleep(4); echo 'late';\n");
    config_with_ports(&mut project, free_port());
    project.set("php_fpm.read_timeout_ms", 1000);
    let (g, url) = start(&project);
    get_ok(&url, "/");
    let (status, ct, body) = http_get(&url, "/slow.php").expect("a response");
    assert_eq!(status, 504, "{body}");
    assert_eq!(ct, "text/html; charset=utf-8");
    assert!(
        body.contains("timeout: PHP did not answer in time"),
        "{body}"
    );
    stop(g);
}
