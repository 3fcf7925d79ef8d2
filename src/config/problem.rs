//! A configuration problem and the error that carries all of them.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a configuration: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `php_fpm.pool.max_children`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.message, self.fix)
    }
}

/// Why a configuration could not be loaded. Every variant maps to exit 78,
/// except [`ConfigError::NotFound`] when `-c` named nothing (also 78: the
/// operator pointed at a config that is not there).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", file.display())]
    Syntax { file: PathBuf, message: String },
    #[error("{}: {}", file_name(file), join(problems))]
    Invalid {
        file: Option<PathBuf>,
        problems: Vec<Problem>,
    },
    #[error(
        "no config file found (looked at {}); fix: pass -c FILE, set TQSUP_CONFIG, or use `tqsup run --dev` for the built-in default",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound { tried: Vec<PathBuf> },
}

impl ConfigError {
    /// The problems of an invalid config (empty for the other kinds).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn file_name(file: &Option<PathBuf>) -> String {
    match file {
        Some(f) => f.display().to_string(),
        None => "built-in default config".to_string(),
    }
}

fn join(problems: &[Problem]) -> String {
    let n = problems.len();
    let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    if n == 1 {
        all.join("")
    } else {
        format!("{n} problems: {}", all.join("; "))
    }
}
