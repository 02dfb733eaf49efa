//! The operator's view of the delivery queue and the operator's changes to it: what `hl7d
//! routes status|parked`, `hl7d messages show` read ([`Reader`] methods) and what `hl7d
//! routes retry|skip|backfill` and `hl7d messages resend` change ([`DeliveryActions`]), on
//! the store file while the server runs.
//!
//! Owns that SQL only. It never delivers and never signals the server: the delivery engine
//! reads the rows again at least every second, so a change made here takes effect within
//! two seconds. Writes go through a read-write connection of their own, beside the
//! server's writer, in short `IMMEDIATE` transactions (at most [`ACTION_BATCH`] messages
//! each) that wait for the writer's commits through the busy timeout, so the writer's
//! group commit waits at most one such transaction for them.
//!
//! Every change keeps to the states of schema 4 (`schema.rs`) and touches only rows in a
//! state the change applies to (`WHERE state = …`), so a row that the engine claimed or
//! finished meanwhile is left alone, and the engine's own updates (only on `pending` and
//! `in_flight` rows) leave a parked or skipped row alone.
//!
//! Reads are shaped to cost what is still to do, not the size of the store: open rows are
//! counted on the partial index `deliveries_open`, parked ones on `deliveries_parked`, and
//! finished ones (`delivered`, `skipped`) are read from `delivery_counts` (schema 5), which
//! triggers keep.
//!
//! Lanes are patient data under `per_patient` (`patient/<MSH-4>/<PID-3>`): they are shown
//! to the operator who asks, never logged by this module.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hl7_proto::keys::LaneOrder;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use thiserror::Error;

use super::fields;
use super::purge::open_writable;
use super::queue::{lane_for, type_matches, DeliveryState, STRICT_LANE};
use super::read::{time, Reader};
use super::sqlite::{describe, micros};
use super::{KeyFields, Status, StoreError};

/// Most messages looked at (and so most deliveries queued) in one transaction by
/// [`DeliveryActions::backfill`] and [`DeliveryActions::resend_range`].
pub const ACTION_BATCH: i64 = 1000;

/// One route's queue at a glance (`hl7d routes status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteStatus {
    /// The route's name (the `route` column).
    pub name: String,
    /// Rows waiting to be sent.
    pub pending: u64,
    /// Rows with an attempt under way.
    pub in_flight: u64,
    /// Rows the downstream took (still in the store: retention deletes them with their
    /// message).
    pub delivered: u64,
    /// Rows held for an operator.
    pub parked: u64,
    /// Rows an operator skipped.
    pub skipped: u64,
    /// Lanes whose oldest open row is parked: they wait for an operator.
    pub held_lanes: u64,
    /// When the oldest row still pending or in flight was queued.
    pub oldest_pending_queued_at: Option<SystemTime>,
    /// The error of the latest failed attempt among the rows still to do (pending, in
    /// flight or parked); `None` when none of them failed.
    pub last_error: Option<String>,
}

impl RouteStatus {
    /// A route without rows: every count zero.
    pub fn empty(route: &str) -> RouteStatus {
        RouteStatus {
            name: route.to_owned(),
            pending: 0,
            in_flight: 0,
            delivered: 0,
            parked: 0,
            skipped: 0,
            held_lanes: 0,
            oldest_pending_queued_at: None,
            last_error: None,
        }
    }

    /// Folds in the open rows, each `(state, count, earliest queued_at in microseconds)`
    /// as `GROUP BY state` gives them (SQLite's and PostgreSQL's the same): the counts, and
    /// the oldest of the pending and in-flight rows (parked rows wait for an operator, not
    /// for delivery).
    pub fn add_open(&mut self, groups: impl IntoIterator<Item = (String, i64, i64)>) {
        let mut oldest: Option<i64> = None;
        for (state, count, queued) in groups {
            let count = count.max(0) as u64;
            match DeliveryState::from_name(&state) {
                Some(DeliveryState::Pending) => self.pending = count,
                Some(DeliveryState::InFlight) => self.in_flight = count,
                Some(DeliveryState::Parked) => {
                    self.parked = count;
                    continue;
                }
                _ => continue,
            }
            oldest = Some(oldest.map_or(queued, |seen| seen.min(queued)));
        }
        self.oldest_pending_queued_at = oldest.map(time);
    }

    /// Folds in the finished rows' counts, each `(state, rows)` of `delivery_counts`.
    pub fn add_finished(&mut self, counts: impl IntoIterator<Item = (String, i64)>) {
        for (state, count) in counts {
            let count = count.max(0) as u64;
            match DeliveryState::from_name(&state) {
                Some(DeliveryState::Delivered) => self.delivered = count,
                Some(DeliveryState::Skipped) => self.skipped = count,
                _ => {}
            }
        }
    }

    /// Whole seconds since the oldest pending row was queued; 0 when nothing is pending.
    pub fn oldest_pending_seconds(&self, now: SystemTime) -> u64 {
        self.oldest_pending_queued_at
            .map_or(0, |queued| now.duration_since(queued).unwrap_or(Duration::ZERO).as_secs())
    }
}

/// One parked delivery with the header fields an operator recognises it by (`hl7d routes
/// parked`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedDelivery {
    /// The delivery row.
    pub id: i64,
    /// The message (`messages.id`).
    pub message_id: i64,
    /// Its lane.
    pub lane: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-9 as `TYPE^EVENT`.
    pub message_type: String,
    /// Attempts made.
    pub attempts: u64,
    /// When it was parked.
    pub parked_at: Option<SystemTime>,
    /// Why (the error of its last attempt).
    pub last_error: Option<String>,
    /// What the downstream answered last (ACK codes, HTTP status line).
    pub response: Option<String>,
}

/// One delivery row of a message (`hl7d messages show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The delivery row.
    pub id: i64,
    /// The route.
    pub route: String,
    /// The lane.
    pub lane: String,
    /// Where it stands; `None` for a state this build does not know (a newer hl7d's).
    pub state: Option<DeliveryState>,
    /// The state as stored.
    pub state_name: String,
    /// Attempts made.
    pub attempts: u64,
    /// When it was queued.
    pub queued_at: SystemTime,
    /// When it is (or was) due.
    pub next_attempt_at: SystemTime,
    /// When the first attempt began.
    pub first_attempt_at: Option<SystemTime>,
    /// When the last attempt began.
    pub last_attempt_at: Option<SystemTime>,
    /// When it became delivered, parked or skipped.
    pub done_at: Option<SystemTime>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// What the downstream answered last.
    pub response: Option<String>,
    /// For a resend: the delivery it repeats.
    pub resend_of: Option<i64>,
}

impl Reader {
    /// The routes that delivery rows name: those with rows still to do (one seek per route
    /// on `deliveries_open`) and those with finished rows (`delivery_counts`), sorted. A
    /// route removed from the configuration stays here while it has rows.
    pub fn delivery_routes(&self) -> Result<Vec<String>, StoreError> {
        let run = || -> rusqlite::Result<Vec<String>> {
            let mut names: Vec<String> = self
                .conn
                .prepare("SELECT DISTINCT route FROM delivery_counts WHERE rows > 0")?
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            // A skip scan: the first open row's route after the last one found.
            let mut next = self.conn.prepare(
                "SELECT route FROM deliveries WHERE route > ?1 \
                 AND state IN ('pending', 'in_flight', 'parked') ORDER BY route LIMIT 1",
            )?;
            let mut after = String::new();
            while let Some(route) = next.query_row([&after], |row| row.get::<_, String>(0)).optional()? {
                names.push(route.clone());
                after = route;
            }
            names.sort_unstable();
            names.dedup();
            Ok(names)
        };
        run().map_err(|e| self.error(&e))
    }

    /// Whether any delivery row names `route` (see [`Reader::delivery_routes`]).
    pub fn route_has_deliveries(&self, route: &str) -> Result<bool, StoreError> {
        let run = || -> rusqlite::Result<bool> {
            let open = self
                .conn
                .query_row(
                    "SELECT 1 FROM deliveries WHERE route = ?1 \
                     AND state IN ('pending', 'in_flight', 'parked') LIMIT 1",
                    [route],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            Ok(open
                || self
                    .conn
                    .query_row("SELECT 1 FROM delivery_counts WHERE route = ?1 AND rows > 0", [route], |_| {
                        Ok(())
                    })
                    .optional()?
                    .is_some())
        };
        run().map_err(|e| self.error(&e))
    }

    /// `route`'s counts, held lanes, oldest pending row and last error (zeros for a route
    /// without rows). Walks the route's open rows (an index range, each row's state read
    /// from the table), never its finished ones.
    pub fn route_status(&self, route: &str) -> Result<RouteStatus, StoreError> {
        let run = || -> rusqlite::Result<RouteStatus> {
            let mut status = RouteStatus::empty(route);
            let mut open = self.conn.prepare_cached(
                "SELECT state, count(*), min(queued_at) FROM deliveries \
                 WHERE route = ?1 AND state IN ('pending', 'in_flight', 'parked') GROUP BY state",
            )?;
            let groups = open
                .query_map([route], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            status.add_open(groups);
            let mut finished =
                self.conn.prepare_cached("SELECT state, rows FROM delivery_counts WHERE route = ?1")?;
            let counts = finished
                .query_map([route], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            status.add_finished(counts);
            status.held_lanes = self.held_lanes(route)?.len() as u64;
            status.last_error = self
                .conn
                .prepare_cached(
                    "SELECT last_error FROM deliveries WHERE route = ?1 \
                     AND state IN ('pending', 'in_flight', 'parked') AND last_error IS NOT NULL \
                     ORDER BY last_attempt_at DESC, id DESC LIMIT 1",
                )?
                .query_row([route], |row| row.get(0))
                .optional()?;
            Ok(status)
        };
        run().map_err(|e| self.error(&e))
    }

    /// The lanes of `route` whose oldest open row is parked, in lane order: the lanes with
    /// a parked row (`deliveries_parked`), each checked with one seek on `deliveries_open`.
    fn held_lanes(&self, route: &str) -> rusqlite::Result<Vec<String>> {
        let lanes: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT lane FROM deliveries WHERE route = ?1 AND state = 'parked' ORDER BY lane",
            )?
            .query_map([route], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut head = self.conn.prepare_cached(
            "SELECT state FROM deliveries WHERE route = ?1 AND lane = ?2 \
             AND state IN ('pending', 'in_flight', 'parked') ORDER BY id LIMIT 1",
        )?;
        let mut held = Vec::new();
        for lane in lanes {
            let state: Option<String> = head.query_row(params![route, lane], |row| row.get(0)).optional()?;
            if state.as_deref() == Some(DeliveryState::Parked.as_str()) {
                held.push(lane);
            }
        }
        Ok(held)
    }

    /// `route`'s parked deliveries, by lane then queue order, with their messages' MSH-10
    /// and MSH-9.
    pub fn parked(&self, route: &str) -> Result<Vec<ParkedDelivery>, StoreError> {
        let run = || -> rusqlite::Result<Vec<ParkedDelivery>> {
            let mut statement = self.conn.prepare(
                "SELECT d.id, d.message_id, d.lane, m.control_id, m.message_type, d.attempts, d.done_at, \
                 d.last_error, d.response \
                 FROM deliveries d LEFT JOIN messages m ON m.id = d.message_id \
                 WHERE d.route = ?1 AND d.state = 'parked' ORDER BY d.lane, d.id",
            )?;
            let parked = statement
                .query_map([route], |row| {
                    Ok(ParkedDelivery {
                        id: row.get(0)?,
                        message_id: row.get(1)?,
                        lane: row.get(2)?,
                        control_id: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        message_type: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
                        attempts: row.get::<_, i64>(5)?.max(0) as u64,
                        parked_at: row.get::<_, Option<i64>>(6)?.map(time),
                        last_error: row.get(7)?,
                        response: row.get(8)?,
                    })
                })?
                .collect();
            parked
        };
        run().map_err(|e| self.error(&e))
    }

    /// Every delivery row of message `message_id`, by route then queue order.
    pub fn deliveries_of(&self, message_id: i64) -> Result<Vec<Delivery>, StoreError> {
        let run = || -> rusqlite::Result<Vec<Delivery>> {
            let mut statement = self.conn.prepare(
                "SELECT id, route, lane, state, attempts, queued_at, next_attempt_at, first_attempt_at, \
                 last_attempt_at, done_at, last_error, response, resend_of \
                 FROM deliveries WHERE message_id = ?1 ORDER BY route, id",
            )?;
            let deliveries = statement.query_map([message_id], delivery)?.collect();
            deliveries
        };
        run().map_err(|e| self.error(&e))
    }

    /// The key fields stored for message `id` (schema 3's columns), with its lane keys
    /// (computed from its bytes: [`fields::lanes_of_stored`]).
    pub fn key_fields(&self, id: i64) -> Result<Option<KeyFields>, StoreError> {
        self.conn
            .query_row(
                "SELECT patient_id, patient_authority, visit_number, placer_order, filler_order, \
                 message_time_utc, message_time_wall, trigger_event, charset, raw \
                 FROM messages WHERE id = ?1",
                [id],
                |row| {
                    let fields = KeyFields {
                        patient_id: row.get(0)?,
                        patient_authority: row.get(1)?,
                        visit_number: row.get(2)?,
                        placer_order: row.get(3)?,
                        filler_order: row.get(4)?,
                        message_time_utc: row.get(5)?,
                        message_time_wall: row.get(6)?,
                        trigger_event: row.get(7)?,
                        lane_sender: None,
                        lane_patient: None,
                    };
                    Ok(fields.with_lanes_of_stored(
                        row.get_ref(9)?.as_blob().unwrap_or_default(),
                        row.get_ref(8)?.as_str().unwrap_or_default(),
                    ))
                },
            )
            .optional()
            .map_err(|e| self.error(&e))
    }
}

fn delivery(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let state_name: String = row.get(3)?;
    Ok(Delivery {
        id: row.get(0)?,
        route: row.get(1)?,
        lane: row.get(2)?,
        state: DeliveryState::from_name(&state_name),
        state_name,
        attempts: row.get::<_, i64>(4)?.max(0) as u64,
        queued_at: time(row.get(5)?),
        next_attempt_at: time(row.get(6)?),
        first_attempt_at: row.get::<_, Option<i64>>(7)?.map(time),
        last_attempt_at: row.get::<_, Option<i64>>(8)?.map(time),
        done_at: row.get::<_, Option<i64>>(9)?.map(time),
        last_error: row.get(10)?,
        response: row.get(11)?,
        resend_of: row.get(12)?,
    })
}

/// What a route takes and how it lanes, for queueing stored messages
/// ([`DeliveryActions::backfill`], [`DeliveryActions::resend_range`]): the `[[route]]` keys
/// the writer matches new messages with, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// `name`.
    pub name: String,
    /// `listeners`: only messages received on these; `None` = every listener.
    pub listeners: Option<Vec<String>>,
    /// `message_types`: MSH-9 globs (see [`type_matches`]); empty = every type.
    pub message_types: Vec<String>,
    /// `order`.
    pub order: LaneOrder,
}

impl RouteRule {
    /// Whether the route takes a message received on `listener` with MSH-9
    /// `message_type` (as stored).
    pub fn takes(&self, listener: &str, message_type: &str) -> bool {
        self.listeners.as_ref().is_none_or(|names| names.iter().any(|name| name == listener))
            && (self.message_types.is_empty()
                || self.message_types.iter().any(|pattern| type_matches(pattern, message_type)))
    }

    /// The lane of a stored message under the route's order, from its bytes and `charset`
    /// column: the writer's keys ([`fields::lanes_of_stored`]) and rule ([`lane_for`]), so
    /// that a backfilled or resent message goes into the lane a new one would. `strict`
    /// reads nothing.
    pub fn lane(&self, raw: &[u8], charset: &str) -> String {
        if self.order == LaneOrder::Strict {
            return STRICT_LANE.to_owned();
        }
        let (sender, patient) = fields::lanes_of_stored(raw, charset);
        lane_for(self.order, Some(&sender), Some(&patient))
    }
}

/// Which parked deliveries `hl7d routes retry` releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// This message's (`--message ID`).
    Message(i64),
    /// Every parked delivery of this lane (`--lane KEY`).
    Lane(String),
    /// Every parked delivery of the route (`--all-parked`).
    AllParked,
}

/// A delivery row an action changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The delivery row.
    pub id: i64,
    /// Its message.
    pub message_id: i64,
    /// Its lane.
    pub lane: String,
    /// Its state before the change.
    pub was: DeliveryState,
}

/// A delivery row queued by a backfill or a resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The new delivery row (`None` in a dry run).
    pub id: Option<i64>,
    /// Its message.
    pub message_id: i64,
    /// For a resend: the message's original delivery on the route, if it had one.
    pub resend_of: Option<i64>,
}

/// What a backfill or a range resend queued (or, in a dry run, would queue).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuedRange {
    /// Deliveries queued.
    pub count: u64,
    /// The first message queued (the lowest id).
    pub first_message: Option<i64>,
    /// The last message queued.
    pub last_message: Option<i64>,
}

/// Why an action on the delivery queue did not run.
#[derive(Debug, Error)]
pub enum ActionError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No stored message has this id.
    #[error("no message with id {0}")]
    NoMessage(i64),
    /// The message was refused when it arrived: refused messages are never delivered.
    #[error("message {id} was not accepted (status {status}): only accepted messages are delivered")]
    NotAccepted {
        /// The message.
        id: i64,
        /// Its status.
        status: Status,
    },
}

/// A read-write connection to the store for the operator's changes to the delivery queue;
/// see the module documentation.
pub struct DeliveryActions {
    conn: Connection,
    file: PathBuf,
}

impl DeliveryActions {
    /// Opens the store in `dir` (it must exist, at this build's schema version).
    pub fn open(dir: &Path) -> Result<DeliveryActions, StoreError> {
        let (conn, file) = open_writable(dir)?;
        Ok(DeliveryActions { conn, file })
    }

    fn error(&self, error: &rusqlite::Error) -> StoreError {
        StoreError::Unavailable(format!("{}: {}", self.file.display(), describe(error)))
    }

    /// `hl7d routes retry`: the parked deliveries of `route` that `which` selects go back
    /// to `pending`, due `now`. Their attempts are kept; `first_attempt_at` and `done_at`
    /// are cleared, so that the route's `park_after` counts from the release (a release
    /// is a fresh chance, not one attempt). Returns the rows released, in queue order.
    pub fn retry(
        &mut self,
        route: &str,
        which: &Release,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        let (condition, key) = match which {
            Release::Message(id) => ("message_id = ?3", rusqlite::types::Value::Integer(*id)),
            Release::Lane(lane) => ("lane = ?3", rusqlite::types::Value::Text(lane.clone())),
            Release::AllParked => ("?3 IS NULL", rusqlite::types::Value::Null),
        };
        let sql = format!(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, first_attempt_at = NULL, \
             done_at = NULL WHERE route = ?1 AND state = 'parked' AND {condition} \
             RETURNING id, message_id, lane"
        );
        let run = |conn: &mut Connection| -> rusqlite::Result<Vec<Changed>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut released: Vec<Changed> = tx
                .prepare(&sql)?
                .query_map(params![route, micros(now), key], |row| {
                    Ok(Changed {
                        id: row.get(0)?,
                        message_id: row.get(1)?,
                        lane: row.get(2)?,
                        was: DeliveryState::Parked,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            tx.commit()?;
            released.sort_by_key(|changed| changed.id);
            Ok(released)
        };
        run(&mut self.conn).map_err(|e| self.error(&e))
    }

    /// `hl7d routes skip`: message `message_id`'s parked or pending deliveries on `route`
    /// become `skipped` (kept, never sent), done `now`; a lane held by one goes on. A
    /// delivery in flight is left alone (its attempt may succeed). Returns the rows
    /// skipped.
    pub fn skip(
        &mut self,
        route: &str,
        message_id: i64,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        let run = |conn: &mut Connection| -> rusqlite::Result<Vec<Changed>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let skipped: Vec<Changed> = tx
                .prepare(
                    "SELECT id, message_id, lane, state FROM deliveries \
                     WHERE message_id = ?1 AND route = ?2 AND state IN ('parked', 'pending') ORDER BY id",
                )?
                .query_map(params![message_id, route], |row| {
                    let state: String = row.get(3)?;
                    Ok(Changed {
                        id: row.get(0)?,
                        message_id: row.get(1)?,
                        lane: row.get(2)?,
                        was: DeliveryState::from_name(&state).unwrap_or(DeliveryState::Pending),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut update = tx.prepare(
                "UPDATE deliveries SET state = 'skipped', done_at = ?2 \
                 WHERE id = ?1 AND state IN ('parked', 'pending')",
            )?;
            for row in &skipped {
                update.execute(params![row.id, micros(now)])?;
            }
            drop(update);
            tx.commit()?;
            Ok(skipped)
        };
        run(&mut self.conn).map_err(|e| self.error(&e))
    }

    /// `hl7d routes backfill`: queues a delivery on `route` for every accepted message
    /// received in `[since, until)` that the route takes and that has no delivery on it
    /// yet, in id order (the order of storage), each in the lane its bytes give under the
    /// route's order ([`RouteRule::lane`]), due `now`. [`ACTION_BATCH`] messages per transaction;
    /// with `dry_run` nothing is written and the count is what would be queued.
    /// Running it again queues nothing new.
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

    /// `hl7d messages resend --since`: a new pending delivery on `route` for every accepted
    /// message received in `[since, until)` that has a delivery on it already (whatever
    /// its state), linked to the first one (`resend_of`), in id order, [`ACTION_BATCH`]
    /// messages per transaction. Messages the route never had are a backfill's.
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

    /// `hl7d messages resend ID…`: a new pending delivery on `route` for each message, in
    /// id order (duplicates once), linked to its original delivery on the route if it had
    /// one, whether or not the route's listeners and types take it (the operator named
    /// it). All or nothing, in one transaction: an id that is not stored, or a message
    /// that was refused, queues none.
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
        let run = |conn: &mut Connection| -> rusqlite::Result<Result<Vec<Queued>, ActionError>> {
            let behavior =
                if dry_run { TransactionBehavior::Deferred } else { TransactionBehavior::Immediate };
            let tx = conn.transaction_with_behavior(behavior)?;
            let mut queued = Vec::with_capacity(ids.len());
            {
                let mut message = tx.prepare("SELECT status, charset, raw FROM messages WHERE id = ?1")?;
                let mut original = tx.prepare(ORIGINAL)?;
                let mut insert = tx.prepare(INSERT)?;
                for &id in &ids {
                    let found: Option<(String, String, Vec<u8>)> = message
                        .query_row([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                        .optional()?;
                    let Some((status, charset, raw)) = found else {
                        return Ok(Err(ActionError::NoMessage(id)));
                    };
                    // A status this build does not know is not `accepted` either.
                    let status: Status = status.parse().unwrap_or(Status::Rejected);
                    if status != Status::Accepted {
                        return Ok(Err(ActionError::NotAccepted { id, status }));
                    }
                    let resend_of: Option<i64> =
                        original.query_row(params![id, route.name], |row| row.get(0)).optional()?;
                    let new = if dry_run {
                        None
                    } else {
                        let lane = route.lane(&raw, &charset);
                        insert.execute(params![id, route.name, lane, micros(now), resend_of])?;
                        Some(tx.last_insert_rowid())
                    };
                    queued.push(Queued { id: new, message_id: id, resend_of });
                }
            }
            if !dry_run {
                tx.commit()?;
            }
            Ok(Ok(queued))
        };
        run(&mut self.conn).map_err(|e| self.error(&e))?
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
        let run = |conn: &mut Connection| -> rusqlite::Result<QueuedRange> {
            // The ids received in the range: an index-only walk of `messages_received_at`.
            // Messages stored after this are not looked at, so a busy sender cannot keep a
            // backfill going.
            let (low, high): (Option<i64>, Option<i64>) = conn.query_row(
                "SELECT min(id), max(id) FROM messages WHERE received_at >= ?1 AND received_at < ?2",
                params![since, until],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let mut result = QueuedRange::default();
            let (Some(low), Some(high)) = (low, high) else { return Ok(result) };
            let mut after = low - 1;
            while after < high {
                let behavior =
                    if dry_run { TransactionBehavior::Deferred } else { TransactionBehavior::Immediate };
                let tx = conn.transaction_with_behavior(behavior)?;
                {
                    // Id order, so that a lane's messages are queued in the order they were
                    // stored; `received_at` is checked per row (a clock step back can put a
                    // message of the range among ids outside it).
                    let mut batch = tx.prepare_cached(
                        "SELECT id, listener, message_type, status, received_at, charset, raw, \
                         EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id AND d.route = ?4) \
                         FROM messages WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
                    )?;
                    let mut original = tx.prepare_cached(ORIGINAL)?;
                    let mut insert = tx.prepare_cached(INSERT)?;
                    let mut rows = batch.query(params![after, high, ACTION_BATCH, route.name])?;
                    let mut last = None;
                    while let Some(row) = rows.next()? {
                        let id: i64 = row.get(0)?;
                        last = Some(id);
                        let received_at: i64 = row.get(4)?;
                        let has_delivery: bool = row.get(7)?;
                        let wanted = row.get_ref(3)?.as_str().ok() == Some(Status::Accepted.as_str())
                            && (since..until).contains(&received_at)
                            && match mode {
                                Mode::Backfill => {
                                    !has_delivery
                                        && route.takes(row.get_ref(1)?.as_str()?, row.get_ref(2)?.as_str()?)
                                }
                                Mode::Resend => has_delivery,
                            };
                        if !wanted {
                            continue;
                        }
                        if !dry_run {
                            let resend_of: Option<i64> = match mode {
                                Mode::Backfill => None,
                                Mode::Resend => original
                                    .query_row(params![id, route.name], |row| row.get(0))
                                    .optional()?,
                            };
                            let lane = route.lane(
                                row.get_ref(6)?.as_blob().unwrap_or_default(),
                                row.get_ref(5)?.as_str().unwrap_or_default(),
                            );
                            insert.execute(params![id, route.name, lane, now, resend_of])?;
                        }
                        result.count += 1;
                        result.first_message.get_or_insert(id);
                        result.last_message = Some(id);
                    }
                    after = last.unwrap_or(high);
                }
                if dry_run {
                    tx.rollback()?;
                } else {
                    tx.commit()?;
                }
            }
            Ok(result)
        };
        run(&mut self.conn).map_err(|e| self.error(&e))
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

/// A message's original delivery on a route: its first that is not itself a resend (else
/// its first).
const ORIGINAL: &str = "SELECT id FROM deliveries WHERE message_id = ?1 AND route = ?2 \
     ORDER BY resend_of IS NOT NULL, id LIMIT 1";

/// A new pending delivery, due when queued.
const INSERT: &str =
    "INSERT INTO deliveries (message_id, route, lane, state, queued_at, next_attempt_at, resend_of) \
     VALUES (?1, ?2, ?3, 'pending', ?4, ?4, ?5)";

#[cfg(test)]
mod tests {
    use hl7_proto::charset::Charset;
    use hl7_proto::keys::lane_key;
    use rusqlite::params_from_iter;

    use super::*;
    use crate::store::{test_message, Disposition, MessageStore, SqliteOptions, SqliteStore, DATABASE_FILE};

    /// `MSH-3^MSH-4`, patient (none: no PID), listener, type.
    type Spec = (&'static str, &'static str, Option<&'static str>, &'static str, &'static str);

    fn raw((app, facility, patient, _, kind): Spec, n: usize) -> String {
        let pid = patient.map_or_else(String::new, |p| format!("PID|1||{p}^^^HOSP\r"));
        format!("MSH|^~\\&|{app}|{facility}|||20261128||{kind}|C{n}|P|2.5\r{pid}")
    }

    /// A store holding one accepted message per spec (ids 1, 2, …) through the store's own
    /// writer, plus a refused one (the last id).
    fn store_with(specs: &[Spec]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(tmp.path(), SqliteOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for (n, spec) in specs.iter().enumerate() {
            let text = raw(*spec, n);
            let mut message = test_message(
                &format!("C{n}"),
                text.as_bytes(),
                None,
                Disposition::Accepted { duplicate_window: None },
            );
            message.listener = spec.3.into();
            message.message_type = spec.4.into();
            message.sending_application = spec.0.into();
            message.sending_facility = spec.1.into();
            rt.block_on(store.append(message)).unwrap();
        }
        let refused = test_message(
            "BAD",
            b"MSH|^~\\&|LAB|MCM",
            None,
            Disposition::Refused(hl7_proto::refusal::Refusal::FrameBadEnd),
        );
        rt.block_on(store.append(refused)).unwrap();
        store.close();
        tmp
    }

    fn sql(dir: &Path) -> Connection {
        Connection::open(dir.join(DATABASE_FILE)).unwrap()
    }

    /// Inserts a delivery row; returns its id.
    fn insert(conn: &Connection, message: i64, route: &str, lane: &str, state: &str, queued_at: i64) -> i64 {
        conn.execute(
            "INSERT INTO deliveries (message_id, route, lane, state, queued_at, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![message, route, lane, state, queued_at],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn rows(dir: &Path) -> Vec<(i64, i64, String, String, String, Option<i64>)> {
        sql(dir)
            .prepare("SELECT id, message_id, route, lane, state, resend_of FROM deliveries ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    const ADT: Spec = ("REG", "MCM", Some("P1"), "lab", "ADT^A01");

    #[test]
    fn status_counts_every_state_and_finds_held_lanes_oldest_and_last_error() {
        let tmp = store_with(&[ADT; 8]);
        let conn = sql(tmp.path());
        let second = 1_000_000;
        // Lane A: parked head, a pending row behind it (held). Lane B: a pending head, a
        // parked row behind it (not held: its head is not parked). Lane C: in flight.
        let a1 = insert(&conn, 1, "engine", "A", "parked", 10 * second);
        insert(&conn, 2, "engine", "A", "pending", 11 * second);
        insert(&conn, 3, "engine", "B", "pending", 5 * second);
        insert(&conn, 4, "engine", "B", "parked", 12 * second);
        insert(&conn, 5, "engine", "C", "in_flight", 7 * second);
        for message in 1..=3 {
            insert(&conn, message, "engine", "D", "delivered", second);
        }
        insert(&conn, 6, "engine", "D", "skipped", second);
        insert(&conn, 7, "old", "strict", "pending", 2 * second);
        insert(&conn, 8, "done", "strict", "delivered", second);
        conn.execute(
            "UPDATE deliveries SET last_error = 'AR: rejected', last_attempt_at = 20 WHERE id = ?1",
            [a1],
        )
        .unwrap();
        conn.execute(
            "UPDATE deliveries SET last_error = 'refused', last_attempt_at = 30 WHERE lane = 'C'",
            [],
        )
        .unwrap();
        // A delivered row's old error is history, not the route's last error.
        conn.execute("UPDATE deliveries SET last_error = 'old', last_attempt_at = 99 WHERE lane = 'D'", [])
            .unwrap();

        let reader = Reader::open(tmp.path()).unwrap();
        assert_eq!(reader.delivery_routes().unwrap(), ["done", "engine", "old"]);
        assert!(reader.route_has_deliveries("done").unwrap());
        assert!(!reader.route_has_deliveries("nope").unwrap());
        let status = reader.route_status("engine").unwrap();
        assert_eq!(
            status,
            RouteStatus {
                name: "engine".into(),
                pending: 2,
                in_flight: 1,
                delivered: 3,
                parked: 2,
                skipped: 1,
                held_lanes: 1,
                oldest_pending_queued_at: Some(time(5 * second)),
                last_error: Some("refused".into()),
            }
        );
        assert_eq!(status.oldest_pending_seconds(time(65 * second)), 60);
        let empty = reader.route_status("nope").unwrap();
        assert_eq!(
            (empty.pending, empty.delivered, empty.oldest_pending_seconds(SystemTime::now())),
            (0, 0, 0)
        );

        let parked = reader.parked("engine").unwrap();
        let summary: Vec<(i64, &str, &str, &str)> = parked
            .iter()
            .map(|p| (p.message_id, p.lane.as_str(), p.control_id.as_str(), p.message_type.as_str()))
            .collect();
        assert_eq!(summary, [(1, "A", "C0", "ADT^A01"), (4, "B", "C3", "ADT^A01")]);
        assert_eq!(parked[0].last_error.as_deref(), Some("AR: rejected"));
    }

    /// The status reads cost the rows still to do, never the finished ones: no query walks
    /// the whole table.
    #[test]
    fn status_reads_use_the_open_and_parked_indexes() {
        let tmp = store_with(&[ADT]);
        let reader = Reader::open(tmp.path()).unwrap();
        let plan = |sql: &str, values: &[&dyn rusqlite::ToSql]| -> String {
            let mut statement = reader.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let steps: Vec<String> = statement
                .query_map(params_from_iter(values.iter()), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            steps.join("; ")
        };
        for (sql, index) in [
            (
                "SELECT state, count(*), min(queued_at) FROM deliveries \
                 WHERE route = ?1 AND state IN ('pending', 'in_flight', 'parked') GROUP BY state",
                "deliveries_open",
            ),
            (
                "SELECT last_error FROM deliveries WHERE route = ?1 \
                 AND state IN ('pending', 'in_flight', 'parked') AND last_error IS NOT NULL \
                 ORDER BY last_attempt_at DESC, id DESC LIMIT 1",
                "deliveries_open",
            ),
            (
                "SELECT DISTINCT lane FROM deliveries WHERE route = ?1 AND state = 'parked' ORDER BY lane",
                "deliveries_parked",
            ),
            (
                "SELECT route FROM deliveries WHERE route > ?1 \
                 AND state IN ('pending', 'in_flight', 'parked') ORDER BY route LIMIT 1",
                "deliveries_open",
            ),
        ] {
            let steps = plan(sql, &[&"engine"]);
            assert!(steps.contains(&format!("INDEX {index}")), "{sql}: {steps}");
            assert!(!steps.contains("SCAN deliveries"), "{sql}: {steps}");
        }
    }

    #[test]
    fn retry_releases_exactly_the_parked_rows_selected() {
        let tmp = store_with(&[ADT; 6]);
        let conn = sql(tmp.path());
        let m1 = insert(&conn, 1, "engine", "A", "parked", 1);
        insert(&conn, 2, "engine", "A", "pending", 2);
        let m3 = insert(&conn, 3, "engine", "B", "parked", 3);
        let m4 = insert(&conn, 4, "engine", "C", "parked", 4);
        let other = insert(&conn, 1, "other", "A", "parked", 5);
        let delivered = insert(&conn, 5, "engine", "D", "delivered", 6);
        conn.execute(
            "UPDATE deliveries SET attempts = 7, first_attempt_at = 1, done_at = 9, last_error = 'AR' WHERE id = ?1",
            [m1],
        )
        .unwrap();
        let mut actions = DeliveryActions::open(tmp.path()).unwrap();
        let now = time(1_000_000);
        let ids =
            |changed: Vec<Changed>| changed.into_iter().map(|c| (c.id, c.message_id)).collect::<Vec<_>>();

        assert_eq!(ids(actions.retry("engine", &Release::Message(1), now).unwrap()), [(m1, 1)]);
        let (state, attempts, next, first, done, error): (String, i64, i64, Option<i64>, Option<i64>, Option<String>) = conn
            .query_row(
                "SELECT state, attempts, next_attempt_at, first_attempt_at, done_at, last_error FROM deliveries WHERE id = ?1",
                [m1],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .unwrap();
        assert_eq!((state.as_str(), attempts, next, first, done), ("pending", 7, 1_000_000, None, None));
        assert_eq!(error.as_deref(), Some("AR"), "the last error stays for the operator");
        // Again: nothing parked for it any more.
        assert!(actions.retry("engine", &Release::Message(1), now).unwrap().is_empty());
        assert!(actions.retry("engine", &Release::Message(5), now).unwrap().is_empty(), "delivered");

        assert_eq!(ids(actions.retry("engine", &Release::Lane("B".into()), now).unwrap()), [(m3, 3)]);
        assert_eq!(ids(actions.retry("engine", &Release::AllParked, now).unwrap()), [(m4, 4)]);
        let states: Vec<(i64, String)> =
            rows(tmp.path()).into_iter().map(|(id, _, _, _, state, _)| (id, state)).collect();
        assert!(states.contains(&(other, "parked".into())), "another route's row: {states:?}");
        assert!(states.contains(&(delivered, "delivered".into())), "{states:?}");
        assert_eq!(states.iter().filter(|(_, s)| s == "parked").count(), 1, "{states:?}");
    }

    #[test]
    fn skip_takes_parked_and_pending_rows_and_leaves_one_in_flight() {
        let tmp = store_with(&[ADT; 4]);
        let conn = sql(tmp.path());
        let parked = insert(&conn, 1, "engine", "A", "parked", 1);
        let pending = insert(&conn, 2, "engine", "B", "pending", 2);
        insert(&conn, 3, "engine", "C", "in_flight", 3);
        insert(&conn, 1, "other", "A", "parked", 4);
        let mut actions = DeliveryActions::open(tmp.path()).unwrap();
        let now = time(77);
        let skipped = actions.skip("engine", 1, now).unwrap();
        assert_eq!(
            skipped,
            [Changed { id: parked, message_id: 1, lane: "A".into(), was: DeliveryState::Parked }]
        );
        assert_eq!(actions.skip("engine", 2, now).unwrap()[0].was, DeliveryState::Pending);
        assert!(actions.skip("engine", 3, now).unwrap().is_empty(), "in flight");
        assert!(actions.skip("engine", 1, now).unwrap().is_empty(), "already skipped");
        let done: i64 =
            conn.query_row("SELECT done_at FROM deliveries WHERE id = ?1", [pending], |r| r.get(0)).unwrap();
        assert_eq!(done, 77);
        let reader = Reader::open(tmp.path()).unwrap();
        let status = reader.route_status("engine").unwrap();
        assert_eq!((status.skipped, status.parked, status.in_flight, status.held_lanes), (2, 0, 1, 0));
        assert_eq!(reader.route_status("other").unwrap().parked, 1);
    }

    fn rule(order: LaneOrder, listeners: Option<&[&str]>, types: &[&str]) -> RouteRule {
        RouteRule {
            name: "engine".into(),
            listeners: listeners.map(|names| names.iter().map(|n| (*n).to_owned()).collect()),
            message_types: types.iter().map(|t| (*t).to_owned()).collect(),
            order,
        }
    }

    /// Backfill queues what the route takes and has no delivery yet, in id order, with the
    /// lane keys the writer stored (equal to `hl7_proto::keys::lane_key` of the message),
    /// once: a second run queues nothing.
    #[test]
    fn backfill_queues_matching_messages_once_in_id_order_with_the_writers_lanes() {
        let specs: [Spec; 7] = [
            ("REG", "MCM", Some("P1"), "lab", "ADT^A01"),
            ("REG", "MCM", None, "lab", "ADT^A08"),
            ("LAB", "NORTH", Some("P2"), "lab", "ORU^R01"),
            ("REG", "MCM", Some("P1"), "adt", "ADT^A01"),
            ("REG", "MCM", Some("P3"), "lab", "ADT"),
            ("REG", "MCM", Some("P1/X%"), "lab", "ADT^A03"),
            ("REG", "MCM", Some("P4"), "lab", "ADT^A04"),
        ];
        let tmp = store_with(&specs);
        let conn = sql(tmp.path());
        // Message 7 already has its delivery (the writer queued it).
        let existing = insert(&conn, 7, "engine", "patient/MCM/P4", "delivered", 1);
        let mut actions = DeliveryActions::open(tmp.path()).unwrap();
        let since = SystemTime::now() - Duration::from_secs(3600);
        let until = SystemTime::now() + Duration::from_secs(1);
        let now = SystemTime::now();
        let route = rule(LaneOrder::PerPatient, Some(&["lab"]), &["ADT^A*", "ORU"]);

        let dry = actions.backfill(&route, since, until, true, now).unwrap();
        assert_eq!(dry, QueuedRange { count: 4, first_message: Some(1), last_message: Some(6) });
        assert_eq!(rows(tmp.path()).len(), 1, "a dry run writes nothing");

        let done = actions.backfill(&route, since, until, false, now).unwrap();
        assert_eq!(done, dry);
        let queued = rows(tmp.path());
        let messages: Vec<i64> = queued.iter().map(|row| row.1).collect();
        // 4 came in on `adt`, 5 is `ADT` with no event (`ADT^A*` needs one); the refused
        // row is never queued.
        assert_eq!(messages, [7, 1, 2, 3, 6]);
        for (id, message, route, lane, state, resend_of) in &queued {
            assert_eq!((route.as_str(), resend_of), ("engine", &None));
            if *id == existing {
                continue;
            }
            assert_eq!(state, "pending");
            let spec = specs[(*message - 1) as usize];
            let text = raw(spec, (*message - 1) as usize);
            let extracted = hl7_proto::extract::extract(text.as_bytes(), Charset::Utf8);
            assert_eq!(lane, &lane_key(LaneOrder::PerPatient, &extracted), "message {message}");
        }
        assert_eq!(queued[2].3, "sender/REG/MCM", "no PID: the sender's lane");
        assert_eq!(queued[4].3, "patient/MCM/P1%2FX%25");

        assert_eq!(actions.backfill(&route, since, until, false, now).unwrap().count, 0, "idempotent");
        assert_eq!(rows(tmp.path()).len(), 5);

        // Per sender, every listener and type; outside the time range nothing.
        let sender = RouteRule { name: "flat".into(), ..rule(LaneOrder::PerSender, None, &[]) };
        let past = SystemTime::now() - Duration::from_secs(7200);
        assert_eq!(actions.backfill(&sender, past, since, false, now).unwrap().count, 0);
        assert_eq!(actions.backfill(&sender, since, until, false, now).unwrap().count, 7);
        let lanes: Vec<String> =
            rows(tmp.path()).into_iter().filter(|row| row.2 == "flat").map(|row| row.3).collect();
        assert_eq!(lanes[2], "sender/LAB/NORTH");
        let strict = RouteRule { name: "one".into(), ..rule(LaneOrder::Strict, None, &[]) };
        actions.backfill(&strict, since, until, false, now).unwrap();
        assert!(rows(tmp.path()).into_iter().filter(|row| row.2 == "one").all(|row| row.3 == "strict"));
    }

    /// More messages than one batch: every one is queued, in order.
    #[test]
    fn backfill_goes_on_across_batches() {
        let specs = vec![ADT; (ACTION_BATCH + 3) as usize];
        let tmp = store_with(&specs);
        let mut actions = DeliveryActions::open(tmp.path()).unwrap();
        let since = SystemTime::now() - Duration::from_secs(3600);
        let until = SystemTime::now() + Duration::from_secs(1);
        let route = rule(LaneOrder::PerPatient, None, &[]);
        let queued = actions.backfill(&route, since, until, false, SystemTime::now()).unwrap();
        assert_eq!(queued.count, ACTION_BATCH as u64 + 3);
        let messages: Vec<i64> = rows(tmp.path()).into_iter().map(|row| row.1).collect();
        assert_eq!(messages, (1..=ACTION_BATCH + 3).collect::<Vec<_>>());
    }

    #[test]
    fn resend_links_the_original_and_refuses_unknown_or_refused_messages() {
        let tmp = store_with(&[ADT; 3]);
        let conn = sql(tmp.path());
        let original = insert(&conn, 1, "engine", "patient/MCM/P1", "delivered", 1);
        let mut actions = DeliveryActions::open(tmp.path()).unwrap();
        let route = rule(LaneOrder::PerPatient, None, &[]);
        let now = SystemTime::now();

        let dry = actions.resend(&route, &[2, 1, 1], true, now).unwrap();
        assert_eq!(
            dry,
            [
                Queued { id: None, message_id: 1, resend_of: Some(original) },
                Queued { id: None, message_id: 2, resend_of: None }
            ]
        );
        assert_eq!(rows(tmp.path()).len(), 1);
        let queued = actions.resend(&route, &[2, 1], false, now).unwrap();
        assert_eq!(queued.len(), 2);
        // A second resend still links to the original, not to the first resend.
        let again = actions.resend(&route, &[1], false, now).unwrap();
        assert_eq!(again[0].resend_of, Some(original));
        let all = rows(tmp.path());
        assert_eq!(all.len(), 4);
        assert!(all[1..].iter().all(|row| row.4 == "pending" && row.3 == "patient/MCM/P1"), "{all:?}");

        assert!(matches!(actions.resend(&route, &[1, 99], false, now), Err(ActionError::NoMessage(99))));
        let refused = 4; // store_with's last row
        assert!(matches!(
            actions.resend(&route, &[refused], false, now),
            Err(ActionError::NotAccepted { id: 4, status: Status::Rejected })
        ));
        assert_eq!(rows(tmp.path()).len(), 4, "all or nothing");

        // A range resends what the route had, linked to each original.
        let since = SystemTime::now() - Duration::from_secs(3600);
        let until = SystemTime::now() + Duration::from_secs(1);
        let dry = actions.resend_range(&route, since, until, true, now).unwrap();
        assert_eq!(dry, QueuedRange { count: 2, first_message: Some(1), last_message: Some(2) });
        actions.resend_range(&route, since, until, false, now).unwrap();
        let all = rows(tmp.path());
        assert_eq!(all.len(), 6);
        assert_eq!((all[4].1, all[4].5), (1, Some(original)));
        let first_of_2 = all.iter().find(|row| row.1 == 2).unwrap().0;
        assert_eq!((all[5].1, all[5].5), (2, Some(first_of_2)));
    }

    /// Backfill and resend queue exactly what the writer would: the same routes take the
    /// same messages, into the same lanes.
    #[test]
    fn a_route_rule_takes_and_lanes_like_the_writers_queue_route() {
        let routes = [
            (None, vec![], LaneOrder::PerPatient),
            (Some(vec!["lab".to_owned()]), vec!["ADT^A*".to_owned(), "ORU".to_owned()], LaneOrder::PerSender),
            (Some(vec!["adt".to_owned()]), vec!["?DT^A0?".to_owned()], LaneOrder::Strict),
        ];
        let messages =
            [("lab", "ADT^A01"), ("lab", "ORU^R01"), ("adt", "ADT^A08"), ("adt", "ADT"), ("x", "SIU^S12")];
        let raws: [&[u8]; 3] = [
            b"MSH|^~\\&|A|B|||20261128||ADT^A01|C1|P|2.5\rPID|1||P1^^^HOSP\r",
            b"MSH|^~\\&|A|B|||20261128||ADT^A01|C2|P|2.5\r",
            b"not a message",
        ];
        for (listeners, message_types, order) in routes {
            let rule = RouteRule {
                name: "r".into(),
                listeners: listeners.clone(),
                message_types: message_types.clone(),
                order,
            };
            let writer = super::super::queue::QueueRoute {
                name: "r".into(),
                listeners,
                message_types,
                order,
                queued: std::sync::Arc::new(tokio::sync::Notify::new()),
            };
            for (listener, kind) in messages {
                assert_eq!(
                    rule.takes(listener, kind),
                    writer.takes(listener, kind),
                    "{listener} {kind} {order:?}"
                );
            }
            for raw in raws {
                let fields = KeyFields::extract(raw, Charset::Utf8);
                assert_eq!(rule.lane(raw, "utf-8"), writer.lane(&fields), "{order:?}");
            }
        }
    }

    /// Schema 6 keeps no lane keys in `messages`: the lane the writer gives a new message
    /// at ingest (the listener's path: `inspect`, `NewMessage::received`) is the lane
    /// backfill and resend compute from its stored bytes, under `per_sender` and
    /// `per_patient`, for messages whose MSH-3/4 the stored header columns do not hold as
    /// the key does (Windows-1252 bytes, surrounding spaces, escapes, no PID).
    #[test]
    fn the_writers_lane_is_the_lane_backfill_and_resend_compute() {
        use crate::store::{NewMessage, Origin};
        use hl7_proto::inbound::{inspect, Inspection};

        let messages: [&[u8]; 5] = [
            b"MSH|^~\\&|REG|MCM|||20261128||ADT^A01|C1|P|2.5\rPID|1||P1^^^HOSP\r",
            b"MSH|^~\\&|H\xd4PITAL|CH\xc9|||20261128||ADT^A01|C2|P|2.5|||||FR|8859/1\rPID|1||M\xdcLLER-1^^^H\r",
            b"MSH|^~\\&| LAB |  NORTH |||20261128||ORU^R01|C3|P|2.5\rPID|1||P\\F\\2^^^H\r",
            b"MSH|^~\\&|LAB|NORTH|||20261128||ORU^R01|C4|P|2.5\rOBR|1|PL1\r",
            b"MSH|^~\\&|REG|MCM/X%|||20261128||ADT^A08|C5|P|2.5\rPID|1||P1/X%^^^HOSP\r",
        ];
        let tmp = tempfile::tempdir().unwrap();
        let writer_route = |name: &str, order| super::super::queue::QueueRoute {
            name: name.into(),
            listeners: None,
            message_types: vec![],
            order,
            queued: std::sync::Arc::new(tokio::sync::Notify::new()),
        };
        let table = super::super::queue::RouteTable::new(vec![
            writer_route("w-sender", LaneOrder::PerSender),
            writer_route("w-patient", LaneOrder::PerPatient),
        ]);
        let options = SqliteOptions {
            routes: Some(std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(table))),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(tmp.path(), options).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let origin = Origin {
            listener: "lab".into(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            client_thumbprint: None,
        };
        for raw in messages {
            let Inspection::Accept { msh, charset } = inspect(raw, Charset::Utf8, false) else {
                panic!("accepted")
            };
            let message = NewMessage::received(
                &origin,
                SystemTime::now(),
                Some(&msh),
                charset,
                None,
                Disposition::Accepted { duplicate_window: None },
                bytes::Bytes::copy_from_slice(raw),
            );
            rt.block_on(store.append(message)).unwrap();
        }
        store.close();

        let mut actions = DeliveryActions::open(tmp.path()).unwrap();
        let since = SystemTime::now() - Duration::from_secs(3600);
        let until = SystemTime::now() + Duration::from_secs(1);
        let now = SystemTime::now();
        let rule = |name: &str, order| RouteRule { name: name.into(), ..rule(order, None, &[]) };
        for (writer, backfilled, order) in [
            ("w-sender", "b-sender", LaneOrder::PerSender),
            ("w-patient", "b-patient", LaneOrder::PerPatient),
        ] {
            assert_eq!(
                actions.backfill(&rule(backfilled, order), since, until, false, now).unwrap().count,
                5
            );
            actions.resend(&rule(writer, order), &[1, 2, 3, 4, 5], false, now).unwrap();
            let lanes = |route: &str| -> Vec<(i64, String)> {
                rows(tmp.path())
                    .into_iter()
                    .filter(|row| row.2 == route && row.5.is_none())
                    .map(|row| (row.1, row.3))
                    .collect()
            };
            let resent: Vec<(i64, String)> = rows(tmp.path())
                .into_iter()
                .filter(|row| row.2 == writer && row.5.is_some())
                .map(|row| (row.1, row.3))
                .collect();
            assert_eq!(lanes(writer).len(), 5);
            assert_eq!(lanes(backfilled), lanes(writer), "{order:?}");
            assert_eq!(resent, lanes(writer), "{order:?}");
        }
        let sender_lanes: Vec<String> =
            rows(tmp.path()).into_iter().filter(|row| row.2 == "w-sender").map(|row| row.3).collect();
        assert_eq!(sender_lanes[1], "sender/HÔPITAL/CHÉ", "decoded in the message's character set");
        assert_eq!(sender_lanes[2], "sender/LAB/NORTH", "trimmed");
        let patient_lanes: Vec<String> =
            rows(tmp.path()).into_iter().filter(|row| row.2 == "w-patient").map(|row| row.3).collect();
        assert_eq!(patient_lanes[1], "patient/CHÉ/MÜLLER-1");
        assert_eq!(patient_lanes[3], "sender/LAB/NORTH", "no PID: the sender's lane");
        // What `messages show` prints is the same.
        let shown = Reader::open(tmp.path()).unwrap().message(2).unwrap().unwrap().fields;
        assert_eq!(
            (shown.lane_sender.as_deref(), shown.lane_patient.as_deref()),
            (Some("sender/HÔPITAL/CHÉ"), Some("patient/CHÉ/MÜLLER-1"))
        );
    }
}
