//! What jemalloc heap sampling costs the host, and what symbolizing a heap profile costs.
//!
//! Two workloads: a service-like unit of work (build a JSON request, parse it, hash its fields,
//! serialize a response, keep it in a small cache) and a pure malloc/free loop of 2 KiB buffers.
//! Each is run for a fixed time under three allocators, in interleaved rounds:
//! jemalloc (`prof:true,prof_active:false,lg_prof_sample:19`) with sampling inactive, the same
//! with sampling active (`prodbg::probes::heap::set_active(true)`), and the system allocator.
//! The system-allocator runs happen in a child process (this binary re-executed with
//! `PRODBG_BENCH_SYSTEM_ALLOC=1`), because the global allocator is fixed per process: the
//! `Switch` allocator below picks jemalloc or the system allocator once, before the first
//! allocation, and both modes pay the same branch. Medians of per-round throughput ratios are
//! printed (> 1 is faster).
//!
//! Run: `cargo bench --bench heap_overhead` (about a minute).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use prodbg::probes::{heap, memory};

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

const ROUNDS: usize = 11;
const RUN: Duration = Duration::from_millis(300);

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

type Unit = fn(u64, &mut HashMap<u64, String>) -> u64;

/// Units of work per second over `RUN`.
fn throughput(unit: Unit) -> f64 {
    let mut cache = HashMap::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..64 {
            black_box(unit(n, &mut cache));
            n += 1;
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn workload(name: &str) -> Unit {
    match name {
        "service" => service_unit,
        _ => malloc_unit,
    }
}

/// Throughput of `name` under the system allocator, in a child process.
fn system_throughput(name: &str) -> f64 {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .env("PRODBG_BENCH_SYSTEM_ALLOC", "1")
        .env("PRODBG_BENCH_CHILD", name)
        .output()
        .expect("child runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("child prints its throughput")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Ok(name) = std::env::var("PRODBG_BENCH_CHILD") {
        throughput(workload(&name)); // warm up like the parent's first round
        println!("{}", throughput(workload(&name)));
        return;
    }
    let state = heap::profiling_state().expect("running on jemalloc with profiling enabled");
    println!("jemalloc heap profiling: {state:?}; {ROUNDS} rounds of {RUN:?} per configuration");
    let t0 = Instant::now();
    for name in ["service", "malloc"] {
        let unit = workload(name);
        throughput(unit); // warm up
        let (mut active_r, mut inactive_sys_r, mut active_sys_r) = (vec![], vec![], vec![]);
        let mut inactive_abs = vec![];
        for round in 0..ROUNDS {
            let measure = |active: bool| {
                heap::set_active(active).expect("set_active");
                let t = throughput(unit);
                heap::set_active(false).expect("set_active");
                t
            };
            let (off, on) = if round % 2 == 0 {
                let off = measure(false);
                (off, measure(true))
            } else {
                let on = measure(true);
                (measure(false), on)
            };
            let sys = system_throughput(name);
            active_r.push(on / off);
            inactive_sys_r.push(off / sys);
            active_sys_r.push(on / sys);
            inactive_abs.push(off);
        }
        println!(
            "{name:>8}: {:.0} units/s (jemalloc, inactive); active/inactive {:.4}; inactive/system {:.4}; active/system {:.4}",
            median(inactive_abs),
            median(active_r.clone()),
            median(inactive_sys_r),
            median(active_sys_r),
        );
        active_r.sort_by(f64::total_cmp);
        println!("          active/inactive per round, sorted: {active_r:.3?}");
    }

    // Symbolizing: hold live data from the service workload so the profile has stacks.
    heap::set_active(true).expect("set_active");
    let mut held = Vec::new();
    let mut cache = HashMap::new();
    for i in 0..50_000 {
        service_unit(i, &mut cache);
        if i % 1024 == 0 {
            held.push(std::mem::take(&mut cache));
        }
    }
    heap::set_active(false).expect("set_active");
    let profile = heap::snapshot().expect("snapshot");
    let rss = || memory::process_memory().rss_bytes.unwrap_or(0) as f64 / (1 << 20) as f64;
    for attempt in ["first", "second"] {
        let (before, t) = (rss(), Instant::now());
        let gz = profile.pprof_gz().expect("pprof");
        let (after, took) = (rss(), t.elapsed());
        println!(
            "symbolize ({attempt} pprof_gz): +{:.1} MiB RSS ({before:.1} -> {after:.1} MiB), {:.0} ms; {} stacks, {} bytes gzipped",
            after - before,
            took.as_secs_f64() * 1e3,
            profile.stack_count(),
            gz.len()
        );
    }
    drop(held);
    println!("total bench time {:.0} s", t0.elapsed().as_secs_f64());
}
