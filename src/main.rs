//! hl7d binary: parses arguments and dispatches; the work is in the `hl7d` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use hl7d::config::{self, Config};

use cli::{Cli, Command, LogFormat};

/// Exit code for a bad configuration (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Longest wait at exit for the audit syslog collector to take the queued lines.
const AUDIT_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args.config.as_deref(), cli.log_format),
        Command::CheckConfig(args) => check_config(&args.config),
        Command::Send(args) => {
            hl7d::logging::init(config::LogConfig { level: config::LogLevel::Warn, ..Default::default() });
            hl7d::send_cmd::run(args)
        }
        Command::Cert(args) => hl7d::cert_cmd::run(args),
        Command::Messages(args) => messages(args),
        Command::Bench(args) => {
            hl7d::logging::init(config::LogConfig { level: config::LogLevel::Warn, ..Default::default() });
            hl7d::bench_cmd::run(args)
        }
    }
}

fn serve(path: Option<&std::path::Path>, log_format: Option<LogFormat>) -> ExitCode {
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
    let audit = match config.audit.as_ref().map(hl7d::audit::AuditTrail::open).transpose() {
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

fn check_config(path: &std::path::Path) -> ExitCode {
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

/// `hl7d messages`: list, show or export from the store named by the configuration.
fn messages(args: cli::MessagesArgs) -> ExitCode {
    use cli::MessagesCommand;
    let config = match hl7d::serve::load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hl7d: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let store = &config.store.path;
    let stdout = &mut std::io::stdout().lock();
    let result = match args.command {
        MessagesCommand::List { filter, json } => {
            hl7d::messages_cmd::list(store, &filter.filter(Some(100)), json, stdout)
        }
        MessagesCommand::Show { id, raw } => hl7d::messages_cmd::show(store, id, raw, stdout),
        MessagesCommand::Export { out, filter } => {
            hl7d::messages_cmd::export(store, &filter.filter(None), &out)
                .map(|n| eprintln!("exported {n} message(s) to {}", out.display()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `hl7d messages list | head`: the reader left; not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hl7d messages: {e:#}");
            ExitCode::FAILURE
        }
    }
}
