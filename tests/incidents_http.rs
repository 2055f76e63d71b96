//! `/debug/incidents` over real HTTP: a manual incident taken, listed, downloaded and
//! deleted; its files; a restart on the same directory lists it again; the bounds (count,
//! one at a time, the hourly cap); a host trigger; an unusable directory at spawn.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{
    client, error_message, figure, get, glance_table, index, spawn_with, ADMIN_SECRET,
    PROFILE_SECRET, READ_SECRET,
};
use prodbg::IncidentLimits;

/// An incident archive's files by name (under `<id>/`).
fn untar(gz: &[u8], id: &str) -> HashMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut files = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        let short = name
            .strip_prefix(&format!("{id}/"))
            .unwrap_or_else(|| panic!("{name} is not under {id}/"))
            .to_string();
        files.insert(short, bytes);
    }
    files
}

async fn post(url: &str, secret: &str) -> (u16, String) {
    let resp = client().post(url).bearer_auth(secret).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn delete(url: &str, secret: &str) -> (u16, String) {
    let resp = client()
        .delete(url)
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn listing(server: &common::Server) -> serde_json::Value {
    let (status, body) = get(&server.url("/debug/incidents"), Some(PROFILE_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits (bounded) until the listing satisfies `ok`.
async fn wait_for(
    server: &common::Server,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = listing(server).await;
        if ok(&l) {
            return l;
        }
        assert!(Instant::now() < deadline, "never: {what}; last listing {l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_manual_incident_is_listed_downloaded_survives_a_restart_and_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let inc_dir = dir.path().join("incidents");
    let server = spawn_with(|b| b.incident_dir(&inc_dir));

    let (status, body) = post(
        &server.url("/debug/incidents?seconds=1&reason=checkout%20slow"),
        PROFILE_SECRET,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = meta["id"].as_str().unwrap().to_string();
    assert_eq!(meta["kind"], "manual");
    assert_eq!(meta["reason"], "checkout slow");
    assert!(meta["size"].as_u64().unwrap() > 0, "{meta}");

    // Listed, with its files; the directory and the file are private.
    let l = listing(&server).await;
    let listed = &l["incidents"][0];
    assert_eq!(listed["id"], id.as_str(), "{l}");
    let files: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for want in [
        "manifest.json",
        "cpu-recorded.pb.gz",
        "wall-recorded.pb.gz",
        "timeline.json",
        "threads.txt",
        "pools.json",
        "memory.json",
        "metrics.txt",
    ] {
        assert!(files.contains(&want), "{want} missing from {files:?}");
    }
    let dir_mode = std::fs::metadata(&inc_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    let file = inc_dir.join(format!("{id}.tar.gz"));
    let file_mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(file_mode, 0o600);

    // Downloaded as tar.gz: meta.json first, the profiles decode.
    let resp = client()
        .get(server.url(&format!("/debug/incidents/{id}")))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    let gz = resp.bytes().await.unwrap();
    let archive = untar(&gz, &id);
    let inner: serde_json::Value = serde_json::from_slice(&archive["meta.json"]).unwrap();
    assert_eq!(inner["id"], id.as_str());
    let recorded = common::decode_pprof(&archive["cpu-recorded.pb.gz"]);
    assert!(!recorded.sample_type.is_empty());
    // The fresh CPU profile is there, or the manifest says why not (the process's one CPU
    // profiler may be busy with another test's capture).
    let manifest: serde_json::Value = serde_json::from_slice(&archive["manifest.json"]).unwrap();
    let cpu = manifest
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"] == "cpu.pb.gz")
        .unwrap_or_else(|| panic!("no cpu.pb.gz in {manifest}"));
    match archive.get("cpu.pb.gz") {
        Some(gz) => assert!(!common::decode_pprof(gz).sample_type.is_empty()),
        None => assert!(
            cpu["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{cpu}"
        ),
    }

    // On /metrics and the console.
    let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_incidents_total{trigger=\"manual\"} 1"),
        "{metrics}"
    );
    let ix = index(&server).await;
    assert_eq!(figure(&ix, "incidents", "incidents")["value"], 1, "{ix}");
    let table = glance_table(&ix, "incidents", "incidents-list");
    assert_eq!(table["rows"].as_array().unwrap().len(), 1, "{table}");

    // Read scope may not list it; a path-traversal id is refused.
    let (status, _) = get(&server.url("/debug/incidents"), Some(READ_SECRET)).await;
    assert_eq!(status, 403);
    let (status, body) = get(
        &server.url("/debug/incidents/..%2f..%2fetc%2fpasswd"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body, "bad_parameter").contains("incident id"));
    let (status, body) = get(
        &server.url("/debug/incidents/20261206T031507123Z-manual-000000"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // A restart on the same directory lists it again.
    drop(server);
    let server = spawn_with(|b| b.incident_dir(&inc_dir));
    let l = listing(&server).await;
    assert_eq!(l["incidents"][0]["id"], id.as_str(), "{l}");
    assert_eq!(l["incidents"][0]["kind"], "manual");
    assert_eq!(l["incidents"][0]["reason"], "checkout slow");

    // Deleting needs admin, and is audited.
    let url = server.url(&format!("/debug/incidents/{id}"));
    let (status, _) = delete(&url, PROFILE_SECRET).await;
    assert_eq!(status, 403);
    let (status, body) = delete(&url, ADMIN_SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert!(!file.exists());
    let (status, _) = get(&url, Some(PROFILE_SECRET)).await;
    assert_eq!(status, 404);
    let audited = server
        .audit_lines()
        .into_iter()
        .any(|r| r["method"] == "DELETE" && r["details"]["deleted"] == id.as_str());
    assert!(audited, "{:?}", server.audit_lines());
}

#[tokio::test]
async fn the_oldest_are_evicted_and_one_capture_runs_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let inc_dir = dir.path().join("incidents");
    let server = spawn_with(|b| {
        b.incident_dir(&inc_dir).incident_limits(IncidentLimits {
            max_count: 2,
            ..IncidentLimits::default()
        })
    });
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, body) = post(&server.url("/debug/incidents?seconds=1"), ADMIN_SECRET).await;
        assert_eq!(status, 201, "{body}");
        let m: serde_json::Value = serde_json::from_str(&body).unwrap();
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let l = listing(&server).await;
    let listed: Vec<&str> = l["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str()], "{l}");
    assert!(!inc_dir.join(format!("{}.tar.gz", ids[0])).exists());

    // While one capture runs (5 s of fresh profiles), another is a 409.
    let url = server.url("/debug/incidents?seconds=5");
    let first = tokio::spawn(async move { post(&url, ADMIN_SECRET).await });
    wait_for(&server, "a capture running", |l| l["capturing"] == true).await;
    let (status, body) = post(&server.url("/debug/incidents?seconds=1"), ADMIN_SECRET).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(&body, "conflict").contains("one at a time"));
    let (status, body) = first.await.unwrap();
    assert_eq!(status, 201, "{body}");
    let l = listing(&server).await;
    assert_eq!(l["skipped_busy"], 1, "{l}");
}

#[tokio::test]
async fn a_host_trigger_writes_trigger_json_and_the_hourly_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let inc_dir = dir.path().join("incidents");
    let server = spawn_with(|b| {
        b.incident_dir(&inc_dir).incident_limits(IncidentLimits {
            max_per_hour: 1,
            profile_seconds: 1,
            ..IncidentLimits::default()
        })
    });
    let detail = serde_json::json!({ "threshold": 0.9, "value": 0.97, "for_s": 30 });
    assert!(server
        .handle
        .trigger_incident("cpu_high", "process CPU above 90 % for 30 s", detail));
    let l = wait_for(&server, "the trigger's incident", |l| {
        l["incidents"].as_array().is_some_and(|a| !a.is_empty()) && l["capturing"] == false
    })
    .await;
    let m = &l["incidents"][0];
    assert_eq!(m["kind"], "trigger", "{l}");
    let id = m["id"].as_str().unwrap();
    let (status, _) = get(
        &server.url(&format!("/debug/incidents/{id}")),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(status, 200);
    let gz = std::fs::read(inc_dir.join(format!("{id}.tar.gz"))).unwrap();
    let files = untar(&gz, id);
    let trigger: serde_json::Value = serde_json::from_slice(&files["trigger.json"]).unwrap();
    assert_eq!(trigger["detail"]["rule"], "cpu_high", "{trigger}");
    assert_eq!(trigger["detail"]["value"], 0.97, "{trigger}");
    assert!(files.contains_key("cpu-recorded.pb.gz"));

    // The cap: a second automatic capture within the hour is skipped, and counted.
    assert!(!server
        .handle
        .trigger_incident("cpu_high", "again", serde_json::json!({})));
    let l = listing(&server).await;
    assert_eq!(l["skipped_hourly_cap"], 1, "{l}");
    assert_eq!(l["incidents"].as_array().unwrap().len(), 1);
    let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_incidents_total{trigger=\"cpu_high\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("prodbg_incidents_skipped_total{reason=\"hourly_cap\"} 1"),
        "{metrics}"
    );
    // An audit record names the automatic capture.
    let audited = server
        .audit_lines()
        .into_iter()
        .any(|r| r["method"] == "CAPTURE" && r["details"]["incident"] == id);
    assert!(audited, "{:?}", server.audit_lines());
}

#[tokio::test]
async fn without_a_directory_the_routes_say_how_to_set_one() {
    let server = spawn_with(|b| b);
    let (status, body) = get(&server.url("/debug/incidents"), Some(PROFILE_SECRET)).await;
    assert_eq!(status, 503, "{body}");
    assert!(error_message(&body, "unavailable").contains("PRODBG_INCIDENT_DIR"));
    assert!(!server
        .handle
        .trigger_incident("x", "y", serde_json::json!({})));
}

#[test]
fn an_unusable_directory_is_an_error_at_spawn() {
    let e = common::builder()
        .incident_dir("/proc/self/prodbg-incidents")
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(e.contains("/proc/self/prodbg-incidents"), "{e}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let e = common::builder()
        .incident_dir(file.path())
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(e.contains("incident directory"), "{e}");
}
