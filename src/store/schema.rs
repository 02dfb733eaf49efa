//! The database schema and its versioned migrations (`PRAGMA user_version`).
//!
//! Each migration runs once, in its own transaction together with the version bump, so a
//! crash during a migration leaves the previous version intact. Migrations are only ever
//! appended: a released one is never edited.

use rusqlite::{Connection, TransactionBehavior};

/// The schema version this build creates and understands (the number of migrations).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the messages table.
    //
    // `received_at` and `last_duplicate_at` are microseconds since the Unix epoch (UTC).
    // `ack_code` is the code the listener answered with after the commit (AA or CA), NULL
    // when the profile or MSH-15 asked for no ACK. `status` is `received` for every row
    // written by v1; it is there for later stages (forwarding, processing). `raw` is last so
    // that listing rows does not read the message bytes.
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
    r#"
    ALTER TABLE messages RENAME COLUMN status TO v1_status;
    ALTER TABLE messages ADD COLUMN status TEXT NOT NULL DEFAULT 'accepted';
    ALTER TABLE messages ADD COLUMN reason TEXT;
    ALTER TABLE messages ADD COLUMN error_code INTEGER;
    CREATE INDEX messages_refused ON messages (status) WHERE status <> 'accepted';
    "#,
];

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
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        // IMMEDIATE: take the write lock first, so that two processes opening the same new
        // file cannot both run migration 1.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Re-read under the lock: another process may have migrated meanwhile.
        if version(&tx)? > index as i64 {
            continue;
        }
        tx.execute_batch(sql)?;
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

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(migrate(&mut conn), Err(MigrateError::TooNew(v)) if v == SCHEMA_VERSION + 1));
    }
}
