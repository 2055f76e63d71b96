//! The stack of the calling thread, for panics and crashes: one framehop unwinder prepared
//! once for the process (`crate::stack::signal_unwinder`), shared by the panic hook and the
//! crash handler, and named lines for a report.

use std::sync::OnceLock;

use crate::stack::dwarf::ProcessAddress;
use crate::stack::signal_unwinder::SignalUnwinder;
use crate::stack::symbolize::Symbols;

static UNWINDER: OnceLock<Option<SignalUnwinder>> = OnceLock::new();

/// The process's shared unwinder, prepared on first use (about 1 ms and 1 MB); `None` when
/// the modules could not be read. Not from a signal handler the first time.
pub(crate) fn unwinder() -> Option<&'static SignalUnwinder> {
    UNWINDER
        .get_or_init(|| match SignalUnwinder::prepare() {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::debug!(target: "prodbg::incidents", error = %e, "no unwinder: panic and crash stacks are left out");
                None
            }
        })
        .as_ref()
}

/// The unwinder if it is prepared already (async-signal-safe: one atomic read).
pub(crate) fn prepared() -> Option<&'static SignalUnwinder> {
    UNWINDER.get().and_then(Option::as_ref)
}

/// The calling thread's return addresses, innermost first (this function's own frame
/// included), at most `max`.
pub(crate) fn here(max: usize) -> Vec<u64> {
    let Some(u) = unwinder() else {
        return Vec::new();
    };
    let mut buf = vec![0u64; max];
    // SAFETY: all-zero is a valid `ucontext_t` to fill.
    let mut uc: libc::ucontext_t = unsafe { std::mem::zeroed() };
    // SAFETY: `uc` is a valid out-parameter; no `setcontext` ever returns to it.
    if unsafe { libc::getcontext(&mut uc) } != 0 {
        return Vec::new();
    }
    // SAFETY: this thread's own context.
    let r = unsafe { u.unwind_own(&uc, &mut buf) };
    buf.truncate(r.depth);
    buf
}

/// One line per frame (`function (file:line)`, inlined calls on their own lines), innermost
/// first; `pc_first` when the first address is an interrupted pc rather than a return address.
pub(crate) fn lines(addrs: &[u64], pc_first: bool) -> Vec<String> {
    let pas: Vec<ProcessAddress> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| ProcessAddress {
            avma: *a,
            is_return_address: !(pc_first && i == 0),
        })
        .collect();
    let symbols = match prepared() {
        Some(u) => Symbols::resolve(u.current().modules(), pas.iter().copied()),
        None => Symbols::resolve_here(pas.iter().copied()),
    };
    let mut out = Vec::new();
    for pa in pas {
        for f in symbols.frames_or_unknown(pa) {
            let place = match (&f.file, f.line) {
                (Some(file), Some(line)) => format!(" ({file}:{line})"),
                (Some(file), None) => format!(" ({file})"),
                _ => String::new(),
            };
            out.push(format!("{:#x} {}{place}", f.address, f.name()));
        }
    }
    out
}
