//! A host that installed its own SIGPROF handler: a CPU profile is refused with 409 naming
//! it, and the handler is left exactly as it was. (Its own process: the disposition is
//! process-wide.)
#![cfg(feature = "cpu")]

mod common;

use common::*;

extern "C" fn host_handler(_: libc::c_int) {}

fn disposition() -> (libc::sighandler_t, libc::c_int) {
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old) },
        0
    );
    (old.sa_sigaction, old.sa_flags)
}

#[tokio::test]
async fn host_sigprof_handler_makes_a_profile_refuse_and_stays() {
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = host_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    act.sa_flags = libc::SA_RESTART;
    assert_eq!(
        unsafe { libc::sigaction(libc::SIGPROF, &act, std::ptr::null_mut()) },
        0
    );
    let before = disposition();

    let server = spawn();
    let (code, body) = get(
        &server.url("/debug/pprof/profile?seconds=1"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        error_message(&body, "conflict").contains("own SIGPROF handler"),
        "{body}"
    );
    assert_eq!(disposition(), before, "the host's handler was touched");
    assert!(!cpu_profile_running(&server).await);
}
