//! Delivery across nodes (issue 16) on a real PostgreSQL: two engines ("nodes", each with
//! its own pool and runtime) on one database. Each lane is delivered by one node at a
//! time, in order; a node that stops abruptly (its runtime dropped: no lease released)
//! has its lanes taken over once its leases expire. Skipped loudly without
//! `HL7D_TEST_PG_URL` (a failure under CI).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hl7_proto::keys::LaneOrder;
use hl7d::config::{Config, RouteConfig};
use hl7d::delivery::engine::{Engine, EngineOptions, TransportFactory};
use hl7d::delivery::queue::postgres::{holders, PgQueue};
use hl7d::delivery::{BoxFuture, Outbound, Outcome, Transport};
use hl7d::store::postgres::connect;
use hl7d::store::queue::{QueueRoute, RouteTable};
use hl7d::store::{MessageStore, PgOptions, PgStore};

use crate::pg_store::{accepted, adt, new_message, pg_config};
use crate::support::pg::TestDb;

/// What the downstream saw, shared by both nodes' transports.
#[derive(Default)]
pub(crate) struct Downstream {
    /// Every attempt that completed as delivered: (node, lane, control id), in order.
    pub(crate) delivered: Mutex<Vec<(String, String, String)>>,
    /// Attempts under way per lane: more than one at once is a violation.
    on_lane: Mutex<HashMap<String, usize>>,
    violations: Mutex<Vec<String>>,
    /// Lanes whose next attempt hangs for ever on this node (a node stuck mid-attempt).
    hang: Mutex<Option<(String, Vec<String>)>>,
}

/// The lane of a test message: its patient, read from the bytes (`PID|1||P3^^^HOSP`).
fn patient_of(message: &Outbound) -> String {
    let text = String::from_utf8_lossy(&message.raw);
    text.split("PID|1||").nth(1).and_then(|rest| rest.split('^').next()).unwrap_or("?").to_owned()
}

struct Recording {
    node: String,
    downstream: Arc<Downstream>,
}

impl Transport for Recording {
    fn deliver<'a>(&'a mut self, message: &'a Outbound) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let lane = patient_of(message);
            {
                let mut on_lane = self.downstream.on_lane.lock().unwrap();
                let count = on_lane.entry(lane.clone()).or_default();
                *count += 1;
                if *count > 1 {
                    self.downstream
                        .violations
                        .lock()
                        .unwrap()
                        .push(format!("two attempts at once on {lane}"));
                }
            }
            let hangs = self
                .downstream
                .hang
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|(node, lanes)| *node == self.node && lanes.contains(&lane));
            if hangs {
                // Never answers; the count stays: this node is "dead" from here on.
                return std::future::pending().await;
            }
            // A little work, so that attempts on different nodes overlap in time.
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.downstream.on_lane.lock().unwrap().entry(lane.clone()).and_modify(|count| *count -= 1);
            self.downstream.delivered.lock().unwrap().push((
                self.node.clone(),
                lane,
                message.control_id.clone(),
            ));
            Outcome::Delivered { response: Some("AA".into()) }
        })
    }
}

struct Factory {
    node: String,
    downstream: Arc<Downstream>,
}

impl TransportFactory for Factory {
    fn build(&self, _route: &RouteConfig) -> Result<Box<dyn Transport>, String> {
        Ok(Box::new(Recording { node: self.node.clone(), downstream: self.downstream.clone() }))
    }
}

fn route_config(in_flight: usize) -> RouteConfig {
    let text = format!(
        "[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\
         [[route]]\nname = \"r\"\nto = \"file:///unused\"\nin_flight = {in_flight}\nretry_initial = \"100ms\"\n"
    );
    Config::from_toml_str(&text).unwrap().routes.remove(0)
}

/// One node: its own runtime (a thread), pool and engine. Dropping the runtime kills it
/// without releasing anything, as SIGKILL would.
pub(crate) struct Node {
    runtime: Option<tokio::runtime::Runtime>,
    engine: Engine,
}

impl Node {
    pub(crate) fn start(
        name: &str,
        url: &str,
        lease: Duration,
        downstream: &Arc<Downstream>,
        in_flight: usize,
    ) -> Node {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let pool = connect::pool(&pg_config(url)).unwrap();
        let options = EngineOptions {
            transports: Arc::new(Factory { node: name.to_owned(), downstream: downstream.clone() }),
            ..EngineOptions::default()
        };
        let engine = runtime.block_on(async {
            let engine =
                Engine::with_queue(Arc::new(PgQueue::new(pool, name, lease)), Engine::table(), options);
            engine.start(&[route_config(in_flight)]).unwrap();
            engine
        });
        Node { runtime: Some(runtime), engine }
    }

    /// Stops as `hl7d serve` does at SIGTERM: attempts finish, leases are released.
    pub(crate) fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let engine = self.engine.clone();
            runtime.block_on(async move {
                engine.stop();
                engine.wait(Duration::from_secs(10)).await;
            });
        }
    }

    /// Dies: every task dropped where it stands, nothing released.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The store the "listeners" write to: route `r`, per patient. Its writer only queues.
pub(crate) async fn ingest_store(url: &str) -> PgStore {
    let table = RouteTable::new(vec![QueueRoute {
        name: Arc::from("r"),
        listeners: None,
        message_types: Vec::new(),
        order: LaneOrder::PerPatient,
        queued: Arc::default(),
    }]);
    let options = PgOptions { routes: Some(Arc::new(ArcSwap::from_pointee(table))), ..PgOptions::default() };
    PgStore::open(&pg_config(url), options).await.unwrap()
}

async fn append(store: &PgStore, n: usize, patients: usize) -> BTreeMap<String, Vec<String>> {
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let appends: Vec<_> = (0..n)
        .map(|i| {
            let (control_id, patient) = (format!("M{i:05}"), format!("P{}", i % patients));
            expected.entry(patient.clone()).or_default().push(control_id.clone());
            store.append(new_message(&adt(&control_id, &patient), accepted(None)))
        })
        .collect();
    for append in appends {
        append.await.unwrap();
    }
    expected
}

/// Per lane (patient), the control ids in queue order (the order the store gave the
/// delivery rows): the order each lane must be delivered in.
async fn queue_order(db: &TestDb) -> BTreeMap<String, Vec<String>> {
    let rows = db
        .client()
        .await
        .query(
            "SELECT d.lane, m.control_id FROM deliveries d JOIN messages m ON m.id = d.message_id ORDER BY d.id",
            &[],
        )
        .await
        .unwrap();
    let mut lanes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let lane: String = row.get(0);
        let patient = lane.rsplit('/').next().unwrap().to_owned();
        lanes.entry(patient).or_default().push(row.get(1));
    }
    lanes
}

async fn delivered_rows(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM deliveries WHERE state = 'delivered'", &[])
        .await
        .unwrap()
        .get(0)
}

/// Per lane, the control ids in the order the downstream first took them; checks that a
/// repeat only ever repeats the lane's latest message (at least once, never out of order).
fn lane_order(delivered: &[(String, String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut lanes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, lane, control_id) in delivered {
        let seen = lanes.entry(lane.clone()).or_default();
        if seen.last() != Some(control_id) {
            assert!(
                !seen.contains(control_id),
                "{control_id} of {lane} again after later messages: {seen:?}"
            );
            seen.push(control_id.clone());
        }
    }
    lanes
}

/// Two nodes on one database deliver a stream of several lanes: every message at least
/// once, each lane in order, never two attempts at once on one lane; both take part.
#[test]
fn two_nodes_deliver_each_lane_in_order_and_never_at_once() {
    let setup = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(db) = setup.block_on(TestDb::create("two_nodes_deliver_each_lane_in_order")) else { return };
    let store = setup.block_on(ingest_store(&db.url));
    let downstream = Arc::new(Downstream::default());
    let lease = Duration::from_secs(5);
    let mut a = Node::start("node-a", &db.url, lease, &downstream, 3);
    let mut b = Node::start("node-b", &db.url, lease, &downstream, 3);
    let (n, patients) = (600, 12);
    let stored = setup.block_on(append(&store, n, patients));
    let expected = setup.block_on(queue_order(&db));
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), stored.values().map(Vec::len).sum::<usize>());
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.block_on(delivered_rows(&db)) < n as i64 {
        assert!(Instant::now() < deadline, "{} of {n} delivered", setup.block_on(delivered_rows(&db)));
        std::thread::sleep(Duration::from_millis(50));
    }
    a.stop();
    b.stop();
    let delivered = downstream.delivered.lock().unwrap().clone();
    assert_eq!(downstream.violations.lock().unwrap().as_slice(), &[] as &[String]);
    assert_eq!(lane_order(&delivered), expected, "every message, each lane in order");
    let by_a = delivered.iter().filter(|(node, ..)| node == "node-a").count();
    let by_b = delivered.len() - by_a;
    eprintln!(
        "two nodes: {} attempts delivered for {n} messages; node-a {by_a}, node-b {by_b}",
        delivered.len()
    );
    assert!(by_a > 0 && by_b > 0, "both nodes deliver: a {by_a}, b {by_b}");
    // Stopped gracefully: no lease left behind.
    let left: i64 = setup.block_on(async {
        db.client().await.query_one("SELECT count(*) FROM delivery_leases", &[]).await.unwrap().get(0)
    });
    assert_eq!(left, 0);
    setup.block_on(store.close());
}

/// A node stuck mid-attempt on two lanes, then killed (its runtime dropped: no lease
/// released, no outcome written): the other node takes those lanes only once their leases
/// expired, resends the message in flight, and goes on in order.
#[test]
fn a_dead_nodes_lanes_are_taken_over_after_its_lease_expires() {
    let setup = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(db) = setup.block_on(TestDb::create("a_dead_nodes_lanes_are_taken_over")) else { return };
    let store = setup.block_on(ingest_store(&db.url));
    let downstream = Arc::new(Downstream::default());
    let lease = Duration::from_secs(2);
    *downstream.hang.lock().unwrap() = Some(("node-a".into(), vec!["P0".into(), "P1".into()]));
    let mut a = Node::start("node-a", &db.url, lease, &downstream, 2);
    setup.block_on(append(&store, 40, 4));
    let expected = setup.block_on(queue_order(&db));
    // Wait until node-a holds P0 and P1 (stuck in their first attempt).
    let client = setup.block_on(db.client());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let held = setup.block_on(holders(&client, "r")).unwrap();
        if held == [("node-a".to_owned(), vec!["patient/FAC/P0".to_owned(), "patient/FAC/P1".to_owned()])] {
            break;
        }
        assert!(Instant::now() < deadline, "node-a never held P0 and P1: {held:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Renewals go on while it is stuck: still held after more than a lease.
    std::thread::sleep(lease + Duration::from_millis(500));
    assert_eq!(
        setup.block_on(holders(&client, "r")).unwrap().len(),
        1,
        "node-a renews while its attempts go on"
    );
    a.kill();
    let killed = Instant::now();
    // Its stuck attempts never finish; clear them from the downstream's bookkeeping.
    downstream.on_lane.lock().unwrap().clear();
    let mut b = Node::start("node-b", &db.url, lease, &downstream, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_takeover = None;
    while setup.block_on(delivered_rows(&db)) < 40 {
        if first_takeover.is_none()
            && downstream
                .delivered
                .lock()
                .unwrap()
                .iter()
                .any(|(node, lane, _)| node == "node-b" && lane == "P0")
        {
            first_takeover = Some(killed.elapsed());
        }
        assert!(Instant::now() < deadline, "{} of 40 delivered", setup.block_on(delivered_rows(&db)));
        std::thread::sleep(Duration::from_millis(20));
    }
    let takeover = first_takeover.unwrap_or_else(|| killed.elapsed());
    eprintln!("takeover of a dead node's lane: {takeover:?} after the kill (lease {lease:?})");
    // Not before the lease could have expired (renewed at most a third of it before the
    // kill), and within lease + 10 s.
    assert!(takeover >= lease * 2 / 3 - Duration::from_millis(100), "taken over too early: {takeover:?}");
    assert!(takeover <= lease + Duration::from_secs(10), "taken over too late: {takeover:?}");
    b.stop();
    let delivered = downstream.delivered.lock().unwrap().clone();
    assert_eq!(downstream.violations.lock().unwrap().as_slice(), &[] as &[String]);
    assert_eq!(lane_order(&delivered), expected);
    for lane in ["P0", "P1"] {
        assert!(
            delivered.iter().all(|(node, l, _)| l != lane || node == "node-b"),
            "{lane} went on only on node-b"
        );
    }
    setup.block_on(store.close());
}

/// The lease rows themselves, from two nodes' queues on one database: one node takes a
/// lane, the other cannot until the lease expired; the takeover draws a new token, and
/// the old holder can then renew, claim, record and release nothing.
#[tokio::test]
async fn a_lane_is_taken_by_one_node_and_an_expired_lease_fences_its_old_holder() {
    use hl7d::delivery::queue::DeliveryQueue;
    use hl7d::store::queue::{DeliveryUpdate, Finished};

    let Some(db) = TestDb::create("a_lane_is_taken_by_one_node").await else { return };
    let store = ingest_store(&db.url).await;
    append(&store, 2, 1).await;
    let lease = Duration::from_secs(1);
    let a =
        PgQueue::new(connect::pool(&pg_config(&db.url)).unwrap(), "node-a", lease).route("r").await.unwrap();
    let b =
        PgQueue::new(connect::pool(&pg_config(&db.url)).unwrap(), "node-b", lease).route("r").await.unwrap();
    let lane = "patient/FAC/P0";

    let held = a.take(lane).await.unwrap().expect("a free lane is taken");
    assert_eq!(b.take(lane).await.unwrap(), None, "held: not taken by another node");
    assert!(a.renew(&held).await.unwrap());
    let (head, _) = a.next(lane, i64::MAX).await.unwrap().unwrap();
    assert!(a.claim(&held, &head, 1).await.unwrap());
    let pick = b.pick(None, Default::default(), 4, i64::MAX).await.unwrap();
    assert!(pick.start.is_empty(), "another node's lane is not picked: {pick:?}");

    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let pick = b.pick(None, Default::default(), 4, i64::MAX).await.unwrap();
    assert_eq!(pick.start, [lane], "an expired lease's lane is picked");
    let taken = b.take(lane).await.unwrap().expect("an expired lease is taken over");
    assert_ne!(taken.token, held.token, "a new token");
    assert_eq!(a.take(lane).await.unwrap(), None);
    // The old holder is fenced.
    assert!(!a.renew(&held).await.unwrap());
    assert!(!a.claim(&held, &head, 2).await.unwrap());
    let outcome =
        |id| DeliveryUpdate::Finish { id, at: 3, result: Finished::Delivered, error: None, response: None };
    assert!(!a.finish(&held, outcome(head.id)).await.unwrap());
    a.release(held).await.unwrap();
    // The new holder goes on from the head the old one never finished.
    let (again, _) = b.next(lane, i64::MAX).await.unwrap().unwrap();
    assert_eq!(again.id, head.id);
    assert!(b.claim(&taken, &again, 4).await.unwrap());
    assert!(b.finish(&taken, outcome(again.id)).await.unwrap());
    b.release(taken).await.unwrap();
    assert!(a.take(lane).await.unwrap().is_some(), "released: free at once");
    store.close().await;
}
