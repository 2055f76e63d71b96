//! The trigger rules on a healthy service, and how fast a crossing reaches the disk.
//!
//! 1. **Quiet load.** A service with the default rules (and their 60 s warm-up) runs a steady
//!    mixed load for `MINUTES` (default 10): four Tokio tasks taking a pooled sqlx connection,
//!    computing ~2 ms, logging a WARN every 50 requests and an ERROR every 500. Goal: no
//!    trigger incident. Printed: each rule's peak over the run (from `/debug/timeline`)
//!    against its threshold.
//! 2. **Crossing to disk.** `ROUNDS` (default 5) fresh servers with only `pool_saturated`
//!    (held 1 s, no warm-up, 1 s fresh profiles): the pool is saturated at t0; printed are the
//!    time from t0 to the archive on disk, and from the capture's start the time each part
//!    took (the incident's `manifest.json`), the recorder's parts — `cpu-recorded.pb.gz`,
//!    `wall-recorded.pb.gz`, `timeline.json` — against the goal of 2 s.
//!
//! ```text
//! cargo bench --bench incident_triggers --features pools-sqlx            # 10 minutes + rounds
//! MINUTES=1 ROUNDS=3 cargo bench --bench incident_triggers --features pools-sqlx
//! ```

pub mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::admin::SECRET;
use common::env::env_u64;
use common::http::Http;
use common::stats::min_median_max;
use common::work::compute_step;
use prodbg::pools::PoolRegistry;
use prodbg::{Admin, IncidentLimits, Scope, Triggers};
use tracing::Instrument as _;
use tracing_subscriber::prelude::*;

fn main() {
    let minutes = env_u64("MINUTES", 10);
    let rounds = env_u64("ROUNDS", 5);
    let (spans, spans_handle) = prodbg::spans::layer(prodbg::spans::Options::default());
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
        .with(spans)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    quiet(&rt, minutes, spans_handle);
    crossing(&rt, rounds);
}

fn quiet(rt: &tokio::runtime::Runtime, minutes: u64, spans: prodbg::spans::SpansHandle) {
    let dir = tempfile::tempdir().unwrap();
    let pool = rt.block_on(async {
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(8)
            .connect("sqlite::memory:")
            .await
            .unwrap()
    });
    let registry = PoolRegistry::new();
    let _listed = registry.register("orders-db", prodbg::pools::sqlx(&pool));
    let acquires = registry.acquires("orders-db");
    let admin = Admin::builder()
        .bind("127.0.0.1:0")
        .service_name("incident-bench")
        .token("ops", Scope::Admin, SECRET)
        .incident_dir(dir.path().join("incidents"))
        .tokio_runtime("app", rt.handle().clone())
        .pool_registry(registry.clone())
        .spans(spans)
        .spawn()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (pool, acquires, stop) = (pool.clone(), acquires.clone(), stop.clone());
            rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let span = tracing::info_span!("request", route = "/orders/{id}");
                    let (pool, acquires) = (&pool, &acquires);
                    async move {
                        let mut conn = acquires.acquire(pool).await.unwrap();
                        let _ = sqlx::query("select 1").execute(&mut **conn).await;
                        std::hint::black_box(compute_step(200_000));
                        drop(conn);
                        if n.is_multiple_of(50) {
                            tracing::warn!(order = n, "slow order");
                        }
                        if n.is_multiple_of(500) {
                            tracing::error!(order = n, "order failed: card declined");
                        }
                    }
                    .instrument(span)
                    .await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let http = Http::new(&admin);
    println!("incident_triggers: {minutes} min of steady mixed load, default rules");
    std::thread::sleep(Duration::from_secs(minutes * 60));
    let incidents = http.get_json("/debug/incidents");
    let timeline = http.get_json(&format!("/debug/timeline?since={}m", minutes.min(60)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        for l in load {
            let _ = l.await;
        }
    });
    let triggered = incidents["incidents"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|i| i["kind"] == "trigger").count());
    let series = |name: &str| -> Vec<f64> {
        timeline["series"]
            .as_array()
            .and_then(|s| s.iter().find(|x| x["name"] == name))
            .and_then(|x| x["points"].as_array())
            .map(|p| p.iter().filter_map(|v| v[1].as_f64()).collect())
            .unwrap_or_default()
    };
    let peak = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let rss = series("rss_bytes");
    let low = rss.iter().copied().fold(f64::INFINITY, f64::min);
    let errors = series("errors");
    let mean_errors = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    println!(
        "{:<16} {:<28} {:>14} {:>24}",
        "rule", "series", "peak", "fires at"
    );
    let rows: Vec<(&str, &str, f64, String)> = vec![
        (
            "cpu",
            "cpu (cores)",
            peak(&series("cpu")),
            format!("{:.2} for 30 s", 0.9 * cores),
        ),
        (
            "memory_growth",
            "rss_bytes (MiB)",
            peak(&rss) / 1048576.0,
            format!(
                "{:.1} (1.5 × low, ≥ 256) for 10 s",
                (low * 1.5 / 1048576.0).max(256.0)
            ),
        ),
        (
            "tokio_busy",
            "tokio.app.busy_ratio",
            peak(&series("tokio.app.busy_ratio")),
            "0.95 for 30 s".into(),
        ),
        (
            "tokio_queue",
            "tokio.app.global_queue",
            peak(&series("tokio.app.global_queue")),
            "1000 for 10 s".into(),
        ),
        (
            "pool_saturated",
            "pool.orders-db.saturated",
            peak(&series("pool.orders-db.saturated")),
            "1 for 10 s".into(),
        ),
        (
            "error_rate",
            "errors (/s)",
            peak(&errors),
            format!(
                "{:.2} (10 × mean, ≥ 1) for 10 s",
                (mean_errors * 10.0).max(1.0)
            ),
        ),
        (
            "new_error",
            "error_callsites",
            peak(&series("error_callsites")),
            "any rise after warm-up".into(),
        ),
    ];
    for (rule, s, p, at) in rows {
        println!("{rule:<16} {s:<28} {p:>14.3} {at:>24}");
    }
    println!(
        "trigger incidents during the run: {triggered} (goal 0): {}",
        if triggered == 0 { "met" } else { "MISSED" }
    );
    admin.shutdown();
}

fn crossing(rt: &tokio::runtime::Runtime, rounds: u64) {
    let mut total = Vec::new();
    let mut recorder = Vec::new();
    let mut all = Vec::new();
    for _ in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let inc = dir.path().join("incidents");
        let pool = rt.block_on(async {
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(60))
                .connect("sqlite::memory:")
                .await
                .unwrap()
        });
        let registry = PoolRegistry::new();
        let _listed = registry.register("db", prodbg::pools::sqlx(&pool));
        let acquires = registry.acquires("db");
        let admin = Admin::builder()
            .bind("127.0.0.1:0")
            .token("ops", Scope::Admin, SECRET)
            .incident_dir(&inc)
            .incident_limits(IncidentLimits {
                profile_seconds: 1,
                ..IncidentLimits::default()
            })
            .incident_triggers(
                Triggers::only(&["pool_saturated"])
                    .warm_up(Duration::ZERO)
                    .set("pool_saturated", None, Some(Duration::from_secs(1))),
            )
            .pool_registry(registry.clone())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let t0 = Instant::now();
        let held = rt.block_on(async {
            let a = acquires.acquire(&pool).await.unwrap();
            let b = acquires.acquire(&pool).await.unwrap();
            (a, b)
        });
        let waiter = {
            let (acquires, pool) = (acquires.clone(), pool.clone());
            rt.spawn(async move { acquires.acquire(&pool).await.map(drop) })
        };
        let archive = wait_for_archive(&inc, Duration::from_secs(60));
        total.push(t0.elapsed().as_secs_f64());
        let manifest = manifest_of(&archive);
        let took = |f: &str| {
            manifest
                .iter()
                .find(|p| p["file"] == f)
                .and_then(|p| p["duration_ms"].as_f64())
                .unwrap_or(f64::NAN)
        };
        let rec = ["cpu-recorded.pb.gz", "wall-recorded.pb.gz", "timeline.json"]
            .map(took)
            .into_iter()
            .fold(0.0, f64::max);
        recorder.push(rec / 1e3);
        let slowest = manifest
            .iter()
            .filter_map(|p| p["duration_ms"].as_f64())
            .fold(0.0, f64::max);
        all.push(slowest / 1e3);
        rt.block_on(async move {
            drop(held);
            let _ = waiter.await;
        });
        admin.shutdown();
    }
    let show = |v: Vec<f64>| {
        let (lo, med, hi) = min_median_max(v);
        format!("{med:.3} s ({lo:.3}–{hi:.3})")
    };
    let (_, rec_med, _) = min_median_max(recorder.clone());
    println!("crossing → disk, {rounds} rounds (pool saturated at t0, the rule holds 1 s, ticks each 1 s):");
    println!("  t0 → archive on disk:                 {}", show(total));
    println!("  slowest part (fresh 1 s profiles):    {}", show(all));
    println!(
        "  recorder's parts (history, timeline): {} — goal ≤ 2 s: {}",
        show(recorder),
        if rec_med <= 2.0 { "met" } else { "MISSED" }
    );
}

fn wait_for_archive(dir: &Path, patience: Duration) -> Vec<u8> {
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tar.gz") && !name.starts_with(".tmp") {
                    return std::fs::read(e.path()).unwrap();
                }
            }
        }
        assert!(
            start.elapsed() < patience,
            "no incident in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn manifest_of(gz: &[u8]) -> Vec<serde_json::Value> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name.ends_with("/manifest.json") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            return serde_json::from_slice::<Vec<serde_json::Value>>(&bytes).unwrap();
        }
    }
    panic!("no manifest.json in the incident");
}
