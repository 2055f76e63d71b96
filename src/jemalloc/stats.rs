//! jemalloc's view of the heap (`stats.*`), for the memory probe and `/metrics`.

use super::{ensure_jemalloc, profiling_state, HeapError, HeapProfilingState};
use serde::Serialize;
use tikv_jemalloc_ctl::raw;

/// jemalloc's view of the heap, read after advancing jemalloc's stats epoch.
///
/// From smallest to largest, usually: `allocated` ≤ `active` ≤ `resident` ≤ `mapped`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct JemallocStats {
    /// Bytes the application has allocated and not yet freed (`stats.allocated`).
    pub allocated_bytes: u64,
    /// Bytes in pages that hold at least one live allocation (`stats.active`).
    pub active_bytes: u64,
    /// Bytes of physical memory jemalloc holds: active pages, dirty pages not yet returned
    /// to the OS, and metadata (`stats.resident`).
    pub resident_bytes: u64,
    /// Bytes in chunks jemalloc has mapped and is using (`stats.mapped`).
    pub mapped_bytes: u64,
    /// Bytes of virtual memory kept mapped but returned to the OS, for reuse; costs no RSS
    /// (`stats.retained`).
    pub retained_bytes: u64,
    /// Bytes jemalloc uses for its own bookkeeping (`stats.metadata`).
    pub metadata_bytes: u64,
    /// `(resident - allocated) / resident`, 0.0–1.0: the share of jemalloc's physical memory
    /// that does not hold live application data (page fragmentation, unpurged dirty pages,
    /// metadata). 0.0 when `resident` is 0.
    pub fragmentation_ratio: f64,
    /// Number of arenas (`arenas.narenas`).
    pub arenas: u32,
    /// Heap-profiling state (compiled in and enabled, sampling on, sample interval).
    pub profiling: HeapProfilingState,
}

/// Reads jemalloc's stats, after advancing the epoch so that they are current.
///
/// Errors with [`HeapError::NotJemalloc`] when jemalloc is not the global allocator.
pub(crate) fn jemalloc_stats() -> Result<JemallocStats, HeapError> {
    ensure_jemalloc()?;
    tikv_jemalloc_ctl::epoch::advance().map_err(|e| HeapError::Ctl(format!("epoch: {e}")))?;
    let size = |name: &'static str| -> Result<u64, HeapError> {
        // SAFETY: every name passed below is a documented `size_t` stat, NUL-terminated.
        let v: usize = unsafe { raw::read(name.as_bytes()) }
            .map_err(|e| HeapError::Ctl(format!("{}: {e}", name.trim_end_matches('\0'))))?;
        Ok(v as u64)
    };
    let allocated = size("stats.allocated\0")?;
    let resident = size("stats.resident\0")?;
    // SAFETY: `arenas.narenas` is documented as an `unsigned`.
    let arenas: u32 = unsafe { raw::read(b"arenas.narenas\0") }
        .map_err(|e| HeapError::Ctl(format!("arenas.narenas: {e}")))?;
    Ok(JemallocStats {
        allocated_bytes: allocated,
        active_bytes: size("stats.active\0")?,
        resident_bytes: resident,
        mapped_bytes: size("stats.mapped\0")?,
        retained_bytes: size("stats.retained\0")?,
        metadata_bytes: size("stats.metadata\0")?,
        fragmentation_ratio: if resident == 0 {
            0.0
        } else {
            resident.saturating_sub(allocated) as f64 / resident as f64
        },
        arenas,
        profiling: profiling_state()?,
    })
}
