//! `GET/PUT/DELETE /debug/log-level` and `/debug/overrides` against a real reloadable filter.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn put(url: &str, secret: &str, body: &str) -> (u16, String) {
    let r = client()
        .put(url)
        .bearer_auth(secret)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn log_level_changes_at_run_time_and_reverts_by_itself() {
    let buf = Buf::default();
    let (filter, control) = prodbg::log_level::reloadable(EnvFilter::new("info"));
    let writer = buf.clone();
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(move || writer.clone()))
        .init();
    let logged = |needle: &str| String::from_utf8_lossy(&buf.0.lock().unwrap()).contains(needle);
    let server = spawn_with(|b| b.log_control(control));
    let url = server.url("/debug/log-level");

    tracing::debug!("before-change-7z");
    assert!(!logged("before-change-7z"));
    let (s, body) = get(&url, Some(READ_SECRET)).await;
    assert_eq!(s, 200);
    assert!(
        body.contains("\"filter\":\"prodbg::audit=info,info\"")
            && body.contains("\"override\":null"),
        "{body}"
    );

    assert_eq!(put(&url, READ_SECRET, "debug").await.0, 403);
    let (s, body) = put(&format!("{url}?ttl=not-a-duration"), ADMIN_SECRET, "debug").await;
    assert_eq!(s, 400);
    assert!(
        error_message(&body, "bad_parameter").contains("15m"),
        "{body}"
    );
    let (s, body) = put(&url, ADMIN_SECRET, "info,my_app=verbose").await;
    assert_eq!(s, 400, "{body}");
    assert!(
        error_message(&body, "bad_parameter").contains("error parsing level filter"),
        "quotes the parse error: {body}"
    );

    let (s, body) = put(&format!("{url}?ttl=1"), ADMIN_SECRET, "debug").await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"set_by\":\"ops\""), "{body}");
    tracing::debug!("during-change-7z");
    assert!(logged("during-change-7z"));
    let (_, overrides) = get(&server.url("/debug/overrides"), Some(READ_SECRET)).await;
    assert!(
        overrides.contains("log_level") && overrides.contains("expires_at"),
        "{overrides}"
    );

    let start = Instant::now();
    loop {
        let (_, body) = get(&url, Some(READ_SECRET)).await;
        if body.contains("\"override\":null") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never reverted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::debug!("after-revert-7z");
    assert!(!logged("after-revert-7z"));
    let (_, overrides) = get(&server.url("/debug/overrides"), Some(READ_SECRET)).await;
    assert!(!overrides.contains("log_level"), "{overrides}");

    // ttl=0 only when asked: stays until DELETE.
    let (s, body) = put(&format!("{url}?ttl=0"), ADMIN_SECRET, "debug").await;
    assert_eq!(s, 200);
    assert!(body.contains("\"expires_at\":null"), "{body}");
    let r = client()
        .delete(&url)
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("\"override\":null"));
    let methods: Vec<String> = server
        .audit_lines()
        .iter()
        .map(|l| format!("{} {}", l["method"], l["status"]))
        .collect();
    assert!(
        methods.contains(&"\"PUT\" 200".to_string())
            && methods.contains(&"\"DELETE\" 200".to_string()),
        "{methods:?}"
    );
}

#[tokio::test]
async fn without_a_log_control_the_endpoint_says_how_to_install_one() {
    let server = spawn();
    let (s, body) = get(&server.url("/debug/log-level"), Some(READ_SECRET)).await;
    assert_eq!(s, 503);
    assert!(error_message(&body, "unavailable").contains("reloadable"));
}
