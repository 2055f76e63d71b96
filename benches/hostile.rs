//! Latency of `/health/live` and an authenticated `/debug/overrides` from an operator on
//! 127.0.0.2 (a fresh connection per request, as curl does), quiet and while a hostile client
//! on 127.0.0.1 holds 1000 idle and 200 slowloris connections. Target: p99 ≤ 50 ms under attack.
//!
//! `cargo bench --bench hostile`

pub mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::admin::SECRET;
use prodbg::{Admin, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const REQUESTS: usize = 300;
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OPERATOR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(SocketAddrV4::new(from, 0).into())?;
    s.connect(to).await
}

/// One request on a fresh connection; its status and latency.
async fn timed(to: SocketAddr, path: &str, auth: bool) -> (u16, Duration) {
    let t = Instant::now();
    let mut s = connect_from(OPERATOR, to).await.expect("operator connects");
    let auth = if auth {
        format!("authorization: Bearer {SECRET}\r\n")
    } else {
        String::new()
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
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
        let (status, took) = timed(to, path, auth).await;
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
        .token("ops", Scope::Read, SECRET)
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
    });
}
