//! The start-up checks: everything `hl7d serve` needs from a loaded configuration that can
//! be checked without creating a file or serving anything. `hl7d check-config` reports them;
//! `serve` runs them before it creates anything, so a configuration that cannot start leaves
//! no data directory, TLS directory, database or audit file behind.
//!
//! Owns the list of checks, not the checks: each part answers for itself with a function
//! that says what its own start-up would say ([`tls::check_settings`],
//! [`SqliteStore::check`], [`AuditTrail::check`], [`pki::check_local_tls`]). Nothing here
//! creates, opens for writing or changes a file; with [`Options::bind`] each address is
//! bound and closed again at once.

use std::net::SocketAddr;

use thiserror::Error;

use crate::audit::{AuditError, AuditTrail};
use crate::config::{Config, RouteTarget, StoreConfig};
use crate::console::auth::accounts::Accounts;
use crate::delivery::transport::file::FileTransport;
use crate::store::{SqliteStore, StoreError};
use crate::tls::cert::{self, CertSummary, ExpiryNotice};
use crate::tls::pki::{self, PkiError};
use crate::tls::{self, TlsError};

/// What to check besides the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Also bind every listener and admin address (port 0 aside) and close it again
    /// (`check-config --bind`, and `serve` just before it binds for real).
    pub bind: bool,
    /// The configuration is the embedded default, whose TLS files are made at start
    /// ([`pki::ensure_local_tls`]): their directory is checked instead of the files.
    pub local_tls: bool,
    /// Now, in seconds since the Unix epoch, for the certificate expiry warnings.
    pub now: i64,
}

/// Everything the checks found.
#[derive(Debug, Default)]
pub struct Report {
    /// Every listener, in configuration order.
    pub listeners: Vec<Listener>,
    /// Every route, in configuration order.
    pub routes: Vec<Route>,
    /// The configuration's warnings, then certificate expiry notices: allowed, but worth a
    /// look. They do not stop `serve`.
    pub warnings: Vec<String>,
    /// What would stop `serve`; empty when it can start.
    pub problems: Vec<Problem>,
    /// The store the configuration names (`[store]`), for `check-config` to show.
    pub store: StoreConfig,
}

/// One configured listener as the checks saw it.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Its `name`.
    pub name: String,
    /// Its `listen` address.
    pub listen: SocketAddr,
    /// TLS (`true`) or plaintext.
    pub tls: bool,
    /// The server certificate, when its files were read and found usable.
    pub server_certificate: Option<CertSummary>,
}

/// One configured route as the checks saw it.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its `name`.
    pub name: String,
    /// Its `to`, user information left out (see `RouteTarget`'s `Display`).
    pub to: String,
    /// Its `order` (`per_patient`, `per_sender`, `strict`).
    pub order: &'static str,
    /// Its `in_flight`.
    pub in_flight: usize,
}

/// Something that would stop `serve`.
#[derive(Debug, Error)]
pub enum Problem {
    /// A listener's certificate, key or client CA cannot be used.
    #[error("listener {listener:?}: {error}")]
    Tls {
        /// The listener.
        listener: String,
        /// What is wrong (its message names the file).
        error: TlsError,
    },
    /// `[admin.tls]` cannot be used.
    #[error("admin: [admin.tls]: {0}")]
    AdminTls(TlsError),
    /// The embedded default's TLS directory cannot hold the generated files.
    #[error("listener {listener:?}: local TLS files: {error}")]
    LocalTls {
        /// The listener.
        listener: String,
        /// What is wrong.
        error: PkiError,
    },
    /// `[store] path` cannot be used.
    #[error("{0}")]
    Store(StoreError),
    /// An `[audit]` sink cannot be used.
    #[error("{0}")]
    Audit(AuditError),
    /// A file route's directory cannot be written.
    #[error("route {route:?}: {error}")]
    Route {
        /// The route.
        route: String,
        /// What is wrong.
        error: String,
    },
    /// An address cannot be bound ([`Options::bind`]).
    #[error("{what}: cannot listen on {addr}: {error}")]
    Bind {
        /// `listener "lab"` or `admin`.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        error: std::io::Error,
    },
}

impl Problem {
    /// Another socket holds the address: something of the moment (an hl7d still finishing
    /// its messages, another service), not of the configuration.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, Problem::Bind { error, .. } if error.kind() == std::io::ErrorKind::AddrInUse)
    }
}

impl Report {
    /// No problem found: `serve` would start.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs every check on `config`; see the module documentation.
pub fn check(config: &Config, options: &Options) -> Report {
    let mut report =
        Report { warnings: config.warnings.clone(), store: config.store.clone(), ..Report::default() };
    for listener in &config.listeners {
        let mut facts = Listener {
            name: listener.name.clone(),
            listen: listener.listen,
            tls: listener.tls().is_some(),
            server_certificate: None,
        };
        if let Some(settings) = listener.tls() {
            if options.local_tls {
                let dir = settings.cert.parent().unwrap_or(std::path::Path::new("."));
                if let Err(error) = pki::check_local_tls(dir) {
                    report.problems.push(Problem::LocalTls { listener: listener.name.clone(), error });
                }
            } else {
                match tls::check_settings(settings) {
                    Ok(leaf) => {
                        let validity = (leaf.not_before, leaf.not_after);
                        let warn_within = config.log.cert_expiry_warning;
                        if let Some(notice) =
                            cert::expiry_notice("server", &leaf.subject, validity, options.now, warn_within)
                        {
                            let (ExpiryNotice::Expired(text)
                            | ExpiryNotice::NotYetValid(text)
                            | ExpiryNotice::ExpiresSoon(text)) = notice;
                            report.warnings.push(format!("listener {:?}: {text}", listener.name));
                        }
                        facts.server_certificate = Some(leaf);
                    }
                    Err(error) => {
                        report.problems.push(Problem::Tls { listener: listener.name.clone(), error })
                    }
                }
            }
        }
        report.listeners.push(facts);
    }
    for route in &config.routes {
        report.routes.push(Route {
            name: route.name.clone(),
            to: route.to.to_string(),
            order: route.order.config_name(),
            in_flight: route.in_flight,
        });
        if let RouteTarget::File { dir } = &route.to {
            if let Err(error) = FileTransport::check(dir) {
                report.problems.push(Problem::Route { route: route.name.clone(), error });
            }
        }
    }
    if let Some(admin) = &config.admin {
        if let Some(settings) = &admin.tls {
            if let Err(error) = tls::check_settings(settings) {
                report.problems.push(Problem::AdminTls(error));
            }
        }
        if !admin.console_refused() {
            match Accounts::load(&admin.users) {
                Ok(accounts) if accounts.users.is_empty() => report.warnings.push(format!(
                    "admin: users: the console has no users yet ({}): add one with \
                     `hl7d users add NAME --role operator --config FILE`",
                    admin.users.display()
                )),
                Ok(_) => {}
                Err(e) => report.warnings.push(format!("admin: users: {e}: nobody can log in")),
            }
        }
    }
    if let Err(error) = SqliteStore::check(&config.store.path) {
        report.problems.push(Problem::Store(error));
    }
    if let Some(audit) = &config.audit {
        report.problems.extend(AuditTrail::check(audit).into_iter().map(Problem::Audit));
    }
    if options.bind {
        let admin = config.admin.iter().map(|admin| ("admin".to_owned(), admin.listen));
        let listeners = config.listeners.iter().map(|l| (format!("listener {:?}", l.name), l.listen));
        for (what, addr) in admin.chain(listeners) {
            if addr.port() == 0 {
                continue;
            }
            // Closed again at once; std sets SO_REUSEADDR as tokio does, so the answer is
            // the one the real bind gets.
            if let Err(error) = std::net::TcpListener::bind(addr) {
                report.problems.push(Problem::Bind { what, addr, error });
            }
        }
    }
    report
}
