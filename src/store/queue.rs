//! The delivery queue in the store (schema 4's `deliveries` table): which routes a new
//! message is queued for ([`RouteTable`], matched by the writer in the message's own
//! transaction), the changes the delivery engine asks the writer for ([`DeliveryUpdate`]),
//! and the engine's read-only view of the queue ([`QueueReader`]).
//!
//! Owns the queue's SQL and nothing else: which lane is ready, backoff and parking are the
//! engine's (`crate::delivery`). The store never delivers and never decides an outcome.
//!
//! Reads are shaped so that their cost follows the number of lanes, not of rows: the head
//! of each lane is one seek on the partial index `deliveries_open (route, lane, id)`
//! ([`QueueReader::next_head`] walks the lanes one seek each, a skip scan), and held lanes
//! come from `deliveries_parked`, which holds only parked rows.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hl7_proto::charset::Charset;
use hl7_proto::keys::LaneOrder;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::Notify;

use super::read::open_existing;
use super::sqlite::describe;
use super::{KeyFields, StoreError};

/// The states of a delivery row (the `state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting; due at `next_attempt_at`.
    Pending,
    /// An attempt is under way (back to pending when hl7d starts: it was cut off).
    InFlight,
    /// The downstream took it.
    Delivered,
    /// Held for an operator; its lane waits behind it.
    Parked,
    /// An operator gave up on it: kept, never sent.
    Skipped,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 5] = [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Delivered,
        DeliveryState::Parked,
        DeliveryState::Skipped,
    ];

    /// The name in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Parked => "parked",
            DeliveryState::Skipped => "skipped",
        }
    }

    /// The state called `name`.
    pub fn from_name(name: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

/// What the writer knows of one route: which messages it takes, how they are laned, and
/// whom to wake when it queued some.
#[derive(Debug)]
pub struct QueueRoute {
    /// The route's name (the `route` column).
    pub name: Arc<str>,
    /// Only messages received on these listeners; `None` = every listener.
    pub listeners: Option<Vec<String>>,
    /// MSH-9 globs (see [`type_matches`]); empty = every type.
    pub message_types: Vec<String>,
    /// Which lane a message goes into.
    pub order: LaneOrder,
    /// Woken (after the commit) when the writer queued deliveries for this route.
    pub queued: Arc<Notify>,
}

impl QueueRoute {
    /// Whether a message received on `listener` with MSH-9 `message_type` is for this
    /// route.
    pub fn takes(&self, listener: &str, message_type: &str) -> bool {
        self.listeners.as_ref().is_none_or(|names| names.iter().any(|name| name == listener))
            && (self.message_types.is_empty()
                || self.message_types.iter().any(|pattern| type_matches(pattern, message_type)))
    }

    /// The lane of a message with these key fields: its stored lane column for the order
    /// ([`lane_for`]).
    pub fn lane(&self, fields: &KeyFields) -> String {
        lane_for(self.order, fields.lane_sender.as_deref(), fields.lane_patient.as_deref())
    }
}

/// The lane of a message under `order`, from its stored lane columns (`lane_sender`,
/// `lane_patient`: the keys the listener computed at ingest, never recomputed): the one
/// rule for the writer's queueing and the operator's backfill and resend
/// (`deliveries.rs`).
pub fn lane_for(order: LaneOrder, lane_sender: Option<&str>, lane_patient: Option<&str>) -> String {
    let stored = match order {
        LaneOrder::Strict => return STRICT_LANE.to_owned(),
        LaneOrder::PerSender => lane_sender,
        LaneOrder::PerPatient => lane_patient.or(lane_sender),
    };
    // Only a `KeyFields::default()` (a message built without extraction) has none.
    stored.unwrap_or("sender//").to_owned()
}

/// The lane of every message under `order = "strict"` (`hl7_proto::keys::lane_key`).
pub const STRICT_LANE: &str = "strict";

/// The routes the writer matches every new accepted message against. Swapped whole on
/// reload ([`SharedRouteTable`]); a batch uses the table it loaded when it began.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<QueueRoute>,
}

/// The writer's table, swapped by a reload while the writer runs.
pub type SharedRouteTable = Arc<ArcSwap<RouteTable>>;

impl RouteTable {
    /// A table of `routes`.
    pub fn new(routes: Vec<QueueRoute>) -> RouteTable {
        RouteTable { routes }
    }

    /// The routes that take a message received on `listener` with `message_type`.
    pub fn matching<'a>(
        &'a self,
        listener: &'a str,
        message_type: &'a str,
    ) -> impl Iterator<Item = &'a QueueRoute> {
        self.routes.iter().filter(move |route| route.takes(listener, message_type))
    }

    /// Every route.
    pub fn routes(&self) -> &[QueueRoute] {
        &self.routes
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Whether `message_type` (MSH-9 as stored: `TYPE^EVENT`, or `TYPE` without an event)
/// matches `pattern`: `*` is any text, `?` one character, anything else itself
/// (case-sensitive, as MSH-9 codes are upper case). A pattern without `^` matches the type
/// whatever the event (`ADT` = `ADT^*`).
pub fn type_matches(pattern: &str, message_type: &str) -> bool {
    if pattern.contains('^') {
        let full;
        let text = if message_type.contains('^') {
            message_type
        } else {
            full = format!("{message_type}^");
            &full
        };
        glob(pattern.as_bytes(), text.as_bytes())
    } else {
        glob(pattern.as_bytes(), message_type.split('^').next().unwrap_or("").as_bytes())
    }
}

/// `*`/`?` matching with one backtrack point (linear for patterns like these).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Queues a new accepted message (row `message_id`) for every route of `table` that takes
/// it, on the writer's transaction. Returns the routes it queued for.
pub(super) fn queue_message<'a>(
    tx: &Connection,
    table: &'a RouteTable,
    message_id: i64,
    listener: &str,
    message_type: &str,
    fields: &KeyFields,
    now: i64,
) -> rusqlite::Result<Vec<&'a QueueRoute>> {
    let mut queued = Vec::new();
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (message_id, route, lane, state, queued_at, next_attempt_at) \
         VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
    )?;
    for route in table.routes().iter().filter(|route| route.takes(listener, message_type)) {
        insert.execute(params![message_id, &*route.name, route.lane(fields), now])?;
        queued.push(route);
    }
    Ok(queued)
}

/// A change to one delivery row, made by the writer thread on the engine's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryUpdate {
    /// An attempt starts: `in_flight`, one more attempt, `first_attempt_at` set once,
    /// `last_attempt_at` = `at`.
    Claim {
        /// The delivery row.
        id: i64,
        /// Now, micros.
        at: i64,
    },
    /// An attempt ended.
    Finish {
        /// The delivery row.
        id: i64,
        /// Now, micros.
        at: i64,
        /// What became of it.
        result: Finished,
        /// The error of a failed attempt (kept as `last_error`; a delivered row keeps the
        /// last error it had).
        error: Option<String>,
        /// The downstream's answer, if any.
        response: Option<String>,
    },
}

/// Where an attempt leaves a delivery row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// `delivered`, `done_at` = now.
    Delivered,
    /// Back to `pending`, due at this time (micros).
    Retry {
        /// `next_attempt_at`.
        next_attempt_at: i64,
    },
    /// `parked`, `done_at` = now.
    Parked,
}

/// Applies one update on the writer's transaction; returns the rows changed (0 when the
/// row is no longer pending or in flight: an operator skipped it meanwhile, or a retention
/// purge took it).
pub(super) fn apply(tx: &Connection, update: &DeliveryUpdate) -> rusqlite::Result<usize> {
    match update {
        DeliveryUpdate::Claim { id, at } => tx
            .prepare_cached(
                "UPDATE deliveries SET state = 'in_flight', attempts = attempts + 1, \
                 first_attempt_at = coalesce(first_attempt_at, ?2), last_attempt_at = ?2 \
                 WHERE id = ?1 AND state IN ('pending', 'in_flight')",
            )?
            .execute(params![id, at]),
        DeliveryUpdate::Finish { id, at, result, error, response } => {
            let (state, next, done) = match result {
                Finished::Delivered => ("delivered", None, Some(*at)),
                Finished::Retry { next_attempt_at } => ("pending", Some(*next_attempt_at), None),
                Finished::Parked => ("parked", None, Some(*at)),
            };
            tx.prepare_cached(
                "UPDATE deliveries SET state = ?2, next_attempt_at = coalesce(?3, next_attempt_at), \
                 done_at = ?4, last_error = coalesce(?5, last_error), response = coalesce(?6, response) \
                 WHERE id = ?1 AND state IN ('pending', 'in_flight')",
            )?
            .execute(params![id, state, next, done, error, response])
        }
    }
}

/// At start-up, before the engine runs: every row left `in_flight` (an attempt cut off by
/// a stop or a crash) goes back to `pending`, to be sent again. Returns how many.
pub(super) fn recover_in_flight(conn: &Connection) -> rusqlite::Result<usize> {
    // The `state IN (...)` term is the partial index's own, so the update walks the open
    // rows only, not the whole table.
    conn.execute(
        "UPDATE deliveries SET state = 'pending' \
         WHERE state IN ('pending', 'in_flight', 'parked') AND state = 'in_flight'",
        [],
    )
}

/// The head of one lane: its oldest row still to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneHead {
    /// The delivery row.
    pub id: i64,
    /// The lane.
    pub lane: String,
    /// The message (`messages.id`).
    pub message_id: i64,
    /// Pending, in flight or parked.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it was queued, micros.
    pub queued_at: i64,
    /// When it is due, micros.
    pub next_attempt_at: i64,
    /// When it was first tried, micros.
    pub first_attempt_at: Option<i64>,
}

/// One stored message as a transport needs it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// `messages.id`.
    pub id: i64,
    /// The listener it came in on.
    pub listener: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-9 as `TYPE^EVENT`.
    pub message_type: String,
    /// The character set it was read in (UTF-8 if the stored name is unknown).
    pub charset: Charset,
    /// When it was received.
    pub received_at: SystemTime,
    /// Its bytes as received.
    pub raw: Bytes,
}

/// Counts of one route's open rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenCounts {
    /// `pending` rows.
    pub pending: u64,
    /// `in_flight` rows.
    pub in_flight: u64,
    /// `parked` rows.
    pub parked: u64,
    /// `queued_at` of the oldest row pending or in flight, micros.
    pub oldest_pending_queued_at: Option<i64>,
}

/// The engine's read-only connection to the queue.
pub struct QueueReader {
    conn: Connection,
}

const HEAD_COLUMNS: &str =
    "id, lane, message_id, state, attempts, queued_at, next_attempt_at, first_attempt_at";

impl QueueReader {
    /// Opens the store in `dir` read-only (it must exist, at this build's schema version).
    pub fn open(dir: &Path) -> Result<QueueReader, StoreError> {
        let (conn, _) = open_existing(dir, OpenFlags::SQLITE_OPEN_READ_ONLY, |_| Ok(()))?;
        Ok(QueueReader { conn })
    }

    /// The head of the first lane of `route` after `after` in lane order (from the first
    /// lane when `after` is `None`): one seek on `deliveries_open`. Calling it with the
    /// lane it returned walks every lane once, one seek each, however many rows wait in
    /// each lane.
    pub fn next_head(&self, route: &str, after: Option<&str>) -> Result<Option<LaneHead>, StoreError> {
        let (operator, lane) = match after {
            Some(lane) => (">", lane),
            None => (">=", ""),
        };
        let sql = format!(
            "SELECT {HEAD_COLUMNS} FROM deliveries \
             WHERE route = ?1 AND lane {operator} ?2 AND state IN ('pending', 'in_flight', 'parked') \
             ORDER BY lane, id LIMIT 1"
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut statement| statement.query_row(params![route, lane], head).optional())
            .map_err(|e| error(&e))
    }

    /// The head of one lane: one seek.
    pub fn head(&self, route: &str, lane: &str) -> Result<Option<LaneHead>, StoreError> {
        let sql = format!(
            "SELECT {HEAD_COLUMNS} FROM deliveries \
             WHERE route = ?1 AND lane = ?2 AND state IN ('pending', 'in_flight', 'parked') \
             ORDER BY id LIMIT 1"
        );
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut statement| statement.query_row(params![route, lane], head).optional())
            .map_err(|e| error(&e))
    }

    /// The heads of `route`'s held lanes (lanes whose head is parked), in lane order: the
    /// lanes with a parked row (`deliveries_parked`, only parked rows), each head read with
    /// one seek.
    pub fn held_lanes(&self, route: &str) -> Result<Vec<LaneHead>, StoreError> {
        let lanes: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT lane FROM deliveries WHERE route = ?1 AND state = 'parked' ORDER BY lane",
            )
            .and_then(|mut statement| {
                statement.query_map([route], |row| row.get(0))?.collect::<rusqlite::Result<_>>()
            })
            .map_err(|e| error(&e))?;
        let mut held = Vec::new();
        for lane in lanes {
            if let Some(head) = self.head(route, &lane)?.filter(|head| head.state == DeliveryState::Parked) {
                held.push(head);
            }
        }
        Ok(held)
    }

    /// The message a delivery sends; `None` when it is gone (purged).
    pub fn message(&self, message_id: i64) -> Result<Option<QueuedMessage>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id, listener, control_id, message_type, charset, received_at, raw FROM messages WHERE id = ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row([message_id], |row| {
                        let charset: String = row.get(4)?;
                        Ok(QueuedMessage {
                            id: row.get(0)?,
                            listener: row.get(1)?,
                            control_id: row.get(2)?,
                            message_type: row.get(3)?,
                            charset: Charset::from_config_name(&charset).unwrap_or(Charset::Utf8),
                            received_at: from_micros(row.get(5)?),
                            raw: Bytes::from(row.get::<_, Vec<u8>>(6)?),
                        })
                    })
                    .optional()
            })
            .map_err(|e| error(&e))
    }

    /// Counts of `route`'s open rows, by state. Walks the route's open rows (an index range,
    /// each row's state read from the table): run it every few seconds, not per message.
    pub fn open_counts(&self, route: &str) -> Result<OpenCounts, StoreError> {
        let mut counts = OpenCounts::default();
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT state, count(*), min(queued_at) FROM deliveries \
                 WHERE route = ?1 AND state IN ('pending', 'in_flight', 'parked') GROUP BY state",
            )
            .map_err(|e| error(&e))?;
        let rows = statement
            .query_map([route], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| error(&e))?;
        for (state, count, oldest) in rows {
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
    }

    /// The connection, for the query-plan tests.
    #[cfg(test)]
    pub(super) fn connection(&self) -> &Connection {
        &self.conn
    }
}

fn head(row: &Row<'_>) -> rusqlite::Result<LaneHead> {
    let state: String = row.get(3)?;
    Ok(LaneHead {
        id: row.get(0)?,
        lane: row.get(1)?,
        message_id: row.get(2)?,
        // The open index holds only these three states.
        state: DeliveryState::from_name(&state).unwrap_or(DeliveryState::Pending),
        attempts: row.get::<_, i64>(4)?.clamp(0, i64::from(u32::MAX)) as u32,
        queued_at: row.get(5)?,
        next_attempt_at: row.get(6)?,
        first_attempt_at: row.get(7)?,
    })
}

fn error(e: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(describe(e))
}

/// Microseconds since the epoch → time.
pub(crate) fn from_micros(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + std::time::Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - std::time::Duration::from_micros(micros.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_globs() {
        for (pattern, message_type, expected) in [
            ("ADT^A*", "ADT^A01", true),
            ("ADT^A*", "ADT^B01", false),
            ("ADT^A*", "ADT", false),
            ("ADT^*", "ADT", true),
            ("ORU^R01", "ORU^R01", true),
            ("ORU^R01", "ORU^R011", false),
            ("ORU^R0?", "ORU^R05", true),
            ("ORU^R0?", "ORU^R0", false),
            ("ADT", "ADT^A08", true),
            ("ADT", "ADTX^A08", false),
            ("A*", "ADT^A01", true),
            ("*^A01", "ADT^A01", true),
            ("*", "", true),
            ("adt^*", "ADT^A01", false),
            ("*A*B*", "xAyyB", true),
            ("*A*B", "xAyyBz", false),
        ] {
            assert_eq!(type_matches(pattern, message_type), expected, "{pattern} vs {message_type}");
        }
    }

    #[test]
    fn routes_take_their_listeners_and_types_and_lane_by_order() {
        let route = |listeners: Option<Vec<&str>>, types: Vec<&str>, order| QueueRoute {
            name: Arc::from("r"),
            listeners: listeners.map(|names| names.into_iter().map(String::from).collect()),
            message_types: types.into_iter().map(String::from).collect(),
            order,
            queued: Arc::default(),
        };
        let every = route(None, vec![], LaneOrder::PerPatient);
        assert!(every.takes("lab", "ANY^THING"));
        let some = route(Some(vec!["lab", "adt"]), vec!["ADT^A*", "ORU^R01"], LaneOrder::PerSender);
        assert!(some.takes("adt", "ADT^A08"));
        assert!(!some.takes("other", "ADT^A08"));
        assert!(!some.takes("lab", "ORM^O01"));

        let fields =
            KeyFields::extract(b"MSH|^~\\&|APP|FAC|||2026||ADT^A01|1|P|2.5\rPID|1||P1\r", Charset::Utf8);
        assert_eq!(every.lane(&fields), "patient/FAC/P1");
        assert_eq!(some.lane(&fields), "sender/APP/FAC");
        assert_eq!(route(None, vec![], LaneOrder::Strict).lane(&fields), "strict");
        let no_patient = KeyFields::extract(b"MSH|^~\\&|APP|FAC|||2026||ADT^A01|1|P|2.5\r", Charset::Utf8);
        assert_eq!(every.lane(&no_patient), "sender/APP/FAC", "per_patient falls back to the sender lane");
    }

    mod with_a_store {
        use std::time::Duration;

        use hl7_proto::ack::AckCode;
        use hl7_proto::error::ParseError;
        use hl7_proto::refusal::Refusal;
        use rusqlite::StatementStatus;

        use super::super::super::sqlite::micros;
        use super::super::super::{
            test_message, Appended, Disposition, MessageStore, NewMessage, SqliteOptions, SqliteStore,
            DATABASE_FILE,
        };
        use super::*;

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
        }

        fn route(name: &str, types: &[&str], order: LaneOrder) -> QueueRoute {
            QueueRoute {
                name: Arc::from(name),
                listeners: None,
                message_types: types.iter().map(|t| t.to_string()).collect(),
                order,
                queued: Arc::default(),
            }
        }

        fn adt(control_id: &str, patient: &str) -> NewMessage {
            let raw = format!("MSH|^~\\&|APP|FAC|||2026||ADT^A01|{control_id}|P|2.5\rPID|1||{patient}\r");
            let accepted = Disposition::Accepted { duplicate_window: Some(Duration::from_secs(60)) };
            test_message(control_id, raw.as_bytes(), Some(AckCode::ApplicationAccept), accepted)
        }

        fn rows(dir: &Path) -> Vec<(i64, String, String, String)> {
            let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
            let mut statement =
                conn.prepare("SELECT message_id, route, lane, state FROM deliveries ORDER BY id").unwrap();
            statement
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        }

        /// Issue 15: a delivery row per matching route in the message's own transaction;
        /// none for a duplicate the store suppressed, none for a refused message; the
        /// route's worker is woken after the commit.
        #[test]
        fn new_accepted_messages_are_queued_for_each_matching_route_in_their_transaction() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("queue");
            let adt_route = route("adt-only", &["ADT^A*"], LaneOrder::PerPatient);
            let woken = adt_route.queued.clone();
            let table = RouteTable::new(vec![
                adt_route,
                route("all", &[], LaneOrder::Strict),
                route("lab", &["ORU^R01"], LaneOrder::PerSender),
            ]);
            let options = SqliteOptions {
                routes: Some(Arc::new(ArcSwap::from_pointee(table))),
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open(&dir, options).unwrap();
            let rt = runtime();
            assert_eq!(rt.block_on(store.append(adt("1", "P1"))).unwrap(), Appended::New);
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), woken.notified()).await.unwrap()
            });
            assert_eq!(rt.block_on(store.append(adt("1", "P1"))).unwrap(), Appended::Duplicate);
            let refusal =
                Refusal::Parse(ParseError::RequiredFieldMissing { field: "MSH-9", name: "message type" });
            let refused = NewMessage { disposition: Disposition::Refused(refusal), ..adt("2", "P2") };
            assert_eq!(rt.block_on(store.append(refused)).unwrap(), Appended::New);
            assert_eq!(rt.block_on(store.append(adt("3", "P3"))).unwrap(), Appended::New);
            assert_eq!(store.stats().queued, 4);
            store.close();
            let pending = String::from("pending");
            assert_eq!(
                rows(&dir),
                [
                    (1, "adt-only".into(), "patient/FAC/P1".into(), pending.clone()),
                    (1, "all".into(), "strict".into(), pending.clone()),
                    (3, "adt-only".into(), "patient/FAC/P3".into(), pending.clone()),
                    (3, "all".into(), "strict".into(), pending),
                ]
            );
        }

        /// The engine's writes go through the writer; rows still in flight at a stop go
        /// back to pending when the store opens again.
        #[test]
        fn updates_go_through_the_writer_and_in_flight_rows_return_at_open() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("updates");
            let table = RouteTable::new(vec![route("r", &[], LaneOrder::Strict)]);
            let options = SqliteOptions {
                routes: Some(Arc::new(ArcSwap::from_pointee(table))),
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open(&dir, options).unwrap();
            let rt = runtime();
            for n in 1..=3 {
                rt.block_on(store.append(adt(&n.to_string(), "P"))).unwrap();
            }
            let at = micros(SystemTime::now());
            let claim = |id| DeliveryUpdate::Claim { id, at };
            let finish = |id, result| DeliveryUpdate::Finish {
                id,
                at,
                result,
                error: Some("boom".into()),
                response: Some("AE".into()),
            };
            let changed = rt
                .block_on(store.update_deliveries(vec![
                    claim(1),
                    finish(1, Finished::Delivered),
                    claim(2),
                    finish(2, Finished::Retry { next_attempt_at: at + 5 }),
                    claim(3),
                ]))
                .unwrap();
            assert_eq!(changed, [1, 1, 1, 1, 1]);
            // A finished row is not finished twice.
            let again = rt.block_on(store.update_deliveries(vec![finish(1, Finished::Parked)])).unwrap();
            assert_eq!(again, [0]);
            store.close();
            let reader = QueueReader::open(&dir).unwrap();
            assert_eq!(
                reader.head("r", "strict").unwrap().map(|h| (h.id, h.state)),
                Some((2, DeliveryState::Pending))
            );
            let head = reader.head("r", "strict").unwrap().unwrap();
            assert_eq!((head.attempts, head.next_attempt_at, head.first_attempt_at), (1, at + 5, Some(at)));
            assert_eq!(
                reader.open_counts("r").unwrap(),
                OpenCounts {
                    pending: 1,
                    in_flight: 1,
                    parked: 0,
                    oldest_pending_queued_at: Some(head.queued_at)
                }
            );
            drop(reader);

            let store = SqliteStore::open(&dir, SqliteOptions::default()).unwrap();
            store.close();
            let states: Vec<String> = rows(&dir).into_iter().map(|(_, _, _, state)| state).collect();
            assert_eq!(states, ["delivered", "pending", "pending"], "in flight → pending at open");
        }

        /// Retention never deletes a message with a delivery still to do; delivered and
        /// skipped delivery rows go with their message.
        #[test]
        fn retention_keeps_messages_with_open_deliveries() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("retention");
            let table = RouteTable::new(vec![route("r", &[], LaneOrder::PerPatient)]);
            let shared = Arc::new(ArcSwap::from_pointee(table));
            let options = SqliteOptions { routes: Some(shared.clone()), ..SqliteOptions::default() };
            let store = SqliteStore::open(&dir, options).unwrap();
            let rt = runtime();
            let old = SystemTime::now() - Duration::from_secs(7200);
            // Enough to need several retention steps.
            let total = RETENTION_TEST_MESSAGES;
            rt.block_on(async {
                let appends: Vec<_> = (0..total)
                    .map(|n| {
                        let mut m = adt(&n.to_string(), &format!("P{}", n % 7));
                        m.received_at = old;
                        store.append(m)
                    })
                    .collect();
                for append in appends {
                    append.await.unwrap();
                }
            });
            // Every other row delivered or skipped; the rest stay pending or parked.
            let at = micros(SystemTime::now());
            let mut updates = Vec::new();
            for id in 1..=total as i64 {
                let result = match id % 4 {
                    0 => Finished::Delivered,
                    1 => Finished::Parked,
                    _ => continue,
                };
                updates.push(DeliveryUpdate::Claim { id, at });
                updates.push(DeliveryUpdate::Finish { id, at, result, error: None, response: None });
            }
            rt.block_on(store.update_deliveries(updates)).unwrap();
            store.close();
            let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
            conn.execute("UPDATE deliveries SET state = 'skipped' WHERE id % 4 = 2", []).unwrap();
            drop(conn);

            shared.store(Arc::new(RouteTable::default()));
            let options = SqliteOptions {
                retention: Some(Duration::from_secs(3600)),
                retention_interval: Duration::from_millis(20),
                // No pause between steps (what is kept matters here, not the pacing): paced,
                // a debug build under a loaded test run did not finish in the deadline.
                retention_pause: 0,
                routes: Some(shared),
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open(&dir, options).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let expected_deleted = (total / 2) as u64;
            while store.stats().expired < expected_deleted {
                assert!(std::time::Instant::now() < deadline, "{:?}", store.stats());
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
            let stats = store.stats();
            store.close();
            assert_eq!(stats.expired, expected_deleted);
            assert!(stats.kept_undelivered >= (total / 2) as u64, "{stats:?}");
            let left = rows(&dir);
            assert_eq!(left.len(), total / 2);
            assert!(left.iter().all(|(_, _, _, state)| state == "pending" || state == "parked"), "{left:?}");
            let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
            let messages: i64 = conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
            assert_eq!(messages as usize, total / 2);
        }

        const RETENTION_TEST_MESSAGES: usize = 1204;

        /// The scheduling reads cost a seek per lane, not a walk over pending rows: with
        /// 100 000 rows in one lane, walking every lane and reading each head takes a
        /// handful of VM steps, on the partial index.
        #[test]
        fn lane_heads_cost_one_seek_per_lane_whatever_the_rows_behind_them() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("plan");
            SqliteStore::open(&dir, SqliteOptions::default()).unwrap().close();
            let mut conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
            let tx = conn.transaction().unwrap();
            {
                let mut insert = tx
                    .prepare(
                        "INSERT INTO deliveries (message_id, route, lane, state, queued_at, next_attempt_at) \
                         VALUES (?1, ?2, ?3, ?4, 0, 0)",
                    )
                    .unwrap();
                for n in 0..100_000 {
                    insert.execute(params![n, "r", "patient/F/BIG", "pending"]).unwrap();
                }
                for (n, lane) in ["patient/F/A", "patient/F/C", "patient/F/D"].iter().enumerate() {
                    insert.execute(params![n as i64, "r", lane, "pending"]).unwrap();
                }
                // Delivered rows of the route and another route's rows are not walked either.
                for n in 0..20_000 {
                    insert.execute(params![n, "r", format!("patient/F/X{n}"), "delivered"]).unwrap();
                    insert.execute(params![n, "other", "strict", "pending"]).unwrap();
                }
                insert.execute(params![7, "r", "patient/F/C", "parked"]).unwrap();
            }
            tx.commit().unwrap();
            conn.execute(
                "UPDATE deliveries SET state = 'parked' WHERE route = 'r' AND lane = 'patient/F/D'",
                [],
            )
            .unwrap();
            conn.execute_batch("ANALYZE").unwrap();
            drop(conn);

            let reader = QueueReader::open(&dir).unwrap();
            let plan = |sql: &str| -> String {
                let mut statement =
                    reader.connection().prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                let details: Vec<String> =
                    statement.query_map(["r", "x"], |r| r.get(3)).unwrap().collect::<Result<_, _>>().unwrap();
                details.join("; ")
            };
            let next = format!(
                "SELECT {HEAD_COLUMNS} FROM deliveries WHERE route = ?1 AND lane > ?2 \
                 AND state IN ('pending', 'in_flight', 'parked') ORDER BY lane, id LIMIT 1"
            );
            let next_plan = plan(&next);
            assert!(next_plan.contains("USING INDEX deliveries_open (route=? AND lane>?)"), "{next_plan}");
            assert!(!next_plan.contains("TEMP B-TREE"), "{next_plan}");

            let mut lanes = Vec::new();
            let mut after: Option<String> = None;
            while let Some(head) = reader.next_head("r", after.as_deref()).unwrap() {
                lanes.push((head.lane.clone(), head.state));
                after = Some(head.lane);
            }
            assert_eq!(
                lanes,
                [
                    ("patient/F/A".to_owned(), DeliveryState::Pending),
                    ("patient/F/BIG".to_owned(), DeliveryState::Pending),
                    ("patient/F/C".to_owned(), DeliveryState::Pending),
                    ("patient/F/D".to_owned(), DeliveryState::Parked),
                ]
            );
            let mut statement = reader.connection().prepare_cached(&next).unwrap();
            let steps_before = statement.get_status(StatementStatus::VmStep);
            let _ = statement.query_row(params!["r", "patient/F/A"], |r| r.get::<_, i64>(0)).unwrap();
            let steps = statement.get_status(StatementStatus::VmStep) - steps_before;
            assert!(steps < 200, "{steps} VM steps for one lane head");
            assert_eq!(statement.get_status(StatementStatus::FullscanStep), 0);
            drop(statement);
            // Held lanes: D (head parked), not C (a parked row behind a pending head).
            let held: Vec<String> =
                reader.held_lanes("r").unwrap().into_iter().map(|head| head.lane).collect();
            assert_eq!(held, ["patient/F/D"]);
        }
    }
}
