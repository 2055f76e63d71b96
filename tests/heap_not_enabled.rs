//! jemalloc is the global allocator but was started without `prof:true`: stats work, heap
//! profiling answers `ProfilingNotEnabled` with the line that enables it.
#![cfg(feature = "heap")]

use prodbg::probes::{heap, memory};

#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[test]
fn profiling_not_enabled_is_reported_with_the_fix() {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() || std::env::var_os("MALLOC_CONF").is_some()
    {
        eprintln!("skipped: a MALLOC_CONF variable is set in the environment");
        return;
    }
    let stats = memory::jemalloc_stats().unwrap();
    assert!(stats.allocated_bytes > 0);
    assert!(!stats.profiling.opt_prof && !stats.profiling.active);

    assert_eq!(
        heap::set_active(true),
        Err(heap::HeapError::ProfilingNotEnabled)
    );
    assert_eq!(heap::set_active(false), Ok(()));
    assert_eq!(
        heap::snapshot().err(),
        Some(heap::HeapError::ProfilingNotEnabled)
    );

    let msg = heap::HeapError::ProfilingNotEnabled.to_string();
    assert!(
        msg.contains("_RJEM_MALLOC_CONF=prof:true,prof_active:false,lg_prof_sample:19"),
        "{msg}"
    );
    assert!(
        msg.contains(r#"#[export_name = "_rjem_malloc_conf"]"#),
        "{msg}"
    );
}
