//! Prometheus exposition: a helper for `Collector`s to write gauge, counter and histogram
//! families on each scrape, and the encoding of a registry as OpenMetrics text or as the
//! classic text format 0.0.4.

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Label pairs of one sample.
pub(crate) type Labels = Vec<(String, String)>;

/// Writes metric families from inside a `Collector::encode`. A family without samples is
/// left out.
#[derive(Debug)]
pub(crate) struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Families<'a> {
    /// Wraps the encoder a `Collector` is handed.
    pub(crate) fn new(encoder: DescriptorEncoder<'a>) -> Families<'a> {
        Families { encoder }
    }

    /// A gauge family `name` (units in the name, e.g. `_bytes`), one sample per label set.
    pub(crate) fn gauges(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) -> std::fmt::Result {
        let samples: Vec<_> = samples.into_iter().collect();
        if samples.is_empty() {
            return Ok(());
        }
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in &samples {
            metric.encode_family(labels)?.encode_gauge(v)?;
        }
        Ok(())
    }

    /// One unlabelled gauge.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, value: f64) -> std::fmt::Result {
        self.gauges(name, help, [(Vec::new(), value)])
    }

    /// A counter family; `name` is given without `_total`, which the encoder appends.
    pub(crate) fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) -> std::fmt::Result {
        let samples: Vec<_> = samples.into_iter().collect();
        if samples.is_empty() {
            return Ok(());
        }
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in &samples {
            metric
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, _, f64>(v, None::<&Exemplar<NoLabelSet, f64>>)?;
        }
        Ok(())
    }

    /// One unlabelled counter (`name` without `_total`).
    pub(crate) fn counter(&mut self, name: &str, help: &str, value: f64) -> std::fmt::Result {
        self.counters(name, help, [(Vec::new(), value)])
    }

    /// A histogram family known only as numbers (e.g. a pool's own acquire-wait histogram).
    pub(crate) fn histograms(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, HistogramSample)>,
    ) -> std::fmt::Result {
        let samples: Vec<_> = samples.into_iter().collect();
        if samples.is_empty() {
            return Ok(());
        }
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in &samples {
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
            metric
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }
        Ok(())
    }
}

/// Encodes `registry` (its metrics and collectors): OpenMetrics when `openmetrics`, else the
/// Prometheus text format 0.0.4.
pub(crate) fn encode(registry: &Registry, openmetrics: bool) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    encode_registry(&mut out, registry)?;
    if openmetrics {
        out.push_str("# EOF\n");
        Ok(out)
    } else {
        Ok(to_text_0_0_4(&out))
    }
}

/// A histogram's numbers: cumulative buckets `(upper bound, observations ≤ it)` in increasing
/// order (without `+Inf`), the total count and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HistogramSample {
    /// Cumulative `(le, count)` buckets; may be empty (only `+Inf` is then written).
    pub(crate) cumulative: Vec<(f64, u64)>,
    /// Number of observations.
    pub(crate) count: u64,
    /// Sum of the observations.
    pub(crate) sum: f64,
}

/// Content type of the OpenMetrics text format.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format 0.0.4.
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    use prometheus_client::collector::Collector;

    #[derive(Debug)]
    struct Fixture;

    impl Collector for Fixture {
        fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut f = Families::new(encoder);
            f.gauge("x_bytes", "a gauge", 3.0)?;
            f.counters(
                "y_events",
                "a counter",
                [(vec![("pool".to_string(), "db".to_string())], 2.0)],
            )?;
            let h = HistogramSample {
                cumulative: vec![(0.1, 2), (1.0, 5)],
                count: 7,
                sum: 3.5,
            };
            f.histograms(
                "wait_seconds",
                "waits",
                [(vec![("pool".to_string(), "db".to_string())], h)],
            )?;
            f.histograms("empty_seconds", "none", [])?;
            f.gauges("no_samples", "none", [])
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(Fixture));
        r
    }

    #[test]
    fn encodes_both_formats() {
        let om = encode(&registry(), true).unwrap();
        assert!(
            om.contains("# TYPE y_events counter") && om.ends_with("# EOF\n"),
            "{om}"
        );
        let text = encode(&registry(), false).unwrap();
        assert!(text.contains("# TYPE y_events_total counter"), "{text}");
        assert!(text.contains("y_events_total{pool=\"db\"} 2"), "{text}");
        assert!(text.contains("x_bytes 3"), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("no_samples"), "{text}");
    }

    #[test]
    fn const_histograms_are_cumulative_with_inf() {
        let text = encode(&registry(), false).unwrap();
        assert!(text.contains("# TYPE wait_seconds histogram"), "{text}");
        for line in [
            "wait_seconds_bucket{le=\"0.1\",pool=\"db\"} 2",
            "wait_seconds_bucket{le=\"1.0\",pool=\"db\"} 5",
            "wait_seconds_bucket{le=\"+Inf\",pool=\"db\"} 7",
            "wait_seconds_count{pool=\"db\"} 7",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("empty_seconds"), "{text}");
    }
}
