//! `GET /health/live` and `GET /health/ready`: liveness of the admin server, and the host's
//! readiness checks.

mod checks;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

pub(crate) use checks::ReadinessCheck;
use checks::{run_checks, CheckResult, CheckStatus};

use crate::seam::{
    Access, ApiError, Caller, Params, Probe, ProbeContext, ProbeSpec, Route, RouteSpec,
};

/// `GET /health/live`.
pub(crate) static LIVE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/health/live",
    access: Access::Health,
    go: None,
    summary: |_| "liveness: 200 while the admin server answers".into(),
};

/// `GET /health/ready`.
pub(crate) static READY: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/health/ready",
    access: Access::Health,
    go: None,
    summary: |_| "readiness: runs the registered checks, 503 if one fails".into(),
};

/// The health probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "health",
    feature: None,
    routes: &[&LIVE, &READY],
    bundle_files: &[],
};

/// Liveness and the host's readiness checks.
#[derive(Debug)]
pub(crate) struct Health {
    cx: ProbeContext,
    checks: Arc<[ReadinessCheck]>,
}

impl Health {
    /// Runs `checks` on `/health/ready`.
    pub(crate) fn new(cx: &ProbeContext, checks: Vec<ReadinessCheck>) -> Health {
        Health {
            cx: cx.clone(),
            checks: checks.into(),
        }
    }
}

impl Probe for Health {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        vec![
            LIVE.serve(&self.cx.limits, live, ()),
            READY.serve(&self.cx.limits, ready, self.checks.clone()),
        ]
    }
}

/// The `/health/live` body.
#[derive(Debug, Serialize)]
struct Live {
    /// Always `ok`: the admin server answered.
    status: &'static str,
}

/// The `/health/ready` body when every check passed.
#[derive(Debug, Serialize)]
struct Ready {
    /// `ok`.
    status: &'static str,
    /// Each check's result.
    checks: Vec<CheckResult>,
}

/// The `/health/ready` body when a check failed (status 503).
#[derive(Debug, Serialize)]
struct NotReady {
    /// `not_ready`.
    error: &'static str,
    /// Which checks failed.
    message: String,
    /// Each check's result.
    checks: Vec<CheckResult>,
}

/// 200 while the admin server's own thread answers. Takes no parameters.
async fn live(RawQuery(q): RawQuery) -> Result<Json<Live>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(Live { status: "ok" }))
}

/// Runs every readiness check; 200 when all pass, 503 listing each check otherwise.
///
/// Without a token each check's status is shown but not its error text, which can name hosts,
/// users or databases.
async fn ready(
    State(checks): State<Arc<[ReadinessCheck]>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let mut results = run_checks(&checks).await;
    if !caller.is_token() {
        for r in &mut results {
            r.message = None;
        }
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.status != CheckStatus::Ok)
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        return Ok(Json(Ready {
            status: "ok",
            checks: results,
        })
        .into_response());
    }
    let body = NotReady {
        error: "not_ready",
        message: format!("readiness checks failed: {}", failed.join(", ")),
        checks: results,
    };
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}
