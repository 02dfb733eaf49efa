//! The database schema and its versioned migrations (`PRAGMA user_version`).
//!
//! Each migration runs once, in its own transaction together with the version bump, so a
//! crash during a migration leaves the previous version intact. Migrations are only ever
//! appended: a released one is never edited.

use hl7_proto::charset::Charset;
use hl7_proto::keys::duplicate_key_of;
use rusqlite::{params, Connection, ToSql, TransactionBehavior};

use super::fields::{KeyFields, COLUMNS};

/// The schema version this build creates and understands (the number of migrations).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Rows read at a time when a migration rewrites every row (memory stays bounded whatever
/// the store's size; the migration is still one transaction).
const FILL_BATCH: i64 = 1000;

/// One step of a migration: SQL, or Rust code run on the migration's transaction.
enum Step {
    Sql(&'static str),
    Code(fn(&Connection) -> rusqlite::Result<()>),
}

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&[Step]] = &[
    // 1: the messages table.
    //
    // `received_at` and `last_duplicate_at` are microseconds since the Unix epoch (UTC).
    // `ack_code` is the code the listener answered with after the commit (AA or CA), NULL
    // when the profile or MSH-15 asked for no ACK. `status` is `received` for every row
    // written by v1; it is there for later stages (forwarding, processing). `raw` is last so
    // that listing rows does not read the message bytes.
    &[Step::Sql(
        r#"
    CREATE TABLE messages (
        id                  INTEGER PRIMARY KEY,
        listener            TEXT    NOT NULL,
        peer                TEXT    NOT NULL,
        client_thumbprint   TEXT,
        received_at         INTEGER NOT NULL,
        charset             TEXT    NOT NULL,
        message_type        TEXT    NOT NULL,
        control_id          TEXT    NOT NULL,
        sending_application TEXT    NOT NULL,
        sending_facility    TEXT    NOT NULL,
        processing_id       TEXT    NOT NULL,
        version             TEXT    NOT NULL,
        size                INTEGER NOT NULL,
        ack_code            TEXT,
        status              TEXT    NOT NULL,
        duplicate_count     INTEGER NOT NULL DEFAULT 0,
        last_duplicate_at   INTEGER,
        raw                 BLOB    NOT NULL
    );
    -- Duplicate detection: same listener, MSH-10, MSH-3, MSH-4 within a time window.
    CREATE INDEX messages_duplicate
        ON messages (listener, control_id, sending_application, sending_facility, received_at);
    -- Retention and `--since`.
    CREATE INDEX messages_received_at ON messages (received_at);
    "#,
    )],
    // 2: refused messages are kept too, with status `rejected` or `error` and why.
    //
    // `status` becomes `accepted` | `rejected` | `error` (see `store::Status`); every row
    // already stored was accepted. `reason` is the refusal's text as the sender got it in
    // MSA-3 and `error_code` its ERR-3 code (HL7 table 0357); both are NULL for accepted
    // rows.
    //
    // No row is rewritten: renaming a column and adding one with a constant default only
    // change the schema (existing rows read the default), where an UPDATE of `status` or a
    // table rebuild would rewrite every stored message. Measured on 1 million 608-byte
    // messages (860 MB): this migration takes 0.7–1.2 s in the sqlite3 shell (5 s at
    // `hl7d serve` start-up in a debug build; it reads every row once, to build the partial
    // index), a rebuild 15–37 s and leaves a 1.7 GB file. The price: the new columns sit after `raw`,
    // so reading them from a row whose message spills into overflow pages (over ~4 KB) walks
    // those pages; and `v1_status` (`received` in v1 rows, '' in new ones) stays until a
    // later migration that has to rewrite the table anyway drops it.
    //
    // Only refused rows enter `messages_refused` (a partial index): accepted inserts do not
    // pay for it, and `--status rejected|error` finds the few refused rows without a scan.
    &[Step::Sql(
        r#"
    ALTER TABLE messages RENAME COLUMN status TO v1_status;
    ALTER TABLE messages ADD COLUMN status TEXT NOT NULL DEFAULT 'accepted';
    ALTER TABLE messages ADD COLUMN reason TEXT;
    ALTER TABLE messages ADD COLUMN error_code INTEGER;
    CREATE INDEX messages_refused ON messages (status) WHERE status <> 'accepted';
    "#,
    )],
    // 3 (schema v2 of issue 14): key fields read at ingest, indexed for search, and the
    // narrow duplicate key.
    //
    // The columns are what `KeyFields` holds (see `fields.rs` and `hl7_proto::extract` for
    // where each comes from); `message_time_*` are microseconds, `dup_key` is
    // `hl7_proto::keys::duplicate_key_of(listener, MSH-3, MSH-4, MSH-10)` as the i64 with
    // the same bits. Every stored row gets them here: `fill_key_fields` runs the same
    // extraction over each row's bytes (a rewrite of every row, measured in BENCHMARKS.md).
    //
    // The five-text-column duplicate index goes; `(dup_key, received_at)` replaces it. The
    // indexes on fields many messages lack (orders in ADT, visits in lab results) are
    // partial (`IS NOT NULL`), so those inserts do not pay for them; an equality search
    // implies the condition, so SQLite uses them. Indexes are built after the fill, once.
    &[
        Step::Sql(
            r#"
    ALTER TABLE messages ADD COLUMN patient_id TEXT;
    ALTER TABLE messages ADD COLUMN patient_authority TEXT;
    ALTER TABLE messages ADD COLUMN visit_number TEXT;
    ALTER TABLE messages ADD COLUMN placer_order TEXT;
    ALTER TABLE messages ADD COLUMN filler_order TEXT;
    ALTER TABLE messages ADD COLUMN message_time_utc INTEGER;
    ALTER TABLE messages ADD COLUMN message_time_wall INTEGER;
    ALTER TABLE messages ADD COLUMN trigger_event TEXT;
    ALTER TABLE messages ADD COLUMN lane_sender TEXT;
    ALTER TABLE messages ADD COLUMN lane_patient TEXT;
    ALTER TABLE messages ADD COLUMN dup_key INTEGER;
    DROP INDEX messages_duplicate;
    "#,
        ),
        Step::Code(fill_key_fields),
        Step::Sql(
            r#"
    CREATE INDEX messages_dup_key ON messages (dup_key, received_at);
    CREATE INDEX messages_patient ON messages (patient_id, received_at) WHERE patient_id IS NOT NULL;
    CREATE INDEX messages_visit ON messages (visit_number) WHERE visit_number IS NOT NULL;
    CREATE INDEX messages_placer_order ON messages (placer_order) WHERE placer_order IS NOT NULL;
    CREATE INDEX messages_filler_order ON messages (filler_order) WHERE filler_order IS NOT NULL;
    CREATE INDEX messages_control_id ON messages (control_id);
    CREATE INDEX messages_type ON messages (message_type, received_at);
    CREATE INDEX messages_sender ON messages (sending_application, sending_facility, received_at);
    "#,
        ),
    ],
    // 4 (issue 15): the delivery queue. One row per (message, route) the message is to be
    // delivered to, written by the writer in the same transaction as the message (see
    // `queue.rs`), so a crash cannot store a message and lose its deliveries.
    //
    // - `id` orders the queue: inside a lane, rows go out in `id` order, one at a time.
    // - `lane` is `hl7_proto::keys::lane_key` under the route's `order`: the message's
    //   stored `lane_sender` or `lane_patient`, or `strict` (since schema 6 the lane is
    //   computed at ingest and kept here only).
    // - `state`: `pending` (waiting, due at `next_attempt_at`), `in_flight` (an attempt is
    //   under way; back to `pending` when hl7d starts, since such an attempt was cut off),
    //   `delivered`, `parked` (held for an operator: its lane waits behind it) or `skipped`
    //   (an operator gave up on it; kept, never sent).
    // - times are microseconds since the Unix epoch, like `messages.received_at`;
    //   `next_attempt_at` is `queued_at` until a failed attempt moves it; `done_at` is when
    //   the row became delivered, parked or skipped.
    // - `last_error` and `response` never hold message content (ACK codes, HTTP status
    //   lines, error kinds); `resend_of` links `hl7d messages resend` rows to the original.
    //
    // `deliveries_open` holds only the rows still to do (a partial index, so delivered rows
    // cost nothing there): the engine finds each lane's head on it with one seek per lane
    // (`queue.rs`), whatever the number of pending rows. `deliveries_parked` (only parked
    // rows, few) answers "which lanes are held" without walking every lane. The trigger
    // deletes a message's delivery rows with it (retention, `messages purge`): retention
    // and purge decide which messages may go (never one with an open delivery unless told
    // to), and no delivery row is left pointing at nothing.
    &[Step::Sql(
        r#"
    CREATE TABLE deliveries (
        id               INTEGER PRIMARY KEY,
        message_id       INTEGER NOT NULL,
        route            TEXT    NOT NULL,
        lane             TEXT    NOT NULL,
        state            TEXT    NOT NULL,
        attempts         INTEGER NOT NULL DEFAULT 0,
        queued_at        INTEGER NOT NULL,
        next_attempt_at  INTEGER NOT NULL,
        first_attempt_at INTEGER,
        last_attempt_at  INTEGER,
        done_at          INTEGER,
        last_error       TEXT,
        response         TEXT,
        resend_of        INTEGER
    );
    CREATE INDEX deliveries_open ON deliveries (route, lane, id)
        WHERE state IN ('pending', 'in_flight', 'parked');
    CREATE INDEX deliveries_message ON deliveries (message_id);
    CREATE INDEX deliveries_parked ON deliveries (route, lane, id) WHERE state = 'parked';
    CREATE TRIGGER messages_delete_deliveries AFTER DELETE ON messages
    BEGIN
        DELETE FROM deliveries WHERE message_id = old.id;
    END;
    "#,
    )],
    // 5 (issue 15): the number of finished delivery rows per route and state, kept by
    // triggers, for `hl7d routes status`.
    //
    // `delivery_counts` holds, for each route, how many of its rows are `delivered` or
    // `skipped` now (rows that retention or a purge deleted are no longer counted). The
    // open states need no counter: `deliveries_open` holds only those rows, so they are
    // counted there. A delivered row is in no partial index, and counting them in the
    // table walks every row: measured on 1 million delivered rows (BENCHMARKS.md), a scan
    // costs ~0.1 s of CPU and reads the whole table, an index `(route) WHERE state =
    // 'delivered'` still ~0.06 s (it walks a million entries), the counter a few
    // microseconds. Its price is on the writer: one upsert of a small, hot row when a
    // delivery finishes (a few µs), nothing when a row is claimed or retried (the
    // triggers' WHEN is false). The triggers count whoever writes, so the writer, the
    // operator's commands and the retention trigger need not know about it.
    &[Step::Sql(
        r#"
    CREATE TABLE delivery_counts (
        route TEXT    NOT NULL,
        state TEXT    NOT NULL,
        rows  INTEGER NOT NULL,
        PRIMARY KEY (route, state)
    ) WITHOUT ROWID;
    INSERT INTO delivery_counts (route, state, rows)
        SELECT route, state, count(*) FROM deliveries
        WHERE state IN ('delivered', 'skipped') GROUP BY route, state;
    CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries
    WHEN new.state IN ('delivered', 'skipped')
    BEGIN
        INSERT INTO delivery_counts (route, state, rows) VALUES (new.route, new.state, 1)
            ON CONFLICT (route, state) DO UPDATE SET rows = rows + 1;
    END;
    CREATE TRIGGER deliveries_count_leave AFTER UPDATE OF state, route ON deliveries
    WHEN old.state IN ('delivered', 'skipped') AND (new.state <> old.state OR new.route <> old.route)
    BEGIN
        UPDATE delivery_counts SET rows = rows - 1 WHERE route = old.route AND state = old.state;
    END;
    CREATE TRIGGER deliveries_count_enter AFTER UPDATE OF state, route ON deliveries
    WHEN new.state IN ('delivered', 'skipped') AND (new.state <> old.state OR new.route <> old.route)
    BEGIN
        INSERT INTO delivery_counts (route, state, rows) VALUES (new.route, new.state, 1)
            ON CONFLICT (route, state) DO UPDATE SET rows = rows + 1;
    END;
    CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries
    WHEN old.state IN ('delivered', 'skipped')
    BEGIN
        UPDATE delivery_counts SET rows = rows - 1 WHERE route = old.route AND state = old.state;
    END;
    "#,
    )],
    // 6 (issue 14, size): the lane keys leave `messages`. `lane_sender` and `lane_patient`
    // (36 bytes a row, 0.045x the raw bytes on the 10 M store of BENCHMARKS.md) are no
    // longer written: new rows hold NULL there (one record-header byte each). The lane is
    // still computed once at ingest, by the listener's extraction, for the message's
    // delivery rows, which keep it (`deliveries.lane`); where a stored message's lane is
    // needed again (backfill, resend, `messages show`/`list`) it is computed from the row's
    // bytes by the same extraction and key (`fields::lanes_of_stored`), never from these
    // columns, so old and new rows are read alike.
    //
    // No row is rewritten: dropping the columns would rewrite the whole table (SQLite's
    // DROP COLUMN), so the values of rows written before stay where they are, unread, until
    // a later migration rewrites the table anyway. The migration itself changes nothing
    // but the version, which keeps a build of schema 5 (which reads the columns) from
    // opening a store whose new rows lack them.
    &[Step::Sql("")],
    // 7 (issue 14, write path): duplicates are looked up on the control-id index, and the
    // duplicate-key index goes.
    //
    // `messages_dup_key (dup_key, received_at)` and `messages_control_id (control_id)` were
    // the two indexes whose keys arrive in no order (a hash; each sender's own counter), so
    // each dirtied a leaf page of its own for every message: about 1.3 WAL frames per
    // message each, of the 3.7 that schema 3 wrote at 16 connections (BENCHMARKS.md, "WAL
    // pages per message"). One such index now serves both: `(control_id, received_at)`
    // finds a duplicate's candidates (MSH-10 within the window; then the listener, MSH-3,
    // MSH-4 and the bytes decide, as before) and `--control-id` search (its newest first).
    // `dup_key` is no longer written (NULL in new rows; rows before keep their value,
    // unread), nor is its index kept: 9 bytes a row and an index of 29 bytes a message.
    //
    // The price: building the new index reads every row once (a migration of a large store
    // takes that long at the first start; measured in BENCHMARKS.md), and a candidate is
    // found by a text key a sender chooses rather than a fixed-width hash; a sender that
    // reuses one control id for many messages makes each lookup walk that id's entries in
    // the window, as the hash index did for its key.
    &[Step::Sql(
        r#"
    DROP INDEX messages_dup_key;
    DROP INDEX messages_control_id;
    CREATE INDEX messages_control_id ON messages (control_id, received_at);
    "#,
    )],
];

/// Migration 3: fills the key-field columns and `dup_key` of every stored row from its
/// bytes and header columns, [`FILL_BATCH`] rows at a time. The columns are this build's
/// `fields::COLUMNS`, so since schema 6 the lane columns stay NULL here too.
fn fill_key_fields(conn: &Connection) -> rusqlite::Result<()> {
    let mut select = conn.prepare(
        "SELECT id, listener, charset, sending_application, sending_facility, control_id, raw \
         FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    // ?1 the row's id, ?2.. the key fields in `fields::COLUMNS` order, then its dup_key.
    let assignments: Vec<String> =
        COLUMNS.iter().enumerate().map(|(i, column)| format!("{column} = ?{}", i + 2)).collect();
    let mut update = conn.prepare(&format!(
        "UPDATE messages SET {}, dup_key = ?{} WHERE id = ?1",
        assignments.join(", "),
        COLUMNS.len() + 2
    ))?;
    let mut after = i64::MIN;
    loop {
        let rows = select
            .query_map(params![after, FILL_BATCH], |row| {
                let charset: String = row.get(2)?;
                let key = duplicate_key_of(
                    &row.get::<_, String>(1)?,
                    &row.get::<_, String>(3)?,
                    &row.get::<_, String>(4)?,
                    &row.get::<_, String>(5)?,
                );
                // A charset name this build does not know cannot be in a row it wrote;
                // decoding as UTF-8 at worst replaces some characters.
                let charset = Charset::from_config_name(&charset).unwrap_or(Charset::Utf8);
                let raw = row.get_ref(6)?;
                let fields = KeyFields::extract(raw.as_blob().unwrap_or_default(), charset);
                Ok((row.get::<_, i64>(0)?, fields, key as i64))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let Some(&(last, ..)) = rows.last() else { return Ok(()) };
        for (id, fields, key) in rows {
            let mut values: Vec<&dyn ToSql> = vec![&id];
            values.extend(fields.values());
            values.push(&key);
            update.execute(&values[..])?;
        }
        after = last;
    }
}

/// Why migrating failed.
#[derive(Debug)]
pub enum MigrateError {
    /// The file's version is newer than [`SCHEMA_VERSION`].
    TooNew(i64),
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(error: rusqlite::Error) -> Self {
        MigrateError::Sqlite(error)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`]; returns the version found before.
pub fn migrate(conn: &mut Connection) -> Result<i64, MigrateError> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(MigrateError::TooNew(found));
    }
    for (index, steps) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        // IMMEDIATE: take the write lock first, so that two processes opening the same new
        // file cannot both run migration 1.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read under the lock: another process may have migrated meanwhile.
        if version(&tx)? > index as i64 {
            continue;
        }
        for step in *steps {
            match step {
                Step::Sql(sql) => tx.execute_batch(sql)?,
                Step::Code(code) => code(&tx)?,
            }
        }
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(found)
}

/// `PRAGMA user_version`.
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_new_database_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), 0);
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(migrate(&mut conn).unwrap(), SCHEMA_VERSION);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1);
    }

    /// Migration 3 on a version 2 store: every row keeps its bytes and gets its key fields
    /// and duplicate key, in batches (more rows than one batch), and the old wide duplicate
    /// index is gone.
    #[test]
    fn migration_3_fills_the_key_fields_of_a_version_2_store() {
        let mut conn = Connection::open_in_memory().unwrap();
        for steps in &MIGRATIONS[..2] {
            for step in *steps {
                let Step::Sql(sql) = step else { panic!("migrations 1 and 2 are SQL") };
                conn.execute_batch(sql).unwrap();
            }
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        let rows = FILL_BATCH + 5;
        let raw = |n: i64| {
            format!(
                "MSH|^~\\&|APP|FAC|||20261104153000+0100||ORU^R01|C{n}|P|2.5\rPID|1||P{n}^^^HOSP\rOBR|1|PL{n}|FI{n}\r"
            )
        };
        for n in 0..rows {
            conn.execute(
                "INSERT INTO messages (listener, peer, received_at, charset, message_type, control_id, \
                 sending_application, sending_facility, processing_id, version, size, v1_status, raw, status) \
                 VALUES ('lab', 'p', ?1, 'utf-8', 'ORU^R01', ?2, 'APP', 'FAC', 'P', '2.5', 0, '', ?3, 'accepted')",
                params![n, format!("C{n}"), raw(n).into_bytes()],
            )
            .unwrap();
        }
        // A row whose bytes are not a message: it migrates with empty fields.
        conn.execute(
            "INSERT INTO messages (listener, peer, received_at, charset, message_type, control_id, \
             sending_application, sending_facility, processing_id, version, size, v1_status, raw, status) \
             VALUES ('lab', 'p', 0, 'utf-8', '', '', '', '', '', '', 0, '', x'00ff', 'rejected')",
            [],
        )
        .unwrap();

        assert_eq!(migrate(&mut conn).unwrap(), 2);
        let last = rows - 1;
        let (raw_last, patient, placer, filler, utc, wall, key): (Vec<u8>, String, String, String, i64, i64, i64) = conn
            .query_row(
                "SELECT raw, patient_id, placer_order, filler_order, message_time_utc, message_time_wall, dup_key \
                 FROM messages WHERE control_id = ?1",
                [format!("C{last}")],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .unwrap();
        assert_eq!(raw_last, raw(last).into_bytes());
        assert_eq!((patient, placer, filler), (format!("P{last}"), format!("PL{last}"), format!("FI{last}")));
        assert_eq!(wall - utc, 3600 * 1_000_000, "+01:00");
        assert_eq!(key, duplicate_key_of("lab", "APP", "FAC", &format!("C{last}")) as i64);
        let unfilled: i64 =
            conn.query_row("SELECT count(*) FROM messages WHERE dup_key IS NULL", [], |r| r.get(0)).unwrap();
        assert_eq!(unfilled, 0);
        let lanes: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages WHERE lane_sender IS NOT NULL OR lane_patient IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(lanes, 0, "schema 6: no lane keys in messages");
        let junk: (Option<String>, Option<i64>) = conn
            .query_row(
                "SELECT patient_id, message_time_wall FROM messages WHERE status = 'rejected'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(junk, (None, None));
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!indexes.iter().any(|name| name == "messages_duplicate"), "{indexes:?}");
        // Schema 7 dropped migration 3's `messages_dup_key` again: duplicates are looked up
        // on the control-id index.
        assert!(!indexes.iter().any(|name| name == "messages_dup_key"), "{indexes:?}");
        let control_id: String = conn
            .query_row("SELECT sql FROM sqlite_master WHERE name = 'messages_control_id'", [], |r| r.get(0))
            .unwrap();
        assert!(control_id.contains("(control_id, received_at)"), "{control_id}");
    }

    /// Migration 4 on a version 3 store: the messages stay as they were, the delivery
    /// queue is empty, and deleting a message deletes its delivery rows.
    #[test]
    fn migration_4_adds_the_delivery_queue_to_a_version_3_store() {
        let mut conn = Connection::open_in_memory().unwrap();
        for steps in &MIGRATIONS[..3] {
            let tx = conn.transaction().unwrap();
            for step in *steps {
                match step {
                    Step::Sql(sql) => tx.execute_batch(sql).unwrap(),
                    Step::Code(code) => code(&tx).unwrap(),
                }
            }
            tx.commit().unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        for n in 0..2 {
            conn.execute(
                "INSERT INTO messages (listener, peer, received_at, charset, message_type, control_id, \
                 sending_application, sending_facility, processing_id, version, size, v1_status, raw, status) \
                 VALUES ('lab', 'p', ?1, 'utf-8', 'ADT^A01', 'C', 'APP', 'FAC', 'P', '2.5', 3, '', x'4d5348', 'accepted')",
                [n],
            )
            .unwrap();
        }

        assert_eq!(migrate(&mut conn).unwrap(), 3);
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let messages: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
        assert_eq!(messages, 2);
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('deliveries') ORDER BY cid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            columns,
            [
                "id",
                "message_id",
                "route",
                "lane",
                "state",
                "attempts",
                "queued_at",
                "next_attempt_at",
                "first_attempt_at",
                "last_attempt_at",
                "done_at",
                "last_error",
                "response",
                "resend_of"
            ]
        );
        for (message, state) in [(1, "delivered"), (1, "pending"), (2, "pending")] {
            conn.execute(
                "INSERT INTO deliveries (message_id, route, lane, state, queued_at, next_attempt_at) \
                 VALUES (?1, 'r', 'strict', ?2, 0, 0)",
                params![message, state],
            )
            .unwrap();
        }
        let attempts: i64 =
            conn.query_row("SELECT attempts FROM deliveries WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(attempts, 0, "attempts default to 0");
        conn.execute("DELETE FROM messages WHERE id = 1", []).unwrap();
        let left: Vec<i64> = conn
            .prepare("SELECT message_id FROM deliveries")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(left, [2], "the trigger took message 1's deliveries with it");
    }

    /// Migration 5 on a version 4 store counts the finished rows already there; from then
    /// on the triggers keep `delivery_counts` equal to a count of the rows, whatever
    /// inserts, moves between states or deletes them (a message's deletion included).
    #[test]
    fn migration_5_counts_finished_deliveries_and_its_triggers_keep_the_count() {
        let mut conn = Connection::open_in_memory().unwrap();
        for steps in &MIGRATIONS[..4] {
            let tx = conn.transaction().unwrap();
            for step in *steps {
                match step {
                    Step::Sql(sql) => tx.execute_batch(sql).unwrap(),
                    Step::Code(code) => code(&tx).unwrap(),
                }
            }
            tx.commit().unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        for n in 1..=20 {
            conn.execute(
                "INSERT INTO messages (id, listener, peer, received_at, charset, message_type, control_id, \
                 sending_application, sending_facility, processing_id, version, size, v1_status, raw, status) \
                 VALUES (?1, 'lab', 'p', 0, 'utf-8', 'ADT^A01', 'C', 'APP', 'FAC', 'P', '2.5', 3, '', x'4d5348', 'accepted')",
                [n],
            )
            .unwrap();
        }
        let insert = |conn: &Connection, message: i64, route: &str, state: &str| {
            conn.execute(
                "INSERT INTO deliveries (message_id, route, lane, state, queued_at, next_attempt_at) \
                 VALUES (?1, ?2, 'strict', ?3, 0, 0)",
                params![message, route, state],
            )
            .unwrap();
        };
        for (message, route, state) in [
            (1, "a", "delivered"),
            (2, "a", "delivered"),
            (3, "a", "skipped"),
            (4, "b", "delivered"),
            (5, "a", "pending"),
        ] {
            insert(&conn, message, route, state);
        }
        assert_eq!(migrate(&mut conn).unwrap(), 4);

        let counted = |conn: &Connection| -> Vec<(String, String, i64)> {
            conn.prepare(
                "SELECT route, state, rows FROM delivery_counts WHERE rows <> 0 ORDER BY route, state",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let actual = |conn: &Connection| -> Vec<(String, String, i64)> {
            conn.prepare(
                "SELECT route, state, count(*) FROM deliveries WHERE state IN ('delivered', 'skipped') \
                 GROUP BY route, state ORDER BY route, state",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let row = |route: &str, state: &str, n: i64| (route.to_owned(), state.to_owned(), n);
        assert_eq!(
            counted(&conn),
            [row("a", "delivered", 2), row("a", "skipped", 1), row("b", "delivered", 1)]
        );

        // A pseudo-random walk over every kind of change, checked after each step.
        let states = ["pending", "in_flight", "delivered", "parked", "skipped"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..600 {
            let state = states[next(5) as usize];
            let route = ["a", "b", "c"][next(3) as usize];
            match next(10) {
                0..=3 => insert(&conn, 1 + next(20) as i64, route, state),
                4..=7 => {
                    let changed = conn
                        .execute(
                            "UPDATE deliveries SET state = ?1 WHERE id = (SELECT id FROM deliveries ORDER BY random() LIMIT 1)",
                            [state],
                        )
                        .unwrap();
                    assert!(changed <= 1);
                }
                8 => {
                    conn.execute(
                        "DELETE FROM deliveries WHERE id = (SELECT id FROM deliveries ORDER BY random() LIMIT 1)",
                        [],
                    )
                    .unwrap();
                }
                _ => {
                    // Retention or a purge: the message goes, its deliveries with it.
                    let message = 1 + next(20) as i64;
                    conn.execute("DELETE FROM messages WHERE id = ?1", [message]).unwrap();
                    conn.execute(
                        "INSERT INTO messages (id, listener, peer, received_at, charset, message_type, control_id, \
                         sending_application, sending_facility, processing_id, version, size, v1_status, raw, status) \
                         VALUES (?1, 'lab', 'p', 0, 'utf-8', 'ADT^A01', 'C', 'APP', 'FAC', 'P', '2.5', 3, '', x'4d5348', 'accepted')",
                        [message],
                    )
                    .unwrap();
                }
            }
            assert_eq!(counted(&conn), actual(&conn), "after step {step}");
        }
        assert!(!actual(&conn).is_empty());
    }

    /// Migration 6 on a version 5 store whose rows hold the lane keys the schema-5 writer
    /// stored (`KeyFields::extract_with_header` on the listener's MSH view, as that writer
    /// did): nothing is rewritten, and the lanes computed from each row's bytes now
    /// ([`lanes_of_stored`], what backfill, resend and `messages show` use) are the stored
    /// ones, under both orders.
    #[test]
    fn migration_6_leaves_a_version_5_stores_lanes_and_computes_the_same_ones() {
        use hl7_proto::inbound::{inspect, Inspection};

        use super::super::fields::lanes_of_stored;

        let mut conn = Connection::open_in_memory().unwrap();
        for steps in &MIGRATIONS[..5] {
            let tx = conn.transaction().unwrap();
            for step in *steps {
                match step {
                    Step::Sql(sql) => tx.execute_batch(sql).unwrap(),
                    Step::Code(code) => code(&tx).unwrap(),
                }
            }
            tx.commit().unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        let messages: [&[u8]; 4] = [
            b"MSH|^~\\&|REG|MCM|||20261128||ADT^A01|C1|P|2.5\rPID|1||P1^^^HOSP\r",
            b"MSH|^~\\&|H\xd4PITAL|CH\xc9|||20261128||ADT^A01|C2|P|2.5|||||FR|8859/1\rPID|1||M\xdcLLER^^^H\r",
            b"MSH|^~\\&| LAB | NORTH |||20261128||ORU^R01|C3|P|2.5\rOBR|1|PL1\r",
            b"MSH|^~\\&|REG|A/B|||20261128||ADT^A08|C4|P|2.5\rPID|1||C%D^^^H\r",
        ];
        let mut stored = Vec::new();
        for raw in messages {
            let Inspection::Accept { msh, charset } = inspect(raw, Charset::Utf8, false) else {
                panic!("accepted")
            };
            let fields = KeyFields::extract_with_header(raw, &msh, charset);
            let lanes = (fields.lane_sender.clone().unwrap(), fields.lane_patient.clone().unwrap());
            conn.execute(
                "INSERT INTO messages (listener, peer, received_at, charset, message_type, control_id, \
                 sending_application, sending_facility, processing_id, version, size, v1_status, raw, status, \
                 lane_sender, lane_patient) \
                 VALUES ('lab', 'p', 0, ?1, '', '', ?2, ?3, 'P', '2.5', 0, '', ?4, 'accepted', ?5, ?6)",
                params![
                    charset.config_name(),
                    String::from_utf8_lossy(msh.sending_application),
                    String::from_utf8_lossy(msh.sending_facility),
                    raw,
                    lanes.0,
                    lanes.1
                ],
            )
            .unwrap();
            stored.push(lanes);
        }
        assert_eq!(stored[1].0, "sender/HÔPITAL/CHÉ");

        assert_eq!(migrate(&mut conn).unwrap(), 5);
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let rows: Vec<(String, Vec<u8>, String, String)> = conn
            .prepare("SELECT charset, raw, lane_sender, lane_patient FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), messages.len());
        for ((charset, raw, sender, patient), expected) in rows.iter().zip(&stored) {
            assert_eq!(&(sender.clone(), patient.clone()), expected, "the rows are as they were");
            assert_eq!(&lanes_of_stored(raw, charset), expected);
        }
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(migrate(&mut conn), Err(MigrateError::TooNew(v)) if v == SCHEMA_VERSION + 1));
    }
}
