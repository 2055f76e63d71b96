//! Whether the running executable carries debug info, checked once: without it frames are
//! named from the symbol table alone (no `file:line`, no inlined functions, and a function
//! inlined into its caller vanishes), and a profile should say so with the fix.

use std::sync::OnceLock;

use object::Object;

/// The `Cargo.toml` lines that give a release build its names back.
pub(crate) const FIX: &str = "add `[profile.release] debug = 1` to Cargo.toml (or `debug = \"line-tables-only\"`: file:line without inlined frames)";

/// A note when the executable has no DWARF line tables; `None` when it has them (or cannot
/// be read, which says nothing either way).
pub(crate) fn missing_note() -> Option<&'static str> {
    static NOTE: OnceLock<Option<String>> = OnceLock::new();
    NOTE.get_or_init(|| note_for(&std::fs::read("/proc/self/exe").ok()?))
        .as_deref()
}

/// The note for the ELF file `data`.
fn note_for(data: &[u8]) -> Option<String> {
    {
        let file = object::File::parse(data).ok()?;
        if file.section_by_name(".debug_line").is_some() {
            return None;
        }
        let symbols = if file.section_by_name(".symtab").is_some() {
            "names come from the symbol table only"
        } else {
            "the binary is stripped: names come from the dynamic symbols only"
        };
        Some(format!(
            "no debug info in this binary ({symbols}; no file:line, inlined functions merge into their callers): {FIX}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `debuginfo = "0"` also strips std's debug info, as Cargo's release profile does when
    /// `debug` is off.
    fn build(debuginfo: &str, dir: &std::path::Path) -> Vec<u8> {
        let src = dir.join("main.rs");
        std::fs::write(&src, "fn main() { println!(\"hi\"); }\n").expect("write source");
        let bin = dir.join(format!("bin-{debuginfo}"));
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
        let out = std::process::Command::new(rustc)
            .args(["-C", &format!("debuginfo={debuginfo}")])
            .args(if debuginfo == "0" {
                &["-C", "strip=debuginfo"][..]
            } else {
                &[]
            })
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .output()
            .expect("run rustc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(bin).expect("read binary")
    }

    #[test]
    fn a_binary_without_debug_info_gets_the_note_with_the_fix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let note = note_for(&build("0", dir.path())).expect("no .debug_line: a note");
        assert!(note.contains("debug = 1"), "{note}");
        assert!(note.contains("symbol table"), "{note}");
        assert_eq!(note_for(&build("line-tables-only", dir.path())), None);
        assert_eq!(note_for(&build("1", dir.path())), None);
    }
}
