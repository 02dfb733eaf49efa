//! [`PgReader`]: the operator's reads of the PostgreSQL store (`hl7d messages list|show|
//! export`), the same answers as [`crate::store::Reader`] gives on SQLite: the same
//! [`Filter`] (each condition with the meaning `read.rs` gives it), newest first, the same
//! [`StoredMessage`] rows.
//!
//! The CLI is synchronous, so this is a blocking facade: one connection on a runtime of its
//! own (current thread). It only reads; it never migrates (a database `hl7d serve` has not
//! migrated to this build's schema is refused, as SQLite's reader does).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::super::deliveries::{Delivery, ParkedDelivery};
use super::super::queue::DeliveryState;
use super::super::read::time;
use super::super::{micros, Filter, KeyFields, Status, StoreError, StoredMessage};
use super::schema::{self, describe, PG_SCHEMA_VERSION};
use crate::config::PostgresConfig;

/// The columns [`stored`] reads, in its order; `raw` comes after them when asked for.
const COLUMNS: &str = "id, listener, peer, client_thumbprint, received_at, charset, message_type, control_id, \
     sending_application, sending_facility, processing_id, version, size, ack_code, status, \
     duplicate_count, last_duplicate_at, reason, error_code, patient_id, patient_authority, visit_number, \
     placer_order, filler_order, message_time_utc, message_time_wall, trigger_event, lane_sender, lane_patient";
/// A message has a delivery still to do (SQLite's condition of the same name).
pub(super) const HAS_OPEN_DELIVERY: &str =
    "EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id \
     AND d.state IN ('pending', 'in_flight', 'parked'))";
/// Where the key fields start in [`COLUMNS`].
const KEY_FIELDS_AT: usize = 19;

/// A read-only view of the PostgreSQL store; see the module documentation.
pub struct PgReader {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) client: deadpool_postgres::Object,
    pub(super) url: String,
}

impl PgReader {
    /// Connects to the database of `config`. Fails when it cannot be reached or its schema
    /// is not this build's.
    pub fn open(config: &PostgresConfig) -> Result<PgReader, StoreError> {
        let url = config.url.clone();
        let open_error = |reason: String| StoreError::Open { path: url.clone().into(), reason };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| open_error(e.to_string()))?;
        let single = PostgresConfig { pool_size: 1, ..config.clone() };
        let client = runtime.block_on(async {
            let pool = super::connect::pool(&single).map_err(|e| open_error(e.to_string()))?;
            let client = pool.get().await.map_err(|e| open_error(super::pool_error(&e)))?;
            let found = match schema::version(&client).await {
                Ok(found) => found,
                // No versions table: nothing was ever migrated here.
                Err(e) if e.as_db_error().is_some_and(|db| db.code().code() == "42P01") => 0,
                Err(e) => return Err(open_error(describe(&e))),
            };
            if found > PG_SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew { path: url.clone().into(), found, supported: PG_SCHEMA_VERSION });
            }
            if found < PG_SCHEMA_VERSION {
                return Err(open_error(format!(
                    "schema version {found} is older than {PG_SCHEMA_VERSION}; start hl7d serve once to migrate it"
                )));
            }
            Ok(client)
        })?;
        Ok(PgReader { runtime, client, url })
    }

    /// Messages matching `filter`, without their bytes.
    pub fn list(&self, filter: &Filter) -> Result<Vec<StoredMessage>, StoreError> {
        let mut out = Vec::new();
        self.select(filter, false, |message| {
            out.push(message);
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    }

    /// Calls `each` for every message matching `filter`, with its bytes, one at a time
    /// (streamed from the server, not held in memory). Stops at the first error.
    pub fn for_each_message<E: From<StoreError>>(
        &self,
        filter: &Filter,
        each: impl FnMut(StoredMessage) -> Result<(), E>,
    ) -> Result<(), E> {
        self.select(filter, true, each)
    }

    /// The message with this id, with its bytes.
    pub fn message(&self, id: i64) -> Result<Option<StoredMessage>, StoreError> {
        let sql = format!("SELECT {COLUMNS}, raw FROM messages WHERE id = $1");
        let row = self.runtime.block_on(self.client.query_opt(&sql, &[&id])).map_err(|e| self.error(&e))?;
        row.map(|row| stored(&row, true)).transpose().map_err(|e| self.error(&e))
    }

    /// Number of stored messages that `filter` selects, its limit aside.
    pub fn count_matching(&self, filter: &Filter) -> Result<u64, StoreError> {
        let (condition, values) = condition(filter);
        let sql = format!("SELECT count(*) FROM messages WHERE {condition}");
        self.count(&sql, &values)
    }

    /// `min(matching, cap)`, counting no further than `cap` (see the SQLite reader's).
    pub fn count_matching_up_to(&self, filter: &Filter, cap: u64) -> Result<u64, StoreError> {
        let (condition, mut values) = condition(filter);
        values.push(Value::Int(i64::try_from(cap).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT count(*) FROM (SELECT 1 FROM messages WHERE {condition} LIMIT ${}) AS m",
            values.len()
        );
        self.count(&sql, &values)
    }

    /// Number of stored messages that `filter` selects (its limit aside) with a delivery
    /// still to do: those a purge keeps without `--include-undelivered`.
    pub fn count_undelivered(&self, filter: &Filter) -> Result<u64, StoreError> {
        let (condition, values) = condition(filter);
        let sql = format!("SELECT count(*) FROM messages WHERE ({condition}) AND {HAS_OPEN_DELIVERY}");
        self.count(&sql, &values)
    }

    /// The listener names that stored messages carry, sorted.
    pub fn listeners(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .runtime
            .block_on(self.client.query("SELECT DISTINCT listener FROM messages ORDER BY listener", &[]))
            .map_err(|e| self.error(&e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Every delivery row of message `message_id`, by route then queue order.
    pub fn deliveries_of(&self, message_id: i64) -> Result<Vec<Delivery>, StoreError> {
        let rows = self
            .runtime
            .block_on(self.client.query(
                "SELECT id, route, lane, state, attempts, queued_at, next_attempt_at, first_attempt_at, \
                 last_attempt_at, done_at, last_error, response, resend_of \
                 FROM deliveries WHERE message_id = $1 ORDER BY route, id",
                &[&message_id],
            ))
            .map_err(|e| self.error(&e))?;
        Ok(rows.iter().map(delivery).collect())
    }

    /// The routes that delivery rows name, sorted (see [`crate::store::Reader::delivery_routes`]).
    pub fn delivery_routes(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .runtime
            .block_on(self.client.query(
                "SELECT route FROM delivery_counts WHERE rows > 0 \
                 UNION SELECT DISTINCT route FROM deliveries WHERE state IN ('pending', 'in_flight', 'parked') \
                 ORDER BY route",
                &[],
            ))
            .map_err(|e| self.error(&e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Whether any delivery row names `route` (see [`PgReader::delivery_routes`]).
    pub fn route_has_deliveries(&self, route: &str) -> Result<bool, StoreError> {
        let row = self
            .runtime
            .block_on(self.client.query_one(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE route = $1 \
                     AND state IN ('pending', 'in_flight', 'parked')) \
                 OR EXISTS (SELECT 1 FROM delivery_counts WHERE route = $1 AND rows > 0)",
                &[&route],
            ))
            .map_err(|e| self.error(&e))?;
        Ok(row.get(0))
    }

    /// `route`'s parked deliveries, by lane then queue order, with their messages' MSH-10
    /// and MSH-9 (see [`crate::store::Reader::parked`]).
    pub fn parked(&self, route: &str) -> Result<Vec<ParkedDelivery>, StoreError> {
        let rows = self
            .runtime
            .block_on(self.client.query(
                "SELECT d.id, d.message_id, d.lane, m.control_id, m.message_type, d.attempts, d.done_at, \
                 d.last_error, d.response \
                 FROM deliveries d LEFT JOIN messages m ON m.id = d.message_id \
                 WHERE d.route = $1 AND d.state = 'parked' ORDER BY d.lane, d.id",
                &[&route],
            ))
            .map_err(|e| self.error(&e))?;
        Ok(rows
            .iter()
            .map(|row| ParkedDelivery {
                id: row.get(0),
                message_id: row.get(1),
                lane: row.get(2),
                control_id: row.get::<_, Option<String>>(3).unwrap_or_default(),
                message_type: row.get::<_, Option<String>>(4).unwrap_or_default(),
                attempts: row.get::<_, i64>(5).max(0) as u64,
                parked_at: row.get::<_, Option<i64>>(6).map(time),
                last_error: row.get(7),
                response: row.get(8),
            })
            .collect())
    }

    fn count(&self, sql: &str, values: &[Value]) -> Result<u64, StoreError> {
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(Value::as_sql).collect();
        let row = self.runtime.block_on(self.client.query_one(sql, &params)).map_err(|e| self.error(&e))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn select<E: From<StoreError>>(
        &self,
        filter: &Filter,
        with_raw: bool,
        mut each: impl FnMut(StoredMessage) -> Result<(), E>,
    ) -> Result<(), E> {
        let (sql, values) = query(filter, with_raw);
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(Value::as_sql).collect();
        let mut rows: Pin<Box<dyn Stream<Item = Result<Row, tokio_postgres::Error>> + Send>> = Box::pin(
            self.runtime
                .block_on(self.client.query_raw(&sql, params.iter().copied()))
                .map_err(|e| self.error(&e))?,
        );
        while let Some(row) = self.runtime.block_on(rows.next()) {
            let row = row.map_err(|e| self.error(&e))?;
            each(stored(&row, with_raw).map_err(|e| self.error(&e))?)?;
        }
        Ok(())
    }

    pub(super) fn error(&self, error: &tokio_postgres::Error) -> StoreError {
        StoreError::Unavailable(format!("{}: {}", self.url, describe(error)))
    }
}

impl std::fmt::Debug for PgReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReader").field("url", &self.url).finish()
    }
}

/// A parameter of a filter's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Text(String),
    Int(i64),
}

impl Value {
    pub(super) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Text(text) => text,
            Value::Int(n) => n,
        }
    }
}

/// `filter` as a PostgreSQL condition (`TRUE` for none) with `$n` parameters: the same
/// conditions as `Filter::condition` writes for SQLite, each on the index of the same name
/// (`schema.rs`); a type pattern with `*`, `?` or `[…]` is SQLite's GLOB as an anchored
/// regular expression.
pub(super) fn condition(filter: &Filter) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    let mut add = |column: &str, operator: &str, value: Value| {
        values.push(value);
        conditions.push(format!("{column} {operator} ${}", values.len()));
    };
    if let Some(listener) = &filter.listener {
        add("listener", "=", Value::Text(listener.clone()));
    }
    if let Some(application) = &filter.sending_application {
        add("sending_application", "=", Value::Text(application.clone()));
    }
    if let Some(facility) = &filter.sending_facility {
        add("sending_facility", "=", Value::Text(facility.clone()));
    }
    if let Some(pattern) = &filter.message_type {
        if pattern.contains(['*', '?', '[']) {
            add("message_type", "~", Value::Text(glob_regex(pattern)));
        } else {
            add("message_type", "=", Value::Text(pattern.clone()));
        }
    }
    if let Some(patient) = &filter.patient_id {
        add("patient_id", "=", Value::Text(patient.clone()));
    }
    if let Some(visit) = &filter.visit_number {
        add("visit_number", "=", Value::Text(visit.clone()));
    }
    if let Some(since) = filter.since {
        add("received_at", ">=", Value::Int(micros(since)));
    }
    if let Some(until) = filter.until {
        add("received_at", "<", Value::Int(micros(until)));
    }
    if let Some(control_id) = &filter.control_id {
        add("control_id", "=", Value::Text(control_id.clone()));
    }
    if let Some(status) = filter.status {
        add("status", "=", Value::Text(status.as_str().into()));
        if status != Status::Accepted {
            conditions.push("status <> 'accepted'".into());
        }
    }
    if let Some((received_at, id)) = filter.before {
        // A row comparison: a range on the (received_at, id) order the pages are sorted in.
        values.push(Value::Int(micros(received_at)));
        values.push(Value::Int(id));
        let n = values.len();
        conditions.push(format!("(received_at, id) < (${}, ${n})", n - 1));
    }
    if let Some(order) = &filter.order {
        values.push(Value::Text(order.clone()));
        let n = values.len();
        conditions.push(format!("(placer_order = ${n} OR filler_order = ${n})"));
    }
    let condition = if conditions.is_empty() { "TRUE".to_owned() } else { conditions.join(" AND ") };
    (condition, values)
}

/// The SELECT for `filter`: received time then id, newest first unless `oldest_first`; the
/// newest `limit` when there is one.
fn query(filter: &Filter, with_raw: bool) -> (String, Vec<Value>) {
    let (mut condition, mut values) = condition(filter);
    if let Some(limit) = filter.limit {
        values.push(Value::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        condition = format!(
            "id IN (SELECT id FROM messages WHERE {condition} ORDER BY received_at DESC, id DESC LIMIT ${})",
            values.len()
        );
    }
    let raw = if with_raw { ", raw" } else { "" };
    let order = if filter.oldest_first { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT {COLUMNS}{raw} FROM messages WHERE {condition} ORDER BY received_at {order}, id {order}"
    );
    (sql, values)
}

/// SQLite's GLOB (`*`, `?`, `[…]`, `[!…]`; case-sensitive) as an anchored POSIX regular
/// expression for `~`.
fn glob_regex(pattern: &str) -> String {
    let mut out = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                out.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    out.push('^');
                }
                for c in chars.by_ref() {
                    if c == '\\' {
                        out.push_str("\\\\");
                        continue;
                    }
                    out.push(c);
                    if c == ']' {
                        break;
                    }
                }
            }
            c if "\\.^$|()+{}".contains(c) || c == ']' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('$');
    out
}

fn stored(row: &Row, with_raw: bool) -> Result<StoredMessage, tokio_postgres::Error> {
    let status: String = row.try_get(14)?;
    let f = KEY_FIELDS_AT;
    Ok(StoredMessage {
        id: row.try_get(0)?,
        listener: row.try_get(1)?,
        peer: row.try_get(2)?,
        client_thumbprint: row.try_get(3)?,
        received_at: time(row.try_get(4)?),
        encoding: row.try_get(5)?,
        message_type: row.try_get(6)?,
        control_id: row.try_get(7)?,
        sending_application: row.try_get(8)?,
        sending_facility: row.try_get(9)?,
        processing_id: row.try_get(10)?,
        version: row.try_get(11)?,
        size: row.try_get::<_, i64>(12)? as u64,
        ack_code: row.try_get(13)?,
        // Written by this store: one of the three names (a newer hl7d's would be refused
        // by the schema version first).
        status: status.parse().unwrap_or(Status::Error),
        duplicate_count: row.try_get::<_, i64>(15)? as u64,
        last_duplicate_at: row.try_get::<_, Option<i64>>(16)?.map(time),
        reason: row.try_get(17)?,
        error_code: row.try_get::<_, Option<i64>>(18)?.and_then(|code| u16::try_from(code).ok()),
        fields: KeyFields {
            patient_id: row.try_get(f)?,
            patient_authority: row.try_get(f + 1)?,
            visit_number: row.try_get(f + 2)?,
            placer_order: row.try_get(f + 3)?,
            filler_order: row.try_get(f + 4)?,
            message_time_utc: row.try_get(f + 5)?,
            message_time_wall: row.try_get(f + 6)?,
            trigger_event: row.try_get(f + 7)?,
            lane_sender: row.try_get(f + 8)?,
            lane_patient: row.try_get(f + 9)?,
        },
        raw: if with_raw { Some(row.try_get(f + 10)?) } else { None },
    })
}

fn delivery(row: &Row) -> Delivery {
    let state_name: String = row.get(3);
    Delivery {
        id: row.get(0),
        route: row.get(1),
        lane: row.get(2),
        state: DeliveryState::from_name(&state_name),
        state_name,
        attempts: row.get::<_, i64>(4) as u64,
        queued_at: time(row.get(5)),
        next_attempt_at: time(row.get(6)),
        first_attempt_at: row.get::<_, Option<i64>>(7).map(time),
        last_attempt_at: row.get::<_, Option<i64>>(8).map(time),
        done_at: row.get::<_, Option<i64>>(9).map(time),
        last_error: row.get(10),
        response: row.get(11),
        resend_of: row.get(12),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_anchored_regular_expressions() {
        assert_eq!(glob_regex("ADT^A0*"), "^ADT\\^A0.*$");
        assert_eq!(glob_regex("OR?^R01"), "^OR.\\^R01$");
        assert_eq!(glob_regex("ADT^A0[18]"), "^ADT\\^A0[18]$");
        assert_eq!(glob_regex("ADT^A0[!18]"), "^ADT\\^A0[^18]$");
        assert_eq!(glob_regex("A.B"), "^A\\.B$");
    }

    #[test]
    fn filters_number_their_parameters_in_order() {
        let filter = Filter {
            listener: Some("lab".into()),
            message_type: Some("ADT*".into()),
            order: Some("PL1".into()),
            limit: Some(5),
            ..Filter::default()
        };
        let (sql, values) = query(&filter, false);
        assert!(
            sql.contains("listener = $1 AND message_type ~ $2 AND (placer_order = $3 OR filler_order = $3)"),
            "{sql}"
        );
        assert!(sql.contains("LIMIT $4") && sql.ends_with("ORDER BY received_at DESC, id DESC"), "{sql}");
        assert_eq!(values.len(), 4);
    }
}
