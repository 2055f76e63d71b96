//! CPU profiler cost, measured the way an operator takes profiles: an in-process [`Admin`]
//! server on 127.0.0.1:0 and `GET /debug/pprof/profile` over real HTTP.
//!
//! - Throughput of a CPU-bound 2-thread workload while a profile runs at 99 and 999 Hz,
//!   relative to unprofiled (interleaved rounds, median ratio).
//! - Samples delivered (`x-prodbg-samples`) ÷ (threads × Hz × s) and ÷ (process CPU s × Hz),
//!   the process CPU time read with `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` around the
//!   workload.
//! - How long the response takes beyond `seconds`, split into start (request sent → the index
//!   reports `probes.cpu.profile_running`) and stop + symbolize + encode + transfer (workload
//!   end → body received), for the first profile in the process and a later one.
//! - RSS (VmRSS, RssAnon, RssFile from /proc/self/status) before, during and after a long
//!   profile.
//!
//! Not measurable through the public API any more: the server-side `stop()` time alone and the
//! encode time of one profile in several formats (a request returns one format of its own
//! profile). The bench reports the response time beyond `seconds` instead, and encodes a
//! separate profile per format to compare formats. `RUST_LOG=prodbg=debug` (or `info`) shows the
//! server's own `stop_ms` / `render_ms` log lines.
//!
//! Run: `cargo bench --bench cpu_overhead` (about 3 minutes). `PRODBG_BENCH_ROUNDS=n` sets
//! the interleaved rounds (default 7). Set `PRODBG_BENCH_OUT=dir` to also write the per-format
//! profiles as `cpu.pb.gz`, `cpu.folded` and `cpu.svg` there (for `go tool pprof`).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prodbg::{Admin, AdminHandle, Scope};

const THREADS: usize = 2;
const DEFAULT_ROUNDS: usize = 7;
/// Length of one interleaved round, in seconds (the profile endpoint takes whole seconds).
const ROUND_S: u64 = 2;
/// Length of the long profiles that measure memory and first-profile cost.
const LONG_S: u64 = 30;
/// Length of the per-format profiles.
const FORMAT_S: u64 = 5;
const SECRET: &str = "bench-secret-0123456789abcdef";

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

/// CPU time of the whole process so far.
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One workload run: work units per second, and the process CPU time it spanned.
struct Run {
    tput: f64,
    cpu: Duration,
}

/// Runs the workload on `THREADS` threads for `len`, calling `mid` half-way.
fn workload(len: Duration, mid: impl FnOnce()) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = process_cpu_time();
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
    Run {
        tput: units as f64 / t0.elapsed().as_secs_f64(),
        cpu: process_cpu_time().saturating_sub(cpu0),
    }
}

/// `(VmRSS, RssAnon, RssFile)` of this process in MB; RssFile is mapped files (the binary).
fn rss_mb() -> (f64, f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

fn fmt_rss((rss, anon, file): (f64, f64, f64)) -> String {
    format!("{rss:.1} (anon {anon:.1}, file {file:.1})")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A CPU profile response.
struct Response {
    samples: u64,
    effective_hz: f64,
    warning: Option<String>,
    body: Vec<u8>,
    /// When the whole body had arrived.
    received: Instant,
}

/// An HTTP client of the in-process admin server, on a one-worker Tokio runtime so a profile
/// request proceeds while the calling thread runs the workload.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(admin: &AdminHandle) -> Http {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-http")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("reqwest client");
        Http {
            rt,
            client,
            base: admin.url(),
        }
    }

    /// `probes.cpu.profile_running` from the JSON index.
    fn profile_running(&self) -> bool {
        let index: serde_json::Value = self.rt.block_on(async {
            self.client
                .get(format!("{}/debug/", self.base))
                .bearer_auth(SECRET)
                .header("accept", "application/json")
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .expect("GET /debug/")
                .json()
                .await
                .expect("JSON index")
        });
        index["probes"]["cpu"]["profile_running"]
            .as_bool()
            .expect("probes.cpu.profile_running in the index")
    }

    /// Sends `GET /debug/pprof/profile` on the runtime; the returned task yields the response.
    fn start_profile(
        &self,
        seconds: u64,
        hz: u32,
        format: &str,
    ) -> tokio::task::JoinHandle<Response> {
        let request = self
            .client
            .get(format!(
                "{}/debug/pprof/profile?seconds={seconds}&frequency={hz}&format={format}",
                self.base
            ))
            .bearer_auth(SECRET);
        self.rt.spawn(async move {
            let r = request.send().await.expect("GET /debug/pprof/profile");
            let status = r.status();
            let header = |name: &str| {
                r.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (samples, effective_hz, warning) = (
                header("x-prodbg-samples"),
                header("x-prodbg-effective-sample-rate"),
                header("x-prodbg-warning"),
            );
            let body = r.bytes().await.expect("profile body").to_vec();
            let received = Instant::now();
            assert!(
                status.is_success(),
                "profile: {status}: {}",
                String::from_utf8_lossy(&body)
            );
            Response {
                samples: samples
                    .and_then(|s| s.parse().ok())
                    .expect("x-prodbg-samples"),
                effective_hz: effective_hz
                    .and_then(|s| s.parse().ok())
                    .expect("x-prodbg-effective-sample-rate"),
                warning,
                body,
                received,
            }
        })
    }
}

/// A profile taken while the workload ran.
struct Profiled {
    run: Run,
    resp: Response,
    seconds: u64,
    hz: u32,
    /// Request sent → the index shows the profile running.
    start: Duration,
    /// Response complete − request sent − `seconds`.
    beyond: Duration,
    /// Workload end → response complete: stop + symbolize + encode + transfer.
    tail: Duration,
}

impl Profiled {
    /// Samples ÷ (busy threads × Hz × s), and ÷ (process CPU s × Hz): the second does not count
    /// CPU the workload did not get on a shared machine.
    fn accuracy(&self) -> (f64, f64) {
        let (samples, hz) = (self.resp.samples as f64, f64::from(self.hz));
        (
            samples / (THREADS as f64 * hz * self.seconds as f64),
            samples / (self.run.cpu.as_secs_f64() * hz),
        )
    }
}

/// Requests a `seconds` profile at `hz` in `format`, waits until it runs, runs the workload for
/// `seconds` (calling `mid` half-way), then waits for the response.
fn profiled(http: &Http, seconds: u64, hz: u32, format: &str, mid: impl FnOnce()) -> Profiled {
    let sent = Instant::now();
    let pending = http.start_profile(seconds, hz, format);
    while !http.profile_running() {
        if pending.is_finished() {
            // It failed (or ended) before it was seen running: surface why.
            let r = http.rt.block_on(pending).expect("profile task");
            panic!(
                "profile ended before it was seen running ({} B)",
                r.body.len()
            );
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "profile not running 60 s after the request"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let start = sent.elapsed();
    let run = workload(Duration::from_secs(seconds), mid);
    let workload_end = Instant::now();
    let resp = http.rt.block_on(pending).expect("profile task");
    let elapsed = resp.received.duration_since(sent);
    Profiled {
        tail: resp.received.saturating_duration_since(workload_end),
        beyond: elapsed.saturating_sub(Duration::from_secs(seconds)),
        run,
        resp,
        seconds,
        hz,
        start,
    }
}

fn stack_count(folded: &[u8]) -> usize {
    String::from_utf8_lossy(folded)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn long_profile(http: &Http, label: &str) {
    let before = rss_mb();
    let mut during = (0.0, 0.0, 0.0);
    let p = profiled(http, LONG_S, 99, "folded", || during = rss_mb());
    let after_response = rss_mb();
    println!(
        "{label}: {LONG_S} s x 99 Hz x {THREADS} threads: {} samples, {} stacks ({} B folded); \
         response {:.0} ms beyond seconds: start {:.0} ms, stop + symbolize + encode + transfer {:.0} ms",
        p.resp.samples,
        stack_count(&p.resp.body),
        p.resp.body.len(),
        ms(p.beyond),
        ms(p.start),
        ms(p.tail),
    );
    drop(p);
    println!(
        "{label}: RSS MB before {}, during {}, after response {}, after drop {}",
        fmt_rss(before),
        fmt_rss(during),
        fmt_rss(after_response),
        fmt_rss(rss_mb())
    );
}

fn main() {
    // `RUST_LOG=prodbg=debug` shows the probe's symbolize/trim/render timings.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let rounds = std::env::var("PRODBG_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_ROUNDS);
    // cargo bench passes `--bench`; ignore arguments.
    println!(
        "cpu_overhead: {THREADS} busy threads, {} CPUs, profiles over HTTP from an in-process admin server",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let admin = Admin::builder()
        .bind("127.0.0.1:0")
        .service_name("cpu_overhead")
        .token("ops", Scope::Admin, SECRET)
        .spawn()
        .expect("admin server");
    let http = Http::new(&admin);
    assert!(!http.profile_running(), "no profile running at start");

    // 1. Memory and response time of long profiles; the first also pays for parsing debug info.
    long_profile(&http, "profile 1 (first in process)");
    long_profile(&http, "profile 2 (symbol cache warm)");

    // 2. Encoding cost per format: one profile each (a response carries one format).
    let out = std::env::var_os("PRODBG_BENCH_OUT").map(std::path::PathBuf::from);
    for (format, file) in [
        ("folded", "cpu.folded"),
        ("pprof", "cpu.pb.gz"),
        ("svg", "cpu.svg"),
    ] {
        let p = profiled(&http, FORMAT_S, 999, format, || {});
        println!(
            "format {format:<6}: {FORMAT_S} s x 999 Hz: {} samples, {} B; stop + symbolize + encode + transfer {:.0} ms",
            p.resp.samples,
            p.resp.body.len(),
            ms(p.tail),
        );
        if let Some(dir) = &out {
            std::fs::write(dir.join(file), &p.resp.body).expect("write");
        }
    }

    // 3. Overhead and sampling accuracy, interleaved rounds.
    let (mut r99, mut r999, mut beyond, mut tails) = (vec![], vec![], vec![], vec![]);
    let (mut a99, mut a999, mut c99, mut c999) = (vec![], vec![], vec![], vec![]);
    let mut warnings = std::collections::BTreeSet::new();
    for round in 0..rounds {
        let base = workload(Duration::from_secs(ROUND_S), || {}).tput;
        let p99 = profiled(&http, ROUND_S, 99, "folded", || {});
        let p999 = profiled(&http, ROUND_S, 999, "folded", || {});
        r99.push(p99.run.tput / base);
        r999.push(p999.run.tput / base);
        a99.push(p99.accuracy().0);
        a999.push(p999.accuracy().0);
        c99.push(p99.accuracy().1);
        c999.push(p999.accuracy().1);
        for p in [&p99, &p999] {
            beyond.push(ms(p.beyond));
            tails.push(ms(p.tail));
            warnings.extend(p.resp.warning.clone());
        }
        println!(
            "round {round}: base {base:.0} units/s, 99 Hz x{:.4} ({} samples), 999 Hz x{:.4} ({} samples, {:.0}/s)",
            p99.run.tput / base,
            p99.resp.samples,
            p999.run.tput / base,
            p999.resp.samples,
            p999.resp.effective_hz
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
        "median response time beyond seconds of a {ROUND_S} s profile: {:.1} ms; \
         of which stop (incl. malloc_trim) + symbolize + encode + transfer: {:.1} ms",
        median(beyond),
        median(tails)
    );
    for w in warnings {
        println!("warning from the profiler: {w}");
    }
    drop(http);
    admin.shutdown();
    println!("RSS MB at end: {}", fmt_rss(rss_mb()));
}
