//! Online backup and integrity check of the SQLite store: `hl7d store backup` and
//! `hl7d store verify`.
//!
//! Owns copying `messages.db` while hl7d keeps writing, and reading the copy (or the live
//! file) for damage. It never writes to the store: both open it read-only, on connections
//! of their own, and neither knows the schema beyond the `messages` table's name.
//!
//! # Why the copy is consistent and the writer never waits
//!
//! The copy uses SQLite's online backup API ([`rusqlite::backup::Backup`]), stepping
//! [`BackupOptions::pages_per_step`] pages at a time with a short pause between steps. Left
//! to itself, each step takes and drops its own read lock, and a commit by any other
//! connection between two steps restarts the copy from page 1: under a steady stream of
//! messages a stepped backup of a large store would restart for ever. So [`backup`] first
//! opens a read transaction on its source connection and holds it until the last page is
//! copied; every step then reads that one snapshot and nothing restarts. In WAL mode a
//! reader never blocks the writer, so hl7d goes on committing (and ACKing) throughout. What
//! it costs the writer: disk bandwidth (hence the pause between steps, and a flush of the
//! copy after each step, so that its fsyncs never queue behind hundreds of megabytes at the
//! end), and a longer WAL: checkpoints cannot pass the snapshot, so the WAL grows by what
//! arrives during the backup, and the first checkpoint after it folds that back on the
//! writer's thread (one ACK-latency bump; see docs/operations.md).
//!
//! The snapshot is taken when the backup starts, so the copy holds every message whose ACK
//! was sent before that (a positive ACK goes out only after the commit), and perhaps some
//! that arrived after.
//!
//! # The copy
//!
//! Created empty with mode 0600 before SQLite opens it ([`private_files::write`], which
//! also refuses an existing file), so it is never readable by others, not even for a moment.
//! It is written in rollback-journal mode: one self-contained file, no `-wal` or `-shm`
//! beside it, fsynced, and its directory fsynced after it. Put in a data directory as
//! `messages.db`, it opens as a store ([`super::SqliteStore::open`] switches it back to WAL).

use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

use super::schema;
use super::sqlite::{describe, DATABASE_FILE};
use super::StoreError;
use crate::private_files;

/// How long opening the store or a step waits for a lock (only a schema migration holds one
/// against readers, briefly).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How a backup paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupOptions {
    /// Pages copied per step (default 1024: 4 MiB with SQLite's 4 KiB pages).
    pub pages_per_step: i32,
    /// Pause after each step (default 5 ms), so the copy does not take all the disk's
    /// bandwidth from the writer's fsyncs.
    pub pause: Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions { pages_per_step: 1024, pause: Duration::from_millis(5) }
    }
}

/// What a finished backup copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The store's database file.
    pub source: PathBuf,
    /// The copy.
    pub out: PathBuf,
    /// Messages in the copy.
    pub messages: u64,
    /// The highest message id in the copy (`None` when it holds none): every message with
    /// a lower id that was in the store when the backup started is in it.
    pub last_id: Option<i64>,
    /// Size of the copy in bytes.
    pub bytes: u64,
    /// Pages copied.
    pub pages: u64,
    /// Steps taken (each one [`BackupOptions::pages_per_step`] pages at most).
    pub steps: u64,
    /// The store's schema version (`PRAGMA user_version`), which the copy keeps.
    pub schema_version: i64,
    /// How long it took.
    pub elapsed: Duration,
}

/// Why a backup failed. A copy that was started is removed again.
#[derive(Debug, Error)]
pub enum BackupError {
    /// The store could not be opened (missing, not a database, not an hl7d store).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--out` names an existing file; a backup never overwrites one.
    #[error("{} already exists; a backup never overwrites a file: name a new one", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The copy could not be created (missing directory, permissions, disk full).
    #[error("cannot create {}: {source}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Copying failed part-way.
    #[error("backup to {} failed: {reason}", path.display())]
    Copy {
        /// The file (removed again).
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Copies the store in `store_dir` (`<store.path>`) to the new file `out` while the store
/// may be in use; see the module documentation for what the copy holds. Blocks until done.
pub fn backup(store_dir: &Path, out: &Path, options: &BackupOptions) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let source = store_dir.join(DATABASE_FILE);
    let src = open_read_only(&source)?;
    let open_error = |e: rusqlite::Error| StoreError::Open { path: source.clone(), reason: describe(&e) };
    // The snapshot: a read transaction that lasts until the last page is copied. Its first
    // read fixes what it sees.
    src.execute_batch("BEGIN DEFERRED; SELECT count(*) FROM sqlite_master;").map_err(open_error)?;
    let schema_version = schema::version(&src).map_err(open_error)?;
    if schema_version < 1 {
        return Err(StoreError::Open {
            path: source,
            reason: "not an hl7d message store (schema version 0)".into(),
        }
        .into());
    }

    private_files::write(out, b"", false).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => BackupError::Exists { path: out.to_owned() },
        _ => BackupError::Create { path: out.to_owned(), source },
    })?;
    let copied = copy(&src, out, options);
    // Ends the read transaction; nothing was written, so there is nothing to lose.
    let _ = src.execute_batch("COMMIT");
    drop(src);
    match copied.and_then(|(pages, steps)| summarise(out).map(|summary| (pages, steps, summary))) {
        Ok((pages, steps, (messages, last_id, bytes))) => Ok(BackupReport {
            source,
            out: out.to_owned(),
            messages,
            last_id,
            bytes,
            pages,
            steps,
            schema_version,
            elapsed: started.elapsed(),
        }),
        Err(reason) => {
            // We created the file (create_new above), so it is ours to remove.
            let _ = std::fs::remove_file(out);
            for suffix in ["-journal", "-wal", "-shm"] {
                let _ = std::fs::remove_file(sidecar(out, suffix));
            }
            Err(BackupError::Copy { path: out.to_owned(), reason })
        }
    }
}

/// Runs the backup steps into `out`, then makes the copy a self-contained rollback-journal
/// file and syncs it. Returns (pages, steps).
fn copy(src: &Connection, out: &Path, options: &BackupOptions) -> Result<(u64, u64), String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut dst = Connection::open_with_flags(out, flags).map_err(|e| describe(&e))?;
    dst.busy_timeout(BUSY_TIMEOUT).map_err(|e| describe(&e))?;
    // The last step commits the copy; FULL syncs it to disk before that returns.
    dst.pragma_update(None, "synchronous", "FULL").map_err(|e| describe(&e))?;
    let pages_per_step = options.pages_per_step.max(1);
    // A second handle on the copy, only to flush what each step wrote (see the loop).
    let flush = std::fs::OpenOptions::new().write(true).open(out).map_err(|e| e.to_string())?;
    let (pages, steps) = {
        let backup = Backup::new(src, &mut dst).map_err(|e| describe(&e))?;
        let mut steps = 0u64;
        let mut waited = Duration::ZERO;
        loop {
            let result = backup.step(pages_per_step).map_err(|e| describe(&e))?;
            steps += 1;
            match result {
                StepResult::Done => break,
                StepResult::More => {
                    // Without this the copy's pages pile up dirty in the page cache and go to
                    // disk in one flush at the end, and the writer's WAL fsyncs queue behind
                    // it: four commits of 130-160 ms in a row at the end of a 620 MB backup
                    // under load, against none above 50 ms with a flush per step, for the
                    // same backup speed (about 150 MB/s here).
                    flush.sync_data().map_err(|e| format!("cannot flush the copy: {e}"))?;
                    thread::sleep(options.pause);
                }
                // Not expected while the snapshot is held; bounded all the same.
                StepResult::Busy | StepResult::Locked if waited < BUSY_TIMEOUT => {
                    let wait = options.pause.max(Duration::from_millis(10));
                    waited += wait;
                    thread::sleep(wait);
                }
                _ => return Err(format!("the store stayed locked for {}s", BUSY_TIMEOUT.as_secs())),
            }
        }
        (u64::try_from(backup.progress().pagecount).unwrap_or(0), steps)
    };
    // The pages carry the store's WAL flag; one file with no `-wal`/`-shm` is what a
    // backup should be.
    let mode: String = dst
        .pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0))
        .map_err(|e| describe(&e))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("cannot leave WAL mode in the copy (journal_mode is {mode})"));
    }
    dst.close().map_err(|(_, e)| describe(&e))?;
    sync_dir(out).map_err(|e| format!("cannot sync the directory of the copy: {e}"))?;
    Ok((pages, steps))
}

/// (messages, highest id, file size) of the finished copy, read back through SQLite.
fn summarise(out: &Path) -> Result<(u64, Option<i64>, u64), String> {
    let conn = open_read_only(out).map_err(|e| e.to_string())?;
    let (messages, last_id) = conn
        .query_row("SELECT count(*), max(id) FROM messages", [], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, Option<i64>>(1)?))
        })
        .map_err(|e| format!("the copy does not read back: {}", describe(&e)))?;
    let bytes = std::fs::metadata(out).map_err(|e| e.to_string())?.len();
    Ok((messages, last_id, bytes))
}

/// What [`verify`] found in one database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The file checked.
    pub file: PathBuf,
    /// `PRAGMA user_version`, when it could be read.
    pub schema_version: Option<i64>,
    /// Every problem found: `PRAGMA integrity_check` lines other than `ok`,
    /// `PRAGMA foreign_key_check` rows, a missing `messages` table, and SQLite errors that
    /// stopped the check (a file that is not a database at all). Empty for a sound store.
    pub problems: Vec<String>,
}

impl Verification {
    /// True when nothing was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the database `file` read-only: SQLite's `PRAGMA integrity_check` (every page,
/// b-tree and index entry), `PRAGMA foreign_key_check`, and that it is an hl7d store. Safe
/// on the live store while hl7d runs (it reads one snapshot; the writer is not blocked).
///
/// It checks structure, not the message bytes themselves: a flipped bit inside a stored
/// message is not found, since the store keeps no checksum of them.
///
/// `Err` only when there is no file to check; whatever is wrong with the file is a problem
/// in the [`Verification`].
pub fn verify(file: &Path) -> Result<Verification, StoreError> {
    let mut found = Verification { file: file.to_owned(), schema_version: None, problems: Vec::new() };
    let conn = match open_read_only(file) {
        Ok(conn) => conn,
        Err(StoreError::Open { reason, .. }) if file.is_file() => {
            found.problems.push(format!("cannot open it: {reason}"));
            return Ok(found);
        }
        Err(e) => return Err(e),
    };
    // One snapshot for all the checks. Each check that cannot run (SQLite gives up on some
    // damage with "database disk image is malformed") is itself a problem, and the others
    // still run.
    let failed = |check: &str, e: rusqlite::Error| format!("{check}: {}", describe(&e));
    if let Err(e) = conn.execute_batch("BEGIN DEFERRED") {
        found.problems.push(failed("begin", e));
    }
    let version = schema::version(&conn);
    let integrity = lines(&conn, "PRAGMA integrity_check", |row| row.get(0));
    let foreign = lines(&conn, "PRAGMA foreign_key_check", |row| {
        Ok(format!(
            "table {} row {} refers to a missing row of {}",
            row.get::<_, String>(0)?,
            row.get::<_, Option<i64>>(1)?.map_or_else(|| "?".to_owned(), |id| id.to_string()),
            row.get::<_, String>(2)?
        ))
    });
    let tables = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
        [],
        |row| row.get::<_, i64>(0),
    );
    let _ = conn.execute_batch("COMMIT");

    match integrity {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => found.problems.extend(lines.into_iter().map(|line| format!("integrity_check: {line}"))),
        Err(e) => found.problems.push(failed("integrity_check", e)),
    }
    match foreign {
        Ok(rows) => found.problems.extend(rows.into_iter().map(|row| format!("foreign_key_check: {row}"))),
        Err(e) => found.problems.push(failed("foreign_key_check", e)),
    }
    match (version, tables) {
        (Ok(version), Ok(tables)) => {
            found.schema_version = Some(version);
            if version < 1 || tables == 0 {
                found
                    .problems
                    .push(format!("not an hl7d message store (schema version {version}, no messages table)"));
            }
        }
        (Err(e), _) | (_, Err(e)) => found.problems.push(failed("schema", e)),
    }
    Ok(found)
}

/// Every row of a pragma that reports one finding per row.
fn lines(
    conn: &Connection,
    sql: &str,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<String>,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare(sql)?.query_map([], row)?.collect()
}

/// A read-only connection; `StoreError::Open` when `file` is missing or does not open.
fn open_read_only(file: &Path) -> Result<Connection, StoreError> {
    let open_error = |reason: String| StoreError::Open { path: file.to_owned(), reason };
    if !file.is_file() {
        return Err(open_error(
            "no message store there (wrong [store] path, or hl7d serve never ran)".into(),
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(file, flags).map_err(|e| open_error(describe(&e)))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| open_error(describe(&e)))?;
    Ok(conn)
}

fn sidecar(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Fsyncs the directory holding `file`, so that its new directory entry survives a crash.
fn sync_dir(file: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}
