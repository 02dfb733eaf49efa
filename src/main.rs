//! hl7d binary: parses arguments and dispatches; the work is in the `hl7d` library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// Exit code for a subcommand that is not built yet (sysexits EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(_) => not_built("serve", 3),
        Command::CheckConfig(_) => not_built("check-config", 3),
        Command::Send(_) => not_built("send", 6),
        Command::Cert(_) => not_built("cert", 4),
        Command::Messages(_) => not_built("messages", 5),
        Command::Bench(_) => not_built("bench", 7),
    }
}

/// Says plainly that a subcommand does not exist yet, and fails.
fn not_built(name: &str, issue: u32) -> ExitCode {
    eprintln!("hl7d {name}: not implemented yet (tracked in issue #{issue})");
    ExitCode::from(EXIT_UNAVAILABLE)
}
