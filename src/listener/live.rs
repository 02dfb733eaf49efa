//! One listener's live state: the settings new connections take (its [`Profile`] behind an
//! `ArcSwap`), its TLS side, the connections open on it, and the tokens that stop its socket
//! or drain it. A reload swaps these; a connection keeps the snapshot it took at accept.
//!
//! Owns the registry of open connections (peer address and a close token each), so that a
//! reload can close those whose address `allow_ips` no longer allows, and holds what must
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
use tracing::warn;

use super::admission::Admission;
use super::refusal_log::RefusalLog;
use super::Profile;
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
    /// The listener was removed from the configuration.
    ListenerRemoved,
}

impl Withdrawn {
    /// The `reason` label of `hl7d_connections_closed_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Withdrawn::AddressNotAllowed => "ip_no_longer_allowed",
            Withdrawn::ListenerRemoved => "listener_removed",
        }
    }

    /// The reason in the connection's close line.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Withdrawn::AddressNotAllowed => "address no longer in allow_ips (reload)",
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
    peer: SocketAddr,
    close: CancellationToken,
    withdrawn: Arc<OnceLock<Withdrawn>>,
}

impl OpenConnection {
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

    /// Swaps the settings for new connections, then closes every open connection whose
    /// peer the new `allow_ips` does not allow (a message in flight is answered first);
    /// returns how many were told to close.
    pub(crate) fn update(&self, profile: Profile) -> usize {
        // Under the registry's lock: a connection registers either before this (and is
        // swept here) or after (and `track` checks it against the new list).
        let open = lock(&self.open);
        self.profile.store(Arc::new(profile));
        let profile = self.profile.load();
        let mut closed = 0;
        for connection in open.by_id.values() {
            if connection.close.is_cancelled() || profile.config.allows(connection.peer.ip()) {
                continue;
            }
            warn!(target: "audit", event = "peer_no_longer_allowed", listener = &*self.name,
                peer = %connection.peer, "closing connection: address no longer in allow_ips after reload");
            connection.withdraw(Withdrawn::AddressNotAllowed);
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
        let mut open = lock(&self.open);
        open.next_id += 1;
        let id = open.next_id;
        let connection =
            OpenConnection { peer, close: self.drain.child_token(), withdrawn: Arc::new(OnceLock::new()) };
        if self.drain.is_cancelled() {
            connection.withdraw(Withdrawn::ListenerRemoved);
        } else if !self.profile.load().config.allows(peer.ip()) {
            connection.withdraw(Withdrawn::AddressNotAllowed);
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
    use crate::config::ListenerConfig;

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
