//! [`Reader`]: read-only access to stored messages, for `hl7d messages` and tests; and
//! [`Filter`], the one selection of stored messages that listing, export and purge share.
//!
//! A reader opens its own read-only connection. In WAL mode it sees the last committed
//! state and never blocks the writer (a long read only delays the WAL checkpoint).

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use hl7_proto::charset::Charset;
use rusqlite::types::{Type, Value};
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension, Row};

use super::fields::{self, KeyFields};
use super::schema::{self, SCHEMA_VERSION};
use super::sqlite::{describe, micros, DATABASE_FILE};
use super::{Status, StoreError};

/// How long a read waits for a lock (only a schema migration or a checkpoint restart holds
/// one against readers, briefly).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which messages to read. Every field narrows the selection; the default selects all.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this listener.
    pub listener: Option<String>,
    /// Only this MSH-3 sending application (as stored: the raw field).
    pub sending_application: Option<String>,
    /// Only this MSH-4 sending facility (as stored: the raw field).
    pub sending_facility: Option<String>,
    /// Only messages whose MSH-9 (`TYPE^TRIGGER`, as stored) matches this pattern: SQLite
    /// `GLOB` (`*` any text, `?` one character, `[...]` a set; case-sensitive) when it holds
    /// one of `*?[`, else equality.
    pub message_type: Option<String>,
    /// Only messages for this patient: PID-3 CX.1 of the first repetition (`patient_id`).
    pub patient_id: Option<String>,
    /// Only this visit: PV1-19 CX.1 (`visit_number`).
    pub visit_number: Option<String>,
    /// Only this order number, placer or filler: ORC-2/ORC-3, else OBR-2/OBR-3.
    pub order: Option<String>,
    /// Only messages received at or after this time.
    pub since: Option<SystemTime>,
    /// Only messages received before this time.
    pub until: Option<SystemTime>,
    /// Only this MSH-10 control id.
    pub control_id: Option<String>,
    /// Only messages with this status (accepted, or refused and kept); all of them when
    /// `None`.
    pub status: Option<Status>,
    /// At most this many messages: always the newest (by time received) that match,
    /// whatever the order they come in, so that `list` and `export` with the same limit
    /// select the same messages.
    pub limit: Option<u64>,
    /// Oldest first (export) instead of newest first (list), by time received then id.
    pub oldest_first: bool,
    /// Keyset paging of a newest-first list: only messages that come after this one (its
    /// time received and id, see [`Reader::position`]) in that order — received before it,
    /// or at the same time and stored before it. A page is the next `limit` of them.
    pub before: Option<(SystemTime, i64)>,
}

impl Filter {
    /// Whether the filter selects every message (no condition; the limit aside).
    pub fn selects_all(&self) -> bool {
        let Filter {
            listener,
            sending_application,
            sending_facility,
            message_type,
            patient_id,
            visit_number,
            order,
            since,
            until,
            control_id,
            status,
            limit: _,
            oldest_first: _,
            before: _,
        } = self;
        listener.is_none()
            && sending_application.is_none()
            && sending_facility.is_none()
            && message_type.is_none()
            && patient_id.is_none()
            && visit_number.is_none()
            && order.is_none()
            && since.is_none()
            && until.is_none()
            && control_id.is_none()
            && status.is_none()
    }

    /// The conditions as `name=value` pairs, for logs and the audit trail (times in RFC
    /// 3339); empty when the filter selects all.
    pub fn describe(&self) -> String {
        let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let mut parts = Vec::new();
        if let Some(listener) = &self.listener {
            parts.push(format!("listener={listener}"));
        }
        if let Some(application) = &self.sending_application {
            parts.push(format!("sending_application={application}"));
        }
        if let Some(facility) = &self.sending_facility {
            parts.push(format!("sending_facility={facility}"));
        }
        if let Some(message_type) = &self.message_type {
            parts.push(format!("type={message_type}"));
        }
        // Patient, visit and order numbers are patient data: the audit line says that they
        // were part of the filter, not what they were.
        if self.patient_id.is_some() {
            parts.push("patient=(given)".into());
        }
        if self.visit_number.is_some() {
            parts.push("visit=(given)".into());
        }
        if self.order.is_some() {
            parts.push("order=(given)".into());
        }
        if let Some(since) = self.since {
            parts.push(format!("since={}", time(since)));
        }
        if let Some(until) = self.until {
            parts.push(format!("until={}", time(until)));
        }
        if let Some(control_id) = &self.control_id {
            parts.push(format!("control_id={control_id}"));
        }
        if let Some(status) = self.status {
            parts.push(format!("status={status}"));
        }
        parts.join(" ")
    }

    /// The SQL condition (`1` for none) and its values, numbered from `?1`. The limit and
    /// the order are the caller's. Each condition is one an index answers (see
    /// `schema.rs`; a test checks the plans): `patient_id`, `visit_number`, `placer_order`
    /// and `filler_order` on partial indexes that an equality implies, `message_type` on
    /// `messages_type` (a `GLOB` with a fixed prefix is a range on it), MSH-3/MSH-4 on
    /// `messages_sender`.
    pub(super) fn condition(&self) -> (String, Vec<Value>) {
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        let mut add = |column: &str, operator: &str, value: Value| {
            values.push(value);
            conditions.push(format!("{column} {operator} ?{}", values.len()));
        };
        if let Some(listener) = &self.listener {
            add("listener", "=", Value::Text(listener.clone()));
        }
        if let Some(application) = &self.sending_application {
            add("sending_application", "=", Value::Text(application.clone()));
        }
        if let Some(facility) = &self.sending_facility {
            add("sending_facility", "=", Value::Text(facility.clone()));
        }
        if let Some(pattern) = &self.message_type {
            let operator = if pattern.contains(['*', '?', '[']) { "GLOB" } else { "=" };
            add("message_type", operator, Value::Text(pattern.clone()));
        }
        if let Some(patient) = &self.patient_id {
            add("patient_id", "=", Value::Text(patient.clone()));
        }
        if let Some(visit) = &self.visit_number {
            add("visit_number", "=", Value::Text(visit.clone()));
        }
        if let Some(since) = self.since {
            add("received_at", ">=", Value::Integer(micros(since)));
        }
        if let Some(until) = self.until {
            add("received_at", "<", Value::Integer(micros(until)));
        }
        if let Some(control_id) = &self.control_id {
            add("control_id", "=", Value::Text(control_id.clone()));
        }
        if let Some(status) = self.status {
            add("status", "=", Value::Text(status.as_str().into()));
            if status != Status::Accepted {
                // Spelled as the partial index `messages_refused` is, so SQLite uses it: it
                // can only tell that a query stays inside a partial index from the same term.
                conditions.push("status <> 'accepted'".into());
            }
        }
        if let Some((received_at, id)) = self.before {
            // A row value: SQLite reads it as a range on the index's (received_at, id) order.
            values.push(Value::Integer(micros(received_at)));
            values.push(Value::Integer(id));
            let n = values.len();
            conditions.push(format!("(received_at, id) < (?{}, ?{n})", n - 1));
        }
        // Either number: SQLite answers the OR from both partial indexes (MULTI-INDEX OR).
        if let Some(order) = &self.order {
            values.push(Value::Text(order.clone()));
            let n = values.len();
            conditions.push(format!("(placer_order = ?{n} OR filler_order = ?{n})"));
        }
        let condition = if conditions.is_empty() { "1".to_owned() } else { conditions.join(" AND ") };
        (condition, values)
    }
}

/// One stored message with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Store id (increasing in order of storage).
    pub id: i64,
    /// Listener name.
    pub listener: String,
    /// Peer address (`ip:port`).
    pub peer: String,
    /// Client certificate thumbprint (mutual TLS).
    pub client_thumbprint: Option<String>,
    /// When the frame was complete.
    pub received_at: SystemTime,
    /// Character set the message was read in, as a config name (`utf-8`, `windows-1252`,
    /// …); see [`StoredMessage::charset`].
    pub encoding: String,
    /// MSH-9 as `TYPE^TRIGGER`.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-11.
    pub processing_id: String,
    /// MSH-12.
    pub version: String,
    /// Bytes received.
    pub size: u64,
    /// The ACK code answered (`AA`/`CA`, or `AR`/`AE`/`CR`/`CE` for a refused message),
    /// `None` when no ACK was sent.
    pub ack_code: Option<String>,
    /// Accepted, or refused and kept (rejected, error).
    pub status: Status,
    /// For a refused message, why: the text the sender got in MSA-3 (and ERR-8).
    pub reason: Option<String>,
    /// For a refused message, the ERR-3 code it was answered with (HL7 table 0357).
    pub error_code: Option<u16>,
    /// How often the same message was received again and not stored.
    pub duplicate_count: u64,
    /// The key fields read from the message when it was stored (patient, visit, orders,
    /// message time, trigger event, lanes); see [`KeyFields`].
    pub fields: KeyFields,
    /// When the last duplicate came.
    pub last_duplicate_at: Option<SystemTime>,
    /// The bytes exactly as received: kept by [`Reader::message`] and
    /// [`Reader::for_each_message`], `None` from [`Reader::list`].
    pub raw: Option<Vec<u8>>,
}

impl StoredMessage {
    /// The character set to decode [`StoredMessage::raw`] with, if this build knows it.
    pub fn charset(&self) -> Option<Charset> {
        Charset::from_config_name(&self.encoding)
    }
}

/// SQL: the message (`messages` row) has a delivery still to do.
pub(super) const HAS_OPEN_DELIVERY: &str =
    "EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id \
     AND d.state IN ('pending', 'in_flight', 'parked'))";

/// A read-only connection to `<store.path>/messages.db`.
pub struct Reader {
    pub(super) conn: Connection,
    file: PathBuf,
}

/// The columns [`stored`] reads, in its order: the header columns, then the key fields
/// (`fields::COLUMNS`, from [`KEY_FIELDS_AT`]); `raw` comes after them when asked for.
static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "id, listener, peer, client_thumbprint, received_at, charset, message_type, control_id, \
         sending_application, sending_facility, processing_id, version, size, ack_code, status, \
         duplicate_count, last_duplicate_at, reason, error_code, {}",
        fields::COLUMNS.join(", ")
    )
});
/// Where the key fields start in [`COLUMNS`].
const KEY_FIELDS_AT: usize = 19;

/// Opens the store in `dir` that `hl7d serve` made (never creates one) with `flags` (plus
/// no-mutex), runs `setup` on the connection, and checks that its schema is this build's:
/// a newer one is [`StoreError::SchemaTooNew`], an older one asks for a start of `hl7d
/// serve` to migrate it. Shared by the [`Reader`] and `messages purge`.
pub(super) fn open_existing(
    dir: &Path,
    flags: OpenFlags,
    setup: impl FnOnce(&Connection) -> rusqlite::Result<()>,
) -> Result<(Connection, PathBuf), StoreError> {
    let file = dir.join(DATABASE_FILE);
    let open_error = |reason: String| StoreError::Open { path: file.clone(), reason };
    if !file.is_file() {
        return Err(open_error(
            "no message store there (wrong [store] path, or hl7d serve never ran)".into(),
        ));
    }
    let conn = Connection::open_with_flags(&file, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_error(describe(&e)))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| open_error(describe(&e)))?;
    setup(&conn).map_err(|e| open_error(describe(&e)))?;
    let found = schema::version(&conn).map_err(|e| open_error(describe(&e)))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { path: file, found, supported: SCHEMA_VERSION });
    }
    if found < SCHEMA_VERSION {
        return Err(open_error(format!(
            "schema version {found} is older than {SCHEMA_VERSION}; start hl7d serve once to migrate it"
        )));
    }
    Ok((conn, file))
}

impl Reader {
    /// Opens the store in `dir` read-only. Fails when there is no store there, or its
    /// schema is not the one this build knows (start `hl7d serve` once to migrate an older
    /// one).
    pub fn open(dir: &Path) -> Result<Reader, StoreError> {
        let (conn, file) = open_existing(dir, OpenFlags::SQLITE_OPEN_READ_ONLY, |_| Ok(()))?;
        Ok(Reader { conn, file })
    }

    /// Bytes the database file and its WAL take now.
    pub fn file_bytes(&self) -> u64 {
        let wal = {
            let mut name = self.file.clone().into_os_string();
            name.push("-wal");
            std::path::PathBuf::from(name)
        };
        [&self.file, &wal].iter().filter_map(|file| std::fs::metadata(file).ok()).map(|meta| meta.len()).sum()
    }

    /// Where message `id` stands in a newest-first list (its time received and id), for
    /// [`Filter::before`]; `None` when there is no such message.
    pub fn position(&self, id: i64) -> Result<Option<(SystemTime, i64)>, StoreError> {
        self.conn
            .query_row("SELECT received_at FROM messages WHERE id = ?1", [id], |row| row.get::<_, i64>(0))
            .optional()
            .map(|found| found.map(|micros| (time(micros), id)))
            .map_err(|e| self.error(&e))
    }

    /// Messages matching `filter`, without their bytes.
    pub fn list(&self, filter: &Filter) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = Vec::new();
        self.select(filter, false, |message| {
            out.push(message);
            true
        })?;
        Ok(out)
    }

    /// Calls `each` for every message matching `filter`, with its bytes, one at a time (an
    /// export of a large store does not hold it in memory). Stops at the first error,
    /// whether the store's or the one `each` returns.
    pub fn for_each_message<E: From<StoreError>>(
        &self,
        filter: &Filter,
        mut each: impl FnMut(StoredMessage) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut failed = None;
        self.select(filter, true, |message| match each(message) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// The message with this id, with its bytes.
    pub fn message(&self, id: i64) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!("SELECT {}, raw FROM messages WHERE id = ?1", *COLUMNS);
        self.conn.query_row(&sql, [id], |row| stored(row, true)).optional().map_err(|e| self.error(&e))
    }

    /// Number of stored messages.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.count_matching(&Filter::default())
    }

    /// Number of stored messages that `filter` selects, its limit aside.
    pub fn count_matching(&self, filter: &Filter) -> Result<u64, StoreError> {
        let (condition, values) = filter.condition();
        let sql = format!("SELECT count(*) FROM messages WHERE {condition}");
        self.conn
            .query_row(&sql, params_from_iter(values.iter()), |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.error(&e))
    }

    /// How many of the messages `filter` selects have a delivery still to do (pending, in
    /// flight or parked): those `messages purge` keeps unless told otherwise.
    pub fn count_undelivered(&self, filter: &Filter) -> Result<u64, StoreError> {
        let (condition, values) = filter.condition();
        let sql = format!("SELECT count(*) FROM messages WHERE ({condition}) AND {HAS_OPEN_DELIVERY}");
        self.conn
            .query_row(&sql, params_from_iter(values.iter()), |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.error(&e))
    }

    /// Number of stored messages that `filter` selects, its limit aside, counted up to
    /// `cap`: `min(matching, cap)`. Counting stops there, so the answer costs at most `cap`
    /// index entries however many messages match (a day of a large store is 100 000 of
    /// them, most of a second with a cold cache).
    pub fn count_matching_up_to(&self, filter: &Filter, cap: u64) -> Result<u64, StoreError> {
        let (condition, mut values) = filter.condition();
        values.push(Value::Integer(i64::try_from(cap).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM messages WHERE {condition} LIMIT ?{})",
            values.len()
        );
        self.conn
            .query_row(&sql, params_from_iter(values.iter()), |row| row.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.error(&e))
    }

    /// The listener names that stored messages carry, sorted (a listener may have been
    /// removed from the configuration since).
    pub fn listeners(&self) -> Result<Vec<String>, StoreError> {
        let run = || -> rusqlite::Result<Vec<String>> {
            let mut statement =
                self.conn.prepare("SELECT DISTINCT listener FROM messages ORDER BY listener")?;
            let names = statement.query_map([], |row| row.get(0))?.collect();
            names
        };
        run().map_err(|e| self.error(&e))
    }

    /// SQLite's `PRAGMA integrity_check`: `"ok"` for a sound file, else the problems found.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let mut statement = self.conn.prepare("PRAGMA integrity_check").map_err(|e| self.error(&e))?;
        let lines: Vec<String> = statement
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.error(&e))?;
        Ok(lines.join("\n"))
    }

    fn select(
        &self,
        filter: &Filter,
        with_raw: bool,
        mut each: impl FnMut(StoredMessage) -> bool,
    ) -> Result<(), StoreError> {
        let (sql, values) = query(filter);
        let mut run = || -> rusqlite::Result<()> {
            let mut statement = self.conn.prepare(&sql)?;
            let mut rows = statement.query(params_from_iter(values.iter()))?;
            while let Some(row) = rows.next()? {
                if !each(stored(row, with_raw)?) {
                    break;
                }
            }
            Ok(())
        };
        run().map_err(|e| self.error(&e))
    }

    pub(super) fn error(&self, error: &rusqlite::Error) -> StoreError {
        StoreError::Unavailable(format!("{}: {}", self.file.display(), describe(error)))
    }
}

/// The SELECT for `filter` and its values.
///
/// Ordered by the time received (then id, the order of storage, for equal times): that is
/// the order `messages_received_at`, `messages_patient`, `messages_type` and
/// `messages_sender` keep, so a time range or a patient's newest messages are read from
/// the index in order. Ordered by id alone, SQLite prefers walking the whole table
/// backwards to a `--since` range on the index (the id order saves it a sort).
fn query(filter: &Filter) -> (String, Vec<Value>) {
    let (mut condition, mut values) = filter.condition();
    if let Some(limit) = filter.limit {
        // The newest `limit` that match, in either order.
        values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        condition = format!(
            "id IN (SELECT id FROM messages WHERE {condition} ORDER BY received_at DESC, id DESC LIMIT ?{})",
            values.len()
        );
    }
    let order = if filter.oldest_first { "ASC" } else { "DESC" };
    // `raw` always: the lane keys are computed from it ([`stored`]). It costs no extra page
    // read: the key-field columns that every listing reads sit after it in the row.
    let sql = format!(
        "SELECT {}, raw FROM messages WHERE {condition} ORDER BY received_at {order}, id {order}",
        *COLUMNS
    );
    (sql, values)
}

/// The message in `row`: [`COLUMNS`], then `raw`, whose bytes give the lane keys
/// ([`fields::lanes_of_stored`]) and are kept when `with_raw`.
fn stored(row: &Row<'_>, with_raw: bool) -> rusqlite::Result<StoredMessage> {
    let raw_at = KEY_FIELDS_AT + fields::COLUMNS.len();
    let encoding: String = row.get(5)?;
    let fields = KeyFields::read(row, KEY_FIELDS_AT)?
        .with_lanes_of_stored(row.get_ref(raw_at)?.as_blob().unwrap_or_default(), &encoding);
    Ok(StoredMessage {
        id: row.get(0)?,
        listener: row.get(1)?,
        peer: row.get(2)?,
        client_thumbprint: row.get(3)?,
        received_at: time(row.get(4)?),
        encoding,
        message_type: row.get(6)?,
        control_id: row.get(7)?,
        sending_application: row.get(8)?,
        sending_facility: row.get(9)?,
        processing_id: row.get(10)?,
        version: row.get(11)?,
        size: row.get::<_, i64>(12)? as u64,
        ack_code: row.get(13)?,
        status: status(row, 14)?,
        duplicate_count: row.get::<_, i64>(15)? as u64,
        last_duplicate_at: row.get::<_, Option<i64>>(16)?.map(time),
        reason: row.get(17)?,
        error_code: row.get(18)?,
        fields,
        raw: if with_raw { Some(row.get(raw_at)?) } else { None },
    })
}

fn status(row: &Row<'_>, index: usize) -> rusqlite::Result<Status> {
    let name: String = row.get(index)?;
    name.parse().map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// Microseconds since the Unix epoch → time.
pub(super) fn time(micros: i64) -> SystemTime {
    super::queue::from_micros(micros)
}

#[cfg(test)]
mod tests {

    use hl7_proto::refusal::Refusal;

    use super::*;
    use crate::store::{test_message, Disposition, MessageStore, NewMessage, SqliteOptions, SqliteStore};

    fn message(control_id: &str, disposition: Disposition) -> NewMessage {
        test_message(control_id, format!("MSH|{control_id}").as_bytes(), None, disposition)
    }

    #[test]
    fn status_filter_selects_by_status_and_uses_the_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let accepted = || Disposition::Accepted { duplicate_window: None };
        let failed = || Disposition::Refused(Refusal::StoreFailed { reason: "disk full".into() });
        let bad_end = || Disposition::Refused(Refusal::FrameBadEnd);
        for (id, disposition) in [("A1", accepted()), ("E1", failed()), ("R1", bad_end()), ("A2", accepted())]
        {
            rt.block_on(store.append(message(id, disposition))).unwrap();
        }
        store.close();
        let reader = Reader::open(dir.path()).unwrap();
        let ids = |status| -> Vec<String> {
            let filter = Filter { status, oldest_first: true, ..Filter::default() };
            reader.list(&filter).unwrap().into_iter().map(|m| m.control_id).collect()
        };
        assert_eq!(ids(None), ["A1", "E1", "R1", "A2"]);
        assert_eq!(ids(Some(Status::Accepted)), ["A1", "A2"]);
        assert_eq!(ids(Some(Status::Rejected)), ["R1"]);
        assert_eq!(ids(Some(Status::Error)), ["E1"]);
        let error = reader.message(2).unwrap().unwrap();
        assert_eq!((error.status, error.error_code), (Status::Error, Some(207)));
        assert_eq!(error.reason.as_deref(), Some("message not stored: disk full"));

        // A refused status is looked up in the partial index, not by scanning every message.
        for status in [Status::Rejected, Status::Error] {
            let (sql, values) =
                query(&Filter { status: Some(status), limit: Some(100), ..Filter::default() });
            let plan: Vec<String> = reader
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params_from_iter(values.iter()), |row| row.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(plan.iter().any(|step| step.contains("INDEX messages_refused")), "{status}: {plan:?}");
        }
    }

    /// The plan steps SQLite reports for `filter`'s query (the one `list` runs).
    fn plan(reader: &Reader, filter: &Filter) -> Vec<String> {
        let (sql, values) = query(filter);
        reader
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params_from_iter(values.iter()), |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Issue 14: each search filter selects the right messages, and answers from its
    /// index, never by reading every message (`SCAN messages`).
    #[test]
    fn search_filters_select_by_key_fields_and_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let accepted = || Disposition::Accepted { duplicate_window: None };
        let hl7 = |sender: &str, id: &str, kind: &str, rest: &str| {
            format!("MSH|^~\\&|{sender}|||20261104153000||{kind}|{id}|P|2.5\r{rest}")
        };
        let messages = [
            hl7("REG|MCM", "A1", "ADT^A01", "PID|1||111^^^H\rPV1|1|I|||||||||||||||||V1\r"),
            hl7("REG|MCM", "A2", "ADT^A08", "PID|1||222^^^H\r"),
            hl7("LAB|MCM", "O1", "ORM^O01", "PID|1||111^^^H\rORC|NW|PL9|FI9\r"),
            hl7("LAB|NORTH", "R1", "ORU^R01", "PID|1||333\rOBR|1|PL8|FI8\r"),
        ];
        for (raw, id) in messages.iter().zip(["A1", "A2", "O1", "R1"]) {
            let mut m = test_message(id, raw.as_bytes(), None, accepted());
            let header = hl7_proto::extract::extract(raw.as_bytes(), hl7_proto::charset::Charset::Utf8);
            m.message_type = format!("{}^{}", header.message_code.unwrap(), header.trigger_event.unwrap());
            m.sending_application = header.sending_application.unwrap();
            m.sending_facility = header.sending_facility.unwrap();
            rt.block_on(store.append(m)).unwrap();
        }
        store.close();
        let reader = Reader::open(dir.path()).unwrap();
        let text = |s: &str| Some(s.to_owned());
        let since = Some(SystemTime::now() - Duration::from_secs(3600));
        let cases: [(Filter, &[&str], &[&str]); 11] = [
            (Filter { patient_id: text("111"), ..Filter::default() }, &["O1", "A1"], &["messages_patient"]),
            (Filter { visit_number: text("V1"), ..Filter::default() }, &["A1"], &["messages_visit"]),
            (
                Filter { order: text("PL9"), ..Filter::default() },
                &["O1"],
                &["messages_placer_order", "messages_filler_order"],
            ),
            (Filter { order: text("FI8"), ..Filter::default() }, &["R1"], &["messages_filler_order"]),
            (Filter { control_id: text("A2"), ..Filter::default() }, &["A2"], &["messages_control_id"]),
            (
                Filter { message_type: text("ADT^A0*"), ..Filter::default() },
                &["A2", "A1"],
                &["messages_type"],
            ),
            (Filter { message_type: text("ORU^R01"), ..Filter::default() }, &["R1"], &["messages_type"]),
            (
                Filter {
                    sending_application: text("LAB"),
                    sending_facility: text("MCM"),
                    ..Filter::default()
                },
                &["O1"],
                &["messages_sender"],
            ),
            (
                Filter { sending_application: text("REG"), ..Filter::default() },
                &["A2", "A1"],
                &["messages_sender"],
            ),
            (Filter { since, ..Filter::default() }, &["R1", "O1", "A2", "A1"], &["messages_received_at"]),
            (
                Filter { until: Some(SystemTime::now() + Duration::from_secs(60)), ..Filter::default() },
                &["R1", "O1", "A2", "A1"],
                &["messages_received_at"],
            ),
        ];
        for (filter, expected, indexes) in cases {
            let what = filter.describe();
            let found: Vec<String> =
                reader.list(&filter).unwrap().into_iter().map(|m| m.control_id).collect();
            assert_eq!(found, expected, "{what}");
            // With and without a limit (`list` always has one).
            for filter in [filter.clone(), Filter { limit: Some(100), ..filter }] {
                let steps = plan(&reader, &filter);
                assert!(!steps.iter().any(|s| s.starts_with("SCAN messages")), "{what}: {steps:?}");
                for index in indexes {
                    assert!(
                        steps.iter().any(|s| s.contains(&format!("INDEX {index} "))),
                        "{what}: {index} not in {steps:?}"
                    );
                }
            }
        }
        // Patient data stays out of the description (audit lines).
        let described =
            Filter { patient_id: text("111"), order: text("PL9"), ..Filter::default() }.describe();
        assert!(!described.contains("111") && !described.contains("PL9"), "{described}");
    }

    /// Issue 17: the console pages a patient's messages by keyset (`before` the last one
    /// shown): the pages join up without a gap or a repeat, and each is read from the
    /// patient index, never by scanning every message.
    #[test]
    fn keyset_pages_follow_each_other_on_the_patient_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let accepted = || Disposition::Accepted { duplicate_window: None };
        for i in 0..7 {
            let patient = if i % 2 == 0 { "111" } else { "222" };
            let raw =
                format!("MSH|^~\\&|REG|MCM|||20261104153000||ADT^A08|C{i}|P|2.5\rPID|1||{patient}^^^H\r");
            rt.block_on(store.append(test_message(&format!("C{i}"), raw.as_bytes(), None, accepted())))
                .unwrap();
        }
        store.close();
        let reader = Reader::open(dir.path()).unwrap();
        let page = |before| -> Vec<String> {
            let filter =
                Filter { patient_id: Some("111".into()), limit: Some(2), before, ..Filter::default() };
            reader.list(&filter).unwrap().into_iter().map(|m| m.control_id).collect()
        };
        let position = |control_id: &str| {
            let id =
                reader.list(&Filter { control_id: Some(control_id.into()), ..Filter::default() }).unwrap()[0]
                    .id;
            reader.position(id).unwrap()
        };
        assert_eq!(page(None), ["C6", "C4"]);
        assert_eq!(page(position("C4")), ["C2", "C0"]);
        assert!(page(position("C0")).is_empty());
        assert_eq!(reader.position(999).unwrap(), None);
        let filter = Filter {
            patient_id: Some("111".into()),
            limit: Some(2),
            before: position("C4"),
            ..Filter::default()
        };
        let steps = plan(&reader, &filter);
        assert!(!steps.iter().any(|s| s.starts_with("SCAN messages")), "{steps:?}");
        assert!(steps.iter().any(|s| s.contains("INDEX messages_patient ")), "{steps:?}");
    }

    /// Issue 14: what the writer stored in the key-field columns is what the reader gives
    /// back, every column in its place (a message with all of them, one with none).
    #[test]
    fn key_fields_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let full = b"MSH|^~\\&|REG|MCM|||20261104153000-0500||ORM^O01|K1|P|2.5\r\
            PID|1||123456^^^HOSP^MR\rPV1|1|I|||||||||||||||||V77\rORC|NW|PL1|FI1\r";
        let accepted = || Disposition::Accepted { duplicate_window: None };
        rt.block_on(store.append(test_message("K1", full, None, accepted()))).unwrap();
        rt.block_on(store.append(test_message("K2", b"MSH|^~\\&|X", None, accepted()))).unwrap();
        store.close();
        let reader = Reader::open(dir.path()).unwrap();
        let listed = reader.list(&Filter { oldest_first: true, ..Filter::default() }).unwrap();
        let expected = KeyFields::extract(full, Charset::Utf8);
        assert_eq!(expected.placer_order.as_deref(), Some("PL1"), "the sample has every field");
        assert!(expected.message_time_utc.is_some() && expected.lane_patient.is_some());
        assert_eq!(listed[0].fields, expected);
        assert_eq!(reader.message(listed[0].id).unwrap().unwrap().fields, expected);
        let empty = &listed[1].fields;
        assert_eq!((&empty.patient_id, &empty.visit_number, &empty.filler_order), (&None, &None, &None));
        assert_eq!((empty.message_time_utc, empty.message_time_wall), (None, None));
    }

    #[test]
    fn counting_up_to_a_cap_stops_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for n in 0..7 {
            let id = format!("C{n}");
            let disposition = Disposition::Accepted { duplicate_window: None };
            rt.block_on(store.append(message(&id, disposition))).unwrap();
        }
        store.close();
        let reader = Reader::open(dir.path()).unwrap();
        let all = Filter::default();
        assert_eq!(reader.count_matching(&all).unwrap(), 7);
        assert_eq!(reader.count_matching_up_to(&all, 5).unwrap(), 5);
        assert_eq!(reader.count_matching_up_to(&all, 7).unwrap(), 7);
        assert_eq!(reader.count_matching_up_to(&all, 100).unwrap(), 7);
        // The filter's own limit does not count; its conditions do.
        let one = Filter { control_id: Some("C3".into()), limit: Some(0), ..Filter::default() };
        assert_eq!(reader.count_matching_up_to(&one, 5).unwrap(), 1);
    }

    #[test]
    fn status_names_round_trip() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert_eq!(
            "received".parse::<Status>().unwrap_err().to_string(),
            "unknown status \"received\": expected accepted, rejected or error"
        );
    }
}
