//! Client-certificate approval: an approved thumbprint, inside its validity period,
//! optionally chaining to `client_ca`, and proof of key possession (the handshake
//! signature, which rustls asks this verifier to check with the provider's algorithms).
//!
//! Thumbprint pinning is the trust decision here, so without `client_ca` the certificate's
//! issuer, key usage and extended key usage are not examined: an approved self-signed
//! certificate is fine. What is never skipped is the key strength (RSA of at least
//! [`MIN_RSA_BITS`]), the validity period and the signature.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use x509_parser::public_key::PublicKey;

use super::cert::{CertSummary, ClientCert, Digests, ValidityStatus};
use super::load::{self, TlsError};
use super::refusal::RefusalReason;
use super::thumbprint::Thumbprint;

/// The smallest RSA client key accepted, in bits. Smaller keys are refused as
/// `client_key_too_weak` (the crypto provider could not check their signature anyway).
pub const MIN_RSA_BITS: usize = 2048;

/// The client-certificate rules of one listener (`client_auth = "required"`).
#[derive(Debug)]
pub struct ClientPolicy {
    approved: Vec<Thumbprint>,
    /// WebPKI verification against `client_ca`, when configured.
    ca: Option<Arc<dyn ClientCertVerifier>>,
    /// Subjects of `client_ca` sent in the CertificateRequest, so that clients holding
    /// several certificates pick one from that CA.
    hints: Vec<DistinguishedName>,
}

/// Why a client certificate was refused, with what is known about it.
#[derive(Debug, Clone)]
pub struct ClientCertRefusal {
    /// Machine-readable reason (audit, metrics).
    pub reason: RefusalReason,
    /// The certificate, when it could be parsed.
    pub cert: Option<ClientCert>,
    /// Human-readable detail.
    pub detail: String,
    /// The error handed to rustls; it decides the TLS alert the client receives.
    pub error: rustls::Error,
}

impl ClientPolicy {
    /// Builds the policy; reads and checks `client_ca` when given.
    pub fn new(
        approved: Vec<Thumbprint>,
        ca: Option<&Path>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<ClientPolicy, TlsError> {
        let Some(path) = ca else {
            return Ok(ClientPolicy { approved, ca: None, hints: Vec::new() });
        };
        let mut roots = RootCertStore::empty();
        for der in load::certificates(path)? {
            roots
                .add(der)
                .map_err(|e| TlsError::ClientCa { path: path.to_owned(), detail: e.to_string() })?;
        }
        let hints = roots.subjects();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::ClientCa { path: path.to_owned(), detail: e.to_string() })?;
        Ok(ClientPolicy { approved, ca: Some(verifier), hints })
    }

    /// The approved thumbprints.
    pub fn approved(&self) -> &[Thumbprint] {
        &self.approved
    }

    /// Checks a presented chain at `now`: thumbprint approved, key strength, validity period,
    /// then (with `client_ca`) the chain. Refusals are reported in that order, so an
    /// unapproved certificate is reported as unapproved even if it has also expired.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCert, Box<ClientCertRefusal>> {
        let digests = Digests::of(end_entity);
        let summary = match CertSummary::parse(end_entity) {
            Ok(summary) => summary,
            Err(e) => {
                return Err(Box::new(ClientCertRefusal {
                    reason: RefusalReason::ClientCertInvalid,
                    cert: None,
                    detail: format!("client certificate {}: {e}", digests.sha256()),
                    error: CertificateError::BadEncoding.into(),
                }));
            }
        };
        let cert = ClientCert {
            subject: summary.subject.clone(),
            digests,
            not_before: summary.not_before,
            not_after: summary.not_after,
        };
        let refuse = |reason, detail: String, error: CertificateError| {
            Err(Box::new(ClientCertRefusal { reason, cert: Some(cert.clone()), detail, error: error.into() }))
        };
        if !digests.approved_by(&self.approved) {
            return refuse(
                RefusalReason::ClientCertUnapproved,
                format!("client certificate {} is not in client_thumbprints", digests.sha256()),
                CertificateError::ApplicationVerificationFailure,
            );
        }
        if let Some(bits) = rsa_key_bits(end_entity).filter(|bits| *bits < MIN_RSA_BITS) {
            return refuse(
                RefusalReason::ClientKeyTooWeak,
                format!(
                    "client certificate has a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are required"
                ),
                CertificateError::BadEncoding,
            );
        }
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        match summary.validity_at(now_secs) {
            ValidityStatus::Valid => {}
            ValidityStatus::NotYetValid => {
                return refuse(
                    RefusalReason::ClientCertNotYetValid,
                    format!(
                        "client certificate is not valid before {}",
                        super::cert::format_time(summary.not_before)
                    ),
                    CertificateError::NotValidYet,
                );
            }
            ValidityStatus::Expired => {
                return refuse(
                    RefusalReason::ClientCertExpired,
                    format!("client certificate expired {}", super::cert::format_time(summary.not_after)),
                    CertificateError::Expired,
                );
            }
        }
        if let Some(ca) = &self.ca {
            if let Err(error) = ca.verify_client_cert(end_entity, intermediates, now) {
                return Err(Box::new(ClientCertRefusal {
                    reason: RefusalReason::ClientCertUntrusted,
                    cert: Some(cert),
                    detail: format!("client certificate does not verify against client_ca: {error}"),
                    error,
                }));
            }
        }
        Ok(cert)
    }
}

/// The verifier of one handshake: applies the listener's [`ClientPolicy`] and remembers
/// the verdict, so that a refusal is logged with the certificate's subject and thumbprint
/// and an acceptance yields them for the connection.
#[derive(Debug)]
pub struct ConnectionVerifier {
    policy: Arc<ClientPolicy>,
    algorithms: WebPkiSupportedAlgorithms,
    verdict: Mutex<Option<Result<ClientCert, Box<ClientCertRefusal>>>>,
}

impl ConnectionVerifier {
    /// A verifier for one handshake.
    pub fn new(policy: Arc<ClientPolicy>, provider: &CryptoProvider) -> ConnectionVerifier {
        ConnectionVerifier {
            policy,
            algorithms: provider.signature_verification_algorithms,
            verdict: Mutex::new(None),
        }
    }

    /// The verdict on the client's certificate, once one was presented.
    pub fn take_verdict(&self) -> Option<Result<ClientCert, Box<ClientCertRefusal>>> {
        self.verdict.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// A failed handshake signature turns an approved certificate's verdict into a
    /// `client_signature_invalid` refusal that still names the certificate (the audit line
    /// carries its subject and thumbprint).
    fn signature_checked(
        &self,
        cert: &CertificateDer<'_>,
        result: Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let Err(error) = &result else {
            return result;
        };
        let mut verdict = self.verdict.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let client = match verdict.take() {
            Some(Ok(client)) => Some(client),
            _ => CertSummary::parse(cert).ok().map(|summary| ClientCert {
                subject: summary.subject,
                digests: Digests::of(cert),
                not_before: summary.not_before,
                not_after: summary.not_after,
            }),
        };
        *verdict = Some(Err(Box::new(ClientCertRefusal {
            reason: RefusalReason::ClientSignatureInvalid,
            cert: client,
            detail: format!("client did not prove possession of its certificate's key: {error}"),
            error: error.clone(),
        })));
        result
    }
}

impl ClientCertVerifier for ConnectionVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.policy.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = self.policy.check(end_entity, intermediates, now);
        let result = match &verdict {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(refusal) => Err(refusal.error.clone()),
        };
        *self.verdict.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(verdict);
        result
    }

    // Proof of possession: the client signed the handshake with the certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature_checked(
            cert,
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms),
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature_checked(
            cert,
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms),
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The size in bits of the certificate's RSA public key; `None` for other key types (and
/// for a certificate that does not parse, which [`CertSummary::parse`] reports).
fn rsa_key_bits(der: &CertificateDer<'_>) -> Option<usize> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    match cert.public_key().parsed().ok()? {
        PublicKey::RSA(rsa) => Some(rsa.key_size()),
        _ => None,
    }
}
