//! HTTP Basic auth next to Bearer, the two challenges of a 401, failed-login counting and the
//! CSRF defence, over real HTTP.

mod common;

use axum::http::Method;
use common::*;
use prodbg::{Limits, Scope};

#[tokio::test]
async fn bearer_and_basic_both_work_everywhere() {
    let server = spawn();
    for path in [
        "/debug/",
        "/debug/memory",
        "/metrics",
        "/debug/pprof/cmdline",
    ] {
        let url = server.url(path);
        let (s, body) = get(&url, Some(READ_SECRET)).await;
        assert!(
            s == 200 || (path == "/debug/memory" && s == 503),
            "{path}: {s} {body}"
        );
        let (b, _, body) = get_basic(&url, "viewer", READ_SECRET).await;
        assert_eq!(b, s, "{path}: Basic {b} vs Bearer {s}: {body}");
    }
    // The scheme name is case-insensitive, like Bearer's.
    let r = client()
        .get(server.url("/debug/"))
        .header(
            "authorization",
            basic("ops", ADMIN_SECRET).replacen("Basic", "bAsIc", 1),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The audit log names the token, never the secret.
    let lines = server.audit_lines();
    assert!(lines
        .iter()
        .any(|l| l["token_id"] == "viewer" && l["path"] == "/metrics"));
    let audit = std::fs::read_to_string(&server.audit).unwrap();
    assert!(!audit.contains(READ_SECRET) && !audit.contains(ADMIN_SECRET));
}

#[tokio::test]
async fn wrong_user_and_wrong_password_are_the_same_401_with_both_challenges() {
    let server = spawn();
    let url = server.url("/debug/memory");
    let mut bodies = Vec::new();
    for (user, password) in [
        ("viewer", ADMIN_SECRET),                   // another token's secret
        ("nobody", READ_SECRET),                    // unknown user, right secret
        ("viewer", &format!("{READ_SECRET}x")[..]), // right user, wrong secret
        ("viewer", ""),                             // no secret
        ("", READ_SECRET),                          // no user
    ] {
        let (s, challenges, body) = get_basic(&url, user, password).await;
        assert_eq!(s, 401, "{user}:{password}: {body}");
        assert_eq!(challenges, CHALLENGES, "{user}");
        let message = error_message(&body, "unauthorized");
        assert!(
            message.contains("Basic") && message.contains("Bearer"),
            "{message}"
        );
        assert!(
            !body.contains(READ_SECRET) && !body.contains(ADMIN_SECRET),
            "{body}"
        );
        bodies.push(message);
    }
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        1,
        "the answer tells which part was wrong: {bodies:?}"
    );

    // No credentials at all: the same two challenges (what makes a browser prompt).
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
    assert_eq!(challenges, CHALLENGES);
}

#[tokio::test]
async fn basic_with_a_read_token_is_403_on_a_profile_endpoint() {
    let server = spawn();
    for path in [
        "/debug/pprof/profile?seconds=1",
        "/debug/pprof/goroutine?debug=2",
        "/debug/bundle",
        "/debug/console/last/cpu.svg",
    ] {
        let (s, _, body) = get_basic(&server.url(path), "viewer", READ_SECRET).await;
        assert_eq!(s, 403, "{path}: {body}");
        let message = error_message(&body, "forbidden");
        assert!(
            message.contains("viewer") && message.contains("needs profile"),
            "{message}"
        );
    }
}

/// A browser's first request carries no Authorization header (it waits for the challenge):
/// those 401s must not lock the operator out, nor count as failed logins.
#[tokio::test]
async fn requests_without_credentials_are_not_failed_logins() {
    let server = spawn_with(|b| {
        b.limits({
            let mut l = Limits::default();
            l.auth_failures_per_minute = 3;
            l
        })
    });
    let url = server.url("/debug/");
    for _ in 0..10 {
        assert_eq!(get(&url, None).await.0, 401);
    }
    let (s, _, body) = get_basic(&url, "viewer", READ_SECRET).await;
    assert_eq!(s, 200, "anonymous challenges locked the client out: {body}");
    let (_, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert!(
        metrics.contains("prodbg_auth_failures_total 0"),
        "{metrics}"
    );
    // Wrong Basic passwords are failed logins.
    for _ in 0..3 {
        assert_eq!(
            get_basic(&url, "viewer", "wrong-password-0123456789")
                .await
                .0,
            401
        );
    }
    // Past the limit the wrong ones are refused with 429, the valid token still gets in.
    let (s, _, body) = get_basic(&url, "viewer", "wrong-password-0123456789").await;
    assert_eq!(s, 429, "{body}");
    let (s, _, body) = get_basic(&url, "viewer", READ_SECRET).await;
    assert_eq!(s, 200, "a valid token is never locked out: {body}");
    // The anonymous challenges are audited: the first in full, the identical repeats folded.
    assert!(server
        .audit_lines()
        .iter()
        .any(|r| r["status"] == 401 && r["token_id"].is_null()));
}

fn with_mutation() -> Server {
    spawn_with(|b| {
        b.endpoint(
            Method::POST,
            "/debug/test/mutate",
            Scope::Admin,
            "test",
            || async { "changed" },
        )
    })
}

async fn post(server: &Server, headers: &[(&str, String)]) -> (u16, String) {
    let mut req = client()
        .post(server.url("/debug/test/mutate"))
        .header("authorization", basic("ops", ADMIN_SECRET));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The CSRF defence: a browser holding Basic credentials must not change anything (nor start
/// a profile) for a page of another origin.
#[tokio::test]
async fn cross_origin_browser_requests_are_refused() {
    let server = with_mutation();
    let own = format!("http://{}", server.handle.local_addr());
    // curl and scripts with a bearer token: no Origin, no Sec-Fetch-*.
    let r = client()
        .post(server.url("/debug/test/mutate"))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Basic credentials (what a browser adds by itself) on a POST need Origin or Sec-Fetch-Site.
    let (s, body) = post(&server, &[]).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        error_message(&body, "forbidden").contains("Origin or Sec-Fetch-Site"),
        "{body}"
    );
    for ok in [
        vec![("origin", own.clone())],
        vec![
            ("sec-fetch-site", "same-origin".into()),
            ("origin", own.clone()),
        ],
        vec![("sec-fetch-site", "none".into())],
    ] {
        assert_eq!(post(&server, &ok).await.0, 200, "{ok:?}");
    }
    for bad in [
        vec![("origin", "http://evil.example".to_string())],
        vec![("origin", "null".to_string())],
        vec![("origin", format!("{own}.evil.example"))],
        vec![
            ("sec-fetch-site", "cross-site".into()),
            ("origin", "http://evil.example".into()),
        ],
        // Another port on the same host is "same-site", not same-origin.
        vec![
            ("sec-fetch-site", "same-site".into()),
            ("origin", "http://127.0.0.1:1".into()),
        ],
        // A cross-site form post claims to be a navigation: still refused (not a GET).
        vec![
            ("sec-fetch-site", "cross-site".into()),
            ("sec-fetch-mode", "navigate".into()),
            ("sec-fetch-dest", "document".into()),
        ],
    ] {
        let before = server.audit_lines().len();
        let (s, body) = post(&server, &bad).await;
        assert_eq!(s, 403, "{bad:?}: {body}");
        assert!(
            error_message(&body, "forbidden").contains("cross-origin"),
            "{body}"
        );
        // The first refusal is recorded in full; identical repeats are folded into a summary.
        let rec = server.audit_lines();
        assert!(rec.len() == before || rec.len() == before + 1);
        if rec.len() == before + 1 {
            assert_eq!(rec.last().unwrap()["outcome"], "denied");
        }
    }
    // Cross-site sub-resources (an <img> or <iframe> elsewhere) cannot start a profile or read;
    // a top-level link someone clicked may.
    let get_with = |h: Vec<(&'static str, &'static str)>| {
        let server = &server;
        async move {
            let mut req = client()
                .get(server.url("/debug/memory"))
                .header("authorization", basic("viewer", READ_SECRET));
            for (k, v) in h {
                req = req.header(k, v);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    for dest in ["image", "iframe", "empty", "script"] {
        let s = get_with(vec![
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
            ("sec-fetch-dest", dest),
        ])
        .await;
        assert_eq!(s, 403, "{dest}");
    }
    let s = get_with(vec![
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ])
    .await;
    assert!(s == 200 || s == 503, "a clicked link: {s}");
}

/// Prometheus' `basic_auth` scrape config: `/metrics` with Basic, the Prometheus text format.
#[tokio::test]
async fn prometheus_basic_auth_scrape_of_metrics() {
    let server = spawn();
    let r = client()
        .get(server.url("/metrics"))
        .header("authorization", basic("viewer", READ_SECRET))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}
