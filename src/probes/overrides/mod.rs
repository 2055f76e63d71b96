//! `GET /debug/overrides`: the run-time changes still in force (log level, heap sampling),
//! who made them and when they end.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::routing::get;
use axum::Json;
use serde::Serialize;

use crate::seam::overrides::OverrideEntry;
use crate::seam::{
    ready, Access, ApiError, BoxFuture, BundlePart, Overrides, Params, Probe, ProbeContext,
    ProbeSpec, Route, RouteSpec,
};
use crate::security::Scope;

/// The overrides probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "overrides",
    feature: None,
    routes: &[RouteSpec {
        method: Method::GET,
        path: "/debug/overrides",
        access: Access::Scope(Scope::Read),
        summary: |_| {
            "run-time changes still in force (log level, heap sampling): who made them and when they expire".into()
        },
    }],
    bundle_files: &["overrides.json"],
};

/// The `/debug/overrides` body.
#[derive(Debug, Serialize)]
struct OverridesReport {
    /// Every change still in force, sorted by kind.
    overrides: Vec<OverrideEntry>,
}

/// Lists the changes recorded in the context's [`Overrides`].
#[derive(Debug)]
pub(crate) struct OverridesProbe {
    cx: ProbeContext,
}

impl OverridesProbe {
    /// The overrides probe.
    pub(crate) fn new(cx: &ProbeContext) -> OverridesProbe {
        OverridesProbe { cx: cx.clone() }
    }
}

async fn list(
    State(o): State<Overrides>,
    RawQuery(q): RawQuery,
) -> Result<Json<OverridesReport>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(OverridesReport {
        overrides: o.list(),
    }))
}

impl Probe for OverridesProbe {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        vec![Route::new(
            &SPEC.routes[0],
            &self.cx.limits,
            get(list).with_state(self.cx.overrides.clone()),
        )]
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        let report = OverridesReport {
            overrides: self.cx.overrides.list(),
        };
        vec![BundlePart::json("overrides.json", &report)]
    }

    fn glance(&self) -> BoxFuture<Option<serde_json::Value>> {
        let entries = self.cx.overrides.list();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        ready(serde_json::json!({ "in_force": kinds, "entries": entries }))
    }
}
