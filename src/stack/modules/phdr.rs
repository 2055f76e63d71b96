//! Reading one loaded object from its program headers, in memory, while the loader lock
//! (held by `dl_iterate_phdr` around its callback) keeps it mapped: segments, build-id,
//! unwind sections, and the vDSO's image.

use std::ffi::CStr;
use std::path::PathBuf;
use std::sync::Arc;

use super::{ExecSegment, Module, ModuleKind, SectionBytes, UnwindSections};

/// ELF note type of a GNU build-id.
const NT_GNU_BUILD_ID: u32 = 3;

/// Reads one object while the loader lock keeps it mapped. With `copy_only`, only the listed
/// `(name, bias)` objects are read, and their unwind sections are copied.
///
/// # Safety
/// `info` must be a valid `dl_phdr_info` of a currently mapped object.
pub(super) unsafe fn read_object(
    info: &libc::dl_phdr_info,
    vdso: u64,
    copy_only: Option<&[(String, u64)]>,
) -> Option<Module> {
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let bias = info.dlpi_addr;
    if let Some(list) = copy_only {
        if !list.iter().any(|(n, b)| *n == name && *b == bias) {
            return None;
        }
    }
    // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    let phdr_addr = info.dlpi_phdr as u64;
    let kind = if vdso != 0 && phdr_addr >= vdso && phdr_addr - vdso < 4096 {
        ModuleKind::Vdso
    } else if name.is_empty() {
        ModuleKind::Executable
    } else {
        ModuleKind::SharedObject
    };
    let loads: Vec<&libc::Elf64_Phdr> =
        phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD).collect();
    let lo = loads.iter().map(|p| p.p_vaddr).min()?;
    let hi = loads.iter().map(|p| p.p_vaddr + p.p_memsz).max()?;
    let exec_segments = loads
        .iter()
        .filter(|p| p.p_flags & libc::PF_X != 0)
        .map(|p| ExecSegment {
            svma: p.p_vaddr..p.p_vaddr + p.p_memsz,
            file_offset: p.p_offset,
        })
        .collect();
    // SAFETY: the segments are mapped at `bias + p_vaddr` (caller's contract).
    let build_id = unsafe { build_id(phdrs, bias) };
    // SAFETY: as above.
    let unwind = unsafe { unwind_sections(phdrs, &loads, bias, copy_only.is_some()) };
    // SAFETY: the vDSO's ELF header is mapped at `vdso` (AT_SYSINFO_EHDR).
    let image = (kind == ModuleKind::Vdso).then(|| unsafe { vdso_image(vdso, hi - lo) });
    let path = (kind == ModuleKind::SharedObject).then(|| PathBuf::from(&name));
    Some(Module {
        name,
        path,
        kind,
        bias,
        avma_range: bias + lo..bias + hi,
        exec_segments,
        build_id,
        unwind,
        image,
    })
}

/// The vDSO's ELF image: its loaded span plus the section headers that follow it (which
/// the symbolizer needs), clamped to the whole pages the kernel maps.
///
/// # Safety
/// `ehdr` must be the vDSO's mapped ELF header and `span` its `PT_LOAD` extent.
unsafe fn vdso_image(ehdr: u64, span: u64) -> SectionBytes {
    // SAFETY: caller's contract; an Elf64_Ehdr is 64 bytes and the mapping is ≥ 1 page.
    let h = unsafe { &*(ehdr as *const libc::Elf64_Ehdr) };
    let sh_end = h
        .e_shoff
        .saturating_add(u64::from(h.e_shnum) * u64::from(h.e_shentsize));
    let mapped = (span + 4095) & !4095;
    SectionBytes::Mapped {
        ptr: ehdr as *const u8,
        len: span.max(sh_end).min(mapped) as usize,
    }
}

/// The GNU build-id from the `PT_NOTE` segments.
///
/// # Safety
/// The object's segments must be mapped at `bias + p_vaddr`.
unsafe fn build_id(phdrs: &[libc::Elf64_Phdr], bias: u64) -> Option<Vec<u8>> {
    for ph in phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE) {
        // SAFETY: a PT_NOTE segment lies inside a mapped PT_LOAD segment.
        let notes = unsafe {
            std::slice::from_raw_parts((bias + ph.p_vaddr) as *const u8, ph.p_memsz as usize)
        };
        let align = if ph.p_align == 8 { 8 } else { 4 };
        let pad = |n: usize| (n + align - 1) & !(align - 1);
        let word =
            |i: usize| u32::from_ne_bytes([notes[i], notes[i + 1], notes[i + 2], notes[i + 3]]);
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let (namesz, descsz, kind) = (word(at) as usize, word(at + 4) as usize, word(at + 8));
            let name_at = at + 12;
            let desc_at = name_at + pad(namesz);
            if desc_at + descsz > notes.len() {
                break;
            }
            if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
                return Some(notes[desc_at..desc_at + descsz].to_vec());
            }
            at = desc_at + pad(descsz);
        }
    }
    None
}

/// Finds `.eh_frame_hdr` (`PT_GNU_EH_FRAME`) and `.eh_frame` (from the header's pointer to
/// its zero terminator, bounded by the `PT_LOAD` segment holding it); copies them if `copy`.
///
/// # Safety
/// The object's segments must be mapped at `bias + p_vaddr`.
unsafe fn unwind_sections(
    phdrs: &[libc::Elf64_Phdr],
    loads: &[&libc::Elf64_Phdr],
    bias: u64,
    copy: bool,
) -> Option<UnwindSections> {
    let hdr_ph = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME)?;
    let hdr_svma = hdr_ph.p_vaddr..hdr_ph.p_vaddr + hdr_ph.p_memsz;
    // SAFETY: PT_GNU_EH_FRAME lies inside a mapped PT_LOAD segment.
    let hdr = unsafe {
        std::slice::from_raw_parts(
            (bias + hdr_svma.start) as *const u8,
            hdr_ph.p_memsz as usize,
        )
    };
    let bases = gimli::BaseAddresses::default().set_eh_frame_hdr(hdr_svma.start);
    let parsed = gimli::EhFrameHdr::new(hdr, gimli::NativeEndian)
        .parse(&bases, 8)
        .ok()?;
    let gimli::Pointer::Direct(eh_start) = parsed.eh_frame_ptr() else {
        return None;
    };
    let seg = loads
        .iter()
        .find(|p| (p.p_vaddr..p.p_vaddr + p.p_filesz).contains(&eh_start))?;
    let seg_end = seg.p_vaddr + seg.p_filesz;
    // SAFETY: `eh_start..seg_end` lies in a mapped PT_LOAD segment.
    let avail = unsafe {
        std::slice::from_raw_parts(
            (bias + eh_start) as *const u8,
            (seg_end - eh_start) as usize,
        )
    };
    let len = eh_frame_len(avail);
    let bytes = |s: &[u8]| {
        if copy {
            SectionBytes::Copied(Arc::from(s))
        } else {
            SectionBytes::Mapped {
                ptr: s.as_ptr(),
                len: s.len(),
            }
        }
    };
    Some(UnwindSections {
        eh_frame_hdr_svma: hdr_svma,
        eh_frame_hdr: bytes(hdr),
        eh_frame_svma: eh_start..eh_start + len as u64,
        eh_frame: bytes(&avail[..len]),
    })
}

/// Length of `.eh_frame` at the start of `bytes`: CIE/FDE records up to and including the
/// zero-length terminator, or all of `bytes` when there is none.
fn eh_frame_len(bytes: &[u8]) -> usize {
    let mut at = 0usize;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]);
        let next = match len {
            0 => return at + 4,
            0xffff_ffff => bytes.get(at + 4..at + 12).and_then(|l| {
                let mut w = [0u8; 8];
                w.copy_from_slice(l);
                (at + 12).checked_add(usize::try_from(u64::from_ne_bytes(w)).ok()?)
            }),
            n => (at + 4).checked_add(n as usize),
        };
        match next {
            Some(n) if n <= bytes.len() => at = n,
            _ => break,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eh_frame_len_stops_at_terminator() {
        let mut b = vec![8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 9, 9];
        assert_eq!(eh_frame_len(&b), 16);
        b.truncate(12);
        assert_eq!(eh_frame_len(&b), 12);
    }
}
