//! Address → functions (demangled), file, line and inlined calls, innermost first, in a
//! bounded memory budget and with no cache that outlives the call.
//!
//! # How, and why this way
//! Whole-binary symbolizers (the `backtrace` crate, addr2line's `Loader`, blazesym) index
//! every compilation unit (CU) they touch and keep the index, so a 69 MB `debug = 1` binary
//! costs 54–97 MB of peak RSS. Here, per call:
//! 1. The file is mapped read-only. Mapped pages count in RSS only while this process maps
//!    them, so after each step the mapping's pages are dropped with `MADV_DONTNEED` (harmless
//!    on a read-only private mapping: the page cache keeps them) and the mapping is unmapped
//!    at the end. Strings (`.debug_str`, scattered) are `pread` instead: through the mapping
//!    each one would map up to 64 KB around it (the kernel's fault-around).
//! 2. `.debug_aranges` (one small section) says which CU holds each address.
//! 3. CUs are visited one at a time, in file order: one streaming pass over the CU's line
//!    program gives each address's file:line, one pass over its DIEs (attributes skipped
//!    outside functions that contain a target) gives the function and the chain of
//!    `DW_TAG_inlined_subroutine`s around it. The CU's parsed state (abbreviations, line
//!    header) is dropped before the next CU, so the peak is about the largest CU visited.
//! 4. Addresses outside every CU, in a CU larger than [`SymbolizeOptions::max_unit_bytes`], or
//!    in a file without DWARF get the name of the sized function symbol that contains them
//!    (`.symtab`, else `.dynsym`), in one linear pass.
//! 5. [`release_freed_heap`] returns the freed temporaries to the OS.
//!
//! Addresses are *stated* addresses (SVMA: as in the file) of the exact instruction: pass a
//! return address minus 1 (see [`symbolize_in_process`], which does that).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use object::{Object, ObjectSection};

use crate::stack::modules::{Module, ModuleKind, ModuleSet};

mod dwarf_unit;
pub(crate) mod elf_source;
mod strings;
pub(crate) mod symtab;
mod units;

use elf_source::{debug_file_for_build_id, ElfBytes};

pub(crate) type Slice<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

/// What the debug info says of one function at an address (the physical function or one
/// inlined into it); [`crate::stack::symbolize`] turns these into [`crate::stack::Frame`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Symbol {
    /// Demangled name without the Rust hash, e.g. `my_app::handler::parse`.
    pub(crate) function: Option<String>,
    /// The raw (mangled) linkage name, when the debug info or symbol table has one.
    pub(crate) linkage_name: Option<String>,
    /// Source file (`comp_dir/dir/file` as the line table states it).
    pub(crate) file: Option<String>,
    /// Line in `file`, 1-based.
    pub(crate) line: Option<u32>,
    /// `true` when this function was inlined into the next frame of the list (its caller);
    /// `false` for the last frame, the physical function.
    pub(crate) inlined: bool,
}

/// Knobs of [`symbolize_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SymbolizeOptions {
    /// Read DWARF (file:line, inline frames). `false`: names from the symbol table only.
    pub(crate) debug_info: bool,
    /// CUs whose `.debug_info` part is larger than this get names only (bounds peak memory).
    pub(crate) max_unit_bytes: u64,
}

impl Default for SymbolizeOptions {
    /// Debug info on, CUs up to 4 MB (a CU costs about twice its size in mapped pages
    /// while it is parsed; the largest CU of a 74 MB `debug = 1` binary is 0.8 MB).
    fn default() -> Self {
        Self {
            debug_info: true,
            max_unit_bytes: 4 << 20,
        }
    }
}

/// What a call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SymbolizeStats {
    /// Distinct addresses asked for.
    pub(crate) addresses: usize,
    /// CUs parsed.
    pub(crate) units: usize,
    /// CUs skipped because they exceed `max_unit_bytes` (their addresses got names only).
    pub(crate) units_over_budget: usize,
    /// Bytes of `.debug_info` in the CUs parsed.
    pub(crate) unit_bytes: u64,
    /// Addresses resolved from DWARF.
    pub(crate) from_debug_info: usize,
    /// Addresses resolved from the symbol table.
    pub(crate) from_symbols: usize,
    /// Addresses nothing was found for.
    pub(crate) unresolved: usize,
    /// Wall time of the call.
    pub(crate) elapsed: Duration,
}

/// Frames for each input address (same order; empty when nothing is known) and stats.
#[derive(Debug, Clone, Default)]
pub(crate) struct Symbolized {
    /// Per input address: frames innermost first (inlined ones, then the physical function).
    pub(crate) frames: Vec<Vec<Symbol>>,
    /// What the call did.
    pub(crate) stats: SymbolizeStats,
}

/// Symbolizes stated addresses of the ELF file at `path` (the file is mapped, not read).
pub(crate) fn symbolize_file(
    path: &Path,
    svmas: &[u64],
    opts: SymbolizeOptions,
) -> io::Result<Symbolized> {
    symbolize(&ElfBytes::map(path)?, svmas, opts)
}

/// Symbolizes stated addresses of an ELF image in memory (e.g. the vDSO).
pub(crate) fn symbolize_image(
    image: &[u8],
    svmas: &[u64],
    opts: SymbolizeOptions,
) -> io::Result<Symbolized> {
    symbolize(&ElfBytes::Memory(image), svmas, opts)
}

/// An address seen in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProcessAddress {
    /// Actual address.
    pub(crate) avma: u64,
    /// Whether it is a return address (looked up at `avma - 1`, inside the call); `false` for
    /// an interrupted pc.
    pub(crate) is_return_address: bool,
}

/// Symbolizes addresses of this process, module by module (each module's file, or its
/// `/usr/lib/debug/.build-id/…` debug file when installed; the vDSO from memory). Frames
/// per input address, innermost first; empty where nothing is known.
pub(crate) fn symbolize_in_process(
    modules: &ModuleSet,
    addrs: &[ProcessAddress],
    opts: SymbolizeOptions,
) -> Vec<Vec<Symbol>> {
    let mut out = vec![Vec::new(); addrs.len()];
    let mut by_module: Vec<(usize, usize, u64)> = addrs
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let lookup = a.avma.wrapping_sub(u64::from(a.is_return_address));
            let mi = modules
                .modules()
                .iter()
                .position(|m| m.avma_range.contains(&lookup))?;
            Some((mi, i, modules.modules()[mi].svma(lookup)))
        })
        .collect();
    by_module.sort_unstable();
    for group in by_module.chunk_by(|a, b| a.0 == b.0) {
        let module = &modules.modules()[group[0].0];
        let svmas: Vec<u64> = group.iter().map(|g| g.2).collect();
        if let Ok(s) = symbolize_module(module, &svmas, opts) {
            tracing::debug!(module = %module.name, stats = ?s.stats, "symbolized");
            for (g, frames) in group.iter().zip(s.frames) {
                out[g.1] = frames;
            }
        }
    }
    out
}

/// Symbolizes stated addresses of one loaded module.
pub(crate) fn symbolize_module(
    module: &Module,
    svmas: &[u64],
    opts: SymbolizeOptions,
) -> io::Result<Symbolized> {
    if module.kind == ModuleKind::Vdso {
        let image = module
            .image()
            .ok_or_else(|| io::Error::other("vDSO image unknown"))?;
        return symbolize_image(image, svmas, opts);
    }
    if let Some(debug) = module.build_id.as_deref().and_then(debug_file_for_build_id) {
        return symbolize_file(&debug, svmas, opts);
    }
    match module.kind {
        // The running inode, even if the file was replaced on disk since.
        ModuleKind::Executable => symbolize_file(Path::new("/proc/self/exe"), svmas, opts),
        _ => {
            let path = module
                .path
                .as_deref()
                .ok_or_else(|| io::Error::other("module has no path"))?;
            symbolize_file(path, svmas, opts)
        }
    }
}

fn symbolize(
    bytes: &ElfBytes<'_>,
    svmas: &[u64],
    opts: SymbolizeOptions,
) -> io::Result<Symbolized> {
    let t0 = Instant::now();
    let mut targets = svmas.to_vec();
    targets.sort_unstable();
    targets.dedup();
    let file = object::File::parse(bytes.bytes()).map_err(io::Error::other)?;
    let mut stats = SymbolizeStats {
        addresses: targets.len(),
        ..Default::default()
    };
    let mut found: Vec<Option<Vec<Symbol>>> = vec![None; targets.len()];
    if opts.debug_info {
        if let Some(dwarf) = load_dwarf(&file) {
            let strings = strings::Strings::new(bytes.file(), str_sections(&file));
            from_debug_info(
                bytes, &dwarf, &strings, &targets, opts, &mut found, &mut stats,
            );
        }
    }
    stats.from_debug_info = found.iter().filter(|f| f.is_some()).count();
    // The symbol table names what DWARF did not: addresses outside it, physical frames
    // without a function name, and physical frames with a bare name only (`get`, `poll`,
    // `{async_block#0}`: `debug = "line-tables-only"` keeps no linkage names), which the
    // symbol's demangled path (`my_app::store::Store::get`) replaces.
    let unnamed = |f: &Option<Vec<Symbol>>| {
        f.as_ref()
            .and_then(|fs| fs.last())
            .is_none_or(|p| p.function.is_none() || p.linkage_name.is_none())
    };
    let want: Vec<bool> = found.iter().map(unnamed).collect();
    for (slot, name) in found.iter_mut().zip(symtab::lookup(&file, &targets, &want)) {
        let Some((raw, _start)) = name else { continue };
        let raw = String::from_utf8_lossy(raw).into_owned();
        match slot.as_mut().and_then(|fs| fs.last_mut()) {
            Some(physical) => {
                physical.function = Some(demangle(&raw));
                physical.linkage_name = Some(raw);
            }
            None => {
                *slot = Some(vec![Symbol {
                    function: Some(demangle(&raw)),
                    linkage_name: Some(raw),
                    file: None,
                    line: None,
                    inlined: false,
                }]);
                stats.from_symbols += 1;
            }
        }
    }
    bytes.release_pages();
    stats.unresolved = found.iter().filter(|f| f.is_none()).count();
    let frames = svmas
        .iter()
        .map(|a| {
            targets
                .binary_search(a)
                .ok()
                .and_then(|i| found[i].clone())
                .unwrap_or_default()
        })
        .collect();
    stats.elapsed = t0.elapsed();
    Ok(Symbolized { frames, stats })
}

/// Resolves `targets` CU by CU into `found`; a CU that fails to parse is left to the symbol
/// table.
fn from_debug_info(
    bytes: &ElfBytes<'_>,
    dwarf: &gimli::Dwarf<Slice<'_>>,
    strings: &strings::Strings<'_>,
    targets: &[u64],
    opts: SymbolizeOptions,
    found: &mut [Option<Vec<Symbol>>],
    stats: &mut SymbolizeStats,
) {
    let Ok((cus, unit_starts)) = units::unit_of_each(dwarf, targets) else {
        return;
    };
    let ctx = dwarf_unit::Ctx {
        dwarf,
        strings,
        unit_starts: &unit_starts,
    };
    bytes.release_pages();
    let mut order: Vec<usize> = (0..targets.len()).filter(|&i| cus[i].is_some()).collect();
    // Stable: within a CU, targets stay sorted.
    order.sort_by_key(|&i| cus[i].map(|o| o.0));
    for group in order.chunk_by(|&a, &b| cus[a] == cus[b]) {
        let Some(offset) = cus[group[0]] else {
            continue;
        };
        match units::unit_size(dwarf, offset) {
            Ok(size) if size <= opts.max_unit_bytes => stats.unit_bytes += size,
            _ => {
                stats.units_over_budget += 1;
                continue;
            }
        }
        let Ok(unit) = dwarf.unit_header(offset).and_then(|h| dwarf.unit(h)) else {
            continue;
        };
        let unit_targets: Vec<u64> = group.iter().map(|&i| targets[i]).collect();
        if let Ok(frames) = dwarf_unit::resolve(&ctx, &unit, &unit_targets) {
            for (&i, f) in group.iter().zip(frames) {
                found[i] = f;
            }
        }
        stats.units += 1;
        drop(unit);
        bytes.release_pages();
    }
}

/// The DWARF sections of `file` (uncompressed ones only), or `None` without `.debug_info`.
fn load_dwarf<'a>(file: &object::File<'a>) -> Option<gimli::Dwarf<Slice<'a>>> {
    let has_info = file
        .section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0);
    if !has_info {
        return None;
    }
    let load = |id: gimli::SectionId| -> Result<Slice<'a>, gimli::Error> {
        let data = file
            .section_by_name(id.name())
            .filter(|s| {
                s.compressed_file_range()
                    .is_ok_and(|r| r.format == object::CompressionFormat::None)
            })
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok(Slice::new(data, gimli::LittleEndian))
    };
    gimli::Dwarf::load(load).ok()
}

/// File offsets and sizes of the string sections, for `pread`.
fn str_sections(file: &object::File<'_>) -> strings::StrSections {
    let range = |name: &str| file.section_by_name(name).and_then(|s| s.file_range());
    strings::StrSections {
        debug_str: range(".debug_str"),
        debug_line_str: range(".debug_line_str"),
    }
}

/// Demangles a Rust (legacy or v0) symbol without its hash; other names are returned as is.
pub(crate) fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_string(),
    }
}

/// Returns heap memory freed by a symbolization to the OS: `malloc_trim(0)` on glibc. Under
/// jemalloc (tikv-jemallocator as the global allocator) the equivalent is purging all arenas:
/// `tikv_jemalloc_ctl::raw::write(b"arena.4096.purge\0", ())` (`4096` is
/// `MALLCTL_ARENAS_ALL`); this crate does not link jemalloc, so that call is the caller's.
pub(crate) fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::ObjectSymbol;

    /// A binary built with `debug = "line-tables-only"` has DWARF function entries with bare
    /// names (`get`) and no linkage names; the physical frame takes the symbol table's
    /// demangled path instead, so `go tool pprof -top` does not merge every `get` into one row.
    #[test]
    fn line_tables_only_frames_get_the_symbols_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let src = dir.path().join("probe.rs");
        std::fs::write(
            &src,
            "mod store {\n    pub struct Store(pub u64);\n    impl Store {\n        #[inline(never)]\n        pub fn get(&self, k: u64) -> u64 { std::hint::black_box(self.0 ^ k) }\n    }\n}\nfn main() { let s = store::Store(std::hint::black_box(3)); println!(\"{}\", s.get(5)); }\n",
        )
        .expect("write source");
        let bin = dir.path().join("probe");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
        let out = std::process::Command::new(rustc)
            .args([
                "-C",
                "debuginfo=line-tables-only",
                "-C",
                "opt-level=1",
                "-o",
            ])
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("run rustc");
        assert!(
            out.status.success(),
            "rustc: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let data = std::fs::read(&bin).expect("read binary");
        let file = object::File::parse(&*data).expect("parse ELF");
        let get = file
            .symbols()
            .find(|s| {
                s.name()
                    .is_ok_and(|n| demangle(n).ends_with("store::Store::get"))
            })
            .expect("the symbol of Store::get");
        assert!(
            file.section_by_name(".debug_info").is_some(),
            "a line-tables-only build keeps DWARF function entries (with bare names)"
        );

        let found = symbolize_file(&bin, &[get.address() + 1], SymbolizeOptions::default())
            .expect("symbolize");
        let physical = found.frames[0].last().expect("a frame for Store::get");
        let name = physical.function.as_deref().unwrap_or("");
        assert!(
            name.ends_with("store::Store::get"),
            "the physical frame is named by its path, not DWARF's bare name: {name:?}"
        );
        assert!(
            physical.line.is_some(),
            "file:line still come from the line tables"
        );
    }
}
