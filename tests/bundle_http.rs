//! `GET /debug/bundle` over real HTTP: every part is in the archive, and a failing part is
//! listed in the manifest without failing the bundle.
#![cfg(all(feature = "cpu", feature = "heap", feature = "threads"))]

mod common;

use std::collections::HashMap;

use common::*;

#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static _rjem_malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:16\0";

async fn fetch_bundle(server: &Server, q: &str) -> (HashMap<String, Vec<u8>>, serde_json::Value) {
    let r = client()
        .get(server.url(&format!("/debug/bundle{q}")))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"test-service-bundle-20")
            && disposition.ends_with("Z.tar.gz\"")
            && !disposition.contains(':'),
        "{disposition}"
    );
    let files = untar(&r.bytes().await.unwrap());
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    (files, manifest)
}

fn part<'a>(manifest: &'a serde_json::Value, file: &str) -> &'a serde_json::Value {
    manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in {manifest}"))
}

#[tokio::test]
async fn bundle_holds_every_part_and_survives_a_failing_one() {
    let server = spawn();
    assert_eq!(
        get(&server.url("/debug/bundle?seconds=0"), Some(PROFILE_SECRET))
            .await
            .0,
        400
    );
    assert_eq!(
        get(&server.url("/debug/bundle"), Some(READ_SECRET)).await.0,
        403
    );

    let (files, manifest) = fetch_bundle(&server, "?seconds=1").await;
    assert_eq!(manifest["cpu_profile_seconds"], 1);
    for file in [
        "cpu.pb.gz",
        "cpu.svg",
        "cpu-recorded.pb.gz",
        "wall.pb.gz",
        "wall-recorded.pb.gz",
        "wall.svg",
        "heap.pb.gz",
        "memory.json",
        "threads.txt",
        "pools.json",
        "metrics.txt",
        "timeline.json",
        "process.json",
    ] {
        assert_eq!(part(&manifest, file)["ok"], true, "{file}: {manifest}");
        assert!(!files[file].is_empty(), "{file} is empty");
    }
    assert_eq!(&files["cpu.pb.gz"][..2], &[0x1f, 0x8b]);
    assert_eq!(&files["wall.pb.gz"][..2], &[0x1f, 0x8b]);
    // The flight recorder's history since the server started, as pprof.
    let recorded = decode_pprof(&files["cpu-recorded.pb.gz"]);
    assert!(recorded.duration_nanos > 0, "{recorded:?}");
    // The short wall profile is rooted at the thread states.
    assert!(String::from_utf8_lossy(&files["wall.svg"]).contains("[futex]"));
    assert!(String::from_utf8_lossy(&files["threads.txt"]).contains("prodbg-admin"));
    assert!(
        String::from_utf8_lossy(&files["metrics.txt"]).contains("process_resident_memory_bytes")
    );
    let deadlocks = part(&manifest, "deadlocks.json");
    assert_eq!(
        deadlocks["ok"], false,
        "detection is off in this server: {manifest}"
    );
    assert!(deadlocks["error"]
        .as_str()
        .unwrap()
        .contains("deadlock_detection"));

    // A CPU profile already running: the bundle still comes back, its CPU part says why not.
    let url = server.url("/debug/pprof/profile?seconds=4");
    let running = tokio::spawn(async move { get(&url, Some(PROFILE_SECRET)).await });
    let start = std::time::Instant::now();
    while !cpu_profile_running(&server).await {
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (files, manifest) = fetch_bundle(&server, "?seconds=1").await;
    let cpu = part(&manifest, "cpu.pb.gz");
    assert_eq!(cpu["ok"], false);
    assert!(
        cpu["error"].as_str().unwrap().contains("already running"),
        "{manifest}"
    );
    assert!(!files.contains_key("cpu.pb.gz"));
    assert!(files.contains_key("memory.json") && files.contains_key("threads.txt"));
    assert_eq!(running.await.unwrap().0, 200);
}
