//! Log output: human-readable lines or JSON, filtered by `RUST_LOG` or the `[log]` level;
//! and, when `[audit]` is configured, the audit trail as a second layer.
//!
//! Logs name peer, listener, message type, control id, size and ACK code — never segment
//! contents. Security events use the `audit` target; the audit layer (see [`crate::audit`])
//! has its own filter, so they reach the audit trail whatever the log level.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::audit::AuditTrail;
use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides the level.
pub fn init(log: LogConfig) {
    init_with_audit(log, None);
}

/// Like [`init`], and also writes `audit` events to `audit`'s sinks.
pub fn init_with_audit(log: LogConfig, audit: Option<&AuditTrail>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log.level.as_str()));
    let ansi = std::io::stderr().is_terminal();
    let output: Box<dyn Layer<Registry> + Send + Sync> = match log.format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter)
            .boxed(),
    };
    let audit = audit.map(AuditTrail::layer);
    // A second call (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry().with(output).with(audit).try_init();
}
