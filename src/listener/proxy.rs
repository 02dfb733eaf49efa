//! The first step of a connection on a `proxy_protocol` listener: its load balancer's PROXY
//! header, read before the TLS handshake or the first MLLP byte, and the client address in
//! it put in the connection's place: `allow_ips`, the per-address limit, the registry a
//! reload sweeps, and (by the caller) logs, audit and the store.
//!
//! Owns the reading: bounded in size by [`proxy_header`] (which also says how many peeked
//! bytes belong to the header, so that not one byte after it is consumed) and in time by the
//! listener's handshake deadline; and what each outcome means: a client (let in), the
//! proxy's own health check (closed quietly, counted), or a refusal (an audit line). The
//! accept loop (`mod.rs`) has checked the connection's address against `proxy_from`
//! already. It must not parse the header itself.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::admission::Limits;
use super::{log_refused, Gate, Profile};
use crate::config::{ListenerConfig, DEFAULT_HANDSHAKE_TIMEOUT};
use crate::proxy_header::{self, Header, Invalid, Progress};

/// Reads the PROXY header of a connection from the load balancer at `proxy` and returns
/// the client's address, the connection now counted under it; `None` when the connection
/// ends here: refused (and logged, as the refusal log allows), a health check (`LOCAL`),
/// closed without a byte, or stopped by its token (shutdown, a reload, or dropped to make
/// room, which the accept loop logged).
pub(super) async fn client_of(
    stream: &mut TcpStream,
    proxy: SocketAddr,
    profile: &Profile,
    gate: &Gate,
) -> Option<SocketAddr> {
    let listener = &*profile.name;
    let limit = header_timeout(&profile.config);
    let mut read = Vec::with_capacity(proxy_header::MAX_LEN);
    let result = tokio::select! {
        biased;
        _ = gate.slot.close_token().cancelled() => return None,
        result = tokio::time::timeout(limit, read_header(stream, &mut read)) => result,
    };
    let failure = match result {
        Ok(Ok(Header::Proxied { client, version })) => {
            debug!(listener, peer = %client, %proxy, %version, "PROXY header read");
            return admit(client, proxy, profile, gate);
        }
        Ok(Ok(Header::Local { version })) => {
            debug!(listener, %proxy, %version, "PROXY header without a client (health check): closing");
            profile.metrics.closed("proxy_local");
            return None;
        }
        Ok(Err(failure)) => failure,
        Err(_elapsed) => Failure::Timeout { limit, read: read.len() },
    };
    if failure.is_silent_close() {
        debug!(listener, %proxy, "connection closed before sending data (health check?)");
        profile.metrics.closed("closed_before_data");
        return None;
    }
    let reason = failure.reason();
    profile.metrics.refused(reason);
    if gate.refusals.allow(proxy.ip(), reason) {
        warn!(target: "audit", event = "connection_refused", listener, peer = %proxy, %proxy, reason,
            detail = %failure, "connection refused: no valid PROXY header from the load balancer");
    }
    None
}

/// How long a load balancer has to send the whole header: the listener's
/// `handshake_timeout`, or on a plaintext listener its default (10 s), at most
/// `idle_timeout`. A load balancer sends it at once, with the connection.
fn header_timeout(config: &ListenerConfig) -> Duration {
    config.tls().map_or(DEFAULT_HANDSHAKE_TIMEOUT.min(config.idle_timeout), |tls| tls.handshake_timeout)
}

/// The client named: checked against `allow_ips` and counted under its address (refused
/// if that address already holds `max_connections_per_ip`).
fn admit(client: SocketAddr, proxy: SocketAddr, profile: &Profile, gate: &Gate) -> Option<SocketAddr> {
    let listener = &*profile.name;
    if !profile.config.allows(client.ip()) {
        profile.metrics.refused("ip_not_allowed");
        if gate.refusals.allow(client.ip(), "ip_not_allowed") {
            warn!(target: "audit", event = "connection_refused", listener, peer = %client, %proxy,
                reason = "ip_not_allowed", "connection refused: address not in allow_ips");
        }
        return None;
    }
    gate.tracked.identify(client);
    let limits = Limits::of(&profile.config);
    if let Err(refused) = gate.slot.identify(client, limits.max_per_ip) {
        log_refused(profile, &gate.refusals, client, Some(proxy), refused, limits);
        return None;
    }
    profile.metrics.accepted.increment(1);
    Some(client)
}

/// Why no header was had.
#[derive(Debug)]
enum Failure {
    /// The bytes are no acceptable header.
    Invalid(Invalid),
    /// No whole header within the time allowed.
    Timeout { limit: Duration, read: usize },
    /// The connection ended (closed or reset) after `read` bytes.
    Closed { read: usize, error: Option<io::Error> },
}

impl Failure {
    /// Closed before a single byte: a TCP health check, not a refusal.
    fn is_silent_close(&self) -> bool {
        matches!(self, Failure::Closed { read: 0, .. })
    }

    /// The `reason` of the audit line and the refusal metric.
    fn reason(&self) -> &'static str {
        match self {
            Failure::Invalid(invalid) => invalid.reason(),
            Failure::Timeout { .. } => "proxy_header_timeout",
            Failure::Closed { .. } => "proxy_header_invalid",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Invalid(invalid) => invalid.fmt(f),
            Failure::Timeout { limit, read } => write!(
                f,
                "no whole PROXY header within {} ({read} bytes received)",
                humantime::format_duration(*limit)
            ),
            Failure::Closed { read, error: None } => {
                write!(f, "connection closed after {read} bytes of a PROXY header")
            }
            Failure::Closed { read, error: Some(error) } => {
                write!(f, "i/o error after {read} bytes of a PROXY header: {error}")
            }
        }
    }
}

/// Reads a header into `read`: peeks, reads exactly the peeked bytes that belong to the
/// header, and asks [`proxy_header::parse`] again, until it is whole or refused. Every
/// peek waits for bytes beyond those read, so nothing spins.
async fn read_header(stream: &mut TcpStream, read: &mut Vec<u8>) -> Result<Header, Failure> {
    let mut peeked = [0u8; proxy_header::MAX_LEN];
    loop {
        match proxy_header::parse(read) {
            Progress::Done { header, .. } => return Ok(header),
            Progress::Invalid(invalid) => return Err(Failure::Invalid(invalid)),
            Progress::Incomplete => {}
        }
        let closed = |error| Failure::Closed { read: read.len(), error };
        let n = stream.peek(&mut peeked).await.map_err(|e| closed(Some(e)))?;
        if n == 0 {
            return Err(closed(None));
        }
        let take = proxy_header::next_part(read, &peeked[..n]);
        let start = read.len();
        read.resize(start + take, 0);
        // The bytes are in the socket's buffer already (peeked): this does not wait.
        stream
            .read_exact(&mut read[start..])
            .await
            .map_err(|e| Failure::Closed { read: start, error: Some(e) })?;
    }
}
