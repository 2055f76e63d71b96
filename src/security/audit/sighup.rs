//! The SIGHUP hook: the handler only bumps a counter (async-signal-safe); the writer
//! compares it before each write and on each tick, and reopens the file when it changed.
//! The admin server installs it by default when SIGHUP is at its default action (which
//! terminates the process), so a `kill -HUP` meant for the audit log never kills the host.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub(super) static HUP_GEN: AtomicU64 = AtomicU64::new(0);
static HUP_INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    HUP_GEN.fetch_add(1, Ordering::Relaxed);
}

/// Whether SIGHUP is at its default action (terminate): no handler, not ignored.
pub(crate) fn at_default_action() -> bool {
    // SAFETY: `sigaction` with a null new action only reads the current one into `old`, a
    // zeroed (valid) struct we own.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    let read = unsafe { libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) };
    read == 0 && old.sa_sigaction == libc::SIG_DFL
}

pub(super) fn install() -> Result<(), String> {
    if HUP_INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    let handler = on_sighup as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: `sigaction` with a null new action only reads the current one into `old`, a
    // zeroed (valid) struct we own.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    if unsafe { libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    if old.sa_sigaction != libc::SIG_DFL
        && old.sa_sigaction != libc::SIG_IGN
        && old.sa_sigaction != handler
    {
        return Err(
            "the process already handles SIGHUP; call AuditLog::reopen() from that handler instead"
                .into(),
        );
    }
    // SAFETY: `new` is fully initialized; the handler only does an atomic add, which is
    // async-signal-safe.
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = handler;
    new.sa_flags = libc::SA_RESTART;
    unsafe { libc::sigemptyset(&mut new.sa_mask) };
    if unsafe { libc::sigaction(libc::SIGHUP, &new, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    HUP_INSTALLED.store(true, Ordering::Release);
    Ok(())
}
