//! What `hl7d routes status` and the console's dashboard read from the PostgreSQL store,
//! with the meanings SQLite's `deliveries.rs` and `stats.rs` give them: a route's counts
//! ([`route_status`], also read by the delivery engine's queue), each listener's traffic
//! and the senders seen since a time, where a newest-first page starts, and the database's
//! size. No message content, no patient field.

use std::time::SystemTime;

use tokio_postgres::types::ToSql;

use super::read::PgReader;
use super::schema::describe;
use crate::store::deliveries::RouteStatus;
use crate::store::read::time;
use crate::store::{micros, ListenerTraffic, SenderSeen, StoreError};

/// The states a delivery still has work in.
const OPEN: &str = "('pending', 'in_flight', 'parked')";

/// `route`'s counts, held lanes, oldest pending row and last error, with the meanings of
/// [`crate::store::Reader::route_status`] (the finished rows from `delivery_counts`).
pub async fn route_status(client: &tokio_postgres::Client, route: &str) -> Result<RouteStatus, StoreError> {
    let error = |e: tokio_postgres::Error| StoreError::Unavailable(describe(&e));
    let mut status = RouteStatus::empty(route);
    let sql = format!(
        "SELECT state, count(*), min(queued_at) FROM deliveries WHERE route = $1 AND state IN {OPEN} GROUP BY state"
    );
    let rows = client.query(&sql, &[&route]).await.map_err(error)?;
    status.add_open(rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))));
    let rows = client
        .query("SELECT state, rows FROM delivery_counts WHERE route = $1", &[&route])
        .await
        .map_err(error)?;
    status.add_finished(rows.iter().map(|row| (row.get(0), row.get(1))));
    let held = format!(
        "SELECT count(*) FROM (SELECT DISTINCT lane FROM deliveries WHERE route = $1 AND state = 'parked') p \
         CROSS JOIN LATERAL (SELECT state FROM deliveries d WHERE d.route = $1 AND d.lane = p.lane \
             AND d.state IN {OPEN} ORDER BY d.id LIMIT 1) d WHERE d.state = 'parked'"
    );
    status.held_lanes =
        client.query_one(&held, &[&route]).await.map_err(error)?.get::<_, i64>(0).max(0) as u64;
    let last = format!(
        "SELECT last_error FROM deliveries WHERE route = $1 AND state IN {OPEN} AND last_error IS NOT NULL \
         ORDER BY last_attempt_at DESC, id DESC LIMIT 1"
    );
    status.last_error = client.query_opt(&last, &[&route]).await.map_err(error)?.map(|row| row.get(0));
    Ok(status)
}

impl PgReader {
    /// Where message `id` stands in a newest-first list (see [`crate::store::Reader::position`]).
    pub fn position(&self, id: i64) -> Result<Option<(SystemTime, i64)>, StoreError> {
        let row = self
            .runtime
            .block_on(self.client.query_opt("SELECT received_at FROM messages WHERE id = $1", &[&id]))
            .map_err(|e| self.error(&e))?;
        Ok(row.map(|row| (time(row.get(0)), id)))
    }

    /// Per listener: the messages stored since `since` (see
    /// [`crate::store::Reader::traffic_since`]).
    pub fn traffic_since(&self, since: SystemTime) -> Result<Vec<ListenerTraffic>, StoreError> {
        let rows = self.query(
            "SELECT listener, count(*) FILTER (WHERE status = 'accepted'), \
             count(*) FILTER (WHERE status <> 'accepted'), max(received_at) \
             FROM messages WHERE received_at >= $1 GROUP BY listener ORDER BY listener",
            &[&micros(since)],
        )?;
        Ok(rows
            .iter()
            .map(|row| ListenerTraffic {
                listener: row.get(0),
                accepted: row.get::<_, i64>(1).max(0) as u64,
                refused: row.get::<_, i64>(2).max(0) as u64,
                last_at: row.get::<_, Option<i64>>(3).map(time),
            })
            .collect())
    }

    /// The senders seen since `since`, the most recent first, at most `limit` (see
    /// [`crate::store::Reader::senders_since`]).
    pub fn senders_since(&self, since: SystemTime, limit: u64) -> Result<Vec<SenderSeen>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "SELECT listener, sending_application, sending_facility, client_thumbprint, count(*), \
             max(received_at) AS last FROM messages WHERE received_at >= $1 \
             GROUP BY listener, sending_application, sending_facility, client_thumbprint \
             ORDER BY last DESC LIMIT $2",
            &[&micros(since), &limit],
        )?;
        Ok(rows
            .iter()
            .map(|row| SenderSeen {
                listener: row.get(0),
                sending_application: row.get(1),
                sending_facility: row.get(2),
                client_thumbprint: row.get(3),
                messages: row.get::<_, i64>(4).max(0) as u64,
                last_at: time(row.get(5)),
            })
            .collect())
    }

    /// `route`'s counts (see [`route_status`]).
    pub fn route_status(&self, route: &str) -> Result<RouteStatus, StoreError> {
        self.runtime.block_on(route_status(&self.client, route))
    }

    /// Bytes the database takes on its server (`pg_database_size`: tables, indexes, TOAST).
    pub fn database_bytes(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT pg_database_size(current_database())", &[])?;
        Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0).max(0) as u64))
    }

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        self.runtime.block_on(self.client.query(sql, params)).map_err(|e| self.error(&e))
    }
}
