//! A snapshot of the modules (executable, shared objects, the vDSO) loaded in this process,
//! taken with `dl_iterate_phdr` **outside any signal handler**.
//!
//! For each module it records what the unwinder and the symbolizer need: path, load bias
//! (AVMA = SVMA + bias), executable segments with their file offsets, the GNU build-id (from
//! `PT_NOTE`), and the `.eh_frame_hdr` / `.eh_frame` bytes.
//!
//! # Why the unwind sections are borrowed, not copied
//! The bytes stay where the loader mapped them: copying would add the whole `.eh_frame` of
//! every module (MBs for a large binary) to RSS, twice (the touched file pages plus the copy),
//! while the unwinder only reads the few pages its binary search lands on. Borrowing is sound
//! because nothing can unmap those pages while a [`ModuleSet`] lives:
//! - the main executable and the vDSO are never unmapped;
//! - every other object is *pinned*: after the iteration, `dlopen(name, RTLD_NOLOAD)` takes a
//!   reference on it (checked with `dlinfo(RTLD_DI_LINKMAP)` to be the object seen at that
//!   bias), so a `dlclose` by the host cannot unload it; the reference is dropped with the set.
//! - an object that cannot be pinned (loaded in another `dlmopen` namespace, or unloaded
//!   between the iteration and the pin) gets its sections *copied* during a second
//!   `dl_iterate_phdr`, whose loader lock keeps it mapped while it is read; if it is gone by
//!   then it is left out.
//!
//! `dlopen`/`dlclose` are only called outside the iteration callback (calling them under
//! `dl_iterate_phdr`'s lock would invert the loader's lock order).

use std::ffi::{c_int, c_void, CString};
use std::fmt;
use std::ops::{Deref, Range};
use std::path::PathBuf;
use std::ptr;
use std::sync::Arc;

mod phdr;
use phdr::read_object;

/// Bytes of an unwind section: borrowed from the module's mapping or an owned copy.
#[derive(Clone)]
pub(crate) enum SectionBytes {
    /// Points into a mapped module that stays mapped while the owning [`ModuleSet`] lives.
    Mapped {
        /// Start of the bytes.
        ptr: *const u8,
        /// Length in bytes.
        len: usize,
    },
    /// Copied out of a module that could not be pinned.
    Copied(Arc<[u8]>),
}

// SAFETY: the bytes are immutable; `Mapped` points to read-only memory kept mapped by the
// owning `ModuleSet` (see the module docs), so sharing and sending the pointer is fine.
unsafe impl Send for SectionBytes {}
// SAFETY: as above.
unsafe impl Sync for SectionBytes {}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: `ptr..ptr+len` is mapped, readable and immutable while the set lives.
            SectionBytes::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            SectionBytes::Copied(b) => b,
        }
    }
}

impl Default for SectionBytes {
    /// Empty bytes.
    fn default() -> Self {
        SectionBytes::Copied(Arc::from(&[][..]))
    }
}

impl fmt::Debug for SectionBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            SectionBytes::Mapped { .. } => "mapped",
            SectionBytes::Copied(_) => "copied",
        };
        write!(f, "{kind} {} bytes", self.len())
    }
}

/// A module's `.eh_frame_hdr` and `.eh_frame`, with their stated addresses.
#[derive(Debug, Clone)]
pub(crate) struct UnwindSections {
    /// SVMA range of `.eh_frame_hdr` (from `PT_GNU_EH_FRAME`).
    pub(crate) eh_frame_hdr_svma: Range<u64>,
    /// The `.eh_frame_hdr` bytes.
    pub(crate) eh_frame_hdr: SectionBytes,
    /// SVMA range of `.eh_frame` (start from the header, end at its zero terminator).
    pub(crate) eh_frame_svma: Range<u64>,
    /// The `.eh_frame` bytes.
    pub(crate) eh_frame: SectionBytes,
}

/// What kind of object a [`Module`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModuleKind {
    /// The main executable.
    Executable,
    /// A shared object (including the dynamic loader).
    SharedObject,
    /// The kernel's vDSO: no file on disk, its ELF image is in memory.
    Vdso,
}

/// An executable `PT_LOAD` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecSegment {
    /// Stated addresses (`p_vaddr .. p_vaddr + p_memsz`).
    pub(crate) svma: Range<u64>,
    /// Offset in the file of `svma.start` (`p_offset`).
    pub(crate) file_offset: u64,
}

/// One loaded object.
#[derive(Debug)]
pub(crate) struct Module {
    /// Name the loader reports (`dlpi_name`); the executable's path for the executable.
    pub(crate) name: String,
    /// Path of the file on disk (`/proc/self/exe`'s target for the executable, without a
    /// ` (deleted)` suffix); `None` for the vDSO.
    pub(crate) path: Option<PathBuf>,
    /// What kind of object this is.
    pub(crate) kind: ModuleKind,
    /// Load bias (`dlpi_addr`): actual address = stated address + bias.
    pub(crate) bias: u64,
    /// Actual addresses spanned by all its `PT_LOAD` segments.
    pub(crate) avma_range: Range<u64>,
    /// Its executable segments.
    pub(crate) exec_segments: Vec<ExecSegment>,
    /// GNU build-id from its `PT_NOTE` segments.
    pub(crate) build_id: Option<Vec<u8>>,
    /// Unwind sections, when it has `PT_GNU_EH_FRAME`.
    pub(crate) unwind: Option<UnwindSections>,
    /// For the vDSO: its whole ELF image in memory (never unmapped).
    pub(crate) image: Option<SectionBytes>,
}

impl Module {
    /// Whether `avma` lies in one of its executable segments.
    #[cfg(test)]
    pub(crate) fn contains_code(&self, avma: u64) -> bool {
        let svma = avma.wrapping_sub(self.bias);
        self.exec_segments.iter().any(|s| s.svma.contains(&svma))
    }

    /// The stated address of an actual address in this module.
    pub(crate) fn svma(&self, avma: u64) -> u64 {
        avma.wrapping_sub(self.bias)
    }

    /// Build-id as lowercase hex, as pprof, Parca and debuginfod spell it.
    pub(crate) fn build_id_hex(&self) -> Option<String> {
        use fmt::Write as _;
        self.build_id.as_ref().map(|id| {
            id.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
        })
    }

    /// The vDSO's in-memory ELF image (`None` for other modules, whose file is at `path`).
    pub(crate) fn image(&self) -> Option<&[u8]> {
        self.image.as_deref()
    }
}

/// The loader's counters of objects added and removed (`dlpi_adds`, `dlpi_subs`): when they
/// differ from a snapshot's, modules were loaded or unloaded since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LoaderGeneration {
    /// Objects loaded since the process started.
    pub(crate) adds: u64,
    /// Objects unloaded since the process started.
    pub(crate) subs: u64,
}

/// The loader's current [`LoaderGeneration`]: one `dl_iterate_phdr` step (takes the loader's
/// lock briefly; never call it from a signal handler).
pub(crate) fn loader_generation() -> LoaderGeneration {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info of `size` bytes and our pointer.
        unsafe {
            let out = &mut *data.cast::<LoaderGeneration>();
            if size >= std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs) + 8 {
                out.adds = (*info).dlpi_adds;
                out.subs = (*info).dlpi_subs;
            }
        }
        1 // stop after the first object: the counters are the same in every call
    }
    let mut generation = LoaderGeneration::default();
    // SAFETY: the callback matches the contract and `generation` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first), ptr::from_mut(&mut generation).cast()) };
    generation
}

/// The modules loaded when [`ModuleSet::snapshot`] ran. Keeps shared objects pinned (see the
/// module docs) until dropped.
#[derive(Debug)]
pub(crate) struct ModuleSet {
    /// Sorted by `avma_range.start`.
    modules: Vec<Module>,
    generation: LoaderGeneration,
    /// Held for their `Drop` (which unpins).
    #[cfg_attr(not(test), allow(dead_code))]
    pins: Vec<Pin>,
}

impl ModuleSet {
    /// Enumerates the loaded modules. Outside signal handlers only (it takes the loader's lock
    /// and allocates). Costs well under a millisecond for a handful of modules.
    pub(crate) fn snapshot() -> std::io::Result<ModuleSet> {
        let vdso = vdso_address();
        let mut raw = iterate(vdso, None);
        let exe_path = std::fs::read_link("/proc/self/exe").ok().map(|p| {
            let s = p.to_string_lossy();
            PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
        });
        let mut pins = Vec::new();
        let mut unpinned = Vec::new();
        for (i, m) in raw.modules.iter_mut().enumerate() {
            match m.kind {
                ModuleKind::Executable => {
                    m.path.clone_from(&exe_path);
                    m.name = exe_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                }
                ModuleKind::Vdso => {}
                ModuleKind::SharedObject => match Pin::new(&m.name, m.bias) {
                    Some(pin) => pins.push(pin),
                    None => unpinned.push(i),
                },
            }
        }
        if !unpinned.is_empty() {
            // Copy the sections of objects we could not pin, under the loader's lock.
            let wanted: Vec<(String, u64)> = unpinned
                .iter()
                .map(|&i| (raw.modules[i].name.clone(), raw.modules[i].bias))
                .collect();
            let copied = iterate(vdso, Some(&wanted));
            for &i in unpinned.iter().rev() {
                let m = raw.modules.remove(i);
                if let Some(c) = copied
                    .modules
                    .iter()
                    .find(|c| c.name == m.name && c.bias == m.bias)
                {
                    raw.modules.push(Module {
                        unwind: c.unwind.clone(),
                        ..m
                    });
                }
            }
        }
        raw.modules.sort_by_key(|m| m.avma_range.start);
        Ok(ModuleSet {
            modules: raw.modules,
            generation: raw.generation,
            pins,
        })
    }

    /// The modules, sorted by address.
    pub(crate) fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// The module whose `PT_LOAD` span contains `avma`.
    #[cfg(test)]
    pub(crate) fn find(&self, avma: u64) -> Option<&Module> {
        let i = self.modules.partition_point(|m| m.avma_range.start <= avma);
        let m = self.modules.get(i.checked_sub(1)?)?;
        m.avma_range.contains(&avma).then_some(m)
    }

    /// The loader's counters when the snapshot was taken.
    pub(crate) fn generation(&self) -> LoaderGeneration {
        self.generation
    }

    /// Whether a module was loaded or unloaded since the snapshot (one cheap
    /// `dl_iterate_phdr` step; outside signal handlers only).
    #[cfg(test)]
    pub(crate) fn is_stale(&self) -> bool {
        loader_generation() != self.generation
    }

    /// How many shared objects are pinned by this set (the others are the executable, the
    /// vDSO, and objects whose sections were copied).
    #[cfg(test)]
    pub(crate) fn pinned(&self) -> usize {
        self.pins.len()
    }
}

/// A `dlopen(RTLD_NOLOAD)` reference that keeps a shared object mapped.
#[derive(Debug)]
struct Pin(*mut c_void);

// SAFETY: a dlopen handle is a process-wide token; dlclose may run on any thread.
unsafe impl Send for Pin {}
// SAFETY: the handle is only used by `Drop`.
unsafe impl Sync for Pin {}

impl Pin {
    /// Pins the object called `name` if it is still the one loaded at `bias`.
    fn new(name: &str, bias: u64) -> Option<Pin> {
        let cname = CString::new(name).ok()?;
        // SAFETY: a valid C string; RTLD_NOLOAD never loads anything new, it only takes a
        // reference on an object already loaded under that name.
        let handle = unsafe { libc::dlopen(cname.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            return None;
        }
        let pin = Pin(handle);
        let mut map: *mut libc::c_void = ptr::null_mut();
        // SAFETY: RTLD_DI_LINKMAP stores a `struct link_map *` into `map`.
        let rc = unsafe {
            libc::dlinfo(
                handle,
                libc::RTLD_DI_LINKMAP,
                ptr::from_mut(&mut map).cast(),
            )
        };
        // `struct link_map` starts with `ElfW(Addr) l_addr`, the load bias.
        // SAFETY: on success `map` points to the object's live link_map.
        let same = rc == 0 && !map.is_null() && unsafe { *map.cast::<u64>() } == bias;
        same.then_some(pin)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful dlopen and is closed once.
        unsafe { libc::dlclose(self.0) };
    }
}

/// The vDSO's ELF header address (`AT_SYSINFO_EHDR`), 0 when there is none.
fn vdso_address() -> u64 {
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) }
}

struct Iterated {
    modules: Vec<Module>,
    generation: LoaderGeneration,
}

struct IterState<'a> {
    vdso: u64,
    /// `Some`: copy sections, and only for these (name, bias); `None`: borrow, every object.
    copy_only: Option<&'a [(String, u64)]>,
    out: Iterated,
}

/// Runs `dl_iterate_phdr` and reads every object (or, when copying, the listed ones).
fn iterate(vdso: u64, copy_only: Option<&[(String, u64)]>) -> Iterated {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info of `size` bytes and our state. The
        // object stays mapped for the duration of the callback (loader lock).
        unsafe {
            let state = &mut *data.cast::<IterState<'_>>();
            let info = &*info;
            if size >= std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs) + 8 {
                state.out.generation = LoaderGeneration {
                    adds: info.dlpi_adds,
                    subs: info.dlpi_subs,
                };
            }
            if let Some(m) = read_object(info, state.vdso, state.copy_only) {
                state.out.modules.push(m);
            }
        }
        0
    }
    let mut state = IterState {
        vdso,
        copy_only,
        out: Iterated {
            modules: Vec::new(),
            generation: LoaderGeneration::default(),
        },
    };
    // SAFETY: the callback matches the contract and `state` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), ptr::from_mut(&mut state).cast()) };
    state.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_has_exe_libc_and_vdso_with_unwind_info() {
        let set = ModuleSet::snapshot().expect("snapshot");
        let exe = set
            .modules()
            .iter()
            .find(|m| m.kind == ModuleKind::Executable)
            .expect("exe");
        assert!(exe.unwind.is_some());
        assert!(exe.build_id.is_some(), "rustc links with --build-id");
        let here = snapshot_has_exe_libc_and_vdso_with_unwind_info as fn() as usize as u64;
        assert!(exe.contains_code(here));
        assert_eq!(set.find(here).map(|m| m.kind), Some(ModuleKind::Executable));
        let libc = set
            .modules()
            .iter()
            .find(|m| m.name.contains("libc.so"))
            .expect("libc");
        assert!(libc.unwind.is_some() && libc.path.is_some());
        assert!(matches!(
            libc.unwind.as_ref().map(|u| &u.eh_frame),
            Some(SectionBytes::Mapped { .. })
        ));
        let vdso = set
            .modules()
            .iter()
            .find(|m| m.kind == ModuleKind::Vdso)
            .expect("vdso");
        assert!(vdso.image().is_some_and(|i| i.starts_with(b"\x7fELF")));
        assert!(!set.is_stale());
        let shared = set
            .modules()
            .iter()
            .filter(|m| m.kind == ModuleKind::SharedObject)
            .count();
        assert_eq!(
            set.pinned(),
            shared,
            "every shared object (ld.so included) is pinned, none copied"
        );
    }
}
