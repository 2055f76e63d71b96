//! Secrets from the environment or from files: `PRODBG_TOKENS` or `PRODBG_TOKENS_FILE`,
//! `PRODBG_AUDIT_KEY` or `PRODBG_AUDIT_KEY_FILE`. A secret variable is removed from the
//! environment once read, and on Linux its text is wiped from the block the kernel shows as
//! `/proc/<pid>/environ`, so neither children nor other processes of the user find it there.
//!
//! Removing a variable is not thread-safe against code that reads the environment at the same
//! time without Rust's lock (C libraries calling `getenv`): [`crate::Admin::from_env`] is meant
//! to run at the start of `main`, before the host starts threads.

use std::io::Read;

use crate::error::Error;

/// Largest secret file read, in bytes.
pub(crate) const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The secret held by `var`, or by the file named in `file_var`, or `None` when neither is
/// set; removes `var` from the environment either way. Both set, an unreadable, oversized or
/// non-UTF-8 file, or a non-UTF-8 variable are errors naming the variable (and the path),
/// never the secret. A file's trailing newlines are trimmed (`echo … > file`, Kubernetes
/// secrets written by hand, systemd credentials).
pub(crate) fn secret(var: &str, file_var: &str) -> Result<Option<String>, Error> {
    let value = std::env::var_os(var);
    if value.is_some() {
        remove(var);
    }
    let file = std::env::var_os(file_var);
    match (value, file) {
        (Some(_), Some(_)) => Err(Error::Config(format!(
            "both {var} and {file_var} are set: set one of them"
        ))),
        (Some(v), None) => v
            .into_string()
            .map(Some)
            .map_err(|_| Error::Config(format!("{var} is not valid UTF-8"))),
        (None, Some(path)) => {
            let path = std::path::PathBuf::from(path);
            if path.as_os_str().is_empty() {
                return Err(Error::Config(format!("{file_var} is set but empty")));
            }
            read_secret_file(&path)
                .map(Some)
                .map_err(|why| Error::Config(format!("{file_var}: {}: {why}", path.display())))
        }
        (None, None) => Ok(None),
    }
}

/// A secret file's text, trailing newlines trimmed.
fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "it is larger than {MAX_SECRET_FILE_BYTES} bytes, too large for a secret"
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| "it is not valid UTF-8".to_string())?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Removes `var` from the environment and wipes its text from the process's initial
/// environment block (what `/proc/<pid>/environ` shows).
fn remove(var: &str) {
    #[cfg(target_os = "linux")]
    let initial = initial_entry(var);
    std::env::remove_var(var);
    #[cfg(target_os = "linux")]
    if let Some((start, len)) = initial {
        // SAFETY: `initial_entry` checked that these bytes lie in the initial environment
        // block, which stays mapped and writable for the life of the process (it is on the
        // initial stack), and `remove_var` just took the environment's last pointer to them.
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, len) };
    }
}

/// Where `NAME=value` lies (start, length) when it is in the initial environment block.
#[cfg(target_os = "linux")]
fn initial_entry(var: &str) -> Option<(usize, usize)> {
    let (env_start, env_end) = environ_block()?;
    let name = std::ffi::CString::new(var).ok()?;
    // SAFETY: `getenv` gets a NUL-terminated name; the pointer it returns, if any, points into
    // a NUL-terminated string that stays valid at least until the environment changes.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: `value` is a NUL-terminated string (above).
    let value_len = unsafe { libc::strlen(value) };
    let start = (value as usize).checked_sub(var.len() + 1)?;
    let end = value as usize + value_len;
    (start >= env_start && end <= env_end).then_some((start, end - start))
}

/// `env_start` and `env_end` of `/proc/self/stat` (fields 50 and 51, Linux 3.5+).
#[cfg(target_os = "linux")]
fn environ_block() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(50 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_trimmed_bounded_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "s3cr3t-from-a-file-0123456789\n\n").unwrap();
        // Variables unique to this test: nothing else in the test binary reads them.
        let (var, file_var) = ("PRODBG_TEST_ENV_SECRET", "PRODBG_TEST_ENV_SECRET_FILE");
        std::env::set_var(file_var, &file);
        assert_eq!(
            secret(var, file_var).unwrap().as_deref(),
            Some("s3cr3t-from-a-file-0123456789")
        );
        std::env::set_var(var, "s3cr3t-from-the-variable-0123");
        let err = secret(var, file_var).unwrap_err().to_string();
        assert!(err.contains("both") && !err.contains("s3cr3t"), "{err}");
        assert!(std::env::var_os(var).is_none(), "removed even on error");
        std::env::set_var(file_var, dir.path().join("missing"));
        let err = secret(var, file_var).unwrap_err().to_string();
        assert!(err.contains(file_var) && err.contains("missing"), "{err}");
        std::fs::write(&file, vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        std::env::set_var(file_var, &file);
        let err = secret(var, file_var).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        std::env::remove_var(file_var);
        assert_eq!(secret(var, file_var).unwrap(), None);
    }

    #[test]
    fn the_initial_environment_block_is_found() {
        let (start, end) = environ_block().unwrap();
        assert!(start < end);
        // PATH (or HOME) came with the process: it lies in the block.
        let var = ["PATH", "HOME"]
            .into_iter()
            .find(|v| std::env::var_os(v).is_some())
            .unwrap();
        let (s, len) = initial_entry(var).unwrap();
        assert!(s >= start && s + len <= end);
    }
}
