//! The guarded router, built from the registered probes' routes: each route gets its scope
//! check and, inside it, the body limits; then the whole gets the shared layers (guard, JSON
//! errors, panics).

use std::convert::Infallible;
use std::sync::Arc;

use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;

use super::guard::{authorize, RouteRule};
use super::state::ServerState;
use super::table::RouteRow;
use crate::seam::{ApiError, Route};
use crate::security::Scope;

/// Every route of every probe, in registration order, with its row for the endpoint table.
pub(crate) fn collect(state: &ServerState) -> Vec<(RouteRow, Route)> {
    state
        .probes
        .iter()
        .flat_map(|probe| {
            let spec = probe.spec();
            probe.routes().into_iter().map(move |route| {
                let row = RouteRow {
                    method: route.method.to_string(),
                    path: route.path.clone(),
                    scope: state.scope_for(route.access),
                    summary: route.summary.clone(),
                    go: route.go,
                    available: route.available,
                    probe: spec.name,
                    feature: spec.feature,
                };
                (row, route)
            })
        })
        .collect()
}

/// Builds the guarded router over `routes`.
pub(crate) fn build(state: Arc<ServerState>, routes: Vec<(RouteRow, Route)>) -> Router {
    let mut app = Router::new();
    for (row, route) in routes {
        let rule = RouteRule {
            template: Arc::from(route.path.as_str()),
            scope: row.scope,
        };
        // The body limits sit inside the scope check: a client without a valid token gets
        // 401 whatever it sends, and learns nothing of the limits.
        let limits = &state.limits;
        app = app.route(
            &route.path,
            route
                .handler
                .layer::<_, Infallible>(tower_http::limit::RequestBodyLimitLayer::new(
                    limits.max_body_bytes,
                ))
                .layer(from_fn_with_state(
                    limits.body_read_timeout,
                    super::deadline::body_deadline,
                ))
                .layer(from_fn_with_state(rule, authorize)),
        );
    }
    app = app.route(
        "/debug",
        get(|| async { axum::response::Redirect::permanent("debug/") }).layer(from_fn_with_state(
            RouteRule {
                template: Arc::from("/debug"),
                scope: Some(Scope::Read),
            },
            authorize,
        )),
    );
    app.fallback(super::guard::not_found)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_panic| {
            axum::response::IntoResponse::into_response(ApiError::internal(
                "the handler panicked; the admin server is still serving (the panic is in the host's stderr)",
            ))
        }))
        .layer(axum::middleware::from_fn(super::guard::json_errors))
        .layer(from_fn_with_state(state, super::guard::guard))
}
