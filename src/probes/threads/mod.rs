//! `GET /debug/threads`: the stack of every OS thread, as JSON or a jstack-like text.

use axum::http::Method;

use crate::seam::{Access, ProbeSpec, RouteSpec};
use crate::security::Scope;

/// `GET /debug/threads`.
pub(crate) static THREADS: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/threads",
    access: Access::Scope(Scope::Profile),
    go: None,
    summary: |_| {
        "stack of every OS thread with name, state and CPU time (?format=text for a jstack-like dump)".into()
    },
};

/// The threads probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "threads",
    feature: Some("threads"),
    routes: &[&THREADS],
    bundle_files: &["threads.txt"],
};

#[cfg(feature = "threads")]
mod http;
#[cfg(all(test, feature = "threads"))]
mod tests;
#[cfg(feature = "threads")]
pub(crate) use http::Threads;
