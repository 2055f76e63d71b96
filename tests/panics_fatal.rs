//! A panic that ends the process writes an incident first: a child process (this binary, run
//! again with an environment variable) panics on its main thread in a named function with an
//! incident directory set; it still exits as a panicking `main` does (101); then a server
//! started on the same directory lists a `panic` incident whose `trigger.json` names the
//! function. Its own `main` (`harness = false`): only a process's main thread ends it by
//! panicking, and libtest runs every test on a thread of its own.

mod common;

use std::process::Command;

use common::{client, get, spawn_with, PROFILE_SECRET};

const CHILD_DIR: &str = "PRODBG_TEST_FATAL_PANIC_DIR";

/// The named function the child's main thread panics in.
#[inline(never)]
fn planted_fatal_panic(balance: i64) {
    if std::hint::black_box(balance) != 0 {
        panic!("ledger out of balance by {balance}");
    }
}

fn child(dir: &str) {
    let _server = common::builder().incident_dir(dir).spawn().unwrap();
    planted_fatal_panic(42);
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_DIR, dir.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{:?}\n{stderr}", out.status);
    // The host's (here: the default) hook still ran after prodbg's.
    assert!(stderr.contains("ledger out of balance by 42"), "{stderr}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = spawn_with(|b| b.incident_dir(dir.path()));
        let (status, body) = get(&server.url("/debug/incidents"), Some(PROFILE_SECRET)).await;
        assert_eq!(status, 200, "{body}");
        let l: serde_json::Value = serde_json::from_str(&body).unwrap();
        let incidents = l["incidents"].as_array().unwrap();
        assert_eq!(incidents.len(), 1, "{l}");
        let m = &incidents[0];
        assert_eq!(m["kind"], "panic", "{m}");
        let reason = m["reason"].as_str().unwrap();
        assert!(reason.contains("tests/panics_fatal.rs:"), "{reason}");
        assert!(reason.contains("ledger out of balance by 42"), "{reason}");
        let files: Vec<&str> = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        for want in [
            "trigger.json",
            "cpu-recorded.pb.gz",
            "timeline.json",
            "threads.txt",
        ] {
            assert!(files.contains(&want), "{want} missing: {files:?}");
        }
        assert!(
            !files.contains(&"cpu.pb.gz"),
            "no fresh profile for a dying process: {files:?}"
        );
        let id = m["id"].as_str().unwrap();
        let gz = client()
            .get(server.url(&format!("/debug/incidents/{id}")))
            .bearer_auth(PROFILE_SECRET)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut trigger = serde_json::Value::Null;
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().ends_with("trigger.json") {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
                trigger = serde_json::from_slice(&bytes).unwrap();
            }
        }
        let stack = trigger["detail"]["stack"].as_array().unwrap();
        assert!(
            stack[0].as_str().unwrap().contains("planted_fatal_panic"),
            "{trigger}"
        );
        assert_eq!(trigger["detail"]["thread"], "main", "{trigger}");
    });
    println!("panics_fatal: a panic that ends the process wrote its incident: ok");
}
