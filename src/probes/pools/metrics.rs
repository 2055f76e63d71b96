//! `prodbg_pool_*` on `/metrics`: each pool's numbers and its holders' figures, one sample
//! per pool (label `pool`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{PoolRegistry, PoolSnapshot};
use crate::encode::prometheus::{Families, HistogramSample};

/// `prodbg_pool_*` gauges, counters and the acquire-wait histogram, one sample per pool
/// (label `pool`). A number the pool cannot tell has no sample.
#[derive(Debug)]
pub(super) struct PoolCollector(pub(super) PoolRegistry);

impl Collector for PoolCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let pools = self.0.snapshot();
        let recorders = self.0.recorders();
        // Holder figures of the listed pools acquired through their recorder.
        let held: Vec<(&str, super::report::HoldFigures)> = pools
            .iter()
            .filter_map(|(n, _)| Some((n.as_str(), super::report::figures(recorders.get(n)?)?)))
            .collect();
        let mut f = Families::new(encoder);
        type Field = fn(&PoolSnapshot) -> Option<f64>;
        let gauges: [(&str, &str, Field); 7] = [
            (
                "prodbg_pool_max_connections",
                "Most connections the pool will open",
                |p| p.max_size.map(|v| v as f64),
            ),
            (
                "prodbg_pool_connections",
                "Connections the pool holds, idle plus in use",
                |p| p.size.map(|v| v as f64),
            ),
            (
                "prodbg_pool_idle_connections",
                "Open connections idle in the pool",
                |p| p.idle.map(|v| v as f64),
            ),
            (
                "prodbg_pool_in_use_connections",
                "Connections checked out by the application",
                |p| p.in_use.map(|v| v as f64),
            ),
            (
                "prodbg_pool_waiting_acquirers",
                "Callers waiting for a connection",
                |p| p.waiting.map(|v| v as f64),
            ),
            (
                "prodbg_pool_utilisation_ratio",
                "In-use connections divided by the maximum",
                |p| p.utilisation(),
            ),
            (
                "prodbg_pool_saturated",
                "1 when every connection is in use and callers wait",
                |p| p.saturated().map(|b| if b { 1.0 } else { 0.0 }),
            ),
        ];
        let label = |name: &str| vec![("pool".to_string(), name.to_string())];
        for (metric, help, field) in gauges {
            f.gauges(
                metric,
                help,
                pools
                    .iter()
                    .filter_map(|(n, p)| Some((label(n), field(p)?))),
            )?;
        }
        f.gauges(
            "prodbg_pool_oldest_hold_seconds",
            "How long the oldest connection checked out through the recorder has been out (0 when none is)",
            held.iter()
                .map(|(n, h)| (label(n), h.oldest.map_or(0.0, |d| d.as_secs_f64()))),
        )?;
        f.gauges(
            "prodbg_pool_suspected_leaks",
            "Connections out for longer than the pool's leak threshold now",
            held.iter().map(|(n, h)| (label(n), h.suspected as f64)),
        )?;
        f.counters(
            "prodbg_pool_leaks",
            "Connections that crossed the pool's leak threshold",
            held.iter().map(|(n, h)| (label(n), h.leaks_total as f64)),
        )?;
        f.counters(
            "prodbg_pool_acquire_timeouts",
            "Acquires that timed out",
            pools
                .iter()
                .filter_map(|(n, p)| Some((label(n), p.acquire_timeouts_total? as f64))),
        )?;
        f.histograms(
            "prodbg_pool_acquire_wait_seconds",
            "Time acquires waited for a connection, in seconds",
            pools.iter().filter_map(|(n, p)| {
                let h = p.acquire_wait.as_ref()?;
                let sample = HistogramSample {
                    cumulative: h.buckets.iter().map(|b| (b.le_seconds, b.count)).collect(),
                    count: h.count,
                    sum: h.sum_seconds,
                };
                Some((label(n), sample))
            }),
        )
    }
}
