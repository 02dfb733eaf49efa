//! Why a TLS connection was refused, and its audit line.
//!
//! Owns the refusal reasons (their names are audit fields and metric labels) and how a
//! refusal is logged. It must not decide a refusal: the handshake (`accept.rs`) and the
//! certificate check (`verifier.rs`) do.

use std::fmt;
use std::net::SocketAddr;

use tracing::{debug, warn};

use super::cert::ClientCert;
use crate::peer_text;

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
    /// The client certificate's key is too weak (RSA under 2048 bits).
    ClientKeyTooWeak,
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
            RefusalReason::ClientKeyTooWeak => "client_key_too_weak",
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
    pub(super) fn new(reason: RefusalReason, detail: impl Into<String>) -> Refusal {
        Refusal { reason, detail: detail.into(), client: None }
    }

    /// Logs the refusal: security events as an `audit` warning with the reason, the peer and
    /// the client certificate's subject (capped, [`peer_text::cap`]) and SHA-256 thumbprint;
    /// routine ones at debug. `via` is the load balancer the connection came through, if
    /// any. How often a peer's refusals are logged is the caller's
    /// (`listener::refusal_log`).
    pub fn log(&self, listener: &str, peer: SocketAddr, via: Option<SocketAddr>) {
        let reason = self.reason.as_str();
        // The subject is the peer's to choose, and so may be the detail (it can quote the
        // certificate parser or rustls): both are capped.
        let detail = &*peer_text::cap(&self.detail);
        let client_subject = self.client.as_ref().map(|c| peer_text::cap(&c.subject));
        let client_subject = client_subject.as_deref();
        let client_thumbprint = self.client.as_ref().map(|c| c.digests.sha256().to_string());
        let proxy = via.map(tracing::field::display);
        if self.reason.is_audited() {
            // client_cert_missing/unapproved/expired/…, client_signature_invalid
            let event =
                if reason.starts_with("client_") { "client_cert_refused" } else { "tls_handshake_failed" };
            warn!(target: "audit", event, listener, %peer, proxy, reason, client_subject, client_thumbprint, detail,
                "TLS connection refused");
        } else {
            debug!(listener, %peer, proxy, reason, detail, "connection closed before the TLS handshake");
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ClientKeyTooWeak,
            ClientSignatureInvalid,
            PeerAlert,
            Incompatible,
            HandshakeFailed,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }
}
