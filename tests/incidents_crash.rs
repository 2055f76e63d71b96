//! Crash reports across a restart: a child process (this test binary, run again with an
//! environment variable) aborts or faults in a named function with an incident directory set;
//! it still dies of its signal (the previous disposition is put back and the signal raised
//! again); then a server started on the same directory lists a `crash` incident whose report
//! names the function.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use common::{client, get, spawn_with, PROFILE_SECRET};

/// Set in the child: the incident directory, and how to crash.
const CHILD_DIR: &str = "PRODBG_TEST_CRASH_DIR";
const CHILD_HOW: &str = "PRODBG_TEST_CRASH_HOW";

/// The named function the child aborts in.
#[inline(never)]
fn planted_abort_site() {
    std::process::abort();
}

/// The named function the child faults in (a write to an unmapped address).
#[inline(never)]
fn planted_segv_site() {
    // SAFETY: none — this write is meant to fault with SIGSEGV.
    unsafe { std::ptr::write_volatile(std::hint::black_box(8usize) as *mut u64, 1) };
}

/// The child's body: does nothing unless run by the tests below with the variables set.
#[test]
fn child_crashes_when_asked() {
    let (Ok(dir), Ok(how)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_HOW)) else {
        return;
    };
    let _server = common::builder().incident_dir(&dir).spawn().unwrap();
    match how.as_str() {
        "abort" => planted_abort_site(),
        "segv" => planted_segv_site(),
        other => panic!("unknown crash {other}"),
    }
    unreachable!("the crash did not end the child");
}

/// Runs the child and returns the signal it died of.
fn crash_child(dir: &Path, how: &str) -> i32 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_crashes_when_asked", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env(CHILD_HOW, how)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    out.status.signal().unwrap_or_else(|| {
        panic!(
            "the child was not killed by a signal: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

async fn crash_incident_names(dir: &Path, signal: &str, function: &str) {
    let server = spawn_with(|b| b.incident_dir(dir));
    let (status, body) = get(&server.url("/debug/incidents"), Some(PROFILE_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    let l: serde_json::Value = serde_json::from_str(&body).unwrap();
    let crashes: Vec<&serde_json::Value> = l["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "crash")
        .collect();
    assert_eq!(crashes.len(), 1, "{l}");
    let m = crashes[0];
    let reason = m["reason"].as_str().unwrap();
    assert!(reason.starts_with(signal), "{reason}");
    assert!(reason.contains(function), "{reason}");
    let id = m["id"].as_str().unwrap();
    let resp = client()
        .get(server.url(&format!("/debug/incidents/{id}")))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let gz = resp.bytes().await.unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    let mut report = String::new();
    let mut json = serde_json::Value::Null;
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        if name.ends_with("/crash.txt") {
            report = String::from_utf8(bytes).unwrap();
        } else if name.ends_with("/crash.json") {
            json = serde_json::from_slice(&bytes).unwrap();
        }
    }
    assert!(report.contains(function), "{report}");
    assert!(
        report.contains("crash_incident_names") || report.contains("child_crashes_when_asked"),
        "the stack goes on past the crashing function: {report}"
    );
    assert_eq!(json["signal_name"], signal, "{json}");
    let (_, metrics) = get(&server.url("/metrics"), Some(common::READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_incidents_total{trigger=\"crash\"} 1"),
        "{metrics}"
    );
    let audited = server
        .audit_lines()
        .into_iter()
        .any(|r| r["method"] == "CAPTURE" && r["details"]["kind"] == "crash");
    assert!(audited, "{:?}", server.audit_lines());
    assert!(
        json["build_id"].as_str().is_some_and(|b| b.len() >= 16),
        "{json}"
    );
    // The report file is consumed: a second start lists the same one incident, not two.
    drop(server);
    let server = spawn_with(|b| b.incident_dir(dir));
    let (_, body) = get(&server.url("/debug/incidents"), Some(PROFILE_SECRET)).await;
    let l: serde_json::Value = serde_json::from_str(&body).unwrap();
    let n = l["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "crash")
        .count();
    assert_eq!(n, 1, "{l}");
}

#[tokio::test]
async fn an_abort_in_a_named_function_is_a_crash_incident_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(crash_child(dir.path(), "abort"), libc::SIGABRT);
    crash_incident_names(dir.path(), "SIGABRT", "planted_abort_site").await;
}

#[tokio::test]
async fn a_segfault_in_a_named_function_is_a_crash_incident_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(crash_child(dir.path(), "segv"), libc::SIGSEGV);
    crash_incident_names(dir.path(), "SIGSEGV", "planted_segv_site").await;
}
