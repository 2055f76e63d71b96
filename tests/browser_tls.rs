//! The console over HTTPS in a real browser: headless Chromium whose NSS database (the one
//! Chromium on Linux reads, under `$HOME/.pki/nssdb`) trusts the CA made in the test, and
//! nothing else. A certificate it did not trust would stop at Chromium's interstitial, never
//! rendering the console. Its own test binary: it points `HOME` at a scratch directory.
//! A missing chromium, chromedriver or certutil fails the test with the install command.
#![cfg(all(feature = "tls", feature = "cpu"))]

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/tls.rs"]
mod pki;

use std::process::Command;
use std::time::Duration;

use browser::Browser;
use common::*;

const CERTUTIL_INSTALL: &str = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libnss3-tools   (.ci/run does this)";

/// Creates the NSS database of `home` and adds `ca_pem` as a trusted CA for TLS servers.
fn trust_in_nss(home: &std::path::Path, ca_pem: &str) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let ca = home.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let dbarg = format!("sql:{}", db.display());
    let run = |args: &[&str]| {
        let out = Command::new("certutil")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run certutil ({e}): {CERTUTIL_INSTALL}"));
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["-d", &dbarg, "-N", "--empty-password"]);
    run(&[
        "-d",
        &dbarg,
        "-A",
        "-t",
        "C,,",
        "-n",
        "prodbg-test-ca",
        "-i",
        ca.to_str().unwrap(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_trusting_the_test_ca_opens_the_console_over_https() {
    let ca = pki::Ca::new("prodbg test CA");
    let cert = ca.server(0x91);
    let server = spawn_with(|b| b.tls(&cert.cert, &cert.key));
    let home = tempfile::tempdir().unwrap();
    trust_in_nss(home.path(), &ca.pem);
    // Chromium inherits chromedriver's environment, which inherits this process's.
    std::env::set_var("HOME", home.path());
    let b = Browser::launch().await.unwrap();
    let url = server.url("/debug/");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    b.set_basic_auth("ops", ADMIN_SECRET).await.unwrap();
    b.goto(&url).await.unwrap();
    let ready = b
        .wait_for("html[data-ready='1']", Duration::from_secs(60))
        .await;
    let at = b.current_url().await.unwrap_or_default();
    let title = b.title().await.unwrap_or_default();
    assert!(
        ready.is_ok(),
        "the console did not render over https (at {at}, title {title:?}): {ready:?}"
    );
    assert!(at.starts_with("https://"), "{at}");
    b.quit().await.unwrap();
    let rec = server
        .audit_lines()
        .into_iter()
        .find(|l| l["path"] == "/debug/" && l["token_id"] == "ops")
        .expect("the console page is audited as ops");
    assert_eq!(rec["status"], 200, "{rec}");
}
