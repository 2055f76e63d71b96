//! Memory: what the kernel charges the process for, and (feature `heap`) what jemalloc holds.
//!
//! [`process_memory`] reads `/proc/self/status` and works under any allocator. With the `heap`
//! feature, `crate::jemalloc::jemalloc_stats` reads jemalloc's own counters; the two together tell "my data is
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
