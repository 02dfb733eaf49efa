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
    Send(PassThrough),
    /// Certificate tools: thumbprint, inspect, dev-pki.
    Cert(PassThrough),
    /// List, show and export stored messages.
    Messages(PassThrough),
    /// Load generator for an MLLP listener.
    Bench(PassThrough),
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

/// Arguments of subcommands that are not built yet; kept so that `--help` lists them.
#[derive(Debug, Args)]
pub struct PassThrough {
    /// Arguments (not yet interpreted).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}
