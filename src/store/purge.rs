//! [`purge`]: delete stored messages by [`Filter`], for `hl7d messages purge` (e.g. a
//! benchmark's messages in a production store), while the server runs.
//!
//! The purge opens a read-write connection of its own beside the server's writer. SQLite
//! lets one connection write at a time, so it deletes in transactions of at most
//! [`PURGE_BATCH`] messages, each one short: the server's group commit waits at most that
//! long for the lock (its own busy timeout is 5 s), and the purge waits for the server's
//! commits the same way. Only messages stored when the purge began are deleted, so a
//! sender that is still writing matching messages cannot keep it going. It leaves the
//! schema alone (a store of another version is refused) and WAL checkpoints to the server.

use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OpenFlags};

use super::read::{open_existing, HAS_OPEN_DELIVERY};
use super::sqlite::{describe, DATABASE_FILE};
use super::{Filter, StoreError};

/// Most messages deleted in one transaction.
pub const PURGE_BATCH: i64 = 500;

/// Deletes every message `filter` selects (its limit and order aside) that was stored when
/// the call began, [`PURGE_BATCH`] at a time; returns how many were deleted. The caller
/// decides whether an unfiltered purge is wanted ([`Filter::selects_all`]).
///
/// A message with a delivery still to do (pending, in flight or parked) is kept unless
/// `include_undelivered` (`--include-undelivered`); a deleted message's delivery rows go
/// with it (the schema's trigger).
pub fn purge(dir: &Path, filter: &Filter, include_undelivered: bool) -> Result<u64, StoreError> {
    let file = dir.join(DATABASE_FILE);
    let error = |e: rusqlite::Error| StoreError::Unavailable(format!("{}: {}", file.display(), describe(&e)));
    let (conn, _) = open_writable(dir)?;
    let last: Option<i64> =
        conn.query_row("SELECT max(id) FROM messages", [], |row| row.get(0)).map_err(error)?;
    let Some(last) = last else { return Ok(0) };
    let (condition, mut values) = filter.condition();
    values.push(Value::Integer(last));
    let last_index = values.len();
    values.push(Value::Integer(PURGE_BATCH));
    let keep = if include_undelivered { String::new() } else { format!(" AND NOT {HAS_OPEN_DELIVERY}") };
    let sql = format!(
        "DELETE FROM messages WHERE id IN \
         (SELECT id FROM messages WHERE ({condition}) AND id <= ?{last_index}{keep} ORDER BY id LIMIT ?{})",
        values.len()
    );
    let mut statement = conn.prepare(&sql).map_err(error)?;
    let mut deleted = 0u64;
    loop {
        // Each statement is a transaction of its own (autocommit).
        let n = statement.execute(params_from_iter(values.iter())).map_err(error)?;
        deleted += n as u64;
        if (n as i64) < PURGE_BATCH {
            return Ok(deleted);
        }
    }
}

/// A read-write connection to an existing store of this build's schema version, and the
/// database file's path: for a purge and for the operator's delivery actions
/// (`deliveries.rs`), beside the server's writer.
pub(super) fn open_writable(dir: &Path) -> Result<(Connection, PathBuf), StoreError> {
    // No CREATE: a purge never makes a store. SQLite gives a `-wal`/`-shm` it creates the
    // database file's mode (0600).
    open_existing(dir, OpenFlags::SQLITE_OPEN_READ_WRITE, |conn| {
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Checkpoints are the server's (after its ACKs); see `SqliteStore`.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
    })
}
