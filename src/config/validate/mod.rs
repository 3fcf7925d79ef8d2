//! From the raw layer to a [`Config`]: defaults, php-fpm's own rules, and
//! every problem collected at once (DESIGN §4). Each section is read by its
//! own file through the scoped [`Checker`]; what spans sections is here.

/// A key of the section being read, named by its field:
/// `key!(r.max_children)` is `("max_children", &r.max_children)`.
macro_rules! key {
    ($section:ident . $field:ident) => {
        (stringify!($field), &$section.$field)
    };
}

mod checker;
mod dev;
mod forward;
mod log;
mod php_fpm;
mod pool;
mod supervisor;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::model::{Admin, Config};
use super::problem::{Problem, describe};
use super::raw::RawConfig;
use checker::{BOOL, Checker, MILLIS, WHOLE};

/// What validation needs besides the parsed document.
pub struct Context<'a> {
    /// Relative paths resolve against this (the config file's directory).
    pub base_dir: &'a Path,
    /// The embedded default: document root `./public` if it exists, else `.`.
    pub embedded: bool,
    /// tqsup's environment; its `PHP_*` variables go to the pool's `env[]`.
    pub environment: &'a [(String, String)],
    /// Legacy key names to show instead of the mapped ones (`legacy.rs`).
    pub aliases: &'a HashMap<String, String>,
}

/// Validates a parsed document (already in the tqsup schema).
pub fn validate(
    doc: &Value,
    source: Option<PathBuf>,
    ctx: &Context,
) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();
    control_characters("", doc, &mut problems);
    if !doc.is_object() && !doc.is_null() {
        problems.push(Problem {
            key: "(top level)".into(),
            message: format!("expected a mapping of sections, found {}", describe(doc)),
            fix: "start the file with sections such as `php_fpm:`".into(),
        });
        return Err(problems);
    }
    let raw: RawConfig = serde_json::from_value(doc.clone()).unwrap_or_default();
    let c = &mut Checker::new(ctx, problems);
    c.unknown(&raw);
    let config = Config {
        source,
        base_dir: ctx.base_dir.to_path_buf(),
        php_fpm: c.section(key!(raw.php_fpm), php_fpm::read),
        forward: c.section(key!(raw.forward), forward::read),
        supervisor: c.section(key!(raw.supervisor), supervisor::read),
        dev: c.section(key!(raw.dev), dev::read),
        admin: c.section(key!(raw.admin), |c, r| Admin {
            listen: c.endpoint(key!(r.listen), "an address such as 127.0.0.1:9100"),
        }),
        log: c.section(key!(raw.log), log::read),
    };
    forward::lanes_fit_the_pool(c, &config);
    match std::mem::take(&mut c.problems) {
        problems if problems.is_empty() => Ok(config),
        problems => Err(problems),
    }
}

/// Reports every string (and mapping key) holding a control character: such
/// a value could smuggle a directive into the rendered php-fpm files.
fn control_characters(path: &str, value: &Value, problems: &mut Vec<Problem>) {
    let bad = |s: &str| s.chars().any(char::is_control);
    match value {
        Value::String(s) if bad(s) => problems.push(Problem {
            key: path.to_string(),
            message: format!("contains a control character (newline, NUL, tab, …): {value}"),
            fix: "remove the control characters; every value must fit on one line".into(),
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                control_characters(&format!("{path}[{i}]"), item, problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if bad(k) {
                    problems.push(Problem {
                        key: p.escape_debug().to_string(),
                        message: "key contains a control character".into(),
                        fix: "remove the control characters from the key".into(),
                    });
                }
                control_characters(&p, v, problems);
            }
        }
        _ => {}
    }
}

/// Whether `s` is a name php-fpm (and a metric label) takes: `[A-Za-z0-9_.-]+`.
fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}
