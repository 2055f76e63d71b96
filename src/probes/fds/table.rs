//! The process's open file descriptors as Linux's `/proc/self/fd` lists them, counted by what
//! each one is, and `RLIMIT_NOFILE` as `/proc/self/limits` states it. Knows no HTTP.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::FileType;
use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;

use serde::Serialize;

/// Entries of `/proc/self/fd` read at most: the kernel's default `fs.nr_open`, the highest
/// `RLIMIT_NOFILE` a process gets without raising it system-wide.
pub(super) const MAX_ENTRIES: u64 = 1 << 20;

/// The `/debug/fds` report: the open descriptors by kind, and how close they are to the limit.
#[derive(Debug, Clone, Serialize)]
pub(super) struct FdReport {
    /// Descriptors open now (those read, when `truncated`). The directory this read holds
    /// open on `/proc/self/fd` is one of them (a `directory`).
    pub open: u64,
    /// Open descriptors per kind: `file`, `directory`, `device`, `fifo` (a named pipe),
    /// `socket`, `pipe`, the name of an anonymous inode (`eventfd`, `eventpoll`, `timerfd`,
    /// `signalfd`, `inotify`, `pidfd`, `io_uring`, …), the kind of another pseudo-file
    /// (`net` for a namespace), or `other`.
    pub by_kind: BTreeMap<String, u64>,
    /// Regular files among them that were deleted but are still open: their disk space is
    /// not given back until they are closed.
    pub deleted_files: u64,
    /// The soft `RLIMIT_NOFILE` ("Max open files" of `/proc/self/limits`), in descriptors:
    /// opening more fails with `EMFILE`. `null` when unreadable or `unlimited`.
    pub soft_limit: Option<u64>,
    /// The hard `RLIMIT_NOFILE`, in descriptors: how far the process may raise the soft one.
    /// `null` when unreadable or `unlimited`.
    pub hard_limit: Option<u64>,
    /// `open / soft_limit`, 0.0–1.0 (above 1.0 if the limit was lowered after they were
    /// opened); `null` when the soft limit is.
    pub used_ratio: Option<f64>,
    /// Whether reading stopped at `max_entries`; `open` and `by_kind` then count only the
    /// descriptors read.
    pub truncated: bool,
    /// The most entries one read looks at.
    pub max_entries: u64,
    /// Descriptors closed between listing the directory and reading their link; not counted.
    pub closed_while_reading: u64,
}

impl FdReport {
    /// A short human-readable form: the limit line, then one line per kind.
    pub(super) fn to_text(&self) -> String {
        let limit = |l: Option<u64>| l.map_or_else(|| "unknown".to_string(), |l| l.to_string());
        let mut out = format!(
            "open file descriptors: {}{} (soft limit {}, hard limit {}",
            self.open,
            if self.truncated { "+" } else { "" },
            limit(self.soft_limit),
            limit(self.hard_limit),
        );
        if let Some(r) = self.used_ratio {
            let _ = write!(out, ", {:.1} % used", r * 100.0);
        }
        out.push_str(")\n");
        let mut kinds: Vec<_> = self.by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (kind, n) in kinds {
            let _ = writeln!(out, "{n:>8}  {kind}");
        }
        if self.deleted_files > 0 {
            let _ = writeln!(
                out,
                "{} deleted files still open (their disk space is not freed)",
                self.deleted_files
            );
        }
        if self.truncated {
            let _ = writeln!(
                out,
                "truncated: only the first {} entries were read",
                self.max_entries
            );
        }
        out
    }
}

/// What an fd's link in `/proc/self/fd` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target<'a> {
    /// `socket:[inode]`.
    Socket,
    /// `pipe:[inode]`.
    Pipe,
    /// `anon_inode:[eventfd]`, `anon_inode:inotify`, …: the name.
    Anon(&'a str),
    /// A path; `deleted` when the kernel appended ` (deleted)`.
    Path { path: &'a str, deleted: bool },
    /// Another pseudo-file, `net:[inode]` …: its kind (empty when the link has no `kind:[…]`
    /// shape).
    Other(&'a str),
}

/// Parses the text `readlink` gives for an entry of `/proc/self/fd`.
pub(super) fn parse_target(link: &str) -> Target<'_> {
    if link.starts_with('/') {
        return match link.strip_suffix(" (deleted)") {
            Some(path) => Target::Path {
                path,
                deleted: true,
            },
            None => Target::Path {
                path: link,
                deleted: false,
            },
        };
    }
    if let Some(name) = link.strip_prefix("anon_inode:") {
        let name = name.strip_prefix('[').unwrap_or(name);
        return Target::Anon(name.strip_suffix(']').unwrap_or(name));
    }
    match link.split_once(":[") {
        Some(("socket", _)) => Target::Socket,
        Some(("pipe", _)) => Target::Pipe,
        Some((kind, _)) => Target::Other(kind),
        None => Target::Other(""),
    }
}

/// The kind a target is counted under; a path's kind comes from its file type (`None`: unknown,
/// counted as a `file`, or a `device` under `/dev/`).
pub(super) fn kind(target: Target<'_>, file_type: Option<FileType>) -> String {
    match target {
        Target::Socket => "socket".into(),
        Target::Pipe => "pipe".into(),
        Target::Anon(name) | Target::Other(name) => label(name),
        Target::Path { path, .. } => match file_type {
            Some(t) if t.is_dir() => "directory".into(),
            Some(t) if t.is_char_device() || t.is_block_device() => "device".into(),
            Some(t) if t.is_fifo() => "fifo".into(),
            Some(_) => "file".into(),
            None if path.starts_with("/dev/") => "device".into(),
            None => "file".into(),
        },
    }
}

/// A kernel-given name as a kind: short lowercase words only (it is a Prometheus label
/// value), else `other`.
fn label(name: &str) -> String {
    let fits = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if fits { name } else { "other" }.to_string()
}

/// `RLIMIT_NOFILE`: `None` for `unlimited` or unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Nofile {
    /// The soft limit.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// The "Max open files" line of a `/proc/<pid>/limits` text.
pub(super) fn parse_nofile(limits: &str) -> Nofile {
    let Some(rest) = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
    else {
        return Nofile::default();
    };
    let mut cols = rest.split_whitespace().map(|v| v.parse::<u64>().ok());
    Nofile {
        soft: cols.next().flatten(),
        hard: cols.next().flatten(),
    }
}

/// `RLIMIT_NOFILE` of this process.
pub(super) fn nofile() -> Nofile {
    std::fs::read_to_string("/proc/self/limits")
        .map(|t| parse_nofile(&t))
        .unwrap_or_default()
}

fn ratio(open: u64, limit: Option<u64>) -> Option<f64> {
    limit.filter(|l| *l > 0).map(|l| open as f64 / l as f64)
}

/// Reads `/proc/self/fd`: at most `max_entries` entries, each readlink'd (and a path stat'ed
/// through its link, so a deleted file still has its type). An fd closed meanwhile is skipped.
pub(super) fn read(max_entries: u64) -> std::io::Result<FdReport> {
    let dir = std::fs::read_dir("/proc/self/fd")?;
    let mut r = FdReport {
        open: 0,
        by_kind: BTreeMap::new(),
        deleted_files: 0,
        soft_limit: None,
        hard_limit: None,
        used_ratio: None,
        truncated: false,
        max_entries,
        closed_while_reading: 0,
    };
    let mut seen = 0;
    for entry in dir {
        let Ok(entry) = entry else { continue };
        if seen == max_entries {
            r.truncated = true;
            break;
        }
        seen += 1;
        let path = entry.path();
        let link = match std::fs::read_link(&path) {
            Ok(link) => link,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                r.closed_while_reading += 1;
                continue;
            }
            Err(_) => continue,
        };
        let link = link.to_string_lossy();
        let target = parse_target(&link);
        let file_type = match target {
            Target::Path { .. } => match std::fs::metadata(&path) {
                Ok(m) => Some(m.file_type()),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    r.closed_while_reading += 1;
                    continue;
                }
                Err(_) => None,
            },
            _ => None,
        };
        let kind = kind(target, file_type);
        if matches!(target, Target::Path { deleted: true, .. }) && kind == "file" {
            r.deleted_files += 1;
        }
        *r.by_kind.entry(kind).or_insert(0) += 1;
        r.open += 1;
    }
    let limit = nofile();
    r.soft_limit = limit.soft;
    r.hard_limit = limit.hard;
    r.used_ratio = ratio(r.open, limit.soft);
    Ok(r)
}

/// Open descriptors (at most `max_entries`, `None` if `/proc/self/fd` is unreadable) and the
/// share of the soft limit they use: cheap, no readlink, for the console.
pub(super) fn used(max_entries: u64) -> (Option<u64>, Nofile, Option<f64>) {
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.take(max_entries as usize).count() as u64);
    let limit = nofile();
    (open, limit, open.and_then(|o| ratio(o, limit.soft)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_link() {
        let cases = [
            ("socket:[123456]", Target::Socket),
            ("pipe:[98765]", Target::Pipe),
            ("anon_inode:[eventfd]", Target::Anon("eventfd")),
            ("anon_inode:[eventpoll]", Target::Anon("eventpoll")),
            ("anon_inode:inotify", Target::Anon("inotify")),
            ("anon_inode:[io_uring]", Target::Anon("io_uring")),
            ("net:[4026531840]", Target::Other("net")),
            ("strange", Target::Other("")),
            (
                "/var/log/app.log",
                Target::Path {
                    path: "/var/log/app.log",
                    deleted: false,
                },
            ),
            (
                "/tmp/x (deleted)",
                Target::Path {
                    path: "/tmp/x",
                    deleted: true,
                },
            ),
            (
                "/dev/null",
                Target::Path {
                    path: "/dev/null",
                    deleted: false,
                },
            ),
        ];
        for (link, want) in cases {
            assert_eq!(parse_target(link), want, "{link}");
        }
        assert_eq!(kind(parse_target("socket:[1]"), None), "socket");
        assert_eq!(kind(parse_target("anon_inode:[eventfd]"), None), "eventfd");
        assert_eq!(kind(parse_target("/dev/pts/0"), None), "device");
        assert_eq!(kind(parse_target("/srv/data"), None), "file");
        assert_eq!(kind(parse_target("anon_inode:[Weird Name]"), None), "other");
        assert_eq!(kind(parse_target("strange"), None), "other");
    }

    #[test]
    fn a_path_is_counted_by_its_file_type() {
        let t = |p: &str| Some(std::fs::metadata(p).unwrap().file_type());
        let path = parse_target("/whatever");
        assert_eq!(kind(path, t("/")), "directory");
        assert_eq!(kind(path, t("/dev/null")), "device");
        assert_eq!(kind(path, t("/proc/self/limits")), "file");
    }

    #[test]
    fn parses_proc_limits() {
        let text = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
";
        assert_eq!(
            parse_nofile(text),
            Nofile {
                soft: Some(1024),
                hard: Some(524288)
            }
        );
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile(unlimited), Nofile::default());
        assert_eq!(parse_nofile("garbage"), Nofile::default());
    }

    #[test]
    fn reads_this_process_and_stops_at_the_cap() {
        let (r1, _w1) = std::io::pipe().unwrap();
        let dir = std::fs::File::open("/").unwrap();
        let r = read(MAX_ENTRIES).unwrap();
        assert!(!r.truncated);
        assert!(r.by_kind["pipe"] >= 2, "{r:?}");
        assert!(
            r.by_kind["directory"] >= 2,
            "this read's own and `/`: {r:?}"
        );
        assert_eq!(r.open, r.by_kind.values().sum::<u64>());
        assert!(
            r.soft_limit.is_some() && r.used_ratio.unwrap() > 0.0,
            "{r:?}"
        );
        assert!(r.to_text().contains("pipe"));
        let small = read(2).unwrap();
        assert!(small.truncated && small.open <= 2, "{small:?}");
        assert!(small.to_text().contains("truncated"));
        let (open, limit, used) = used(MAX_ENTRIES);
        assert!(open.unwrap() >= 4 && limit.soft.is_some() && used.is_some());
        drop((r1, dir));
    }
}
