//! The PostgreSQL store's database restarted under load (issue 16, "Done when"): a real
//! `hl7d serve` on a cluster of the test's own (restarting the shared test cluster would
//! cut the tests running beside this one), senders streaming through it, `pg_ctl restart
//! -m fast` mid-stream. Every message ACKed AA must be stored exactly once, the senders see
//! AE or a closed connection for the others (never AA for an unstored message), traffic
//! resumes by itself, and `/ready` goes 503 and back to 200.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pg_store::adt;
use crate::support::pg::{Cluster, TestDb};
use crate::support::{frame, msa, tempdir, AdminServe, WAIT};

const TEST: &str = "a_database_restart_mid_stream_loses_no_acknowledged_message";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_stream_loses_no_acknowledged_message() {
    let Some(cluster) = Cluster::start(TEST).map(Arc::new) else { return };
    let db = TestDb::create_on(&cluster.url, "restart").await;
    let dir = tempdir("pg-restart");
    let config = dir.join("hl7d.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\nurl = {:?}\nsslmode = \"disable\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n",
            dir.join("data"),
            db.url
        ),
    )
    .unwrap();
    let node = AdminServe::start(&config, "hl7d serve");
    wait_ready(node.admin).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Outcomes::default()));
    let senders: Vec<_> = (0..4)
        .map(|n| tokio::spawn(sender(node.mllp, format!("R{n}"), stop.clone(), acked.clone(), log.clone())))
        .collect();
    let readiness = Arc::new(Mutex::new(Vec::new()));
    let poller = tokio::spawn({
        let (stop, readiness, admin) = (stop.clone(), readiness.clone(), node.admin);
        async move {
            while !stop.load(Ordering::Relaxed) {
                let status = ready(admin).await;
                readiness.lock().unwrap().push(status);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });

    wait_for(&acked, 100, "traffic before the restart").await;
    let before_restart = readiness.lock().unwrap().len();
    let restarting = cluster.clone();
    tokio::task::spawn_blocking(move || restarting.restart()).await.unwrap();
    let after_restart = acked.load(Ordering::Relaxed);
    // Traffic resumes by itself: no restart of hl7d, no operator.
    wait_for(&acked, after_restart + 200, "traffic after the restart").await;
    // Until /ready answers 200 again (the probe or the next batch).
    wait_ready(node.admin).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    poller.await.unwrap();

    let statuses = readiness.lock().unwrap()[before_restart..].to_vec();
    assert!(statuses.contains(&Some(503)), "/ready never answered 503 during the restart: {statuses:?}");
    let outcomes = log.lock().unwrap().clone();
    assert!(
        outcomes.errors + outcomes.closed > 0,
        "the restart was not noticed by any sender (errors {}, closed {})",
        outcomes.errors,
        outcomes.closed
    );
    let client = db.client().await;
    let stored: HashMap<String, i64> = client
        .query("SELECT control_id, count(*) FROM messages WHERE status = 'accepted' GROUP BY control_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for id in &outcomes.aa {
        assert_eq!(stored.get(id), Some(&1), "{id} was ACKed AA: stored exactly once");
    }
    let doubled: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    eprintln!(
        "{TEST}: {} AA, {} AE, {} closed connections; /ready samples after the restart: {}",
        outcomes.aa.len(),
        outcomes.errors,
        outcomes.closed,
        statuses.len()
    );
    node.stop();
}

#[derive(Debug, Default, Clone)]
struct Outcomes {
    /// Control ids answered AA.
    aa: Vec<String>,
    /// AE answers (each followed by a resend of the same message).
    errors: usize,
    /// Connections that closed or failed before an answer (the message resent).
    closed: usize,
}

/// One sender: fresh control ids one at a time; after AE or a closed connection it resends
/// the same message (on a new connection for the latter), as an HL7 sender does.
async fn sender(
    addr: SocketAddr,
    prefix: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    log: Arc<Mutex<Outcomes>>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("{prefix}-{n}");
        if conn.is_none() {
            match TcpStream::connect(addr).await {
                Ok(stream) => conn = Some(stream),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let stream = conn.as_mut().unwrap();
        let answer = async {
            stream.write_all(&frame(&adt(&id, &format!("P{n}")))).await.ok()?;
            read_frame(stream).await
        };
        match tokio::time::timeout(WAIT, answer).await.ok().flatten() {
            Some(ack) => {
                let (code, control) = msa(&ack);
                assert_eq!(control, id);
                match code.as_str() {
                    "AA" => {
                        log.lock().unwrap().aa.push(id);
                        acked.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                    "AE" => {
                        log.lock().unwrap().errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("{id}: unexpected {other}"),
                }
            }
            None => {
                log.lock().unwrap().closed += 1;
                conn = None;
            }
        }
    }
}

/// One MLLP frame's payload; `None` on EOF or error.
async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut frame = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        frame.push(byte[0]);
        if frame.ends_with(&[0x1C, 0x0D]) {
            let start = frame.iter().position(|&b| b == 0x0B)?;
            return Some(frame[start + 1..frame.len() - 2].to_vec());
        }
    }
}

/// `GET /ready`'s status code, `None` when the admin endpoint does not answer.
async fn ready(admin: SocketAddr) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(admin).await.ok()?;
        stream.write_all(b"GET /ready HTTP/1.1\r\nHost: hl7d\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        String::from_utf8_lossy(&response).split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange).await.ok().flatten()
}

/// Until `/ready` answers 200 (bounded).
async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while ready(admin).await != Some(200) {
        assert!(Instant::now() < deadline, "/ready did not answer 200 within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(acked: &AtomicUsize, count: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(Ordering::Relaxed) < count {
        assert!(Instant::now() < deadline, "{what}: {} of {count} ACKed", acked.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
