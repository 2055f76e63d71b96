//! Async task dumps in the text shapes of Go's `/debug/pprof/goroutine`: `debug=1` groups tasks
//! with the same stacks and counts them, `debug=2` prints every task's stacks like a Go
//! goroutine dump. No HTTP here.
//!
//! A task is what Go calls a goroutine; its stacks are the async backtraces tokio captured in
//! the dump, innermost (the leaf future tokio can trace) first, one per leaf (a task awaiting
//! a `join!` of two futures has two). Tokio does not say what a task waits for, so the state in
//! brackets is read off the innermost tokio function: `sleep`, `IO wait`, `chan receive`,
//! `semacquire`, `runnable` (`yield_now`), else `pending`.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::stack::Frame;

/// One task of a dump: its tokio task id and its stacks, each innermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskStacks {
    /// The runtime it belongs to.
    pub(crate) runtime: String,
    /// Tokio's task id (unique within the process).
    pub(crate) id: u64,
    /// One stack per traced leaf future, innermost frame first.
    pub(crate) stacks: Vec<Vec<Frame>>,
}

/// The Go-like state of a task, from its innermost tokio frame.
pub(crate) fn state(task: &TaskStacks) -> &'static str {
    const STATES: &[(&str, &str)] = &[
        ("tokio::time::", "sleep"),
        ("tokio::net::", "IO wait"),
        ("tokio::io::", "IO wait"),
        ("tokio::runtime::io::", "IO wait"),
        ("tokio::fs::", "IO wait"),
        ("tokio::process::", "IO wait"),
        ("tokio::signal::", "IO wait"),
        ("tokio::sync::mpsc", "chan receive"),
        ("tokio::sync::oneshot", "chan receive"),
        ("tokio::sync::broadcast", "chan receive"),
        ("tokio::sync::watch", "chan receive"),
        ("tokio::sync::", "semacquire"),
        ("tokio::task::yield_now", "runnable"),
        ("tokio::runtime::task::join", "wait for task"),
    ];
    for frame in task.stacks.iter().flatten() {
        let name = frame.name().trim_start_matches('<');
        if !name.starts_with("tokio::") {
            continue;
        }
        if let Some((_, s)) = STATES.iter().find(|(prefix, _)| name.starts_with(prefix)) {
            return s;
        }
    }
    "pending"
}

/// `debug=2`: every task as a Go goroutine block: `goroutine <id> [<state>]:`, then per frame
/// `function(...)` and a tab-indented `file:line`, a blank line after each task. With several
/// runtimes the bracket also names the task's runtime. A task with several stacks lists each
/// after a `...` line. `notes` (runtimes that could not be dumped) come last, as `#` lines.
pub(crate) fn debug2(tasks: &[TaskStacks], several_runtimes: bool, notes: &[String]) -> String {
    let mut out = String::new();
    for task in tasks {
        let _ = write!(out, "goroutine {} [{}", task.id, state(task));
        if several_runtimes {
            let _ = write!(out, ", runtime {}", task.runtime);
        }
        out.push_str("]:\n");
        if task.stacks.iter().all(Vec::is_empty) {
            out.push_str("# no trace: the task waits on a future tokio cannot trace\n");
        }
        for (i, stack) in task.stacks.iter().enumerate() {
            if i > 0 {
                out.push_str("...\n");
            }
            for frame in stack {
                let _ = writeln!(out, "{}(...)\n\t{}", frame.name(), location(frame));
            }
        }
        out.push('\n');
    }
    for n in notes {
        let _ = writeln!(out, "# {n}");
    }
    out
}

/// `debug=1`: `goroutine profile: total N`, then one group per distinct set of stacks, most
/// tasks first: `<count> @ <addresses>` and one `#\t<address>\t<function>\t<file:line>` line
/// per frame, a blank line after each group. `notes` follow the header as `#` lines.
pub(crate) fn debug1(tasks: &[TaskStacks], notes: &[String]) -> String {
    let mut groups: Vec<(&Vec<Vec<Frame>>, usize)> = Vec::new();
    let mut index: HashMap<&Vec<Vec<Frame>>, usize> = HashMap::new();
    for task in tasks {
        match index.get(&task.stacks) {
            Some(&i) => groups[i].1 += 1,
            None => {
                index.insert(&task.stacks, groups.len());
                groups.push((&task.stacks, 1));
            }
        }
    }
    // Stable: equal counts keep the dump's order.
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    let mut out = format!("goroutine profile: total {}\n", tasks.len());
    for n in notes {
        let _ = writeln!(out, "# {n}");
    }
    for (stacks, count) in groups {
        let _ = write!(out, "{count} @");
        for stack in stacks {
            let mut last = None;
            for frame in stack {
                // Inlined frames share their machine frame's address: list it once.
                if last != Some(frame.address) {
                    let _ = write!(out, " {:#x}", frame.address);
                    last = Some(frame.address);
                }
            }
        }
        out.push('\n');
        if stacks.iter().all(Vec::is_empty) {
            out.push_str("#\t(no trace: the task waits on a future tokio cannot trace)\n");
        }
        for (i, stack) in stacks.iter().enumerate() {
            if i > 0 {
                out.push_str("#\t...\n");
            }
            for frame in stack {
                let _ = writeln!(
                    out,
                    "#\t{:#x}\t{}\t{}",
                    frame.address,
                    frame.name(),
                    location(frame)
                );
            }
        }
        out.push('\n');
    }
    out
}

fn location(frame: &Frame) -> String {
    match (&frame.file, frame.line) {
        (Some(f), Some(l)) => format!("{f}:{l}"),
        (Some(f), None) => f.clone(),
        _ => "?".to_string(),
    }
}

/// A demangled Rust symbol without its `::h<16 hex>` hash suffix.
#[cfg_attr(not(all(tokio_unstable, tokio_taskdump)), allow(dead_code))]
pub(crate) fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(address: u64, name: &str, line: u32) -> Frame {
        Frame {
            address,
            function: Some(name.to_string()),
            system_name: None,
            file: Some("src/app.rs".into()),
            line: Some(line),
            inlined: false,
        }
    }

    fn sleeping(id: u64) -> TaskStacks {
        TaskStacks {
            runtime: "main".into(),
            id,
            stacks: vec![vec![
                frame(0x10, "tokio::time::sleep::Sleep::poll_elapsed", 400),
                frame(0x20, "app::worker::{{closure}}", 12),
            ]],
        }
    }

    #[test]
    fn debug2_reads_like_a_goroutine_dump() {
        let idle = TaskStacks {
            runtime: "main".into(),
            id: 9,
            stacks: vec![],
        };
        let text = debug2(&[sleeping(7), idle], false, &[]);
        assert_eq!(
            text,
            "goroutine 7 [sleep]:\n\
             tokio::time::sleep::Sleep::poll_elapsed(...)\n\tsrc/app.rs:400\n\
             app::worker::{{closure}}(...)\n\tsrc/app.rs:12\n\n\
             goroutine 9 [pending]:\n# no trace: the task waits on a future tokio cannot trace\n\n"
        );
        assert!(
            debug2(&[sleeping(7)], true, &[]).starts_with("goroutine 7 [sleep, runtime main]:\n")
        );
    }

    #[test]
    fn debug1_groups_equal_stacks_most_first() {
        let mut other = sleeping(3);
        other.stacks[0][0] = frame(0x30, "tokio::sync::mpsc::chan::Rx::recv", 50);
        let text = debug1(
            &[other, sleeping(1), sleeping(2)],
            &["runtime \"b\": failed".into()],
        );
        assert_eq!(
            text,
            "goroutine profile: total 3\n# runtime \"b\": failed\n\
             2 @ 0x10 0x20\n\
             #\t0x10\ttokio::time::sleep::Sleep::poll_elapsed\tsrc/app.rs:400\n\
             #\t0x20\tapp::worker::{{closure}}\tsrc/app.rs:12\n\n\
             1 @ 0x30 0x20\n\
             #\t0x30\ttokio::sync::mpsc::chan::Rx::recv\tsrc/app.rs:50\n\
             #\t0x20\tapp::worker::{{closure}}\tsrc/app.rs:12\n\n"
        );
    }

    #[test]
    fn states_and_hashes() {
        let mut t = sleeping(1);
        t.stacks[0][0] = frame(1, "<tokio::sync::oneshot::Receiver<T> as Future>::poll", 1);
        assert_eq!(state(&t), "chan receive");
        t.stacks[0][0] = frame(1, "tokio::sync::notify::Notified::poll_notified", 1);
        assert_eq!(state(&t), "semacquire");
        t.stacks[0][0] = frame(1, "app::custom_leaf", 1);
        t.stacks[0][1] = frame(2, "app::main", 1);
        assert_eq!(state(&t), "pending");
        assert_eq!(strip_hash("app::run::h0123456789abcdef"), "app::run");
        assert_eq!(strip_hash("app::hashmap"), "app::hashmap");
    }
}
