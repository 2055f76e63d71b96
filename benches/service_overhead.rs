//! What adopting prodbg costs a span-heavy Tokio service, installed as the README says, side by
//! side with the same service and its own `tracing` stack.
//!
//! The host is shaped like a real one: a TCP protocol server (Redis-like `SET`/`GET` lines) on
//! a multi-thread Tokio runtime (`WORKERS`, default 1: on this 2-core machine the clients take
//! the other core, so the server's figures are not the scheduler's), a span per connection, an `#[instrument]`ed span per command (the
//! future enters its span on every poll), a store behind the service's own lock, an INFO event
//! per connection and a DEBUG one per command, `fmt` to a sink at INFO. 16 client connections
//! on loopback, each a request-reply loop, from a runtime on another thread.
//!
//! Configurations, each run as a process of its own with its subscriber as the global default:
//! - `host`: `registry().with(EnvFilter("info")).with(fmt)` — the service before prodbg.
//! - `recommended`: `reloadable(EnvFilter("info"))` in place of the `EnvFilter`, prodbg's span
//!   layer beside `fmt`, and the admin server spawned with both handles — the README's install.
//! - `admin only`, `filter only`, `layer only`: one part each, for the breakdown.
//! - `old: reload, per layer`: the install the README recommended before: `fmt.and_then(spans)`
//!   under `tracing_subscriber::reload` of the `EnvFilter` as a per-layer filter.
//!
//! Figures per configuration: operations per second (wall) and server CPU per operation (the
//! runtime's worker threads' on-CPU time from `/proc/self/task/<tid>/schedstat`, immune to the
//! client's share of the two cores). Ratios are host ÷ configuration per round, so a round's
//! ratio compares runs taken moments apart; min / median / max over the rounds.
//!
//! ```text
//! cargo bench --bench service_overhead            # 21 rounds of 1.5 s per configuration
//! ROUNDS=31 RUN_MS=2000 WORKERS=2 cargo bench --bench service_overhead
//! ```

pub mod common;

use common::child::{number, run_self};
use common::env::env_u64 as env;
use common::stats::min_median_max as stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, reload, EnvFilter};

const CONNECTIONS: usize = 16;

type Store = Arc<Mutex<HashMap<String, String>>>;

/// One command: the host's `#[instrument]`ed handler.
#[tracing::instrument(level = "info", skip(store, value))]
async fn apply(store: &Store, cmd: &str, key: &str, value: Option<&str>) -> String {
    tracing::debug!(key, "applying");
    let mut map = store.lock().unwrap_or_else(|e| e.into_inner());
    match (cmd, value) {
        ("SET", Some(v)) => {
            map.insert(key.to_string(), v.to_string());
            "+OK\r\n".to_string()
        }
        ("GET", _) => match map.get(key) {
            Some(v) => format!("${v}\r\n"),
            None => "$-1\r\n".to_string(),
        },
        _ => "-ERR unknown command\r\n".to_string(),
    }
}

async fn serve_conn(stream: TcpStream, store: Store) {
    tracing::info!("connection opened");
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut parts = line.splitn(3, ' ');
        let (cmd, key, value) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next(),
        );
        let reply = apply(&store, cmd, key, value).await;
        if w.write_all(reply.as_bytes()).await.is_err() {
            break;
        }
    }
    tracing::info!("connection closed");
}

/// The server on `listener`, on a `WORKERS`-worker runtime whose worker tids go into `tids`.
fn server(listener: std::net::TcpListener, tids: Arc<Mutex<Vec<i32>>>) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env("WORKERS", 1).max(1) as usize)
        .enable_all()
        .on_thread_start(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            tids.lock().unwrap_or_else(|e| e.into_inner()).push(tid);
        })
        .build()
        .expect("server runtime");
    rt.spawn(async move {
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let store: Store = Arc::default();
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let span = tracing::info_span!("conn", %peer);
            tokio::spawn(serve_conn(stream, store.clone()).instrument(span));
        }
    });
    rt
}

/// Runs the clients against `addr` for `warm` then `run`: operations done in `run`.
fn clients(
    addr: std::net::SocketAddr,
    warm: Duration,
    run: Duration,
    on_start: impl FnOnce(),
) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    rt.block_on(async move {
        let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ops = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let (counting, stop, ops) = (counting.clone(), stop.clone(), ops.clone());
            tasks.push(tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("k{c}-{}", i % 64);
                    let req = if i.is_multiple_of(2) {
                        format!("SET {key} value-{i}\n")
                    } else {
                        format!("GET {key}\n")
                    };
                    w.write_all(req.as_bytes()).await.expect("write");
                    lines.next_line().await.expect("read").expect("reply");
                    if counting.load(std::sync::atomic::Ordering::Relaxed) {
                        ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    i += 1;
                }
            }));
        }
        tokio::time::sleep(warm).await;
        on_start();
        counting.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(run).await;
        counting.store(false, std::sync::atomic::Ordering::Relaxed);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        ops.load(std::sync::atomic::Ordering::Relaxed)
    })
}

fn schedstat_ns(tids: &[i32]) -> u64 {
    tids.iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/self/task/{t}/schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

fn sink() -> impl for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static {
    std::io::sink
}

/// Installs configuration `i` as the global default; what it returns must live for the run.
fn install(i: usize) -> Option<prodbg::AdminHandle> {
    let host_filter = || EnvFilter::new("info");
    let admin = |b| common::admin::spawn_from(b, "service-bench");
    match CONFIGS[i] {
        "host" | "admin only" => {
            tracing_subscriber::registry()
                .with(host_filter())
                .with(fmt::layer().with_writer(sink()))
                .init();
            (CONFIGS[i] == "admin only").then(|| admin(prodbg::Admin::builder()))
        }
        "recommended" => {
            let (filter, log_control) = prodbg::log_level::reloadable(host_filter());
            let (spans, spans_handle) = prodbg::spans::layer(prodbg::spans::Options::default());
            tracing_subscriber::registry()
                .with(filter)
                .with(fmt::layer().with_writer(sink()))
                .with(spans)
                .init();
            Some(admin(
                prodbg::Admin::builder()
                    .log_control(log_control)
                    .spans(spans_handle),
            ))
        }
        "filter only" => {
            let (filter, _log_control) = prodbg::log_level::reloadable(host_filter());
            tracing_subscriber::registry()
                .with(filter)
                .with(fmt::layer().with_writer(sink()))
                .init();
            None
        }
        "layer only" => {
            let (spans, _spans_handle) = prodbg::spans::layer(prodbg::spans::Options::default());
            tracing_subscriber::registry()
                .with(host_filter())
                .with(fmt::layer().with_writer(sink()))
                .with(spans)
                .init();
            None
        }
        "old: reload, per layer" => {
            let (filter, _reload) = reload::Layer::new(host_filter());
            let (spans, _spans_handle) = prodbg::spans::layer(prodbg::spans::Options::default());
            tracing_subscriber::registry()
                .with(
                    fmt::layer()
                        .with_writer(sink())
                        .and_then(spans)
                        .with_filter(filter),
                )
                .init();
            None
        }
        other => unreachable!("no configuration {other}"),
    }
}

const CONFIGS: &[&str] = &[
    "host",
    "recommended",
    "admin only",
    "filter only",
    "layer only",
    "old: reload, per layer",
];

/// The child: configuration `i`, one run; prints `ops/s` and `cpu ns/op`.
fn child(i: usize) {
    let _admin = install(i);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let tids = Arc::new(Mutex::new(Vec::new()));
    let rt = server(listener, tids.clone());
    let run = Duration::from_millis(env("RUN_MS", 1500));
    let mut cpu0 = 0;
    let mut t0 = Instant::now();
    let ops = clients(addr, Duration::from_millis(300), run, || {
        cpu0 = schedstat_ns(&tids.lock().unwrap_or_else(|e| e.into_inner()));
        t0 = Instant::now();
    });
    let secs = t0.elapsed().as_secs_f64();
    let cpu = schedstat_ns(&tids.lock().unwrap_or_else(|e| e.into_inner())) - cpu0;
    println!(
        "ops/s {:.0} cpu_ns_per_op {:.1}",
        ops as f64 / secs,
        cpu as f64 / ops.max(1) as f64
    );
    rt.shutdown_background();
}

fn run_child(i: usize) -> (f64, f64) {
    let text = run_self(&[("ONLY", i.to_string())]);
    (number(&text, "ops/s "), number(&text, "cpu_ns_per_op "))
}

fn main() {
    if let Ok(i) = std::env::var("ONLY") {
        child(i.parse().expect("ONLY=<index>"));
        return;
    }
    let rounds = env("ROUNDS", 21).max(3) as usize;
    let mut ops = vec![Vec::new(); CONFIGS.len()];
    let mut cpu = vec![Vec::new(); CONFIGS.len()];
    for r in 0..rounds {
        for k in 0..CONFIGS.len() {
            let i = (k + r) % CONFIGS.len();
            let (o, c) = run_child(i);
            ops[i].push(o);
            cpu[i].push(c);
        }
    }
    println!(
        "service_overhead: {CONNECTIONS} connections, SET/GET, {} server worker(s), {rounds} interleaved rounds of {} ms (min / median / max)",
        env("WORKERS", 1),
        env("RUN_MS", 1500)
    );
    println!(
        "{:<24} {:>26} {:>26} {:>24} {:>24}",
        "configuration", "ops/s", "server cpu ns/op", "throughput ratio", "cpu ratio"
    );
    let mut verdict = None;
    for (i, name) in CONFIGS.iter().enumerate() {
        let o = stats(ops[i].clone());
        let c = stats(cpu[i].clone());
        let ro = stats((0..rounds).map(|r| ops[i][r] / ops[0][r]).collect());
        let rc = stats((0..rounds).map(|r| cpu[0][r] / cpu[i][r]).collect());
        println!(
            "{name:<24} {:>8.0} / {:>8.0} / {:>8.0} {:>8.0} / {:>8.0} / {:>8.0} {:.3} / {:.3} / {:.3} {:.3} / {:.3} / {:.3}",
            o.0, o.1, o.2, c.0, c.1, c.2, ro.0, ro.1, ro.2, rc.0, rc.1, rc.2
        );
        if *name == "recommended" {
            verdict = Some((ro.1, rc.1));
        }
    }
    if let Some((ro, rc)) = verdict {
        println!(
            "recommended install ÷ host: throughput {ro:.3}, server cpu per op {rc:.3} (median): {}",
            if ro >= 0.98 { "meets >= 0.98" } else { "MISSES >= 0.98" }
        );
    }
}
