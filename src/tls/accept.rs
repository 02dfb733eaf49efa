//! Accepting a TLS connection: the first-bytes check, the handshake and its timeout, the
//! client-certificate verdict after it, and which refusal a failed handshake is.
//!
//! Owns everything between an accepted TCP socket and a decrypted stream with [`Session`]
//! facts. It must not read MLLP or HL7, and must not change the listener's settings (a
//! reload does that, `reload.rs`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hl7_proto::sniff::{self, HelloVersion, TlsFirstBytes};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{AlertDescription, PeerIncompatible, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::cert::ClientCert;
use super::hello::{not_tls_detail, peek_first_bytes, peek_hello_version};
use super::refusal::{Refusal, RefusalReason};
use super::reload::{Registration, TlsListener};
use super::server_config::{server_config, TlsState};
use super::verifier::{ClientCertRefusal, ConnectionVerifier};
use crate::peer_text;

/// Facts about an established TLS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// IANA-style suite name, e.g. `TLS13_AES_128_GCM_SHA256`.
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
    pub(super) _registration: Option<Registration>,
}

impl Accepted {
    /// Logs (info) the negotiated version and suite and the client certificate; `via` is
    /// the load balancer the connection came through, if any (`peer` is then the client it
    /// named).
    pub fn log_opened(&self, listener: &str, peer: SocketAddr, via: Option<SocketAddr>) {
        let session = &self.session;
        let client_subject = session.client.as_ref().map(|c| peer_text::cap(&c.subject));
        let client_subject = client_subject.as_deref();
        let client_thumbprint = session.client.as_ref().map(|c| c.digests.sha256().to_string());
        let proxy = via.map(tracing::field::display);
        info!(target: "audit", event = "connection_accepted", listener, %peer, proxy, tls_version = session.version,
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
    pub(super) inner: TlsStream<TcpStream>,
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

impl TlsListener {
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
        let first = match peek_first_bytes(&stream).await {
            Ok(Some(first)) => first,
            Ok(None) => {
                return Err(Refusal::new(RefusalReason::ClosedBeforeHandshake, "peer closed without sending"))
            }
            Err(e) => {
                return Err(Refusal::new(RefusalReason::ClosedBeforeHandshake, format!("i/o error: {e}")))
            }
        };
        let hello = match first {
            TlsFirstBytes::NotTls { kind, first } => {
                return Err(Refusal::new(RefusalReason::NotTls, not_tls_detail(kind, first)))
            }
            TlsFirstBytes::Handshake(hello) => hello,
        };
        *phase = Phase::Handshaking;
        let hello = match hello {
            HelloVersion::Incomplete => peek_hello_version(&stream).await,
            known => known,
        };
        // rustls would refuse an old client too, but for whatever the hello lacks first
        // (often the signature_algorithms extension), so name the real reason here.
        if let HelloVersion::Offered(version) = hello {
            if hello.is_before_tls12() {
                use tokio::io::AsyncWriteExt;
                let _ = stream.write_all(&sniff::PROTOCOL_VERSION_ALERT).await;
                return Err(Refusal::new(
                    RefusalReason::ProtocolVersion,
                    format!(
                        "client offers at most {}; TLS 1.2 or later is required",
                        sniff::wire_version_name(version)
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

pub(super) fn refusal_from(refusal: ClientCertRefusal) -> Refusal {
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
            // The verifier records a failed signature check with the certificate; this is
            // for a failure without a verdict at all.
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
