//! `hl7d serve`: load the configuration, start every listener, run until SIGTERM/Ctrl-C;
//! SIGHUP (and the admin `POST /reload`) re-reads the configuration and applies it live
//! (see [`crate::listener::Reloader::reload`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::admin::{Admin, Running};
use crate::config::{Config, Transport};
use crate::delivery::engine::{Engine, EngineOptions};
use crate::delivery::queue::postgres::PgQueue;
use crate::listener::{ReloadReport, Reloader, ServeError, Server};
use crate::store::{MessageStore, PgOptions, PgStore, SqliteOptions, SqliteStore};
use crate::tls::pki::{self, LocalTls};

/// Upper bound on how long shutdown waits for messages in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Where the configuration comes from. A reload reads it again from the same place, so the
/// embedded default keeps a `--listen` address across reloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file (`--config`).
    File(PathBuf),
    /// The embedded default ([`Config::embedded_default`]), its listener moved to `listen`
    /// when that is given (`serve --listen`).
    Embedded {
        /// The listener's address instead of the default's 0.0.0.0:2575.
        listen: Option<SocketAddr>,
    },
}

impl ConfigSource {
    /// Reads the configuration: the file, or the embedded default with its address.
    pub fn load(&self) -> anyhow::Result<Config> {
        match self {
            ConfigSource::File(path) => {
                Config::load(path).with_context(|| format!("configuration {}", path.display()))
            }
            ConfigSource::Embedded { listen } => {
                let mut config = Config::embedded_default();
                if let Some(listen) = listen {
                    for listener in &mut config.listeners {
                        listener.listen = *listen;
                    }
                }
                Ok(config)
            }
        }
    }

    /// The file, or `None` for the embedded default.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::File(path) => Some(path),
            ConfigSource::Embedded { .. } => None,
        }
    }
}

/// Loads the config file, or the embedded default when `path` is `None`.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => ConfigSource::File(path.to_path_buf()).load(),
        None => ConfigSource::Embedded { listen: None }.load(),
    }
}

/// How [`run`] starts, besides the configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the configuration came from: the embedded default has its local CA and server
    /// certificate generated on first start, and SIGHUP reads the source again (see
    /// [`reload`]).
    pub source: ConfigSource,
    /// Written (0600, whole: written aside and renamed) once every listener listens, one
    /// `NAME ADDRESS` line per listener; removed at stop (`serve --ready-file`).
    pub ready_file: Option<PathBuf>,
}

/// Whether `error`, from [`run`], is an address that another socket holds: something of the
/// moment rather than of the configuration (see [`ServeError::is_address_in_use`]).
pub fn is_address_in_use(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.downcast_ref::<ServeError>().is_some_and(ServeError::is_address_in_use)
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// Runs the server until a termination signal, then shuts down gracefully. Every error it
/// returns happened at start-up, before the listeners took a connection. The configuration
/// should have passed [`crate::preflight::check`] first: this creates the data directory,
/// the database and (embedded default) the local TLS files as it goes.
pub async fn run(config: Config, options: &RunOptions) -> anyhow::Result<()> {
    let embedded = options.source.path().is_none();
    if let Some(file) = &options.ready_file {
        // One left by a process that was killed would announce a server not there.
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("--ready-file {}", file.display())),
        }
    }
    for warning in &config.warnings {
        warn!("configuration: {warning}");
    }
    // Before anything is logged as listening: a SIGHUP that comes before the handler is
    // installed would end the process (its default action). One that comes during start-up
    // waits here and reloads once the listeners run.
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    // First, so that `/ready` answers 503 while the store opens and the listeners bind.
    let admin = match &config.admin {
        Some(admin) => Some(Admin::start(admin).await?),
        None => None,
    };
    let local_tls = if embedded { prepare_local_tls(&config)? } else { None };
    // The configuration in force, for the console: swapped by every reload that applied.
    let in_force = Arc::new(ArcSwap::from_pointee(config.clone()));
    let routes = Engine::table();
    // The embedded SQLite store and its delivery engine, or the shared PostgreSQL store
    // (`[store] url`, issue 16) and its engine, which works lanes under leases.
    let (opened, engine) = match &config.store.postgres {
        None => {
            let store_options = SqliteOptions {
                retention: config.store.retention,
                routes: Some(routes.clone()),
                ..SqliteOptions::default()
            };
            let sqlite = Arc::new(SqliteStore::open(&config.store.path, store_options)?);
            info!(path = %sqlite.file().display(), "message store open");
            // Before the listeners: every message they store is queued for the routes of
            // the configuration it was received under.
            let engine = Engine::new(sqlite.clone(), &config.store.path, routes, EngineOptions::default());
            if let Err(failures) = engine.start(&config.routes) {
                let why: Vec<String> =
                    failures.iter().map(|(route, why)| format!("route {route:?}: {why}")).collect();
                anyhow::bail!("{}", why.join("; "));
            }
            (OpenedStore::Sqlite(sqlite), Some(engine))
        }
        Some(postgres) => {
            let options = PgOptions {
                retention: config.store.retention,
                routes: Some(routes.clone()),
                ..PgOptions::default()
            };
            let pg = Arc::new(PgStore::open(postgres, options).await?);
            info!(url = %pg.url(), sslmode = postgres.sslmode.as_str(), "message store open (PostgreSQL)");
            if let Some(admin) = &admin {
                // `/ready` answers 503 while the database cannot be reached.
                admin.readiness().watch_store(pg.health());
            }
            // Delivery across nodes: each lane under a lease (docs/scale-out.md).
            let node = config.node.resolved_name();
            let queue = Arc::new(PgQueue::new(pg.pool().clone(), &node, config.delivery.lease));
            info!(node = %node, lease = ?config.delivery.lease, "delivery across nodes: lanes under leases");
            let engine = Engine::with_queue(queue, routes, EngineOptions::default());
            if let Err(failures) = engine.start(&config.routes) {
                let why: Vec<String> =
                    failures.iter().map(|(route, why)| format!("route {route:?}: {why}")).collect();
                anyhow::bail!("{}", why.join("; "));
            }
            (OpenedStore::Postgres(pg), Some(engine))
        }
    };
    let store: Arc<dyn MessageStore> = match &opened {
        OpenedStore::Sqlite(sqlite) => sqlite.clone(),
        OpenedStore::Postgres(pg) => pg.clone(),
    };
    let server = Server::start(&config, store).await?;
    // The trail says "start" before `/ready` can answer 200 (below): a sender that waits for
    // readiness finds its `connection_accepted` after it.
    info!(target: "audit", event = "start", version = env!("CARGO_PKG_VERSION"), node = %config.node.resolved_name(),
        listeners = config.listeners.len(), routes = config.routes.len(), "hl7d started");
    for (name, addr) in server.local_addrs() {
        let listener = config.listener(&name).map(|l| &l.transport);
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
        let (source, ready_file) = (options.source.clone(), options.ready_file.clone());
        let (engine, swap) = (engine.clone(), in_force.clone());
        let reload: crate::admin::ReloadFn = Arc::new(move || {
            let (reloader, source, ready_file) = (reloader.clone(), source.clone(), ready_file.clone());
            let (engine, swap) = (engine.clone(), swap.clone());
            Box::pin(async move {
                reload_and_announce(&reloader, engine.as_ref(), &source, ready_file.as_deref(), &swap).await
            })
        });
        admin.attach(Running { reloader: server.reloader(), reload: reload.clone() });
        admin.attach_console(crate::console::Context {
            store: config.store.clone(),
            config: in_force.clone(),
            reloader: server.reloader(),
            reload,
            started: std::time::SystemTime::now(),
        });
        admin.readiness().set(true);
    }
    if let Some(file) = &options.ready_file {
        write_ready_file(file, &server.local_addrs())
            .with_context(|| format!("--ready-file {}", file.display()))?;
    }
    tokio::spawn(crate::expiry::watch(server.reloader(), server.shutdown_token()));
    #[cfg(unix)]
    match hangup {
        Ok(hangup) => {
            let (source, ready_file) = (options.source.clone(), options.ready_file.clone());
            tokio::spawn(reload_on_hangup(
                hangup,
                server.reloader(),
                engine.clone(),
                source,
                ready_file,
                in_force.clone(),
            ));
        }
        Err(e) => warn!(error = %e, "cannot listen for SIGHUP: reload by signal unavailable"),
    }
    let stop = server.shutdown_token();
    let readiness = admin.as_ref().map(Admin::readiness);
    let deliveries = engine.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        if let Some(readiness) = readiness {
            readiness.set(false);
        }
        info!("termination signal: no new connections; finishing messages and deliveries in flight");
        stop.cancel();
        if let Some(deliveries) = deliveries {
            deliveries.stop();
        }
    });
    let abandoned = server.run_until_stopped(SHUTDOWN_GRACE).await;
    // The server stopped (a signal, which stopped the engine too, or the shutdown token):
    // deliveries under way finish, within the same grace.
    if let Some(engine) = &engine {
        engine.stop();
        if !engine.wait(SHUTDOWN_GRACE).await {
            warn!("deliveries still under way at shutdown; they go out again at the next start");
        }
    }
    // Every connection has finished (or was abandoned): write what is queued, checkpoint,
    // close the database file (SQLite), or commit what is queued and close the pool.
    match opened {
        OpenedStore::Sqlite(sqlite) => {
            let _ = tokio::task::spawn_blocking(move || sqlite.close()).await;
        }
        OpenedStore::Postgres(pg) => pg.close().await,
    }
    if let Some(admin) = admin {
        admin.stop().await;
    }
    if let Some(file) = &options.ready_file {
        let _ = std::fs::remove_file(file);
    }
    info!(target: "audit", event = "stop", abandoned, "hl7d stopped");
    Ok(())
}

/// Writes `NAME ADDRESS` lines to `file` whole: aside, then renamed over it, so a reader
/// never sees half of it.
fn write_ready_file(file: &Path, addrs: &[(String, SocketAddr)]) -> std::io::Result<()> {
    let text: String = addrs.iter().map(|(name, addr)| format!("{name} {addr}\n")).collect();
    let mut aside = file.as_os_str().to_owned();
    aside.push(".tmp");
    crate::private_files::write(Path::new(&aside), text.as_bytes(), true)?;
    std::fs::rename(&aside, file)
}

/// Re-reads the configuration from `source` and applies it to the running server
/// ([`Reloader::reload`]: all or nothing): SIGHUP and the admin `POST /reload` both come
/// here. A configuration that no longer loads changes nothing, and the report's `error`
/// says why.
pub async fn reload(reloader: &Reloader, source: &ConfigSource) -> ReloadReport {
    reload_config(reloader, None, source, None).await
}

/// [`reload`], and the routes with it: SIGHUP and the admin `POST /reload` of `hl7d
/// serve` come here. All or nothing: every new or changed route's transport is built
/// before the listeners are touched, and the routes change only when the listeners'
/// reload applied (see [`Engine::prepare`], [`Engine::apply`]).
pub async fn reload_with_routes(reloader: &Reloader, engine: &Engine, source: &ConfigSource) -> ReloadReport {
    reload_config(reloader, Some(engine), source, None).await
}

/// The store `serve` opened.
enum OpenedStore {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

/// [`reload`] or [`reload_with_routes`]; when it applied, the new configuration goes into
/// `in_force` (the console's).
async fn reload_config(
    reloader: &Reloader,
    engine: Option<&Engine>,
    source: &ConfigSource,
    in_force: Option<&ArcSwap<Config>>,
) -> ReloadReport {
    // After logrotate moved the audit file away.
    crate::audit::reopen_files();
    // A small file: read in place, as the certificates are.
    match source.load() {
        Ok(config) => {
            for warning in &config.warnings {
                warn!("configuration: {warning}");
            }
            let prepared = match engine.map(|engine| engine.prepare(&config.routes)).transpose() {
                Ok(prepared) => prepared,
                Err(failures) => {
                    let why: Vec<String> =
                        failures.iter().map(|(route, why)| format!("route {route:?}: {why}")).collect();
                    let error = format!("nothing changed: {}", why.join("; "));
                    error!(target: "audit", event = "config_reload_failed", error = %error,
                        "reload refused; keeping the running configuration");
                    return ReloadReport::refused(error);
                }
            };
            let mut report = reloader.reload(&config).await;
            if let (true, Some(engine), Some(prepared)) = (report.is_ok(), engine, prepared) {
                report.routes = engine
                    .apply(prepared)
                    .into_iter()
                    .map(|(route, action)| (route, action.as_str()))
                    .collect();
            }
            if let (true, Some(in_force)) = (report.is_ok(), in_force) {
                in_force.store(Arc::new(config));
            }
            report
        }
        Err(e) => {
            let error = format!("the configuration does not load; nothing changed: {e:#}");
            error!(target: "audit", event = "config_reload_failed", error = %error,
                "reload refused; keeping the running configuration");
            ReloadReport::refused(error)
        }
    }
}

/// [`reload`], then, when it applied, the `--ready-file` written again: a reload may have
/// added, moved or removed listeners.
async fn reload_and_announce(
    reloader: &Reloader,
    engine: Option<&Engine>,
    source: &ConfigSource,
    ready_file: Option<&Path>,
    in_force: &ArcSwap<Config>,
) -> ReloadReport {
    let report = reload_config(reloader, engine, source, Some(in_force)).await;
    if let (true, Some(file)) = (report.is_ok(), ready_file) {
        if let Err(e) = write_ready_file(file, &reloader.local_addrs()) {
            error!(file = %file.display(), error = %e, "--ready-file: cannot write the reloaded listeners");
        }
    }
    report
}

#[cfg(unix)]
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    reloader: Reloader,
    engine: Option<Engine>,
    source: ConfigSource,
    ready_file: Option<PathBuf>,
    in_force: Arc<ArcSwap<Config>>,
) {
    while hangup.recv().await.is_some() {
        info!(target: "audit", event = "reload_requested", source = "SIGHUP", "SIGHUP: reloading the configuration");
        reload_and_announce(&reloader, engine.as_ref(), &source, ready_file.as_deref(), &in_force).await;
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
