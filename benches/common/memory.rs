//! This process's memory, from `/proc/self/status`.

/// One reading of `/proc/self/status`.
pub struct Status(String);

impl Status {
    /// Reads `/proc/self/status` (empty if it cannot be read: every field is then missing).
    pub fn read() -> Status {
        Status(std::fs::read_to_string("/proc/self/status").unwrap_or_default())
    }

    /// The value of `field` (with its colon, as in `"VmRSS:"`) in kB.
    pub fn kb(&self, field: &str) -> Option<u64> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// Resident set size (VmRSS) in bytes.
pub fn rss_bytes() -> u64 {
    Status::read()
        .kb("VmRSS:")
        .expect("VmRSS in /proc/self/status")
        * 1024
}

/// Resets the peak RSS (VmHWM) to the current RSS.
pub fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("write /proc/self/clear_refs");
}
