//! Faults behind the store seam and in the process: slow commits, errors (disk full) in
//! every acknowledgment mode, a panicking and a hung store, and SIGTERM of a real
//! `hl7d serve` under load. The rule under test: a positive ACK (AA/CA) only for a message
//! the store has kept; anything else gets AE/CE, or no answer where MSH-15 says so, and
//! the listener recovers without a restart.
//!
//! (Injected errors with recovery, a full database, a full file system and SIGKILL under
//! load are in `store.rs`, against the SQLite store.)
//!
//! Slow and hung commits run on tokio's paused clock: the commit's delay is a tokio timer,
//! and the clock jumps to it once every task waits, so these tests take no real time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hl7_proto::ack::AckPolicy;
use hl7d::store::{Appended, BoxFuture, MessageStore, NewMessage, StoreError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

use crate::support::*;

/// How long a `SLOW-` commit takes.
const SLOW_COMMIT: Duration = Duration::from_millis(1500);
/// What the store says when it cannot write (SQLite's wording for SQLITE_FULL).
const DISK_FULL: &str = "database or disk is full";

/// A store whose behaviour is chosen per message by its MSH-10 prefix — `FAIL-` (disk
/// full), `SLOW-` ([`SLOW_COMMIT`]), `HANG-` (never returns), `PANIC-` — or for every
/// message by [`FaultStore::fail_all`]. It records what it kept.
#[derive(Default)]
struct FaultStore {
    kept: Mutex<Vec<String>>,
    fail_all: std::sync::atomic::AtomicBool,
}

impl FaultStore {
    fn kept(&self) -> Vec<String> {
        self.kept.lock().unwrap().clone()
    }

    fn fail_all(&self, on: bool) {
        self.fail_all.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl MessageStore for FaultStore {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        Box::pin(async move {
            let id = message.control_id;
            if self.fail_all.load(std::sync::atomic::Ordering::SeqCst) || id.starts_with("FAIL-") {
                return Err(StoreError::Unavailable(DISK_FULL.into()));
            }
            if id.starts_with("SLOW-") {
                sleep(SLOW_COMMIT).await;
            } else if id.starts_with("HANG-") {
                std::future::pending::<()>().await;
            } else if id.starts_with("PANIC-") {
                panic!("injected store panic");
            }
            self.kept.lock().unwrap().push(id);
            Ok(Appended::New)
        })
    }
}

async fn start(listeners: Vec<hl7d::config::ListenerConfig>) -> (hl7d::listener::Server, Arc<FaultStore>) {
    let store = Arc::new(FaultStore::default());
    (start_with_store(listeners, store.clone()).await, store)
}

/// A message in one acknowledgment mode: `""` original (AA/AE), otherwise MSH-15 (CA/CE).
fn message(control_id: &str, msh15: &str) -> Vec<u8> {
    let enhanced = if msh15.is_empty() { String::new() } else { format!("|||{msh15}|NE") };
    format!("MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ORU^R01^ORU_R01|{control_id}|P|2.5{enhanced}\rPID|1||x\r")
        .into_bytes()
}

// ---------------------------------------------------------------------------------------
// Store errors

#[tokio::test]
async fn a_store_error_is_never_acknowledged_positively_in_any_ack_mode() {
    let mut always = plain("always");
    always.ack = AckPolicy::Always;
    let (server, store) = start(vec![plain("msh"), always]).await;
    // (MSH-15, answer when kept, answer when the store fails) under ack = "msh"; with
    // ack = "always" every message is answered.
    let modes: [(&str, Option<&str>, Option<&str>); 5] = [
        ("", Some("AA"), Some("AE")),
        ("AL", Some("CA"), Some("CE")),
        ("ER", None, Some("CE")),
        ("SU", Some("CA"), None),
        ("NE", None, None),
    ];
    for listener in ["msh", "always"] {
        let mut conn = connect_nodelay(server.local_addr(listener).unwrap()).await.unwrap();
        for (msh15, when_kept, when_failed) in modes {
            for (outcome, expected) in [("OK", when_kept), ("FAIL", when_failed)] {
                let id = if outcome == "OK" {
                    format!("OK-{listener}-{msh15}")
                } else {
                    format!("FAIL-{listener}-{msh15}")
                };
                send(&mut conn, &message(&id, msh15)).await;
                let expected = if listener == "always" {
                    let enhanced = !msh15.is_empty();
                    Some(match (outcome, enhanced) {
                        ("OK", false) => "AA",
                        ("OK", true) => "CA",
                        (_, false) => "AE",
                        (_, true) => "CE",
                    })
                } else {
                    expected
                };
                let Some(code) = expected else { continue };
                // An answer written for a message that should have none would be read here
                // instead, and fail on its MSA-2.
                let ack = read_frame(&mut conn).await;
                assert_eq!(msa(&ack), (code.to_string(), id.clone()), "{listener} MSH-15 {msh15:?}");
                if outcome == "FAIL" {
                    let text = String::from_utf8_lossy(&ack);
                    assert!(text.contains("ERR|") && text.contains("207"), "ERR-3 207 in {text:?}");
                    assert!(text.contains(DISK_FULL), "the reason in {text:?}");
                }
            }
        }
        // Nothing unanswered was written after the last answer either.
        send(&mut conn, &message(&format!("OK-{listener}-marker"), "")).await;
        assert_eq!(msa(&read_frame(&mut conn).await).1, format!("OK-{listener}-marker"));
    }
    let kept = store.kept();
    assert!(kept.iter().all(|id| id.starts_with("OK-")), "{kept:?}");
    assert_eq!(kept.len(), 2 * (modes.len() + 1));
}

#[tokio::test]
async fn after_a_full_disk_the_same_connection_recovers_without_a_restart() {
    let (server, store) = start(vec![plain("lab")]).await;
    let mut conn = connect_nodelay(server.local_addr("lab").unwrap()).await.unwrap();
    store.fail_all(true);
    for i in 0..5 {
        let id = format!("DISK-{i}");
        send(&mut conn, &message(&id, if i % 2 == 0 { "" } else { "AL" })).await;
        let code = msa(&read_frame(&mut conn).await).0;
        assert!(code == "AE" || code == "CE", "{id}: {code}");
    }
    assert!(store.kept().is_empty());
    store.fail_all(false);
    for i in 0..5 {
        let id = format!("DISK-{i}");
        send(&mut conn, &message(&id, if i % 2 == 0 { "" } else { "AL" })).await;
        let code = msa(&read_frame(&mut conn).await).0;
        assert!(code == "AA" || code == "CA", "{id}: {code}");
    }
    assert_eq!(store.kept().len(), 5);
}

// ---------------------------------------------------------------------------------------
// Slow commits

#[tokio::test(start_paused = true)]
async fn a_slow_commit_delays_only_its_own_ack_and_the_ones_queued_behind_it() {
    let (server, store) = start(vec![plain("lab")]).await;
    let addr = server.local_addr("lab").unwrap();
    let mut slow = connect_nodelay(addr).await.unwrap();
    let mut other = connect_nodelay(addr).await.unwrap();

    // Pipelined: the slow message, then a fast one on the same connection.
    let started = Instant::now();
    let mut burst = frame(&message("SLOW-1", ""));
    burst.extend(frame(&message("AFTER-SLOW", "")));
    slow.write_all(&burst).await.unwrap();
    // Meanwhile another connection is served at its usual pace.
    for i in 0..10 {
        let id = format!("OTHER-{i}");
        send(&mut other, &message(&id, "")).await;
        assert_eq!(msa(&read_frame(&mut other).await), ("AA".into(), id));
    }
    assert!(started.elapsed() < SLOW_COMMIT, "other connections waited for the slow commit");
    // The slow ACK comes only once the commit is done, and the next one after it.
    assert_eq!(msa(&read_frame(&mut slow).await), ("AA".into(), "SLOW-1".into()));
    assert!(started.elapsed() >= SLOW_COMMIT, "ACK before the commit");
    assert_eq!(msa(&read_frame(&mut slow).await), ("AA".into(), "AFTER-SLOW".into()));
    let kept = store.kept();
    let position = |id: &str| kept.iter().position(|k| k == id).unwrap();
    assert!(position("SLOW-1") < position("AFTER-SLOW"), "{kept:?}");
}

/// Regression: the idle and frame deadlines counted the time the connection spent waiting
/// for the store, so a sender that answered promptly after a commit longer than
/// `idle_timeout` (or had started its next frame) found the connection closed.
#[tokio::test(start_paused = true)]
async fn a_commit_slower_than_the_idle_and_frame_timeouts_does_not_close_the_connection() {
    const LIMIT: Duration = Duration::from_secs(1);
    assert!(SLOW_COMMIT > LIMIT);
    let mut listener = plain("lab");
    listener.idle_timeout = LIMIT;
    listener.frame_timeout = LIMIT;
    let (server, store) = start(vec![listener]).await;
    let mut conn = connect_nodelay(server.local_addr("lab").unwrap()).await.unwrap();

    let sent = Instant::now();
    send(&mut conn, &message("SLOW-idle", "")).await;
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "SLOW-idle".into()));
    assert!(sent.elapsed() >= SLOW_COMMIT, "the commit took {:?}", sent.elapsed());
    send(&mut conn, &message("NEXT-1", "")).await;
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "NEXT-1".into()));

    // The slow message and the start of the next one in one write; the rest right after
    // the slow ACK.
    let next = frame(&message("NEXT-2", ""));
    let (head, tail) = next.split_at(10);
    let mut burst = frame(&message("SLOW-frame", ""));
    burst.extend_from_slice(head);
    conn.write_all(&burst).await.unwrap();
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "SLOW-frame".into()));
    let last_byte = Instant::now();
    conn.write_all(tail).await.unwrap();
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "NEXT-2".into()));
    assert_eq!(store.kept(), ["SLOW-idle", "NEXT-1", "SLOW-frame", "NEXT-2"]);

    // The idle timeout itself still works, counted from the last message.
    expect_closed(&mut conn).await;
    assert!(last_byte.elapsed() >= LIMIT, "closed {:?} after the last message", last_byte.elapsed());
}

// ---------------------------------------------------------------------------------------
// A store that panics or never returns

#[tokio::test]
async fn a_panicking_store_ends_only_that_connection_and_frees_its_slot() {
    let mut listener = plain("lab");
    listener.max_connections = 2;
    let (server, store) = start(vec![listener]).await;
    let addr = server.local_addr("lab").unwrap();
    let mut good = connect_nodelay(addr).await.unwrap();
    send(&mut good, &message("GOOD-1", "")).await;
    assert_eq!(msa(&read_frame(&mut good).await).1, "GOOD-1");

    let mut doomed = connect_nodelay(addr).await.unwrap();
    send(&mut doomed, &message("PANIC-1", "AL")).await;
    expect_closed(&mut doomed).await;

    send(&mut good, &message("GOOD-2", "")).await;
    assert_eq!(msa(&read_frame(&mut good).await).1, "GOOD-2");
    // The panicked connection's slot is free again (max_connections = 2).
    let mut replacement = None;
    for _ in 0..40 {
        let mut conn = connect_nodelay(addr).await.unwrap();
        send(&mut conn, &message("GOOD-3", "")).await;
        let mut byte = [0u8; 1];
        if let Ok(Ok(1)) = timeout(Duration::from_secs(1), conn.peek(&mut byte)).await {
            replacement = Some(conn);
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let mut replacement = replacement.expect("the slot of the panicked connection is released");
    assert_eq!(msa(&read_frame(&mut replacement).await).1, "GOOD-3");
    assert!(!store.kept().contains(&"PANIC-1".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_hung_store_gets_no_ack_and_shutdown_gives_up_after_its_grace() {
    let (server, store) = start(vec![plain("lab")]).await;
    let mut conn = connect_nodelay(server.local_addr("lab").unwrap()).await.unwrap();
    send(&mut conn, &message("HANG-1", "AL")).await;
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(500), conn.read(&mut buf)).await.is_err(),
        "an answer for a hung commit"
    );
    let started = Instant::now();
    let grace = Duration::from_secs(1);
    let abandoned = server.shutdown(grace).await;
    assert_eq!(abandoned, 1, "the connection waiting on the store is abandoned");
    let waited = started.elapsed();
    assert!(waited >= grace && waited < 2 * grace, "shutdown gave up after {waited:?}");
    // Still no answer: an abandoned message is never acknowledged.
    assert!(
        timeout(Duration::from_millis(300), conn.read(&mut buf)).await.is_err(),
        "an answer after shutdown"
    );
    assert!(store.kept().is_empty());
}

// ---------------------------------------------------------------------------------------
// SIGTERM of a real `hl7d serve` under load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_message() {
    const SENDERS: usize = 6;
    let tmp = tempdir("sigterm");
    let store_dir = tmp.join("data");
    let server = ServeProcess::start(&tmp, &store_dir);
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            // Senders 0 and 3 pipeline four messages at a time; odd ones use enhanced mode.
            let in_flight = if s % 3 == 0 { 4 } else { 1 };
            tokio::spawn(load(server.addr, format!("T{s}"), s % 2 == 1, in_flight, outcomes.clone()))
        })
        .collect();
    sleep(Duration::from_millis(700)).await;
    let acked_before = outcomes.lock().unwrap().acked.len();
    assert!(acked_before > 0, "no message acknowledged before SIGTERM");
    let signalled = Instant::now();
    server.signal("TERM");
    let status = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(40))).await.unwrap();
    assert!(status.success(), "hl7d serve exited with {status} after SIGTERM");
    eprintln!("hl7d serve stopped {:?} after SIGTERM", signalled.elapsed());
    for sender in senders {
        timeout(WAIT, sender).await.expect("senders end when the server goes").unwrap();
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    eprintln!(
        "{} acknowledged, {} unanswered when the connection closed",
        outcomes.acked.len(),
        outcomes.unanswered.len()
    );
    let output = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["messages", "list", "--json", "--limit", "10000000", "--config"])
        .arg(tmp.join("hl7d.toml"))
        .output()
        .expect("run hl7d messages list");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut stored: HashMap<String, usize> = HashMap::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        *stored.entry(row["control_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    for id in &outcomes.acked {
        assert_eq!(
            stored.get(id),
            Some(&1),
            "{id} was acknowledged but is stored {:?} times",
            stored.get(id)
        );
    }
    // A message the server read during shutdown was stored *and* answered before the close;
    // one it never read is simply not stored (its sender resends it).
    for id in &outcomes.unanswered {
        assert!(!stored.contains_key(id), "{id} was stored but its ACK was never written");
    }
}

#[derive(Default)]
struct Outcomes {
    /// Control ids answered AA/CA.
    acked: Vec<String>,
    /// Control ids sent but not answered because the server closed the connection first.
    unanswered: Vec<String>,
}

/// One sender: `in_flight` messages at a time with fresh control ids until the server
/// closes the connection. Every message must get its own positive ACK, in order, or none
/// at all because the connection closed first.
async fn load(
    addr: SocketAddr,
    prefix: String,
    enhanced: bool,
    in_flight: usize,
    outcomes: Arc<Mutex<Outcomes>>,
) {
    let Ok(stream) = connect_nodelay(addr).await else { return };
    let mut conn = AsyncBufReader::new(stream);
    let mut n = 0;
    loop {
        let ids: Vec<String> = (0..in_flight).map(|i| format!("{prefix}-{}", n + i)).collect();
        n += in_flight;
        let mut burst = Vec::new();
        for id in &ids {
            burst.extend(frame(&message(id, if enhanced { "AL" } else { "" })));
        }
        if conn.get_mut().write_all(&burst).await.is_err() {
            outcomes.lock().unwrap().unanswered.extend(ids);
            return;
        }
        for (i, id) in ids.iter().enumerate() {
            let Some(ack) = read_ack(&mut conn).await else {
                outcomes.lock().unwrap().unanswered.extend(ids[i..].iter().cloned());
                return;
            };
            let (code, control) = msa(&ack);
            assert_eq!(&control, id, "ACKs out of order");
            assert!(code == "AA" || code == "CA", "{id}: {code}");
            outcomes.lock().unwrap().acked.push(control);
        }
    }
}

/// One MLLP frame from a buffered stream; `None` on EOF, reset or a frame cut short.
async fn read_ack(conn: &mut AsyncBufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut frame = Vec::new();
    let n = timeout(WAIT, conn.read_until(0x1C, &mut frame)).await.ok()?.ok()?;
    if n == 0 || frame.last() != Some(&0x1C) {
        return None;
    }
    let mut cr = [0u8; 1];
    conn.read_exact(&mut cr).await.ok()?;
    let start = frame.iter().position(|&b| b == 0x0B)?;
    Some(frame[start + 1..frame.len() - 1].to_vec())
}
