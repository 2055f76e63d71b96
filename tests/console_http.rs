//! The console at `/debug/` over real HTTP (without a browser: see tests/browser_console.rs):
//! its CSP and assets, the JSON index tools rely on, and the kept flamegraphs.

mod common;

use std::io::Read as _;

use common::*;

async fn fetch(server: &Server, path: &str, secret: &str) -> reqwest::Response {
    client()
        .get(server.url(path))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn console_page_has_a_strict_csp_and_only_same_origin_assets() {
    let server = spawn_with(|b| b.tokio_runtime("main", tokio::runtime::Handle::current()));
    let r = fetch(&server, "/debug/", READ_SECRET).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for directive in [
        "default-src 'self'",
        "script-src 'self';",
        "style-src 'self';",
        "frame-ancestors 'self'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} not in {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("http"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    // No inline script or style, nothing from another origin.
    assert!(
        html.contains("<script src=\"console.js\" defer></script>"),
        "{html}"
    );
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(
        !html.contains("<style") && !html.contains(" style="),
        "{html}"
    );
    let handler = html.split(" on").skip(1).find(|rest| {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(
        handler.is_none(),
        "inline event handler: on{:?}",
        handler.map(|h| &h[..20.min(h.len())])
    );
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
        "{html}"
    );
    // The figures and the forms.
    for want in [
        "id=\"fig-rss\"",
        "id=\"fig-jemalloc\"",
        "<td>main</td>",
        "id=\"fig-pools-saturated\"",
        "id=\"fig-deadlocks\"",
        "id=\"fig-overrides\"",
        "<button id=\"cpu-flame\" type=\"submit\">CPU flamegraph</button>",
        "id=\"heap-growth\"",
        "id=\"thread-dump\"",
        "id=\"task-dump\"",
        "<form id=\"bundle-form\" method=\"get\" action=\"bundle\">",
        "id=\"wall-flame\"",
        "id=\"log-set\"",
        "signed in as <b id=\"caller\">viewer</b> (scope read)",
        "<a href=\"../health/live\">/health/live</a>",
        "test-service",
    ] {
        assert!(html.contains(want), "{want} not in the page:\n{html}");
    }
    let r = fetch(&server, "/debug/console.js", READ_SECRET).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let js = r.text().await.unwrap();
    assert!(
        js.contains("console/last/") && !js.contains("eval("),
        "{js}"
    );
    let r = fetch(&server, "/debug/console.css", READ_SECRET).await;
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(get(&server.url("/debug/console.js"), None).await.0, 401);
}

/// Tools and tests read the index as JSON: `endpoints` and `probes` stay, with the glances.
#[tokio::test]
async fn json_index_keeps_endpoints_and_probes() {
    let server = spawn_with(|b| b.tokio_runtime("main", tokio::runtime::Handle::current()));
    let r = client()
        .get(server.url("/debug/"))
        .header("authorization", basic("viewer", READ_SECRET))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["service"], "test-service");
    assert_eq!(v["caller"]["token"], "viewer");
    let paths: Vec<&str> = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in [
        "/debug/",
        "/debug/pprof/",
        "/debug/pprof/goroutine",
        "/debug/pprof/cmdline",
        "/debug/pprof/threadcreate",
        "/debug/console.js",
        "/debug/console/last/{file}",
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    // Typed figures: label, value, unit, bad.
    let probes = &v["probes"];
    let rss = common::figure(&v, "memory", "rss");
    assert_eq!(rss["unit"], "bytes", "{probes}");
    assert!(rss["value"].as_u64().unwrap() > 0, "{probes}");
    assert_eq!(rss["bad"], false, "{probes}");
    let tokio = common::glance_table(&v, "tokio", "tokio");
    let rt = &tokio["rows"][0]["cells"];
    assert_eq!(rt[0]["value"], "main", "{tokio}");
    // Sampled over a short window, so the ratio is a number, not null.
    assert_eq!(rt[2]["unit"], "ratio", "{tokio}");
    let busy = rt[2]["value"].as_f64().unwrap_or_else(|| panic!("{tokio}"));
    assert!((0.0..=1.0).contains(&busy), "{tokio}");
    assert!(rt[4]["value"].as_u64().is_some(), "{tokio}");
    assert_eq!(
        common::figure(&v, "pools", "pools-saturated")["value"],
        "none"
    );
    assert!(common::glance_table(&v, "overrides", "overrides")["rows"].is_array());
    let threads = common::figure(&v, "process", "threads");
    assert!(threads["value"].as_u64().unwrap() >= 1, "{probes}");
    if cfg!(feature = "deadlock") {
        let d = common::figure(&v, "deadlock", "deadlocks");
        assert_eq!(d["unit"], "text", "{d}");
        assert!(
            d["value"].as_str().unwrap().starts_with("detection off"),
            "{d}"
        );
    }
    // Actions are typed too: the route, the bounded fields.
    let cpu = &probes["cpu"]["actions"][0];
    assert_eq!(cpu["route"], "GET /debug/pprof/profile", "{cpu}");
    assert_eq!(cpu["fields"][0]["kind"]["type"], "seconds", "{cpu}");
}

#[cfg(feature = "cpu")]
#[inline(never)]
fn prodbg_console_http_spin_k2(stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut x = 1u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

/// A flamegraph taken with `format=svg` is kept with the pprof file of the same profile, and
/// served back under its own CSP; inferno's `?s=&x=&y=` are accepted, other parameters not.
#[cfg(feature = "cpu")]
#[tokio::test]
async fn the_last_cpu_flamegraph_is_kept_for_the_frame() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = spawn_with(|b| b.service_name("console/test:1"));
    let (s, body) = get(
        &server.url("/debug/console/last/cpu.svg"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(s, 404);
    assert!(
        error_message(&body, "not_found").contains("format=svg"),
        "{body}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = stop.clone();
        std::thread::spawn(move || prodbg_console_http_spin_k2(&stop))
    };
    let r = fetch(
        &server,
        "/debug/pprof/profile?seconds=2&format=svg",
        PROFILE_SECRET,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("inline; filename=\"console_test_1-cpu-20")
            && disposition.ends_with("Z.svg\""),
        "{disposition}"
    );
    let svg = r.bytes().await.unwrap();

    for q in ["", "?s=prodbg_console&x=10.5&y=405", "?x=1&y=2"] {
        let r = fetch(
            &server,
            &format!("/debug/console/last/cpu.svg{q}"),
            PROFILE_SECRET,
        )
        .await;
        assert_eq!(r.status().as_u16(), 200, "{q}");
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'unsafe-inline'")
                && csp.contains("frame-ancestors 'self'")
                && csp.contains("sandbox allow-scripts"),
            "{csp}"
        );
        assert_eq!(
            r.headers()["content-disposition"].to_str().unwrap(),
            disposition
        );
        assert_eq!(
            r.bytes().await.unwrap(),
            svg,
            "{q}: not the same flamegraph"
        );
    }
    let text = String::from_utf8_lossy(&svg);
    assert!(
        text.contains("prodbg_console_http_spin_k2"),
        "hot function not in the SVG"
    );
    let (s, body) = get(
        &server.url("/debug/console/last/cpu.svg?seconds=5"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(
        get(
            &server.url("/debug/console/last/cpu.svg"),
            Some(READ_SECRET)
        )
        .await
        .0,
        403
    );

    // The pprof file of the same profile, named like the SVG.
    let r = fetch(&server, "/debug/console/last/cpu.pb.gz", PROFILE_SECRET).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-disposition"].to_str().unwrap(),
        disposition
            .replace("inline", "attachment")
            .replace(".svg", ".pb.gz")
    );
    let gz = r.bytes().await.unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    use pprof::protos::Message as _;
    let p = pprof::protos::Profile::decode(&raw[..]).unwrap();
    assert!(
        p.string_table
            .iter()
            .any(|s| s.contains("prodbg_console_http_spin_k2")),
        "hot function not in the pprof file"
    );

    // A pprof scrape keeps nothing: the kept flamegraph stays.
    let r = fetch(&server, "/debug/pprof/profile?seconds=1", PROFILE_SECRET).await;
    assert_eq!(r.status().as_u16(), 200);
    let again = fetch(&server, "/debug/console/last/cpu.svg", PROFILE_SECRET).await;
    assert_eq!(again.bytes().await.unwrap(), svg);
    // The console lists it.
    let (_, html) = get(&server.url("/debug/"), Some(READ_SECRET)).await;
    assert!(
        html.contains("href=\"console/last/cpu.pb.gz\" download>console_test_1-cpu-"),
        "{html}"
    );
}
