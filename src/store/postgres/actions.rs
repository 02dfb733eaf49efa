//! [`PgActions`]: the operator's changes to the delivery queue on the PostgreSQL store
//! (`hl7d routes retry|skip|backfill`, `hl7d messages resend`), with the meanings
//! [`crate::store::deliveries::DeliveryActions`] gives them on SQLite: the same rows
//! change, the same [`Changed`], [`Queued`] and [`QueuedRange`] come back.
//!
//! Every change is a short transaction beside the nodes working the queue. A node's claim
//! and outcome only touch a row that is `pending` or `in_flight`, under its lane's lease
//! (`crate::delivery::queue::postgres`); the operator's statements lock the rows they
//! change (`FOR UPDATE`, re-checked after any wait), so a retry only releases a row still
//! parked and a skip only takes a row still parked or pending: one in flight is left to its
//! attempt, as on SQLite. Nothing signals the nodes: their engines read the rows again.

use std::time::SystemTime;

use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

use super::super::deliveries::{ActionError, Changed, Queued, QueuedRange, Release, RouteRule, ACTION_BATCH};
use super::super::queue::DeliveryState;
use super::super::{micros, Filter, Status, StoreError, PURGE_BATCH};
use super::read::{condition, PgReader, Value, HAS_OPEN_DELIVERY};
use crate::config::PostgresConfig;

/// A message's original delivery on a route: its first that is not itself a resend (else
/// its first); SQLite's `ORIGINAL`.
const ORIGINAL: &str = "SELECT id FROM deliveries WHERE message_id = $1 AND route = $2 \
     ORDER BY resend_of IS NOT NULL, id LIMIT 1";

/// A new pending delivery, due when queued; SQLite's `INSERT`.
const INSERT: &str =
    "INSERT INTO deliveries (message_id, route, lane, state, queued_at, next_attempt_at, resend_of) \
     VALUES ($1, $2, $3, 'pending', $4, $4, $5) RETURNING id";

/// A read-write connection to the PostgreSQL store for the operator's changes to the
/// delivery queue; see the module documentation.
pub struct PgActions {
    reader: PgReader,
}

impl PgActions {
    /// Connects to the database of `config` (at this build's schema version; never
    /// migrates).
    pub fn open(config: &PostgresConfig) -> Result<PgActions, StoreError> {
        Ok(PgActions { reader: PgReader::open(config)? })
    }

    /// `hl7d routes retry`: see [`crate::store::deliveries::DeliveryActions::retry`].
    pub fn retry(
        &mut self,
        route: &str,
        which: &Release,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        let (message, lane): (Option<i64>, Option<&str>) = match which {
            Release::Message(id) => (Some(*id), None),
            Release::Lane(lane) => (None, Some(lane.as_str())),
            Release::AllParked => (None, None),
        };
        let now = micros(now);
        let reader = &mut self.reader;
        let result = reader.runtime.block_on(async {
            let rows = reader
                .client
                .query(
                    "WITH target AS ( \
                         SELECT id FROM deliveries WHERE route = $1 AND state = 'parked' \
                         AND ($3::BIGINT IS NULL OR message_id = $3) AND ($4::TEXT IS NULL OR lane = $4) \
                         FOR UPDATE) \
                     UPDATE deliveries d SET state = 'pending', next_attempt_at = $2, first_attempt_at = NULL, \
                         done_at = NULL FROM target WHERE d.id = target.id \
                     RETURNING d.id, d.message_id, d.lane",
                    &[&route, &now, &message, &lane],
                )
                .await?;
            let mut released: Vec<Changed> = rows
                .iter()
                .map(|row| Changed {
                    id: row.get(0),
                    message_id: row.get(1),
                    lane: row.get(2),
                    was: DeliveryState::Parked,
                })
                .collect();
            released.sort_by_key(|changed| changed.id);
            Ok(released)
        });
        result.map_err(|e| self.reader.error(&e))
    }

    /// `hl7d routes skip`: see [`crate::store::deliveries::DeliveryActions::skip`]. A row
    /// in flight (a node is attempting it) is left alone.
    pub fn skip(
        &mut self,
        route: &str,
        message_id: i64,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        let now = micros(now);
        let reader = &mut self.reader;
        let result = reader.runtime.block_on(async {
            let rows = reader
                .client
                .query(
                    "WITH target AS ( \
                         SELECT id, state FROM deliveries \
                         WHERE message_id = $1 AND route = $2 AND state IN ('parked', 'pending') FOR UPDATE) \
                     UPDATE deliveries d SET state = 'skipped', done_at = $3 FROM target WHERE d.id = target.id \
                     RETURNING d.id, d.message_id, d.lane, target.state",
                    &[&message_id, &route, &now],
                )
                .await?;
            let mut skipped: Vec<Changed> = rows
                .iter()
                .map(|row| Changed {
                    id: row.get(0),
                    message_id: row.get(1),
                    lane: row.get(2),
                    was: DeliveryState::from_name(row.get(3)).unwrap_or(DeliveryState::Pending),
                })
                .collect();
            skipped.sort_by_key(|changed| changed.id);
            Ok(skipped)
        });
        result.map_err(|e| self.reader.error(&e))
    }

    /// `hl7d routes backfill`: see [`crate::store::deliveries::DeliveryActions::backfill`].
    pub fn backfill(
        &mut self,
        route: &RouteRule,
        since: SystemTime,
        until: SystemTime,
        dry_run: bool,
        now: SystemTime,
    ) -> Result<QueuedRange, StoreError> {
        self.queue_range(route, since, until, dry_run, now, Mode::Backfill)
    }

    /// `hl7d messages resend --since`: see
    /// [`crate::store::deliveries::DeliveryActions::resend_range`].
    pub fn resend_range(
        &mut self,
        route: &RouteRule,
        since: SystemTime,
        until: SystemTime,
        dry_run: bool,
        now: SystemTime,
    ) -> Result<QueuedRange, StoreError> {
        self.queue_range(route, since, until, dry_run, now, Mode::Resend)
    }

    /// `hl7d messages resend ID…`: see [`crate::store::deliveries::DeliveryActions::resend`]
    /// (all or nothing, in one transaction).
    pub fn resend(
        &mut self,
        route: &RouteRule,
        ids: &[i64],
        dry_run: bool,
        now: SystemTime,
    ) -> Result<Vec<Queued>, ActionError> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let now = micros(now);
        let reader = &mut self.reader;
        let result = reader.runtime.block_on(async {
            let tx = reader.client.transaction().await?;
            let mut queued = Vec::with_capacity(ids.len());
            for &id in &ids {
                let Some(row) =
                    tx.query_opt("SELECT status, charset, raw FROM messages WHERE id = $1", &[&id]).await?
                else {
                    return Ok(Err(ActionError::NoMessage(id)));
                };
                // A status this build does not know is not `accepted` either.
                let status: Status = row.get::<_, String>(0).parse().unwrap_or(Status::Rejected);
                if status != Status::Accepted {
                    return Ok(Err(ActionError::NotAccepted { id, status }));
                }
                let resend_of: Option<i64> =
                    tx.query_opt(ORIGINAL, &[&id, &route.name]).await?.map(|row| row.get(0));
                let new = if dry_run {
                    None
                } else {
                    let lane = route.lane(row.get::<_, &[u8]>(2), row.get::<_, &str>(1));
                    Some(tx.query_one(INSERT, &[&id, &route.name, &lane, &now, &resend_of]).await?.get(0))
                };
                queued.push(Queued { id: new, message_id: id, resend_of });
            }
            if dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(Ok(queued))
        });
        result.map_err(|e| ActionError::Store(self.reader.error(&e)))?
    }

    /// `hl7d messages purge`: see [`crate::store::purge`]. Deletes every message `filter`
    /// selects that was stored when the call began, [`PURGE_BATCH`] per statement (each
    /// its own transaction); a message with a delivery still to do is kept unless
    /// `include_undelivered`. A deleted message's delivery rows and duplicate key go with
    /// it (`ON DELETE CASCADE`); a node attempting one of them finds its row gone and
    /// writes nothing.
    pub fn purge(&mut self, filter: &Filter, include_undelivered: bool) -> Result<u64, StoreError> {
        let reader = &mut self.reader;
        let result = reader.runtime.block_on(async {
            let last: Option<i64> = reader.client.query_one("SELECT max(id) FROM messages", &[]).await?.get(0);
            let Some(last) = last else { return Ok(0) };
            let (condition, mut values) = condition(filter);
            values.push(Value::Int(last));
            let last_index = values.len();
            values.push(Value::Int(PURGE_BATCH));
            let keep = if include_undelivered { String::new() } else { format!(" AND NOT {HAS_OPEN_DELIVERY}") };
            // Up to the newest id now (ids come from one sequence whichever node stored
            // them): a sender still writing matching messages cannot keep it going.
            let sql = format!(
                "DELETE FROM messages WHERE id IN \
                 (SELECT id FROM messages WHERE ({condition}) AND id <= ${last_index}{keep} ORDER BY id LIMIT ${})",
                values.len()
            );
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(Value::as_sql).collect();
            let statement = reader.client.prepare(&sql).await?;
            let mut deleted = 0u64;
            loop {
                let n = reader.client.execute(&statement, &params).await?;
                deleted += n;
                if (n as i64) < PURGE_BATCH {
                    return Ok(deleted);
                }
            }
        });
        result.map_err(|e| self.reader.error(&e))
    }

    fn queue_range(
        &mut self,
        route: &RouteRule,
        since: SystemTime,
        until: SystemTime,
        dry_run: bool,
        now: SystemTime,
        mode: Mode,
    ) -> Result<QueuedRange, StoreError> {
        let (since, until, now) = (micros(since), micros(until), micros(now));
        let reader = &mut self.reader;
        let result = reader.runtime.block_on(async {
            // The ids received in the range (on `messages_received_at`); messages stored
            // after this are not looked at, so a busy sender cannot keep it going.
            let row = reader
                .client
                .query_one(
                    "SELECT min(id), max(id) FROM messages WHERE received_at >= $1 AND received_at < $2",
                    &[&since, &until],
                )
                .await?;
            let mut result = QueuedRange::default();
            let (Some(low), Some(high)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
                return Ok(result);
            };
            let mut after = low - 1;
            while after < high {
                let tx = reader.client.transaction().await?;
                after =
                    queue_batch(&tx, route, (after, high), (since, until), dry_run, now, mode, &mut result)
                        .await?;
                if dry_run {
                    tx.rollback().await?;
                } else {
                    tx.commit().await?;
                }
            }
            Ok(result)
        });
        result.map_err(|e| self.reader.error(&e))
    }
}

impl std::fmt::Debug for PgActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgActions").field("url", &self.reader.url).finish()
    }
}

/// Which stored messages a range queues.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Those the route takes and never had.
    Backfill,
    /// Those the route had.
    Resend,
}

/// One batch of a range, ids in `(after, high]`, in id order (a lane's messages are queued
/// in the order they were stored; `received_at` is checked per row, as on SQLite). Returns
/// the last id looked at.
#[allow(clippy::too_many_arguments)]
async fn queue_batch(
    tx: &Transaction<'_>,
    route: &RouteRule,
    (after, high): (i64, i64),
    (since, until): (i64, i64),
    dry_run: bool,
    now: i64,
    mode: Mode,
    result: &mut QueuedRange,
) -> Result<i64, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT id, listener, message_type, status, received_at, charset, raw, \
             EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id AND d.route = $4) \
             FROM messages WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            &[&after, &high, &ACTION_BATCH, &route.name],
        )
        .await?;
    let mut last = None;
    for row in &rows {
        let id: i64 = row.get(0);
        last = Some(id);
        let received_at: i64 = row.get(4);
        let has_delivery: bool = row.get(7);
        let wanted = row.get::<_, &str>(3) == Status::Accepted.as_str()
            && (since..until).contains(&received_at)
            && match mode {
                Mode::Backfill => !has_delivery && route.takes(row.get(1), row.get(2)),
                Mode::Resend => has_delivery,
            };
        if !wanted {
            continue;
        }
        if !dry_run {
            let resend_of: Option<i64> = match mode {
                Mode::Backfill => None,
                Mode::Resend => tx.query_opt(ORIGINAL, &[&id, &route.name]).await?.map(|row| row.get(0)),
            };
            let lane = route.lane(row.get::<_, &[u8]>(6), row.get::<_, &str>(5));
            tx.execute(INSERT, &[&id, &route.name, &lane, &now, &resend_of]).await?;
        }
        result.count += 1;
        result.first_message.get_or_insert(id);
        result.last_message = Some(id);
    }
    Ok(last.unwrap_or(high))
}
