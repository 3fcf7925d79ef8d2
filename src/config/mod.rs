//! Configuration: one schema from YAML, TOML or a legacy TQServer
//! `worker.yaml`, validated into a [`Config`] (DESIGN §3–§4).

pub mod defaults;
mod endpoint;
mod legacy;
mod model;
mod problem;
mod raw;
mod validate;

use std::collections::HashMap;

use anyhow::Context as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use endpoint::{MAX_SOCKET_PATH, normalize, parse_endpoint, socket_path_problem};
pub use model::*;
pub use problem::{ConfigError, Problem};

/// Where to look for a config when `-c` is absent, in order (DESIGN §3).
pub fn discovery_candidates(env_config: Option<&str>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = env_config.filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    out.extend(
        [
            "tqsup.yaml",
            "tqsup.yml",
            "tqsup.toml",
            "/etc/tqsup/tqsup.yaml",
        ]
        .map(PathBuf::from),
    );
    out
}

/// The config file to use: `-c`, else the first discovery candidate that
/// exists. `Ok(None)` when nothing was found (dev mode then uses the
/// embedded default).
pub fn find(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(p) = explicit {
        return Ok(Some(p.to_path_buf()));
    }
    let env = std::env::var("TQSUP_CONFIG").ok();
    if let Some(p) = env.as_deref().filter(|p| !p.is_empty()) {
        // An explicit environment variable that points nowhere is an error,
        // not a reason to fall through to another file.
        return Ok(Some(PathBuf::from(p)));
    }
    Ok(discovery_candidates(None).into_iter().find(|p| p.is_file()))
}

/// Informational notes produced while loading (e.g. ignored legacy keys).
#[derive(Debug, Default)]
pub struct Notes {
    pub legacy: bool,
    pub ignored: Vec<String>,
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<(Config, Notes), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let abs = normalize(&abs);
    let base = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let env: Vec<(String, String)> = std::env::vars().collect();
    from_str(&text, &abs, &base, &env)
}

/// The embedded default for `run --dev` with no config file.
pub fn embedded_default(cwd: &Path) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let ctx = validate::Context {
        base_dir: cwd,
        embedded: true,
        environment: &env,
        aliases: &HashMap::new(),
    };
    validate::validate(&Value::Null, None, &ctx).map_err(|problems| ConfigError::Invalid {
        file: None,
        problems,
    })
}

/// Parses `text` (format by `path`'s extension) and validates it.
pub fn from_str(
    text: &str,
    path: &Path,
    base_dir: &Path,
    environment: &[(String, String)],
) -> Result<(Config, Notes), ConfigError> {
    let doc = parse(text, path)?;
    let mut notes = Notes::default();
    let mut aliases = HashMap::new();
    let mut early = Vec::new();
    let doc = if legacy::is_legacy(&doc) {
        let mapped = legacy::map(&doc);
        notes.legacy = true;
        notes.ignored = mapped.ignored;
        aliases = mapped.aliases;
        early = mapped.problems;
        mapped.doc
    } else {
        doc
    };
    let ctx = validate::Context {
        base_dir,
        embedded: false,
        environment,
        aliases: &aliases,
    };
    let result = validate::validate(&doc, Some(path.to_path_buf()), &ctx);
    match result {
        Ok(config) if early.is_empty() => Ok((config, notes)),
        Ok(_) => Err(ConfigError::Invalid {
            file: Some(path.to_path_buf()),
            problems: early,
        }),
        Err(mut problems) => {
            early.append(&mut problems);
            Err(ConfigError::Invalid {
                file: Some(path.to_path_buf()),
                problems: early,
            })
        }
    }
}

fn parse(text: &str, path: &Path) -> Result<Value, ConfigError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let syntax = |message: String| ConfigError::Syntax {
        file: path.to_path_buf(),
        message,
    };
    match ext {
        "yaml" | "yml" => {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            serde_yaml::from_str::<Value>(text)
                .map_err(|e| syntax(format!("YAML syntax error: {e}")))
        }
        "toml" => toml::from_str::<Value>(text).map_err(|e| {
            syntax(format!(
                "TOML syntax error: {}",
                e.to_string().replace('\n', " ")
            ))
        }),
        other => Err(syntax(format!(
            "unknown config format `.{other}`; fix: name the file .yaml, .yml or .toml"
        ))),
    }
}

#[cfg(test)]
mod message_tests;
#[cfg(test)]
mod tests;

/// Loads the config the way every command does: `-c`, else discovery; with
/// nothing found, dev mode uses the embedded default and the others fail.
pub fn load_or_default(
    explicit: Option<&Path>,
    allow_default: bool,
) -> anyhow::Result<(Config, Notes)> {
    match find(explicit)? {
        Some(path) => Ok(load(&path)?),
        None if allow_default => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            Ok((embedded_default(&cwd)?, Notes::default()))
        }
        None => Err(ConfigError::NotFound {
            tried: discovery_candidates(std::env::var("TQSUP_CONFIG").ok().as_deref()),
        }
        .into()),
    }
}
