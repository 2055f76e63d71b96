//! The admin server: listener and connection caps, the guard (admission, auth, audit,
//! timeouts), the router built from the registered probes, and the server's own endpoints —
//! the console (`/debug/`), Go's profile index, `/metrics` and the bundle. It knows probes only
//! through [`crate::seam::Probe`].

mod audit_endpoint;
mod bundle;
mod conn;
mod console;
mod deadline;
mod exposition;
mod guard;
mod incident_capture;
mod io;
mod listen;
mod lockout;
mod origin;
mod pprof_index;
mod red;
mod refuse;
mod router;
mod sampler;
mod slots;
mod state;
mod table;
mod timeline;

use std::sync::Arc;

use axum::Router;

pub(crate) use listen::serve;
pub(crate) use origin::AllowedHosts;
pub(crate) use sampler::record_vitals;
pub(crate) use state::{ServerConfig, ServerState};

use crate::seam::{ProbeSpec, Route};

/// The TLS state a listener serves with (feature `tls`; without it, no value exists).
#[cfg(feature = "tls")]
pub(crate) type TlsHandle = Arc<crate::tls::Tls>;
/// The TLS state a listener serves with (feature `tls`; without it, no value exists).
#[cfg(not(feature = "tls"))]
pub(crate) type TlsHandle = std::convert::Infallible;

/// The server's own endpoints, listed like a probe's.
const SERVER: ProbeSpec = ProbeSpec {
    name: "server",
    feature: None,
    routes: &[
        &audit_endpoint::ROUTE,
        &console::PAGE,
        &pprof_index::ROUTE,
        &exposition::ROUTE,
        &bundle::ROUTE,
        &timeline::ROUTE,
        &console::SCRIPT_ROUTE,
        &console::STYLE_ROUTE,
        &console::LAST,
    ],
    bundle_files: &[],
};

/// Builds the state and the guarded router over every probe's routes and the server's own.
pub(crate) fn build(config: ServerConfig) -> (Arc<ServerState>, Router) {
    let state = Arc::new(ServerState::new(config));
    let own = |route: Route| {
        let row = table::RouteRow {
            method: route.method.to_string(),
            path: route.path.clone(),
            scope: state.scope_for(route.access),
            summary: route.summary.clone(),
            go: route.go,
            available: true,
            probe: SERVER.name,
            feature: None,
        };
        (row, route)
    };
    let (page, assets) = console::routes(&state);
    let mut routes = vec![own(page), own(pprof_index::route(&state))];
    routes.extend(router::collect(&state));
    routes.push(own(exposition::route(&state)));
    routes.push(own(bundle::route(&state)));
    routes.push(own(timeline::route(&state)));
    routes.push(own(audit_endpoint::route(&state)));
    routes.extend(assets.into_iter().map(own));
    let table = routes.iter().map(|(row, _)| row.clone()).collect();
    let _ = state.table.set(table);
    let app = router::build(state.clone(), routes);
    (state, app)
}
