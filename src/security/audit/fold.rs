//! Folding: requests that must not each cost a line (anonymous answers, denials) are counted
//! in a bounded table and written as `summary` records, under a byte budget per client.
//!
//! A group is (client, method, path, status, outcome, token name); the caller passes the
//! method and path already reduced to their classes (a known method or `other`, the route
//! template or `unmatched`), so a client cannot mint groups by inventing names. A client is an
//! IPv4 address or an IPv6 /64 (one host commonly holds a whole /64). Each client has a budget
//! of bytes per window ([`CLIENT_BUDGET_BYTES`] per [`CLIENT_WINDOW`]) covering its full records
//! and its summaries; past it, its requests are counted in one `over_budget` summary per
//! client, written when its window ends (or at shutdown). All clients together have
//! [`GLOBAL_BUDGET_BYTES`] per window; past it (many addresses), every folded request is
//! counted in one `over_budget` summary for client `*`, written every fold interval.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::record::{now_ts, AuditRecord, Outcome, Summary};

/// How [`AuditLog::record`](super::AuditLog::record) treats a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Folding {
    /// One record per request.
    #[default]
    Never,
    /// Always folded into its group's summary (open health probes that succeeded).
    Always,
    /// The first request of its group per client window gets a full record while the client
    /// is within its budget; the others are folded (anonymous answers, denials).
    Repeats,
}

/// Bytes of audit (full records and summaries) one client IP may cause per window before its
/// requests are only counted.
pub(crate) const CLIENT_BUDGET_BYTES: u64 = 4096;
/// The budget's window.
pub(crate) const CLIENT_WINDOW: Duration = Duration::from_secs(60);
/// Bytes of audit all folding clients together may cause per window (at this rate the default
/// 8 × 64 MiB files last 33 hours).
pub(crate) const GLOBAL_BUDGET_BYTES: u64 = 256 * 1024;
/// Clients with a budget tracked at once; a client beyond them is counted over budget.
pub(crate) const MAX_TRACKED_CLIENTS: usize = 4096;
/// Distinct groups held before an early flush.
pub(crate) const MAX_GROUPS: usize = 256;
/// Distinct groups per client remembered as seen (for [`Folding::Repeats`]) per window.
pub(crate) const MAX_SEEN_PER_CLIENT: usize = 64;
/// What a summary's chain fields (`seq`, `prev_hash`, `hash`) add to its JSON.
const CHAIN_BYTES: u64 = 170;
/// The client name of requests from clients beyond [`MAX_TRACKED_CLIENTS`] or past
/// [`GLOBAL_BUDGET_BYTES`].
const UNTRACKED: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct GroupKey {
    client: String,
    method: String,
    path: String,
    status: u16,
    outcome: Outcome,
    token: Option<String>,
}

#[derive(Debug)]
struct Group {
    count: u64,
    first_ts: String,
    last_ts: String,
}

impl Group {
    fn new(ts: &str) -> Group {
        Group {
            count: 0,
            first_ts: ts.to_string(),
            last_ts: ts.to_string(),
        }
    }

    fn add(&mut self, n: u64, first_ts: &str, last_ts: &str) {
        self.count += n;
        // Requests finish out of order: keep the extremes.
        if first_ts < self.first_ts.as_str() {
            self.first_ts = first_ts.to_string();
        }
        if last_ts > self.last_ts.as_str() {
            self.last_ts = last_ts.to_string();
        }
    }
}

#[derive(Debug)]
struct Client {
    window_start: Instant,
    spent: u64,
    seen: HashSet<(String, String, u16, Option<String>)>,
    overflow: Option<Group>,
}

impl Client {
    fn over(&self) -> bool {
        self.spent >= CLIENT_BUDGET_BYTES
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it in full (and [`FoldTable::charge`] its size when it is a folding kind).
    Record,
    /// Count it ([`FoldTable::add`]).
    Fold,
}

/// The bounded table of folded requests and per-client budgets.
#[derive(Debug, Default)]
pub(crate) struct FoldTable {
    groups: BTreeMap<GroupKey, Group>,
    clients: HashMap<String, Client>,
    untracked: Option<Group>,
    /// The global window's start (`None`: not started) and the bytes spent in it.
    global: Option<(Instant, u64)>,
    folded: u64,
    over_budget: u64,
}

/// The client of `ip:port` / `[v6]:port` (ports differ per connection): the IPv4 address
/// (IPv4-mapped IPv6 included) or the IPv6 /64 prefix (`2001:db8:1:2::/64`).
pub(crate) fn client_ip(client: &str) -> String {
    use std::net::{IpAddr, Ipv6Addr};
    match client.parse::<std::net::SocketAddr>().map(|a| a.ip()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        Err(_) => client.to_string(),
    }
}

impl FoldTable {
    fn global_over(&self) -> bool {
        self.global
            .is_some_and(|(_, spent)| spent >= GLOBAL_BUDGET_BYTES)
    }

    fn charge_global(&mut self, bytes: u64, now: Instant) {
        self.global.get_or_insert((now, 0)).1 += bytes;
    }

    fn client(&mut self, ip: &str, now: Instant) -> Option<&mut Client> {
        if !self.clients.contains_key(ip) {
            if self.clients.len() >= MAX_TRACKED_CLIENTS {
                return None;
            }
            self.clients.insert(
                ip.to_string(),
                Client {
                    window_start: now,
                    spent: 0,
                    seen: HashSet::new(),
                    overflow: None,
                },
            );
        }
        self.clients.get_mut(ip)
    }

    /// Whether `rec` is written in full or folded.
    pub(crate) fn decide(&mut self, rec: &AuditRecord, folding: Folding, now: Instant) -> Verdict {
        match folding {
            Folding::Never => Verdict::Record,
            Folding::Always => Verdict::Fold,
            Folding::Repeats => {
                if self.global_over() {
                    return Verdict::Fold;
                }
                let ip = client_ip(&rec.client);
                let Some(c) = self.client(&ip, now) else {
                    return Verdict::Fold;
                };
                if c.over() || c.seen.len() >= MAX_SEEN_PER_CLIENT {
                    return Verdict::Fold;
                }
                let key = (
                    rec.method.clone(),
                    rec.path.clone(),
                    rec.status,
                    rec.token_id.clone(),
                );
                if c.seen.insert(key) {
                    Verdict::Record
                } else {
                    Verdict::Fold
                }
            }
        }
    }

    /// Charges `bytes` of a full record to `rec`'s client.
    pub(crate) fn charge(&mut self, rec: &AuditRecord, bytes: u64, now: Instant) {
        let ip = client_ip(&rec.client);
        if let Some(c) = self.client(&ip, now) {
            c.spent += bytes + CHAIN_BYTES;
        }
        self.charge_global(bytes + CHAIN_BYTES, now);
    }

    /// Counts `rec`. When the table is full, returns the summaries to write first.
    pub(crate) fn add(&mut self, rec: &AuditRecord, now: Instant) -> Vec<Summary> {
        self.folded += 1;
        let ip = client_ip(&rec.client);
        let global_over = self.global_over();
        let over = match self.client(&ip, now) {
            None => {
                self.over_budget += 1;
                self.untracked
                    .get_or_insert_with(|| Group::new(&rec.ts))
                    .add(1, &rec.ts, &rec.ts);
                return Vec::new();
            }
            Some(_) if global_over => {
                self.over_budget += 1;
                self.untracked
                    .get_or_insert_with(|| Group::new(&rec.ts))
                    .add(1, &rec.ts, &rec.ts);
                return Vec::new();
            }
            Some(c) if c.over() => {
                c.overflow
                    .get_or_insert_with(|| Group::new(&rec.ts))
                    .add(1, &rec.ts, &rec.ts);
                true
            }
            Some(_) => false,
        };
        if over {
            self.over_budget += 1;
            return Vec::new();
        }
        let key = GroupKey {
            client: ip,
            method: rec.method.clone(),
            path: rec.path.clone(),
            status: rec.status,
            outcome: rec.outcome,
            token: rec.token_id.clone(),
        };
        let mut flushed = Vec::new();
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            flushed = self.take_groups();
        }
        self.groups
            .entry(key)
            .or_insert_with(|| Group::new(&rec.ts))
            .add(1, &rec.ts, &rec.ts);
        flushed
    }

    /// The summaries due now: every group of a client within its budget (the others join their
    /// client's over-budget count), the over-budget summaries of clients whose window ended,
    /// and the count of untracked clients. With `all`, every over-budget count too (shutdown).
    pub(crate) fn take(&mut self, now: Instant, all: bool) -> Vec<Summary> {
        let mut out = self.take_groups();
        let ts = now_ts();
        let mut ended: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, c)| all || now.duration_since(c.window_start) >= CLIENT_WINDOW)
            .map(|(ip, _)| ip.clone())
            .collect();
        ended.sort();
        for ip in ended {
            let Some(c) = self.clients.get_mut(&ip) else {
                continue;
            };
            if let Some(g) = c.overflow.take() {
                out.push(over_budget_summary(&ts, &ip, g));
            }
            if now.duration_since(c.window_start) >= CLIENT_WINDOW {
                self.clients.remove(&ip);
            }
        }
        if let Some(g) = self.untracked.take() {
            out.push(over_budget_summary(&ts, UNTRACKED, g));
        }
        if self
            .global
            .is_some_and(|(start, _)| now.duration_since(start) >= CLIENT_WINDOW)
        {
            self.global = None;
        }
        out
    }

    fn take_groups(&mut self) -> Vec<Summary> {
        let ts = now_ts();
        let mut out = Vec::new();
        let now = Instant::now();
        for (k, g) in std::mem::take(&mut self.groups) {
            if self.global_over() {
                self.untracked
                    .get_or_insert_with(|| Group::new(&g.first_ts))
                    .add(g.count, &g.first_ts, &g.last_ts);
                self.over_budget += g.count;
                continue;
            }
            let client = self.clients.get_mut(&k.client);
            if let Some(c) = client.filter(|c| c.over()) {
                c.overflow
                    .get_or_insert_with(|| Group::new(&g.first_ts))
                    .add(g.count, &g.first_ts, &g.last_ts);
                self.over_budget += g.count;
                continue;
            }
            let s = Summary {
                ts: ts.clone(),
                count: g.count,
                first_ts: g.first_ts,
                last_ts: g.last_ts,
                clients: BTreeMap::from([(k.client.clone(), g.count)]),
                other_requests: 0,
                method: k.method,
                path: k.path,
                status: k.status,
                outcome: k.outcome,
                token_id: k.token,
                over_budget: false,
            };
            let bytes = serde_json::to_vec(&s).map_or(0, |j| j.len() as u64) + CHAIN_BYTES;
            if let Some(c) = self.clients.get_mut(&k.client) {
                c.spent += bytes;
            }
            self.charge_global(bytes, now);
            out.push(s);
        }
        out
    }

    /// Requests folded since start.
    pub(crate) fn folded(&self) -> u64 {
        self.folded
    }

    /// Requests counted only in an over-budget summary since start.
    pub(crate) fn over_budget(&self) -> u64 {
        self.over_budget
    }
}

fn over_budget_summary(ts: &str, client: &str, g: Group) -> Summary {
    Summary {
        ts: ts.to_string(),
        count: g.count,
        first_ts: g.first_ts,
        last_ts: g.last_ts,
        clients: BTreeMap::from([(client.to_string(), g.count)]),
        other_requests: 0,
        method: "*".into(),
        path: "*".into(),
        status: 0,
        outcome: Outcome::Mixed,
        token_id: None,
        over_budget: true,
    }
}
