//! Labels follow `Instrumented` futures across Tokio worker threads: set while the task is
//! polled (its span entered), cleared when it yields (exited).

use super::Read as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::layer::test_support::{dispatch, tid, with};
use crate::layer::Options;
use crate::stack::labels::current_labels_for;

#[test]
fn labels_follow_tasks_across_worker_threads() {
    let (d, handle) = dispatch(Options::default());
    let worker_dispatch = d.clone();
    // Each worker keeps the test's subscriber as its default for its whole life.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .on_thread_start(move || {
            std::mem::forget(tracing::dispatcher::set_default(&worker_dispatch));
        })
        .build()
        .expect("runtime");
    let seen_tids = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let parked_on = Arc::new(AtomicI32::new(0));
    with(&d, || {
        rt.block_on(async {
            let mut tasks = Vec::new();
            for n in 0..8 {
                let seen = seen_tids.clone();
                let parked_on = parked_on.clone();
                let route = format!("/task/{n}");
                let span = tracing::info_span!("task", route = %route);
                tasks.push(tokio::spawn(
                    async move {
                        for _ in 0..50 {
                            let l = current_labels_for(tid()).resolve();
                            assert_eq!(l.span, Some("task"));
                            assert_eq!(l.fields[0].value, route.as_str());
                            seen.lock().expect("lock").insert(tid());
                            parked_on.store(tid(), Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        }
                    }
                    .instrument(span),
                ));
            }
            for t in tasks {
                t.await.expect("task");
            }
        })
    });
    assert!(
        seen_tids.lock().expect("lock").len() >= 2,
        "tasks ran on more than one worker"
    );
    // All tasks are done: the workers that ran them carry no labels now.
    for &t in seen_tids.lock().expect("lock").iter() {
        assert!(
            current_labels_for(t).is_empty(),
            "worker {t} still labelled"
        );
    }
    assert!(handle.in_flight(0).spans.is_empty());
    let lat = handle.latency();
    assert_eq!(
        lat.names.iter().find(|n| n.name == "task").map(|n| n.count),
        Some(8)
    );
    // A task parked between polls leaves its worker unlabelled.
    with(&d, || {
        rt.block_on(async {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (started_tx, started_rx) = tokio::sync::oneshot::channel::<i32>();
            let t = tokio::spawn(
                async move {
                    started_tx.send(tid()).ok();
                    rx.await.ok();
                }
                .instrument(tracing::info_span!("parked", route = "/wait")),
            );
            let worker = started_rx.await.expect("started");
            tokio::time::sleep(Duration::from_millis(20)).await;
            let l = current_labels_for(worker).resolve();
            assert_ne!(l.span, Some("parked"), "parked task's span is exited");
            let r = handle.in_flight(0);
            let p = r
                .spans
                .iter()
                .find(|s| s.name == "parked")
                .expect("in flight");
            assert!(!p.entered);
            assert_eq!(p.fields.get("route"), Some("/wait"));
            tx.send(()).ok();
            t.await.expect("task");
        })
    });
}
