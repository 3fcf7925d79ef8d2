//! No drift between the operator docs and the code: every `tqsup …` command
//! in a fenced block of DEPLOYMENT.md (and MIGRATION.md, README.md) uses real
//! subcommands and flags (asked of the binary's own `--help`), every repository
//! file the docs name exists, every web-server snippet is documented, and the
//! systemd unit runs the command and binary path the docs install.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{run_with_timeout, tqsup};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The lines inside ``` fences.
fn fenced_lines(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if inside {
            out.push(line.trim().to_string());
        }
    }
    assert!(!inside, "unclosed code fence");
    out
}

/// `tqsup <args> --help`'s output, or None when tqsup rejects the args.
fn help(args: &[&str]) -> Option<String> {
    let out = run_with_timeout(tqsup().args(args).arg("--help"), Duration::from_secs(20));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Checks one `tqsup …` command line; returns what is wrong with it.
fn check_command(line: &str) -> Result<(), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"tqsup"));
    let sub = words[1..]
        .iter()
        .copied()
        .scan(false, |takes_value, w| {
            // Skip global flags and the value of -c/--config.
            let skip = *takes_value || w.starts_with('-');
            *takes_value = matches!(w, "-c" | "--config");
            Some((w, skip))
        })
        .find(|(_, skip)| !skip)
        .map(|(w, _)| w)
        .ok_or_else(|| format!("{line}: no subcommand"))?;
    let text = help(&[sub]).ok_or_else(|| format!("{line}: `{sub}` is not a subcommand"))?;
    for flag in words.iter().filter(|w| w.starts_with('-')) {
        let name = flag.split('=').next().unwrap();
        let known = [" ", ","].iter().any(|before| {
            [" ", ",", "\n", "="]
                .iter()
                .any(|after| text.contains(&format!("{before}{name}{after}")))
        });
        if !known {
            return Err(format!("{line}: `{name}` is not a flag of `tqsup {sub}`"));
        }
    }
    Ok(())
}

#[test]
fn every_tqsup_command_in_the_docs_is_real() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for doc in ["docs/DEPLOYMENT.md", "docs/MIGRATION.md", "README.md"] {
        for line in fenced_lines(&read(doc)) {
            let line = line.trim_start_matches("$ ").trim_start_matches("sudo ");
            if line.starts_with("tqsup ") {
                checked += 1;
                if let Err(e) = check_command(line.split('#').next().unwrap()) {
                    problems.push(format!("{doc}: {e}"));
                }
            }
        }
    }
    assert!(checked >= 3, "found only {checked} tqsup commands");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_rejects_what_is_not_real() {
    assert!(check_command("tqsup check -c /etc/tqsup/tqsup.yaml").is_ok());
    assert!(check_command("tqsup print-cmd --explain").is_ok());
    assert!(check_command("tqsup run --dev").is_ok());
    assert!(check_command("tqsup -c x.yaml render --out /tmp/x").is_ok());
    assert!(check_command("tqsup validate -c x.yaml").is_err());
    assert!(check_command("tqsup run --explain").is_err());
    assert!(check_command("tqsup check --dev").is_err());
}

/// Backticked repository paths (`config/…`, `systemd/…`, …) in `markdown`.
fn named_files(markdown: &str) -> Vec<String> {
    markdown
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            [
                "config/",
                "systemd/",
                "scripts/",
                "docs/",
                "templates/",
                "tests/",
            ]
            .iter()
            .any(|p| s.starts_with(p))
                && !s.contains(char::is_whitespace)
                && !s.ends_with('/')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn files_the_docs_name_exist_and_every_snippet_is_documented() {
    let deployment = read("docs/DEPLOYMENT.md");
    for doc in ["docs/DEPLOYMENT.md", "docs/MIGRATION.md"] {
        let names = named_files(&read(doc));
        assert!(!names.is_empty(), "{doc} names no files");
        for name in names {
            assert!(
                root().join(&name).exists(),
                "{doc} names {name}, which does not exist"
            );
        }
    }
    let snippets: Vec<String> = std::fs::read_dir(root().join("config/webservers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(snippets.len(), 4, "{snippets:?}");
    for s in &snippets {
        assert!(
            deployment.contains(&format!("`config/webservers/{s}`")),
            "docs/DEPLOYMENT.md does not document config/webservers/{s}"
        );
    }
    assert!(deployment.contains("`systemd/tqsup.service`"));
    assert!(deployment.contains("`config/tqsup.example.yaml`"));
}

#[test]
fn the_unit_runs_what_the_docs_install() {
    let unit = read("systemd/tqsup.service");
    let deployment = read("docs/DEPLOYMENT.md");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let (binary, args) = exec.split_once(' ').unwrap();
    // The docs install the binary where the unit runs it from, and the
    // config where the unit reads it.
    assert!(
        deployment.contains(&format!("install -m 0755 target/release/tqsup {binary}")),
        "DEPLOYMENT.md does not install tqsup to {binary}"
    );
    check_command(&format!("tqsup {args}")).unwrap();
    let config = args.split_whitespace().last().unwrap();
    assert!(Path::new(config).is_absolute());
    assert!(
        deployment.contains(&format!("config/tqsup.example.yaml {config}")),
        "DEPLOYMENT.md does not install the config to {config}"
    );
    let flat = deployment.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&format!("`{exec}`")),
        "DEPLOYMENT.md does not quote `{exec}`"
    );
    // Reload is SIGHUP, as the docs say.
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(deployment.contains("`SIGHUP`"));
}
