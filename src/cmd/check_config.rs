//! `hl7d check-config`: parse and validate a configuration file without starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use hl7d::config::Config;

use super::EXIT_CONFIG;

/// `hl7d check-config` arguments.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Configuration file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// Runs `hl7d check-config`: prints the warnings and "ok", or the problems with exit code 78.
pub fn run(args: &CheckConfigArgs) -> ExitCode {
    let path = &args.config;
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}: ok ({} listener(s))", path.display(), config.listeners.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
