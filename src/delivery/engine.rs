//! The delivery engine: one worker per route, which finds the lanes that are ready and
//! delivers each lane's messages one at a time, in queue order, through the route's
//! transport; backoff, parking, hold/release lines, metrics; routes added, changed and
//! removed at reload.
//!
//! What it relies on and never does itself:
//! - the store's writer queued the rows in the message's transaction and wakes the route's
//!   worker after the commit ([`crate::store::queue`]); the engine reads and changes rows
//!   through its queue ([`DeliveryQueue`]: on SQLite every change goes through that same
//!   writer, reads through a read-only connection of its own);
//! - the transports answer one attempt with an [`Outcome`] and never retry or sleep;
//! - operators release held lanes by changing rows from another process (`hl7d routes
//!   retry|skip`): each worker reads its held lanes every [`EngineOptions::refresh`] (one
//!   second), so such a change takes effect within that.
//!
//! At least once: a row becomes `delivered` only after its transport said so; an attempt
//! cut off by a stop or a crash leaves its row in flight (or pending), and it goes out
//! again when hl7d starts ([`SqliteStore::open`]). A lane's next message is sent only after
//! the outcome of the one before is committed, so a resend after a crash is only ever the
//! message that was in flight.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::backoff::{self, AfterFailure, RetryPolicy};
use super::lanes::{self, HeldLanes, LaneEvent, ParkedHead};
use super::lease::{Lease, LeaseStep};
use super::queue::sqlite::SqliteQueue;
use super::queue::{DeliveryQueue, LaneHold, RouteQueue};
use super::{Outbound, Outcome, RetryReason, Transport};
use crate::config::RouteConfig;
use crate::metrics::RouteMetrics;
use crate::store::queue::{DeliveryUpdate, Finished, LaneHead, QueueRoute, RouteTable, SharedRouteTable};
use crate::store::{SqliteStore, StoreError};

/// A lane task delivers at most this many messages before it gives its slot back, so that
/// with few slots a busy lane cannot keep other lanes waiting (the next walk starts after
/// the last lane started).
const FAIR_SHARE: usize = 32;
/// An idle transport (no lane using it) is closed after this long: receivers drop idle
/// connections on their own, and a send on a connection the peer closed would cost a retry.
const IDLE_CLOSE: Duration = Duration::from_secs(15);
/// Lane walks are spaced by at least this many times the last walk's duration (at most one
/// second), so that a route with very many lanes, none ready, does not walk them after
/// every new message.
const WALK_SPACING: u32 = 10;

/// After a renewal failed (the database did not answer), the next try comes this much
/// later, still within the lease.
const RENEW_RETRY: Duration = Duration::from_secs(1);

/// `future`, bounded by the time `lease` (if any) lets this node work its lane: `None`
/// when that passed first.
async fn within<T>(lease: &Option<Lease>, future: impl std::future::Future<Output = T>) -> Option<T> {
    match lease {
        None => Some(future.await),
        Some(lease) => tokio::time::timeout_at(lease.good_until(), future).await.ok(),
    }
}

/// Makes the transport a route's `to` names. The engine builds one per lane in flight.
pub trait TransportFactory: Send + Sync + 'static {
    /// A new transport for `route`; the error says why none can be made (a missing
    /// environment variable, an unreadable certificate).
    fn build(&self, route: &RouteConfig) -> Result<Box<dyn Transport>, String>;
}

/// The transports of this build ([`super::transport::build`]).
#[derive(Debug, Default)]
pub struct Transports;

impl TransportFactory for Transports {
    fn build(&self, route: &RouteConfig) -> Result<Box<dyn Transport>, String> {
        // The build errors name the route; the engine's callers do too.
        super::transport::build(route).map_err(|e| {
            let text = e.to_string();
            text.strip_prefix(&format!("route {:?}: ", route.name)).map(str::to_owned).unwrap_or(text)
        })
    }
}

/// Where "now" comes from for the times stored in delivery rows.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock (what `hl7d serve` uses).
    System,
    /// tokio's clock from `base` on: with a paused test runtime, backoff delays pass
    /// without waiting.
    Tokio {
        /// The wall time at `start`.
        base: SystemTime,
        /// tokio's instant then.
        start: Instant,
    },
}

impl Clock {
    /// A [`Clock::Tokio`] starting now.
    pub fn tokio() -> Clock {
        Clock::Tokio { base: SystemTime::now(), start: Instant::now() }
    }

    /// Now, micros since the epoch.
    pub fn now_micros(&self) -> i64 {
        let now = match self {
            Clock::System => SystemTime::now(),
            Clock::Tokio { base, start } => *base + start.elapsed(),
        };
        crate::store::micros(now)
    }

    /// The tokio instant of the stored time `micros`.
    fn instant_of(&self, micros: i64) -> Instant {
        let ahead = micros.saturating_sub(self.now_micros()).max(0) as u64;
        Instant::now() + Duration::from_micros(ahead)
    }
}

/// How an [`Engine`] runs.
#[derive(Clone)]
pub struct EngineOptions {
    /// Where the stored times come from.
    pub clock: Clock,
    /// Makes the transports.
    pub transports: Arc<dyn TransportFactory>,
    /// How often each worker re-reads its held lanes (operators' changes take effect within
    /// this) and walks its lanes when nothing woke it.
    pub refresh: Duration,
    /// How often each worker counts its open rows for the gauges.
    pub count_every: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            clock: Clock::System,
            transports: Arc::new(Transports),
            refresh: Duration::from_secs(1),
            count_every: Duration::from_secs(5),
        }
    }
}

/// The routes of a running server; see the module documentation. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Arc<dyn DeliveryQueue>,
    table: SharedRouteTable,
    options: EngineOptions,
    stop: CancellationToken,
    tasks: TaskTracker,
    workers: Mutex<BTreeMap<String, Running>>,
    /// Workers of removed routes that may still be finishing an attempt, by route name: a
    /// route added again under that name waits for it, so that no lane is delivered by two
    /// workers at once.
    stopping: Mutex<BTreeMap<String, watch::Receiver<bool>>>,
}

/// A route's worker as the engine keeps it.
struct Running {
    config: Arc<RouteConfig>,
    queued: Arc<Notify>,
    stop: CancellationToken,
    /// Becomes `true` when the worker has stopped and its lanes have finished.
    finished: watch::Receiver<bool>,
}

/// Routes checked and ready to apply ([`Engine::prepare`]): a first transport for each new
/// or changed route, built already.
pub struct Prepared {
    routes: Vec<Arc<RouteConfig>>,
    transports: BTreeMap<String, Box<dyn Transport>>,
}

/// Routes whose transport cannot be built: `(route, why)`.
pub type RouteFailures = Vec<(String, String)>;

/// What a reload did to one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAction {
    /// New: its worker started and the writer queues for it.
    Added,
    /// Gone: the writer no longer queues for it, its worker stopped; its rows stay.
    Removed,
    /// Changed: the old worker finishes the attempts under way, the new one takes over.
    Updated,
    /// No key changed.
    Unchanged,
}

impl RouteAction {
    /// `added`, `removed`, `updated`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteAction::Added => "added",
            RouteAction::Removed => "removed",
            RouteAction::Updated => "updated",
            RouteAction::Unchanged => "unchanged",
        }
    }
}

impl Engine {
    /// An engine with no route yet, delivering from the store in `dir` that `store` writes.
    /// `table` is the one the store's writer queues by ([`crate::store::SqliteOptions`]):
    /// the engine fills and swaps it.
    pub fn new(
        store: Arc<SqliteStore>,
        dir: &Path,
        table: SharedRouteTable,
        options: EngineOptions,
    ) -> Engine {
        Engine::with_queue(Arc::new(SqliteQueue::new(store, dir)), table, options)
    }

    /// An engine with no route yet, delivering from `queue`. `table` is the one the store's
    /// writer queues by: the engine fills and swaps it.
    pub fn with_queue(
        queue: Arc<dyn DeliveryQueue>,
        table: SharedRouteTable,
        options: EngineOptions,
    ) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                queue,
                table,
                options,
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
                workers: Mutex::default(),
                stopping: Mutex::default(),
            }),
        }
    }

    /// A new, empty table for the store's writer.
    pub fn table() -> SharedRouteTable {
        Arc::new(ArcSwap::from_pointee(RouteTable::default()))
    }

    /// Checks `routes` against the running ones without changing anything: builds a
    /// transport for each new or changed route. Every failure is returned, as `(route,
    /// why)`.
    pub fn prepare(&self, routes: &[RouteConfig]) -> Result<Prepared, RouteFailures> {
        let workers = lock(&self.inner.workers);
        let mut transports = BTreeMap::new();
        let mut failures = Vec::new();
        for route in routes {
            if workers.get(&route.name).is_some_and(|running| *running.config == *route) {
                continue;
            }
            match self.inner.options.transports.build(route) {
                Ok(transport) => {
                    transports.insert(route.name.clone(), transport);
                }
                Err(why) => failures.push((route.name.clone(), why)),
            }
        }
        if failures.is_empty() {
            Ok(Prepared { routes: routes.iter().cloned().map(Arc::new).collect(), transports })
        } else {
            Err(failures)
        }
    }

    /// Puts prepared routes in force; cannot fail. New routes start, removed ones stop
    /// (their rows stay), changed ones restart once the old worker's attempts under way
    /// are done. The writer's table is swapped before this returns. Logs one audit line
    /// per route added, removed or updated.
    pub fn apply(&self, prepared: Prepared) -> Vec<(String, RouteAction)> {
        let Prepared { routes, mut transports } = prepared;
        let mut workers = lock(&self.inner.workers);
        let mut stopping = lock(&self.inner.stopping);
        stopping.retain(|_, finished| !*finished.borrow());
        let mut changes = Vec::new();
        let removed: Vec<String> =
            workers.keys().filter(|name| !routes.iter().any(|route| &route.name == *name)).cloned().collect();
        for name in removed {
            if let Some(running) = workers.remove(&name) {
                running.stop.cancel();
                stopping.insert(name.clone(), running.finished);
                info!(target: "audit", event = "route_removed", route = %name,
                    "route removed: no new messages are queued for it; its queued deliveries stay");
                changes.push((name, RouteAction::Removed));
            }
        }
        for route in &routes {
            let action = match workers.get(&route.name) {
                Some(running) if *running.config == **route => {
                    changes.push((route.name.clone(), RouteAction::Unchanged));
                    continue;
                }
                Some(_) => RouteAction::Updated,
                None => RouteAction::Added,
            };
            let previous = match workers.remove(&route.name) {
                Some(running) => {
                    running.stop.cancel();
                    Some(running.finished)
                }
                None => stopping.remove(&route.name),
            };
            let first = transports.remove(&route.name);
            let running = self.spawn_worker(route.clone(), first, previous);
            workers.insert(route.name.clone(), running);
            match action {
                RouteAction::Added => info!(target: "audit", event = "route_added", route = %route.name,
                    to = %route.to, order = route.order.config_name(), in_flight = route.in_flight, "route added"),
                _ => info!(target: "audit", event = "route_updated", route = %route.name, to = %route.to,
                    order = route.order.config_name(), in_flight = route.in_flight,
                    "route changed: attempts under way finish, then the new settings apply"),
            }
            changes.push((route.name.clone(), action));
        }
        let table = routes
            .iter()
            .filter_map(|route| {
                workers.get(&route.name).map(|running| QueueRoute {
                    name: Arc::from(route.name.as_str()),
                    listeners: route.listeners.clone(),
                    message_types: route.message_types.clone(),
                    order: route.order,
                    queued: running.queued.clone(),
                })
            })
            .collect();
        self.inner.table.store(Arc::new(RouteTable::new(table)));
        changes
    }

    /// [`Engine::prepare`] then [`Engine::apply`].
    pub fn start(&self, routes: &[RouteConfig]) -> Result<Vec<(String, RouteAction)>, RouteFailures> {
        self.prepare(routes).map(|prepared| self.apply(prepared))
    }

    /// Stops every worker: no new attempt starts; attempts under way finish (each bounded
    /// by its transport's timeouts). Returns immediately; see [`Engine::wait`].
    pub fn stop(&self) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
    }

    /// Waits up to `grace` for the workers to finish after [`Engine::stop`]; returns
    /// whether they did (rows of attempts cut off stay in flight and go out again at the
    /// next start).
    pub async fn wait(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_ok()
    }

    fn spawn_worker(
        &self,
        config: Arc<RouteConfig>,
        first: Option<Box<dyn Transport>>,
        previous: Option<watch::Receiver<bool>>,
    ) -> Running {
        let queued = Arc::new(Notify::new());
        let stop = self.inner.stop.child_token();
        let (finished_tx, finished) = watch::channel(false);
        let worker = Worker {
            route: config.clone(),
            name: Arc::from(config.name.as_str()),
            queue: self.inner.queue.clone(),
            queued: queued.clone(),
            stop: stop.clone(),
            options: self.inner.options.clone(),
            tasks: self.inner.tasks.clone(),
            idle: first.into_iter().map(|transport| (transport, Instant::now())).collect(),
            busy: HashSet::new(),
            held: HeldLanes::default(),
            cursor: None,
            metrics: RouteMetrics::new(&config.name, &RetryReason::ALL.map(RetryReason::as_str)),
            failing: Arc::new(AtomicBool::new(false)),
        };
        self.inner.tasks.spawn(async move {
            if let Some(mut previous) = previous {
                let _ = previous.wait_for(|done| *done).await;
            }
            worker.run().await;
            let _ = finished_tx.send(true);
        });
        Running { config, queued, stop, finished }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One route's scheduler.
struct Worker {
    route: Arc<RouteConfig>,
    name: Arc<str>,
    queue: Arc<dyn DeliveryQueue>,
    queued: Arc<Notify>,
    stop: CancellationToken,
    options: EngineOptions,
    tasks: TaskTracker,
    /// Transports no lane uses now, with when they became idle.
    idle: Vec<(Box<dyn Transport>, Instant)>,
    /// Lanes with a lane task running.
    busy: HashSet<String>,
    held: HeldLanes,
    /// The last lane started: the next walk starts after it.
    cursor: Option<String>,
    metrics: RouteMetrics,
    /// Whether the last attempt failed (for one "failing"/"delivering again" line per
    /// change, not one per retry).
    failing: Arc<AtomicBool>,
}

/// What a lane task reports when it ends.
struct LaneDone {
    lane: String,
    transport: Box<dyn Transport>,
    ended: LaneEnd,
}

enum LaneEnd {
    /// Nothing more to do now (empty, not due, retrying later, gave its slot back, stopped,
    /// another node holds the lane, or a store error that was logged).
    Paused,
    /// Its head was parked: the lane holds.
    Parked(ParkedHead),
    /// This node's lease on the lane ran out or was taken: it stopped working the lane
    /// (an attempt under way was abandoned, nothing recorded).
    LeaseLost,
}

type SharedReader = Arc<dyn RouteQueue>;

impl Worker {
    async fn run(mut self) {
        let reader = match self.open_reader().await {
            Some(reader) => reader,
            None => return,
        };
        debug!(route = %self.name, "route worker started");
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<LaneDone>();
        let now = Instant::now();
        let (mut next_refresh, mut next_count, mut next_walk) = (now, now, now);
        let mut walk_wanted = true;
        let mut next_due: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now >= next_refresh {
                self.refresh_held(&reader).await;
                next_refresh = now + self.options.refresh;
                walk_wanted = true;
            }
            if now >= next_count {
                self.count(&reader).await;
                next_count = now + self.options.count_every;
            }
            if next_due.is_some_and(|due| now >= due) {
                next_due = None;
                walk_wanted = true;
            }
            let free = self.route.in_flight.saturating_sub(self.busy.len());
            if walk_wanted && free > 0 && now >= next_walk {
                walk_wanted = false;
                let started = std::time::Instant::now();
                match self.walk(&reader, free).await {
                    Ok(pick) => {
                        next_due = pick.next_due.map(|at| self.options.clock.instant_of(at));
                        for lane in pick.start {
                            self.start_lane(lane, &reader, &done_tx);
                        }
                    }
                    Err(e) => warn!(route = %self.name, error = %e, "cannot read the delivery queue"),
                }
                next_walk = Instant::now() + (started.elapsed() * WALK_SPACING).min(self.options.refresh);
            }
            self.close_idle_transports();
            let mut wake = next_refresh.min(next_count);
            if let Some(due) = next_due {
                wake = wake.min(due);
            }
            // With every slot taken there is nothing to walk for until a lane ends (which
            // wakes the loop): waiting for `next_walk` then would spin.
            if walk_wanted && self.busy.len() < self.route.in_flight {
                wake = wake.min(next_walk);
            }
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                Some(done) = done_rx.recv() => {
                    self.lane_done(done);
                    walk_wanted = true;
                }
                () = self.queued.notified() => walk_wanted = true,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        // Stopped: let the lanes finish their attempts under way, then close everything.
        drop(done_tx);
        while !self.busy.is_empty() {
            match done_rx.recv().await {
                Some(done) => self.lane_done(done),
                None => break,
            }
        }
        for (mut transport, _) in self.idle.drain(..) {
            transport.close();
        }
        debug!(route = %self.name, "route worker stopped");
    }

    async fn open_reader(&mut self) -> Option<SharedReader> {
        loop {
            match self.queue.route(&self.name).await {
                Ok(reader) => return Some(reader),
                Err(e) => error!(route = %self.name, error = %e, "cannot read the delivery queue; retrying"),
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = tokio::time::sleep(self.options.refresh) => {}
            }
        }
    }

    /// Walks the lane heads from after the last lane started, round the end, and picks up
    /// to `free` ready lanes ([`lanes::pick`]).
    async fn walk(&mut self, reader: &SharedReader, free: usize) -> Result<lanes::Pick, StoreError> {
        let now = self.options.clock.now_micros();
        reader.pick(self.cursor.clone(), self.busy.clone(), free, now).await
    }

    fn start_lane(&mut self, lane: String, reader: &SharedReader, done: &mpsc::UnboundedSender<LaneDone>) {
        let transport = match self.idle.pop() {
            Some((transport, _)) => transport,
            None => match self.options.transports.build(&self.route) {
                Ok(transport) => transport,
                Err(why) => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        error!(route = %self.name, error = %why, "cannot build the route's transport; retrying");
                    }
                    return;
                }
            },
        };
        if let Some(event) = self.held.starting(&lane) {
            self.report(event);
        }
        self.busy.insert(lane.clone());
        self.metrics.lanes_active.set(self.busy.len() as f64);
        self.cursor = Some(lane.clone());
        let task = LaneTask {
            lease: self.queue.lease(),
            route: self.route.clone(),
            name: self.name.clone(),
            lane,
            reader: reader.clone(),
            clock: self.options.clock,
            stop: self.stop.clone(),
            metrics: self.metrics.clone(),
            failing: self.failing.clone(),
        };
        let done = done.clone();
        self.tasks.spawn(async move {
            let lane = task.lane.clone();
            let mut transport = transport;
            let ended = task.run(&mut transport).await;
            let _ = done.send(LaneDone { lane, transport, ended });
        });
    }

    fn lane_done(&mut self, done: LaneDone) {
        self.busy.remove(&done.lane);
        self.metrics.lanes_active.set(self.busy.len() as f64);
        self.idle.push((done.transport, Instant::now()));
        match done.ended {
            LaneEnd::Parked(head) => {
                if let Some(event) = self.held.parked(&done.lane, head) {
                    self.report(event);
                }
            }
            LaneEnd::LeaseLost => {
                self.metrics.leases_lost.increment(1);
                // The lane key is not named (a patient identifier under `per_patient`).
                warn!(route = %self.name, "lost the lease on a lane: stopped working it; \
                    another node sends its head again");
            }
            LaneEnd::Paused => {}
        }
    }

    fn close_idle_transports(&mut self) {
        let now = Instant::now();
        for (transport, since) in &mut self.idle {
            if now.duration_since(*since) >= IDLE_CLOSE {
                transport.close();
                // Closed: not again until it is used and idle once more.
                *since = now + Duration::from_secs(365 * 24 * 3600);
            }
        }
    }

    /// Reads the held lanes and reports what changed since the last look.
    async fn refresh_held(&mut self, reader: &SharedReader) {
        let held = reader.held_lanes().await;
        match held {
            Ok(heads) => {
                let now_held = heads.into_iter().filter(|head| !self.busy.contains(&head.lane)).map(|head| {
                    (head.lane, ParkedHead { delivery_id: head.id, message_id: head.message_id })
                });
                for event in self.held.observe(now_held) {
                    self.report(event);
                }
            }
            Err(e) => warn!(route = %self.name, error = %e, "cannot read the held lanes"),
        }
    }

    async fn count(&mut self, reader: &SharedReader) {
        match reader.open_counts().await {
            Ok(counts) => {
                self.metrics.pending.set(counts.pending as f64);
                self.metrics.parked.set(counts.parked as f64);
                let oldest = counts
                    .oldest_pending_queued_at
                    .map_or(0.0, |queued| (self.options.clock.now_micros() - queued).max(0) as f64 / 1e6);
                self.metrics.oldest_pending.set(oldest);
            }
            Err(e) => warn!(route = %self.name, error = %e, "cannot count the delivery queue"),
        }
    }

    /// One audit and log line per lane held or released. The lane key is not named: under
    /// `per_patient` it holds a patient identifier (`hl7d routes parked` shows it).
    fn report(&self, event: LaneEvent) {
        self.metrics.held_lanes.set(self.held.len() as f64);
        match event {
            LaneEvent::Held { head, .. } => warn!(target: "audit", event = "lane_held", route = %self.name,
                delivery_id = head.delivery_id, message_id = head.message_id,
                "lane held: a message was parked and the later messages of its lane wait; \
                 see `hl7d routes parked`, then `hl7d routes retry` or `skip`"),
            LaneEvent::Released { head, .. } => {
                info!(target: "audit", event = "lane_released", route = %self.name,
                delivery_id = head.delivery_id, message_id = head.message_id,
                "lane released: its parked message was retried or skipped")
            }
        }
    }
}

/// Delivers one lane's messages, one at a time.
struct LaneTask {
    /// The lease it holds the lane under; `None`: this node owns every lane.
    lease: Option<Duration>,
    route: Arc<RouteConfig>,
    name: Arc<str>,
    lane: String,
    reader: SharedReader,
    clock: Clock,
    stop: CancellationToken,
    metrics: RouteMetrics,
    failing: Arc<AtomicBool>,
}

impl LaneTask {
    /// Takes the lane, works it ([`LaneTask::work`]), gives it back.
    async fn run(&self, transport: &mut Box<dyn Transport>) -> LaneEnd {
        let sent = Instant::now();
        let hold = match self.reader.take(&self.lane).await {
            Ok(Some(hold)) => hold,
            // Another node works it.
            Ok(None) => return LaneEnd::Paused,
            Err(e) => {
                warn!(route = %self.name, error = %e, "cannot take a lane");
                return LaneEnd::Paused;
            }
        };
        let mut lease = self.lease.map(|term| {
            self.metrics.lanes_taken.increment(1);
            Lease::taken(term, sent)
        });
        let ended = self.work(&hold, &mut lease, transport).await;
        if matches!(ended, LaneEnd::LeaseLost) {
            transport.close();
        }
        if let Err(e) = self.reader.release(hold).await {
            debug!(route = %self.name, error = %e, "cannot release a lane; it is free when its lease expires");
        }
        ended
    }

    /// Delivers the lane's messages one at a time, up to [`FAIR_SHARE`] of them, while
    /// `lease` (if any) holds.
    async fn work(
        &self,
        hold: &LaneHold,
        lease: &mut Option<Lease>,
        transport: &mut Box<dyn Transport>,
    ) -> LaneEnd {
        let policy = RetryPolicy::of(&self.route);
        for _ in 0..FAIR_SHARE {
            if self.stop.is_cancelled() {
                return LaneEnd::Paused;
            }
            if lease.is_some_and(|lease| !lease.may_attempt(Instant::now())) {
                return LaneEnd::LeaseLost;
            }
            let (head, message) = match self.next().await {
                Ok(Some(next)) => next,
                Ok(None) => return LaneEnd::Paused,
                Err(e) => {
                    warn!(route = %self.name, error = %e, "cannot read the delivery queue");
                    return LaneEnd::Paused;
                }
            };
            let attempts = head.attempts + 1;
            let started = self.clock.now_micros();
            let sent = Instant::now();
            match within(lease, self.reader.claim(hold, &head, started)).await {
                Some(Ok(true)) => {
                    if let Some(lease) = lease {
                        lease.renewed(sent);
                    }
                }
                Some(Ok(false)) | None => return LaneEnd::LeaseLost,
                Some(Err(e)) => {
                    warn!(route = %self.name, error = %e, "cannot record a delivery attempt");
                    return LaneEnd::Paused;
                }
            }
            let Some(outcome) = self.attempt(hold, lease, transport, &message).await else {
                return LaneEnd::LeaseLost;
            };
            let now = self.clock.now_micros();
            let first_attempt_at = head.first_attempt_at.unwrap_or(started);
            let (result, error, response) = match outcome {
                Outcome::Delivered { response } => (Finished::Delivered, None, response),
                Outcome::Park { error, response } => (Finished::Parked, Some(error), response),
                Outcome::Retry { reason, error, response, retry_after } => {
                    let jitter = backoff::jitter(head.id, attempts);
                    match backoff::after_failure(
                        &policy,
                        attempts,
                        first_attempt_at,
                        now,
                        retry_after,
                        jitter,
                    ) {
                        AfterFailure::RetryAt(next_attempt_at) => {
                            self.metrics.retry(reason.as_str());
                            if !self.failing.swap(true, Ordering::Relaxed) {
                                warn!(route = %self.name, reason = reason.as_str(), error = %error,
                                    "deliveries failing; retrying with backoff");
                            }
                            debug!(route = %self.name, message_id = message.id, attempts, reason = reason.as_str(),
                                error = %error, retry_in_ms = (next_attempt_at - now) / 1000, "delivery attempt failed");
                            (Finished::Retry { next_attempt_at }, Some(error), response)
                        }
                        AfterFailure::Park(why) => {
                            (Finished::Parked, Some(format!("{why}: {error}")), response)
                        }
                    }
                }
            };
            let update = DeliveryUpdate::Finish {
                id: head.id,
                at: now,
                result,
                error: error.clone(),
                response: response.clone(),
            };
            // Waited for: the lane's next message goes out only once this one's outcome is
            // on disk, so a crash resends at most the message in flight.
            match self.reader.finish(hold, update).await {
                Ok(true) => {}
                // Another node holds the lane now and sends this message again.
                Ok(false) => return LaneEnd::LeaseLost,
                Err(e) => {
                    error!(route = %self.name, message_id = message.id, error = %e,
                        "cannot record a delivery outcome; the message will be sent again");
                    return LaneEnd::Paused;
                }
            }
            match result {
                Finished::Delivered => {
                    self.metrics.delivered.increment(1);
                    self.metrics.delivery_seconds.record((now - head.queued_at).max(0) as f64 / 1e6);
                    if self.failing.swap(false, Ordering::Relaxed) {
                        info!(route = %self.name, "delivering again");
                    }
                    debug!(route = %self.name, message_id = message.id, control_id = %message.control_id, attempts,
                        response = response.as_deref().unwrap_or(""), "message delivered");
                }
                Finished::Retry { .. } => return LaneEnd::Paused,
                Finished::Parked => {
                    warn!(route = %self.name, message_id = message.id, control_id = %message.control_id, attempts,
                        error = error.as_deref().unwrap_or(""), response = response.as_deref().unwrap_or(""),
                        "message parked");
                    return LaneEnd::Parked(ParkedHead { delivery_id: head.id, message_id: message.id });
                }
            }
        }
        LaneEnd::Paused
    }

    /// One attempt, while the lease (if any) holds: renewed every third of it as the
    /// attempt goes on; `None` when it ran out (or was taken) first, the attempt abandoned
    /// ([`super::lease`]: the holder stops a third of the lease before anyone may take
    /// the lane).
    async fn attempt(
        &self,
        hold: &LaneHold,
        lease: &mut Option<Lease>,
        transport: &mut Box<dyn Transport>,
        message: &Outbound,
    ) -> Option<Outcome> {
        let Some(lease) = lease else {
            return Some(transport.deliver(message).await);
        };
        let attempt = transport.deliver(message);
        tokio::pin!(attempt);
        loop {
            match lease.next_step(Instant::now()) {
                LeaseStep::Lost => return None,
                LeaseStep::Hold { until } => tokio::select! {
                    outcome = &mut attempt => return Some(outcome),
                    () = tokio::time::sleep_until(until) => {}
                },
                LeaseStep::Renew => {
                    let sent = Instant::now();
                    let renew = self.reader.renew(hold);
                    tokio::pin!(renew);
                    tokio::select! {
                        outcome = &mut attempt => return Some(outcome),
                        () = tokio::time::sleep_until(lease.good_until()) => return None,
                        renewed = &mut renew => match renewed {
                            Ok(true) => lease.renewed(sent),
                            Ok(false) => return None,
                            Err(e) => {
                                warn!(route = %self.name, error = %e, "cannot renew a lane's lease; trying again");
                                let again = (Instant::now() + RENEW_RETRY).min(lease.good_until());
                                tokio::select! {
                                    outcome = &mut attempt => return Some(outcome),
                                    () = tokio::time::sleep_until(again) => {}
                                }
                            }
                        },
                    }
                }
            }
        }
    }

    /// The lane's head and its message, when it is due now.
    async fn next(&self) -> Result<Option<(LaneHead, Outbound)>, StoreError> {
        self.reader.next(&self.lane, self.clock.now_micros()).await
    }
}
