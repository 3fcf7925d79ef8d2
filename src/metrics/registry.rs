//! The register helper: a metric's name, help and unit are written once, on
//! the line that declares its field ([`metrics!`]), and the handle the
//! registry encodes is the one stored in that field.
//!
//! Naming scheme (README "Observability", docs/DEPLOYMENT.md §8): tqsup's own
//! metrics are `tqsup_<subsystem>_<name>` (subsystems `forward`, `upstream`,
//! `downstream`, `php_fpm`, `dev`); php-fpm's own status-page values are
//! `phpfpm_<name>`, as php-fpm exporters name them. Names are the exported
//! family names: a name ending `_seconds` or `_bytes` is registered with that
//! unit, and counters' samples get `_total` from the encoder.

use std::hash::Hash;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};
use strum::IntoEnumIterator;

/// Declares a struct of metrics, one field a line:
/// `field: Type = helper("name", "help", args…)`, where `helper` is a
/// [`Reg`] method; the generated `Group::register` calls them in order.
macro_rules! metrics {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident : $ty:ty = $helper:ident ( $($arg:expr),* $(,)? )
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty, )*
        }

        impl $crate::metrics::registry::Group for $name {
            fn register(reg: &mut $crate::metrics::registry::Reg) -> Self {
                $name { $( $field: reg.$helper($($arg),*), )* }
            }
        }
    };
}
pub(crate) use metrics;

/// Implements prometheus-client's `EncodeLabelValue` for enums whose
/// `IntoStaticStr` (strum, `serialize_all = "snake_case"`) is the label
/// value. prometheus-client's own derive writes the variant name as it is
/// (`QueueTimeout`) and cannot rename, nor list the variants.
macro_rules! label_values {
    ($($ty:ty),* $(,)?) => {
        $(
            impl prometheus_client::encoding::EncodeLabelValue for $ty {
                fn encode(
                    &self,
                    encoder: &mut prometheus_client::encoding::LabelValueEncoder,
                ) -> std::fmt::Result {
                    std::fmt::Write::write_str(encoder, <&'static str>::from(*self))
                }
            }
        )*
    };
}
pub(crate) use label_values;

/// A struct of metrics registered together (made by [`metrics!`]).
pub trait Group: Sized {
    fn register(reg: &mut Reg) -> Self;
}

/// The registry being filled, with one method per way a metric is made.
#[derive(Default)]
pub struct Reg {
    registry: Registry,
    /// Every name registered, in order (tests check the encoding has each).
    names: Vec<String>,
}

impl Reg {
    /// The registry in the OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The names registered so far.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// A nested group of metrics.
    pub fn group<G: Group>(&mut self) -> G {
        G::register(self)
    }

    /// Any metric made by its `Default` (counters, gauges, families).
    #[track_caller]
    pub fn metric<M: Metric + TypedMetric + Clone + Default>(
        &mut self,
        name: &str,
        help: &str,
    ) -> M {
        self.add(name, help, M::default())
    }

    /// A histogram of seconds with these bucket bounds.
    #[track_caller]
    pub fn histogram(&mut self, name: &str, help: &str, buckets: fn() -> Vec<f64>) -> Histogram {
        self.add(name, help, Histogram::new(buckets()))
    }

    /// A family of histograms of seconds with these bucket bounds.
    #[track_caller]
    pub fn histograms<S>(
        &mut self,
        name: &str,
        help: &str,
        buckets: fn() -> Vec<f64>,
    ) -> Family<S, Histogram, HistogramOf>
    where
        S: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        self.add(
            name,
            help,
            Family::new_with_constructor(HistogramOf(buckets)),
        )
    }

    /// A family whose every label value of enum `V` exists from the start
    /// (at 0), so rates and alerts see them before the first event.
    #[track_caller]
    pub fn every<V, S, M>(&mut self, name: &str, help: &str, label: fn(V) -> S) -> Family<S, M>
    where
        V: IntoEnumIterator,
        S: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
        M: Metric + TypedMetric + Clone + Default,
    {
        let family: Family<S, M> = self.metric(name, help);
        for v in V::iter() {
            drop(family.get_or_create(&label(v)));
        }
        family
    }

    /// One handle per variant of enum `V`, in declaration order, so the hot
    /// path indexes it by `variant as usize`: no label hashing, no lock.
    #[track_caller]
    pub fn indexed<V, S, M, const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        label: fn(V) -> S,
    ) -> [M; N]
    where
        V: IntoEnumIterator,
        S: EncodeLabelSet + Clone + Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
        M: Metric + TypedMetric + Clone + Default,
    {
        let family: Family<S, M> = self.metric(name, help);
        let mut variants = V::iter();
        let handles = std::array::from_fn(|_| {
            let v = variants.next().expect("an array as long as the enum");
            family.get_or_create_owned(&label(v))
        });
        assert!(
            variants.next().is_none(),
            "{name}: an array as long as the enum"
        );
        handles
    }

    #[track_caller]
    fn add<M: Metric + TypedMetric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        assert!(
            follows_scheme(name, M::TYPE),
            "{name}: not tqsup's naming scheme"
        );
        self.names.push(name.to_string());
        let (base, unit) = split_unit(name);
        match unit {
            Some(unit) => self
                .registry
                .register_with_unit(base, help, unit, metric.clone()),
            None => self.registry.register(base, help, metric.clone()),
        }
        metric
    }
}

/// A fresh group in a registry of its own, for tests (the process-wide one
/// is shared by every test), leaked so its gauges can be held.
#[cfg(test)]
pub fn fresh<G: Group>() -> (&'static G, Reg) {
    let mut reg = Reg::default();
    let group = Box::leak(Box::new(G::register(&mut reg)));
    (group, reg)
}

/// Makes a family's histograms with its buckets.
#[derive(Clone, Copy, Debug)]
pub struct HistogramOf(fn() -> Vec<f64>);

impl MetricConstructor<Histogram> for HistogramOf {
    fn new_metric(&self) -> Histogram {
        Histogram::new((self.0)())
    }
}

/// `tqsup_<subsystem>_<name>` or `phpfpm_<name>`, lower snake case; not
/// `_total` (the encoder adds it to counters, and php-fpm's values are
/// gauges); histograms in seconds.
pub fn follows_scheme(name: &str, kind: MetricType) -> bool {
    const SUBSYSTEMS: [&str; 5] = ["forward_", "upstream_", "downstream_", "php_fpm_", "dev_"];
    let own = name
        .strip_prefix("tqsup_")
        .is_some_and(|rest| SUBSYSTEMS.iter().any(|s| rest.starts_with(s)));
    let php_fpm = name.starts_with("phpfpm_") && kind == MetricType::Gauge;
    let snake = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let histogram_ok = kind != MetricType::Histogram || name.ends_with("_seconds");
    (own || php_fpm) && snake && !name.ends_with("_total") && histogram_ok
}

/// The name without its unit suffix, and the unit.
fn split_unit(name: &str) -> (&str, Option<Unit>) {
    if let Some(base) = name.strip_suffix("_seconds") {
        (base, Some(Unit::Seconds))
    } else if let Some(base) = name.strip_suffix("_bytes") {
        (base, Some(Unit::Bytes))
    } else {
        (name, None)
    }
}

/// Buckets for waits and request times: 0.5 ms doubling, up to ~16 s.
pub fn wait_buckets() -> Vec<f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16).collect()
}

/// Buckets for whole requests: 0.5 ms doubling, up to ~65 s.
pub fn request_buckets() -> Vec<f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 18).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme() {
        use MetricType::{Counter, Gauge, Histogram};
        for (name, kind, ok) in [
            ("tqsup_forward_requests", Counter, true),
            ("tqsup_forward_queue_wait_seconds", Histogram, true),
            ("tqsup_forward_queue_wait", Histogram, false),
            ("tqsup_forward_requests_total", Counter, false),
            ("tqsup_phpfpm_listen_queue", Gauge, false),
            ("tqsup_requests", Counter, false),
            ("phpfpm_listen_queue", Gauge, true),
            ("phpfpm_accepted_connections", Counter, false),
            ("php_fpm_up", Gauge, false),
            ("tqsup_Forward_x", Gauge, false),
        ] {
            assert_eq!(follows_scheme(name, kind), ok, "{name}");
        }
    }

    #[test]
    fn units_come_from_the_name() {
        assert_eq!(split_unit("a_seconds"), ("a", Some(Unit::Seconds)));
        assert_eq!(split_unit("a_bytes"), ("a", Some(Unit::Bytes)));
        assert_eq!(split_unit("a_b"), ("a_b", None));
    }
}
