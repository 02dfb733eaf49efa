//! [`DeliveryQueue`] on the shared PostgreSQL store: several nodes, each lane worked by one
//! of them at a time under a lease (the model: `crate::delivery::lease`; the table:
//! `delivery_leases`, migration 2 of `crate::store::postgres::schema`).
//!
//! Every statement is one round trip on a pooled connection, autocommitted, so no lock is
//! held between them:
//! - [`RouteQueue::pick`] walks the route's lane heads with a recursive skip scan on
//!   `deliveries_open` (one index seek per lane, pages of [`WALK_PAGE`] lanes per
//!   statement) and treats a lane whose lease has not expired as busy;
//! - [`RouteQueue::take`] inserts the lane's lease row (only one node's insert can win),
//!   else takes an expired one found with `FOR UPDATE SKIP LOCKED`; each take draws a new
//!   token from `delivery_lease_tokens`;
//! - [`RouteQueue::claim`] renews the lease and puts the row in flight in one statement,
//!   only while the token still holds an unexpired lease; [`RouteQueue::finish`] writes
//!   the outcome only while the token still holds the lease row (locked `FOR SHARE`, so a
//!   takeover cannot slip in between the check and the write);
//! - [`RouteQueue::release`] deletes the row if the token is still its own.
//!
//! Lease times are the database's (`now()`): nodes' clocks are never compared.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Pool;
use hl7_proto::charset::Charset;
use tokio_postgres::Row;

use super::{DeliveryQueue, LaneHold, RouteQueue};
use crate::delivery::lanes::{self, Pick};
use crate::delivery::{BoxFuture, Outbound};
pub use crate::store::postgres::route_status;
use crate::store::postgres::schema::describe;
use crate::store::queue::{from_micros, DeliveryState, DeliveryUpdate, Finished, LaneHead, OpenCounts};
use crate::store::StoreError;

/// Lane heads read per statement of a walk.
pub const WALK_PAGE: i64 = 256;

/// The queue in the shared PostgreSQL database reached through `pool`, worked by the node
/// called `node` under leases of `lease`.
pub struct PgQueue {
    pool: Pool,
    node: Arc<str>,
    lease: Duration,
}

impl PgQueue {
    /// The queue of the database behind `pool`, for the node `node`.
    pub fn new(pool: Pool, node: &str, lease: Duration) -> PgQueue {
        PgQueue { pool, node: Arc::from(node), lease }
    }
}

impl DeliveryQueue for PgQueue {
    fn route(&self, route: &str) -> BoxFuture<'_, Result<Arc<dyn RouteQueue>, StoreError>> {
        let queue: Arc<dyn RouteQueue> = Arc::new(PgRouteQueue {
            pool: self.pool.clone(),
            node: self.node.clone(),
            lease_seconds: self.lease.as_secs_f64(),
            route: Arc::from(route),
        });
        Box::pin(std::future::ready(Ok(queue)))
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }
}

struct PgRouteQueue {
    pool: Pool,
    node: Arc<str>,
    lease_seconds: f64,
    route: Arc<str>,
}

const HEAD_COLUMNS: &str =
    "d.id, d.lane, d.message_id, d.state, d.attempts, d.queued_at, d.next_attempt_at, d.first_attempt_at";
const OPEN: &str = "('pending', 'in_flight', 'parked')";

impl PgRouteQueue {
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => unavailable(&e),
            other => StoreError::Unavailable(other.to_string()),
        })
    }

    /// Up to [`WALK_PAGE`] lane heads after `after` in lane order, each with whether its
    /// lane is leased (unexpired) now.
    async fn heads_after(&self, after: &str) -> Result<Vec<(LaneHead, bool)>, StoreError> {
        let sql = format!(
            "WITH RECURSIVE walk(lane) AS ( \
                 (SELECT lane FROM deliveries WHERE route = $1 AND lane > $2 AND state IN {OPEN} \
                  ORDER BY lane LIMIT 1) \
               UNION ALL \
                 SELECT (SELECT d.lane FROM deliveries d WHERE d.route = $1 AND d.lane > walk.lane \
                         AND d.state IN {OPEN} ORDER BY d.lane LIMIT 1) \
                 FROM walk WHERE walk.lane IS NOT NULL) \
             SELECT {HEAD_COLUMNS}, EXISTS (SELECT 1 FROM delivery_leases l \
                    WHERE l.route = $1 AND l.lane = w.lane AND l.expires_at > now()) \
             FROM (SELECT lane FROM walk WHERE lane IS NOT NULL LIMIT $3) w \
             CROSS JOIN LATERAL (SELECT * FROM deliveries d WHERE d.route = $1 AND d.lane = w.lane \
                    AND d.state IN {OPEN} ORDER BY d.id LIMIT 1) d \
             ORDER BY d.lane"
        );
        let client = self.client().await?;
        let rows =
            client.query(&sql, &[&&*self.route, &after, &WALK_PAGE]).await.map_err(|e| unavailable(&e))?;
        rows.iter()
            .map(|row| Ok((head(row)?, row.try_get::<_, bool>(8).map_err(|e| unavailable(&e))?)))
            .collect()
    }
}

impl RouteQueue for PgRouteQueue {
    fn pick(
        &self,
        cursor: Option<String>,
        mut busy: HashSet<String>,
        free: usize,
        now: i64,
    ) -> BoxFuture<'_, Result<Pick, StoreError>> {
        Box::pin(async move {
            // From after the cursor to the end, then from the start to the cursor itself.
            let mut heads = Vec::new();
            let mut after = cursor.clone().unwrap_or_default();
            let mut wrapped = false;
            'walk: loop {
                let page = self.heads_after(&after).await?;
                let full = page.len() as i64 == WALK_PAGE;
                for (head, leased) in page {
                    if wrapped && cursor.as_deref().is_some_and(|cursor| head.lane.as_str() > cursor) {
                        break 'walk;
                    }
                    after = head.lane.clone();
                    // Another node's lane (this node's own are busy already).
                    if leased {
                        busy.insert(head.lane.clone());
                    }
                    heads.push(head);
                }
                if full {
                    continue;
                }
                if wrapped || cursor.is_none() {
                    break;
                }
                wrapped = true;
                after = String::new();
            }
            lanes::pick(heads.into_iter().map(Ok), &busy, free, now)
        })
    }

    fn take(&self, lane: &str) -> BoxFuture<'_, Result<Option<LaneHold>, StoreError>> {
        let lane = lane.to_owned();
        Box::pin(async move {
            let client = self.client().await?;
            let inserted = client
                .query_opt(
                    "INSERT INTO delivery_leases (route, lane, node, token, taken_at, expires_at) \
                     VALUES ($1, $2, $3, nextval('delivery_lease_tokens'), now(), now() + make_interval(secs => $4)) \
                     ON CONFLICT (route, lane) DO NOTHING RETURNING token",
                    &[&&*self.route, &lane, &&*self.node, &self.lease_seconds],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            let token = match inserted {
                Some(row) => Some(row.get::<_, i64>(0)),
                // A row: take it only if its lease has expired, and skip it if another
                // node is taking or renewing it right now.
                None => client
                    .query_opt(
                        "WITH expired AS ( \
                             SELECT route, lane FROM delivery_leases \
                             WHERE route = $1 AND lane = $2 AND expires_at <= now() FOR UPDATE SKIP LOCKED) \
                         UPDATE delivery_leases l SET node = $3, token = nextval('delivery_lease_tokens'), \
                             taken_at = now(), expires_at = now() + make_interval(secs => $4) \
                         FROM expired WHERE l.route = expired.route AND l.lane = expired.lane \
                         RETURNING l.token",
                        &[&&*self.route, &lane, &&*self.node, &self.lease_seconds],
                    )
                    .await
                    .map_err(|e| unavailable(&e))?
                    .map(|row| row.get::<_, i64>(0)),
            };
            Ok(token.map(|token| LaneHold { lane, token }))
        })
    }

    fn renew<'a>(&'a self, hold: &'a LaneHold) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let renewed = client
                .execute(
                    "UPDATE delivery_leases SET expires_at = now() + make_interval(secs => $4) \
                     WHERE route = $1 AND lane = $2 AND token = $3 AND expires_at > now()",
                    &[&&*self.route, &hold.lane, &hold.token, &self.lease_seconds],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(renewed == 1)
        })
    }

    fn release(&self, hold: LaneHold) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    "DELETE FROM delivery_leases WHERE route = $1 AND lane = $2 AND token = $3",
                    &[&&*self.route, &hold.lane, &hold.token],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(())
        })
    }

    fn next(&self, lane: &str, now: i64) -> BoxFuture<'_, Result<Option<(LaneHead, Outbound)>, StoreError>> {
        let lane = lane.to_owned();
        Box::pin(async move {
            let client = self.client().await?;
            let sql = format!(
                "SELECT {HEAD_COLUMNS}, m.listener, m.control_id, m.message_type, m.charset, m.received_at, m.raw \
                 FROM deliveries d JOIN messages m ON m.id = d.message_id \
                 WHERE d.route = $1 AND d.lane = $2 AND d.state IN {OPEN} ORDER BY d.id LIMIT 1"
            );
            let Some(row) =
                client.query_opt(&sql, &[&&*self.route, &lane]).await.map_err(|e| unavailable(&e))?
            else {
                return Ok(None);
            };
            let head = head(&row)?;
            if head.state == DeliveryState::Parked || head.next_attempt_at > now {
                return Ok(None);
            }
            let get = |e: tokio_postgres::Error| unavailable(&e);
            let charset: String = row.try_get(11).map_err(get)?;
            let outbound = Outbound {
                id: head.message_id,
                listener: Arc::from(row.try_get::<_, String>(8).map_err(get)?),
                control_id: row.try_get(9).map_err(get)?,
                message_type: row.try_get(10).map_err(get)?,
                charset: Charset::from_config_name(&charset).unwrap_or(Charset::Utf8),
                received_at: from_micros(row.try_get(12).map_err(get)?),
                raw: Bytes::from(row.try_get::<_, Vec<u8>>(13).map_err(get)?),
            };
            Ok(Some((head, outbound)))
        })
    }

    fn claim<'a>(
        &'a self,
        hold: &'a LaneHold,
        head: &'a LaneHead,
        at: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(
                    "WITH lease AS ( \
                         UPDATE delivery_leases SET expires_at = now() + make_interval(secs => $4) \
                         WHERE route = $1 AND lane = $2 AND token = $3 AND expires_at > now() RETURNING token), \
                     claimed AS ( \
                         UPDATE deliveries SET state = 'in_flight', attempts = attempts + 1, \
                             first_attempt_at = coalesce(first_attempt_at, $6), last_attempt_at = $6 \
                         WHERE id = $5 AND state IN ('pending', 'in_flight') AND EXISTS (SELECT 1 FROM lease) \
                         RETURNING id) \
                     SELECT (SELECT count(*) FROM lease)",
                    &[&&*self.route, &hold.lane, &hold.token, &self.lease_seconds, &head.id, &at],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(row.get::<_, i64>(0) == 1)
        })
    }

    fn finish<'a>(
        &'a self,
        hold: &'a LaneHold,
        update: DeliveryUpdate,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let DeliveryUpdate::Finish { id, at, result, error, response } = update else {
                // The engine claims through `claim`; a claim here is a caller's mistake.
                return Err(StoreError::Unavailable("a claim passed as an outcome".into()));
            };
            let (state, next, done): (&str, Option<i64>, Option<i64>) = match result {
                Finished::Delivered => ("delivered", None, Some(at)),
                Finished::Retry { next_attempt_at } => ("pending", Some(next_attempt_at), None),
                Finished::Parked => ("parked", None, Some(at)),
            };
            let client = self.client().await?;
            let row = client
                .query_one(
                    "WITH lease AS ( \
                         SELECT token FROM delivery_leases WHERE route = $1 AND lane = $2 AND token = $3 FOR SHARE), \
                     done AS ( \
                         UPDATE deliveries SET state = $5, next_attempt_at = coalesce($6, next_attempt_at), \
                             done_at = $7, last_error = coalesce($8, last_error), response = coalesce($9, response) \
                         WHERE id = $4 AND state IN ('pending', 'in_flight') AND EXISTS (SELECT 1 FROM lease) \
                         RETURNING id) \
                     SELECT (SELECT count(*) FROM lease)",
                    &[&&*self.route, &hold.lane, &hold.token, &id, &state, &next, &done, &error, &response],
                )
                .await
                .map_err(|e| unavailable(&e))?;
            Ok(row.get::<_, i64>(0) == 1)
        })
    }

    fn held_lanes(&self) -> BoxFuture<'_, Result<Vec<LaneHead>, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let sql = format!(
                "SELECT {HEAD_COLUMNS} FROM (SELECT DISTINCT lane FROM deliveries WHERE route = $1 AND state = 'parked') p \
                 CROSS JOIN LATERAL (SELECT * FROM deliveries d WHERE d.route = $1 AND d.lane = p.lane \
                     AND d.state IN {OPEN} ORDER BY d.id LIMIT 1) d \
                 WHERE d.state = 'parked' ORDER BY d.lane"
            );
            let rows = client.query(&sql, &[&&*self.route]).await.map_err(|e| unavailable(&e))?;
            rows.iter().map(head).collect()
        })
    }

    fn open_counts(&self) -> BoxFuture<'_, Result<OpenCounts, StoreError>> {
        Box::pin(async move {
            let client = self.client().await?;
            let sql = format!(
                "SELECT state, count(*), min(queued_at) FROM deliveries \
                 WHERE route = $1 AND state IN {OPEN} GROUP BY state"
            );
            let rows = client.query(&sql, &[&&*self.route]).await.map_err(|e| unavailable(&e))?;
            let mut counts = OpenCounts::default();
            for row in rows {
                let (state, count, oldest): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
                let count = count.max(0) as u64;
                match DeliveryState::from_name(&state) {
                    Some(DeliveryState::Pending) => counts.pending = count,
                    Some(DeliveryState::InFlight) => counts.in_flight = count,
                    Some(DeliveryState::Parked) => {
                        counts.parked = count;
                        continue;
                    }
                    _ => continue,
                }
                counts.oldest_pending_queued_at =
                    Some(counts.oldest_pending_queued_at.map_or(oldest, |seen| seen.min(oldest)));
            }
            Ok(counts)
        })
    }
}

/// Which node holds which lanes of `route` now (unexpired leases), by node, lanes in
/// order: what `hl7d routes status` shows.
pub async fn holders(
    client: &tokio_postgres::Client,
    route: &str,
) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    let rows = client
        .query(
            "SELECT node, lane FROM delivery_leases WHERE route = $1 AND expires_at > now() ORDER BY node, lane",
            &[&route],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    let mut holders: Vec<(String, Vec<String>)> = Vec::new();
    for row in rows {
        let (node, lane): (String, String) = (row.get(0), row.get(1));
        match holders.last_mut() {
            Some((last, lanes)) if *last == node => lanes.push(lane),
            _ => holders.push((node, vec![lane])),
        }
    }
    Ok(holders)
}

/// The routes the database's delivery rows name, in order (`hl7d routes status` lists the
/// removed ones among them too).
pub async fn delivery_routes(client: &tokio_postgres::Client) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query("SELECT DISTINCT route FROM deliveries ORDER BY route", &[])
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

fn head(row: &Row) -> Result<LaneHead, StoreError> {
    let get = |e: tokio_postgres::Error| unavailable(&e);
    let state: String = row.try_get(3).map_err(get)?;
    Ok(LaneHead {
        id: row.try_get(0).map_err(get)?,
        lane: row.try_get(1).map_err(get)?,
        message_id: row.try_get(2).map_err(get)?,
        // The open index holds only these three states.
        state: DeliveryState::from_name(&state).unwrap_or(DeliveryState::Pending),
        attempts: row.try_get::<_, i64>(4).map_err(get)?.clamp(0, i64::from(u32::MAX)) as u32,
        queued_at: row.try_get(5).map_err(get)?,
        next_attempt_at: row.try_get(6).map_err(get)?,
        first_attempt_at: row.try_get(7).map_err(get)?,
    })
}

fn unavailable(error: &tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(error))
}
