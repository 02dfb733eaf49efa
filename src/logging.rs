//! Log output: human-readable lines or JSON, filtered by `RUST_LOG` or the `[log]` level.
//!
//! Logs name peer, listener, message type, control id, size and ACK code — never segment
//! contents. Security events use the `audit` target so that they can be routed separately.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides the level.
pub fn init(log: LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second call (tests) keeps the first subscriber; that is fine.
    let _ = match log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
