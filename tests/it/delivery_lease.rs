//! The engine's side of leases (issue 16), on tokio's paused clock with a queue in memory:
//! a node cut off from the database (its renewals never answered) abandons the attempt
//! under way two thirds into its lease — before any other node may take the lane — records
//! nothing, and sends nothing more on that lane.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hl7_proto::charset::Charset;
use hl7d::config::{Config, RouteConfig};
use hl7d::delivery::engine::{Clock, Engine, EngineOptions, TransportFactory};
use hl7d::delivery::lanes::Pick;
use hl7d::delivery::queue::{DeliveryQueue, LaneHold, RouteQueue};
use hl7d::delivery::{BoxFuture, Outbound, Outcome, Transport};
use hl7d::store::queue::{DeliveryState, DeliveryUpdate, LaneHead, OpenCounts};
use hl7d::store::StoreError;
use tokio::time::Instant;

const LEASE: Duration = Duration::from_secs(30);

/// What the engine did, with tokio's (paused) instants.
#[derive(Default)]
struct Seen {
    taken: usize,
    claims: Vec<Instant>,
    renewals: Vec<Instant>,
    finishes: usize,
    released: Vec<i64>,
    attempts: Vec<Instant>,
    abandoned: Vec<Instant>,
}

/// One lane `L` with one message; renewals are never answered (the database is out of
/// reach); every other call is.
struct CutOff(Arc<Mutex<Seen>>);

impl DeliveryQueue for CutOff {
    fn route(&self, _route: &str) -> BoxFuture<'_, Result<Arc<dyn RouteQueue>, StoreError>> {
        let queue: Arc<dyn RouteQueue> = Arc::new(CutOff(self.0.clone()));
        Box::pin(std::future::ready(Ok(queue)))
    }

    fn lease(&self) -> Option<Duration> {
        Some(LEASE)
    }
}

fn head() -> LaneHead {
    LaneHead {
        id: 1,
        lane: "L".into(),
        message_id: 1,
        state: DeliveryState::Pending,
        attempts: 0,
        queued_at: 0,
        next_attempt_at: 0,
        first_attempt_at: None,
    }
}

impl RouteQueue for CutOff {
    fn pick(
        &self,
        _cursor: Option<String>,
        busy: std::collections::HashSet<String>,
        _free: usize,
        _now: i64,
    ) -> BoxFuture<'_, Result<Pick, StoreError>> {
        // Offered until this node took it once (afterwards another node holds it).
        let start =
            if self.0.lock().unwrap().taken == 0 && !busy.contains("L") { vec!["L".into()] } else { vec![] };
        Box::pin(std::future::ready(Ok(Pick { start, next_due: None, walked: 1 })))
    }

    fn take(&self, lane: &str) -> BoxFuture<'_, Result<Option<LaneHold>, StoreError>> {
        self.0.lock().unwrap().taken += 1;
        Box::pin(std::future::ready(Ok(Some(LaneHold { lane: lane.to_owned(), token: 7 }))))
    }

    fn renew<'a>(&'a self, _hold: &'a LaneHold) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.0.lock().unwrap().renewals.push(Instant::now());
        Box::pin(std::future::pending())
    }

    fn release(&self, hold: LaneHold) -> BoxFuture<'_, Result<(), StoreError>> {
        self.0.lock().unwrap().released.push(hold.token);
        Box::pin(std::future::ready(Ok(())))
    }

    fn next(
        &self,
        _lane: &str,
        _now: i64,
    ) -> BoxFuture<'_, Result<Option<(LaneHead, Outbound)>, StoreError>> {
        let message = Outbound {
            id: 1,
            listener: Arc::from("lab"),
            control_id: "C1".into(),
            message_type: "ADT^A01".into(),
            charset: Charset::Utf8,
            received_at: SystemTime::now(),
            raw: bytes::Bytes::from_static(b"MSH|^~\\&|A|B|||1||ADT^A01|C1|P|2.5\r"),
        };
        Box::pin(std::future::ready(Ok(Some((head(), message)))))
    }

    fn claim<'a>(
        &'a self,
        _hold: &'a LaneHold,
        _head: &'a LaneHead,
        _at: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.0.lock().unwrap().claims.push(Instant::now());
        Box::pin(std::future::ready(Ok(true)))
    }

    fn finish<'a>(
        &'a self,
        _hold: &'a LaneHold,
        _update: DeliveryUpdate,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.0.lock().unwrap().finishes += 1;
        Box::pin(std::future::ready(Ok(true)))
    }

    fn held_lanes(&self) -> BoxFuture<'_, Result<Vec<LaneHead>, StoreError>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn open_counts(&self) -> BoxFuture<'_, Result<OpenCounts, StoreError>> {
        Box::pin(std::future::ready(Ok(OpenCounts::default())))
    }
}

/// A downstream that never answers; records when an attempt starts and when it is dropped.
struct Silent(Arc<Mutex<Seen>>);

struct DropMark(Arc<Mutex<Seen>>);

impl Drop for DropMark {
    fn drop(&mut self) {
        self.0.lock().unwrap().abandoned.push(Instant::now());
    }
}

impl Transport for Silent {
    fn deliver<'a>(&'a mut self, _message: &'a Outbound) -> BoxFuture<'a, Outcome> {
        let seen = self.0.clone();
        Box::pin(async move {
            seen.lock().unwrap().attempts.push(Instant::now());
            let _mark = DropMark(seen);
            std::future::pending().await
        })
    }
}

struct SilentFactory(Arc<Mutex<Seen>>);

impl TransportFactory for SilentFactory {
    fn build(&self, _route: &RouteConfig) -> Result<Box<dyn Transport>, String> {
        Ok(Box::new(Silent(self.0.clone())))
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_cut_off_from_the_database_abandons_its_attempt_two_thirds_into_the_lease() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let text = "[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\
                [[route]]\nname = \"r\"\nto = \"file:///unused\"\nack_timeout = \"30s\"\n";
    let route = Config::from_toml_str(text).unwrap().routes.remove(0);
    let options = EngineOptions {
        clock: Clock::tokio(),
        transports: Arc::new(SilentFactory(seen.clone())),
        ..EngineOptions::default()
    };
    let engine = Engine::with_queue(Arc::new(CutOff(seen.clone())), Engine::table(), options);
    engine.start(&[route]).unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    engine.stop();
    assert!(engine.wait(Duration::from_secs(5)).await);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.taken, 1);
    assert_eq!(seen.claims.len(), 1, "one claim (which renews the lease)");
    assert_eq!(seen.attempts.len(), 1, "nothing more sent on the lane");
    let claimed = seen.claims[0];
    // A renewal every third of the lease (none answered), and the attempt abandoned at two
    // thirds: a third before the database would let another node take the lane.
    assert_eq!(seen.renewals.first().map(|at| *at - claimed), Some(LEASE / 3));
    assert_eq!(seen.abandoned.len(), 1);
    assert_eq!(seen.abandoned[0] - claimed, LEASE * 2 / 3);
    assert_eq!(seen.finishes, 0, "no outcome recorded for an abandoned attempt");
    assert_eq!(seen.released, [7], "the lane given back with its token");
}
