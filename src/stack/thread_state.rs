//! What a thread is doing at a sample, from the kernel: its scheduler state
//! (`/proc/self/task/<tid>/stat`, field 3) and, for a sleeping thread, the system call it sleeps
//! in (`/proc/self/task/<tid>/syscall`, first field: the syscall number, or `running`).
//!
//! | state | kernel |
//! |---|---|
//! | `running` | `R`, on a CPU or about to be |
//! | `runnable` | `R`, and since its previous sample the thread waited longer for a CPU than it ran (`/proc/self/task/<tid>/schedstat`: run-queue delay grew more than CPU time) — CPU starvation |
//! | `futex` | `S` in `futex` / `futex_waitv`: a mutex, condition variable, channel, `park`, a join |
//! | `io` | `S` in a read, write, send, receive, accept, connect, poll, select, epoll or io_uring wait, a sync or sendfile; or `D` (uninterruptible sleep: disk I/O, page faults on slow storage) |
//! | `sleeping` | `S` in anything else: `nanosleep` / `clock_nanosleep` (`thread::sleep`), `wait4`, a signal wait, or no system call known |
//! | `stopped` | `T` or `t`: stopped by a signal or a debugger |
//! | `other` | anything else: zombie, dead, idle kernel thread, unknown letter |

use serde::Serialize;

/// A thread's state at one sample; see the [module docs](self) for the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ThreadState {
    Running,
    Runnable,
    Futex,
    Io,
    Sleeping,
    Stopped,
    Other,
}

impl ThreadState {
    /// Every state, in the order the module docs list them.
    #[cfg(test)]
    pub(crate) const ALL: [ThreadState; 7] = [
        ThreadState::Running,
        ThreadState::Runnable,
        ThreadState::Futex,
        ThreadState::Io,
        ThreadState::Sleeping,
        ThreadState::Stopped,
        ThreadState::Other,
    ];

    /// The label value: `running`, `runnable`, `futex`, `io`, `sleeping`, `stopped`, `other`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ThreadState::Running => "running",
            ThreadState::Runnable => "runnable",
            ThreadState::Futex => "futex",
            ThreadState::Io => "io",
            ThreadState::Sleeping => "sleeping",
            ThreadState::Stopped => "stopped",
            ThreadState::Other => "other",
        }
    }

    /// The root frame of a flamegraph or folded line: `[futex]`.
    pub(crate) fn root_frame(self) -> String {
        format!("[{}]", self.name())
    }
}

/// The state of a thread from its `stat` letter and, for `S`, the syscall it sleeps in
/// (`None`: unknown or not read). `starved`: for `R`, whether it waited for a CPU more than it
/// ran since the previous sample.
pub(crate) fn classify(letter: u8, syscall: Option<i64>, starved: bool) -> ThreadState {
    match letter {
        b'R' if starved => ThreadState::Runnable,
        b'R' => ThreadState::Running,
        b'S' => match syscall {
            Some(nr) if is_futex(nr) => ThreadState::Futex,
            Some(nr) if is_io(nr) => ThreadState::Io,
            _ => ThreadState::Sleeping,
        },
        b'D' => ThreadState::Io,
        b'T' | b't' => ThreadState::Stopped,
        _ => ThreadState::Other,
    }
}

/// `futex_waitv` has no constant in every libc crate version; its number is the same on
/// x86_64 and aarch64 (the generic table).
const SYS_FUTEX_WAITV: i64 = 449;

fn is_futex(nr: i64) -> bool {
    nr == libc::SYS_futex || nr == SYS_FUTEX_WAITV
}

/// System calls that wait for a file, a socket or a pipe (or an event on one).
fn is_io(nr: i64) -> bool {
    let common = [
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
        libc::SYS_recvmmsg,
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_sendmmsg,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_ppoll,
        libc::SYS_pselect6,
        libc::SYS_epoll_pwait,
        libc::SYS_io_getevents,
        libc::SYS_io_uring_enter,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_sync_file_range,
        libc::SYS_sendfile,
        libc::SYS_splice,
        libc::SYS_openat,
        // epoll_pwait2
        441,
    ];
    #[cfg(target_arch = "x86_64")]
    let arch: &[i64] = &[
        libc::SYS_poll,
        libc::SYS_select,
        libc::SYS_epoll_wait,
        libc::SYS_open,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let arch: &[i64] = &[];
    common.contains(&nr) || arch.contains(&nr)
}

/// The syscall number in the text of `/proc/self/task/<tid>/syscall` (`202 0x… …`), `None` for
/// `running`, `-1` (not in a system call) or anything unreadable.
pub(crate) fn parse_syscall(text: &[u8]) -> Option<i64> {
    let first = text.split(|b| b.is_ascii_whitespace()).next()?;
    std::str::from_utf8(first)
        .ok()?
        .parse::<i64>()
        .ok()
        .filter(|&nr| nr >= 0)
}

/// The state letter in the text of `/proc/self/task/<tid>/stat`: the first field after the
/// `(comm)`, which may itself hold spaces and parentheses.
pub(crate) fn parse_stat_letter(text: &[u8]) -> Option<u8> {
    let close = text.iter().rposition(|&b| b == b')')?;
    text[close + 1..]
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

/// `(cpu_ns, run_delay_ns, timeslices)` from `/proc/self/task/<tid>/schedstat`; `None` when the
/// kernel keeps no scheduler statistics (it then writes `0 0 0`) or the text is unreadable.
pub(crate) fn parse_schedstat(text: &[u8]) -> Option<(u64, u64, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut it = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    let v = (it.next()??, it.next()??, it.next()??);
    (v != (0, 0, 0)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_and_syscalls_map_to_states() {
        assert_eq!(classify(b'R', None, false), ThreadState::Running);
        assert_eq!(classify(b'R', None, true), ThreadState::Runnable);
        assert_eq!(
            classify(b'S', Some(libc::SYS_futex), false),
            ThreadState::Futex
        );
        assert_eq!(
            classify(b'S', Some(SYS_FUTEX_WAITV), false),
            ThreadState::Futex
        );
        assert_eq!(classify(b'S', Some(libc::SYS_read), false), ThreadState::Io);
        assert_eq!(
            classify(b'S', Some(libc::SYS_epoll_pwait), false),
            ThreadState::Io
        );
        assert_eq!(
            classify(b'S', Some(libc::SYS_recvfrom), false),
            ThreadState::Io
        );
        assert_eq!(
            classify(b'S', Some(libc::SYS_clock_nanosleep), false),
            ThreadState::Sleeping
        );
        assert_eq!(
            classify(b'S', Some(libc::SYS_nanosleep), false),
            ThreadState::Sleeping
        );
        assert_eq!(classify(b'S', None, false), ThreadState::Sleeping);
        assert_eq!(classify(b'D', None, false), ThreadState::Io);
        assert_eq!(classify(b'T', None, false), ThreadState::Stopped);
        assert_eq!(classify(b't', None, false), ThreadState::Stopped);
        assert_eq!(classify(b'Z', None, false), ThreadState::Other);
        assert_eq!(classify(b'?', None, false), ThreadState::Other);
        let names: Vec<&str> = ThreadState::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            ["running", "runnable", "futex", "io", "sleeping", "stopped", "other"]
        );
        assert_eq!(ThreadState::Futex.root_frame(), "[futex]");
    }

    #[test]
    fn proc_texts_parse() {
        assert_eq!(
            parse_syscall(b"202 0x7f 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f12\n"),
            Some(202)
        );
        assert_eq!(parse_syscall(b"running\n"), None);
        assert_eq!(parse_syscall(b"-1 0x7ffd 0x7f12\n"), None);
        assert_eq!(parse_syscall(b""), None);
        assert_eq!(parse_stat_letter(b"123 (a (b) c) S 1 2 3"), Some(b'S'));
        assert_eq!(parse_stat_letter(b"123 (x) R 1"), Some(b'R'));
        assert_eq!(parse_stat_letter(b"garbage"), None);
        assert_eq!(
            parse_schedstat(b"878717 5317304 10\n"),
            Some((878717, 5317304, 10))
        );
        assert_eq!(parse_schedstat(b"0 0 0\n"), None);
        assert_eq!(parse_schedstat(b"1 2\n"), None);
    }

    #[test]
    fn this_thread_reads_as_running_with_statistics() {
        let tid = crate::stack::remote::current_tid();
        let stat = std::fs::read(format!("/proc/self/task/{tid}/stat")).unwrap();
        assert_eq!(parse_stat_letter(&stat), Some(b'R'));
        let sched = std::fs::read(format!("/proc/self/task/{tid}/schedstat")).unwrap();
        // Kernels without scheduler statistics write 0 0 0; the sampler then signals every
        // thread at every tick instead of reusing stacks of threads that did not run.
        if let Some((_, _, slices)) = parse_schedstat(&sched) {
            assert!(slices > 0);
        }
    }
}
