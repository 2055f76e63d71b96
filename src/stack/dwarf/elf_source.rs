//! The bytes of an ELF file to symbolize: a read-only private mapping of the file (pages
//! come from the page cache and leave RSS when dropped or released), or an in-memory image
//! (the vDSO).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, UncheckedAdvice};

/// Where an ELF image comes from.
pub(crate) enum ElfBytes<'a> {
    /// A read-only mapping of a file, and the file (for `pread`s that bypass the mapping).
    Mapped(Mmap, File),
    /// Memory that outlives the call (the vDSO image).
    Memory(&'a [u8]),
}

impl<'a> ElfBytes<'a> {
    /// Maps `path` read-only. Read-ahead is left on: with `MADV_RANDOM` a cold page cache
    /// costs one 4 KB read per fault (700 ms instead of 200 ms for a 74 MB binary), and
    /// read-ahead fills the page cache, not this process's RSS.
    pub(crate) fn map(path: &Path) -> io::Result<ElfBytes<'static>> {
        let file = File::open(path)?;
        // SAFETY: a read-only private mapping; if the file is truncated meanwhile, reads past
        // the new end would fault. Binaries are replaced by rename on deploy, not truncated
        // in place (and `/proc/self/exe` stays the running inode).
        let map = unsafe { Mmap::map(&file)? };
        Ok(ElfBytes::Mapped(map, file))
    }

    /// The image's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            ElfBytes::Mapped(m, _) => m,
            ElfBytes::Memory(b) => b,
        }
    }

    /// The file, when the bytes come from one.
    pub(crate) fn file(&self) -> Option<&File> {
        match self {
            ElfBytes::Mapped(_, f) => Some(f),
            ElfBytes::Memory(_) => None,
        }
    }

    /// Drops this process's page-table entries for the mapped file, so the pages read so far
    /// stop counting in RSS (they stay in the page cache; a later read faults them back).
    pub(crate) fn release_pages(&self) {
        if let ElfBytes::Mapped(m, _) = self {
            // SAFETY: the mapping is read-only and private, so no data can be lost: dropped
            // pages are re-read from the file on the next access. No reference into the
            // mapping becomes invalid.
            let _ = unsafe { m.unchecked_advise(UncheckedAdvice::DontNeed) };
        }
    }
}

/// The separate debug file of a build-id (`/usr/lib/debug/.build-id/ab/cdef….debug`, as
/// Debian's `-dbg`/`-dbgsym` packages install), if present.
pub(crate) fn debug_file_for_build_id(build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    let p = PathBuf::from(format!("/usr/lib/debug/.build-id/{first:02x}/{hex}.debug"));
    p.is_file().then_some(p)
}
