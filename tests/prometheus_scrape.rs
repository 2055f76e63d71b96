//! A real Prometheus server (Debian `prometheus`, which `.ci/run` installs for `promtool`)
//! scraping `/metrics` twice: with `basic_auth` and with a bearer `authorization`. A missing
//! `prometheus` fails the test with the install command; it never skips.

mod common;
#[cfg(feature = "tls")]
#[path = "common/tls.rs"]
mod pki;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const INSTALL: &str = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus   (.ci/run does this)";

/// Kills the Prometheus this test started (by its pid) when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Prometheus with `config` in `dir`, answering its API on the returned address.
fn start_prometheus(dir: &std::path::Path, config: &str) -> (Prometheus, std::net::SocketAddr) {
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run prometheus ({e}): {INSTALL}"));
    (Prometheus(child), web)
}

#[tokio::test]
async fn prometheus_scrapes_metrics_with_basic_auth_and_with_bearer() {
    let server = spawn();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), READ_SECRET).unwrap();
    std::fs::write(dir.path().join("token"), PROFILE_SECRET).unwrap();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: prodbg-basic
    basic_auth:
      username: viewer
      password_file: {pw}
    static_configs:
      - targets: ['{addr}']
  - job_name: prodbg-bearer
    authorization:
      type: Bearer
      credentials_file: {tok}
    static_configs:
      - targets: ['{addr}']
"#,
        pw = dir.path().join("password").display(),
        tok = dir.path().join("token").display(),
        addr = server.handle.local_addr(),
    );
    let mut prometheus = start_prometheus(dir.path(), &config).0;

    let scraped = |token: &str| {
        server
            .audit_lines()
            .iter()
            .any(|l| l["path"] == "/metrics" && l["status"] == 200 && l["token_id"] == token)
    };
    let start = Instant::now();
    while !(scraped("viewer") && scraped("prof")) {
        let exited = prometheus.0.try_wait().unwrap();
        assert!(
            exited.is_none() && start.elapsed() < Duration::from_secs(90),
            "no successful scrape by both jobs (prometheus exited: {exited:?}); audit: {:#?}\nprometheus log:\n{}",
            server
                .audit_lines()
                .iter()
                .filter(|l| l["path"] == "/metrics")
                .collect::<Vec<_>>(),
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(prometheus);
    // No scrape was refused.
    let refused: Vec<_> = server
        .audit_lines()
        .into_iter()
        .filter(|l| l["path"] == "/metrics" && l["status"] != 200)
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
}

/// Prometheus scraping over HTTPS with `tls_config`: it trusts the test CA and presents a
/// client certificate that stands for the `prometheus` read token; its own `up` says 1.
#[cfg(feature = "tls")]
#[tokio::test]
async fn prometheus_scrapes_over_tls_with_a_client_certificate() {
    let ca = pki::Ca::new("prodbg test CA");
    let cert = ca.server(0x71);
    let server = spawn_with(|b| {
        b.tls(&cert.cert, &cert.key)
            .tls_client_ca(&ca.pem)
            .tls_client("prometheus", prodbg::Scope::Read)
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    let (c, k) = ca.client("prometheus").write(dir.path(), "prometheus");
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: prodbg-tls
    scheme: https
    tls_config:
      ca_file: {ca}
      cert_file: {cert}
      key_file: {key}
    static_configs:
      - targets: ['{addr}']
"#,
        ca = dir.path().join("ca.pem").display(),
        cert = c.display(),
        key = k.display(),
        addr = server.handle.local_addr(),
    );
    let (mut prometheus, web) = start_prometheus(dir.path(), &config);
    let http = client();
    let start = Instant::now();
    loop {
        let exited = prometheus.0.try_wait().unwrap();
        let up = http
            .get(format!("http://{web}/api/v1/query"))
            .query(&[("query", "up{job=\"prodbg-tls\"}")])
            .send()
            .await
            .ok();
        let value = match up {
            Some(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_string)
            }),
            None => None,
        };
        if value.as_deref() == Some("1") {
            break;
        }
        assert!(
            exited.is_none() && start.elapsed() < Duration::from_secs(90),
            "up{{job=\"prodbg-tls\"}} is {value:?} (prometheus exited: {exited:?}); prometheus log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(prometheus);
    let scrape = server
        .audit_lines()
        .into_iter()
        .find(|l| l["path"] == "/metrics" && l["status"] == 200)
        .expect("an audited scrape");
    assert_eq!(scrape["token_id"], "prometheus", "{scrape}");
    assert_eq!(scrape["via"], "client-cert", "{scrape}");
}
