//! `hl7d users add|passwd|remove|list`: the console's users in the users file
//! (`[admin] users`, by default `users.toml` in the data directory).
//!
//! The password comes from a prompt without echo when standard input is a terminal (asked
//! twice), else from the first line of standard input (scripts: `printf '%s\n' "$PW" |
//! hl7d users add ana --role operator`). Every change writes one audit line (`user_added`,
//! `user_removed`, `user_password_changed`, with the OS user who ran it) before the command
//! reports success; a change that cannot be recorded is not made. Exit codes: 0 done, 64 a
//! refused request (name taken, no such user, password too short), 78 the configuration
//! could not be loaded, 1 anything else.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use hl7d::config::Config;
use hl7d::console::auth::accounts::{self, AccountsError};
use hl7d::console::Role;

use super::operator::{flush_audit, open_audit, os_user};
use super::{EXIT_CONFIG, EXIT_USAGE};

/// `hl7d users`: console users (roles viewer and operator).
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// Configuration file (TOML) whose `[admin] users` (or `[store] path`) names the users
    /// file. Without it, the embedded default (`./hl7d-data/users.toml`).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: UsersCommand,
}

/// The `hl7d users` subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is asked for (terminal) or read from one line of stdin.
    Add {
        /// The login name (1 to 64 of A-Z a-z 0-9 _ . @ -).
        name: String,
        /// What the user may do.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Set a user's password (asked for, or one line of stdin); the user's sessions end.
    Passwd {
        /// The login name.
        name: String,
    },
    /// Remove a user; the user's sessions end.
    Remove {
        /// The login name.
        name: String,
    },
    /// List the users: name, role, when added (never a password hash).
    List {
        /// One JSON array instead of lines of text.
        #[arg(long)]
        json: bool,
    },
}

/// `--role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Reads: dashboard, messages, routes.
    Viewer,
    /// Reads, delivery actions and reload.
    Operator,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Operator => Role::Operator,
        }
    }
}

/// Runs `hl7d users`.
pub fn run(args: UsersArgs) -> ExitCode {
    let config = match hl7d::serve::load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hl7d users: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let path = config.users_file();
    let result = match args.command {
        UsersCommand::List { json } => list(&path, json),
        UsersCommand::Add { name, role } => {
            let role = Role::from(role);
            read_new_password().and_then(|password| {
                change(&config, "user_added", &name, Some(role), |a| a.add_user(&name, role, &password))
            })
        }
        UsersCommand::Passwd { name } => read_new_password().and_then(|password| {
            change(&config, "user_password_changed", &name, None, |a| a.set_password(&name, &password))
        }),
        UsersCommand::Remove { name } => {
            change(&config, "user_removed", &name, None, |a| a.remove_user(&name).map(drop))
        }
    };
    exit_code("hl7d users", result)
}

fn list(path: &std::path::Path, json: bool) -> Result<(), AccountsError> {
    let accounts = accounts::Accounts::load(path)?;
    let users = accounts.users.iter().map(|u| (u.name.as_str(), u.role, u.created.as_str()));
    let empty = format!("no users in {} (hl7d users add NAME --role operator)", path.display());
    print_entries(users, json, &empty, "added");
    Ok(())
}

/// `users list` and `tokens list`: one JSON array of `{name, role, created}`, or a line an
/// entry (`NAME ROLE VERB CREATED`), or `empty` when there is none.
pub(super) fn print_entries<'a>(
    entries: impl ExactSizeIterator<Item = (&'a str, Role, &'a str)>,
    json: bool,
    empty: &str,
    verb: &str,
) {
    if json {
        let entries: Vec<serde_json::Value> = entries
            .map(|(name, role, created)| serde_json::json!({ "name": name, "role": role.as_str(), "created": created }))
            .collect();
        println!("{}", serde_json::Value::from(entries));
    } else if entries.len() == 0 {
        println!("{empty}");
    } else {
        for (name, role, created) in entries {
            println!("{:<24} {:<8} {verb} {}", name, role.as_str(), created);
        }
    }
}

/// Applies `change` to the users file, audits it, and says what was done.
fn change(
    config: &Config,
    event: &'static str,
    name: &str,
    role: Option<Role>,
    change: impl FnOnce(&mut accounts::Accounts) -> Result<(), AccountsError>,
) -> Result<(), AccountsError> {
    let path = config.users_file();
    // The audit trail first: a change that cannot be recorded is not made.
    let audit = open_audit(config).map_err(|e| AccountsError::Refused(format!("audit trail: {e:#}")))?;
    let result = accounts::update(&path, change);
    let by = os_user();
    let role = role.map(Role::as_str);
    match &result {
        Ok(()) => tracing::info!(target: "audit", event, user = %name, role, by = %by.name, uid = by.uid,
            sudo_user = by.sudo_user.as_deref(), file = %path.display(), "console users changed"),
        Err(e) => tracing::warn!(target: "audit", event, user = %name, by = %by.name, uid = by.uid,
            sudo_user = by.sudo_user.as_deref(), file = %path.display(), error = %e, "console users change refused"),
    }
    flush_audit(audit.as_ref());
    result?;
    let done = match event {
        "user_added" => "added",
        "user_removed" => "removed",
        _ => "password changed for",
    };
    println!("{done} user {name:?} in {}", path.display());
    Ok(())
}

/// A new password: from a prompt without echo (asked twice) on a terminal, else the first
/// line of standard input.
fn read_new_password() -> Result<String, AccountsError> {
    let password = if std::io::stdin().is_terminal() {
        let first = prompt("New password: ")?;
        let again = prompt("Again: ")?;
        if first != again {
            return Err(AccountsError::Refused("the two passwords differ; nothing changed".into()));
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| AccountsError::Refused(format!("cannot read the password from stdin: {e}")))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    accounts::check_password(&password).map_err(AccountsError::Refused)?;
    Ok(password)
}

/// Turns echo off, asks on stderr, reads one line from the terminal, turns echo back on.
fn prompt(question: &str) -> Result<String, AccountsError> {
    let failed = |e: std::io::Error| AccountsError::Refused(format!("cannot read the password: {e}"));
    let stdin = std::io::stdin();
    // Echo off before the prompt appears: nothing typed after it can be echoed.
    #[cfg(unix)]
    let saved = {
        use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
        let saved = tcgetattr(&stdin).map_err(|e| failed(e.into()))?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(|e| failed(e.into()))?;
        saved
    };
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question}");
    let _ = stderr.flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    #[cfg(unix)]
    let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
    let _ = writeln!(stderr);
    read.map_err(failed)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// 0, or the error on stderr with 64 (refused) or 1 (failed).
pub fn exit_code(name: &str, result: Result<(), AccountsError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(AccountsError::Refused(message)) => {
            eprintln!("{name}: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
