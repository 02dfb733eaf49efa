//! `hl7d serve`: the configuration loaded and checked ([`hl7d::preflight`]) before anything
//! is created, then logging and the audit trail set up, then [`hl7d::serve::run`] until a
//! termination signal; or, with `--detach`, the same in a background process.
//!
//! Exit codes: 78 (EX_CONFIG) for every start-up failure that a restart would meet again (the
//! configuration does not load, names files that cannot be used, an address that cannot be
//! had for any reason but "in use"); 1 when an address is in use (something of the moment:
//! an hl7d still finishing its messages, another service) or anything else fails. A fatal
//! error is printed once: as `hl7d: …` before logging is set up, as one ERROR log line after.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use hl7d::audit::AuditTrail;
use hl7d::config;
use hl7d::preflight::{self, Problem};
use hl7d::serve::{ConfigSource, RunOptions};

use super::{unix_now, LogFormat, EXIT_CONFIG, EXIT_USAGE};

/// Longest wait at exit for the audit syslog collector to take the queued lines.
const AUDIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// How often `--detach` looks whether the server is ready.
const DETACH_POLL: Duration = Duration::from_millis(20);

/// `hl7d serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it, the embedded default is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address of the embedded default's listener instead of 0.0.0.0:2575, e.g.
    /// 127.0.0.1:2575 or 127.0.0.1:0 (any free port). Nothing is written to a file. Not with
    /// --config: there, edit the listener's `listen`.
    #[arg(long, value_name = "IP:PORT", conflicts_with = "config")]
    pub listen: Option<SocketAddr>,
    /// Start in the background and return once every listener listens (the embedded
    /// default's local CA is written by then). Prints the server's process id on stdout;
    /// its log still goes to this stderr. Exits with the server's code if it cannot start.
    #[arg(long, conflicts_with = "ready_file")]
    pub detach: bool,
    /// Once every listener listens, write FILE (mode 0600) with one `NAME IP:PORT` line per
    /// listener (the bound port, also for port 0); written again after each reload that
    /// applied; removed at stop.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

/// Runs `hl7d serve`; see the module documentation for the exit codes.
pub fn run(args: &ServeArgs, log_format: Option<LogFormat>) -> ExitCode {
    if args.detach {
        return detach();
    }
    if let Some(file) = &args.ready_file {
        let dir = file.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Err(e) = hl7d::private_files::can_create_in(dir) {
            eprintln!("hl7d: --ready-file {}: cannot create it in {}: {e}", file.display(), dir.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let source = match &args.config {
        Some(path) => ConfigSource::File(path.clone()),
        None => ConfigSource::Embedded { listen: args.listen },
    };
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hl7d: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Everything the configuration names, before anything is created.
    let options = preflight::Options { bind: true, local_tls: source.path().is_none(), now: unix_now() };
    let report = preflight::check(&config, &options);
    if !report.is_ok() {
        for problem in &report.problems {
            eprintln!("hl7d: {problem}");
        }
        return if report.problems.iter().all(Problem::is_address_in_use) {
            ExitCode::FAILURE
        } else {
            ExitCode::from(EXIT_CONFIG)
        };
    }
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
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    hl7d::logging::init_with_audit(log, audit.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = RunOptions { source, ready_file: args.ready_file.clone() };
    let result = runtime.block_on(hl7d::serve::run(config, &options));
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    // The audit file is written synchronously; syslog may still have lines queued.
    if let Some(audit) = &audit {
        audit.flush(AUDIT_FLUSH_LIMIT);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if hl7d::serve::is_address_in_use(&e) => ExitCode::FAILURE,
        // Every error `run` returns happened at start-up, before a connection was taken.
        Err(_) => ExitCode::from(EXIT_CONFIG),
    }
}

/// `serve --detach`: runs this same command line without `--detach` and with a
/// `--ready-file` in the temporary directory, in its own process group (a Ctrl-C meant for
/// the shell does not reach it), with stdin and stdout closed and stderr shared. Returns
/// once the ready file appears (printing the pid), or with the server's exit code.
fn detach() -> ExitCode {
    let ready = std::env::temp_dir().join(format!("hl7d-ready-{}-{}", std::process::id(), unix_nanos()));
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => {
            eprintln!("hl7d: --detach: cannot find this program: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut command = std::process::Command::new(program);
    command
        .args(std::env::args_os().skip(1).filter(|arg| arg != "--detach"))
        .arg("--ready-file")
        .arg(&ready)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("hl7d: --detach: cannot start the server: {e}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        match child.try_wait() {
            // It said why on the shared stderr.
            Ok(Some(status)) => {
                let _ = std::fs::remove_file(&ready);
                let code = status.code().and_then(|code| u8::try_from(code).ok()).unwrap_or(1);
                return ExitCode::from(code);
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("hl7d: --detach: cannot watch the server (pid {}): {e}", child.id());
                return ExitCode::FAILURE;
            }
        }
        if let Ok(addresses) = std::fs::read_to_string(&ready) {
            let _ = std::fs::remove_file(&ready);
            let pid = child.id();
            for line in addresses.lines() {
                eprintln!("hl7d: ready: {line}");
            }
            eprintln!("hl7d: running in the background as pid {pid}; stop it with: kill {pid}");
            println!("{pid}");
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(DETACH_POLL);
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}
