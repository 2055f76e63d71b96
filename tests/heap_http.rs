//! Memory and heap-profile endpoints over real HTTP, on a real jemalloc with profiling enabled.
#![cfg(all(feature = "heap", feature = "cpu"))]

mod common;

use std::hint::black_box;
use std::io::Read as _;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use pprof::protos::Message as _;

#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static _rjem_malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:14\0";

/// prof.active is process-global: tests take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[inline(never)]
fn prodbg_http_leaky_cache_q3(into: &mut Vec<Vec<u8>>, count: usize) {
    for i in 0..count {
        into.push(black_box(vec![i as u8; 64 * 1024]));
    }
}

/// A host thread that holds `initial` × 64 KiB, then adds `per_tick` × 64 KiB on every message.
fn leaky_thread(initial: usize) -> mpsc::Sender<usize> {
    let (tx, rx) = mpsc::channel::<usize>();
    std::thread::Builder::new()
        .name("leaky-q3".into())
        .spawn(move || {
            let mut held = Vec::new();
            prodbg_http_leaky_cache_q3(&mut held, initial);
            while let Ok(n) = rx.recv() {
                prodbg_http_leaky_cache_q3(&mut held, n);
            }
            drop(held);
        })
        .unwrap();
    tx
}

async fn post(url: &str, secret: &str) -> (u16, String) {
    let r = client().post(url).bearer_auth(secret).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn leaker_bytes_in_pprof(gz: &[u8]) -> (i64, i64) {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    let p = pprof::protos::Profile::decode(&raw[..]).unwrap();
    let s = |i: i64| p.string_table[i as usize].clone();
    let types: Vec<(String, String)> = p.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect();
    assert_eq!(
        types,
        vec![
            ("inuse_objects".into(), "count".into()),
            ("inuse_space".into(), "bytes".into())
        ]
    );
    let leaker_fns: Vec<u64> = p
        .function
        .iter()
        .filter(|f| s(f.name).contains("prodbg_http_leaky_cache_q3"))
        .map(|f| f.id)
        .collect();
    let leaker_locs: Vec<u64> = p
        .location
        .iter()
        .filter(|l| {
            l.line
                .iter()
                .any(|line| leaker_fns.contains(&line.function_id))
        })
        .map(|l| l.id)
        .collect();
    let (mut flat, mut total) = (0, 0);
    for sample in &p.sample {
        total += sample.value[1];
        if sample
            .location_id
            .first()
            .is_some_and(|l| leaker_locs.contains(l))
        {
            flat += sample.value[1];
        }
    }
    (flat, total)
}

#[tokio::test]
async fn memory_stats_and_sampling_switch() {
    let _turn = SERIAL.lock().await;
    let server = spawn();
    let (s, body) = get(&server.url("/debug/memory"), Some(READ_SECRET)).await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for field in [
        "allocated_bytes",
        "active_bytes",
        "resident_bytes",
        "mapped_bytes",
        "retained_bytes",
        "metadata_bytes",
    ] {
        assert!(v["jemalloc"][field].as_u64().is_some(), "{field}: {body}");
    }
    assert!(v["jemalloc"]["allocated_bytes"].as_u64().unwrap() > 0);
    assert!(v["process"]["rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["jemalloc"]["profiling"]["opt_prof"], true);

    assert_eq!(
        post(&server.url("/debug/pprof/heap/activate"), PROFILE_SECRET)
            .await
            .0,
        403
    );
    let (s, body) = post(&server.url("/debug/pprof/heap/activate"), ADMIN_SECRET).await;
    assert_eq!(s, 200, "{body}");
    let (_, body) = get(&server.url("/debug/memory"), Some(READ_SECRET)).await;
    assert!(body.contains("\"active\":true"), "{body}");
    let (_, overrides) = get(&server.url("/debug/overrides"), Some(READ_SECRET)).await;
    assert!(
        overrides.contains("heap_sampling") && overrides.contains("\"set_by\":\"ops\""),
        "{overrides}"
    );
    let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_heap_profiling_active 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("prodbg_jemalloc_allocated_bytes "),
        "{metrics}"
    );

    assert_eq!(
        post(&server.url("/debug/pprof/heap/deactivate"), ADMIN_SECRET)
            .await
            .0,
        200
    );
    let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_heap_profiling_active 0"),
        "{metrics}"
    );
    let (_, overrides) = get(&server.url("/debug/overrides"), Some(READ_SECRET)).await;
    assert!(!overrides.contains("heap_sampling"), "{overrides}");
    let audited: Vec<String> = server
        .audit_lines()
        .iter()
        .map(|l| format!("{} {} {}", l["method"], l["path"], l["status"]))
        .collect();
    assert!(
        audited
            .iter()
            .any(|l| l == "\"POST\" \"/debug/pprof/heap/activate\" 200"),
        "{audited:?}"
    );
    assert!(
        audited
            .iter()
            .any(|l| l == "\"POST\" \"/debug/pprof/heap/deactivate\" 200"),
        "{audited:?}"
    );
}

#[tokio::test]
async fn heap_and_growth_profiles_name_the_leaking_function() {
    let _turn = SERIAL.lock().await;
    let server = spawn();
    assert_eq!(
        post(&server.url("/debug/pprof/heap/activate"), ADMIN_SECRET)
            .await
            .0,
        200
    );
    let leak = leaky_thread(256); // 16 MiB
    tokio::time::sleep(Duration::from_millis(300)).await;

    for path in ["/debug/pprof/heap", "/debug/pprof/allocs"] {
        let r = client()
            .get(server.url(path))
            .bearer_auth(PROFILE_SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let disposition = r.headers()["content-disposition"].to_str().unwrap();
        assert!(
            disposition.starts_with("attachment; filename=\"test-service-heap-20")
                && disposition.ends_with("Z.pb.gz\""),
            "{path}: {disposition}"
        );
        let (flat, total) = leaker_bytes_in_pprof(&r.bytes().await.unwrap());
        assert!(
            flat >= 8 << 20,
            "leaker has {flat} of {total} bytes; expected about 16 MiB"
        );
    }
    let (s, folded) = get(
        &server.url("/debug/pprof/heap?format=folded"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(s, 200);
    let leaked: u64 = folded
        .lines()
        .filter(|l| l.contains("prodbg_http_leaky_cache_q3"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(leaked >= 8 << 20, "{leaked}\n{folded}");
    let (s, svg) = get(
        &server.url("/debug/pprof/heap?format=svg"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(s, 200);
    assert!(svg.contains("prodbg_http_leaky_cache_q3") && svg.contains("heap in use"));

    // Growth: the leaker adds 8 MiB during the 2 s window.
    let url = server.url("/debug/pprof/heap?seconds=2&format=folded");
    let growth = tokio::spawn(async move { get(&url, Some(PROFILE_SECRET)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    leak.send(128).unwrap();
    let (s, folded) = growth.await.unwrap();
    assert_eq!(s, 200, "{folded}");
    let grown: u64 = folded
        .lines()
        .filter(|l| l.contains("prodbg_http_leaky_cache_q3"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        (4 << 20..=24 << 20).contains(&grown),
        "grew {grown} bytes; expected about 8 MiB\n{folded}"
    );
    assert_eq!(
        post(&server.url("/debug/pprof/heap/deactivate"), ADMIN_SECRET)
            .await
            .0,
        200
    );
    drop(leak);
}

#[tokio::test]
async fn heap_parameters_and_inactive_growth() {
    let _turn = SERIAL.lock().await;
    let server = spawn();
    for (q, expect) in [
        ("format=png", "pprof, svg, folded"),
        ("seconds=0", "from 1 to 60"),
        ("seconds=99", "from 1 to 60"),
        ("gc=1", "allowed: format, seconds"),
    ] {
        let (s, body) = get(
            &server.url(&format!("/debug/pprof/heap?{q}")),
            Some(PROFILE_SECRET),
        )
        .await;
        assert_eq!(s, 400, "{q}");
        assert!(
            error_message(&body, "bad_parameter").contains(expect),
            "{body}"
        );
    }
    let (s, body) = get(
        &server.url("/debug/pprof/heap?seconds=1"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(s, 409, "growth needs active sampling: {body}");
    assert!(error_message(&body, "conflict").contains("/debug/pprof/heap/activate"));
    let r = client()
        .get(server.url("/debug/pprof/heap"))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["x-prodbg-warning"]
        .to_str()
        .unwrap()
        .contains("inactive"));
}

#[tokio::test]
async fn heap_dumps_leave_nothing_on_disk() {
    let _turn = SERIAL.lock().await;
    let server = spawn();
    let ours = || {
        let prefix = format!("prodbg-heap-{}-", std::process::id());
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .count()
    };
    for _ in 0..15 {
        assert_eq!(
            get(
                &server.url("/debug/pprof/heap?format=folded"),
                Some(PROFILE_SECRET)
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(ours(), 0);
}
