//! hl7d binary: parses the command line and hands each subcommand to its file in `cmd/`;
//! the work is in the `hl7d` library.

mod cmd;

use std::process::ExitCode;

use hl7d::config::{LogConfig, LogLevel};

use cmd::{Cli, Command};

fn main() -> ExitCode {
    let cli: Cli = match cmd::parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Serve(args) => cmd::serve::run(&args, cli.log_format),
        Command::CheckConfig(args) => cmd::check_config::run(&args),
        Command::Send(args) => {
            hl7d::logging::init(LogConfig { level: LogLevel::Warn, ..Default::default() });
            cmd::send::run(args)
        }
        Command::Cert(args) => cmd::cert::run(args),
        Command::Messages(args) => cmd::messages::run(args),
        Command::Bench(args) => {
            hl7d::logging::init(LogConfig { level: LogLevel::Warn, ..Default::default() });
            cmd::bench::run(args)
        }
        Command::Store(args) => cmd::store::run(args),
        Command::Routes(args) => cmd::routes::run(args),
        Command::Users(args) => cmd::users::run(args),
        Command::Tokens(args) => cmd::tokens::run(args),
    }
}
