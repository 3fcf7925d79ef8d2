//! TQServer's `workers/<name>/config/worker.yaml`, mapped onto the tqsup
//! schema (DESIGN §4, "Legacy TQServer files").
//!
//! The mapping is done on the parsed document, before validation, so a
//! legacy file goes through exactly the same rules; problems are reported
//! under the legacy key names through `aliases`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::problem::{Problem, closest, describe};

/// A legacy document turned into the tqsup schema.
pub struct Mapped {
    /// The document in the tqsup schema.
    pub doc: Value,
    /// tqsup key path → the legacy key it came from, for error messages.
    pub aliases: HashMap<String, String>,
    /// TQServer top-level keys that tqsup has no use for (one info line).
    pub ignored: Vec<String>,
    /// Unknown keys inside `php:` (still errors).
    pub problems: Vec<Problem>,
}

/// Whether a document is a legacy TQServer worker file.
pub fn is_legacy(doc: &Value) -> bool {
    doc.get("php").is_some() && doc.get("php_fpm").is_none()
}

const IGNORED_TOP: &[&str] = &["path", "type", "enabled", "logging", "runtime", "timeouts"];

/// (legacy key under `php.pool`, tqsup key under `php_fpm.pool`, seconds→ms)
const POOL_KEYS: &[(&str, &str, bool)] = &[
    ("manager", "type", false),
    ("mode", "type", false),
    ("max_workers", "max_children", false),
    ("start_workers", "start_servers", false),
    ("min_workers", "min_spare_servers", false),
    ("max_spare_workers", "max_spare_servers", false),
    ("max_requests", "max_requests", false),
    ("request_timeout", "request_terminate_timeout_ms", true),
    ("idle_timeout", "process_idle_timeout_ms", true),
];

/// Keys of TQServer's pool that had meaning only for its own workers.
const POOL_IGNORED: &[&str] = &["listen_address"];

const PHP_KEYS: &[(&str, &str)] = &[
    ("binary", "binary"),
    ("config_file", "php_ini"),
    ("settings", "settings"),
];

pub fn map(doc: &Value) -> Mapped {
    let mut aliases = HashMap::new();
    let mut ignored = Vec::new();
    let mut problems = Vec::new();
    let mut php_fpm = Map::new();
    let mut top = Map::new();

    let empty = Map::new();
    let root = doc.as_object().unwrap_or(&empty);
    for (k, v) in root {
        match k.as_str() {
            "php" => {}
            "document_root" => {
                php_fpm.insert("document_root".into(), v.clone());
                aliases.insert("php_fpm.document_root".into(), "document_root".into());
            }
            k if IGNORED_TOP.contains(&k) => ignored.push(k.to_string()),
            // Anything else is unknown at the top level: let validation name it.
            _ => {
                top.insert(k.clone(), v.clone());
            }
        }
    }

    let php = root.get("php").and_then(Value::as_object).unwrap_or(&empty);
    let known_php: Vec<String> = PHP_KEYS
        .iter()
        .map(|(k, _)| k.to_string())
        .chain(["pool".into()])
        .collect();
    for (k, v) in php {
        if let Some((_, to)) = PHP_KEYS.iter().find(|(from, _)| from == k) {
            php_fpm.insert((*to).into(), v.clone());
            aliases.insert(format!("php_fpm.{to}"), format!("php.{k}"));
        } else if k != "pool" {
            problems.push(unknown(&format!("php.{k}"), k, &known_php, "php"));
        }
    }

    let mut pool = Map::new();
    let raw_pool = php.get("pool").and_then(Value::as_object).unwrap_or(&empty);
    let known_pool: Vec<String> = POOL_KEYS.iter().map(|(k, _, _)| k.to_string()).collect();
    for (k, v) in raw_pool {
        if let Some((_, to, secs)) = POOL_KEYS.iter().find(|(from, _, _)| from == k) {
            let value = match (secs, v.as_u64()) {
                (true, Some(s)) => json!(s.saturating_mul(1000)),
                // tqsup's key is in milliseconds: name the unit this one has.
                (true, None) if !v.is_null() => {
                    problems.push(Problem {
                        key: format!("php.pool.{k}"),
                        message: format!(
                            "expected a whole number of seconds, found {}",
                            describe(v)
                        ),
                        fix: format!("set `{k}` to a whole number of seconds"),
                    });
                    continue;
                }
                _ => v.clone(),
            };
            pool.insert((*to).into(), value);
            aliases.insert(format!("php_fpm.pool.{to}"), format!("php.pool.{k}"));
        } else if !POOL_IGNORED.contains(&k.as_str()) {
            problems.push(unknown(
                &format!("php.pool.{k}"),
                k,
                &known_pool,
                "php.pool",
            ));
        }
    }
    if !pool.is_empty() {
        php_fpm.insert("pool".into(), Value::Object(pool));
    }
    top.insert("php_fpm".into(), Value::Object(php_fpm));
    Mapped {
        doc: Value::Object(top),
        aliases,
        ignored,
        problems,
    }
}

fn unknown(path: &str, key: &str, known: &[String], section: &str) -> Problem {
    let fix = match closest(key, known) {
        Some(k) => format!("did you mean `{section}.{k}`?"),
        None => format!(
            "remove it; TQServer keys tqsup maps here: {}",
            known.join(", ")
        ),
    };
    Problem {
        key: path.into(),
        message: "unknown key in a legacy TQServer worker file".into(),
        fix,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// Seconds become milliseconds without overflowing (a debug build
    /// panicked, a release build wrapped to a short timeout).
    #[test]
    fn huge_seconds_saturate() {
        let doc = json!({ "php": { "pool": { "request_timeout": u64::MAX } } });
        let mapped = super::map(&doc);
        let ms = &mapped.doc["php_fpm"]["pool"]["request_terminate_timeout_ms"];
        assert_eq!(ms, &json!(u64::MAX));
    }
}
