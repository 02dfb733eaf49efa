//! The command line: one file per subcommand, each holding its clap arguments and turning
//! them into calls of the `hl7d` library, then the results into output and an exit code.
//!
//! This module lives in the binary crate, not in the library: the library cannot import it,
//! so clap stays out of the server's code by construction. Nothing here decides how a
//! message is received, stored or answered; that is the library's.

pub mod bench;
pub mod cert;
pub mod check_config;
pub mod messages;
pub mod operator;
pub mod routes;
pub mod send;
pub mod serve;
pub mod store;
pub mod tokens;
pub mod users;

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for a bad configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for a usage error: bad arguments, unreadable input (sysexits EX_USAGE). Not
/// clap's own 2, which `send` and `bench` use for "delivery failed".
pub const EXIT_USAGE: u8 = 64;

/// Parses the command line. On a usage error clap's message goes to stderr and the exit
/// code is [`EXIT_USAGE`]; `--help` and `--version` print to stdout and exit 0.
pub fn parse_args() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|error| {
        // Printing can only fail when stdout/stderr is gone; the exit code still tells.
        let _ = error.print();
        if error.use_stderr() {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// hl7d — a secure HL7 v2 listener (MLLP over TLS 1.2/1.3, mutual TLS, durable store, ACKs).
#[derive(Debug, Parser)]
#[command(name = "hl7d", version, about, long_about = None)]
pub struct Cli {
    /// Log output format (overrides `[log] format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the listener (without --config: the embedded default profile).
    Serve(serve::ServeArgs),
    /// Validate a configuration file without starting anything.
    CheckConfig(check_config::CheckConfigArgs),
    /// Send HL7 messages to an MLLP listener and check their ACKs.
    Send(send::SendArgs),
    /// Certificate tools: thumbprint, inspect, dev-pki.
    Cert(cert::CertArgs),
    /// List, show, export, purge and resend stored messages.
    Messages(messages::MessagesArgs),
    /// Load generator for an MLLP listener.
    Bench(bench::BenchArgs),
    /// Back up and check the message store: backup, verify.
    Store(store::StoreArgs),
    /// The delivery queue of each route: status, parked, retry, skip, backfill.
    Routes(routes::RoutesArgs),
    /// Console users: add, passwd, remove, list.
    Users(users::UsersArgs),
    /// API tokens for scripts: create, list, revoke.
    Tokens(tokens::TokensArgs),
}

/// Why a store command (`hl7d messages`, `hl7d routes`) failed: the operator's request
/// (exit [`EXIT_USAGE`]), or anything else (exit 1).
pub enum Failure {
    /// A usage error, e.g. a name that is not a listener or a route; the message names the
    /// known ones.
    Usage(String),
    /// The store could not be read or written, or the request could not be carried out.
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::Other(error.into())
    }
}

/// The exit code of a store command's `result`, after printing its error to stderr after
/// `name` (`hl7d messages: …`).
pub fn exit_code(name: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("{name}: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        // `hl7d messages list | head`: the reader left; not an error.
        Err(Failure::Other(e))
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(Failure::Other(e)) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Now, in seconds since the Unix epoch (certificate validity and expiry).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A Unix time as RFC 3339 in UTC (`2026-01-31T12:00:00Z`), for JSON output; out-of-range
/// values as seconds.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}
