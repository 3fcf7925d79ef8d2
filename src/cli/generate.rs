//! The man page tqsup(8) and the shell completions, generated from the
//! command-line definition itself (clap_mangen, clap_complete), so they
//! cannot drift from it. `scripts/package.sh` runs the hidden
//! `tqsup generate …` command to make the files the Debian package ships.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Arg, CommandFactory as _};
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, italic, roman};

use super::Cli;
use crate::exit;

/// The man page's section: tqsup is a daemon run by the administrator.
const SECTION: &str = "8";

/// Hand-written sections the command-line definition has no place for:
/// the files and variables tqsup reads, and where to read on.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/tqsup/tqsup.yaml",
        "The config the packaged unit runs with, and the last place tqsup looks when -c is absent.",
    ),
    (
        "/usr/share/doc/tqsup/examples/",
        "tqsup.example.yaml and tqsup.example.toml (every key, with its default and a comment), and web-server snippets for nginx, Apache, Caddy and HAProxy.",
    ),
    (
        "/lib/systemd/system/tqsup.service",
        "The systemd unit: Type=notify, reload is SIGHUP.",
    ),
    (
        "/run/tqsup/",
        "The unit's runtime directory: php-fpm's rendered files and private socket, in a fresh 0700 directory removed at stop.",
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("TQSUP_CONFIG", "The config file when -c is absent."),
    (
        "TQSUP_PHP_FPM",
        "The php-fpm binary, when php_fpm.binary is auto.",
    ),
    (
        "RUNTIME_DIRECTORY",
        "Where the runtime directory is made (set by systemd's RuntimeDirectory=); else $XDG_RUNTIME_DIR, else /tmp.",
    ),
];

/// Writes `tqsup.8` into `out_dir` and returns its path.
pub fn man_page(out_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = out_dir.join(format!("tqsup.{SECTION}"));
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(render_man_page()?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The whole page as roff source.
pub fn render_man_page() -> anyhow::Result<String> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut roff = Roff::new();
    commands_section(&mut roff, &cmd);
    exit_status_section(&mut roff);
    definition_list(&mut roff, "FILES", FILES);
    definition_list(&mut roff, "ENVIRONMENT", ENVIRONMENT);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "php-fpm(8), systemctl(1), journalctl(1); /usr/share/doc/tqsup/",
    )]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    let page = String::from_utf8(out).context("the man page is not UTF-8")?;
    // Each render_* call starts with the same two-line quote-string
    // definition; keep the first.
    const PRELUDE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";
    Ok(match page.split_once(PRELUDE) {
        Some((head, rest)) => format!("{head}{PRELUDE}{}", rest.replace(PRELUDE, "")),
        None => page,
    })
}

/// Each visible subcommand with its own flags: one page, `man tqsup`,
/// tells the whole command line.
fn commands_section(roff: &mut Roff, cmd: &clap::Command) {
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut usage = vec![bold(format!("tqsup {}", sub.get_name()))];
        for arg in own_args(sub) {
            usage.push(roman(" ["));
            usage.extend(arg_inlines(arg));
            usage.push(roman("]"));
        }
        roff.control("TP", [] as [&str; 0]);
        roff.text(usage);
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        let args: Vec<&Arg> = own_args(sub).collect();
        if !args.is_empty() {
            roff.control("RS", [] as [&str; 0]);
            for arg in args {
                roff.control("TP", [] as [&str; 0]);
                roff.text(arg_inlines(arg));
                if let Some(help) = arg.get_long_help().or(arg.get_help()) {
                    roff.text([roman(help.to_string())]);
                }
            }
            roff.control("RE", [] as [&str; 0]);
        }
    }
}

/// A subcommand's own flags: not the global ones, not --help/--version.
fn own_args(sub: &clap::Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments().filter(|a| {
        !a.is_hide_set() && !a.is_global_set() && !matches!(a.get_id().as_str(), "help" | "version")
    })
}

/// `-x, --long VALUE` in roff.
fn arg_inlines(arg: &Arg) -> Vec<clap_mangen::roff::Inline> {
    let mut names = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("--{l}"));
    }
    let mut out = vec![bold(names.join(", "))];
    if arg.get_action().takes_values() {
        for v in arg.get_value_names().unwrap_or_default() {
            out.push(roman(" "));
            out.push(italic(v.to_string()));
        }
    }
    out
}

/// The documented exit codes, from the constants `main` returns.
fn exit_status_section(roff: &mut Roff) {
    let codes: [(u8, &str); 5] = [
        (exit::OK, "Success."),
        (
            exit::FAILURE,
            "Any other failure, e.g. php-fpm kept crashing past supervisor.max_restarts.",
        ),
        (exit::USAGE, "Wrong command-line usage."),
        (exit::UNAVAILABLE, "No php-fpm binary found."),
        (
            exit::CONFIG,
            "Configuration error, also when php-fpm itself rejects the rendered config.",
        ),
    ];
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in codes {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(code.to_string())]);
        roff.text([roman(meaning)]);
    }
}

fn definition_list(roff: &mut Roff, heading: &str, items: &[(&str, &str)]) {
    roff.control("SH", [heading]);
    for (term, text) in items {
        roff.control("TP", [] as [&str; 0]);
        roff.text([italic(*term)]);
        roff.text([roman(*text)]);
    }
}

/// The command line without its hidden subcommands: clap_complete offers
/// hidden ones too, and `generate` is for packaging, not for people.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("tqsup")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd
}

/// Writes the completion script for `shell` into `out_dir` (clap_complete's
/// file name: `tqsup.bash`, `_tqsup`, `tqsup.fish`, …) and returns its path.
pub fn completions(shell: Shell, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut cmd = visible_command();
    clap_complete::generate_to(shell, &mut cmd, "tqsup", out_dir)
        .with_context(|| format!("writing {shell} completions to {}", out_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_names_every_visible_command_and_flag() {
        let page = render_man_page().unwrap();
        assert!(page.contains("\n.TH tqsup 8 "), "{page}");
        assert_eq!(page.matches(".ds Aq").count(), 2, "{page}");
        for word in [
            "tqsup run",
            "\\-\\-dev",
            "print\\-cmd",
            "\\-\\-explain",
            "EXIT STATUS",
        ] {
            assert!(page.contains(word), "no {word} in\n{page}");
        }
        assert!(
            !page.contains("generate"),
            "the hidden command leaked:\n{page}"
        );
    }

    #[test]
    fn completions_are_written_under_clap_complete_names() {
        let dir = tempfile::tempdir().unwrap();
        for (shell, name) in [
            (Shell::Bash, "tqsup.bash"),
            (Shell::Zsh, "_tqsup"),
            (Shell::Fish, "tqsup.fish"),
        ] {
            let path = completions(shell, dir.path()).unwrap();
            assert_eq!(path, dir.path().join(name));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("print-cmd"), "{shell}: {text}");
            assert!(text.contains("config"), "{shell}: {text}");
            assert!(!text.contains("generate"), "{shell}: {text}");
        }
    }
}
