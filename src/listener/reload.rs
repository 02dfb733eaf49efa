//! Reload of the whole server from a freshly loaded `Config`: every listener's settings,
//! TLS files and socket; listeners added and removed.
//!
//! Owns [`Reloader`] (the registry of live listeners, and what it takes to start one: the
//! store, the task trackers, the shutdown token) and the rules of a reload:
//! - whatever a new connection reads applies to the next connection: `allow_ips`, limits,
//!   timeouts, ACK policy, encodings, framing, duplicate window, TLS files and approvals,
//!   even TLS on or off; open connections keep the settings they started with, except
//!   that those from an address `allow_ips` no longer allows, and those whose client
//!   certificate is no longer approved, are closed (a message in flight is answered first);
//! - a new listener is bound and accepting when the reload returns; a removed one stops
//!   accepting, and its connections close once their message in flight is answered; a
//!   listener whose `listen` changed moves to its new socket, its connections stay;
//! - all or nothing: every certificate is read and every new socket bound before anything
//!   changes, so a reload either applies whole or changes nothing and says why;
//! - what cannot change in a running process (the store path, the admin endpoint, logging,
//!   the audit sinks, retention) is listed in [`ReloadReport::needs_restart`] and logged.
//!
//! It must not read the configuration file (its caller passes a loaded `Config`) nor serve
//! connections (`mod.rs`, `connection.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::live::LiveListener;
use super::{accept_loop, bind, Profile, ServeError};
use crate::config::{Config, ListenerConfig, Transport};
use crate::metrics::ListenerCertificates;
use crate::store::MessageStore;
use crate::tls::{PreparedTls, ReloadOutcome, TlsListener};

/// Longest wait, after a reload, for the accept loop of a removed or moved socket to let go
/// of its port (it only has to notice its stop token).
const ACCEPT_LOOP_STOP: Duration = Duration::from_secs(5);

/// The listeners of a running server, and the handle that reloads them (SIGHUP, `POST
/// /reload`) and reads their certificates (`/metrics`, the daily expiry check). Cheap to
/// clone; every clone is the same server.
#[derive(Clone)]
pub struct Reloader {
    /// Cancelled to stop the server; every listener's drain token is a child of it.
    pub(super) shutdown: CancellationToken,
    /// Every connection task, of every listener there ever was.
    pub(super) connections: TaskTracker,
    /// Every accept loop.
    pub(super) accept_loops: TaskTracker,
    state: Arc<State>,
}

struct State {
    store: Arc<dyn MessageStore>,
    /// The live listeners, in configuration order.
    listeners: Mutex<Vec<Arc<LiveListener>>>,
    /// The configuration the process started with: what `needs_restart` compares against.
    started: Config,
    /// `[log] cert_expiry_warning` as of the last reload.
    cert_expiry_warning: Mutex<Duration>,
    /// One reload at a time (SIGHUP and `POST /reload` may come together).
    reloading: tokio::sync::Mutex<()>,
}

/// One running listener at a glance (the console's dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerView {
    /// The listener's name.
    pub name: String,
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// MLLP over TLS.
    pub tls: bool,
    /// TLS with client certificates.
    pub mutual_tls: bool,
    /// Connections open now.
    pub open_connections: usize,
    /// notAfter of the server certificate presented (Unix seconds), under TLS.
    pub server_not_after: Option<i64>,
    /// `(SHA-256 thumbprint, notAfter)` of each approved client certificate seen since start.
    pub clients_seen: Vec<(String, i64)>,
}

/// What a reload did, or why it changed nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Why nothing changed: the configuration does not load, a certificate cannot be used
    /// or a new socket cannot be bound (then `failed` says which listener). `None` when the
    /// reload applied.
    pub error: Option<String>,
    /// TLS listeners whose certificate, key and approvals are now in force (re-read at
    /// every reload, also when the configuration did not change).
    pub reloaded: Vec<(String, ReloadOutcome)>,
    /// Listeners whose new settings could not be used, and why; with any, nothing changed.
    pub failed: Vec<(String, String)>,
    /// Changes that are not applied until a restart (also listed when the reload failed).
    pub needs_restart: Vec<String>,
    /// Every listener of the new configuration, then every removed one.
    pub listeners: Vec<ListenerChange>,
    /// Every route of the new configuration and every removed one, with what the reload
    /// did to it (`added`, `removed`, `updated`, `unchanged`); filled by the caller that
    /// also reloads the routes (`serve::reload_with_routes`).
    pub routes: Vec<(String, &'static str)>,
}

impl ReloadReport {
    /// The reload applied.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.failed.is_empty()
    }

    /// A reload refused before anything was tried (say, the configuration does not load).
    pub fn refused(error: impl Into<String>) -> ReloadReport {
        ReloadReport { error: Some(error.into()), ..ReloadReport::default() }
    }

    /// The entry of the listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerChange> {
        self.listeners.iter().find(|change| change.listener == name)
    }
}

/// What a reload did to one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerChange {
    /// Its name.
    pub listener: String,
    /// Added, removed, updated or unchanged.
    pub action: ListenerAction,
    /// The address it accepts on (a removed one: accepted on until this reload).
    pub listen: SocketAddr,
    /// The keys whose value changed (`allow_ips`, `max_connections`, `listen`, `tls`,
    /// `plaintext`, …), in the order of `docs/configuration.md`.
    pub changed: Vec<&'static str>,
    /// Open connections told to close: from addresses `allow_ips` no longer allows, or,
    /// for a removed listener, all of them (each once its message in flight is answered).
    pub closed_connections: usize,
}

/// What a reload did to one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerAction {
    /// New in the configuration: bound and accepting.
    Added,
    /// Gone from the configuration: no longer accepting, its connections drained.
    Removed,
    /// Some key changed: new connections take the new settings.
    Updated,
    /// No key changed (its TLS files were still re-read).
    Unchanged,
}

impl ListenerAction {
    /// As shown in the reload answer and the log: `added`, `removed`, `updated`,
    /// `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerAction::Added => "added",
            ListenerAction::Removed => "removed",
            ListenerAction::Updated => "updated",
            ListenerAction::Unchanged => "unchanged",
        }
    }
}

impl Reloader {
    /// Binds every listener of `config` (certificates first: a bad file fails before any
    /// port is bound) and starts accepting: a reload from nothing. The first failure is
    /// returned and nothing runs.
    pub(super) fn start(config: &Config, store: Arc<dyn MessageStore>) -> Result<Reloader, ServeError> {
        let reloader = Reloader {
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            accept_loops: TaskTracker::new(),
            state: Arc::new(State {
                store,
                listeners: Mutex::default(),
                started: config.clone(),
                cert_expiry_warning: Mutex::new(config.log.cert_expiry_warning),
                reloading: tokio::sync::Mutex::new(()),
            }),
        };
        let plan = reloader.prepare(config).map_err(|mut failures| failures.swap_remove(0))?;
        // No accept loop to wait for: there was none before.
        let _ = reloader.commit(plan);
        Ok(reloader)
    }

    /// Applies `config` to the running server, all or nothing (see the module comment),
    /// and logs the outcome (`audit`: `config_reloaded` or `config_reload_failed`, one line
    /// per listener added, removed or updated, per TLS listener reloaded). When it returns,
    /// new listeners accept and removed or moved sockets are closed.
    pub async fn reload(&self, config: &Config) -> ReloadReport {
        let _one_at_a_time = self.state.reloading.lock().await;
        if self.shutdown.is_cancelled() {
            let report = ReloadReport::refused("the server is shutting down; nothing changed");
            log_outcome(&report);
            return report;
        }
        let needs_restart = self.needs_restart(config);
        let report = match self.prepare(config) {
            Err(failures) => {
                for failure in &failures {
                    log_failure(failure);
                }
                let why: Vec<String> = failures.iter().map(ToString::to_string).collect();
                ReloadReport {
                    error: Some(format!("nothing changed: {}", why.join("; "))),
                    failed: failures.iter().map(|f| (f.listener().to_owned(), f.detail())).collect(),
                    needs_restart,
                    ..ReloadReport::default()
                }
            }
            Ok(plan) => {
                let (mut report, stopped) = self.commit(plan);
                report.needs_restart = needs_restart;
                for accept_loop in stopped {
                    let _ = tokio::time::timeout(ACCEPT_LOOP_STOP, accept_loop).await;
                }
                report
            }
        };
        log_outcome(&report);
        report
    }

    /// Every TLS listener now running, in configuration order.
    pub fn tls_listeners(&self) -> Vec<Arc<TlsListener>> {
        self.listeners().iter().filter_map(|live| live.tls()).collect()
    }

    /// The certificate facts of every TLS listener, for the expiry gauges of `/metrics`.
    pub fn certificates(&self) -> Vec<ListenerCertificates> {
        self.tls_listeners()
            .iter()
            .map(|listener| ListenerCertificates {
                listener: listener.name().to_owned(),
                server_not_after: listener.server_certificate().not_after,
                clients_seen: listener
                    .approved_clients_seen()
                    .into_iter()
                    .map(|client| (client.digests.sha256().to_string(), client.not_after))
                    .collect(),
                approved: listener.approved_count(),
            })
            .collect()
    }

    /// Each running listener as the console's dashboard shows it, in configuration order.
    pub fn listener_views(&self) -> Vec<ListenerView> {
        self.listeners()
            .iter()
            .map(|live| {
                let tls = live.tls();
                ListenerView {
                    name: live.name().to_string(),
                    addr: live.local_addr(),
                    tls: tls.is_some(),
                    mutual_tls: tls.as_ref().is_some_and(|tls| tls.is_mutual()),
                    open_connections: live.open_connections(),
                    server_not_after: tls.as_ref().map(|tls| tls.server_certificate().not_after),
                    clients_seen: tls
                        .as_ref()
                        .map(|tls| {
                            tls.approved_clients_seen()
                                .into_iter()
                                .map(|client| (client.digests.sha256().to_string(), client.not_after))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Logs the expiry notices of every TLS listener (see [`TlsListener::check_expiry`]);
    /// returns how many were logged.
    pub fn check_expiry(&self, now: i64, warn_within: Duration) -> usize {
        self.tls_listeners().iter().map(|listener| listener.check_expiry(now, warn_within)).sum()
    }

    /// `[log] cert_expiry_warning` as of the last reload (the daily check reads it).
    pub fn cert_expiry_warning(&self) -> Duration {
        *lock(&self.state.cert_expiry_warning)
    }

    /// The bound address of each listener, in configuration order.
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners().iter().map(|live| (live.name().to_string(), live.local_addr())).collect()
    }

    /// The bound address of the named listener.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners().iter().find(|live| &**live.name() == name).map(|live| live.local_addr())
    }

    fn listeners(&self) -> Vec<Arc<LiveListener>> {
        lock(&self.state.listeners).clone()
    }

    /// Everything that can fail, with no visible change: every TLS listener's files read
    /// and checked, then the socket of every new or moved listener bound. Every failure is
    /// returned (the sockets are not tried when a certificate failed).
    fn prepare(&self, config: &Config) -> Result<Plan, Vec<ServeError>> {
        let running = self.listeners();
        let find = |name: &str| running.iter().find(|live| &**live.name() == name).cloned();
        let mut failures = Vec::new();
        let mut tls_plans = Vec::new();
        for listener in &config.listeners {
            let current = find(&listener.name).and_then(|live| live.tls());
            let plan = match (listener.tls(), current) {
                (None, None) => Ok(TlsPlan::Plaintext),
                (None, Some(_)) => Ok(TlsPlan::Off),
                (Some(settings), Some(tls)) => {
                    tls.prepare(settings).map(|prepared| TlsPlan::Reload(tls, Box::new(prepared)))
                }
                (Some(settings), None) => {
                    TlsListener::prepare_new(&listener.name, settings).map(|tls| TlsPlan::New(Arc::new(tls)))
                }
            };
            match plan {
                Ok(plan) => tls_plans.push(plan),
                Err(error) => failures.push(ServeError::Tls { listener: listener.name.clone(), error }),
            }
        }
        if !failures.is_empty() {
            return Err(failures);
        }
        let mut planned = Vec::new();
        for (listener, tls) in config.listeners.iter().zip(tls_plans) {
            let live = find(&listener.name);
            let moves = live.as_ref().is_none_or(|live| live.profile().config.listen != listener.listen);
            let socket = if moves {
                match bind_for_reload(listener, &running) {
                    Ok(socket) => Some(socket),
                    Err(error) => {
                        failures.push(error);
                        continue;
                    }
                }
            } else {
                None
            };
            planned.push(Planned { config: listener.clone(), live, tls, socket });
        }
        if !failures.is_empty() {
            return Err(failures);
        }
        let removed = running.iter().filter(|live| config.listener(live.name()).is_none()).cloned().collect();
        Ok(Plan { listeners: planned, removed, cert_expiry_warning: config.log.cert_expiry_warning })
    }

    /// Puts a prepared plan in force; cannot fail. Returns the report (without
    /// `needs_restart`) and the accept loops of the sockets it stopped.
    fn commit(&self, plan: Plan) -> (ReloadReport, Vec<JoinHandle<()>>) {
        let warning = plan.cert_expiry_warning;
        *lock(&self.state.cert_expiry_warning) = warning;
        let mut report = ReloadReport::default();
        let mut stopped = Vec::new();
        let mut listeners = Vec::new();
        for Planned { config, live, tls, socket } in plan.listeners {
            let name = config.name.clone();
            let tls = match tls {
                TlsPlan::Plaintext => None,
                TlsPlan::Off => {
                    if let Some(live) = &live {
                        live.set_tls(None);
                    }
                    None
                }
                TlsPlan::Reload(tls, prepared) => {
                    report.reloaded.push((name.clone(), tls.apply(*prepared, warning)));
                    Some(tls)
                }
                TlsPlan::New(tls) => {
                    tls.check_expiry(crate::tls::unix_now(), warning);
                    report.reloaded.push((name.clone(), tls.outcome()));
                    if let Some(live) = &live {
                        live.set_tls(Some(tls.clone()));
                    }
                    Some(tls)
                }
            };
            let change = match live {
                Some(live) => {
                    let changed = changed_keys(&live.profile().config, &config);
                    let (action, closed_connections) = if changed.is_empty() {
                        (ListenerAction::Unchanged, 0)
                    } else {
                        (ListenerAction::Updated, live.update(live.profile().with_config(config)))
                    };
                    if let Some(socket) = socket {
                        stopped.extend(self.listen(&live, socket));
                    }
                    let listen = live.local_addr();
                    listeners.push(live);
                    ListenerChange { listener: name, action, listen, changed, closed_connections }
                }
                None => {
                    let socket = socket.expect("prepare binds a socket for every new listener");
                    let drain = self.shutdown.child_token();
                    let live = Arc::new(LiveListener::new(Profile::new(config), tls, socket.1, drain));
                    self.connections.spawn(live.refusals().sweep_until(live.drained()));
                    self.listen(&live, socket);
                    let listen = live.local_addr();
                    listeners.push(live);
                    let action = ListenerAction::Added;
                    ListenerChange {
                        listener: name,
                        action,
                        listen,
                        changed: Vec::new(),
                        closed_connections: 0,
                    }
                }
            };
            report.listeners.push(change);
        }
        for live in plan.removed {
            let (open, accept_loop) = live.drain();
            stopped.extend(accept_loop);
            report.listeners.push(ListenerChange {
                listener: live.name().to_string(),
                action: ListenerAction::Removed,
                listen: live.local_addr(),
                changed: Vec::new(),
                closed_connections: open,
            });
        }
        *lock(&self.state.listeners) = listeners;
        (report, stopped)
    }

    /// Starts accepting on `socket` for `live`; returns the accept loop of the socket it
    /// replaces, if any.
    fn listen(
        &self,
        live: &Arc<LiveListener>,
        (socket, addr): (TcpListener, SocketAddr),
    ) -> Option<JoinHandle<()>> {
        let (stop, previous) = live.rebind(addr);
        let store = self.state.store.clone();
        let task =
            self.accept_loops.spawn(accept_loop(socket, live.clone(), store, stop, self.connections.clone()));
        live.listen(task);
        previous
    }

    /// What `config` changes that this process cannot apply until a restart.
    fn needs_restart(&self, config: &Config) -> Vec<String> {
        let started = &self.state.started;
        let mut notes = Vec::new();
        if config.store.path != started.store.path {
            notes.push(format!(
                "[store] path: messages are still stored in {} (the new path {} takes a restart)",
                started.store.path.display(),
                config.store.path.display()
            ));
        }
        if config.store.retention != started.store.retention {
            notes.push("[store] retention: the store applies the retention it was opened with".to_owned());
        }
        match (&started.admin, &config.admin) {
            (Some(old), Some(new)) if old.listen != new.listen => notes.push(format!(
                "[admin] listen: the admin endpoint stays on {} (it answers this reload)",
                old.listen
            )),
            (Some(old), Some(new)) if old != new => notes.push(
                "[admin]: the console's users file, sessions, metrics_public and [admin.tls] keep \
                 their start-up settings"
                    .to_owned(),
            ),
            (None, Some(new)) => notes.push(format!("[admin] added: the endpoint on {} starts", new.listen)),
            (Some(old), None) => notes.push(format!("[admin] removed: the endpoint on {} stops", old.listen)),
            _ => {}
        }
        if config.log.format != started.log.format {
            notes.push("[log] format".to_owned());
        }
        if config.log.level != started.log.level {
            notes.push("[log] level".to_owned());
        }
        if config.audit != started.audit {
            notes.push("[audit]: the audit trail keeps the file and collector it started with".to_owned());
        }
        notes
    }
}

/// Everything a reload will change, checked and bound.
struct Plan {
    /// In the new configuration's order.
    listeners: Vec<Planned>,
    removed: Vec<Arc<LiveListener>>,
    cert_expiry_warning: Duration,
}

struct Planned {
    config: ListenerConfig,
    /// `None` for a new listener.
    live: Option<Arc<LiveListener>>,
    tls: TlsPlan,
    /// Bound for a new listener and for one whose `listen` changed.
    socket: Option<(TcpListener, SocketAddr)>,
}

enum TlsPlan {
    /// Plaintext before and after.
    Plaintext,
    /// TLS switched off: plaintext for new connections.
    Off,
    /// New files for a running TLS listener.
    Reload(Arc<TlsListener>, Box<PreparedTls>),
    /// TLS for a new listener, or switched on for a plaintext one.
    New(Arc<TlsListener>),
}

/// Binds `listener`'s new socket and reads its address. A port held by a running listener
/// (moving from `0.0.0.0:2575` to `10.0.0.5:2575`, or swapping ports) says so.
fn bind_for_reload(
    listener: &ListenerConfig,
    running: &[Arc<LiveListener>],
) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bound = bind(listener.listen).and_then(|socket| {
        let addr = socket.local_addr()?;
        Ok((socket, addr))
    });
    bound.map_err(|error| {
        let holder = running
            .iter()
            .find(|live| listener.listen.port() != 0 && live.local_addr().port() == listener.listen.port());
        let error = match (error.kind(), holder) {
            (std::io::ErrorKind::AddrInUse, Some(holder)) => std::io::Error::new(
                error.kind(),
                format!(
                    "{error}; listener {:?} holds port {} until this reload applies: \
                     free the port in one reload and take it in the next, or restart",
                    &**holder.name(),
                    listener.listen.port()
                ),
            ),
            _ => error,
        };
        ServeError::Bind { listener: listener.name.clone(), addr: listener.listen, error }
    })
}

/// The keys whose value differs, by their name in the file.
fn changed_keys(old: &ListenerConfig, new: &ListenerConfig) -> Vec<&'static str> {
    // Taken apart field by field, so that a key added to `ListenerConfig` cannot be left
    // out here: it would not compile.
    let ListenerConfig {
        name: _,
        listen,
        transport,
        ack,
        encoding,
        force_encoding,
        idle_timeout,
        frame_timeout,
        write_timeout,
        max_message_size,
        max_connections,
        max_connections_per_ip,
        max_pending,
        allow_ips,
        proxy,
        framing,
        lenient_framing,
        duplicate_window,
    } = new;
    let (proxy_on, proxy_from) = match (&old.proxy, proxy) {
        (None, None) => (false, false),
        (Some(old), Some(new)) => (false, old != new),
        _ => (true, false),
    };
    let transport_key = match (&old.transport, transport) {
        (Transport::Plaintext, Transport::Plaintext) => None,
        (Transport::Tls(old), Transport::Tls(new)) => (old != new).then_some("tls"),
        _ => Some("plaintext"),
    };
    [
        (old.listen != *listen).then_some("listen"),
        transport_key,
        (old.ack != *ack).then_some("ack"),
        (old.encoding != *encoding).then_some("encoding"),
        (old.force_encoding != *force_encoding).then_some("force_encoding"),
        (old.idle_timeout != *idle_timeout).then_some("idle_timeout"),
        (old.frame_timeout != *frame_timeout).then_some("frame_timeout"),
        (old.write_timeout != *write_timeout).then_some("write_timeout"),
        (old.max_message_size != *max_message_size).then_some("max_message_size"),
        (old.max_connections != *max_connections).then_some("max_connections"),
        (old.max_connections_per_ip != *max_connections_per_ip).then_some("max_connections_per_ip"),
        (old.max_pending != *max_pending).then_some("max_pending"),
        (old.allow_ips != *allow_ips).then_some("allow_ips"),
        proxy_on.then_some("proxy_protocol"),
        proxy_from.then_some("proxy_from"),
        (old.framing != *framing).then_some("framing"),
        (old.lenient_framing != *lenient_framing).then_some("lenient_framing"),
        (old.duplicate_window != *duplicate_window).then_some("duplicate_window"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The audit line of one listener that stops a reload.
fn log_failure(failure: &ServeError) {
    let listener = failure.listener();
    let error = failure.detail();
    match failure {
        ServeError::Tls { .. } => error!(target: "audit", event = "tls_reload_failed", listener, error,
            "TLS reload failed; keeping the previous certificate, key and approvals (nothing changed)"),
        ServeError::Bind { .. } => error!(target: "audit", event = "listener_bind_failed", listener, error,
            "reload: cannot listen on the new address; nothing changed"),
    }
}

/// The audit and log lines of one reload.
fn log_outcome(report: &ReloadReport) {
    if let Some(error) = &report.error {
        error!(target: "audit", event = "config_reload_failed", error = %error,
            "reload refused; keeping the running configuration");
        return;
    }
    for (listener, outcome) in &report.reloaded {
        info!(target: "audit", event = "tls_reloaded", listener, server_thumbprint = %outcome.server_thumbprint,
            approved_clients = outcome.approved_clients, closed_connections = outcome.closed_connections,
            "TLS configuration reloaded");
    }
    for change in &report.listeners {
        let ListenerChange { listener, action, listen, changed, closed_connections } = change;
        let changed = changed.join(",");
        match action {
            ListenerAction::Added => {
                info!(target: "audit", event = "listener_added", listener, addr = %listen, "listener added");
                log_listening(report, listener, *listen);
            }
            ListenerAction::Removed => {
                info!(target: "audit", event = "listener_removed", listener, addr = %listen, closed_connections,
                    "listener removed: no longer accepting; open connections close after their message in flight");
            }
            ListenerAction::Updated => {
                info!(target: "audit", event = "listener_updated", listener, addr = %listen, changed, closed_connections,
                    "listener settings changed for new connections");
                if change.changed.contains(&"listen") {
                    log_listening(report, listener, *listen);
                }
            }
            ListenerAction::Unchanged => {}
        }
    }
    for note in &report.needs_restart {
        warn!("reload: {note}; restart hl7d to apply");
    }
    let count = |action| report.listeners.iter().filter(|change| change.action == action).count();
    info!(target: "audit", event = "config_reloaded", reloaded = report.reloaded.len(), failed = report.failed.len(),
        needs_restart = report.needs_restart.len(), added = count(ListenerAction::Added),
        removed = count(ListenerAction::Removed), updated = count(ListenerAction::Updated), "configuration reloaded");
}

/// The line `hl7d serve` logs for each listener at start, for one that a reload added or
/// moved.
fn log_listening(report: &ReloadReport, listener: &str, addr: SocketAddr) {
    let tls = report.reloaded.iter().any(|(name, _)| name == listener);
    let transport = if tls { "MLLP over TLS" } else { "plaintext MLLP" };
    info!(listener = %listener, %addr, transport, "listening");
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update under these locks is one assignment: a panic cannot leave one half-done.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::ProxyProtocol;

    #[test]
    fn changed_keys_name_every_key_that_differs() {
        let old = ListenerConfig::plaintext("lab", "127.0.0.1:2575".parse().unwrap());
        assert!(changed_keys(&old, &old).is_empty());
        let mut new = old.clone();
        new.allow_ips = vec!["10.0.0.0/8".parse().unwrap()];
        new.max_connections = 5;
        new.listen = "127.0.0.1:2576".parse().unwrap();
        assert_eq!(changed_keys(&old, &new), ["listen", "max_connections", "allow_ips"]);

        let proxied = |from: &str| ListenerConfig {
            proxy: Some(ProxyProtocol { from: vec![from.parse().unwrap()] }),
            ..old.clone()
        };
        assert_eq!(changed_keys(&old, &proxied("10.0.0.5/32")), ["proxy_protocol"]);
        assert_eq!(changed_keys(&proxied("10.0.0.5/32"), &old), ["proxy_protocol"]);
        assert_eq!(changed_keys(&proxied("10.0.0.5/32"), &proxied("10.0.0.6/32")), ["proxy_from"]);
        assert!(changed_keys(&proxied("10.0.0.5/32"), &proxied("10.0.0.5/32")).is_empty());
    }
}
