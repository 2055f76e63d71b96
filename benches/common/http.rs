//! HTTP clients of the admin server under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use prodbg::AdminHandle;

use super::admin::SECRET;

/// A minimal keep-alive HTTP/1.1 client, so the client's own cost stays small and steady;
/// over TCP, or over any stream (TLS).
pub struct Client<S: Read + Write = TcpStream> {
    reader: BufReader<S>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Client::over(s)
    }
}

impl<S: Read + Write> Client<S> {
    /// A client on an open `stream`.
    pub fn over(stream: S) -> Client<S> {
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// `GET path` with the bench token; panics unless the answer is 200. The body's length.
    pub fn get(&mut self, path: &str) -> usize {
        write!(
            self.reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {SECRET}\r\n\r\n"
        )
        .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let mut len = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        len
    }
}

/// A reqwest client of the in-process admin server with a Tokio runtime of its own; its
/// methods block.
pub struct Http {
    pub rt: tokio::runtime::Runtime,
    pub client: reqwest::Client,
    pub base: String,
}

impl Http {
    /// On a one-worker runtime (thread `bench-http`), so a request proceeds while the calling
    /// thread runs a workload.
    pub fn new(admin: &AdminHandle) -> Http {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-http")
            .enable_all()
            .build()
            .expect("tokio runtime");
        Http::on(rt, admin)
    }

    /// On a current-thread runtime: requests run only while the caller waits for them.
    pub fn current_thread(admin: &AdminHandle) -> Http {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        Http::on(rt, admin)
    }

    fn on(rt: tokio::runtime::Runtime, admin: &AdminHandle) -> Http {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("reqwest client");
        Http {
            rt,
            client,
            base: admin.url(),
        }
    }

    /// Sends a request with the bench token; panics unless it succeeds; returns the body.
    pub fn send(&self, method: reqwest::Method, path: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let r = self
                .client
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(SECRET)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let status = r.status();
            let body = r.bytes().await.expect("body").to_vec();
            assert!(
                status.is_success(),
                "{path}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
            body
        })
    }

    pub fn get(&self, path: &str) -> Vec<u8> {
        self.send(reqwest::Method::GET, path)
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        serde_json::from_slice(&self.get(path)).expect("JSON")
    }

    /// The JSON index (`GET /debug/` with `Accept: application/json`).
    pub fn index(&self) -> serde_json::Value {
        self.rt.block_on(async {
            self.client
                .get(format!("{}/debug/", self.base))
                .bearer_auth(SECRET)
                .header("accept", "application/json")
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .expect("GET /debug/")
                .json()
                .await
                .expect("JSON index")
        })
    }

    /// Whether `probe`'s profiler figure (id `probe`) in the JSON index says "running".
    pub fn profile_running(&self, probe: &str) -> bool {
        let index = self.index();
        let figure = figure(&index["probes"][probe], probe)
            .unwrap_or_else(|| panic!("no figure {probe} under probes.{probe} in the index"));
        figure.to_string().contains("\"running\"")
    }
}

/// The first object with `"id": id` in `v` (a probe's part of the JSON index).
pub fn figure<'v>(v: &'v serde_json::Value, id: &str) -> Option<&'v serde_json::Value> {
    match v {
        serde_json::Value::Object(m) if m.get("id").and_then(|i| i.as_str()) == Some(id) => Some(v),
        serde_json::Value::Object(m) => m.values().find_map(|x| figure(x, id)),
        serde_json::Value::Array(a) => a.iter().find_map(|x| figure(x, id)),
        _ => None,
    }
}
