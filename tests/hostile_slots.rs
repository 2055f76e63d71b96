//! Slots the operator keeps, over real TCP on loopback: admin-scope tokens have request slots
//! no lower token can take; a client at its connection cap evicts its own idle or unfinished
//! connections, so an operator sharing its address (port-forward, sidecar, mesh) is still
//! answered; a request body has one deadline from arrival, answered 408.

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

const SHARED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SECOND_READ_SECRET: &str = "second-read-secret-0123456789abcdef";

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

/// One request on a fresh connection from `from`: status (0 if none came) and body.
async fn call(
    from: Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    secret: Option<&str>,
    body: &str,
) -> (u16, String) {
    let host = to.to_string();
    let auth = secret.map(|s| format!("Bearer {s}"));
    let mut headers = vec![("host", host.as_str())];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    raw(from, to, method, path, &headers, body).await
}

/// One request with exactly `headers` (plus `connection` and `content-length`).
async fn raw(
    from: Ipv4Addr,
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let Ok(mut s) = connect_from(from, to).await else {
        return (0, String::new());
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    read_answer(&mut s).await
}

async fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_tokens_filling_every_request_slot_never_make_the_admin_wait() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(AtomicUsize::new(0));
    let (g, e) = (gate.clone(), entered.clone());
    // Not installed as the global subscriber: PUT /debug/log-level changes this filter only.
    let (_filter, control) =
        prodbg::log_level::reloadable(tracing_subscriber::EnvFilter::new("info"));
    let server = spawn_with(move |b| {
        b.token("viewer2", Scope::Read, SECOND_READ_SECRET)
            .log_control(control)
            .endpoint(
                Method::GET,
                "/debug/test/slow",
                Scope::Read,
                "waits for the test",
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
    // A read and a profile token each hold their 8: the 16 shared slots are full.
    let held: Vec<_> = [READ_SECRET, PROFILE_SECRET]
        .into_iter()
        .flat_map(|secret| {
            (0..8).map(move |_| {
                tokio::spawn(call(
                    SHARED,
                    addr,
                    "GET",
                    "/debug/test/slow",
                    Some(secret),
                    "",
                ))
            })
        })
        .collect();
    while entered.load(Ordering::SeqCst) < 16 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A third lower token finds no slot…
    let (s, body) = call(
        OTHER,
        addr,
        "GET",
        "/debug/overrides",
        Some(SECOND_READ_SECRET),
        "",
    )
    .await;
    assert_eq!(s, 429, "{body}");
    assert!(body.contains("already answering 16 requests"), "{body}");
    // …while the admin token still gets the console and changes the log level.
    for _ in 0..3 {
        let (s, body) = call(OTHER, addr, "GET", "/debug/", Some(ADMIN_SECRET), "").await;
        assert_eq!(s, 200, "console: {body}");
        let (s, body) = call(
            OTHER,
            addr,
            "PUT",
            "/debug/log-level?ttl=1m",
            Some(ADMIN_SECRET),
            "debug",
        )
        .await;
        assert_eq!(s, 200, "log level: {body}");
    }
    gate.add_permits(100);
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_idle_connections_from_an_address_cost_it_its_oldest_not_the_operator() {
    let server = spawn();
    let addr = server.handle.local_addr();
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(connect_from(SHARED, addr).await.unwrap());
    }
    // Let the server accept all 16 (they are within their first-byte deadline of 5 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, body) = call(SHARED, addr, "GET", "/health/live", None, "").await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = call(
        SHARED,
        addr,
        "GET",
        "/debug/overrides",
        Some(ADMIN_SECRET),
        "",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // The server closed the idle connection it evicted: it reads end of file.
    let mut closed = 0;
    for c in &mut idle {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(200), c.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was evicted");
}

/// A hostile client's connection, reconnecting 1 s after the server closes it, until `stop`:
/// idle (connects and sends nothing) or slowloris (half a head, then a byte a second).
/// Counts its connections.
async fn hold(
    to: SocketAddr,
    slowloris: bool,
    connects: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Ok(mut s) = connect_from(SHARED, to).await {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sharing_an_address_with_300_held_connections_is_answered() {
    raise_nofile();
    let server = spawn();
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
    // The operator is another process (curl): its own thread and runtime.
    let answers = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let mut answers = Vec::new();
                for i in 0..20 {
                    let (path, secret) = if i % 2 == 0 {
                        ("/health/live", None)
                    } else {
                        ("/debug/overrides", Some(ADMIN_SECRET))
                    };
                    let (s, body) = call(SHARED, addr, "GET", path, secret, "").await;
                    answers.push((i, path, s, body));
                }
                answers
            })
    })
    .await
    .unwrap();
    let answered = answers.iter().filter(|a| a.2 == 200).count();
    assert_eq!(
        answered,
        20,
        "{:?}",
        answers.iter().filter(|a| a.2 != 200).collect::<Vec<_>>()
    );
    // The crowd kept coming back the whole time: more connections than it holds at once.
    assert!(connects.load(Ordering::Relaxed) > 300);
    stop.send(true).unwrap();
    for c in crowd {
        c.await.unwrap();
    }
}

fn short_body_deadline() -> Limits {
    let mut l = Limits::default();
    l.body_read_timeout = Duration::from_secs(1);
    l
}

/// Sends a PUT head announcing `length` bytes, then `sent` of them a byte every `every` (all
/// at once when `every` is zero) and waits; returns the answer and how many body bytes went out
/// before it came.
async fn put_body(
    to: SocketAddr,
    path: &str,
    length: usize,
    sent: usize,
    every: Duration,
) -> (u16, String, usize) {
    let mut s = connect_from(OTHER, to).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {to}\r\nauthorization: Bearer {ADMIN_SECRET}\r\ncontent-length: {length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let out = Arc::new(AtomicUsize::new(0));
    let counter = out.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..sent {
            if wr.write_all(b"d").await.is_err() {
                return;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
        }
        // Holds the write half open: the rest of the body never comes.
        std::future::pending::<()>().await;
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut buf)).await;
    let before = out.load(Ordering::SeqCst);
    writer.abort();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text, before)
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_its_deadline_not_per_chunk_and_answered_408() {
    let (_filter, control) =
        prodbg::log_level::reloadable(tracing_subscriber::EnvFilter::new("info"));
    let server = spawn_with(|b| b.limits(short_body_deadline()).log_control(control));
    let addr = server.handle.local_addr();
    // 100 bytes at one per 200 ms would take 20 s; each chunk is well within the 1 s limit.
    let (status, text, sent) = put_body(
        addr,
        "/debug/log-level",
        100,
        100,
        Duration::from_millis(200),
    )
    .await;
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("\"error\":\"timeout\""), "{text}");
    assert!(text.contains("within 1 s"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        sent < 100,
        "answered only after the whole body: {sent} bytes"
    );
}

#[tokio::test]
async fn a_body_that_stops_is_answered_408() {
    let server = spawn_with(|b| {
        b.limits(short_body_deadline()).endpoint(
            Method::PUT,
            "/debug/test/echo",
            Scope::Admin,
            "echoes its body",
            |body: String| async move { body },
        )
    });
    let addr = server.handle.local_addr();
    let (status, text, _) = put_body(addr, "/debug/test/echo", 100, 10, Duration::ZERO).await;
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("\"error\":\"timeout\""), "{text}");
    // A body sent in time still reaches the handler.
    let (s, body) = call(
        OTHER,
        addr,
        "PUT",
        "/debug/test/echo",
        Some(ADMIN_SECRET),
        "hello",
    )
    .await;
    assert_eq!((s, body.as_str()), (200, "hello"));
    // The audit record says 408 too.
    let Server { handle, audit, dir } = server;
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("\"/debug/test/echo\"") && l.contains("\"status\":408")),
        "{text}"
    );
    drop(dir);
}

#[tokio::test]
async fn a_foreign_host_is_refused_421_and_addresses_localhost_and_named_hosts_pass() {
    let server = spawn_with(|b| b.allowed_hosts(["admin.internal", "*.svc.cluster.local"]));
    let addr = server.handle.local_addr();
    let port = addr.port();
    let auth = format!("Bearer {ADMIN_SECRET}");
    // A page on another name that resolves to this address (DNS rebinding) names that name.
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("svc.cluster.local:{port}"),
    ] {
        let (s, body) = raw(OTHER, addr, "GET", "/health/live", &[("host", &host)], "").await;
        assert_eq!(s, 421, "{host}: {body}");
        let message = error_message(&body, "unknown_host");
        assert!(
            message.contains("PRODBG_ALLOWED_HOSTS")
                && message.contains("evil") == host.contains("evil"),
            "{message}"
        );
        let (s, body) = raw(
            OTHER,
            addr,
            "GET",
            "/debug/overrides",
            &[("host", &host), ("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(s, 421, "{host}: {body}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("127.0.0.2:{port}"),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        format!("Admin.Internal:{port}"),
        format!("app.ns.svc.cluster.local:{port}"),
    ] {
        let (s, body) = raw(OTHER, addr, "GET", "/health/live", &[("host", &host)], "").await;
        assert_eq!(s, 200, "{host}: {body}");
        let (s, body) = raw(
            OTHER,
            addr,
            "GET",
            "/debug/overrides",
            &[("host", &host), ("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(s, 200, "{host}: {body}");
    }
}

#[tokio::test]
async fn allowed_hosts_come_from_prodbg_allowed_hosts_too() {
    // Only this test of the binary reads the environment.
    std::env::set_var("PRODBG_ALLOWED_HOSTS", "ops.example, *.mesh.local");
    let built = prodbg::Admin::from_env()
        .bind("127.0.0.1:0")
        .token("ops", Scope::Admin, ADMIN_SECRET)
        .spawn();
    std::env::remove_var("PRODBG_ALLOWED_HOSTS");
    let handle = built.unwrap();
    let addr = handle.local_addr();
    for (host, want) in [
        ("ops.example", 200),
        ("a.mesh.local", 200),
        ("other.example", 421),
    ] {
        let (s, body) = raw(OTHER, addr, "GET", "/health/live", &[("host", host)], "").await;
        assert_eq!(s, want, "{host}: {body}");
    }
    let bad = prodbg::Admin::builder()
        .token("ops", Scope::Admin, ADMIN_SECRET)
        .allowed_hosts(["http://x.example/"])
        .build()
        .unwrap_err()
        .to_string();
    assert!(bad.contains("is not a host name"), "{bad}");
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_link_from_another_site_may_read_but_not_start_profile_scope_work() {
    let server = spawn();
    let addr = server.handle.local_addr();
    let host = addr.to_string();
    let prof = basic("prof", PROFILE_SECRET);
    let from = |site: &'static str| {
        vec![
            ("host", host.as_str()),
            ("authorization", prof.as_str()),
            ("sec-fetch-site", site),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
        ]
    };
    for site in ["cross-site", "same-site"] {
        for path in ["/debug/pprof/profile?seconds=1", "/debug/bundle?seconds=1"] {
            let (s, body) = raw(OTHER, addr, "GET", path, &from(site), "").await;
            assert_eq!(s, 403, "{site} {path}: {body}");
            assert!(
                error_message(&body, "forbidden").contains("cannot start profile-scope work"),
                "{body}"
            );
        }
        // Reading is what a link is for.
        let (s, body) = raw(OTHER, addr, "GET", "/debug/overrides", &from(site), "").await;
        assert_eq!(s, 200, "{site}: {body}");
    }
    // Typed into the address bar (or the console's own page): the profile runs.
    let (s, body) = raw(
        OTHER,
        addr,
        "GET",
        "/debug/pprof/profile?seconds=1&format=folded",
        &from("none"),
        "",
    )
    .await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn a_write_with_browser_credentials_needs_origin_or_sec_fetch_site() {
    let server = spawn_with(|b| {
        b.endpoint(
            Method::PUT,
            "/debug/test/echo",
            Scope::Admin,
            "echoes its body",
            |body: String| async move { body },
        )
    });
    let addr = server.handle.local_addr();
    let host = addr.to_string();
    let own = format!("http://{host}");
    let basic_ops = basic("ops", ADMIN_SECRET);
    let bearer = format!("Bearer {ADMIN_SECRET}");
    let put = |headers: Vec<(&'static str, String)>| {
        let host = host.clone();
        async move {
            let mut all = vec![("host", host)];
            all.extend(headers);
            let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            raw(OTHER, addr, "PUT", "/debug/test/echo", &refs, "x").await
        }
    };
    // Basic alone: what an old browser would send for another site's form.
    let (s, body) = put(vec![("authorization", basic_ops.clone())]).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        error_message(&body, "forbidden").contains("Authorization: Bearer"),
        "{body}"
    );
    for ok in [
        vec![("authorization", bearer.clone())],
        vec![
            ("authorization", basic_ops.clone()),
            ("origin", own.clone()),
        ],
        vec![
            ("authorization", basic_ops.clone()),
            ("sec-fetch-site", "same-origin".into()),
        ],
    ] {
        let (s, body) = put(ok.clone()).await;
        assert_eq!((s, body.as_str()), (200, "x"), "{ok:?}");
    }
    // go tool pprof's symbol lookup: a POST with URL credentials (Basic) and neither header.
    let prof = basic("prof", PROFILE_SECRET);
    let (s, body) = raw(
        OTHER,
        addr,
        "POST",
        "/debug/pprof/symbol",
        &[("host", &host), ("authorization", &prof)],
        "0x1",
    )
    .await;
    assert_eq!(s, 200, "{body}");
}
