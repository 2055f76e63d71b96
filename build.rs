//! Names for the feature sets the code gates on, so each is written once.

fn main() {
    cfg_aliases::cfg_aliases! {
        // A probe that takes stacks is compiled in: `crate::stack` is used.
        stacks: { any(feature = "cpu", feature = "heap", feature = "threads", feature = "deadlock") },
        // Every probe behind a feature is compiled in: no 501 stand-in is built.
        all_probes: { all(feature = "cpu", feature = "heap", feature = "threads", feature = "deadlock") },
    }
}
