//! `GET /debug/pprof/heap` (and its alias `/debug/pprof/allocs`), `POST
//! /debug/pprof/heap/activate` / `deactivate`: jemalloc heap profiles and growth profiles.

use axum::http::Method;

use crate::seam::{Access, GoIndex, ProbeSpec, RouteSpec};
use crate::security::Scope;

fn profile_summary(l: &crate::config::Limits) -> String {
    format!(
        "heap profile of sampled live allocations: ?format=pprof|svg|folded; ?seconds=1..{} gives the growth over that window (the leak finder)",
        l.max_profile_seconds
    )
}

/// `GET /debug/pprof/heap`.
pub(crate) static HEAP: RouteSpec = RouteSpec {
            method: Method::GET,
            path: "/debug/pprof/heap",
            access: Access::Scope(Scope::Profile),
            go: Some(GoIndex {
        link: "heap",
        text: "Sampled live allocations (jemalloc). ?format=svg for a flamegraph; ?seconds=N for the growth over N seconds.",
    }),
    summary: profile_summary,
        };

/// `GET /debug/pprof/allocs`.
pub(crate) static ALLOCS: RouteSpec = RouteSpec {
            method: Method::GET,
            path: "/debug/pprof/allocs",
            access: Access::Scope(Scope::Profile),
            go: Some(GoIndex {
        link: "allocs",
        text: "Sampled live allocations (jemalloc; the same profile as heap, the path Alloy and Parca scrape). ?seconds=N gives the growth over N seconds.",
    }),
    summary: |_| {
                "alias of /debug/pprof/heap: the path Grafana Alloy and Pyroscope scrape".into()
            },
        };

/// `POST /debug/pprof/heap/activate`.
pub(crate) static ACTIVATE: RouteSpec = RouteSpec {
    method: Method::POST,
    path: "/debug/pprof/heap/activate",
    access: Access::Scope(Scope::Admin),
    go: None,
    summary: |_| "start sampling allocations (jemalloc prof.active)".into(),
};

/// `POST /debug/pprof/heap/deactivate`.
pub(crate) static DEACTIVATE: RouteSpec = RouteSpec {
    method: Method::POST,
    path: "/debug/pprof/heap/deactivate",
    access: Access::Scope(Scope::Admin),
    go: None,
    summary: |_| "stop sampling allocations".into(),
};

/// The heap probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "heap",
    feature: Some("heap"),
    routes: &[&HEAP, &ALLOCS, &ACTIVATE, &DEACTIVATE],
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
