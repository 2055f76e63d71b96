//! In-flight spans: what shows, for how long, and the caps.

use super::Read as _;
use std::time::Duration;

use super::{dispatch, with};
use crate::layer::Options;
use crate::probes::spans::span_report::{self, NameFilter};

#[test]
fn hanging_span_shows_once_old_enough_with_its_route_and_goes_when_closed() {
    let (d, h) = dispatch(Options::default());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let d2 = d.clone();
    let worker = std::thread::Builder::new()
        .name("hanger".into())
        .spawn(move || {
            with(&d2, || {
                let server = tracing::info_span!("server");
                let _s = server.enter();
                let span = tracing::info_span!("request", route = "/hang", request_id = 7u64);
                let _g = span.enter();
                started_tx.send(()).ok();
                rx.recv().ok();
            })
        })
        .expect("spawn");
    started_rx.recv().expect("started");
    assert!(
        h.in_flight(3_600_000).spans.is_empty(),
        "no span is an hour old"
    );
    std::thread::sleep(Duration::from_millis(600));
    let r = h.in_flight(500);
    let req = r
        .spans
        .iter()
        .find(|s| s.name == "request")
        .expect("request listed");
    assert_eq!(req.fields.get("route"), Some("/hang"));
    assert_eq!(req.fields.get("request_id"), Some("7"));
    assert!(req.age_ms >= 500.0, "{}", req.age_ms);
    assert!(req.entered);
    let t = req.thread.as_ref().expect("entered by a thread");
    assert_eq!(t.name.as_deref(), Some("hanger"));
    assert_eq!(req.parents.len(), 1);
    assert_eq!(req.parents[0].name, Some("server"));
    // Oldest first: the server span was created before the request.
    assert_eq!(r.spans[0].name, "server");
    let text = r.to_string();
    assert!(text.contains("request{route=\"/hang\""), "{text}");
    assert!(text.contains("in server"), "{text}");
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["spans"][1]["fields"]["route"], "/hang");

    tx.send(()).expect("release");
    worker.join().expect("join");
    assert!(h.in_flight(0).spans.is_empty(), "closed spans are gone");
    assert_eq!(h.shared().table.tracked(), 0);
}

#[test]
fn span_cap_is_honoured_and_drops_are_counted() {
    let (d, h) = dispatch(Options::default().max_spans(10));
    with(&d, || {
        let spans: Vec<_> = (0..50).map(|i| tracing::info_span!("s", i)).collect();
        let r = h.in_flight(0);
        // 10 rounds up to a 16-slot table; the 64-slot probe window covers all of it.
        assert_eq!(r.max_spans, 16);
        assert_eq!(r.spans.len(), 16);
        assert_eq!(r.tracked, 16);
        assert_eq!(r.dropped_spans_total, 34);
        assert_eq!(
            h.shared()
                .table
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            34
        );
        // Entering an untracked span is harmless.
        drop(spans[49].enter());
        drop(spans);
        assert_eq!(h.in_flight(0).spans.len(), 0);
    });
}

#[test]
fn field_bytes_are_capped_and_truncations_counted() {
    let (d, h) = dispatch(Options::default().max_field_bytes(40));
    with(&d, || {
        let long = "x".repeat(300);
        let _s = tracing::info_span!("big", a = %long, b = "never fits").entered();
        let r = h.in_flight(0);
        let s = &r.spans[0];
        assert!(s.fields_truncated);
        let a = s.fields.get("a").expect("a kept, cut");
        assert!(a.ends_with('…') && a.len() < 45, "{a}");
        assert_eq!(s.fields.get("b"), None, "no room left for b");
        assert_eq!(r.truncated_fields_total, 2);
    });
}

#[test]
fn values_longer_than_the_value_cap_are_cut() {
    let (d, h) = dispatch(Options::default().max_field_bytes(4096));
    with(&d, || {
        let long = "é".repeat(300);
        let _s = tracing::info_span!("big", a = %long).entered();
        let s = &h.in_flight(0).spans[0];
        let a = s.fields.get("a").expect("a");
        assert!(a.len() <= crate::layer::MAX_VALUE_BYTES + '…'.len_utf8());
        assert!(a.ends_with('…'));
    });
}

#[test]
fn recorded_later_values_replace_earlier_ones() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        let s = tracing::info_span!("req", status = tracing::field::Empty, route = "/a");
        s.record("status", 200u64);
        s.record("status", 503u64);
        let r = h.in_flight(0);
        assert_eq!(r.spans[0].fields.get("status"), Some("503"));
        assert_eq!(r.spans[0].fields.0.len(), 2);
        assert!(!r.spans[0].entered && r.spans[0].thread.is_none());
    });
}

#[test]
fn fields_are_redacted_with_the_process_rules_then_the_hosts_hook() {
    fn hook(name: &str, value: &str) -> String {
        if name == "user" {
            "<user>".to_string()
        } else {
            value.to_string()
        }
    }
    let (d, h) = dispatch(Options::default().redact(hook));
    with(&d, || {
        let _s = tracing::info_span!(
            "login",
            user = "alice",
            password = "hunter2",
            db = "postgres://app:hunter2@db/app",
            route = "/login"
        )
        .entered();
        let r = h.in_flight(0);
        let f = &r.spans[0].fields;
        assert_eq!(f.get("user"), Some("<user>"));
        assert_eq!(f.get("password"), Some("[redacted]"));
        assert_eq!(f.get("db"), Some("postgres://app:[redacted]@db/app"));
        assert_eq!(f.get("route"), Some("/login"));
        assert!(!r.to_string().contains("hunter2"));
    });
}

#[test]
fn spans_below_the_filter_are_not_tracked() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        let _a = tracing::debug_span!("noisy").entered();
        let _b = tracing::info_span!("kept").entered();
        let r = h.in_flight(0);
        assert_eq!(r.spans.len(), 1);
        assert_eq!(r.spans[0].name, "kept");
        assert!(
            r.spans[0].parents.is_empty(),
            "the debug span is not a tracked parent"
        );
    });
}

#[test]
fn a_limit_keeps_the_oldest_and_counts_the_rest() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        let spans: Vec<_> = (0..5u64)
            .map(|i| {
                let s = tracing::info_span!("request", n = i);
                std::thread::sleep(Duration::from_millis(2));
                s
            })
            .collect();
        let all = h.in_flight_up_to(0, 16_384, &NameFilter::default());
        assert_eq!((all.spans.len(), all.omitted), (5, 0));
        let r = h.in_flight_up_to(0, 2, &NameFilter::default());
        assert_eq!((r.limit, r.omitted), (2, 3));
        let kept: Vec<_> = r.spans.iter().map(|s| s.fields.get("n")).collect();
        assert_eq!(kept, [Some("0"), Some("1")], "the two oldest");
        let text = r.to_string();
        assert!(
            text.contains("3 younger spans left out (?limit=2"),
            "{text}"
        );
        drop(spans);
    });
    assert!(h.in_flight(0).spans.is_empty());
}

#[test]
fn name_and_hide_pick_the_spans_listed() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        let _conn = tracing::info_span!("conn", peer = "10.0.0.1:5000");
        let _a = tracing::info_span!("apply", cmd = "GET");
        let _b = tracing::info_span!("apply", cmd = "SET");
        let names = |f: &NameFilter| -> Vec<&str> {
            h.in_flight_up_to(0, 100, f)
                .spans
                .iter()
                .map(|s| s.name)
                .collect()
        };
        let only = NameFilter {
            only: vec!["apply".into()],
            hide: vec![],
        };
        assert_eq!(names(&only), ["apply", "apply"]);
        let hide = NameFilter {
            only: vec![],
            hide: vec!["conn".into()],
        };
        assert_eq!(names(&hide), ["apply", "apply"]);
        assert_eq!(names(&NameFilter::default()).len(), 3);
    });
}

/// A span is flagged by how old it is *for its name*: a long-lived connection span, whose
/// name never closes, is not; a request far beyond its name's p99 is.
#[test]
fn overdue_is_relative_to_the_names_own_p99() {
    let (d, h) = dispatch(Options::default());
    with(&d, || {
        let conn = tracing::info_span!("conn");
        for i in 0..40u64 {
            drop(tracing::info_span!("get", i));
        }
        let stuck = tracing::info_span!("get", i = 99u64);
        std::thread::sleep(Duration::from_millis(30));
        let r = h.in_flight(0);
        let of = |name: &str| r.spans.iter().find(|s| s.name == name).expect(name);
        let (c, g) = (of("conn"), of("get"));
        assert!(
            !c.overdue && c.name_p99_ms.is_none(),
            "no closes of conn: {c:?}"
        );
        let p99 = g.name_p99_ms.expect("40 closes of get give a p99");
        assert!(p99 < 15.0, "{p99}");
        assert!(g.overdue, "30 ms against a p99 of {p99} ms: {g:?}");
        assert!(r.to_string().contains("OVERDUE"));
        assert_eq!(span_report::overdue_count(h.shared()), 1);
        drop((conn, stuck));
    });
}
