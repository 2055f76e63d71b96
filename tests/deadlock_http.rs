//! `/debug/deadlocks` over real HTTP against a real parking_lot deadlock.
//! Alone in its binary: parking_lot reports each cycle once, to whichever detector asks first.
#![cfg(feature = "deadlock")]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;

#[inline(never)]
fn prodbg_http_alpha_takes_a_then_b(a: &Mutex<()>, b: &Mutex<()>, both: &Barrier) {
    let _a = a.lock();
    both.wait();
    let _b = b.lock();
}

#[inline(never)]
fn prodbg_http_beta_takes_b_then_a(a: &Mutex<()>, b: &Mutex<()>, both: &Barrier) {
    let _b = b.lock();
    both.wait();
    let _a = a.lock();
}

#[tokio::test]
async fn deadlock_report_names_both_threads_and_functions() {
    let server = spawn_with(|b| b.deadlock_detection(Duration::from_millis(100)));
    let (s, body) = get(&server.url("/debug/deadlocks"), Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["detected_total"], 0);

    let (a, b) = (Arc::new(Mutex::new(())), Arc::new(Mutex::new(())));
    let both = Arc::new(Barrier::new(2));
    type Body = fn(&Mutex<()>, &Mutex<()>, &Barrier);
    let bodies: [(&str, Body); 2] = [
        ("dl-alpha", prodbg_http_alpha_takes_a_then_b),
        ("dl-beta", prodbg_http_beta_takes_b_then_a),
    ];
    for (name, f) in bodies {
        let (a, b, both) = (a.clone(), b.clone(), both.clone());
        // Deadlocked for good: leaked on purpose.
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&a, &b, &both))
            .unwrap();
    }
    let start = Instant::now();
    let report = loop {
        let (s, body) = get(&server.url("/debug/deadlocks"), Some(READ_SECRET)).await;
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["detected_total"].as_u64().unwrap() > 0 {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no deadlock reported: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = report.to_string();
    // Names come from the OS threads (matched by stack), with no help from the threads.
    let threads = report["reports"][0]["cycles"][0].as_array().unwrap();
    assert!(
        threads.iter().all(|t| t["tid"].as_u64().is_some()),
        "{text}"
    );
    for needle in [
        "dl-alpha",
        "dl-beta",
        "prodbg_http_alpha_takes_a_then_b",
        "prodbg_http_beta_takes_b_then_a",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    let (s, text) = get(
        &server.url("/debug/deadlocks?format=text"),
        Some(READ_SECRET),
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        text.contains("prodbg_http_alpha_takes_a_then_b") && text.contains("dl-beta"),
        "{text}"
    );
    let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_deadlocks_detected_total 1"),
        "{metrics}"
    );
    // Still serving, detector still running.
    assert_eq!(get(&server.url("/health/live"), None).await.0, 200);
}
