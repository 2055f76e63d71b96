//! `GET /debug/overrides`: the run-time changes still in force (log level, heap sampling),
//! who made them and when they end.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::Json;
use serde::Serialize;

use crate::seam::overrides::OverrideEntry;
use crate::seam::{
    ready, Access, ApiError, BoxFuture, BundlePart, Card, Glance, Overrides, Params, Probe,
    ProbeContext, ProbeSpec, Route, RouteSpec, Row, Table, Value,
};
use crate::security::Scope;

/// `GET /debug/overrides`.
pub(crate) static OVERRIDES: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/overrides",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "run-time changes still in force (log level, heap sampling): who made them and when they expire".into()
    },
};

/// The overrides probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "overrides",
    feature: None,
    routes: &[&OVERRIDES],
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
        vec![OVERRIDES.serve(&self.cx.limits, list, self.cx.overrides.clone())]
    }

    fn bundle(&self, _window: Duration) -> Vec<BundlePart> {
        let report = OverridesReport {
            overrides: self.cx.overrides.list(),
        };
        vec![BundlePart::json("overrides.json", &report)]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        let time = |t: std::time::SystemTime| Value::Text(crate::encode::time::format(t));
        let rows = self
            .cx
            .overrides
            .list()
            .into_iter()
            .map(|e| Row {
                cells: vec![
                    Value::Text(e.kind),
                    Value::Text(e.value),
                    Value::Text(e.set_by),
                    time(e.set_at),
                    e.expires_at
                        .map_or_else(|| Value::Text("undone".into()), time),
                ],
                bad: true,
            })
            .collect();
        ready(Glance::default().table(Table {
            id: "overrides",
            card: Card::OVERRIDES,
            columns: vec!["kind", "value", "set by", "set at", "until"],
            rows,
            empty: "none: the service runs as configured".into(),
        }))
    }
}
