//! Shared test helpers: tokens, a spawned admin server, an HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;

use prodbg::{Admin, AdminBuilder, AdminHandle, Scope};

pub const ADMIN_SECRET: &str = "admin-secret-0123456789abcdef";
pub const PROFILE_SECRET: &str = "profile-secret-0123456789abcdef";
pub const READ_SECRET: &str = "read-secret-0123456789abcdef";

/// A builder on a free loopback port with three tokens (ops/admin, prof/profile, viewer/read).
pub fn builder() -> AdminBuilder {
    Admin::builder()
        .bind("127.0.0.1:0")
        .service_name("test-service")
        .token("ops", Scope::Admin, ADMIN_SECRET)
        .token("prof", Scope::Profile, PROFILE_SECRET)
        .token("viewer", Scope::Read, READ_SECRET)
}

/// A spawned server with an audit file in a fresh temp dir.
pub struct Server {
    pub handle: AdminHandle,
    pub audit: PathBuf,
    pub dir: tempfile::TempDir,
}

pub fn spawn_with(f: impl FnOnce(AdminBuilder) -> AdminBuilder) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let handle = f(builder().audit_file(&audit)).spawn().unwrap();
    Server { handle, audit, dir }
}

pub fn spawn() -> Server {
    spawn_with(|b| b)
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.handle.url(), path)
    }

    /// The audit file's request records (summaries and checkpoints left out).
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.audit_entries()
            .into_iter()
            .filter(|r| r["kind"] == "request")
            .collect()
    }

    /// Every record of the audit file, whatever its kind.
    pub fn audit_entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// GET with a bearer token; returns status and body text.
pub async fn get(url: &str, secret: Option<&str>) -> (u16, String) {
    let mut req = client().get(url);
    if let Some(s) = secret {
        req = req.bearer_auth(s);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The `Authorization` value for HTTP Basic auth: `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// GET with HTTP Basic auth; returns status, the `WWW-Authenticate` values and body text.
pub async fn get_basic(url: &str, user: &str, password: &str) -> (u16, Vec<String>, String) {
    let resp = client()
        .get(url)
        .header("authorization", basic(user, password))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let challenges = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    (status, challenges, resp.text().await.unwrap())
}

/// The two challenges every 401 carries, one header each (Chromium ignores the combined form).
pub const CHALLENGES: [&str; 2] = ["Basic realm=\"prodbg\"", "Bearer"];

/// Asserts the documented error body and returns its message.
pub fn error_message(body: &str, code: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["error"], code, "{body}");
    v["message"].as_str().unwrap().to_string()
}

/// The index (`GET /debug/` as JSON: `endpoints` and every probe's glance), read with the
/// read token.
pub async fn index(server: &Server) -> serde_json::Value {
    let resp = client()
        .get(server.url("/debug/"))
        .bearer_auth(READ_SECRET)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.unwrap()
}

/// Whether a CPU profile is running, as the index tells.
pub async fn cpu_profile_running(server: &Server) -> bool {
    figure(&index(server).await, "cpu", "cpu")["value"] == "running"
}

/// Figure `id` of probe `probe`'s glance in the index JSON (`Value::Null` if it has none).
pub fn figure<'a>(index: &'a serde_json::Value, probe: &str, id: &str) -> &'a serde_json::Value {
    index["probes"][probe]["figures"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["id"] == id))
        .unwrap_or(&serde_json::Value::Null)
}

/// Table `id` of probe `probe`'s glance in the index JSON (`Value::Null` if it has none).
pub fn glance_table<'a>(
    index: &'a serde_json::Value,
    probe: &str,
    id: &str,
) -> &'a serde_json::Value {
    index["probes"][probe]["tables"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == id))
        .unwrap_or(&serde_json::Value::Null)
}

/// Every endpoint the server lists in its index: (method, path, scope, available).
pub async fn endpoints(server: &Server) -> Vec<(String, String, String, bool)> {
    let v = index(server).await;
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["scope"].as_str().unwrap().to_string(),
                e["available"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// How CI installs Go, for the message of a test that needs `go tool pprof`.
pub const GO_INSTALL: &str = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends golang-go   (.ci/run does this)";

/// A bundle's files by name (under `prodbg-bundle/`), from its `tar.gz`.
pub fn untar(gz: &[u8]) -> std::collections::HashMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut files = std::collections::HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        files.insert(
            name.strip_prefix("prodbg-bundle/").unwrap().to_string(),
            bytes,
        );
    }
    files
}

/// A gzipped `profile.proto`, decoded with pprof-rs's types (a real decoder, not ours).
pub fn decode_pprof(gz: &[u8]) -> pprof::protos::Profile {
    use pprof::protos::Message as _;
    use std::io::Read as _;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    pprof::protos::Profile::decode(raw.as_slice()).unwrap()
}

/// `go tool pprof <args>` in a clean environment: its own HOME, GOCACHE and PPROF_TMPDIR (where
/// pprof saves each profile it fetches), nothing else of the caller's. A missing `go` fails
/// the test with the install line.
pub fn go_tool_pprof(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    go_tool_pprof_env(dir, &[], args)
}

/// [`go_tool_pprof`] with `env` added to its clean environment (e.g. `SSL_CERT_FILE`).
pub fn go_tool_pprof_env(
    dir: &std::path::Path,
    env: &[(&str, &std::path::Path)],
    args: &[&str],
) -> std::process::Output {
    use std::process::Command;
    let go = ["go", "/usr/bin/go", "/usr/lib/go/bin/go"]
        .into_iter()
        .find(|g| {
            Command::new(g)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| panic!("`go` is not installed: {GO_INSTALL}"));
    Command::new(go)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("GOCACHE", dir.join("gocache"))
        .env("PPROF_TMPDIR", dir.join("pprof"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .args(["tool", "pprof"])
        .args(args)
        .output()
        .unwrap()
}

/// The span layer's handle, installed once per test binary inside a reloadable `info` filter
/// next to a `fmt` layer, as the README recommends.
pub fn spans_handle() -> prodbg::spans::SpansHandle {
    use tracing_subscriber::prelude::*;
    static HANDLE: std::sync::OnceLock<prodbg::spans::SpansHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (filter, _control) =
                prodbg::log_level::reloadable(tracing_subscriber::EnvFilter::new("info"));
            let (spans, handle) = prodbg::spans::layer(prodbg::spans::Options::default());
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::sink)
                        .and_then(spans)
                        .with_filter(filter),
                )
                .init();
            handle
        })
        .clone()
}

/// An archive's files by name, each without its first path component (an incident's
/// `<id>/meta.json` is `meta.json`).
pub fn untar_incident(gz: &[u8]) -> std::collections::HashMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut files = std::collections::HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        let short = name.split_once('/').map_or(name.as_str(), |(_, f)| f);
        files.insert(short.to_string(), bytes);
    }
    files
}
