//! The middleware every request passes: the host check, admission (rate limit, concurrency
//! cap, the admin reserve), authentication (Bearer or Basic), the cross-origin check, the
//! request timeout, per-route authorization, JSON error bodies and the audit record.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tokio::sync::OwnedSemaphorePermit;

use super::lockout::Denied;
use super::origin::{check_host, check_navigation, check_origin, clip, Site};
use super::state::ServerState;
use crate::seam::fair::{Busy, Permit};
use crate::seam::{ApiError, AuditDetails, Caller};
use crate::security::audit::{AuditRecord, Folding};
use crate::security::redact::{redact_path, redact_query};
use crate::security::tokens::{Token, TokenSet};
use crate::security::Scope;

/// Who is calling, as established by the `Authorization` header (Bearer or Basic).
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// No `Authorization` header.
    Anonymous,
    /// A valid token.
    Token(Arc<Token>),
}

/// The token a verified TLS client certificate stands for, put on each request of its
/// connection by the connection task.
#[derive(Debug, Clone)]
pub(crate) struct CertIdentity(pub(crate) Arc<Token>);

/// What a route needs, attached to each route when the router is built.
#[derive(Debug, Clone)]
pub(crate) struct RouteRule {
    /// The route's path template (the metrics label).
    pub(crate) template: Arc<str>,
    /// The scope needed, or `None` for an open route (health probes when configured so).
    pub(crate) scope: Option<Scope>,
}

/// The `WWW-Authenticate` challenges of a 401, one header each, so that a browser prompts
/// (Basic) and API clients see Bearer.
pub(crate) const CHALLENGES: [&str; 2] = ["Basic realm=\"prodbg\"", "Bearer"];

/// What a 401 tells the client to send.
const SEND_CREDENTIALS: &str = "send `Authorization: Bearer <secret>`, or HTTP Basic auth with the token's name as user and its secret as password";

/// Set on a response by the route that produced it: its template (the metrics label and the
/// audit fold key) and whether the route is open (needs no token).
#[derive(Debug, Clone)]
struct RouteLabel {
    template: Arc<str>,
    open: bool,
}

/// Outermost middleware: admits, authenticates, times out, audits and counts every request.
///
/// The audit record is started before anything else and finished when the response head is
/// ready; if the client hangs up first (the future is dropped), it is recorded with status 499
/// and the time spent. Open requests that succeed, anonymous answers and denials are folded
/// into periodic per-client summary records (the first of each kind per client per minute in
/// full, within the client's budget) instead of one record each.
pub(crate) async fn guard(
    State(shared): State<Arc<ServerState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let request_id = shared.next_request_id();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut pending = shared.audit.begin(AuditRecord {
        ts: crate::encode::time::format(SystemTime::now()),
        request_id: request_id.clone(),
        client: peer.map_or_else(|| "unknown".to_string(), |p| p.to_string()),
        method: req.method().as_str().to_string(),
        // Redacted before the audit log clips them (a secret cut short is not recognised).
        path: redact_path(req.uri().path()).into_owned(),
        query: req.uri().query().map(|q| redact_query(q).into_owned()),
        ..AuditRecord::default()
    });
    req.extensions_mut().insert(pending.details_slot());
    let method = req.method().as_str().to_string();

    let mut bad_credentials = false;
    let admitted =
        check_host(&req, &shared.allowed_hosts).and_then(|()| admit(&shared, peer, &req));
    let mut response = match admitted {
        Err(e) => {
            // Credentials that were presented and are wrong: a failed login. A request without
            // any (a browser's first try before it sends Basic) is answered 401 with the
            // challenge but is not a failure.
            bad_credentials = e.status == StatusCode::UNAUTHORIZED;
            e.into_response()
        }
        Ok((identity, permit)) => {
            if let Identity::Token(t) = &identity {
                let by_cert = req
                    .extensions()
                    .get::<CertIdentity>()
                    .is_some_and(|c| Arc::ptr_eq(&c.0, t));
                if by_cert {
                    pending.record_mut().via = Some("client-cert".to_string());
                }
                pending.record_mut().token_id = Some(t.name().to_string());
                req.extensions_mut().insert(Caller::token(t.name()));
            }
            req.extensions_mut().insert(identity);
            // After authentication, so that a refused cross-origin request names the token
            // the browser sent in the audit record.
            match check_origin(&req) {
                Err(e) => e.into_response(),
                Ok(site) => {
                    req.extensions_mut().insert(site);
                    let timeout = shared.limits.request_timeout;
                    let answer = tokio::time::timeout(timeout, next.run(req)).await;
                    drop(permit);
                    answer.unwrap_or_else(|_| {
                        ApiError::unavailable(format!(
                            "the request took longer than the server's request timeout of {} s",
                            timeout.as_secs()
                        ))
                        .into_response()
                    })
                }
            }
        }
    };
    let status = response.status();
    if bad_credentials {
        shared.red.auth_failure();
    }
    if status == StatusCode::UNAUTHORIZED {
        // Two headers, not one `Basic realm="prodbg", Bearer`: Chromium ignores the combined
        // form (no login prompt, URL credentials unused).
        let headers = response.headers_mut();
        headers.remove(header::WWW_AUTHENTICATE);
        for challenge in CHALLENGES {
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
    }
    let label = response.extensions().get::<RouteLabel>().cloned();
    let endpoint = label
        .as_ref()
        .map_or_else(|| "unmatched".to_string(), |l| l.template.to_string());
    let elapsed = start.elapsed();
    shared.red.observe(
        &endpoint,
        metric_method(&method),
        status.as_u16(),
        elapsed.as_secs_f64(),
    );
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(details) = response.extensions_mut().remove::<AuditDetails>() {
        pending.record_mut().details = details.0;
    }
    let denied = matches!(status.as_u16(), 401 | 403 | 421 | 429);
    let anonymous = pending.record_mut().token_id.is_none();
    let folding = match &label {
        Some(l) if l.open && status.as_u16() < 400 => Folding::Always,
        _ if denied || anonymous => {
            // Anonymous answers and denials fold by class — the route, not the path the client
            // made up; a known method, not one it invented — so a client cannot mint groups.
            let rec = pending.record_mut();
            if endpoint == "unmatched" {
                let requested = std::mem::replace(&mut rec.path, endpoint.clone());
                rec.details
                    .insert("requested_path".into(), clip(&requested, 128).into());
            }
            let class = metric_method(&method);
            if class == "other" {
                rec.method = class.to_string();
                rec.details
                    .insert("requested_method".into(), clip(&method, 32).into());
            }
            Folding::Repeats
        }
        _ => Folding::Never,
    };
    let bytes = response.body().size_hint().exact().unwrap_or(0);
    if let Some(written) = pending.finish(status.as_u16(), bytes, folding) {
        // Waits (without blocking the server's thread) until the audit thread wrote the record,
        // at most a bounded time: a hung audit disk delays, never blocks, recorded requests.
        written.wait().await;
    }
    response
}

/// Admits a request: a valid token is checked first and is never refused by the failed-login
/// limiter; only invalid credentials count against (and are refused for) their client; a
/// request without credentials (health probes, or a 401 to come) takes no concurrency permit.
fn admit(
    shared: &ServerState,
    peer: Option<SocketAddr>,
    req: &Request,
) -> Result<(Identity, Option<Held>), ApiError> {
    let identity = match req.headers().get(header::AUTHORIZATION) {
        None => match req.extensions().get::<CertIdentity>() {
            Some(cert) => Identity::Token(cert.0.clone()),
            None => Identity::Anonymous,
        },
        Some(value) => {
            let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip());
            let verify = |allowed| verify_credentials(&shared.tokens, value, allowed);
            match shared.lockout.judge(ip, verify) {
                Ok(t) => Identity::Token(Arc::new(t.clone())),
                Err(Denied::Unauthorized) => {
                    return Err(ApiError::unauthorized(format!(
                        "the Authorization header does not hold valid credentials: {SEND_CREDENTIALS}"
                    )))
                }
                Err(Denied::LockedOut { retry_after }) => {
                    return Err(ApiError::too_many(format!(
                        "too many invalid credentials from this client: until the lock ends only tokens already used from this address are accepted; retry after {} s",
                        retry_after.as_secs().max(1)
                    )))
                }
            }
        }
    };
    let permit = match &identity {
        Identity::Token(t) => Some(take_slot(shared, t)?),
        Identity::Anonymous => None,
    };
    Ok((identity, permit))
}

/// A request slot for `token`: the fair share's, or — for an `admin`-scope token when every
/// shared slot is taken — one of the `reserved_for_admin` slots no other scope can take.
fn take_slot(shared: &ServerState, token: &Token) -> Result<Held, ApiError> {
    match shared.fair.try_admit(Some(token.name())) {
        Ok(p) => Ok(Held {
            _shared: Some(p),
            _reserved: None,
        }),
        Err(busy @ Busy::Global { .. }) if token.allows(Scope::Admin) => {
            match shared.admin_reserve.clone().try_acquire_owned() {
                Ok(r) => Ok(Held {
                    _shared: None,
                    _reserved: Some(r),
                }),
                Err(_) => Err(busy.into()),
            }
        }
        Err(busy) => Err(busy.into()),
    }
}

/// The request slot a request holds until it is answered.
#[derive(Debug)]
struct Held {
    _shared: Option<Permit>,
    _reserved: Option<OwnedSemaphorePermit>,
}

/// Per-route middleware: checks the caller's scope against the route's rule.
pub(crate) async fn authorize(State(rule): State<RouteRule>, req: Request, next: Next) -> Response {
    let site = req.extensions().get::<Site>().copied();
    let verdict = match (rule.scope, req.extensions().get::<Identity>()) {
        (None, _) => Ok(()),
        (Some(needed), Some(Identity::Token(t))) if t.allows(needed) => Ok(()),
        (Some(needed), Some(Identity::Token(t))) => Err(ApiError::forbidden(format!(
            "token {:?} holds scope {}; this endpoint needs {needed}",
            t.name(),
            t.scope(),
        ))),
        (Some(needed), _) => Err(ApiError::unauthorized(format!(
            "this endpoint needs a token with scope {needed}: {SEND_CREDENTIALS}"
        ))),
    };
    let verdict = verdict.and_then(|()| check_navigation(site, rule.scope));
    let mut response = match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(RouteLabel {
        open: rule.scope.is_none(),
        template: rule.template,
    });
    response
}

/// Turns any error answer that is not already JSON (axum's 404/405, body-limit 413, …) into the
/// documented `{"error", "message"}` body.
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let (code, default) = match status.as_u16() {
        400 => ("bad_request", "the request is malformed"),
        404 => ("not_found", "no such endpoint; GET /debug/ lists them"),
        405 => (
            "method_not_allowed",
            "this endpoint does not take that method",
        ),
        408 => ("timeout", "the request was not received in time"),
        413 => (
            "payload_too_large",
            "the request body is larger than the server accepts",
        ),
        415 => (
            "unsupported_media_type",
            "the request body's content type is not accepted",
        ),
        _ => ("error", "the request failed"),
    };
    let message = if text.is_empty() {
        default.to_string()
    } else {
        format!("{default}: {text}")
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in parts.headers.iter() {
        if name == header::ALLOW {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *out.extensions_mut() = parts.extensions;
    out
}

/// The fallback for unknown paths: 401 without a valid token (paths are not disclosed), else 404.
pub(crate) async fn not_found(req: Request<Body>) -> Response {
    match req.extensions().get::<Identity>() {
        Some(Identity::Token(_)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; GET /debug/ lists them",
        )
        .into_response(),
        _ => ApiError::unauthorized(SEND_CREDENTIALS).into_response(),
    }
}

/// The token an `Authorization` header names, and its position: `Bearer <secret>` or
/// `Basic base64(name:secret)` of a configured token among those set in `allowed`; `None` for
/// anything else (the caller answers 401 or 429 without saying which part was wrong).
fn verify_credentials<'t>(
    tokens: &'t TokenSet,
    value: &HeaderValue,
    allowed: u64,
) -> Option<(&'t Token, usize)> {
    let (scheme, rest) = value.to_str().ok()?.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        tokens.verify_among(rest.as_bytes(), allowed)
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASIC.decode(rest).ok()?;
        // RFC 7617: the user-id cannot contain ':'; the password may.
        let colon = decoded.iter().position(|b| *b == b':')?;
        tokens.verify_basic_among(&decoded[..colon], &decoded[colon + 1..], allowed)
    } else {
        None
    }
}

/// Standard base64, padding optional (clients differ).
const BASIC: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

fn metric_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}
