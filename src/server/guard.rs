//! The middleware every request passes: admission (rate limit, concurrency cap),
//! authentication (Bearer or Basic), the cross-origin check, the request timeout, per-route
//! authorization, JSON error bodies and the audit record.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::lockout::Denied;
use super::state::ServerState;
use crate::seam::fair::Permit;
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
/// and the time spent. Open requests (health probes) and repeated identical denials are folded
/// into periodic summary records instead of one record each.
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
    let mut response = match admit(&shared, peer, &req) {
        Err(e) => {
            // Credentials that were presented and are wrong: a failed login. A request without
            // any (a browser's first try before it sends Basic) is answered 401 with the
            // challenge but is not a failure.
            bad_credentials = e.status == StatusCode::UNAUTHORIZED;
            e.into_response()
        }
        Ok((identity, permit)) => {
            if let Identity::Token(t) = &identity {
                pending.record_mut().token_id = Some(t.name().to_string());
                req.extensions_mut().insert(Caller::token(t.name()));
            }
            req.extensions_mut().insert(identity);
            // After authentication, so that a refused cross-origin request names the token
            // the browser sent in the audit record.
            match check_origin(&req) {
                Err(e) => e.into_response(),
                Ok(()) => {
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
    let denied = matches!(status.as_u16(), 401 | 403 | 429);
    let folding = match &label {
        Some(l) if l.open && status.as_u16() < 400 => Folding::Always,
        _ if denied => {
            // Identical denials fold by route, not by the path the client made up.
            let rec = pending.record_mut();
            if endpoint == "unmatched" {
                let requested = std::mem::replace(&mut rec.path, endpoint.clone());
                rec.details
                    .insert("requested_path".into(), clip(&requested, 128).into());
            }
            Folding::Repeats
        }
        _ => Folding::Never,
    };
    let bytes = response.body().size_hint().exact().unwrap_or(0);
    pending.finish(status.as_u16(), bytes, folding);
    response
}

/// Admits a request: a valid token is checked first and is never refused by the failed-login
/// limiter; only invalid credentials count against (and are refused for) their client; a
/// request without credentials (health probes, or a 401 to come) takes no concurrency permit.
fn admit(
    shared: &ServerState,
    peer: Option<SocketAddr>,
    req: &Request,
) -> Result<(Identity, Option<Permit>), ApiError> {
    let identity = match req.headers().get(header::AUTHORIZATION) {
        None => Identity::Anonymous,
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
        Identity::Token(t) => Some(shared.fair.try_admit(Some(t.name()))?),
        Identity::Anonymous => None,
    };
    Ok((identity, permit))
}

/// Per-route middleware: checks the caller's scope against the route's rule.
pub(crate) async fn authorize(State(rule): State<RouteRule>, req: Request, next: Next) -> Response {
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

/// The CSRF defence. A browser that holds Basic credentials for this server sends them with
/// any request a page of another site makes it send, so requests that a browser marks as
/// coming from another origin are refused with 403:
///
/// - `Sec-Fetch-Site` (every current browser sends it): `same-origin` and `none` (typed URL,
///   bookmark) pass; `same-site` (another port of the same host counts as same-site) and
///   `cross-site` pass only for a top-level `GET` navigation (a link clicked elsewhere), never
///   for a method that changes something nor for a sub-resource (`<img>`, `<iframe>`,
///   `fetch`), so no other page can start a profile either;
/// - without it, an `Origin` header on a `POST`/`PUT`/`DELETE` must name this host;
/// - neither header (curl, Go, Prometheus): not a browser, nothing ambient to abuse.
fn check_origin(req: &Request) -> Result<(), ApiError> {
    let headers = req.headers();
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let refuse = |what: String| {
        ApiError::forbidden(format!(
            "cross-origin request refused ({what}): a page of another origin cannot use this browser's credentials here; open the console at this server's own /debug/ or use curl"
        ))
    };
    match get("sec-fetch-site") {
        Some("same-origin" | "none") => return Ok(()),
        Some(site) => {
            let top_level = get("sec-fetch-mode") == Some("navigate")
                && get("sec-fetch-dest").is_none_or(|d| d == "document");
            if safe && *req.method() == Method::GET && top_level {
                return Ok(());
            }
            return Err(refuse(format!("Sec-Fetch-Site: {}", clip(site, 32))));
        }
        None => {}
    }
    if safe {
        return Ok(());
    }
    let Some(origin) = get("origin") else {
        return Ok(());
    };
    let host = get("host").unwrap_or("");
    let same = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
    if same {
        Ok(())
    } else {
        Err(refuse(format!("Origin: {}", clip(origin, 64))))
    }
}

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

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
