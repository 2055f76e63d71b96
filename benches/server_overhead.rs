//! Admin-server costs, measured side by side in one run:
//! - idle overhead: a CPU-bound host workload with the admin server spawned ÷ without it;
//! - `/health/live` and `/metrics` latency (p50/p99) and requests/s, with the host idle and with
//!   the host saturating both cores;
//! - RSS the admin server adds when idle;
//! - with feature `tls`: TLS handshake time (p50/p99; full, and resumed from the session
//!   cache), and `/health/live` latency on one keep-alive connection over TLS and plain HTTP,
//!   side by side in interleaved rounds.
//!
//! `cargo bench --bench server_overhead --features tls`

pub mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::SECRET;
use common::http::Client;
use common::memory::rss_bytes;
use common::stats::min_median_max;
use common::work::compute_step;
use prodbg::{Admin, Scope};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ROUND: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 9;

fn main() {
    let rss_before = rss_bytes();
    let admin = spawn();
    // Warm it up: a few requests of each kind, so lazily built state is counted.
    for path in ["/health/live", "/metrics", "/debug/"] {
        let mut c = Client::connect(admin.local_addr());
        for _ in 0..20 {
            c.get(path);
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = rss_bytes();
    admin.shutdown();
    println!(
        "admin server RSS when idle: +{:.1} MB (process {:.1} → {:.1} MB)",
        (rss_after as f64 - rss_before as f64) / 1e6,
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6
    );

    // Idle overhead: interleave rounds without / with an idle admin server.
    let mut ratios = Vec::new();
    for _ in 0..ROUNDS {
        let without = workload(ROUND);
        let admin = spawn();
        let with = workload(ROUND);
        drop(admin);
        ratios.push(with / without);
    }
    let (min, med, max) = min_median_max(ratios);
    println!(
        "idle overhead: host throughput with admin server ÷ without = {med:.4} (median of {ROUNDS} interleaved {ROUND:?} rounds; min {min:.4}, max {max:.4})"
    );

    let admin = spawn();
    for (label, busy) in [("host idle", false), ("host saturating both cores", true)] {
        let stop = Arc::new(AtomicBool::new(false));
        let burners: Vec<_> = (0..if busy { 2 } else { 0 })
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let done = AtomicU64::new(0);
                    while !stop.load(Ordering::Relaxed) {
                        done.fetch_add(compute_step(10_000), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for path in ["/health/live", "/metrics"] {
            let mut c = Client::connect(admin.local_addr());
            let mut lat = Vec::new();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                let t = Instant::now();
                c.get(path);
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let rps = lat.len() as f64 / start.elapsed().as_secs_f64();
            lat.sort_by(f64::total_cmp);
            println!(
                "{path:<13} ({label}): p50 {:>7.0} µs, p99 {:>7.0} µs, {:>6.0} req/s (one keep-alive client, sequential)",
                lat[lat.len() / 2],
                lat[lat.len() * 99 / 100],
                rps
            );
        }
        stop.store(true, Ordering::Relaxed);
        burners.into_iter().for_each(|b| b.join().unwrap());
    }
    drop(admin);
    #[cfg(feature = "tls")]
    tls_costs();
}

/// Handshakes and request latency over TLS next to plain HTTP.
#[cfg(feature = "tls")]
fn tls_costs() {
    use common::tls;
    const HANDSHAKES: usize = 200;
    let (ca, cert, key) = tls::pki();
    let https = Admin::builder()
        .bind("127.0.0.1:0")
        .token("bench", Scope::Admin, SECRET)
        .tls(&cert, &key)
        .spawn()
        .unwrap();
    let plain = spawn();
    let addr = https.local_addr();
    let pct = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() * 99 / 100])
    };
    // The baseline: a new plain TCP connection and its first answer.
    let mut first = Vec::new();
    for _ in 0..HANDSHAKES {
        let t = Instant::now();
        common::http::Client::connect(plain.local_addr()).get("/health/live");
        first.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (p50, p99) = pct(first);
    println!(
        "new plain connection + first /health/live: p50 {p50:>6.0} µs, p99 {p99:>6.0} µs ({HANDSHAKES} sequential)"
    );
    for resume in [false, true] {
        let config = tls::client_config(&ca, resume);
        let (mut times, mut firsts, mut resumed) = (Vec::new(), Vec::new(), 0);
        for i in 0..=HANDSHAKES {
            let (stream, took, was_resumed) = tls::connect(addr, &config);
            // One request reads the session tickets the server sends after the handshake.
            let t = Instant::now();
            common::http::Client::over(stream).get("/health/live");
            if i > 0 {
                times.push(took.as_secs_f64() * 1e6);
                firsts.push((took + t.elapsed()).as_secs_f64() * 1e6);
                resumed += usize::from(was_resumed);
            }
        }
        let kind = if resume { "resumed" } else { "full" };
        let (p50, p99) = pct(times);
        println!(
            "TLS handshake, {kind:<8} (TCP connect included): p50 {p50:>6.0} µs, p99 {p99:>6.0} µs ({HANDSHAKES} sequential; {resumed} of them resumed)"
        );
        let (p50, p99) = pct(firsts);
        println!(
            "new TLS connection ({kind}) + first /health/live: p50 {p50:>6.0} µs, p99 {p99:>6.0} µs"
        );
    }
    let config = tls::client_config(&ca, true);
    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>)> =
        vec![("plain HTTP", vec![], vec![]), ("TLS", vec![], vec![])];
    for _ in 0..ROUNDS {
        for row in rows.iter_mut() {
            let mut lat = Vec::new();
            let start = Instant::now();
            if row.0 == "TLS" {
                let mut c = common::http::Client::over(tls::connect(addr, &config).0);
                while start.elapsed() < Duration::from_millis(500) {
                    let t = Instant::now();
                    c.get("/health/live");
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
            } else {
                let mut c = common::http::Client::connect(plain.local_addr());
                while start.elapsed() < Duration::from_millis(500) {
                    let t = Instant::now();
                    c.get("/health/live");
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            let (p50, p99) = pct(lat);
            row.1.push(p50);
            row.2.push(p99);
        }
    }
    let ratio: Vec<f64> = rows[1]
        .1
        .iter()
        .zip(&rows[0].1)
        .map(|(t, p)| t / p)
        .collect();
    for (label, p50s, p99s) in rows {
        let (lo, med, hi) = min_median_max(p50s);
        let (_, p99, _) = min_median_max(p99s);
        println!(
            "/health/live over {label:<10}: p50 {med:>5.0} µs (rounds {lo:.0}–{hi:.0}), p99 {p99:>5.0} µs (median of {ROUNDS} interleaved 0.5 s rounds, one keep-alive connection)"
        );
    }
    let (lo, med, hi) = min_median_max(ratio);
    println!("/health/live p50 TLS ÷ plain: {med:.2} (min {lo:.2}, max {hi:.2})");
}

fn spawn() -> prodbg::AdminHandle {
    Admin::builder()
        .bind("127.0.0.1:0")
        .token("bench", Scope::Admin, SECRET)
        .spawn()
        .unwrap()
}

/// Two threads of CPU-bound work for `d`; returns units of work per second.
fn workload(d: Duration) -> f64 {
    let total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let total = total.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while start.elapsed() < d {
                    std::hint::black_box(compute_step(10_000));
                    n += 1;
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
