//! The engine's access to its queue: what a route worker and its lane tasks ask of the
//! store, behind one trait ([`DeliveryQueue`]) with one implementation per store.
//!
//! - [`sqlite::SqliteQueue`]: the embedded store. One node owns every lane: reads on a
//!   read-only connection per route, changes through the store's one writer thread
//!   ([`crate::store::SqliteStore::update_deliveries`]), so there is never a second
//!   writing connection in the server.
//!
//! This module owns the seam and nothing else: which lane is ready, backoff and parking
//! are the engine's (`engine.rs`, `lanes.rs`, `backoff.rs`); the SQL is the store's
//! (`crate::store::queue`).

pub mod sqlite;

use std::collections::HashSet;
use std::sync::Arc;

use super::lanes::Pick;
use super::{BoxFuture, Outbound};
use crate::store::queue::{DeliveryUpdate, LaneHead, OpenCounts};
use crate::store::StoreError;

/// A store's delivery queue, as the engine uses it. Cheap to share (`Arc<dyn …>`).
pub trait DeliveryQueue: Send + Sync + 'static {
    /// The queue of one route, for its worker and lane tasks. The worker calls it when it
    /// starts, and again (after a pause) while it fails.
    fn route(&self, route: &str) -> BoxFuture<'_, Result<Arc<dyn RouteQueue>, StoreError>>;
}

/// One route's queue: lane heads, attempts and outcomes, held lanes, counts.
pub trait RouteQueue: Send + Sync + 'static {
    /// Walks the lane heads from after `cursor` (the last lane started), round the end,
    /// and picks up to `free` lanes ready at `now` (micros) that are not `busy`
    /// ([`super::lanes::pick`]).
    fn pick(
        &self,
        cursor: Option<String>,
        busy: HashSet<String>,
        free: usize,
        now: i64,
    ) -> BoxFuture<'_, Result<Pick, StoreError>>;

    /// The head of `lane` and its message when it is due at `now` (pending or left in
    /// flight, not parked); `None` when the lane is empty, held or not due.
    fn next(&self, lane: &str, now: i64) -> BoxFuture<'_, Result<Option<(LaneHead, Outbound)>, StoreError>>;

    /// An attempt on `head` starts at `at` (micros): in flight, one more attempt.
    fn claim(&self, head: &LaneHead, at: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// An attempt ended: its outcome, answered once it is durable (the lane's next message
    /// goes out only after that).
    fn finish(&self, update: DeliveryUpdate) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The heads of the route's held lanes (head parked), in lane order.
    fn held_lanes(&self) -> BoxFuture<'_, Result<Vec<LaneHead>, StoreError>>;

    /// Counts of the route's open rows, for the gauges.
    fn open_counts(&self) -> BoxFuture<'_, Result<OpenCounts, StoreError>>;
}
