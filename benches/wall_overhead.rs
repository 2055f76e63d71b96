//! Wall-clock profiler cost, measured the way an operator takes profiles: an in-process
//! [`Admin`] server on 127.0.0.1:0 and `GET /debug/pprof/wall` over real HTTP.
//!
//! - Throughput of a CPU-bound 2-thread workload, with 50 idle threads around it (25 blocked
//!   on a channel, 25 sleeping 100 ms at a time), while a wall profile runs at the default
//!   19 Hz, the default (and at the maximum, 100 Hz), relative to no profile: interleaved rounds, ratio
//!   min / median / max.
//! - Cost per thread per sample: the sampler thread's CPU time (`x-prodbg-sampler-cpu-us`, its
//!   own `CLOCK_THREAD_CPUTIME_ID`) ÷ thread samples (`x-prodbg-samples`); and the share of
//!   samples that needed a signal (`x-prodbg-signalled`; the others reused a thread's stack
//!   because it had not been scheduled since). The signal handler's unwind runs on the sampled
//!   thread and is not in the sampler's CPU time; the throughput ratio includes it.
//!
//! Run: `cargo bench --bench wall_overhead` (about a minute and a half). `PRODBG_BENCH_ROUNDS=n`
//! sets the interleaved rounds (default 7).

pub mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::admin::SECRET;
use common::http::Http;
use common::stats::{median, min_median_max};
use common::work::{busy_threads, compute_step};

const BUSY_THREADS: usize = 2;
const IDLE_THREADS: usize = 50;
const DEFAULT_ROUNDS: usize = 7;
/// The endpoint's default rate (`/debug/pprof/wall` without `frequency`).
const DEFAULT_HZ: u32 = 19;

/// Length of one round, in seconds (the endpoint takes whole seconds).
const ROUND_S: u64 = 3;

/// Work units per second of `BUSY_THREADS` spinning threads over `len`.
fn workload(len: Duration) -> f64 {
    busy_threads(BUSY_THREADS, "bench-busy", len, || compute_step(20_000))
}

/// The idle threads: half blocked on a channel until the sender drops, half sleeping 100 ms
/// at a time until `stop`.
fn idle_threads(stop: &Arc<AtomicBool>) -> (mpsc::Sender<()>, Vec<std::thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let handles = (0..IDLE_THREADS)
        .map(|i| {
            let (stop, rx) = (stop.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("bench-idle-{i}"))
                .spawn(move || {
                    if i % 2 == 0 {
                        // Blocks in the mutex or in recv (futex) until the sender is dropped.
                        let _ = rx.lock().map(|r| r.recv());
                    } else {
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
                .expect("spawn")
        })
        .collect();
    (tx, handles)
}

fn min_med_max(v: &[f64]) -> String {
    let (min, med, max) = min_median_max(v.to_vec());
    format!("min {min:.4} / median {med:.4} / max {max:.4}")
}

/// What a wall profile response said of itself.
struct Wall {
    samples: u64,
    signalled: u64,
    sampler_cpu_us: u64,
    threads: u64,
    ticks: u64,
    warning: Option<String>,
}

/// Runs the workload for `ROUND_S` while a wall profile at `hz` runs; its throughput and
/// the profile's figures.
fn profiled(http: &Http, hz: u32) -> (f64, Wall) {
    let request = http
        .client
        .get(format!(
            "{}/debug/pprof/wall?seconds={ROUND_S}&frequency={hz}&format=folded",
            http.base
        ))
        .bearer_auth(SECRET);
    let pending = http.rt.spawn(async move {
        let r = request.send().await.expect("GET /debug/pprof/wall");
        assert!(r.status().is_success(), "wall profile: {}", r.status());
        let h = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let n = |name: &str| h(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let wall = Wall {
            samples: n("x-prodbg-samples"),
            signalled: n("x-prodbg-signalled"),
            sampler_cpu_us: n("x-prodbg-sampler-cpu-us"),
            threads: n("x-prodbg-threads"),
            ticks: n("x-prodbg-ticks"),
            warning: h("x-prodbg-warning"),
        };
        let _ = r.bytes().await;
        wall
    });
    let sent = Instant::now();
    while !http.profile_running("wall") {
        assert!(!pending.is_finished(), "the profile ended before it ran");
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "profile never started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let tput = workload(Duration::from_secs(ROUND_S));
    (tput, http.rt.block_on(pending).expect("profile task"))
}

fn main() {
    let rounds = common::env::rounds(DEFAULT_ROUNDS);
    let admin = common::admin::spawn("wall_overhead");
    let http = Http::new(&admin);
    let stop = Arc::new(AtomicBool::new(false));
    let (release, idle) = idle_threads(&stop);
    println!(
        "wall_overhead: {BUSY_THREADS} busy + {IDLE_THREADS} idle threads, {} CPUs, {ROUND_S} s rounds, wall profiles over HTTP",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm up: the first profile parses debug info to symbolize.
    let _ = profiled(&http, DEFAULT_HZ);

    let (mut r_default, mut r100, mut cost_default, mut cost100) = (vec![], vec![], vec![], vec![]);
    let mut warnings = std::collections::BTreeSet::new();
    for round in 0..rounds {
        let base = workload(Duration::from_secs(ROUND_S));
        let (t_default, w_default) = profiled(&http, DEFAULT_HZ);
        let (t100, w100) = profiled(&http, 100);
        r_default.push(t_default / base);
        r100.push(t100 / base);
        let cost = |w: &Wall| w.sampler_cpu_us as f64 / w.samples.max(1) as f64;
        cost_default.push(cost(&w_default));
        cost100.push(cost(&w100));
        for w in [&w_default, &w100] {
            warnings.extend(w.warning.clone());
        }
        println!(
            "round {round}: base {base:.0} units/s; {DEFAULT_HZ} Hz x{:.4} ({} threads, {} ticks, {} samples, {:.1}% signalled, sampler {:.1} us/thread-sample); 100 Hz x{:.4} ({} samples, {:.1}% signalled, {:.1} us/thread-sample)",
            t_default / base,
            w_default.threads,
            w_default.ticks,
            w_default.samples,
            100.0 * w_default.signalled as f64 / w_default.samples.max(1) as f64,
            cost(&w_default),
            t100 / base,
            w100.samples,
            100.0 * w100.signalled as f64 / w100.samples.max(1) as f64,
            cost(&w100),
        );
    }
    println!(
        "throughput ratio (wall profile / none), {DEFAULT_HZ} Hz (default): {}",
        min_med_max(&r_default)
    );
    println!(
        "throughput ratio (wall profile / none), 100 Hz: {}",
        min_med_max(&r100)
    );
    println!(
        "sampler CPU per thread per sample: {DEFAULT_HZ} Hz median {:.2} us, 100 Hz median {:.2} us",
        median(cost_default),
        median(cost100)
    );
    for w in warnings {
        println!("warning from the profiler: {w}");
    }
    stop.store(true, Ordering::Relaxed);
    drop(release);
    idle.into_iter()
        .for_each(|h| h.join().expect("idle thread"));
    drop(http);
    admin.shutdown();
}
