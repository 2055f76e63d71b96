//! Code address → functions, files and lines, with inlined functions: the one symbolizer of the
//! CPU, heap and thread probes.
//!
//! It asks the `backtrace` crate, which parses each binary's debug info on first use and keeps
//! it cached for the life of the process (tens of MB for a large binary with `debug = 1`), so
//! the first lookup is slow (~100 ms) and later ones are fast. Each probe decides which frames
//! of a stack to keep; this module only names them.

use std::collections::HashMap;
use std::ffi::c_void;

use super::Frame;

/// The functions at code address `addr`, **innermost first**: functions inlined into others
/// come first, the physical function last (as `profile.proto` lists a location's lines and a
/// stack trace prints them). Empty when nothing is known about the address.
///
/// Like [`backtrace::resolve`], `addr` is taken for a return address: the lookup is for
/// `addr - 1`, inside the call instruction. Pass `pc + 1` for an exact instruction address.
pub(crate) fn resolve(addr: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    backtrace::resolve(addr as *mut c_void, |sym| {
        let name = sym.name();
        frames.push(Frame {
            address: addr as u64,
            function: name.as_ref().map(|n| format!("{n:#}")),
            system_name: name.map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned()),
            file: sym.filename().map(|p| p.display().to_string()),
            line: sym.lineno(),
            inlined: true,
        });
    });
    if let Some(physical) = frames.last_mut() {
        physical.inlined = false;
    }
    frames
}

/// [`resolve`] with each address looked up once, for a profile whose stacks share addresses.
/// Used by the CPU and heap probes (the thread probe resolves each address once anyway).
#[derive(Debug, Default)]
#[cfg_attr(not(any(feature = "cpu", feature = "heap")), allow(dead_code))]
pub(crate) struct SymbolCache(HashMap<usize, Vec<Frame>>);

#[cfg_attr(not(any(feature = "cpu", feature = "heap")), allow(dead_code))]
impl SymbolCache {
    /// The frames at `addr` (see [`resolve`]), resolving them on first use.
    pub(crate) fn resolve(&mut self, addr: usize) -> &[Frame] {
        self.0.entry(addr).or_insert_with(|| resolve(addr))
    }

    /// The frames at `addr` if [`resolve`](Self::resolve) was called for it, else none.
    pub(crate) fn get(&self, addr: usize) -> &[Frame] {
        self.0.get(&addr).map_or(&[], Vec::as_slice)
    }

    /// Number of distinct addresses resolved.
    #[cfg_attr(not(feature = "cpu"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
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
        let addr = prodbg_symbols_test_target_x4 as fn() -> usize as usize + 1;
        let mut cache = SymbolCache::default();
        let frames = cache.resolve(addr).to_vec();
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
        assert!(frames[..frames.len() - 1].iter().all(|f| f.inlined));
        assert_eq!(cache.get(addr), frames);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(addr + 1).is_empty());
    }
}
