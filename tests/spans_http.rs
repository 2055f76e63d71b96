//! `/debug/spans` and `/debug/errors` over real HTTP, reading a real axum host that has
//! prodbg's layer installed the way the README recommends: inside the host's reloadable filter,
//! sharing it with the fmt layer. This binary's process-wide subscriber is that stack.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::routing::get as route_get;
use common::{get, spans_handle as handle, spawn, spawn_with, PROFILE_SECRET, READ_SECRET};
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument;

/// What the host's handlers share: `/hang` signals `entered` and waits for `release`.
#[derive(Clone)]
struct Host {
    entered: Arc<Semaphore>,
    release: Arc<Notify>,
}

/// Runs a handler's body inside the request span a tracing middleware would open.
async fn in_request<F: std::future::Future>(method: &str, route: &str, body: F) -> F::Output {
    body.instrument(tracing::info_span!("request", method, route))
        .await
}

/// Fails one payment: one `error!` callsite, whatever the order id.
fn fail_payment(order_id: u64) {
    tracing::error!(
        order_id,
        card_token = "tok_live_4242424242",
        "payment for order {order_id} failed"
    );
}

/// The host: an axum app on this test's runtime, on a free loopback port.
async fn host() -> (String, Host) {
    let state = Host {
        entered: Arc::new(Semaphore::new(0)),
        release: Arc::new(Notify::new()),
    };
    let s = state.clone();
    let app = axum::Router::new()
        .route(
            "/hang",
            route_get(move || {
                let s = s.clone();
                in_request("GET", "/hang", async move {
                    let _db = tracing::info_span!("db_query", table = "orders").entered();
                    drop(_db);
                    s.entered.add_permits(1);
                    s.release.notified().await;
                    "released"
                })
            }),
        )
        .route(
            "/pay/{id}",
            route_get(|Path(id): Path<u64>| {
                in_request("GET", "/pay/{id}", async move {
                    fail_payment(id);
                    "failed"
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

async fn json(url: &str) -> serde_json::Value {
    let (status, body) = get(url, Some(READ_SECRET)).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `url` until `done` holds for its JSON; fails after a minute (a wait, not a timing).
async fn until(url: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = json(url).await;
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{url} never got there: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn requests(v: &serde_json::Value, route: &str) -> Vec<serde_json::Value> {
    v["in_flight"]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "request" && s["fields"]["route"] == route)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_handler_is_listed_with_its_route_and_errors_fold_into_one_group() {
    let server = spawn_with(|b| b.spans(handle()));
    let (host_url, state) = host().await;
    let client = common::client();

    // A request that hangs.
    let hang = tokio::spawn({
        let (client, url) = (client.clone(), format!("{host_url}/hang"));
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    });
    state.entered.acquire().await.unwrap().forget();

    // Nothing is an hour old: the filter filters.
    let v = json(&server.url("/debug/spans?min_age_ms=3600000")).await;
    assert!(requests(&v, "/hang").is_empty(), "{v}");
    assert_eq!(v["in_flight"]["min_age_ms"], 3_600_000);

    // Once it is half a second old it is listed, with its route and what a stuck request shows.
    let v = until(&server.url("/debug/spans?min_age_ms=500"), |v| {
        !requests(v, "/hang").is_empty()
    })
    .await;
    let spans = requests(&v, "/hang");
    assert_eq!(spans.len(), 1, "{v}");
    let s = &spans[0];
    assert_eq!(s["fields"]["method"], "GET");
    assert!(s["age_ms"].as_f64().unwrap() >= 500.0, "{s}");
    assert!(
        s["target"].as_str().unwrap().starts_with("spans_http"),
        "{s}"
    );
    assert!(s["started_at"].as_str().unwrap().ends_with('Z'), "{s}");
    assert_eq!(s["entered"], false, "the future is parked, not polled: {s}");
    assert!(s["thread"]["tid"].as_i64().unwrap() > 0, "{s}");
    assert!(
        v["in_flight"]["spans"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["age_ms"].as_f64().unwrap() >= 500.0),
        "only spans at least 500 ms old: {v}"
    );
    assert_eq!(v["in_flight"]["max_spans"], 16_384);
    assert_eq!(v["in_flight"]["limit"], 1000, "the default limit");
    // ?limit= keeps the oldest: the hanging request is among them, whatever else is open.
    let one = json(&server.url("/debug/spans?min_age_ms=500&limit=1")).await;
    assert_eq!(
        one["in_flight"]["spans"].as_array().unwrap().len(),
        1,
        "{one}"
    );
    assert_eq!(
        one["in_flight"]["omitted"].as_u64().unwrap() + 1,
        v["in_flight"]["spans"].as_array().unwrap().len() as u64,
        "{one} vs {v}"
    );
    assert_eq!(v["in_flight"]["max_field_bytes"], 512);
    // The closed db span is in the latency summary.
    let names = v["latency"]["names"].as_array().unwrap();
    assert!(names.iter().any(|n| n["name"] == "db_query"), "{v}");

    // The text form reads like a stack of stuck requests.
    let (status, text) = get(
        &server.url("/debug/spans?min_age_ms=500&format=text"),
        Some(READ_SECRET),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("request{method=\"GET\" route=\"/hang\"}"),
        "{text}"
    );
    assert!(text.contains("spans open for at least 500 ms"), "{text}");

    // Seven failed payments with different order ids: one group of seven.
    for id in [3, 14, 15, 92, 65, 35, 89] {
        let body = client
            .get(format!("{host_url}/pay/{id}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "failed");
    }
    let v = json(&server.url("/debug/errors")).await;
    let groups: Vec<_> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["target"] == "spans_http" && g["level"] == "ERROR")
        .collect();
    assert_eq!(groups.len(), 1, "{v}");
    let g = groups[0];
    assert_eq!(g["count"], 7, "{g}");
    assert_eq!(g["last_minute"], 7, "{g}");
    assert_eq!(g["message"], "payment for order 89 failed");
    assert!(
        g["callsite"]
            .as_str()
            .unwrap()
            .starts_with("tests/spans_http.rs:"),
        "{g}"
    );
    let recent = g["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 5, "the last five events: {g}");
    assert_eq!(recent[4]["fields"]["order_id"], "89");
    assert_eq!(recent[4]["fields"]["card_token"], "[redacted]");
    assert_eq!(recent[4]["span"]["name"], "request");
    assert!(!v.to_string().contains("tok_live"), "{v}");
    assert!(g["first_seen"].as_str().unwrap() <= g["last_seen"].as_str().unwrap());

    let (_, text) = get(&server.url("/debug/errors?format=text"), Some(READ_SECRET)).await;
    assert!(text.contains("payment for order 89 failed"), "{text}");

    // The counters on /metrics.
    let (status, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert_eq!(status, 200);
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert!(sample("prodbg_log_events_total{level=\"error\"}") >= 7.0);
    assert!(sample("prodbg_error_groups ") >= 1.0);
    assert!(sample("prodbg_spans_in_flight ") >= 1.0);
    assert!(
        !metrics.contains("prodbg_log_events_total{level=\"debug\"}"),
        "DEBUG is filtered out: unknown, not 0"
    );

    // The console's glance.
    let index = common::index(&server).await;
    let glance = &index["probes"]["spans"];
    let figure = |id: &str| common::figure(&index, "spans", id)["value"].clone();
    assert!(figure("spans").as_u64().unwrap() >= 1, "{glance}");
    assert!(
        figure("spans-oldest").as_f64().unwrap() >= 500.0,
        "{glance}"
    );
    let errors = common::figure(&index, "errors", "errors")["value"].clone();
    assert!(
        errors.as_u64().unwrap() >= 7,
        "{}",
        index["probes"]["errors"]
    );
    assert_eq!(common::figure(&index, "spans", "spans")["unit"], "count");

    // The incident bundle carries both reports: the hanging request and the one error group.
    let r = client
        .get(server.url("/debug/bundle?seconds=1"))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let files = common::untar(&r.bytes().await.unwrap());
    let spans: serde_json::Value = serde_json::from_slice(&files["spans.json"]).unwrap();
    let hung = requests(&spans, "/hang");
    assert_eq!(hung.len(), 1, "{spans}");
    assert!(hung[0]["age_ms"].as_f64().unwrap() >= 500.0, "{spans}");
    let errors: serde_json::Value = serde_json::from_slice(&files["errors.json"]).unwrap();
    let groups: Vec<_> = errors["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["target"] == "spans_http" && g["level"] == "ERROR")
        .collect();
    assert_eq!(groups.len(), 1, "{errors}");
    assert_eq!(groups[0]["count"], 7, "{errors}");
    assert!(!errors.to_string().contains("tok_live"), "{errors}");

    // Released, the request closes and leaves the in-flight list for the latency summary.
    state.release.notify_one();
    assert_eq!(hang.await.unwrap(), "released");
    let v = until(&server.url("/debug/spans"), |v| {
        requests(v, "/hang").is_empty()
    })
    .await;
    let request = v["latency"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "request")
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(request["count"].as_u64().unwrap() >= 8, "{request}");
    assert!(request["max_ms"].as_f64().unwrap() >= 500.0, "{request}");
    let slowest = &request["slowest"][0];
    assert_eq!(slowest["fields"]["route"], "/hang", "{request}");

    // Audited like every endpoint.
    let audited: Vec<_> = server
        .audit_lines()
        .into_iter()
        .filter(|r| r["path"] == "/debug/errors")
        .collect();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[0]["token_id"], "viewer");
}

#[tokio::test]
async fn without_the_layer_the_routes_say_how_to_install_it_and_parameters_are_checked() {
    let server = spawn();
    for path in ["/debug/spans", "/debug/errors"] {
        let (status, body) = get(&server.url(path), Some(READ_SECRET)).await;
        assert_eq!(status, 503, "{body}");
        let message = common::error_message(&body, "unavailable");
        assert!(message.contains("prodbg::spans::layer"), "{message}");
        assert!(message.contains(".spans(handle)"), "{message}");
        assert_eq!(get(&server.url(path), None).await.0, 401);
    }
    for (q, mentions) in [
        ("min_age_ms=-1", "min_age_ms"),
        ("min_age_ms=86400001", "min_age_ms"),
        ("format=xml", "format"),
        ("limit=0", "limit"),
        ("limit=16385", "limit"),
        ("top=3", "unknown parameter"),
    ] {
        let (status, body) =
            get(&server.url(&format!("/debug/spans?{q}")), Some(READ_SECRET)).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(
            common::error_message(&body, "bad_parameter").contains(mentions),
            "{q}: {body}"
        );
    }
    let (status, body) = get(&server.url("/debug/errors?min_age_ms=1"), Some(READ_SECRET)).await;
    assert_eq!(status, 400, "{body}");
}
