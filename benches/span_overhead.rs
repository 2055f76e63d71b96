//! Cost of prodbg's span layer (`prodbg::spans`) on a span-heavy workload, side by side with
//! the same subscriber without it, at two work sizes. The docs' figure is the recommended
//! install (`registry().with(reloadable filter).with(fmt).with(spans)`): "D + recommended
//! install" against "D" (a real `fmt` layer to a sink behind the host's own global
//! `EnvFilter`). Also: the layer inside a per-layer filter ("C + inside host filter" against
//! "C"), and the harsher "B + inside host filter" against "B" (a no-op host layer).
//!
//! Two threads each run requests: a `request` span (3 fields) with two nested `db` spans
//! (2 fields), each span created, entered, exited and closed around some compute. Rounds
//! interleave the configurations; each figure is min / median / max over the rounds.
//! Throughput ratio = (ns per span of the configuration compared with) / (ns per span with
//! prodbg), per round, from the threads' CPU time (immune to other processes on a shared
//! machine) and from wall time. Each run is a process of its own with the configuration as
//! its global default subscriber (see `run_child`). For scale, each work size also prints what
//! the host's own `fmt` + `EnvFilter` stack costs of the host's time.
//!
//! Work sizes: `WORK=600` is ~1.2 µs of work per span (dense: ~1.5 µs per span with the
//! registry's own cost), `WORK=2800` ~6 µs (a span-heavy service: three spans per ~18 µs
//! request).
//!
//! ```text
//! cargo bench --bench span_overhead        # defaults: 61 rounds at WORK=600 and WORK=2800
//! ROUNDS=21 WORK=0 THREADS=1 cargo bench --bench span_overhead   # WORK=0: span ops only
//! PICK=12 WORK=600 cargo bench --bench span_overhead   # only the recommended install and its host
//! ```

pub mod common;

use common::child::{number, run_self};
use common::clock::thread_cpu_time;
use common::env::env_u64 as env;
use common::stats::min_median_max as stats;
use common::work::xorshift as compute;
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

/// A host's own log layer: `tracing_subscriber::fmt`, writing to a sink.
fn host_fmt<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer().with_writer(std::io::sink)
}

fn host_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::new("info")
}

/// One run under the global default subscriber: `(cpu ns per span, wall ns per span)`.
fn run(n: u64, work: u64) -> (f64, f64) {
    let threads = threads();
    let start = Instant::now();
    let cpu: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let c0 = thread_cpu_time().as_nanos() as u64;
                    black_box(requests(n, work));
                    thread_cpu_time().as_nanos() as u64 - c0
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

/// One run of configuration `i` in a process of its own: `(cpu, wall)` ns per span.
///
/// Each configuration is installed as the process's global default, as a service installs
/// its subscriber (`.init()`). Under a scoped dispatcher (`with_default`) every span would
/// clone and drop the `Dispatch`'s `Arc`, two atomic read-modify-writes on one cache line
/// shared by all threads, which no global-default host pays and which would swamp the layer's
/// own cost. A process per run also draws the heap layout afresh every time.
fn run_child(i: usize, n: u64, work: u64) -> (f64, f64) {
    let text = run_self(&[
        ("ONLY", i.to_string()),
        ("WORK", work.to_string()),
        ("REQUESTS", n.to_string()),
        ("THREADS", threads().to_string()),
    ]);
    (number(&text, "cpu "), number(&text, "wall "))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

fn threads() -> usize {
    env("THREADS", 2).max(1) as usize
}

/// A subscriber under test, built in the process that runs it (see [`run_child`]).
type Build = fn() -> Dispatch;

/// `(name, how to build it, index of the configuration it is compared with)`.
fn configs() -> Vec<(&'static str, Build, usize)> {
    vec![
        (
            "A: registry + noop",
            || Dispatch::new(tracing_subscriber::registry().with(Noop)),
            0,
        ),
        (
            "A + filtered_layer",
            || {
                let (l, _h) = filtered_layer(Options::default());
                Dispatch::new(tracing_subscriber::registry().with(l).with(Noop))
            },
            0,
        ),
        (
            "A + unfiltered",
            || {
                let (l, _h) = layer(Options::default());
                Dispatch::new(tracing_subscriber::registry().with(l).with(Noop))
            },
            0,
        ),
        (
            "A + slot only",
            || {
                let (l, _h) = filtered_layer(Options::default().labels_only());
                Dispatch::new(tracing_subscriber::registry().with(l).with(Noop))
            },
            0,
        ),
        (
            "A + slot only unfilt.",
            || {
                let (l, _h) = layer(Options::default().labels_only());
                Dispatch::new(tracing_subscriber::registry().with(l).with(Noop))
            },
            0,
        ),
        // A host whose own layer has a per-layer filter (like quickstart's fmt layer), and
        // prodbg installed inside that filter: `host.and_then(prodbg).with_filter(host_filter)`.
        (
            "B: registry + filtered noop",
            || {
                Dispatch::new(
                    tracing_subscriber::registry().with(Noop.with_filter(LevelFilter::INFO)),
                )
            },
            5,
        ),
        (
            "B + inside host filter",
            || {
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
            || Dispatch::new(tracing_subscriber::registry().with(Noop).with(Noop)),
            0,
        ),
        (
            "B + slot only inside",
            || {
                let (l, _h) = layer(Options::default().labels_only());
                Dispatch::new(
                    tracing_subscriber::registry()
                        .with(Noop.and_then(l).with_filter(LevelFilter::INFO)),
                )
            },
            5,
        ),
        // The recommended install as the docs write it, in a host stack as services run it:
        // the host's `fmt` layer (to a sink) under an `EnvFilter`, prodbg inside that filter.
        (
            "C: fmt + EnvFilter host",
            || {
                Dispatch::new(
                    tracing_subscriber::registry().with(host_fmt().with_filter(host_filter())),
                )
            },
            9,
        ),
        (
            "C + inside host filter",
            || {
                let (l, _h) = layer(Options::default());
                Dispatch::new(
                    tracing_subscriber::registry()
                        .with(host_fmt().and_then(l).with_filter(host_filter())),
                )
            },
            9,
        ),
        // The recommended install: the host's `EnvFilter` as a global filter in front of its
        // `fmt` layer (what `fmt().with_env_filter(..)` builds), made reloadable by prodbg, and
        // the span layer beside `fmt`; against the host with its own plain `EnvFilter`.
        (
            "D: fmt + global EnvFilter host",
            || {
                Dispatch::new(
                    tracing_subscriber::registry()
                        .with(host_filter())
                        .with(host_fmt()),
                )
            },
            11,
        ),
        (
            "D + recommended install",
            || {
                let (filter, _control) = prodbg::log_level::reloadable(host_filter());
                let (l, _h) = layer(Options::default());
                Dispatch::new(
                    tracing_subscriber::registry()
                        .with(filter)
                        .with(host_fmt())
                        .with(l),
                )
            },
            11,
        ),
    ]
}

fn main() {
    let rounds = env("ROUNDS", 61).max(9) as usize;
    // Short runs, many rounds: each round's ratio compares runs taken moments apart, so a
    // burst of load from another process spoils one round, not the median.
    let n = env("REQUESTS", 2_000);
    let configs = configs();
    // ONLY=i runs configuration i alone, at the first WORK: how each round runs each
    // configuration (see `run_child`), and how to run one under callgrind.
    let works = works();
    if let Ok(i) = std::env::var("ONLY").map(|v| v.parse::<usize>().unwrap_or(0)) {
        let i = i.min(configs.len() - 1);
        tracing::dispatcher::set_global_default(configs[i].1()).expect("first subscriber");
        run(n / 10, works[0]);
        let (c, w) = run(n, works[0]);
        println!("{}: cpu {c:.1} ns/span, wall {w:.1} ns/span", configs[i].0);
        return;
    }
    for work in works {
        measure(&configs, rounds, n, work);
    }
}

/// The work sizes to measure at: `WORK=600,2800` (iterations of `compute` per span).
fn works() -> Vec<u64> {
    let w: Vec<u64> = std::env::var("WORK")
        .unwrap_or_else(|_| "600,2800".to_string())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    if w.is_empty() {
        vec![600]
    } else {
        w
    }
}

/// `PICK=11,12`: measure only these configurations (and the ones they are compared with);
/// unset, all of them.
fn picked(i: usize, configs: &[(&str, Build, usize)]) -> bool {
    let Ok(list) = std::env::var("PICK") else {
        return true;
    };
    let chosen: Vec<usize> = list
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    chosen.contains(&i)
        || chosen
            .iter()
            .any(|&c| configs.get(c).is_some_and(|k| k.2 == i))
}

/// Per-round ratios `base / config` of the cpu figures: (min, median, max).
fn ratio(cpu: &[Vec<f64>], base: usize, i: usize) -> (f64, f64, f64) {
    stats(
        (0..cpu[i].len())
            .map(|r| cpu[base][r] / cpu[i][r])
            .collect(),
    )
}

fn measure(configs: &[(&str, Build, usize)], rounds: usize, n: u64, work: u64) {
    let load0 = loadavg();
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for r in 0..rounds {
        // Rotate the order every round so no configuration always runs first.
        for k in 0..configs.len() {
            let i = (k + r) % configs.len();
            if !picked(i, configs) {
                continue;
            }
            let (c, w) = run_child(i, n, work);
            cpu[i].push(c);
            wall[i].push(w);
        }
    }
    let threads = threads();
    println!();
    println!("load average before / after: {load0} / {}", loadavg());
    println!(
        "span_overhead: {threads} threads x {n} requests x {SPANS_PER_REQUEST} spans, work={work}, {rounds} interleaved rounds (min / median / max)"
    );
    println!(
        "{:<28} {:>30} {:>30} {:>24} {:>24}",
        "configuration", "cpu ns/span", "wall ns/span", "ratio (cpu)", "ratio (wall)"
    );
    for (i, (name, _, base)) in configs.iter().enumerate() {
        if cpu[i].is_empty() {
            continue;
        }
        let rw: Vec<f64> = (0..rounds).map(|r| wall[*base][r] / wall[i][r]).collect();
        let (c, w, rc, rw) = (
            stats(cpu[i].clone()),
            stats(wall[i].clone()),
            ratio(&cpu, *base, i),
            stats(rw),
        );
        println!(
            "{name:<28} {:>8.0} / {:>8.0} / {:>8.0} {:>8.0} / {:>8.0} / {:>8.0} {:.3} / {:.3} / {:.3} {:.3} / {:.3} / {:.3}",
            c.0, c.1, c.2, w.0, w.1, w.2, rc.0, rc.1, rc.2, rw.0, rw.1, rw.2
        );
    }
    for (i, (name, _, base)) in configs.iter().enumerate() {
        if i != *base && !cpu[i].is_empty() {
            let (m, b) = (stats(cpu[i].clone()), stats(cpu[*base].clone()));
            println!(
                "added cost per span vs {}: {name:<28} median {:+.0} ns, min {:+.0} ns",
                &configs[*base].0[..1],
                m.1 - b.1,
                m.0 - b.0
            );
        }
    }
    let at = |name: &str| configs.iter().position(|(n, _, _)| *n == name).unwrap_or(0);
    // How span-dense the workload is: the host's own tracing stack (fmt + EnvFilter) as a
    // share of the host's time, against the bare registry.
    let (host, bare) = (at("C: fmt + EnvFilter host"), at("A: registry + noop"));
    if !cpu[host].is_empty() && !cpu[bare].is_empty() {
        let share = 1.0 - ratio(&cpu, bare, host).1;
        println!(
            "work={work}: the host's own fmt + EnvFilter stack takes {:.1} % of its cpu time (median)",
            share * 100.0
        );
    }
    println!("targets: whole layer >= 0.97, slot only >= 0.98 (throughput ratio)");
    for (label, name) in [
        (
            "recommended install (global reloadable filter), host fmt + EnvFilter",
            "D + recommended install",
        ),
        (
            "layer inside the host's per-layer filter, host fmt + EnvFilter",
            "C + inside host filter",
        ),
        (
            "recommended install, no-op host layer",
            "B + inside host filter",
        ),
    ] {
        let i = at(name);
        if cpu[i].is_empty() {
            continue;
        }
        let (lo, med, hi) = ratio(&cpu, configs[i].2, i);
        println!(
            "work={work}: {label}: throughput ratio (cpu) median {med:.3} (min {lo:.3}, max {hi:.3}): {}",
            if med >= 0.97 { "meets >= 0.97" } else { "MISSES >= 0.97" }
        );
    }
}
