//! The command line (DESIGN §3): parsing, then one function per command.
//! `main` calls [`main`], which prints an error once, with its cause chain,
//! and maps it to the documented exit code.

mod generate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{self, Config, Notes};
use crate::discover::{self, PhpFpmBinary};
use crate::exit;
use crate::generation::Generation;
use crate::render::InternalPaths;
use crate::render::{self, Identity};
use crate::runtime_dir::private_dir;

/// Runs php-fpm behind one FastCGI endpoint.
#[derive(Debug, Parser)]
#[command(name = "tqsup", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (.yaml, .yml or .toml); default: $TQSUP_CONFIG, ./tqsup.yaml,
    /// ./tqsup.yml, ./tqsup.toml, /etc/tqsup/tqsup.yaml.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render, validate, launch and supervise php-fpm and serve the forward listener.
    Run {
        /// Dev mode: kept config dir, file watcher, hooks, debug logs.
        #[arg(long)]
        dev: bool,
    },
    /// Render into the dev config dir and print the exact php-fpm command line.
    PrintCmd {
        /// Also say which binary was chosen and why, its version, and each file written.
        #[arg(long)]
        explain: bool,
    },
    /// Write php-fpm.conf and pool.d/<pool>.conf to DIR, or print them.
    Render {
        /// Write the files into DIR (made 0700, files 0600) instead of printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Validate the config and run `php-fpm -t` on the rendered files.
    Check,
    /// Write the man page or shell completions into OUTDIR (packaging).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

/// What `tqsup generate` writes (see [`crate::generate`]).
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// tqsup.8
    Man {
        #[arg(value_name = "OUTDIR")]
        out: PathBuf,
    },
    /// tqsup.bash, _tqsup, tqsup.fish, …
    Completions {
        shell: clap_complete::Shell,
        #[arg(value_name = "OUTDIR")]
        out: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("tqsup: error: {err:#}");
            ExitCode::from(exit::code_for(&err))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run { dev } => crate::app::run(crate::app::RunArgs {
            config: cli.config,
            dev,
            verbose: cli.verbose,
        }),
        Command::PrintCmd { explain } => print_cmd(cli.config.as_deref(), explain),
        Command::Render { out } => render_cmd(cli.config.as_deref(), out),
        Command::Check => check(cli.config.as_deref()),
        Command::Generate(what) => {
            let path = match what {
                Generate::Man { out } => generate::man_page(&out)?,
                Generate::Completions { shell, out } => generate::completions(shell, &out)?,
            };
            println!("{}", path.display());
            Ok(exit::OK)
        }
    }
}

/// A stable token for files rendered to be kept or compared (`render`,
/// `print-cmd`): the same config renders the same bytes, whatever file format
/// it was written in. `run` uses a random token at each start instead.
fn stable_paths(config: &Config) -> InternalPaths {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    format!("{:?}{:?}", config.php_fpm, config.supervisor).hash(&mut h);
    let a = h.finish();
    a.rotate_left(17).hash(&mut h);
    let token = (u128::from(a) << 64) | u128::from(h.finish());
    InternalPaths::from_token(token)
}

fn print_cmd(explicit: Option<&Path>, explain: bool) -> anyhow::Result<u8> {
    let (config, notes) = config::load_or_default(explicit, true)?;
    // What `run` would do: dev mode only when the config enables it
    // (`run --dev` prints its command itself at start).
    let dev = config.dev.enabled;
    let dir = private_dir(&config.dev.config_dir)?;
    let paths = stable_paths(&config);
    let g = Generation::prepare(config, &paths, &dir, dev)?;
    let written = g.write()?;
    println!("{}", render::shell_line(&g.command));
    if explain {
        explain_lines(&g.config, &notes, &g.binary, &g.identity, &written);
    }
    Ok(exit::OK)
}

fn explain_lines(
    config: &Config,
    notes: &Notes,
    binary: &PhpFpmBinary,
    identity: &Identity,
    written: &[PathBuf],
) {
    match &config.source {
        Some(p) => println!(
            "# config: {}{}",
            p.display(),
            if notes.legacy {
                " (legacy TQServer worker.yaml)"
            } else {
                ""
            }
        ),
        None => println!("# config: built-in default (no config file found)"),
    }
    println!(
        "# php-fpm: {} (chosen because: {})",
        binary.path.display(),
        binary.reason
    );
    match discover::version(&binary.path) {
        Some(v) => println!("# version: {v}"),
        None => println!("# version: unknown (`{} -v` failed)", binary.path.display()),
    }
    if let Some(note) = &identity.note {
        println!("# pool user: {note}");
    }
    for p in written {
        println!("# wrote: {}", p.display());
    }
}

fn render_cmd(explicit: Option<&Path>, out: Option<PathBuf>) -> anyhow::Result<u8> {
    let (config, _) = config::load_or_default(explicit, true)?;
    let identity = render::checked_identity(&config, false)?;
    match out {
        Some(out) => {
            refuse_foreign_dir(&out)?;
            let dir = private_dir(&out)?;
            let files = render::render(&config, &stable_paths(&config), &identity, &dir, false)?;
            for p in files.write()? {
                println!("{}", p.display());
            }
        }
        None => {
            let dir = config::normalize(&config.dev.config_dir);
            let files = render::render(&config, &stable_paths(&config), &identity, &dir, false)?;
            println!("; ==> {} <==", files.main_path().display());
            print!("{}", files.main);
            println!("; ==> {} <==", dir.join(&files.pool_file).display());
            print!("{}", files.pool);
        }
    }
    Ok(exit::OK)
}

/// `render --out` makes its directory 0700: never do that to a directory
/// with someone's files in it, only to a new, empty or tqsup-rendered one.
fn refuse_foreign_dir(out: &Path) -> anyhow::Result<()> {
    let Ok(mut entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    if entries.next().is_none() {
        return Ok(());
    }
    let ours = std::fs::read_to_string(out.join(render::MAIN_FILE))
        .is_ok_and(|t| t.starts_with("; php-fpm.conf rendered by tqsup."));
    if ours {
        return Ok(());
    }
    Err(exit::Fatal::new(
        exit::USAGE,
        format!(
            "render --out {}: the directory has files tqsup did not render (it would be made 0700 and written into); fix: name a new or empty directory",
            out.display()
        ),
    )
    .into())
}

fn check(explicit: Option<&Path>) -> anyhow::Result<u8> {
    let (config, notes) = config::load_or_default(explicit, false)?;
    if !config.php_fpm.enabled {
        println!("config ok (php_fpm.enabled is false: nothing to test with php-fpm)");
        return Ok(exit::OK);
    }
    let tmp = tempfile::Builder::new()
        .prefix("tqsup-check-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = private_dir(tmp.path())?;
    let dev = config.dev.enabled;
    let g = Generation::prepare(config, &InternalPaths::generate(), &dir, dev)?;
    g.write()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(g.test()) {
        Ok(()) => {}
        Err(crate::phpfpm_test::TestError::Rejected(r)) => return Err(r.into()),
        Err(e) => return Err(e.into()),
    }
    let (config, binary) = (&g.config, &g.binary);
    for w in render::identity_warnings(config, &g.identity) {
        eprintln!("warning: {w}");
    }
    let source = config
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!(
        "config ok: {source}{} (php-fpm -t passed with {})",
        if notes.legacy {
            " (legacy TQServer worker.yaml)"
        } else {
            ""
        },
        binary.path.display()
    );
    Ok(exit::OK)
}
