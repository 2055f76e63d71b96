//! `GET /debug/deadlocks`: parking_lot's deadlock detector, its reports and the
//! `prodbg_deadlock*` Prometheus series.

use axum::http::Method;

use crate::seam::{Access, ProbeSpec, RouteSpec};
use crate::security::Scope;

/// `GET /debug/deadlocks`.
pub(crate) static DEADLOCKS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/deadlocks",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| "parking_lot deadlock reports: cycles, threads, backtraces (?format=text)".into(),
};

/// The deadlock probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "deadlock",
    feature: Some("deadlock"),
    routes: &[&DEADLOCKS],
    bundle_files: &["deadlocks.json"],
};

#[cfg(feature = "deadlock")]
mod detector;
#[cfg(feature = "deadlock")]
mod http;
#[cfg(all(test, feature = "deadlock"))]
mod tests;
#[cfg(feature = "deadlock")]
pub use detector::name_current_thread;
#[cfg(feature = "deadlock")]
pub(crate) use http::Deadlocks;
