//! The one stack-frame type of every probe (CPU, heap, threads, deadlocks, task dumps).
//!
//! **Order:** a stack is always a `Vec<Frame>` listed innermost first — the running (or
//! allocating, or waiting) function first, the thread's entry point last. A machine frame
//! whose code inlined other functions gives several frames sharing `address`: the inlined
//! ones first (`inlined: true`), the physical function last.

use serde::{Serialize, Serializer};

/// Name shown for an address nothing is known about.
pub(crate) const UNKNOWN: &str = "[unknown]";

/// One function on a stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub(crate) struct Frame {
    /// Code address of the machine frame (for the innermost frame of an interrupted thread the
    /// exact instruction, for the others a return address); JSON: a hex string.
    #[serde(serialize_with = "hex")]
    pub(crate) address: u64,
    /// Demangled function path without the hash suffix, e.g. `my_app::db::query`; `None`
    /// when the address has no symbol.
    pub(crate) function: Option<String>,
    /// The symbol as in the binary (mangled); `None` when unknown.
    #[serde(skip)]
    pub(crate) system_name: Option<String>,
    /// Source file, when debug info has it.
    pub(crate) file: Option<String>,
    /// Line in `file` (1-based), when debug info has it.
    pub(crate) line: Option<u32>,
    /// `true` when this function was inlined into the next frame (its caller, same address).
    pub(crate) inlined: bool,
}

impl Frame {
    /// A frame nothing is known about but its address.
    pub(crate) fn unknown(address: u64) -> Frame {
        Frame {
            address,
            function: None,
            system_name: None,
            file: None,
            line: None,
            inlined: false,
        }
    }

    /// The function's name, or [`UNKNOWN`].
    pub(crate) fn name(&self) -> &str {
        self.function.as_deref().unwrap_or(UNKNOWN)
    }

    /// The symbol as in the binary, or the demangled name, or [`UNKNOWN`].
    pub(crate) fn system_name(&self) -> &str {
        self.system_name.as_deref().unwrap_or_else(|| self.name())
    }
}

fn hex<S: Serializer>(address: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{address:#x}"))
}
