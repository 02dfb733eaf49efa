//! [`DeliveryQueue`] on the embedded SQLite store: one node owns every lane.
//!
//! Reads go through a read-only connection per route ([`QueueReader`], on the blocking
//! pool); every change goes through the store's one writer thread, in the same group commit
//! as incoming messages. An attempt's claim is not waited for (it rides the next commit, at
//! most 100 ms later): lost in a crash, the row is pending and goes out again, as an
//! in-flight one would. An outcome is waited for.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::{DeliveryQueue, LaneHold, RouteQueue};
use crate::delivery::lanes::{self, Pick};
use crate::delivery::{BoxFuture, Outbound};
use crate::store::queue::{DeliveryState, DeliveryUpdate, LaneHead, OpenCounts, QueueReader};
use crate::store::{SqliteStore, StoreError};

/// The queue in the SQLite store in `dir`, written by `store`'s writer.
pub struct SqliteQueue {
    store: Arc<SqliteStore>,
    dir: PathBuf,
}

impl SqliteQueue {
    /// The queue of the store in `dir` that `store` writes.
    pub fn new(store: Arc<SqliteStore>, dir: &Path) -> SqliteQueue {
        SqliteQueue { store, dir: dir.to_path_buf() }
    }
}

impl DeliveryQueue for SqliteQueue {
    fn route(&self, route: &str) -> BoxFuture<'_, Result<Arc<dyn RouteQueue>, StoreError>> {
        let (dir, route) = (self.dir.clone(), Arc::<str>::from(route));
        Box::pin(async move {
            let reader = blocking(move || QueueReader::open(&dir)).await?;
            let queue: Arc<dyn RouteQueue> = Arc::new(SqliteRouteQueue {
                store: self.store.clone(),
                reader: Arc::new(Mutex::new(reader)),
                route,
            });
            Ok(queue)
        })
    }

    fn lease(&self) -> Option<std::time::Duration> {
        None
    }
}

/// One route's queue: its reader, shared by the worker and its lane tasks.
struct SqliteRouteQueue {
    store: Arc<SqliteStore>,
    reader: Arc<Mutex<QueueReader>>,
    route: Arc<str>,
}

impl RouteQueue for SqliteRouteQueue {
    fn pick(
        &self,
        cursor: Option<String>,
        busy: HashSet<String>,
        free: usize,
        now: i64,
    ) -> BoxFuture<'_, Result<Pick, StoreError>> {
        let (reader, route) = (self.reader.clone(), self.route.clone());
        Box::pin(blocking(move || {
            let reader = lock(&reader);
            let heads = LaneWalk {
                reader: &reader,
                route: &route,
                cursor: cursor.as_deref(),
                after: cursor.clone(),
                wrapped: false,
            };
            lanes::pick(heads, &busy, free, now)
        }))
    }

    fn next(&self, lane: &str, now: i64) -> BoxFuture<'_, Result<Option<(LaneHead, Outbound)>, StoreError>> {
        let (reader, route, lane) = (self.reader.clone(), self.route.clone(), lane.to_owned());
        Box::pin(blocking(move || {
            let reader = lock(&reader);
            // Twice at most: a message purged between the two reads takes its delivery rows
            // with it, so the second look finds the next head.
            for _ in 0..2 {
                let Some(head) = reader.head(&route, &lane)? else { return Ok(None) };
                if head.state == DeliveryState::Parked || head.next_attempt_at > now {
                    return Ok(None);
                }
                match reader.message(head.message_id)? {
                    Some(message) => {
                        let outbound = Outbound {
                            id: message.id,
                            listener: Arc::from(message.listener),
                            control_id: message.control_id,
                            message_type: message.message_type,
                            charset: message.charset,
                            received_at: message.received_at,
                            raw: message.raw,
                        };
                        return Ok(Some((head, outbound)));
                    }
                    None => continue,
                }
            }
            Ok(None)
        }))
    }

    fn take(&self, lane: &str) -> BoxFuture<'_, Result<Option<LaneHold>, StoreError>> {
        // One node: every lane is this node's.
        Box::pin(std::future::ready(Ok(Some(LaneHold { lane: lane.to_owned(), token: 0 }))))
    }

    fn renew<'a>(&'a self, _hold: &'a LaneHold) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(std::future::ready(Ok(true)))
    }

    fn release(&self, _hold: LaneHold) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn claim<'a>(
        &'a self,
        _hold: &'a LaneHold,
        head: &'a LaneHead,
        at: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        // Not waited for: see the module documentation.
        let queued = self.store.update_deliveries_later(vec![DeliveryUpdate::Claim { id: head.id, at }]);
        Box::pin(std::future::ready(queued.map(|()| true)))
    }

    fn finish<'a>(
        &'a self,
        _hold: &'a LaneHold,
        update: DeliveryUpdate,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let written = self.store.update_deliveries(vec![update]);
        Box::pin(async move { written.await.map(|_| true) })
    }

    fn held_lanes(&self) -> BoxFuture<'_, Result<Vec<LaneHead>, StoreError>> {
        let (reader, route) = (self.reader.clone(), self.route.clone());
        Box::pin(blocking(move || lock(&reader).held_lanes(&route)))
    }

    fn open_counts(&self) -> BoxFuture<'_, Result<OpenCounts, StoreError>> {
        let (reader, route) = (self.reader.clone(), self.route.clone());
        Box::pin(blocking(move || lock(&reader).open_counts(&route)))
    }
}

/// The lane heads of a route from after `cursor` to the last lane, then from the first lane
/// to `cursor` itself: one seek each.
struct LaneWalk<'a> {
    reader: &'a QueueReader,
    route: &'a str,
    cursor: Option<&'a str>,
    after: Option<String>,
    wrapped: bool,
}

impl Iterator for LaneWalk<'_> {
    type Item = Result<LaneHead, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.reader.next_head(self.route, self.after.as_deref()) {
                Err(e) => return Some(Err(e)),
                Ok(Some(head)) => {
                    if self.wrapped && self.cursor.is_some_and(|cursor| head.lane.as_str() > cursor) {
                        return None;
                    }
                    self.after = Some(head.lane.clone());
                    return Some(Ok(head));
                }
                // The end: go round once, when the walk did not start at the beginning.
                Ok(None) if !self.wrapped && self.cursor.is_some() => {
                    self.wrapped = true;
                    self.after = None;
                }
                Ok(None) => return None,
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a store read on the blocking pool.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store read task failed: {e}"))))
}
