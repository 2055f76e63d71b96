//! Hostile clients over real TCP on loopback. The attacker connects from 127.0.0.1, the
//! operator from 127.0.0.2 (Linux routes all of 127/8 to lo): the operator must still be
//! answered, a valid token is never locked out, one token cannot starve another, and every
//! request — completed, cancelled or timed out — leaves an audit record.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use common::*;
use prodbg::{Limits, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OPERATOR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

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

async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(SocketAddrV4::new(from, 0).into())?;
    s.connect(to).await
}

/// One request on a fresh connection from `from`; the status (0 if none came).
async fn get_from(from: Ipv4Addr, to: SocketAddr, path: &str, secret: Option<&str>) -> u16 {
    let Ok(mut s) = connect_from(from, to).await else {
        return 0;
    };
    let auth = secret.map_or(String::new(), |s| format!("authorization: Bearer {s}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n{auth}\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// How a hostile connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Read the 503 `too_many_connections` refusal.
    Refused,
    /// Still open (held by the server) when told to stop.
    Held,
    /// Closed by the server without an answer: evicted for a newer connection of its client.
    Evicted,
    /// Anything else: no connection, or closed without the refusal.
    Other,
}

/// A hostile connection: idle, or slowloris (half a head, then a byte a second); holds on
/// until `stop`.
async fn hostile(
    to: SocketAddr,
    slowloris: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> End {
    let Ok(mut s) = connect_from(ATTACKER, to).await else {
        return End::Other;
    };
    if slowloris {
        let _ = s
            .write_all(b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ")
            .await;
    }
    let mut got = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = s.read_buf(&mut got) => match r {
                Ok(n) if n > 0 && got.len() < 4096 => continue,
                Ok(0) | Err(_) if got.is_empty() => return End::Evicted,
                _ => break,
            },
            _ = tick.tick(), if slowloris => { let _ = s.write_all(b"a").await; }
            _ = stop.changed() => return End::Held,
        }
    }
    let text = String::from_utf8_lossy(&got);
    if text.starts_with("HTTP/1.1 503") && text.contains("too_many_connections") {
        End::Refused
    } else {
        End::Other
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_is_answered_under_1000_idle_and_200_slowloris_connections() {
    raise_nofile();
    let server = spawn();
    let addr = server.handle.local_addr();
    let (stop, hold) = tokio::sync::watch::channel(false);
    // The crowd arrives in waves of 20 (the server lingers on at most 64 refusals at once to
    // let each client read its 503; past that a refused connection is closed right after the
    // 503 is written, which a client that sent bytes may see as a reset).
    let mut crowd = Vec::new();
    for wave in 0..60 {
        for i in 0..20 {
            let slowloris = wave * 20 + i >= 1000;
            crowd.push(tokio::spawn(hostile(addr, slowloris, hold.clone())));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for i in 0..20 {
        let (path, secret) = if i % 2 == 0 {
            ("/health/live", None)
        } else {
            ("/debug/overrides", Some(READ_SECRET))
        };
        assert_eq!(get_from(OPERATOR, addr, path, secret).await, 200, "{path}");
    }
    stop.send(true).unwrap();
    let mut ends = Vec::new();
    for c in crowd {
        ends.push(c.await.unwrap());
    }
    let count = |e: End| ends.iter().filter(|x| **x == e).count();
    // The per-client cap holds 16; every other connection was evicted for a newer one of the
    // crowd (none was answering a request) or read a clean refusal.
    assert!(count(End::Held) <= 16, "{} held", count(End::Held));
    assert_eq!(
        count(End::Refused) + count(End::Held) + count(End::Evicted),
        1200,
        "{} refused, {} held, {} evicted, {} other",
        count(End::Refused),
        count(End::Held),
        count(End::Evicted),
        count(End::Other)
    );
}

#[tokio::test]
async fn a_thousand_bad_tokens_never_lock_out_the_valid_one_or_the_health_probe() {
    let server = spawn();
    let addr = server.handle.local_addr();
    // The operator behind the attacker's address used its token before the attack.
    assert_eq!(
        get_from(ATTACKER, addr, "/debug/overrides", Some(READ_SECRET)).await,
        200
    );
    let mut locked = 0;
    for _ in 0..1000 {
        let s = get_from(
            ATTACKER,
            addr,
            "/debug/overrides",
            Some("wrong-secret-0123456789abcdef"),
        )
        .await;
        assert!(s == 401 || s == 429, "{s}");
        locked += usize::from(s == 429);
    }
    assert!(
        locked > 900,
        "the limiter should bite the attacker: {locked} of 1000"
    );
    assert_eq!(
        get_from(ATTACKER, addr, "/debug/overrides", Some(READ_SECRET)).await,
        200
    );
    assert_eq!(get_from(ATTACKER, addr, "/health/live", None).await, 200);
}

#[tokio::test]
async fn one_tokens_slow_requests_cannot_starve_another_token() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let (g, e) = (gate.clone(), entered.clone());
    let server = spawn_with(move |b| {
        b.endpoint(
            Method::GET,
            "/debug/test/slow",
            Scope::Read,
            "waits",
            move || {
                let (g, e) = (g.clone(), e.clone());
                async move {
                    e.fetch_add(1, Ordering::SeqCst);
                    let _p = g.acquire().await;
                    "done"
                }
            },
        )
    });
    let addr = server.handle.local_addr();
    let slow: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(get_from(
                OPERATOR,
                addr,
                "/debug/test/slow",
                Some(READ_SECRET),
            ))
        })
        .collect();
    while entered.load(Ordering::SeqCst) < 8 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same token's ninth is refused; another token still gets through.
    assert_eq!(
        get_from(OPERATOR, addr, "/debug/test/slow", Some(READ_SECRET)).await,
        429
    );
    assert_eq!(
        get_from(OPERATOR, addr, "/debug/overrides", Some(PROFILE_SECRET)).await,
        200
    );
    gate.add_permits(100);
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn completed_cancelled_and_timed_out_requests_each_leave_an_audit_record() {
    let server = spawn_with(|b| {
        b.limits({
            let mut l = Limits::default();
            l.request_timeout = Duration::from_secs(3);
            l.max_profile_seconds = 2;
            l
        })
        .endpoint(
            Method::GET,
            "/debug/test/hang",
            Scope::Read,
            "never answers",
            || async { std::future::pending::<&'static str>().await },
        )
    });
    let addr = server.handle.local_addr();
    for _ in 0..5 {
        assert_eq!(
            get_from(OPERATOR, addr, "/debug/overrides", Some(READ_SECRET)).await,
            200
        );
    }
    // Five CPU profiles whose client hangs up after 100 ms.
    for _ in 0..5 {
        let mut s = connect_from(OPERATOR, addr).await.unwrap();
        let req = format!(
            "GET /debug/pprof/profile?seconds=2 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {PROFILE_SECRET}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Two requests that outlive the request timeout.
    for _ in 0..2 {
        assert_eq!(
            get_from(OPERATOR, addr, "/debug/test/hang", Some(READ_SECRET)).await,
            503
        );
    }
    let Server { handle, audit, dir } = server;
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .unwrap();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["kind"] == "request")
        .collect();
    let count = |path: &str, status: u64| {
        records
            .iter()
            .filter(|r| r["path"] == path && r["status"] == status)
            .count()
    };
    assert_eq!(records.len(), 12, "one record per request: {records:?}");
    assert_eq!(count("/debug/overrides", 200), 5);
    assert_eq!(count("/debug/pprof/profile", 499), 5, "{records:?}");
    assert_eq!(count("/debug/test/hang", 503), 2);
    for r in records.iter().filter(|r| r["status"] == 499) {
        assert_eq!(r["outcome"], "cancelled");
        assert!(r["duration_ms"].as_f64().unwrap() > 0.0);
    }
    drop(dir);
}

#[tokio::test]
async fn ten_thousand_health_probes_write_at_most_10_kb_of_audit() {
    let server = spawn();
    let c = client();
    let url = server.url("/health/live");
    for _ in 0..10_000 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let Server { handle, audit, dir } = server;
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&audit).unwrap();
    let folded: u64 = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "summary" && e["path"] == "/health/live")
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(folded, 10_000, "every probe is counted in a summary");
    assert!(
        text.len() <= 10 * 1024,
        "{} bytes of audit for 10 000 probes",
        text.len()
    );
    drop(dir);
}

#[tokio::test]
async fn an_unauthenticated_readiness_probe_shows_no_error_text() {
    let server = spawn_with(|b| {
        b.readiness_check("db", Duration::from_secs(1), || async {
            Err("connect to db-primary.internal:5432 as app_rw failed".to_string())
        })
    });
    let (s, open) = get(&server.url("/health/ready"), None).await;
    assert_eq!(s, 503, "{open}");
    assert!(open.contains("\"db\"") && open.contains("failed"), "{open}");
    assert!(
        !open.contains("db-primary") && !open.contains("app_rw"),
        "{open}"
    );
    let (s, with_token) = get(&server.url("/health/ready"), Some(READ_SECRET)).await;
    assert_eq!(s, 503);
    assert!(with_token.contains("db-primary.internal"), "{with_token}");
}
