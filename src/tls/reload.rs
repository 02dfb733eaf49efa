//! Reload and the live registry: the settings of each TLS listener, swapped whole by a
//! reload, and the live mutual-TLS connections that a reload may close.
//!
//! Owns [`TlsListener`] (its state and its live connections) and [`Reloader`] (every TLS
//! listener of a running server). It must not run handshakes (`accept.rs`) nor read the
//! configuration file (its caller passes a loaded `Config`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::cert::{self, CertSummary};
use super::load::TlsError;
use super::server_config::{provider, TlsState};
use super::verifier::ClientCert;
use crate::config::{Config, Thumbprint, TlsConfig, Transport};

/// A server certificate expiring within this many days is warned about at load.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

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

impl TlsState {
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

fn unix_now() -> i64 {
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
    use crate::tls::pki;

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
}
