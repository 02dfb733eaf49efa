//! The admin HTTP endpoint (`[admin] listen`): `GET /live`, `GET /ready`, `GET /metrics`,
//! `POST /reload`.
//!
//! It starts before the store is opened and the listeners are bound, so that `/ready`
//! answers 503 while start-up is under way; `hl7d serve` flips the [`Readiness`] flag once
//! every listener is bound and the store is open, and back when shutdown begins (so a load
//! balancer stops sending before the listeners close).
//!
//! There is no authentication: the endpoint is meant for loopback or a management network
//! (the default address is 127.0.0.1:9275; `check-config` warns about any other). It never
//! shows message contents; `/reload` can only re-read the configuration file that the
//! process was started with. It must not do anything else: no listener or store logic here
//! (it renders the [`ReloadReport`] that the reload callback returns).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::listener::{ReloadReport, Reloader};
use crate::store::postgres::StoreHealth;

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the server is ready for traffic: every listener bound and the store open, and,
/// with the PostgreSQL store, its database reachable now. Cheap to clone; all clones share
/// one state.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    flag: Arc<AtomicBool>,
    store: Arc<OnceLock<StoreHealth>>,
}

impl Readiness {
    /// Sets the flag (`/ready` answers 200 while it is set and the store is up).
    pub fn set(&self, ready: bool) {
        self.flag.store(ready, Ordering::Release);
    }

    /// From now on `/ready` also needs `health` to be up (the PostgreSQL store's last batch
    /// or probe reached the database). Set once; later calls change nothing.
    pub fn watch_store(&self, health: StoreHealth) {
        let _ = self.store.set(health);
    }

    /// The flag, and the store's health when one is watched.
    pub fn is_ready(&self) -> bool {
        self.flag.load(Ordering::Acquire) && self.store.get().is_none_or(StoreHealth::is_up)
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

/// The running admin endpoint.
pub struct Admin {
    addr: SocketAddr,
    state: Arc<AdminState>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct AdminState {
    ready: Readiness,
    started: SystemTime,
    running: OnceLock<Running>,
}

impl Admin {
    /// Binds `listen` and starts serving; `/ready` answers 503 until [`Readiness::set`].
    /// Installs the metrics recorder if that has not happened yet.
    pub async fn start(listen: SocketAddr) -> std::io::Result<Admin> {
        crate::metrics::install();
        let socket = TcpListener::bind(listen).await?;
        let addr = socket.local_addr()?;
        let state = Arc::new(AdminState {
            ready: Readiness::default(),
            started: SystemTime::now(),
            running: OnceLock::new(),
        });
        let app = Router::new()
            .route("/live", get(live))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .route("/reload", post(reload))
            .with_state(state.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let upkeep = upkeep(stop.clone());
                let serve = axum::serve(socket, app).with_graceful_shutdown(stop.cancelled_owned());
                let (served, ()) = tokio::join!(serve, upkeep);
                if let Err(e) = served {
                    warn!(error = %e, "admin endpoint stopped");
                }
            }
        });
        info!(%addr, "admin endpoint: /live /ready /metrics /reload");
        Ok(Admin { addr, state, stop, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The readiness flag that `/ready` reports.
    pub fn readiness(&self) -> Readiness {
        self.state.ready.clone()
    }

    /// Hands over the started server. Only the first call counts.
    pub fn attach(&self, running: Running) {
        let _ = self.state.running.set(running);
    }

    /// Stops serving (requests under way finish) and waits for the task.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Folds histogram samples into their buckets every few seconds (bounded memory even when
/// nobody scrapes).
async fn upkeep(stop: CancellationToken) {
    let mut tick = tokio::time::interval(crate::metrics::UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => crate::metrics::run_upkeep(),
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

/// Same as SIGHUP: re-reads the configuration and applies it. 200 with a JSON report when
/// it applied; 500 with the report, whose `error` says why, when nothing changed (the
/// configuration does not load, a certificate cannot be used, a new port cannot be bound);
/// 503 before the listeners run.
async fn reload(State(state): State<Arc<AdminState>>) -> Response {
    let Some(running) = state.running.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not started\n").into_response();
    };
    info!(target: "audit", event = "reload_requested", source = "admin", "POST /reload: reloading the configuration");
    // Its own task: a client that hangs up does not stop a reload half-way.
    let report = match tokio::spawn((running.reload)()).await {
        Ok(report) => report,
        Err(e) => ReloadReport::refused(format!("the reload failed: {e}")),
    };
    let status = if report.is_ok() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    let body = report_json(&report);
    (status, [(header::CONTENT_TYPE, "application/json")], format!("{body}\n")).into_response()
}

fn report_json(report: &ReloadReport) -> serde_json::Value {
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
