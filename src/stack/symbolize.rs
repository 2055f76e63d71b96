//! Code address → functions, files and lines, with inlined functions: the one symbolizer of the
//! CPU, heap, thread and deadlock probes.
//!
//! It is [`super::dwarf`]: each call maps the module files, reads the compilation units that
//! hold the addresses one at a time, and keeps nothing afterwards — no process-lifetime cache
//! (the `backtrace` crate kept the whole binary's parsed debug info, tens of MB, for the life
//! of the process). After each call the freed temporaries are given back to the OS
//! (`malloc_trim(0)` on glibc, an arena purge when jemalloc is the allocator and the `heap`
//! feature is on). Each probe decides which frames of a stack to keep; this module only
//! names them.

use std::collections::HashMap;

use super::dwarf::{self, ProcessAddress, SymbolizeOptions};
use super::modules::ModuleSet;
use super::Frame;

/// The frames of a set of addresses, resolved in one batch.
#[derive(Debug, Default)]
pub(crate) struct Symbols(HashMap<ProcessAddress, Vec<Frame>>);

impl Symbols {
    /// Resolves `addrs` in the modules loaded now (a fresh [`ModuleSet`] snapshot).
    pub(crate) fn resolve_here(addrs: impl IntoIterator<Item = ProcessAddress>) -> Symbols {
        match ModuleSet::snapshot() {
            Ok(modules) => Self::resolve(&modules, addrs),
            Err(e) => {
                tracing::debug!(error = %e, "no module list: addresses left unsymbolized");
                Symbols::default()
            }
        }
    }

    /// Resolves `addrs` (duplicates are looked up once) in `modules`.
    pub(crate) fn resolve(
        modules: &ModuleSet,
        addrs: impl IntoIterator<Item = ProcessAddress>,
    ) -> Symbols {
        let mut unique: Vec<ProcessAddress> = addrs.into_iter().collect();
        unique.sort_unstable_by_key(|a| (a.avma, a.is_return_address));
        unique.dedup();
        let found = dwarf::symbolize_in_process(modules, &unique, SymbolizeOptions::default());
        let map = unique
            .into_iter()
            .zip(found)
            .map(|(a, symbols)| {
                let frames = symbols
                    .into_iter()
                    .map(|s| Frame {
                        address: a.avma,
                        function: s.function,
                        system_name: s.linkage_name,
                        file: s.file,
                        line: s.line,
                        inlined: s.inlined,
                    })
                    .collect();
                (a, frames)
            })
            .collect();
        release_freed_memory();
        Symbols(map)
    }

    /// The frames at `addr`, innermost first (inlined functions first, the physical function
    /// last); empty when nothing is known of it or it was not resolved.
    pub(crate) fn get(&self, addr: ProcessAddress) -> &[Frame] {
        self.0.get(&addr).map_or(&[], Vec::as_slice)
    }

    /// [`get`](Self::get), or one [`Frame::unknown`] when nothing is known.
    pub(crate) fn frames_or_unknown(&self, addr: ProcessAddress) -> Vec<Frame> {
        match self.get(addr) {
            [] => vec![Frame::unknown(addr.avma)],
            frames => frames.to_vec(),
        }
    }

    /// Number of distinct addresses resolved.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// An interrupted instruction (looked up as is).
pub(crate) fn pc(avma: u64) -> ProcessAddress {
    ProcessAddress {
        avma,
        is_return_address: false,
    }
}

/// A return address (looked up at `avma - 1`, inside the call).
pub(crate) fn return_address(avma: u64) -> ProcessAddress {
    ProcessAddress {
        avma,
        is_return_address: true,
    }
}

#[cfg(feature = "cpu")]
/// Name of the frame under which a stack that could not be unwound to its end is shown.
pub(crate) const TRUNCATED_FRAME: &str = "[truncated]";

#[cfg(feature = "cpu")]
/// The addresses of a sampled stack to symbolize: the interrupted instruction as is, the
/// return addresses inside their call.
pub(crate) fn sampled_addresses(ips: &[u64]) -> impl Iterator<Item = ProcessAddress> + '_ {
    ips.iter()
        .enumerate()
        .map(|(i, &ip)| if i == 0 { pc(ip) } else { return_address(ip) })
}

#[cfg(feature = "cpu")]
/// One sampled stack (leaf first, as unwound: the interrupted instruction, then return
/// addresses) as frames, innermost first; a truncated stack ends with a [`TRUNCATED_FRAME`].
pub(crate) fn sampled_stack(
    symbols: &Symbols,
    raw: &[u64],
    truncated: bool,
    symbolized: bool,
) -> Vec<Frame> {
    let mut out: Vec<Frame> = sampled_addresses(raw)
        .flat_map(|a| symbols.frames_or_unknown(a))
        .collect();
    if truncated {
        out.push(Frame {
            function: Some(TRUNCATED_FRAME.to_string()),
            ..Frame::unknown(0)
        });
    } else if symbolized {
        // A walk that ends in a frame nothing is known of (the outermost return address of
        // some threads) adds noise to every stack: drop trailing unknowns.
        while out.len() > 1 && out.last().is_some_and(|f| f.function.is_none()) {
            out.pop();
        }
    }
    out
}

/// Gives heap memory freed by a symbolization back to the OS: glibc keeps freed pages unless
/// asked (`malloc_trim`); jemalloc keeps dirty pages until they decay unless its arenas are
/// purged (`arena.<MALLCTL_ARENAS_ALL>.purge`, with the `heap` feature, which links it).
pub(crate) fn release_freed_memory() {
    dwarf::release_freed_heap();
    #[cfg(feature = "heap")]
    {
        // MALLCTL_ARENAS_ALL = 4096. Fails harmlessly when jemalloc is not the allocator's
        // backing (the mallctl then acts on an unused jemalloc).
        // SAFETY: `arena.4096.purge` takes no input and returns nothing.
        let _ = unsafe { tikv_jemalloc_ctl::raw::write(b"arena.4096.purge\0", ()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn prodbg_symbols_test_target_x4() -> usize {
        std::hint::black_box(7)
    }

    #[test]
    fn resolves_a_function_of_this_binary() {
        let addr = prodbg_symbols_test_target_x4 as fn() -> usize as usize as u64;
        let symbols = Symbols::resolve_here([pc(addr), return_address(addr + 1)]);
        let frames = symbols.get(pc(addr)).to_vec();
        let physical = frames
            .last()
            .expect("no symbol for a function of this binary");
        assert!(!physical.inlined);
        let function = physical.function.as_deref().unwrap_or_default();
        assert!(
            function.ends_with("prodbg_symbols_test_target_x4"),
            "{function}"
        );
        assert!(!function.contains("::h"), "hash not stripped: {function}");
        assert!(physical.system_name.as_deref().unwrap_or_default().len() > function.len());
        assert!(physical
            .file
            .as_deref()
            .unwrap_or("")
            .ends_with("symbolize.rs"));
        assert!(frames[..frames.len() - 1].iter().all(|f| f.inlined));
        let via_return: Vec<_> = symbols.get(return_address(addr + 1)).to_vec();
        assert_eq!(via_return.len(), frames.len());
        assert!(via_return
            .iter()
            .zip(&frames)
            .all(|(a, b)| a.function == b.function && a.address == addr + 1 && b.address == addr));
        assert_eq!(symbols.len(), 2);
        assert!(symbols.get(pc(addr + 1)).is_empty());
        assert_eq!(symbols.frames_or_unknown(pc(1)), vec![Frame::unknown(1)]);
    }
}
