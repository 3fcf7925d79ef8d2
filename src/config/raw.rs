//! The raw layer of the configuration: serde structs shared by YAML, TOML and
//! the legacy TQServer mapping.
//!
//! Every leaf is a [`Field`], which never fails to deserialize: a value of the
//! wrong type is kept with its error, and every struct collects the keys it
//! does not know in `unknown`. This is `deny_unknown_fields` made to report
//! *every* problem at once: validation (`validate/`) turns each bad field and
//! each unknown key into a problem naming the key path, with the closest known
//! key as the suggested fix.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One configuration value as written: absent, well-typed, or wrong.
#[derive(Debug, Clone, Default)]
pub enum Field<T> {
    /// The key is absent (or `null`): the default applies.
    #[default]
    Unset,
    /// The key holds a value of the right type.
    Set(T),
    /// The key holds a value of the wrong type; kept for the error message.
    Bad { value: Value },
}

impl<T> Field<T> {
    /// The value when it was set and well-typed.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Set(v) => Some(v),
            _ => None,
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        if value.is_null() {
            return Ok(Field::Unset);
        }
        Ok(match serde_json::from_value::<T>(value.clone()) {
            Ok(v) => Field::Set(v),
            Err(_) => Field::Bad { value },
        })
    }
}

/// Serialized as `null`: only used to list the known keys of a section.
impl<T> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_none()
    }
}

/// Keys a section does not know, kept so that validation can name them all.
pub type Unknown = BTreeMap<String, Value>;

/// A scalar written for a php.ini setting or an environment variable: YAML
/// and TOML users write `display_errors: 1` or `opcache.enable: true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Scalar {
    /// The value as php.ini and `env[]` read it (booleans as on/off).
    pub fn text(&self) -> String {
        match self {
            Scalar::Bool(b) => if *b { "on" } else { "off" }.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => s.clone(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawConfig {
    pub php_fpm: Field<RawPhpFpm>,
    pub forward: Field<RawForward>,
    pub supervisor: Field<RawSupervisor>,
    pub dev: Field<RawDev>,
    pub admin: Field<RawAdmin>,
    pub log: Field<RawLog>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawPhpFpm {
    pub enabled: Field<bool>,
    pub binary: Field<String>,
    pub php_ini: Field<String>,
    pub listen: Field<String>,
    pub transport: Field<String>,
    pub pool_size: Field<u32>,
    pub connect_timeout_ms: Field<u64>,
    pub request_timeout_ms: Field<u64>,
    pub read_timeout_ms: Field<u64>,
    pub write_timeout_ms: Field<u64>,
    pub document_root: Field<String>,
    pub user: Field<String>,
    pub group: Field<String>,
    pub allow_root: Field<bool>,
    pub settings: Field<BTreeMap<String, Scalar>>,
    pub env: Field<BTreeMap<String, Scalar>>,
    pub pool: Field<RawPool>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawPool {
    pub name: Field<String>,
    #[serde(rename = "type")]
    pub kind: Field<String>,
    pub max_children: Field<u32>,
    pub start_servers: Field<u32>,
    pub min_spare_servers: Field<u32>,
    pub max_spare_servers: Field<u32>,
    pub max_requests: Field<u32>,
    pub process_idle_timeout_ms: Field<u64>,
    pub request_terminate_timeout_ms: Field<u64>,
    pub max_memory_mb: Field<u64>,
    pub max_lifetime_ms: Field<u64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawForward {
    pub enabled: Field<bool>,
    pub listen: Field<String>,
    pub socket_mode: Field<String>,
    pub max_connections: Field<u32>,
    pub threads: Field<u32>,
    pub queue_timeout_ms: Field<u64>,
    pub retry_idempotent: Field<bool>,
    pub params_timeout_ms: Field<u64>,
    pub stdin_timeout_ms: Field<u64>,
    pub params_buffer_bytes: Field<u64>,
    pub params_buffer_total_bytes: Field<u64>,
    pub health: Field<RawHealth>,
    pub lanes: Field<Vec<RawLane>>,
    pub pool_idle_timeout_ms: Field<u64>,
    pub slow_request_ms: Field<u64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawLane {
    pub name: Field<String>,
    #[serde(rename = "match")]
    pub matches: Field<String>,
    pub max: Field<u32>,
    pub queue_timeout_ms: Field<u64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawHealth {
    pub interval_ms: Field<u64>,
    pub timeout_ms: Field<u64>,
    pub failure_threshold: Field<u32>,
    pub open_ms: Field<u64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawSupervisor {
    pub restart: Field<String>,
    pub backoff_initial_ms: Field<u64>,
    pub backoff_max_ms: Field<u64>,
    pub stable_after_ms: Field<u64>,
    pub max_restarts: Field<u32>,
    pub restart_window_ms: Field<u64>,
    pub ready_timeout_ms: Field<u64>,
    pub stop_timeout_ms: Field<u64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawDev {
    pub enabled: Field<bool>,
    pub config_dir: Field<String>,
    pub http_listen: Field<String>,
    pub watch: Field<RawWatch>,
    pub hooks: Field<Vec<RawHook>>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawWatch {
    pub paths: Field<Vec<String>>,
    pub ignore: Field<Vec<String>>,
    pub gitignore: Field<bool>,
    pub debounce_ms: Field<u64>,
    pub poll_interval_ms: Field<u64>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawHook {
    pub name: Field<String>,
    pub run: Field<String>,
    pub paths: Field<Vec<String>>,
    pub then: Field<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawAdmin {
    pub listen: Field<String>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RawLog {
    pub format: Field<String>,
    pub level: Field<String>,
    pub access: Field<Scalar>,
    #[serde(flatten, skip_serializing)]
    pub unknown: Unknown,
}

/// A mapping of the config: it can list the keys it knows and keeps the
/// ones it does not, so validation can name each unknown one.
pub trait Section: Default + Clone + Serialize {
    /// The keys found in this mapping that it does not know.
    fn unknown(&self) -> &Unknown;

    /// The keys this mapping knows, for "did you mean" (sorted: the
    /// serialized map is ordered by key).
    fn known_keys() -> Vec<String> {
        match serde_json::to_value(Self::default()) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

macro_rules! sections {
    ($($section:ty),*) => {
        $(impl Section for $section {
            fn unknown(&self) -> &Unknown {
                &self.unknown
            }
        })*
    };
}

sections!(
    RawConfig,
    RawPhpFpm,
    RawPool,
    RawForward,
    RawLane,
    RawHealth,
    RawSupervisor,
    RawDev,
    RawWatch,
    RawHook,
    RawAdmin,
    RawLog
);
