//! On jemalloc without `prof:true`: stats work, heap profiles answer 409 with the line to add.
#![cfg(feature = "heap")]

mod common;

use common::*;

#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::test]
async fn heap_profile_without_prof_says_how_to_enable_it() {
    let server = spawn();
    assert_eq!(
        get(&server.url("/debug/memory"), Some(READ_SECRET)).await.0,
        200
    );
    let (s, body) = get(&server.url("/debug/pprof/heap"), Some(PROFILE_SECRET)).await;
    assert_eq!(s, 409, "{body}");
    let msg = error_message(&body, "conflict");
    assert!(msg.contains("prof:true"), "{msg}");
    assert!(
        msg.contains("_rjem_malloc_conf") || msg.contains("MALLOC_CONF"),
        "{msg}"
    );
    assert!(
        msg.contains("_RJEM_MALLOC_CONF=prof:true,prof_active:false,lg_prof_sample:19"),
        "{msg}"
    );
    // Switching sampling on cannot work either, and says why; switching it off is harmless.
    let activate = server.url("/debug/pprof/heap/activate");
    let resp = client()
        .post(&activate)
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let msg = error_message(&resp.text().await.unwrap(), "conflict");
    assert!(msg.contains("prof:true"), "{msg}");
    let deactivate = server.url("/debug/pprof/heap/deactivate");
    let resp = client()
        .post(&deactivate)
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}
