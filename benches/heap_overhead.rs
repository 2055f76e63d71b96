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
//! printed (> 1 is faster). Throughput is per second of the thread's CPU time, so other
//! processes competing for the cores disturb it less than wall time.
//!
//! The service workload is also measured at `lg_prof_sample` 21 (set with `prof.reset`), to
//! show what a coarser sample rate buys.
//!
//! Run: `cargo bench --bench heap_overhead` (under a minute).

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

const ROUNDS: usize = 15;
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

/// CPU time of the calling thread: unlike wall time, other processes on the machine do not
/// inflate it (they still share caches).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

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
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
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

/// Throughput with sampling off and on, in alternating slices: (inactive, active).
fn inactive_active(unit: Unit, round: usize) -> (f64, f64) {
    let (mut off, mut on) = (0.0, 0.0);
    for slice in 0..SLICES as usize {
        for active in [
            !(round + slice).is_multiple_of(2),
            (round + slice).is_multiple_of(2),
        ] {
            heap::set_active(active).expect("set_active");
            let t = throughput(unit, RUN / SLICES);
            heap::set_active(false).expect("set_active");
            *(if active { &mut on } else { &mut off }) += t / SLICES as f64;
        }
    }
    (off, on)
}

fn main() {
    if let Ok(name) = std::env::var("PRODBG_BENCH_CHILD") {
        throughput(workload(&name), RUN / 2); // warm up
        println!("{}", throughput(workload(&name), RUN));
        return;
    }
    let state = heap::profiling_state().expect("running on jemalloc with profiling enabled");
    println!("jemalloc heap profiling: {state:?}; {ROUNDS} rounds of {RUN:?} per configuration");
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
        for round in 0..ROUNDS {
            let (off, on) = inactive_active(unit, round);
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

    // Symbolizing: hold live data from many stacks so the profile is not trivial.
    heap::set_active(true).expect("set_active");
    let held = hold_live_data();
    heap::set_active(false).expect("set_active");
    let profile = heap::snapshot().expect("snapshot");
    let mib = |b: Option<u64>| b.unwrap_or(0) as f64 / (1 << 20) as f64;
    for attempt in ["first", "second"] {
        let (before, t) = (memory::process_memory(), Instant::now());
        let gz = profile.pprof_gz().expect("pprof");
        let (after, took) = (memory::process_memory(), t.elapsed());
        println!(
            "symbolize ({attempt} pprof_gz): RSS +{:.1} MiB ({:.1} -> {:.1} MiB; anonymous +{:.1} MiB, file-backed +{:.1} MiB), {:.0} ms; {} stacks, {} bytes gzipped",
            mib(after.rss_bytes) - mib(before.rss_bytes),
            mib(before.rss_bytes),
            mib(after.rss_bytes),
            mib(after.rss_anon_bytes) - mib(before.rss_anon_bytes),
            mib(after.rss_file_bytes) - mib(before.rss_file_bytes),
            took.as_secs_f64() * 1e3,
            profile.stack_count(),
            gz.len()
        );
    }
    drop(held);
    println!("total bench time {:.0} s", t0.elapsed().as_secs_f64());
}
