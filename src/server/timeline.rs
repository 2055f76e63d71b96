//! `GET /debug/timeline?since=&until=`: the process's vital signs over the last minutes (CPU,
//! memory, Tokio, pools, spans, errors, admin requests), from the flight recorder's timeline
//! (`crate::recorder::timeline`), which the sampler (`sampler.rs`) feeds each second.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::Json;

use super::sampler::unix_ms;
use super::state::ServerState;
use crate::recorder::timeline::{Window, RETENTION_MS};
use crate::seam::{Access, ApiError, Params, Route, RouteSpec};
use crate::security::Scope;

/// The window when `since` is not given: the fine ring's 10 minutes.
pub(super) const DEFAULT_SINCE: Duration = Duration::from_secs(600);
/// The longest window: the coarse ring's hour.
const RETENTION: Duration = Duration::from_millis(RETENTION_MS);
/// Why `since` (and `until`) stop at [`RETENTION`], for the 400's message.
const BEYOND: &str = "the timeline's retention (it keeps 1h)";

/// The timeline's route.
pub(super) static ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/timeline",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| {
        "vital signs over time, sampled each second: CPU cores, RSS, jemalloc, Tokio busy/queue/tasks, pool use, spans in flight, ERROR/WARN and admin requests per second (?since=90s|5m|1h, default 10m, at most 1h; &until= as long ago; 1 s points within 10 min, else 10 s means)".into()
    },
};

/// The timeline's route with its handler.
pub(super) fn route(state: &Arc<ServerState>) -> Route {
    ROUTE.serve(&state.limits, timeline, state.clone())
}

/// The series from `since` ago to `until` ago (default: now).
async fn timeline(
    State(state): State<Arc<ServerState>>,
    RawQuery(q): RawQuery,
) -> Result<Json<Window>, ApiError> {
    let params = Params::parse(q.as_deref(), &["since", "until"])?;
    let since = params.duration_in(
        "since",
        Duration::from_secs(1)..=RETENTION,
        DEFAULT_SINCE,
        BEYOND,
    )?;
    let until = params.duration_in("until", Duration::ZERO..=RETENTION, Duration::ZERO, BEYOND)?;
    if until >= since {
        return Err(ApiError::bad_parameter(format!(
            "until={}s must be after since={}s: both count back from now, so give until shorter than since (e.g. since=10m&until=5m)",
            until.as_secs(),
            since.as_secs()
        )));
    }
    Ok(Json(last(&state, since, until)))
}

/// The timeline from `since` ago to `until` ago.
pub(super) fn last(state: &ServerState, since: Duration, until: Duration) -> Window {
    let now_ms = unix_ms(SystemTime::now());
    let from = now_ms.saturating_sub(since.as_millis() as u64);
    let to = now_ms.saturating_sub(until.as_millis() as u64);
    state.timeline().window(from, to, now_ms)
}
