//! The process as Linux's `/proc` sees it: CPU time, memory, threads, file descriptors, start
//! time, command line and environment (with secrets redacted).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::security::redact::{redact_args, redact_env};

/// Numbers about the whole process, cheap enough to read on every scrape.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct ProcessStats {
    /// Process id.
    pub pid: u32,
    /// User + system CPU time consumed, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: u64,
    /// Number of OS threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Reads [`ProcessStats`] from `/proc/self`. Fields that cannot be read are 0.
pub(super) fn stats() -> ProcessStats {
    let pid = std::process::id();
    let mut s = ProcessStats {
        pid,
        ..ProcessStats::default()
    };
    let tick = clock_ticks_per_second();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name, which is in parentheses and may hold spaces.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // rest[0] is field 3 (state): utime=14, stime=15, num_threads=20, starttime=22, vsize=23.
            s.cpu_seconds = (num(11) + num(12)) as f64 / tick;
            s.threads = num(17);
            s.virtual_bytes = num(20);
            s.resident_bytes = num(21) * page_size();
            if let Some(boot) = boot_time_seconds() {
                s.start_time_seconds = boot + num(19) as f64 / tick;
            }
        }
    }
    s.open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    s.max_fds = max_fds();
    s
}

/// User + system CPU time the whole process has consumed, in seconds, from
/// `CLOCK_PROCESS_CPUTIME_ID` (one syscall, nanosecond resolution); `None` if unreadable.
pub(super) fn cpu_seconds() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// A fuller picture for `/debug/process`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ProcessInfo {
    /// The numbers of [`stats`].
    #[serde(flatten)]
    pub stats: ProcessStats,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
    /// The command line, with values of secret-looking options redacted.
    pub cmdline: Vec<String>,
    /// The environment, sorted, with secret-looking keys and values redacted.
    pub env: Vec<(String, String)>,
    /// Resource limits from `/proc/self/limits`: name, soft, hard, units.
    pub limits: Vec<[String; 4]>,
}

/// Seconds since the process started, from [`stats`].
pub(super) fn uptime_seconds(stats: &ProcessStats) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    (now - stats.start_time_seconds).max(0.0)
}

/// The command line from `/proc/self/cmdline`, redacted as a whole (a secret may sit in the
/// argument after its option, `-p hunter2`) as `/debug/process` shows it.
pub(super) fn cmdline() -> Vec<String> {
    let args: Vec<String> = std::fs::read("/proc/self/cmdline")
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    redact_args(&args)
}

/// Reads [`ProcessInfo`].
pub(super) fn info() -> ProcessInfo {
    let stats = stats();
    let cmdline = cmdline();
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            let k = k.to_string_lossy().into_owned();
            let v = redact_env(&k, &v.to_string_lossy());
            (k, v)
        })
        .collect();
    env.sort();
    ProcessInfo {
        uptime_seconds: uptime_seconds(&stats),
        stats,
        cmdline,
        env,
        limits: limits(),
    }
}

/// One OS thread of the process, from `/proc/self/task/<tid>`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ThreadEntry {
    /// Kernel thread id.
    pub tid: u32,
    /// `comm`: the thread's name, at most 15 bytes (what `PR_SET_NAME` set).
    pub name: String,
    /// The scheduler state letter from `stat`: `R` running, `S` sleeping, `D` disk wait, …
    pub state: String,
}

/// Every thread of the process, by tid. Threads that end while being read are left out.
pub(super) fn threads() -> Vec<ThreadEntry> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out: Vec<ThreadEntry> = dir
        .flatten()
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            Some(ThreadEntry {
                tid,
                name: name.trim_end_matches('\n').to_string(),
                state,
            })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

fn limits() -> Vec<[String; 4]> {
    let Ok(text) = std::fs::read_to_string("/proc/self/limits") else {
        return Vec::new();
    };
    // Columns are aligned: name (to col 26), soft (to 47), hard (to 68), units.
    text.lines()
        .skip(1)
        .map(|l| {
            let col =
                |a: usize, b: usize| l.get(a..b.min(l.len())).unwrap_or("").trim().to_string();
            [col(0, 26), col(26, 47), col(47, 68), col(68, l.len())]
        })
        .collect()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

fn boot_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

fn max_fds() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_go_up() {
        let a = cpu_seconds().unwrap();
        assert!(a > 0.0);
        assert!(cpu_seconds().unwrap() >= a);
    }

    #[test]
    fn reads_this_process() {
        let s = stats();
        assert_eq!(s.pid, std::process::id());
        assert!(s.resident_bytes > 1024 * 1024);
        assert!(s.threads >= 1 && s.open_fds >= 3 && s.max_fds >= s.open_fds);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(s.start_time_seconds > now - 3600.0 && s.start_time_seconds <= now + 1.0);
        let i = info();
        assert!(!i.cmdline.is_empty());
        assert!(
            i.limits.iter().any(|l| l[0] == "Max open files"),
            "{:?}",
            i.limits
        );
        std::thread::Builder::new()
            .name("prodbg-tc-test".into())
            .spawn(|| {
                let t = threads();
                assert!(t.iter().any(|t| t.tid == std::process::id()), "{t:?}");
                assert!(
                    t.iter()
                        .any(|t| t.name == "prodbg-tc-test" && t.state == "R"),
                    "{t:?}"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
