//! The automatic trigger rules over real HTTP: a host made to cross a rule gets an incident of
//! kind `trigger` on disk whose evidence names the planted function, once per cooldown.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use prodbg::{IncidentLimits, Triggers};

/// One test at a time: each capture symbolizes the process's shared flight recorder, and
/// captures of several tests at once in one debug-built process (as `cargo test` runs them)
/// overran the capture's time bound.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn listing(server: &Server) -> serde_json::Value {
    let (status, body) = get(&server.url("/debug/incidents"), Some(PROFILE_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The part `file` of an incident; a missing one fails with the manifest, which says why.
fn part<'a>(files: &'a HashMap<String, Vec<u8>>, file: &str) -> &'a [u8] {
    files.get(file).unwrap_or_else(|| {
        panic!(
            "the incident has no {file}; manifest.json: {}",
            files
                .get("manifest.json")
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default()
        )
    })
}

/// Whether the profile `file` of an incident names `function`.
fn names(files: &HashMap<String, Vec<u8>>, file: &str, function: &str) -> bool {
    decode_pprof(part(files, file))
        .string_table
        .iter()
        .any(|s| s.contains(function))
}

/// Waits (bounded: a hang guard, not a timing assertion) for the first `trigger` incident on
/// disk, and returns its listing entry and its files.
async fn first_incident(server: &Server) -> (serde_json::Value, HashMap<String, Vec<u8>>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let entry = loop {
        let l = listing(server).await;
        let found = l["incidents"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["kind"] == "trigger"))
            .cloned();
        if let (Some(e), false) = (found, l["capturing"] == true) {
            break e;
        }
        assert!(Instant::now() < deadline, "no trigger incident: {l}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = entry["id"].as_str().unwrap();
    let gz = client()
        .get(server.url(&format!("/debug/incidents/{id}")))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    (entry, untar_incident(&gz))
}

/// Only `rule`, at once after spawn, once an hour.
fn only(rule: &str) -> Triggers {
    Triggers::only(&[rule])
        .warm_up(Duration::ZERO)
        .cooldown(Duration::from_secs(3600))
}

/// A host with `triggers` (and what `more` adds), its incidents in a temporary directory that
/// lives as long as the returned guard.
fn host(
    triggers: Triggers,
    more: impl FnOnce(prodbg::AdminBuilder) -> prodbg::AdminBuilder,
) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let inc = dir.path().join("incidents");
    let server = spawn_with(move |b| {
        more(
            b.incident_dir(&inc)
                .incident_limits(limits())
                .incident_triggers(triggers),
        )
    });
    (dir, server)
}

/// An incident's `trigger.json`.
fn trigger_json(files: &HashMap<String, Vec<u8>>) -> serde_json::Value {
    serde_json::from_slice(&files["trigger.json"]).unwrap()
}

fn limits() -> IncidentLimits {
    IncidentLimits {
        profile_seconds: 1,
        ..IncidentLimits::default()
    }
}

/// Burns CPU on two threads until `stop`.
#[inline(never)]
fn planted_cpu_burner(stop: &AtomicBool) -> u64 {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_rule_fires_and_its_incident_names_the_hot_function() {
    let _turn = TURN.lock().await;
    let triggers = only("cpu").set("cpu", Some(0.3), Some(Duration::from_secs(2)));
    let (_dir, server) = host(triggers, |b| b);
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || planted_cpu_burner(&stop))
        })
        .collect();
    let (entry, files) = first_incident(&server).await;
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    assert!(entry["reason"].as_str().unwrap().contains("cpu"), "{entry}");
    let trigger = trigger_json(&files);
    assert_eq!(trigger["detail"]["rule"], "cpu", "{trigger}");
    assert!(
        trigger["detail"]["value"].as_f64().unwrap()
            >= trigger["detail"]["threshold"].as_f64().unwrap()
    );
    let folded = |file: &str| {
        let p = decode_pprof(part(&files, file));
        p.string_table.join("\n")
    };
    assert!(
        folded("cpu-recorded.pb.gz").contains("planted_cpu_burner"),
        "the flight recorder's minutes before the trigger name the burner"
    );
    // One per cooldown: the rule stays crossed no longer, and no second incident came.
    let l = listing(&server).await;
    let triggers = l["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "trigger")
        .count();
    assert_eq!(triggers, 1, "{l}");
}

#[cfg(feature = "pools-sqlx")]
mod pool {
    use super::*;
    use prodbg::pools::{AcquireRecorder, Held, PoolRegistry};
    use sqlx::pool::PoolConnection;
    use sqlx::Sqlite;

    /// Takes every connection and keeps them.
    #[inline(never)]
    async fn planted_pool_hog(
        acquires: &AcquireRecorder,
        pool: &sqlx::SqlitePool,
    ) -> Vec<Held<PoolConnection<Sqlite>>> {
        let mut kept = Vec::new();
        for _ in 0..2 {
            kept.push(acquires.acquire(pool).await.unwrap());
        }
        kept
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_saturated_pool_fires_and_its_incident_names_the_holder() {
        let _turn = TURN.lock().await;
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(60))
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let registry = PoolRegistry::new();
        let _listed = registry.register("orders-db", prodbg::pools::sqlx(&pool));
        let acquires = registry.acquires("orders-db");
        let triggers =
            only("pool_saturated").set("pool_saturated", None, Some(Duration::from_secs(2)));
        let reg = registry.clone();
        let (_dir, server) = host(triggers, |b| b.pool_registry(reg));
        let kept = planted_pool_hog(&acquires, &pool).await;
        // A caller waits: the pool is saturated.
        let waiter = {
            let (acquires, pool) = (acquires.clone(), pool.clone());
            tokio::spawn(async move { acquires.acquire(&pool).await.map(drop) })
        };
        let (entry, files) = first_incident(&server).await;
        assert!(
            entry["reason"]
                .as_str()
                .unwrap()
                .contains("pool.orders-db.saturated"),
            "{entry}"
        );
        let pools: serde_json::Value = serde_json::from_slice(&files["pools.json"]).unwrap();
        let text = pools.to_string();
        assert!(
            text.contains("planted_pool_hog"),
            "the incident names the holder: {text}"
        );
        drop(kept);
        waiter.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_rules_are_refused_at_spawn() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let err = builder()
        .incident_dir(dir.path().join("i"))
        .incident_triggers(Triggers::default().without("cpus"))
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown incident trigger \"cpus\""), "{err}");
}

#[inline(never)]
fn planted_error_source(order: u32) {
    tracing::error!(order, "planted_error_source could not charge the card");
}

#[inline(never)]
fn another_error_source() {
    tracing::error!("another_error_source failed too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_error_callsite_fires_once_per_cooldown() {
    let _turn = TURN.lock().await;
    let spans = spans_handle();
    let (_dir, server) = host(only("new_error"), |b| b.spans(spans));
    // Let the rules see the table without the new callsite first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    planted_error_source(7);
    let (entry, files) = first_incident(&server).await;
    assert!(
        entry["reason"].as_str().unwrap().contains("first ERROR"),
        "{entry}"
    );
    let trigger = trigger_json(&files);
    assert_eq!(trigger["detail"]["rule"], "new_error", "{trigger}");
    let errors = String::from_utf8_lossy(&files["errors.json"]).into_owned();
    assert!(
        errors.contains("planted_error_source could not charge the card"),
        "{errors}"
    );
    // A second new callsite within the cooldown takes no second incident.
    another_error_source();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let l = listing(&server).await;
    let n = l["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "trigger")
        .count();
    assert_eq!(n, 1, "one per cooldown: {l}");
}

/// Keeps `mib` MiB of touched memory while `hold` lasts, sleeping inside this function.
#[inline(never)]
fn planted_memory_hog(mib: usize, hold: Duration) -> usize {
    let mut v = vec![0u8; mib << 20];
    for page in v.chunks_mut(4096) {
        page[0] = 1;
    }
    std::thread::sleep(hold);
    std::hint::black_box(&v).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_fires_and_its_incident_names_the_holder() {
    let _turn = TURN.lock().await;
    let triggers =
        only("memory_growth").set("memory_growth", Some(0.5), Some(Duration::from_secs(1)));
    let (_dir, server) = host(triggers, |b| b);
    // The rule's window needs the low first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let hog = std::thread::Builder::new()
        .name("memory-hog".into())
        .spawn(|| planted_memory_hog(600, Duration::from_secs(8)))
        .unwrap();
    let (entry, files) = first_incident(&server).await;
    assert!(
        entry["reason"].as_str().unwrap().contains("rss_bytes"),
        "{entry}"
    );
    let trigger = trigger_json(&files);
    assert_eq!(trigger["detail"]["rule"], "memory_growth", "{trigger}");
    assert!(trigger["detail"]["value"].as_f64().unwrap() >= 256.0 * 1024.0 * 1024.0);
    assert!(
        names(&files, "wall-recorded.pb.gz", "planted_memory_hog"),
        "the wall-clock history shows the thread holding the memory"
    );
    hog.join().unwrap();
}

/// Blocks a Tokio worker (the bug: a blocking call inside async code).
#[inline(never)]
fn planted_blocking_call(hold: Duration) {
    std::thread::sleep(hold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_tokio_queue_fires_and_its_incident_names_the_blocking_call() {
    let _turn = TURN.lock().await;
    let app = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = app.handle().clone();
    let triggers = only("tokio_queue").set("tokio_queue", Some(50.0), Some(Duration::from_secs(2)));
    let h = handle.clone();
    let (_dir, server) = host(triggers, |b| b.tokio_runtime("app", h));
    // Both workers stuck in a blocking call; tasks spawned from outside wait in the global queue.
    for _ in 0..2 {
        handle.spawn(async { planted_blocking_call(Duration::from_secs(8)) });
    }
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..200 {
        handle.spawn(async {});
    }
    let (entry, files) = first_incident(&server).await;
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("tokio.app.global_queue"),
        "{entry}"
    );
    assert!(
        names(&files, "wall-recorded.pb.gz", "planted_blocking_call"),
        "the wall-clock history shows the workers in the blocking call"
    );
    app.shutdown_background();
}

#[inline(never)]
fn planted_error_storm(n: u32) {
    for i in 0..n {
        tracing::error!(attempt = i, "planted_error_storm: upstream refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_rate_spike_fires_against_its_own_average() {
    let _turn = TURN.lock().await;
    let spans = spans_handle();
    let triggers = only("error_rate").set("error_rate", Some(10.0), Some(Duration::from_secs(2)));
    let (_dir, server) = host(triggers, |b| b.spans(spans));
    // A quiet baseline (no error at all), then a storm of 200 a second.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let storm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                planted_error_storm(20);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let (entry, files) = first_incident(&server).await;
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    let trigger = trigger_json(&files);
    assert_eq!(trigger["detail"]["rule"], "error_rate", "{trigger}");
    assert!(
        trigger["detail"]["value"].as_f64().unwrap() >= 1.0,
        "{entry}"
    );
    let errors = String::from_utf8_lossy(&files["errors.json"]).into_owned();
    assert!(
        errors.contains("planted_error_storm: upstream refused"),
        "{errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_near_the_memory_limit_fires_and_its_incident_names_the_holder() {
    let _turn = TURN.lock().await;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
        * 4096;
    // A budget 300 MiB above what the process holds now; the hog takes 600 MiB.
    let triggers = only("memory_limit").memory_limit(rss + (300 << 20)).set(
        "memory_limit",
        Some(0.9),
        Some(Duration::from_secs(1)),
    );
    let (_dir, server) = host(triggers, |b| b);
    let hog = std::thread::Builder::new()
        .name("memory-hog".into())
        .spawn(|| planted_memory_hog(600, Duration::from_secs(8)))
        .unwrap();
    let (entry, files) = first_incident(&server).await;
    assert!(
        entry["reason"].as_str().unwrap().contains("memory limit"),
        "{entry}"
    );
    let trigger = trigger_json(&files);
    assert_eq!(trigger["detail"]["rule"], "memory_limit", "{trigger}");
    assert!(
        names(&files, "wall-recorded.pb.gz", "planted_memory_hog"),
        "the wall-clock history shows the thread holding the memory"
    );
    hog.join().unwrap();
}

/// Keeps a Tokio worker busy: work between yields, never a rest.
#[inline(never)]
async fn planted_busy_loop(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut x = 1u64;
        for _ in 0..50_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_tokio_runtime_fires_and_its_incident_names_the_busy_task() {
    let _turn = TURN.lock().await;
    let app = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = app.handle().clone();
    let triggers = only("tokio_busy").set("tokio_busy", Some(0.8), Some(Duration::from_secs(2)));
    let h = handle.clone();
    let (_dir, server) = host(triggers, |b| b.tokio_runtime("busy", h));
    let stop = Arc::new(AtomicBool::new(false));
    handle.spawn(planted_busy_loop(stop.clone()));
    let (entry, files) = first_incident(&server).await;
    stop.store(true, Ordering::Relaxed);
    assert!(
        entry["reason"]
            .as_str()
            .unwrap()
            .contains("tokio.busy.busy_ratio"),
        "{entry}"
    );
    assert!(
        names(&files, "cpu-recorded.pb.gz", "planted_busy_loop"),
        "the CPU history names the task that keeps the worker busy"
    );
    app.shutdown_background();
}
