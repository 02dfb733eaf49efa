//! One listener's live state: the settings new connections take (its [`Profile`] behind an
//! `ArcSwap`), its TLS side, the connections open on it, and the tokens that stop its socket
//! or drain it. A reload swaps these; a connection keeps the snapshot it took at accept.
//!
//! Owns the registry of open connections (peer address, the load balancer it came through,
//! and a close token each), so that a reload can close those whose address `allow_ips` no
//! longer allows or whose load balancer `proxy_from` no longer lists, and holds what must
//! outlive any one profile or socket: the listener's [`Admission`] table (the counts that
//! `max_connections`, `max_connections_per_ip` and `max_pending` bound, checked against the
//! limits of the profile a newcomer takes) and its [`RefusalLog`]. It must not accept
//! connections (`mod.rs`) nor decide what a reload changes (`reload.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::field::display;
use tracing::warn;

use super::admission::Admission;
use super::refusal_log::RefusalLog;
use super::Profile;
use crate::config::ListenerConfig;
use crate::tls::TlsListener;

/// A listener as it runs: what a reload may swap, and what it must keep.
pub(crate) struct LiveListener {
    name: Arc<str>,
    profile: ArcSwap<Profile>,
    tls: ArcSwapOption<TlsListener>,
    open: Mutex<OpenConnections>,
    admission: Admission,
    refusals: Arc<RefusalLog>,
    /// Cancelled when the listener is removed (a child of the server's shutdown token):
    /// stops its socket and drains its connections.
    drain: CancellationToken,
    socket: Mutex<Socket>,
}

/// Why a reload closed an open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Withdrawn {
    /// `allow_ips` no longer allows the peer's address.
    AddressNotAllowed,
    /// `proxy_from` no longer lists the load balancer the connection came through.
    ProxyNotTrusted,
    /// The listener was removed from the configuration.
    ListenerRemoved,
}

impl Withdrawn {
    /// The `reason` label of `hl7d_connections_closed_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Withdrawn::AddressNotAllowed => "ip_no_longer_allowed",
            Withdrawn::ProxyNotTrusted => "proxy_no_longer_trusted",
            Withdrawn::ListenerRemoved => "listener_removed",
        }
    }

    /// The reason in the connection's close line.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Withdrawn::AddressNotAllowed => "address no longer in allow_ips (reload)",
            Withdrawn::ProxyNotTrusted => "load balancer no longer in proxy_from (reload)",
            Withdrawn::ListenerRemoved => "listener removed from the configuration (reload)",
        }
    }
}

/// The socket a listener accepts on now.
struct Socket {
    addr: SocketAddr,
    stop: CancellationToken,
    accept_loop: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct OpenConnections {
    next_id: u64,
    by_id: HashMap<u64, OpenConnection>,
}

struct OpenConnection {
    /// The peer (behind a load balancer: the client); `None` while a connection through a
    /// load balancer has not sent its PROXY header.
    peer: Option<SocketAddr>,
    /// The load balancer it came through, on a `proxy_protocol` listener.
    via: Option<SocketAddr>,
    close: CancellationToken,
    withdrawn: Arc<OnceLock<Withdrawn>>,
}

impl OpenConnection {
    /// Why `config` would not let this connection in, if it would not: its load balancer
    /// is not in `proxy_from` (while `proxy_protocol` is on; turning it off closes nothing,
    /// as turning TLS off does not), or its peer is not in `allow_ips`.
    fn refused_by(&self, config: &ListenerConfig) -> Option<Withdrawn> {
        if let (Some(via), Some(proxy)) = (self.via, &config.proxy) {
            if !proxy.trusts(via.ip()) {
                return Some(Withdrawn::ProxyNotTrusted);
            }
        }
        match self.peer {
            Some(peer) if !config.allows(peer.ip()) => Some(Withdrawn::AddressNotAllowed),
            _ => None,
        }
    }

    /// Records why and cancels the token; the first reason given stays.
    fn withdraw(&self, why: Withdrawn) {
        let _ = self.withdrawn.set(why);
        self.close.cancel();
    }
}

impl LiveListener {
    /// A listener with these settings, bound at `addr`, drained by `drain` (or by its
    /// parent: the server's shutdown). Its socket's accept loop is handed over with
    /// [`LiveListener::listen`].
    pub(crate) fn new(
        profile: Profile,
        tls: Option<Arc<TlsListener>>,
        addr: SocketAddr,
        drain: CancellationToken,
    ) -> LiveListener {
        let stop = drain.child_token();
        let admission = Admission::new(profile.metrics.pending.clone());
        let refusals =
            Arc::new(RefusalLog::new(profile.name.clone(), profile.metrics.refusal_lines_suppressed.clone()));
        LiveListener {
            name: profile.name.clone(),
            profile: ArcSwap::from_pointee(profile),
            tls: ArcSwapOption::new(tls),
            open: Mutex::default(),
            admission,
            refusals,
            socket: Mutex::new(Socket { addr, stop, accept_loop: None }),
            drain,
        }
    }

    /// The listener's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The settings a connection accepted now takes, and keeps.
    pub(crate) fn profile(&self) -> Arc<Profile> {
        self.profile.load_full()
    }

    /// The TLS side a connection accepted now takes; `None` for plaintext.
    pub(crate) fn tls(&self) -> Option<Arc<TlsListener>> {
        self.tls.load_full()
    }

    /// Who is let in: the listener's connection counts (cheap to clone, shared).
    pub(crate) fn admission(&self) -> Admission {
        self.admission.clone()
    }

    /// How often refusals are logged, per peer address.
    pub(crate) fn refusals(&self) -> Arc<RefusalLog> {
        self.refusals.clone()
    }

    /// Cancelled when the listener is removed or the server stops (the refusal log's sweep
    /// runs until then).
    pub(crate) fn drained(&self) -> CancellationToken {
        self.drain.clone()
    }

    /// The address of the socket it accepts on now.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        lock(&self.socket).addr
    }

    /// The token that stops the accept loop of the socket bound at `addr`, which becomes
    /// the listener's socket: the previous socket's token is cancelled, and its accept
    /// loop (if one was handed over) is returned for the caller to await.
    pub(crate) fn rebind(&self, addr: SocketAddr) -> (CancellationToken, Option<JoinHandle<()>>) {
        let stop = self.drain.child_token();
        let mut socket = lock(&self.socket);
        socket.stop.cancel();
        let previous = socket.accept_loop.take();
        *socket = Socket { addr, stop: stop.clone(), accept_loop: None };
        (stop, previous)
    }

    /// The token that stops the current socket's accept loop.
    #[cfg(test)]
    fn socket_stop(&self) -> CancellationToken {
        lock(&self.socket).stop.clone()
    }

    /// Hands over the current socket's accept loop, so that a reload can wait for it to
    /// let go of its port.
    pub(crate) fn listen(&self, accept_loop: JoinHandle<()>) {
        lock(&self.socket).accept_loop = Some(accept_loop);
    }

    /// Swaps the TLS side for new connections (`None`: plaintext from now on). Connections
    /// already open keep their session.
    pub(crate) fn set_tls(&self, tls: Option<Arc<TlsListener>>) {
        self.tls.store(tls);
    }

    /// How many connections are open on this listener now.
    pub(crate) fn open_connections(&self) -> usize {
        lock(&self.open).by_id.len()
    }

    /// Swaps the settings for new connections, then closes every open connection whose
    /// peer the new `allow_ips` does not allow, or whose load balancer the new `proxy_from`
    /// does not list (a message in flight is answered first); returns how many were told
    /// to close.
    pub(crate) fn update(&self, profile: Profile) -> usize {
        // Under the registry's lock: a connection registers either before this (and is
        // swept here) or after (and `track` checks it against the new list).
        let open = lock(&self.open);
        self.profile.store(Arc::new(profile));
        let profile = self.profile.load();
        let mut closed = 0;
        for connection in open.by_id.values() {
            if connection.close.is_cancelled() {
                continue;
            }
            let Some(why) = connection.refused_by(&profile.config) else { continue };
            let (listener, peer, proxy) = (&*self.name, connection.peer, connection.via);
            let (peer, proxy) = (peer.map(display), proxy.map(display));
            match why {
                Withdrawn::ProxyNotTrusted => warn!(target: "audit", event = "proxy_no_longer_trusted",
                    listener, peer, proxy, "closing connection: its load balancer is no longer in proxy_from after reload"),
                _ => warn!(target: "audit", event = "peer_no_longer_allowed", listener, peer, proxy,
                    "closing connection: address no longer in allow_ips after reload"),
            }
            connection.withdraw(why);
            closed += 1;
        }
        closed
    }

    /// Stops accepting and closes every connection (idle ones at once, one with a message
    /// in flight once that message is answered); returns how many were open, and the
    /// socket's accept loop for the caller to await.
    pub(crate) fn drain(&self) -> (usize, Option<JoinHandle<()>>) {
        let accept_loop = lock(&self.socket).accept_loop.take();
        let open = lock(&self.open);
        for connection in open.by_id.values() {
            let _ = connection.withdrawn.set(Withdrawn::ListenerRemoved);
        }
        self.drain.cancel();
        (open.by_id.len(), accept_loop)
    }

    /// Registers an open connection from `peer`. The [`Tracked`] token closes it, and is
    /// cancelled by server shutdown, by the listener's removal, and by a reload whose
    /// `allow_ips` no longer allows `peer` (already here, if such a reload ran since the
    /// connection was checked at accept).
    pub(crate) fn track(self: &Arc<Self>, peer: SocketAddr) -> Tracked {
        self.register(Some(peer), None)
    }

    /// Registers an open connection from the load balancer at `proxy`, whose client is not
    /// known yet ([`Tracked::identify`] names it). Closed as [`LiveListener::track`] says,
    /// and by a reload whose `proxy_from` no longer lists `proxy`.
    pub(crate) fn track_via_proxy(self: &Arc<Self>, proxy: SocketAddr) -> Tracked {
        self.register(None, Some(proxy))
    }

    fn register(self: &Arc<Self>, peer: Option<SocketAddr>, via: Option<SocketAddr>) -> Tracked {
        let mut open = lock(&self.open);
        open.next_id += 1;
        let id = open.next_id;
        let connection = OpenConnection {
            peer,
            via,
            close: self.drain.child_token(),
            withdrawn: Arc::new(OnceLock::new()),
        };
        if self.drain.is_cancelled() {
            connection.withdraw(Withdrawn::ListenerRemoved);
        } else if let Some(why) = connection.refused_by(&self.profile.load().config) {
            connection.withdraw(why);
        }
        let tracked = Tracked {
            live: self.clone(),
            id,
            close: connection.close.clone(),
            withdrawn: connection.withdrawn.clone(),
        };
        open.by_id.insert(id, connection);
        tracked
    }

    /// Connections open now.
    #[cfg(test)]
    fn open_count(&self) -> usize {
        lock(&self.open).by_id.len()
    }
}

/// One open connection in its listener's registry; leaves it when dropped.
pub(crate) struct Tracked {
    live: Arc<LiveListener>,
    id: u64,
    /// Stops the connection: between messages at once, otherwise once the message in
    /// flight is answered (see `connection::serve`).
    pub(crate) close: CancellationToken,
    withdrawn: Arc<OnceLock<Withdrawn>>,
}

impl Tracked {
    /// Names the client of a connection registered by [`LiveListener::track_via_proxy`]
    /// (from its PROXY header); from now on a reload checks `client` against `allow_ips`,
    /// and it is checked against the current one here (a reload may have run since the
    /// caller checked it).
    pub(crate) fn identify(&self, client: SocketAddr) {
        let mut open = lock(&self.live.open);
        let Some(connection) = open.by_id.get_mut(&self.id) else { return };
        connection.peer = Some(client);
        if connection.close.is_cancelled() {
            return;
        }
        if let Some(why) = connection.refused_by(&self.live.profile.load().config) {
            connection.withdraw(why);
        }
    }

    /// Why a reload closed this connection, if one did.
    pub(crate) fn withdrawn(&self) -> Option<Withdrawn> {
        self.withdrawn.get().copied()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.live.open).by_id.remove(&self.id);
    }
}

/// The lock of this module's small registries: a panic while one was held cannot leave
/// it half-updated (each update is one insert, remove or assignment), so a poisoned lock
/// is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyProtocol;

    fn live(allow: &[&str]) -> Arc<LiveListener> {
        let mut config = ListenerConfig::plaintext("live-test", "127.0.0.1:0".parse().unwrap());
        config.allow_ips = allow.iter().map(|net| net.parse().unwrap()).collect();
        let addr = "127.0.0.1:1".parse().unwrap();
        Arc::new(LiveListener::new(Profile::new(config), None, addr, CancellationToken::new()))
    }

    fn with_allow(live: &LiveListener, allow: &[&str]) -> Profile {
        let mut config = live.profile().config.clone();
        config.allow_ips = allow.iter().map(|net| net.parse().unwrap()).collect();
        live.profile().with_config(config)
    }

    #[test]
    fn update_closes_only_connections_the_new_allow_ips_refuses() {
        let live = live(&[]);
        let kept = live.track("10.0.0.1:4000".parse().unwrap());
        let removed = live.track("192.168.1.9:4000".parse().unwrap());
        let closed = live.update(with_allow(&live, &["10.0.0.0/8"]));
        assert_eq!(closed, 1);
        assert!(!kept.close.is_cancelled());
        assert_eq!(kept.withdrawn(), None);
        assert!(removed.close.is_cancelled());
        assert_eq!(removed.withdrawn(), Some(Withdrawn::AddressNotAllowed));
        // A second reload does not count it again.
        assert_eq!(live.update(with_allow(&live, &["10.0.0.0/8"])), 0);
        drop(removed);
        assert_eq!(live.open_count(), 1, "a closed connection leaves the registry");
    }

    #[test]
    fn a_connection_tracked_after_a_reload_is_checked_against_the_new_list() {
        let live = live(&[]);
        live.update(with_allow(&live, &["10.0.0.0/8"]));
        // Accepted under the old profile, registered after the swap.
        let late = live.track("192.168.1.9:4000".parse().unwrap());
        assert_eq!(late.withdrawn(), Some(Withdrawn::AddressNotAllowed));
        assert!(late.close.is_cancelled());
    }

    fn proxied(live: &LiveListener, from: &[&str], allow: &[&str]) -> Profile {
        let mut config = with_allow(live, allow).config;
        config.proxy = Some(ProxyProtocol { from: from.iter().map(|net| net.parse().unwrap()).collect() });
        live.profile().with_config(config)
    }

    #[test]
    fn behind_a_proxy_allow_ips_applies_to_the_client_once_named() {
        let live = live(&[]);
        live.update(proxied(&live, &["10.0.0.5/32", "10.0.0.6/32"], &["192.0.2.0/24"]));
        // The proxy's own address is not in allow_ips: it is not what is checked.
        let waiting = live.track_via_proxy("10.0.0.5:4000".parse().unwrap());
        assert_eq!(waiting.withdrawn(), None);
        let allowed = live.track_via_proxy("10.0.0.5:4001".parse().unwrap());
        allowed.identify("192.0.2.7:5000".parse().unwrap());
        assert_eq!(allowed.withdrawn(), None);
        let refused = live.track_via_proxy("10.0.0.6:4000".parse().unwrap());
        refused.identify("198.51.100.7:5000".parse().unwrap());
        assert_eq!(refused.withdrawn(), Some(Withdrawn::AddressNotAllowed));
        // A reload that drops a proxy from proxy_from closes what came through it, named
        // or not; the other proxy's connections stay.
        let other = live.track_via_proxy("10.0.0.6:4001".parse().unwrap());
        other.identify("192.0.2.8:5000".parse().unwrap());
        assert_eq!(live.update(proxied(&live, &["10.0.0.6/32"], &["192.0.2.0/24"])), 2);
        assert_eq!(waiting.withdrawn(), Some(Withdrawn::ProxyNotTrusted));
        assert_eq!(allowed.withdrawn(), Some(Withdrawn::ProxyNotTrusted));
        assert_eq!(other.withdrawn(), None);
        // A reload that narrows allow_ips checks the client, not the proxy.
        assert_eq!(live.update(proxied(&live, &["10.0.0.6/32"], &["192.0.2.7/32"])), 1);
        assert_eq!(other.withdrawn(), Some(Withdrawn::AddressNotAllowed));
        // A newcomer from a proxy the current profile does not list is closed at once.
        let late = live.track_via_proxy("10.0.0.5:4002".parse().unwrap());
        assert_eq!(late.withdrawn(), Some(Withdrawn::ProxyNotTrusted));
    }

    #[test]
    fn drain_closes_everything_and_stops_the_socket() {
        let live = live(&[]);
        let stop = live.socket_stop();
        let a = live.track("10.0.0.1:4000".parse().unwrap());
        let (open, accept_loop) = live.drain();
        assert_eq!(open, 1);
        assert!(accept_loop.is_none());
        assert!(stop.is_cancelled() && a.close.is_cancelled());
        assert_eq!(a.withdrawn(), Some(Withdrawn::ListenerRemoved));
        let late = live.track("10.0.0.2:4000".parse().unwrap());
        assert_eq!(late.withdrawn(), Some(Withdrawn::ListenerRemoved));
    }

    #[test]
    fn rebind_stops_the_previous_socket_only() {
        let live = live(&[]);
        let old = live.socket_stop();
        let (new, previous) = live.rebind("127.0.0.1:2".parse().unwrap());
        assert!(old.is_cancelled() && !new.is_cancelled());
        assert!(previous.is_none());
        assert_eq!(live.local_addr(), "127.0.0.1:2".parse().unwrap());
    }
}
