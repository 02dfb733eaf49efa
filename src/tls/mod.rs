//! TLS for listeners: rustls server configuration, client-certificate approval by
//! thumbprint, live reload, and certificate tools.
//!
//! Owns everything between an accepted TCP socket and a decrypted byte stream: the first
//! byte check (plaintext on a TLS port), the handshake and its timeout, the client
//! certificate verdict, the per-connection TLS log line, refusal audit lines, and the set
//! of live mutual-TLS connections that a reload may close. It must not read MLLP or HL7:
//! the connection task gets a stream and [`Session`] facts, nothing else.
//!
//! Policy, fixed here rather than configurable: TLS 1.2 and 1.3 only (rustls has nothing
//! older), only ECDHE key exchange with AEAD ciphers, one crypto provider (aws-lc-rs).
//! Mutual-TLS profiles disable session resumption, and every accepted client certificate is
//! checked again against the *current* approval list after the handshake, so a certificate
//! removed by a reload cannot come back.

pub mod cert;
pub mod load;
pub mod pki;
pub mod verifier;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::{NoServerSessionStorage, ServerConfig};
use rustls::sign::SingleCertAndKey;
use rustls::{AlertDescription, PeerIncompatible, ProtocolVersion, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{ClientAuth, Config, Thumbprint, TlsConfig, TlsVersion, Transport};
use cert::CertSummary;
use load::ServerIdentity;
pub use load::TlsError;
pub use verifier::ClientCert;
use verifier::{ClientCertRefusal, ClientPolicy, ConnectionVerifier};

/// First byte of every TLS record carrying a handshake message (content type 22).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// A server certificate expiring within this many days is warned about at load.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The crypto provider of every listener: aws-lc-rs, cipher suites restricted to ECDHE key
/// exchange with AEAD ciphers (which is what rustls offers for TLS 1.2 anyway; listed
/// explicitly so that a future default cannot widen it).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // Server preference order. AES-128-GCM first: its SHA-256 key schedule is cheaper than
    // AES-256-GCM's SHA-384 (+6.6 % full handshakes/s measured, BENCHMARKS.md §Bench), and
    // 128-bit AES-GCM is what NIST and the TLS 1.3 RFC make mandatory-to-implement.
    provider.cipher_suites = vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// Why a TLS connection was not established. The string form ([`RefusalReason::as_str`])
/// is the `reason` field of the audit line and, later, a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The peer closed before sending a byte (e.g. a load balancer's TCP health check).
    ClosedBeforeHandshake,
    /// The server is shutting down.
    Shutdown,
    /// The first byte is not a TLS handshake record: a plaintext client on a TLS port.
    NotTls,
    /// The client offered only TLS versions older than the listener allows.
    ProtocolVersion,
    /// The handshake did not finish within `handshake_timeout`.
    HandshakeTimeout,
    /// `client_auth = "required"` and the client sent no certificate.
    ClientCertMissing,
    /// The client certificate's thumbprint is not approved.
    ClientCertUnapproved,
    /// The client certificate has expired.
    ClientCertExpired,
    /// The client certificate is not valid yet.
    ClientCertNotYetValid,
    /// The client certificate does not chain to `client_ca`.
    ClientCertUntrusted,
    /// The client certificate cannot be parsed.
    ClientCertInvalid,
    /// The client did not prove possession of its certificate's key.
    ClientSignatureInvalid,
    /// The client sent a fatal alert (often: it does not trust the server certificate).
    PeerAlert,
    /// No cipher suite, key exchange group or signature scheme in common.
    Incompatible,
    /// The client broke the TLS protocol or hung up mid-handshake.
    HandshakeFailed,
}

impl RefusalReason {
    /// The stable machine-readable name, e.g. `client_cert_unapproved`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::ClosedBeforeHandshake => "closed_before_handshake",
            RefusalReason::Shutdown => "shutdown",
            RefusalReason::NotTls => "not_tls",
            RefusalReason::ProtocolVersion => "tls_version",
            RefusalReason::HandshakeTimeout => "handshake_timeout",
            RefusalReason::ClientCertMissing => "client_cert_missing",
            RefusalReason::ClientCertUnapproved => "client_cert_unapproved",
            RefusalReason::ClientCertExpired => "client_cert_expired",
            RefusalReason::ClientCertNotYetValid => "client_cert_not_yet_valid",
            RefusalReason::ClientCertUntrusted => "client_cert_untrusted",
            RefusalReason::ClientCertInvalid => "client_cert_invalid",
            RefusalReason::ClientSignatureInvalid => "client_signature_invalid",
            RefusalReason::PeerAlert => "peer_alert",
            RefusalReason::Incompatible => "tls_incompatible",
            RefusalReason::HandshakeFailed => "handshake_failed",
        }
    }

    /// Whether this refusal is a security event (audit line at warn) rather than routine
    /// (debug): a health check's connect-and-close and shutdown are routine.
    pub fn is_audited(self) -> bool {
        !matches!(self, RefusalReason::ClosedBeforeHandshake | RefusalReason::Shutdown)
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection refused before it carried any message.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// Human-readable detail.
    pub detail: String,
    /// The client certificate concerned, when one was presented and parsed.
    pub client: Option<ClientCert>,
}

impl Refusal {
    fn new(reason: RefusalReason, detail: impl Into<String>) -> Refusal {
        Refusal { reason, detail: detail.into(), client: None }
    }

    /// Logs the refusal: security events as an `audit` warning with the reason, the peer and
    /// the client certificate's subject and SHA-256 thumbprint; routine ones at debug.
    pub fn log(&self, listener: &str, peer: SocketAddr) {
        let reason = self.reason.as_str();
        let detail = &self.detail;
        let client_subject = self.client.as_ref().map(|c| c.subject.as_str());
        let client_thumbprint = self.client.as_ref().map(|c| c.digests.sha256().to_string());
        if self.reason.is_audited() {
            // client_cert_missing/unapproved/expired/…, client_signature_invalid
            let event =
                if reason.starts_with("client_") { "client_cert_refused" } else { "tls_handshake_failed" };
            warn!(target: "audit", event, listener, %peer, reason, client_subject, client_thumbprint, detail,
                "TLS connection refused");
        } else {
            debug!(listener, %peer, reason, detail, "connection closed before the TLS handshake");
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// Facts about an established TLS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// IANA-style suite name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: &'static str,
    /// The approved client certificate (mutual TLS only).
    pub client: Option<ClientCert>,
}

/// A connection whose handshake succeeded.
pub struct Accepted {
    /// The decrypted stream.
    pub stream: TlsConnection,
    /// What was negotiated.
    pub session: Session,
    /// Cancelled when the server shuts down or when a reload withdraws approval of this
    /// connection's client certificate: pass it to the connection as its stop signal.
    pub close: CancellationToken,
    /// Keeps this connection in the listener's set of live mutual-TLS connections.
    _registration: Option<Registration>,
}

impl Accepted {
    /// Logs (info) the negotiated version and suite and the client certificate.
    pub fn log_opened(&self, listener: &str, peer: SocketAddr) {
        let session = &self.session;
        let client_subject = session.client.as_ref().map(|c| c.subject.as_str());
        let client_thumbprint = session.client.as_ref().map(|c| c.digests.sha256().to_string());
        info!(target: "audit", event = "connection_accepted", listener, %peer, tls_version = session.version,
            cipher_suite = session.cipher_suite, client_subject, client_thumbprint, "connection opened");
    }

    /// The SHA-256 thumbprint of the client certificate (`sha256:<hex>`), stored with
    /// every message of this connection.
    pub fn client_thumbprint(&self) -> Option<String> {
        self.session.client.as_ref().map(|c| c.digests.sha256().to_string())
    }
}

/// The decrypted stream of one connection.
///
/// A peer that hangs up without a TLS `close_notify` (as many MLLP senders do) reads as an
/// ordinary end of stream rather than an i/o error. That is safe here because MLLP frames
/// are self-delimiting: a message cut short is still caught, and not acknowledged, by the
/// frame decoder.
pub struct TlsConnection {
    inner: TlsStream<TcpStream>,
}

impl TlsConnection {
    /// The underlying TLS stream (for session details).
    pub fn get_ref(&self) -> &TlsStream<TcpStream> {
        &self.inner
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// SHA-256 thumbprint of the (possibly new) server certificate.
    pub server_thumbprint: Thumbprint,
    /// Approved client thumbprints now in force (0 with `client_auth = "none"`).
    pub approved_clients: usize,
    /// Live connections closed because their client certificate is no longer approved.
    pub closed_connections: usize,
}

/// The TLS side of one listener: the current settings (swapped atomically by a reload)
/// and the live mutual-TLS connections.
pub struct TlsListener {
    name: Arc<str>,
    provider: Arc<CryptoProvider>,
    state: ArcSwap<TlsState>,
    live: Registry,
    /// Approved client certificates seen in a handshake since start (by SHA-256), for the
    /// expiry gauges and alarms: a thumbprint alone carries no date.
    seen: Mutex<HashMap<[u8; 32], ClientCert>>,
}

impl TlsListener {
    /// Reads the certificate, key and client CA named by `settings` and checks them: the
    /// key must match the certificate. Logs a warning when the certificate expires within
    /// [`EXPIRY_WARNING_DAYS`], an error when it has expired.
    pub fn load(name: &str, settings: &TlsConfig) -> Result<TlsListener, TlsError> {
        let provider = provider();
        let state = TlsState::load(settings, &provider)?;
        state.log_expiry(name);
        Ok(TlsListener {
            name: Arc::from(name),
            provider,
            state: ArcSwap::from_pointee(state),
            live: Registry::default(),
            seen: Mutex::default(),
        })
    }

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server certificate now presented.
    pub fn server_certificate(&self) -> CertSummary {
        self.state.load().identity.leaf.clone()
    }

    /// Number of live mutual-TLS connections.
    pub fn live_clients(&self) -> usize {
        self.live.len()
    }

    /// Client certificates seen in a successful handshake since start that the current
    /// settings still approve, in thumbprint order.
    pub fn approved_clients_seen(&self) -> Vec<ClientCert> {
        let state = self.state.load();
        let Some(policy) = &state.policy else { return Vec::new() };
        let seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut clients: Vec<ClientCert> =
            seen.values().filter(|c| c.digests.approved_by(policy.approved())).cloned().collect();
        clients.sort_by_key(|c| c.digests.sha256);
        clients
    }

    /// Number of approved client thumbprints in force (0 with `client_auth = "none"`).
    pub fn approved_count(&self) -> usize {
        self.state.load().policy.as_ref().map_or(0, |policy| policy.approved().len())
    }

    /// Re-reads the files named by `settings` and swaps them in for new handshakes. Live
    /// connections keep their session, except those whose client certificate the new
    /// settings no longer approve: they are closed. On error nothing changes.
    pub fn reload(&self, settings: &TlsConfig) -> Result<ReloadOutcome, TlsError> {
        let state = TlsState::load(settings, &self.provider)?;
        state.log_expiry(&self.name);
        let server_thumbprint = state.identity.leaf.digests.sha256();
        let approved_clients = state.policy.as_ref().map_or(0, |policy| policy.approved().len());
        self.state.store(Arc::new(state));
        // After the store: a handshake that registers after this sweep re-checks against
        // the new state itself (see `accept`).
        let closed_connections = self.close_unapproved();
        Ok(ReloadOutcome { server_thumbprint, approved_clients, closed_connections })
    }

    /// Runs the handshake on a freshly accepted socket, bounded by `handshake_timeout`
    /// and by `shutdown`.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: &CancellationToken,
    ) -> Result<Accepted, Refusal> {
        let state = self.state.load_full();
        let limit = state.settings.handshake_timeout;
        let mut phase = Phase::WaitingForHello;
        let handshake =
            tokio::time::timeout(limit, self.handshake(&state, stream, peer, shutdown, &mut phase));
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Ok(Err(Refusal::new(RefusalReason::Shutdown, "server shutting down"))),
            result = handshake => result,
        };
        let result = match result {
            Ok(result) => result,
            Err(_elapsed) => Err(Refusal::new(
                RefusalReason::HandshakeTimeout,
                format!("{phase} within handshake_timeout ({})", humantime::format_duration(limit)),
            )),
        };
        let outcome = result.as_ref().map(|a| a.session.version).map_err(|r| r.reason.as_str());
        crate::metrics::tls_handshake(&self.name, outcome);
        if let Ok(Accepted { session: Session { client: Some(client), .. }, .. }) = &result {
            let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            seen.insert(client.digests.sha256, client.clone());
        }
        result
    }

    async fn handshake(
        &self,
        state: &TlsState,
        mut stream: TcpStream,
        peer: SocketAddr,
        shutdown: &CancellationToken,
        phase: &mut Phase,
    ) -> Result<Accepted, Refusal> {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => {
                return Err(Refusal::new(RefusalReason::ClosedBeforeHandshake, "peer closed without sending"))
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Refusal::new(RefusalReason::ClosedBeforeHandshake, format!("i/o error: {e}")))
            }
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            return Err(Refusal::new(RefusalReason::NotTls, not_tls_detail(first[0])));
        }
        *phase = Phase::Handshaking;
        // rustls would refuse an old client too, but for whatever the hello lacks first
        // (often the signature_algorithms extension), so name the real reason here.
        if let Some(version) = peek_hello_version(&stream).await {
            if version < TLS12_WIRE_VERSION {
                use tokio::io::AsyncWriteExt;
                let _ = stream.write_all(&PROTOCOL_VERSION_ALERT).await;
                return Err(Refusal::new(
                    RefusalReason::ProtocolVersion,
                    format!(
                        "client offers at most {}; TLS 1.2 or later is required",
                        wire_version_name(version)
                    ),
                ));
            }
        }
        let verifier = state
            .policy
            .as_ref()
            .map(|policy| Arc::new(ConnectionVerifier::new(policy.clone(), &self.provider)));
        let config = match (&state.shared, &verifier) {
            (Some(shared), _) => shared.clone(),
            (None, verifier) => Arc::new(
                server_config(&state.settings, &state.identity, &self.provider, verifier.clone())
                    .map_err(|e| Refusal::new(RefusalReason::HandshakeFailed, e.to_string()))?,
            ),
        };
        let verdict = || verifier.as_ref().and_then(|v| v.take_verdict());
        let stream = match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
            Ok(stream) => stream,
            Err(error) => return Err(classify(&error, verdict())),
        };
        let (_, connection) = stream.get_ref();
        let version = match connection.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        };
        let cipher_suite = connection
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .unwrap_or("unknown");
        let chain: Option<Vec<CertificateDer<'static>>> = connection
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect());
        let close = shutdown.child_token();
        let (client, registration) = match (verifier.is_some(), chain) {
            (false, _) => (None, None),
            (true, None) => {
                return Err(Refusal::new(
                    RefusalReason::ClientCertMissing,
                    "no client certificate after the handshake",
                ))
            }
            (true, Some(chain)) => {
                // Register first, then check against the current state: a reload either
                // sees this connection in its sweep or has already swapped the state
                // checked here.
                let registration = self.live.register(chain.clone(), peer, close.clone());
                let current = self.state.load();
                let client = match &current.policy {
                    Some(policy) => policy
                        .check(&chain[0], &chain[1..], UnixTime::now())
                        .map_err(|refusal| refusal_from(*refusal))?,
                    // Client auth was switched off by a reload during the handshake: the
                    // certificate was verified under the old rules; keep its facts.
                    None => match verdict() {
                        Some(Ok(client)) => client,
                        _ => {
                            return Err(Refusal::new(
                                RefusalReason::HandshakeFailed,
                                "no client certificate verdict",
                            ))
                        }
                    },
                };
                (Some(client), Some(registration))
            }
        };
        Ok(Accepted {
            stream: TlsConnection { inner: stream },
            session: Session { version, cipher_suite, client },
            close,
            _registration: registration,
        })
    }

    fn close_unapproved(&self) -> usize {
        let state = self.state.load();
        let Some(policy) = &state.policy else {
            return 0;
        };
        let now = UnixTime::now();
        let mut closed = 0;
        let live = self.live.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for client in live.clients.values() {
            if client.close.is_cancelled() {
                continue;
            }
            if let Err(refusal) = policy.check(&client.chain[0], &client.chain[1..], now) {
                let client_subject = refusal.cert.as_ref().map(|c| c.subject.clone());
                let client_thumbprint = refusal.cert.as_ref().map(|c| c.digests.sha256().to_string());
                warn!(target: "audit", event = "client_cert_revoked", listener = &*self.name, peer = %client.peer,
                    reason = refusal.reason.as_str(),
                    client_subject, client_thumbprint, detail = %refusal.detail,
                    "closing connection: client certificate no longer approved after reload");
                client.close.cancel();
                closed += 1;
            }
        }
        closed
    }
}

/// Every TLS listener of a running server, for `SIGHUP` and the admin `POST /reload`.
#[derive(Clone, Default)]
pub struct Reloader {
    listeners: Arc<Vec<Arc<TlsListener>>>,
}

/// The result of [`Reloader::reload`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Listeners whose TLS settings were swapped.
    pub reloaded: Vec<(String, ReloadOutcome)>,
    /// Listeners whose new settings could not be used: they keep the previous ones.
    pub failed: Vec<(String, String)>,
    /// Changes that need a restart (listeners added, removed or switched to plaintext).
    pub needs_restart: Vec<String>,
}

impl ReloadReport {
    /// No listener failed to reload.
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }
}

impl Reloader {
    /// A reloader over these listeners.
    pub fn new(listeners: Vec<Arc<TlsListener>>) -> Reloader {
        Reloader { listeners: Arc::new(listeners) }
    }

    /// Every TLS listener, in configuration order.
    pub fn listeners(&self) -> &[Arc<TlsListener>] {
        &self.listeners
    }

    /// The TLS listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Arc<TlsListener>> {
        self.listeners.iter().find(|listener| listener.name() == name)
    }

    /// Applies the `[listener.tls]` tables of `config` to the running TLS listeners (by
    /// name). Each listener reloads on its own: one broken file keeps that listener's
    /// previous settings and does not stop the others. Logs each outcome (`audit`).
    pub fn reload(&self, config: &Config) -> ReloadReport {
        let mut report = ReloadReport::default();
        for listener in self.listeners.iter() {
            let name = listener.name();
            let settings = match config.listener(name).map(|l| &l.transport) {
                Some(Transport::Tls(settings)) => settings,
                Some(Transport::Plaintext) => {
                    report.needs_restart.push(format!("listener {name:?} switched to plaintext"));
                    continue;
                }
                None => {
                    report.needs_restart.push(format!("listener {name:?} removed from the configuration"));
                    continue;
                }
            };
            match listener.reload(settings) {
                Ok(outcome) => {
                    info!(target: "audit", event = "tls_reloaded", listener = name, server_thumbprint = %outcome.server_thumbprint,
                        approved_clients = outcome.approved_clients, closed_connections = outcome.closed_connections,
                        "TLS configuration reloaded");
                    report.reloaded.push((name.to_owned(), outcome));
                }
                Err(e) => {
                    error!(target: "audit", event = "tls_reload_failed", listener = name, error = %e,
                        "TLS reload failed; keeping the previous certificate, key and approvals");
                    report.failed.push((name.to_owned(), e.to_string()));
                }
            }
        }
        for listener in &config.listeners {
            if listener.tls().is_some() && self.listener(&listener.name).is_none() {
                report.needs_restart.push(format!("listener {:?} is not running with TLS", listener.name));
            }
        }
        for note in &report.needs_restart {
            warn!("reload: {note}; restart hl7d to apply");
        }
        report
    }
}

/// The settings a handshake uses; replaced whole by a reload.
struct TlsState {
    settings: TlsConfig,
    identity: ServerIdentity,
    policy: Option<Arc<ClientPolicy>>,
    /// The server config for `client_auth = "none"`, built once. Mutual-TLS handshakes
    /// each get their own (cheap) config carrying a per-connection verifier.
    shared: Option<Arc<ServerConfig>>,
}

impl TlsState {
    fn load(settings: &TlsConfig, provider: &Arc<CryptoProvider>) -> Result<TlsState, TlsError> {
        let identity = load::server_identity(&settings.cert, &settings.key, provider)?;
        let policy = match &settings.client_auth {
            ClientAuth::None => None,
            ClientAuth::Required { thumbprints, ca } => {
                Some(Arc::new(ClientPolicy::new(thumbprints.clone(), ca.as_deref(), provider)?))
            }
        };
        let shared = match &policy {
            None => Some(Arc::new(
                server_config(settings, &identity, provider, None).map_err(TlsError::Settings)?,
            )),
            Some(policy) => {
                // Proves now that the per-connection configs will build.
                let probe = Arc::new(ConnectionVerifier::new(policy.clone(), provider));
                server_config(settings, &identity, provider, Some(probe)).map_err(TlsError::Settings)?;
                None
            }
        };
        Ok(TlsState { settings: settings.clone(), identity, policy, shared })
    }

    fn log_expiry(&self, listener: &str) {
        let leaf = &self.identity.leaf;
        let subject = &leaf.subject;
        let thumbprint = leaf.digests.sha256().to_string();
        match expiry_notice(leaf, unix_now()) {
            None => {}
            Some(ExpiryNotice::Expired(notice)) => error!(listener, subject, thumbprint, "{notice}"),
            Some(ExpiryNotice::Soon(notice)) => warn!(listener, subject, thumbprint, "{notice}"),
        }
    }
}

/// What to say at load about the server certificate's dates.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ExpiryNotice {
    /// Logged as an error: clients will refuse the certificate.
    Expired(String),
    /// Logged as a warning: expires within [`EXPIRY_WARNING_DAYS`], or is not valid yet.
    Soon(String),
}

fn expiry_notice(leaf: &CertSummary, now: i64) -> Option<ExpiryNotice> {
    let days = leaf.days_until_expiry(now);
    match leaf.validity_at(now) {
        cert::ValidityStatus::Expired => Some(ExpiryNotice::Expired(format!(
            "server certificate expired {}: clients will refuse it",
            cert::format_time(leaf.not_after)
        ))),
        cert::ValidityStatus::NotYetValid => Some(ExpiryNotice::Soon(format!(
            "server certificate is not valid before {}: clients will refuse it until then",
            cert::format_time(leaf.not_before)
        ))),
        cert::ValidityStatus::Valid if days < EXPIRY_WARNING_DAYS => Some(ExpiryNotice::Soon(format!(
            "server certificate expires {} (in {days} days)",
            cert::format_time(leaf.not_after)
        ))),
        cert::ValidityStatus::Valid => None,
    }
}

fn server_config(
    settings: &TlsConfig,
    identity: &ServerIdentity,
    provider: &Arc<CryptoProvider>,
    verifier: Option<Arc<ConnectionVerifier>>,
) -> Result<ServerConfig, rustls::Error> {
    let versions: &[&'static SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let mutual = verifier.is_some();
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.certified.clone())));
    // Prefer the server's order: AES-256-GCM first.
    config.ignore_client_order = true;
    if mutual {
        // A resumed session skips client-certificate verification; with no session
        // cache and no tickets every connection presents and proves its certificate.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    WaitingForHello,
    Handshaking,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::WaitingForHello => "no ClientHello",
            Phase::Handshaking => "handshake not finished",
        })
    }
}

/// `legacy_version` of TLS 1.2 (RFC 5246); TLS 1.3 clients send it too (RFC 8446 §4.1.2).
const TLS12_WIRE_VERSION: u16 = 0x0303;
/// A plaintext fatal `protocol_version` alert record (RFC 8446 §6): what a TLS server
/// answers a hello it cannot accept the version of.
const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];
/// Record header (5) + handshake type (1) + length (3) + client_version (2).
const HELLO_VERSION_END: usize = 11;

/// Waits (bounded by the caller's handshake timeout) until the first 11 bytes are there
/// and returns the ClientHello's `client_version`, without consuming anything. `None`
/// when the peer closes first or the bytes are not a ClientHello: rustls then reports.
async fn peek_hello_version(stream: &TcpStream) -> Option<u16> {
    let mut prefix = [0u8; HELLO_VERSION_END];
    loop {
        let n = stream.peek(&mut prefix).await.ok()?;
        if n == 0 {
            return None;
        }
        if n == HELLO_VERSION_END {
            return hello_version(&prefix);
        }
        // A hello split after a few bytes is rare; poll gently until the rest arrives.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `client_version` from the first bytes of a TLS record holding a ClientHello.
fn hello_version(prefix: &[u8]) -> Option<u16> {
    match prefix {
        [TLS_HANDSHAKE_RECORD, _, _, _, _, 0x01, _, _, _, major, minor, ..] => {
            Some(u16::from_be_bytes([*major, *minor]))
        }
        _ => None,
    }
}

fn wire_version_name(version: u16) -> String {
    match version {
        0x0300 => "SSL 3.0".to_owned(),
        0x0301 => "TLS 1.0".to_owned(),
        0x0302 => "TLS 1.1".to_owned(),
        other => format!("protocol version 0x{other:04X}"),
    }
}

fn not_tls_detail(first: u8) -> String {
    let what = match first {
        0x0B => "plaintext MLLP (start block 0x0B)",
        b'M' => "plaintext HL7 without MLLP framing",
        b'G' | b'P' | b'H' | b'O' | b'C' => "probably an HTTP request",
        0x80 => "SSLv2-style hello",
        _ => "not a TLS handshake record",
    };
    format!("{what}: first byte 0x{first:02X}, expected 0x16")
}

fn refusal_from(refusal: ClientCertRefusal) -> Refusal {
    let ClientCertRefusal { reason, detail, cert, .. } = refusal;
    Refusal { reason, detail, client: cert }
}

/// Maps a failed handshake to a refusal. The verifier's own verdict wins: it knows which
/// certificate was refused and why.
fn classify(error: &std::io::Error, verdict: Option<Result<ClientCert, Box<ClientCertRefusal>>>) -> Refusal {
    if let Some(Err(refusal)) = verdict {
        return refusal_from(*refusal);
    }
    let tls_error = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let Some(tls_error) = tls_error else {
        return Refusal::new(
            RefusalReason::HandshakeFailed,
            format!("connection lost during the handshake: {error}"),
        );
    };
    let (reason, detail) = match tls_error {
        rustls::Error::NoCertificatesPresented => (
            RefusalReason::ClientCertMissing,
            "client_auth is required and the client sent no certificate".to_owned(),
        ),
        rustls::Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => (
            RefusalReason::ProtocolVersion,
            format!("client offers no TLS version this listener allows ({tls_error})"),
        ),
        rustls::Error::PeerIncompatible(_) => (RefusalReason::Incompatible, tls_error.to_string()),
        rustls::Error::InvalidCertificate(_) => {
            // Only the signature check runs without a verdict being recorded first.
            (
                RefusalReason::ClientSignatureInvalid,
                format!("client did not prove possession of its key: {tls_error}"),
            )
        }
        rustls::Error::AlertReceived(alert) => (RefusalReason::PeerAlert, alert_detail(*alert)),
        other => (RefusalReason::HandshakeFailed, other.to_string()),
    };
    Refusal::new(reason, detail)
}

fn alert_detail(alert: AlertDescription) -> String {
    let hint = match alert {
        AlertDescription::UnknownCA
        | AlertDescription::BadCertificate
        | AlertDescription::CertificateUnknown => ": the client does not trust the server certificate",
        AlertDescription::CertificateExpired => ": the client considers the server certificate expired",
        AlertDescription::ProtocolVersion => ": no TLS version in common",
        _ => "",
    };
    format!("client sent alert {alert:?}{hint}")
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Live mutual-TLS connections of one listener, so that a reload can close those whose
/// certificate is no longer approved.
#[derive(Default, Clone)]
struct Registry {
    inner: Arc<Mutex<LiveClients>>,
}

#[derive(Default)]
struct LiveClients {
    next_id: u64,
    clients: HashMap<u64, LiveClient>,
}

struct LiveClient {
    chain: Vec<CertificateDer<'static>>,
    peer: SocketAddr,
    close: CancellationToken,
}

/// Removes its connection from the registry when dropped (when the connection ends).
struct Registration {
    registry: Registry,
    id: u64,
}

impl Registry {
    fn register(
        &self,
        chain: Vec<CertificateDer<'static>>,
        peer: SocketAddr,
        close: CancellationToken,
    ) -> Registration {
        let mut live = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.next_id += 1;
        let id = live.next_id;
        live.clients.insert(id, LiveClient { chain, peer, close });
        Registration { registry: self.clone(), id }
    }

    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clients.len()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.registry.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.clients.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_offers_only_ecdhe_aead_suites() {
        for suite in &provider().cipher_suites {
            let name = suite.suite().as_str().unwrap();
            let tls13 = name.starts_with("TLS13_");
            let ecdhe = name.starts_with("TLS_ECDHE_");
            let aead = name.contains("_GCM_") || name.contains("CHACHA20_POLY1305");
            assert!((tls13 || ecdhe) && aead, "{name}");
        }
    }

    #[test]
    fn server_certificate_expiry_notices() {
        let ca = pki::Ca::new("expiry test CA", pki::Validity::days_from_now(400)).unwrap();
        let names = ["localhost".to_owned()];
        let leaf = |days| {
            let issued =
                ca.issue(pki::CertKind::Server, "s", &names, pki::Validity::days_from_now(days)).unwrap();
            CertSummary::parse(&issued.der).unwrap()
        };
        let now = unix_now();
        assert_eq!(expiry_notice(&leaf(90), now), None);
        let ten = leaf(10);
        let days = ten.days_until_expiry(now);
        assert!(days == 9 || days == 10, "{days}");
        let soon = expiry_notice(&ten, now);
        let expected = format!("(in {days} days)");
        assert!(matches!(&soon, Some(ExpiryNotice::Soon(text)) if text.contains(&expected)), "{soon:?}");
        let later = leaf(90);
        let expired = expiry_notice(&later, later.not_after + 1);
        assert!(matches!(&expired, Some(ExpiryNotice::Expired(_))), "{expired:?}");
        let early = expiry_notice(&later, later.not_before - 1);
        assert!(
            matches!(&early, Some(ExpiryNotice::Soon(text)) if text.contains("not valid before")),
            "{early:?}"
        );
    }

    #[test]
    fn hello_versions() {
        // openssl s_client -tls1: record version 0x0301, ClientHello, client_version 0x0301.
        let tls10 = [0x16, 0x03, 0x01, 0x00, 0x75, 0x01, 0x00, 0x00, 0x71, 0x03, 0x01];
        assert_eq!(hello_version(&tls10), Some(0x0301));
        assert_eq!(wire_version_name(0x0301), "TLS 1.0");
        let tls13 = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03];
        assert_eq!(hello_version(&tls13), Some(TLS12_WIRE_VERSION));
        // Not a ClientHello (handshake type 2), or not a handshake record.
        assert_eq!(hello_version(&[0x16, 0x03, 0x03, 0x00, 0x10, 0x02, 0, 0, 0, 3, 1]), None);
        assert_eq!(hello_version(&[0x17; 11]), None);
    }

    #[test]
    fn not_tls_details() {
        assert!(not_tls_detail(0x0B).starts_with("plaintext MLLP"));
        assert!(not_tls_detail(b'G').contains("HTTP"));
        assert!(not_tls_detail(0x42).ends_with("first byte 0x42, expected 0x16"));
    }

    #[test]
    fn reasons_are_distinct() {
        use RefusalReason::*;
        let all = [
            ClosedBeforeHandshake,
            Shutdown,
            NotTls,
            ProtocolVersion,
            HandshakeTimeout,
            ClientCertMissing,
            ClientCertUnapproved,
            ClientCertExpired,
            ClientCertNotYetValid,
            ClientCertUntrusted,
            ClientCertInvalid,
            ClientSignatureInvalid,
            PeerAlert,
            Incompatible,
            HandshakeFailed,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }
}
