//! What a signal handler needs to know about the code it interrupted.

use std::ffi::c_void;

/// Whether [`interrupted_pc`] can read the interrupted instruction on this platform.
#[cfg_attr(not(feature = "cpu"), allow(dead_code))]
pub(crate) const PC_KNOWN: bool = cfg!(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_env = "gnu"
));

/// The instruction a signal interrupted, from the `ucontext_t` an `SA_SIGINFO` handler gets as
/// its third argument; 0 where [`PC_KNOWN`] is false.
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
pub(crate) fn interrupted_pc(context: *mut c_void) -> usize {
    // SAFETY: with SA_SIGINFO the kernel passes a valid `ucontext_t` as the third argument.
    unsafe {
        (*(context as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as usize
    }
}

/// The instruction a signal interrupted (see the x86_64 version).
#[cfg(all(target_arch = "aarch64", target_env = "gnu"))]
pub(crate) fn interrupted_pc(context: *mut c_void) -> usize {
    // SAFETY: with SA_SIGINFO the kernel passes a valid `ucontext_t` as the third argument.
    unsafe { (*(context as *const libc::ucontext_t)).uc_mcontext.pc as usize }
}

/// Unknown on this platform.
#[cfg(not(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_env = "gnu"
)))]
pub(crate) fn interrupted_pc(_context: *mut c_void) -> usize {
    0
}
