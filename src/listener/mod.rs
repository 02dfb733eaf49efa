//! Listeners: one accept loop per profile, each connection in its own task.
//!
//! Owns binding, the IP allowlist, the load balancers allowed to send a PROXY header
//! (`proxy.rs` reads it), the connection limits (`admission.rs`: per listener, per address,
//! pending connections), the rate limit of refusal lines (`refusal_log.rs`), and
//! shutdown: on shutdown the accept loops stop at once, idle connections close, and a
//! message in flight is read, stored and acknowledged before its connection closes. One
//! connection's failure never reaches the accept loop or another connection.
//!
//! Each connection takes a snapshot of its listener's settings at accept and keeps it; a
//! reload (`reload.rs`) swaps the settings of the live listeners (`live.rs`) for new
//! connections, adds and removes listeners, and closes the open connections that the new
//! settings no longer allow.

pub mod admission;
pub mod connection;
pub mod deadlines;
mod live;
mod proxy;
pub mod refusal_log;
mod reload;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hl7_proto::mllp::DecoderConfig;
use metrics::Gauge;
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::field::display;
use tracing::{debug, error, info, warn};

use crate::config::{Config, ListenerConfig};
use crate::metrics::ListenerMetrics;
use crate::store::MessageStore;
use crate::tls::{TlsError, TlsListener};
use admission::{Admitted, Dropped, Limits, Refused, Slot};
use connection::ConnectionInfo;
use live::{LiveListener, Tracked};
use refusal_log::RefusalLog;
pub use reload::{ListenerAction, ListenerChange, ListenerView, ReloadReport, Reloader};

/// A listener profile at run time: its configuration and the ACK control-id counter.
/// Immutable: a reload builds a new one ([`Profile::with_config`]) for new connections.
pub struct Profile {
    /// Listener name (appears in logs and the store).
    pub name: Arc<str>,
    /// Its configuration.
    pub config: ListenerConfig,
    /// Its metrics (no-ops unless a recorder was installed before it was built).
    pub metrics: ListenerMetrics,
    ack_ids: Arc<AckIds>,
}

impl Profile {
    /// Builds the run-time profile for one configured listener.
    pub fn new(config: ListenerConfig) -> Profile {
        let metrics = ListenerMetrics::new(&config.name);
        Profile { name: Arc::from(config.name.as_str()), config, metrics, ack_ids: Arc::new(AckIds::new()) }
    }

    /// The same listener with new settings (a reload): its name, metrics and ACK
    /// control-id counter stay, so ACK ids stay unique across reloads.
    pub fn with_config(&self, config: ListenerConfig) -> Profile {
        debug_assert_eq!(*self.name, config.name, "a profile keeps its listener's name");
        Profile {
            name: self.name.clone(),
            config,
            metrics: self.metrics.clone(),
            ack_ids: self.ack_ids.clone(),
        }
    }

    /// The MLLP decoder settings of this profile.
    pub fn decoder_config(&self) -> DecoderConfig {
        DecoderConfig {
            framing: self.config.framing,
            max_frame_size: self.config.max_message_size,
            lenient_end: self.config.lenient_framing,
        }
    }

    /// A fresh MSH-10 for an ACK: unique within this process and across restarts (it starts
    /// with the start time), at most 20 characters (the v2.5 length of MSH-10).
    pub fn next_ack_id(&self) -> String {
        self.ack_ids.next()
    }
}

struct AckIds {
    prefix: String,
    counter: AtomicU64,
}

impl AckIds {
    fn new() -> AckIds {
        let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        AckIds { prefix: format!("A{start:X}"), counter: AtomicU64::new(1) }
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:06}", self.prefix)
    }
}

/// Failure to start serving.
#[derive(Debug, Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    ///
    /// The OS error is part of the message rather than a `source`, so that `{:#}` does not
    /// say it twice.
    #[error("listener {listener:?}: cannot listen on {addr}: {error}")]
    Bind {
        /// Listener name.
        listener: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
    /// A listener's certificate, key or client CA cannot be used.
    #[error("listener {listener:?}: {error}")]
    Tls {
        /// Listener name.
        listener: String,
        /// What is wrong with the files (its message is complete: not a `source`).
        error: TlsError,
    },
}

impl ServeError {
    /// Another socket holds the address (`EADDRINUSE`): something of the moment (an hl7d
    /// still finishing its messages, another service), not of the configuration.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, ServeError::Bind { error, .. } if error.kind() == std::io::ErrorKind::AddrInUse)
    }

    /// The listener at fault.
    pub fn listener(&self) -> &str {
        match self {
            ServeError::Bind { listener, .. } | ServeError::Tls { listener, .. } => listener,
        }
    }

    /// What is wrong, without the listener's name.
    pub fn detail(&self) -> String {
        match self {
            ServeError::Bind { addr, error, .. } => format!("cannot listen on {addr}: {error}"),
            ServeError::Tls { error, .. } => error.to_string(),
        }
    }
}

/// The running server: its listeners, and the means to reload and to stop it.
pub struct Server {
    live: Reloader,
}

impl Server {
    /// Binds every listener of `config` (all or nothing) and starts accepting.
    pub async fn start(config: &Config, store: Arc<dyn MessageStore>) -> Result<Server, ServeError> {
        Ok(Server { live: Reloader::start(config, store)? })
    }

    /// The handle that reloads the listeners (SIGHUP, `POST /reload`); see
    /// [`Reloader::reload`].
    pub fn reloader(&self) -> Reloader {
        self.live.clone()
    }

    /// The bound address of each listener, in configuration order (as of the last reload).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.live.local_addrs()
    }

    /// The bound address of the named listener.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.live.local_addr(name)
    }

    /// A token that stops the server when cancelled (e.g. from a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.live.shutdown.clone()
    }

    /// Stops accepting, lets every message in flight finish (each connection is bounded by
    /// its frame and write timeouts, and the whole wait by `grace`), then returns the
    /// number of connections that had to be abandoned when `grace` ran out.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let live = &self.live;
        live.shutdown.cancel();
        live.accept_loops.close();
        live.accept_loops.wait().await;
        live.connections.close();
        if tokio::time::timeout(grace, live.connections.wait()).await.is_err() {
            let left = live.connections.len();
            warn!(connections = left, "shutdown grace period over; abandoning connections");
            return left;
        }
        0
    }

    /// Waits until the shutdown token is cancelled, then shuts down as [`Server::shutdown`].
    pub async fn run_until_stopped(self, grace: Duration) -> usize {
        self.live.shutdown.cancelled().await;
        self.shutdown(grace).await
    }
}

/// Binds a listening socket as `TcpListener::bind` does (`SO_REUSEADDR` on Unix, so a
/// restart does not wait for old connections in TIME_WAIT), without awaiting: a reload
/// binds its new sockets before it changes anything. Needs a Tokio runtime context.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel queues per listening socket (what `TcpListener::bind`
/// asks for).
const LISTEN_BACKLOG: u32 = 1024;

/// Accepts on `socket` until `stop` (shutdown, the listener's removal, or a reload that
/// moved it to another address).
async fn accept_loop(
    socket: TcpListener,
    live: Arc<LiveListener>,
    store: Arc<dyn MessageStore>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    let listener = &**live.name();
    // Who is let in, and how often refusals are logged: per listener, for as long as it runs
    // (across reloads and moves to another socket).
    let (admission, refusals) = (live.admission(), live.refusals());
    loop {
        let accepted = tokio::select! {
            // A stopped socket accepts nothing more, even with connections in its backlog.
            biased;
            _ = stop.cancelled() => break,
            accepted = socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // E.g. EMFILE: back off briefly instead of spinning; never end the loop.
                error!(listener, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // This connection's settings, kept whatever a reload changes later.
        let profile = live.profile();
        // Behind a load balancer: the connection must come from one, and its client is
        // known only from the PROXY header, which its task reads.
        let via = match &profile.config.proxy {
            None => None,
            Some(proxy) if proxy.trusts(peer.ip()) => Some(peer),
            Some(_) => {
                profile.metrics.refused("not_from_proxy");
                if refusals.allow(peer.ip(), "not_from_proxy") {
                    warn!(target: "audit", event = "connection_refused", listener, %peer, reason = "not_from_proxy",
                        "connection refused: address not in proxy_from (proxy_protocol = true)");
                }
                drop(stream);
                continue;
            }
        };
        if via.is_none() && !profile.config.allows(peer.ip()) {
            profile.metrics.refused("ip_not_allowed");
            if refusals.allow(peer.ip(), "ip_not_allowed") {
                warn!(target: "audit", event = "connection_refused", listener, %peer, reason = "ip_not_allowed",
                    "connection refused: address not in allow_ips");
            }
            drop(stream);
            continue;
        }
        let limits = Limits::of(&profile.config);
        let now = tokio::time::Instant::now().into_std();
        // In the listener's registry before the admission: the slot's close token is a child
        // of the connection's, which a reload cancels (allow_ips, proxy_from, removal).
        let tracked = if via.is_some() { live.track_via_proxy(peer) } else { live.track(peer) };
        let close = tracked.close.child_token();
        let admitted = match via {
            None => admission.admit(peer, limits, close, now),
            // Counted under its client's address once the header names it (admission.rs).
            Some(proxy) => admission.admit_unidentified(proxy, limits, close, now),
        };
        let slot = match admitted {
            Ok(Admitted { slot, dropped }) => {
                if let Some(dropped) = dropped {
                    log_dropped(&profile, &refusals, &dropped, limits);
                }
                slot
            }
            Err(refused) => {
                log_refused(&profile, &refusals, peer, None, refused, limits);
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if via.is_none() {
            // Through a load balancer: counted once the header let the client in.
            profile.metrics.accepted.increment(1);
        }
        let open = OpenConnection::count(&profile.metrics.open);
        let tls = live.tls();
        let store = store.clone();
        let gate = Gate { tracked, slot, refusals: refusals.clone() };
        connections.spawn(async move {
            // Both are released when the task ends, however it ends (a panic included); the
            // slot's counts too (it is in `gate`).
            let _open = open;
            handle_tcp(stream, peer, via, profile, tls, store, gate).await;
        });
    }
    debug!(listener, "accept loop stopped");
}

/// A connection refused by the admission table (at accept, or behind a load balancer
/// `via` once its PROXY header named the client `peer`): counted always, logged as the
/// refusal log allows.
fn log_refused(
    profile: &Profile,
    refusals: &RefusalLog,
    peer: SocketAddr,
    via: Option<SocketAddr>,
    refused: Refused,
    limits: Limits,
) {
    let reason = refused.as_str();
    profile.metrics.refused(reason);
    if !refusals.allow(peer.ip(), reason) {
        return;
    }
    let listener = &*profile.name;
    let proxy = via.map(display);
    match refused {
        Refused::MaxConnections => {
            warn!(target: "audit", event = "connection_refused", listener, %peer, proxy, reason,
                max_connections = limits.max_connections, "connection refused: max_connections reached");
        }
        Refused::MaxConnectionsPerIp => {
            warn!(target: "audit", event = "connection_refused", listener, %peer, proxy, reason,
                max_connections_per_ip = limits.max_per_ip,
                "connection refused: max_connections_per_ip reached for this address");
        }
    }
}

/// A pending connection dropped to make room for a newcomer: counted always, logged as the
/// refusal log allows (under the dropped connection's address).
fn log_dropped(profile: &Profile, refusals: &RefusalLog, dropped: &Dropped, limits: Limits) {
    profile.metrics.pending_dropped.increment(1);
    if !refusals.allow(dropped.peer.ip(), dropped.reason) {
        return;
    }
    let pending_ms = u64::try_from(dropped.pending_for.as_millis()).unwrap_or(u64::MAX);
    warn!(target: "audit", event = "connection_dropped", listener = &*profile.name, peer = %dropped.peer,
        reason = dropped.reason, pending_ms, max_pending = limits.max_pending,
        max_connections = limits.max_connections,
        "oldest pending connection dropped to make room: no TLS handshake or first MLLP byte yet");
}

/// What a connection task holds of its listener besides the socket: its place in the
/// listener's registry (whose token stops it: shutdown, or a reload that removes the
/// listener or no longer allows the peer), its admission slot (released when the task
/// ends) and the listener's refusal log.
struct Gate {
    tracked: Tracked,
    slot: Slot,
    refusals: Arc<RefusalLog>,
}

/// One connection counted in the open-connections gauge: incremented when made,
/// decremented when dropped, so that a connection task that panics is counted out too.
struct OpenConnection(Gauge);

impl OpenConnection {
    fn count(gauge: &Gauge) -> OpenConnection {
        gauge.increment(1.0);
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Serves one accepted connection: through a load balancer (`via`), its PROXY header first,
/// whose client then is the `peer` of everything that follows; then TLS, if the listener
/// has it, and MLLP.
async fn handle_tcp(
    mut stream: TcpStream,
    peer: SocketAddr,
    via: Option<SocketAddr>,
    profile: Arc<Profile>,
    tls: Option<Arc<TlsListener>>,
    store: Arc<dyn MessageStore>,
    gate: Gate,
) {
    let peer = match via {
        None => peer,
        Some(proxy) => match proxy::client_of(&mut stream, proxy, &profile, &gate).await {
            Some(client) => client,
            None => return,
        },
    };
    let proxy = via.map(display);
    let Gate { tracked, slot, refusals } = gate;
    let shutdown = tracked.close.clone();
    let listener = profile.name.clone();
    let listener_metrics = profile.metrics.clone();
    let (reason, stats, revoked) = match tls {
        None => {
            // A child of `shutdown`, cancelled too if the connection is dropped to make room
            // while it has sent no MLLP byte (it is pending until then).
            let close = slot.close_token().clone();
            if closed_before_data(&stream, &profile, &close).await {
                debug!(listener = &*listener, %peer, "connection closed before sending data (health check?)");
                profile.metrics.closed("closed_before_data");
                return;
            }
            if slot.was_dropped() {
                // The accept loop logged it.
                return;
            }
            info!(target: "audit", event = "connection_accepted", listener = &*listener, %peer, proxy,
                "connection opened");
            let info = ConnectionInfo { peer, client_thumbprint: None, pending: Some(slot.clone()) };
            let (reason, stats) = connection::serve(stream, info, profile, store, close).await;
            (reason, stats, false)
        }
        Some(tls) => {
            let accepted = tokio::select! {
                biased;
                // On shutdown this branch is ready first and says so (a routine refusal).
                accepted = tls.accept(stream, peer, &shutdown) => accepted,
                // Dropped to make room for a newer connection (the accept loop logged it):
                // the handshake is abandoned, the socket closed.
                _ = slot.close_token().cancelled() => return,
            };
            let accepted = match accepted {
                Ok(accepted) if slot.was_dropped() => {
                    // Dropped as its handshake finished: its place is taken already.
                    drop(accepted);
                    return;
                }
                Ok(accepted) => accepted,
                Err(refusal) => {
                    if !refusal.reason.is_audited() || refusals.allow(peer.ip(), refusal.reason.as_str()) {
                        refusal.log(&listener, peer, via);
                    }
                    return;
                }
            };
            slot.established();
            accepted.log_opened(&listener, peer, via);
            let info =
                ConnectionInfo { peer, client_thumbprint: accepted.client_thumbprint(), pending: None };
            // `close` is a child of `shutdown`, also cancelled when a reload withdraws
            // approval of this client's certificate.
            let close = accepted.close.clone();
            let (reason, stats) =
                connection::serve(accepted.stream, info, profile, store, close.clone()).await;
            (reason, stats, close.is_cancelled() && !shutdown.is_cancelled())
        }
    };
    // Only a plaintext connection that has sent no MLLP byte yet can be dropped here.
    let dropped = slot.was_dropped();
    // Stopped by its token, and a reload said why.
    let withdrawn = tracked.withdrawn().filter(|_| reason == connection::CloseReason::Shutdown);
    let (label, reason) = match (revoked, dropped, withdrawn) {
        (true, _, _) => ("client_cert_revoked", "client certificate no longer approved (reload)".to_owned()),
        (false, true, _) => {
            ("pending_dropped", "dropped while pending, to make room for a newer connection".to_owned())
        }
        (false, false, Some(withdrawn)) => (withdrawn.label(), withdrawn.text().to_owned()),
        (false, false, None) => (reason.label(), reason.to_string()),
    };
    listener_metrics.closed(label);
    info!(
        listener = &*listener,
        %peer,
        proxy,
        reason = %reason,
        accepted = stats.accepted,
        refused = stats.refused,
        bytes_in = stats.bytes_in,
        bytes_out = stats.bytes_out,
        "connection closed"
    );
}

/// Whether a plaintext peer closed without sending a byte (a load balancer's TCP health
/// check), waiting at most [`HEALTH_CHECK_WAIT`]: such a connection is logged at debug, not
/// as an accepted connection. A peer still silent after that is served normally.
async fn closed_before_data(stream: &TcpStream, profile: &Profile, shutdown: &CancellationToken) -> bool {
    let wait = profile.config.idle_timeout.min(HEALTH_CHECK_WAIT);
    let mut first = [0u8; 1];
    tokio::select! {
        _ = shutdown.cancelled() => false,
        peeked = tokio::time::timeout(wait, stream.peek(&mut first)) => matches!(peeked, Ok(Ok(0) | Err(_))),
    }
}

/// How long a silent plaintext connection is watched for a health check's close.
const HEALTH_CHECK_WAIT: Duration = Duration::from_secs(1);
