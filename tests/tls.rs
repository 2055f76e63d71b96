//! TLS on the admin port with real clients: curl and reqwest (rustls) trusting a CA made in
//! the test, client certificates standing for tokens, rotation of the files, plaintext
//! refused, and clear errors for bad certificates, keys and CAs.
#![cfg(feature = "tls")]

mod common;
#[path = "common/tls.rs"]
mod pki;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pki::{peer_serial, Ca, Pair};
use prodbg::{Admin, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::layer::SubscriberExt;

/// `curl -sS <args>`: (exit code, stdout).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is not installed: apt-get install -y curl   (.ci/run does this)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits (up to 30 s) until the audit file holds a record `pred` accepts.
async fn audited(server: &Server, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = server.audit_entries().into_iter().find(|r| pred(r)) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no such audit record in {:#?}",
            server.audit_entries()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn curl_reads_over_tls_with_the_ca_and_plaintext_gets_a_clear_refusal() {
    let ca = Ca::new("prodbg test CA");
    let cert = ca.server(0x51);
    let server = spawn_with(|b| b.tls(&cert.cert, &cert.key));
    let url = server.url("/debug/process");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca_file = server.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let ca_path = ca_file.to_str().unwrap();

    let auth = format!("Authorization: Bearer {READ_SECRET}");
    let (code, body) = curl(&["--cacert", ca_path, "-H", &auth, &url]);
    assert_eq!(code, 0, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["process"]["pid"].as_u64().is_some(), "{body}");
    // ALPN says http/1.1; curl speaks it.
    let (code, version) = curl(&[
        "--cacert",
        ca_path,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &server.url("/health/live"),
    ]);
    assert_eq!((code, version.as_str()), (0, "1.1"));
    // Without the CA, curl refuses the server (60: peer certificate cannot be authenticated).
    let (code, _) = curl(&["-o", "/dev/null", &url]);
    assert_eq!(code, 60);

    // Plain HTTP to the TLS port: an immediate 400 naming https://, then close — not a hang.
    let mut raw = tokio::net::TcpStream::connect(server.handle.local_addr())
        .await
        .unwrap();
    raw.write_all(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_string(&mut answer))
        .await
        .expect("the refusal closes the connection")
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("\"tls_required\"") && answer.contains("https://"),
        "{answer}"
    );
    // And the same through curl's http://.
    let plain = url.replacen("https://", "http://", 1);
    let (code, body) = curl(&["-w", " %{http_code}", &plain]);
    assert_eq!(code, 0);
    assert!(
        body.ends_with(" 400") && body.contains("use https://"),
        "{body}"
    );
}

#[tokio::test]
async fn client_certificates_stand_for_their_mapped_tokens_and_unknown_ones_are_refused() {
    let ca = Ca::new("prodbg test CA");
    let rogue_ca = Ca::new("someone else's CA");
    let cert = ca.server(0x52);
    let server = spawn_with(|b| {
        b.tls(&cert.cert, &cert.key)
            .tls_client_ca(&ca.pem)
            .tls_client("oncall", Scope::Admin)
            .tls_client("prometheus", Scope::Read)
    });
    let oncall = ca.reqwest(Some(&ca.client("oncall")));
    let prometheus = ca.reqwest(Some(&ca.client("prometheus")));
    let stranger = ca.reqwest(Some(&ca.client("stranger")));

    let r = prometheus.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A read certificate cannot take a profile; an admin one can.
    let profile = server.url("/debug/pprof/profile?seconds=1");
    let r = prometheus.get(&profile).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = oncall.get(&profile).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.bytes().await.unwrap().is_empty());
    // A verified certificate that names no mapped client still needs a token.
    let r = stranger.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = stranger
        .get(server.url("/metrics"))
        .bearer_auth(READ_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A header wins over the certificate: a wrong secret is a 401 even with oncall's certificate.
    let r = oncall
        .get(server.url("/metrics"))
        .bearer_auth("wrong-secret-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // No certificate, or one from another CA: refused at the handshake.
    let anonymous = ca.reqwest(None);
    let e = anonymous
        .get(server.url("/health/live"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect() || e.is_request(), "{e:?}");
    let rogue = ca.reqwest(Some(&rogue_ca.client("oncall")));
    assert!(rogue.get(server.url("/health/live")).send().await.is_err());
    // curl with --cert/--key is the same client as far as the server is concerned.
    let dir = server.dir.path();
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    let (c, k) = ca.client("prometheus").write(dir, "prometheus");
    let (code, body) = curl(&[
        "--cacert",
        dir.join("ca.pem").to_str().unwrap(),
        "--cert",
        c.to_str().unwrap(),
        "--key",
        k.to_str().unwrap(),
        &server.url("/metrics"),
    ]);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("prodbg_http_requests"), "{body}");
    let (code, _) = curl(&[
        "--cacert",
        dir.join("ca.pem").to_str().unwrap(),
        &server.url("/metrics"),
    ]);
    assert_ne!(code, 0, "no client certificate: refused");

    // The audit record names the certificate's client, and how it was presented.
    let rec = audited(&server, |r| {
        r["kind"] == "request" && r["token_id"] == "oncall" && r["path"] == "/debug/pprof/profile"
    })
    .await;
    assert_eq!(rec["via"], "client-cert", "{rec}");
    assert_eq!(rec["status"], 200);
    let rec = audited(&server, |r| {
        r["kind"] == "request" && r["token_id"] == "viewer"
    })
    .await;
    assert!(rec.get("via").is_none(), "a bearer token: no via: {rec}");
}

#[tokio::test]
async fn with_optional_client_certificates_a_client_without_one_uses_a_token() {
    let ca = Ca::new("prodbg test CA");
    let cert = ca.server(0x53);
    let server = spawn_with(|b| {
        b.tls(&cert.cert, &cert.key)
            .tls_client_ca(&ca.pem)
            .tls_client("oncall", Scope::Admin)
            .tls_client_optional(true)
    });
    let anonymous = ca.reqwest(None);
    let r = anonymous
        .get(server.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = anonymous.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = anonymous
        .get(server.url("/metrics"))
        .bearer_auth(READ_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = ca
        .reqwest(Some(&ca.client("oncall")))
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The files are laid out as a Kubernetes secret mount: `tls.crt -> ..data/tls.crt`, with
/// `..data` a symlink to a versioned directory swapped atomically on renewal.
struct Mount {
    dir: std::path::PathBuf,
    version: u32,
}

impl Mount {
    fn new(dir: &std::path::Path, pair: &Pair) -> Mount {
        let mut m = Mount {
            dir: dir.to_path_buf(),
            version: 0,
        };
        m.swap(&pair.cert, &pair.key);
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        m
    }

    /// Writes a new version and points `..data` at it in one rename.
    fn swap(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let name = format!("..v{}", self.version);
        let v = self.dir.join(&name);
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("tls.crt"), cert).unwrap();
        std::fs::write(v.join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn paths(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        (self.dir.join("tls.crt"), self.dir.join("tls.key"))
    }
}

/// The serial a new connection is served.
async fn served_serial(ca: &Ca, url: &str) -> String {
    let r = ca.reqwest(None).get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    peer_serial(&r)
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_and_a_broken_one_keeps_the_old() {
    let ca = Ca::new("prodbg test CA");
    let tls_dir = tempfile::tempdir().unwrap();
    let mut mount = Mount::new(tls_dir.path(), &ca.server(0x1001));
    let (c, k) = mount.paths();
    let server = spawn_with(|b| {
        b.tls_files(&c, &k)
            .tls_reload_interval(Duration::from_millis(200))
    });
    let live = server.url("/health/live");
    assert_eq!(served_serial(&ca, &live).await, "1001");

    // A connection opened before the renewal keeps working with its certificate.
    let kept = ca.reqwest(None);
    assert_eq!(kept.get(&live).send().await.unwrap().status(), 200);
    let renewed = ca.server(0x2002);
    mount.swap(&renewed.cert, &renewed.key);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_serial(&ca, &live).await != "2002" {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kept.get(&live).send().await.unwrap().status(), 200);
    let rec = audited(&server, |r| {
        r["kind"] == "tls_reload" && r["outcome"] == "loaded"
    })
    .await;
    assert_eq!(rec["serial"], "2002", "{rec}");

    // A renewal whose key belongs to another certificate is refused: the old one stays.
    let other = ca.server(0x3003);
    mount.swap(&other.cert, &renewed.key);
    let rec = audited(&server, |r| {
        r["kind"] == "tls_reload" && r["outcome"] == "rejected"
    })
    .await;
    let why = rec["error"].as_str().unwrap();
    assert!(why.contains("does not match the certificate"), "{why}");
    assert_eq!(served_serial(&ca, &live).await, "2002");
    // Fixed files are picked up again.
    mount.swap(&other.cert, &other.key);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_serial(&ca, &live).await != "3003" {
        assert!(
            Instant::now() < deadline,
            "the fixed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The audit chain verifies with its new kind of record.
    let report = prodbg::verify_audit_log(&server.audit, None, None).unwrap();
    assert!(report.kinds.tls_reload >= 3, "{report}");
}

/// Messages of WARN events logged while `f` runs.
fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            if *event.metadata().level() == tracing::Level::WARN {
                let mut m = Message(String::new());
                event.record(&mut m);
                self.0.lock().unwrap().push(m.0);
            }
        }
    }
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let out = tracing::subscriber::with_default(subscriber, f);
    let warned = capture.0.lock().unwrap().clone();
    (out, warned)
}

#[test]
fn bad_certificates_keys_and_cas_are_clear_errors_at_spawn() {
    let ca = Ca::new("prodbg test CA");
    let a = ca.server(1);
    let b = ca.server(2);
    let err = |builder: prodbg::AdminBuilder| builder.spawn().unwrap_err().to_string();

    let e = err(builder().tls_files("/nonexistent/tls.crt", "/nonexistent/tls.key"));
    assert!(
        e.contains("TLS certificate file /nonexistent/tls.crt: cannot open it"),
        "{e}"
    );
    let e = err(builder().tls("this is not PEM", &a.key));
    assert!(e.contains("holds no certificate"), "{e}");
    let e = err(builder().tls(&a.cert, &a.cert));
    assert!(e.contains("holds no private key"), "{e}");
    let e = err(builder().tls(&a.cert, &b.key));
    assert!(
        e.contains("the private key does not match the certificate's public key"),
        "{e}"
    );
    let e = err(builder()
        .tls(&a.cert, &a.key)
        .tls_client_ca(&a.key)
        .tls_client("oncall", Scope::Admin));
    assert!(
        e.contains("TLS client CA") && e.contains("holds no certificate"),
        "{e}"
    );
    let e = err(builder()
        .tls(&a.cert, &a.key)
        .tls_client("oncall", Scope::Admin));
    assert!(e.contains("no client CA"), "{e}");
    let e = err(builder().tls_client_ca(&ca.pem));
    assert!(e.contains("need the server's own certificate"), "{e}");
    let e = err(builder()
        .tls(&a.cert, &a.key)
        .tls_client("on call", Scope::Admin));
    assert!(e.contains("token name"), "{e}");
    // Off loopback, plain HTTP is refused; TLS is not.
    let e = err(builder().bind("0.0.0.0:0"));
    assert!(e.contains("refusing to serve plain HTTP"), "{e}");
    builder()
        .bind("0.0.0.0:0")
        .tls(&a.cert, &a.key)
        .spawn()
        .unwrap()
        .shutdown();
    // Client certificates alone are credentials enough.
    Admin::builder()
        .bind("127.0.0.1:0")
        .tls(&a.cert, &a.key)
        .tls_client_ca(&ca.pem)
        .tls_client("oncall", Scope::Admin)
        .spawn()
        .unwrap()
        .shutdown();

    // An expired certificate starts, with a warning: clients will refuse it.
    let expired = ca.server_with(3, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (handle, warned) =
        warnings_of(|| builder().tls(&expired.cert, &expired.key).spawn().unwrap());
    assert!(
        warned.iter().any(|w| w.contains("has expired")),
        "{warned:?}"
    );
    handle.shutdown();
    let (handle, warned) = warnings_of(|| builder().tls(&a.cert, &a.key).spawn().unwrap());
    assert!(!warned.iter().any(|w| w.contains("expire")), "{warned:?}");
    handle.shutdown();
}

/// `Admin::from_env()` reads the TLS variables (the only test of this binary that touches the
/// environment: the others build without `env()`).
#[tokio::test]
async fn the_tls_variables_configure_https_and_client_certificates() {
    let ca = Ca::new("prodbg test CA");
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = ca.server(0x54).write(dir.path(), "server");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let set = |vars: &[(&str, &std::path::Path)]| {
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
    };
    let clear = || {
        for v in [
            "PRODBG_TLS_CERT",
            "PRODBG_TLS_KEY",
            "PRODBG_TLS_CLIENT_CA",
            "PRODBG_TLS_CLIENTS",
            "PRODBG_TLS_CLIENT_OPTIONAL",
        ] {
            std::env::remove_var(v);
        }
    };
    set(&[("PRODBG_TLS_CERT", &c)]);
    let e = Admin::builder()
        .bind("127.0.0.1:0")
        .env()
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("PRODBG_TLS_CERT is set without PRODBG_TLS_KEY"),
        "{e}"
    );
    set(&[
        ("PRODBG_TLS_KEY", &k),
        ("PRODBG_TLS_CLIENT_CA", &dir.path().join("ca.pem")),
    ]);
    std::env::set_var("PRODBG_TLS_CLIENTS", "oncall:admin,prometheus:read");
    std::env::set_var("PRODBG_TLS_CLIENT_OPTIONAL", "1");
    let handle = Admin::builder().bind("127.0.0.1:0").env().spawn().unwrap();
    clear();
    let url = format!("{}/metrics", handle.url());
    assert!(url.starts_with("https://"), "{url}");
    let r = ca
        .reqwest(Some(&ca.client("prometheus")))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Optional client certificates: no certificate connects, and needs a token.
    let r = ca.reqwest(None).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    handle.shutdown();
    std::env::set_var("PRODBG_TLS_CLIENTS", "prometheus:root");
    let e = Admin::builder()
        .bind("127.0.0.1:0")
        .env()
        .spawn()
        .unwrap_err()
        .to_string();
    clear();
    assert!(
        e.contains("PRODBG_TLS_CLIENTS") && e.contains("unknown scope"),
        "{e}"
    );
}
