//! `hl7d serve`: load the configuration, start every listener, run until SIGTERM/Ctrl-C.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use crate::config::{Config, Transport};
use crate::listener::Server;
use crate::store::{AcceptAfterParse, MessageStore};

/// Upper bound on how long shutdown waits for messages in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Loads the config file, or the embedded default when `path` is `None`.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(path).with_context(|| format!("configuration {}", path.display())),
        None => Ok(Config::embedded_default()),
    }
}

/// Runs the server until a termination signal, then shuts down gracefully.
pub async fn run(config: Config, embedded: bool) -> anyhow::Result<()> {
    for warning in &config.warnings {
        warn!("configuration: {warning}");
    }
    let store: Arc<dyn MessageStore> = Arc::new(AcceptAfterParse::default());
    warn!("no durable store yet: messages are acknowledged once parsed and are not kept (issue #5)");
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
            eprintln!("  send a message:  printf '\\x0bMSH|^~\\\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\\r\\x1c\\r' | nc {} {}", addr.ip(), addr.port());
        }
    }
    let stop = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("termination signal: no new connections; finishing messages in flight");
        stop.cancel();
    });
    let abandoned = server.run_until_stopped(SHUTDOWN_GRACE).await;
    info!(abandoned, "stopped");
    Ok(())
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
