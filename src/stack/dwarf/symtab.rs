//! Names only, from the ELF symbol table (`.symtab`, else `.dynsym`): one linear pass over
//! the symbols, no index kept. Used for addresses without debug info, for compilation units
//! over the budget, and for Go's symbol protocol.

use object::{Object, ObjectSymbol, SymbolKind};

/// For each of `targets` (sorted, unique) with `want[i]`, the raw name and start of the sized
/// function symbol that contains it.
pub(crate) fn lookup<'data>(
    file: &object::File<'data>,
    targets: &[u64],
    want: &[bool],
) -> Vec<Option<(&'data [u8], u64)>> {
    let mut out: Vec<Option<(&'data [u8], u64)>> = vec![None; targets.len()];
    if !want.iter().any(|&w| w) {
        return out;
    }
    let mut scan = |symbols: object::SymbolIterator<'data, '_>| -> bool {
        let mut any = false;
        for sym in symbols {
            if !matches!(sym.kind(), SymbolKind::Text) || sym.size() == 0 || sym.is_undefined() {
                continue;
            }
            any = true;
            let (lo, hi) = (sym.address(), sym.address().saturating_add(sym.size()));
            let first = targets.partition_point(|&t| t < lo);
            for i in first..targets.len() {
                if targets[i] >= hi {
                    break;
                }
                // Prefer the innermost (latest-starting) symbol when symbols overlap.
                if want[i] && out[i].is_none_or(|(_, start)| lo > start) {
                    if let Ok(name) = sym.name_bytes() {
                        out[i] = Some((name, lo));
                    }
                }
            }
        }
        any
    };
    if !scan(file.symbols()) {
        scan(file.dynamic_symbols());
    }
    out
}
