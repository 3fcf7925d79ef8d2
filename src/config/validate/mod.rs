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

// What the section files share (`use super::*`): the raw layer, the model,
// the defaults and the checker.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::defaults::*;
use super::model::*;
use super::problem::{Problem, describe};
use super::raw::*;
use checker::{BOOL, Checker, Key, MILLIS, WHOLE, child};

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
    let mut c = Checker::new(ctx);
    control_characters("", doc, &mut c.problems);
    if !doc.is_object() && !doc.is_null() {
        let why = format!("expected a mapping of sections, found {}", describe(doc));
        let fix = "start the file with sections such as `php_fpm:`";
        c.problem("(top level)", why, fix);
        return Err(c.problems);
    }
    let raw: RawConfig = serde_json::from_value(doc.clone()).unwrap_or_default();
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
    forward::lanes_fit_the_pool(&mut c, &config);
    c.problems.is_empty().then_some(config).ok_or(c.problems)
}

/// Reports every string (and mapping key) holding a control character: such
/// a value could smuggle a directive into the rendered php-fpm files.
fn control_characters(path: &str, value: &Value, out: &mut Vec<Problem>) {
    let bad = |s: &str| s.chars().any(char::is_control);
    match value {
        Value::String(s) if bad(s) => {
            let message = format!("contains a control character (newline, NUL, tab, …): {value}");
            out.push(Problem::new(path, message, CONTROL_FIX));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                control_characters(&format!("{path}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let key = child(path, k);
                if bad(k) {
                    let message = "key contains a control character";
                    let fix = "remove the control characters from the key";
                    out.push(Problem::new(key.escape_debug().to_string(), message, fix));
                }
                control_characters(&key, v, out);
            }
        }
        _ => {}
    }
}

const CONTROL_FIX: &str = "remove the control characters; every value must fit on one line";

/// Whether `s` is non-empty and only ASCII letters, digits and `extra`:
/// [`NAME`] for what php-fpm (and a metric label) takes as a name.
fn name_ok(s: &str, extra: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || extra.contains(c);
    !s.is_empty() && s.chars().all(ok)
}

/// The characters besides letters and digits php-fpm takes in a pool or
/// account name, and a metric in a label.
const NAME: &str = "_.-";
