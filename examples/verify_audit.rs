//! Verifies an audit log (a rotated set given its base path, or files oldest first).
//!
//! ```text
//! PRODBG_AUDIT_KEY=... cargo run --example verify_audit -- /var/log/svc/prodbg-audit.jsonl
//! cargo run --example verify_audit -- --unkeyed audit.jsonl-20260101 audit.jsonl
//! cargo run --example verify_audit -- --checkpoint 1234:9f86d0… audit.jsonl
//! cargo run --example verify_audit -- --strict audit.jsonl
//! ```
//! `--strict` also fails a log that is not complete: one that does not start at the chain's
//! start (its first file deleted or rotated away), has junk no record accounts for, files out
//! of order, a chain restart, a gap or a resume.
//! The key comes from `PRODBG_AUDIT_KEY` (same format as the writer: `hex:…`, 32+ hex digits,
//! or raw text). Without it, pass `--unkeyed` to check a plain SHA-256 chain. Exits 0 when
//! intact, 1 when the chain is broken or truncated, 2 on usage or I/O errors.

use std::path::PathBuf;

use prodbg::audit::{
    verify_audit_files_with, verify_audit_log_with, AuditKey, Checkpoint, VerifyError,
    VerifyOptions,
};

fn usage(msg: &str) -> ! {
    eprintln!(
        "{msg}\nusage: verify_audit [--unkeyed] [--strict] [--checkpoint RECORDS:HEAD_HASH] <base-or-files…>"
    );
    std::process::exit(2)
}

fn main() {
    let mut unkeyed = false;
    let mut options = VerifyOptions::default();
    let mut checkpoint = None;
    let mut files = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--unkeyed") => unkeyed = true,
            Some("--strict") => options = VerifyOptions::strict(),
            Some("--checkpoint") => {
                let v = args
                    .next()
                    .unwrap_or_else(|| usage("--checkpoint needs RECORDS:HEAD_HASH"));
                let v = v.to_string_lossy().into_owned();
                let (n, h) = v
                    .split_once(':')
                    .unwrap_or_else(|| usage("--checkpoint needs RECORDS:HEAD_HASH"));
                let n = n
                    .parse()
                    .unwrap_or_else(|_| usage("RECORDS must be a number"));
                checkpoint = Some(Checkpoint::anchor(n, h));
            }
            _ => files.push(PathBuf::from(a)),
        }
    }
    if files.is_empty() {
        usage("no file given");
    }
    let key = match AuditKey::from_env() {
        Ok(Some(k)) => Some(k),
        Ok(None) if unkeyed => None,
        Ok(None) => usage("PRODBG_AUDIT_KEY is not set (pass --unkeyed for a plain chain)"),
        Err(e) => usage(&e.to_string()),
    };
    let key_bytes = key.as_ref().map(AuditKey::as_bytes);
    let result = if files.len() == 1 {
        verify_audit_log_with(&files[0], key_bytes, checkpoint.as_ref(), options)
    } else {
        verify_audit_files_with(&files, key_bytes, checkpoint.as_ref(), options)
    };
    match result {
        Ok(report) => println!("{report}"),
        Err(e @ (VerifyError::Io { .. } | VerifyError::NoFiles(_))) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
        Err(e) => {
            println!("BROKEN: {e}");
            std::process::exit(1);
        }
    }
}
