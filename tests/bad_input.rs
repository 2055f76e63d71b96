//! Bad input over real HTTP on 127.0.0.1: every endpoint of the table × malformed, out-of-range,
//! repeated and unknown parameters; path traversal; wrong methods; bad and truncated tokens;
//! oversize heads and bodies; bytes that are not UTF-8.
//!
//! Each request must get the documented 4xx with the JSON error body and a message, leave exactly
//! one audit record, and the server must keep serving (a follow-up `GET /health/live` is 200).
//!
//! Requests that hyper itself refuses while reading the request head — a head over
//! `Limits::max_header_bytes` (431), a request line that is not HTTP (400) — never reach the
//! router, so they get hyper's bare answer (no JSON body) and leave **no** audit record. The
//! tests below assert exactly that for them.
//!
//! The CPU profiler and the heap growth window are process-global and slow: this file only ever
//! sends them parameters that fail validation (which happens before sampling starts).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use prodbg::{Limits, Scope};

/// One row of the server's endpoint table, as `GET /debug/` lists it.
struct Ep {
    method: String,
    path: String,
    available: bool,
}

/// The endpoint table of `server`, read from its index over raw HTTP.
fn endpoints_of(server: &Server) -> Vec<Ep> {
    let auth = bearer(READ_SECRET);
    let req = request(
        "GET",
        b"/debug/",
        &[("Authorization", &auth), ("Accept", b"application/json")],
        b"",
    );
    let a = send_raw(server.handle.local_addr(), &req).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| Ep {
            method: e["method"].as_str().unwrap().to_string(),
            // A path parameter gets a real value (a kept flamegraph's file name).
            path: e["path"].as_str().unwrap().replace("{file}", "cpu.svg"),
            available: e["available"].as_bool().unwrap(),
        })
        .collect()
}

/// A server for this file: failed logins are not rate-limited (we send many on purpose).
fn server() -> Server {
    spawn_with(|b| {
        b.limits({
            let mut l = Limits::default();
            l.auth_failures_per_minute = 0;
            l
        })
    })
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client on std::net::TcpStream: sends exactly the bytes given (no URL
// normalisation, no header validation), reads until the server closes.

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Builds a request with `Host` and `Connection: close`; `Content-Length` when there is a body.
fn request(method: &str, target: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn bearer(secret: &str) -> Vec<u8> {
    format!("Bearer {secret}").into_bytes()
}

/// Sends `bytes` and reads the answer. `Err` when the server closed or reset the connection
/// without an answer.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(addr)?;
    // Hang guards, not timing assertions.
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    // The server may answer (and close) before it has read everything: a failed write is not
    // the end, the answer may still be there to read.
    let _ = s.write_all(bytes);
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() {
        read?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without an answer",
        ));
    }
    Ok(parse_answer(&raw))
}

fn parse_answer(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Answer {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// Assertions shared by every case.

/// Request records in the audit file. Health probes and repeated identical denials are folded
/// into summary records (written every minute and at shutdown), so they add no line here;
/// `tests/audit_http.rs` checks the summaries account for every one of them.
fn audit_count(server: &Server) -> usize {
    server.audit_lines().len()
}

fn last_audit(server: &Server) -> serde_json::Value {
    server.audit_lines().pop().expect("no audit record")
}

/// The documented error body: `{"error": code, "message": non-empty}` as `application/json`.
fn assert_error_body(label: &str, a: &Answer, status: u16, code: &str) -> String {
    assert_eq!(a.status, status, "{label}: {}", a.text());
    let ct = a.header("content-type").unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "{label}: content-type {ct:?}: {}",
        a.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("{label}: not JSON ({e}): {}", a.text()));
    assert_eq!(v["error"], code, "{label}: {v}");
    let message = v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{label}: no message: {v}"));
    assert!(!message.trim().is_empty(), "{label}: empty message");
    message.to_string()
}

fn outcome_of(status: u16) -> &'static str {
    match status {
        401 | 403 | 429 => "denied",
        _ => "error",
    }
}

/// The server still answers, and that answer is audited too.
fn assert_still_serving(label: &str, server: &Server) {
    let before = audit_count(server);
    let a = send_raw(
        server.handle.local_addr(),
        &request("GET", b"/health/live", &[], b""),
    )
    .unwrap_or_else(|e| panic!("{label}: /health/live after it: {e}"));
    assert_eq!(
        a.status,
        200,
        "{label}: /health/live after it: {}",
        a.text()
    );
    assert_eq!(
        audit_count(server),
        before,
        "{label}: an open health probe is folded into a summary, not recorded alone"
    );
}

/// Sends `bytes`, expects the documented error, exactly one audit record with that status, and a
/// server that keeps serving. Returns the message.
fn expect_error(server: &Server, label: &str, bytes: &[u8], status: u16, code: &str) -> String {
    let before = audit_count(server);
    let a = send_raw(server.handle.local_addr(), bytes)
        .unwrap_or_else(|e| panic!("{label}: no answer: {e}"));
    let message = assert_error_body(label, &a, status, code);
    let after = audit_count(server);
    if matches!(status, 401 | 403 | 429) {
        // The first denial per client, route and status in a fold window is recorded; its
        // repeats are folded into a summary.
        assert!(
            after == before || after == before + 1,
            "{label}: a denial adds at most one audit record ({before} -> {after})"
        );
    } else {
        assert_eq!(
            after,
            before + 1,
            "{label}: expected exactly one audit record"
        );
    }
    if after == before + 1 {
        let rec = last_audit(server);
        assert_eq!(rec["status"], status, "{label}: {rec}");
        assert_eq!(rec["outcome"], outcome_of(status), "{label}: {rec}");
    }
    assert_still_serving(label, server);
    message
}

// ---------------------------------------------------------------------------------------------
// Parameters per endpoint.

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An integer 1..=max (`Params::u64_in`).
    Int(u64),
    /// An integer 0..=max.
    Int0(u64),
    /// `ttl`: `0`, seconds or a humantime duration up to 24 h.
    Ttl,
    /// One of these.
    Choice(&'static [&'static str]),
    /// A duration like `90s`, `5m`, `1h`, at most 1 h (`Params::duration_in`).
    Duration,
    /// A non-empty text of at most this many bytes (`Params::text`).
    Text(usize),
}

const PROFILE_FORMATS: &[&str] = &["pprof", "svg", "folded"];
const DUMP_FORMATS: &[&str] = &["json", "text"];

/// The query parameters each endpoint takes, as documented in the README. An endpoint added to
/// the table without an entry here is assumed to take none.
fn params_of(method: &str, path: &str) -> Vec<(&'static str, Kind)> {
    match (method, path) {
        ("GET", "/debug/pprof/profile") => vec![
            ("seconds", Kind::Int(60)),
            ("frequency", Kind::Int(1000)),
            ("format", Kind::Choice(PROFILE_FORMATS)),
        ],
        ("GET", "/debug/pprof/wall") => vec![
            ("seconds", Kind::Int(60)),
            ("frequency", Kind::Int(100)),
            ("format", Kind::Choice(PROFILE_FORMATS)),
        ],
        ("GET", "/debug/pprof/heap" | "/debug/pprof/allocs") => vec![
            ("format", Kind::Choice(PROFILE_FORMATS)),
            ("seconds", Kind::Int(60)),
        ],
        ("GET", "/debug/bundle") => vec![("seconds", Kind::Int(60))],
        ("GET", "/debug/threads" | "/debug/deadlocks" | "/debug/fds") => {
            vec![("format", Kind::Choice(DUMP_FORMATS))]
        }
        ("PUT", "/debug/log-level") => vec![("ttl", Kind::Ttl)],
        ("GET", "/debug/spans") => vec![
            ("min_age_ms", Kind::Int0(86_400_000)),
            ("limit", Kind::Int(16_384)),
            ("format", Kind::Choice(DUMP_FORMATS)),
        ],
        ("GET", "/debug/errors") => vec![("format", Kind::Choice(DUMP_FORMATS))],
        ("GET", "/debug/timeline") => vec![("since", Kind::Duration), ("until", Kind::Duration)],
        ("GET", "/debug/pools") => vec![("holders", Kind::Choice(&["sites", "each"]))],
        ("GET", "/debug/pprof/pool_held") => vec![
            ("pool", Kind::Text(256)),
            ("format", Kind::Choice(PROFILE_FORMATS)),
        ],
        ("POST", "/debug/incidents") => vec![("seconds", Kind::Int(60))],
        _ => vec![],
    }
}

/// A bad query and a word its error message must contain.
struct Case {
    query: String,
    mentions: String,
}

fn case(query: impl Into<String>, mentions: impl Into<String>) -> Case {
    Case {
        query: query.into(),
        mentions: mentions.into(),
    }
}

/// Every bad query for an endpoint taking `params`. None of them is valid as a whole, so no
/// profile ever starts.
fn bad_queries(params: &[(&'static str, Kind)]) -> Vec<Case> {
    let mut cases = vec![
        case("nope=1", "unknown parameter"),
        case("nope", "unknown parameter"),
        case("%ff%fe=1", "unknown parameter"),
        case("%ff%fe", "unknown parameter"),
        case("a%zz%=1", "unknown parameter"),
        case("=", "unknown parameter"),
        case("%00=1", "unknown parameter"),
        case("../../etc/passwd=1", "unknown parameter"),
        case(format!("nope={}", "a".repeat(3000)), "2048"),
    ];
    // Keys other endpoints take are unknown here.
    for key in ["seconds", "frequency", "format", "ttl"] {
        if !params.iter().any(|(k, _)| *k == key) {
            cases.push(case(format!("{key}=1"), "unknown parameter"));
        }
    }
    for (key, kind) in params {
        let key = *key;
        cases.push(case(
            format!("{}=1", key.to_uppercase()),
            "unknown parameter",
        ));
        // A known key followed by an unknown one: refused as a whole.
        let valid = match kind {
            Kind::Int(_) | Kind::Int0(_) => "1",
            Kind::Ttl => "60",
            Kind::Choice(c) => c[0],
            Kind::Duration => "1m",
            Kind::Text(_) => "x",
        };
        cases.push(case(format!("{key}={valid}&nope=1"), "unknown parameter"));
        cases.push(case(
            format!("{key}={valid}&{key}={valid}"),
            "more than once",
        ));
        let bad: Vec<String> = match kind {
            Kind::Int(max) | Kind::Int0(max) => [
                "-1",
                if matches!(kind, Kind::Int(_)) {
                    "0"
                } else {
                    "-0.5"
                },
                "99999999999999999999999",
                "18446744073709551616",
                "abc",
                "1.5",
                "0x10",
                "1e3",
                "",
                "%ff%fe",
                "5%00",
            ]
            .iter()
            .map(|s| s.to_string())
            .chain([(max + 1).to_string(), u64::MAX.to_string()])
            .collect(),
            Kind::Ttl => [
                "-1",
                "99999999999999999999999",
                "abc",
                "1.5",
                "0x10",
                "",
                "%ff%fe",
                "25h",
                "86401",
                "-5m",
                "1%20fortnight",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            Kind::Duration => [
                "-1",
                "-5m",
                "abc",
                "5",
                "5d",
                "1.5h",
                "0x10m",
                "",
                "%ff%fe",
                "5m%00",
                "2h",
                "61m",
                "3601s",
                "99999999999999999999999h",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            Kind::Choice(choices) => [
                "png",
                "",
                "%ff%fe",
                "%00",
                "a%zz",
                &choices[0].to_uppercase(),
                &format!("{}%00", choices[0]),
                &format!("{},{}", choices[0], choices[1]),
                &format!("%20{}", choices[0]),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            Kind::Text(max) => vec![String::new(), "a".repeat(max + 1)],
        };
        for v in bad {
            cases.push(case(format!("{key}={v}"), key));
        }
    }
    cases
}

#[test]
fn every_endpoint_rejects_malformed_parameters_with_400() {
    let server = server();
    let auth = bearer(ADMIN_SECRET);
    let mut sent = 0;
    for ep in endpoints_of(&server) {
        for method in ep.method.split(',').map(str::trim) {
            let params = params_of(method, &ep.path);
            for c in bad_queries(&params) {
                let label = format!("{method} {}?{}", ep.path, c.query);
                let target = format!("{}?{}", ep.path, c.query);
                let req = request(method, target.as_bytes(), &[("Authorization", &auth)], b"");
                if !ep.available {
                    expect_error(&server, &label, &req, 501, "not_compiled_in");
                    continue;
                }
                let message = expect_error(&server, &label, &req, 400, "bad_parameter");
                assert!(
                    message.contains(&c.mentions),
                    "{label}: message {message:?} should mention {:?}",
                    c.mentions
                );
                assert!(message.len() < 1024, "{label}: message echoes too much");
                sent += 1;
            }
        }
    }
    assert!(sent > 200, "only {sent} cases ran");
    // The audit log is intact after all of that: one record per request, chained.
    let report = prodbg::verify_audit_log(&server.audit, None, None)
        .unwrap_or_else(|e| panic!("audit chain broken: {e}"));
    assert!(report.records > 0, "{report:?}");
}

#[test]
fn path_traversal_is_404_with_a_token_and_401_without() {
    let server = server();
    let auth = bearer(READ_SECRET);
    let targets: &[&[u8]] = &[
        b"/debug/../etc/passwd",
        b"/debug/%2e%2e/",
        b"/debug/%2e%2e/%2e%2e/etc/passwd",
        b"/debug/pprof/..%2f..%2fetc",
        b"/debug/pprof/..%2f..%2fetc%2fpasswd",
        b"/debug/pprof/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        b"/../../../../etc/passwd",
        b"/debug/..\\..\\etc\\passwd",
        b"/debug/memory/..",
        b"/debug/memory/../../etc/passwd",
        b"/debug//memory",
        b"/debug/./memory",
        b"/debug/%00",
        b"/debug/%ff%fe",
        b"/health/live/../../debug/memory",
        b"/metrics/..%2f..%2f",
    ];
    for target in targets {
        let shown = String::from_utf8_lossy(target);
        let label = format!("GET {shown} with a token");
        let req = request("GET", target, &[("Authorization", &auth)], b"");
        let message = expect_error(&server, &label, &req, 404, "not_found");
        assert!(!message.contains("root:"), "{label}: {message}");
        let label = format!("GET {shown} without a token");
        let req = request("GET", target, &[], b"");
        expect_error(&server, &label, &req, 401, "unauthorized");
    }
}

#[test]
fn wrong_methods_get_405_json_with_allow() {
    let server = server();
    let auth = bearer(ADMIN_SECRET);
    let mut paths: Vec<(String, Vec<String>)> = Vec::new();
    for ep in endpoints_of(&server) {
        let methods = ep.method.split(',').map(|m| m.trim().to_string());
        match paths.iter_mut().find(|(p, _)| *p == ep.path) {
            Some((_, ms)) => ms.extend(methods),
            None => paths.push((ep.path.clone(), methods.collect())),
        }
    }
    let mut sent = 0;
    for (path, allowed) in &paths {
        // HEAD is left out: axum answers it with the GET handler (that would start a profile).
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"] {
            if allowed.iter().any(|m| m == method) {
                continue;
            }
            let label = format!("{method} {path}");
            let req = request(method, path.as_bytes(), &[("Authorization", &auth)], b"");
            let before = audit_count(&server);
            let a = send_raw(server.handle.local_addr(), &req)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_error_body(&label, &a, 405, "method_not_allowed");
            let allow = a
                .header("allow")
                .unwrap_or_else(|| panic!("{label}: no Allow"));
            for m in allowed {
                assert!(allow.contains(m.as_str()), "{label}: Allow {allow:?}");
            }
            assert_eq!(audit_count(&server), before + 1, "{label}");
            assert_eq!(last_audit(&server)["status"], 405, "{label}");
            assert_still_serving(&label, &server);
            sent += 1;
        }
    }
    assert!(sent > 50, "only {sent} cases ran");
}

#[test]
fn bad_and_truncated_tokens_get_401_and_are_never_echoed() {
    let server = server();
    let len = ADMIN_SECRET.len();
    let mut flipped = ADMIN_SECRET.as_bytes().to_vec();
    flipped[1] ^= 0x20; // 'd' -> 'D'
    let mut non_utf8 = b"Bearer ".to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe, 0x80]);
    non_utf8.extend_from_slice(ADMIN_SECRET.as_bytes());
    let mut secret_then_non_utf8 = bearer(ADMIN_SECRET);
    secret_then_non_utf8.extend_from_slice(&[0xc3, 0x28]);
    let headers: Vec<(&str, Vec<u8>)> = vec![
        (
            "prefix (all but the last byte)",
            bearer(&ADMIN_SECRET[..len - 1]),
        ),
        ("prefix (16 bytes)", bearer(&ADMIN_SECRET[..16])),
        ("prefix (1 byte)", bearer(&ADMIN_SECRET[..1])),
        ("secret + one char", bearer(&format!("{ADMIN_SECRET}x"))),
        ("secret twice", bearer(&ADMIN_SECRET.repeat(2))),
        ("one byte flipped", {
            let mut v = b"Bearer ".to_vec();
            v.extend_from_slice(&flipped);
            v
        }),
        (
            "two secrets",
            bearer(&format!("{ADMIN_SECRET} {READ_SECRET}")),
        ),
        ("empty bearer", b"Bearer ".to_vec()),
        ("scheme only", b"Bearer".to_vec()),
        ("no scheme", ADMIN_SECRET.as_bytes().to_vec()),
        ("wrong scheme", format!("Token {ADMIN_SECRET}").into_bytes()),
        ("basic auth", b"Basic b3BzOmFkbWluLXNlY3JldA==".to_vec()),
        (
            "basic: another token's name",
            basic("viewer", ADMIN_SECRET).into_bytes(),
        ),
        (
            "basic: right name, secret + one char",
            basic("ops", &format!("{ADMIN_SECRET}x")).into_bytes(),
        ),
        (
            "basic: right name, secret prefix",
            basic("ops", &ADMIN_SECRET[..len - 1]).into_bytes(),
        ),
        ("basic: empty name", basic("", ADMIN_SECRET).into_bytes()),
        ("basic: name only", basic("ops", "").into_bytes()),
        (
            "basic: name in another case",
            basic("OPS", ADMIN_SECRET).into_bytes(),
        ),
        ("basic: no colon", {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(ADMIN_SECRET);
            format!("Basic {b64}").into_bytes()
        }),
        ("basic: not base64", b"Basic !!!not-base64!!!".to_vec()),
        ("basic: scheme only", b"Basic".to_vec()),
        ("scheme glued", format!("Bearer{ADMIN_SECRET}").into_bytes()),
        (
            "tab instead of space",
            format!("Bearer\t{ADMIN_SECRET}x").into_bytes(),
        ),
        ("non-UTF-8 before the secret", non_utf8),
        ("non-UTF-8 after the secret", secret_then_non_utf8),
        ("huge token", bearer(&"a".repeat(8000))),
    ];
    for path in ["/debug/memory", "/metrics", "/debug/", "/debug/nope"] {
        for (what, value) in &headers {
            let label = format!("GET {path} with {what}");
            let req = request("GET", path.as_bytes(), &[("Authorization", value)], b"");
            let before = audit_count(&server);
            let a = send_raw(server.handle.local_addr(), &req)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let message = assert_error_body(&label, &a, 401, "unauthorized");
            assert!(message.contains("Bearer"), "{label}: {message}");
            let challenges: Vec<&str> = a
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(
                challenges,
                ["Basic realm=\"prodbg\"", "Bearer"],
                "{label}: {:?}",
                a.headers
            );
            assert!(!a.text().contains(&ADMIN_SECRET[..16]), "{label}");
            // The first 401 per route is recorded; identical repeats are folded.
            let after = audit_count(&server);
            assert!(after == before || after == before + 1, "{label}");
            if after == before + 1 {
                let rec = last_audit(&server);
                assert_eq!(rec["status"], 401, "{label}: {rec}");
                assert_eq!(rec["outcome"], "denied", "{label}: {rec}");
                assert!(rec["token_id"].is_null(), "{label}: {rec}");
            }
            assert_still_serving(&label, &server);
        }
    }
    // A valid token whose scope is too small: 403 naming the scope needed. (Sent to the CPU
    // profile endpoint: refused before sampling.)
    for (path, method, secret, needed) in [
        ("/debug/pprof/profile", "GET", READ_SECRET, Scope::Profile),
        ("/debug/bundle", "GET", READ_SECRET, Scope::Profile),
        ("/debug/log-level", "PUT", PROFILE_SECRET, Scope::Admin),
        (
            "/debug/pprof/heap/activate",
            "POST",
            READ_SECRET,
            Scope::Admin,
        ),
    ] {
        let label = format!("{method} {path} with a small scope");
        let req = request(
            method,
            path.as_bytes(),
            &[("Authorization", &bearer(secret))],
            b"",
        );
        let message = expect_error(&server, &label, &req, 403, "forbidden");
        assert!(message.contains(needed.as_str()), "{label}: {message}");
    }
    let audit = std::fs::read_to_string(&server.audit).unwrap();
    for s in [ADMIN_SECRET, READ_SECRET, PROFILE_SECRET] {
        assert!(!audit.contains(&s[..16]), "a secret reached the audit log");
    }
}

#[test]
fn oversize_heads_are_refused_by_hyper_unaudited_and_the_server_keeps_serving() {
    let server = server();
    let addr = server.handle.local_addr();
    let auth = bearer(READ_SECRET);
    let big = vec![b'y'; 64 * 1024];
    let long_target = format!("/debug/memory?nope={}", "a".repeat(64 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a 64 KiB header",
            request(
                "GET",
                b"/debug/memory",
                &[("Authorization", &auth), ("X-Big", &big)],
                b"",
            ),
        ),
        (
            "a 64 KiB request target",
            request(
                "GET",
                long_target.as_bytes(),
                &[("Authorization", &auth)],
                b"",
            ),
        ),
        ("1000 small headers", {
            let names: Vec<String> = (0..1000).map(|i| format!("X-H{i}")).collect();
            let hs: Vec<(&str, &[u8])> = names
                .iter()
                .map(|n| (n.as_str(), b"v".as_slice()))
                .collect();
            request("GET", b"/debug/memory", &hs, b"")
        }),
    ];
    for (what, bytes) in cases {
        let before = audit_count(&server);
        // hyper answers 431 (or 414) and closes, or resets the connection while we are still
        // writing: both are a refusal.
        match send_raw(addr, &bytes) {
            Ok(a) => assert!(
                matches!(a.status, 414 | 431),
                "{what}: {} {}",
                a.status,
                a.text()
            ),
            Err(e) => eprintln!("{what}: connection closed without an answer ({e})"),
        }
        // Refused while reading the head, before the router: no audit record.
        assert_eq!(audit_count(&server), before, "{what}");
        assert_still_serving(what, &server);
    }
}

#[test]
fn malformed_requests_below_http_are_refused_and_the_server_keeps_serving() {
    let server = server();
    let addr = server.handle.local_addr();
    let mut query_non_utf8 = b"GET /debug/memory?".to_vec();
    query_non_utf8.extend_from_slice(&[0xff, 0xfe]);
    query_non_utf8
        .extend_from_slice(b"=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut path_non_utf8 = b"GET /debug/".to_vec();
    path_non_utf8.extend_from_slice(&[0xc3, 0x28]);
    path_non_utf8.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary garbage", vec![0, 1, 2, 3, 0xff, b'\r', b'\n', b'\r', b'\n']),
        ("no version", b"GET /debug/memory\r\n\r\n".to_vec()),
        ("bad version", b"GET /debug/memory HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n".to_vec()),
        ("raw non-UTF-8 in the query", query_non_utf8),
        ("raw non-UTF-8 in the path", path_non_utf8),
        ("space in the target", b"GET /debug/mem ory HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec()),
        ("header without colon", b"GET /debug/memory HTTP/1.1\r\nHost: 127.0.0.1\r\nBroken\r\n\r\n".to_vec()),
        (
            "two content lengths",
            b"PUT /debug/log-level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
        ),
        (
            "bad content length",
            b"PUT /debug/log-level HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let before = audit_count(&server);
        let a = send_raw(addr, &bytes).unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        // hyper's own refusal while parsing the head: a bare 400 (the router never saw it, so
        // there is no JSON body) and no audit record.
        assert_eq!(a.status, 400, "{what}: {}", a.text());
        assert_eq!(
            audit_count(&server),
            before,
            "{what}: hyper's 400 is not audited"
        );
        assert_still_serving(what, &server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_bad_bodies_get_json_errors_and_one_audit_record_each() {
    let server = server();
    let url = server.url("/debug/log-level");
    let mib = vec![b'x'; 1024 * 1024];

    // 1 MiB with Content-Length: refused before the handler.
    let before = audit_count(&server);
    let r = client()
        .put(&url)
        .bearer_auth(ADMIN_SECRET)
        .body(mib.clone())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(!error_message(&body, "payload_too_large").is_empty());
    assert_eq!(audit_count(&server), before + 1);
    assert_eq!(last_audit(&server)["status"], 413);
    assert_still_serving("1 MiB PUT", &server);

    // 1 MiB chunked (no Content-Length): refused while reading.
    let before = audit_count(&server);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        mib.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = client()
        .put(&url)
        .bearer_auth(ADMIN_SECRET)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // The server answers 413 and closes as soon as the limit is crossed; a client still writing
    // may see the broken pipe before it reads that answer. Either way the server refused it.
    match r {
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_eq!(status, 413, "{body}");
            assert!(!error_message(&body, "payload_too_large").is_empty());
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert_eq!(audit_count(&server), before + 1);
    assert_eq!(last_audit(&server)["status"], 413);
    assert_still_serving("1 MiB chunked PUT", &server);

    // A body that is not UTF-8: 400 naming what is expected.
    let label = "PUT /debug/log-level with a non-UTF-8 body";
    let req = request(
        "PUT",
        b"/debug/log-level",
        &[("Authorization", &bearer(ADMIN_SECRET))],
        &[0xff, 0xfe, b'i', b'n', b'f', b'o'],
    );
    let message =
        tokio::task::block_in_place(|| expect_error(&server, label, &req, 400, "bad_parameter"));
    assert!(message.contains("UTF-8"), "{message}");
}
