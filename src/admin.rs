//! The admin HTTP endpoint (`[admin] listen`): `GET /live`, `GET /ready`, `GET /metrics`,
//! `POST /reload`, and the console behind its login.
//!
//! It starts before the store is opened and the listeners are bound, so that `/ready`
//! answers 503 while start-up is under way; `hl7d serve` flips the [`Readiness`] flag once
//! every listener is bound and the store is open, and back when shutdown begins (so a load
//! balancer stops sending before the listeners close).
//!
//! Every route but `/live`, `/ready` and (with `metrics_public`, the default) `/metrics`
//! is behind [`console::auth::layer`]: a session from `POST /login` or an API token, and a
//! role that allows the action (`POST /reload`: operator). The layer wraps the whole
//! router, fallback included, so a route added here is protected by default. Served over
//! TLS with `[admin.tls]`; on a non-loopback address without it the console and API answer
//! 403 (see [`AdminConfig::console_refused`]).
//!
//! It never shows message contents itself; `/reload` can only re-read the configuration
//! file that the process was started with. It must not do anything else: no listener or
//! store logic here (it renders the [`ReloadReport`] that the reload callback returns).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Extension, Router};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{AdminConfig, DEFAULT_CERT_EXPIRY_WARNING};
use crate::console;
use crate::console::auth::{self, AuthSettings, AuthState, Clock};
use crate::console::{Action, Credential, Principal};
use crate::listener::{ReloadReport, Reloader};
use crate::tls::{TlsConnection, TlsError, TlsListener};

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// TLS handshakes under way at once on the admin server; a connection beyond it is closed.
const MAX_PENDING_HANDSHAKES: usize = 64;
/// How often expired console sessions are swept (and their `session_expired` lines written).
const SESSION_SWEEP: Duration = Duration::from_secs(60);

/// The routes of the admin server besides the console's pages, as (method, path): every
/// one but those [`auth::is_public`] names needs credentials. For the documentation and the
/// tests, which check each of them (and paths that do not exist) without credentials.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/live"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/reload"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/session"),
];

/// Whether the server is ready for traffic: every listener bound and the store open.
/// Cheap to clone; all clones share one flag.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets the flag (`/ready` answers 200 while it is set).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// The flag.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Re-reads the configuration and applies what can change live; the report says what
/// changed, or why nothing did (see [`crate::serve::reload`]).
pub type ReloadFn = Arc<dyn Fn() -> ReloadFuture + Send + Sync>;

/// What a [`ReloadFn`] returns.
pub type ReloadFuture = Pin<Box<dyn Future<Output = ReloadReport> + Send>>;

/// What `/metrics` and `/reload` need from a started server; handed over by
/// [`Admin::attach`] once the listeners run.
pub struct Running {
    /// The listeners (certificate expiry gauges).
    pub reloader: Reloader,
    /// What `POST /reload` runs: the same as SIGHUP (`hl7d serve` passes its reload, which
    /// re-reads the file it was started with).
    pub reload: ReloadFn,
}

/// The admin server could not start.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The address cannot be bound.
    #[error("admin: cannot listen on {addr}: {source}")]
    Bind {
        /// `[admin] listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `[admin.tls]` cannot be used.
    #[error("admin: [admin.tls]: {0}")]
    Tls(#[from] TlsError),
}

/// The running admin endpoint.
pub struct Admin {
    addr: SocketAddr,
    state: Arc<AdminState>,
    auth: Arc<AuthState>,
    console: console::Slot,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct AdminState {
    ready: Readiness,
    started: SystemTime,
    running: OnceLock<Running>,
}

impl Admin {
    /// Binds `config.listen` and starts serving (over TLS with `[admin.tls]`); `/ready`
    /// answers 503 until [`Readiness::set`]. Installs the metrics recorder if that has not
    /// happened yet.
    pub async fn start(config: &AdminConfig) -> Result<Admin, AdminError> {
        Admin::start_with_clock(config, Clock::tokio()).await
    }

    /// [`Admin::start`] with the console's sessions and rate limits on `clock` (tests move
    /// a [`Clock::manual`] to expire sessions).
    pub async fn start_with_clock(config: &AdminConfig, clock: Clock) -> Result<Admin, AdminError> {
        crate::metrics::install();
        let tls = config
            .tls
            .as_ref()
            .map(|tls| TlsListener::load("admin", tls, DEFAULT_CERT_EXPIRY_WARNING).map(Arc::new))
            .transpose()?;
        let bind = |source| AdminError::Bind { addr: config.listen, source };
        let socket = TcpListener::bind(config.listen).await.map_err(bind)?;
        let addr = socket.local_addr().map_err(bind)?;
        let state = Arc::new(AdminState {
            ready: Readiness::default(),
            started: SystemTime::now(),
            running: OnceLock::new(),
        });
        let auth = AuthState::new(AuthSettings {
            users_file: config.users.clone(),
            metrics_public: config.metrics_public,
            idle: config.session_idle_timeout,
            lifetime: config.session_lifetime,
            tls: tls.is_some(),
            console_refused: config.console_refused(),
            clock,
        });
        // The console's pages and `/api/v1/`, inside the auth layer.
        let console = console::Slot::default();
        let app = router(state.clone(), auth.clone(), console::router(console.clone()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            let auth = auth.clone();
            async move {
                let upkeep = upkeep(stop.clone(), auth, tls.clone());
                let service = app.into_make_service_with_connect_info::<SocketAddr>();
                let shutdown = stop.clone().cancelled_owned();
                let serve = async move {
                    match tls {
                        None => axum::serve(socket, service).with_graceful_shutdown(shutdown).await,
                        Some(tls) => {
                            // `tap_io` gives the listener axum's `ConnectInfo<SocketAddr>`.
                            let incoming = TlsIncoming::start(socket, tls, stop.clone()).tap_io(|_| {});
                            axum::serve(incoming, service).with_graceful_shutdown(shutdown).await
                        }
                    }
                };
                let (served, ()) = tokio::join!(serve, upkeep);
                if let Err(e) = served {
                    warn!(error = %e, "admin endpoint stopped");
                }
            }
        });
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        info!(%addr, scheme, metrics_public = config.metrics_public, "admin endpoint: /live /ready /metrics /reload, console at /");
        if config.console_refused() {
            warn!(%addr, "admin: the console, the API and POST /reload answer 403: this address is reachable \
                from the network and [admin.tls] is not set");
        } else if auth.accounts().users.is_empty() {
            warn!(users_file = %config.users.display(),
                "the console has no users yet: add one with `hl7d users add NAME --role operator --config FILE`");
        }
        Ok(Admin { addr, state, auth, console, stop, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The readiness flag that `/ready` reports.
    pub fn readiness(&self) -> Readiness {
        self.state.ready.clone()
    }

    /// The console's security state (users, sessions, rate limits).
    pub fn auth(&self) -> Arc<AuthState> {
        self.auth.clone()
    }

    /// Hands over the started server. Only the first call counts.
    pub fn attach(&self, running: Running) {
        let _ = self.state.running.set(running);
    }

    /// Hands the console what it reads and acts on. Only the first call counts; until it,
    /// the console's routes answer 503.
    pub fn attach_console(&self, context: console::Context) {
        let _ = self.console.set(context);
    }

    /// Stops serving (requests under way finish) and waits for the task.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The whole admin server: the endpoints, the login routes and the console, all behind the
/// auth layer (which lets the public paths through), then the security headers.
///
/// `Router::layer` wraps the routes merged before it (and the fallback), so every route of
/// the server is merged here, before the layers, and nothing is merged into the result.
fn router(state: Arc<AdminState>, auth: Arc<AuthState>, console: Router) -> Router {
    let endpoints = Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/reload", post(reload))
        .with_state(state);
    Router::new()
        .merge(endpoints)
        .merge(auth::routes(auth.clone()))
        .merge(console)
        .layer(axum::middleware::from_fn_with_state(auth, auth::layer))
        .layer(axum::middleware::from_fn(auth::security_headers))
}

/// TLS connections for `axum::serve`: a task accepts TCP connections and runs each
/// handshake in a task of its own (at most [`MAX_PENDING_HANDSHAKES`] at once, each bounded
/// by `handshake_timeout`), so a slow client never holds up the next.
struct TlsIncoming {
    ready: mpsc::Receiver<(TlsConnection, SocketAddr)>,
    local: SocketAddr,
}

impl TlsIncoming {
    fn start(socket: TcpListener, tls: Arc<TlsListener>, stop: CancellationToken) -> TlsIncoming {
        // The bound socket has an address (`start` read it just before).
        let local = socket.local_addr().expect("a bound socket has an address");
        let (sender, ready) = mpsc::channel(MAX_PENDING_HANDSHAKES);
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = socket.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        warn!(error = %e, "admin: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    warn!(%peer, "admin: too many TLS handshakes under way; connection closed");
                    continue;
                };
                let (tls, sender, stop) = (tls.clone(), sender.clone(), stop.clone());
                tokio::spawn(async move {
                    match tls.accept(stream, peer, &stop).await {
                        Ok(accepted) => {
                            drop(permit);
                            let _ = sender.send((accepted.stream, peer)).await;
                        }
                        Err(refusal) => refusal.log("admin", peer, None),
                    }
                });
            }
        });
        TlsIncoming { ready, local }
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Folds histogram samples into their buckets every few seconds (bounded memory even when
/// nobody scrapes), ends expired console sessions every minute, and with `[admin.tls]`
/// checks its certificate's expiry once a day against the default `cert_expiry_warning`
/// (as the listeners' daily check does; start-up logs its own notice).
async fn upkeep(stop: CancellationToken, auth: Arc<AuthState>, tls: Option<Arc<TlsListener>>) {
    let mut tick = tokio::time::interval(crate::metrics::UPKEEP_INTERVAL);
    let mut sweep = tokio::time::interval(SESSION_SWEEP);
    let first_check = tokio::time::Instant::now() + crate::expiry::CHECK_INTERVAL;
    let mut expiry = tokio::time::interval_at(first_check, crate::expiry::CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => crate::metrics::run_upkeep(),
            _ = sweep.tick() => auth.sweep(),
            _ = expiry.tick() => {
                if let Some(tls) = &tls {
                    tls.check_expiry(crate::tls::unix_now(), DEFAULT_CERT_EXPIRY_WARNING);
                }
            }
        }
    }
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let certificates = state.running.get().map(|running| running.reloader.certificates()).unwrap_or_default();
    let body = crate::metrics::render(&certificates, state.started);
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], body).into_response()
}

/// Same as SIGHUP: re-reads the configuration and applies it. Operators only (403
/// otherwise). 200 with a JSON report when it applied; 500 with the report, whose `error`
/// says why, when nothing changed (the configuration does not load, a certificate cannot be
/// used, a new port cannot be bound); 503 before the listeners run.
async fn reload(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    if !principal.may(Action::Reload) {
        return auth::json_error(StatusCode::FORBIDDEN, "reload needs the operator role");
    }
    let Some(running) = state.running.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not started\n").into_response();
    };
    let credential = match &principal.credential {
        Credential::Session => "session",
        Credential::Token { .. } => "token",
    };
    info!(target: "audit", event = "reload_requested", source = "admin", user = %principal.user,
        addr = %principal.addr, credential, "POST /reload: reloading the configuration");
    // Its own task: a client that hangs up does not stop a reload half-way.
    let report = match tokio::spawn((running.reload)()).await {
        Ok(report) => report,
        Err(e) => ReloadReport::refused(format!("the reload failed: {e}")),
    };
    let status = if report.is_ok() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    let body = report_json(&report);
    (status, [(header::CONTENT_TYPE, "application/json")], format!("{body}\n")).into_response()
}

/// A reload report as JSON (`POST /reload`, the console's reload).
pub(crate) fn report_json(report: &ReloadReport) -> serde_json::Value {
    let reloaded: Vec<serde_json::Value> = report
        .reloaded
        .iter()
        .map(|(listener, outcome)| {
            serde_json::json!({
                "listener": listener,
                "server_thumbprint": outcome.server_thumbprint.to_string(),
                "approved_clients": outcome.approved_clients,
                "closed_connections": outcome.closed_connections,
            })
        })
        .collect();
    let failed: Vec<serde_json::Value> = report
        .failed
        .iter()
        .map(|(listener, error)| serde_json::json!({ "listener": listener, "error": error }))
        .collect();
    let listeners: Vec<serde_json::Value> = report
        .listeners
        .iter()
        .map(|change| {
            serde_json::json!({
                "listener": change.listener,
                "action": change.action.as_str(),
                "listen": change.listen.to_string(),
                "changed": change.changed,
                "closed_connections": change.closed_connections,
            })
        })
        .collect();
    let routes: Vec<serde_json::Value> = report
        .routes
        .iter()
        .map(|(route, action)| serde_json::json!({ "route": route, "action": action }))
        .collect();
    let mut body = serde_json::json!({
        "ok": report.is_ok(),
        "reloaded": reloaded,
        "failed": failed,
        "needs_restart": report.needs_restart,
        "listeners": listeners,
        "routes": routes,
    });
    if let Some(error) = &report.error {
        body["error"] = serde_json::Value::from(error.as_str());
    }
    body
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The console's router joins inside the auth layer: its routes answer 401 without
    /// credentials, like everything but the public paths.
    #[tokio::test]
    async fn console_routes_are_behind_the_layer() {
        let auth = AuthState::new(AuthSettings {
            users_file: "/nonexistent/users.toml".into(),
            metrics_public: true,
            idle: Duration::from_secs(60),
            lifetime: Duration::from_secs(600),
            tls: false,
            console_refused: false,
            clock: Clock::tokio(),
        });
        let state = Arc::new(AdminState {
            ready: Readiness::default(),
            started: SystemTime::now(),
            running: OnceLock::new(),
        });
        let console = Router::new().route("/api/v1/messages", get(|| async { "patient data" }));
        let app = router(state, auth, console);
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(socket, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(at).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let refused = get("/api/v1/messages").await;
        assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
        assert!(!refused.contains("patient data"));
        assert!(get("/live").await.starts_with("HTTP/1.1 200"));
    }
}
