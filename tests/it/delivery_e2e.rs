//! Issue 15's "Done when", end to end: `hl7d serve` as a child process with a `[[route]]`
//! to a real downstream on loopback (a second `hl7d serve` over MLLP, or an HTTP server in
//! this process), both on port 0 or a port reserved just before. What the downstream got
//! is read from its own store (`duplicate_window = "0"`, so every copy is kept in arrival
//! order); what the upstream thinks is read with `hl7d routes status --json`, `/metrics`
//! and its audit file.
//!
//! - crash: SIGKILL the upstream repeatedly while senders stream into it;
//! - outage: the downstream is not listening for a while, with and without parking;
//! - poison: one patient's messages are refused (HTTP 400); only that lane holds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hl7d::store::DATABASE_FILE;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rusqlite::Connection;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// How long a whole scenario may take to settle before the test fails.
const SETTLE: Duration = Duration::from_secs(60);

/// A child `hl7d serve --config CONFIG`, its stderr lines collected; SIGKILLed when dropped.
struct Hl7d {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Hl7d {
    fn start(config: &Path) -> Hl7d {
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
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("hl7d serve: {line}");
                collected.lock().unwrap().push(line);
            }
        });
        Hl7d { child, lines }
    }

    /// The address of the first line containing `text` (waits for it).
    fn addr(&self, text: &str) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(addr) = self.lines.lock().unwrap().iter().find_map(|line| logged_addr(line, text)) {
                return addr;
            }
            assert!(Instant::now() < deadline, "no {text:?} line");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn listening(&self) -> SocketAddr {
        self.addr("listening")
    }

    fn admin(&self) -> SocketAddr {
        self.addr("admin endpoint")
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hl7d {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port on loopback that nothing listens on (bound, then released): the downstream of
/// an outage, started on it later.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The configuration of a downstream hl7d: one plaintext listener `down` on `listen` that
/// keeps every copy it gets (no duplicate detection).
fn downstream_config(dir: &Path, listen: &str) -> PathBuf {
    let store = dir.join("down-data");
    let config = dir.join("down.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {store:?}\n\n[[listener]]\nname = \"down\"\nlisten = \"{listen}\"\n\
             plaintext = true\nduplicate_window = \"0\"\n"
        ),
    )
    .unwrap();
    config
}

/// The configuration of the upstream hl7d: listener `lab` on port 0, admin on port 0, an
/// audit file, and one route `down` to `to` with the extra route keys `route_keys`.
fn upstream_config(dir: &Path, to: &str, route_keys: &str) -> PathBuf {
    let store = dir.join("up-data");
    let audit = dir.join("audit.jsonl");
    let config = dir.join("up.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {store:?}\n\n[audit]\nfile = {audit:?}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\n\
             [[route]]\nname = \"down\"\nto = \"{to}\"\n{route_keys}"
        ),
    )
    .unwrap();
    config
}

/// An ADT^A01 for `patient` with control id `control_id`.
fn adt(control_id: &str, patient: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|FAC|HL7D|FAC|20261201||ADT^A01^ADT_A01|{control_id}|P|2.5\rPID|1||{patient}^^^HOSP\r"
    )
    .into_bytes()
}

/// Control id `PATIENT-NNNN`: the patient is the part before the dash.
fn control_id(patient: &str, n: usize) -> String {
    format!("{patient}-{n:04}")
}

/// One message sent and its ACK read: the MSA-1 code, or `None` when the connection failed
/// or no answer came within 5 s (the caller reconnects and sends again).
async fn try_exchange(conn: &mut TcpStream, payload: &[u8]) -> Option<String> {
    conn.write_all(&frame(payload)).await.ok()?;
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        while !answer.ends_with(&[0x1c, 0x0d]) {
            let n = conn.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&buf[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.ok()??;
    let start = answer.iter().position(|&b| b == 0x0b)? + 1;
    Some(msa(&answer[start..answer.len() - 2]).0)
}

/// Sends every message on one connection, each until it is answered AA.
async fn send_all(addr: SocketAddr, messages: &[Vec<u8>]) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for message in messages {
        assert_eq!(try_exchange(&mut conn, message).await.as_deref(), Some("AA"));
    }
}

/// `hl7d ARGS --config CONFIG`: stdout; the command must exit 0.
fn hl7d_ok(config: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run hl7d");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "hl7d {args:?}: {stdout}{stderr}");
    stdout
}

/// Route `down`'s entry of `hl7d routes status --json`.
fn status(config: &Path) -> Value {
    route_status(config, "down")
}

/// Route `name`'s entry of `hl7d routes status --json`.
fn route_status(config: &Path, name: &str) -> Value {
    let all: Value = serde_json::from_str(&hl7d_ok(config, &["routes", "status", "--json"])).unwrap();
    all.as_array().unwrap().iter().find(|route| route["name"] == name).cloned().expect("route in status")
}

fn count(status: &Value, field: &str) -> u64 {
    status[field].as_u64().unwrap_or_else(|| panic!("{field} in {status}"))
}

/// Polls `routes status` until `done` holds; returns the status and how long it took.
fn wait_status(config: &Path, limit: Duration, done: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let now = status(config);
        if done(&now) {
            return (now, started.elapsed());
        }
        assert!(started.elapsed() < limit, "route status {now} after {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn settled(status: &Value) -> bool {
    count(status, "pending") == 0 && count(status, "in_flight") == 0
}

/// The control ids the downstream stored, in arrival order, grouped by patient (the part
/// of the control id before the dash).
fn received(store: &Path) -> HashMap<String, Vec<String>> {
    let db = Connection::open(store.join(DATABASE_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut statement =
        db.prepare("SELECT control_id FROM messages WHERE status = 'accepted' ORDER BY id").unwrap();
    let ids: Vec<String> = statement.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    let mut lanes: HashMap<String, Vec<String>> = HashMap::new();
    for id in ids {
        let patient = id.split_once('-').expect("PATIENT-N").0.to_owned();
        lanes.entry(patient).or_default().push(id);
    }
    lanes
}

/// `got` without its adjacent repeats, and how many repeats there were.
fn dedup_adjacent(got: &[String]) -> (Vec<String>, usize) {
    let mut once = got.to_vec();
    once.dedup();
    let repeats = got.len() - once.len();
    (once, repeats)
}

/// The sum of `name`'s samples labelled `route="down"` on the upstream's /metrics.
async fn scrape(admin: SocketAddr, name: &str) -> f64 {
    let mut conn = TcpStream::connect(admin).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|line| line.starts_with(name) && line.contains("route=\"down\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn audit_lines(dir: &Path, event: &str) -> Vec<Value> {
    read_audit(&dir.join("audit.jsonl")).into_iter().filter(|line| line["event"] == event).collect()
}

/// The OS user an operator's audit line must name: `id -un`, the effective user.
fn effective_user() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// SIGKILL the upstream 4 times while 3 senders stream 3 patients' messages into it (each
/// message sent again until it is answered AA) and it delivers them over MLLP to a second
/// hl7d. After the last restart, once `routes status` shows nothing pending: each patient's
/// messages are at the downstream in the order sent, every one at least once, and the only
/// repeats are adjacent copies, at most one per lane in flight at each kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_receiving_and_delivering_loses_nothing_and_keeps_lane_order() {
    const KILLS: usize = 4;
    const IN_FLIGHT: usize = 2;
    let tmp = tempdir("e2e-crash");
    let down = Hl7d::start(&downstream_config(tmp.path(), "127.0.0.1:0"));
    let to = format!("mllp://{}", down.listening());
    let config = upstream_config(
        tmp.path(),
        &to,
        &format!("in_flight = {IN_FLIGHT}\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\nack_timeout = \"10s\"\n"),
    );
    let up = Hl7d::start(&config);
    let addr = Arc::new(Mutex::new(up.listening()));
    let up = Arc::new(Mutex::new(up));

    // The senders go on until the last restart is past, so every kill falls mid-stream.
    let stop = Arc::new(AtomicBool::new(false));
    let patients = ["PA", "PB", "PC"];
    let mut senders = Vec::new();
    for patient in patients {
        let (addr, stop) = (addr.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let deadline = Instant::now() + SETTLE;
            let mut acked = Vec::new();
            let mut conn: Option<TcpStream> = None;
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = control_id(patient, n);
                let message = adt(&id, patient);
                loop {
                    assert!(Instant::now() < deadline, "{id} never answered AA");
                    if conn.is_none() {
                        let target = *addr.lock().unwrap();
                        conn = TcpStream::connect(target).await.ok();
                    }
                    if let Some(stream) = conn.as_mut() {
                        if try_exchange(stream, &message).await.as_deref() == Some("AA") {
                            break;
                        }
                    }
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked.push(id);
                // A steady stream rather than a burst, so that the kills fall mid-stream.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (patient, acked)
        }));
    }

    let downstream_store = tmp.path().join("down-data");
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if kill == 0 {
            // Delivering, not only receiving, when the kills start.
            let started = Instant::now();
            while received(&downstream_store).is_empty() {
                assert!(started.elapsed() < WAIT, "nothing delivered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let restarted = tokio::task::spawn_blocking({
            let (up, config) = (up.clone(), config.clone());
            move || {
                let mut up = up.lock().unwrap();
                up.kill();
                *up = Hl7d::start(&config);
                up.listening()
            }
        })
        .await
        .unwrap();
        *addr.lock().unwrap() = restarted;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked: HashMap<&str, Vec<String>> = HashMap::new();
    for sender in senders {
        let (patient, ids) = sender.await.unwrap();
        acked.insert(patient, ids);
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(acked.values().all(|ids| ids.len() > 10), "{total} messages");

    tokio::task::spawn_blocking({
        let config = config.clone();
        move || wait_status(&config, SETTLE, settled)
    })
    .await
    .unwrap();
    let got = received(&downstream_store);
    let mut repeats = 0;
    for patient in patients {
        let lane = got.get(patient).cloned().unwrap_or_default();
        let (once, lane_repeats) = dedup_adjacent(&lane);
        // Every ACKed message, in the order sent; a repeat that is not next to its
        // original would show here as an extra entry out of order.
        assert_eq!(once, acked[patient], "{patient}: downstream got {lane:?}");
        repeats += lane_repeats;
    }
    assert!(repeats <= KILLS * IN_FLIGHT, "{repeats} repeats after {KILLS} kills with in_flight {IN_FLIGHT}");
    eprintln!("crash test: {total} messages ACKed, {KILLS} kills, {repeats} repeats at the downstream");
    drop(down);
}

/// The id the upstream stored message `control_id` under.
fn message_id(dir: &Path, control_id: &str) -> String {
    let db = Connection::open(dir.join("up-data").join(DATABASE_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let id: i64 =
        db.query_row("SELECT id FROM messages WHERE control_id = ?1", [control_id], |r| r.get(0)).unwrap();
    id.to_string()
}

/// The downstream is not listening for a while (a port nothing listens on), then an hl7d
/// starts there. With `park_after` short, each lane's head parks (the lane holds) and
/// `routes retry --all-parked` releases them; with it long, the heads are just retried.
/// Either way every message arrives once, in lane order, and the retry metric grew; the
/// audit has one "lane held" and one "released" line per parked message and none otherwise.
async fn outage(park_after: &str, parks: bool) {
    let tmp = tempdir("e2e-outage");
    let port = free_port();
    let config = upstream_config(
        tmp.path(),
        &format!("mllp://127.0.0.1:{port}"),
        &format!("in_flight = 3\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\npark_after = \"{park_after}\"\n"),
    );
    let up = Hl7d::start(&config);
    let patients = ["PA", "PB", "PC"];
    let mut sent: HashMap<&str, Vec<String>> = HashMap::new();
    let mut messages = Vec::new();
    for n in 0..4 {
        for patient in patients {
            let id = control_id(patient, n);
            messages.push(adt(&id, patient));
            sent.entry(patient).or_default().push(id);
        }
    }
    send_all(up.listening(), &messages).await;

    let down_started = Instant::now();
    let admin = up.admin();
    let (during, _) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            wait_status(&config, WAIT, |s| {
                let heads_parked = count(s, "parked") == 3 && count(s, "held_lanes") == 3;
                let waited = down_started.elapsed() > Duration::from_millis(1500);
                if parks {
                    heads_parked
                } else {
                    waited
                }
            })
        }
    })
    .await
    .unwrap();
    assert_eq!(count(&during, "delivered"), 0, "{during}");
    assert_eq!(
        count(&during, "pending") + count(&during, "in_flight") + count(&during, "parked"),
        12,
        "{during}"
    );
    if !parks {
        assert_eq!(count(&during, "parked"), 0, "{during}");
    }
    let retries = scrape(admin, "hl7d_route_retries_total").await;
    let elapsed = down_started.elapsed();
    // Backoff: the three lane heads were retried, but not in a hot loop (at most one try
    // per 25 ms per lane, well under retry_initial with any jitter).
    assert!(retries >= 3.0, "{retries} retries");
    let ceiling = 3.0 * (elapsed.as_millis() as f64 / 25.0 + 1.0);
    assert!(retries <= ceiling, "{retries} retries in {elapsed:?}");

    let down = Hl7d::start(&downstream_config(tmp.path(), &format!("127.0.0.1:{port}")));
    down.listening();
    if parks {
        hl7d_ok(&config, &["routes", "retry", "down", "--all-parked"]);
    }
    let (after, _) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || wait_status(&config, SETTLE, |s| settled(s) && count(s, "parked") == 0)
    })
    .await
    .unwrap();
    assert_eq!(count(&after, "delivered"), 12, "{after}");
    assert_eq!(count(&after, "held_lanes"), 0, "{after}");
    assert!(scrape(admin, "hl7d_route_retries_total").await >= retries);

    let got = received(&tmp.path().join("down-data"));
    for patient in patients {
        assert_eq!(got.get(patient), Some(&sent[patient]), "{patient}");
    }

    // The released lines come from the engine after the retry: wait for them to be written.
    let expected = if parks { 3 } else { 0 };
    let deadline = Instant::now() + WAIT;
    while audit_lines(tmp.path(), "lane_released").len() < expected {
        assert!(Instant::now() < deadline, "{:?}", read_audit(&tmp.path().join("audit.jsonl")));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = |event: &str| -> Vec<String> {
        let mut ids: Vec<String> =
            audit_lines(tmp.path(), event).iter().map(|line| line["message_id"].to_string()).collect();
        ids.sort();
        ids
    };
    let mut heads: Vec<String> = if parks {
        patients.iter().map(|p| message_id(tmp.path(), &control_id(p, 0))).collect()
    } else {
        Vec::new()
    };
    heads.sort();
    assert_eq!(ids("lane_held"), heads);
    assert_eq!(ids("lane_released"), heads);
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_a_short_park_after_parks_each_lane_head_once_and_retry_all_parked_delivers_everything(
) {
    outage("500ms", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shorter_than_park_after_is_retried_with_backoff_and_delivers_everything_in_order() {
    outage("1h", false).await;
}

/// An HTTP/1.1 downstream on 127.0.0.1:0: answers 400 to any message of patient `PX` while
/// `refuse` is set, 200 to every other; records the control ids it answered 200, in order.
struct Refusing {
    addr: SocketAddr,
    refuse: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl Refusing {
    async fn start() -> Refusing {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refuse = Arc::new(AtomicBool::new(true));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (refuse.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (flag, log) = (flag.clone(), log.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<Incoming>| {
                        let (flag, log) = (flag.clone(), log.clone());
                        async move {
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let text = String::from_utf8_lossy(&body).into_owned();
                            let control_id = text.split('|').nth(9).unwrap_or_default().to_owned();
                            let poison = control_id.starts_with("PX-") && flag.load(Ordering::SeqCst);
                            if !poison {
                                log.lock().unwrap().push(control_id);
                            }
                            let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"")));
                            if poison {
                                *response.status_mut() = http::StatusCode::BAD_REQUEST;
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Refusing { addr, refuse, accepted }
    }

    /// The accepted control ids of `patient`, in order.
    fn accepted(&self, patient: &str) -> Vec<String> {
        let prefix = format!("{patient}-");
        self.accepted.lock().unwrap().iter().filter(|id| id.starts_with(&prefix)).cloned().collect()
    }
}

/// One patient's messages are refused by the downstream (HTTP 400): the first parks and
/// holds that lane only, while the other patients' messages (including ones sent after the
/// park) are delivered. `routes retry` (the downstream fixed) and `routes skip` (a second
/// poison message given up on) release the lane within 2 s; both are audited with the OS
/// user; each release has one lane held/released pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_holds_only_its_lane_until_retry_or_skip_releases_it() {
    let tmp = tempdir("e2e-poison");
    let downstream = Refusing::start().await;
    let config = upstream_config(
        tmp.path(),
        &format!("http://{}/", downstream.addr),
        "in_flight = 2\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\n",
    );
    let up = Hl7d::start(&config);
    let addr = up.listening();
    let batch = |patients: &[&str], range: std::ops::Range<usize>| -> Vec<Vec<u8>> {
        range.flat_map(|n| patients.iter().map(move |p| adt(&control_id(p, n), p))).collect()
    };
    let ids = |patient: &str, range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|n| control_id(patient, n)).collect()
    };
    send_all(addr, &batch(&["PX", "PA", "PB"], 0..2)).await;
    send_all(addr, &batch(&["PA", "PB"], 2..5)).await;
    let wait = |what: [u64; 4]| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            wait_status(&config, WAIT, move |s| {
                ["delivered", "parked", "held_lanes", "pending"].map(|field| count(s, field)) == what
            })
        })
    };
    // PA and PB: 10 delivered; PX-0000 parked holding its lane, PX-0001 waiting behind it.
    let (held, _) = wait([10, 1, 1, 1]).await.unwrap();
    assert!(held["last_error"].as_str().unwrap().contains("400"), "{held}");
    assert_eq!(downstream.accepted("PA"), ids("PA", 0..5));
    assert_eq!(downstream.accepted("PB"), ids("PB", 0..5));
    assert!(downstream.accepted("PX").is_empty());
    // Other lanes keep flowing while it holds.
    send_all(addr, &batch(&["PA"], 5..6)).await;
    wait([11, 1, 1, 1]).await.unwrap();
    assert_eq!(downstream.accepted("PA"), ids("PA", 0..6));

    // The downstream is fixed; the operator retries the parked message.
    downstream.refuse.store(false, Ordering::SeqCst);
    hl7d_ok(&config, &["routes", "retry", "down", "--message", &message_id(tmp.path(), "PX-0000")]);
    let (_, took) = wait([13, 0, 0, 0]).await.unwrap();
    assert!(took < Duration::from_secs(2), "released after {took:?}");
    assert_eq!(downstream.accepted("PX"), ids("PX", 0..2));

    // A second poison message is given up on: skipped, never sent; its lane goes on.
    downstream.refuse.store(true, Ordering::SeqCst);
    send_all(addr, &batch(&["PX"], 2..4)).await;
    wait([13, 1, 1, 1]).await.unwrap();
    downstream.refuse.store(false, Ordering::SeqCst);
    hl7d_ok(&config, &["routes", "skip", "down", "--message", &message_id(tmp.path(), "PX-0002")]);
    let (skipped, took) = wait([14, 0, 0, 0]).await.unwrap();
    assert!(took < Duration::from_secs(2), "released after {took:?}");
    assert_eq!(skipped["skipped"].as_u64(), Some(1), "{skipped}");
    assert_eq!(downstream.accepted("PX"), ["PX-0000", "PX-0001", "PX-0003"]);

    let user = effective_user();
    for event in ["route_retry", "route_skip"] {
        let lines = audit_lines(tmp.path(), event);
        assert_eq!(lines.len(), 1, "{event}: {lines:?}");
        assert_eq!(lines[0]["user"].as_str(), Some(user.as_str()), "{event}: {lines:?}");
    }
    let deadline = Instant::now() + WAIT;
    while audit_lines(tmp.path(), "lane_released").len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", read_audit(&tmp.path().join("audit.jsonl")));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(audit_lines(tmp.path(), "lane_held").len(), 2);
    assert_eq!(audit_lines(tmp.path(), "lane_released").len(), 2);
    drop(up);
}

/// MLLPS with mutual TLS between two `hl7d serve`: the downstream's listener requires a
/// client certificate and pins its thumbprint. Route `down` presents the pinned certificate
/// and delivers everything in order; route `stranger` presents another certificate of the
/// same CA: refused at the handshake, retried (never parked), nothing of it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllps_with_mutual_tls_to_a_second_hl7d_delivers_with_the_pinned_client_only() {
    use hl7d::tls::pki::{Ca, CertKind, Validity};
    let tmp = tempdir("e2e-mtls");
    let dir = tmp.path();
    let ca = Ca::new("e2e test CA", Validity::days_from_now(30)).unwrap();
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let server = ca.issue(CertKind::Server, "localhost", &names, Validity::days_from_now(30)).unwrap();
    let client = ca.issue(CertKind::Client, "hl7d route", &[], Validity::days_from_now(30)).unwrap();
    let stranger = ca.issue(CertKind::Client, "someone else", &[], Validity::days_from_now(30)).unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert.cert_pem).unwrap();
    for (name, issued) in [("server", &server), ("client", &client), ("stranger", &stranger)] {
        std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).unwrap();
        write_key(&dir.join(format!("{name}.key")), &issued.key_pem);
    }
    let pinned: String = client.digests().sha256.iter().map(|b| format!("{b:02x}")).collect();
    let down_config = dir.join("down.toml");
    std::fs::write(
        &down_config,
        format!(
            "[store]\npath = {:?}\n\n[[listener]]\nname = \"down\"\nlisten = \"127.0.0.1:0\"\nduplicate_window = \"0\"\n\
             [listener.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_auth = \"required\"\n\
             client_thumbprints = [\"sha256:{pinned}\"]\n",
            dir.join("down-data")
        ),
    )
    .unwrap();
    let down = Hl7d::start(&down_config);
    let port = down.listening().port();
    let route = |name: &str, cert: &str| {
        format!(
            "\n[[route]]\nname = \"{name}\"\nto = \"mllps://localhost:{port}\"\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\n\
             [route.tls]\nca = \"ca.pem\"\ncert = \"{cert}.pem\"\nkey = \"{cert}.key\"\n"
        )
    };
    let config = upstream_config(dir, &format!("mllps://localhost:{port}"), "");
    // upstream_config's route `down` gets its [route.tls]; `stranger` follows.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        &format!("[[route]]\nname = \"down\"\nto = \"mllps://localhost:{port}\"\n"),
        &route("down", "client"),
    ) + &route("stranger", "stranger");
    std::fs::write(&config, text).unwrap();
    let up = Hl7d::start(&config);
    let mut messages = Vec::new();
    let mut sent: HashMap<&str, Vec<String>> = HashMap::new();
    for n in 0..3 {
        for patient in ["PA", "PB"] {
            messages.push(adt(&control_id(patient, n), patient));
            sent.entry(patient).or_default().push(control_id(patient, n));
        }
    }
    send_all(up.listening(), &messages).await;

    let (delivered, _) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || wait_status(&config, WAIT, |s| settled(s) && count(s, "delivered") == 6)
    })
    .await
    .unwrap();
    assert_eq!(count(&delivered, "parked"), 0, "{delivered}");
    let (refused, _) = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            let started = Instant::now();
            loop {
                let now = route_status(&config, "stranger");
                if !now["last_error"].is_null() {
                    return (now, started.elapsed());
                }
                assert!(started.elapsed() < WAIT, "{now}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(count(&refused, "delivered"), 0, "{refused}");
    assert_eq!(count(&refused, "parked"), 0, "{refused}");
    assert_eq!(count(&refused, "pending") + count(&refused, "in_flight"), 6, "{refused}");

    let got = received(&dir.join("down-data"));
    for patient in ["PA", "PB"] {
        assert_eq!(got.get(patient), Some(&sent[patient]), "{patient}");
    }
    drop(up);
    drop(down);
}
