//! `hl7d tokens create|list|revoke`: API tokens for scripts (`Authorization: Bearer
//! TOKEN`), in the users file beside the users.
//!
//! `create` prints the token once, on its last line; the file keeps only its SHA-256, so a
//! lost token cannot be shown again (revoke it and create another). Every change writes one
//! audit line (`token_created`, `token_revoked`, with the OS user who ran it); never the
//! token. Exit codes as `hl7d users`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use hl7d::console::auth::accounts::{self, AccountsError};
use hl7d::console::Role;

use super::operator::{flush_audit, open_audit, os_user};
use super::users::{exit_code, print_entries, RoleArg};
use super::EXIT_CONFIG;

/// `hl7d tokens`: API tokens (roles viewer and operator).
#[derive(Debug, Args)]
pub struct TokensArgs {
    /// Configuration file (TOML) whose `[admin] users` (or `[store] path`) names the users
    /// file. Without it, the embedded default (`./hl7d-data/users.toml`).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: TokensCommand,
}

/// The `hl7d tokens` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once, on the last line (only its hash is kept).
    Create {
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Its name (audit lines name it; `revoke` takes it).
        #[arg(long)]
        name: String,
    },
    /// List the tokens: name, role, when created (never the token).
    List {
        /// One JSON array instead of lines of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Runs `hl7d tokens`.
pub fn run(args: TokensArgs) -> ExitCode {
    let config = match hl7d::serve::load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hl7d tokens: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let path = config.users_file();
    let result = match args.command {
        TokensCommand::List { json } => list(&path, json),
        TokensCommand::Create { role, name } => {
            let role = Role::from(role);
            change(&config, "token_created", &name, Some(role), |a| a.create_token(&name, role)).map(
                |secret| {
                    println!("created token {name:?} (role {}) in {}", role.as_str(), path.display());
                    println!("it is shown this once; use it as: Authorization: Bearer TOKEN");
                    println!("{secret}");
                },
            )
        }
        TokensCommand::Revoke { name } => {
            change(&config, "token_revoked", &name, None, |a| a.revoke_token(&name).map(drop))
                .map(|()| println!("revoked token {name:?} in {}", path.display()))
        }
    };
    exit_code("hl7d tokens", result)
}

fn list(path: &std::path::Path, json: bool) -> Result<(), AccountsError> {
    let accounts = accounts::Accounts::load(path)?;
    let tokens = accounts.tokens.iter().map(|t| (t.name.as_str(), t.role, t.created.as_str()));
    print_entries(tokens, json, &format!("no tokens in {}", path.display()), "created");
    Ok(())
}

fn change<T>(
    config: &hl7d::config::Config,
    event: &'static str,
    name: &str,
    role: Option<Role>,
    change: impl FnOnce(&mut accounts::Accounts) -> Result<T, AccountsError>,
) -> Result<T, AccountsError> {
    let path = config.users_file();
    // The audit trail first: a change that cannot be recorded is not made.
    let audit = open_audit(config).map_err(|e| AccountsError::Refused(format!("audit trail: {e:#}")))?;
    let result = accounts::update(&path, change);
    let by = os_user();
    let role = role.map(Role::as_str);
    match &result {
        Ok(_) => tracing::info!(target: "audit", event, token = %name, role, by = %by.name, uid = by.uid,
            sudo_user = by.sudo_user.as_deref(), file = %path.display(), "console tokens changed"),
        Err(e) => tracing::warn!(target: "audit", event, token = %name, by = %by.name, uid = by.uid,
            sudo_user = by.sudo_user.as_deref(), file = %path.display(), error = %e, "console tokens change refused"),
    }
    flush_audit(audit.as_ref());
    result
}
