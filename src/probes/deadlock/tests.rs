//! Deadlock probe against a real parking_lot deadlock between two named threads.
//!
//! One test only: parking_lot reports each cycle once, so a second detector in this process
//! could take the report from the first. Its checks dump every thread (feature `threads`),
//! which signals them: it takes [`serial`].

use parking_lot::Mutex;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::detector::{name_current_thread, DeadlockDetector};
use crate::test_support::serial;

/// Generous bound for "eventually"; never a timing assertion, only a hang guard.
const PATIENCE: Duration = Duration::from_secs(60);

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[inline(never)]
fn alpha_locks_first_then_second(first: &Mutex<()>, second: &Mutex<()>, both_hold: &Barrier) {
    let _first = first.lock();
    both_hold.wait();
    let _second = second.lock();
}

#[inline(never)]
fn beta_locks_second_then_first(first: &Mutex<()>, second: &Mutex<()>, both_hold: &Barrier) {
    let _second = second.lock();
    both_hold.wait();
    let _first = first.lock();
}

#[test]
fn detector_reports_the_cycle_and_keeps_running() {
    let _serial = serial();
    let detector = DeadlockDetector::start(Duration::from_millis(100), 4).unwrap();
    assert!(detector.is_running());

    let first = Arc::new(Mutex::new(()));
    let second = Arc::new(Mutex::new(()));
    let both_hold = Arc::new(Barrier::new(2));
    type Body = fn(&Mutex<()>, &Mutex<()>, &Barrier);
    let bodies: [(&str, Body); 2] = [
        ("deadlock-alpha", alpha_locks_first_then_second),
        ("deadlock-beta", beta_locks_second_then_first),
    ];
    for (name, body) in bodies {
        let (first, second, both_hold) = (first.clone(), second.clone(), both_hold.clone());
        // These threads never finish: the JoinHandle is dropped, leaking them on purpose.
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                name_current_thread();
                body(&first, &second, &both_hold);
            })
            .unwrap();
    }

    eventually("a deadlock report", || detector.detected_total() >= 1);
    assert_eq!(detector.detected_total(), 1, "one cycle");
    let reports = detector.reports();
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report.cycles.len(), 1);
    let cycle = &report.cycles[0];
    let mut names: Vec<_> = cycle.iter().map(|t| t.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            Some("deadlock-alpha".to_string()),
            Some("deadlock-beta".to_string())
        ]
    );
    for (thread, function) in [
        ("deadlock-alpha", "alpha_locks_first_then_second"),
        ("deadlock-beta", "beta_locks_second_then_first"),
    ] {
        let stuck = cycle
            .iter()
            .find(|t| t.name.as_deref() == Some(thread))
            .unwrap();
        assert_ne!(stuck.thread_id, 0);
        let functions: Vec<_> = stuck
            .frames
            .iter()
            .filter_map(|f| f.function.as_deref())
            .collect();
        assert!(
            functions.iter().any(|f| f.ends_with(function)),
            "{thread} stack lacks {function}: {functions:#?}"
        );
        assert!(
            !functions[0].starts_with("backtrace::"),
            "detector machinery not trimmed: {functions:#?}"
        );
    }

    let text = report.to_text();
    eprintln!("{text}");
    for needle in [
        "deadlock-alpha",
        "deadlock-beta",
        "alpha_locks_first_then_second",
        "beta_locks_second_then_first",
        "src/probes/deadlock/tests.rs",
    ] {
        assert!(text.contains(needle), "text lacks {needle}:\n{text}");
    }
    let json = serde_json::to_value(report).unwrap();
    let at = json["detected_at"].as_str().unwrap();
    assert!(
        at.len() == 24 && at.ends_with('Z'),
        "detected_at not RFC 3339: {at}"
    );
    assert!(json["cycles"][0][0]["frames"][0]["function"].is_string());

    // Keeps running: more checks happen, the cycle is not counted again, a manual check works.
    let checks = detector.checks_total();
    eventually("further background checks", || {
        detector.checks_total() >= checks + 3
    });
    assert!(detector.is_running());
    assert_eq!(
        detector.check(),
        None,
        "a reported cycle is not reported again"
    );
    assert_eq!(detector.detected_total(), 1);
    assert_eq!(detector.reports().len(), 1);

    detector.stop();
}
