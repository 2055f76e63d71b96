//! Connection-pool probe: size, idle, in use, waiting and acquire latency of every registered pool.
//!
//! A pool is seen through the [`PoolStats`] trait, which reads the pool's *own* status API and
//! reports a number the pool cannot tell as `None` (serialized as JSON `null`), never as a fake
//! `0`. Adapters for sqlx, deadpool, bb8 and r2d2 sit behind the `pools-*` cargo features; any
//! other pool can implement the trait in a few lines.
//!
//! Pools are named in a [`PoolRegistry`], which forgets a pool once the host drops it (or closes
//! it): [`PoolRegistry::register`] keeps only a weak reference and hands the host a
//! [`Registration`] to keep next to the pool. See [`PoolRegistry`] for why, and for the one
//! exception ([`PoolRegistry::register_static`]).
//!
//! ```
//! use prodbg::pools::{PoolRegistry, PoolSnapshot, PoolStats};
//!
//! struct Fixed;
//! impl PoolStats for Fixed {
//!     fn snapshot(&self) -> PoolSnapshot {
//!         let mut s = PoolSnapshot::default();
//!         s.max_size = Some(10);
//!         s.in_use = Some(10);
//!         s
//!     }
//! }
//!
//! let registry = PoolRegistry::new();
//! let _registration = registry.register("primary-db", Fixed); // keep it as long as the pool
//! let pools = registry.snapshot();
//! assert_eq!(pools[0].0, "primary-db");
//! assert_eq!(pools[0].1.utilisation(), Some(1.0));
//! assert_eq!(pools[0].1.saturated(), Some(true)); // waiting unknown: exhausted counts as saturated
//! ```

mod acquire;
#[cfg(feature = "pools-bb8")]
mod bb8_stats;
#[cfg(feature = "pools-deadpool")]
mod deadpool_stats;
#[cfg(feature = "pools-r2d2")]
mod r2d2_stats;
#[cfg(feature = "pools-sqlx")]
mod sqlx_stats;

pub use acquire::AcquireRecorder;
#[cfg(feature = "pools-bb8")]
pub use bb8_stats::{bb8, Bb8Stats};
#[cfg(feature = "pools-deadpool")]
pub use deadpool_stats::{deadpool, DeadpoolStats};
#[cfg(feature = "pools-r2d2")]
pub use r2d2_stats::{r2d2, R2d2Stats};
#[cfg(feature = "pools-sqlx")]
pub use sqlx_stats::{sqlx, SqlxStats};

mod registry;

pub use registry::{Bucket, Histogram, PoolRegistry, PoolSnapshot, PoolStats, Registration};

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use serde::Serialize;

use crate::encode::prometheus::{Families, HistogramSample};
use crate::seam::{
    ready, Access, ApiError, BoxFuture, BundlePart, Card, Figure, Glance, Params, Probe,
    ProbeContext, ProbeSpec, Route, RouteSpec, Row, Table, Unit, Value, Vitals,
};
use crate::security::Scope;

/// `GET /debug/pools`.
pub(crate) static POOLS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/pools",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "every registered connection pool: max, size, idle, in use, waiting, utilisation, saturated"
            .into()
    },
};

/// The pools probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "pools",
    feature: None,
    routes: &[&POOLS],
    bundle_files: &["pools.json"],
};

/// The `/debug/pools` body.
#[derive(Debug, Serialize)]
struct PoolsReport {
    /// Every registered pool, sorted by name.
    pools: Vec<PoolReport>,
}

/// One pool in `/debug/pools`.
#[derive(Debug, Serialize)]
struct PoolReport {
    /// The name it was registered under.
    name: String,
    /// Its numbers; `null` where the pool cannot tell.
    #[serde(flatten)]
    snapshot: PoolSnapshot,
    /// `in_use / max_size`, 0.0–1.0; `null` when either is unknown.
    utilisation: Option<f64>,
    /// Every connection in use and callers waiting (or waiting unknown); `null` when unknown.
    saturated: Option<bool>,
}

fn report(pools: &PoolRegistry) -> PoolsReport {
    let pools = pools
        .snapshot()
        .into_iter()
        .map(|(name, snapshot)| PoolReport {
            name,
            utilisation: snapshot.utilisation(),
            saturated: snapshot.saturated(),
            snapshot,
        })
        .collect();
    PoolsReport { pools }
}

async fn pools(
    State(registry): State<PoolRegistry>,
    RawQuery(q): RawQuery,
) -> Result<Json<PoolsReport>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(report(&registry)))
}

/// The registered connection pools.
#[derive(Debug)]
pub(crate) struct Pools {
    cx: ProbeContext,
    registry: PoolRegistry,
}

impl Pools {
    /// Reports the pools of `registry`.
    pub(crate) fn new(cx: &ProbeContext, registry: PoolRegistry) -> Pools {
        Pools {
            cx: cx.clone(),
            registry,
        }
    }
}

impl Probe for Pools {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        vec![POOLS.serve(&self.cx.limits, pools, self.registry.clone())]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        Some(Box::new(PoolCollector(self.registry.clone())))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        vec![BundlePart::json("pools.json", &report(&self.registry))]
    }

    fn vitals(&self, out: &mut Vitals) {
        for (name, p) in self.registry.snapshot() {
            if let Some(n) = p.in_use {
                out.gauge(format!("pool.{name}.in_use"), Unit::Count, n as f64);
            }
            if let Some(n) = p.waiting {
                out.gauge(format!("pool.{name}.waiting"), Unit::Count, n as f64);
            }
        }
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let r = report(&self.registry);
        let saturated: Vec<&str> = r
            .pools
            .iter()
            .filter(|p| p.saturated == Some(true))
            .map(|p| p.name.as_str())
            .collect();
        let saturated_figure = Figure::new(
            "pools-saturated",
            Card::POOLS,
            "saturated",
            Value::Text(if saturated.is_empty() {
                "none".into()
            } else {
                saturated.join(", ")
            }),
        )
        .bad(!saturated.is_empty());
        let rows = r
            .pools
            .iter()
            .map(|p| Row {
                cells: vec![
                    Value::Text(p.name.clone()),
                    Value::Count(p.snapshot.in_use),
                    Value::Count(p.snapshot.max_size),
                    Value::Count(p.snapshot.waiting),
                ],
                bad: p.saturated == Some(true),
            })
            .collect();
        ready(
            Glance::default()
                .figure(Figure::new(
                    "pools",
                    Card::POOLS,
                    "registered",
                    Value::Count(Some(r.pools.len() as u64)),
                ))
                .figure(saturated_figure)
                .table(Table {
                    id: "pools-each",
                    card: Card::POOLS,
                    columns: vec!["pool", "in use", "max", "waiting"],
                    rows,
                    empty: "no pool registered: .pool(\"db\", prodbg::pools::sqlx(&pool))".into(),
                }),
        )
    }
}

/// `prodbg_pool_*` gauges, counters and the acquire-wait histogram, one sample per pool
/// (label `pool`). A number the pool cannot tell has no sample.
#[derive(Debug)]
struct PoolCollector(PoolRegistry);

impl Collector for PoolCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let pools = self.0.snapshot();
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
