//! What off-host symbolization needs: pprof `Mapping`s that carry path, offsets and GNU
//! build-id (so `go tool pprof` with the binary, Parca or debuginfod can symbolize an
//! unsymbolized profile), and Go's `/debug/pprof/symbol` protocol (names only).

use std::fmt::Write as _;

use crate::stack::dwarf::{symbolize_module, SymbolizeOptions};
use crate::stack::modules::{ModuleKind, ModuleSet};

/// One pprof `Mapping`: an executable segment of a loaded module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PprofMapping {
    /// First actual address of the segment, page-aligned down (as `/proc/self/maps` shows).
    pub(crate) memory_start: u64,
    /// One past its last actual address, page-aligned up.
    pub(crate) memory_limit: u64,
    /// File offset of `memory_start` (page-aligned like it).
    pub(crate) file_offset: u64,
    /// The file's path (`[vdso]` for the vDSO).
    pub(crate) filename: String,
    /// GNU build-id in hex, when the module has one.
    pub(crate) build_id: Option<String>,
    /// Whether this is the main executable (pprof lists it first).
    pub(crate) is_main: bool,
}

/// The mappings of every executable segment, main executable first, then by address.
pub(crate) fn pprof_mappings(modules: &ModuleSet) -> Vec<PprofMapping> {
    let page = page_size();
    let mut out: Vec<PprofMapping> = modules
        .modules()
        .iter()
        .flat_map(|m| {
            let filename = match (&m.path, m.kind) {
                (_, ModuleKind::Vdso) => "[vdso]".to_string(),
                (Some(p), _) => p.display().to_string(),
                (None, _) => m.name.clone(),
            };
            let build_id = m.build_id_hex();
            m.exec_segments.iter().map(move |s| {
                let start = m.bias.wrapping_add(s.svma.start);
                let end = m.bias.wrapping_add(s.svma.end);
                let aligned = start & !(page - 1);
                PprofMapping {
                    memory_start: aligned,
                    memory_limit: (end + page - 1) & !(page - 1),
                    file_offset: s.file_offset - (start - aligned),
                    filename: filename.clone(),
                    build_id: build_id.clone(),
                    is_main: m.kind == ModuleKind::Executable,
                }
            })
        })
        .collect();
    out.sort_by_key(|m| (!m.is_main, m.memory_start));
    out
}

/// Function name (demangled, from symbol tables only: cheap) of each actual address, or
/// `None`. What `/debug/pprof/symbol` answers with.
pub(crate) fn function_names(modules: &ModuleSet, avmas: &[u64]) -> Vec<Option<String>> {
    let opts = SymbolizeOptions {
        debug_info: false,
        ..SymbolizeOptions::default()
    };
    let mut out = vec![None; avmas.len()];
    let mut by_module: Vec<(usize, usize)> = avmas
        .iter()
        .enumerate()
        .filter_map(|(i, &a)| {
            Some((
                modules
                    .modules()
                    .iter()
                    .position(|m| m.avma_range.contains(&a))?,
                i,
            ))
        })
        .collect();
    by_module.sort_unstable();
    for group in by_module.chunk_by(|a, b| a.0 == b.0) {
        let m = &modules.modules()[group[0].0];
        let svmas: Vec<u64> = group.iter().map(|&(_, i)| m.svma(avmas[i])).collect();
        if let Ok(s) = symbolize_module(m, &svmas, opts) {
            for (&(_, i), frames) in group.iter().zip(s.frames) {
                out[i] = frames.into_iter().last().and_then(|f| f.function);
            }
        }
    }
    out
}

/// The body Go's `net/http/pprof` `Symbol` handler returns for a `GET` (pprof only checks
/// that the count is non-zero).
pub(crate) const SYMBOL_COUNT_LINE: &str = "num_symbols: 1\n";

/// Addresses of a symbol request: `+`-separated numbers (`0x…` hex, or decimal), as `go tool
/// pprof` POSTs them; unparsable words and zero are skipped, like Go does.
pub(crate) fn parse_symbol_request(body: &str) -> Vec<u64> {
    body.split('+')
        .filter_map(|w| {
            let w = w.trim();
            let v = match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => w.parse().ok(),
            };
            v.filter(|&v| v != 0)
        })
        .collect()
}

/// The full response to a symbol `POST`: the count line, then `0x<addr> <name>` for every
/// address with a name (addresses without one are left out, as in Go).
pub(crate) fn symbol_response(addrs: &[u64], names: &[Option<String>]) -> String {
    let mut out = String::from(SYMBOL_COUNT_LINE);
    for (a, n) in addrs.iter().zip(names) {
        if let Some(n) = n {
            let _ = writeln!(out, "{a:#x} {n}");
        }
    }
    out
}

/// Adds one stack's locations to a pprof profile: frames grouped into physical frames (the
/// functions inlined into a real frame, then the real one), leaf first, each group's lines
/// innermost first, as pprof wants. Location addresses are the return address minus one (inside
/// the call) for callers, and for the leaf too unless `leaf_exact` (an interrupted instruction,
/// kept as is). Unsymbolized stacks
/// (`symbolized == false`) get locations without lines, for symbolization off the host.
#[cfg(any(feature = "cpu", feature = "heap"))]
pub(crate) fn pprof_locations(
    b: &mut crate::encode::pprof::ProfileBuilder,
    frames: &[crate::stack::Frame],
    symbolized: bool,
    leaf_exact: bool,
) -> Vec<u64> {
    use crate::encode::pprof::LineSpec;
    let mut locations = Vec::new();
    let mut start = 0;
    while start < frames.len() {
        let end = frames[start..]
            .iter()
            .position(|f| !f.inlined)
            .map_or(frames.len(), |i| start + i + 1);
        let group = &frames[start..end];
        let lines: Vec<LineSpec<'_>> = if symbolized || group[0].function.is_some() {
            group
                .iter()
                .map(|f| LineSpec {
                    function: f.name(),
                    system_name: f.system_name(),
                    file: f.file.as_deref().unwrap_or(""),
                    line: f.line.unwrap_or(0),
                })
                .collect()
        } else {
            Vec::new()
        };
        let address = match group[0].address {
            a if (start == 0 && leaf_exact) || a == 0 => a,
            a => a - 1,
        };
        locations.push(b.location(address, &lines));
        start = end;
    }
    locations
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn prodbg_offline_target() -> u64 {
        std::hint::black_box(41) + 1
    }

    #[test]
    fn symbol_protocol_round_trip() {
        let modules = ModuleSet::snapshot().expect("modules");
        let f = prodbg_offline_target as fn() -> u64 as usize as u64;
        let body = format!("{f:#x}+0x10+nonsense+{}", f + 2);
        let addrs = parse_symbol_request(&body);
        assert_eq!(addrs, vec![f, 0x10, f + 2]);
        let names = function_names(&modules, &addrs);
        let resp = symbol_response(&addrs, &names);
        let mut lines = resp.lines();
        assert_eq!(lines.next(), Some("num_symbols: 1"));
        let l1 = lines.next().expect("a name for f");
        assert!(
            l1.starts_with(&format!("{f:#x} ")) && l1.ends_with("prodbg_offline_target"),
            "{l1}"
        );
        assert!(lines
            .next()
            .is_some_and(|l| l.ends_with("prodbg_offline_target")));
        assert_eq!(lines.next(), None, "0x10 has no name");
    }

    #[test]
    fn vdso_functions_are_named_from_memory() {
        let modules = ModuleSet::snapshot().expect("modules");
        let (vdso, sym) = (c"linux-vdso.so.1", c"__vdso_clock_gettime");
        // SAFETY: NOLOAD lookup of an object the loader always has on Linux; dlsym on it.
        let f = unsafe {
            let h = libc::dlopen(vdso.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            assert!(!h.is_null());
            libc::dlsym(h, sym.as_ptr()) as u64
        };
        assert_ne!(f, 0);
        let names = function_names(&modules, &[f + 4]);
        // `clock_gettime` and `__vdso_clock_gettime` are aliases; either name is right.
        assert!(
            names[0]
                .as_deref()
                .is_some_and(|n| n.ends_with("clock_gettime")),
            "{names:?}"
        );
    }

    #[test]
    fn mappings_carry_build_id_and_offsets() {
        let modules = ModuleSet::snapshot().expect("modules");
        let maps = pprof_mappings(&modules);
        let main = &maps[0];
        assert!(main.is_main && main.build_id.as_ref().is_some_and(|b| b.len() >= 16));
        let f = prodbg_offline_target as fn() -> u64 as usize as u64;
        assert!((main.memory_start..main.memory_limit).contains(&f));
        // The file offset of `f` computed from the mapping matches its symbol's offset.
        let exe = modules
            .modules()
            .iter()
            .find(|m| m.kind == ModuleKind::Executable)
            .expect("exe");
        let seg = &exe.exec_segments[0];
        let via_mapping = f - main.memory_start + main.file_offset;
        assert_eq!(via_mapping, exe.svma(f) - seg.svma.start + seg.file_offset);
        assert!(maps.iter().any(|m| m.filename == "[vdso]"));
    }
}
