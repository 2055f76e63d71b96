//! What jemalloc heap sampling costs the host, and what a heap profile costs, driven the way an
//! operator drives it: an in-process [`prodbg::Admin`] server on 127.0.0.1:0, sampling switched
//! with `POST /debug/pprof/heap/activate` / `deactivate` and profiles taken with
//! `GET /debug/pprof/heap`, over real HTTP.
//!
//! Two workloads: a service-like unit of work (build a JSON request, parse it, hash its fields,
//! serialize a response, keep it in a small cache) and a pure malloc/free loop of 2 KiB buffers.
//! Each is run for a fixed time under three allocators, in interleaved rounds:
//! jemalloc (`prof:true,prof_active:false,lg_prof_sample:19`) with sampling inactive, the same
//! with sampling active (`POST /debug/pprof/heap/activate`), and the system allocator.
//! The system-allocator runs happen in a child process (this binary re-executed with
//! `PRODBG_BENCH_SYSTEM_ALLOC=1`), because the global allocator is fixed per process: the
//! `Switch` allocator below picks jemalloc or the system allocator once, before the first
//! allocation, and both modes pay the same branch. Medians of per-round throughput ratios are
//! printed (> 1 is faster). Throughput is per second of the thread's CPU time, so other
//! processes competing for the cores disturb it less than wall time. The HTTP requests that
//! switch sampling happen between timed slices, not in them.
//!
//! The service workload is also measured at `lg_prof_sample` 21, to show what a coarser sample
//! rate buys. prodbg has no endpoint for the sample rate, so this (and the per-thread
//! `thread.allocated` counter) goes to jemalloc's `mallctl` directly, as before.
//!
//! Last, the cost of a heap profile of live data from many stacks: RSS (from /proc/self/status)
//! and wall time of the first and second `GET /debug/pprof/heap`. Each request now takes its
//! own snapshot (`prof.dump` + parse) before symbolizing and encoding, so the time includes
//! that; symbolizing alone is no longer measurable through the public API
//! (`RUST_LOG=prodbg=debug` shows the server's own log lines).
//!
//! Run: `cargo bench --bench heap_overhead` (about a minute). `PRODBG_BENCH_ROUNDS=n` sets the
//! interleaved rounds (default 15).

pub mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use common::child::run_self;
use common::clock::thread_cpu_time;
use common::http::Http;
use common::memory::{reset_peak, Status};
use common::stats::median;
use pprof::protos::Message as _;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static _rjem_malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:19\0";
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:19\0";

/// jemalloc, or the system allocator when `PRODBG_BENCH_SYSTEM_ALLOC` is set; chosen once.
struct Switch;
static MODE: AtomicU8 = AtomicU8::new(0); // 0 undecided, 1 jemalloc, 2 system
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[inline]
fn system() -> bool {
    match MODE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            // getenv does not allocate. The first allocation happens before threads start.
            let sys = !unsafe { libc::getenv(c"PRODBG_BENCH_SYSTEM_ALLOC".as_ptr()) }.is_null();
            MODE.store(if sys { 2 } else { 1 }, Ordering::Relaxed);
            sys
        }
    }
}

unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if system() {
            System.alloc(l)
        } else {
            JEMALLOC.alloc(l)
        }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if system() {
            System.alloc_zeroed(l)
        } else {
            JEMALLOC.alloc_zeroed(l)
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if system() {
            System.dealloc(p, l)
        } else {
            JEMALLOC.dealloc(p, l)
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if system() {
            System.realloc(p, l, n)
        } else {
            JEMALLOC.realloc(p, l, n)
        }
    }
}

#[global_allocator]
static A: Switch = Switch;

const DEFAULT_ROUNDS: usize = 15;
/// Per configuration and round; jemalloc inactive/active alternate in `SLICES` slices of it, so
/// that noise from other processes hits both alike.
const RUN: Duration = Duration::from_millis(200);
const SLICES: u32 = 5;

/// One request's worth of service-like work.
#[inline(never)]
fn service_unit(i: u64, cache: &mut HashMap<u64, String>) -> u64 {
    let body = format!(
        r#"{{"user":"user-{i}","items":[{},{},{}],"tags":["a{}","b","c"],"note":"{}"}}"#,
        i % 7,
        i % 13,
        i % 101,
        i % 5,
        "x".repeat((i % 64) as usize)
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
    let mut fields: Vec<(String, String)> = v
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    fields.sort();
    let mut h = DefaultHasher::new();
    fields.hash(&mut h);
    let hash = h.finish();
    let resp =
        serde_json::json!({"id": i, "hash": hash, "fields": fields.len(), "user": fields[3].1});
    cache.insert(
        i % 1024,
        serde_json::to_string(&resp).expect("serializable"),
    );
    hash
}

#[inline(never)]
fn malloc_unit(_: u64, _: &mut HashMap<u64, String>) -> u64 {
    black_box(Vec::<u8>::with_capacity(2048)).capacity() as u64
}

/// Live data from a variety of call stacks: parsed JSON, strings, maps, boxed buffers.
#[inline(never)]
fn hold_live_data() -> Vec<Box<dyn std::any::Any>> {
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut cache = HashMap::new();
    for i in 0..20_000u64 {
        service_unit(i, &mut cache);
        if i.is_multiple_of(1024) {
            held.push(Box::new(std::mem::take(&mut cache)));
        }
        if i.is_multiple_of(16) {
            let body = format!(r#"{{"k{i}":[{i},"{}"]}}"#, "y".repeat(200));
            let v: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
            held.push(Box::new((body, v)));
            held.push(Box::new(vec![i; 512]));
            held.push(Box::new(i.to_string().repeat(100)));
        }
    }
    held
}

type Unit = fn(u64, &mut HashMap<u64, String>) -> u64;

/// Units of work per second of this thread's CPU time, over `run` of CPU time.
fn throughput(unit: Unit, run: Duration) -> f64 {
    let mut cache = HashMap::new();
    let start = thread_cpu_time();
    let mut n = 0u64;
    while thread_cpu_time() - start < run {
        for _ in 0..64 {
            black_box(unit(n, &mut cache));
            n += 1;
        }
    }
    n as f64 / (thread_cpu_time() - start).as_secs_f64()
}

fn workload(name: &str) -> Unit {
    match name {
        "service" => service_unit,
        _ => malloc_unit,
    }
}

/// Throughput of `name` under the system allocator, in a child process.
fn system_throughput(name: &str) -> f64 {
    run_self(&[
        ("PRODBG_BENCH_SYSTEM_ALLOC", "1"),
        ("PRODBG_BENCH_CHILD", name),
    ])
    .trim()
    .parse()
    .expect("child prints its throughput")
}

/// Bytes jemalloc counts as allocated by this thread per unit of work.
fn bytes_per_unit(unit: Unit) -> f64 {
    // SAFETY: `thread.allocated` is documented as a `uint64_t`.
    let allocated = || unsafe { tikv_jemalloc_ctl::raw::read::<u64>(b"thread.allocated\0") };
    let mut cache = HashMap::new();
    let before = allocated().expect("thread.allocated");
    for i in 0..10_000 {
        black_box(unit(i, &mut cache));
    }
    (allocated().expect("thread.allocated") - before) as f64 / 10_000.0
}

/// `POST /debug/pprof/heap/activate` or `deactivate`.
fn set_active(http: &Http, active: bool) {
    let path = if active {
        "/debug/pprof/heap/activate"
    } else {
        "/debug/pprof/heap/deactivate"
    };
    let body: serde_json::Value =
        serde_json::from_slice(&http.send(reqwest::Method::POST, path)).expect("JSON");
    assert_eq!(
        body["profiling"]["active"].as_bool(),
        Some(active),
        "{path}: {body}"
    );
}

/// Throughput with sampling off and on, in alternating slices: (inactive, active).
fn inactive_active(http: &Http, unit: Unit, round: usize) -> (f64, f64) {
    let (mut off, mut on) = (0.0, 0.0);
    for slice in 0..SLICES as usize {
        for active in [
            !(round + slice).is_multiple_of(2),
            (round + slice).is_multiple_of(2),
        ] {
            if active {
                set_active(http, true);
            }
            let t = throughput(unit, RUN / SLICES);
            if active {
                set_active(http, false);
            }
            *(if active { &mut on } else { &mut off }) += t / SLICES as f64;
        }
    }
    (off, on)
}

/// `(VmRSS, RssAnon, RssFile)` of this process in bytes.
fn rss() -> (u64, u64, u64) {
    let status = Status::read();
    let field = |name: &str| status.kb(name).map_or(0, |kb| kb * 1024);
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// Peak RSS (VmHWM) in bytes since the last [`reset_peak`].
fn peak_rss() -> u64 {
    Status::read().kb("VmHWM:").map_or(0, |kb| kb * 1024)
}

/// Samples (one per stack) in a gzipped profile.proto.
fn pprof_stacks(gz: &[u8]) -> usize {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut raw).expect("gzip");
    pprof::protos::Profile::decode(&raw[..])
        .expect("profile.proto")
        .sample
        .len()
}

fn main() {
    if let Ok(name) = std::env::var("PRODBG_BENCH_CHILD") {
        throughput(workload(&name), RUN / 2); // warm up
        println!("{}", throughput(workload(&name), RUN));
        return;
    }
    let rounds = common::env::rounds(DEFAULT_ROUNDS);
    let admin = common::admin::spawn("heap_overhead");
    let http = Http::current_thread(&admin);
    let memory = http.get_json("/debug/memory");
    let state = &memory["jemalloc"]["profiling"];
    assert_eq!(
        state["opt_prof"].as_bool(),
        Some(true),
        "running on jemalloc with profiling enabled: {memory}"
    );
    println!("jemalloc heap profiling: {state}; {rounds} rounds of {RUN:?} per configuration");
    let t0 = Instant::now();
    for (name, lg_sample) in [("service", 19), ("malloc", 19), ("service", 21)] {
        // SAFETY: `prof.reset` is documented as writable with a `size_t` lg_sample.
        unsafe { tikv_jemalloc_ctl::raw::write(b"prof.reset\0", lg_sample as usize) }
            .expect("prof.reset");
        let unit = workload(name);
        let per_unit = bytes_per_unit(unit);
        throughput(unit, RUN); // warm up
        let with_system = lg_sample == 19;
        let (mut active_r, mut inactive_sys_r, mut active_sys_r) = (vec![], vec![], vec![]);
        let mut inactive_abs = vec![];
        for round in 0..rounds {
            let (off, on) = inactive_active(&http, unit, round);
            active_r.push(on / off);
            inactive_abs.push(off);
            if with_system {
                let sys = system_throughput(name);
                inactive_sys_r.push(off / sys);
                active_sys_r.push(on / sys);
            }
        }
        let interval = 1u64 << lg_sample;
        println!(
            "{name:>8} (lg_prof_sample {lg_sample}): {:.0} units/s jemalloc inactive, {per_unit:.0} B allocated/unit (1 sample per {:.0} units); active/inactive {:.4}",
            median(inactive_abs),
            interval as f64 / per_unit,
            median(active_r.clone()),
        );
        if with_system {
            println!(
                "          inactive/system {:.4}; active/system {:.4}",
                median(inactive_sys_r),
                median(active_sys_r)
            );
        }
        active_r.sort_by(f64::total_cmp);
        println!("          active/inactive per round, sorted: {active_r:.3?}");
    }
    // SAFETY: as above.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.reset\0", 19usize) }.expect("prof.reset");

    // Heap profiles: hold live data from many stacks so the profile is not trivial.
    set_active(&http, true);
    let held = hold_live_data();
    set_active(&http, false);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for attempt in ["first", "second"] {
        let before = rss();
        reset_peak();
        let t = Instant::now();
        let gz = http.get("/debug/pprof/heap?format=pprof");
        let (peak, took) = (peak_rss(), t.elapsed());
        let after = rss();
        println!(
            "heap profile ({attempt} GET /debug/pprof/heap: snapshot + symbolize + encode + HTTP): peak RSS +{:.1} MiB, kept +{:.1} MiB ({:.1} -> peak {:.1} -> {:.1} MiB; anonymous +{:.1} MiB, file-backed +{:.1} MiB), {:.0} ms; {} stacks, {} bytes gzipped",
            mib(peak) - mib(before.0),
            mib(after.0) - mib(before.0),
            mib(before.0),
            mib(peak),
            mib(after.0),
            mib(after.1) - mib(before.1),
            mib(after.2) - mib(before.2),
            took.as_secs_f64() * 1e3,
            pprof_stacks(&gz),
            gz.len()
        );
    }
    drop(held);
    drop(http);
    admin.shutdown();
    println!("total bench time {:.0} s", t0.elapsed().as_secs_f64());
}
