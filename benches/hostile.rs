//! Latency of `/health/live` and an authenticated `/debug/overrides` from an operator on
//! 127.0.0.2 (a fresh connection per request, as curl does), quiet and while a hostile client
//! on 127.0.0.1 opens 1000 idle and 200 slowloris connections; then the operator *sharing*
//! 127.0.0.1 with a hostile client that holds 300 connections (100 slowloris, each reopened
//! 1 s after the server closes it), as behind `kubectl port-forward` or a sidecar: rounds of 20
//! requests (`/health/live` and the admin token's `/debug/overrides`, alternating), answered
//! of 20 and latency. Target: every request answered, p99 ≤ 50 ms under attack.
//!
//! `cargo bench --bench hostile`

pub mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::SECRET;
use prodbg::{Admin, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const REQUESTS: usize = 300;
/// Rounds of the shared-address scenario, and requests per round.
const ROUNDS: usize = 10;
const PER_ROUND: usize = 20;
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OPERATOR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(SocketAddrV4::new(from, 0).into())?;
    s.connect(to).await
}

/// One request on a fresh connection from `from`; its status and latency.
async fn timed(from: Ipv4Addr, to: SocketAddr, path: &str, auth: bool) -> (u16, Duration) {
    let t = Instant::now();
    let Ok(mut s) = connect_from(from, to).await else {
        return (1, t.elapsed());
    };
    let auth = if auth {
        format!("authorization: Bearer {SECRET}\r\n")
    } else {
        String::new()
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n{auth}\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, t.elapsed());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let status = String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (status, t.elapsed())
}

async fn row(label: &str, to: SocketAddr, path: &str, auth: bool) {
    let mut times = Vec::with_capacity(REQUESTS);
    let mut bad = 0;
    for _ in 0..REQUESTS {
        let (status, took) = timed(OPERATOR, to, path, auth).await;
        bad += usize::from(status != 200);
        times.push(took);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<34} {path:<18} p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  non-200: {bad}",
        ms(times[REQUESTS / 2]),
        ms(times[REQUESTS * 99 / 100]),
        ms(times[REQUESTS - 1]),
    );
}

/// A hostile connection: idle, or half a request head then a byte a second.
async fn hostile(to: SocketAddr, slowloris: bool, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Ok(mut s) = connect_from(ATTACKER, to).await else {
        return;
    };
    if slowloris {
        let _ = s
            .write_all(b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
            .await;
    }
    let mut buf = [0u8; 512];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = s.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { return },
            _ = tick.tick(), if slowloris => { let _ = s.write_all(b"a").await; }
            _ = stop.changed() => return,
        }
    }
}

/// A hostile connection from 127.0.0.1 that is reopened 1 s after the server closes it.
async fn holder(
    to: SocketAddr,
    slowloris: bool,
    connects: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Ok(mut s) = connect_from(ATTACKER, to).await {
            connects.fetch_add(1, Ordering::Relaxed);
            if slowloris {
                let _ = s
                    .write_all(b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
                    .await;
            }
            let mut buf = [0u8; 512];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { break },
                    _ = tick.tick(), if slowloris => { let _ = s.write_all(b"a").await; }
                    _ = stop.changed() => return,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// [`ROUNDS`] rounds of [`PER_ROUND`] requests from 127.0.0.1, the hostile client's address.
async fn operator_rounds(to: SocketAddr) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut all = Vec::new();
    for round in 1..=ROUNDS {
        let mut times = Vec::with_capacity(PER_ROUND);
        let mut answered = 0;
        let mut other = Vec::new();
        for i in 0..PER_ROUND {
            let (path, auth) = if i % 2 == 0 {
                ("/health/live", false)
            } else {
                ("/debug/overrides", true)
            };
            let (status, took) = timed(ATTACKER, to, path, auth).await;
            answered += usize::from(status == 200);
            if status != 200 {
                other.push(status);
            }
            times.push(took);
        }
        times.sort();
        println!(
            "shared 127.0.0.1, 300 held (100 slowloris) round {round}: answered {answered}/{PER_ROUND}  p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms{}",
            ms(times[PER_ROUND / 2]),
            ms(times[PER_ROUND * 99 / 100]),
            ms(times[PER_ROUND - 1]),
            if other.is_empty() { String::new() } else { format!("  (others: {other:?}; 0 = closed unanswered, 1 = connect failed)") },
        );
        all.extend(times);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    all.sort();
    let n = all.len();
    println!(
        "shared 127.0.0.1, all {n} requests: p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms",
        ms(all[n / 2]),
        ms(all[n * 99 / 100]),
        ms(all[n - 1]),
    );
}

/// The operator on the hostile client's own address.
async fn shared_address(to: SocketAddr) {
    let (stop, hold) = tokio::sync::watch::channel(false);
    let connects = Arc::new(AtomicUsize::new(0));
    let crowd: Vec<_> = (0..300)
        .map(|i| tokio::spawn(holder(to, i < 100, connects.clone(), hold.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // The operator is another process (curl): its own thread and runtime.
    let rounds = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("operator runtime")
            .block_on(operator_rounds(to))
    });
    rounds.await.expect("operator rounds");
    println!(
        "the crowd opened {} connections",
        connects.load(Ordering::Relaxed)
    );
    let _ = stop.send(true);
    for c in crowd {
        let _ = c.await;
    }
}

fn main() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    let admin = Admin::builder()
        .bind("127.0.0.1:0")
        .token("ops", Scope::Admin, SECRET)
        .spawn()
        .expect("admin server");
    let to = admin.local_addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        row("quiet", to, "/health/live", false).await;
        row("quiet", to, "/debug/overrides", true).await;
        let (stop, hold) = tokio::sync::watch::channel(false);
        let crowd: Vec<_> = (0..1200)
            .map(|i| tokio::spawn(hostile(to, i >= 1000, hold.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        row("1000 idle + 200 slowloris held", to, "/health/live", false).await;
        row(
            "1000 idle + 200 slowloris held",
            to,
            "/debug/overrides",
            true,
        )
        .await;
        let _ = stop.send(true);
        for c in crowd {
            let _ = c.await;
        }
        shared_address(to).await;
    });
}
