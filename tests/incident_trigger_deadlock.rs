//! The `deadlock` trigger over real HTTP against a real parking_lot deadlock: its incident
//! holds the report naming both functions. Alone in its binary: parking_lot reports each cycle
//! once, to whichever detector asks first.
#![cfg(feature = "deadlock")]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use prodbg::{IncidentLimits, Triggers};

#[inline(never)]
fn planted_takes_a_then_b(a: &Mutex<()>, b: &Mutex<()>, both: &Barrier) {
    let _a = a.lock();
    both.wait();
    let _b = b.lock();
}

#[inline(never)]
fn planted_takes_b_then_a(a: &Mutex<()>, b: &Mutex<()>, both: &Barrier) {
    let _b = b.lock();
    both.wait();
    let _a = a.lock();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_fires_and_its_incident_names_both_functions() {
    let dir = tempfile::tempdir().unwrap();
    let inc = dir.path().join("incidents");
    let server = spawn_with(move |b| {
        b.incident_dir(&inc)
            .incident_limits(IncidentLimits {
                profile_seconds: 1,
                ..IncidentLimits::default()
            })
            .incident_triggers(Triggers::only(&["deadlock"]).warm_up(Duration::ZERO))
            .deadlock_detection(Duration::from_millis(100))
    });
    let (a, b) = (Arc::new(Mutex::new(())), Arc::new(Mutex::new(())));
    let both = Arc::new(Barrier::new(2));
    type Body = fn(&Mutex<()>, &Mutex<()>, &Barrier);
    let bodies: [Body; 2] = [planted_takes_a_then_b, planted_takes_b_then_a];
    for f in bodies {
        let (a, b, both) = (a.clone(), b.clone(), both.clone());
        // Deadlocked for good: leaked on purpose.
        std::thread::spawn(move || f(&a, &b, &both));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let id = loop {
        let (status, body) = get(&server.url("/debug/incidents"), Some(PROFILE_SECRET)).await;
        assert_eq!(status, 200, "{body}");
        let l: serde_json::Value = serde_json::from_str(&body).unwrap();
        let found = l["incidents"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["kind"] == "trigger"))
            .and_then(|i| i["id"].as_str().map(str::to_owned));
        if let (Some(id), false) = (found, l["capturing"] == true) {
            break id;
        }
        assert!(Instant::now() < deadline, "no deadlock incident: {l}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let gz = client()
        .get(server.url(&format!("/debug/incidents/{id}")))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let files = untar_incident(&gz);
    let file = |name: &str| {
        files
            .iter()
            .find(|(k, _)| k.ends_with(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| panic!("{name} missing: {:?}", files.keys()))
    };
    assert!(file("trigger.json").contains("\"deadlock\""));
    let report = file("deadlocks.json");
    for f in ["planted_takes_a_then_b", "planted_takes_b_then_a"] {
        assert!(report.contains(f), "{f} missing from {report}");
    }
}
