//! `GET /debug/`: the index, generated from the endpoint table.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use crate::http::params::Params;
use crate::http::routes::{endpoints, Endpoint};
use crate::http::state::Shared;

/// HTML page linking every endpoint, or JSON with `Accept: application/json`.
pub async fn index(
    State(shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = Params::parse(q.as_deref(), &[]) {
        return e.into_response();
    }
    let list = endpoints();
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        let rows: Vec<_> = list
            .iter()
            .map(|e| {
                serde_json::json!({
                    "method": e.method,
                    "path": e.path,
                    "scope": scope_name(shared.scope_for(e)),
                    "summary": e.summary,
                    "available": e.available,
                    "feature": e.feature,
                })
            })
            .collect();
        return Json(serde_json::json!({
            "service": shared.service_name,
            "version": env!("CARGO_PKG_VERSION"),
            "endpoints": rows,
        }))
        .into_response();
    }
    Html(html(&shared, &list)).into_response()
}

fn scope_name(scope: Option<crate::auth::Scope>) -> &'static str {
    scope.map_or("none", |s| s.as_str())
}

/// Links are relative to `/debug/`, so the page works under any mount prefix.
fn relative_link(path: &str) -> String {
    match path.strip_prefix("/debug/") {
        Some("") => "./".to_string(),
        Some(rest) => rest.to_string(),
        None => format!("..{path}"),
    }
}

fn html(shared: &Shared, list: &[Endpoint]) -> String {
    let service = &shared.service_name;
    let mut rows = String::new();
    for e in list {
        let path = escape(&e.path);
        let link = if e.available && e.method.starts_with("GET") {
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
            scope_name(shared.scope_for(e)),
            escape(e.summary),
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>prodbg: {s}</title>\
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:.2em .8em}}em{{color:#888}}</style></head>\
<body><h1>prodbg: {s}</h1><p>Send <code>Authorization: Bearer &lt;token&gt;</code> with every request.</p>\
{console}<table><tr><th>method</th><th>path</th><th>scope</th><th>what</th></tr>\n{rows}</table></body></html>\n",
        s = escape(service),
        console = shared
            .probes
            .console_addr
            .map(|a| format!("<p>tokio-console: <code>tokio-console http://{a}</code></p>"))
            .unwrap_or_default(),
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
