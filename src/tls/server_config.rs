//! The rustls server configuration of a listener: the crypto provider and its cipher
//! suites, the protocol versions, and the settings a handshake uses ([`TlsState`]).
//!
//! Owns what a handshake is allowed to negotiate. It must not accept connections or keep
//! track of them (`accept.rs`, `reload.rs`).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ServerConfig};
use rustls::sign::SingleCertAndKey;
use rustls::SupportedProtocolVersion;

use super::cert::CertSummary;
use super::load::{self, ServerIdentity, TlsError};
use super::verifier::{ClientPolicy, ConnectionVerifier};
use crate::config::{ClientAuth, TlsConfig, TlsVersion};

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

/// Reads and checks the files a TLS listener with `settings` would use, as
/// [`super::TlsListener::load`] does, without logging anything: the certificate chain, the
/// key (its permissions, and that it is the leaf's), the client CA, and that rustls takes
/// the settings. Returns the server (leaf) certificate. For the start-up checks.
pub fn check_settings(settings: &TlsConfig) -> Result<CertSummary, TlsError> {
    Ok(TlsState::load(settings, &provider())?.identity.leaf)
}

/// The settings a handshake uses; replaced whole by a reload.
pub(super) struct TlsState {
    pub(super) settings: TlsConfig,
    pub(super) identity: ServerIdentity,
    pub(super) policy: Option<Arc<ClientPolicy>>,
    /// The server config for `client_auth = "none"`, built once. Mutual-TLS handshakes
    /// each get their own (cheap) config carrying a per-connection verifier.
    pub(super) shared: Option<Arc<ServerConfig>>,
}

impl TlsState {
    pub(super) fn load(settings: &TlsConfig, provider: &Arc<CryptoProvider>) -> Result<TlsState, TlsError> {
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
}

pub(super) fn server_config(
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
    // Prefer the server's order (see `provider`): AES-128-GCM first.
    config.ignore_client_order = true;
    if mutual {
        // A resumed session skips client-certificate verification; with no session
        // cache and no tickets every connection presents and proves its certificate.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(config)
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
}
