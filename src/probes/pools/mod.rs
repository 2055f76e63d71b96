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
mod held;
#[cfg(any(feature = "cpu", feature = "heap"))]
mod held_profile;
mod holders;
mod leaks;
mod metrics;
mod naming;
#[cfg(feature = "pools-r2d2")]
mod r2d2_stats;
mod registry;
mod report;
#[cfg(feature = "pools-sqlx")]
mod sqlx_stats;

pub use acquire::{AcquireRecorder, DEFAULT_LEAK_AFTER};
#[cfg(feature = "pools-bb8")]
pub use bb8_stats::{bb8, Bb8Stats};
#[cfg(feature = "pools-deadpool")]
pub use deadpool_stats::{deadpool, DeadpoolStats};
pub use held::{Checkout, CheckoutSync, Held};
#[cfg(feature = "pools-r2d2")]
pub use r2d2_stats::{r2d2, R2d2Stats};
pub use registry::{Bucket, Histogram, PoolRegistry, PoolSnapshot, PoolStats, Registration};
#[cfg(feature = "pools-sqlx")]
pub use sqlx_stats::{sqlx, SqlxStats};

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::response::Response;
use axum::Json;
use prometheus_client::collector::Collector;

use crate::seam::{
    blocking, Access, ApiError, BoxFuture, BundlePart, Caller, Card, Figure, Glance, GoIndex,
    Params, Probe, ProbeContext, ProbeSpec, Route, RouteSpec, Row, Table, Unit, Value, Vitals,
};
use crate::security::Scope;
use report::{report, PoolsReport};

/// `GET /debug/pools`.
pub(crate) static POOLS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/pools",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "every registered connection pool: max, size, idle, in use, waiting, utilisation, saturated, and who holds its connections (grouped by acquire site, oldest first; ?holders=each lists every connection)"
            .into()
    },
};

/// `GET /debug/pprof/pool_held`.
pub(crate) static POOL_HELD: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/pprof/pool_held",
    access: Access::Scope(Scope::Profile),
    go: Some(GoIndex {
        link: "pool_held",
        text: "Connections checked out of the registered pools now, one sample each valued by how long it has been out, on the function that acquired it. ?pool=NAME for one pool.",
    }),
    summary: |_| {
        "held connections as a profile: one sample per connection out, valued by how long it has been out, on the acquiring function (?pool=NAME, ?format=pprof|svg|folded)".into()
    },
};

/// The pools probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "pools",
    feature: None,
    routes: &[&POOLS, &POOL_HELD],
    bundle_files: &["pools.json"],
};

/// Longest pool name `?pool=` takes.
const MAX_POOL_NAME: usize = 256;

async fn pools(
    State(registry): State<PoolRegistry>,
    RawQuery(q): RawQuery,
) -> Result<Json<PoolsReport>, ApiError> {
    let params = Params::parse(q.as_deref(), &["holders"])?;
    let each = params.choice("holders", &["sites", "each"], "sites")? == "each";
    Ok(Json(
        blocking("naming pool holders", move || report(&registry, each)).await?,
    ))
}

#[derive(Clone)]
struct HeldState {
    registry: PoolRegistry,
    #[cfg(any(feature = "cpu", feature = "heap"))]
    outlet: crate::seam::profile::Outlet,
}

async fn pool_held(
    State(st): State<HeldState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(q.as_deref(), &["pool", "format"])?;
    let pool = params.text("pool", MAX_POOL_NAME)?.map(str::to_owned);
    #[cfg(any(feature = "cpu", feature = "heap"))]
    {
        let ask = crate::seam::profile::Ask::parse(&params, false)?;
        let started = std::time::SystemTime::now();
        let registry = st.registry.clone();
        let wanted = pool.clone();
        let profile = blocking("naming pool holders", move || {
            held_profile::profile(&registry, wanted.as_deref())
        })
        .await?
        .map_err(|held_profile::NoProfile::UnknownPool(names)| {
            ApiError::not_found(format!(
                "no pool named {:?} is registered (registered: {})",
                pool.as_deref().unwrap_or_default(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })?;
        st.outlet
            .answer(profile, &ask, started, &caller, "pool-held")
            .await
    }
    #[cfg(not(any(feature = "cpu", feature = "heap")))]
    {
        let _ = (st.registry, caller, pool);
        Err(ApiError::not_compiled(
            "the held-connections profile needs prodbg's `cpu` (or `heap`) feature: rebuild with it",
        ))
    }
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
        let held = HeldState {
            registry: self.registry.clone(),
            #[cfg(any(feature = "cpu", feature = "heap"))]
            outlet: crate::seam::profile::Outlet::new(&self.cx),
        };
        vec![
            POOLS.serve(&self.cx.limits, pools, self.registry.clone()),
            POOL_HELD.serve(&self.cx.limits, pool_held, held),
        ]
    }

    fn collector(&self) -> Option<Box<dyn Collector>> {
        Some(Box::new(metrics::PoolCollector(self.registry.clone())))
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        vec![BundlePart::json(
            "pools.json",
            &report(&self.registry, true),
        )]
    }

    fn vitals(&self, out: &mut Vitals) {
        for (name, p) in self.registry.snapshot() {
            if let Some(n) = p.in_use {
                out.gauge(format!("pool.{name}.in_use"), Unit::Count, n as f64);
            }
            if let Some(n) = p.waiting {
                out.gauge(format!("pool.{name}.waiting"), Unit::Count, n as f64);
            }
            if let Some(s) = p.saturated() {
                let s = if s { 1.0 } else { 0.0 };
                out.gauge(format!("pool.{name}.saturated"), Unit::Count, s);
            }
        }
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let registry = self.registry.clone();
        Box::pin(async move {
            let r = blocking("naming pool holders", move || report(&registry, false))
                .await
                .ok()?;
            Some(glance(&r))
        })
    }
}

/// The console's pools card: how many, which are saturated, and per pool its use and oldest
/// holder.
fn glance(r: &PoolsReport) -> Glance {
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
        .map(|p| {
            let holders = p.holders.as_ref();
            let oldest = holders.and_then(|h| {
                h.sites
                    .iter()
                    .max_by(|a, b| a.oldest_s.total_cmp(&b.oldest_s))
            });
            let holder = match (holders, oldest) {
                (None, _) => "not named (acquire through PoolRegistry::acquires)".to_string(),
                (Some(_), None) => "none".to_string(),
                (Some(_), Some(s)) => format!(
                    "{} ({}) {:.1} s{}",
                    s.function.as_deref().unwrap_or("unknown"),
                    s.site,
                    s.oldest_s,
                    if s.suspected_leaks > 0 {
                        ", suspected leak"
                    } else {
                        ""
                    }
                ),
            };
            let leaking = holders.is_some_and(|h| h.suspected_leaks > 0);
            Row {
                cells: vec![
                    Value::Text(p.name.clone()),
                    Value::Count(p.snapshot.in_use),
                    Value::Count(p.snapshot.max_size),
                    Value::Count(p.snapshot.waiting),
                    Value::Text(holder),
                ],
                bad: p.saturated == Some(true) || leaking,
            }
        })
        .collect();
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
            columns: vec!["pool", "in use", "max", "waiting", "oldest holder"],
            rows,
            empty: "no pool registered: .pool(\"db\", prodbg::pools::sqlx(&pool))".into(),
        })
}
