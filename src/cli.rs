//! Command-line interface: argument parsing only. Each subcommand's work lives in the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Serve(ConfigArgs),
    /// Validate a configuration file without starting anything.
    CheckConfig(RequiredConfigArgs),
    /// Send HL7 messages to an MLLP listener and check their ACKs.
    Send(hl7d::send_cmd::SendArgs),
    /// Certificate tools: thumbprint, inspect, dev-pki.
    Cert(hl7d::cert_cmd::CertArgs),
    /// List, show and export stored messages.
    Messages(MessagesArgs),
    /// Load generator for an MLLP listener.
    Bench(hl7d::bench_cmd::BenchArgs),
}

/// `--config` for commands that have an embedded default.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Without it, the embedded default is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `--config` for commands that need a file.
#[derive(Debug, Args)]
pub struct RequiredConfigArgs {
    /// Configuration file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// `hl7d messages`: read the message store (works while the server runs).
#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Configuration file (TOML) whose `[store] path` to read. Without it, the embedded
    /// default (`./hl7d-data`).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: MessagesCommand,
}

/// The `hl7d messages` subcommands.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List stored messages, newest first (at most 100 unless --limit says otherwise).
    List {
        /// Which messages.
        #[command(flatten)]
        filter: MessageFilterArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: its metadata, then its segments one per line, decoded from the
    /// character set it arrived in.
    Show {
        /// Message id (the first column of `list`).
        id: i64,
        /// Write exactly the bytes received, nothing else.
        #[arg(long)]
        raw: bool,
    },
    /// Write one `.hl7` file per message (the bytes exactly as received) into a directory.
    Export {
        /// Directory to write into (created if missing; files of the same name are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Which messages (all by default).
        #[command(flatten)]
        filter: MessageFilterArgs,
    },
}

/// Selection of stored messages.
#[derive(Debug, Args)]
pub struct MessageFilterArgs {
    /// Only messages received on this listener.
    #[arg(long)]
    pub listener: Option<String>,
    /// Only messages received since this time: RFC 3339 (`2026-11-28T09:00:00Z`), a date
    /// (`2026-11-28`, UTC), or an age (`90m`, `2h`, `7d`).
    #[arg(long, value_parser = hl7d::messages_cmd::parse_since)]
    pub since: Option<std::time::SystemTime>,
    /// Only messages with this MSH-10 control id.
    #[arg(long)]
    pub control_id: Option<String>,
    /// At most this many messages.
    #[arg(long)]
    pub limit: Option<u64>,
}

impl MessageFilterArgs {
    /// The store filter, with `default_limit` when `--limit` is not given.
    pub fn filter(&self, default_limit: Option<u64>) -> hl7d::store::Filter {
        hl7d::store::Filter {
            listener: self.listener.clone(),
            since: self.since,
            control_id: self.control_id.clone(),
            limit: self.limit.or(default_limit),
            oldest_first: false,
        }
    }
}
