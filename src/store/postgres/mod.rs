//! [`PgStore`]: the shared store on PostgreSQL (`[store] url`, issue 16), the same
//! [`MessageStore`] as [`super::SqliteStore`] for several hl7d nodes on one database.
//!
//! Group commit as in SQLite: [`PgStore::append`] queues the message and waits; a writer
//! task takes every append waiting (up to [`MAX_BATCH_MESSAGES`]), writes them in one
//! transaction on one pooled connection (the statements pipelined, one round trip for the
//! batch), commits, and only then answers each append. A failed batch (the database down,
//! a connection cut before or during COMMIT) answers every append in it with
//! [`StoreError::Unavailable`], so the listener sends AE/CE, never AA. A message whose
//! COMMIT was cut off may still have been committed: the sender resends it after the error
//! ACK and duplicate detection recognises it (stored once, answered AA the second time).
//!
//! Duplicates across nodes: each accepted message claims its row in `message_keys`
//! (`INSERT … ON CONFLICT … DO UPDATE … WHERE` the original is older than the window) in
//! the statement that inserts it, so two nodes storing the same message at once serialise
//! on the primary key: the second waits for the first's COMMIT and finds the original.
//! The statements of a batch are sent in key order, so two batches (on one node or two)
//! take those row locks in the same order and cannot deadlock on them.
//!
//! Readiness: [`PgStore::is_up`] is the outcome of the last thing that used the database,
//! a batch or a probe (`SELECT 1` every [`PROBE_INTERVAL`]); `/ready` answers 503 while it
//! is down. The pool replaces broken connections by itself (see [`connect`]).
//!
//! Retention runs on its own task in short transactions of at most
//! [`RETENTION_BATCH`] messages (`FOR UPDATE SKIP LOCKED`, so several nodes share the work),
//! never deleting a message with a delivery still to do.

mod actions;
pub mod connect;
mod read;
pub mod schema;
mod status;

pub use actions::PgActions;
pub use read::PgReader;
pub use status::route_status;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::Pool;
use futures_util::future::try_join_all;
use hl7_proto::ack::AckCode;
use hl7_proto::keys::duplicate_key_of;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, trace, warn};

use super::fields;
use super::queue::SharedRouteTable;
use super::sqlite::INSERT_COLUMNS;
use super::{micros, Appended, BoxFuture, Disposition, MessageStore, NewMessage, StoreError, StoreStats};
use crate::config::PostgresConfig;
use schema::describe;

/// Most messages in one transaction (as in SQLite).
pub const MAX_BATCH_MESSAGES: usize = 1024;
/// A batch stops taking messages once it holds this many bytes (one message always fits).
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// How often the health probe asks the database `SELECT 1`.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Most expired messages deleted in one retention transaction.
pub const RETENTION_BATCH: i64 = 500;
/// How often retention looks for expired messages once a sweep found no more.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// The pause between two full retention steps: bounded work on the shared database.
const RETENTION_PAUSE: Duration = Duration::from_millis(50);

/// How a [`PgStore`] runs.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Delete messages older than this; `None` keeps them.
    pub retention: Option<Duration>,
    /// The routes every new accepted message is queued for, in its own transaction.
    pub routes: Option<SharedRouteTable>,
    /// How often the health probe runs (default [`PROBE_INTERVAL`]).
    pub probe_interval: Option<Duration>,
}

/// The shared PostgreSQL store; see the module documentation.
pub struct PgStore {
    url: String,
    pool: Pool,
    requests: Mutex<Option<mpsc::UnboundedSender<Append>>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    counters: Counters,
    /// The last batch or probe reached the database.
    up: AtomicBool,
}

impl PgStore {
    /// Builds the pool, connects once, migrates the schema (once across nodes, under an
    /// advisory lock) and starts the writer, probe and retention tasks on the current
    /// runtime. Fails when the database cannot be reached or was migrated by a newer hl7d.
    pub async fn open(config: &PostgresConfig, options: PgOptions) -> Result<PgStore, StoreError> {
        let url = connect::display_url(config).to_owned();
        let open_error = |reason: String| StoreError::Open { path: url.clone().into(), reason };
        let pool = connect::pool(config).map_err(|e| open_error(e.to_string()))?;
        let applied = {
            let mut client = pool.get().await.map_err(|e| open_error(pool_error(&e)))?;
            schema::migrate(&mut client, &url).await?
        };
        if !applied.is_empty() {
            info!(url = %url, versions = ?applied, "message store schema migrated (PostgreSQL)");
        }
        let shared = Arc::new(Shared { counters: Counters::default(), up: AtomicBool::new(true) });
        let stop = CancellationToken::new();
        let (sender, receiver) = mpsc::unbounded_channel();
        let writer = Writer { pool: pool.clone(), shared: shared.clone(), routes: options.routes.clone() };
        let handle = tokio::spawn(writer.run(receiver));
        let probe_interval = options.probe_interval.unwrap_or(PROBE_INTERVAL);
        tokio::spawn(probe(pool.clone(), shared.clone(), probe_interval, stop.clone()));
        if let Some(retention) = options.retention {
            tokio::spawn(retention_loop(pool.clone(), shared.clone(), retention, stop.clone()));
        }
        Ok(PgStore {
            url,
            pool,
            requests: Mutex::new(Some(sender)),
            shared,
            stop,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The database URL (no password in it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection pool, for readers and (issue 16 part 2) the delivery engine.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether the last batch or health probe reached the database (`/ready`).
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    /// A flag that follows [`PgStore::is_up`], for `/ready`.
    pub fn health(&self) -> StoreHealth {
        StoreHealth(self.shared.clone())
    }

    /// Counters since the store was opened.
    pub fn stats(&self) -> StoreStats {
        self.shared.counters.snapshot()
    }

    /// Stops taking messages, lets the writer finish every message already queued, and
    /// stops the probe and retention tasks. Later appends fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        drop(self.requests.lock().unwrap_or_else(PoisonError::into_inner).take());
        self.stop.cancel();
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            if handle.await.is_err() {
                error!(url = %self.url, "message store writer task panicked");
            }
        }
        self.pool.close();
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &self.url).field("stats", &self.stats()).finish()
    }
}

/// Whether the PostgreSQL store can reach its database now (see [`PgStore::is_up`]).
#[derive(Clone)]
pub struct StoreHealth(Arc<Shared>);

impl StoreHealth {
    /// The last batch or probe reached the database.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreHealth(up: {})", self.is_up())
    }
}

impl MessageStore for PgStore {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let queued = {
            let guard = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            match guard.as_ref() {
                Some(sender) => sender
                    .send(Append { message, reply, queued: Instant::now() })
                    .map_err(|_| StoreError::Closed),
                None => Err(StoreError::Closed),
            }
        };
        Box::pin(async move {
            queued?;
            answer.await.unwrap_or(Err(StoreError::Closed))
        })
    }
}

/// One message for the writer.
struct Append {
    message: NewMessage,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
    queued: Instant,
}

#[derive(Default)]
struct Counters {
    stored: AtomicU64,
    refused: AtomicU64,
    duplicates: AtomicU64,
    commits: AtomicU64,
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
            checkpoints: 0,
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            kept_undelivered: self.kept_undelivered.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }
}

struct Writer {
    pool: Pool,
    shared: Arc<Shared>,
    routes: Option<SharedRouteTable>,
}

impl Writer {
    async fn run(self, mut requests: mpsc::UnboundedReceiver<Append>) {
        while let Some(first) = requests.recv().await {
            let mut bytes = first.message.raw.len();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_MESSAGES && bytes < MAX_BATCH_BYTES {
                match requests.try_recv() {
                    Ok(append) => {
                        bytes += append.message.raw.len();
                        batch.push(append);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch).await;
        }
        debug!("message store writer stopped (PostgreSQL)");
    }

    /// Writes the batch on a pooled connection. A connection that failed is detached from
    /// the pool (never trusted again, as in SQLite). When the failure came before anything
    /// was sent for the batch (BEGIN on a connection the database had already closed, as
    /// after a restart), nothing can have been committed: the batch is tried once more on a
    /// fresh connection instead of costing error ACKs.
    async fn write(
        &self,
        batch: &[Append],
        routes: Option<&super::queue::RouteTable>,
    ) -> Result<BatchWritten, String> {
        let mut retried = false;
        loop {
            let mut client = self.pool.get().await.map_err(|e| pool_error(&e))?;
            match write_batch(&mut client, batch, routes).await {
                Ok(written) => return Ok(written),
                Err(failure) => {
                    let _ = deadpool_postgres::Object::take(client);
                    if failure.before_begin && !retried {
                        retried = true;
                        debug!(error = %describe(&failure.error), "store connection was closed; batch retried on a new one");
                        continue;
                    }
                    return Err(describe(&failure.error));
                }
            }
        }
    }

    async fn commit(&self, batch: Vec<Append>) {
        let started = Instant::now();
        let oldest = batch.first().map(|append| append.queued);
        let routes = self.routes.as_ref().map(|routes| routes.load_full());
        let result = self.write(&batch, routes.as_deref()).await;
        let counters = &self.shared.counters;
        match result {
            Ok(written) => {
                self.shared.up.store(true, Ordering::Release);
                let messages = batch.len() as u64;
                counters.stored.fetch_add(written.stored, Ordering::Relaxed);
                counters.refused.fetch_add(written.refused, Ordering::Relaxed);
                counters.duplicates.fetch_add(messages - written.stored - written.refused, Ordering::Relaxed);
                counters.queued.fetch_add(written.queued, Ordering::Relaxed);
                counters.commits.fetch_add(1, Ordering::Relaxed);
                crate::metrics::store_commit(started.elapsed(), batch.len());
                trace!(
                    messages,
                    queued = written.queued,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "store batch committed (PostgreSQL)"
                );
                if let Some(oldest) = oldest {
                    if oldest.elapsed() >= Duration::from_millis(10) {
                        debug!(messages, waited_us = oldest.elapsed().as_micros() as u64, "store batch slow");
                    }
                }
                for (append, outcome) in batch.into_iter().zip(written.outcomes) {
                    let _ = append.reply.send(Ok(outcome));
                }
                for notify in written.woken {
                    notify.notify_one();
                }
            }
            Err(reason) => {
                self.shared.up.store(false, Ordering::Release);
                counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                crate::metrics::store_failed_commit();
                error!(messages = batch.len(), error = %reason,
                    "message store write failed (PostgreSQL); answering with error ACKs");
                for append in batch {
                    let _ = append.reply.send(Err(StoreError::Unavailable(reason.clone())));
                }
            }
        }
    }
}

/// What [`write_batch`] committed.
struct BatchWritten {
    /// One per append, in the batch's order.
    outcomes: Vec<Appended>,
    stored: u64,
    refused: u64,
    queued: u64,
    woken: Vec<Arc<tokio::sync::Notify>>,
}

/// The columns of `messages` the writer fills, in the order of [`Row::values`]: SQLite's
/// (the header columns, then the key fields), then the lane keys and `dup_key` that the
/// PostgreSQL table still fills, then `id`.
static COLUMNS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let tail = ["lane_sender", "lane_patient", "dup_key", "id"];
    INSERT_COLUMNS.iter().chain(fields::COLUMNS.iter()).chain(tail.iter()).copied().collect()
});

/// A refused message: a plain INSERT (never a duplicate, never delivered).
fn insert_refused() -> String {
    let columns = &COLUMNS[..COLUMNS.len() - 1];
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    format!("INSERT INTO messages ({}) VALUES ({})", columns.join(", "), placeholders.join(", "))
}

/// An accepted message in one statement: claim its duplicate key with a fresh id (or find
/// the key taken by an original inside the window: then nothing else happens, no row is
/// returned), insert the message under that id, and queue its deliveries.
///
/// `$1..$28` are [`COLUMNS`] but `id`, `$29` the SHA-256 of the bytes, `$30` the start of
/// the duplicate window (`received_at - window`; `i64::MAX` without a window: always a new
/// original), `$31`/`$32` the routes and their lanes, `$33` now.
fn insert_accepted() -> String {
    let columns = &COLUMNS[..COLUMNS.len() - 1];
    let values: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    format!(
        "WITH key AS (\
            INSERT INTO message_keys (dup_key, listener, raw_sha256, message_id, received_at) \
            VALUES ($28, $1, $29, nextval('messages_id_seq'), $4) \
            ON CONFLICT (dup_key, listener, raw_sha256) DO UPDATE \
                SET message_id = EXCLUDED.message_id, received_at = EXCLUDED.received_at \
                WHERE message_keys.received_at < $30 \
            RETURNING message_id), \
         message AS (\
            INSERT INTO messages ({columns}, id) SELECT {values}, key.message_id FROM key RETURNING id), \
         queued AS (\
            INSERT INTO deliveries (message_id, route, lane, state, queued_at, next_attempt_at) \
            SELECT message.id, r.route, r.lane, 'pending', $33, $33 \
            FROM message, unnest($31::text[], $32::text[]) WITH ORDINALITY AS r(route, lane, n) \
            ORDER BY r.n RETURNING 1) \
         SELECT id, (SELECT count(*) FROM queued) FROM message",
        columns = columns.join(", "),
        values = values.join(", "),
    )
}

/// Counts a duplicate on its original (the key's current message), in a statement of its
/// own: its snapshot sees the original even when it was committed by another node while
/// the claim waited for it.
const COUNT_DUPLICATE: &str = "UPDATE messages SET duplicate_count = duplicate_count + 1, last_duplicate_at = $4 \
     WHERE id = (SELECT message_id FROM message_keys WHERE dup_key = $1 AND listener = $2 AND raw_sha256 = $3)";

/// One message's parameters, owned, so that the batch's statements can borrow them while
/// they are pipelined.
struct Row {
    listener: String,
    peer: String,
    client_thumbprint: Option<String>,
    received_at: i64,
    charset: &'static str,
    message_type: String,
    control_id: String,
    sending_application: String,
    sending_facility: String,
    processing_id: String,
    version: String,
    size: i64,
    ack_code: Option<&'static str>,
    raw: Vec<u8>,
    status: &'static str,
    reason: Option<String>,
    error_code: Option<i64>,
    fields: super::KeyFields,
    dup_key: i64,
    sha256: Vec<u8>,
    since: i64,
    routes: Vec<String>,
    lanes: Vec<String>,
    accepted: bool,
}

impl Row {
    fn new(
        m: &NewMessage,
        routes: Option<&super::queue::RouteTable>,
        woken: &mut Vec<Arc<tokio::sync::Notify>>,
    ) -> Row {
        let at = micros(m.received_at);
        let (since, refusal) = match &m.disposition {
            Disposition::Accepted { duplicate_window: Some(window) } => {
                (at.saturating_sub(i64::try_from(window.as_micros()).unwrap_or(i64::MAX)), None)
            }
            Disposition::Accepted { duplicate_window: None } => (i64::MAX, None),
            Disposition::Refused(refusal) => (i64::MAX, Some(refusal)),
        };
        let (mut route_names, mut lanes) = (Vec::new(), Vec::new());
        // Only new accepted messages are delivered (the statement queues nothing for a
        // duplicate); the routes are matched here with the writer's table.
        if let (None, Some(table)) = (refusal, routes) {
            for route in table.matching(&m.listener, &m.message_type) {
                route_names.push(route.name.to_string());
                lanes.push(route.lane(&m.fields));
                if !woken.iter().any(|notify| Arc::ptr_eq(notify, &route.queued)) {
                    woken.push(route.queued.clone());
                }
            }
        }
        Row {
            listener: m.listener.to_string(),
            peer: m.peer.to_string(),
            client_thumbprint: m.client_thumbprint.clone(),
            received_at: at,
            charset: m.charset.config_name(),
            message_type: m.message_type.clone(),
            control_id: m.control_id.clone(),
            sending_application: m.sending_application.clone(),
            sending_facility: m.sending_facility.clone(),
            processing_id: m.processing_id.clone(),
            version: m.version.clone(),
            size: m.raw.len() as i64,
            ack_code: m.ack_code.map(AckCode::as_str),
            raw: m.raw.to_vec(),
            status: m.disposition.status().as_str(),
            reason: refusal.map(ToString::to_string),
            error_code: refusal.map(|r| i64::from(r.row().code.code())),
            fields: m.fields.clone(),
            dup_key: duplicate_key_of(&m.listener, &m.sending_application, &m.sending_facility, &m.control_id)
                as i64,
            sha256: Sha256::digest(&m.raw).to_vec(),
            since,
            routes: route_names,
            lanes,
            accepted: refusal.is_none(),
        }
    }

    /// `$1..$28` of both INSERTs ([`COLUMNS`] without `id`).
    fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        let f = &self.fields;
        vec![
            &self.listener,
            &self.peer,
            &self.client_thumbprint,
            &self.received_at,
            &self.charset,
            &self.message_type,
            &self.control_id,
            &self.sending_application,
            &self.sending_facility,
            &self.processing_id,
            &self.version,
            &self.size,
            &self.ack_code,
            &self.raw,
            &self.status,
            &self.reason,
            &self.error_code,
            &f.patient_id,
            &f.patient_authority,
            &f.visit_number,
            &f.placer_order,
            &f.filler_order,
            &f.message_time_utc,
            &f.message_time_wall,
            &f.trigger_event,
            &f.lane_sender,
            &f.lane_patient,
            &self.dup_key,
        ]
    }
}

/// One transaction for the whole batch, its statements pipelined on one connection. The
/// accepted messages go in key order (see the module documentation); the answers come back
/// in the batch's order.
async fn write_batch(
    client: &mut deadpool_postgres::Client,
    batch: &[Append],
    routes: Option<&super::queue::RouteTable>,
) -> Result<BatchWritten, BatchFailed> {
    let tx = client.transaction().await.map_err(|error| BatchFailed { error, before_begin: true })?;
    write_in(tx, batch, routes).await.map_err(|error| BatchFailed { error, before_begin: false })
}

/// Why a batch failed, and whether it failed before its BEGIN reached the database.
struct BatchFailed {
    error: tokio_postgres::Error,
    before_begin: bool,
}

async fn write_in(
    tx: deadpool_postgres::Transaction<'_>,
    batch: &[Append],
    routes: Option<&super::queue::RouteTable>,
) -> Result<BatchWritten, tokio_postgres::Error> {
    let mut woken = Vec::new();
    let rows: Vec<Row> = batch.iter().map(|append| Row::new(&append.message, routes, &mut woken)).collect();
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |row: &Row| (!row.accepted, row.dup_key, row.listener.clone(), row.sha256.clone());
        key(&rows[a]).cmp(&key(&rows[b]))
    });
    let now = micros(SystemTime::now());
    let accepted = tx.prepare_cached(&insert_accepted()).await?;
    let refused = tx.prepare_cached(&insert_refused()).await?;
    let statements = order.iter().map(|&index| {
        let row = &rows[index];
        let (tx, accepted, refused) = (&tx, &accepted, &refused);
        async move {
            let mut values = row.values();
            if row.accepted {
                values.extend([
                    &row.sha256 as &(dyn ToSql + Sync),
                    &row.since,
                    &row.routes,
                    &row.lanes,
                    &now,
                ]);
                let found = tx.query_opt(accepted, &values).await?;
                Ok::<_, tokio_postgres::Error>((index, found.map(|found| found.get::<_, i64>(1))))
            } else {
                tx.execute(refused, &values).await?;
                Ok((index, Some(0)))
            }
        }
    });
    let results = try_join_all(statements).await?;
    let mut outcomes = vec![Appended::New; rows.len()];
    let (mut stored, mut refused_count, mut queued) = (0, 0, 0);
    let mut duplicates = Vec::new();
    for (index, result) in results {
        match result {
            Some(count) => {
                if rows[index].accepted {
                    stored += 1;
                    queued += count as u64;
                } else {
                    refused_count += 1;
                }
            }
            None => {
                outcomes[index] = Appended::Duplicate;
                duplicates.push(index);
            }
        }
    }
    if !duplicates.is_empty() {
        let count = tx.prepare_cached(COUNT_DUPLICATE).await?;
        let updates =
            duplicates.iter().map(|&index| {
                let row = &rows[index];
                let count = &count;
                let tx = &tx;
                async move {
                    tx.execute(count, &[&row.dup_key, &row.listener, &row.sha256, &row.received_at]).await
                }
            });
        try_join_all(updates).await?;
    }
    tx.commit().await?;
    if queued == 0 {
        woken.clear();
    }
    Ok(BatchWritten { outcomes, stored, refused: refused_count, queued, woken })
}

/// A pool error as one line (never a password: the URL holds none).
fn pool_error(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

/// Asks the database `SELECT 1` every `interval`; sets [`PgStore::is_up`] from the answer
/// (a batch sets it too). Logs the changes only.
async fn probe(pool: Pool, shared: Arc<Shared>, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let result = tokio::time::timeout(interval.max(Duration::from_secs(1)), async {
            let client = pool.get().await.map_err(|e| pool_error(&e))?;
            client.simple_query("SELECT 1").await.map_err(|e| describe(&e))
        })
        .await
        .unwrap_or_else(|_| Err("health probe timed out".to_owned()));
        let was = shared.up.swap(result.is_ok(), Ordering::AcqRel);
        match (was, result) {
            (true, Err(reason)) => {
                warn!(error = %reason, "message store unreachable (PostgreSQL): not ready")
            }
            (false, Ok(_)) => info!("message store reachable again (PostgreSQL): ready"),
            _ => {}
        }
    }
}

/// Deletes expired messages (and, by the schema's cascade, their keys and delivery rows) in
/// transactions of at most [`RETENTION_BATCH`], never one with a delivery still to do.
async fn retention_loop(pool: Pool, shared: Arc<Shared>, retention: Duration, stop: CancellationToken) {
    const STEP: &str = "WITH expired AS (\
            SELECT id FROM messages m WHERE received_at < $1 \
            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id \
                AND d.state IN ('pending', 'in_flight', 'parked')) \
            ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         DELETE FROM messages WHERE id IN (SELECT id FROM expired)";
    let mut swept = 0u64;
    loop {
        let cutoff = SystemTime::now().checked_sub(retention).map_or(i64::MIN, micros);
        let result = async {
            let client = pool.get().await.map_err(|e| pool_error(&e))?;
            client.execute(STEP, &[&cutoff, &RETENTION_BATCH]).await.map_err(|e| describe(&e))
        }
        .await;
        let wait = match result {
            Ok(deleted) => {
                shared.counters.expired.fetch_add(deleted, Ordering::Relaxed);
                swept += deleted;
                if deleted as i64 == RETENTION_BATCH {
                    RETENTION_PAUSE
                } else {
                    if swept > 0 {
                        info!(deleted = swept, retention = %humantime::format_duration(retention),
                            "retention: deleted expired messages");
                    }
                    swept = 0;
                    RETENTION_INTERVAL
                }
            }
            Err(reason) => {
                warn!(error = %reason, "retention step failed (PostgreSQL)");
                RETENTION_INTERVAL
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
