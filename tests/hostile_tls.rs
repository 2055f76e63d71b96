//! The hostile client against the TLS listener: handshakes that stall hold a slot only until
//! their timeout and are evicted first when their address is at its cap, so an operator
//! behind the same address is answered; a connection over the caps reads its 503 over TLS.
#![cfg(feature = "tls")]

mod common;
#[path = "common/tls.rs"]
mod pki;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::Method;
use common::*;
use pki::Ca;
use prodbg::{Limits, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first bytes of a TLS ClientHello: a handshake record header announcing 512 bytes, and
/// the start of the message — a handshake that never completes.
const HALF_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

fn raise_nofile() {
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
}

/// A hostile connection, reconnecting 1 s after the server closes it, until `stop`: idle
/// (connects, sends nothing) or a stalled handshake (half a ClientHello, then a byte a second).
async fn hold(
    to: SocketAddr,
    stall_handshake: bool,
    connects: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Ok(mut s) = TcpStream::connect(to).await {
            connects.fetch_add(1, Ordering::Relaxed);
            if stall_handshake {
                let _ = s.write_all(HALF_HELLO).await;
            }
            let mut buf = [0u8; 512];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => if !matches!(r, Ok(n) if n > 0) { break },
                    _ = tick.tick(), if stall_handshake => { let _ = s.write_all(&[0]).await; }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sharing_an_address_with_300_held_tls_connections_is_answered() {
    raise_nofile();
    let ca = Ca::new("prodbg test CA");
    let cert = ca.server(0x61);
    let server = spawn_with(|b| b.tls(&cert.cert, &cert.key));
    let addr = server.handle.local_addr();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let connects = Arc::new(AtomicUsize::new(0));
    let crowd: Vec<_> = (0..300)
        .map(|i| tokio::spawn(hold(addr, i < 100, connects.clone(), stopped.clone())))
        .collect();
    while connects.load(Ordering::Relaxed) < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The operator: its own thread and runtime, a new TLS connection per request.
    let base = server.handle.url();
    let ca_pem = ca.pem.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let ca = Ca::from_pem(&ca_pem);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut answers = Vec::new();
                for i in 0..20 {
                    let client = ca.reqwest(None);
                    let mut req = client.get(format!("{base}/health/live"));
                    if i % 2 == 1 {
                        req = client
                            .get(format!("{base}/debug/overrides"))
                            .bearer_auth(ADMIN_SECRET);
                    }
                    let status = match req.send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(e) => {
                            eprintln!("operator request {i}: {e:?}");
                            0
                        }
                    };
                    answers.push((i, status));
                }
                answers
            })
    })
    .await
    .unwrap();
    let answered = answers.iter().filter(|a| a.1 == 200).count();
    assert_eq!(answered, 20, "{answers:?}");
    // The crowd kept coming back: its connections were closed (evicted, or timed out in the
    // handshake) and reopened.
    assert!(connects.load(Ordering::Relaxed) > 300);
    stop.send(true).unwrap();
    for c in crowd {
        c.await.unwrap();
    }
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_at_the_handshake_timeout_not_the_head_timeout() {
    let ca = Ca::new("prodbg test CA");
    let cert = ca.server(0x62);
    let mut limits = Limits::default();
    limits.tls_handshake_timeout = Duration::from_secs(1);
    limits.header_read_timeout = Duration::from_secs(120);
    let server = spawn_with(|b| b.tls(&cert.cert, &cert.key).limits(limits));
    let mut s = TcpStream::connect(server.handle.local_addr())
        .await
        .unwrap();
    s.write_all(HALF_HELLO).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    // A byte every 200 ms: the head deadline (120 s) would never cut it; the handshake's does.
    let closed = loop {
        tokio::select! {
            r = s.read(&mut buf) => break matches!(r, Ok(0) | Err(_)),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if s.write_all(&[0]).await.is_err() { break true }
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            break false;
        }
    };
    assert!(closed, "the stalled handshake was still open after 60 s");
    // The server still answers.
    let r = ca
        .reqwest(None)
        .get(server.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "done"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_caps_reads_its_503_over_tls() {
    let ca = Ca::new("prodbg test CA");
    let cert = ca.server(0x63);
    let mut limits = Limits::default();
    limits.max_connections_per_client = 2;
    let server = spawn_with(|b| {
        b.tls(&cert.cert, &cert.key).limits(limits).endpoint(
            Method::GET,
            "/slow",
            Scope::Read,
            "sleeps 3 s",
            slow,
        )
    });
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let client = ca.reqwest(None);
            let url = server.url("/slow");
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth(READ_SECRET)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Both of this address's connections are answering: the third is refused, in TLS.
    let r = ca
        .reqwest(None)
        .get(server.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("too_many_connections"), "{body}");
    for b in busy {
        assert_eq!(b.await.unwrap(), 200);
    }
}
