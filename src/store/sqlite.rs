//! [`SqliteStore`]: the embedded durable store, SQLite in `<store.path>/messages.db`.
//!
//! One dedicated writer thread owns the only read-write connection. [`SqliteStore::append`]
//! queues the message and waits on a oneshot channel. The writer takes every request that
//! is waiting, writes them in one transaction, commits — in WAL mode with
//! `synchronous=FULL` the commit returns only after the write-ahead log is fsynced — and
//! only then answers each waiting append. A lone message is written at once (nothing waits
//! for a batch to fill); under load, the messages that arrive during one fsync share the
//! next one.
//!
//! The answers of a batch go to the waiting appends through [`Answers`]: one wake-up of a
//! task on the runtime that opened the store per batch, rather than one wake-up per message
//! from the writer's thread (less server CPU per message: BENCHMARKS.md, "Write path").
//!
//! After an error the writer drops its connection and answers the whole batch with
//! [`StoreError::Unavailable`]; the next batch opens a fresh connection. So a full disk or an
//! I/O error costs error ACKs while it lasts, and the store works again without a restart
//! once the cause is gone. A connection that has seen an I/O error (a failed fsync above
//! all) is never trusted again.
//!
//! WAL checkpoints run on their own thread with their own connection (see [`Checkpointer`]):
//! the writer only notifies it when enough has been written since the last one and never
//! waits for it, so no commit waits for a checkpoint's fsyncs. Retention runs on the writer
//! thread between batches, in small steps (each sized to take about [`RETENTION_STEP`], at
//! most [`RETENTION_BATCH`] messages, with a pause after each) so that writes never wait
//! long.
//! Readers use their own read-only connections ([`super::Reader`]); in WAL mode they never
//! block the writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hl7_proto::ack::AckCode;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, ToSql, TransactionBehavior};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};
use tracing::{debug, error, info, trace, warn};

use super::fields;
use super::queue::{self, DeliveryUpdate, RouteTable, SharedRouteTable};
use super::schema::{self, MigrateError, SCHEMA_VERSION};
use super::{Appended, BoxFuture, Disposition, MessageStore, NewMessage, StoreError};
use crate::private_files;

/// The database file inside `[store] path`.
pub const DATABASE_FILE: &str = "messages.db";

/// How long a statement waits for a lock held by another connection (e.g. an operator's
/// `sqlite3` shell) before the batch fails with an error ACK.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages in one transaction.
const MAX_BATCH_MESSAGES: usize = 1024;
/// A batch stops taking messages once it holds this many bytes (one message always fits).
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// A checkpoint is due after this many message bytes or commits since the last one. Not
/// SQLite's own automatic checkpoint size (1000 frames, 4 MiB of WAL): a small message writes
/// much more WAL than its own size (a page for each index it lands in: ≈ 15 KiB for 612
/// bytes), so under load the 500 commits come first, ≈ 20 000 frames apart. Asking for one
/// every 1000 frames instead (SQLite's WAL hook) was measured and not kept: twice the
/// checkpoint writes, no gain in throughput, CPU or latency (BENCHMARKS.md, "Write path").
const CHECKPOINT_AFTER_BYTES: u64 = 4 * 1024 * 1024;
const CHECKPOINT_AFTER_COMMITS: u64 = 500;
/// When the WAL still holds more than this many bytes of frames after a PASSIVE checkpoint,
/// the writer restarts it between two batches so that the WAL does not grow without bound
/// (see [`Checkpointer`]). Counted in bytes, not frames, so that a store with larger pages
/// ([`NEW_STORE_PAGE_SIZE`]) keeps the same bound as one with 4 KiB pages (4096 frames).
const RESTART_ABOVE_WAL_BYTES: i64 = 16 * 1024 * 1024;
/// Most expired messages deleted in one retention step (one short transaction), by default.
pub const RETENTION_BATCH: i64 = 500;
/// How long one retention step should take, by default: the writer sizes the steps so
/// (see [`next_step_rows`]).
pub const RETENTION_STEP: Duration = Duration::from_millis(5);
/// The writer's pause after a retention step, as a multiple of the step's time, by default:
/// retention takes at most a tenth of the writer's time while it works off a backlog.
pub const RETENTION_PAUSE: u32 = 9;
/// Messages the first step of a sweep deletes (then sized to [`SqliteOptions::retention_step`]).
const RETENTION_FIRST_STEP: u32 = 16;
/// How often retention looks for expired messages once a sweep has found no more.
const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// Longest a delivery update nobody waits for is held back to share a later commit.
const DEFER_AT_MOST: Duration = Duration::from_millis(100);
/// After a write error, the writer waits this long before it may reopen the database.
const REOPEN_BACKOFF: Duration = Duration::from_millis(100);
/// A batch whose first message waited this long from `append` to its answer is logged at
/// debug level with where the time went (to explain ACK latency stalls; no message content).
const SLOW_BATCH: Duration = Duration::from_millis(10);

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: each commit is fsynced before the ACKs of its messages are
    /// released. The only mode `hl7d serve` uses.
    #[default]
    Full,
    /// `synchronous=OFF`: no fsync at all, so a crash or power cut can lose acknowledged
    /// messages. Exists only so that benchmarks and tests can measure what the fsync costs;
    /// the configuration file cannot select it.
    DangerNoSync,
}

/// How a [`SqliteStore`] runs.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Delete messages older than this (`[store] retention`); `None` keeps them.
    pub retention: Option<Duration>,
    /// How often retention looks for expired messages (default one minute).
    pub retention_interval: Duration,
    /// Most expired messages one retention step deletes, in one transaction (default
    /// [`RETENTION_BATCH`]).
    pub retention_batch: u32,
    /// How long one retention step should take (default [`RETENTION_STEP`]): messages that
    /// arrive meanwhile wait for it, so the writer sizes each step from the time the last
    /// one took per message deleted.
    pub retention_step: Duration,
    /// While expired messages remain, the writer waits this many times the last step's own
    /// duration before the next step (default [`RETENTION_PAUSE`]), so that retention takes
    /// at most `1 / (1 + pause)` of the writer's time; 0 runs the next step right after the
    /// next batch of messages.
    pub retention_pause: u32,
    /// Fsync or not; see [`Durability`].
    pub durability: Durability,
    /// Extra setup for the writer's connection; `hl7d serve` sets none.
    pub connection_setup: Option<ConnectionSetup>,
    /// The routes every new accepted message is queued for, in its own transaction (see
    /// [`super::queue`]); `None` queues nothing. `hl7d serve` swaps the table on reload.
    pub routes: Option<SharedRouteTable>,
}

/// Extra setup for the writer's SQLite connection, run after hl7d's own settings when the
/// connection opens and again every time it is reopened after a failed write (pragmas are
/// per connection). Embedders use it for settings hl7d has no key for, e.g. a size cap
/// (`PRAGMA max_page_count`), which makes inserts fail as on a full disk.
#[derive(Clone)]
pub struct ConnectionSetup(Arc<SetupFn>);

type SetupFn = dyn Fn(&Connection) -> rusqlite::Result<()> + Send + Sync;

impl ConnectionSetup {
    /// Runs `setup` on every (re)opened writer connection.
    pub fn new(setup: impl Fn(&Connection) -> rusqlite::Result<()> + Send + Sync + 'static) -> Self {
        ConnectionSetup(Arc::new(setup))
    }
}

impl std::fmt::Debug for ConnectionSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSetup(..)")
    }
}

impl SqliteOptions {
    fn set_up(&self, conn: &Connection) -> rusqlite::Result<()> {
        self.connection_setup.as_ref().map_or(Ok(()), |setup| (setup.0)(conn))
    }
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            retention: None,
            retention_interval: DEFAULT_RETENTION_INTERVAL,
            retention_batch: RETENTION_BATCH as u32,
            retention_step: RETENTION_STEP,
            retention_pause: RETENTION_PAUSE,
            durability: Durability::Full,
            connection_setup: None,
            routes: None,
        }
    }
}

/// Counters since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Accepted messages written (new rows).
    pub stored: u64,
    /// Refused messages kept (rows with status `rejected` or `error`).
    pub refused: u64,
    /// Duplicates recognised (not stored again).
    pub duplicates: u64,
    /// Batch transactions committed; with [`Durability::Full`], one WAL fsync each.
    pub commits: u64,
    /// WAL checkpoints run (on the checkpoint thread); each syncs the WAL and then the
    /// database file.
    pub checkpoints: u64,
    /// Batches that failed (every message in them got an error).
    pub failed_batches: u64,
    /// Messages deleted by retention.
    pub expired: u64,
    /// Expired messages retention kept because a delivery of theirs is still to do
    /// (pending, in flight or parked), counted once per sweep that found them.
    pub kept_undelivered: u64,
    /// Delivery rows queued for new messages.
    pub queued: u64,
}

/// The embedded durable store; see the module documentation.
pub struct SqliteStore {
    file: PathBuf,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl SqliteStore {
    /// Opens (creating if needed) `<dir>/messages.db`, migrates its schema, and starts the
    /// writer thread. Fails when the directory or file cannot be created, the file is not a
    /// database, or its schema is newer than this build.
    pub fn open(dir: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let file = dir.join(DATABASE_FILE);
        secure_files(dir, &file)?;
        let (conn, found) = open_writer(&file, options.durability)?;
        options.set_up(&conn).map_err(|e| StoreError::Open { path: file.clone(), reason: describe(&e) })?;
        // Nothing delivers yet: a row still in flight is an attempt a stop or a crash cut
        // off. It goes out again (at least once; the receiver may see it twice).
        let recovered = queue::recover_in_flight(&conn)
            .map_err(|e| StoreError::Open { path: file.clone(), reason: describe(&e) })?;
        if recovered > 0 {
            info!(deliveries = recovered, "deliveries in flight at the last stop go out again");
        }
        if found < SCHEMA_VERSION {
            info!(path = %file.display(), from = found, to = SCHEMA_VERSION, "message store schema migrated");
        }
        if options.durability == Durability::DangerNoSync {
            warn!(path = %file.display(), "message store without fsync: acknowledged messages can be lost in a crash (benchmark/test only)");
        }
        let counters = Arc::new(Counters::default());
        let (sender, receiver) = mpsc::channel();
        let checkpointer = Checkpointer::start(&file, options.durability, counters.clone())?;
        let retention_rows = RETENTION_FIRST_STEP.min(options.retention_batch.max(1));
        let writer = Writer {
            answers: Answers::start(),
            file: file.clone(),
            next_retention: Instant::now(),
            options,
            conn: Some(conn),
            reopen_after: None,
            counters: counters.clone(),
            bytes_since_checkpoint: 0,
            commits_since_checkpoint: 0,
            swept: 0,
            kept: 0,
            retention_cursor: None,
            retention_rows,
            checkpointer: Some(checkpointer),
            deferred: Vec::new(),
            deferred_since: None,
        };
        let handle = thread::Builder::new()
            .name("hl7d-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::Open {
                path: file.clone(),
                reason: format!("cannot start writer thread: {e}"),
            })?;
        Ok(SqliteStore {
            file,
            requests: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            counters,
        })
    }

    /// The database file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }

    /// Stops taking messages, lets the writer finish every message already queued,
    /// checkpoints the WAL into the database file and closes it. Blocks until done; later
    /// appends fail with [`StoreError::Closed`]. Idempotent.
    pub fn close(&self) {
        drop(self.requests.lock().unwrap_or_else(PoisonError::into_inner).take());
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                error!(path = %self.file.display(), "message store writer thread panicked");
            }
        }
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        let guard = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = guard.as_ref().ok_or(StoreError::Closed)?;
        sender.send(request).map_err(|_| StoreError::Closed)
    }

    /// Applies delivery `updates` on the writer thread, in one transaction with whatever
    /// else is waiting (they share the group commit), and answers once they are committed:
    /// the rows each update changed (0 when the row was no longer pending or in flight).
    pub fn update_deliveries(
        &self,
        updates: Vec<DeliveryUpdate>,
    ) -> BoxFuture<'static, Result<Vec<usize>, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self.send(Request::Deliveries { updates, reply: Some(reply) });
        Box::pin(async move {
            queued?;
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    /// Like [`SqliteStore::update_deliveries`], without waiting: for changes that need not
    /// be on disk before the caller goes on (an attempt's claim: lost in a crash, the row
    /// is pending and goes out again, exactly as an in-flight one would). They are written
    /// with the next batch, or after at most 100 ms on their own: an attempt's claim and
    /// outcome usually share one commit.
    pub fn update_deliveries_later(&self, updates: Vec<DeliveryUpdate>) -> Result<(), StoreError> {
        self.send(Request::Deliveries { updates, reply: None })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("file", &self.file).field("stats", &self.stats()).finish()
    }
}

impl MessageStore for SqliteStore {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let queued = self.send(Request::Append(Append { message, reply, queued: Instant::now() }));
        Box::pin(async move {
            queued?;
            // The writer answers every request it takes; a dropped reply means it is gone.
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
    }
}

/// What the writer thread is asked to do. The channel is unbounded, but each connection has
/// at most one append outstanding (it waits for the answer before reading on), and each
/// lane in flight at most two delivery updates, so the queue is bounded by the listeners'
/// `max_connections` and the routes' `in_flight`.
// Nearly every request is an append: boxing it would add an allocation per message and
// save nothing.
#[allow(clippy::large_enum_variant)]
enum Request {
    /// Store one message.
    Append(Append),
    /// Change delivery rows for the engine; answered once committed, when asked.
    Deliveries {
        updates: Vec<DeliveryUpdate>,
        reply: Option<oneshot::Sender<Result<Vec<usize>, StoreError>>>,
    },
}

impl Request {
    /// Message bytes it adds to a batch.
    fn bytes(&self) -> usize {
        match self {
            Request::Append(append) => append.message.raw.len(),
            Request::Deliveries { .. } => 0,
        }
    }
}

/// One message for the writer thread.
struct Append {
    message: NewMessage,
    reply: Reply,
    /// When `append` queued it.
    queued: Instant,
}

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// How the writer hands a finished batch's answers to the appends waiting for them; it is
/// called only once the batch's transaction has committed (or failed).
///
/// Completing a oneshot wakes the task waiting on it. Woken from the writer's thread, which
/// is not one of the runtime's, every wake-up goes through the runtime's shared queue and
/// may unpark a worker: one of those per message. So when the store is opened on a tokio
/// runtime (as `serve` does), one task there does it instead: the writer sends it the whole
/// batch (one wake-up), and the tasks it wakes go to its worker's own run queue.
enum Answers {
    /// The answering task on the runtime that opened the store.
    Task(tokio_mpsc::UnboundedSender<Vec<(Reply, Result<Appended, StoreError>)>>),
    /// No runtime at open (tools, some tests): the writer completes the oneshots itself.
    Direct,
}

impl Answers {
    fn start() -> Answers {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return Answers::Direct };
        let (batches, mut received) = tokio_mpsc::unbounded_channel::<Vec<(Reply, _)>>();
        // Ends when the writer drops its sender (the store closed).
        runtime.spawn(async move {
            while let Some(batch) = received.recv().await {
                for (reply, answer) in batch {
                    // The connection may have gone meanwhile; the message is stored anyway
                    // and a resend will be recognised as a duplicate.
                    let _ = reply.send(answer);
                }
            }
        });
        Answers::Task(batches)
    }

    /// Never blocks. When the answering task is gone (its runtime shut down), the writer
    /// answers itself.
    fn send(&self, batch: Vec<(Reply, Result<Appended, StoreError>)>) {
        let batch = match self {
            Answers::Task(task) => match task.send(batch) {
                Ok(()) => return,
                Err(tokio_mpsc::error::SendError(batch)) => batch,
            },
            Answers::Direct => batch,
        };
        for (reply, answer) in batch {
            let _ = reply.send(answer);
        }
    }
}

/// What a batch came to, request by request.
enum Written {
    Append(Appended),
    Deliveries(Vec<usize>),
}

#[derive(Default)]
struct Counters {
    stored: AtomicU64,
    refused: AtomicU64,
    duplicates: AtomicU64,
    commits: AtomicU64,
    checkpoints: AtomicU64,
    failed_batches: AtomicU64,
    expired: AtomicU64,
    kept_undelivered: AtomicU64,
    queued: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> StoreStats {
        StoreStats {
            stored: self.stored.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            kept_undelivered: self.kept_undelivered.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }
}

/// State of the writer thread.
struct Writer {
    /// Where a committed (or failed) batch's answers go.
    answers: Answers,
    file: PathBuf,
    options: SqliteOptions,
    /// `None` after an error: reopened for the next batch.
    conn: Option<Connection>,
    /// No reopen before this instant (after a failure), so that a persistent error does not
    /// turn into a busy loop of opens.
    reopen_after: Option<Instant>,
    counters: Arc<Counters>,
    bytes_since_checkpoint: u64,
    commits_since_checkpoint: u64,
    next_retention: Instant,
    /// Messages deleted in the retention sweep under way.
    swept: u64,
    /// Expired messages kept in the sweep under way (a delivery still to do).
    kept: u64,
    /// Where the sweep under way goes on: `(received_at, id)` of the last message it
    /// looked at (`None` between sweeps). Expired messages kept for their deliveries are
    /// passed over, not looked at again in every step.
    retention_cursor: Option<(i64, i64)>,
    /// Messages the next retention step deletes (see [`next_step_rows`]).
    retention_rows: u32,
    /// Taken (stopped and joined) by `close`.
    checkpointer: Option<Checkpointer>,
    /// Delivery updates nobody waits for (an attempt's claim): written with the next batch,
    /// or alone [`DEFER_AT_MOST`] after the first of them. An attempt's claim and outcome
    /// then usually share one commit, instead of costing an fsync each.
    deferred: Vec<DeliveryUpdate>,
    deferred_since: Option<Instant>,
}

impl Writer {
    fn run(mut self, requests: mpsc::Receiver<Request>) {
        loop {
            let now = Instant::now();
            let mut wait = self.next_retention.saturating_duration_since(now);
            if let Some(since) = self.deferred_since {
                wait = wait.min((since + DEFER_AT_MOST).saturating_duration_since(now));
            }
            let first = match requests.recv_timeout(wait) {
                // Nobody waits for it: it rides on the next batch (see `Writer::deferred`).
                Ok(Request::Deliveries { updates, reply: None }) => {
                    self.deferred.extend(updates);
                    self.deferred_since.get_or_insert_with(Instant::now);
                    continue;
                }
                Ok(request) => request,
                Err(RecvTimeoutError::Timeout) => {
                    if self.deferred_since.is_some_and(|since| since.elapsed() >= DEFER_AT_MOST) {
                        self.commit(Vec::new(), 0);
                    }
                    if Instant::now() >= self.next_retention {
                        self.retention_step();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                bytes += request.bytes();
                batch.push(request);
                if batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
                    next = requests.try_recv().ok();
                }
            }
            let oldest = batch.iter().find_map(|request| match request {
                Request::Append(append) => Some(append.queued),
                _ => None,
            });
            if let Some(oldest) = oldest {
                let (messages, started) = (batch.len(), Instant::now());
                self.commit(batch, bytes as u64);
                let answered = Instant::now();
                if answered - oldest >= SLOW_BATCH {
                    // The queue is FIFO, so the batch's first message waited longest: in the
                    // queue while the writer was busy (the previous batch, a WAL restart, a
                    // retention step), then in this batch's commit.
                    debug!(
                        messages,
                        queued_us = (started - oldest).as_micros() as u64,
                        commit_us = (answered - started).as_micros() as u64,
                        "store batch slow"
                    );
                }
            } else {
                self.commit(batch, bytes as u64);
            }
            self.checkpoint_if_due();
            self.restart_wal_if_wanted();
            if Instant::now() >= self.next_retention {
                self.retention_step();
            }
        }
        if !self.deferred.is_empty() {
            self.commit(Vec::new(), 0);
        }
        self.close();
    }

    /// Writes one batch in one transaction and answers every message in it.
    fn commit(&mut self, mut batch: Vec<Request>, bytes: u64) {
        // Deferred updates first: an attempt's claim before its outcome.
        if !self.deferred.is_empty() {
            batch.insert(0, Request::Deliveries { updates: std::mem::take(&mut self.deferred), reply: None });
        }
        self.deferred_since = None;
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        let table = self.options.routes.as_ref().map(|table| table.load_full());
        let result = match self.connection() {
            Ok(conn) => write_batch(conn, &batch, table.as_deref()).map_err(|e| describe(&e)),
            Err(reason) => Err(reason),
        };
        match result {
            Ok(BatchWritten { outcomes, queued, woken }) => {
                let messages = batch.iter().filter(|r| matches!(r, Request::Append(_))).count() as u64;
                let duplicates =
                    outcomes.iter().filter(|o| matches!(o, Written::Append(Appended::Duplicate))).count()
                        as u64;
                let refused = batch
                    .iter()
                    .filter(
                        |r| matches!(r, Request::Append(a) if matches!(a.message.disposition, Disposition::Refused(_))),
                    )
                    .count() as u64;
                self.counters.stored.fetch_add(messages - duplicates - refused, Ordering::Relaxed);
                self.counters.queued.fetch_add(queued, Ordering::Relaxed);
                self.counters.refused.fetch_add(refused, Ordering::Relaxed);
                self.counters.duplicates.fetch_add(duplicates, Ordering::Relaxed);
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                crate::metrics::store_commit(started.elapsed(), messages as usize);
                self.bytes_since_checkpoint += bytes;
                self.commits_since_checkpoint += 1;
                // Every batch: trace level; a slow one also comes at debug ("store batch slow").
                trace!(
                    messages,
                    delivery_updates = batch.len() as u64 - messages,
                    queued,
                    duplicates,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "store batch committed"
                );
                let mut answers = Vec::with_capacity(batch.len());
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    match (request, outcome) {
                        (Request::Append(append), Written::Append(outcome)) => {
                            answers.push((append.reply, Ok(outcome)));
                        }
                        (Request::Deliveries { reply: Some(reply), .. }, Written::Deliveries(changed)) => {
                            let _ = reply.send(Ok(changed));
                        }
                        // Nobody waits; or (impossible: `write_batch` answers each request
                        // in kind) a mismatch, whose sender sees its channel closed.
                        _ => {}
                    }
                }
                // The appends' answers in one hand-over (see [`Answers`]).
                self.answers.send(answers);
                // After the commit: the engine reads what it is woken for.
                for notify in woken {
                    notify.notify_one();
                }
            }
            Err(reason) => {
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                crate::metrics::store_failed_commit();
                error!(path = %self.file.display(), requests = batch.len(), error = %reason,
                    "message store write failed; answering with error ACKs");
                // Rolled back already (the transaction was dropped). Never trust this
                // connection again: reopen for the next batch.
                self.conn = None;
                self.reopen_after = Some(Instant::now() + REOPEN_BACKOFF);
                let mut answers = Vec::new();
                for request in batch {
                    let error = StoreError::Unavailable(reason.clone());
                    match request {
                        Request::Append(append) => answers.push((append.reply, Err(error))),
                        Request::Deliveries { reply: Some(reply), .. } => {
                            let _ = reply.send(Err(error));
                        }
                        Request::Deliveries { reply: None, .. } => {}
                    }
                }
                self.answers.send(answers);
            }
        }
    }

    /// The open connection, reopening it after an earlier failure.
    fn connection(&mut self) -> Result<&mut Connection, String> {
        if self.conn.is_none() {
            if let Some(after) = self.reopen_after {
                let now = Instant::now();
                if now < after {
                    thread::sleep(after - now);
                }
            }
            // The reason goes into error ACKs: keep the file's path out of it.
            let (conn, _) = open_writer(&self.file, self.options.durability).map_err(|e| match e {
                StoreError::Open { reason, .. } => reason,
                other => other.to_string(),
            })?;
            self.options.set_up(&conn).map_err(|e| describe(&e))?;
            info!(path = %self.file.display(), "message store reopened");
            self.reopen_after = None;
            self.conn = Some(conn);
        }
        // Just set when it was `None`.
        Ok(self.conn.as_mut().expect("connection present"))
    }

    /// Asks the checkpoint thread for a checkpoint once enough has been written since the
    /// last request. Never waits: when a request is already pending, the checkpoint it
    /// starts covers this one too.
    fn checkpoint_if_due(&mut self) {
        if self.bytes_since_checkpoint < CHECKPOINT_AFTER_BYTES
            && self.commits_since_checkpoint < CHECKPOINT_AFTER_COMMITS
        {
            return;
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.request();
        }
        self.bytes_since_checkpoint = 0;
        self.commits_since_checkpoint = 0;
    }

    /// Restarts the WAL when the checkpoint thread found it too long (see [`Checkpointer`]).
    /// Runs between batches; never waits for the checkpoint thread or a reader.
    fn restart_wal_if_wanted(&mut self) {
        if !self.checkpointer.as_ref().is_some_and(Checkpointer::restart_wanted) {
            return;
        }
        let Some(conn) = &self.conn else { return };
        let started = Instant::now();
        let result = conn.busy_timeout(Duration::ZERO).and_then(|()| {
            let result = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            });
            conn.busy_timeout(BUSY_TIMEOUT)?;
            result
        });
        match result {
            Ok((busy, wal_frames, checkpointed)) => {
                if busy == 0 {
                    self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                debug!(
                    busy,
                    wal_frames,
                    checkpointed,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "store WAL restart"
                );
            }
            Err(e) => warn!(path = %self.file.display(), error = %describe(&e), "store WAL restart failed"),
        }
    }

    /// Looks at a few expired messages in one transaction and deletes those with no delivery
    /// still to do ([`expire_step`]): as many as the last step says fit in
    /// [`SqliteOptions::retention_step`] (at most [`SqliteOptions::retention_batch`]). A
    /// full step means more may be waiting: the next one comes after a pause of
    /// [`SqliteOptions::retention_pause`] times this one's duration, so that a backlog (a
    /// shortened retention, a store that was off) is worked off in short transactions that
    /// take a bounded share of the writer's time, and messages arriving meanwhile wait at
    /// most about one step.
    fn retention_step(&mut self) {
        let interval = self.options.retention_interval;
        let Some(retention) = self.options.retention else {
            self.next_retention = Instant::now() + interval.max(Duration::from_secs(3600));
            return;
        };
        let cutoff = SystemTime::now().checked_sub(retention).map_or(i64::MIN, micros);
        let cursor = self.retention_cursor;
        let rows = self.retention_rows;
        let conn = match self.connection() {
            Ok(conn) => conn,
            Err(reason) => {
                warn!(error = %reason, "retention skipped: message store unavailable");
                self.next_retention = Instant::now() + interval;
                return;
            }
        };
        let started = Instant::now();
        match expire_step(conn, cutoff, cursor, rows) {
            Ok(step) => {
                let elapsed = started.elapsed();
                self.counters.expired.fetch_add(step.deleted, Ordering::Relaxed);
                self.counters.kept_undelivered.fetch_add(step.kept, Ordering::Relaxed);
                if step.deleted > 0 {
                    debug!(
                        deleted = step.deleted,
                        kept = step.kept,
                        elapsed_us = elapsed.as_micros() as u64,
                        "store retention step"
                    );
                }
                self.commits_since_checkpoint += 1;
                self.swept += step.deleted;
                self.kept += step.kept;
                if step.examined == rows as usize {
                    let (target, most) = (self.options.retention_step, self.options.retention_batch);
                    self.retention_rows = next_step_rows(rows, elapsed, target, most);
                    self.retention_cursor = step.last;
                    self.next_retention = Instant::now() + elapsed * self.options.retention_pause;
                } else {
                    if self.swept > 0 {
                        info!(deleted = self.swept, retention = %humantime::format_duration(retention),
                            "retention: deleted expired messages");
                    }
                    if self.kept > 0 {
                        info!(
                            kept = self.kept,
                            "retention: kept expired messages that still have deliveries to make"
                        );
                    }
                    self.swept = 0;
                    self.kept = 0;
                    self.retention_cursor = None;
                    self.next_retention = Instant::now() + interval;
                }
            }
            Err(e) => {
                warn!(path = %self.file.display(), error = %describe(&e), "retention step failed");
                self.conn = None;
                self.reopen_after = Some(Instant::now() + REOPEN_BACKOFF);
                self.retention_cursor = None;
                self.next_retention = Instant::now() + interval;
            }
        }
    }

    fn close(mut self) {
        // First stop the checkpoint thread (it finishes a checkpoint under way), then fold
        // what is left on the writer's own connection.
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop(&self.file);
        }
        if let Some(conn) = self.conn.take() {
            // TRUNCATE: fold the whole WAL into the database and empty it, so that a clean
            // shutdown leaves one self-contained file.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                warn!(path = %self.file.display(), error = %describe(&e), "final checkpoint failed");
            }
            if let Err((_, e)) = conn.close() {
                warn!(path = %self.file.display(), error = %describe(&e), "closing the message store failed");
            }
        }
        debug!(path = %self.file.display(), "message store closed");
    }
}

/// The size of the next retention step: `rows` scaled by how far the last step's `elapsed`
/// was from `target`, at most doubling or halving at once (one slow step, a checkpoint or
/// another process's I/O, does not collapse it), within `1..=most`.
fn next_step_rows(rows: u32, elapsed: Duration, target: Duration, most: u32) -> u32 {
    let scaled = f64::from(rows) * target.as_secs_f64() / elapsed.as_secs_f64().max(1e-6);
    let bounded = scaled.clamp(f64::from(rows) / 2.0, f64::from(rows) * 2.0);
    (bounded as u32).clamp(1, most.max(1))
}

/// The checkpoint thread: its own read-write connection to the database file, which it
/// only ever checkpoints. In WAL mode a PASSIVE checkpoint runs alongside the writer's
/// transactions (it takes the checkpoint lock, not the write lock) and never waits for
/// readers, so the writer's commits do not wait for its copy and its fsync of the database
/// file.
///
/// Keeping the WAL bounded: the writer starts the WAL afresh on its own only when it begins
/// a transaction while the WAL is completely folded and no reader uses it. Under sustained
/// load the writer commits while the checkpoint runs, so the frames written meanwhile are
/// never folded in time and this may never happen; a long reader (a backup, an operator's
/// open `sqlite3` transaction) also keeps PASSIVE from folding the frames written after its
/// snapshot. So when the WAL still holds more than [`RESTART_ABOVE_WAL_BYTES`] of frames after
/// a PASSIVE checkpoint, this thread asks the writer for a RESTART: between two batches
/// (after the ACKs of the last one are released) the writer runs
/// `wal_checkpoint(RESTART)` with no busy wait. It folds only what the PASSIVE ones left
/// (the frames written since the last one), syncs the database file and starts the WAL
/// afresh; the next batch waits for that, about once per 16 MiB of WAL, never for a whole
/// checkpoint. This thread runs no checkpoint until the writer has tried, so as not to hold
/// the checkpoint lock then; when a reader still needs the WAL, the RESTART gives up at
/// once and is asked for again after the next PASSIVE one. A reader
/// that never ends its snapshot keeps the WAL growing whatever is tried, short of blocking
/// writes; it is folded once the reader is gone.
struct Checkpointer {
    requests: SyncSender<()>,
    thread: JoinHandle<()>,
    /// Set by the thread when the WAL should be restarted; taken by the writer.
    restart_wanted: Arc<AtomicBool>,
}

impl Checkpointer {
    fn start(
        file: &Path,
        durability: Durability,
        counters: Arc<Counters>,
    ) -> Result<Checkpointer, StoreError> {
        // One pending request is enough: a checkpoint covers everything written before it.
        let (requests, received) = mpsc::sync_channel(1);
        let file = file.to_path_buf();
        let path = file.clone();
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let checkpoints = CheckpointLoop {
            file,
            durability,
            counters,
            conn: None,
            restart_wanted: restart_wanted.clone(),
            page_size: 4096,
        };
        let thread = thread::Builder::new()
            .name("hl7d-store-checkpoint".into())
            .spawn(move || checkpoints.run(received))
            .map_err(|e| StoreError::Open { path, reason: format!("cannot start checkpoint thread: {e}") })?;
        Ok(Checkpointer { requests, thread, restart_wanted })
    }

    /// Whether the WAL should be restarted now; clears the request.
    fn restart_wanted(&self) -> bool {
        self.restart_wanted.swap(false, Ordering::Relaxed)
    }

    /// Never blocks.
    fn request(&self) {
        match self.requests.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                warn!("store checkpoint thread gone; the WAL is folded at close");
            }
        }
    }

    /// Lets a checkpoint under way finish and joins the thread.
    fn stop(self, file: &Path) {
        drop(self.requests);
        if self.thread.join().is_err() {
            error!(path = %file.display(), "message store checkpoint thread panicked");
        }
    }
}

struct CheckpointLoop {
    file: PathBuf,
    durability: Durability,
    counters: Arc<Counters>,
    /// `None` until the first request and after an error.
    conn: Option<Connection>,
    restart_wanted: Arc<AtomicBool>,
    /// The store's page size (a WAL frame holds one page), read when `conn` opens.
    page_size: i64,
}

/// What `PRAGMA wal_checkpoint` answers: busy (1 when it could not finish), frames in the
/// WAL, frames folded into the database file.
type CheckpointResult = (i64, i64, i64);

impl CheckpointLoop {
    fn run(mut self, requests: mpsc::Receiver<()>) {
        while requests.recv().is_ok() {
            // The writer has not tried the RESTART asked for yet: leave the checkpoint lock
            // free for it.
            if self.restart_wanted.load(Ordering::Relaxed) {
                continue;
            }
            if let Some((_, wal_frames, _)) = self.checkpoint("PASSIVE") {
                if wal_frames.saturating_mul(self.page_size) > RESTART_ABOVE_WAL_BYTES {
                    self.restart_wanted.store(true, Ordering::Relaxed);
                }
            }
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close();
        }
    }

    fn checkpoint(&mut self, mode: &'static str) -> Option<CheckpointResult> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => match open_checkpointer(&self.file, self.durability) {
                Ok(conn) => {
                    // The file's header says it; 4096 (SQLite's default) if it cannot be read.
                    self.page_size =
                        conn.pragma_query_value(None, "page_size", |row| row.get(0)).unwrap_or(4096);
                    conn
                }
                Err(e) => {
                    // Not fatal: the WAL keeps the data; the next request retries.
                    warn!(path = %self.file.display(), error = %describe(&e), "store checkpoint connection failed");
                    return None;
                }
            },
        };
        let started = Instant::now();
        let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match result {
            Ok((busy, wal_frames, checkpointed)) => {
                // A RESTART that gave up is not counted.
                if mode == "PASSIVE" || busy == 0 {
                    self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
                debug!(
                    mode,
                    busy,
                    wal_frames,
                    checkpointed,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "store checkpoint"
                );
                self.conn = Some(conn);
                Some((busy, wal_frames, checkpointed))
            }
            // Not fatal: the WAL keeps the data; the next request retries on a fresh
            // connection.
            Err(e) => {
                warn!(path = %self.file.display(), error = %describe(&e), "store checkpoint failed");
                None
            }
        }
    }
}

/// The checkpoint thread's connection: the existing file (the writer created and migrated
/// it; never created here, so its mode stays 0600), fsyncs as the writer's durability asks,
/// and no busy wait (PASSIVE takes none).
fn open_checkpointer(file: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::ZERO)?;
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::DangerNoSync => "OFF",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(conn)
}

/// The data directory 0700 and the database 0600, whatever the umask (see
/// [`crate::private_files`]). The database file is created empty before SQLite opens it
/// because SQLite creates it 0644 minus the umask, and gives its `-wal` and `-shm` files the
/// database file's mode.
impl SqliteStore {
    /// Checks, without creating or changing anything, what [`SqliteStore::open`] needs of
    /// `dir`: that it is (or can be created as) a private directory this process can write
    /// in (see [`private_files::check_dir`]), and that a `messages.db` already there is a
    /// file this process can read and write, with SQLite's header and a schema version this
    /// build knows. For `hl7d check-config` and the checks `serve` makes before it creates
    /// anything.
    ///
    /// The version is read from the database header; a migration still in the write-ahead
    /// log (a newer hl7d killed before its first checkpoint) is not seen there, and `open`
    /// still refuses it.
    pub fn check(dir: &Path) -> Result<(), StoreError> {
        private_files::check_dir(dir)
            .map_err(|e| StoreError::Open { path: dir.to_path_buf(), reason: e.to_string() })?;
        let file = dir.join(DATABASE_FILE);
        let open_error = |reason: String| StoreError::Open { path: file.clone(), reason };
        let metadata = match std::fs::metadata(&file) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(open_error(e.to_string())),
        };
        if !metadata.is_file() {
            return Err(open_error("not a regular file".to_owned()));
        }
        private_files::can_read_write(&file).map_err(|e| open_error(e.to_string()))?;
        let mut header = [0u8; 100];
        let read = {
            use std::io::Read as _;
            let mut handle = std::fs::File::open(&file).map_err(|e| open_error(e.to_string()))?;
            let mut read = 0;
            while read < header.len() {
                match handle.read(&mut header[read..]) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) => return Err(open_error(e.to_string())),
                }
            }
            read
        };
        // An empty file is what `open` makes first (see `secure_files`): SQLite fills it.
        if read == 0 {
            return Ok(());
        }
        if read < header.len() || &header[..16] != b"SQLite format 3\0" {
            return Err(open_error("not an SQLite database".to_owned()));
        }
        // `PRAGMA user_version`: bytes 60..64 of the header, big-endian.
        let found = i64::from(i32::from_be_bytes([header[60], header[61], header[62], header[63]]));
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { path: file, found, supported: SCHEMA_VERSION });
        }
        Ok(())
    }
}

fn secure_files(dir: &Path, file: &Path) -> Result<(), StoreError> {
    private_files::secure_dir(dir)
        .map_err(|e| StoreError::Open { path: dir.to_path_buf(), reason: e.to_string() })?;
    let mut sidecars = [file.as_os_str().to_owned(), file.as_os_str().to_owned()];
    sidecars[0].push("-wal");
    sidecars[1].push("-shm");
    private_files::secure_file(file)
        .and_then(|()| {
            sidecars.iter().try_for_each(|path| private_files::secure_file_if_present(Path::new(path)))
        })
        .map_err(|e| StoreError::Open { path: file.to_path_buf(), reason: e.to_string() })
}

/// Opens the read-write connection: WAL, the chosen durability, schema migrated. Returns
/// it with the schema version found before migrating.
/// The page size of a store `hl7d serve` creates: 8 KiB, where SQLite's default is 4 KiB.
/// Rows of about 1 KiB are appended in id order, and each table leaf is filled until the
/// next row does not fit, so a page keeps on average half a row free: 16 % of a 4 KiB
/// page, 11 % of an 8 KiB one. Measured on the generated stores of BENCHMARKS.md ("Size"):
/// 1.667x the raw bytes at 4 KiB, 1.621x at 8 KiB; the write path's A/B puts 8 KiB within
/// its noise, 16 KiB at two thirds of the throughput (every page a commit dirties is
/// written whole).
pub const NEW_STORE_PAGE_SIZE: u32 = 8192;

fn open_writer(file: &Path, durability: Durability) -> Result<(Connection, i64), StoreError> {
    let open_error = |e: rusqlite::Error| StoreError::Open { path: file.to_path_buf(), reason: describe(&e) };
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(file, flags).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // A new store's page size; before anything is written (WAL mode writes the header),
    // since the first write fixes it. An existing store keeps the size it was made with
    // (SQLite ignores the pragma then; changing it takes an offline VACUUM).
    conn.pragma_update(None, "page_size", NEW_STORE_PAGE_SIZE).map_err(open_error)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: file.to_path_buf(),
            reason: format!("cannot use WAL (journal_mode is {mode})"),
        });
    }
    let synchronous = match durability {
        Durability::Full => "FULL",
        Durability::DangerNoSync => "OFF",
    };
    conn.pragma_update(None, "synchronous", synchronous).map_err(open_error)?;
    // Checkpoints run on their own thread and connection (see `Checkpointer`), never
    // inside a commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(open_error)?;
    // After a checkpoint, keep at most this much of the WAL file on disk.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024).map_err(open_error)?;
    let found = schema::migrate(&mut conn).map_err(|e| match e {
        MigrateError::TooNew(found) => {
            StoreError::SchemaTooNew { path: file.to_path_buf(), found, supported: SCHEMA_VERSION }
        }
        MigrateError::Sqlite(e) => open_error(e),
    })?;
    Ok((conn, found))
}

/// Only accepted messages are originals: a refused one never makes a later message a
/// duplicate (its resend must be judged, and stored, afresh). MSH-10 and the time narrow
/// the candidates on the index `messages_control_id (control_id, received_at)` (schema 7,
/// which serves `--control-id` search too); the listener, MSH-3, MSH-4 and the bytes
/// themselves decide.
const FIND_DUPLICATE: &str = "SELECT id FROM messages INDEXED BY messages_control_id \
     WHERE control_id = ?1 AND received_at >= ?2 AND listener = ?3 AND sending_application = ?4 \
     AND sending_facility = ?5 AND status = 'accepted' AND raw = ?6 \
     ORDER BY id DESC LIMIT 1";

const COUNT_DUPLICATE: &str =
    "UPDATE messages SET duplicate_count = duplicate_count + 1, last_duplicate_at = ?2 WHERE id = ?1";

/// The columns the writer fills before the key fields (`fields::COLUMNS`); the PostgreSQL
/// writer's start the same way.
pub(super) const INSERT_COLUMNS: [&str; 17] = [
    "listener",
    "peer",
    "client_thumbprint",
    "received_at",
    "charset",
    "message_type",
    "control_id",
    "sending_application",
    "sending_facility",
    "processing_id",
    "version",
    "size",
    "ack_code",
    "raw",
    "status",
    "reason",
    "error_code",
];

/// The writer's INSERT, built once from [`INSERT_COLUMNS`] and `fields::COLUMNS`.
/// `v1_status` is the schema's leftover from version 1, read by nothing (see `schema.rs`);
/// `dup_key` (schema 3 to 6) and the lane columns (3 to 5) stay NULL.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<&str> = INSERT_COLUMNS.iter().chain(fields::COLUMNS.iter()).copied().collect();
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO messages ({}, v1_status) VALUES ({}, '')",
        columns.join(", "),
        placeholders.join(", ")
    )
});

/// One transaction for the whole batch. Duplicates are checked message by message inside
/// it, so a message resent within the same batch is found too: the control-id index finds
/// the candidates ([`FIND_DUPLICATE`]), and the stored bytes themselves are compared.
/// Refused messages are inserted without a duplicate check.
fn write_batch(
    conn: &mut Connection,
    batch: &[Request],
    routes: Option<&RouteTable>,
) -> rusqlite::Result<BatchWritten> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut queued = 0;
    let mut woken: Vec<Arc<tokio::sync::Notify>> = Vec::new();
    let now = micros(SystemTime::now());
    {
        let mut find = tx.prepare_cached(FIND_DUPLICATE)?;
        let mut count = tx.prepare_cached(COUNT_DUPLICATE)?;
        let mut insert = tx.prepare_cached(&INSERT)?;
        for request in batch {
            let m = match request {
                Request::Append(Append { message, .. }) => message,
                Request::Deliveries { updates, .. } => {
                    let changed = updates
                        .iter()
                        .map(|update| queue::apply(&tx, update))
                        .collect::<rusqlite::Result<_>>()?;
                    outcomes.push(Written::Deliveries(changed));
                    continue;
                }
            };
            let at = micros(m.received_at);
            let (window, refusal) = match &m.disposition {
                Disposition::Accepted { duplicate_window } => (*duplicate_window, None),
                Disposition::Refused(refusal) => (None, Some(refusal)),
            };
            let original = match window {
                Some(window) => {
                    let since = at.saturating_sub(i64::try_from(window.as_micros()).unwrap_or(i64::MAX));
                    let key = params![
                        &m.control_id,
                        since,
                        &*m.listener,
                        &m.sending_application,
                        &m.sending_facility,
                        &m.raw[..]
                    ];
                    find.query_row(key, |row| row.get::<_, i64>(0)).optional()?
                }
                None => None,
            };
            match original {
                Some(id) => {
                    count.execute(params![id, at])?;
                    outcomes.push(Written::Append(Appended::Duplicate));
                }
                None => {
                    let (peer, charset) = (m.peer.to_string(), m.charset.config_name());
                    let (size, ack_code) = (m.raw.len() as i64, m.ack_code.map(AckCode::as_str));
                    let (status, reason) =
                        (m.disposition.status().as_str(), refusal.map(ToString::to_string));
                    let error_code = refusal.map(|r| r.row().code.code());
                    let raw: &[u8] = &m.raw;
                    let mut values: Vec<&dyn ToSql> = vec![
                        &m.listener,
                        &peer,
                        &m.client_thumbprint,
                        &at,
                        &charset,
                        &m.message_type,
                        &m.control_id,
                        &m.sending_application,
                        &m.sending_facility,
                        &m.processing_id,
                        &m.version,
                        &size,
                        &ack_code,
                        &raw,
                        &status,
                        &reason,
                        &error_code,
                    ];
                    values.extend(m.fields.values());
                    insert.execute(&values[..])?;
                    // Only new accepted messages are delivered: never a refused one, never
                    // a duplicate (its original was queued when it was stored).
                    if let (None, Some(routes)) = (refusal, routes) {
                        let id = tx.last_insert_rowid();
                        let routes = queue::queue_message(
                            &tx,
                            routes,
                            id,
                            &m.listener,
                            &m.message_type,
                            &m.fields,
                            now,
                        )?;
                        queued += routes.len() as u64;
                        for route in routes {
                            if !woken.iter().any(|notify| Arc::ptr_eq(notify, &route.queued)) {
                                woken.push(route.queued.clone());
                            }
                        }
                    }
                    outcomes.push(Written::Append(Appended::New));
                }
            }
        }
    }
    tx.commit()?;
    Ok(BatchWritten { outcomes, queued, woken })
}

/// What [`write_batch`] committed.
struct BatchWritten {
    /// One per request, in order.
    outcomes: Vec<Written>,
    /// Delivery rows queued.
    queued: u64,
    /// The routes to wake (each once) now that their rows are committed.
    woken: Vec<Arc<tokio::sync::Notify>>,
}

/// What one retention step did.
struct ExpireStep {
    /// Expired messages looked at (at most the step's `rows`).
    examined: usize,
    /// Deleted (with their delivery rows, by the schema's trigger).
    deleted: u64,
    /// Kept: a delivery of theirs is pending, in flight or parked.
    kept: u64,
    /// `(received_at, id)` of the last one looked at.
    last: Option<(i64, i64)>,
}

/// One retention step, one transaction: looks at the next `rows` messages
/// received before `cutoff` (oldest first, after `cursor`) and deletes those with no
/// delivery still to do. A message with a pending, in-flight or parked delivery is never
/// deleted by retention (`hl7d messages purge --include-undelivered` can).
fn expire_step(
    conn: &mut Connection,
    cutoff: i64,
    cursor: Option<(i64, i64)>,
    rows: u32,
) -> rusqlite::Result<ExpireStep> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (after_at, after_id) = cursor.unwrap_or((i64::MIN, i64::MIN));
    let candidates: Vec<(i64, i64, bool)> = tx
        .prepare_cached(
            "SELECT id, received_at, EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id \
             AND d.state IN ('pending', 'in_flight', 'parked')) \
             FROM messages m INDEXED BY messages_received_at \
             WHERE received_at < ?1 AND (received_at > ?2 OR (received_at = ?2 AND id > ?3)) \
             ORDER BY received_at, id LIMIT ?4",
        )?
        .query_map(params![cutoff, after_at, after_id, rows], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut step = ExpireStep {
        examined: candidates.len(),
        deleted: 0,
        kept: 0,
        last: candidates.last().map(|&(id, at, _)| (at, id)),
    };
    {
        let mut delete = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
        for (id, _, open) in candidates {
            if open {
                step.kept += 1;
            } else {
                step.deleted += delete.execute([id])? as u64;
            }
        }
    }
    tx.commit()?;
    Ok(step)
}

/// Microseconds since the Unix epoch (negative before it): the stored times.
pub fn micros(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// SQLite's error with its extended code name where it has one (`SQLITE_FULL`, …).
pub(super) fn describe(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            let text = message.as_deref().unwrap_or("");
            format!("{text} ({:?}, sqlite code {})", code.code, code.extended_code)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {

    use hl7_proto::error::ParseError;
    use hl7_proto::refusal::Refusal;

    use super::super::{test_message, Filter, Reader, Status};
    use super::*;

    fn message(control_id: &str, raw: &[u8]) -> NewMessage {
        let accepted = Disposition::Accepted { duplicate_window: Some(Duration::from_secs(60)) };
        test_message(control_id, raw, Some(AckCode::ApplicationAccept), accepted)
    }

    fn rejected(control_id: &str, raw: &[u8]) -> NewMessage {
        let refusal =
            Refusal::Parse(ParseError::RequiredFieldMissing { field: "MSH-9", name: "message type" });
        NewMessage {
            ack_code: Some(AckCode::ApplicationReject),
            disposition: Disposition::Refused(refusal),
            ..message(control_id, raw)
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn check_finds_what_open_would_refuse_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("check");
        // Missing: fine, and still missing afterwards.
        SqliteStore::check(&dir).unwrap();
        assert!(!dir.exists());
        // A store that open made and closed.
        let store = SqliteStore::open(&dir, SqliteOptions::default()).unwrap();
        store.close();
        SqliteStore::check(&dir).unwrap();
        // Not a database.
        let file = dir.join(DATABASE_FILE);
        std::fs::write(&file, vec![b'x'; 4096]).unwrap();
        let error = SqliteStore::check(&dir).unwrap_err().to_string();
        assert!(error.contains("not an SQLite database"), "{error}");
        assert!(SqliteStore::open(&dir, SqliteOptions::default()).is_err(), "open agrees");
        // Written by a newer hl7d.
        std::fs::remove_file(&file).unwrap();
        let conn = Connection::open(&file).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        let error = SqliteStore::check(&dir).unwrap_err();
        assert!(
            matches!(error, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1),
            "{error}"
        );
        assert!(matches!(
            SqliteStore::open(&dir, SqliteOptions::default()),
            Err(StoreError::SchemaTooNew { .. })
        ));
        // The path is a file.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"").unwrap();
        let error = SqliteStore::check(&dir).unwrap_err().to_string();
        assert!(error.contains("not a directory"), "{error}");
    }

    #[test]
    fn duplicates_need_the_same_bytes_within_the_window() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dup");
        let store = SqliteStore::open(&dir, SqliteOptions::default()).unwrap();
        let rt = runtime();
        let append = |m| rt.block_on(store.append(m)).unwrap();
        assert_eq!(append(message("1", b"MSH|a")), Appended::New);
        assert_eq!(append(message("1", b"MSH|a")), Appended::Duplicate);
        // Same control id, other bytes: a different message.
        assert_eq!(append(message("1", b"MSH|b")), Appended::New);
        // Window off: stored again.
        let mut off = message("1", b"MSH|a");
        off.disposition = Disposition::Accepted { duplicate_window: None };
        assert_eq!(append(off), Appended::New);
        // Outside the window.
        let mut later = message("1", b"MSH|b");
        later.received_at += Duration::from_secs(120);
        assert_eq!(append(later), Appended::New);
        let stats = store.stats();
        assert_eq!((stats.stored, stats.duplicates), (4, 1));
        store.close();
        assert!(matches!(rt.block_on(store.append(message("2", b"x"))), Err(StoreError::Closed)));
    }

    /// Issue 14: duplicates are looked up by MSH-10 on the control-id index (schema 7); the
    /// same MSH-10 from another sender, on another listener or with other bytes is another
    /// message, and the lookup uses the index, not a scan.
    #[test]
    fn a_duplicate_needs_the_same_control_id_sender_listener_and_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("control-id");
        let rt = runtime();
        let store = SqliteStore::open(&dir, SqliteOptions::default()).unwrap();
        let append = |m| rt.block_on(store.append(m)).unwrap();
        assert_eq!(append(message("1", b"MSH|a")), Appended::New);
        assert_eq!(append(message("1", b"MSH|b")), Appended::New, "other bytes");
        let other_sender = NewMessage { sending_facility: "ELSEWHERE".into(), ..message("1", b"MSH|a") };
        assert_eq!(append(other_sender), Appended::New);
        let other_listener = NewMessage { listener: "adt".into(), ..message("1", b"MSH|a") };
        assert_eq!(append(other_listener), Appended::New);
        assert_eq!(append(message("1", b"MSH|a")), Appended::Duplicate);
        assert_eq!(append(message("1", b"MSH|b")), Appended::Duplicate);
        store.close();
        let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {FIND_DUPLICATE}"))
            .unwrap()
            .query_map(params!["1", 0, "lab", "APP", "FAC", &b"MSH|a"[..]], |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("INDEX messages_control_id (control_id=? AND received_at")),
            "{plan:?}"
        );
        let keys: i64 = conn
            .query_row("SELECT count(*) FROM messages WHERE dup_key IS NOT NULL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(keys, 0, "dup_key is no longer written");
        drop(conn);
        let reader = Reader::open(&dir).unwrap();
        assert_eq!(reader.count().unwrap(), 4);
    }

    /// Issue 13 item 15: a refused message is kept, but never as a duplicate and never as
    /// the original of one, whichever comes first.
    #[test]
    fn refused_messages_are_kept_and_never_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("refused");
        let store = SqliteStore::open(&dir, SqliteOptions::default()).unwrap();
        let rt = runtime();
        let append = |m| rt.block_on(store.append(m)).unwrap();
        // The same refused bytes twice: two rows.
        assert_eq!(append(rejected("R", b"MSH|r")), Appended::New);
        assert_eq!(append(rejected("R", b"MSH|r")), Appended::New);
        // An accepted message with the bytes of a refused one is new, not its duplicate...
        assert_eq!(append(message("R", b"MSH|r")), Appended::New);
        // ...and a refused one with the bytes of an accepted one is kept, not counted.
        assert_eq!(append(rejected("R", b"MSH|r")), Appended::New);
        // Duplicate detection among accepted messages is unchanged.
        assert_eq!(append(message("R", b"MSH|r")), Appended::Duplicate);
        let stats = store.stats();
        assert_eq!((stats.stored, stats.refused, stats.duplicates), (1, 3, 1));
        store.close();

        let reader = Reader::open(&dir).unwrap();
        let rows = reader.list(&Filter { oldest_first: true, ..Filter::default() }).unwrap();
        let seen: Vec<_> =
            rows.iter().map(|m| (m.status, m.duplicate_count, m.ack_code.as_deref())).collect();
        assert_eq!(
            seen,
            [
                (Status::Rejected, 0, Some("AR")),
                (Status::Rejected, 0, Some("AR")),
                (Status::Accepted, 1, Some("AA")),
                (Status::Rejected, 0, Some("AR")),
            ]
        );
        assert_eq!(rows[0].reason.as_deref(), Some("required field MSH-9 (message type) is empty"));
        assert_eq!(rows[0].error_code, Some(101));
        assert_eq!((rows[2].reason.as_deref(), rows[2].error_code), (None, None));
    }

    #[test]
    fn retention_deletes_in_small_steps() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("retention");
        let options = SqliteOptions {
            retention: Some(Duration::from_secs(3600)),
            retention_interval: Duration::from_millis(20),
            // No pause between steps: this test is about what goes, not the pacing (which
            // `retention_steps_are_sized_to_take_the_target_time` checks). Paced, a debug
            // build under a loaded test run deleted too few in the deadline.
            retention_pause: 0,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&dir, options).unwrap();
        let rt = runtime();
        let old = SystemTime::now() - Duration::from_secs(7200);
        let total = RETENTION_BATCH as usize * 2 + 10;
        rt.block_on(async {
            // Refused messages expire like accepted ones.
            let appends: Vec<_> = (0..total)
                .map(|i| {
                    let id = i.to_string();
                    let mut m = if i % 3 == 0 { rejected(&id, b"MSH|old") } else { message(&id, b"MSH|old") };
                    m.received_at = old;
                    store.append(m)
                })
                .collect();
            for append in appends {
                append.await.unwrap();
            }
            store.append(message("fresh", b"MSH|new")).await.unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.stats().expired < total as u64 {
            assert!(Instant::now() < deadline, "retention did not finish: {:?}", store.stats());
            thread::sleep(Duration::from_millis(10));
        }
        store.close();
        let reader = Reader::open(&dir).unwrap();
        let left = reader.list(&Filter::default()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].control_id, "fresh");
    }

    #[test]
    fn a_checkpoint_runs_on_its_own_connection_beside_an_open_write_transaction() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("checkpoint");
        SqliteStore::open(&dir, SqliteOptions::default()).unwrap().close();
        let file = dir.join(DATABASE_FILE);
        let (mut writer, _) = open_writer(&file, Durability::Full).unwrap();
        writer.execute_batch("CREATE TABLE filler(x BLOB)").unwrap();
        for _ in 0..20 {
            writer.execute("INSERT INTO filler VALUES (zeroblob(8192))", []).unwrap();
        }
        let counters = Arc::new(Counters::default());
        let mut checkpointer = CheckpointLoop {
            file: file.clone(),
            durability: Durability::Full,
            counters: counters.clone(),
            conn: None,
            restart_wanted: Arc::default(),
            page_size: 4096,
        };

        // The writer holds the write lock while both checkpoints run.
        let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        tx.execute("INSERT INTO filler VALUES (zeroblob(8192))", []).unwrap();
        let (busy, frames, folded) = checkpointer.checkpoint("PASSIVE").expect("checkpoint ran");
        assert_eq!(busy, 0);
        assert!(frames > 40, "{frames} frames");
        assert_eq!(folded, frames, "PASSIVE folded every committed frame beside the open write");
        // RESTART needs the write lock: it gives up at once instead of waiting for it.
        let started = Instant::now();
        let (busy, _, _) = checkpointer.checkpoint("RESTART").expect("checkpoint ran");
        assert_eq!(busy, 1);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        tx.commit().unwrap();
        assert_eq!(counters.checkpoints.load(Ordering::Relaxed), 1);

        // With the writer between transactions, RESTART folds the rest and starts the WAL
        // afresh: the next commit writes from its beginning.
        let (busy, frames, folded) = checkpointer.checkpoint("RESTART").expect("checkpoint ran");
        assert_eq!((busy, folded), (0, frames));
        writer.execute("INSERT INTO filler VALUES (1)", []).unwrap();
        let (_, frames, _) = checkpointer.checkpoint("PASSIVE").expect("checkpoint ran");
        assert!(frames < 10, "WAL not restarted: {frames} frames");
        assert_eq!(counters.checkpoints.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_wal_stays_bounded_under_sustained_appends_and_close_folds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bounded");
        let store = SqliteStore::open(&dir, SqliteOptions::default()).unwrap();
        let wal = dir.join(format!("{DATABASE_FILE}-wal"));
        // Sample the WAL's size from another thread while the writer never pauses: every
        // append is queued at once, so batches follow each other back to back.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (done, wal) = (done.clone(), wal.clone());
            thread::spawn(move || {
                let mut largest = 0;
                while !done.load(Ordering::Relaxed) {
                    largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                    thread::sleep(Duration::from_millis(2));
                }
                largest
            })
        };
        let messages = 16_000;
        let body = vec![b'x'; 4096];
        let rt = runtime();
        rt.block_on(async {
            let appends: Vec<_> = (0..messages)
                .map(|i| {
                    let id = i.to_string();
                    let mut raw = format!("MSH|{id}|").into_bytes();
                    raw.extend_from_slice(&body);
                    store.append(message(&id, &raw))
                })
                .collect();
            for append in appends {
                assert_eq!(append.await.unwrap(), Appended::New);
            }
        });
        done.store(true, Ordering::Relaxed);
        let largest = sampler.join().unwrap();
        let stats = store.stats();
        // 64 MB of messages: about 16 checkpoints are due.
        assert!(stats.checkpoints >= 8, "{stats:?}");
        assert!(largest > 0 && largest < 40 * 1024 * 1024, "WAL reached {largest} bytes");
        store.close();
        assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0), "WAL left behind after close");
        let reader = Reader::open(&dir).unwrap();
        assert_eq!(reader.count().unwrap(), messages as u64);
    }

    /// A writer connection on which every COMMIT of a batch holding a message with control
    /// id `doomed` fails, after each of its INSERTs succeeded: a trigger gives it a child
    /// row whose deferred foreign key is only checked at COMMIT. Temporary objects belong
    /// to the connection, so the setup makes them again on every reopen.
    fn commit_fails_for_doomed() -> ConnectionSetup {
        ConnectionSetup::new(|conn| {
            conn.execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TEMP TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY);
                 CREATE TEMP TABLE IF NOT EXISTS child
                     (parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);
                 CREATE TEMP TRIGGER IF NOT EXISTS doom AFTER INSERT ON main.messages
                     WHEN NEW.control_id = 'doomed' BEGIN INSERT INTO child VALUES (1); END;",
            )
        })
    }

    /// Issue 14 (one wake-up per batch): an append is answered only after its batch's
    /// transaction committed — on the answering task (store opened on a runtime, as `serve`
    /// does) as well as by the writer itself (no runtime). A batch whose COMMIT fails is
    /// answered with an error and nothing of it is stored; an answer given before the
    /// COMMIT would be `New`. And once the answering task's runtime is gone, the writer
    /// answers by itself.
    #[test]
    fn appends_are_answered_only_after_their_batch_committed() {
        for on_runtime in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("answers");
            let options = SqliteOptions {
                connection_setup: Some(commit_fails_for_doomed()),
                ..SqliteOptions::default()
            };
            let rt = runtime();
            let store = if on_runtime {
                rt.block_on(async { SqliteStore::open(&dir, options) }).unwrap()
            } else {
                SqliteStore::open(&dir, options).unwrap()
            };
            let reader = Reader::open(&dir).unwrap();
            let mut expected = vec!["first", "after", "later"];
            if on_runtime {
                // The answers go through a task on that runtime: committed, the append is
                // not answered until the runtime runs.
                let mut queued = store.append(message("queued", b"MSH|0"));
                let deadline = Instant::now() + Duration::from_secs(10);
                while store.stats().stored == 0 {
                    assert!(Instant::now() < deadline, "not committed: {:?}", store.stats());
                    thread::sleep(Duration::from_millis(1));
                }
                let mut idle = std::task::Context::from_waker(std::task::Waker::noop());
                assert!(queued.as_mut().poll(&mut idle).is_pending());
                assert_eq!(rt.block_on(queued).unwrap(), Appended::New);
                expected.insert(0, "queued");
            }

            assert_eq!(rt.block_on(store.append(message("first", b"MSH|1"))).unwrap(), Appended::New);
            // Answered after the COMMIT: another connection sees the row already.
            let stored = expected.len() as u64 - 2;
            assert_eq!(reader.count().unwrap(), stored, "on_runtime={on_runtime}");

            // Every INSERT of this batch succeeds; its COMMIT does not.
            let doomed = rt.block_on(store.append(message("doomed", b"MSH|2")));
            assert!(
                matches!(&doomed, Err(StoreError::Unavailable(reason)) if reason.contains("FOREIGN KEY")),
                "on_runtime={on_runtime}: {doomed:?}"
            );
            assert_eq!(reader.count().unwrap(), stored, "on_runtime={on_runtime}");
            assert_eq!(store.stats().failed_batches, 1);

            // The writer reopened its connection (setup included) and goes on.
            assert_eq!(rt.block_on(store.append(message("after", b"MSH|3"))).unwrap(), Appended::New);
            assert_eq!(reader.count().unwrap(), stored + 1, "on_runtime={on_runtime}");

            // The runtime that held the answering task is gone: answered all the same.
            drop(rt);
            let later = runtime();
            assert_eq!(later.block_on(store.append(message("later", b"MSH|4"))).unwrap(), Appended::New);
            store.close();
            let ids: Vec<String> = Reader::open(&dir)
                .unwrap()
                .list(&Filter { oldest_first: true, ..Filter::default() })
                .unwrap()
                .into_iter()
                .map(|m| m.control_id)
                .collect();
            assert_eq!(ids, expected, "on_runtime={on_runtime}");
        }
    }

    #[test]
    fn retention_steps_are_sized_to_take_the_target_time() {
        let ms = Duration::from_millis;
        // On target: unchanged. Twice too slow: halved. Much too fast: at most doubled.
        assert_eq!(next_step_rows(100, ms(5), ms(5), 500), 100);
        assert_eq!(next_step_rows(100, ms(10), ms(5), 500), 50);
        assert_eq!(next_step_rows(100, ms(1), ms(5), 500), 200);
        // One very slow step halves, no more.
        assert_eq!(next_step_rows(100, ms(2000), ms(5), 500), 50);
        // Within 1..=most.
        assert_eq!(next_step_rows(400, ms(1), ms(5), 500), 500);
        assert_eq!(next_step_rows(1, ms(50), ms(5), 500), 1);
        assert_eq!(next_step_rows(16, Duration::ZERO, ms(5), 500), 32);
    }

    /// A new store is made with [`NEW_STORE_PAGE_SIZE`] pages; a store made with 4 KiB
    /// pages (as every store before) keeps them, opens, takes messages and reads back.
    #[test]
    fn new_stores_get_8_kib_pages_and_old_ones_keep_theirs() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = runtime();
        let page_size = |dir: &Path| -> i64 {
            let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
            conn.pragma_query_value(None, "page_size", |r| r.get(0)).unwrap()
        };

        let new = tmp.path().join("new");
        let store = SqliteStore::open(&new, SqliteOptions::default()).unwrap();
        rt.block_on(store.append(message("1", b"MSH|a"))).unwrap();
        store.close();
        assert_eq!(page_size(&new), 8192);

        // An old store: made with 4 KiB pages, as every store before this build.
        let old = tmp.path().join("old");
        std::fs::create_dir(&old).unwrap();
        {
            let mut conn = Connection::open(old.join(DATABASE_FILE)).unwrap();
            conn.pragma_update(None, "page_size", 4096).unwrap();
            let _: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).unwrap();
            schema::migrate(&mut conn).unwrap();
        }
        assert_eq!(page_size(&old), 4096);
        let store = SqliteStore::open(&old, SqliteOptions::default()).unwrap();
        let big = vec![b'x'; 20_000];
        for (n, raw) in [(1, &b"MSH|a"[..]), (2, &big[..])] {
            rt.block_on(store.append(message(&n.to_string(), raw))).unwrap();
        }
        store.close();
        assert_eq!(page_size(&old), 4096, "an existing store keeps its page size");
        let reader = Reader::open(&old).unwrap();
        assert_eq!(reader.count().unwrap(), 2);
        assert_eq!(reader.integrity_check().unwrap(), "ok");
        let listed = reader.list(&Filter::default()).unwrap();
        assert_eq!(reader.message(listed[0].id).unwrap().unwrap().raw.as_deref(), Some(&big[..]));
    }

    #[test]
    fn micros_round_trip_around_the_epoch() {
        assert_eq!(micros(UNIX_EPOCH), 0);
        assert_eq!(micros(UNIX_EPOCH + Duration::from_micros(5)), 5);
        assert_eq!(micros(UNIX_EPOCH - Duration::from_micros(5)), -5);
    }
}
