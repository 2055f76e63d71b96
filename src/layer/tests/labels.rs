//! The profilers' span-label slot.

use crate::layer::test_support::{dispatch, tid, with};
use crate::layer::Options;
use crate::stack::labels::{current_labels_for, Labels};

#[test]
fn slot_shows_the_innermost_span_and_clears_on_exit() {
    let (d, _h) = dispatch(Options::default().labels_only());
    with(&d, || {
        assert!(current_labels_for(tid()).is_empty());
        let outer = tracing::info_span!("outer", route = "/users/:id");
        let g = outer.enter();
        let l = current_labels_for(tid()).resolve();
        assert_eq!(l.span, Some("outer"));
        assert_eq!(l.fields.len(), 1);
        assert_eq!(
            (l.fields[0].field, l.fields[0].value),
            (Some("route"), "/users/:id")
        );
        assert_eq!(l.pairs(), [("span", "outer"), ("route", "/users/:id")]);
        {
            let _inner = tracing::info_span!("db_query", table = "users").entered();
            let l = current_labels_for(tid()).resolve();
            assert_eq!(l.span, Some("db_query"));
            assert_eq!(
                l.pairs(),
                [("span", "db_query"), ("route", "/users/:id")],
                "the inner span has no route of its own: it inherits the outer one"
            );
            let _own = tracing::info_span!("proxy", route = "/upstream").entered();
            assert_eq!(
                current_labels_for(tid()).resolve().pairs(),
                [("span", "proxy"), ("route", "/upstream")],
                "a span's own value wins"
            );
        }
        assert_eq!(current_labels_for(tid()).resolve().span, Some("outer"));
        drop(g);
        assert_eq!(current_labels_for(tid()), Labels::NONE);
    });
}

#[test]
fn another_thread_reads_the_slot_by_tid() {
    let (d, _h) = dispatch(Options::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        with(&d, || {
            let _s = tracing::info_span!("handler", route = "/x").entered();
            tx.send(tid()).ok();
            done_rx.recv().ok();
        })
    });
    let other = rx.recv().expect("tid");
    let l = current_labels_for(other);
    assert_eq!(l.resolve().span, Some("handler"));
    assert_eq!(Labels::from_bits(l.to_bits()), l);
    done_tx.send(()).ok();
    t.join().expect("join");
    assert!(
        current_labels_for(other).is_empty(),
        "slot released at thread exit"
    );
}

#[test]
fn record_updates_the_label() {
    let (d, _h) = dispatch(Options::default().label_fields(&["route", "method"]));
    with(&d, || {
        let s = tracing::info_span!("req", route = tracing::field::Empty, method = "GET");
        let _g = s.enter();
        assert_eq!(current_labels_for(tid()).resolve().fields.len(), 1);
        s.record("route", "/late");
        let l = current_labels_for(tid()).resolve();
        let values: Vec<_> = l.fields.iter().map(|f| (f.slot, f.value)).collect();
        assert_eq!(values, [(0, "/late"), (1, "GET")]);
    });
}

static FROM_HANDLER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

extern "C" fn on_signal(_: libc::c_int) {
    // What a CPU profiler's SIGPROF handler does: read the slot, keep the word.
    FROM_HANDLER.store(
        current_labels_for(tid()).to_bits(),
        std::sync::atomic::Ordering::SeqCst,
    );
}

/// SIGUSR2 stands in for SIGPROF, which the CPU profiler's own tests in this binary use.
#[test]
fn a_signal_handler_reads_the_labels() {
    let (d, _h) = dispatch(Options::default());
    // SAFETY: installs a handler that only loads and stores atomics, keeping the old one to
    // put back below.
    let old = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, &mut old), 0);
        old
    };
    with(&d, || {
        let _s = tracing::info_span!("checkout", route = "/cart/checkout").entered();
        // SAFETY: raise delivers SIGUSR2 to this thread, whose handler is installed above.
        unsafe { libc::raise(libc::SIGUSR2) };
    });
    // SAFETY: puts back the disposition saved above.
    unsafe { libc::sigaction(libc::SIGUSR2, &old, std::ptr::null_mut()) };
    let l = Labels::from_bits(FROM_HANDLER.load(std::sync::atomic::Ordering::SeqCst)).resolve();
    assert_eq!(l.span, Some("checkout"));
    assert_eq!(l.fields[0].value, "/cart/checkout");
}
