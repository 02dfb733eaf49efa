//! Admission: which accepted connections a listener keeps, counted per listener and per
//! peer address, and which pending connection gives way to a newcomer.
//!
//! A connection is *pending* from accept until it shows it is a sender: its TLS handshake
//! finished (the client certificate approved, on mutual TLS) or, on a plaintext listener,
//! its first MLLP byte arrived. It is *established* from then on. Pending connections cost
//! an attacker nothing but a TCP handshake, so they must never lock approved senders out:
//!
//! - at most `max_pending` are pending at once; a newcomer beyond that makes the **oldest**
//!   pending connection go (it is closed at once), and so does a newcomer that finds
//!   `max_connections` taken while some of them are pending. An established connection is
//!   never dropped to make room;
//! - `max_connections` counts every connection, pending or established; a newcomer is
//!   refused only when all of them are established;
//! - `max_connections_per_ip` counts every connection from one address (an IPv4-mapped IPv6
//!   address is its IPv4 address); a newcomer beyond it is refused.
//!
//! Behind a load balancer (`proxy_protocol`) the address that counts is the client's, which
//! only the connection's PROXY header names. Such a connection is let in under no address
//! ([`Admission::admit_unidentified`]): it counts towards `max_connections` and, being
//! pending, `max_pending` (so connections that never send their header give way like any
//! other pending ones), but towards no address's `max_connections_per_ip` until
//! [`Slot::identify`] names its client, which is refused then if that address is full.
//! Counting them under the proxy's address would refuse every client past the first
//! `max_connections_per_ip`.
//!
//! Owns the counts and the table of live connections: no I/O, no clock (the caller passes
//! the time; it only serves to say how long a dropped connection was pending) and no
//! logging (the caller logs what [`Admission::admit`] tells it). A [`Slot`] releases its
//! counts when its last clone is dropped, however its task ends (a panic included).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use metrics::Gauge;
use tokio_util::sync::CancellationToken;

use crate::config::ListenerConfig;

/// The limits one admission is checked against (read from the listener's configuration at
/// each accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max_connections`: connections at once, pending or established.
    pub max_connections: usize,
    /// `max_connections_per_ip`: connections at once from one address.
    pub max_per_ip: usize,
    /// `max_pending`: connections at once that have not finished their TLS handshake or
    /// sent their first MLLP byte.
    pub max_pending: usize,
}

impl Limits {
    /// The limits of `listener`.
    pub fn of(listener: &ListenerConfig) -> Limits {
        Limits {
            max_connections: listener.max_connections,
            max_per_ip: listener.max_connections_per_ip,
            max_pending: listener.max_pending,
        }
    }
}

/// Why a newcomer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `max_connections_per_ip` connections already.
    MaxConnectionsPerIp,
    /// `max_connections` are open and none of them is pending.
    MaxConnections,
}

impl Refused {
    /// The `reason` of the audit line and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::MaxConnectionsPerIp => "max_connections_per_ip",
            Refused::MaxConnections => "max_connections",
        }
    }
}

/// A pending connection dropped to make room for a newcomer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Its peer.
    pub peer: SocketAddr,
    /// How long it had been pending.
    pub pending_for: Duration,
    /// `max_pending` (too many pending) or `max_connections` (the listener was full and
    /// this was the oldest pending connection): the `reason` of the audit line.
    pub reason: &'static str,
}

/// A newcomer let in.
pub struct Admitted {
    /// Its place in the table, pending until [`Slot::established`].
    pub slot: Slot,
    /// The pending connection that made room for it, if one had to.
    pub dropped: Option<Dropped>,
}

/// The live connections of one listener. Cheap to clone (shared).
#[derive(Clone)]
pub struct Admission {
    table: Arc<Mutex<Table>>,
}

struct Table {
    next_id: u64,
    live: HashMap<u64, Live>,
    /// Ids of the pending connections; ids grow, so the first is the oldest.
    pending: BTreeSet<u64>,
    per_ip: HashMap<IpAddr, usize>,
    /// `hl7d_connections_pending{listener}`.
    pending_gauge: Gauge,
}

struct Live {
    /// The peer: the proxy's address until [`Slot::identify`] names the client.
    peer: SocketAddr,
    /// Whether `peer` is counted in `per_ip` (not while it is a proxy's address).
    counted: bool,
    admitted_at: Instant,
    close: CancellationToken,
}

impl Admission {
    /// An empty table whose pending count is mirrored in `pending_gauge`.
    pub fn new(pending_gauge: Gauge) -> Admission {
        let table = Table {
            next_id: 0,
            live: HashMap::new(),
            pending: BTreeSet::new(),
            per_ip: HashMap::new(),
            pending_gauge,
        };
        Admission { table: Arc::new(Mutex::new(table)) }
    }

    /// Lets a newcomer from `peer` in as a pending connection, or says why not. When a
    /// pending connection has to make room, it is removed from the counts at once and its
    /// close token is cancelled; its task sees that and ends. `close` becomes the
    /// newcomer's close token (see [`Slot::close_token`]).
    pub fn admit(
        &self,
        peer: SocketAddr,
        limits: Limits,
        close: CancellationToken,
        now: Instant,
    ) -> Result<Admitted, Refused> {
        self.admit_as(peer, true, limits, close, now)
    }

    /// Lets a newcomer from the load balancer at `proxy` in as [`Admission::admit`] does,
    /// but counted under no address until [`Slot::identify`] names its client (see the
    /// module comment).
    pub fn admit_unidentified(
        &self,
        proxy: SocketAddr,
        limits: Limits,
        close: CancellationToken,
        now: Instant,
    ) -> Result<Admitted, Refused> {
        self.admit_as(proxy, false, limits, close, now)
    }

    fn admit_as(
        &self,
        peer: SocketAddr,
        counted: bool,
        limits: Limits,
        close: CancellationToken,
        now: Instant,
    ) -> Result<Admitted, Refused> {
        let mut table = self.lock();
        let ip = peer.ip().to_canonical();
        if counted && table.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_per_ip {
            return Err(Refused::MaxConnectionsPerIp);
        }
        let open = table.live.len();
        let full = open >= limits.max_connections;
        // A pending connection can make room for one newcomer; if that is not enough (all
        // established, or max_connections lowered below the number open), nobody is
        // dropped for nothing.
        let room_after_drop = !table.pending.is_empty() && open - 1 < limits.max_connections;
        if full && !room_after_drop {
            return Err(Refused::MaxConnections);
        }
        let over_pending = table.pending.len() >= limits.max_pending;
        let dropped = match (over_pending, full) {
            (true, _) => table.drop_oldest_pending(now, "max_pending"),
            (false, true) => table.drop_oldest_pending(now, "max_connections"),
            (false, false) => None,
        };
        let id = table.next_id;
        table.next_id += 1;
        table.live.insert(id, Live { peer, counted, admitted_at: now, close: close.clone() });
        table.pending.insert(id);
        table.pending_gauge.increment(1.0);
        if counted {
            *table.per_ip.entry(ip).or_insert(0) += 1;
        }
        let slot = Slot { inner: Arc::new(SlotInner { id, table: self.table.clone(), close }) };
        Ok(Admitted { slot, dropped })
    }

    /// Connections open now (pending and established).
    pub fn open(&self) -> usize {
        self.lock().live.len()
    }

    /// Pending connections now.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Connections open now from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.lock().per_ip.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // The table is consistent after every statement that changes it: a panic elsewhere
    // while it was locked leaves nothing half done.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Table {
    fn drop_oldest_pending(&mut self, now: Instant, reason: &'static str) -> Option<Dropped> {
        let id = self.pending.pop_first()?;
        self.pending_gauge.decrement(1.0);
        let live = self.remove(id)?;
        live.close.cancel();
        let pending_for = now.saturating_duration_since(live.admitted_at);
        Some(Dropped { peer: live.peer, pending_for, reason })
    }

    /// Removes a live connection from the counts (not from `pending`).
    fn remove(&mut self, id: u64) -> Option<Live> {
        let live = self.live.remove(&id)?;
        if !live.counted {
            return Some(live);
        }
        let ip = live.peer.ip().to_canonical();
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                // Only addresses with open connections are kept: the map is bounded by
                // max_connections.
                self.per_ip.remove(&ip);
            }
        }
        Some(live)
    }
}

/// One admitted connection's place in its listener's table. Clones share it; the counts are
/// released when the last clone is dropped.
#[derive(Clone)]
pub struct Slot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    id: u64,
    table: Arc<Mutex<Table>>,
    close: CancellationToken,
}

impl Slot {
    /// The connection is established: it leaves the pending count and can no longer be
    /// dropped to make room. Idempotent; nothing happens to a connection already dropped.
    pub fn established(&self) {
        let mut table = lock(&self.inner.table);
        if table.pending.remove(&self.inner.id) {
            table.pending_gauge.decrement(1.0);
        }
    }

    /// Names the client of a connection let in by [`Admission::admit_unidentified`] (from its
    /// PROXY header): from now on it counts towards `client`'s `max_connections_per_ip`, or,
    /// when that address already holds `max_per_ip` connections, it is refused (and stays
    /// uncounted; the caller drops it). Nothing happens to a connection already dropped or
    /// already identified.
    pub fn identify(&self, client: SocketAddr, max_per_ip: usize) -> Result<(), Refused> {
        let mut table = lock(&self.inner.table);
        let table = &mut *table;
        let Some(live) = table.live.get_mut(&self.inner.id) else { return Ok(()) };
        if live.counted {
            return Ok(());
        }
        let ip = client.ip().to_canonical();
        let count = table.per_ip.entry(ip).or_insert(0);
        if *count >= max_per_ip {
            if *count == 0 {
                table.per_ip.remove(&ip);
            }
            return Err(Refused::MaxConnectionsPerIp);
        }
        *count += 1;
        live.peer = client;
        live.counted = true;
        Ok(())
    }

    /// Whether the connection was dropped to make room for a newer one.
    pub fn was_dropped(&self) -> bool {
        // While a clone lives, only `drop_oldest_pending` removes it from `live`.
        !lock(&self.inner.table).live.contains_key(&self.inner.id)
    }

    /// The token given to [`Admission::admit`]: cancelled when the connection is dropped to
    /// make room (and by whoever else holds it, e.g. shutdown when it is a child token).
    pub fn close_token(&self) -> &CancellationToken {
        &self.inner.close
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        if table.pending.remove(&self.id) {
            table.pending_gauge.decrement(1.0);
        }
        table.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LIMITS: Limits = Limits { max_connections: 6, max_per_ip: 4, max_pending: 3 };

    fn peer(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], port))
    }

    fn admit(admission: &Admission, peer: SocketAddr, now: Instant) -> Result<Admitted, Refused> {
        admission.admit(peer, LIMITS, CancellationToken::new(), now)
    }

    fn table() -> Admission {
        Admission::new(Gauge::noop())
    }

    #[test]
    fn beyond_max_pending_the_oldest_pending_connection_goes() {
        let admission = table();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let slots: Vec<Admitted> =
            (0..3).map(|i| admit(&admission, peer(i + 1, 1000), at(i.into())).unwrap()).collect();
        assert!(slots.iter().all(|a| a.dropped.is_none()));
        assert_eq!((admission.open(), admission.pending()), (3, 3));

        let fourth = admit(&admission, peer(9, 1000), at(10)).unwrap();
        let expected =
            Dropped { peer: peer(1, 1000), pending_for: Duration::from_secs(10), reason: "max_pending" };
        assert_eq!(fourth.dropped, Some(expected));
        assert!(slots[0].slot.close_token().is_cancelled(), "the oldest is told to close");
        assert!(slots[0].slot.was_dropped());
        assert!(!slots[1].slot.was_dropped() && !slots[1].slot.close_token().is_cancelled());
        assert_eq!((admission.open(), admission.pending()), (3, 3));
        assert_eq!(admission.from_ip(peer(1, 0).ip()), 0, "counted out at once, not when its task ends");
        // Its task ending later changes nothing more.
        drop(slots);
        assert_eq!((admission.open(), admission.pending()), (1, 1));
        drop(fourth);
        assert_eq!((admission.open(), admission.pending()), (0, 0));
    }

    #[test]
    fn an_established_connection_is_never_dropped() {
        let admission = table();
        let now = Instant::now();
        let established: Vec<Admitted> = (0..3)
            .map(|i| {
                let admitted = admit(&admission, peer(i + 1, 1), now).unwrap();
                admitted.slot.established();
                admitted.slot.established(); // idempotent
                admitted
            })
            .collect();
        assert_eq!((admission.open(), admission.pending()), (3, 0));
        // Three pending fill the rest; each newcomer after that replaces the oldest pending.
        let mut pending: Vec<Admitted> =
            (0..3).map(|i| admit(&admission, peer(10 + i, 1), now).unwrap()).collect();
        assert_eq!(admission.open(), LIMITS.max_connections);
        for i in 0..10 {
            let admitted = admit(&admission, peer(20 + i, 1), now).unwrap();
            assert!(admitted.dropped.is_some(), "a pending connection made room");
            pending.push(admitted);
        }
        assert!(established.iter().all(|a| !a.slot.was_dropped() && !a.slot.close_token().is_cancelled()));
        assert_eq!((admission.open(), admission.pending()), (6, 3));
        // All established: the next one is refused.
        for a in pending.iter().rev().take(3) {
            a.slot.established();
        }
        assert_eq!(admit(&admission, peer(99, 1), now).err(), Some(Refused::MaxConnections));
    }

    #[test]
    fn a_full_listener_drops_a_pending_connection_even_below_max_pending() {
        let admission = table();
        let now = Instant::now();
        let mut all = Vec::new();
        for i in 0..5 {
            let admitted = admit(&admission, peer(i + 1, 1), now).unwrap();
            admitted.slot.established();
            all.push(admitted);
        }
        let pending = admit(&admission, peer(50, 1), now).unwrap();
        assert_eq!((admission.open(), admission.pending()), (6, 1));
        let newcomer = admit(&admission, peer(51, 1), now).unwrap();
        assert_eq!(newcomer.dropped.map(|d| (d.peer, d.reason)), Some((peer(50, 1), "max_connections")));
        assert!(pending.slot.was_dropped());
    }

    #[test]
    fn max_connections_per_ip_refuses_that_address_only() {
        let admission = table();
        let now = Instant::now();
        let one: Vec<Admitted> = (0..4)
            .map(|port| {
                let admitted = admit(&admission, peer(1, port), now).unwrap();
                admitted.slot.established();
                admitted
            })
            .collect();
        assert_eq!(admit(&admission, peer(1, 9), now).err(), Some(Refused::MaxConnectionsPerIp));
        // The same address written as IPv4-mapped IPv6 is the same address.
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()), 9);
        assert_eq!(admit(&admission, mapped, now).err(), Some(Refused::MaxConnectionsPerIp));
        let other = admit(&admission, peer(2, 1), now).expect("another address gets in");
        assert_eq!(admission.from_ip(peer(1, 0).ip()), 4);
        // A connection leaving frees its address's place.
        drop(one);
        assert_eq!(admission.from_ip(peer(1, 0).ip()), 0);
        assert!(admit(&admission, peer(1, 10), now).is_ok());
        drop(other);
    }

    #[test]
    fn connections_through_a_proxy_count_under_their_client_once_identified() {
        let admission = table();
        let now = Instant::now();
        let proxy = peer(200, 1);
        let through = |port| {
            admission.admit_unidentified(
                SocketAddr::new(proxy.ip(), port),
                LIMITS,
                CancellationToken::new(),
                now,
            )
        };
        // Far more than max_per_ip from the proxy's address: none is counted under it.
        let mut open = Vec::new();
        for (i, port) in (0..6).zip(100..) {
            let admitted = through(port).expect("the proxy's address is not limited");
            admitted.slot.established();
            admitted.slot.identify(peer(i % 2 + 1, port), LIMITS.max_per_ip).expect("room for the client");
            open.push(admitted);
        }
        assert_eq!(admission.from_ip(proxy.ip()), 0);
        assert_eq!((admission.from_ip(peer(1, 0).ip()), admission.from_ip(peer(2, 0).ip())), (3, 3));
        // They still count towards max_connections.
        assert_eq!(through(200).err(), Some(Refused::MaxConnections));
        drop(open.pop());
        // The client's own limit applies once its header names it.
        let admitted = through(201).unwrap();
        assert_eq!(admitted.slot.identify(peer(1, 9), 3), Err(Refused::MaxConnectionsPerIp));
        assert_eq!(admission.from_ip(peer(1, 0).ip()), 3, "a refused identification counts nothing");
        drop(admitted);
        assert_eq!(admission.open(), 5);
        drop(open);
        assert_eq!((admission.open(), admission.pending()), (0, 0));
        assert_eq!(admission.from_ip(peer(1, 0).ip()), 0, "identified connections are counted out");
    }

    #[test]
    fn connections_waiting_for_their_header_are_pending_and_give_way() {
        let admission = table();
        let t0 = Instant::now();
        let proxy = peer(200, 1);
        let waiting: Vec<Admitted> = (0..3)
            .map(|_| admission.admit_unidentified(proxy, LIMITS, CancellationToken::new(), t0).unwrap())
            .inspect(|a| assert!(a.dropped.is_none()))
            .collect();
        assert_eq!(admission.pending(), 3);
        let newcomer = admission.admit_unidentified(proxy, LIMITS, CancellationToken::new(), t0).unwrap();
        let dropped = newcomer.dropped.expect("the oldest waiting connection makes room");
        assert_eq!((dropped.peer, dropped.reason), (proxy, "max_pending"));
        assert!(waiting[0].slot.was_dropped() && waiting[0].slot.close_token().is_cancelled());
        // Identifying a dropped connection changes nothing.
        assert_eq!(waiting[0].slot.identify(peer(1, 1), 1), Ok(()));
        assert_eq!(admission.from_ip(peer(1, 0).ip()), 0);
        // A header names the client: the dropped report then names it too.
        waiting[1].slot.identify(peer(7, 1), 1).unwrap();
        let next = admission.admit_unidentified(proxy, LIMITS, CancellationToken::new(), t0).unwrap();
        assert_eq!(next.dropped.map(|d| d.peer), Some(peer(7, 1)));
        assert_eq!(admission.from_ip(peer(7, 0).ip()), 0, "counted out when dropped");
    }

    #[test]
    fn lowered_limits_refuse_newcomers_without_dropping_anyone_for_nothing() {
        let admission = table();
        let now = Instant::now();
        let mut open = Vec::new();
        for i in 0..6 {
            let admitted = admit(&admission, peer(i + 1, 1), now).unwrap();
            if i < 3 {
                admitted.slot.established();
            }
            open.push(admitted);
        }
        assert_eq!((admission.open(), admission.pending()), (6, 3));
        // A reload lowers max_connections to 2: a newcomer would not fit even after one
        // pending connection left, so none leaves.
        let lowered = Limits { max_connections: 2, ..LIMITS };
        let refused = admission.admit(peer(60, 1), lowered, CancellationToken::new(), now);
        assert_eq!(refused.err(), Some(Refused::MaxConnections));
        assert_eq!(admission.pending(), 3);
        assert!(open.iter().all(|a| !a.slot.was_dropped()));
    }
}
