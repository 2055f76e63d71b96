//! The wall-clock sampler against real threads: blocked on a `std::sync::Mutex`, sleeping,
//! burning CPU; and a thread dump taken while it samples. No assertion depends on timing
//! beyond "the profile saw at least one sample"; every wait is bounded.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use super::profile;
use crate::stack::profile::{Profile, Sample};
use crate::stack::thread_state::ThreadState;
use crate::test_support::serial;

fn on_thread<'a>(p: &'a Profile, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    p.samples
        .iter()
        .filter(move |s| s.label("thread") == Some(name))
}

fn in_state(s: &Sample, state: ThreadState) -> bool {
    s.label("state") == Some(state.name())
}

/// Sample count of `s`.
fn count(s: &Sample) -> u64 {
    s.values[0] as u64
}

/// The profile's figure `name` (an `x-prodbg-*` header), as a number.
fn figure(p: &Profile, name: &str) -> u64 {
    p.figures
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no figure {name}: {:?}", p.figures))
}

fn has_function(s: &Sample, needle: &str) -> bool {
    s.frames
        .iter()
        .any(|f| f.function.as_deref().is_some_and(|n| n.contains(needle)))
}

#[inline(never)]
fn prodbg_wall_unit_holds_the_lock(m: &Mutex<u32>, held: &Barrier, done: &AtomicBool) {
    let _g = m.lock().unwrap();
    held.wait();
    while !done.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(5));
    }
}

#[inline(never)]
fn prodbg_wall_unit_waits_for_the_lock(m: &Mutex<u32>) -> u32 {
    *black_box(m.lock().unwrap())
}

#[inline(never)]
fn prodbg_wall_unit_spins(stop: &AtomicBool) -> u64 {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    x
}

#[test]
fn blocked_sleeping_and_busy_threads_get_their_states_and_functions() {
    let _serial = serial();
    let m = Arc::new(Mutex::new(0u32));
    let held = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let holder = {
        let (m, held, done) = (m.clone(), held.clone(), done.clone());
        thread::Builder::new()
            .name("wall-holder".into())
            .spawn(move || prodbg_wall_unit_holds_the_lock(&m, &held, &done))
            .unwrap()
    };
    held.wait();
    let waiter = {
        let m = m.clone();
        thread::Builder::new()
            .name("wall-waiter".into())
            .spawn(move || prodbg_wall_unit_waits_for_the_lock(&m))
            .unwrap()
    };
    let spinner = {
        let done = done.clone();
        thread::Builder::new()
            .name("wall-spinner".into())
            .spawn(move || prodbg_wall_unit_spins(&done))
            .unwrap()
    };
    let running = profile::start(Duration::from_secs(1), 29).unwrap();
    assert!(profile::running());
    // A second profile while one runs is refused, saying when the first one ends.
    let busy = profile::start(Duration::from_secs(1), 29).unwrap_err();
    assert!(busy.to_string().contains("already running"), "{busy}");
    thread::sleep(Duration::from_secs(1));
    let p = running.stop(true).unwrap();
    assert!(!profile::running());
    done.store(true, Ordering::Relaxed);
    holder.join().unwrap();
    waiter.join().unwrap();
    spinner.join().unwrap();

    assert!(figure(&p, "x-prodbg-ticks") > 0 && p.total(0) > 0, "{p:?}");
    assert!(figure(&p, "x-prodbg-threads") >= 3);
    let waits: Vec<_> = on_thread(&p, "wall-waiter").collect();
    let total: u64 = waits.iter().map(|s| count(s)).sum();
    let in_futex: u64 = waits
        .iter()
        .filter(|s| {
            in_state(s, ThreadState::Futex)
                && has_function(s, "prodbg_wall_unit_waits_for_the_lock")
        })
        .map(|s| count(s))
        .sum();
    assert!(
        total > 0 && in_futex * 10 >= total * 8,
        "waiter: {waits:#?}"
    );
    let holder: Vec<_> = on_thread(&p, "wall-holder").collect();
    assert!(
        holder.iter().any(|s| in_state(s, ThreadState::Sleeping)
            && has_function(s, "prodbg_wall_unit_holds_the_lock")),
        "holder: {holder:#?}"
    );
    let spins: Vec<_> = on_thread(&p, "wall-spinner").collect();
    assert!(
        spins.iter().any(|s| (in_state(s, ThreadState::Running)
            || in_state(s, ThreadState::Runnable))
            && has_function(s, "prodbg_wall_unit_spins")),
        "spinner: {spins:#?}"
    );
    // The sampler does not sample itself, and is gone.
    assert!(on_thread(&p, "prodbg-wall").next().is_none());
    assert!(!crate::stack::remote::list_threads().into_iter().any(|t| {
        std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
            .is_ok_and(|n| n.trim() == "prodbg-wall")
    }));
    // Every encoding holds the state roots.
    let folded = p.folded();
    assert!(
        folded.lines().any(|l| l.starts_with("[futex];")),
        "{folded}"
    );
    assert!(!p.pprof_gz().is_empty());
}

#[test]
fn a_thread_dump_during_a_wall_profile_gets_every_stack() {
    let _serial = serial();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let parked = thread::Builder::new()
        .name("wall-parked".into())
        .spawn(move || rx.recv())
        .unwrap();
    let running = profile::start(Duration::from_secs(2), 100).unwrap();
    for _ in 0..3 {
        let d = crate::stack::thread_dump::dump(crate::stack::thread_dump::DumpOptions::default());
        let t = d
            .threads
            .iter()
            .find(|t| t.name == "wall-parked")
            .expect("listed");
        assert!(t.error.is_none() && !t.frames.is_empty(), "{}", d.to_text());
        let sampler = d
            .threads
            .iter()
            .find(|t| t.name == "prodbg-wall")
            .expect("sampler listed");
        assert!(sampler.error.is_none(), "{}", d.to_text());
    }
    let p = running.stop(true).unwrap();
    tx.send(()).unwrap();
    parked.join().unwrap().unwrap();
    assert!(
        on_thread(&p, "wall-parked").map(count).sum::<u64>() > 0,
        "{p:?}"
    );
}
