//! `hl7d serve`: the configuration, logging and audit trail set up, then
//! [`hl7d::serve::run`] until a termination signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use hl7d::audit::AuditTrail;
use hl7d::config;

use super::{LogFormat, EXIT_CONFIG};

/// Longest wait at exit for the audit syslog collector to take the queued lines.
const AUDIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// `hl7d serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it, the embedded default is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Runs `hl7d serve`: exit code 78 for a configuration that does not load, 1 for any other
/// failure.
pub fn run(args: &ServeArgs, log_format: Option<LogFormat>) -> ExitCode {
    let path: Option<&Path> = args.config.as_deref();
    let config = match hl7d::serve::load_config(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hl7d: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut log = config.log;
    if let Some(format) = log_format {
        log.format = match format {
            LogFormat::Human => config::LogFormat::Human,
            LogFormat::Json => config::LogFormat::Json,
        };
    }
    let audit = match config.audit.as_ref().map(AuditTrail::open).transpose() {
        Ok(audit) => audit,
        Err(e) => {
            eprintln!("hl7d: {e}");
            return ExitCode::FAILURE;
        }
    };
    hl7d::logging::init_with_audit(log, audit.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hl7d: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(hl7d::serve::run(config, path));
    if let Err(e) = &result {
        tracing::error!("{e:#}");
        eprintln!("hl7d: {e:#}");
    }
    // The audit file is written synchronously; syslog may still have lines queued.
    if let Some(audit) = &audit {
        audit.flush(AUDIT_FLUSH_LIMIT);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
