//! Reload of one TLS listener: its settings, read and checked by [`TlsListener::prepare`]
//! and swapped whole by [`TlsListener::apply`], and its live mutual-TLS connections, which
//! a reload may close.
//!
//! Owns [`TlsListener`] (its state and its live connections). It must not run handshakes
//! (`accept.rs`), read the configuration file, or decide what a reload of the whole server
//! changes (`listener::reload` does, and calls prepare for every TLS listener before it
//! applies anything).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::cert::ClientCert;
use super::cert::{self, CertSummary, ExpiryNotice};
use super::load::TlsError;
use super::server_config::{provider, TlsState};
use super::thumbprint::Thumbprint;
use crate::config::TlsConfig;
use crate::peer_text;

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

/// TLS settings read and checked by [`TlsListener::prepare`], not in force yet.
pub struct PreparedTls(TlsState);

/// The TLS side of one listener: the current settings (swapped atomically by a reload)
/// and the live mutual-TLS connections.
pub struct TlsListener {
    pub(super) name: Arc<str>,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) state: ArcSwap<TlsState>,
    pub(super) live: Registry,
    /// Approved client certificates seen in a handshake since start (by SHA-256), for the
    /// expiry gauges and alarms: a thumbprint alone carries no date.
    pub(super) seen: Mutex<HashMap<[u8; 32], ClientCert>>,
}

impl TlsListener {
    /// Reads the certificate, key and client CA named by `settings` and checks them: the
    /// key must match the certificate. Logs a notice when the certificate has expired, is
    /// not valid yet or expires within `expiry_warning` (`[log] cert_expiry_warning`; see
    /// [`cert::expiry_notice`]).
    pub fn load(name: &str, settings: &TlsConfig, expiry_warning: Duration) -> Result<TlsListener, TlsError> {
        let listener = TlsListener::prepare_new(name, settings)?;
        listener.check_expiry(unix_now(), expiry_warning);
        Ok(listener)
    }

    /// Like [`TlsListener::load`] without the expiry notices: for a listener that a reload
    /// may still abandon. Its caller runs [`TlsListener::check_expiry`] once it is in use.
    pub fn prepare_new(name: &str, settings: &TlsConfig) -> Result<TlsListener, TlsError> {
        let provider = provider();
        let state = TlsState::load(settings, &provider)?;
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

    /// Whether the listener asks for client certificates (mutual TLS: `client_auth` other
    /// than `"none"`).
    pub fn is_mutual(&self) -> bool {
        self.state.load().policy.is_some()
    }

    /// Number of approved client thumbprints in force (0 with `client_auth = "none"`).
    pub fn approved_count(&self) -> usize {
        self.state.load().policy.as_ref().map_or(0, |policy| policy.approved().len())
    }

    /// Logs a notice ([`cert::expiry_notice`]) for the server certificate and for every
    /// approved client certificate seen since start that has expired, is not valid yet or
    /// expires within `warn_within` of `now` (Unix seconds); returns how many were logged.
    pub fn check_expiry(&self, now: i64, warn_within: Duration) -> usize {
        let server = self.server_certificate();
        let server = ("server", server.subject, server.digests, (server.not_before, server.not_after));
        let clients = self.approved_clients_seen().into_iter().map(|client| {
            ("approved client", client.subject, client.digests, (client.not_before, client.not_after))
        });
        let mut logged = 0;
        for (kind, subject, digests, validity) in std::iter::once(server).chain(clients) {
            // A client certificate's subject is its holder's to choose.
            let subject = &*peer_text::cap(&subject);
            let Some(notice) = cert::expiry_notice(kind, subject, validity, now, warn_within) else {
                continue;
            };
            let listener = &*self.name;
            let thumbprint = digests.sha256().to_string();
            match notice {
                ExpiryNotice::Expired(text) => error!(listener, thumbprint, subject, "{text}"),
                ExpiryNotice::NotYetValid(text) | ExpiryNotice::ExpiresSoon(text) => {
                    warn!(listener, thumbprint, subject, "{text}")
                }
            }
            logged += 1;
        }
        logged
    }

    /// Reads and checks the files named by `settings` (as [`TlsListener::load`] does),
    /// without putting them in force: [`TlsListener::apply`] does that. On error nothing
    /// changes.
    pub fn prepare(&self, settings: &TlsConfig) -> Result<PreparedTls, TlsError> {
        TlsState::load(settings, &self.provider).map(PreparedTls)
    }

    /// Swaps prepared settings in for new handshakes (logging expiry notices as
    /// [`TlsListener::load`] does). Live connections keep their session, except those whose
    /// client certificate the new settings no longer approve: they are closed.
    pub fn apply(&self, prepared: PreparedTls, expiry_warning: Duration) -> ReloadOutcome {
        self.state.store(Arc::new(prepared.0));
        // After the store: a handshake that registers after this sweep re-checks against
        // the new state itself (see `accept`).
        let closed_connections = self.close_unapproved();
        self.check_expiry(unix_now(), expiry_warning);
        ReloadOutcome { closed_connections, ..self.outcome() }
    }

    /// The settings now in force, as a reload reports them (no connection closed).
    pub fn outcome(&self) -> ReloadOutcome {
        let state = self.state.load();
        ReloadOutcome {
            server_thumbprint: state.identity.leaf.digests.sha256(),
            approved_clients: state.policy.as_ref().map_or(0, |policy| policy.approved().len()),
            closed_connections: 0,
        }
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
                let client_subject = refusal.cert.as_ref().map(|c| peer_text::cap(&c.subject).into_owned());
                let client_thumbprint = refusal.cert.as_ref().map(|c| c.digests.sha256().to_string());
                warn!(target: "audit", event = "client_cert_revoked", listener = &*self.name, peer = %client.peer,
                    reason = refusal.reason.as_str(),
                    client_subject, client_thumbprint, detail = %peer_text::cap(&refusal.detail),
                    "closing connection: client certificate no longer approved after reload");
                client.close.cancel();
                closed += 1;
            }
        }
        closed
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Live mutual-TLS connections of one listener, so that a reload can close those whose
/// certificate is no longer approved.
#[derive(Default, Clone)]
pub(super) struct Registry {
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
pub(super) struct Registration {
    registry: Registry,
    id: u64,
}

impl Registry {
    pub(super) fn register(
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
    use crate::config::{ClientAuth, TlsVersion};
    use crate::tls::pki::{Ca, CertKind, Validity};

    /// The check that load and reload run takes the configured `[log] cert_expiry_warning`
    /// (it used a fixed 30 days, while the daily check used the configured one).
    #[test]
    fn load_and_reload_check_expiry_against_the_configured_threshold() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("reload expiry CA", Validity::days_from_now(400)).unwrap();
        let leaf =
            ca.issue(CertKind::Server, "s", &["localhost".to_owned()], Validity::days_from_now(40)).unwrap();
        let settings = TlsConfig {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            min_version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(10),
            client_auth: ClientAuth::None,
        };
        std::fs::write(&settings.cert, &leaf.cert_pem).unwrap();
        std::fs::write(&settings.key, &leaf.key_pem).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let owner_only = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(&settings.key, owner_only).unwrap();
        }
        let days = |n: u64| Duration::from_secs(n * 24 * 60 * 60);

        let listener = TlsListener::load("lab", &settings, days(60)).unwrap();
        let now = unix_now();
        assert_eq!(listener.check_expiry(now, days(60)), 1, "40 days left, warned 60 days ahead");
        assert_eq!(listener.check_expiry(now, days(30)), 0, "40 days left, warned 30 days ahead");
        let prepared = listener.prepare(&settings).unwrap();
        listener.apply(prepared, days(30));
    }
}
