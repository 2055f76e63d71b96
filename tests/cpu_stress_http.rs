//! Stress over real HTTP: a 999 Hz CPU profile while threads are created and destroyed
//! rapidly, jemalloc heap sampling is active and allocating, and thread dumps run. It must
//! finish, record samples (none lost to a crash: the process survives) and leave no
//! SIGPROF timer behind. Its own process (jemalloc as the allocator, SIGPROF is global).
#![cfg(all(feature = "heap", feature = "cpu", feature = "threads"))]

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;

#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static _rjem_malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:12\0";

#[inline(never)]
fn prodbg_stress_alloc_w5(round: u64) -> u64 {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    for i in 0..32u64 {
        let v = vec![(round + i) as u8; 64 + ((round * 131 + i * 17) % 16384) as usize];
        keep.push(black_box(v));
    }
    let big = black_box(keep.clone()); // memcpy in libc
    big.iter().map(|v| u64::from(v[0])).sum()
}

/// SIGPROF timers of this process (`/proc/self/timers`); `None` without that file.
fn sigprof_timers() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/timers").ok()?;
    let prefix = format!("signal: {}/", libc::SIGPROF);
    Some(text.lines().filter(|l| l.starts_with(&prefix)).count())
}

async fn post(url: &str, secret: &str) -> u16 {
    client()
        .post(url)
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_at_999hz_survives_thread_churn_heap_sampling_and_dumps() {
    // The on-demand sampler alone: no flight recorder holding timers of its own.
    let server = spawn_with(|b| b.flight_recorder(prodbg::FlightRecorder::off()));
    assert_eq!(
        post(&server.url("/debug/pprof/heap/activate"), ADMIN_SECRET).await,
        200
    );
    let stop = Arc::new(AtomicBool::new(false));
    let spawned = Arc::new(AtomicU64::new(0));
    // Two allocating workers, and a spawner that creates short-lived allocating threads.
    let mut handles: Vec<std::thread::JoinHandle<()>> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    black_box(prodbg_stress_alloc_w5(round));
                    round += 1;
                }
            })
        })
        .collect();
    {
        let (stop, spawned) = (stop.clone(), spawned.clone());
        handles.push(std::thread::spawn(move || {
            let mut round = 0u64;
            // Bounded: at most 20 000 short threads.
            while !stop.load(Ordering::Relaxed) && round < 20_000 {
                let t = std::thread::spawn(move || black_box(prodbg_stress_alloc_w5(round)));
                let _ = t.join();
                spawned.fetch_add(1, Ordering::Relaxed);
                round += 1;
            }
        }));
    }
    let profile = {
        let url = server.url("/debug/pprof/profile?seconds=3&frequency=999&format=folded");
        tokio::spawn(async move { get(&url, Some(PROFILE_SECRET)).await })
    };
    // Thread dumps while the profile runs.
    for _ in 0..5 {
        let (code, body) = get(&server.url("/debug/threads"), Some(PROFILE_SECRET)).await;
        assert_eq!(code, 200, "{body}");
    }
    let (code, folded) = profile.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(code, 200, "{folded}");
    let samples: u64 = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert!(samples > 0, "no samples: {folded}");
    assert!(
        folded.contains("prodbg_stress_alloc_w5"),
        "the workers are missing: {folded}"
    );
    assert!(spawned.load(Ordering::Relaxed) > 0);
    assert_eq!(
        sigprof_timers().unwrap_or(0),
        0,
        "a SIGPROF timer outlived the profile"
    );
    let (code, _) = get(&server.url("/debug/pprof/heap"), Some(PROFILE_SECRET)).await;
    assert_eq!(code, 200);
    assert_eq!(
        post(&server.url("/debug/pprof/heap/deactivate"), ADMIN_SECRET).await,
        200
    );
    eprintln!(
        "stress: {samples} samples, {} short threads",
        spawned.load(Ordering::Relaxed)
    );
}
