//! The README's workflow over real HTTP, with the recommended install (the host's `EnvFilter`
//! as a global filter, made reloadable, the span layer beside `fmt`): a service running at
//! `warn` shows no spans and says why and how to fix it; `PUT /debug/log-level` to `info`
//! brings the requests in flight back; `?name=` and `?hide=` pick the names listed.
//! This binary's process-wide subscriber is that stack.

mod common;

use common::{get, spawn_with, ADMIN_SECRET, READ_SECRET};
use tracing_subscriber::prelude::*;

#[tokio::test]
async fn a_quiet_filter_says_so_and_raising_it_brings_the_spans_back() {
    let (filter, log_control) =
        prodbg::log_level::reloadable(tracing_subscriber::EnvFilter::new("warn"));
    let (spans, handle) = prodbg::spans::layer(prodbg::spans::Options::default());
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
        .with(spans)
        .init();
    let server = spawn_with(|b| b.log_control(log_control).spans(handle));
    let spans_url = server.url("/debug/spans");

    // At warn, an open INFO span is never created: nothing listed, and the hint says why.
    let before = tracing::info_span!("checkout", route = "/cart/checkout");
    let (s, body) = get(&spans_url, Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["in_flight"]["spans"].as_array().unwrap().len(),
        0,
        "{body}"
    );
    assert_eq!(v["in_flight"]["info_spans_enabled"], false, "{body}");
    let hint = v["in_flight"]["hint"].as_str().expect("a hint at warn");
    assert!(
        hint.contains("above INFO") && hint.contains("PUT") && hint.contains("/debug/log-level"),
        "{hint}"
    );
    let (_, text) = get(&format!("{spans_url}?format=text"), Some(READ_SECRET)).await;
    assert!(text.contains("note: the tracing filter"), "{text}");
    drop(before);

    // The fix the hint gives: raise the filter for a while.
    let r = common::client()
        .put(server.url("/debug/log-level?ttl=5m"))
        .bearer_auth(ADMIN_SECRET)
        .body("info")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let conn = tracing::info_span!("conn", peer = "10.0.0.9:40000");
    let apply = tracing::info_span!("apply", cmd = "GET");
    let (_, body) = get(&spans_url, Some(READ_SECRET)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["in_flight"]["hint"].is_null(), "{body}");
    assert_eq!(v["in_flight"]["info_spans_enabled"], true, "{body}");
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["in_flight"]["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&v), ["conn", "apply"], "{body}");

    // ?name= keeps, ?hide= leaves out.
    for (query, want) in [("?name=apply", ["apply"]), ("?hide=conn", ["apply"])] {
        let (s, body) = get(&format!("{spans_url}{query}"), Some(READ_SECRET)).await;
        assert_eq!(s, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(names(&v), want, "{query}: {body}");
    }
    // Bounded: at most 32 names, each at most 128 bytes.
    let many = vec!["n"; 33].join(",");
    let long = "x".repeat(129);
    for bad in [
        format!("?name={many}"),
        format!("?hide={long}"),
        "?name=,".into(),
    ] {
        let (s, body) = get(&format!("{spans_url}{bad}"), Some(READ_SECRET)).await;
        assert_eq!(s, 400, "{bad}: {body}");
        assert!(body.contains("comma-separated span names"), "{body}");
    }
    drop((conn, apply));
}
