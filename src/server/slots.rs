//! Connection slots: a global cap, a per-client cap, and a reserve for clients holding none.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// The client already holds its share.
    PerClient,
    /// The server holds its maximum (or only the reserve is left and this client holds some).
    Global,
}

/// Open connections, counted globally and per client key.
///
/// Admission: a client holding fewer than `per_client` connections is admitted while fewer than
/// `max - reserve` are open; the last `reserve` slots go only to clients holding fewer than
/// [`RESERVE_PER_CLIENT`], so a new operator can connect even when a few clients have filled the
/// rest (two, not one, so a client's next connection is not refused while its last one is
/// still being torn down).
#[derive(Debug)]
pub(super) struct Slots {
    max: usize,
    per_client: usize,
    reserve: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Slot {
    slots: Arc<Slots>,
    key: IpAddr,
}

impl Slots {
    /// `reserve` is clamped below `max`.
    pub(super) fn new(max: usize, per_client: usize, reserve: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            per_client,
            reserve: reserve.min(max.saturating_sub(1)),
            open: Mutex::new((0, HashMap::new())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `ip`, or says which cap refused it.
    pub(super) fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = client_key(ip);
        let mut open = self.lock();
        let (total, clients) = &mut *open;
        let held = clients.get(&key).copied().unwrap_or(0);
        if held >= self.per_client {
            return Err(Refused::PerClient);
        }
        if *total >= self.max || (*total >= self.max - self.reserve && held >= RESERVE_PER_CLIENT) {
            return Err(Refused::Global);
        }
        *total += 1;
        *clients.entry(key).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Open connections, and distinct clients holding them.
    pub(super) fn counts(&self) -> (usize, usize) {
        let open = self.lock();
        (open.0, open.1.len())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        let (total, clients) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = clients.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
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

    #[test]
    fn per_client_cap_and_release() {
        let slots = Slots::new(10, 2, 0);
        let a = slots.try_admit(ip("10.0.0.1")).unwrap();
        let _b = slots.try_admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            slots.try_admit(ip("10.0.0.1")).unwrap_err(),
            Refused::PerClient
        );
        let _c = slots.try_admit(ip("10.0.0.2")).unwrap();
        drop(a);
        let _d = slots.try_admit(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.counts(), (3, 2));
    }

    #[test]
    fn reserve_admits_only_light_clients() {
        let slots = Slots::new(8, 6, 4);
        let held: Vec<_> = (0..4)
            .map(|_| slots.try_admit(ip("10.0.0.1")).unwrap())
            .collect();
        // 4 open = max - reserve: 10.0.0.1 may not dip into the reserve even below its own cap.
        assert_eq!(
            slots.try_admit(ip("10.0.0.1")).unwrap_err(),
            Refused::Global
        );
        let _x: Vec<_> = (0..2)
            .map(|_| slots.try_admit(ip("10.0.0.3")).unwrap())
            .collect();
        assert_eq!(
            slots.try_admit(ip("10.0.0.3")).unwrap_err(),
            Refused::Global
        );
        let _y: Vec<_> = (0..2)
            .map(|_| slots.try_admit(ip("10.0.0.4")).unwrap())
            .collect();
        assert_eq!(
            slots.try_admit(ip("10.0.0.5")).unwrap_err(),
            Refused::Global
        );
        drop(held);
        assert_eq!(slots.counts(), (4, 2));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let slots = Slots::new(10, 1, 0);
        let _a = slots.try_admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(slots.try_admit(ip("2001:db8:1:2:ffff::9")).is_err());
        let _b = slots.try_admit(ip("2001:db8:1:3::1")).unwrap();
        let _c = slots.try_admit(ip("192.0.2.7")).unwrap();
        assert!(slots.try_admit(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn table_empties_when_all_close() {
        let slots = Slots::new(1000, 16, 16);
        let held: Vec<_> = (0..900u32)
            .filter_map(|i| slots.try_admit(IpAddr::from(i.to_be_bytes())).ok())
            .collect();
        assert_eq!(held.len(), 900);
        drop(held);
        assert_eq!(slots.counts(), (0, 0));
    }
}
