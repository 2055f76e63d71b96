//! A host with ITIMER_PROF running: a CPU profile is refused with 409 naming it; and after a
//! profile in a host without either, the default disposition is restored exactly (not left
//! `SIG_IGN`, which a child would inherit across exec). Its own process.
#![cfg(feature = "cpu")]

mod common;

use common::*;

fn disposition() -> libc::sighandler_t {
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old) },
        0
    );
    old.sa_sigaction
}

fn set_itimer_prof(usec: libc::suseconds_t) {
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: usec,
    };
    let it = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    assert_eq!(
        unsafe { libc::setitimer(libc::ITIMER_PROF, &it, std::ptr::null_mut()) },
        0
    );
}

#[tokio::test]
async fn itimer_prof_makes_a_profile_refuse_and_the_default_disposition_comes_back() {
    // The on-demand sampler alone: the flight recorder would hold SIGPROF for good.
    let server = spawn_with(|b| b.flight_recorder(prodbg::FlightRecorder::off()));
    assert_eq!(disposition(), libc::SIG_DFL);
    // A profile on a clean host: afterwards SIGPROF is back to SIG_DFL exactly.
    let (code, body) = get(
        &server.url("/debug/pprof/profile?seconds=1"),
        Some(PROFILE_SECRET),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        disposition(),
        libc::SIG_DFL,
        "SIGPROF left changed after a profile"
    );

    // The host's ITIMER_PROF (ignored, so it cannot kill this test while armed).
    unsafe { libc::signal(libc::SIGPROF, libc::SIG_IGN) };
    set_itimer_prof(500_000);
    let (code, body) = get(
        &server.url("/debug/pprof/profile?seconds=1"),
        Some(PROFILE_SECRET),
    )
    .await;
    set_itimer_prof(0);
    assert_eq!(code, 409, "{body}");
    assert!(
        error_message(&body, "conflict").contains("ITIMER_PROF"),
        "{body}"
    );
    assert_eq!(
        disposition(),
        libc::SIG_IGN,
        "the host's disposition was touched"
    );
    unsafe { libc::signal(libc::SIGPROF, libc::SIG_DFL) };
}
