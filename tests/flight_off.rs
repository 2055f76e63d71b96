//! Turning the CPU flight recorder off stops every timer: with it on, each thread has a
//! SIGPROF timer; when the last server holding it shuts down, or with `FlightRecorder::off()`,
//! none is left and `?since=` says the recorder is off.
#![cfg(feature = "cpu")]

mod common;

use common::*;
use prodbg::FlightRecorder;

/// POSIX timers of this process that send SIGPROF, from `/proc/self/timers`.
fn sigprof_timers() -> usize {
    let text = std::fs::read_to_string("/proc/self/timers").expect("/proc/self/timers");
    let prefix = format!("signal: {}/", libc::SIGPROF);
    text.lines().filter(|l| l.starts_with(&prefix)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_stops_with_its_last_server_and_off_means_no_timer() {
    let server = spawn();
    assert!(sigprof_timers() > 0, "the recorder arms a timer per thread");
    let Server { handle, dir, .. } = server;
    tokio::task::spawn_blocking(move || handle.shutdown())
        .await
        .unwrap();
    drop(dir);
    assert_eq!(sigprof_timers(), 0, "a timer outlived the recorder");

    let server = spawn_with(|b| b.flight_recorder(FlightRecorder::off()));
    assert_eq!(sigprof_timers(), 0);
    let r = client()
        .get(server.url("/debug/pprof/profile?since=1m"))
        .bearer_auth(PROFILE_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("flight recorder is off"));
}
