//! jemalloc's stats against the test binary's real jemalloc (`crate::test_support` sets it
//! as the allocator, with profiling enabled at start-up).

use std::hint::black_box;

use crate::test_support::serial;

#[test]
fn jemalloc_stats_are_sensible_and_track_allocations() {
    // The 64 MiB below must not be offset by what the tests that take turns free meanwhile.
    let _g = serial();
    let before = super::jemalloc_stats().unwrap();
    assert!(before.allocated_bytes > 0);
    assert!(before.active_bytes >= before.allocated_bytes);
    assert!(before.resident_bytes > 0 && before.mapped_bytes > 0 && before.metadata_bytes > 0);
    assert!((0.0..=1.0).contains(&before.fragmentation_ratio));
    assert!(before.arenas >= 1);
    assert!(before.profiling.opt_prof);
    assert_eq!(before.profiling.lg_prof_sample, 14);

    let big = black_box(vec![1u8; 64 << 20]);
    let after = super::jemalloc_stats().unwrap();
    // Other tests allocate concurrently; 64 MiB dwarfs them.
    assert!(
        after.allocated_bytes >= before.allocated_bytes + (60 << 20),
        "{before:?} {after:?}"
    );
    drop(big);
}
