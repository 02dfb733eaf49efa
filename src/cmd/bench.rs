//! `hl7d bench`: arguments, then [`hl7d::bench`] runs the load and reports.
//!
//! Exit codes are those of `hl7d send`: 0 every message acknowledged with AA/CA, 1 some
//! AE/AR/CE/CR, 2 errors (no ACK, wrong ACK, connection or TLS failures), 64 usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use hl7d::bench::{self, BenchOptions, Plan, Report, Stop, Template, DEFAULT_MESSAGE};
use hl7d::sender::with_default_port;

use super::send::{TlsArgs, EXIT_DELIVERY_FAILED, EXIT_NEGATIVE_ACK, EXIT_OK, EXIT_USAGE};

/// How long a run lasts when neither `--messages` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// `hl7d bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Listener address, HOST:PORT (HOST alone: port 2575).
    #[arg(long)]
    pub to: String,
    /// Concurrent connections, each with one message in flight.
    #[arg(long, short = 'c', default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Stop after this many messages in total.
    #[arg(long, short = 'n', conflicts_with = "duration",
        value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,
    /// Run for this long (the default, 10s, when --messages is not given either).
    #[arg(long, short = 'd', value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// HL7 message to send (default: a built-in 608-byte ADT^A01 v2.5). Its MSH-10 is
    /// replaced by a unique control id for every message, MSH-3 by HL7D-BENCH and MSH-11 by
    /// T (training), so that a run can be told apart and purged; `\n` line ends become `\r`.
    #[arg(long, value_name = "FILE")]
    pub message: Option<PathBuf>,
    /// A new connection (with --tls: a full TLS handshake) for every message; reports
    /// handshakes/s.
    #[arg(long)]
    pub handshakes: bool,
    /// With --handshakes: let the client resume TLS sessions instead of doing full
    /// handshakes.
    #[arg(long, requires = "handshakes")]
    pub tls_resumption: bool,
    /// TLS, trust and client identity (as for `hl7d send`).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// How long to wait for each ACK before counting an error and reconnecting.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,
    /// Send at this many messages per second in total, spread over the connections,
    /// instead of each connection sending as soon as its last message was answered. A
    /// message is due at its time whatever happened before, and its latency counts from
    /// then (a late answer delays the next message, and that delay is counted too).
    #[arg(long, value_name = "MSG_PER_S", conflicts_with = "handshakes", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Client runtime threads. One leaves the other cores to a server on the same machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// One JSON object on stdout instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr (otherwise one per second).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Runs `hl7d bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.into()).enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hl7d bench: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_DELIVERY_FAILED);
        }
    };
    let plan = match options(&args) {
        Ok(options) => runtime.block_on(Plan::new(options)),
        Err(e) => Err(e),
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("hl7d bench: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let report = runtime.block_on(bench::run(plan, !args.quiet));
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::from(exit_code(&report))
}

/// The arguments as plain values: the message read and checked, the TLS client configured.
fn options(args: &BenchArgs) -> Result<BenchOptions, String> {
    let template = match &args.message {
        Some(path) => Template::new(&std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => Template::new(DEFAULT_MESSAGE),
    }?;
    let to = with_default_port(&args.to);
    let tls = args.tls.client_tls(&to, "bench")?;
    let stop = match (args.messages, args.duration) {
        (Some(n), _) => Stop::Messages(n),
        (None, Some(d)) => Stop::Duration(d),
        (None, None) => Stop::Duration(DEFAULT_DURATION),
    };
    Ok(BenchOptions {
        to,
        connections: args.connections,
        stop,
        template,
        handshakes: args.handshakes,
        tls,
        tls_resumption: args.tls_resumption,
        ack_timeout: args.ack_timeout,
        threads: args.threads,
        rate: args.rate,
    })
}

/// `--rate`: a positive number of messages per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?}: expected a positive number of messages per second")),
    }
}

/// 2 if anything failed, else 1 if any message was refused, else 0.
fn exit_code(report: &Report) -> u8 {
    if report.error_count() > 0 {
        EXIT_DELIVERY_FAILED
    } else if report.rejected() > 0 {
        EXIT_NEGATIVE_ACK
    } else {
        EXIT_OK
    }
}
