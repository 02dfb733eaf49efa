//! Issue 16's "Done when", end to end: two `hl7d serve` nodes on one PostgreSQL database,
//! HAProxy in front of them with PROXY v2 (the shape of `deploy/haproxy.cfg`), senders
//! streaming several patients' messages through HAProxy, a route on both nodes to a
//! downstream MLLP receiver run by this test, and one node SIGKILLed mid-stream.
//!
//! Checked: every ACKed message is stored exactly once; each reaches the downstream at
//! least once and in lane order (a repeat is only ever the lane's latest message: the one
//! in flight at the kill); the dead node's lanes go on within lease + 10 s (measured and
//! printed). Without PostgreSQL (`HL7D_TEST_PG_URL`) or HAProxy the test says loudly that
//! it was skipped; under CI (`CI=true`, where `.ci/run` provides both) that is a failure.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::haproxy::{free_port, haproxy, Haproxy, HAPROXY_SOURCE};
use crate::support::pg::TestDb;
use crate::support::{frame, msa, tempdir, AdminServe, WAIT};

/// The lease of the test (short, so that the takeover comes within seconds).
const LEASE: Duration = Duration::from_secs(4);
const PATIENTS: usize = 6;

/// What the downstream received, in arrival order: (patient, control id, when).
#[derive(Default)]
struct Received(Mutex<Vec<(String, String, Instant)>>);

/// An MLLP receiver on loopback that answers AA (MSA-2 = MSH-10) to every message.
async fn downstream(received: Arc<Received>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let received = received.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buffer.windows(2).position(|w| w == [0x1c, 0x0d]) {
                        let start = buffer.iter().position(|&b| b == 0x0b).map_or(0, |s| s + 1);
                        let message = String::from_utf8_lossy(&buffer[start..end]).into_owned();
                        buffer.drain(..end + 2);
                        let msh: Vec<&str> = message.split('\r').next().unwrap_or("").split('|').collect();
                        let control_id = msh.get(9).copied().unwrap_or("").to_owned();
                        let patient = message
                            .split("PID|1||")
                            .nth(1)
                            .and_then(|rest| rest.split('^').next())
                            .unwrap_or("?")
                            .to_owned();
                        received.0.lock().unwrap().push((patient, control_id.clone(), Instant::now()));
                        let ack = format!(
                            "MSH|^~\\&|DOWN|FAC|LAB|FAC|20261201||ACK^A01^ACK|A-{control_id}|P|2.5\rMSA|AA|{control_id}\r"
                        );
                        if conn.write_all(&frame(ack.as_bytes())).await.is_err() {
                            return;
                        }
                    }
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// A child `hl7d serve` named `name` on the shared database, its stderr echoed; SIGKILLed
/// when dropped.
fn start_node(dir: &Path, name: &str, db_url: &str, downstream: SocketAddr) -> AdminServe {
    let config = dir.join(format!("{name}.toml"));
    let text = format!(
        "[store]\npath = {data:?}\nurl = {db_url:?}\nsslmode = \"disable\"\npool_size = 6\n\n\
         [node]\nname = \"{name}\"\n\n[delivery]\nlease = \"{lease}s\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\nproxy_protocol = true\n\
         proxy_from = [\"{HAPROXY_SOURCE}\"]\n\n\
         [[route]]\nname = \"down\"\nto = \"mllp://{downstream}\"\nin_flight = 3\n\
         retry_initial = \"100ms\"\nretry_max = \"500ms\"\nack_timeout = \"5s\"\n",
        data = dir.join(format!("{name}-data")),
        lease = LEASE.as_secs(),
    );
    std::fs::write(&config, text).unwrap();
    AdminServe::start(&config, name)
}

fn haproxy_config(front: SocketAddr, nodes: &[&AdminServe], socket: &Path) -> String {
    let mut text = format!(
        "global\n    stats socket {socket} mode 600 level admin\n    maxconn 200\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 31m\n    timeout server 31m\n\
         \x20   timeout check 1s\n    retries 2\n    option redispatch\n\
         frontend mllp\n    bind {front}\n    default_backend hl7d_mllp\n\
         backend hl7d_mllp\n    balance roundrobin\n    option httpchk GET /ready\n    http-check expect status 200\n",
        socket = socket.display()
    );
    for (n, node) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "    server hl7d-{n} {mllp} send-proxy-v2 check port {admin} inter 200ms fall 2 rise 1 source {HAPROXY_SOURCE}\n",
            mllp = node.mllp,
            admin = node.admin.port(),
        ));
    }
    text
}

/// Waits until HAProxy's `/ready` checks passed for `servers` servers.
fn wait_until_up(socket: &Path, servers: usize) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut admin) = UnixStream::connect(socket) {
            let _ = admin.write_all(b"show stat\n");
            last.clear();
            let _ = admin.read_to_string(&mut last);
            let up = last
                .lines()
                .filter(|line| line.starts_with("hl7d_mllp,hl7d-"))
                .filter(|line| line.split(',').any(|field| field == "UP"))
                .count();
            if up == servers {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("HAProxy never marked {servers} hl7d nodes up; last state:\n{last}");
}

/// One message sent and its ACK read: MSA-1, or `None` when the connection failed or no
/// answer came within 5 s (the caller reconnects and sends again).
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

/// Streams `patient`'s messages through `front`, each until it is answered AA, until
/// `stop`; returns the control ids ACKed, in order.
async fn sender(front: SocketAddr, patient: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked = Vec::new();
    let mut conn: Option<TcpStream> = None;
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let id = format!("{patient}-{n:04}");
        let message = format!(
            "MSH|^~\\&|LAB|FAC|HL7D|FAC|20261201||ADT^A01^ADT_A01|{id}|P|2.5\rPID|1||{patient}^^^HOSP\r"
        );
        loop {
            assert!(Instant::now() < deadline, "{id} never answered AA");
            if conn.is_none() {
                conn = TcpStream::connect(front).await.ok();
            }
            if let Some(stream) = conn.as_mut() {
                if try_exchange(stream, message.as_bytes()).await.as_deref() == Some("AA") {
                    break;
                }
            }
            conn = None;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked.push(id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behind_haproxy_survive_a_sigkill_with_every_message_delivered_in_lane_order() {
    let test = "two_nodes_behind_haproxy_survive_a_sigkill";
    let Some(db) = TestDb::create(test).await else { return };
    let Some(haproxy_binary) = haproxy(test) else { return };
    let tmp = tempdir("scale-out");
    let received = Arc::new(Received::default());
    let down = downstream(received.clone()).await;
    let mut a = start_node(tmp.path(), "node-a", &db.url, down);
    let b = start_node(tmp.path(), "node-b", &db.url, down);
    let front = free_port();
    let socket = tmp.path().join("haproxy.sock");
    let config = tmp.path().join("haproxy.cfg");
    std::fs::write(&config, haproxy_config(front, &[&a, &b], &socket)).unwrap();
    let _haproxy = Haproxy::start(&haproxy_binary, &config);
    tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || wait_until_up(&socket, 2)
    })
    .await
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> =
        (0..PATIENTS).map(|p| tokio::spawn(sender(front, format!("P{p}"), stop.clone()))).collect();

    // Mid-stream, at a moment node-a holds lanes: kill it.
    let client = db.client().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (a_lanes, killed): (Vec<String>, Instant) = loop {
        let rows = client
            .query("SELECT lane FROM delivery_leases WHERE node = 'node-a' AND expires_at > now()", &[])
            .await
            .unwrap();
        if !rows.is_empty() {
            a.kill();
            let killed = Instant::now();
            // What node-a held when it died: read again now that it cannot take or give
            // back a lane any more (between the query above and the kill it still could; a
            // COMMIT it sent just before dying is given a moment to land).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let rows = client
                .query("SELECT lane FROM delivery_leases WHERE node = 'node-a' AND expires_at > now()", &[])
                .await
                .unwrap();
            break (rows.iter().map(|row| row.get::<_, String>(0)).collect(), killed);
        }
        assert!(Instant::now() < deadline, "node-a never held a lane");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let a_patients: Vec<String> =
        a_lanes.iter().map(|lane| lane.rsplit('/').next().unwrap().to_owned()).collect();
    eprintln!("killed node-a holding lanes of {a_patients:?}");
    // `routes status` (from any node's configuration) shows the dead node's lanes as its
    // own until their leases expire.
    let status_config = tmp.path().join("node-b.toml");
    let status = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(["routes", "status", "--json", "--config"])
            .arg(&status_config)
            .output()
            .expect("run hl7d routes status")
    })
    .await
    .unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stderr));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let route = &status[0];
    assert_eq!(route["name"], "down");
    for field in ["pending", "in_flight", "delivered", "parked", "held_lanes", "oldest_pending_seconds"] {
        assert!(route[field].is_u64(), "{field}: {route}");
    }
    let held_by_a = route["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|holder| holder["node"] == "node-a")
        .map_or(0, |holder| holder["lanes"].as_array().unwrap().len());
    if killed.elapsed() < LEASE * 2 / 3 {
        assert_eq!(held_by_a, a_lanes.len(), "routes status names node-a's lanes: {route}");
    }

    // The stream goes on through node-b for a while, then stops.
    tokio::time::sleep(LEASE + Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (p, sender) in senders.into_iter().enumerate() {
        acked.insert(format!("P{p}"), sender.await.unwrap());
    }
    let total: usize = acked.values().map(Vec::len).sum();

    // Every ACKed message stored exactly once (a resend to the other node after the kill
    // is a duplicate, not a second row), and nothing else stored.
    let rows =
        client.query("SELECT control_id, count(*) FROM messages GROUP BY control_id", &[]).await.unwrap();
    let stored: HashMap<String, i64> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(stored.len(), total, "stored {} distinct messages, ACKed {total}", stored.len());
    for id in acked.values().flatten() {
        assert_eq!(stored.get(id), Some(&1), "{id} stored once");
    }

    // Every one delivered (node-b alone now), within a bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: i64 = client
            .query_one("SELECT count(*) FROM deliveries WHERE state = 'delivered'", &[])
            .await
            .unwrap()
            .get(0);
        if delivered as usize == total {
            break;
        }
        assert!(Instant::now() < deadline, "{delivered} of {total} delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // At the downstream: each lane in order, at least once; a repeat only of the lane's
    // latest message.
    let got = received.0.lock().unwrap().clone();
    let mut lanes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut repeats = 0;
    for (patient, id, _) in &got {
        let seen = lanes.entry(patient.clone()).or_default();
        if seen.last() == Some(id) {
            repeats += 1;
        } else {
            assert!(!seen.contains(id), "{id} again after later messages of {patient}: {seen:?}");
            seen.push(id.clone());
        }
    }
    assert_eq!(lanes, acked, "every ACKed message at the downstream, each lane in the order sent");

    // The dead node's lanes went on within lease + 10 s: the first arrival on each of them
    // after the kill.
    let mut takeover = Duration::ZERO;
    for patient in &a_patients {
        let first = got
            .iter()
            .find(|(p, _, at)| p == patient && *at > killed)
            .map(|(_, _, at)| at.duration_since(killed))
            .unwrap_or_else(|| panic!("nothing of {patient} after the kill"));
        takeover = takeover.max(first);
    }
    eprintln!(
        "scale-out e2e: {total} messages ACKed through HAProxy, {} arrivals downstream ({repeats} repeats); \
         node-a's lanes {a_patients:?} taken over {takeover:?} after its SIGKILL (lease {LEASE:?})",
        got.len()
    );
    assert!(takeover <= LEASE + Duration::from_secs(10), "takeover took {takeover:?}");
    assert!(repeats <= a_patients.len(), "{repeats} repeats: only messages in flight at the kill repeat");
}
