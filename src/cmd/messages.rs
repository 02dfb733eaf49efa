//! `hl7d messages list|show|export`: read the message store while the server runs.
//!
//! Everything here goes through [`Reader`], a read-only connection of its own, so it never
//! blocks the server's writes. Text shown on a terminal has control characters replaced by
//! visible symbols: message contents and peer-supplied fields must not be able to send
//! escape sequences to an operator's terminal. `--raw` and `export` write the bytes exactly
//! as received.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hl7d::private_files;
use hl7d::store::{Filter, Reader, StoredMessage};
use serde_json::json;

use super::EXIT_CONFIG;

/// `hl7d messages`: read the message store (works while the server runs).
#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Configuration file (TOML) whose `[store] path` to read. Without it, the embedded
    /// default (`./hl7d-data`).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: MessagesCommand,
}

/// The `hl7d messages` subcommands.
#[derive(Debug, Subcommand)]
pub enum MessagesCommand {
    /// List stored messages, newest first (at most 100 unless --limit says otherwise).
    List {
        /// Which messages.
        #[command(flatten)]
        filter: MessageFilterArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: its metadata, then its segments one per line, decoded from the
    /// character set it arrived in.
    Show {
        /// Message id (the first column of `list`).
        id: i64,
        /// Write exactly the bytes received, nothing else.
        #[arg(long)]
        raw: bool,
    },
    /// Write one `.hl7` file per message (the bytes exactly as received) into a directory.
    Export {
        /// Directory to write into (created if missing; files of the same name are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Which messages (all by default).
        #[command(flatten)]
        filter: MessageFilterArgs,
    },
}

/// Selection of stored messages.
#[derive(Debug, Args)]
pub struct MessageFilterArgs {
    /// Only messages received on this listener.
    #[arg(long)]
    pub listener: Option<String>,
    /// Only messages received since this time: RFC 3339 (`2026-11-28T09:00:00Z`), a date
    /// (`2026-11-28`, UTC), or an age (`90m`, `2h`, `7d`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<std::time::SystemTime>,
    /// Only messages with this MSH-10 control id.
    #[arg(long)]
    pub control_id: Option<String>,
    /// At most this many messages.
    #[arg(long)]
    pub limit: Option<u64>,
}

impl MessageFilterArgs {
    /// The store filter, with `default_limit` when `--limit` is not given.
    pub fn filter(&self, default_limit: Option<u64>) -> Filter {
        Filter {
            listener: self.listener.clone(),
            since: self.since,
            control_id: self.control_id.clone(),
            limit: self.limit.or(default_limit),
            oldest_first: false,
        }
    }
}

/// Runs `hl7d messages`: list, show or export from the store named by the configuration.
pub fn run(args: MessagesArgs) -> ExitCode {
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
        MessagesCommand::List { filter, json } => list(store, &filter.filter(Some(100)), json, stdout),
        MessagesCommand::Show { id, raw } => show(store, id, raw, stdout),
        MessagesCommand::Export { out, filter } => export(store, &filter.filter(None), &out)
            .map(|n| eprintln!("exported {n} message(s) to {}", out.display())),
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

/// `hl7d messages list`: one line per message, newest first (a table, or with `json` one
/// JSON object per line).
pub fn list(store_dir: &Path, filter: &Filter, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let reader = Reader::open(store_dir)?;
    let messages = reader.list(filter)?;
    if json {
        for message in &messages {
            serde_json::to_writer(&mut *out, &summary_json(message))?;
            out.write_all(b"\n")?;
        }
    } else {
        writeln!(
            out,
            "{:>8}  {:<20}  {:<12}  {:<10}  {:<20}  {:>8}  {:<3}  {:>4}  PEER",
            "ID", "RECEIVED (UTC)", "LISTENER", "TYPE", "CONTROL ID", "SIZE", "ACK", "DUP"
        )?;
        for m in &messages {
            writeln!(
                out,
                "{:>8}  {:<20}  {:<12}  {:<10}  {:<20}  {:>8}  {:<3}  {:>4}  {}",
                m.id,
                humantime::format_rfc3339_seconds(m.received_at).to_string(),
                printable(&m.listener),
                printable(&m.message_type),
                printable(&m.control_id),
                m.size,
                m.ack_code.as_deref().unwrap_or("-"),
                m.duplicate_count,
                m.peer,
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `hl7d messages show ID`: with `raw`, the exact bytes received and nothing else;
/// otherwise the metadata, a blank line, and the message decoded from its character set,
/// one segment per line.
pub fn show(store_dir: &Path, id: i64, raw: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let reader = Reader::open(store_dir)?;
    let Some(message) = reader.message(id)? else {
        bail!("no message with id {id}");
    };
    // `Reader::message` always loads the bytes.
    let bytes = message.raw.as_deref().unwrap_or_default();
    if raw {
        out.write_all(bytes)?;
        out.flush()?;
        return Ok(());
    }
    let field = |name: &str, value: &str| format!("{name:<20} {}\n", printable(value));
    let time = |t: SystemTime| humantime::format_rfc3339_micros(t).to_string();
    let mut head = String::new();
    head += &field("id", &message.id.to_string());
    head += &field("listener", &message.listener);
    head += &field("received_at", &time(message.received_at));
    head += &field("peer", &message.peer);
    head += &field("client_thumbprint", message.client_thumbprint.as_deref().unwrap_or("-"));
    head += &field("encoding", &message.encoding);
    head += &field("message_type", &message.message_type);
    head += &field("control_id", &message.control_id);
    head += &field("sending_application", &message.sending_application);
    head += &field("sending_facility", &message.sending_facility);
    head += &field("processing_id", &message.processing_id);
    head += &field("version", &message.version);
    head += &field("size", &message.size.to_string());
    head += &field("ack_code", message.ack_code.as_deref().unwrap_or("-"));
    head += &field("status", &message.status);
    head += &field("duplicate_count", &message.duplicate_count.to_string());
    if let Some(at) = message.last_duplicate_at {
        head += &field("last_duplicate_at", &time(at));
    }
    out.write_all(head.as_bytes())?;
    writeln!(out)?;
    let text = match message.charset() {
        Some(charset) => charset.decode(bytes),
        // Written by a newer hl7d with a character set this build does not know.
        None => String::from_utf8_lossy(bytes),
    };
    // Segments end with CR; tolerate senders that use LF or CR LF.
    for segment in text.split(['\r', '\n']).filter(|s| !s.is_empty()) {
        writeln!(out, "{}", printable(segment))?;
    }
    out.flush()?;
    Ok(())
}

/// `hl7d messages export --out DIR`: one `<id>-<control id>.hl7` file per message, holding
/// the bytes exactly as received, oldest first. Returns the number of files written.
pub fn export(store_dir: &Path, filter: &Filter, out_dir: &Path) -> anyhow::Result<u64> {
    let reader = Reader::open(store_dir)?;
    // Exports hold patient data: a new directory is 0700 and every file 0600.
    private_files::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = 0u64;
    let filter = Filter { oldest_first: true, ..filter.clone() };
    reader.for_each_message(&filter, |message: StoredMessage| -> anyhow::Result<()> {
        let path = out_dir.join(export_file_name(&message));
        private_files::write(&path, message.raw.as_deref().unwrap_or_default(), true)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
        Ok(())
    })?;
    Ok(written)
}

/// Parses `--since`: an RFC 3339 time (`2026-11-28T09:00:00Z`, also with a space, without
/// `Z` meaning UTC, or a bare date) or an age before now (`90m`, `2h`, `7d`).
pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    let text = text.trim();
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(&format!("{text}T00:00:00")) {
        return Ok(time);
    }
    match humantime::parse_duration(text) {
        Ok(age) => SystemTime::now().checked_sub(age).ok_or_else(|| format!("{text:?} reaches before 1970")),
        Err(_) => Err(format!(
            "{text:?} is neither a time (2026-11-28T09:00:00Z, 2026-11-28) nor an age (90m, 2h, 7d)"
        )),
    }
}

/// The object `list --json` prints for one message.
fn summary_json(m: &StoredMessage) -> serde_json::Value {
    let time = |t: SystemTime| humantime::format_rfc3339_micros(t).to_string();
    json!({
        "id": m.id,
        "listener": m.listener,
        "control_id": m.control_id,
        "message_type": m.message_type,
        "received_at": time(m.received_at),
        "peer": m.peer,
        "client_thumbprint": m.client_thumbprint,
        "encoding": m.encoding,
        "size": m.size,
        "ack_code": m.ack_code,
        "duplicate_count": m.duplicate_count,
        "last_duplicate_at": m.last_duplicate_at.map(time),
        "sending_application": m.sending_application,
        "sending_facility": m.sending_facility,
        "processing_id": m.processing_id,
        "version": m.version,
        "status": m.status,
    })
}

/// `<id>-<control id>.hl7`, the control id reduced to characters safe in any file system
/// (it comes from the peer) and to 64 of them.
fn export_file_name(message: &StoredMessage) -> String {
    let safe: String = message
        .control_id
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    if safe.is_empty() {
        format!("{}.hl7", message.id)
    } else {
        format!("{}-{safe}.hl7", message.id)
    }
}

/// Replaces control characters (except tab) with visible stand-ins: C0 controls by their
/// Unicode control pictures (ESC → ␛), DEL by ␡, C1 controls by U+FFFD.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => c,
            '\u{0}'..='\u{1F}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{FFFD}'),
            '\u{7F}' => '\u{2421}',
            '\u{80}'..='\u{9F}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn printable_neutralises_terminal_escapes() {
        assert_eq!(printable("a\u{1b}[31mb\tc\u{7f}\u{9b}"), "a\u{241b}[31mb\tc\u{2421}\u{fffd}");
    }

    #[test]
    fn since_accepts_times_dates_and_ages() {
        let t = parse_since("2026-11-28T09:00:00Z").unwrap();
        assert_eq!(humantime::format_rfc3339_seconds(t).to_string(), "2026-11-28T09:00:00Z");
        let d = parse_since("2026-11-28").unwrap();
        assert_eq!(humantime::format_rfc3339_seconds(d).to_string(), "2026-11-28T00:00:00Z");
        let age = parse_since("2h").unwrap();
        let expected = SystemTime::now() - Duration::from_secs(7200);
        assert!(age <= expected && age > expected - Duration::from_secs(60));
        assert!(parse_since("yesterday-ish").is_err());
    }

    #[test]
    fn export_names_are_safe() {
        let mut m = StoredMessage {
            id: 7,
            listener: "lab".into(),
            peer: "127.0.0.1:1".into(),
            client_thumbprint: None,
            received_at: SystemTime::UNIX_EPOCH,
            encoding: "utf-8".into(),
            message_type: "ADT^A01".into(),
            control_id: "../../etc/x y".into(),
            sending_application: String::new(),
            sending_facility: String::new(),
            processing_id: "P".into(),
            version: "2.5".into(),
            size: 0,
            ack_code: None,
            status: "received".into(),
            duplicate_count: 0,
            last_duplicate_at: None,
            raw: None,
        };
        assert_eq!(export_file_name(&m), "7-.._.._etc_x_y.hl7");
        m.control_id.clear();
        assert_eq!(export_file_name(&m), "7.hl7");
    }
}
