//! A configuration problem, the error that carries all of them, and how a
//! problem shows a value and the known key a typo was meant to be.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

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

impl Problem {
    /// The problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        let (key, message, fix) = (key.into(), message.into(), fix.into());
        Problem { key, message, fix }
    }
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

/// The known key most like `key`, when one is close enough to be a typo.
pub fn closest<'k>(key: &str, known: &'k [String]) -> Option<&'k String> {
    let score = |k: &'k String| (strsim::jaro_winkler(key, k), k);
    let close = known.iter().map(score).filter(|(s, _)| *s >= 0.8);
    close.max_by(|a, b| a.0.total_cmp(&b.0)).map(|(_, k)| k)
}

/// A value as messages show it: its kind, and itself when short.
pub fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    };
    match value.to_string() {
        text if text.len() > 40 => kind.to_string(),
        text => format!("{kind} {text}"),
    }
}
