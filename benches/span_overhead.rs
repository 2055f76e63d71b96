//! Cost of prodbg's span layer (`prodbg::spans`) on a span-heavy workload, side by side with
//! the same subscriber without it. The README's figure is configuration "B + inside host filter",
//! the recommended install (`fmt::layer().and_then(spans).with_filter(filter)`), against "B".
//!
//! Two threads each run requests: a `request` span (3 fields) with two nested `db` spans
//! (2 fields), each span created, entered, exited and closed around some compute. Rounds
//! interleave the configurations; each figure is min / median / max over the rounds.
//! Throughput ratio = (ns per span of the configuration compared with) / (ns per span with prodbg), per round, from
//! the threads' CPU time (immune to other processes on a shared machine) and from wall time.
//!
//! ```text
//! cargo bench --bench span_overhead              # defaults: 61 rounds, ~2 µs of work per span
//! ROUNDS=21 WORK=600 THREADS=1 cargo bench --bench span_overhead   # WORK=0: span ops only
//! ```

use std::hint::black_box;
use std::time::Instant;

use prodbg::spans::{filtered_layer, layer, Options};
use tracing::Dispatch;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Layer;
use tracing_subscriber::prelude::*;

struct Noop;
impl<S: tracing::Subscriber> Layer<S> for Noop {}

const SPANS_PER_REQUEST: u64 = 3;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[inline(never)]
fn compute(n: u64) -> u64 {
    (0..n).fold(0u64, |a, x| black_box(a.wrapping_mul(31).wrapping_add(x)))
}

fn requests(n: u64, work: u64) -> u64 {
    let mut acc = 0;
    for i in 0..n {
        let req = tracing::info_span!("request", route = "/users/:id", method = "GET", id = i);
        let _r = req.enter();
        acc += compute(work);
        for j in 0..2u64 {
            let db = tracing::info_span!("db", table = "users", attempt = j);
            let _d = db.enter();
            acc += compute(work);
        }
    }
    acc
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One run: `(cpu ns per span, wall ns per span)`.
fn run(d: &Dispatch, n: u64, work: u64) -> (f64, f64) {
    let threads = threads();
    let start = Instant::now();
    let cpu: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let d = d.clone();
                s.spawn(move || {
                    tracing::dispatcher::with_default(&d, || {
                        let c0 = thread_cpu_ns();
                        black_box(requests(n, work));
                        thread_cpu_ns() - c0
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let spans = (n * SPANS_PER_REQUEST) as f64;
    (
        cpu as f64 / (spans * threads as f64),
        start.elapsed().as_nanos() as f64 / spans,
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

fn threads() -> usize {
    env("THREADS", 2).max(1) as usize
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let rounds = env("ROUNDS", 61).max(9) as usize;
    let work = env("WORK", 1400);
    // Short runs, many rounds: each round's ratio compares runs taken moments apart, so a
    // burst of load from another process spoils one round, not the median.
    let n = env("REQUESTS", 2_000);
    // (name, subscriber, index of the configuration it is compared with)
    let configs: Vec<(&str, Dispatch, usize)> = vec![
        (
            "A: registry + noop",
            Dispatch::new(tracing_subscriber::registry().with(Noop)),
            0,
        ),
        (
            "A + filtered_layer",
            {
                let (l, _h) = filtered_layer(Options::default());
                Dispatch::new(tracing_subscriber::registry().with(l).with(Noop))
            },
            0,
        ),
        (
            "A + unfiltered",
            {
                let (l, _h) = layer(Options::default());
                Dispatch::new(tracing_subscriber::registry().with(l).with(Noop))
            },
            0,
        ),
        (
            "A + slot only",
            {
                let (l, _h) = filtered_layer(Options::default().labels_only());
                Dispatch::new(tracing_subscriber::registry().with(l).with(Noop))
            },
            0,
        ),
        (
            "A + slot only unfilt.",
            {
                let (l, _h) = layer(Options::default().labels_only());
                Dispatch::new(tracing_subscriber::registry().with(l).with(Noop))
            },
            0,
        ),
        // A host whose own layer has a per-layer filter (like quickstart's fmt layer), and
        // prodbg installed inside that filter: `host.and_then(prodbg).with_filter(host_filter)`.
        (
            "B: registry + filtered noop",
            Dispatch::new(tracing_subscriber::registry().with(Noop.with_filter(LevelFilter::INFO))),
            5,
        ),
        (
            "B + inside host filter",
            {
                let (l, _h) = layer(Options::default());
                Dispatch::new(
                    tracing_subscriber::registry()
                        .with(Noop.and_then(l).with_filter(LevelFilter::INFO)),
                )
            },
            5,
        ),
        // For scale: what any second (empty) layer costs.
        (
            "A + another noop layer",
            Dispatch::new(tracing_subscriber::registry().with(Noop).with(Noop)),
            0,
        ),
        (
            "B + slot only inside",
            {
                let (l, _h) = layer(Options::default().labels_only());
                Dispatch::new(
                    tracing_subscriber::registry()
                        .with(Noop.and_then(l).with_filter(LevelFilter::INFO)),
                )
            },
            5,
        ),
    ];
    // ONLY=i runs configuration i alone (for `perf stat`).
    if let Ok(i) = std::env::var("ONLY").map(|v| v.parse::<usize>().unwrap_or(0)) {
        let (c, w) = run(&configs[i.min(configs.len() - 1)].1, n, work);
        println!(
            "{}: cpu {c:.0} ns/span, wall {w:.0} ns/span",
            configs[i.min(configs.len() - 1)].0
        );
        return;
    }
    let load0 = loadavg();
    // Warm up each configuration once.
    for (_, d, _) in &configs {
        run(d, n / 10, work);
    }
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for r in 0..rounds {
        // Rotate the order every round so no configuration always runs first.
        for k in 0..configs.len() {
            let i = (k + r) % configs.len();
            let (c, w) = run(&configs[i].1, n, work);
            cpu[i].push(c);
            wall[i].push(w);
        }
    }
    let threads = threads();
    println!("load average before / after: {load0} / {}", loadavg());
    println!(
        "span_overhead: {threads} threads x {n} requests x {SPANS_PER_REQUEST} spans, work={work}, {rounds} interleaved rounds (min / median / max)"
    );
    println!(
        "{:<28} {:>30} {:>30} {:>24} {:>24}",
        "configuration", "cpu ns/span", "wall ns/span", "ratio (cpu)", "ratio (wall)"
    );
    for (i, (name, _, base)) in configs.iter().enumerate() {
        let rc: Vec<f64> = (0..rounds).map(|r| cpu[*base][r] / cpu[i][r]).collect();
        let rw: Vec<f64> = (0..rounds).map(|r| wall[*base][r] / wall[i][r]).collect();
        let (c, w, rc, rw) = (
            stats(cpu[i].clone()),
            stats(wall[i].clone()),
            stats(rc),
            stats(rw),
        );
        println!(
            "{name:<28} {:>8.0} / {:>8.0} / {:>8.0} {:>8.0} / {:>8.0} / {:>8.0} {:.3} / {:.3} / {:.3} {:.3} / {:.3} / {:.3}",
            c.0, c.1, c.2, w.0, w.1, w.2, rc.0, rc.1, rc.2, rw.0, rw.1, rw.2
        );
    }
    for (i, (name, _, base)) in configs.iter().enumerate() {
        if i != *base {
            let (m, b) = (stats(cpu[i].clone()), stats(cpu[*base].clone()));
            println!(
                "added cost per span vs {}: {name:<28} median {:+.0} ns, min {:+.0} ns",
                &configs[*base].0[..1],
                m.1 - b.1,
                m.0 - b.0
            );
        }
    }
    println!("targets: whole layer >= 0.97, slot only >= 0.98 (throughput ratio)");
    let rec = configs
        .iter()
        .position(|(n, _, _)| *n == "B + inside host filter")
        .unwrap_or(0);
    let base = configs[rec].2;
    let rc: Vec<f64> = (0..rounds).map(|r| cpu[base][r] / cpu[rec][r]).collect();
    let (lo, med, hi) = stats(rc);
    println!(
        "recommended install (inside the host's filter): throughput ratio (cpu) median {med:.3} (min {lo:.3}, max {hi:.3}): {}",
        if med >= 0.97 { "meets >= 0.97" } else { "MISSES >= 0.97" }
    );
}
