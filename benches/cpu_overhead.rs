//! CPU profiler accuracy, cost and memory, measured the way an operator takes profiles: an
//! in-process [`Admin`] server on 127.0.0.1:0 and `GET /debug/pprof/profile` over real HTTP,
//! side by side with pprof-rs 0.15 (the crate a user would pick instead) on the same workload.
//!
//! The workload is the textbook CPU incident: 2 busy threads, each looping over
//! `compute_step` (~60 % of the time, own code), `alloc_step` (~5 %, small `malloc`/`free`)
//! and `clone_step` (~35 %, an unnecessary clone of a 1 MiB `Vec`: `memcpy` in libc). The true
//! shares are measured with timers around each step in an unprofiled run of the same round.
//!
//! 1. **Memory and latency of symbolization** (first: nothing else has symbolized yet). An
//!    unsymbolized profile first shows what the profiler's one-time set-up keeps. Then RSS
//!    (VmRSS, RssAnon, RssFile) before a 10 s profile, while it samples, its peak during stop +
//!    symbolize + encode (VmHWM, reset with `/proc/self/clear_refs` while sampling), and after
//!    the response; the same for two thread dumps (`/debug/threads`); then pprof-rs's first
//!    report. Server-side stop + symbolize + encode times are read from prodbg's own
//!    `stop_ms` / `render_ms` log fields (a `tracing` layer in this process); the client-side
//!    figure adds the transfer.
//! 2. **Accuracy and overhead**, interleaved rounds of: unprofiled (the truth), prodbg 99 Hz,
//!    prodbg 999 Hz, pprof-rs 99 Hz (blocklist libc, libgcc, pthread, vdso, as its README
//!    suggests), each round followed by the next round's unprofiled run. Per round:
//!    throughput ÷ the mean of the unprofiled runs before and after it; samples ÷ (the workers' CPU s ×
//!    Hz); the total-variation distance between the sampled and the true shares of the four
//!    parts (compute, alloc, clone, other). Printed min / median / max over the rounds.
//! 3. **Overhead on pure compute**, the same interleaving on a compute-only loop, whose
//!    run-to-run noise is lower than the memcpy-heavy mix's.
//!
//! Run: `cargo bench --bench cpu_overhead` (about 8 minutes). `PRODBG_BENCH_ROUNDS=n` sets the
//! rounds (default 12). `PRODBG_BENCH_OUT=dir` also writes the first profile (`cpu.pb.gz`).

pub mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::admin::SECRET;
use common::clock::thread_cpu_time;
use common::http::Http;
use common::memory::{reset_peak, Status};
use common::stats::spread;
use common::work::{busy_threads, compute_step};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

const THREADS: usize = 2;
const DEFAULT_ROUNDS: usize = 12;
/// Length of one interleaved run, in seconds (the profile endpoint takes whole seconds).
const ROUND_S: u64 = 3;
/// Length of the profiles that measure memory and latency.
const LONG_S: u64 = 10;
const CLONE_BYTES: usize = 1 << 20;
const WORKER: &str = "acc-worker";

// ---------------------------------------------------------------- the workload

#[inline(never)]
fn alloc_step(count: u64) -> u64 {
    let mut sum = 0u64;
    for i in 0..count {
        let v: Vec<u64> = Vec::with_capacity(4 + (i % 29) as usize);
        let v = black_box(v);
        sum = sum.wrapping_add(v.capacity() as u64);
    }
    sum
}

/// The textbook incident: cloning the whole `Vec` where a borrow would do.
#[inline(never)]
#[allow(clippy::ptr_arg)]
fn clone_step(src: &Vec<u8>) -> u64 {
    let copy = black_box(src.clone());
    u64::from(copy[copy.len() / 2])
}

/// The low-noise overhead workload: compute only, no memory traffic (the memcpy-heavy mix
/// varies by a few % from run to run with the memory bandwidth the machine's neighbours leave).
fn compute_only(len: Duration) -> f64 {
    busy_threads(THREADS, WORKER, len, || compute_step(20_000))
}

/// How much of each step one loop iteration ("unit") does.
#[derive(Clone, Copy, Debug)]
struct Mix {
    compute_iters: u64,
    alloc_count: u64,
}

/// Nanoseconds spent in each step, and the loop's total (the rest is "other": the loop and the
/// clock reads themselves).
#[derive(Clone, Copy, Debug, Default)]
struct Split {
    compute: u64,
    alloc: u64,
    clone: u64,
    total: u64,
}

impl Split {
    fn add(&mut self, o: Split) {
        self.compute += o.compute;
        self.alloc += o.alloc;
        self.clone += o.clone;
        self.total += o.total;
    }

    /// Shares of (compute, alloc, clone, other).
    fn shares(&self) -> [f64; 4] {
        let t = self.total.max(1) as f64;
        let (c, a, k) = (
            self.compute as f64 / t,
            self.alloc as f64 / t,
            self.clone as f64 / t,
        );
        [c, a, k, (1.0 - c - a - k).max(0.0)]
    }
}

/// One worker's loop, timing each step with `Instant` (the vDSO's clock, no system call).
///
/// Two things would make wall-clock step times differ from CPU time, and `main` rules both
/// out: glibc serving each 1 MiB clone with `mmap`/`munmap` (page faults, and waits on the
/// address space's lock while the other thread maps: off-CPU time no CPU profile sees), so the
/// bench raises glibc's mmap and trim thresholds; and the thread CPU clock itself
/// (`CLOCK_THREAD_CPUTIME_ID` is a system call, and CPU-timer signals are delivered on the
/// way out of system calls, so timing each step with it draws samples into the clock read).
#[inline(never)]
fn worker_loop(mix: Mix, src: &Vec<u8>, stop: &AtomicBool) -> (u64, Split, Duration) {
    let cpu0 = thread_cpu_time();
    let start = Instant::now();
    let (mut units, mut split) = (0u64, Split::default());
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        black_box(compute_step(mix.compute_iters));
        let t1 = Instant::now();
        black_box(alloc_step(mix.alloc_count));
        let t2 = Instant::now();
        black_box(clone_step(src));
        let t3 = Instant::now();
        split.compute += (t1 - t0).as_nanos() as u64;
        split.alloc += (t2 - t1).as_nanos() as u64;
        split.clone += (t3 - t2).as_nanos() as u64;
        units += 1;
    }
    split.total = start.elapsed().as_nanos() as u64;
    (units, split, thread_cpu_time().saturating_sub(cpu0))
}

/// One workload run.
struct Run {
    /// Units per second, all workers.
    tput: f64,
    /// Time per step, summed over the workers.
    split: Split,
    /// CPU time of the worker threads.
    cpu: Duration,
}

/// Runs the workload on `THREADS` threads for `len`, calling `mid` half-way.
fn workload(mix: Mix, src: &Arc<Vec<u8>>, len: Duration, mid: impl FnOnce()) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, src) = (stop.clone(), src.clone());
            std::thread::Builder::new()
                .name(format!("{WORKER}-{t}"))
                .spawn(move || worker_loop(mix, &src, &stop))
                .expect("spawn")
        })
        .collect();
    std::thread::sleep(len / 2);
    mid();
    std::thread::sleep(len.saturating_sub(t0.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let (mut units, mut split, mut cpu) = (0, Split::default(), Duration::ZERO);
    for h in handles {
        let (u, s, c) = h.join().expect("join");
        units += u;
        split.add(s);
        cpu += c;
    }
    Run {
        tput: units as f64 / t0.elapsed().as_secs_f64(),
        split,
        cpu,
    }
}

/// Chooses the step sizes so one unit is ~60 % compute, ~5 % alloc, ~35 % clone.
fn calibrate(src: &Vec<u8>) -> Mix {
    let per_call = |f: &dyn Fn() -> u64, n: u32| {
        let t = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        t.elapsed().as_secs_f64() / f64::from(n)
    };
    let _ = per_call(&|| clone_step(src), 200);
    let clone = per_call(&|| clone_step(src), 400);
    let compute = per_call(&|| compute_step(100_000), 200) / 100_000.0;
    let alloc = per_call(&|| alloc_step(1000), 200) / 1000.0;
    let unit = clone / 0.35;
    Mix {
        compute_iters: (unit * 0.60 / compute) as u64,
        alloc_count: ((unit * 0.05 / alloc) as u64).max(1),
    }
}

// ---------------------------------------------------------------- samples by part

/// Which part of the loop a stack (outermost first or innermost first, any order) is in.
fn part_of<'a>(mut names: impl Iterator<Item = &'a str>) -> usize {
    let mut part = 3;
    for n in names.by_ref() {
        if n.ends_with("clone_step") {
            part = part.min(2);
        } else if n.ends_with("alloc_step") {
            part = part.min(1);
        } else if n.ends_with("compute_step") {
            part = 0;
        }
    }
    part
}

/// Samples of the worker threads by part, from prodbg's folded text (thread name first).
fn parts_folded(folded: &[u8]) -> [u64; 4] {
    let mut parts = [0u64; 4];
    for line in String::from_utf8_lossy(folded).lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let mut frames = stack.split(';');
        if !frames.next().is_some_and(|t| t.starts_with(WORKER)) {
            continue;
        }
        parts[part_of(frames)] += count.parse::<u64>().unwrap_or(0);
    }
    parts
}

/// The worker stacks in no step ("other"), most sampled first, innermost frames first.
fn other_stacks(folded: &[u8], n: usize) -> Vec<(u64, String)> {
    let mut other: Vec<(u64, String)> = String::from_utf8_lossy(folded)
        .lines()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            let frames: Vec<&str> = stack.split(';').collect();
            let worker = frames.first().is_some_and(|t| t.starts_with(WORKER));
            (worker && part_of(frames.iter().copied().skip(1)) == 3).then(|| {
                let inner: Vec<&str> = frames.iter().rev().take(4).copied().collect();
                (count.parse().unwrap_or(0), inner.join(" <- "))
            })
        })
        .collect();
    other.sort_by_key(|o| std::cmp::Reverse(o.0));
    other.truncate(n);
    other
}

/// Samples of the worker threads by part, from a pprof-rs report.
fn parts_pprof_rs(report: &pprof::Report) -> [u64; 4] {
    let mut parts = [0u64; 4];
    for (frames, &count) in &report.data {
        if !frames.thread_name.starts_with(WORKER) {
            continue;
        }
        let names: Vec<String> = frames.frames.iter().flatten().map(|s| s.name()).collect();
        parts[part_of(names.iter().map(String::as_str))] += count.max(0) as u64;
    }
    parts
}

/// Total-variation distance between sampled part counts and true shares.
fn tvd(parts: [u64; 4], truth: [f64; 4]) -> f64 {
    let n = parts.iter().sum::<u64>().max(1) as f64;
    0.5 * parts
        .iter()
        .zip(truth)
        .map(|(&p, t)| (p as f64 / n - t).abs())
        .sum::<f64>()
}

fn fmt_shares(s: [f64; 4]) -> String {
    format!(
        "compute {:.3}, alloc {:.3}, clone {:.3}, other {:.3}",
        s[0], s[1], s[2], s[3]
    )
}

fn shares_of(parts: [u64; 4]) -> [f64; 4] {
    let n = parts.iter().sum::<u64>().max(1) as f64;
    parts.map(|p| p as f64 / n)
}

// ---------------------------------------------------------------- memory

/// `(VmRSS, RssAnon, RssFile, VmHWM)` of this process in MB.
fn rss_mb() -> [f64; 4] {
    let status = Status::read();
    let field = |name: &str| status.kb(name).map_or(f64::NAN, |kb| kb as f64 / 1024.0);
    [
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:"),
    ]
}

fn fmt_rss(r: [f64; 4]) -> String {
    format!("{:.1} (anon {:.1}, file {:.1})", r[0], r[1], r[2])
}

/// Before / peak / after of one symbolizing step, as printed and as (added peak, kept).
fn memory_line(label: &str, before: [f64; 4], peak: f64, after: [f64; 4]) -> (f64, f64) {
    println!(
        "{label}: RSS MB before {}, peak {peak:.1}, after {}  => peak +{:.1} MB, kept +{:.1} MB \
         (anon {:+.1})",
        fmt_rss(before),
        fmt_rss(after),
        peak - before[0],
        after[0] - before[0],
        after[1] - before[1],
    );
    (peak - before[0], after[0] - before[0])
}

// ---------------------------------------------------------------- server-side timings

/// `stop_ms` and `render_ms` of the last profile, from prodbg's own log events.
static SERVER_MS: Mutex<(Option<f64>, Option<f64>)> = Mutex::new((None, None));

struct TimingLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TimingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct V<'a>(&'a mut (Option<f64>, Option<f64>), bool);
        impl tracing::field::Visit for V<'_> {
            fn record_f64(&mut self, f: &tracing::field::Field, v: f64) {
                match f.name() {
                    "stop_ms" => self.0 .0 = Some(v),
                    "render_ms" if self.1 => self.0 .1 = Some(v),
                    _ => {}
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        // The probe's summary line ("CPU profile taken") carries the render time of the format
        // the request asked for.
        let summary = event.metadata().target() == "prodbg";
        let mut ms = SERVER_MS.lock().unwrap_or_else(|e| e.into_inner());
        event.record(&mut V(&mut ms, summary));
    }
}

fn take_server_ms() -> Option<f64> {
    let mut ms = SERVER_MS.lock().unwrap_or_else(|e| e.into_inner());
    let (stop, render) = std::mem::take(&mut *ms);
    Some(stop? + render?)
}

// ---------------------------------------------------------------- HTTP

/// A CPU profile response.
struct Response {
    samples: u64,
    body: Vec<u8>,
    /// When the whole body had arrived.
    received: Instant,
}

/// Sends `GET /debug/pprof/profile` on `http`'s runtime; the returned task yields the response.
fn start_profile(
    http: &Http,
    seconds: u64,
    hz: u32,
    format: &str,
) -> tokio::task::JoinHandle<Response> {
    let request = http
        .client
        .get(format!(
            "{}/debug/pprof/profile?seconds={seconds}&frequency={hz}&format={format}",
            http.base
        ))
        .bearer_auth(SECRET);
    http.rt.spawn(async move {
        let r = request.send().await.expect("GET /debug/pprof/profile");
        let status = r.status();
        let samples = r
            .headers()
            .get("x-prodbg-samples")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok());
        let body = r.bytes().await.expect("profile body").to_vec();
        let received = Instant::now();
        assert!(
            status.is_success(),
            "profile: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Response {
            samples: samples.expect("x-prodbg-samples"),
            body,
            received,
        }
    })
}

/// A profile taken while the workload ran.
struct Profiled {
    run: Run,
    resp: Response,
    /// Workload end → response complete: stop + symbolize + encode + transfer.
    tail: Duration,
}

/// Requests a `seconds` profile at `hz` in `format`, waits until it runs, runs the workload for
/// `seconds` (calling `mid` half-way), then waits for the response.
#[allow(clippy::too_many_arguments)]
fn profiled(
    http: &Http,
    mix: Mix,
    src: &Arc<Vec<u8>>,
    seconds: u64,
    hz: u32,
    format: &str,
    mid: impl FnOnce(),
) -> Profiled {
    let sent = Instant::now();
    let pending = start_profile(http, seconds, hz, format);
    while !http.profile_running("cpu") {
        assert!(
            !pending.is_finished(),
            "the profile ended before it was seen running"
        );
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "profile not running 60 s after the request"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let run = workload(mix, src, Duration::from_secs(seconds), mid);
    let workload_end = Instant::now();
    let resp = http.rt.block_on(pending).expect("profile task");
    Profiled {
        tail: resp.received.saturating_duration_since(workload_end),
        run,
        resp,
    }
}

/// pprof-rs on the same workload: the run, its worker samples by part.
fn pprof_rs(mix: Mix, src: &Arc<Vec<u8>>, seconds: u64) -> (Run, pprof::Report, Duration) {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .expect("pprof-rs profiler");
    let run = workload(mix, src, Duration::from_secs(seconds), || {});
    let t = Instant::now();
    let report = guard.report().build().expect("pprof-rs report");
    let took = t.elapsed();
    drop(guard);
    (run, report, took)
}

// ---------------------------------------------------------------- statistics

fn stats(v: &[f64]) -> String {
    match spread(v.to_vec()) {
        None => "-".into(),
        Some((lo, med, hi)) if v.len() > 1 => format!("{lo:.3} / {med:.3} / {hi:.3}"),
        Some((only, _, _)) => format!("{only:.3}"),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[derive(Default)]
struct Series {
    tput: Vec<f64>,
    rate: Vec<f64>,
    /// Against the unprofiled run's timers (the truth).
    tvd: Vec<f64>,
    /// Against the profiled run's own timers (sampling error alone, without workload drift).
    tvd_own: Vec<f64>,
    /// Samples by part over all rounds, and the truth's time by part over all rounds.
    pooled: [u64; 4],
    pooled_truth: Split,
}

impl Series {
    /// `base_tput`: the unprofiled throughput around this run (the mean of the unprofiled runs
    /// before and after its round, so a drift in the machine's speed cancels).
    fn push(&mut self, run: &Run, base: &Run, base_tput: f64, parts: [u64; 4], hz: u32) {
        self.tput.push(run.tput / base_tput);
        self.rate
            .push(parts.iter().sum::<u64>() as f64 / (run.cpu.as_secs_f64() * f64::from(hz)));
        self.tvd.push(tvd(parts, base.split.shares()));
        self.tvd_own.push(tvd(parts, run.split.shares()));
        for (p, k) in self.pooled.iter_mut().zip(parts) {
            *p += k;
        }
        self.pooled_truth.add(base.split);
    }

    fn print(&self, label: &str) {
        println!(
            "{label:<15} throughput ÷ unprofiled {}   samples ÷ (CPU s × Hz) {}",
            stats(&self.tput),
            stats(&self.rate),
        );
        println!(
            "{:<15} TVD per round {} (vs its own timers {}); all rounds pooled {:.3}: {}",
            "",
            stats(&self.tvd),
            stats(&self.tvd_own),
            tvd(self.pooled, self.pooled_truth.shares()),
            fmt_shares(shares_of(self.pooled)),
        );
    }
}

fn main() {
    // `RUST_LOG=prodbg=debug` shows the probe's own symbolize/trim/render timings on stderr.
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::EnvFilter::from_default_env()),
        )
        .with(
            TimingLayer.with_filter(
                "prodbg=info"
                    .parse::<tracing_subscriber::filter::Targets>()
                    .expect("targets"),
            ),
        )
        .init();
    let rounds = common::env::rounds(DEFAULT_ROUNDS);
    let exe = std::env::current_exe().expect("current_exe");
    let exe_mb = std::fs::metadata(&exe).map_or(0.0, |m| m.len() as f64 / 1e6);
    println!(
        "cpu_overhead: {THREADS} workers, {} CPUs, this binary {exe_mb:.0} MB (debug = 1); \
         profiles over HTTP from an in-process admin server",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Clones come from the heap, not a fresh mapping each (see `worker_loop`).
    // SAFETY: mallopt only changes glibc's thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
    let src = Arc::new(vec![7u8; CLONE_BYTES]);
    let mix = calibrate(&src);
    let truth = workload(mix, &src, Duration::from_secs(ROUND_S), || {});
    println!(
        "workload {mix:?}: true shares (timers, unprofiled) {}",
        fmt_shares(truth.split.shares())
    );

    let admin = common::admin::spawn("cpu_overhead");
    let http = Http::new(&admin);
    assert!(!http.profile_running("cpu"), "no profile running at start");
    let _ = http.get("/debug/");

    // 1. Memory and latency of symbolization, first in the process and later.
    println!("\n-- symbolization memory and latency ({LONG_S} s profiles at 99 Hz, pprof format)");
    let (mut peak_added, mut kept, mut server) = (vec![], vec![], vec![]);
    {
        // The profiler's one-time set-up (its sampler thread, the server's blocking thread and
        // their allocator arenas), without symbolization: what stays of it is not the
        // symbolizer's.
        let before = rss_mb();
        let p = profiled(
            &http,
            mix,
            &src,
            ROUND_S,
            99,
            "pprof&symbolize=false",
            || {},
        );
        drop(p.resp.body);
        let after = rss_mb();
        println!(
            "first profile in the process, unsymbolized ({ROUND_S} s): RSS MB before {}, after {}  => kept +{:.1} MB (anon {:+.1})",
            fmt_rss(before),
            fmt_rss(after),
            after[0] - before[0],
            after[1] - before[1]
        );
        take_server_ms();
    }
    for label in ["first symbolized CPU profile", "later CPU profile"] {
        let before = rss_mb();
        let mut during = [0.0; 4];
        take_server_ms();
        let p = profiled(&http, mix, &src, LONG_S, 99, "pprof", || {
            during = rss_mb();
            reset_peak();
        });
        let peak = rss_mb()[3];
        let server_ms = take_server_ms();
        if let (Some(dir), false) = (
            std::env::var_os("PRODBG_BENCH_OUT"),
            label == "later CPU profile",
        ) {
            std::fs::write(std::path::Path::new(&dir).join("cpu.pb.gz"), &p.resp.body)
                .expect("write");
        }
        drop(p.resp.body);
        let after = rss_mb();
        println!(
            "{label}: {} samples; stop + symbolize + encode {} ms server-side, {:.0} ms to the \
             last byte; RSS while sampling {}",
            p.resp.samples,
            server_ms.map_or("?".into(), |m| format!("{m:.0}")),
            ms(p.tail),
            fmt_rss(during)
        );
        let (a, k) = memory_line(label, before, peak, after);
        peak_added.push(a);
        kept.push(k);
        server.extend(server_ms);
    }
    for label in ["first thread dump", "later thread dump"] {
        let before = rss_mb();
        reset_peak();
        let t = Instant::now();
        let body = http.get("/debug/threads");
        let took = t.elapsed();
        let peak = rss_mb()[3];
        drop(body);
        let after = rss_mb();
        println!("{label}: {:.0} ms", ms(took));
        let (a, k) = memory_line(label, before, peak, after);
        peak_added.push(a);
        kept.push(k);
    }
    {
        // The server's blocking threads (where symbolization runs) exit after 10 s idle, and
        // with them their stacks.
        std::thread::sleep(Duration::from_secs(11));
        println!(
            "after the server's blocking threads idled out: RSS MB {}",
            fmt_rss(rss_mb())
        );
        let before = rss_mb();
        let (_run, report, took) = pprof_rs(mix, &src, LONG_S);
        drop(report);
        let after = rss_mb();
        println!(
            "pprof-rs first report: {:.0} ms; RSS MB before {}, after {}  => kept +{:.1} MB",
            ms(took),
            fmt_rss(before),
            fmt_rss(after),
            after[0] - before[0]
        );
    }

    // 2. Accuracy and overhead, interleaved rounds.
    println!("\n-- accuracy and overhead: {rounds} rounds of {ROUND_S} s per configuration");
    let (mut s99, mut s999, mut srs) = (Series::default(), Series::default(), Series::default());
    let mut tails = vec![];
    let mut last = None;
    let mut base = workload(mix, &src, Duration::from_secs(ROUND_S), || {});
    for round in 0..rounds {
        let p99 = profiled(&http, mix, &src, ROUND_S, 99, "folded", || {});
        let later = take_server_ms();
        let p999 = profiled(&http, mix, &src, ROUND_S, 999, "folded", || {});
        let later999 = take_server_ms();
        let (rs_run, rs_report, _) = pprof_rs(mix, &src, ROUND_S);
        let next = workload(mix, &src, Duration::from_secs(ROUND_S), || {});
        let base_tput = (base.tput + next.tput) / 2.0;
        let (k99, k999, krs) = (
            parts_folded(&p99.resp.body),
            parts_folded(&p999.resp.body),
            parts_pprof_rs(&rs_report),
        );
        s99.push(&p99.run, &base, base_tput, k99, 99);
        s999.push(&p999.run, &base, base_tput, k999, 999);
        srs.push(&rs_run, &base, base_tput, krs, 99);
        server.extend(later.into_iter().chain(later999));
        tails.extend([ms(p99.tail), ms(p999.tail)]);
        println!(
            "round {round}: truth {}; 99 Hz x{:.3} {} samples, 999 Hz x{:.3} {} samples, \
             pprof-rs x{:.3} {} samples",
            fmt_shares(base.split.shares()),
            p99.run.tput / base_tput,
            k99.iter().sum::<u64>(),
            p999.run.tput / base_tput,
            k999.iter().sum::<u64>(),
            rs_run.tput / base_tput,
            krs.iter().sum::<u64>(),
        );
        if round + 1 == rounds {
            for (count, stack) in other_stacks(&p999.resp.body, 4) {
                println!("  'other' at 999 Hz: {count} samples: {stack}");
            }
        }
        last = Some((base.split.shares(), k99, krs));
        base = next;
    }
    if let Some((truth, k99, krs)) = last {
        println!("last round, true shares:     {}", fmt_shares(truth));
        println!(
            "last round, prodbg 99 Hz:    {}",
            fmt_shares(shares_of(k99))
        );
        println!(
            "last round, pprof-rs 99 Hz:  {}",
            fmt_shares(shares_of(krs))
        );
    }

    // 3. Overhead on pure compute: same interleaving, less noise.
    println!("\n-- overhead on pure compute: {rounds} rounds of {ROUND_S} s per configuration");
    let (mut c99, mut c999) = (vec![], vec![]);
    let run = Duration::from_secs(ROUND_S);
    let mut before = compute_only(run);
    for _ in 0..rounds {
        let mut on = [0.0; 2];
        for (i, hz) in [99, 999].into_iter().enumerate() {
            let pending = start_profile(&http, ROUND_S + 1, hz, "folded");
            while !http.profile_running("cpu") {
                std::thread::sleep(Duration::from_millis(2));
            }
            on[i] = compute_only(run);
            http.rt.block_on(pending).expect("profile task");
        }
        let after = compute_only(run);
        let base = (before + after) / 2.0;
        c99.push(on[0] / base);
        c999.push(on[1] / base);
        before = after;
    }

    println!("\n-- summary (min / median / max)");
    s99.print("prodbg 99 Hz");
    s999.print("prodbg 999 Hz");
    srs.print("pprof-rs 99 Hz");
    println!(
        "pure compute, throughput ÷ unprofiled: 99 Hz {}, 999 Hz {}",
        stats(&c99),
        stats(&c999)
    );
    println!(
        "symbolization memory: peak +MB {}; kept +MB {} (CPU first, later, thread dump first, later)",
        kept_fmt(&peak_added),
        kept_fmt(&kept)
    );
    println!(
        "stop + symbolize + encode, server-side ms: first {}, later ones {}; 2 s profile to the last byte after the workload: {} ms",
        server.first().map_or("?".into(), |m| format!("{m:.0}")),
        stats(server.get(1..).unwrap_or(&[])),
        stats(&tails)
    );
    drop(http);
    admin.shutdown();
    println!("RSS MB at end: {}", fmt_rss(rss_mb()));
}

fn kept_fmt(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}
