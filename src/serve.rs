//! `hl7d serve`: load the configuration, start every listener, run until SIGTERM/Ctrl-C;
//! SIGHUP reloads TLS certificates, keys and client approvals.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{error, info, warn};

use crate::admin::{Admin, Running};
use crate::config::{Config, Transport};
use crate::listener::Server;
use crate::store::{MessageStore, SqliteOptions, SqliteStore};
use crate::tls::pki::{self, LocalTls};
use crate::tls::{ReloadReport, Reloader};

/// Upper bound on how long shutdown waits for messages in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Loads the config file, or the embedded default when `path` is `None`.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(path).with_context(|| format!("configuration {}", path.display())),
        None => Ok(Config::embedded_default()),
    }
}

/// Runs the server until a termination signal, then shuts down gracefully. `config_path`
/// is the file `config` came from, `None` for the embedded default (whose local CA and
/// server certificate are generated here on first start); SIGHUP re-reads it and reloads
/// TLS (see [`reload`]).
pub async fn run(config: Config, config_path: Option<&Path>) -> anyhow::Result<()> {
    let embedded = config_path.is_none();
    for warning in &config.warnings {
        warn!("configuration: {warning}");
    }
    // First, so that `/ready` answers 503 while the store opens and the listeners bind.
    let admin = match config.admin {
        Some(admin) => Some(
            Admin::start(admin.listen)
                .await
                .with_context(|| format!("[admin] cannot listen on {}", admin.listen))?,
        ),
        None => None,
    };
    let local_tls = if embedded { prepare_local_tls(&config)? } else { None };
    let options = SqliteOptions { retention: config.store.retention, ..SqliteOptions::default() };
    let sqlite = Arc::new(SqliteStore::open(&config.store.path, options)?);
    info!(path = %sqlite.file().display(), "message store open");
    let store: Arc<dyn MessageStore> = sqlite.clone();
    let server = Server::start(&config, store).await?;
    for (name, addr) in server.local_addrs() {
        let listener = config.listener(name).map(|l| &l.transport);
        let transport = match listener {
            Some(Transport::Plaintext) | None => "plaintext MLLP",
            Some(Transport::Tls(_)) => "MLLP over TLS",
        };
        info!(listener = %name, %addr, transport, "listening");
        if embedded {
            eprintln!("hl7d: listener {name:?} on {addr} ({transport}); embedded default configuration");
            match &local_tls {
                Some(local) => {
                    eprintln!("  senders trust the local CA {}", local.ca_cert.display());
                    eprintln!("  or pin the server certificate {}", local.server_thumbprint);
                    eprintln!(
                        "  send a message:  hl7d send --to localhost:{} --tls --ca {} message.hl7",
                        addr.port(),
                        local.ca_cert.display()
                    );
                }
                None => eprintln!("  send a message:  hl7d send --to {addr} message.hl7"),
            }
        }
    }
    if let Some(admin) = &admin {
        let reloader = server.reloader();
        let config_path = config_path.map(Path::to_path_buf);
        let reload = Arc::new(move || reload(&reloader, config_path.as_deref()));
        admin.attach(Running { reloader: server.reloader(), reload });
        admin.readiness().set(true);
    }
    info!(target: "audit", event = "start", version = env!("CARGO_PKG_VERSION"),
        listeners = config.listeners.len(), "hl7d started");
    tokio::spawn(crate::expiry::watch(
        server.reloader(),
        config.log.cert_expiry_warning,
        server.shutdown_token(),
    ));
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => {
            tokio::spawn(reload_on_hangup(hangup, server.reloader(), config_path.map(Path::to_path_buf)));
        }
        Err(e) => warn!(error = %e, "cannot listen for SIGHUP: TLS reload by signal unavailable"),
    }
    let stop = server.shutdown_token();
    let readiness = admin.as_ref().map(Admin::readiness);
    tokio::spawn(async move {
        wait_for_signal().await;
        if let Some(readiness) = readiness {
            readiness.set(false);
        }
        info!("termination signal: no new connections; finishing messages in flight");
        stop.cancel();
    });
    let abandoned = server.run_until_stopped(SHUTDOWN_GRACE).await;
    // Every connection has finished (or was abandoned): write what is queued, checkpoint,
    // close the database file.
    let _ = tokio::task::spawn_blocking(move || sqlite.close()).await;
    if let Some(admin) = admin {
        admin.stop().await;
    }
    info!(target: "audit", event = "stop", abandoned, "hl7d stopped");
    Ok(())
}

/// Re-reads the configuration (the file at `path`, or the embedded default) and applies
/// its `[listener.tls]` tables to the running listeners: SIGHUP and the admin
/// `POST /reload` both come here. A configuration that no longer loads changes nothing
/// (`None`); a listener whose new files are broken keeps its previous ones (see the report).
pub fn reload(reloader: &Reloader, path: Option<&Path>) -> Option<ReloadReport> {
    // After logrotate moved the audit file away.
    crate::audit::reopen_files();
    match load_config(path) {
        Ok(config) => {
            let report = reloader.reload(&config);
            info!(target: "audit", event = "config_reloaded", reloaded = report.reloaded.len(),
                failed = report.failed.len(), needs_restart = report.needs_restart.len(), "configuration reloaded");
            Some(report)
        }
        Err(e) => {
            error!(target: "audit", event = "config_reload_failed", error = %format!("{e:#}"),
                "reload refused: the configuration does not load; keeping the running configuration");
            None
        }
    }
}

#[cfg(unix)]
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    reloader: Reloader,
    path: Option<std::path::PathBuf>,
) {
    while hangup.recv().await.is_some() {
        info!(target: "audit", event = "reload_requested", source = "SIGHUP", "SIGHUP: reloading TLS certificates, keys and client approvals");
        // Small file reads: not worth a blocking-pool hop.
        reload(&reloader, path.as_deref());
    }
}

/// The embedded default's TLS files: a local CA and a server certificate in the directory
/// of the configured certificate, generated once (see [`pki::ensure_local_tls`]).
fn prepare_local_tls(config: &Config) -> anyhow::Result<Option<LocalTls>> {
    let Some(tls) = config.listeners.iter().find_map(|listener| listener.tls()) else {
        return Ok(None);
    };
    let dir = tls.cert.parent().unwrap_or(Path::new("."));
    let hostname = pki::hostname();
    let local = pki::ensure_local_tls(dir, hostname.as_deref())
        .with_context(|| format!("cannot prepare the local certificate in {}", dir.display()))?;
    for file in &local.created {
        info!(file = %file.display(), "generated (local CA for the embedded default; not for production)");
    }
    info!(ca = %local.ca_cert.display(), server_thumbprint = %local.server_thumbprint,
        "embedded default TLS: senders trust the local CA or pin the server certificate");
    Ok(Some(local))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
