//! Folding: requests that must not each cost a line (open health probes, repeated identical
//! denials) are counted in a bounded table and written as `summary` records.

use std::collections::{BTreeMap, HashSet};

use super::record::{now_ts, AuditRecord, Outcome, Summary};

/// How [`AuditLog::record`](super::AuditLog::record) treats a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Folding {
    /// One record per request.
    #[default]
    Never,
    /// Always folded into the summary for its method + path + status + outcome (open health
    /// probes).
    Always,
    /// The first request per client IP + method + path + status in each fold interval gets a
    /// full record; the repeats are folded (identical denials).
    Repeats,
}

/// Clients listed by name in one summary.
pub(crate) const MAX_CLIENTS: usize = 8;
/// Distinct summaries held before an early flush.
pub(crate) const MAX_GROUPS: usize = 256;
/// Distinct (client, method, path, status) remembered for [`Folding::Repeats`].
pub(crate) const MAX_SEEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    method: String,
    path: String,
    status: u16,
    outcome: Outcome,
}

#[derive(Debug)]
struct Group {
    count: u64,
    first_ts: String,
    last_ts: String,
    clients: BTreeMap<String, u64>,
    other_requests: u64,
}

/// The bounded table of folded requests.
#[derive(Debug, Default)]
pub(crate) struct FoldTable {
    groups: BTreeMap<GroupKey, Group>,
    seen: HashSet<(String, String, String, u16)>,
    folded: u64,
}

/// The IP part of `ip:port` / `[v6]:port` (ports differ per connection).
pub(crate) fn client_ip(client: &str) -> String {
    match client.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => client.to_string(),
    }
}

impl FoldTable {
    /// Whether `rec` is the first of its (client IP, method, path, status) since the last flush;
    /// remembers it.
    pub(crate) fn first_seen(&mut self, rec: &AuditRecord) -> bool {
        if self.seen.len() >= MAX_SEEN {
            self.seen.clear();
        }
        self.seen.insert((
            client_ip(&rec.client),
            rec.method.clone(),
            rec.path.clone(),
            rec.status,
        ))
    }

    /// Counts `rec`. When the table is full, returns the summaries to write first.
    pub(crate) fn add(&mut self, rec: &AuditRecord) -> Vec<Summary> {
        let key = GroupKey {
            method: rec.method.clone(),
            path: rec.path.clone(),
            status: rec.status,
            outcome: rec.outcome,
        };
        let mut flushed = Vec::new();
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            flushed = self.take_groups();
        }
        self.folded += 1;
        let g = self.groups.entry(key).or_insert_with(|| Group {
            count: 0,
            first_ts: rec.ts.clone(),
            last_ts: rec.ts.clone(),
            clients: BTreeMap::new(),
            other_requests: 0,
        });
        g.count += 1;
        // Requests finish out of order: keep the extremes.
        if rec.ts < g.first_ts {
            g.first_ts = rec.ts.clone();
        }
        if rec.ts > g.last_ts {
            g.last_ts = rec.ts.clone();
        }
        let ip = client_ip(&rec.client);
        if let Some(n) = g.clients.get_mut(&ip) {
            *n += 1;
        } else if g.clients.len() < MAX_CLIENTS {
            g.clients.insert(ip, 1);
        } else {
            g.other_requests += 1;
        }
        flushed
    }

    /// Empties the table (and the repeat memory) into summaries, ordered by method, path,
    /// status.
    pub(crate) fn take(&mut self) -> Vec<Summary> {
        self.seen.clear();
        self.take_groups()
    }

    fn take_groups(&mut self) -> Vec<Summary> {
        let ts = now_ts();
        std::mem::take(&mut self.groups)
            .into_iter()
            .map(|(k, g)| Summary {
                ts: ts.clone(),
                count: g.count,
                first_ts: g.first_ts,
                last_ts: g.last_ts,
                clients: g.clients,
                other_requests: g.other_requests,
                method: k.method,
                path: k.path,
                status: k.status,
                outcome: k.outcome,
            })
            .collect()
    }

    /// Requests folded since start.
    pub(crate) fn folded(&self) -> u64 {
        self.folded
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}
