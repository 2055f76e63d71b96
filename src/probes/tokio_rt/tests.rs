//! The Tokio probe against real runtimes: a host runtime with one worker kept busy by a task that
//! never yields, read from a separate "admin" runtime, as the admin server does. No assertion
//! depends on timing beyond generous bounds; every wait is bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};

#[cfg(tokio_unstable)]
use super::runtime::RuntimeReport;
#[cfg(not(all(tokio_unstable, tokio_taskdump)))]
use super::runtime::TASK_DUMP_COMPILED;
use super::runtime::{task_dump, RuntimeRegistry, TaskDumpError};

const PATIENCE: Duration = Duration::from_secs(20);
const PARKED_TASKS: usize = 5;

/// The host: 2 workers, and under `tokio_unstable` the poll-time histogram on.
fn host_runtime() -> Runtime {
    let mut b = Builder::new_multi_thread();
    b.worker_threads(2).enable_all();
    #[cfg(tokio_unstable)]
    b.enable_metrics_poll_time_histogram();
    b.build().expect("host runtime")
}

fn admin_runtime() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("admin runtime")
}

/// Stops the spinning task when dropped, so that a failed assertion does not leave a worker
/// spinning forever (and the runtime's drop waiting for it).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Spawns a task that spins without ever yielding until the returned guard drops, and waits
/// until it runs.
fn spawn_spinner(host: &Runtime) -> StopOnDrop {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let (s, st) = (stop.clone(), started.clone());
    host.spawn(async move {
        st.store(true, Ordering::SeqCst);
        while !s.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
    });
    let deadline = Instant::now() + PATIENCE;
    while !started.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the spinning task never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    StopOnDrop(stop)
}

#[test]
fn busy_worker_shows_as_busy_and_idle_worker_as_idle() {
    let host = host_runtime();
    let registry = RuntimeRegistry::new();
    registry.register("host", host.handle().clone());
    let _spinning = spawn_spinner(&host);

    // Tasks parked forever (their senders are held here), and a ticker that keeps the idle
    // worker polling.
    let mut senders = Vec::new();
    for _ in 0..PARKED_TASKS {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        senders.push(tx);
        host.spawn(async move {
            let _ = rx.await;
        });
    }
    host.spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let admin = admin_runtime();
    let first = admin.block_on(registry.snapshot(Duration::ZERO));
    let reports = admin.block_on(registry.snapshot(Duration::from_millis(500)));
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    println!("{r:#?}");
    assert_eq!(r.name, "host");
    assert_eq!(r.flavor, "multi_thread");
    assert_eq!(r.workers, 2);
    assert_eq!(r.per_worker.len(), 2);
    assert!(
        r.alive_tasks > PARKED_TASKS,
        "alive tasks {} should count the {PARKED_TASKS} parked tasks, the spinner and the ticker",
        r.alive_tasks
    );
    assert!(r.window_seconds.is_some_and(|s| s >= 0.5));
    assert!(r.window.is_some());

    let ratio = |i: usize| r.per_worker[i].busy_ratio.expect("a window was taken");
    let (busy, idle) = if ratio(0) >= ratio(1) { (0, 1) } else { (1, 0) };
    assert!(ratio(busy) > 0.5, "busy worker's ratio {}", ratio(busy));
    assert!(ratio(idle) < 0.5, "idle worker's ratio {}", ratio(idle));
    assert_eq!(r.per_worker[busy].likely_blocked, Some(true));
    assert_eq!(r.per_worker[idle].likely_blocked, Some(false));
    assert!(!r.per_worker[busy].parked);
    assert_eq!(r.likely_blocked_workers, Some(1));

    // The idle worker made progress between the two snapshots (the ticker woke it up).
    let before = &first[0].per_worker[idle];
    let after = &r.per_worker[idle];
    assert!(
        after.park_count > before.park_count,
        "idle worker's parks {} -> {}",
        before.park_count,
        after.park_count
    );

    #[cfg(tokio_unstable)]
    {
        let polls = |rs: &[RuntimeReport]| -> u64 {
            rs[0].per_worker.iter().map(|w| w.poll_count.unwrap()).sum()
        };
        assert!(
            polls(&reports) > polls(&first),
            "poll counts should increase"
        );
        assert!(after.polls_per_second.is_some_and(|p| p > 0.0));
        assert!(after.mean_poll_time_seconds.is_some());
        assert!(after.local_queue_depth.is_some());
        assert!(r.window.as_ref().unwrap().polls.is_some_and(|p| p > 0));
        let hist = r.poll_time_histogram.as_ref().expect("histogram enabled");
        assert_eq!(hist.counts.len(), hist.upper_bounds_seconds.len() + 1);
        assert!(hist.counts.iter().sum::<u64>() > 0);
        assert!(r.unavailable.is_empty(), "{:?}", r.unavailable);
    }
    #[cfg(not(tokio_unstable))]
    {
        assert_eq!(after.poll_count, None);
        assert_eq!(after.polls_per_second, None);
        assert!(
            r.unavailable.iter().any(|u| u.starts_with("poll_count:")
                && u.contains("RUSTFLAGS=\"--cfg tokio_unstable\"")),
            "{:?}",
            r.unavailable
        );
    }
    drop(senders);
}

#[test]
fn zero_window_has_no_rates_and_current_thread_is_one_worker() {
    let host = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let registry = RuntimeRegistry::new();
    registry.register("ct", host.handle().clone());
    registry.register("gone", host.handle().clone());
    assert!(registry.unregister("gone"));
    assert_eq!(registry.names(), vec!["ct".to_owned()]);

    let reports = admin_runtime().block_on(registry.clone().snapshot(Duration::ZERO));
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.flavor, "current_thread");
    assert_eq!(r.workers, 1);
    assert_eq!(r.window_seconds, None);
    assert_eq!(r.busy_ratio, None);
    assert!(r.window.is_none());
    assert_eq!(r.per_worker[0].busy_ratio, None);
    assert_eq!(r.per_worker[0].parks_per_second, None);
    let json = serde_json::to_value(r).expect("serializes");
    assert_eq!(json["per_worker"][0]["busy_ratio"], serde_json::Value::Null);
}

#[cfg(all(tokio_unstable, tokio_taskdump))]
#[inline(never)]
async fn prodbg_test_parked_task_xyz(
    started: tokio::sync::oneshot::Sender<()>,
    never: tokio::sync::oneshot::Receiver<()>,
) {
    let _ = started.send(());
    let _ = never.await;
}

#[cfg(all(tokio_unstable, tokio_taskdump))]
#[test]
fn task_dump_shows_the_parked_task_of_a_multi_thread_runtime() {
    let host = host_runtime();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (_never_tx, never_rx) = tokio::sync::oneshot::channel::<()>();
    host.spawn(prodbg_test_parked_task_xyz(started_tx, never_rx));
    host.block_on(async { tokio::time::timeout(PATIENCE, started_rx).await })
        .expect("task started in time")
        .expect("task started");

    let dump = admin_runtime()
        .block_on(task_dump(host.handle(), PATIENCE))
        .expect("dump");
    println!("{dump}");
    assert!(dump.starts_with("Task 1 (id "), "{dump}");
    assert!(dump.contains("prodbg_test_parked_task_xyz"), "{dump}");
}

#[cfg(all(tokio_unstable, tokio_taskdump))]
#[test]
fn task_dump_of_a_current_thread_runtime_from_another_runtime() {
    let host = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handle = host.handle().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        host.block_on(async {
            let _ = stop_rx.await;
        })
    });
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (_never_tx, never_rx) = tokio::sync::oneshot::channel::<()>();
    handle.spawn(prodbg_test_parked_task_xyz(started_tx, never_rx));

    let admin = admin_runtime();
    admin
        .block_on(async { tokio::time::timeout(PATIENCE, started_rx).await })
        .expect("task started in time")
        .expect("task started");
    let dump = admin.block_on(task_dump(&handle, PATIENCE));
    let _ = stop_tx.send(());
    let _ = driver.join();
    let dump = dump.expect("dump");
    println!("{dump}");
    assert!(dump.contains("prodbg_test_parked_task_xyz"), "{dump}");
}

#[cfg(all(tokio_unstable, tokio_taskdump))]
#[test]
fn task_dump_of_a_runtime_that_never_yields_is_refused_and_works_once_it_yields() {
    let host = host_runtime();
    let spinning = spawn_spinner(&host);
    let admin = admin_runtime();
    admin.block_on(async {
        let err = task_dump(host.handle(), Duration::from_millis(500))
            .await
            .expect_err("a spinning worker cannot be dumped");
        assert!(
            matches!(&err, TaskDumpError::WorkerBlocked { workers, .. } if workers.len() == 1),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("did not yield to the scheduler"),
            "{err}"
        );

        // The refused dump did not touch tokio's dump machinery: once the worker yields, a
        // dump works.
        drop(spinning);
        let deadline = Instant::now() + PATIENCE;
        loop {
            match task_dump(host.handle(), PATIENCE).await {
                Ok(_) => break,
                Err(TaskDumpError::WorkerBlocked { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("dump after the worker yielded: {e}"),
            }
        }
    });
}

#[cfg(all(tokio_unstable, tokio_taskdump))]
#[test]
fn task_dump_of_a_wedged_current_thread_runtime_times_out() {
    // A current-thread runtime whose only thread is stuck in a poll: the dump (spawned onto
    // it) never runs.
    let host = Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handle = host.handle().clone();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    let driver = std::thread::spawn(move || {
        host.block_on(async move {
            while !stop.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        })
    });
    let admin = admin_runtime();
    admin.block_on(async {
        let err = task_dump(&handle, Duration::from_millis(300))
            .await
            .expect_err("a wedged runtime cannot be dumped");
        assert!(matches!(err, TaskDumpError::Timeout { .. }), "{err:?}");
        assert!(
            err.to_string().contains("did not finish within 300ms"),
            "{err}"
        );
        let again = task_dump(&handle, Duration::from_millis(100)).await;
        assert!(
            matches!(again, Err(TaskDumpError::AlreadyRunning)),
            "{again:?}"
        );
    });
    drop(_stop);
    let _ = driver.join();
}

#[cfg(not(all(tokio_unstable, tokio_taskdump)))]
#[test]
fn task_dump_says_what_to_compile_in() {
    let host = host_runtime();
    let err = admin_runtime()
        .block_on(task_dump(host.handle(), PATIENCE))
        .expect_err("not compiled in");
    assert!(matches!(err, TaskDumpError::NotCompiled), "{err:?}");
    assert!(
        err.to_string()
            .contains("RUSTFLAGS=\"--cfg tokio_unstable --cfg tokio_taskdump\""),
        "{err}"
    );
    const { assert!(!TASK_DUMP_COMPILED) };
}
