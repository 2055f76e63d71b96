//! Names for holders: the function around an acquire call's code address, and the span and
//! route behind a label word. Symbolization runs off the hot path (reports, the leak scan) and
//! each address is resolved once: a process has few acquire sites.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::stack::labels::Labels;
use crate::stack::Frame;

/// Most code addresses whose frames are kept (past it, they are resolved on every report).
const MAX_CACHED: usize = 4096;

/// The frames of each acquire call's address, innermost first, with prodbg's own (the
/// inlined wrapper) cut off: the first frame is the calling function. Empty when the address
/// is unknown or the build has no symbolizer (no stack-taking feature). New addresses are
/// resolved together (one module scan).
pub(crate) fn frames_of(pcs: &[u64]) -> Vec<Arc<[Frame]>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Arc<[Frame]>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut known = cache.lock().unwrap_or_else(PoisonError::into_inner);
    let missing: Vec<u64> = pcs
        .iter()
        .copied()
        .filter(|pc| *pc != 0 && !known.contains_key(pc))
        .collect();
    if !missing.is_empty() {
        // Resolving takes milliseconds; holding the lock meanwhile makes a second reader wait
        // for the same answer instead of resolving it twice.
        for (pc, frames) in missing.iter().zip(resolve(&missing)) {
            if known.len() < MAX_CACHED {
                known.insert(*pc, Arc::from(frames));
            }
        }
    }
    pcs.iter()
        .map(|pc| {
            known
                .get(pc)
                .cloned()
                .unwrap_or_else(|| Arc::from(resolve(&[*pc]).pop().unwrap_or_default()))
        })
        .collect()
}

#[cfg(stacks)]
fn resolve(pcs: &[u64]) -> Vec<Vec<Frame>> {
    use crate::stack::symbolize::{return_address, Symbols};
    let syms = Symbols::resolve_here(pcs.iter().map(|&pc| return_address(pc)));
    pcs.iter()
        .map(|&pc| {
            syms.get(return_address(pc))
                .iter()
                .skip_while(|f| is_prodbg(f.name()))
                .map(|f| Frame {
                    address: pc,
                    ..f.clone()
                })
                .collect()
        })
        .collect()
}

#[cfg(not(stacks))]
fn resolve(pcs: &[u64]) -> Vec<Vec<Frame>> {
    vec![Vec::new(); pcs.len()]
}

#[cfg(stacks)]
fn is_prodbg(function: &str) -> bool {
    let f = function.trim_start_matches('<');
    f.starts_with("prodbg::")
}

/// The calling function's name for a report: the first frame's, without the `{{closure}}`
/// suffixes an `async fn` body has; `None` when unknown.
pub(crate) fn function(frames: &[Frame]) -> Option<String> {
    let name = frames.first()?.function.as_deref()?;
    let mut name = name;
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    Some(name.to_string())
}

/// `file:line` of an acquire call.
pub(crate) fn site(site: &Location<'_>) -> String {
    format!("{}:{}", site.file(), site.line())
}

/// The span name and route (the first label field the layer records, `route` or
/// `http.route` by default) behind a label word.
pub(crate) fn span_and_route(word: u64) -> (Option<&'static str>, Option<&'static str>) {
    let labels = Labels::from_bits(word).resolve();
    (labels.span, labels.fields.first().map(|f| f.value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_bodies_are_named_after_their_function() {
        let f = |name: &str| Frame {
            function: Some(name.into()),
            ..Frame::unknown(1)
        };
        assert_eq!(
            function(&[f("app::login::{{closure}}::{{closure}}")]).as_deref(),
            Some("app::login")
        );
        assert_eq!(
            function(&[f("app::sync_fn")]).as_deref(),
            Some("app::sync_fn")
        );
        assert_eq!(function(&[]), None);
    }
}
