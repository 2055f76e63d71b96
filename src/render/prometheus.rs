//! Prometheus exposition: probe numbers as gauges and counters, encoded as OpenMetrics text or
//! as the classic text format 0.0.4.
//!
//! Probe data is copied into a fresh registry on each scrape (a scrape is rare and cheap next
//! to the probes' own reads), then encoded after the long-lived registries.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// Label pairs of one sample.
pub type Labels = Vec<(String, String)>;

/// Numbers gathered for one scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    registry: Registry,
}

impl Scrape {
    /// An empty scrape.
    pub fn new() -> Scrape {
        Scrape::default()
    }

    /// Adds a gauge family `name` (units in the name, e.g. `_bytes`) with one sample per label set.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let family: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        let mut any = false;
        for (labels, v) in samples {
            family.get_or_create(&labels).set(v);
            any = true;
        }
        // A family without samples is left out.
        if any {
            self.registry.register(name, help, family);
        }
    }

    /// Adds one unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.gauges(name, help, [(Vec::new(), value)]);
    }

    /// Adds a counter family; `name` is given without `_total`, which the encoder appends.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let family: Family<Labels, Counter<f64, AtomicU64>> = Family::default();
        let mut any = false;
        for (labels, v) in samples {
            family.get_or_create(&labels).inc_by(v);
            any = true;
        }
        // A family without samples is left out.
        if any {
            self.registry.register(name, help, family);
        }
    }

    /// Adds a histogram family known only as numbers (e.g. a pool's own acquire-wait
    /// histogram). A family without samples is left out.
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, HistogramSample)>,
    ) {
        let family = HistogramFamily(samples.into_iter().collect());
        if !family.0.is_empty() {
            self.registry.register(name, help, family);
        }
    }

    /// Adds one unlabelled counter (`name` without `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.counters(name, help, [(Vec::new(), value)]);
    }

    /// Adds a gauge with a unit, which OpenMetrics requires as the name's suffix.
    pub fn gauge_with_unit(&mut self, name: &str, help: &str, unit: Unit, value: f64) {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        self.registry.register_with_unit(name, help, unit, g);
    }

    /// Encodes `registries` and then this scrape: OpenMetrics when `openmetrics`, else the
    /// Prometheus text format 0.0.4.
    pub fn encode(
        &self,
        registries: &[&Registry],
        openmetrics: bool,
    ) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        for r in registries
            .iter()
            .copied()
            .chain(std::iter::once(&self.registry))
        {
            encode_registry(&mut out, r)?;
        }
        if openmetrics {
            out.push_str("# EOF\n");
            Ok(out)
        } else {
            Ok(to_text_0_0_4(&out))
        }
    }
}

/// A histogram's numbers: cumulative buckets `(upper bound, observations ≤ it)` in increasing
/// order (without `+Inf`), the total count and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSample {
    /// Cumulative `(le, count)` buckets; may be empty (only `+Inf` is then written).
    pub cumulative: Vec<(f64, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
}

#[derive(Debug)]
struct HistogramFamily(Vec<(Labels, HistogramSample)>);

impl TypedMetric for HistogramFamily {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistogramFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            // prometheus-client wants per-bucket counts and accumulates them itself.
            let mut below = 0;
            let mut buckets: Vec<(f64, u64)> = h
                .cumulative
                .iter()
                .map(|&(le, c)| {
                    let n = c.saturating_sub(below);
                    below = below.max(c);
                    (le, n)
                })
                .collect();
            buckets.push((f64::MAX, h.count.saturating_sub(below)));
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text as Prometheus 0.0.4: counters' `# TYPE`/`# HELP` lines carry the
/// `_total` name their samples have, `# UNIT` lines and `# EOF` are dropped, and unlabelled
/// samples lose their empty `{}`.
fn to_text_0_0_4(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let (name, tail) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(&line.replacen("{} ", " ", 1)),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_both_formats() {
        let mut s = Scrape::new();
        s.gauge("x_bytes", "a gauge", 3.0);
        s.counters(
            "y_events",
            "a counter",
            [(vec![("pool".to_string(), "db".to_string())], 2.0)],
        );
        let om = s.encode(&[], true).unwrap();
        assert!(
            om.contains("# TYPE y_events counter") && om.ends_with("# EOF\n"),
            "{om}"
        );
        let text = s.encode(&[], false).unwrap();
        assert!(text.contains("# TYPE y_events_total counter"), "{text}");
        assert!(text.contains("y_events_total{pool=\"db\"} 2"), "{text}");
        assert!(text.contains("x_bytes 3"), "{text}");
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn const_histograms_are_cumulative_with_inf() {
        let mut s = Scrape::new();
        let h = HistogramSample {
            cumulative: vec![(0.1, 2), (1.0, 5)],
            count: 7,
            sum: 3.5,
        };
        s.histograms(
            "wait_seconds",
            "waits",
            [(vec![("pool".to_string(), "db".to_string())], h)],
        );
        s.histograms("empty_seconds", "none", []);
        let text = s.encode(&[], false).unwrap();
        assert!(text.contains("# TYPE wait_seconds histogram"), "{text}");
        assert!(
            text.contains("wait_seconds_bucket{le=\"0.1\",pool=\"db\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("wait_seconds_bucket{le=\"1.0\",pool=\"db\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("wait_seconds_bucket{le=\"+Inf\",pool=\"db\"} 7"),
            "{text}"
        );
        assert!(text.contains("wait_seconds_count{pool=\"db\"} 7"), "{text}");
        assert!(!text.contains("empty_seconds"), "{text}");
    }
}
