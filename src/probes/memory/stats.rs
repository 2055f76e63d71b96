//! Memory: what the kernel charges the process for, and (feature `heap`) what jemalloc holds.
//!
//! [`process_memory`] reads `/proc/self/status` and works under any allocator. With the `heap`
//! feature, [`jemalloc_stats`] reads jemalloc's own counters; the two together tell "my data is
//! growing" (`allocated` grows) apart from "the allocator is holding on to memory" (`resident`
//! grows, `allocated` does not) and from memory outside the heap (RSS grows, `resident` does not).

use serde::Serialize;

/// Memory of the whole process as the kernel sees it (`/proc/self/status`).
///
/// Every field is `None` where the kernel does not report it (anything but Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(super) struct ProcessMemory {
    /// Resident set size, bytes: physical memory in use now (`VmRSS`).
    pub rss_bytes: Option<u64>,
    /// Resident anonymous memory, bytes: heap, stacks, private mappings (`RssAnon`).
    pub rss_anon_bytes: Option<u64>,
    /// Resident file-backed memory, bytes: the binary, libraries, mapped files; the kernel can
    /// drop these pages and read them back (`RssFile`).
    pub rss_file_bytes: Option<u64>,
    /// Peak resident set size since start, bytes (`VmHWM`).
    pub rss_peak_bytes: Option<u64>,
    /// Virtual memory size, bytes: everything mapped, resident or not (`VmSize`).
    pub vm_bytes: Option<u64>,
    /// Peak virtual memory size since start, bytes (`VmPeak`).
    pub vm_peak_bytes: Option<u64>,
}

/// Reads the process's memory from `/proc/self/status`. Never fails: unknown fields are `None`.
pub(super) fn process_memory() -> ProcessMemory {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| parse_status(&s))
        .unwrap_or_default()
}

fn parse_status(status: &str) -> ProcessMemory {
    let mut mem = ProcessMemory::default();
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let field = match key {
            "VmRSS" => &mut mem.rss_bytes,
            "RssAnon" => &mut mem.rss_anon_bytes,
            "RssFile" => &mut mem.rss_file_bytes,
            "VmHWM" => &mut mem.rss_peak_bytes,
            "VmSize" => &mut mem.vm_bytes,
            "VmPeak" => &mut mem.vm_peak_bytes,
            _ => continue,
        };
        // "VmRSS:	   12345 kB"
        *field = value
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024);
    }
    mem
}

#[cfg(feature = "heap")]
pub(super) use jemalloc::{jemalloc_stats, JemallocStats};

#[cfg(feature = "heap")]
mod jemalloc {
    use super::Serialize;
    use crate::probes::heap::core as heap;
    use crate::probes::heap::core::{HeapError, HeapProfilingState};
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
        heap::ensure_jemalloc()?;
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
            profiling: heap::profiling_state()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let s =
            "Name:\tx\nVmPeak:\t   200 kB\nVmSize:\t   100 kB\nVmHWM:\t  50 kB\nVmRSS:\t  40 kB\nRssAnon:\t  30 kB\nRssFile:\t  10 kB\n";
        let m = parse_status(s);
        assert_eq!(m.rss_bytes, Some(40 * 1024));
        assert_eq!(m.rss_peak_bytes, Some(50 * 1024));
        assert_eq!(m.rss_anon_bytes, Some(30 * 1024));
        assert_eq!(m.rss_file_bytes, Some(10 * 1024));
        assert_eq!(m.vm_bytes, Some(100 * 1024));
        assert_eq!(m.vm_peak_bytes, Some(200 * 1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_own_memory() {
        let m = process_memory();
        assert!(m.rss_bytes.unwrap() > 0);
        assert!(m.vm_bytes.unwrap() >= m.rss_bytes.unwrap());
    }
}
