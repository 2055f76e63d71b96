//! `GET/PUT/DELETE /debug/log-level`: the host's tracing filter, changed at run time for a
//! bounded time.

mod control;
mod filter;
#[cfg(test)]
mod subscriber_tests;

pub use control::{reloadable, LogControl};
use control::{LogLevelError, LogLevelState, DEFAULT_TTL, MAX_TTL};
pub use filter::ReloadableFilter;

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::Method;
use axum::{Extension, Json};

use crate::seam::{
    ready, Access, Action, ApiError, AuditDetails, BoxFuture, Caller, FieldKind, Glance, Params,
    Probe, ProbeContext, ProbeSpec, Route, RouteSpec, Shows,
};
use crate::security::Scope;

/// `GET /debug/log-level`.
pub(crate) static LOG_LEVEL: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/log-level",
    access: Access::Scope(Scope::Read),
    go: None,
    summary: |_| "the current tracing filter and any run-time override".into(),
};

/// `PUT /debug/log-level`.
pub(crate) static LOG_LEVEL_PUT: RouteSpec = RouteSpec {
    method: Method::PUT,
    path: "/debug/log-level",
    access: Access::Scope(Scope::Admin),
    go: None,
    summary: |_| {
        format!(
                    "replace the tracing filter (body: directives, e.g. info,my_app::db=debug) for ?ttl= (default {}m, at most {}h; ttl=0: until reset)",
                    DEFAULT_TTL.as_secs() / 60,
                    MAX_TTL.as_secs() / 3600
                )
    },
};

/// `DELETE /debug/log-level`.
pub(crate) static LOG_LEVEL_DELETE: RouteSpec = RouteSpec {
    method: Method::DELETE,
    path: "/debug/log-level",
    access: Access::Scope(Scope::Admin),
    go: None,
    summary: |_| "revert the tracing filter to the host's own now".into(),
};

/// The log-level probe.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "log_level",
    feature: None,
    routes: &[&LOG_LEVEL, &LOG_LEVEL_PUT, &LOG_LEVEL_DELETE],
    bundle_files: &[],
};

/// The host's reloadable filter, when it installed one.
#[derive(Debug)]
pub(crate) struct LogLevel {
    cx: ProbeContext,
    control: Option<LogControl>,
}

impl LogLevel {
    /// Controls `control`'s filter; without one every route answers 503 saying how to install it.
    pub(crate) fn new(cx: &ProbeContext, control: Option<LogControl>) -> LogLevel {
        LogLevel {
            cx: cx.clone(),
            control: control.map(|c| c.with_overrides(cx.overrides.clone())),
        }
    }
}

impl Probe for LogLevel {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        let c = self.control.clone();
        let l = &self.cx.limits;
        vec![
            LOG_LEVEL.serve(l, show, c.clone()),
            LOG_LEVEL_PUT.serve(l, set, c.clone()),
            LOG_LEVEL_DELETE.serve(l, reset, c),
        ]
    }

    fn glance(&self) -> BoxFuture<Option<Glance>> {
        ready(
            Glance::default()
                .action(
                    Action::new(
                        "log",
                        "log-set",
                        "Set log level",
                        &LOG_LEVEL_PUT,
                        Shows::Status("Log filter is now {filter} until {override.expires_at}."),
                    )
                    .field(
                        "filter",
                        "log filter",
                        FieldKind::Text {
                            placeholder: "info,my_app::db=debug",
                            default: "",
                            max_len: control::MAX_DIRECTIVE_LEN,
                            required: true,
                        },
                    )
                    .field(
                        "ttl",
                        "for",
                        FieldKind::Text {
                            placeholder: "15m",
                            default: "15m",
                            max_len: 16,
                            required: false,
                        },
                    )
                    .body("filter")
                    .needs(Scope::Admin),
                )
                .action(
                    Action::new(
                        "log-reset",
                        "log-reset",
                        "Reset log level",
                        &LOG_LEVEL_DELETE,
                        Shows::Status("Log filter is back to the host's own: {filter}."),
                    )
                    .needs(Scope::Admin),
                ),
        )
    }
}

impl From<LogLevelError> for ApiError {
    fn from(e: LogLevelError) -> ApiError {
        match e {
            LogLevelError::Unavailable(_) | LogLevelError::Timer(_) => {
                ApiError::internal(e.to_string())
            }
            _ => ApiError::bad_parameter(e.to_string()),
        }
    }
}

type Control = State<Option<LogControl>>;

fn control(c: &Option<LogControl>) -> Result<&LogControl, ApiError> {
    c.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "no run-time log control is installed: wrap the host's filter with prodbg::log_level::reloadable(..) and pass the control to .log_control(..)",
        )
    })
}

/// The current filter, the host's own, and the override in force.
async fn show(State(c): Control, RawQuery(q): RawQuery) -> Result<Json<LogLevelState>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(control(&c)?.current()))
}

/// Replaces the filter with the body's directives for `ttl` (default 15 min; `ttl=0`: until
/// reset). The body is the directive text, e.g. `info,my_app::db=debug`.
async fn set(
    State(c): Control,
    caller: Caller,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Result<(Extension<AuditDetails>, Json<LogLevelState>), ApiError> {
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
    let control = control(&c)?;
    let previous = control.current().filter;
    control.set(directive, ttl, caller.name())?;
    let now = control.current();
    let details = AuditDetails::new()
        .with("directive", directive)
        .with("filter", now.filter.clone())
        .with("ttl_s", ttl.map(|t| t.as_secs()))
        .with("previous", previous);
    Ok((Extension(details), Json(now)))
}

/// Reverts to the host's own filter now.
async fn reset(
    State(c): Control,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<(Extension<AuditDetails>, Json<LogLevelState>), ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let control = control(&c)?;
    let previous = control.current().filter;
    control.reset(caller.name())?;
    let now = control.current();
    let details = AuditDetails::new()
        .with("filter", now.filter.clone())
        .with("previous", previous);
    Ok((Extension(details), Json(now)))
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
