//! `hl7d messages list|show|export|purge|resend`: read (and on request delete from, or
//! deliver again) the message store while the server runs.
//!
//! Reading goes through [`StoreReader`] (SQLite or PostgreSQL), a read-only connection of
//! its own, so it never blocks the server's writes; `purge` through [`store::purge_at`],
//! in small transactions; `resend`
//! is a delivery action, in `routes.rs` with the others. `show` includes each route's
//! delivery of the message; `show --json` never the message's content. Text
//! shown on a terminal has control characters replaced by visible symbols: message
//! contents and peer-supplied fields must not be able to send escape sequences to an
//! operator's terminal. `--raw` and `export` write the bytes exactly as received.
//!
//! `--limit N` takes the N newest matching messages in `list` and `export` alike; `list`
//! shows them newest first, `export` writes them oldest first.
//!
//! Exit codes: 0 done; 1 the store could not be read or written, or no message with that
//! id; 64 usage error (an unknown `--listener` or `--route`, a purge without a filter or
//! `--all`); 78 the configuration.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hl7d::config::{Config, StoreConfig};
pub use hl7d::ops::{parse_sender, parse_since, printable, Sender};
use hl7d::store::queue::DeliveryState;
use hl7d::store::{self, Filter, Status, StoreAt, StoreReader, StoredMessage};
use hl7d::{ops, private_files};

use super::operator::{flush_audit, open_audit, os_user};
use super::{exit_code, Failure, EXIT_CONFIG};

/// How many messages `list` shows without `--limit`.
const DEFAULT_LIST_LIMIT: u64 = 100;
/// `list` counts the messages its limit left out up to this many (or the limit, if larger).
const LIST_COUNT_CAP: u64 = 10_000;
/// Digits of the zero-padded id that starts an exported file's name, so that name order is
/// store order (up to 10^12 messages).
const EXPORT_ID_DIGITS: usize = 12;

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
    /// List stored messages, accepted and refused, newest first (the newest 100 unless
    /// --limit says otherwise; stderr says when the list was cut).
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
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        /// One JSON object: the metadata, key fields and deliveries, without the message's
        /// content.
        #[arg(long)]
        json: bool,
    },
    /// Deliver stored messages again on a route: a new delivery per message, linked to the
    /// message's original delivery on the route (one line in the audit trail). By id, or
    /// every message received in a time range that the route delivered (or tried to)
    /// before.
    Resend {
        /// Message ids (the first column of `list`).
        #[arg(value_name = "ID", required_unless_present = "since", conflicts_with = "since")]
        ids: Vec<i64>,
        /// The route (it must be in the configuration).
        #[arg(long)]
        route: String,
        /// Instead of ids: messages received since this time (same forms as `list
        /// --since`) that have a delivery on the route.
        #[arg(long, value_parser = parse_since)]
        since: Option<SystemTime>,
        /// With --since: messages received before this time (default: now).
        #[arg(long, value_parser = parse_since, requires = "since")]
        until: Option<SystemTime>,
        /// Only count what would be queued; queue nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write one `.hl7` file per message (the bytes exactly as received) into a directory,
    /// named `<id, 12 digits>-<control id>.hl7` so that name order is store order (and
    /// `hl7d send DIR` sends them in it).
    Export {
        /// Directory to write into (created if missing; files of the same name are replaced).
        #[arg(long)]
        out: PathBuf,
        /// Which messages (all accepted ones by default: refused ones only with --status, so
        /// that `hl7d send DIR` does not resend what was refused).
        #[command(flatten)]
        filter: MessageFilterArgs,
    },
    /// Delete the messages a filter selects (e.g. a benchmark's: --sending-application
    /// HL7D-BENCH), in small transactions while the server runs; one audit line (event
    /// `purge`) names the filter, the count and the OS user.
    Purge {
        /// Which messages.
        #[command(flatten)]
        select: SelectArgs,
        /// Delete every message (refused without it when no filter is given).
        #[arg(long, conflicts_with_all = ["listener", "sending_application", "sender", "message_type", "patient", "visit", "order", "since", "until", "control_id", "status"])]
        all: bool,
        /// Only count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete messages with a delivery still to do (pending, in flight or parked on
        /// a route); without it they are kept, and counted.
        #[arg(long)]
        include_undelivered: bool,
    },
}

/// Selection of stored messages, for `list` and `export`.
#[derive(Debug, Args)]
pub struct MessageFilterArgs {
    /// Which messages.
    #[command(flatten)]
    pub select: SelectArgs,
    /// At most this many: the newest that match (`list` shows them newest first, `export`
    /// writes them oldest first).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// The conditions of a selection, shared by `list`, `export` and `purge`.
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Only messages received on this listener.
    #[arg(long)]
    pub listener: Option<String>,
    /// Only messages with this MSH-3 sending application (e.g. HL7D-BENCH, what `hl7d
    /// bench` sends).
    #[arg(long)]
    pub sending_application: Option<String>,
    /// Only messages from this sender: `APP^FAC` is MSH-3 `APP` and MSH-4 `FAC`, each as
    /// received (split at the first `^`; `APP` alone is MSH-3 only, like
    /// --sending-application).
    #[arg(long, value_name = "APP^FAC", conflicts_with = "sending_application", value_parser = parse_sender)]
    pub sender: Option<Sender>,
    /// Only messages whose MSH-9 (`TYPE^TRIGGER`, e.g. `ADT^A01`) matches: exactly, or as a
    /// glob when it holds `*`, `?` or `[...]` (`ADT^A0*`; case-sensitive).
    #[arg(long = "type", value_name = "PATTERN")]
    pub message_type: Option<String>,
    /// Only messages for this patient identifier (PID-3, first repetition, CX.1).
    #[arg(long, value_name = "ID")]
    pub patient: Option<String>,
    /// Only messages for this visit number (PV1-19, CX.1).
    #[arg(long, value_name = "NUMBER")]
    pub visit: Option<String>,
    /// Only messages with this order number, placer or filler (ORC-2/ORC-3, else
    /// OBR-2/OBR-3, EI.1).
    #[arg(long, value_name = "NUMBER")]
    pub order: Option<String>,
    /// Only messages received since this time: RFC 3339 (`2026-11-28T09:00:00Z`), a date
    /// (`2026-11-28`, UTC), or an age (`90m`, `2h`, `7d`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<SystemTime>,
    /// Only messages received before this time (same forms as --since).
    #[arg(long, value_parser = parse_since)]
    pub until: Option<SystemTime>,
    /// Only messages with this MSH-10 control id.
    #[arg(long)]
    pub control_id: Option<String>,
    /// Only messages with this status: accepted, rejected (refused for what the message is:
    /// AR/CR) or error (refused because it could not be stored: AE/CE).
    #[arg(long)]
    pub status: Option<Status>,
}

impl SelectArgs {
    /// The store filter: these conditions, no limit, newest first.
    pub fn filter(&self) -> Filter {
        let (sending_application, sending_facility) = match &self.sender {
            Some(sender) => (Some(sender.application.clone()), sender.facility.clone()),
            None => (self.sending_application.clone(), None),
        };
        Filter {
            listener: self.listener.clone(),
            sending_application,
            sending_facility,
            message_type: self.message_type.clone(),
            patient_id: self.patient.clone(),
            visit_number: self.visit.clone(),
            order: self.order.clone(),
            since: self.since,
            until: self.until,
            control_id: self.control_id.clone(),
            status: self.status,
            limit: None,
            oldest_first: false,
            before: None,
        }
    }
}

impl MessageFilterArgs {
    /// The store filter, with `default_limit` when `--limit` is not given.
    pub fn filter(&self, default_limit: Option<u64>) -> Filter {
        Filter { limit: self.limit.or(default_limit), ..self.select.filter() }
    }
}

/// Runs `hl7d messages`: list, show, export or purge in the store named by the
/// configuration.
pub fn run(args: MessagesArgs) -> ExitCode {
    let config = match hl7d::serve::load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hl7d: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let store = &config.store;
    let stdout = &mut std::io::stdout().lock();
    let result = match args.command {
        MessagesCommand::List { filter, json } => known_listener(&config, &filter.select)
            .and_then(|()| Ok(list(store, &filter.filter(Some(DEFAULT_LIST_LIMIT)), json, stdout)?)),
        MessagesCommand::Show { id, raw, json } => show(store, id, raw, json, stdout).map_err(Failure::from),
        MessagesCommand::Resend { ids, route, since, until, dry_run } => {
            let range = since.map(|since| (since, until));
            super::routes::resend(&config, &route, &ids, range, dry_run, stdout)
        }
        MessagesCommand::Export { out, filter } => known_listener(&config, &filter.select).and_then(|()| {
            let exported = export(store, &filter.filter(None), &out)?;
            eprintln!("exported {} to {}", exported.describe(), out.display());
            Ok(())
        }),
        MessagesCommand::Purge { select, all, dry_run, include_undelivered } => {
            known_listener(&config, &select)
                .and_then(|()| purge(&config, &select.filter(), all, dry_run, include_undelivered, stdout))
        }
    };
    exit_code("hl7d messages", result)
}

/// A `--listener` must name a listener of the configuration or one that stored messages
/// carry (it may have been removed since); anything else is a typo, and the error names
/// the known ones.
fn known_listener(config: &Config, select: &SelectArgs) -> Result<(), Failure> {
    let Some(name) = &select.listener else { return Ok(()) };
    if config.listener(name).is_some() {
        return Ok(());
    }
    let stored = StoreReader::open(&config.store)?.listeners()?;
    if stored.contains(name) {
        return Ok(());
    }
    let mut known: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    known.extend(stored.iter().map(String::as_str));
    known.sort_unstable();
    known.dedup();
    let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
    Err(Failure::Usage(format!("--listener: unknown listener {:?}; known: {known}", printable(name))))
}

/// `hl7d messages list`: one line per message, newest first (a table, or with `json` one
/// JSON object per line). When the limit cut the list, stderr says how many of how many
/// were shown.
pub fn list(store: &StoreConfig, filter: &Filter, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let reader = StoreReader::open(store)?;
    let messages = reader.list(filter)?;
    if json {
        for message in &messages {
            serde_json::to_writer(&mut *out, &ops::message_json(message))?;
            out.write_all(b"\n")?;
        }
    } else {
        writeln!(
            out,
            "{:>8}  {:<20}  {:<12}  {:<10}  {:<20}  {:>8}  {:<3}  {:<8}  {:>4}  PEER",
            "ID", "RECEIVED (UTC)", "LISTENER", "TYPE", "CONTROL ID", "SIZE", "ACK", "STATUS", "DUP"
        )?;
        for m in &messages {
            writeln!(
                out,
                "{:>8}  {:<20}  {:<12}  {:<10}  {:<20}  {:>8}  {:<3}  {:<8}  {:>4}  {}",
                m.id,
                humantime::format_rfc3339_seconds(m.received_at).to_string(),
                printable(&m.listener),
                printable(&m.message_type),
                printable(&m.control_id),
                m.size,
                m.ack_code.as_deref().unwrap_or("-"),
                m.status.as_str(),
                m.duplicate_count,
                m.peer,
            )?;
        }
    }
    out.flush()?;
    let shown = messages.len() as u64;
    if filter.limit == Some(shown) {
        // Counted up to a bound: an exact count of a day on a large store would cost more
        // than the list itself.
        let total = reader.count_matching_up_to(filter, shown.max(LIST_COUNT_CAP) + 1)?;
        if let Some(note) = cut_note(shown, total) {
            eprintln!("{note}");
        }
    }
    Ok(())
}

/// What stderr says when the limit cut the list: `2 of 5 shown; …`, or `100 of more than
/// 10,000 shown; …` when counting stopped at its bound (`total` is then one more than it).
/// `None` when nothing was cut.
fn cut_note(shown: u64, total: u64) -> Option<String> {
    if total <= shown {
        return None;
    }
    let cap = shown.max(LIST_COUNT_CAP);
    let of = if total > cap { format!("more than {}", thousands(cap)) } else { thousands(total) };
    Some(format!("{} of {of} shown; --limit N shows more (the newest N)", thousands(shown)))
}

/// `hl7d messages show ID`: with `raw`, the exact bytes received and nothing else; with
/// `json`, one object with the metadata, the key fields and the deliveries (no content);
/// otherwise the metadata, key fields and each delivery (route, state, attempts, last
/// error, the downstream's response, times), a blank line, and the message decoded from
/// its character set, one segment per line.
pub fn show(store: &StoreConfig, id: i64, raw: bool, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let reader = StoreReader::open(store)?;
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
    let fields = &message.fields;
    let deliveries = reader.deliveries_of(id)?;
    if json {
        // The summary carries the key fields already.
        let mut object = ops::message_json(&message);
        object["deliveries"] = deliveries.iter().map(ops::delivery_json).collect();
        serde_json::to_writer(&mut *out, &object)?;
        out.write_all(b"\n")?;
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
    head += &field("status", message.status.as_str());
    if let (Some(reason), Some(code)) = (&message.reason, message.error_code) {
        head += &field("reason", reason);
        head += &field("error_code", &code.to_string());
    }
    head += &field("duplicate_count", &message.duplicate_count.to_string());
    if let Some(at) = message.last_duplicate_at {
        head += &field("last_duplicate_at", &time(at));
    }
    for (name, value) in ops::key_field_values(fields) {
        head += &field(name, &value);
    }
    let optional_time = |t: Option<SystemTime>| t.map_or_else(|| "-".to_owned(), time);
    for d in &deliveries {
        head += &field(
            &format!("route {}", printable(&d.route)),
            &format!("{} (delivery {})", d.state_name, d.id),
        );
        head += &field("  lane", &d.lane);
        head += &field("  attempts", &d.attempts.to_string());
        head += &field("  last_error", d.last_error.as_deref().unwrap_or("-"));
        head += &field("  response", d.response.as_deref().unwrap_or("-"));
        head += &field("  queued_at", &time(d.queued_at));
        if d.state == Some(DeliveryState::Pending) {
            head += &field("  next_attempt_at", &time(d.next_attempt_at));
        }
        head += &field("  first_attempt_at", &optional_time(d.first_attempt_at));
        head += &field("  last_attempt_at", &optional_time(d.last_attempt_at));
        head += &field("  done_at", &optional_time(d.done_at));
        if let Some(original) = d.resend_of {
            head += &field("  resend_of", &format!("delivery {original}"));
        }
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

/// `hl7d messages export --out DIR`: one `<id>-<control id>.hl7` file per message (the id
/// zero-padded to [`EXPORT_ID_DIGITS`]), holding the bytes exactly as received, oldest
/// first; accepted messages only unless the filter names a status.
pub fn export(store: &StoreConfig, filter: &Filter, out_dir: &Path) -> anyhow::Result<Exported> {
    let reader = StoreReader::open(store)?;
    // Exports hold patient data: a new directory is 0700 and every file 0600.
    private_files::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = 0u64;
    let status = filter.status.or(Some(Status::Accepted));
    let filter = Filter { oldest_first: true, status, ..filter.clone() };
    reader.for_each_message(&filter, |message: StoredMessage| -> anyhow::Result<()> {
        let path = out_dir.join(export_file_name(&message));
        private_files::write(&path, message.raw.as_deref().unwrap_or_default(), true)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
        Ok(())
    })?;
    let matching = match filter.limit {
        Some(limit) if written == limit => reader.count_matching(&filter)?,
        _ => written,
    };
    Ok(Exported { written, matching })
}

/// What an export wrote.
pub struct Exported {
    /// Files written.
    pub written: u64,
    /// Messages the filter selects without its limit.
    pub matching: u64,
}

impl Exported {
    /// `3 message(s)`, or `3 of 10 message(s) (the newest; --limit)` when the limit cut.
    fn describe(&self) -> String {
        if self.matching > self.written {
            format!(
                "{} of {} message(s) (the newest; --limit)",
                thousands(self.written),
                thousands(self.matching)
            )
        } else {
            format!("{} message(s)", thousands(self.written))
        }
    }
}

/// `hl7d messages purge`: with `dry_run` prints how many messages the filter selects;
/// otherwise deletes them and writes one audit line (event `purge`: the filter, the count,
/// the OS user) to the log and the configured audit trail. An empty filter needs `all`.
/// Messages with a delivery still to do are kept (and counted) unless `include_undelivered`.
fn purge(
    config: &Config,
    filter: &Filter,
    all: bool,
    dry_run: bool,
    include_undelivered: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    if filter.selects_all() && !all {
        return Err(Failure::Usage(
            "purge needs a filter (--listener, --sending-application, --since, --until, --control-id), \
             or --all to delete every message"
                .into(),
        ));
    }
    let store_name = match &config.store.postgres {
        Some(postgres) => hl7d::store::postgres::connect::display_url(postgres).to_owned(),
        None => config.store.path.display().to_string(),
    };
    let undelivered =
        if include_undelivered { 0 } else { StoreReader::open(&config.store)?.count_undelivered(filter)? };
    if dry_run {
        let count = StoreReader::open(&config.store)?.count_matching(filter)?;
        writeln!(out, "would delete {} message(s)", thousands(count - undelivered.min(count)))?;
        write_kept(out, undelivered)?;
        return Ok(());
    }
    // The audit trail first: a purge that cannot be recorded does not run.
    let audit = open_audit(config)?;
    let result = store::purge_at(StoreAt::of(&config.store), filter, include_undelivered);
    let user = os_user();
    let description = if filter.selects_all() { "all".to_owned() } else { filter.describe() };
    match &result {
        Ok(count) => tracing::info!(target: "audit", event = "purge", filter = %description, count,
            include_undelivered, user = %user.name, uid = user.uid, sudo_user = user.sudo_user.as_deref(),
            store = %store_name, "stored messages purged"),
        Err(e) => tracing::warn!(target: "audit", event = "purge", filter = %description, count = 0u64,
            user = %user.name, uid = user.uid, sudo_user = user.sudo_user.as_deref(),
            store = %store_name, error = %e, "purge failed"),
    }
    flush_audit(audit.as_ref());
    writeln!(out, "deleted {} message(s)", thousands(result?))?;
    write_kept(out, undelivered)?;
    Ok(())
}

/// The line about messages a purge keeps for their deliveries, when there are any.
fn write_kept(out: &mut dyn Write, undelivered: u64) -> std::io::Result<()> {
    if undelivered > 0 {
        writeln!(
            out,
            "kept {} message(s) with deliveries still to do (--include-undelivered deletes them too)",
            thousands(undelivered)
        )?;
    }
    Ok(())
}

/// `26498` → `26,498`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `<id>-<control id>.hl7` with the id zero-padded (`000000000042-CTRL.hl7`), the control
/// id reduced to characters safe in any file system (it comes from the peer) and to 64 of
/// them.
fn export_file_name(message: &StoredMessage) -> String {
    let safe: String = message
        .control_id
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    let id = format!("{:0width$}", message.id, width = EXPORT_ID_DIGITS);
    if safe.is_empty() {
        format!("{id}.hl7")
    } else {
        format!("{id}-{safe}.hl7")
    }
}

#[cfg(test)]
mod tests {
    use hl7d::store::KeyFields;

    use super::*;

    fn stored_message() -> StoredMessage {
        StoredMessage {
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
            status: Status::Accepted,
            reason: None,
            error_code: None,
            duplicate_count: 0,
            last_duplicate_at: None,
            fields: KeyFields::default(),
            raw: None,
        }
    }

    #[test]
    fn export_names_are_safe() {
        let mut m = stored_message();
        assert_eq!(export_file_name(&m), "000000000007-.._.._etc_x_y.hl7");
        m.control_id.clear();
        assert_eq!(export_file_name(&m), "000000000007.hl7");
    }

    /// #13 item 11: names were `9-…`, `10-…`, so name order (what `hl7d send DIR` uses)
    /// put message 10 before message 9.
    #[test]
    fn export_names_sort_in_store_order() {
        let names: Vec<String> = [9, 10, 11, 100, 1_000_000]
            .into_iter()
            .map(|id| export_file_name(&StoredMessage { id, control_id: "X".into(), ..stored_message() }))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        assert_eq!(names[1], "000000000010-X.hl7");
    }

    #[test]
    fn the_cut_note_says_how_many_or_that_there_are_more_than_the_bound() {
        assert_eq!(cut_note(5, 5), None);
        assert_eq!(cut_note(2, 5).as_deref(), Some("2 of 5 shown; --limit N shows more (the newest N)"));
        assert_eq!(
            cut_note(100, 10_000).as_deref(),
            Some("100 of 10,000 shown; --limit N shows more (the newest N)")
        );
        assert_eq!(
            cut_note(100, 10_001).as_deref(),
            Some("100 of more than 10,000 shown; --limit N shows more (the newest N)")
        );
        // A limit above the bound is counted up to itself.
        assert_eq!(
            cut_note(20_000, 20_001).as_deref(),
            Some("20,000 of more than 20,000 shown; --limit N shows more (the newest N)")
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(26_498), "26,498");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
