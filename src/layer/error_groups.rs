//! `ERROR` and `WARN` events grouped by fingerprint, for `/debug/errors`.
//!
//! **Fingerprint.** `tracing` hands a layer the *formatted* message, never its format string,
//! so the template is taken from the callsite instead: every `error!`/`warn!` invocation has
//! one `'static` [`Metadata`] (its callsite identity), which fixes the level, target, module,
//! `file:line`, the event's static name (`"event src/db.rs:42"`) and the set of field names.
//! Events from one invocation fold into one group whatever values they format; two
//! invocations never share a group. The reported `fingerprint` is a hash of
//! `level|target|module|file|line|name`, stable across restarts and builds that do not move
//! the line.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::callsite::Identifier;
use tracing::Metadata;

/// Buckets of the last-minute rate: 12 of 5 s.
const RATE_BUCKETS: usize = 12;
const RATE_BUCKET_S: u64 = 5;

pub(crate) struct Recent {
    pub(crate) at: SystemTime,
    pub(crate) fields: Vec<u8>,
    pub(crate) span: Option<(u64, &'static str)>,
    pub(crate) tid: i32,
}

pub(crate) struct Group {
    pub(crate) meta: &'static Metadata<'static>,
    pub(crate) count: u64,
    pub(crate) first_seen: SystemTime,
    pub(crate) last_seen: SystemTime,
    /// `(5-second period number, events in it)`.
    rate: [(u64, u32); RATE_BUCKETS],
    pub(crate) recent: VecDeque<Recent>,
}

impl Group {
    /// Events in the last 60 s (the current 5 s period and the 11 before it).
    pub(crate) fn last_minute(&self, now: SystemTime) -> u64 {
        let p = period(now);
        self.rate
            .iter()
            .filter(|(q, _)| *q <= p && p - *q < RATE_BUCKETS as u64)
            .map(|(_, n)| *n as u64)
            .sum()
    }
}

fn period(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) / RATE_BUCKET_S
}

pub(crate) struct State {
    pub(crate) groups: HashMap<Identifier, Group>,
}

/// The groups, behind one mutex: only `WARN`/`ERROR` events take it.
pub(crate) struct ErrorGroups {
    state: Mutex<State>,
    max_groups: usize,
    keep_recent: usize,
    pub(crate) evicted: AtomicU64,
}

impl ErrorGroups {
    pub(crate) fn new(max_groups: usize, keep_recent: usize) -> ErrorGroups {
        ErrorGroups {
            state: Mutex::new(State {
                groups: HashMap::new(),
            }),
            max_groups: max_groups.max(1),
            keep_recent,
            evicted: AtomicU64::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn max_groups(&self) -> usize {
        self.max_groups
    }

    /// Counts one event into its group, evicting the least recently seen group if a new one
    /// does not fit.
    pub(crate) fn record(&self, meta: &'static Metadata<'static>, ev: Recent) {
        let now = ev.at;
        let p = period(now);
        let key = meta.callsite();
        let mut st = self.lock();
        if !st.groups.contains_key(&key) && st.groups.len() >= self.max_groups {
            let oldest = st
                .groups
                .iter()
                .min_by_key(|(_, g)| g.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                st.groups.remove(&k);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let g = st.groups.entry(key).or_insert_with(|| Group {
            meta,
            count: 0,
            first_seen: now,
            last_seen: now,
            rate: [(0, 0); RATE_BUCKETS],
            recent: VecDeque::new(),
        });
        g.count += 1;
        g.last_seen = g.last_seen.max(now);
        let b = &mut g.rate[(p % RATE_BUCKETS as u64) as usize];
        if b.0 != p {
            *b = (p, 0);
        }
        b.1 += 1;
        if self.keep_recent > 0 {
            if g.recent.len() >= self.keep_recent {
                g.recent.pop_front();
            }
            g.recent.push_back(ev);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().groups.len()
    }

    /// How many callsites in the table have logged an `ERROR`: a rise is a callsite's first.
    pub(crate) fn error_callsites(&self) -> usize {
        self.lock()
            .groups
            .values()
            .filter(|g| *g.meta.level() == tracing::Level::ERROR)
            .count()
    }
}
