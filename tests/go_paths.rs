//! Go's `net/http/pprof` paths over real HTTP: the `/debug/pprof/` index, `cmdline` and the
//! `threadcreate`-like thread list (`goroutine` is in tests/tokio_http.rs, which also runs in
//! the `tokio_unstable` build).

mod common;

use std::process::Command;

use common::*;

#[tokio::test]
async fn pprof_index_lists_the_profiles_with_links_and_counts() {
    let host = tokio::runtime::Handle::current();
    for _ in 0..3 {
        tokio::spawn(async { tokio::time::sleep(std::time::Duration::from_secs(600)).await });
    }
    let server = spawn_with(|b| b.tokio_runtime("main", host));
    let r = client()
        .get(server.url("/debug/pprof/"))
        .header("authorization", basic("viewer", READ_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'self'"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    for link in [
        "<a href=\"profile\">profile</a>",
        "<a href=\"heap\">heap</a>",
        "<a href=\"allocs\">allocs</a>",
        "<a href=\"cmdline\">cmdline</a>",
        "<a href=\"goroutine?debug=2\">full goroutine stack dump</a>",
    ] {
        assert!(html.contains(link), "{link} missing:\n{html}");
    }
    // Go's counts: tasks alive in the registered runtimes, OS threads.
    let count_of = |name: &str| -> u64 {
        let cell = format!("</td><td><a href=\"{name}?debug=1\">");
        let row = html
            .lines()
            .find(|l| l.contains(&cell))
            .unwrap_or_else(|| panic!("{name}: {html}"));
        row.trim_start_matches("<tr><td>")
            .split('<')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("no count in {row}"))
    };
    assert!(count_of("goroutine") >= 3, "{html}");
    assert!(count_of("threadcreate") >= 2, "{html}");
    assert!(html.contains("Profile Descriptions:"));
    assert_eq!(get(&server.url("/debug/pprof/"), None).await.0, 401);
}

#[tokio::test]
async fn threadcreate_lists_the_os_threads() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let named = std::thread::Builder::new()
        .name("go-paths-tc7".into())
        .spawn(move || {
            let _ = rx.recv();
        })
        .unwrap();
    let server = spawn();
    for q in ["", "?debug=1", "?debug=2"] {
        let r = client()
            .get(server.url(&format!("/debug/pprof/threadcreate{q}")))
            .bearer_auth(READ_SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        let text = r.text().await.unwrap();
        let total: usize = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("threadcreate profile: total "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .skip(1)
            .collect();
        assert_eq!(rows.len(), total, "{text}");
        assert!(rows.iter().any(|r| r.ends_with("\tgo-paths-tc7")), "{text}");
        assert!(rows.iter().any(|r| r.ends_with("\tprodbg-admin")), "{text}");
    }
    let (s, body) = get(
        &server.url("/debug/pprof/threadcreate?debug=0"),
        Some(READ_SECRET),
    )
    .await;
    assert_eq!(s, 400);
    error_message(&body, "bad_parameter");
    let _ = tx.send(());
    named.join().unwrap();
}

const CHILD: &str = "PRODBG_CMDLINE_CHILD";
const SECRET_ARG: &str = "password=hunter2-cmdline-q9";

/// `/debug/pprof/cmdline`: the arguments joined by NUL bytes as Go does, each redacted. The
/// test runs itself again with a secret-looking argument (a libtest filter matching no test)
/// and checks what that process serves.
#[test]
fn cmdline_is_nul_separated_and_redacted() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new(&me)
        .args([
            "cmdline_is_nul_separated_and_redacted",
            SECRET_ARG,
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CMDLINE-CHILD-OK"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn child() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = spawn();
        let r = client()
            .get(server.url("/debug/pprof/cmdline"))
            .header("authorization", basic("viewer", READ_SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        let body = r.text().await.unwrap();
        let args: Vec<&str> = body.split('\0').collect();
        let expect: Vec<String> = std::env::args()
            .map(|a| {
                if a == SECRET_ARG {
                    "password=[redacted]".to_string()
                } else {
                    a
                }
            })
            .collect();
        assert_eq!(args, expect, "{body:?}");
        assert!(!body.contains("hunter2"), "{body:?}");
        assert!(!body.ends_with('\0'));
        println!("CMDLINE-CHILD-OK");
    });
}
