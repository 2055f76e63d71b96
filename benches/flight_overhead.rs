//! What the always-on CPU flight recorder (`FlightRecorder::default()`: 19 Hz of each thread's
//! CPU time, 10 minutes of history) costs a host, side by side with the recorder off and with
//! pprof-rs kept running as a continuous-profiling agent would.
//!
//! The recorder is process-global, so each configuration runs in a child process of its own
//! (this binary again, `FLIGHT_CHILD=<part>:<configuration>`); every child spawns an admin server
//! with the bench token, and only its recorder setting differs. Rounds interleave the
//! configurations; ratios pair a configuration's child with the same round's `off` child, so a
//! round compares processes run moments apart; min / median / max over the rounds.
//!
//! 1. **Pure compute**: 2 threads (`flight-busy-*`) spinning `compute_step`. Throughput (units
//!    per wall second) and the workers' CPU per unit (thread CPU clocks: immune to other
//!    processes taking the cores) for: `off`; `recorder on`; `pprof-rs 19 Hz` (the recorder off,
//!    a `pprof::ProfilerGuard` at 19 Hz alive the whole run: one `ITIMER_PROF` for the process,
//!    so 19 samples per second of the process's CPU, not of each thread's); `999 Hz lease` (the
//!    recorder on, an on-demand profile at 999 Hz leasing its sampler), whose CPU per unit gives
//!    the signal handler's cost per sample.
//! 2. **The recorder's own CPU** on a host of 2 busy threads and 50 idle threads (blocked on a
//!    channel): the CPU of the recorder's threads (`prodbg-flight`, `prodbg-cpu-scan`, from
//!    `/proc/self/task/<tid>/schedstat`, nanoseconds) over the window, plus the handler's share
//!    (samples, i.e. the process's CPU seconds × 19, × the handler cost per sample from part 1),
//!    as a share of one core. The process's CPU outside the busy threads, on minus off, is printed
//!    beside it as a cross-check (it includes the admin server's own threads, and noise).
//! 3. **Memory of the history**: 16 busy threads walking a family of 8 generated functions to a
//!    depth of 3 to 7 frames chosen by a counter (millions of distinct stacks, so nearly every
//!    sample is a new one: the worst case for the history). VmRSS growth over `FLIGHT_MINUTES`
//!    with the recorder on and off, and the recorder's own estimate (the index's
//!    `flight` figure, read over loopback HTTP), read every 30 s.
//!
//! ```text
//! cargo bench --bench flight_overhead                     # ROUNDS=7, FLIGHT_MINUTES=2
//! ROUNDS=3 FLIGHT_MINUTES=10 cargo bench --bench flight_overhead
//! ```
//!
//! Other settings: `RUN_MS` (part 1's run per child, default 3000), `IDLE_RUN_S` (part 2's
//! window, default 10: about one rotation of the recorder's history falls in each).

pub mod common;

use common::child::{number, run_self};
use common::clock::{process_cpu_time, thread_cpu_time};
use common::env::env_u64 as env;
use common::http::{figure, Http};
use common::memory::rss_bytes;
use common::stats::min_median_max as stats;
use common::work::compute_step;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prodbg::{Admin, AdminHandle, FlightRecorder};

const HZ: f64 = 19.0;
const LEASE_HZ: f64 = 999.0;
const BUSY: &str = "flight-busy";
const COMPUTE: &[&str] = &["off", "recorder on", "pprof-rs 19 Hz", "999 Hz lease"];
const IDLE: &[&str] = &["off", "recorder on"];
const IDLE_THREADS: usize = 50;
const HISTORY_THREADS: usize = 16;

// ---------------------------------------------------------------- workloads

/// Busy threads running `unit` until stopped; each counts its units and its CPU time.
struct Busy {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<(u64, Duration)>>,
    t0: Instant,
}

impl Busy {
    fn start(threads: usize, unit: fn(u64) -> u64) -> Busy {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|t| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("{BUSY}-{t}"))
                    .spawn(move || {
                        let cpu0 = thread_cpu_time();
                        let mut units = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            black_box(unit(units));
                            units += 1;
                        }
                        (units, thread_cpu_time().saturating_sub(cpu0))
                    })
                    .expect("spawn")
            })
            .collect();
        Busy {
            stop,
            handles,
            t0: Instant::now(),
        }
    }

    /// Stops the threads: (units per wall second, the threads' CPU nanoseconds per unit).
    fn finish(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut units, mut cpu) = (0u64, Duration::ZERO);
        for h in self.handles {
            let (u, c) = h.join().expect("join");
            units += u;
            cpu += c;
        }
        (
            units as f64 / self.t0.elapsed().as_secs_f64(),
            cpu.as_nanos() as f64 / units.max(1) as f64,
        )
    }
}

/// The pure-compute unit: a named function, no memory traffic.
fn spin(_: u64) -> u64 {
    compute_step(20_000)
}

/// Eight functions that differ (so no pass merges them), each calling the next one chosen by
/// the path's low 3 bits until the depth runs out, then spinning: every (depth, path) is a
/// distinct stack of return addresses.
macro_rules! stack_family {
    ($($f:ident = $k:expr),+ $(,)?) => {
        $(
            #[inline(never)]
            fn $f(path: u64, depth: u32) -> u64 {
                let r = if depth == 0 {
                    compute_step(3_000 + (path & 0xff))
                } else {
                    FAMILY[(path & 7) as usize](path >> 3, depth - 1)
                };
                // Work after the call: no tail call, so the caller's frame stays on the stack.
                black_box(r).wrapping_add(path ^ $k)
            }
        )+
        const FAMILY: [fn(u64, u32) -> u64; 8] = [$($f),+];
    };
}

stack_family!(
    fam_a = 0x11,
    fam_b = 0x23,
    fam_c = 0x35,
    fam_d = 0x47,
    fam_e = 0x59,
    fam_f = 0x6b,
    fam_g = 0x7d,
    fam_h = 0x8f,
);

/// One walk of the family, its depth (2..=6 below the first call) and path from a counter.
fn walk(i: u64) -> u64 {
    let path = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    FAMILY[(path & 7) as usize](path >> 3, 2 + (i % 5) as u32)
}

// ---------------------------------------------------------------- the child's set-up

/// The admin server of configuration `config` (the recorder on unless it is `off` or pprof-rs).
fn admin(config: &str) -> AdminHandle {
    let flight = match config {
        "off" | "pprof-rs 19 Hz" => FlightRecorder::off(),
        _ => FlightRecorder::default(),
    };
    common::admin::spawn_from(Admin::builder().flight_recorder(flight), "flight-bench")
}

/// pprof-rs as a continuous-profiling agent would keep it: 19 Hz, the whole run.
fn pprof_rs() -> pprof::ProfilerGuard<'static> {
    pprof::ProfilerGuardBuilder::default()
        .frequency(19)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .expect("pprof-rs profiler")
}

/// Nanoseconds on CPU of this process's threads whose name starts with one of `prefixes`
/// (`/proc/self/task/<tid>/comm` and `schedstat`), one sum per prefix.
fn threads_cpu_ns(prefixes: &[&str]) -> Vec<u64> {
    let mut out = vec![0; prefixes.len()];
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let path = task.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let Some(i) = prefixes.iter().position(|p| comm.starts_with(p)) else {
            continue;
        };
        out[i] += std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
    }
    out
}

/// The recorder's figure in the JSON index: (distinct stacks, MiB), from its note
/// "<n> stacks, <x> MiB"; `None` when it is off.
fn flight_figure(http: &Http) -> Option<(f64, f64)> {
    let index = http.index();
    let note = figure(&index["probes"]["cpu"], "flight")
        .expect("the flight figure in probes.cpu of the index")
        .get("note")?
        .as_str()?
        .to_string();
    let (stacks, rest) = note.split_once(" stacks, ")?;
    Some((
        stacks.trim().parse().ok()?,
        rest.trim_end_matches("MiB").trim().parse().ok()?,
    ))
}

// ---------------------------------------------------------------- the children

/// Part 1: prints `tput <units/s> cpu_ns_per_unit <ns>`.
fn child_compute(config: &str) {
    let admin = admin(config);
    let http = Http::new(&admin);
    let _guard = (config == "pprof-rs 19 Hz").then(pprof_rs);
    let run = Duration::from_millis(env("RUN_MS", 3000));
    std::thread::sleep(Duration::from_millis(500));
    let lease = (config == "999 Hz lease").then(|| {
        let seconds = run.as_secs() + 2;
        let request = http
            .client
            .get(format!(
                "{}/debug/pprof/profile?seconds={seconds}&frequency={LEASE_HZ}&format=pprof&symbolize=false",
                http.base
            ))
            .bearer_auth(common::admin::SECRET);
        let pending = http.rt.spawn(async move {
            let r = request.send().await.expect("GET /debug/pprof/profile");
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            assert!(status.is_success(), "profile: {status}: {body}");
        });
        // The lease starts when the request is handled. (The index's `cpu` figure says "idle"
        // during a lease, so it cannot be polled for.)
        std::thread::sleep(Duration::from_millis(300));
        assert!(!pending.is_finished(), "the profile ended before the run");
        pending
    });
    let busy = Busy::start(2, spin);
    std::thread::sleep(run);
    let (tput, cpu) = busy.finish();
    if let Some(pending) = lease {
        http.rt.block_on(pending).expect("profile task");
    }
    println!("tput {tput:.1} cpu_ns_per_unit {cpu:.1}");
}

/// Part 2: prints the window's wall seconds, the process's CPU, the recorder threads' CPU and
/// the busy threads' CPU (ns).
fn child_idle(config: &str) {
    let _admin = admin(config);
    let mut idle = Vec::new();
    for i in 0..IDLE_THREADS {
        let (tx, rx) = mpsc::channel::<()>();
        let h = std::thread::Builder::new()
            .name(format!("flight-idle-{i}"))
            .spawn(move || {
                let _ = rx.recv();
            })
            .expect("spawn");
        idle.push((tx, h));
    }
    let busy = Busy::start(2, spin);
    std::thread::sleep(Duration::from_secs(1));
    let names = ["prodbg-flight", "prodbg-cpu-scan", BUSY];
    let (t0, p0, c0) = (Instant::now(), process_cpu_time(), threads_cpu_ns(&names));
    std::thread::sleep(Duration::from_secs(env("IDLE_RUN_S", 10)));
    let (wall, proc_cpu, c1) = (
        t0.elapsed(),
        process_cpu_time() - p0,
        threads_cpu_ns(&names),
    );
    let (tput, _) = busy.finish();
    for (tx, h) in idle {
        drop(tx);
        h.join().expect("join");
    }
    println!(
        "wall_s {:.4} proc_cpu_s {:.6} flight_ns {} scan_ns {} busy_ns {} tput {tput:.1}",
        wall.as_secs_f64(),
        proc_cpu.as_secs_f64(),
        c1[0] - c0[0],
        c1[1] - c0[1],
        c1[2] - c0[2],
    );
}

/// Part 3: readings every 30 s (`reading t_s .. rss_mib .. stacks .. est_mib ..`), then
/// `rss0_kib <kB> rss1_kib <kB> stacks <n> est_mib <MiB> minutes <m> proc_cpu_s <s>`.
fn child_history(config: &str) {
    let admin = admin(config);
    let http = Http::new(&admin);
    let minutes: f64 = std::env::var("FLIGHT_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .filter(|&m: &f64| m > 0.0)
        .unwrap_or(2.0);
    let busy = Busy::start(HISTORY_THREADS, walk);
    std::thread::sleep(Duration::from_secs(2));
    let _ = flight_figure(&http);
    let (rss0, t0, cpu0) = (rss_bytes(), Instant::now(), process_cpu_time());
    let end = Duration::from_secs_f64(minutes * 60.0);
    let mut next = Duration::from_secs(30).min(end);
    loop {
        std::thread::sleep(next.saturating_sub(t0.elapsed()));
        let (stacks, mib) = flight_figure(&http).unwrap_or((0.0, 0.0));
        println!(
            "reading t_s {:.0} rss_mib {:.1} stacks {stacks} est_mib {mib:.1}",
            t0.elapsed().as_secs_f64(),
            rss_bytes() as f64 / 1048576.0
        );
        if next >= end {
            break;
        }
        next = (next + Duration::from_secs(30)).min(end);
    }
    let (stacks, mib) = flight_figure(&http).unwrap_or((0.0, 0.0));
    let rss1 = rss_bytes();
    let elapsed = t0.elapsed();
    let cpu = process_cpu_time() - cpu0;
    busy.finish();
    println!(
        "rss0_kib {} rss1_kib {} stacks {stacks} est_mib {mib} minutes {:.3} proc_cpu_s {:.3}",
        rss0 / 1024,
        rss1 / 1024,
        elapsed.as_secs_f64() / 60.0,
        cpu.as_secs_f64()
    );
}

// ---------------------------------------------------------------- the parent

fn spread(v: Vec<f64>, digits: usize) -> String {
    let (lo, med, hi) = stats(v);
    format!("{lo:.digits$} / {med:.digits$} / {hi:.digits$}")
}

fn child(part: &str, config: &str) -> String {
    run_self(&[("FLIGHT_CHILD", format!("{part}:{config}"))])
}

fn main() {
    if let Ok(which) = std::env::var("FLIGHT_CHILD") {
        let (part, config) = which.split_once(':').expect("FLIGHT_CHILD=<part>:<config>");
        match part {
            "compute" => child_compute(config),
            "idle" => child_idle(config),
            "history" => child_history(config),
            other => panic!("no part {other}"),
        }
        return;
    }
    let rounds = env("ROUNDS", 7).max(1) as usize;
    println!(
        "flight_overhead: {} CPUs, {rounds} interleaved rounds, a child process per configuration \
         and round (min / median / max)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Pure compute.
    let mut tput = vec![Vec::new(); COMPUTE.len()];
    let mut cpu = vec![Vec::new(); COMPUTE.len()];
    for r in 0..rounds {
        for k in 0..COMPUTE.len() {
            let i = (k + r) % COMPUTE.len();
            let text = child("compute", COMPUTE[i]);
            tput[i].push(number(&text, "tput "));
            cpu[i].push(number(&text, "cpu_ns_per_unit "));
        }
    }
    println!(
        "\n-- 1. pure compute: 2 threads spinning compute_step, {} ms per child",
        env("RUN_MS", 3000)
    );
    println!(
        "{:<16} {:>26} {:>26} {:>24} {:>24}",
        "configuration", "units/s", "cpu ns/unit", "throughput ÷ off", "cpu/unit off ÷ this"
    );
    let ratio = |v: &[Vec<f64>], i: usize, inverse: bool| -> Vec<f64> {
        (0..rounds)
            .map(|r| {
                if inverse {
                    v[0][r] / v[i][r]
                } else {
                    v[i][r] / v[0][r]
                }
            })
            .collect()
    };
    for (i, name) in COMPUTE.iter().enumerate() {
        println!(
            "{name:<16} {:>26} {:>26} {:>24} {:>24}",
            spread(tput[i].clone(), 0),
            spread(cpu[i].clone(), 0),
            spread(ratio(&tput, i, false), 3),
            spread(ratio(&cpu, i, true), 3),
        );
    }
    let on = stats(ratio(&tput, 1, false));
    let rs = stats(ratio(&tput, 2, false));
    println!(
        "recorder on ÷ off, throughput: {:.3} median ({:.3}–{:.3}): {}; pprof-rs 19 Hz ÷ off: {:.3} ({:.3}–{:.3})",
        on.1,
        on.0,
        on.2,
        if on.1 >= 0.99 { "meets ≥ 0.99" } else { "MISSES ≥ 0.99" },
        rs.1,
        rs.0,
        rs.2
    );
    // Extra CPU per unit at 999 Hz: the handler's share of the workers' CPU.
    let extra = stats((0..rounds).map(|r| cpu[3][r] / cpu[0][r] - 1.0).collect());
    let per_sample = |x: f64| x.max(0.0) / (LEASE_HZ * (1.0 + x)) * 1e9;
    let handler_ns = per_sample(extra.1);
    println!(
        "signal handler per sample, from the 999 Hz lease's extra CPU per unit: {:.1} µs median \
         ({:.1}–{:.1})",
        handler_ns / 1e3,
        per_sample(extra.0) / 1e3,
        per_sample(extra.2) / 1e3
    );

    // 2. The recorder's own CPU, 2 busy + 50 idle threads.
    let mut idle: Vec<Vec<String>> = vec![Vec::new(); IDLE.len()];
    for r in 0..rounds {
        for k in 0..IDLE.len() {
            let i = (k + r) % IDLE.len();
            idle[i].push(child("idle", IDLE[i]));
        }
    }
    println!(
        "\n-- 2. the recorder's own CPU: 2 busy + {IDLE_THREADS} idle threads, {} s window per child",
        env("IDLE_RUN_S", 10)
    );
    let per_s = |t: &str, key: &str, scale: f64| number(t, key) * scale / number(t, "wall_s ");
    let (mut handler_share, mut total, mut outside) = (vec![], vec![], vec![]);
    let (mut flight, mut scan) = (vec![], vec![]);
    for (t, t_off) in idle[1].iter().zip(&idle[0]) {
        let f = per_s(t, "flight_ns ", 1e-9);
        let s = per_s(t, "scan_ns ", 1e-9);
        let samples = per_s(t, "proc_cpu_s ", 1.0) * HZ;
        let h = samples * handler_ns * 1e-9;
        flight.push(f * 100.0);
        scan.push(s * 100.0);
        handler_share.push(h * 100.0);
        total.push((f + s + h) * 100.0);
        let rest = |t: &str| per_s(t, "proc_cpu_s ", 1.0) - per_s(t, "busy_ns ", 1e-9);
        outside.push((rest(t) - rest(t_off)) * 100.0);
    }
    let samples_s = stats(
        idle[1]
            .iter()
            .map(|t| per_s(t, "proc_cpu_s ", 1.0) * HZ)
            .collect(),
    );
    println!("% of one core, recorder on:");
    println!("  prodbg-flight thread           {}", spread(flight, 4));
    println!("  prodbg-cpu-scan thread         {}", spread(scan, 4));
    println!(
        "  handler ({:.0} samples/s × {:.1} µs)   {}",
        samples_s.1,
        handler_ns / 1e3,
        spread(handler_share, 4)
    );
    let tot = stats(total.clone());
    println!(
        "  total (measured threads + estimated handler) {}: {}",
        spread(total, 4),
        if tot.1 <= 0.5 {
            "meets ≤ 0.5 %"
        } else {
            "MISSES ≤ 0.5 %"
        }
    );
    println!(
        "  cross-check: process CPU outside the busy threads, on − off (admin threads, noise) {}",
        spread(outside, 3)
    );

    // 3. Memory of the history.
    let minutes = std::env::var("FLIGHT_MINUTES").unwrap_or_else(|_| "2".into());
    println!(
        "\n-- 3. history memory: {HISTORY_THREADS} threads walking a family of generated stacks, {minutes} min per child"
    );
    let mut result = Vec::new();
    for config in IDLE {
        let text = child("history", config);
        println!("{config}:");
        for line in text.lines().filter(|l| l.starts_with("reading ")) {
            println!("  {}", line.trim_start_matches("reading "));
        }
        result.push(text);
    }
    let growth = |t: &str| (number(t, "rss1_kib ") - number(t, "rss0_kib ")) / 1024.0;
    // The final line (the readings before it use the same keys).
    let last = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("rss0_kib "))
            .unwrap_or_else(|| panic!("no result in the child's output: {t}"))
            .to_string()
    };
    let (off, on) = (&last(&result[0]), &last(&result[1]));
    let mins = number(on, "minutes ");
    let stacks = number(on, "stacks ");
    let est = number(on, "est_mib ");
    let samples = number(on, "proc_cpu_s ") * HZ;
    let rss_delta = growth(on) - growth(off);
    println!(
        "RSS at start: on {:.1} MiB, off {:.1} MiB (the sampler's and unwinder's set-up: {:+.1} MiB)",
        number(on, "rss0_kib ") / 1024.0,
        number(off, "rss0_kib ") / 1024.0,
        (number(on, "rss0_kib ") - number(off, "rss0_kib ")) / 1024.0
    );
    println!(
        "RSS growth over {mins:.2} min: on {:+.2} MiB, off {:+.2} MiB => recorder {rss_delta:+.2} MiB",
        growth(on),
        growth(off)
    );
    println!(
        "recorder's estimate: {stacks} distinct stacks ({}), {est:.1} MiB; ~{samples:.0} samples \
         ({:.0} per min); {:.0} bytes per stack",
        if stacks >= 5000.0 {
            "≥ 5 000"
        } else {
            "FEWER than 5 000"
        },
        samples / mins,
        est * 1048576.0 / stacks.max(1.0)
    );
    println!(
        "per minute of history: estimate {:.2} MiB/min, RSS {:.2} MiB/min",
        est / mins,
        rss_delta / mins
    );
    let (est10, rss10) = if mins >= 9.9 {
        println!("10 minutes, measured:");
        (est, rss_delta)
    } else {
        println!("10 minutes, EXTRAPOLATED linearly from {mins:.2} min (not measured):");
        (est / mins * 10.0, rss_delta / mins * 10.0)
    };
    let worst = est10.max(rss10);
    println!(
        "  estimate {est10:.1} MiB, RSS {rss10:.1} MiB: {}",
        if worst <= 8.0 {
            "meets ≤ 8 MiB"
        } else {
            "MISSES ≤ 8 MiB"
        }
    );
}
