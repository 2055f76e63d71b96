//! The panic hook: every panic becomes an `ERROR` event of target `panic`, so prodbg's
//! `tracing` layer groups it in `/debug/errors` by its location like any other event (each
//! panic location gets one callsite of its own, so counts are exact), with the message, the
//! thread, the span it was in and its symbolized stack; a panic that will end the process
//! (on the main thread, or in a `panic = "abort"` build) writes an incident of kind `panic`
//! first. The host's own hook (or the default one) runs after it, unchanged.
//!
//! Bounds: [`MAX_LOCATIONS`] panic locations get their own callsite (the metadata is leaked,
//! as `tracing`'s own callsites are static); later ones share one. A location's stack is
//! symbolized once, at its first panic, and reused.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::PanicHookInfo;
use std::sync::{Arc, Mutex, Once, OnceLock, RwLock, Weak};
use std::time::Duration;

use tracing::callsite::{Callsite, Identifier};
use tracing::field::{FieldSet, Value};
use tracing::metadata::Kind as MetaKind;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata};

use super::{CaptureError, Incidents, Kind, Skipped};

/// Panic locations with a callsite (an error group) of their own.
pub(crate) const MAX_LOCATIONS: usize = 256;
/// How long a panic that ends the process waits for its incident to be written.
const FATAL_WAIT: Duration = Duration::from_secs(10);
/// Frames kept of a panic's stack.
const MAX_FRAMES: usize = 48;
/// The event's fields.
static FIELDS: [&str; 4] = ["message", "thread", "location", "stack"];

static HOOK: Once = Once::new();
static CURRENT: RwLock<Option<Weak<Incidents>>> = RwLock::new(None);

thread_local! {
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// One panic location's callsite, with its stack once symbolized.
struct Site {
    meta: OnceLock<&'static Metadata<'static>>,
    stack: OnceLock<String>,
}

impl Callsite for Site {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        self.meta.get().expect("set before registration")
    }
}

/// Installs the hook once for the process (the host's hook runs after it); panics that end
/// the process write to `incidents` (the latest admin server's directory wins).
pub(crate) fn install(incidents: Option<&Arc<Incidents>>) {
    if let Some(i) = incidents {
        *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(i));
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let outer = IN_HOOK.with(|h| !h.replace(true));
            if outer {
                on_panic(info);
                IN_HOOK.with(|h| h.set(false));
            }
            previous(info);
        }));
    });
}

fn on_panic(info: &PanicHookInfo<'_>) {
    let (file, line, col) = info
        .location()
        .map_or(("<unknown>", 0, 0), |l| (l.file(), l.line(), l.column()));
    let message = info
        .payload_as_str()
        .unwrap_or("Box<dyn Any> (a panic payload that is not a string)");
    let thread = std::thread::current();
    let thread_name = thread.name().unwrap_or("<unnamed>").to_string();
    let site = site(file, line);
    let stack = site.stack.get_or_init(stack_text);
    let location = format!("{file}:{line}:{col}");
    emit(site, message, &thread_name, &location, stack);
    if will_end_process() {
        let weak = CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(inc) = weak.and_then(|w| w.upgrade()) {
            let detail = serde_json::json!({
                "message": message,
                "location": location,
                "thread": thread_name,
                "stack": stack.lines().collect::<Vec<_>>(),
            });
            let reason: String = format!("panic at {location}: {message}")
                .chars()
                .take(300)
                .collect();
            // A capture already running is waited for (within the same bound), then ours.
            let deadline = std::time::Instant::now() + FATAL_WAIT;
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match inc.capture_wait(
                    Kind::Panic,
                    reason.clone(),
                    Some(detail.clone()),
                    None,
                    left,
                ) {
                    Err(CaptureError::Skipped(Skipped::Busy)) if !left.is_zero() => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::warn!(target: "prodbg::incidents", error = %e, "no incident for the panic that ends the process");
                        break;
                    }
                    Ok(_) => break,
                }
            }
        }
    }
}

/// Whether this panic ends the process: it unwinds out of `main` (the main thread) or
/// aborts (`panic = "abort"`). A `catch_unwind` on the main thread makes this a guess.
fn will_end_process() -> bool {
    cfg!(panic = "abort") || crate::stack::gettid() as u32 == std::process::id()
}

/// The callsite of panics at `file:line`, made (leaked) and registered on first use.
fn site(file: &str, line: u32) -> &'static Site {
    static SITES: Mutex<Option<HashMap<(String, u32), &'static Site>>> = Mutex::new(None);
    static OTHER: OnceLock<&'static Site> = OnceLock::new();
    let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    let sites = sites.get_or_insert_with(HashMap::new);
    if let Some(s) = sites.get(&(file.to_string(), line)) {
        return s;
    }
    if sites.len() >= MAX_LOCATIONS {
        return OTHER.get_or_init(|| make_site("<other locations>", 0));
    }
    let s = make_site(file, line);
    sites.insert((file.to_string(), line), s);
    s
}

fn make_site(file: &str, line: u32) -> &'static Site {
    let site: &'static Site = Box::leak(Box::new(Site {
        meta: OnceLock::new(),
        stack: OnceLock::new(),
    }));
    let file: &'static str = Box::leak(file.to_string().into_boxed_str());
    let name: &'static str = Box::leak(format!("panic {file}:{line}").into_boxed_str());
    let meta: &'static Metadata<'static> = Box::leak(Box::new(Metadata::new(
        name,
        "panic",
        Level::ERROR,
        Some(file),
        (line > 0).then_some(line),
        None,
        FieldSet::new(&FIELDS, Identifier(site)),
        MetaKind::EVENT,
    )));
    let _ = site.meta.set(meta);
    tracing::callsite::register(site);
    site
}

/// Sends the event to the current dispatcher, as `error!` would.
fn emit(site: &'static Site, message: &str, thread: &str, location: &str, stack: &str) {
    let Some(meta) = site.meta.get().copied() else {
        return;
    };
    let fields = meta.fields();
    let (Some(f_msg), Some(f_thread), Some(f_loc), Some(f_stack)) = (
        fields.field("message"),
        fields.field("thread"),
        fields.field("location"),
        fields.field("stack"),
    ) else {
        return;
    };
    let msg = format_args!("{message}");
    let values: [(&tracing::field::Field, Option<&dyn Value>); 4] = [
        (&f_msg, Some(&msg as &dyn Value)),
        (&f_thread, Some(&thread as &dyn Value)),
        (&f_loc, Some(&location as &dyn Value)),
        (&f_stack, Some(&stack as &dyn Value)),
    ];
    let set = fields.value_set(&values);
    tracing::dispatcher::get_default(|d| {
        if d.enabled(meta) {
            d.event(&tracing::Event::new(meta, &set));
        }
    });
}

/// The panicking thread's stack from the code that panicked outwards, one frame a line
/// (`function (file:line)`; addresses left out, and files of the standard library and of
/// registry crates, to fit an event's field).
#[cfg(any(feature = "cpu", feature = "threads"))]
fn stack_text() -> String {
    let addrs = super::own_stack::here(MAX_FRAMES + 32);
    let lines = super::own_stack::lines(&addrs, false);
    // The hook's and the panic machinery's frames come first: skip to the first of the
    // machinery's, then past all of them.
    let machinery = |l: &str| {
        [
            "std::panicking::",
            "core::panicking::",
            "rust_begin_unwind",
            "__rust_end_short_backtrace",
            "core::result::unwrap_failed",
            "core::option::unwrap_failed",
            "core::option::expect_failed",
            "std::panic::panic_any",
        ]
        .iter()
        .any(|m| l.contains(m))
    };
    let start = match lines.iter().position(|l| machinery(l)) {
        Some(first) => first + lines[first..].iter().take_while(|l| machinery(l)).count(),
        None => 0,
    };
    lines[start..]
        .iter()
        .take(MAX_FRAMES)
        .map(|l| compact(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `0x… function (file:line)` → `function (file:line)`, without the place for the standard
/// library's and registry crates' files.
#[cfg(any(feature = "cpu", feature = "threads"))]
fn compact(line: &str) -> String {
    let rest = line.split_once(' ').map_or(line, |(_, r)| r);
    match rest.rsplit_once(" (") {
        Some((name, place))
            if place.starts_with("/rustc/") || place.contains("/.cargo/registry/") =>
        {
            name.to_string()
        }
        _ => rest.to_string(),
    }
}

#[cfg(not(any(feature = "cpu", feature = "threads")))]
fn stack_text() -> String {
    "(stacks need the cpu or threads feature)".to_string()
}
