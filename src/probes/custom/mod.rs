//! Endpoints the host adds with `AdminBuilder::endpoint`:
//! guarded by their scope, audited and listed like the built-in ones.
//!
//! Each one's request body is read here (within `Limits::max_body_bytes`) and handed to the
//! host's handler unchanged; a request with a body, and every POST/PUT/PATCH/DELETE, leaves
//! `details.request_body` in its audit record (size, SHA-256, a redacted copy of at most
//! 1 KiB: `body.rs`), next to the handler's own [`AuditDetails`], bounded.

mod body;

use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};

use crate::seam::{ApiError, AuditDetails, Probe, ProbeContext, ProbeSpec, Route};
use crate::security::audit::DetailsSlot;

/// The host's endpoints.
pub(crate) const SPEC: ProbeSpec = ProbeSpec {
    name: "custom",
    feature: None,
    routes: &[],
    bundle_files: &[],
};

/// Serves the routes the host added.
#[derive(Debug)]
pub(crate) struct Custom {
    routes: Mutex<Vec<Route>>,
}

impl Custom {
    /// Serves `routes` (taken once, when the router is built), each reading its body within
    /// the configured limit and recording it in the audit record.
    pub(crate) fn new(cx: &ProbeContext, routes: Vec<Route>) -> Custom {
        let limits = BodyLimits {
            max_bytes: cx.limits.max_body_bytes,
            read_timeout_s: cx.limits.body_read_timeout.as_secs(),
        };
        let routes = routes
            .into_iter()
            .map(|mut r| {
                r.handler = r.handler.layer(from_fn_with_state(limits, record_body));
                r
            })
            .collect();
        Custom {
            routes: Mutex::new(routes),
        }
    }
}

impl Probe for Custom {
    fn spec(&self) -> &'static ProbeSpec {
        &SPEC
    }

    fn routes(&self) -> Vec<Route> {
        std::mem::take(&mut *self.routes.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    max_bytes: usize,
    read_timeout_s: u64,
}

/// Reads the body, puts its description in the request's audit slot (so it is recorded even
/// if the handler panics, times out or the client hangs up), hands the same bytes to the
/// handler and bounds the details the handler returns.
async fn record_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, limits.max_bytes).await {
        Ok(b) => b,
        Err(e) => return body_error(&e, limits).into_response(),
    };
    let mutating = matches!(
        parts.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if mutating || !bytes.is_empty() {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let described = body::describe(content_type, &bytes);
        if let (Some(slot), Ok(value)) = (
            parts.extensions.get::<DetailsSlot>(),
            serde_json::to_value(&described),
        ) {
            slot.insert("request_body", value);
        }
    }
    let mut response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if let Some(details) = response.extensions_mut().get_mut::<AuditDetails>() {
        body::bound_details(&mut details.0);
    }
    response
}

/// The answer when the body could not be read: 413 over the limit (a body sent without
/// `Content-Length`; one that declares too much is refused before routing), 408 too slow.
fn body_error(e: &axum::Error, limits: BodyLimits) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if err.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body is larger than the server accepts: at most {} bytes",
                    limits.max_bytes
                ),
            );
        }
        if err.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "the request body was not received within {} s",
                    limits.read_timeout_s
                ),
            );
        }
        cause = err.source();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("the request body could not be read: {e}"),
    )
}
