//! `GET /debug/`: the index, generated from the endpoint table of the registered probes.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Json;

use super::state::ServerState;
use super::table::RouteRow;
use crate::seam::{Access, Params, Route, RouteSpec};
use crate::security::Scope;

/// The index's route.
pub(super) const ROUTE: RouteSpec = RouteSpec {
    method: Method::GET,
    path: "/debug/",
    access: Access::Scope(Scope::Read),
    summary: |_| "this index (JSON with Accept: application/json)".into(),
};

/// The index's route with its handler.
pub(super) fn route(state: &Arc<ServerState>) -> Route {
    Route::new(&ROUTE, &state.limits, get(index).with_state(state.clone()))
}

/// HTML page linking every endpoint, or JSON with `Accept: application/json`.
async fn index(
    State(state): State<Arc<ServerState>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = Params::parse(q.as_deref(), &[]) {
        return e.into_response();
    }
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let glances: serde_json::Map<String, serde_json::Value> = state
        .probes
        .iter()
        .filter_map(|p| Some((p.spec().name.to_string(), p.glance()?)))
        .collect();
    if wants_json {
        return Json(serde_json::json!({
            "service": &*state.service_name,
            "version": env!("CARGO_PKG_VERSION"),
            "endpoints": state.table(),
            "probes": glances,
        }))
        .into_response();
    }
    Html(html(&state, state.table(), &glances)).into_response()
}

/// Links are relative to `/debug/`, so the page works under any mount prefix.
fn relative_link(path: &str) -> String {
    match path.strip_prefix("/debug/") {
        Some("") => "./".to_string(),
        Some(rest) => rest.to_string(),
        None => format!("..{path}"),
    }
}

fn html(
    state: &ServerState,
    list: &[RouteRow],
    glances: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let service = &state.service_name;
    let mut rows = String::new();
    for e in list {
        let path = escape(&e.path);
        let link = if e.available && e.method == "GET" {
            format!("<a href=\"{}\">{path}</a>", escape(&relative_link(&e.path)))
        } else {
            path
        };
        let note = match (e.available, e.feature) {
            (false, Some(f)) => {
                format!(" <em>(not compiled in: enable the <code>{f}</code> feature)</em>")
            }
            _ => String::new(),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{link}</td><td>{}</td><td>{}{note}</td></tr>\n",
            e.method,
            e.scope.map_or("none", Scope::as_str),
            escape(&e.summary),
        ));
    }
    let console = glances
        .get("console")
        .and_then(|g| g["addr"].as_str())
        .map(|a| {
            format!(
                "<p>tokio-console: <code>tokio-console http://{}</code></p>",
                escape(a)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>prodbg: {s}</title>\
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:.2em .8em}}em{{color:#888}}</style></head>\
<body><h1>prodbg: {s}</h1><p>Send <code>Authorization: Bearer &lt;token&gt;</code> with every request.</p>\
{console}<table><tr><th>method</th><th>path</th><th>scope</th><th>what</th></tr>\n{rows}</table></body></html>\n",
        s = escape(service),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_to_the_index() {
        assert_eq!(relative_link("/debug/"), "./");
        assert_eq!(relative_link("/debug/pprof/profile"), "pprof/profile");
        assert_eq!(relative_link("/metrics"), "../metrics");
    }
}
