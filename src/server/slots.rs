//! Connection slots: a global cap, a per-client cap that evicts the client's own idle or
//! unfinished connections first, and a reserve for clients holding few.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::RawFd;
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

/// Bytes of a connection looked at for a complete request head.
const HEAD_PEEK: usize = 2048;

/// Whether a complete request head (`\r\n\r\n`) is among the first [`HEAD_PEEK`] bytes
/// waiting, unread, on socket `fd`: then the connection is about to be answered and is no
/// candidate for eviction. Never waits; `false` for anything but a socket with such bytes.
fn head_waiting(fd: RawFd) -> bool {
    let mut buf = [0u8; HEAD_PEEK];
    // SAFETY: recv(2) into a local buffer of `buf.len()` bytes. MSG_PEEK leaves the data for
    // hyper and MSG_DONTWAIT never blocks; a descriptor that is closed (or, at worst, reused)
    // only gives a wrong yes/no, never touches memory.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).is_ok_and(|n| buf[..n].windows(4).any(|w| w == b"\r\n\r\n"))
}

/// Whether any byte waits, unread, on socket `fd`. Never waits.
fn bytes_waiting(fd: RawFd) -> bool {
    let mut buf = [0u8; 1];
    // SAFETY: as in `head_waiting`, with a one-byte local buffer.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

/// What the slot table knows of one connection: its socket, whether it speaks TLS, whether it
/// may be evicted (idle, or its request head not yet complete: it has shown no credential) and
/// since when, whether it has been answered before, and the signal that tells its task to
/// close.
#[derive(Debug)]
pub(super) struct Ticket {
    fd: RawFd,
    tls: bool,
    served: std::sync::atomic::AtomicBool,
    state: AtomicU64,
    evict: Notify,
}

impl Default for Ticket {
    /// A connection without a socket to look at, evictable from now.
    fn default() -> Ticket {
        Ticket::new(-1, false)
    }
}

impl Ticket {
    /// A new connection on socket `fd`; one whose complete request head has already arrived
    /// counts as busy (it is answered as soon as its task runs, however many connections its
    /// client opens meanwhile). A TLS connection starts evictable: its first bytes are a
    /// handshake, which shows no credential.
    fn new(fd: RawFd, tls: bool) -> Ticket {
        let state = if !tls && head_waiting(fd) {
            BUSY
        } else {
            stamp()
        };
        Ticket {
            fd,
            tls,
            served: std::sync::atomic::AtomicBool::new(false),
            state: AtomicU64::new(state),
            evict: Notify::new(),
        }
    }

    /// Whether a request is arriving on this evictable connection, so that it is about to be
    /// answered and is spared: a complete plaintext head waiting, or — on TLS, where the bytes
    /// are ciphertext — any bytes waiting on a connection that has been answered before (its
    /// handshake is done; what comes is its next request).
    fn arriving(&self) -> bool {
        if self.tls {
            self.served.load(Ordering::Acquire) && bytes_waiting(self.fd)
        } else {
            head_waiting(self.fd)
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
        self.served.store(true, Ordering::Release);
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
    tls: bool,
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
    /// `reserve` is clamped below `max`; `tls`: the listener's connections speak TLS.
    pub(super) fn new(max: usize, per_client: usize, reserve: usize, tls: bool) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_client,
            reserve: reserve.min(max.saturating_sub(1)),
            tls,
            open: Mutex::new(Table::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for the connection on socket `fd` from `ip` (evicting one of its idle or
    /// unfinished connections if it is at its cap), or says which cap refused it.
    pub(super) fn try_admit(self: &Arc<Self>, ip: IpAddr, fd: RawFd) -> Result<Admitted, Refused> {
        let key = client_key(ip);
        let mut open = self.lock();
        let Table { total, clients } = &mut *open;
        let held = clients.get(&key).map_or(0, Vec::len);
        let mut evicted = false;
        if held >= self.per_client {
            let list = clients.get_mut(&key).ok_or(Refused::PerClient)?;
            let mut candidates: Vec<(u64, usize)> = list
                .iter()
                .enumerate()
                .map(|(i, t)| (t.state.load(Ordering::Acquire), i))
                .filter(|(s, _)| *s < BUSY)
                .collect();
            candidates.sort_unstable();
            let mut chosen = None;
            for (s, i) in candidates {
                let t = &list[i];
                // A request that arrived since: about to be answered, spared.
                let to = if t.arriving() { BUSY } else { EVICTED };
                // A lost race means a request started on it: busy now, spared too.
                let swapped = t
                    .state
                    .compare_exchange(s, to, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if swapped && to == EVICTED {
                    chosen = Some(i);
                    break;
                }
            }
            let i = chosen.ok_or(Refused::PerClient)?;
            list.swap_remove(i).evict.notify_one();
            *total -= 1;
            evicted = true;
        } else if *total >= self.max
            || (*total >= self.max - self.reserve && held >= RESERVE_PER_CLIENT)
        {
            return Err(Refused::Global);
        }
        let ticket = Arc::new(Ticket::new(fd, self.tls));
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
        slots.try_admit(ip(addr), -1).map(|a| a.slot)
    }

    #[test]
    fn per_client_cap_evicts_the_oldest_idle_and_refuses_when_all_are_busy() {
        let slots = Slots::new(10, 2, 0, false);
        let a = admit(&slots, "10.0.0.1").unwrap();
        let b = admit(&slots, "10.0.0.1").unwrap();
        b.ticket().busy();
        b.ticket().idle(); // b became idle after a arrived: a is the older candidate
        let c = slots.try_admit(ip("10.0.0.1"), -1).unwrap();
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
        let e = slots.try_admit(ip("10.0.0.1"), -1).unwrap();
        assert!(e.evicted);
        assert_eq!(c.slot.ticket().state.load(Ordering::Acquire), EVICTED);
        drop((b, c));
        assert_eq!(slots.counts(), (2, 2));
        drop(e);
        assert_eq!(slots.counts(), (1, 1));
    }

    #[test]
    fn a_connection_whose_head_has_arrived_is_not_evicted() {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut early = std::net::TcpStream::connect(addr).unwrap();
        early
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let (early_srv, _) = listener.accept().unwrap();
        let mut late = std::net::TcpStream::connect(addr).unwrap();
        let (late_srv, _) = listener.accept().unwrap();
        let slots = Slots::new(10, 3, 0, false);
        let a = slots
            .try_admit(ip("10.0.0.1"), early_srv.as_raw_fd())
            .unwrap();
        let b = slots
            .try_admit(ip("10.0.0.1"), late_srv.as_raw_fd())
            .unwrap();
        let idle = admit(&slots, "10.0.0.1").unwrap();
        assert_eq!(a.slot.ticket().state.load(Ordering::Acquire), BUSY);
        // `late` sends its head only now: it is spared at eviction time.
        late.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        while !head_waiting(late_srv.as_raw_fd()) {
            std::thread::yield_now();
        }
        let c = slots.try_admit(ip("10.0.0.1"), -1).unwrap();
        assert!(c.evicted);
        assert_eq!(idle.ticket().state.load(Ordering::Acquire), EVICTED);
        assert_eq!(b.slot.ticket().state.load(Ordering::Acquire), BUSY);
        // Nothing left to evict: every other connection is about to be answered.
        c.slot.ticket().busy();
        assert_eq!(admit(&slots, "10.0.0.1").unwrap_err(), Refused::PerClient);
        drop((a, b, c, idle));
        assert_eq!(slots.counts(), (0, 0));
    }

    #[test]
    fn on_tls_bytes_on_an_answered_connection_spare_it_and_a_handshake_does_not() {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut answered = std::net::TcpStream::connect(addr).unwrap();
        let (answered_srv, _) = listener.accept().unwrap();
        let mut handshaking = std::net::TcpStream::connect(addr).unwrap();
        let (handshaking_srv, _) = listener.accept().unwrap();
        let slots = Slots::new(10, 2, 0, true);
        let a = slots
            .try_admit(ip("10.0.0.1"), answered_srv.as_raw_fd())
            .unwrap();
        // `a` answered one request and is idle: the older of the two.
        a.slot.ticket().busy();
        a.slot.ticket().idle();
        // Its handshake is waiting, unread: not a request, so the connection starts evictable.
        handshaking
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .unwrap();
        while !bytes_waiting(handshaking_srv.as_raw_fd()) {
            std::thread::yield_now();
        }
        let h = slots
            .try_admit(ip("10.0.0.1"), handshaking_srv.as_raw_fd())
            .unwrap();
        assert!(h.slot.ticket().state.load(Ordering::Acquire) < BUSY);
        // `a`'s next request arrives (ciphertext): spared; the handshake is evicted instead.
        answered
            .write_all(b"\x17\x03\x03\x00\x20ciphertext")
            .unwrap();
        while !bytes_waiting(answered_srv.as_raw_fd()) {
            std::thread::yield_now();
        }
        let c = slots.try_admit(ip("10.0.0.1"), -1).unwrap();
        assert!(c.evicted);
        assert_eq!(h.slot.ticket().state.load(Ordering::Acquire), EVICTED);
        assert_eq!(a.slot.ticket().state.load(Ordering::Acquire), BUSY);
        drop((a, h, c));
        assert_eq!(slots.counts(), (0, 0));
    }

    #[test]
    fn an_evicted_connection_is_told_even_before_it_waits() {
        let slots = Slots::new(10, 1, 0, false);
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
        let slots = Slots::new(8, 6, 4, false);
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
        let slots = Slots::new(10, 1, 0, false);
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
        let slots = Slots::new(1000, 16, 16, false);
        let held: Vec<_> = (0..900u32)
            .filter_map(|i| slots.try_admit(IpAddr::from(i.to_be_bytes()), -1).ok())
            .collect();
        assert_eq!(held.len(), 900);
        drop(held);
        assert_eq!(slots.counts(), (0, 0));
    }
}
