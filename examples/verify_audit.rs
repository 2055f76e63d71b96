//! Checks an audit file's hash chain and reports the first broken line.
//!
//! ```text
//! cargo run --example verify_audit -- /var/log/svc/prodbg-audit.jsonl
//! ```
//! Exits 0 when intact, 1 when broken, 2 on usage or I/O errors.

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: verify_audit <audit-file.jsonl>");
        std::process::exit(2);
    };
    match prodbg::verify_audit_log(std::path::Path::new(&path)) {
        Ok(report) => match report.first_broken {
            None => println!("ok: {} records, chain intact", report.lines),
            Some((line, why)) => {
                println!("BROKEN at line {line}: {why}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("cannot read {}: {e}", path.to_string_lossy());
            std::process::exit(2);
        }
    }
}
