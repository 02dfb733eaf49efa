//! The engine's access to its queue: what a route worker and its lane tasks ask of the
//! store, behind one trait ([`DeliveryQueue`]) with one implementation per store.
//!
//! - [`sqlite::SqliteQueue`]: the embedded store. One node owns every lane (no lease):
//!   reads on a read-only connection per route, changes through the store's one writer
//!   thread ([`crate::store::SqliteStore::update_deliveries`]), so there is never a second
//!   writing connection in the server.
//!
//! On a store shared by several nodes a lane is worked only under a lease
//! ([`super::lease`]): [`RouteQueue::take`] gets it, [`RouteQueue::claim`] renews it with
//! each attempt, [`RouteQueue::renew`] in between, [`RouteQueue::release`] gives it back;
//! claims and outcomes are written only while the [`LaneHold`]'s token holds the lease.
//!
//! This module owns the seam and nothing else: which lane is ready, backoff and parking
//! are the engine's (`engine.rs`, `lanes.rs`, `backoff.rs`); the SQL is the store's
//! (`crate::store::queue`).

pub mod postgres;
pub mod sqlite;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::lanes::Pick;
use super::{BoxFuture, Outbound};
use crate::store::queue::{DeliveryUpdate, LaneHead, OpenCounts};
use crate::store::StoreError;

/// A store's delivery queue, as the engine uses it. Cheap to share (`Arc<dyn …>`).
pub trait DeliveryQueue: Send + Sync + 'static {
    /// The queue of one route, for its worker and lane tasks. The worker calls it when it
    /// starts, and again (after a pause) while it fails.
    fn route(&self, route: &str) -> BoxFuture<'_, Result<Arc<dyn RouteQueue>, StoreError>>;

    /// The lease a node holds a lane under (`[delivery] lease`), or `None` when this node
    /// is the only one and owns every lane (the embedded store).
    fn lease(&self) -> Option<Duration>;
}

/// This node's hold on one lane, from [`RouteQueue::take`] to [`RouteQueue::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneHold {
    /// The lane.
    pub lane: String,
    /// The lease's token, new at every take (0 without leases): a write carrying an old
    /// token is refused, so a node that lost the lane can record nothing in it.
    pub token: i64,
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

    /// Takes `lane` for this node: `None` when another node holds it (its lease has not
    /// expired) or takes it at the same moment.
    fn take(&self, lane: &str) -> BoxFuture<'_, Result<Option<LaneHold>, StoreError>>;

    /// Renews the lease of `hold`; `false` when it is no longer this node's (expired and
    /// taken, or released).
    fn renew<'a>(&'a self, hold: &'a LaneHold) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives the lane back (its lane task ended), so that any node may take it at once.
    fn release(&self, hold: LaneHold) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The head of `lane` and its message when it is due at `now` (pending or left in
    /// flight, not parked); `None` when the lane is empty, held or not due.
    fn next(&self, lane: &str, now: i64) -> BoxFuture<'_, Result<Option<(LaneHead, Outbound)>, StoreError>>;

    /// An attempt on `head` starts at `at` (micros): in flight, one more attempt; with
    /// leases, the lease is renewed in the same statement. `false`: the lease is no longer
    /// `hold`'s, nothing was written, the lane must not be worked.
    fn claim<'a>(
        &'a self,
        hold: &'a LaneHold,
        head: &'a LaneHead,
        at: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// An attempt ended: its outcome, answered once it is durable (the lane's next message
    /// goes out only after that). `false`: the lease is no longer `hold`'s and nothing was
    /// written (the node that holds it now sends the message again).
    fn finish<'a>(
        &'a self,
        hold: &'a LaneHold,
        update: DeliveryUpdate,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The heads of the route's held lanes (head parked), in lane order.
    fn held_lanes(&self) -> BoxFuture<'_, Result<Vec<LaneHead>, StoreError>>;

    /// Counts of the route's open rows, for the gauges.
    fn open_counts(&self) -> BoxFuture<'_, Result<OpenCounts, StoreError>>;
}
