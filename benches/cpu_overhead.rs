//! CPU profiler cost: throughput of a CPU-bound 2-thread workload while profiling at 99 and
//! 999 Hz relative to unprofiled (interleaved rounds, median ratio), samples delivered vs
//! asked, symbolize/render times, and RSS before/during/after a long profile.
//!
//! Run: `cargo bench --bench cpu_overhead`. Set `PRODBG_BENCH_OUT=dir` to also write the long
//! profile as `cpu.pb.gz`, `cpu.folded` and `cpu.svg` there (for `go tool pprof`).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prodbg::probes::cpu::{self, CpuProfile, CpuProfileOptions};

const THREADS: usize = 2;
const ROUNDS: usize = 7;
const ROUND: Duration = Duration::from_secs(2);
const LONG: Duration = Duration::from_secs(30);

#[inline(never)]
fn spin(iters: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// Recurses `depth` levels through a few functions before spinning: gives the long profile
/// a few dozen distinct, deep-ish stacks, as a service would have.
#[inline(never)]
fn layer_a(depth: u32, iters: u64) -> u64 {
    if depth == 0 {
        spin(iters)
    } else if depth.is_multiple_of(3) {
        layer_b(depth - 1, iters)
    } else {
        layer_a(depth - 1, iters) ^ black_box(depth as u64)
    }
}

#[inline(never)]
fn layer_b(depth: u32, iters: u64) -> u64 {
    if depth.is_multiple_of(2) {
        layer_a(depth, iters / 2) ^ spin(iters / 2)
    } else {
        layer_a(depth, iters)
    }
}

/// Runs the workload on `THREADS` threads for `len`; returns work units per second.
fn workload(len: Duration, mid: impl FnOnce()) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("bench-worker-{t}"))
                .spawn(move || {
                    let mut units = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        black_box(layer_a((units % 24) as u32, 20_000));
                        units += 1;
                    }
                    units
                })
                .expect("spawn")
        })
        .collect();
    std::thread::sleep(len / 2);
    mid();
    std::thread::sleep(len.saturating_sub(t0.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let units: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
    units as f64 / t0.elapsed().as_secs_f64()
}

/// `(VmRSS, RssAnon)` of this process in MB; RssAnon excludes mapped files (the binary).
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

fn fmt_rss((rss, anon): (f64, f64)) -> String {
    format!("{rss:.1} (anon {anon:.1})")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Samples delivered ÷ (busy threads × Hz × s), and ÷ (process CPU seconds × Hz): the
/// second does not count CPU the workload did not get on a shared machine.
fn accuracy(p: &CpuProfile) -> (f64, f64) {
    let hz = f64::from(p.frequency_hz);
    let cpu = p.cpu_time.map_or(f64::NAN, |c| c.as_secs_f64());
    (
        p.samples as f64 / (THREADS as f64 * hz * p.duration.as_secs_f64()),
        p.samples as f64 / (cpu * hz),
    )
}

/// Profiles `workload` for `len`; returns (throughput, profile, stop() time).
fn profiled(len: Duration, frequency_hz: u32, mid: impl FnOnce()) -> (f64, CpuProfile, Duration) {
    let running = cpu::start(CpuProfileOptions {
        duration: len,
        frequency_hz,
    })
    .expect("start");
    let tput = workload(len, mid);
    let t0 = Instant::now();
    let profile = running.stop().expect("stop");
    (tput, profile, t0.elapsed())
}

fn long_profile(label: &str) -> CpuProfile {
    let before = rss_mb();
    let mut during = (0.0, 0.0);
    let (_, profile, stop) = profiled(LONG, 99, || during = rss_mb());
    let after_stop = rss_mb();
    let t0 = Instant::now();
    let pprof = profile.pprof_gz().expect("pprof");
    let pprof_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let svg = profile.svg("cpu").expect("svg");
    let svg_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "{label}: {:.0} s x 99 Hz x {THREADS} threads: {} samples, {} stacks, stop() {:.0} ms, \
         pprof {pprof_ms:.1} ms ({} B), svg {svg_ms:.1} ms ({} B)",
        profile.duration.as_secs_f64(),
        profile.samples,
        profile.stacks.len(),
        stop.as_secs_f64() * 1e3,
        pprof.len(),
        svg.len(),
    );
    if let Ok(dir) = std::env::var("PRODBG_BENCH_OUT") {
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join("cpu.pb.gz"), &pprof).expect("write");
        std::fs::write(dir.join("cpu.folded"), profile.folded()).expect("write");
        std::fs::write(dir.join("cpu.svg"), &svg).expect("write");
    }
    drop((pprof, svg));
    println!(
        "{label}: RSS MB before {}, during {}, after stop {}, after render+drop {}",
        fmt_rss(before),
        fmt_rss(during),
        fmt_rss(after_stop),
        fmt_rss(rss_mb())
    );
    profile
}

fn main() {
    // `RUST_LOG=prodbg=debug` shows the probe's symbolize/trim/render timings.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // cargo bench passes `--bench`; ignore arguments.
    println!(
        "cpu_overhead: {THREADS} busy threads, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Memory and render cost of long profiles; the first also pays for parsing debug info.
    let first = long_profile("profile 1 (first in process)");
    let second = long_profile("profile 2 (symbol cache warm)");
    drop((first, second));

    // 2. Overhead and sampling accuracy, interleaved rounds.
    let (mut r99, mut r999, mut stops) = (vec![], vec![], vec![]);
    let (mut a99, mut a999, mut c99, mut c999) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let base = workload(ROUND, || {});
        let (t99, p99, s99) = profiled(ROUND, 99, || {});
        let (t999, p999, s999) = profiled(ROUND, 999, || {});
        r99.push(t99 / base);
        r999.push(t999 / base);
        a99.push(accuracy(&p99).0);
        a999.push(accuracy(&p999).0);
        c99.push(accuracy(&p99).1);
        c999.push(accuracy(&p999).1);
        stops.extend([s99.as_secs_f64() * 1e3, s999.as_secs_f64() * 1e3]);
        println!(
            "round {round}: base {base:.0} units/s, 99 Hz x{:.4} ({} samples), 999 Hz x{:.4} ({} samples, {:.0}/s)",
            t99 / base,
            p99.samples,
            t999 / base,
            p999.samples,
            p999.effective_rate_hz
        );
    }
    println!(
        "median throughput ratio (profiled / unprofiled): 99 Hz {:.4}, 999 Hz {:.4}",
        median(r99),
        median(r999)
    );
    println!(
        "median sampling accuracy (samples / (threads x Hz x s)): 99 Hz {:.3}, 999 Hz {:.3}",
        median(a99),
        median(a999)
    );
    println!(
        "median samples / (process CPU s x Hz): 99 Hz {:.3}, 999 Hz {:.3}",
        median(c99),
        median(c999)
    );
    println!(
        "median stop() time (incl. malloc_trim) of a {} s profile: {:.1} ms",
        ROUND.as_secs(),
        median(stops)
    );
    println!("RSS MB at end: {}", fmt_rss(rss_mb()));
}
