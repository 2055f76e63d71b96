//! `GET/PUT/DELETE /debug/log-level` and `GET /debug/overrides`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::{Extension, Json};

use crate::http::error::ApiError;
use crate::http::guard::Identity;
use crate::http::params::Params;
use crate::http::state::Shared;
use crate::probes::log_level::{LogControl, LogLevelError, DEFAULT_TTL, MAX_TTL};

/// The current filter, the host's own, and the override in force.
pub async fn show(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let control = control(&shared)?;
    Ok(Json(
        serde_json::to_value(control.current()).unwrap_or_default(),
    ))
}

/// Replaces the filter with the body's directives for `ttl` (default 15 min; `ttl=0`: until
/// reset). The body is the directive text, e.g. `info,my_app::db=debug`.
pub async fn set(
    State(shared): State<Arc<Shared>>,
    identity: Extension<Identity>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let params = Params::parse(q.as_deref(), &["ttl"])?;
    let ttl = match params.get("ttl") {
        None => Some(DEFAULT_TTL),
        Some(raw) => parse_ttl(raw)?,
    };
    let directive = std::str::from_utf8(&body).map_err(|_| {
        ApiError::bad_parameter(
            "the body must be UTF-8 text: tracing filter directives, e.g. info,my_app::db=debug",
        )
    })?;
    let control = control(&shared)?;
    let by = who(&identity);
    control.set(directive, ttl, &by).map_err(log_error)?;
    Ok(Json(
        serde_json::to_value(control.current()).unwrap_or_default(),
    ))
}

/// Reverts to the host's own filter now.
pub async fn reset(
    State(shared): State<Arc<Shared>>,
    identity: Extension<Identity>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let control = control(&shared)?;
    control.reset(&who(&identity)).map_err(log_error)?;
    Ok(Json(
        serde_json::to_value(control.current()).unwrap_or_default(),
    ))
}

/// Every run-time change still in force.
pub async fn overrides(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(
        serde_json::json!({ "overrides": shared.probes.overrides.list() }),
    ))
}

/// `0` means no expiry; otherwise seconds (`900`) or a duration (`15m`, `1h30m`), at most 24 h.
fn parse_ttl(raw: &str) -> Result<Option<Duration>, ApiError> {
    let bad = || {
        ApiError::bad_parameter(format!(
            "ttl={raw:?} is not allowed: give seconds (900) or a duration (15m, 2h) up to {}h, or 0 for no expiry",
            MAX_TTL.as_secs() / 3600
        ))
    };
    let ttl = match raw.parse::<u64>() {
        Ok(0) => return Ok(None),
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw).map_err(|_| bad())?,
    };
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(bad());
    }
    Ok(Some(ttl))
}

fn control(shared: &Shared) -> Result<&LogControl, ApiError> {
    shared.probes.log.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "no run-time log control is installed: wrap the host's filter with prodbg::probes::log_level::reloadable(..) and pass the control to .log_control(..)",
        )
    })
}

fn who(identity: &Identity) -> String {
    match identity {
        Identity::Token(t) => t.name().to_string(),
        Identity::Anonymous => "anonymous".to_string(),
    }
}

fn log_error(e: LogLevelError) -> ApiError {
    match e {
        LogLevelError::Unavailable(_) | LogLevelError::Timer(_) => {
            ApiError::internal(e.to_string())
        }
        _ => ApiError::bad_parameter(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("0").unwrap(), None);
        assert_eq!(parse_ttl("900").unwrap(), Some(Duration::from_secs(900)));
        assert_eq!(parse_ttl("15m").unwrap(), Some(Duration::from_secs(900)));
        for bad in ["-1", "25h", "soon", "86401"] {
            assert!(
                parse_ttl(bad).unwrap_err().message.contains("up to 24h"),
                "{bad}"
            );
        }
    }
}
