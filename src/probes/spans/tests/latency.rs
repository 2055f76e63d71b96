//! Latency of closed spans: counts, errors, quantiles, slowest.

use super::Read as _;
use std::time::Duration;

use super::{dispatch, with};
use crate::layer::Options;

#[test]
fn counts_errors_quantiles_and_slowest() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        for i in 0..20u64 {
            let s = tracing::info_span!("work", i, route = "/w");
            let _g = s.enter();
            if i == 3 {
                tracing::error!(code = 500, "failed {i}");
            }
            if i == 19 {
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        let _e = tracing::info_span!("work", error = "boom").entered();
    });
    let r = h.latency();
    let w = r.names.iter().find(|n| n.name == "work").expect("work");
    assert_eq!(w.count, 21);
    assert_eq!(w.errors, 2, "one ERROR event inside, one `error` field");
    let max = w.max_ms.expect("max");
    assert!(max >= 30.0, "{max}");
    assert!(w.p50_ms.expect("p50") < 30.0);
    assert!(w.p99_ms.expect("p99") <= max);
    assert_eq!(w.slowest.len(), 5);
    assert_eq!(w.slowest[0].fields.get("i"), Some("19"));
    let callsite = w.slowest[0].callsite.as_deref().expect("callsite");
    assert!(callsite.contains("latency.rs:"), "{callsite}");
    assert_eq!(w.target, module_path!());
    assert!(w.slowest[0].duration_ms >= 30.0);
    assert_eq!(r.window_s, 300);
    assert!(r.to_string().contains("work"));
}

#[test]
fn otel_status_code_marks_an_error() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        let s = tracing::info_span!("call", otel.status_code = tracing::field::Empty);
        s.record("otel.status_code", "ERROR");
        drop(s);
        drop(tracing::info_span!("call", otel.status_code = "OK"));
    });
    let r = h.latency();
    let c = r.names.iter().find(|n| n.name == "call").expect("call");
    assert_eq!((c.count, c.errors), (2, 1));
}

#[test]
fn names_past_the_cap_are_counted_not_summarised() {
    let (d, h) = dispatch(Options::default().max_span_names(1));
    with(&d, || {
        drop(tracing::info_span!("first"));
        drop(tracing::info_span!("second"));
        drop(tracing::info_span!("second"));
    });
    let r = h.latency();
    assert_eq!(r.names.len(), 1);
    assert_eq!(r.names[0].name, "first");
    assert_eq!(r.untracked_name_closes_total, 2);
}

/// More threads than owned shards, some exiting and handing their shard on, all closing
/// spans of one name at once: no close is lost, whichever shard (owned or shared) took it.
#[test]
fn closes_from_many_threads_are_all_counted() {
    let (d, h) = dispatch(Options::default());
    const THREADS: u64 = 12;
    const SPANS: u64 = 500;
    std::thread::scope(|s| {
        for wave in 0..2 {
            let hs: Vec<_> = (0..THREADS / 2)
                .map(|t| {
                    let d = d.clone();
                    s.spawn(move || {
                        with(&d, || {
                            for i in 0..SPANS {
                                let _s = tracing::info_span!("shared", wave, t, i).entered();
                            }
                        })
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("thread");
            }
        }
    });
    let r = h.latency();
    let n = r.names.iter().find(|n| n.name == "shared").expect("shared");
    assert_eq!(n.count, THREADS * SPANS);
}

/// Two targets' spans of one name keep two rows.
#[test]
fn latency_is_kept_per_target_and_name() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        drop(tracing::info_span!(target: "svc::store", "apply"));
        drop(tracing::info_span!(target: "svc::store", "apply"));
        drop(tracing::info_span!(target: "svc::auth", "apply"));
    });
    let r = h.latency();
    let mut rows: Vec<(&str, u64)> = r
        .names
        .iter()
        .filter(|n| n.name == "apply")
        .map(|n| (n.target, n.count))
        .collect();
    rows.sort();
    assert_eq!(rows, [("svc::auth", 1), ("svc::store", 2)]);
    assert!(r.to_string().contains("svc::store::apply"));
}
