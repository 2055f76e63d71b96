//! Panics in `/debug/errors` over real HTTP: tasks panicking in a named function form one
//! error group per panic location with the exact count, the message, the thread and a
//! symbolized stack naming the function; the host's own panic hook still runs.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{get, spans_handle, spawn_with, READ_SECRET};

/// The named function the tasks panic in.
#[inline(never)]
fn planted_panic_site(order: usize) -> usize {
    if std::hint::black_box(order) < usize::MAX {
        panic!("order {order} could not be priced");
    }
    order
}

/// A second location, panicking fewer times.
#[inline(never)]
fn other_panic_site(n: usize) {
    let v: Vec<usize> = Vec::new();
    let _ = std::hint::black_box(v)[n];
}

static HOST_HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_panics_in_a_named_function_are_one_error_group_with_the_right_count() {
    // The host's own hook, installed before prodbg's: it must keep running.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        HOST_HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
    let server = spawn_with(|b| b.spans(spans_handle()));

    const PLANTED: usize = 7;
    const OTHER: usize = 3;
    let mut tasks = Vec::new();
    for i in 0..PLANTED {
        tasks.push(tokio::spawn(async move { planted_panic_site(i) }));
    }
    for i in 0..OTHER {
        tasks.push(tokio::spawn(async move {
            other_panic_site(i);
            0
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap_err().is_panic());
    }
    assert_eq!(HOST_HOOK_CALLS.load(Ordering::SeqCst), PLANTED + OTHER);

    let (status, body) = get(&server.url("/debug/errors"), Some(READ_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let panics: Vec<&serde_json::Value> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["target"] == "panic")
        .collect();
    assert_eq!(panics.len(), 2, "{report}");
    let planted = panics
        .iter()
        .find(|g| g["count"] == PLANTED as u64)
        .unwrap_or_else(|| panic!("no group of {PLANTED}: {report}"));
    let other = panics
        .iter()
        .find(|g| g["count"] == OTHER as u64)
        .unwrap_or_else(|| panic!("no group of {OTHER}: {report}"));
    assert_eq!(planted["level"], "ERROR");
    let callsite = planted["callsite"].as_str().unwrap();
    assert!(callsite.starts_with("tests/panics_http.rs:"), "{callsite}");
    assert_ne!(planted["callsite"], other["callsite"]);
    let message = planted["message"].as_str().unwrap();
    assert!(
        message.starts_with("order ") && message.ends_with(" could not be priced"),
        "{message}"
    );
    let event = &planted["recent"][0];
    let fields = &event["fields"];
    let stack = fields["stack"].as_str().unwrap_or_default();
    // Innermost first, from the function that panicked (the hook's frames left out).
    assert!(
        stack
            .lines()
            .next()
            .unwrap_or_default()
            .contains("planted_panic_site"),
        "{event}"
    );
    assert!(
        fields["location"].as_str().unwrap().starts_with(callsite),
        "{event}"
    );
    assert!(fields["thread"].as_str().is_some(), "{event}");
    assert!(other["message"]
        .as_str()
        .unwrap()
        .contains("index out of bounds"));

    // The text form lists them too.
    let (_, text) = get(&server.url("/debug/errors?format=text"), Some(READ_SECRET)).await;
    assert!(text.contains(&format!("x{PLANTED}")), "{text}");
}
