//! A host on the system allocator: /debug/memory is a clear 503 for jemalloc, with process
//! numbers still there; heap profiles say the same.

mod common;

use common::*;

#[tokio::test]
async fn memory_without_jemalloc_is_a_503_with_process_numbers() {
    let server = spawn();
    let (s, body) = get(&server.url("/debug/memory"), Some(READ_SECRET)).await;
    assert_eq!(s, 503, "{body}");
    let msg = error_message(&body, "unavailable");
    assert!(msg.contains("jemalloc"), "{msg}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["process"]["rss_bytes"].as_u64().unwrap() > 0, "{body}");
    assert!(v.get("jemalloc").is_none(), "no zeros for jemalloc: {body}");
    if cfg!(feature = "heap") {
        let (s, body) = get(&server.url("/debug/pprof/heap"), Some(PROFILE_SECRET)).await;
        assert_eq!(s, 503, "{body}");
        assert!(error_message(&body, "unavailable").contains("global_allocator"));
        let resp = client()
            .post(server.url("/debug/pprof/heap/activate"))
            .bearer_auth(ADMIN_SECRET)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503);
        let msg = error_message(&resp.text().await.unwrap(), "unavailable");
        assert!(msg.contains("global_allocator"), "{msg}");
    }
}
