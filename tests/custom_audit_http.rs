//! What a host endpoint's requests leave in the audit log, over real HTTP: a mutation's body as
//! size, SHA-256 and a redacted copy, next to the previous value the handler reports with
//! `AuditDetails`; nothing for a read; a clear 413 for an oversized body, audited too; the body
//! still recorded when the handler panics.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::Method;
use axum::Json;
use common::*;
use prodbg::{AuditDetails, Scope};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CONFIG: &str = "/debug/test/config";

/// The host's setting and what its handler received.
#[derive(Default)]
struct Host {
    mode: Mutex<String>,
    received: Mutex<Vec<Vec<u8>>>,
    calls: AtomicUsize,
}

/// `POST /debug/test/config` (admin) with a JSON body `{"mode": …, …}`: sets the mode and
/// reports the previous one for the audit record.
fn with_config_endpoint(
    host: Arc<Host>,
) -> impl FnOnce(prodbg::AdminBuilder) -> prodbg::AdminBuilder {
    move |b| {
        b.endpoint(
            Method::POST,
            CONFIG,
            Scope::Admin,
            "set the mode",
            move |body: Bytes| async move {
                host.calls.fetch_add(1, Ordering::SeqCst);
                host.received.lock().unwrap().push(body.to_vec());
                let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
                let new = doc["mode"].as_str().unwrap_or("").to_string();
                let previous = std::mem::replace(&mut *host.mode.lock().unwrap(), new.clone());
                (
                    AuditDetails::new().with("previous", previous),
                    Json(json!({ "mode": new })),
                )
            },
        )
    }
}

fn record_for(server: &Server, method: &str, path: &str) -> Vec<Value> {
    server
        .audit_lines()
        .into_iter()
        .filter(|r| r["method"] == method && r["path"] == path)
        .collect()
}

#[tokio::test]
async fn a_custom_post_records_the_digest_the_redacted_body_and_the_previous_value() {
    let host = Arc::new(Host::default());
    *host.mode.lock().unwrap() = "slow".into();
    let server = spawn_with(with_config_endpoint(host.clone()));
    let body = r#"{"mode":"fast","user":"bob","password":"hunter2","retries":3}"#;
    let r = client()
        .post(server.url(CONFIG))
        .bearer_auth(ADMIN_SECRET)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"mode": "fast"}));
    // The handler got the body byte for byte.
    assert_eq!(
        *host.received.lock().unwrap(),
        vec![body.as_bytes().to_vec()]
    );

    let records = record_for(&server, "POST", CONFIG);
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    assert_eq!(rec["token_id"], "ops");
    assert_eq!(rec["status"], 200);
    assert_eq!(
        rec["details"],
        json!({
            "previous": "slow",
            "request_body": {
                "bytes": body.len(),
                "sha256": hex::encode(Sha256::digest(body.as_bytes())),
                "content_type": "application/json",
                "json": {"mode": "fast", "user": "bob", "password": "[redacted]", "retries": 3},
            },
        }),
        "{rec}"
    );
    // Neither the password nor the credentials are anywhere in the file; the chain verifies.
    let file = std::fs::read_to_string(&server.audit).unwrap();
    assert!(!file.contains("hunter2"), "{file}");
    assert!(!file.contains(ADMIN_SECRET) && !file.contains(&basic("ops", ADMIN_SECRET)));
    assert!(
        !file.to_ascii_lowercase().contains("authorization"),
        "{file}"
    );
    prodbg::verify_audit_log(&server.audit, None, None).unwrap();
}

#[tokio::test]
async fn a_custom_get_records_no_body_details() {
    let server = spawn_with(|b| {
        b.endpoint(
            Method::GET,
            "/debug/test/status",
            Scope::Read,
            "status",
            || async { "fine" },
        )
    });
    let (status, text) = get(
        &server.url("/debug/test/status?verbose=1"),
        Some(READ_SECRET),
    )
    .await;
    assert_eq!((status, text.as_str()), (200, "fine"));
    let records = record_for(&server, "GET", "/debug/test/status");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["details"], json!({}), "{}", records[0]);
    assert_eq!(records[0]["query"], "verbose=1");
}

#[tokio::test]
async fn an_oversized_custom_body_gets_a_clear_413_and_is_audited() {
    let host = Arc::new(Host::default());
    let server = spawn_with(with_config_endpoint(host.clone()));
    let limit = prodbg::Limits::default().max_body_bytes;

    // At the limit: accepted, recorded with a clipped copy.
    let blob = "x".repeat(limit - r#"{"mode":"big","blob":""}"#.len());
    let at_limit = format!(r#"{{"mode":"big","blob":"{blob}"}}"#);
    assert_eq!(at_limit.len(), limit);
    let r = client()
        .post(server.url(CONFIG))
        .bearer_auth(ADMIN_SECRET)
        .header("content-type", "application/json")
        .body(at_limit.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let rec = record_for(&server, "POST", CONFIG).pop().unwrap();
    let body = &rec["details"]["request_body"];
    assert_eq!(body["bytes"], limit);
    assert_eq!(body["truncated"], true);
    let copy = body["text"].as_str().unwrap();
    assert!(copy.len() <= 1024, "{}", copy.len());
    assert!(
        copy.starts_with('{') && copy.contains(r#""blob":"xxxx"#),
        "{copy}"
    );

    // One byte over, with Content-Length: refused before the handler.
    let over = format!("{at_limit} ");
    let r = client()
        .post(server.url(CONFIG))
        .bearer_auth(ADMIN_SECRET)
        .body(over.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let message = error_message(&r.text().await.unwrap(), "payload_too_large");
    assert!(
        message.contains("larger than the server accepts"),
        "{message}"
    );

    // Over the limit in chunks (no Content-Length): refused while reading. The server answers
    // and closes once the limit is crossed; a client still writing may see the broken pipe first.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = over
        .as_bytes()
        .chunks(8 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = client()
        .post(server.url(CONFIG))
        .bearer_auth(ADMIN_SECRET)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    match r {
        Ok(r) => {
            assert_eq!(r.status().as_u16(), 413);
            let message = error_message(&r.text().await.unwrap(), "payload_too_large");
            assert!(
                message.contains(&format!("at most {limit} bytes")),
                "{message}"
            );
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }

    assert_eq!(
        host.calls.load(Ordering::SeqCst),
        1,
        "only the body at the limit"
    );
    let records = record_for(&server, "POST", CONFIG);
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 413, 413], "{records:?}");
    for r in &records[1..] {
        assert_eq!(r["outcome"], "error");
        assert_eq!(r["token_id"], "ops");
    }
}

#[tokio::test]
async fn a_panicking_custom_handler_still_records_the_body() {
    let server = spawn_with(|b| {
        b.endpoint(
            Method::PUT,
            "/debug/test/explode",
            Scope::Admin,
            "panics",
            |_body: String| async move {
                if true {
                    panic!("the host's handler failed");
                }
                "unreachable"
            },
        )
    });
    let body = "drain node-7 token=ghp_0123456789abcdefABCDEF0123";
    let r = client()
        .put(server.url("/debug/test/explode"))
        .bearer_auth(ADMIN_SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500);
    error_message(&r.text().await.unwrap(), "internal");
    let rec = record_for(&server, "PUT", "/debug/test/explode")
        .pop()
        .unwrap();
    assert_eq!(rec["status"], 500);
    assert_eq!(
        rec["details"]["request_body"],
        json!({
            "bytes": body.len(),
            "sha256": hex::encode(Sha256::digest(body.as_bytes())),
            "text": "drain node-7 token=[redacted]",
        }),
        "{rec}"
    );
}

#[tokio::test]
async fn a_custom_body_sent_too_slowly_gets_408_and_is_audited() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = Arc::new(Host::default());
    let mut limits = prodbg::Limits::default();
    limits.body_read_timeout = std::time::Duration::from_secs(1);
    let config = with_config_endpoint(host.clone());
    let server = spawn_with(move |b| config(b.limits(limits)));
    // Ten bytes announced, two sent, then nothing: the body read times out.
    let mut s = tokio::net::TcpStream::connect(server.handle.local_addr())
        .await
        .unwrap();
    let head = format!(
        "POST {CONFIG} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {ADMIN_SECRET}\r\ncontent-length: 10\r\n\r\n{{\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.ends_with(b"}") {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("an answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let message = error_message(body, "timeout");
    assert!(message.contains("within 1 s"), "{message}");
    assert_eq!(host.calls.load(Ordering::SeqCst), 0);
    let rec = record_for(&server, "POST", CONFIG).pop().unwrap();
    assert_eq!(
        (rec["status"].as_u64(), rec["token_id"].as_str()),
        (Some(408), Some("ops"))
    );
}
