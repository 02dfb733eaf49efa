//! `hl7d send`: feed files (or stdin) to any MLLP listener and check every ACK.
//!
//! Exit codes: 0 every message accepted (AA/CA, or no ACK within `--error-wait` for a
//! message whose MSH-15 asks for none on success); 1 any AE/AR/CE/CR; 2 delivery failed
//! (timeouts, connection, TLS); 64 usage error (bad arguments, unreadable input).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use hl7_proto::batch;
use hl7_proto::charset::Charset;
use hl7_proto::hex;
use hl7_proto::mllp::Framing;
use hl7d::sender::tls::{client_config, server_name, ClientTlsOptions};
use hl7d::sender::{normalise_line_ends, with_default_port, Client, ClientOptions, Delivery, DeliveryFailed};
use hl7d::tls::thumbprint::Thumbprint;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::messages::printable;

/// Exit code: every message accepted.
pub const EXIT_OK: u8 = 0;
/// Exit code: some message got AE/AR/CE/CR.
pub const EXIT_NEGATIVE_ACK: u8 = 1;
/// Exit code: delivery failed.
pub const EXIT_DELIVERY_FAILED: u8 = 2;
/// Exit code: usage error (the one for the whole command line).
pub use super::EXIT_USAGE;

/// `hl7d send` arguments.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Listener address, HOST:PORT (HOST alone: port 2575).
    #[arg(long)]
    pub to: String,
    /// Files or directories (sent in name order) of HL7 messages; `-` reads stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// TLS, trust and client identity.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// How long to wait for each ACK.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,
    /// For a message whose MSH-15 asks for no ACK on success (NE, ER): how long to listen
    /// for an error ACK before counting it as accepted (0s: do not wait).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub error_wait: Duration,
    /// Resends after a timeout or lost connection.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Delay before the first resend (doubled each time).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// Character set for reading ACK texts when MSH-18 is empty.
    #[arg(long, default_value = "utf-8")]
    pub encoding: String,
    /// MLLP start bytes (hex).
    #[arg(long, default_value = "0B")]
    pub framing_start: String,
    /// MLLP end bytes (hex).
    #[arg(long, default_value = "1C 0D")]
    pub framing_end: String,
    /// Split FHS/BHS batch files into their messages.
    #[arg(long)]
    pub batch: bool,
    /// One connection per message.
    #[arg(long)]
    pub reconnect_each: bool,
    /// One JSON result line per message.
    #[arg(long)]
    pub json: bool,
    /// Print each ACK received in full, one segment per line (with --json: an `ack` array).
    #[arg(long)]
    pub show_ack: bool,
}

/// TLS, trust and client-identity options, shared by `hl7d send` and `hl7d bench`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Use TLS (1.2/1.3).
    #[arg(long)]
    pub tls: bool,
    /// Trust this CA (PEM) instead of the system roots.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Accept exactly the server certificate with this thumbprint (sha256:… or SHA-1).
    #[arg(long, value_name = "THUMBPRINT")]
    pub pin: Option<String>,
    /// Skip server certificate verification (DANGER: anyone can impersonate the server).
    #[arg(long)]
    pub insecure: bool,
    /// Name to verify and send as SNI (default: the host of --to).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client configuration and the name to verify for connections to `to`, or `None`
    /// without `--tls`. `command` names the subcommand in the `--insecure` warning.
    pub fn client_tls(
        &self,
        to: &str,
        command: &str,
    ) -> Result<Option<(ClientConfig, ServerName<'static>)>, String> {
        let tls_wanted =
            self.tls || self.ca.is_some() || self.pin.is_some() || self.insecure || self.cert.is_some();
        if tls_wanted && !self.tls {
            return Err("--ca, --pin, --insecure and --cert need --tls".into());
        }
        if !self.tls {
            return Ok(None);
        }
        if self.insecure {
            eprintln!("hl7d {command}: WARNING: --insecure: the server certificate is NOT verified; anyone on the path can read and answer these messages");
        }
        let pin = self
            .pin
            .as_deref()
            .map(str::parse::<Thumbprint>)
            .transpose()
            .map_err(|e| format!("--pin: {e}"))?;
        let options = ClientTlsOptions {
            ca: self.ca.clone(),
            pin,
            danger_insecure: self.insecure,
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        let config = client_config(&options).map_err(|e| e.to_string())?;
        Ok(Some((config, server_name(to, self.server_name.as_deref())?)))
    }
}

/// Runs `hl7d send`.
pub fn run(args: SendArgs) -> ExitCode {
    let prepared = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("hl7d send: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hl7d send: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_DELIVERY_FAILED);
        }
    };
    ExitCode::from(runtime.block_on(send_all(prepared, &args)))
}

struct Prepared {
    options: ClientOptions,
    messages: Vec<(String, Vec<u8>)>,
}

fn prepare(args: &SendArgs) -> Result<Prepared, String> {
    let framing = Framing::new(
        &hex::parse_byte_list(&args.framing_start).map_err(|e| format!("--framing-start: {e}"))?,
        &hex::parse_byte_list(&args.framing_end).map_err(|e| format!("--framing-end: {e}"))?,
    )
    .map_err(|e| format!("framing: {e}"))?;
    let charset = Charset::from_config_name(&args.encoding)
        .ok_or_else(|| format!("--encoding: unknown character set {:?}", args.encoding))?;
    let to = with_default_port(&args.to);
    let tls = args.tls.client_tls(&to, "send")?.map(|(config, name)| (Arc::new(config), name));
    let mut messages = Vec::new();
    for input in &args.inputs {
        for (name, bytes) in read_input(input)? {
            messages.extend(split_file(&name, &bytes, args.batch)?);
        }
    }
    if messages.is_empty() {
        return Err("no messages found in the inputs".into());
    }
    let options = ClientOptions {
        to,
        framing,
        ack_timeout: args.ack_timeout,
        error_wait: args.error_wait,
        connect_timeout: Duration::from_secs(10),
        retries: args.retries,
        retry_delay: args.retry_delay,
        reconnect_each: args.reconnect_each,
        tls,
        charset,
    };
    Ok(Prepared { options, messages })
}

/// Reads a file, every file of a directory (name order, not recursive), or stdin.
fn read_input(input: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    if input == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map_err(|e| format!("stdin: {e}"))?;
        return Ok(vec![("stdin".into(), bytes)]);
    }
    let path = Path::new(input);
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{input}: {e}"))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        return entries
            .into_iter()
            .map(|p| {
                std::fs::read(&p)
                    .map(|b| (p.display().to_string(), b))
                    .map_err(|e| format!("{}: {e}", p.display()))
            })
            .collect();
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{input}: {e}"))?;
    Ok(vec![(input.to_string(), bytes)])
}

/// Splits a file into messages. A UTF-8 byte order mark at the start (editors on Windows
/// write one) is skipped: it is not part of the message. `\n` and `\r\n` line ends become
/// `\r`. A batch file (FHS or BHS first) is refused without `--batch`, since a listener would
/// see one unusable frame.
fn split_file(name: &str, bytes: &[u8], allow_batch: bool) -> Result<Vec<(String, Vec<u8>)>, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let normalised = normalise_line_ends(bytes);
    if batch::is_batch(&normalised) && !allow_batch {
        return Err(format!("{name}: an FHS/BHS batch file; pass --batch to send its messages"));
    }
    let split = batch::split(&normalised).map_err(|e| format!("{name}: {e}"))?;
    for mismatch in split.count_mismatches() {
        eprintln!("hl7d send: {name}: {mismatch}");
    }
    Ok(split.messages().map(|m| (name.to_string(), m.to_vec())).collect())
}

async fn send_all(prepared: Prepared, args: &SendArgs) -> u8 {
    let mut client = Client::new(prepared.options);
    let total = prepared.messages.len();
    let (mut accepted, mut negative, mut resent) = (0usize, 0usize, 0u32);
    let mut failed: Option<DeliveryFailed> = None;
    let mut stdout = std::io::stdout().lock();
    for (index, (file, message)) in prepared.messages.iter().enumerate() {
        match client.send(message).await {
            Ok(delivery) => {
                resent += delivery.attempts - 1;
                let positive = delivery.ack.as_ref().is_none_or(|a| a.code.is_accept());
                if positive {
                    accepted += 1;
                } else {
                    negative += 1;
                }
                let _ = writeln!(stdout, "{}", describe(&delivery, file, args));
            }
            Err(failure) => {
                resent += failure.attempts.saturating_sub(1);
                if args.json {
                    let _ = writeln!(
                        stdout,
                        "{}",
                        serde_json::json!({"file": file, "control_id": failure.control_id, "result": "failed",
                            "attempts": failure.attempts, "error": failure.last.to_string()})
                    );
                }
                eprintln!("hl7d send: {failure}");
                let left = total - index - 1;
                if left > 0 {
                    eprintln!("hl7d send: stopping; {left} message(s) not sent (order matters in HL7)");
                }
                failed = Some(failure);
                break;
            }
        }
    }
    eprintln!(
        "hl7d send: {total} message(s): {accepted} accepted, {negative} refused, {} failed, {resent} resend(s)",
        usize::from(failed.is_some())
    );
    if failed.is_some() {
        EXIT_DELIVERY_FAILED
    } else if negative > 0 {
        EXIT_NEGATIVE_ACK
    } else {
        EXIT_OK
    }
}

/// One result line (or JSON object) for a delivered message; with `--show-ack`, followed by
/// the ACK's segments (or with an `ack` array of them).
fn describe(delivery: &Delivery, file: &str, args: &SendArgs) -> String {
    let latency_ms = delivery.latency.as_secs_f64() * 1000.0;
    let (code, text) = match &delivery.ack {
        Some(ack) => (ack.code.as_str(), ack.text.clone()),
        None => ("none", no_ack_text(delivery, args.error_wait)),
    };
    let segments: Vec<String> = match (&delivery.ack, args.show_ack) {
        (Some(ack), true) => ack.segments().iter().map(|segment| printable(segment)).collect(),
        _ => Vec::new(),
    };
    if args.json {
        let mut line = serde_json::json!({"file": file, "control_id": delivery.control_id, "result": code,
            "text": text, "attempts": delivery.attempts, "latency_ms": latency_ms});
        if args.show_ack {
            line["ack"] = serde_json::json!(segments);
        }
        line.to_string()
    } else {
        let mut line = format!("{:<24} {code:<4} {latency_ms:>8.1} ms", delivery.control_id);
        if delivery.attempts > 1 {
            line.push_str(&format!("  ({} attempts)", delivery.attempts));
        }
        if !text.is_empty() {
            line.push_str("  ");
            line.push_str(&printable(&text));
        }
        for segment in segments {
            line.push_str("\n    ");
            line.push_str(&segment);
        }
        line
    }
}

/// Why a delivered message has no ACK: it asked for none on success (MSH-15) and none came.
fn no_ack_text(delivery: &Delivery, error_wait: Duration) -> String {
    let asked = delivery.accept_ack.map_or("NE", |condition| condition.code());
    if error_wait.is_zero() {
        format!("MSH-15 = {asked}: no ACK on success; not waited for (--error-wait 0s)")
    } else {
        format!(
            "MSH-15 = {asked}: no ACK on success, and no error ACK within {}",
            humantime::format_duration(error_wait)
        )
    }
}
