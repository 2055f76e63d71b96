//! What the process may use, as its cgroup (v2) says: CPUs (`cpu.max`) and memory
//! (`memory.max`), for the trigger rules' defaults.

use std::path::PathBuf;

/// The CPUs the process may use: its cgroup's CPU quota (`cpu.max`) if one is set, else the
/// CPUs it may run on.
pub(crate) fn cores() -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    let quota = read("cpu.max").and_then(|s| parse_cpu_max(&s));
    quota.map_or(cpus, |q| q.min(cpus))
}

/// The cgroup's memory limit in bytes (`memory.max`), if there is one.
pub(crate) fn memory_limit() -> Option<u64> {
    read("memory.max").and_then(|s| s.trim().parse().ok())
}

fn read(file: &str) -> Option<String> {
    std::fs::read_to_string(dir()?.join(file)).ok()
}

/// The process's cgroup v2 directory (`0::/path` in `/proc/self/cgroup`).
fn dir() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/')))
}

/// `cpu.max`'s quota in CPUs: `"200000 100000"` → 2.0; `"max 100000"` → none.
fn parse_cpu_max(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_is_a_quota_or_none() {
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2.0));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert!(cores() >= 0.01);
    }
}
