//! `hl7d check-config`: load a configuration file and make every check `serve` makes before
//! it creates anything ([`hl7d::preflight`]): certificates, keys and CAs read and matched,
//! store and audit paths creatable and writable; with `--bind`, the addresses free. Nothing
//! is started, created or changed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use hl7d::config::{Config, ConfigError, StoreConfig};
use hl7d::preflight::{self, Report};

use serde_json::{json, Value};

use super::{rfc3339, unix_now, EXIT_CONFIG};

/// `hl7d check-config` arguments.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Configuration file (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Also bind every listener and admin address and release it at once: fails while
    /// another process (a running hl7d too) holds one.
    #[arg(long)]
    pub bind: bool,
    /// One JSON object on stdout: {"ok":…,"listeners":[…],"routes":[…],"store":{…},"warnings":[…],"errors":[…]}.
    #[arg(long)]
    pub json: bool,
}

/// Runs `hl7d check-config`: prints the warnings and "ok", or the problems with exit code 78.
pub fn run(args: &CheckConfigArgs) -> ExitCode {
    let path = &args.config;
    let outcome = Config::load(path).map(|config| {
        let options = preflight::Options { bind: args.bind, local_tls: false, now: unix_now() };
        preflight::check(&config, &options)
    });
    let ok = matches!(&outcome, Ok(report) if report.is_ok());
    if args.json {
        println!("{}", to_json(&outcome));
    } else {
        print_human(path, &outcome);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

fn print_human(path: &Path, outcome: &Result<Report, ConfigError>) {
    match outcome {
        Ok(report) => {
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            if report.is_ok() {
                let routes = match report.routes.len() {
                    0 => String::new(),
                    n => format!(", {n} route(s)"),
                };
                println!("{}: ok ({} listener(s){routes})", path.display(), report.listeners.len());
                println!("  store: {}", store_line(&report.store));
                for route in &report.routes {
                    println!(
                        "  route {}: {} (order {}, in_flight {})",
                        route.name, route.to, route.order, route.in_flight
                    );
                }
            }
            for problem in &report.problems {
                eprintln!("{}: {problem}", path.display());
            }
        }
        Err(e) => eprintln!("{}: {e}", path.display()),
    }
}

/// Which store, where: never a password (the URL holds none; the password's source is not
/// shown either).
fn store_line(store: &StoreConfig) -> String {
    match &store.postgres {
        None => format!("sqlite in {}", store.path.display()),
        Some(pg) => format!("postgresql {} (sslmode {})", pg.url, pg.sslmode.as_str()),
    }
}

fn store_json(store: &StoreConfig) -> Value {
    match &store.postgres {
        None => json!({ "kind": "sqlite", "path": store.path.display().to_string() }),
        Some(pg) => json!({ "kind": "postgresql", "url": pg.url, "sslmode": pg.sslmode.as_str() }),
    }
}

/// The `--json` object, its keys in the documented order (docs/operations.md).
fn to_json(outcome: &Result<Report, ConfigError>) -> String {
    let store = match outcome {
        Ok(report) => store_json(&report.store),
        Err(_) => Value::Null,
    };
    let (ok, listeners, routes, warnings, errors) = match outcome {
        Ok(report) => {
            let listeners: Vec<Value> = report
                .listeners
                .iter()
                .map(|listener| {
                    let certificate = listener.server_certificate.as_ref().map(|cert| {
                        json!({
                            "subject": cert.subject,
                            "sha256": cert.digests.sha256().to_string(),
                            "not_after": rfc3339(cert.not_after),
                        })
                    });
                    json!({
                        "name": listener.name,
                        "listen": listener.listen.to_string(),
                        "transport": if listener.tls { "tls" } else { "plaintext" },
                        "server_certificate": certificate,
                    })
                })
                .collect();
            let routes: Vec<Value> = report
                .routes
                .iter()
                .map(|route| {
                    json!({
                        "name": route.name,
                        "to": route.to,
                        "order": route.order,
                        "in_flight": route.in_flight,
                    })
                })
                .collect();
            let errors: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
            (report.is_ok(), listeners, routes, report.warnings.clone(), errors)
        }
        Err(e) => {
            // One entry per invalid value; a TOML error is one (multi-line) entry.
            let errors: Vec<String> = match e {
                ConfigError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
                other => vec![other.to_string()],
            };
            (false, Vec::new(), Vec::new(), Vec::new(), errors)
        }
    };
    format!(
        "{{\"ok\":{ok},\"listeners\":{},\"routes\":{},\"store\":{},\"warnings\":{},\"errors\":{}}}",
        Value::from(listeners),
        Value::from(routes),
        store,
        json!(warnings),
        json!(errors)
    )
}
