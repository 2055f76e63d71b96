//! `GET /debug/fds` over real HTTP on 127.0.0.1: the descriptors this test opens are counted
//! under their kinds, the limit is the one `getrlimit` returns; its figure, series and bundle
//! file; bad parameters are 400s.

mod common;

use common::*;

fn nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    (lim.rlim_cur, lim.rlim_max)
}

#[tokio::test]
async fn counts_what_the_process_holds_open_by_kind() {
    let server = spawn();
    let dir = tempfile::tempdir().unwrap();
    // Held open until the end of the test: 6 pipe ends, a socket, 2 files (1 deleted), 1 directory.
    let pipes: Vec<_> = (0..3).map(|_| std::io::pipe().unwrap()).collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let file = std::fs::File::create(dir.path().join("kept.log")).unwrap();
    let deleted = tempfile::tempfile().unwrap();
    let directory = std::fs::File::open(dir.path()).unwrap();

    let (status, body) = get(&server.url("/debug/fds"), Some(READ_SECRET)).await;
    assert_eq!(status, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    let kind = |k: &str| r["by_kind"][k].as_u64().unwrap_or(0);
    assert!(kind("pipe") >= 6, "{r}");
    assert!(
        kind("socket") >= 2,
        "the test's listener and the server's: {r}"
    );
    assert!(kind("file") >= 2, "{r}");
    assert!(kind("directory") >= 1, "{r}");
    assert!(kind("eventpoll") >= 1, "the runtimes' epoll: {r}");
    assert!(r["deleted_files"].as_u64().unwrap() >= 1, "{r}");
    let by_kind_sum: u64 = r["by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(r["open"].as_u64().unwrap(), by_kind_sum, "{r}");
    assert_eq!(r["truncated"], false, "{r}");
    let (soft, hard) = nofile();
    assert_eq!(r["soft_limit"].as_u64(), Some(soft), "{r}");
    assert_eq!(r["hard_limit"].as_u64(), Some(hard), "{r}");
    let used = r["used_ratio"].as_f64().unwrap();
    assert!(
        (used - by_kind_sum as f64 / soft as f64).abs() < 1e-9,
        "{r}"
    );

    let (status, text) = get(&server.url("/debug/fds?format=text"), Some(READ_SECRET)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("open file descriptors: "), "{text}");
    assert!(
        text.contains(&format!("soft limit {soft}")) && text.contains("  pipe\n"),
        "{text}"
    );

    drop((pipes, listener, file, deleted, directory));
}

#[tokio::test]
async fn bad_parameters_and_missing_tokens_are_refused() {
    let server = spawn();
    let (status, body) = get(&server.url("/debug/fds?format=xml"), Some(READ_SECRET)).await;
    assert_eq!(status, 400, "{body}");
    let message = error_message(&body, "bad_parameter");
    assert!(message.contains("json, text"), "{message}");
    let (status, body) = get(&server.url("/debug/fds?limit=5"), Some(READ_SECRET)).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body, "bad_parameter").contains("allowed: format"));
    assert_eq!(get(&server.url("/debug/fds"), None).await.0, 401);
}

#[tokio::test]
async fn index_figure_series_and_bundle_file() {
    let server = spawn();
    let endpoints = endpoints(&server).await;
    assert!(
        endpoints.contains(&("GET".into(), "/debug/fds".into(), "read".into(), true)),
        "{endpoints:?}"
    );

    let index = common::index(&server).await;
    let used = figure(&index, "fds", "fds-used");
    assert_eq!(used["unit"], "ratio", "{used}");
    assert_eq!(used["card"]["title"], "Process", "{used}");
    let ratio = used["value"].as_f64().unwrap_or_else(|| panic!("{used}"));
    assert!(ratio > 0.0 && ratio < 1.0, "{used}");
    assert_eq!(used["bad"], ratio > 0.8, "{used}");
    assert!(
        used["note"]
            .as_str()
            .unwrap()
            .ends_with(&format!(" of {}", nofile().0)),
        "{used}"
    );

    let _pipe = std::io::pipe().unwrap();
    let (status, metrics) = get(&server.url("/metrics"), Some(READ_SECRET)).await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("prodbg_open_fds{kind=\"pipe\"} ")),
        "{metrics}"
    );

    let r = client()
        .get(server.url("/debug/bundle?seconds=1"))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let files = untar(&r.bytes().await.unwrap());
    let fds: serde_json::Value = serde_json::from_slice(&files["fds.json"]).unwrap();
    assert!(fds["by_kind"]["pipe"].as_u64().unwrap() >= 2, "{fds}");
}
