//! DWARF strings read with `pread` instead of through the mapping.
//!
//! Names live in `.debug_str` (21 MB in a 74 MB `debug = 1` binary) at scattered offsets.
//! Touching one through the mapping makes the kernel map up to 64 KB around it
//! (fault-around, not disabled by `MADV_RANDOM`): ~90 names of one unit added ~6 MB of RSS.
//! A `pread` copies just the string out of the page cache. Reads are cached for the call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use gimli::AttributeValue;

use super::Slice;

/// Longest string read (Rust generic names run to a few KB).
const MAX_LEN: usize = 64 << 10;

/// Where `.debug_str` / `.debug_line_str` are in the file: `(file offset, size)`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StrSections {
    pub(crate) debug_str: Option<(u64, u64)>,
    pub(crate) debug_line_str: Option<(u64, u64)>,
}

/// Resolves string attributes; by `pread` when a file is given, else from the sections.
pub(crate) struct Strings<'f> {
    file: Option<&'f File>,
    sections: StrSections,
    cache: RefCell<HashMap<(bool, usize), Option<String>>>,
}

impl<'f> Strings<'f> {
    pub(crate) fn new(file: Option<&'f File>, sections: StrSections) -> Self {
        Self {
            file,
            sections,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// The string an attribute value names (inline, `.debug_str`, `.debug_line_str`, or via
    /// `.debug_str_offsets`).
    pub(crate) fn get<'a>(
        &self,
        dwarf: &gimli::Dwarf<Slice<'a>>,
        unit: &gimli::Unit<Slice<'a>>,
        v: AttributeValue<Slice<'a>>,
    ) -> Option<String> {
        let (line_str, offset) = match v {
            AttributeValue::String(s) => return Some(s.to_string_lossy().into_owned()),
            AttributeValue::DebugStrRef(o) => (false, o.0),
            AttributeValue::DebugLineStrRef(o) => (true, o.0),
            AttributeValue::DebugStrOffsetsIndex(i) => {
                (false, dwarf.string_offset(unit, i).ok()?.0)
            }
            other => {
                let s = dwarf.attr_string(unit, other).ok()?;
                return Some(s.to_string_lossy().into_owned());
            }
        };
        let section = if line_str {
            self.sections.debug_line_str
        } else {
            self.sections.debug_str
        };
        let (Some(file), Some((base, len))) = (self.file, section) else {
            let s = if line_str {
                dwarf.line_string(gimli::DebugLineStrOffset(offset)).ok()?
            } else {
                dwarf.string(gimli::DebugStrOffset(offset)).ok()?
            };
            return Some(s.to_string_lossy().into_owned());
        };
        self.cache
            .borrow_mut()
            .entry((line_str, offset))
            .or_insert_with(|| read_c_string(file, base, len, offset as u64))
            .clone()
    }
}

/// The NUL-terminated string at `offset` of a section at `base..base+len` of `file`.
fn read_c_string(file: &File, base: u64, len: u64, offset: u64) -> Option<String> {
    let end = base.checked_add(len)?;
    let mut pos = base.checked_add(offset)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while pos < end && out.len() < MAX_LEN {
        let want = buf
            .len()
            .min(usize::try_from(end - pos).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], pos).ok()?;
        if n == 0 {
            break;
        }
        if let Some(z) = buf[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..z]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&buf[..n]);
        pos += n as u64;
    }
    None
}
