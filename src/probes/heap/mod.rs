//! `GET /debug/pprof/heap` (and its alias `/debug/pprof/allocs`), `POST
//! /debug/pprof/heap/activate` / `deactivate`: jemalloc heap profiles and growth profiles.

use axum::http::Method;

use crate::seam::{Access, ProbeSpec, RouteSpec};
use crate::security::Scope;

fn profile_summary(l: &crate::config::Limits) -> String {
    format!(
        "heap profile of sampled live allocations: ?format=pprof|svg|folded; ?seconds=1..{} gives the growth over that window (the leak finder)",
        l.max_profile_seconds
    )
}

/// The heap probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "heap",
    feature: Some("heap"),
    routes: &[
        RouteSpec {
            method: Method::GET,
            path: "/debug/pprof/heap",
            access: Access::Scope(Scope::Profile),
            summary: profile_summary,
        },
        RouteSpec {
            method: Method::GET,
            path: "/debug/pprof/allocs",
            access: Access::Scope(Scope::Profile),
            summary: |_| {
                "alias of /debug/pprof/heap: the path Grafana Alloy and Pyroscope scrape".into()
            },
        },
        RouteSpec {
            method: Method::POST,
            path: "/debug/pprof/heap/activate",
            access: Access::Scope(Scope::Admin),
            summary: |_| "start sampling allocations (jemalloc prof.active)".into(),
        },
        RouteSpec {
            method: Method::POST,
            path: "/debug/pprof/heap/deactivate",
            access: Access::Scope(Scope::Admin),
            summary: |_| "stop sampling allocations".into(),
        },
    ],
    bundle_files: &["heap.pb.gz"],
};

#[cfg(feature = "heap")]
pub(crate) mod core;
#[cfg(feature = "heap")]
mod http;
#[cfg(all(test, feature = "heap"))]
mod tests;
#[cfg(feature = "heap")]
pub(crate) use http::Heap;
