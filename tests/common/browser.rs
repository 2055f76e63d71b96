//! A small WebDriver client for tests: headless Debian Chromium driven through chromedriver.
//!
//! Dependencies: reqwest 0.12 (`default-features = false, features = ["json"]`), serde_json, tokio.
//! No fantoccini / chromiumoxide. Include it from a test with
//! `#[path = "common/browser.rs"] mod browser;` (or as a module of `tests/common`).
//!
//! ```ignore
//! let b = Browser::launch().await.unwrap();          // panics if chromium/chromedriver are missing
//! b.goto("http://user:secret@127.0.0.1:6060/debug/").await.unwrap();
//! let button = b.wait_for("#cpu-flame", Duration::from_secs(5)).await.unwrap();
//! b.click(&button).await.unwrap();
//! let svg = b.wait_for("#out svg", Duration::from_secs(10)).await.unwrap();
//! assert!(b.text(&svg).await.unwrap().contains("hot_fn"));
//! b.screenshot_png("target/browser-artifacts/flame.png").await.unwrap();
//! b.quit().await.unwrap();
//! ```
//!
//! Chromium is started with `--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run
//! --disable-background-networking --disable-component-update --disable-sync` and a fresh
//! `--user-data-dir` (removed on drop): without the background-networking flags Chromium keeps
//! trying Google's hosts, which this machine's closed network refuses.
//!
//! Environment overrides: `CHROMEDRIVER` (default: `chromedriver` on PATH, then
//! `/usr/bin/chromedriver`), `CHROMIUM_BIN` (default `/usr/bin/chromium`).
#![allow(dead_code)]

use std::fmt;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C key under which an element reference travels.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The command that installs what this module needs (shown when it is missing).
pub const INSTALL_HINT: &str =
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
     --no-install-recommends chromium chromium-driver   (.ci/run must do this)";

/// Chromium's flags (besides `--user-data-dir`).
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// An error, carrying chromedriver's own message where it sent one.
#[derive(Debug)]
pub enum Error {
    /// chromedriver answered with a W3C error (`{"value":{"error","message"}}`).
    WebDriver {
        command: String,
        status: u16,
        error: String,
        message: String,
    },
    /// The HTTP exchange with chromedriver failed.
    Http {
        command: String,
        source: reqwest::Error,
    },
    /// chromedriver did not start, or answered something unexpected.
    Protocol(String),
    /// `wait_for` gave up; `last` is the last lookup error.
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    Io(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WebDriver {
                command,
                status,
                error,
                message,
            } => {
                write!(f, "{command}: chromedriver {status} {error}: {message}")
            }
            Error::Http { command, source } => write!(f, "{command}: {source}"),
            Error::Protocol(m) => write!(f, "{m}"),
            Error::Timeout { what, after, last } => {
                write!(
                    f,
                    "timed out after {after:?} waiting for {what} (last: {last})"
                )
            }
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A reference to an element of the current page (or frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(pub String);

impl Element {
    /// The JSON form to pass an element as an `execute` argument (`arguments[0]` in the script).
    pub fn to_json(&self) -> Value {
        json!({ ELEMENT_KEY: self.0 })
    }
}

/// One chromedriver process and one Chromium session. Dropping it ends both.
pub struct Browser {
    http: reqwest::Client,
    port: u16,
    base: String,
    session: Option<String>,
    driver: Child,
    dir: PathBuf,
}

fn find_binary(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        let p = Path::new(name);
        if p.is_absolute() {
            if p.exists() {
                return Some(p.to_path_buf());
            }
            continue;
        }
        for dir in std::env::split_paths(&path) {
            let c = dir.join(name);
            if c.is_file() {
                return Some(c);
            }
        }
    }
    None
}

fn fresh_dir() -> std::io::Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "wd-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(dir.join("profile"))?;
    Ok(dir)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with [`CHROMIUM_ARGS`].
    ///
    /// Panics (a test failure, never a skip) when chromium or chromedriver is not installed.
    pub async fn launch() -> Result<Browser> {
        Self::launch_with(&[], json!({})).await
    }

    /// Like [`launch`](Self::launch) with extra Chromium flags and extra W3C capabilities merged
    /// into `alwaysMatch` (e.g. `{"goog:loggingPrefs": {"browser": "ALL"}}`).
    pub async fn launch_with(extra_args: &[&str], extra_caps: Value) -> Result<Browser> {
        let driver_bin = find_binary("CHROMEDRIVER", &["chromedriver", "/usr/bin/chromedriver"])
            .unwrap_or_else(|| {
                panic!("chromedriver is not installed; install it with: {INSTALL_HINT}")
            });
        let chromium_bin =
            find_binary("CHROMIUM_BIN", &["/usr/bin/chromium"]).unwrap_or_else(|| {
                panic!("/usr/bin/chromium is not installed; install it with: {INSTALL_HINT}")
            });

        let dir = fresh_dir()?;
        let log = std::fs::File::create(dir.join("chromedriver.log"))?;
        let port = free_port()?;
        let mut cmd = Command::new(&driver_bin);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Own process group: Drop can then end chromedriver and any Chromium it left behind.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().map_err(|e| {
            Error::Protocol(format!(
                "cannot start {}: {e} (install: {INSTALL_HINT})",
                driver_bin.display()
            ))
        })?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| Error::Http {
                command: "client".into(),
                source: e,
            })?;
        let mut b = Browser {
            http,
            port,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            driver,
            dir,
        };
        b.wait_ready(Duration::from_secs(20)).await?;

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.extend(extra_args.iter().map(|s| s.to_string()));
        args.push(format!(
            "--user-data-dir={}",
            b.dir.join("profile").display()
        ));
        let mut always = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium_bin, "args": args },
            "timeouts": { "pageLoad": 30_000, "script": 30_000, "implicit": 0 },
        });
        if let (Some(a), Some(extra)) = (always.as_object_mut(), extra_caps.as_object()) {
            for (k, v) in extra {
                a.insert(k.clone(), v.clone());
            }
        }
        let v = b
            .raw(
                "POST",
                "/session",
                Some(json!({ "capabilities": { "alwaysMatch": always } })),
            )
            .await
            .map_err(|e| b.with_log(e))?;
        let id = v["sessionId"]
            .as_str()
            .ok_or_else(|| Error::Protocol(format!("new session: no sessionId in {v}")))?;
        b.session = Some(id.to_string());
        Ok(b)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last = String::from("no answer yet");
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(
                    self.with_log(Error::Protocol(format!("chromedriver exited: {status}")))
                );
            }
            match self.http.get(format!("{}/status", self.base)).send().await {
                Ok(r) => match r.json::<Value>().await {
                    Ok(v) if v["value"]["ready"] == json!(true) => return Ok(()),
                    Ok(v) => last = v.to_string(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.with_log(Error::Timeout {
            what: "chromedriver /status".into(),
            after: timeout,
            last,
        }))
    }

    /// Appends the tail of chromedriver's log to a startup error.
    fn with_log(&self, e: Error) -> Error {
        let log = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        if tail.is_empty() {
            e
        } else {
            Error::Protocol(format!("{e}\n-- chromedriver log:\n{tail}"))
        }
    }

    /// chromedriver's port (for raw requests in a test).
    pub fn driver_port(&self) -> u16 {
        self.port
    }

    /// The current session's id.
    pub fn session_id(&self) -> &str {
        self.session.as_deref().unwrap_or("")
    }

    /// One WebDriver command; returns the answer's `value`.
    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let command = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let resp = req.send().await.map_err(|e| Error::Http {
            command: command.clone(),
            source: e,
        })?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.map_err(|e| Error::Http {
            command: command.clone(),
            source: e,
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 || value.get("error").is_some_and(|e| e.is_string()) {
            return Err(Error::WebDriver {
                command,
                status,
                error: value["error"].as_str().unwrap_or("").to_string(),
                message: value["message"]
                    .as_str()
                    .unwrap_or(&v.to_string())
                    .to_string(),
            });
        }
        Ok(value)
    }

    /// A command on the current session: `cmd("POST", "/url", …)` → `POST /session/{id}/url`.
    pub async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let id = self
            .session
            .as_deref()
            .ok_or_else(|| Error::Protocol("session already ended".into()))?;
        self.raw(method, &format!("/session/{id}{path}"), body)
            .await
    }

    /// Navigates and waits for the page's load event.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// The current top-level URL.
    pub async fn current_url(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/url", None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub async fn title(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/title", None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    fn element_of(v: &Value) -> Result<Element> {
        v[ELEMENT_KEY]
            .as_str()
            .map(|s| Element(s.to_string()))
            .ok_or_else(|| Error::Protocol(format!("not an element reference: {v}")))
    }

    /// The first element matching a CSS selector (in the current frame), or chromedriver's
    /// "no such element" error.
    pub async fn find(&self, css: &str) -> Result<Element> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        Self::element_of(&v)
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self
            .cmd(
                "POST",
                "/elements",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        v.as_array()
            .map(|a| a.iter().map(Self::element_of).collect())
            .unwrap_or_else(|| Ok(vec![]))
    }

    /// Polls (every 50 ms) until an element matches, or fails with the last error after `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Result<Element> {
        let start = Instant::now();
        loop {
            match self.find(css).await {
                Ok(e) => return Ok(e),
                Err(Error::WebDriver { .. }) if start.elapsed() < timeout => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e @ Error::WebDriver { .. }) => {
                    return Err(Error::Timeout {
                        what: format!("`{css}`"),
                        after: timeout,
                        last: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Clicks an element (scrolls it into view; fails if it is hidden or covered).
    pub async fn click(&self, el: &Element) -> Result<()> {
        self.cmd("POST", &format!("/element/{}/click", el.0), Some(json!({})))
            .await
            .map(drop)
    }

    /// The element's rendered text (`innerText`-like; for SVG, its text content).
    pub async fn text(&self, el: &Element) -> Result<String> {
        Ok(self
            .cmd("GET", &format!("/element/{}/text", el.0), None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// An attribute's value, `None` when absent.
    pub async fn attribute(&self, el: &Element, name: &str) -> Result<Option<String>> {
        let v = self
            .cmd("GET", &format!("/element/{}/attribute/{name}", el.0), None)
            .await?;
        Ok(v.as_str().map(str::to_string))
    }

    /// The current frame's serialized DOM.
    pub async fn page_source(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/source", None)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Runs a function body in the page (`arguments[i]` are `args`); a returned Promise is awaited.
    /// Pass elements as `el.to_json()`.
    pub async fn execute(&self, js: &str, args: Vec<Value>) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": args })),
        )
        .await
    }

    /// Switches into an `<iframe>`/`<object>`/`<frame>` element's document.
    pub async fn enter_frame(&self, el: &Element) -> Result<()> {
        self.cmd("POST", "/frame", Some(json!({ "id": el.to_json() })))
            .await
            .map(drop)
    }

    /// Back to the top-level document.
    pub async fn leave_frames(&self) -> Result<()> {
        self.cmd("POST", "/frame", Some(json!({ "id": null })))
            .await
            .map(drop)
    }

    /// A Chrome DevTools Protocol command through chromedriver (`/goog/cdp/execute`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    /// Sends `Authorization: Basic …` on every request of this session from now on (CDP
    /// `Network.setExtraHTTPHeaders`): no credentials in URLs needed.
    pub async fn set_basic_auth(&self, user: &str, password: &str) -> Result<()> {
        let token = base64_encode(format!("{user}:{password}").as_bytes());
        self.cdp("Network.enable", json!({})).await?;
        self.cdp(
            "Network.setExtraHTTPHeaders",
            json!({ "headers": { "Authorization": format!("Basic {token}") } }),
        )
        .await
        .map(drop)
    }

    /// The browser console (needs `{"goog:loggingPrefs": {"browser": "ALL"}}` at launch); each
    /// entry as `LEVEL message`. CSP violations show up here.
    pub async fn browser_log(&self) -> Result<Vec<String>> {
        let v = self
            .cmd("POST", "/se/log", Some(json!({ "type": "browser" })))
            .await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or(""),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Saves a PNG screenshot of the viewport (creating parent dirs) and returns its bytes.
    pub async fn screenshot_png(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let v = self.cmd("GET", "/screenshot", None).await?;
        let b64 = v
            .as_str()
            .ok_or_else(|| Error::Protocol("screenshot: no base64 string".into()))?;
        let png =
            base64_decode(b64).ok_or_else(|| Error::Protocol("screenshot: bad base64".into()))?;
        if let Some(parent) = path.as_ref().parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &png)?;
        Ok(png)
    }

    /// Ends the session (Chromium exits) and chromedriver.
    pub async fn quit(mut self) -> Result<()> {
        let r = match self.session.take() {
            Some(id) => self
                .raw("DELETE", &format!("/session/{id}"), None)
                .await
                .map(drop),
            None => Ok(()),
        };
        drop(self);
        r
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Not async here: a blocking DELETE so chromedriver closes Chromium cleanly.
        if let Some(id) = self.session.take() {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            }
        }
        let pgid = self.driver.id();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Anything left in chromedriver's process group (a Chromium whose session failed).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding and ASCII whitespace ignored); `None` on any other byte.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' => continue,
            _ => return None,
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
