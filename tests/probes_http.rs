//! Pools and thread stacks over real HTTP.

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "gave up waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pool_json(server: &Server, name: &str) -> serde_json::Value {
    let (s, body) = get(&server.url("/debug/pools"), Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{body}"))
}

#[cfg(feature = "pools-sqlx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_sqlx_pool_shows_in_pools_and_metrics() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let server = spawn_with(|b| b.pool("primary-db", prodbg::pools::sqlx(&pool)));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(pool.acquire().await.unwrap());
    }
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.acquire().await.map(drop) })
        })
        .collect();
    let p = pool_json(&server, "primary-db").await;
    assert_eq!(p["max_size"], 4, "{p}");
    assert_eq!(p["size"], 4, "{p}");
    assert_eq!(p["idle"], 0, "{p}");
    assert_eq!(p["in_use"], 4, "{p}");
    assert_eq!(p["saturated"], true, "{p}");
    assert_eq!(p["utilisation"], 1.0, "{p}");
    assert!(
        p["waiting"].is_null(),
        "sqlx cannot tell waiters; absent, not 0: {p}"
    );

    let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_pool_in_use_connections{pool=\"primary-db\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("prodbg_pool_saturated{pool=\"primary-db\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("prodbg_pool_waiting_acquirers{pool=\"primary-db\"}"),
        "{metrics}"
    );

    drop(held);
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    let s = &server;
    eventually("the pool returns to idle", || async move {
        let p = pool_json(s, "primary-db").await;
        p["idle"] == 4 && p["in_use"] == 0 && p["saturated"] == false
    })
    .await;
}

#[cfg(feature = "threads")]
#[inline(never)]
fn prodbg_http_test_parked_thread(rx: std::sync::mpsc::Receiver<()>) {
    let _ = rx.recv();
}

#[cfg(feature = "threads")]
#[tokio::test]
async fn thread_stacks_show_a_parked_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::Builder::new()
        .name("parked-http".into())
        .spawn(move || prodbg_http_test_parked_thread(rx))
        .unwrap();
    // A thread in nanosleep: told apart from the one blocked on a futex, as the wall profile does.
    let napping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let nap = {
        let napping = napping.clone();
        std::thread::Builder::new()
            .name("napping-http".into())
            .spawn(move || {
                while napping.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            })
            .unwrap()
    };
    let server = spawn();
    let (s, body) = get(&server.url("/debug/threads"), Some(READ_SECRET)).await;
    assert_eq!(s, 403, "thread stacks need scope profile: {body}");
    let (s, text) = get(
        &server.url("/debug/threads?format=text"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(s, 200);
    assert!(text.contains("\"parked-http\""), "{text}");
    assert!(text.contains("prodbg_http_test_parked_thread"), "{text}");
    assert!(
        text.contains("\"prodbg-admin\""),
        "the admin thread lists itself: {text}"
    );
    let (s, json) = get(&server.url("/debug/threads"), Some(PROFILE_SECRET)).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let parked = v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "parked-http")
        .unwrap();
    assert_eq!(parked["state"], "futex", "blocked in recv: {parked}");
    let napper = v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "napping-http")
        .unwrap();
    assert_eq!(napper["state"], "sleeping", "in thread::sleep: {napper}");
    napping.store(false, std::sync::atomic::Ordering::Relaxed);
    nap.join().unwrap();
    let frames = parked["frames"].as_array().unwrap();
    assert!(frames.iter().any(|f| f["function"]
        .as_str()
        .is_some_and(|n| n.contains("prodbg_http_test_parked_thread"))));
    let (s, body) = get(
        &server.url("/debug/threads?format=xml"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(s, 400);
    assert!(error_message(&body, "bad_parameter").contains("json, text"));
    tx.send(()).unwrap();
    t.join().unwrap();
}

#[tokio::test]
async fn process_report_redacts_secrets() {
    // SAFETY: no other test in this binary reads or writes this variable.
    unsafe { std::env::set_var("PRODBG_TEST_DB_PASSWORD", "hunter2-hunter2") };
    let server = spawn_with(|b| b.build_info("git_sha", "abc123"));
    let (s, body) = get(&server.url("/debug/process"), Some(READ_SECRET)).await;
    assert_eq!(s, 200);
    assert!(!body.contains("hunter2"), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["build"]["git_sha"], "abc123");
    assert_eq!(v["process"]["pid"], std::process::id());
    assert!(v["process"]["open_fds"].as_u64().unwrap() > 2);
    let env = v["process"]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e[0] == "PRODBG_TEST_DB_PASSWORD" && e[1] == "[redacted]"),
        "{body}"
    );
}
