//! `GET /debug/audit`: the audit chain's head now — records so far, head hash, file, whether
//! a key is in use (never the key) — so a poller can hold an off-host checkpoint that makes a
//! cut end of the log detectable (`verify_audit_log(base, key, Some(&checkpoint))`).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::Json;
use serde::Serialize;

use super::state::ServerState;
use crate::seam::{Access, ApiError, Params, Route, RouteSpec};
use crate::security::audit::{AuditStats, Checkpoint};
use crate::security::Scope;

/// The audit endpoint's route.
pub(super) static ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/audit",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "audit chain checkpoint: records so far, head hash, file, keyed yes/no (poll it to keep an off-host copy); counters of lost, dropped and folded records".into()
    },
};

/// The `/debug/audit` body.
#[derive(Debug, Serialize)]
struct AuditHead {
    /// The chain's head now.
    #[serde(flatten)]
    head: Checkpoint,
    /// The last checkpoint emitted as a `tracing` event (target `prodbg::audit`), if any.
    last_checkpoint: Option<Checkpoint>,
    /// The log's counters: written, failed, dropped at the full queue, folded, over budget.
    counters: AuditStats,
}

/// The route with its handler.
pub(super) fn route(state: &Arc<ServerState>) -> Route {
    ROUTE.serve(&state.limits, audit, state.clone())
}

async fn audit(
    State(state): State<Arc<ServerState>>,
    RawQuery(q): RawQuery,
) -> Result<Json<AuditHead>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(AuditHead {
        head: state.audit.head(),
        last_checkpoint: state.audit.latest_checkpoint(),
        counters: state.audit.stats(),
    }))
}
