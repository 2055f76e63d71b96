//! Connection slots: a global cap, a per-client cap that evicts the client's own idle or
//! unfinished connections first, and a reserve for clients holding few.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// The key a client is counted under: its IPv4 address (IPv4-mapped IPv6 included), or the
/// /64 prefix of its IPv6 address, since one host commonly holds a whole /64.
pub(super) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Connections a client may hold and still take a reserved slot.
pub(super) const RESERVE_PER_CLIENT: usize = 2;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// The client already holds its share, every connection of it answering a request.
    PerClient,
    /// The server holds its maximum (or only the reserve is left and this client holds some).
    Global,
}

/// [`Ticket`] states past every evictable stamp.
const BUSY: u64 = u64::MAX - 1;
const EVICTED: u64 = u64::MAX;

/// Stamps the order in which connections became evictable (oldest = smallest).
static ORDER: AtomicU64 = AtomicU64::new(1);

fn stamp() -> u64 {
    ORDER.fetch_add(1, Ordering::Relaxed)
}

/// What the slot table knows of one connection: whether it may be evicted (idle, or its
/// request head not yet complete: it has shown no credential) and since when, and the signal
/// that tells its task to close.
#[derive(Debug)]
pub(super) struct Ticket {
    state: AtomicU64,
    evict: Notify,
}

impl Default for Ticket {
    /// A new connection that has not sent a complete request head: evictable from now.
    fn default() -> Ticket {
        Ticket::new(false)
    }
}

impl Ticket {
    /// A new connection; one whose complete request head has already arrived counts as busy
    /// (it is answered as soon as its task runs, however many connections its client opens
    /// meanwhile).
    fn new(head_arrived: bool) -> Ticket {
        Ticket {
            state: AtomicU64::new(if head_arrived { BUSY } else { stamp() }),
            evict: Notify::new(),
        }
    }

    /// A request is being answered: not evictable until [`idle`](Self::idle).
    pub(super) fn busy(&self) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != EVICTED).then_some(BUSY)
            });
    }

    /// The last response ended: evictable from now.
    pub(super) fn idle(&self) {
        let now = stamp();
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != EVICTED).then_some(now)
            });
    }

    /// Completes once the connection has been chosen for eviction.
    pub(super) async fn evicted(&self) {
        self.evict.notified().await
    }
}

/// Open connections: the count, and each client's connections.
#[derive(Debug, Default)]
struct Table {
    total: usize,
    clients: HashMap<IpAddr, Vec<Arc<Ticket>>>,
}

/// Open connections, counted globally and per client key.
///
/// Admission: a client holding fewer than `per_client` connections is admitted while fewer than
/// `max - reserve` are open; the last `reserve` slots go only to clients holding fewer than
/// [`RESERVE_PER_CLIENT`], so a new operator can connect even when a few clients have filled the
/// rest (two, not one, so a client's next connection is not refused while its last one is
/// still being torn down). A client at `per_client` is admitted in place of its connection
/// that has been idle or unfinished (no complete request head) the longest, which is told to
/// close: connections that have not shown a credential cost their client, never the operator
/// sharing its address. Only when all its connections are answering requests is it refused.
#[derive(Debug)]
pub(super) struct Slots {
    max: usize,
    per_client: usize,
    reserve: usize,
    open: Mutex<Table>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
    ticket: Arc<Ticket>,
}

impl Slot {
    /// This connection's entry in the table.
    pub(super) fn ticket(&self) -> Arc<Ticket> {
        self.ticket.clone()
    }
}

/// An admitted connection, and whether another of its client's was evicted to make room.
#[derive(Debug)]
pub(super) struct Admitted {
    pub slot: Slot,
    pub evicted: bool,
}

impl Slots {
    /// `reserve` is clamped below `max`.
    pub(super) fn new(max: usize, per_client: usize, reserve: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_client,
            reserve: reserve.min(max.saturating_sub(1)),
            open: Mutex::new(Table::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `ip` (evicting one of its idle or unfinished connections if it is at
    /// its cap), or says which cap refused it. `head_arrived`: the connection's complete request
    /// head is already in the socket's buffer.
    pub(super) fn try_admit(
        self: &Arc<Self>,
        ip: IpAddr,
        head_arrived: bool,
    ) -> Result<Admitted, Refused> {
        let key = client_key(ip);
        let mut open = self.lock();
        let Table { total, clients } = &mut *open;
        let held = clients.get(&key).map_or(0, Vec::len);
        let mut evicted = false;
        if held >= self.per_client {
            let list = clients.get_mut(&key).ok_or(Refused::PerClient)?;
            let (i, victim) = list
                .iter()
                .enumerate()
                .map(|(i, t)| (i, t.state.load(Ordering::Acquire)))
                .filter(|(_, s)| *s < BUSY)
                .min_by_key(|(_, s)| *s)
                .ok_or(Refused::PerClient)?;
            // Lost a race with the start of a request: that connection is busy now.
            list[i]
                .state
                .compare_exchange(victim, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .map_err(|_| Refused::PerClient)?;
            list.swap_remove(i).evict.notify_one();
            *total -= 1;
            evicted = true;
        } else if *total >= self.max
            || (*total >= self.max - self.reserve && held >= RESERVE_PER_CLIENT)
        {
            return Err(Refused::Global);
        }
        let ticket = Arc::new(Ticket::new(head_arrived));
        *total += 1;
        clients.entry(key).or_default().push(ticket.clone());
        Ok(Admitted {
            slot: Slot {
                slots: self.clone(),
                key,
                ticket,
            },
            evicted,
        })
    }

    /// Open connections, and distinct clients holding them.
    pub(super) fn counts(&self) -> (usize, usize) {
        let open = self.lock();
        (open.total, open.clients.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        // An evicted connection's slot went to the connection that replaced it.
        if self.ticket.state.load(Ordering::Acquire) == EVICTED {
            return;
        }
        let Table { total, clients } = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(list) = clients.get_mut(&self.key) {
            if let Some(i) = list.iter().position(|t| Arc::ptr_eq(t, &self.ticket)) {
                list.swap_remove(i);
            }
            if list.is_empty() {
                clients.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn admit(slots: &Arc<Slots>, addr: &str) -> Result<Slot, Refused> {
        slots.try_admit(ip(addr), false).map(|a| a.slot)
    }

    #[test]
    fn per_client_cap_evicts_the_oldest_idle_and_refuses_when_all_are_busy() {
        let slots = Slots::new(10, 2, 0);
        let a = admit(&slots, "10.0.0.1").unwrap();
        let b = admit(&slots, "10.0.0.1").unwrap();
        b.ticket().busy();
        b.ticket().idle(); // b became idle after a arrived: a is the older candidate
        let c = slots.try_admit(ip("10.0.0.1"), false).unwrap();
        assert!(c.evicted);
        assert_eq!(a.ticket().state.load(Ordering::Acquire), EVICTED);
        assert_eq!(slots.counts(), (2, 1));
        drop(a); // its slot went to c
        assert_eq!(slots.counts(), (2, 1));
        b.ticket().busy();
        c.slot.ticket().busy();
        assert_eq!(
            admit(&slots, "10.0.0.1").unwrap_err(),
            Refused::PerClient,
            "all busy: nothing to evict"
        );
        let _d = admit(&slots, "10.0.0.2").unwrap();
        c.slot.ticket().idle();
        let e = slots.try_admit(ip("10.0.0.1"), false).unwrap();
        assert!(e.evicted);
        assert_eq!(c.slot.ticket().state.load(Ordering::Acquire), EVICTED);
        drop((b, c));
        assert_eq!(slots.counts(), (2, 2));
        drop(e);
        assert_eq!(slots.counts(), (1, 1));
    }

    #[test]
    fn a_connection_whose_head_has_arrived_is_not_evicted() {
        let slots = Slots::new(10, 2, 0);
        let ready = slots.try_admit(ip("10.0.0.1"), true).unwrap().slot;
        let idle = admit(&slots, "10.0.0.1").unwrap();
        let burst: Vec<_> = (0..5).map(|_| admit(&slots, "10.0.0.1").unwrap()).collect();
        assert_eq!(idle.ticket().state.load(Ordering::Acquire), EVICTED);
        assert_eq!(ready.ticket().state.load(Ordering::Acquire), BUSY);
        assert_eq!(slots.counts(), (2, 1));
        drop(burst);
    }

    #[test]
    fn an_evicted_connection_is_told_even_before_it_waits() {
        let slots = Slots::new(10, 1, 0);
        let a = admit(&slots, "10.0.0.1").unwrap();
        let _b = admit(&slots, "10.0.0.1").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), a.ticket().evicted())
                .await
                .expect("the eviction signal was kept");
        });
    }

    #[test]
    fn reserve_admits_only_light_clients() {
        let slots = Slots::new(8, 6, 4);
        let held: Vec<_> = (0..4).map(|_| admit(&slots, "10.0.0.1").unwrap()).collect();
        // 4 open = max - reserve: 10.0.0.1 may not dip into the reserve even below its own cap.
        assert_eq!(admit(&slots, "10.0.0.1").unwrap_err(), Refused::Global);
        let _x: Vec<_> = (0..2).map(|_| admit(&slots, "10.0.0.3").unwrap()).collect();
        assert_eq!(admit(&slots, "10.0.0.3").unwrap_err(), Refused::Global);
        let _y: Vec<_> = (0..2).map(|_| admit(&slots, "10.0.0.4").unwrap()).collect();
        assert_eq!(admit(&slots, "10.0.0.5").unwrap_err(), Refused::Global);
        drop(held);
        assert_eq!(slots.counts(), (4, 2));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let slots = Slots::new(10, 1, 0);
        let a = admit(&slots, "2001:db8:1:2::1").unwrap();
        a.ticket().busy();
        assert!(admit(&slots, "2001:db8:1:2:ffff::9").is_err());
        let _b = admit(&slots, "2001:db8:1:3::1").unwrap();
        let c = admit(&slots, "192.0.2.7").unwrap();
        c.ticket().busy();
        assert!(admit(&slots, "::ffff:192.0.2.7").is_err());
    }

    #[test]
    fn table_empties_when_all_close() {
        let slots = Slots::new(1000, 16, 16);
        let held: Vec<_> = (0..900u32)
            .filter_map(|i| slots.try_admit(IpAddr::from(i.to_be_bytes()), false).ok())
            .collect();
        assert_eq!(held.len(), 900);
        drop(held);
        assert_eq!(slots.counts(), (0, 0));
    }
}
