//! Names for the feature sets the code gates on, so each is written once:
//! `stacks` (a probe that takes stacks is compiled in: `crate::stack` is used) and
//! `all_probes` (every probe behind a feature is compiled in: no 501 stand-in is built).
//! Plain `CARGO_FEATURE_*` reads: no build dependency for four lines of logic.

fn main() {
    let on = |f: &str| std::env::var_os(format!("CARGO_FEATURE_{f}")).is_some();
    let stack_features = ["CPU", "HEAP", "THREADS", "DEADLOCK"];
    println!("cargo::rustc-check-cfg=cfg(stacks, all_probes)");
    if stack_features.iter().any(|f| on(f)) {
        println!("cargo::rustc-cfg=stacks");
    }
    if stack_features.iter().all(|f| on(f)) {
        println!("cargo::rustc-cfg=all_probes");
    }
}
