//! Client-side TLS for `hl7d send` and `hl7d bench`: trust (CA file, system roots, a pinned
//! thumbprint, or — loudly — nothing), client certificates, and readable failure reasons.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::tls::thumbprint::Thumbprint;

/// How the client decides to trust the server, and who it is.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsOptions {
    /// Trust this CA bundle (PEM) instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Accept exactly the server certificate with this thumbprint (SHA-256 or SHA-1).
    pub pin: Option<Thumbprint>,
    /// Skip server verification entirely (tests and first trials only).
    pub danger_insecure: bool,
    /// Client certificate chain (PEM) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// A client TLS configuration that cannot be built.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--cert` without `--key` or the other way round.
    #[error("--cert and --key go together")]
    CertWithoutKey,
    /// rustls refused the combination.
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the rustls client configuration: TLS 1.2 and 1.3 only, one crypto provider.
pub fn client_config(options: &ClientTlsOptions) -> Result<ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let algorithms = provider.signature_verification_algorithms;
    let builder = if options.danger_insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(DangerAcceptAnyServerCert(algorithms)))
    } else if let Some(pin) = &options.pin {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedServerCert { pin: *pin, algorithms }))
    } else {
        builder.with_root_certificates(roots(options.ca.as_ref())?)
    };
    let config = match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsSetupError::File { path: key.clone(), reason: e.to_string() })?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsSetupError::CertWithoutKey),
    };
    Ok(config)
}

/// The server name to verify (and send as SNI): `--server-name`, or the host of `HOST:PORT`.
pub fn server_name(to: &str, explicit: Option<&str>) -> Result<ServerName<'static>, String> {
    let host = match explicit {
        Some(name) => name.to_string(),
        None => {
            let host = to.rsplit_once(':').map_or(to, |(h, _)| h);
            host.trim_start_matches('[').trim_end_matches(']').to_string()
        }
    };
    ServerName::try_from(host.clone()).map_err(|_| format!("{host:?} is not a valid server name"))
}

fn roots(ca: Option<&PathBuf>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_certs(path)? {
                store
                    .add(cert)
                    .map_err(|e| TlsSetupError::File { path: path.clone(), reason: e.to_string() })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    Ok(store)
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::File { path: path.clone(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsSetupError::File { path: path.clone(), reason: "no certificate in the file".into() });
    }
    Ok(certs)
}

/// Verifies the server by the thumbprint of its certificate (`--pin`). The handshake
/// signature is checked too, so the server must hold the certificate's key.
#[derive(Debug)]
struct PinnedServerCert {
    pin: Thumbprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let sha256: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        let sha1: [u8; 20] = Sha1::digest(end_entity.as_ref()).into();
        if self.pin.matches(&sha256, &sha1) {
            Ok(ServerCertVerified::assertion())
        } else {
            // Only this verifier uses ApplicationVerificationFailure: it reads back as
            // "pin mismatch".
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// DANGER: accepts any server certificate (`--insecure`, for tests and first trials
/// only): anyone on the path can read and answer the messages. The handshake signature is
/// still checked, which proves only that the server holds the key of the certificate it
/// showed, not who it is.
#[derive(Debug)]
struct DangerAcceptAnyServerCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for DangerAcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Why a TLS connection failed, in the words an operator needs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlsFailure {
    /// The server certificate does not chain to a trusted CA.
    #[error("server certificate not trusted (unknown CA): pass --ca or --pin")]
    UnknownCa,
    /// The server certificate is not the pinned one.
    #[error("server certificate does not match --pin")]
    PinMismatch,
    /// The server certificate is not valid for the name we connected to.
    #[error("server certificate not valid for this name: use --server-name")]
    NameMismatch,
    /// The server certificate is expired or not yet valid.
    #[error("server certificate expired or not yet valid")]
    ServerCertExpired,
    /// The server refused our client certificate (or our lack of one).
    #[error("client certificate refused by the server ({0})")]
    ClientCertRefused(String),
    /// No TLS version in common (the server wants something we do not offer, or v.v.).
    #[error("no TLS version in common with the server")]
    ProtocolVersion,
    /// The server is a plaintext port: it answered the hello with something other than
    /// TLS, or closed without a word and waits for MLLP.
    #[error("the server does not speak TLS: drop --tls")]
    NotTls,
    /// The handshake did not complete in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// Anything else rustls reported.
    #[error("{0}")]
    Other(String),
}

impl TlsFailure {
    /// Classifies an I/O error from a TLS stream (always returns something).
    pub fn from_io(e: &io::Error) -> TlsFailure {
        Self::from_io_opt(e).unwrap_or_else(|| TlsFailure::Other(e.to_string()))
    }

    /// Classifies an I/O error if it carries a rustls error.
    pub fn from_io_opt(e: &io::Error) -> Option<TlsFailure> {
        let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(Self::from_rustls(inner))
    }

    /// Classifies a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> TlsFailure {
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(CertificateError::UnknownIssuer) => TlsFailure::UnknownCa,
            E::InvalidCertificate(CertificateError::ApplicationVerificationFailure) => {
                TlsFailure::PinMismatch
            }
            E::InvalidCertificate(CertificateError::NotValidForName)
            | E::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
                TlsFailure::NameMismatch
            }
            E::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => TlsFailure::ServerCertExpired,
            E::AlertReceived(alert) => match alert {
                AlertDescription::ProtocolVersion => TlsFailure::ProtocolVersion,
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError => TlsFailure::ClientCertRefused(format!("{alert:?}")),
                other => TlsFailure::Other(format!("server sent alert {other:?}")),
            },
            E::InvalidMessage(_) => TlsFailure::NotTls,
            other => TlsFailure::Other(other.to_string()),
        }
    }
}
