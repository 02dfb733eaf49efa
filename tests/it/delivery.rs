//! Delivery (issue 15): the queue, the engine and the file transport.
//!
//! In process: a real listener and SQLite store, the engine with a scripted transport that
//! answers each attempt as the test says (delivered, retry, park) and records what it was
//! given. As a child process: `hl7d serve` with a file route, reloaded by SIGHUP, killed
//! and restarted. Operators' actions are made as `hl7d routes retry|skip` make them: a
//! direct update of the rows from another connection.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hl7d::config::{Config, RouteConfig};
use hl7d::delivery::engine::{Engine, EngineOptions, TransportFactory};
use hl7d::delivery::{BoxFuture, Outbound, Outcome, RetryReason, Transport};
use hl7d::listener::Server;
use hl7d::store::{MessageStore, SqliteOptions, SqliteStore, DATABASE_FILE};
use rusqlite::Connection;
use tokio::net::TcpStream;

use crate::support::*;

/// An ADT^A01 for `patient` (PID-3) with control id `control_id`, from LAB/FAC.
fn adt(control_id: &str, patient: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ADT^A01^ADT_A01|{control_id}|P|2.5\rPID|1||{patient}^^^HOSP\r"
    )
    .into_bytes()
}

/// Sends one message and expects AA.
async fn accepted(conn: &mut TcpStream, payload: &[u8]) {
    send(conn, payload).await;
    let (code, _) = msa(&read_frame(conn).await);
    assert_eq!(code, "AA");
}

/// What the scripted downstream answers and saw.
#[derive(Default)]
struct Script {
    /// Outcomes to give, per control id, in order; then `Delivered`.
    plan: Mutex<HashMap<String, VecDeque<Answer>>>,
    /// Every attempt: control id and when (tokio's clock, paused or not).
    attempts: Mutex<Vec<(String, tokio::time::Instant)>>,
    /// Control ids answered `Delivered`, in order.
    delivered: Mutex<Vec<String>>,
    /// When set, each attempt also reads the store: the delay the engine chose after the
    /// previous attempt (`next_attempt_at - last_attempt_at` of the row, micros).
    store_dir: Mutex<Option<PathBuf>>,
    chosen_delays: Mutex<Vec<i64>>,
}

#[derive(Clone)]
enum Answer {
    Give(Outcome),
    /// Never answer (an attempt cut off by a stop).
    Hang,
}

impl Script {
    fn plan(&self, control_id: &str, answers: impl IntoIterator<Item = Answer>) {
        self.plan.lock().unwrap().entry(control_id.to_owned()).or_default().extend(answers);
    }

    fn delivered(&self) -> Vec<String> {
        self.delivered.lock().unwrap().clone()
    }

    fn attempts_of(&self, control_id: &str) -> Vec<tokio::time::Instant> {
        self.attempts.lock().unwrap().iter().filter(|(id, _)| id == control_id).map(|(_, at)| *at).collect()
    }

    async fn wait_delivered(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let delivered = self.delivered();
            if delivered.len() >= n {
                return delivered;
            }
            assert!(Instant::now() < deadline, "only {delivered:?} delivered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn retry(error: &str) -> Answer {
    Answer::Give(Outcome::Retry {
        reason: RetryReason::Io,
        error: error.into(),
        response: None,
        retry_after: None,
    })
}

fn park(error: &str) -> Answer {
    Answer::Give(Outcome::Park { error: error.into(), response: Some("AR".into()) })
}

struct Scripted(Arc<Script>);

impl Transport for Scripted {
    fn deliver<'a>(&'a mut self, message: &'a Outbound) -> BoxFuture<'a, Outcome> {
        let script = self.0.clone();
        Box::pin(async move {
            let id = message.control_id.clone();
            script.attempts.lock().unwrap().push((id.clone(), tokio::time::Instant::now()));
            let store_dir = script.store_dir.lock().unwrap().clone();
            if let Some(dir) = store_dir {
                let delay: Option<i64> = Connection::open(dir.join(DATABASE_FILE))
                    .unwrap()
                    .query_row(
                        "SELECT next_attempt_at - last_attempt_at FROM deliveries WHERE message_id = ?1",
                        [message.id],
                        |r| r.get(0),
                    )
                    .unwrap();
                script.chosen_delays.lock().unwrap().extend(delay);
            }
            let answer = script.plan.lock().unwrap().get_mut(&id).and_then(VecDeque::pop_front);
            let outcome = match answer {
                Some(Answer::Give(outcome)) => outcome,
                Some(Answer::Hang) => std::future::pending().await,
                None => Outcome::Delivered { response: Some("AA".into()) },
            };
            if matches!(outcome, Outcome::Delivered { .. }) {
                script.delivered.lock().unwrap().push(id);
            }
            outcome
        })
    }
}

struct ScriptedFactory(Arc<Script>);

impl TransportFactory for ScriptedFactory {
    fn build(&self, _route: &RouteConfig) -> Result<Box<dyn Transport>, String> {
        Ok(Box::new(Scripted(self.0.clone())))
    }
}

/// A listener `lab`, a store in `dir/data`, and the engine running route `r` (its table
/// from `route`, which the scripted transport serves whatever its `to`).
struct Harness {
    store_dir: PathBuf,
    store: Arc<SqliteStore>,
    server: Option<Server>,
    engine: Engine,
    script: Arc<Script>,
}

impl Harness {
    async fn start(dir: &Path, route: &str, script: Arc<Script>) -> Harness {
        Harness::named(dir, "r", route, script).await
    }

    async fn named(dir: &Path, name: &str, route: &str, script: Arc<Script>) -> Harness {
        let text = format!(
            "[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\
             [[route]]\nname = \"{name}\"\nto = \"file:///unused\"\n{route}\n"
        );
        let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let store_dir = dir.join("data");
        let table = Engine::table();
        let options = SqliteOptions { routes: Some(table.clone()), ..SqliteOptions::default() };
        let store = Arc::new(SqliteStore::open(&store_dir, options).unwrap());
        let options = EngineOptions {
            transports: Arc::new(ScriptedFactory(script.clone())),
            ..EngineOptions::default()
        };
        let engine = Engine::new(store.clone(), &store_dir, table, options);
        engine.start(&config.routes).unwrap();
        let server = Server::start(&config, store.clone() as Arc<dyn MessageStore>).await.unwrap();
        Harness { store_dir, store, server: Some(server), engine, script }
    }

    async fn connect(&self) -> TcpStream {
        connect_nodelay(self.server.as_ref().unwrap().local_addr("lab").unwrap()).await.unwrap()
    }

    fn db(&self) -> Connection {
        Connection::open(self.store_dir.join(DATABASE_FILE)).unwrap()
    }

    /// `(control id, state, attempts)` of every delivery row, in queue order.
    fn rows(&self) -> Vec<(String, String, i64)> {
        rows(&self.store_dir)
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(WAIT).await;
        }
        self.engine.stop();
        assert!(self.engine.wait(WAIT).await, "the engine stops");
        self.store.close();
    }
}

fn rows(store_dir: &Path) -> Vec<(String, String, i64)> {
    let conn = Connection::open(store_dir.join(DATABASE_FILE)).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT m.control_id, d.state, d.attempts FROM deliveries d JOIN messages m ON m.id = d.message_id \
             ORDER BY d.id",
        )
        .unwrap();
    statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Waits (bounded) until `check` holds; the script sees an outcome a moment before the
/// engine has committed it.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every delivery row of the harness's store is in a final state.
async fn settled(store_dir: &Path) -> Vec<(String, String, i64)> {
    eventually("every row delivered, parked or skipped", || {
        rows(store_dir)
            .iter()
            .all(|(_, state, _)| matches!(state.as_str(), "delivered" | "parked" | "skipped"))
    })
    .await;
    rows(store_dir)
}

fn now_micros() -> i64 {
    hl7d::store::micros(std::time::SystemTime::now())
}

/// Backoff and `park_after` on tokio's paused clock: a downstream that always fails, with
/// `retry_initial = "1s"`, `retry_max = "1m"`, `park_after = "10m"`. Each delay the engine
/// chooses (read from the row at the next attempt) is between half of and all of 1 s, 2 s,
/// 4 s … 1 min, no attempt comes before its delay, and the message is parked at the first
/// failure ten minutes after the first attempt: ten minutes of backoff in a test that takes
/// milliseconds. (While the engine waits for the store's writer thread, in real time, the
/// paused clock may jump to the engine's next timer: attempts can come late, never early.)
#[tokio::test(start_paused = true)]
async fn backoff_doubles_to_retry_max_and_parks_after_park_after_on_a_paused_clock() {
    use hl7_proto::ack::AckCode;
    use hl7_proto::charset::Charset;
    use hl7d::delivery::engine::Clock;
    use hl7d::store::{Disposition, KeyFields, NewMessage};

    let tmp = tempdir("delivery-paused");
    let script = Arc::new(Script::default());
    script.plan("A1", std::iter::repeat_n(retry("connection refused"), 1000));
    let text = "[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\
                [[route]]\nname = \"r\"\nto = \"file:///unused\"\n\
                retry_initial = \"1s\"\nretry_max = \"1m\"\npark_after = \"10m\"\n";
    let config = Config::from_toml_str(text).unwrap();
    let store_dir = tmp.path().join("data");
    let table = Engine::table();
    let options = SqliteOptions { routes: Some(table.clone()), ..SqliteOptions::default() };
    let store = Arc::new(SqliteStore::open(&store_dir, options).unwrap());
    *script.store_dir.lock().unwrap() = Some(store_dir.clone());
    let options = EngineOptions {
        clock: Clock::tokio(),
        transports: Arc::new(ScriptedFactory(script.clone())),
        ..EngineOptions::default()
    };
    let engine = Engine::new(store.clone(), &store_dir, table, options);
    engine.start(&config.routes).unwrap();
    let raw = adt("A1", "A");
    let message = NewMessage {
        listener: Arc::from("lab"),
        peer: "127.0.0.1:40000".parse().unwrap(),
        client_thumbprint: None,
        received_at: std::time::SystemTime::now(),
        charset: Charset::Utf8,
        message_type: "ADT^A01".into(),
        control_id: "A1".into(),
        sending_application: "LAB".into(),
        sending_facility: "FAC".into(),
        processing_id: "P".into(),
        version: "2.5".into(),
        ack_code: Some(AckCode::ApplicationAccept),
        disposition: Disposition::Accepted { duplicate_window: None },
        fields: KeyFields::extract(&raw, Charset::Utf8),
        raw: bytes::Bytes::from(raw),
    };
    store.append(message).await.unwrap();

    let started = tokio::time::Instant::now();
    loop {
        let parked = rows(&store_dir).iter().any(|(_, state, _)| state == "parked");
        if parked {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "not parked: {:?}", rows(&store_dir));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let attempts = script.attempts_of("A1");
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    let chosen = script.chosen_delays.lock().unwrap().clone();
    assert_eq!(chosen.len(), gaps.len(), "one chosen delay before each attempt after the first");
    for (i, (delay, gap)) in chosen.iter().zip(&gaps).enumerate() {
        let nominal = (1_000_000i64 << i.min(6)).min(60_000_000);
        assert!(
            (nominal / 2..=nominal).contains(delay),
            "delay {i}: {delay} µs for {nominal} µs ({chosen:?})"
        );
        assert!(gap.as_micros() as i64 >= *delay - 1000, "attempt {} came before its delay", i + 1);
    }
    assert!(chosen.iter().filter(|d| **d > 30_000_000).count() >= 3, "reached retry_max: {chosen:?}");
    let failing_for = *attempts.last().unwrap() - attempts[0];
    assert!(failing_for >= Duration::from_secs(600), "parked after {failing_for:?}");
    assert!(attempts.len() <= 30, "{} attempts: {chosen:?}", attempts.len());
    let error: String = Connection::open(store_dir.join(DATABASE_FILE))
        .unwrap()
        .query_row("SELECT last_error FROM deliveries", [], |r| r.get(0))
        .unwrap();
    // "still failing after 10m 2s 1ms (17 attempts); …" (later when the clock jumped).
    assert!(
        error.starts_with("still failing after ")
            && error.ends_with("; park_after is 10m: connection refused"),
        "{error}"
    );
    engine.stop();
    assert!(engine.wait(WAIT).await);
    store.close();
}

/// Every message reaches the downstream once, each patient's in the order stored, lanes
/// side by side; a duplicate the store suppressed and a refused message are not delivered.
#[tokio::test]
async fn messages_are_delivered_once_in_lane_order() {
    let tmp = tempdir("delivery-order");
    let h = Harness::start(tmp.path(), "in_flight = 2", Arc::default()).await;
    let mut conn = h.connect().await;
    let mut sent = Vec::new();
    for n in 0..5 {
        for patient in ["A", "B", "C"] {
            let id = format!("{patient}{n}");
            accepted(&mut conn, &adt(&id, patient)).await;
            sent.push(id);
        }
    }
    // A resend of A0 (the store's duplicate) and a message refused (no MSH-9).
    accepted(&mut conn, &adt("A0", "A")).await;
    send(&mut conn, b"MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128|||BAD|P|2.5\r").await;
    assert_eq!(msa(&read_frame(&mut conn).await).0, "AR");

    let delivered = h.script.wait_delivered(15).await;
    for patient in ["A", "B", "C"] {
        let lane: Vec<&String> = delivered.iter().filter(|id| id.starts_with(patient)).collect();
        let expected: Vec<String> = (0..5).map(|n| format!("{patient}{n}")).collect();
        assert_eq!(lane, expected.iter().collect::<Vec<_>>(), "lane {patient} in order");
    }
    let rows = settled(&h.store_dir).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.script.delivered().len(), 15, "nothing twice: {:?}", h.script.delivered());
    assert_eq!(rows.len(), 15);
    assert!(rows.iter().all(|(_, state, attempts)| state == "delivered" && *attempts == 1), "{rows:?}");
    let response: String =
        h.db().query_row("SELECT response FROM deliveries WHERE id = 1", [], |r| r.get(0)).unwrap();
    assert_eq!(response, "AA");
    h.stop().await;
}

/// A failed attempt is retried after the backoff (200 ms, then 400 ms, each at least half
/// of that with jitter) and then delivered; the lane's next message waits for it while
/// another lane goes on; the retries are counted by reason.
#[tokio::test]
async fn a_failed_attempt_is_retried_with_backoff_then_delivered() {
    hl7d::metrics::install();
    let tmp = tempdir("delivery-retry");
    let script = Arc::new(Script::default());
    script.plan("A1", [retry("connection refused"), retry("connection refused")]);
    let h = Harness::named(
        tmp.path(),
        "retry-route",
        "retry_initial = \"200ms\"\nretry_max = \"1s\"\nin_flight = 2",
        script.clone(),
    )
    .await;
    let mut conn = h.connect().await;
    for id in ["A1", "A2", "B1"] {
        accepted(&mut conn, &adt(id, &id[..1])).await;
    }
    let delivered = script.wait_delivered(3).await;
    assert_eq!(
        delivered.iter().position(|id| id == "A1"),
        Some(delivered.iter().position(|id| id == "A2").unwrap() - 1)
    );
    assert_eq!(delivered[0], "B1", "lane B does not wait for lane A's backoff: {delivered:?}");
    let attempts = script.attempts_of("A1");
    assert_eq!(attempts.len(), 3);
    let (first_gap, second_gap) = (attempts[1] - attempts[0], attempts[2] - attempts[1]);
    assert!(first_gap >= Duration::from_millis(100), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(200), "{second_gap:?}");
    settled(&h.store_dir).await;
    let (attempts, error): (i64, String) = h
        .db()
        .query_row(
            "SELECT d.attempts, d.last_error FROM deliveries d JOIN messages m ON m.id = d.message_id \
             WHERE m.control_id = 'A1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((attempts, error.as_str()), (3, "connection refused"));
    let metrics = || hl7d::metrics::render(&[], std::time::SystemTime::now());
    eventually("three delivered in the metric", || {
        metrics().contains("hl7d_route_delivered_total{route=\"retry-route\"} 3")
    })
    .await;
    let metrics = metrics();
    assert!(metrics.contains("hl7d_route_retries_total{route=\"retry-route\",reason=\"io\"} 2"), "{metrics}");
    h.stop().await;
}

/// Issue 15's poison test, with a scripted downstream: a message the downstream refuses
/// is parked and holds its lane only; one audit line says so, however long it stays held;
/// an operator's retry (the row set pending, as `hl7d routes retry` does) releases it
/// within 2 s with one more line, and the lane goes on in order.
#[tokio::test]
async fn a_parked_message_holds_its_lane_only_until_an_operator_retries_it() {
    let tmp = tempdir("delivery-park");
    let audit = AuditCapture::start(tmp.path());
    let script = Arc::new(Script::default());
    script.plan("A2", [park("AR: unknown patient")]);
    let h = Harness::start(tmp.path(), "in_flight = 2", script.clone()).await;
    let mut conn = h.connect().await;
    for id in ["A1", "A2", "A3", "B1", "B2"] {
        accepted(&mut conn, &adt(id, &id[..1])).await;
    }
    script.wait_delivered(3).await;
    let held = audit.wait_for(&[("event", "lane_held"), ("route", "r")]).await;
    let a2 = held["message_id"].as_i64().unwrap();
    // Held: A3 waits, B flows; through several refreshes, still one line.
    accepted(&mut conn, &adt("B3", "B")).await;
    script.wait_delivered(4).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut delivered = script.delivered();
    delivered.sort();
    assert_eq!(delivered, ["A1", "B1", "B2", "B3"], "A2 parked, A3 waits behind it, B flows");
    let (state, error, response): (String, String, String) = h
        .db()
        .query_row("SELECT state, last_error, response FROM deliveries WHERE message_id = ?1", [a2], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), error.as_str(), response.as_str()), ("parked", "AR: unknown patient", "AR"));

    // `hl7d routes retry r --message ID`, from another process.
    let released_at = Instant::now();
    let changed = h
        .db()
        .execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?1 WHERE message_id = ?2 AND state = 'parked'",
            rusqlite::params![now_micros(), a2],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let delivered = script.wait_delivered(6).await;
    assert!(released_at.elapsed() < Duration::from_secs(2), "released after {:?}", released_at.elapsed());
    assert_eq!(&delivered[4..], ["A2", "A3"]);
    audit.wait_for(&[("event", "lane_released"), ("route", "r")]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lines = read_audit(&tmp.path().join("audit.jsonl"));
    let count = |event: &str| lines.iter().filter(|line| line["event"] == event).count();
    assert_eq!((count("lane_held"), count("lane_released")), (1, 1), "{}", audit.text());
    let line = find_line(&lines, &[("event", "lane_released")]).unwrap();
    assert_eq!(line["message_id"].as_i64(), Some(a2));
    assert!(!audit.text().contains("patient/"), "no lane key (patient data) in the audit trail");
    h.stop().await;
}

/// `hl7d routes skip`: the parked message is kept, never sent, and its lane goes on.
#[tokio::test]
async fn an_operator_skip_releases_the_lane() {
    let tmp = tempdir("delivery-skip");
    let audit = AuditCapture::start(tmp.path());
    let script = Arc::new(Script::default());
    script.plan("A1", [park("AR")]);
    let h = Harness::start(tmp.path(), "", script.clone()).await;
    let mut conn = h.connect().await;
    for id in ["A1", "A2"] {
        accepted(&mut conn, &adt(id, "A")).await;
    }
    audit.wait_for(&[("event", "lane_held")]).await;
    let skipped_at = Instant::now();
    let changed = h
        .db()
        .execute("UPDATE deliveries SET state = 'skipped', done_at = 0 WHERE state = 'parked'", [])
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(script.wait_delivered(1).await, ["A2"]);
    assert!(skipped_at.elapsed() < Duration::from_secs(2), "{:?}", skipped_at.elapsed());
    audit.wait_for(&[("event", "lane_released")]).await;
    let states: Vec<String> = settled(&h.store_dir).await.into_iter().map(|(_, state, _)| state).collect();
    assert_eq!(states, ["skipped", "delivered"]);
    assert_eq!(script.attempts_of("A1").len(), 1, "a skipped message is never sent again");
    h.stop().await;
}

/// A message still failing `park_after` after its first attempt is parked, with why.
#[tokio::test]
async fn a_message_failing_past_park_after_is_parked() {
    let tmp = tempdir("delivery-park-after");
    let script = Arc::new(Script::default());
    script.plan("A1", std::iter::repeat_n(retry("timeout"), 100));
    let h = Harness::start(
        tmp.path(),
        "retry_initial = \"50ms\"\nretry_max = \"100ms\"\npark_after = \"400ms\"",
        script.clone(),
    )
    .await;
    let mut conn = h.connect().await;
    accepted(&mut conn, &adt("A1", "A")).await;
    let deadline = Instant::now() + WAIT;
    let error = loop {
        let row: Option<String> = h
            .db()
            .query_row("SELECT last_error FROM deliveries WHERE state = 'parked'", [], |r| r.get(0))
            .ok();
        if let Some(error) = row {
            break error;
        }
        assert!(Instant::now() < deadline, "{:?}", h.rows());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(error.starts_with("still failing after"), "{error}");
    assert!(error.ends_with(": timeout"), "{error}");
    let attempts = script.attempts_of("A1").len();
    assert!((3..=12).contains(&attempts), "{attempts} attempts in 400 ms of 50–100 ms backoff");
    h.stop().await;
}

/// An attempt cut off by a stop (the downstream never answered) leaves its row in flight;
/// the next start sends it again: at least once, and the duplicate at the downstream is
/// that message only.
#[tokio::test]
async fn a_delivery_in_flight_at_a_stop_goes_out_again_at_the_next_start() {
    let tmp = tempdir("delivery-restart");
    let script = Arc::new(Script::default());
    script.plan("A2", [Answer::Hang]);
    let h = Harness::start(tmp.path(), "", script.clone()).await;
    let mut conn = h.connect().await;
    for id in ["A1", "A2", "A3"] {
        accepted(&mut conn, &adt(id, "A")).await;
    }
    let deadline = Instant::now() + WAIT;
    while script.attempts_of("A2").is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The claim is written without waiting: give the writer a moment, then stop hard.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut h = h;
    h.server.take().unwrap().shutdown(WAIT).await;
    h.engine.stop();
    assert!(!h.engine.wait(Duration::from_millis(300)).await, "the hanging attempt is cut off");
    h.store.close();
    let states: Vec<String> = rows(&h.store_dir).into_iter().map(|(_, state, _)| state).collect();
    assert_eq!(states, ["delivered", "in_flight", "pending"]);

    let again = Arc::new(Script::default());
    let h2 = Harness::start(tmp.path(), "", again.clone()).await;
    assert_eq!(again.wait_delivered(2).await, ["A2", "A3"]);
    let attempts: Vec<i64> =
        settled(&h2.store_dir).await.into_iter().map(|(_, _, attempts)| attempts).collect();
    assert_eq!(attempts, [1, 2, 1]);
    h2.stop().await;
}

/// `messages purge` keeps messages with a delivery still to do unless
/// `--include-undelivered`; their delivery rows go with them.
#[tokio::test]
async fn purge_keeps_undelivered_messages_unless_told() {
    let tmp = tempdir("delivery-purge");
    let script = Arc::new(Script::default());
    script.plan("B1", [park("AR")]);
    let h = Harness::start(tmp.path(), "", script.clone()).await;
    let mut conn = h.connect().await;
    for id in ["A1", "B1", "B2"] {
        accepted(&mut conn, &adt(id, &id[..1])).await;
    }
    script.wait_delivered(1).await;
    let deadline = Instant::now() + WAIT;
    while h.rows().iter().filter(|(_, state, _)| state == "parked").count() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let store_dir = h.store_dir.clone();
    h.stop().await;
    let config = tmp.path().join("cli.toml");
    std::fs::write(
        &config,
        format!("[store]\npath = {store_dir:?}\n[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n"),
    )
    .unwrap();
    let purge = |extra: &[&str]| {
        let mut args = vec!["messages", "purge", "--config", config.to_str().unwrap(), "--all"];
        args.extend_from_slice(extra);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hl7d")).args(&args).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        purge(&["--dry-run"]),
        "would delete 1 message(s)\nkept 2 message(s) with deliveries still to do (--include-undelivered deletes them too)\n"
    );
    assert_eq!(
        purge(&[]),
        "deleted 1 message(s)\nkept 2 message(s) with deliveries still to do (--include-undelivered deletes them too)\n"
    );
    let left: Vec<(String, String, i64)> = rows(&store_dir);
    assert_eq!(
        left.iter().map(|(id, state, _)| (id.as_str(), state.as_str())).collect::<Vec<_>>(),
        [("B1", "parked"), ("B2", "pending")]
    );
    assert_eq!(purge(&["--include-undelivered"]), "deleted 2 message(s)\n");
    let conn = Connection::open(store_dir.join(DATABASE_FILE)).unwrap();
    let count: i64 = conn.query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 0, "delivery rows went with their messages");
}

/// A child `hl7d serve` with a config file of the test's; its log lines collected.
struct Serve {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(config: &Path) -> Serve {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hl7d serve");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("hl7d serve: {line}");
                collected.lock().unwrap().push(line);
            }
        });
        Serve { child, lines }
    }

    /// Waits for the `n`th line containing `text`; returns it.
    fn wait_line(&self, text: &str, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) =
                self.lines.lock().unwrap().iter().filter(|line| line.contains(text)).nth(n - 1)
            {
                return line.clone();
            }
            assert!(Instant::now() < deadline, "no line {n} with {text:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        logged_addr(&self.wait_line("listening", 1), "listening").unwrap()
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), out);
            } else {
                out.push(entry.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    let mut names: Vec<String> =
        out.iter().map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Waits until `dir` holds `n` files or more and no temporary file (one is there while a
/// message is being written).
fn wait_files(dir: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = files(dir);
        let writing = found.iter().any(|name| name.starts_with('.') || name.contains("/."));
        if found.len() >= n && !writing {
            return found;
        }
        assert!(Instant::now() < deadline, "only {found:?} in {}", dir.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `route` has `n` delivered rows (a file is in place a moment before its
/// outcome is committed).
async fn wait_delivered_rows(db: &Connection, route: &str, n: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let delivered: i64 = db
            .query_row(
                "SELECT count(*) FROM deliveries WHERE route = ?1 AND state = 'delivered'",
                [route],
                |r| r.get(0),
            )
            .unwrap();
        if delivered >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{delivered} of {n} delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The file route end to end through `hl7d serve`: one file per message with its bytes,
/// nothing else in the directory, each lane delivered in order; a route added by SIGHUP
/// takes the messages stored after it; a removed one no more; after a SIGKILL, a delivery
/// left in flight is written again at the next start.
#[tokio::test]
async fn a_file_route_through_hl7d_serve_with_reload_and_restart() {
    let tmp = tempdir("delivery-file");
    let (store, out, late) = (tmp.path().join("data"), tmp.path().join("out"), tmp.path().join("late"));
    let config = tmp.path().join("hl7d.toml");
    let head = format!("[store]\npath = {store:?}\n[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n");
    let files_route =
        format!("[[route]]\nname = \"files\"\nto = \"file://{}\"\nin_flight = 2\n", out.display());
    let late_route = format!(
        "[[route]]\nname = \"late\"\nto = \"file://{}\"\norder = \"per_sender\"\nmessage_types = [\"ADT^A0?\"]\n\
         [route.file]\nname = \"{{listener}}/{{id}}.hl7\"\n",
        late.display()
    );
    std::fs::write(&config, format!("{head}{files_route}")).unwrap();
    let serve = Serve::start(&config);
    let mut conn = TcpStream::connect(serve.addr()).await.unwrap();
    let mut sent = Vec::new();
    for n in 0..4 {
        for patient in ["P1", "P2", "P3"] {
            let message = adt(&format!("{patient}-{n}"), patient);
            accepted(&mut conn, &message).await;
            sent.push(message);
        }
    }
    let written = tokio::task::spawn_blocking({
        let out = out.clone();
        move || wait_files(&out, 12)
    })
    .await
    .unwrap();
    assert_eq!(written.len(), 12, "{written:?}");
    for name in &written {
        // {received:%Y%m%d}/{id:012}-{control_id}.hl7
        let (day, file) = name.split_once('/').unwrap();
        assert_eq!(day.len(), 8, "{name}");
        let id: usize = file[..12].parse().unwrap();
        assert_eq!(std::fs::read(out.join(name)).unwrap(), sent[id - 1], "{name}");
    }
    // Each lane in order: within a lane, done_at grows with the queue order.
    let db = Connection::open(store.join(DATABASE_FILE)).unwrap();
    wait_delivered_rows(&db, "files", 12).await;
    let mut statement =
        db.prepare("SELECT lane, done_at FROM deliveries WHERE route = 'files' ORDER BY id").unwrap();
    let done: Vec<(String, i64)> =
        statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap();
    for lane in ["patient/FAC/P1", "patient/FAC/P2", "patient/FAC/P3"] {
        let times: Vec<i64> = done.iter().filter(|(l, _)| l == lane).map(|(_, t)| *t).collect();
        assert_eq!(times.len(), 4);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{lane}: {times:?}");
    }

    // Reload: add `late`; the messages already stored are not queued for it.
    std::fs::write(&config, format!("{head}{files_route}{late_route}")).unwrap();
    serve.signal("HUP");
    tokio::task::spawn_blocking({
        let lines = serve.lines.clone();
        move || {
            let deadline = Instant::now() + WAIT;
            while !lines.lock().unwrap().iter().any(|l| l.contains("route added") && l.contains("late")) {
                assert!(Instant::now() < deadline, "no route added line");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    })
    .await
    .unwrap();
    let after = adt("P1-late", "P1");
    accepted(&mut conn, &after).await;
    let oru = b"MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ORU^R01|O1|P|2.5\rPID|1||P1\r".to_vec();
    accepted(&mut conn, &oru).await;
    let late_files = tokio::task::spawn_blocking({
        let late = late.clone();
        move || wait_files(&late, 1)
    })
    .await
    .unwrap();
    assert_eq!(late_files, ["lab/13.hl7"], "only the ADT stored after the reload");
    assert_eq!(std::fs::read(late.join("lab/13.hl7")).unwrap(), after);
    tokio::task::spawn_blocking({
        let out = out.clone();
        move || wait_files(&out, 14)
    })
    .await
    .unwrap();
    wait_delivered_rows(&db, "late", 1).await;

    // Reload: remove `files`; its rows stay, and no new message is queued for it.
    std::fs::write(&config, format!("{head}{late_route}")).unwrap();
    serve.signal("HUP");
    tokio::task::spawn_blocking({
        let lines = serve.lines.clone();
        move || {
            let deadline = Instant::now() + WAIT;
            while !lines.lock().unwrap().iter().any(|l| l.contains("route removed")) {
                assert!(Instant::now() < deadline, "no route removed line");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    })
    .await
    .unwrap();
    accepted(&mut conn, &adt("P2-after-removal", "P2")).await;
    tokio::task::spawn_blocking({
        let late = late.clone();
        move || wait_files(&late, 2)
    })
    .await
    .unwrap();
    wait_delivered_rows(&db, "late", 2).await;
    let queued: i64 =
        db.query_row("SELECT count(*) FROM deliveries WHERE route = 'files'", [], |r| r.get(0)).unwrap();
    assert_eq!(queued, 14, "the removed route's rows stay; none for the new message");
    assert_eq!(files(&out).len(), 14);

    // SIGKILL; a delivery left in flight (made so by hand, its file not written) is
    // written at the next start.
    drop(conn);
    let mut serve = serve;
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    drop(serve);
    let changed = db
        .execute("UPDATE deliveries SET state = 'in_flight' WHERE route = 'late' AND message_id = 15", [])
        .unwrap();
    assert_eq!(changed, 1);
    std::fs::remove_file(late.join("lab/15.hl7")).unwrap();
    let serve = Serve::start(&config);
    serve.wait_line("deliveries in flight at the last stop go out again", 1);
    tokio::task::spawn_blocking({
        let late = late.clone();
        move || wait_files(&late, 2)
    })
    .await
    .unwrap();
    assert_eq!(files(&late), ["lab/13.hl7", "lab/15.hl7"]);
    let deadline = Instant::now() + WAIT;
    while db
        .query_row("SELECT state FROM deliveries WHERE route = 'late' AND message_id = 15", [], |r| {
            r.get::<_, String>(0)
        })
        .unwrap()
        != "delivered"
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (state, attempts): (String, i64) = db
        .query_row(
            "SELECT state, attempts FROM deliveries WHERE route = 'late' AND message_id = 15",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), attempts), ("delivered", 2));
    serve.signal("TERM");
    drop(serve);
    let hidden: Vec<String> = files(&out)
        .into_iter()
        .chain(files(&late))
        .filter(|f| f.contains("/.") || f.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");
}

/// `check-config` lists the routes (user information hidden) and refuses a file route whose
/// directory cannot be made.
#[test]
fn check_config_shows_routes_and_checks_file_directories() {
    let tmp = tempdir("delivery-check");
    let config = tmp.path().join("hl7d.toml");
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let head = format!(
        "[store]\npath = {:?}\n[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n",
        tmp.path().join("data")
    );
    let run = |routes: &str, json: bool| {
        std::fs::write(&config, format!("{head}{routes}")).unwrap();
        let mut args = vec!["check-config", "--config", config.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hl7d")).args(&args).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code().unwrap(), text)
    };
    let good = format!(
        "[[route]]\nname = \"files\"\nto = \"file://{}\"\n[[route]]\nname = \"web\"\nto = \"https://u:secret@h.example/in\"\norder = \"strict\"\n",
        tmp.path().join("out").display()
    );
    let (code, text) = run(&good, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok (1 listener(s), 2 route(s))"), "{text}");
    assert!(text.contains("route web: https://***@h.example/in (order strict, in_flight 1)"), "{text}");
    assert!(!text.contains("secret"), "{text}");
    let (code, text) = run(&good, true);
    assert_eq!(code, 0, "{text}");
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(json["routes"][0]["name"], "files");
    assert_eq!(json["routes"][1]["to"], "https://***@h.example/in");
    assert!(!tmp.path().join("out").exists(), "check-config creates nothing");

    let bad = format!("[[route]]\nname = \"files\"\nto = \"file://{}/sub\"\n", blocker.display());
    let (code, text) = run(&bad, false);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("route \"files\": ") && text.contains("not a directory"), "{text}");
}

/// An `mllp://` route through the real transports to a second (in-process) hl7d listener:
/// every message arrives once, in lane order, and the rows keep the downstream's AA.
#[tokio::test]
async fn an_mllp_route_to_a_second_hl7d() {
    let tmp = tempdir("delivery-mllp");
    let downstream_dir = tmp.path().join("downstream");
    let downstream_store = Arc::new(SqliteStore::open(&downstream_dir, SqliteOptions::default()).unwrap());
    let downstream = start_with_store(vec![plain("down")], downstream_store.clone()).await;
    let to = downstream.local_addr("down").unwrap();

    let text = format!(
        "[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\
         [[route]]\nname = \"engine\"\nto = \"mllp://{to}\"\nin_flight = 2\nack_timeout = \"5s\"\n"
    );
    let config = Config::from_toml_str(&text).unwrap();
    let store_dir = tmp.path().join("data");
    let table = Engine::table();
    let options = SqliteOptions { routes: Some(table.clone()), ..SqliteOptions::default() };
    let store = Arc::new(SqliteStore::open(&store_dir, options).unwrap());
    let engine = Engine::new(store.clone(), &store_dir, table, EngineOptions::default());
    engine.start(&config.routes).unwrap();
    let server = Server::start(&config, store.clone() as Arc<dyn MessageStore>).await.unwrap();
    let mut conn = connect_nodelay(server.local_addr("lab").unwrap()).await.unwrap();
    for n in 0..6 {
        for patient in ["A", "B"] {
            accepted(&mut conn, &adt(&format!("{patient}{n}"), patient)).await;
        }
    }
    let rows = settled(&store_dir).await;
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|(_, state, attempts)| state == "delivered" && *attempts == 1), "{rows:?}");
    let responses: Vec<String> = Connection::open(store_dir.join(DATABASE_FILE))
        .unwrap()
        .prepare("SELECT response FROM deliveries")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(responses.iter().all(|r| r == "AA"), "{responses:?}");

    // The downstream stored each message once, each patient's in order, bytes unchanged.
    let reader = hl7d::store::Reader::open(&downstream_dir).unwrap();
    let received = reader.list(&hl7d::store::Filter { oldest_first: true, ..Default::default() }).unwrap();
    assert_eq!(received.len(), 12);
    for patient in ["A", "B"] {
        let lane: Vec<String> = received
            .iter()
            .filter(|m| m.control_id.starts_with(patient))
            .map(|m| m.control_id.clone())
            .collect();
        assert_eq!(lane, (0..6).map(|n| format!("{patient}{n}")).collect::<Vec<_>>());
    }
    let first = reader.message(received[0].id).unwrap().unwrap();
    assert_eq!(first.raw.unwrap(), adt(&first.control_id, &first.control_id[..1]));

    server.shutdown(WAIT).await;
    engine.stop();
    assert!(engine.wait(WAIT).await);
    store.close();
    downstream.shutdown(WAIT).await;
    downstream_store.close();
}
