//! jemalloc heap profiles: which call stacks hold the memory that is live now.
//!
//! jemalloc samples about one allocation per `2^lg_prof_sample` bytes allocated (512 KiB at
//! the recommended 19) and remembers its stack until it is freed. [`snapshot`] asks jemalloc to
//! dump what is live, parses it and removes the file; [`growth`] subtracts two snapshots to show
//! what was allocated and not freed in between (a leak, a growing cache). A [`HeapDump`]
//! becomes the one stack [`Profile`] (gzipped `profile.proto` for `go tool pprof`, Parca or
//! Pyroscope, folded stacks, an SVG flamegraph). Sampling costs nothing until `crate::jemalloc::set_active` turns it on.
//!
//! The host's jemalloc set-up is in `crate::jemalloc`.
//!
//! # Reading the profiles
//!
//! Stacks are symbolized in-process (inlined frames included), and the allocator's frames and
//! the standard library's allocation plumbing (`Vec::with_capacity`, `format!`,
//! `HashMap::insert`: `alloc`, `core`, `std`, `hashbrown`) are cut off the top, so pprof's
//! "flat" names the first function outside them: `go tool pprof -top` lists the code that holds
//! the memory. Byte and object counts are estimates for the whole heap, scaled up from the
//! samples as `jeprof` does.
//!
//! # Cost
//!
//! Measured with `benches/heap_overhead.rs` (2 vCPU): sampling active at `lg_prof_sample:19`
//! kept 0.985 of the inactive throughput of a JSON-handling, allocation-heavy workload
//! (2.4 KB allocated per 1.4 µs unit), and 0.61 in a bare 2 KiB malloc/free loop. The idle
//! state (`prof:true`, inactive) costs what a profiling build of jemalloc costs on each
//! allocation; on the same workload it still ran at 1.006 of glibc's malloc (1.56 in the bare
//! loop). The first symbolization loads the binary's debug info and keeps it cached:
//! +60 MiB RSS (44 MiB anonymous) and ~100 ms for a 20 MB binary with `debug = 1`; later
//! profiles add nothing and are fast.
//!
//! A growth profile is two [`snapshot`]s [`growth`]-diffed: what was allocated in the window
//! and not freed.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tikv_jemalloc_ctl::raw;

use crate::jemalloc::{ctl, ensure_jemalloc, opt_prof, HeapError};
use crate::stack::offline::PprofMapping;
use crate::stack::profile::{Leaf, Profile, Sample, ValueType};
use crate::stack::symbolize::{self as symbols, Symbols as SymbolTable};
use crate::stack::Frame;

/// Takes a heap profile of the allocations live now (those sampled while sampling was active:
/// if it never was, the profile is empty — check `crate::jemalloc::profiling_state`).
///
/// jemalloc dumps into a fresh private directory (mode 0700) named
/// `$TMPDIR/prodbg-heap-<pid>-<random>`, which is removed before this returns, also on error.
/// Symbolization happens later, when the profile is rendered.
pub(crate) fn snapshot() -> Result<HeapDump, HeapError> {
    ensure_jemalloc()?;
    if !opt_prof()? {
        return Err(HeapError::ProfilingNotEnabled);
    }
    let dir = TempDir::new().map_err(|e| HeapError::Dump(format!("creating temp dir: {e}")))?;
    let file = dir.0.join("heap.prof");
    let c_path = CString::new(file.as_os_str().as_encoded_bytes())
        .map_err(|_| HeapError::Dump(format!("temp path {} contains NUL", file.display())))?;
    // SAFETY: `prof.dump` is documented as writable with a `const char *` path; `c_path` lives
    // until the call returns.
    unsafe { raw::write(b"prof.dump\0", c_path.as_ptr()) }.map_err(ctl("prof.dump"))?;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| HeapError::Dump(format!("reading {}: {e}", file.display())))?;
    drop(dir);
    parse_dump(&text, SystemTime::now())
}

/// What was allocated between `before` and `after` and is still live at `after`: for each
/// stack, the bytes and objects by which `after` exceeds `before` (stacks that shrank are left
/// out). Both must come from the same process, with sampling active in between.
pub(crate) fn growth(before: &HeapDump, after: &HeapDump) -> HeapDump {
    let old: HashMap<&[u64], &HeapStack> = before
        .stacks
        .iter()
        .map(|s| (s.addrs.as_slice(), s))
        .collect();
    let stacks = after
        .stacks
        .iter()
        .filter_map(|s| {
            let (b, o) = old
                .get(s.addrs.as_slice())
                .map_or((0, 0), |p| (p.bytes, p.objects));
            (s.bytes > b).then(|| HeapStack {
                addrs: s.addrs.clone(),
                bytes: s.bytes - b,
                objects: s.objects.saturating_sub(o),
            })
        })
        .collect();
    HeapDump {
        stacks,
        mappings: after.mappings.clone(),
        sample_interval_bytes: after.sample_interval_bytes,
        time: after.time,
        duration: after.time.duration_since(before.time).ok(),
    }
}

/// Live heap by allocation stack, as estimated from jemalloc's samples.
///
/// Byte and object counts are unbiased estimates of the whole heap (jemalloc's samples scaled
/// up the way `jeprof` does), not the sampled amounts.
#[derive(Debug, Clone)]
pub(crate) struct HeapDump {
    stacks: Vec<HeapStack>,
    mappings: Vec<Mapping>,
    sample_interval_bytes: u64,
    time: SystemTime,
    duration: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
struct HeapStack {
    /// Return addresses, innermost (the allocator) first.
    addrs: Vec<u64>,
    bytes: u64,
    objects: u64,
}

/// An executable file mapping (`/proc/self/maps`), for pprof's `Mapping` table.
#[derive(Debug, Clone, PartialEq)]
struct Mapping {
    start: u64,
    limit: u64,
    offset: u64,
    path: String,
}

impl HeapDump {
    /// The [`Profile`] of this dump: one sample per allocation stack with its estimated
    /// objects (`inuse_objects/count`) and bytes (`inuse_space/bytes`, the default and the
    /// flamegraph's value), symbolized in-process (function names, files, lines, inlined
    /// frames), so `go tool pprof` needs no binary. Allocator and std allocation frames are
    /// cut off the top (see [`Symbols::trimmed`]): the leaf — pprof's "flat" — is the code
    /// that asked for memory.
    pub(crate) fn profile(&self) -> Profile {
        let syms = Symbols::resolve(self);
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let samples = self
            .stacks
            .iter()
            .map(|s| {
                let mut frames = Vec::new();
                for (pc, skip) in syms.trimmed(&s.addrs) {
                    // A return address again: the profile takes one off every frame.
                    let address = pc + 1;
                    match syms.frames(pc).as_slice() {
                        [] => frames.push(Frame::unknown(address)),
                        named => frames.extend(named.iter().skip(skip).map(|&(_, f)| Frame {
                            address,
                            ..f.clone()
                        })),
                    }
                }
                Sample {
                    root: None,
                    frames,
                    labels: Vec::new(),
                    values: vec![to_i64(s.objects), to_i64(s.bytes)],
                }
            })
            .collect();
        let duration = self.duration.unwrap_or_default();
        let what = match self.duration {
            Some(d) => format!("heap growth over {} s", d.as_secs()),
            None => "heap in use".to_string(),
        };
        Profile {
            kind: "heap",
            value_types: VALUE_TYPES,
            default_value: "inuse_space",
            flame_value: (1, "bytes"),
            period: (
                ValueType {
                    kind: "space",
                    unit: "bytes",
                },
                to_i64(self.sample_interval_bytes),
            ),
            leaf: Leaf::Returns,
            start_time: self.time.checked_sub(duration).unwrap_or(self.time),
            duration,
            symbolized: true,
            mappings: self
                .mappings
                .iter()
                .map(|m| PprofMapping {
                    memory_start: m.start,
                    memory_limit: m.limit,
                    file_offset: m.offset,
                    filename: m.path.clone(),
                    build_id: None,
                    is_main: false,
                })
                .collect(),
            samples,
            describe: format!(
                "{what}, {} stacks sampled every {} KiB",
                self.stacks.len(),
                self.sample_interval_bytes / 1024
            ),
            figures: vec![(
                "x-prodbg-sample-interval-bytes",
                self.sample_interval_bytes.to_string(),
            )],
            warnings: Vec::new(),
        }
    }
}

/// What a heap profile's samples carry.
const VALUE_TYPES: &[ValueType] = &[
    ValueType {
        kind: "inuse_objects",
        unit: "count",
    },
    ValueType {
        kind: "inuse_space",
        unit: "bytes",
    },
];

/// Symbols of every address of a profile. Addresses are return addresses minus one, so they
/// point into the call instruction.
struct Symbols(SymbolTable);

impl Symbols {
    fn resolve(profile: &HeapDump) -> Self {
        Symbols(SymbolTable::resolve_here(profile.stacks.iter().flat_map(
            |s| {
                s.addrs
                    .iter()
                    .map(|&addr| symbols::pc(addr.saturating_sub(1)))
            },
        )))
    }

    /// The functions at `pc` that have a name, with that name, innermost (inlined) first.
    fn frames(&self, pc: u64) -> Vec<(&str, &Frame)> {
        self.0
            .get(symbols::pc(pc))
            .iter()
            .filter_map(|f| Some((f.function.as_deref()?, f)))
            .collect()
    }

    /// The stack as `(pc, inlined frames to skip)`, leaf first, with the allocator's frames and
    /// the standard library's allocation plumbing (`Vec::push`, `format!`, `HashMap::insert`…)
    /// cut off the top, so that the leaf — pprof's "flat" — is the code that asked for memory.
    /// A stack made only of such frames loses only the allocator's.
    fn trimmed(&self, addrs: &[u64]) -> Vec<(u64, usize)> {
        let pcs: Vec<u64> = addrs.iter().map(|a| a.saturating_sub(1)).collect();
        let cut = |strip: &dyn Fn(&str) -> bool| {
            pcs.iter().enumerate().find_map(|(i, &pc)| {
                let frames = self.frames(pc);
                // An unknown frame stops the cutting: it may be the caller.
                let keep = match frames.as_slice() {
                    [] => Some(0),
                    _ => frames.iter().position(|(name, _)| !strip(name)),
                };
                keep.map(|skip| (i, skip))
            })
        };
        let (i, skip) = cut(&|n| is_allocator_frame(n) || is_std_frame(n))
            .or_else(|| cut(&is_allocator_frame))
            .unwrap_or((0, 0));
        pcs.iter()
            .enumerate()
            .skip(i)
            .map(|(j, &pc)| (pc, if j == i { skip } else { 0 }))
            .collect()
    }
}

/// jemalloc's sampling and allocation path, libgcc's unwinder and Rust's allocator shims.
fn is_allocator_frame(name: &str) -> bool {
    const C: &[&str] = &[
        "prof_",
        "je_",
        "_rjem_",
        "_Unwind_",
        "imalloc",
        "ialloc",
        "iralloc",
        "irealloc",
        "do_rallocx",
        "malloc",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "__rust_",
        "__rdl_",
        "__rg_",
    ];
    const RUST: &[&str] = &[
        "__rustc::",
        "alloc::alloc::",
        "<alloc::alloc::Global as ",
        "std::alloc::",
        "<std::alloc::System as ",
        "tikv_jemallocator::",
        "<tikv_jemallocator::Jemalloc as ",
    ];
    let prefixes = if name.contains("::") { RUST } else { C };
    prefixes.iter().any(|p| name.starts_with(p))
}

/// Code of Rust's standard library (`alloc`, `core`, `std`, and `hashbrown` behind `HashMap`),
/// including std trait impls for primitives (`<str as alloc::string::ToString>::to_string`).
fn is_std_frame(name: &str) -> bool {
    let is_std = |path: &str| {
        ["alloc::", "core::", "std::", "hashbrown::"]
            .iter()
            .any(|p| path.starts_with(p))
    };
    let Some(qualified) = name.strip_prefix('<') else {
        return is_std(name);
    };
    // "<Self as Trait>::f" or "<Self>::f": the impl is std's if Self is a std type, or a
    // primitive (no path) implementing a std trait.
    let (self_ty, rest) = qualified.split_once(" as ").unwrap_or((qualified, ""));
    is_std(self_ty) || (!self_ty.contains("::") && is_std(rest))
}

/// Parses jemalloc's `heap_v2` dump (jemalloc 5.3).
fn parse_dump(text: &str, time: SystemTime) -> Result<HeapDump, HeapError> {
    let bad = |what: &str, line: &str| HeapError::Parse(format!("{what}: {line:?}"));
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let interval: u64 = header
        .strip_prefix("heap_v2/")
        .and_then(|r| r.trim().parse().ok())
        .filter(|&r| r > 0)
        .ok_or_else(|| bad("expected heap_v2/<rate> header", header))?;
    let mut stacks = Vec::new();
    let mut mappings = Vec::new();
    let mut pending: Option<Vec<u64>> = None;
    while let Some(line) = lines.next() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('@') {
            let addrs = rest
                .split_whitespace()
                .map(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("bad address", line))?;
            if pending.replace(addrs).is_some() {
                return Err(bad("stack without counts", line));
            }
        } else if let Some(rest) = line.strip_prefix("t*:") {
            // "t*: <objects>: <bytes> [<accum objects>: <accum bytes>]"; the first one (no
            // stack before it) is the total.
            let Some(addrs) = pending.take() else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let objects: f64 = parse_word(words.next()).ok_or_else(|| bad("bad counts", line))?;
            let bytes: f64 = parse_word(words.next()).ok_or_else(|| bad("bad counts", line))?;
            if objects > 0.0 && bytes > 0.0 {
                // jeprof's unbiasing: the chance that an object of mean size s was sampled is
                // 1 - exp(-s / interval); jemalloc 5.3 pre-adjusts its counts for this formula.
                let scale = 1.0 / (1.0 - (-(bytes / objects) / interval as f64).exp());
                stacks.push(HeapStack {
                    addrs,
                    bytes: (bytes * scale).round() as u64,
                    objects: (objects * scale).round() as u64,
                });
            }
        } else if line == "MAPPED_LIBRARIES:" {
            mappings = lines.by_ref().filter_map(parse_map_line).collect();
        }
    }
    if pending.is_some() {
        return Err(HeapError::Parse("last stack has no counts".into()));
    }
    Ok(HeapDump {
        stacks,
        mappings,
        sample_interval_bytes: interval,
        time,
        duration: None,
    })
}

fn parse_word(w: Option<&str>) -> Option<f64> {
    w?.trim_end_matches(':').parse().ok()
}

/// `start-end perms offset dev inode path`; keeps executable file mappings.
fn parse_map_line(line: &str) -> Option<Mapping> {
    let mut f = line.split_whitespace();
    let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
    let path = f.nth(2)?;
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        limit: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path: path.to_string(),
    })
}

/// A private directory for one dump, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = getrandom::u64().unwrap_or(0) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("prodbg-heap-{}-{unique:016x}", std::process::id());
        let path = std::env::temp_dir().join(name);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&path)?; // fails if it exists: nobody else's directory is used
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "heap_v2/524288
  t*: 3: 1572864 [0: 0]
  t0: 3: 1572864 [0: 0]
@ 0x10 0x20 0x30
  t*: 2: 1048576 [0: 0]
  t0: 2: 1048576 [0: 0]
@ 0x10 0x40
  t*: 1: 524288 [0: 0]

MAPPED_LIBRARIES:
00400000-00500000 r-xp 00001000 08:01 42 /usr/bin/svc
00500000-00600000 rw-p 00000000 00:00 0 [heap]
";

    #[test]
    fn parses_and_unbiases_dump() {
        let p = parse_dump(DUMP, SystemTime::now()).unwrap();
        assert_eq!(p.sample_interval_bytes, 524288);
        assert_eq!(p.stacks.len(), 2);
        assert_eq!(p.stacks[0].addrs, vec![0x10, 0x20, 0x30]);
        // Mean object 512 KiB at a 512 KiB interval: scaled by 1 / (1 - e^-1) ≈ 1.582.
        assert_eq!(p.stacks[0].objects, 3);
        assert_eq!(
            p.stacks[0].bytes,
            (1048576.0 / (1.0 - (-1.0f64).exp())).round() as u64
        );
        assert_eq!(p.mappings.len(), 1);
        assert_eq!(p.mappings[0].path, "/usr/bin/svc");
        assert_eq!(p.mappings[0].offset, 0x1000);
    }

    #[test]
    fn rejects_bad_dumps() {
        assert!(matches!(
            parse_dump("nonsense", SystemTime::now()),
            Err(HeapError::Parse(_))
        ));
        let dangling = "heap_v2/524288\n@ 0x10\n";
        assert!(matches!(
            parse_dump(dangling, SystemTime::now()),
            Err(HeapError::Parse(_))
        ));
    }

    #[test]
    fn growth_keeps_positive_deltas() {
        let t0 = SystemTime::now();
        let before = parse_dump(DUMP, t0).unwrap();
        let mut after = before.clone();
        after.time = t0 + Duration::from_secs(5);
        after.stacks[0].bytes += 1000;
        after.stacks[0].objects += 1;
        after.stacks[1].bytes -= 1000;
        let g = growth(&before, &after);
        assert_eq!(g.stacks.len(), 1);
        assert_eq!((g.stacks[0].bytes, g.stacks[0].objects), (1000, 1));
        assert_eq!(g.duration, Some(Duration::from_secs(5)));
    }

    #[test]
    fn allocator_frames_are_recognized() {
        for name in [
            "prof_backtrace_impl",
            "_rjem_je_prof_tctx_create",
            "_rjem_malloc",
            "calloc",
            "__rust_alloc",
            "alloc::alloc::alloc",
            "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc",
        ] {
            assert!(is_allocator_frame(name), "{name}");
        }
        for name in [
            "my_svc::malloc_pool::grow",
            "alloc::vec::Vec<T>::push",
            "main",
        ] {
            assert!(!is_allocator_frame(name), "{name}");
        }
    }

    /// The library's own tests run on the system allocator.
    #[test]
    fn the_unit_tests_run_on_jemalloc() {
        // The system-allocator case is tested over HTTP in tests/memory_system_alloc.rs.
        assert_eq!(ensure_jemalloc(), Ok(()));
        assert!(HeapError::NotJemalloc
            .to_string()
            .contains("global_allocator"));
    }
}
