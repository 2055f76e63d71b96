//! File helpers: opening, finding the last good record, rotated names.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chain::{open_line, OpenedLine};

/// The open audit file and its identity (to notice a rename).
#[derive(Debug)]
pub(super) struct OpenFile {
    pub(super) file: Arc<File>,
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) len: u64,
    pub(super) regular: bool,
}

/// `base.N`.
pub(crate) fn rotated_path(base: &Path, n: usize) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens (or creates, mode 0600) the audit file for appending, refusing a symbolic link
/// (`O_NOFOLLOW`) and an existing regular file that another user owns or that others can write
/// or read (mode & 0o026): the audit trail must be this process's alone.
pub(super) fn open_file(path: &Path) -> io::Result<OpenFile> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .read(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    e.kind(),
                    "the path is a symbolic link; refused (the audit file is opened with O_NOFOLLOW): give the real path",
                )
            } else {
                e
            }
        })?;
    let m = file.metadata()?;
    if m.is_file() {
        check_owner_mode(m.uid(), m.mode())?;
    }
    Ok(OpenFile {
        file: Arc::new(file),
        dev: m.dev(),
        ino: m.ino(),
        len: if m.is_file() { m.len() } else { 0 },
        regular: m.is_file(),
    })
}

/// An existing audit file must be owned by this process's effective user and neither
/// group/other-writable nor other-readable.
pub(super) fn check_owner_mode(uid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if uid != euid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the file is owned by uid {uid}, not by this process's user (uid {euid}); refused: chown it or use another path"),
        ));
    }
    if mode & 0o026 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the file's mode is {:04o}: others can read it or others/group can write it; refused: chmod 600 it", mode & 0o7777),
        ));
    }
    Ok(())
}

/// The end of a file: its last line that parses as a record, and where it ends.
#[derive(Debug, Default)]
pub(super) struct Tail {
    pub(super) last: Option<OpenedLine>,
    pub(super) good_end: u64,
    pub(super) needs_newline: bool,
}

/// Finds the last parsable record in the first `len` bytes of `file`, reading backwards in
/// growing windows (so a huge file with a good tail costs one 64 KiB read).
pub(super) fn scan_tail(file: &File, len: u64) -> io::Result<Tail> {
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = vec![0u8; (len - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        let segments: Vec<&[u8]> = buf.split(|b| *b == b'\n').collect();
        let n = segments.len();
        // Offsets of each segment's end (exclusive, before its `\n`).
        let mut ends = Vec::with_capacity(n);
        let mut off = start;
        for s in &segments {
            off += s.len() as u64;
            ends.push(off);
            off += 1;
        }
        for i in (0..n).rev() {
            if i == 0 && start > 0 {
                break; // may be the middle of a line
            }
            let terminated = i + 1 < n;
            if segments[i].is_empty() {
                continue;
            }
            if let Ok(line) = open_line(segments[i]) {
                return Ok(Tail {
                    last: Some(line),
                    good_end: if terminated { ends[i] + 1 } else { ends[i] },
                    needs_newline: !terminated,
                });
            }
        }
        if start == 0 {
            return Ok(Tail::default());
        }
        window = window.saturating_mul(4);
    }
}

pub(super) fn last_record_of(path: &Path) -> Option<OpenedLine> {
    let file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    scan_tail(&file, len).ok()?.last
}
