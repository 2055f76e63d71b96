//! Heap probes against a real jemalloc with profiling enabled at start-up: the test binary's
//! allocator and its `malloc_conf` are set in `crate::test_support`.

use std::hint::black_box;

use pprof::protos::Message as _;

use super::core as heap;
use crate::jemalloc;
use crate::stack::profile::Profile;
use crate::test_support::serial;

const LEAKER: &str = "prodbg_test_leaky_holder_7f3a";

/// Allocates `count` buffers of `size` bytes through a uniquely named function.
#[inline(never)]
fn prodbg_test_leaky_holder_7f3a(count: usize, size: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| black_box(vec![i as u8; size])).collect()
}

/// Runs the leaker on its own thread (as a host thread would) and returns what it holds.
fn hold(count: usize, size: usize) -> Vec<Vec<u8>> {
    std::thread::spawn(move || prodbg_test_leaky_holder_7f3a(count, size))
        .join()
        .unwrap()
}

/// (bytes of stacks that contain the leaker, bytes of those whose leaf — pprof's flat — is it).
fn leaker_bytes_folded(p: &Profile) -> (u64, u64) {
    let (mut cum, mut flat) = (0, 0);
    for line in p.folded().lines() {
        let (stack, bytes) = line.rsplit_once(' ').unwrap();
        let bytes: u64 = bytes.parse().unwrap();
        if stack.contains(LEAKER) {
            cum += bytes;
            if stack
                .rsplit(';')
                .next()
                .is_some_and(|leaf| leaf.contains(LEAKER))
            {
                flat += bytes;
            }
        }
    }
    (cum, flat)
}

fn decode(gz: &[u8]) -> pprof::protos::Profile {
    use std::io::Read as _;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    pprof::protos::Profile::decode(raw.as_slice()).unwrap()
}

/// (bytes of samples whose stack contains the leaker, bytes of those whose leaf is the leaker).
fn leaker_bytes_pprof(p: &pprof::protos::Profile) -> (i64, i64) {
    let s = |i: i64| p.string_table[i as usize].clone();
    let func = |id: u64| p.function.iter().find(|f| f.id == id).unwrap();
    let loc = |id: u64| p.location.iter().find(|l| l.id == id).unwrap();
    let (mut cum, mut flat) = (0, 0);
    for sample in &p.sample {
        let names: Vec<String> = sample
            .location_id
            .iter()
            .flat_map(|&l| {
                loc(l)
                    .line
                    .iter()
                    .map(|line| s(func(line.function_id).name))
            })
            .collect();
        if names.iter().any(|n| n.contains(LEAKER)) {
            cum += sample.value[1];
            if names[0].contains(LEAKER) {
                flat += sample.value[1];
            }
        }
    }
    (cum, flat)
}

#[test]
fn set_active_toggles_profiling_state() {
    let _g = serial(); // `prof.active` is global
    jemalloc::set_active(true).unwrap();
    assert!(jemalloc::profiling_state().unwrap().active);
    jemalloc::set_active(false).unwrap();
    let state = jemalloc::profiling_state().unwrap();
    assert!(state.opt_prof && !state.active);
}

#[test]
fn snapshot_attributes_live_bytes_to_the_allocating_function() {
    let _g = serial(); // `prof.active` is global
    jemalloc::set_active(true).unwrap();
    let held = hold(256, 64 << 10); // 16 MiB in 64 KiB buffers
    let profile = heap::snapshot().unwrap().profile();
    jemalloc::set_active(false).unwrap();
    let held_bytes = (held.len() * held[0].len()) as u64;

    let (cum, flat) = leaker_bytes_folded(&profile);
    assert!(
        cum >= held_bytes / 2,
        "folded: {cum} of {held_bytes}\n{}",
        profile.folded()
    );
    assert!(cum <= held_bytes * 2, "folded: {cum} of {held_bytes}");
    // Allocator and std frames are cut off the top: the leaker itself is the leaf.
    assert_eq!(flat, cum, "leaf is not the leaker:\n{}", profile.folded());
    assert!(profile.total(1) as u64 >= cum && profile.total(0) > 0);

    let gz = profile.pprof_gz();
    if let Some(path) = std::env::var_os("PRODBG_HEAP_PPROF_OUT") {
        std::fs::write(path, &gz).unwrap(); // to inspect with `go tool pprof -top <path>`
    }
    let pprof = decode(&gz);
    let st = |i: i64| pprof.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = pprof
        .sample_type
        .iter()
        .map(|t| (st(t.ty), st(t.unit)))
        .collect();
    assert_eq!(
        types,
        [("inuse_objects", "count"), ("inuse_space", "bytes")]
    );
    assert_eq!(pprof.period, 1 << 14);
    // `go tool pprof -top` shows the leaf as flat: it must be the leaker.
    let (cum, flat) = leaker_bytes_pprof(&pprof);
    assert!(cum as u64 >= held_bytes / 2, "pprof: {cum} of {held_bytes}");
    assert_eq!(flat, cum, "pprof leaf is not the leaker");

    let svg = String::from_utf8(profile.svg("heap").unwrap()).unwrap();
    assert!(svg.contains(LEAKER));
    drop(held);
}

#[test]
fn growth_attributes_new_allocations() {
    let _g = serial(); // `prof.active` is global
    jemalloc::set_active(true).unwrap();
    let before = heap::snapshot().unwrap();
    let held = hold(128, 64 << 10); // 8 MiB allocated inside the window
    let after = heap::snapshot().unwrap();
    jemalloc::set_active(false).unwrap();
    let grown = heap::growth(&before, &after).profile();
    let held_bytes = (held.len() * held[0].len()) as u64;
    let (cum, _) = leaker_bytes_folded(&grown);
    assert!(
        cum >= held_bytes / 2,
        "growth: {cum} of {held_bytes}\n{}",
        grown.folded()
    );
    assert!(grown.duration > std::time::Duration::ZERO);
    let (cum, flat) = leaker_bytes_pprof(&decode(&grown.pprof_gz()));
    assert!(cum as u64 >= held_bytes / 2 && flat == cum);
    drop(held);
}

#[test]
fn snapshots_leave_nothing_on_disk() {
    let _g = serial(); // another test's snapshot would be counted
    let prefix = format!("prodbg-heap-{}-", std::process::id());
    let ours = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count()
    };
    for _ in 0..20 {
        heap::snapshot().unwrap();
    }
    assert_eq!(ours(), 0);
}
