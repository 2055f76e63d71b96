//! `GET /debug/timeline` over real HTTP on 127.0.0.1: the sampler fills it each second (RSS and
//! CPU points with increasing timestamps), bad windows are 400s naming what is allowed, it needs
//! a token, and the bundle carries `timeline.json`.

mod common;

use std::time::Duration;

use common::*;

/// The points of series `name` in a timeline body, `[t_ms, value]` pairs.
fn points(body: &serde_json::Value, name: &str) -> Vec<(u64, f64)> {
    body["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| {
            s["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn fills_each_second_with_rss_and_cpu() {
    let server = spawn();
    let url = server.url("/debug/timeline?since=1m");
    // Eventually, within a bounded wait: the sampler ticks once a second (CPU, a counter, needs
    // two readings for its first point).
    let mut body = serde_json::Value::Null;
    for _ in 0..300 {
        let (status, text) = get(&url, Some(READ_SECRET)).await;
        assert_eq!(status, 200, "{text}");
        body = serde_json::from_str(&text).unwrap();
        if points(&body, "rss_bytes").len() >= 2 && points(&body, "cpu").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body["step_s"], 1, "{body}");
    assert!(
        body["start_ms"].as_u64().unwrap() < body["end_ms"].as_u64().unwrap(),
        "{body}"
    );
    assert_eq!(body["dropped_series"], 0, "{body}");
    for name in ["rss_bytes", "cpu"] {
        let p = points(&body, name);
        assert!(p.len() >= 2, "{name}: {body}");
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0), "{name}: {p:?}");
        assert!(p.iter().all(|&(_, v)| v >= 0.0), "{name}: {p:?}");
    }
    assert!(points(&body, "rss_bytes").iter().all(|&(_, v)| v > 0.0));
    let units: Vec<(&str, &str)> = body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["unit"].as_str().unwrap()))
        .collect();
    assert!(units.contains(&("rss_bytes", "bytes")), "{units:?}");
    assert!(units.contains(&("cpu", "cores")), "{units:?}");

    // A window beyond the fine ring's 10 minutes is answered in 10 s steps.
    let (status, text) = get(&server.url("/debug/timeline?since=1h"), Some(READ_SECRET)).await;
    assert_eq!(status, 200, "{text}");
    let coarse: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(coarse["step_s"], 10, "{coarse}");
    assert!(!points(&coarse, "rss_bytes").is_empty(), "{coarse}");
}

#[tokio::test]
async fn bad_windows_are_400s_and_a_token_is_needed() {
    let server = spawn();
    let (status, body) = get(&server.url("/debug/timeline?since=2h"), Some(READ_SECRET)).await;
    assert_eq!(status, 400, "{body}");
    let message = error_message(&body, "bad_parameter");
    assert!(message.contains("at most 1h"), "{message}");
    assert!(message.contains("retention"), "{message}");

    let (status, body) = get(&server.url("/debug/timeline?since=abc"), Some(READ_SECRET)).await;
    assert_eq!(status, 400, "{body}");
    let message = error_message(&body, "bad_parameter");
    assert!(
        message.contains("since must be like 90s, 5m or 1h, at most 1h"),
        "{message}"
    );

    let (status, body) = get(
        &server.url("/debug/timeline?since=5m&until=10m"),
        Some(READ_SECRET),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body, "bad_parameter").contains("until"));

    let (status, _) = get(&server.url("/debug/timeline"), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_bundle_carries_the_last_ten_minutes() {
    let server = spawn();
    let resp = client()
        .get(server.url("/debug/bundle?seconds=1"))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let files = untar(&resp.bytes().await.unwrap());
    let timeline: serde_json::Value = serde_json::from_slice(&files["timeline.json"]).unwrap();
    assert_eq!(timeline["step_s"], 1, "{timeline}");
    let span = timeline["end_ms"].as_u64().unwrap() - timeline["start_ms"].as_u64().unwrap();
    assert_eq!(span, 600_000, "{timeline}");
    assert!(timeline["series"].is_array(), "{timeline}");
}
