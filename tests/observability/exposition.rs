//! The OpenMetrics text exposition of `/metrics`, parsed strictly, and
//! the Prometheus naming conventions checked on it.

use std::collections::BTreeMap;

/// Parsed exposition: families (name → type, help, unit) and samples
/// (`name{labels}` → value, labels sorted).
#[derive(Debug, Default)]
pub struct Metrics {
    pub types: BTreeMap<String, String>,
    pub helps: BTreeMap<String, String>,
    pub units: BTreeMap<String, String>,
    pub samples: BTreeMap<String, f64>,
}

impl Metrics {
    /// The sum of every sample of `name` (over all label sets).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key}"))
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `l1="v1",l2="v2"` (with `\\`, `\"`, `\n` escapes) into sorted pairs.
fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("label without =\"…\": {rest}"))?;
        if !valid_name(name) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {s}")),
            }
        };
        out.push((name.to_string(), value));
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.is_empty() {
            return Err(format!("junk after a label value: {rest}"));
        }
    }
    out.sort();
    Ok(out)
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v
            .parse::<f64>()
            .map_err(|e| format!("bad value {v:?}: {e}")),
    }
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(sample: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(sample) {
        return Some(sample);
    }
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created", "_info"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && types.contains_key(base)
        {
            return Some(base);
        }
    }
    None
}

/// A strict parser of the text exposition (OpenMetrics flavour, which
/// prometheus-client writes): every line is `# HELP`, `# TYPE`, `# UNIT`,
/// the final `# EOF`, or `name{labels} value`; every sample belongs to a
/// family declared before it.
pub fn parse_metrics(text: &str) -> Result<Metrics, String> {
    let mut m = Metrics::default();
    let mut eof = false;
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if eof {
            return Err(at("content after # EOF".into()));
        }
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(c) = line.strip_prefix("# ") {
            if c == "EOF" {
                eof = true;
                continue;
            }
            let mut parts = c.splitn(3, ' ');
            let (kw, name, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next(),
            );
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            let rest = rest.ok_or_else(|| at("comment without text".into()))?;
            let map = match kw {
                "HELP" => &mut m.helps,
                "TYPE" => {
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    if !known.contains(&rest) {
                        return Err(at(format!("unknown type {rest:?}")));
                    }
                    &mut m.types
                }
                "UNIT" => &mut m.units,
                _ => return Err(at(format!("unknown comment {kw:?}"))),
            };
            if map.insert(name.to_string(), rest.to_string()).is_some() {
                return Err(at(format!("{kw} for {name} twice")));
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("comment not of the form `# KEYWORD …`".into()));
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| at("sample without a value".into()))?;
        let value = parse_value(value).map_err(at)?;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l
                    .strip_suffix('}')
                    .ok_or_else(|| at("labels not closed".into()))?;
                (n, parse_labels(l).map_err(at)?)
            }
            None => (series, Vec::new()),
        };
        if !valid_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        if family_of(name, &m.types).is_none() {
            return Err(at(format!("sample {name} of no declared family")));
        }
        let key = if labels.is_empty() {
            name.to_string()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        if m.samples.insert(key.clone(), value).is_some() {
            return Err(at(format!("sample {key} twice")));
        }
    }
    if !eof {
        return Err("no # EOF at the end".into());
    }
    Ok(m)
}

/// Prometheus naming: counters' samples end `_total`, durations are in
/// `_seconds`, byte counts in `_bytes`, documented; tqsup's own are
/// `tqsup_<subsystem>_`, php-fpm's status page is `phpfpm_` gauges by
/// `pool`, as php-fpm exporters name them.
pub fn check_conventions(m: &Metrics) {
    const SUBSYSTEMS: [&str; 5] = ["forward", "upstream", "downstream", "php_fpm", "dev"];
    for (name, kind) in &m.types {
        if name.starts_with("phpfpm_") {
            assert_eq!(
                kind, "gauge",
                "{name}: the exporters' names are gauges here"
            );
            assert!(
                m.samples
                    .keys()
                    .filter(|k| k.starts_with(&format!("{name}{{")))
                    .all(|k| k.contains("pool=\"")),
                "{name}: no pool label"
            );
        } else {
            let rest = name
                .strip_prefix("tqsup_")
                .unwrap_or_else(|| panic!("{name}: no tqsup_ prefix"));
            assert!(
                SUBSYSTEMS
                    .iter()
                    .any(|s| rest.starts_with(&format!("{s}_"))),
                "{name}: not tqsup_<subsystem>_<name>"
            );
        }
        assert!(
            m.helps.get(name).is_some_and(|h| !h.trim().is_empty()),
            "{name}: no HELP"
        );
        if let Some(unit) = m.units.get(name) {
            assert!(name.ends_with(&format!("_{unit}")), "{name}: unit {unit}");
        }
        let samples: Vec<&String> = m
            .samples
            .keys()
            .filter(|k| family_of(k.split('{').next().unwrap(), &m.types) == Some(name))
            .collect();
        // Hook names are only known once a hook ran.
        assert!(
            !samples.is_empty() || name == "tqsup_dev_hook_runs",
            "{name}: no samples"
        );
        match kind.as_str() {
            "counter" => {
                assert!(!name.ends_with("_total"), "{name}: family named _total");
                for s in &samples {
                    let n = s.split('{').next().unwrap();
                    assert!(n.ends_with("_total"), "{s}: counter sample not _total");
                }
            }
            "histogram" => {
                assert!(
                    name.ends_with("_seconds"),
                    "{name}: histogram not in seconds"
                );
                for suffix in ["_count", "_sum"] {
                    assert!(
                        m.samples.contains_key(&format!("{name}{suffix}")),
                        "{name}: no {suffix}"
                    );
                }
                assert!(
                    m.samples
                        .contains_key(&format!("{name}_bucket{{le=\"+Inf\"}}")),
                    "{name}: no +Inf bucket"
                );
            }
            "gauge" => assert!(!name.ends_with("_total"), "{name}: gauge named _total"),
            other => panic!("{name}: unexpected type {other}"),
        }
        for time_word in ["duration", "wait", "time", "uptime", "latency"] {
            if name.contains(time_word) {
                assert!(name.ends_with("_seconds"), "{name}: a time not in seconds");
            }
        }
        for byte_word in ["received", "sent", "bytes"] {
            if name.contains(byte_word) {
                assert!(name.ends_with("_bytes"), "{name}: bytes not named _bytes");
            }
        }
    }
}
