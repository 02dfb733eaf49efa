//! The durable store behind a real listener: round trip through `hl7d messages`, duplicate
//! detection, store failures (injected, full database, full file system), and SIGKILL of a
//! real `hl7d serve` under load.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hl7d::store::{
    Appended, BoxFuture, ConnectionSetup, Filter, MessageStore, NewMessage, Reader, SqliteOptions,
    SqliteStore, Status, StoreError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// An original-mode message (AA/AE) with this control id.
pub(crate) fn original(control_id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ORU^R01^ORU_R01|{control_id}|P|2.5\rPID|1||{control_id}\r")
        .into_bytes()
}

/// An enhanced-mode message (MSH-15 = AL: CA/CE) with this control id.
pub(crate) fn enhanced(control_id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ADT^A01^ADT_A01|{control_id}|P|2.5|||AL|NE\rPID|1||{control_id}\r")
        .into_bytes()
}

/// Sends one message and returns (MSA-1, MSA-2).
pub(crate) async fn exchange(conn: &mut TcpStream, payload: &[u8]) -> (String, String) {
    send(conn, payload).await;
    msa(&read_frame(conn).await)
}

pub(crate) fn open_store(dir: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(dir, SqliteOptions::default()).expect("store opens"))
}

/// Runs `hl7d` with these arguments and returns its stdout; panics if it fails.
pub(crate) fn hl7d(args: &[&str]) -> Vec<u8> {
    let output = Command::new(env!("CARGO_BIN_EXE_hl7d")).args(args).output().expect("run hl7d");
    assert!(
        output.status.success(),
        "hl7d {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A config file with `[store] path = dir` and one plaintext listener on `listen`.
pub(crate) fn write_config(dir: &Path, store: &Path, listen: SocketAddr) -> PathBuf {
    let path = dir.join("hl7d.toml");
    let text = format!(
        "[store]\npath = {store:?}\n\n[log]\nlevel = \"info\"\n\n[[listener]]\nname = \"lab\"\nlisten = \"{listen}\"\nplaintext = true\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn messages_round_trip_through_list_show_and_export() {
    let tmp = tempdir("roundtrip");
    let store_dir = tmp.path().join("data");
    let store = open_store(&store_dir);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();
    let cp1252 = fixture("windows1252_adt_a08.hl7");
    let utf8 = fixture("utf8_multilingual_adt_a08.hl7");
    let messages = [original("RT-1"), cp1252.clone(), enhanced("RT-3"), utf8.clone()];
    let mut codes = Vec::new();
    for message in &messages {
        codes.push(exchange(&mut conn, message).await.0);
    }
    assert_eq!(codes, ["AA", "AA", "CA", "CA"]);

    // Read through the library while the server runs.
    let reader = Reader::open(&store_dir).unwrap();
    let listed = reader.list(&Filter { oldest_first: true, ..Filter::default() }).unwrap();
    assert_eq!(listed.len(), 4);
    let peer = conn.local_addr().unwrap().to_string();
    for (row, sent) in listed.iter().zip(&messages) {
        assert_eq!(row.listener, "lab");
        assert_eq!(row.peer, peer);
        assert_eq!(row.size, sent.len() as u64);
        assert_eq!(row.status, Status::Accepted);
        assert_eq!(row.duplicate_count, 0);
        assert_eq!(reader.message(row.id).unwrap().unwrap().raw.as_deref(), Some(&sent[..]));
    }
    assert_eq!(listed[0].control_id, "RT-1");
    assert_eq!(listed[0].message_type, "ORU^R01");
    assert_eq!((listed[0].sending_application.as_str(), listed[0].sending_facility.as_str()), ("LAB", "FAC"));
    assert_eq!((listed[0].processing_id.as_str(), listed[0].version.as_str()), ("P", "2.5"));
    assert_eq!(listed[1].encoding, "windows-1252");
    assert_eq!(listed[2].ack_code.as_deref(), Some("CA"));
    assert_eq!(listed[3].encoding, "utf-8");

    // And through the CLI, also while the server runs.
    let config = write_config(tmp.path(), &store_dir, "127.0.0.1:0".parse().unwrap());
    let config = config.to_str().unwrap();
    let json = hl7d(&["messages", "list", "--config", config, "--json"]);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    // Newest first.
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, listed.iter().rev().map(|m| m.id).collect::<Vec<_>>());
    let newest = lines.iter().find(|l| l["control_id"] == "CP1252-0001").expect("the Windows-1252 message");
    for key in [
        "id",
        "listener",
        "control_id",
        "message_type",
        "received_at",
        "peer",
        "client_thumbprint",
        "encoding",
        "size",
        "ack_code",
        "duplicate_count",
    ] {
        assert!(newest.get(key).is_some(), "list --json lacks {key}: {newest}");
    }
    assert_eq!(newest["control_id"], "CP1252-0001");
    assert_eq!(newest["encoding"], "windows-1252");
    assert_eq!(newest["ack_code"], "AA");
    assert_eq!(newest["peer"], peer.as_str());
    assert!(newest["client_thumbprint"].is_null());

    let filtered = hl7d(&["messages", "list", "--config", config, "--json", "--control-id", "RT-3"]);
    assert_eq!(String::from_utf8(filtered).unwrap().lines().count(), 1);
    let table = String::from_utf8(hl7d(&["messages", "list", "--config", config, "--limit", "2"])).unwrap();
    assert_eq!(table.lines().count(), 3, "header and two rows:\n{table}");

    let id = listed[1].id.to_string();
    assert_eq!(hl7d(&["messages", "show", "--config", config, &id, "--raw"]), cp1252);
    let shown = String::from_utf8(hl7d(&["messages", "show", "--config", config, &id])).unwrap();
    assert!(shown.contains("encoding             windows-1252"), "{shown}");
    // Decoded from Windows-1252, one segment per line.
    assert!(shown.lines().any(|l| l.starts_with("PID|") && l.contains("LEFÈVRE^RENÉE")), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("NTE|") && l.contains('€') && l.contains('“')), "{shown}");

    let out = tmp.path().join("export");
    hl7d(&["messages", "export", "--config", config, "--out", out.to_str().unwrap()]);
    let mut exported: Vec<(String, Vec<u8>)> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    exported.sort_by_key(|(name, _)| name.split('-').next().unwrap().parse::<i64>().unwrap());
    assert_eq!(exported.len(), 4);
    for ((name, bytes), (row, sent)) in exported.iter().zip(listed.iter().zip(&messages)) {
        assert!(name.starts_with(&format!("{:012}-", row.id)) && name.ends_with(".hl7"), "{name}");
        assert_eq!(bytes, sent, "{name} holds the exact bytes");
    }

    server.shutdown(WAIT).await;
    store.close();
    // A clean shutdown folds the WAL into the database file.
    let wal = store_dir.join("messages.db-wal");
    assert!(std::fs::metadata(&wal).map_or(true, |m| m.len() == 0), "WAL left behind after close");
}

#[tokio::test]
async fn a_resent_message_is_stored_once_and_acknowledged_each_time() {
    let tmp = tempdir("duplicate");
    let store = open_store(tmp.path());
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let addr = server.local_addr("lab").unwrap();
    let message = original("DUP-1");

    // The ACK is lost: the sender never reads it and drops the connection.
    let mut first = TcpStream::connect(addr).await.unwrap();
    send(&mut first, &message).await;
    drop(first);
    // It resends on a new connection, and again after that ACK is "lost" too.
    for _ in 0..2 {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        assert_eq!(exchange(&mut conn, &message).await, ("AA".into(), "DUP-1".into()));
    }
    // Enhanced mode: the repeat gets the original positive answer, CA.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let commit = enhanced("DUP-2");
    assert_eq!(exchange(&mut conn, &commit).await.0, "CA");
    assert_eq!(exchange(&mut conn, &commit).await.0, "CA");
    // Same control id, different bytes: a different message, stored.
    let mut changed = message.clone();
    changed.extend_from_slice(b"NTE|1||corrected\r");
    assert_eq!(exchange(&mut conn, &changed).await.0, "AA");

    let reader = Reader::open(tmp.path()).unwrap();
    let dup1 = reader.list(&Filter { control_id: Some("DUP-1".into()), ..Filter::default() }).unwrap();
    assert_eq!(dup1.len(), 2, "the original once, the corrected version once");
    let original_row = dup1.iter().find(|m| m.size == message.len() as u64).unwrap();
    assert_eq!(original_row.duplicate_count, 2);
    assert!(original_row.last_duplicate_at.is_some());
    let dup2 = reader.list(&Filter { control_id: Some("DUP-2".into()), ..Filter::default() }).unwrap();
    assert_eq!((dup2.len(), dup2[0].duplicate_count), (1, 1));
    assert_eq!(store.stats().duplicates, 3);
    server.shutdown(WAIT).await;
}

#[tokio::test]
async fn duplicate_window_zero_stores_every_copy() {
    let tmp = tempdir("window0");
    let store = open_store(tmp.path());
    let mut listener = plain("lab");
    listener.duplicate_window = None;
    let server = start_with_store(vec![listener], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(exchange(&mut conn, &original("SAME")).await.0, "AA");
    }
    assert_eq!(Reader::open(tmp.path()).unwrap().count().unwrap(), 3);
    server.shutdown(WAIT).await;
}

/// A store that fails every append while `failing` is set, as a disk that returns I/O
/// errors would, and otherwise passes through to the real store.
struct FlakyStore {
    inner: Arc<SqliteStore>,
    failing: AtomicBool,
}

impl MessageStore for FlakyStore {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        if self.failing.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreError::Unavailable("injected i/o error".into()))));
        }
        self.inner.append(message)
    }
}

#[tokio::test]
async fn a_failing_store_gives_error_acks_and_recovers() {
    let tmp = tempdir("flaky");
    let inner = open_store(tmp.path());
    let store = Arc::new(FlakyStore { inner: inner.clone(), failing: AtomicBool::new(true) });
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();

    send(&mut conn, &original("F-1")).await;
    let ack = String::from_utf8(read_frame(&mut conn).await).unwrap();
    assert_eq!(msa(ack.as_bytes()), ("AE".into(), "F-1".into()));
    assert!(ack.split('\r').any(|s| s.starts_with("ERR|") && s.contains("207")), "ERR with 207: {ack:?}");
    assert_eq!(exchange(&mut conn, &enhanced("F-2")).await.0, "CE");

    // The disk recovers: the same connection is served, the resent messages are stored.
    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(exchange(&mut conn, &original("F-1")).await.0, "AA");
    assert_eq!(exchange(&mut conn, &enhanced("F-2")).await.0, "CA");
    let reader = Reader::open(tmp.path()).unwrap();
    let stored: Vec<String> =
        reader.list(&Filter::default()).unwrap().into_iter().map(|m| m.control_id).collect();
    assert_eq!(stored, ["F-2", "F-1"]);
    server.shutdown(WAIT).await;
}

/// A payload of about `size` bytes (a big OBX), unique per control id.
fn bulky(control_id: &str, size: usize) -> Vec<u8> {
    let mut message = original(control_id);
    message.extend_from_slice(b"OBX|1|ED|PDF||^AP^^Base64^");
    message.extend(std::iter::repeat_n(b'A', size));
    message.extend_from_slice(b"\r");
    message
}

/// A size cap on the store's database, applied by SQLite itself (`max_page_count`): it
/// stands in for a full disk, since inserts then fail with SQLITE_FULL on the real write
/// path. `max_page_count` is a per-connection setting, so it is applied through the
/// store's connection setup, which runs again each time the writer reopens its connection
/// after a failed write: lifting the cap takes effect at that reopen.
#[derive(Default)]
struct SizeCap {
    /// Absolute page limit, taken when the writer's connection first opens.
    pages: Mutex<Option<i64>>,
    lifted: AtomicBool,
}

impl SizeCap {
    /// A store in `dir` whose database may grow by `room` pages beyond its size at open.
    fn open_store(self: &Arc<Self>, dir: &Path, room: i64) -> Arc<SqliteStore> {
        let cap = self.clone();
        let setup = ConnectionSetup::new(move |conn: &rusqlite::Connection| {
            if cap.lifted.load(Ordering::SeqCst) {
                return Ok(());
            }
            let now: i64 = conn.pragma_query_value(None, "page_count", |row| row.get(0))?;
            let limit = *cap.pages.lock().unwrap().get_or_insert(now + room);
            conn.pragma_update(None, "max_page_count", limit)
        });
        let options = SqliteOptions { connection_setup: Some(setup), ..SqliteOptions::default() };
        Arc::new(SqliteStore::open(dir, options).expect("store opens"))
    }
}

#[tokio::test]
async fn a_full_database_gives_error_acks_then_recovers_without_restart() {
    // The file-system variant is the next test.
    let tmp = tempdir("full");
    let cap = Arc::new(SizeCap::default());
    let store = cap.open_store(tmp.path(), 8);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();
    assert_eq!(exchange(&mut conn, &bulky("FULL-0", 100)).await.0, "AA");

    let mut accepted = vec!["FULL-0".to_string()];
    let mut refused = None;
    for i in 1..=20 {
        let id = format!("FULL-{i}");
        match exchange(&mut conn, &bulky(&id, 8 * 1024)).await.0.as_str() {
            "AA" => accepted.push(id),
            "AE" => {
                refused = Some(id);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let refused = refused.expect("the size cap is reached within 20 messages");
    assert!(accepted.len() > 1, "some 8 KiB messages fit before the cap: {accepted:?}");
    // The writer reopened its connection after the failure: the cap holds there too.
    assert_eq!(exchange(&mut conn, &bulky("FULL-again", 8 * 1024)).await.0, "AE", "still full");
    assert!(store.stats().failed_batches >= 2);

    // Room again: same process, same connection.
    cap.lifted.store(true, Ordering::SeqCst);
    assert_eq!(exchange(&mut conn, &bulky(&refused, 8 * 1024)).await.0, "AA");
    accepted.push(refused);
    let reader = Reader::open(tmp.path()).unwrap();
    assert_eq!(reader.integrity_check().unwrap(), "ok");
    let mut stored: Vec<String> =
        reader.list(&Filter::default()).unwrap().into_iter().map(|m| m.control_id).collect();
    stored.sort();
    accepted.sort();
    assert_eq!(stored, accepted, "every AA stored, nothing else");
    server.shutdown(WAIT).await;
}

/// A small tmpfs mounted for one test; unmounted on drop.
struct SmallFs(TestDir);

impl SmallFs {
    /// `None` when this process may not mount (not root, or no CAP_SYS_ADMIN in a container).
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempdir("tmpfs");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallFs(dir))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn a_full_file_system_gives_error_acks_then_recovers_without_restart() {
    let Some(fs) = SmallFs::mount("2m") else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the max_page_count test covers SQLITE_FULL"
        );
        return;
    };
    let data = fs.0.path().join("data");
    let store = open_store(&data);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();
    assert_eq!(exchange(&mut conn, &original("DISK-0")).await.0, "AA");

    // Fill the file system, then give back 48 KiB.
    let ballast = fs.0.path().join("ballast");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let len = file.metadata().unwrap().len();
        file.set_len(len.saturating_sub(48 * 1024)).unwrap();
    }
    let mut accepted = vec!["DISK-0".to_string()];
    let mut refused = None;
    for i in 1..=40 {
        let id = format!("DISK-{i}");
        match exchange(&mut conn, &bulky(&id, 16 * 1024)).await.0.as_str() {
            "AA" => accepted.push(id),
            "AE" => {
                refused = Some(id);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let refused = refused.expect("the file system fills within 40 messages");

    std::fs::remove_file(&ballast).unwrap();
    // Allow for the writer's reopen back-off.
    assert_eq!(
        exchange(&mut conn, &bulky(&refused, 16 * 1024)).await.0,
        "AA",
        "accepted again after space is freed"
    );
    accepted.push(refused);
    server.shutdown(WAIT).await;
    store.close();
    let reader = Reader::open(&data).unwrap();
    assert_eq!(reader.integrity_check().unwrap(), "ok");
    let mut stored: Vec<String> =
        reader.list(&Filter::default()).unwrap().into_iter().map(|m| m.control_id).collect();
    stored.sort();
    accepted.sort();
    assert_eq!(stored, accepted);
    drop(reader);
}

// ---------------------------------------------------------------------------------------
// Crash test: a real `hl7d serve` process, SIGKILLed under load.

/// A small xorshift generator: the kill moments are random; the seed is printed, and
/// `HL7D_CRASH_SEED=<seed>` replays the same moments.
struct Rng(u64);

/// The environment variable that replays a crash test run.
const CRASH_SEED: &str = "HL7D_CRASH_SEED";

impl Rng {
    /// Seeded from [`CRASH_SEED`] when set (a non-zero integer), else fresh for every run.
    fn from_env_or_fresh() -> Rng {
        use std::hash::{BuildHasher, Hasher};
        let seed = match std::env::var(CRASH_SEED) {
            Ok(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|&seed| seed != 0)
                .unwrap_or_else(|| panic!("{CRASH_SEED}={text:?}: expected a non-zero integer")),
            // Randomly keyed per process by the standard library; never 0 (xorshift's fixed point).
            Err(_) => std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        };
        Rng(seed)
    }

    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Reads one MLLP frame (default framing) from a buffered stream; `None` on EOF or error.
async fn read_ack(conn: &mut tokio::io::BufReader<TcpStream>) -> Option<Vec<u8>> {
    use tokio::io::AsyncBufReadExt;
    let mut frame = Vec::new();
    let n = tokio::time::timeout(WAIT, conn.read_until(0x1C, &mut frame)).await.ok()?.ok()?;
    if n == 0 || frame.last() != Some(&0x1C) {
        return None;
    }
    let mut cr = [0u8; 1];
    conn.read_exact(&mut cr).await.ok()?;
    let start = frame.iter().position(|&b| b == 0x0B)?;
    Some(frame[start + 1..frame.len() - 1].to_vec())
}

/// One sender: messages with fresh control ids, one at a time, until the server goes away.
/// Records every control id that got a positive ACK.
async fn sender(addr: SocketAddr, prefix: String, enhanced_mode: bool, acked: Arc<Mutex<Vec<String>>>) {
    let Ok(stream) = TcpStream::connect(addr).await else { return };
    let mut conn = tokio::io::BufReader::new(stream);
    for n in 0.. {
        let id = format!("{prefix}-{n}");
        let payload = if enhanced_mode { enhanced(&id) } else { original(&id) };
        if conn.get_mut().write_all(&frame(&payload)).await.is_err() {
            return;
        }
        let Some(ack) = read_ack(&mut conn).await else { return };
        let (code, control) = msa(&ack);
        assert_eq!(control, id);
        match code.as_str() {
            "AA" | "CA" => acked.lock().unwrap().push(id),
            other => panic!("{id}: unexpected {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    const ROUNDS: usize = 6;
    const SENDERS: usize = 8;
    let mut rng = Rng::from_env_or_fresh();
    let seed = rng.0;
    eprintln!("crash test seed {seed} (replay: {CRASH_SEED}={seed} cargo test --test it sigkill_under_load)");
    let tmp = tempdir("crash");
    let store = tmp.path().join("data");
    let started = Instant::now();
    let mut all_acked: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let server = ServeProcess::start(tmp.path(), &store);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| tokio::spawn(sender(server.addr, format!("R{round}S{s}"), s % 2 == 1, acked.clone())))
            .collect();
        let kill_after = Duration::from_millis(100 + rng.next(600));
        tokio::time::sleep(kill_after).await;
        // On a very slow machine, make sure the load has really started.
        let deadline = Instant::now() + WAIT;
        while acked.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::task::spawn_blocking(move || server.kill()).await.unwrap();
        for sender in senders {
            tokio::time::timeout(WAIT, sender).await.expect("sender ends after the kill").unwrap();
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(!acked.is_empty(), "seed {seed}, round {round}: no message acknowledged in {kill_after:?}");
        eprintln!("round {round}: killed after {kill_after:?}; {} acknowledged", acked.len());
        all_acked.extend(acked);

        // Restart on the same store: it must open (recovering the WAL) and serve.
        let server = ServeProcess::start(tmp.path(), &store);
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        let probe = format!("R{round}-after-restart");
        assert_eq!(exchange(&mut conn, &original(&probe)).await.0, "AA");
        all_acked.push(probe);

        let reader = Reader::open(&store).unwrap();
        assert_eq!(reader.integrity_check().unwrap(), "ok", "seed {seed}");
        let mut stored: HashMap<String, usize> = HashMap::new();
        for message in reader.list(&Filter::default()).unwrap() {
            *stored.entry(message.control_id).or_default() += 1;
        }
        for id in &all_acked {
            assert_eq!(
                stored.get(id).copied(),
                Some(1),
                "seed {seed}: {id} acknowledged but stored {:?} times",
                stored.get(id)
            );
        }
        let twice: HashSet<_> = stored.iter().filter(|(_, &n)| n > 1).map(|(id, _)| id).collect();
        assert!(twice.is_empty(), "seed {seed}: stored more than once: {twice:?}");
        drop(reader);
        drop(conn);
        server.kill();
    }
    assert!(started.elapsed() < Duration::from_secs(60), "crash test took {:?}", started.elapsed());
}

/// Runs `hl7d` and returns (exit code, stdout, stderr), whatever the outcome.
fn hl7d_output(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hl7d")).args(args).output().expect("run hl7d");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Control ids of the stored messages, oldest first.
fn stored_control_ids(dir: &Path) -> Vec<String> {
    let reader = Reader::open(dir).unwrap();
    let all = reader.list(&Filter { oldest_first: true, ..Filter::default() }).unwrap();
    all.into_iter().map(|m| m.control_id).collect()
}

/// #13 item 11: export named files `9-…`, `10-…`, so `hl7d send DIR` (name order) sent
/// message 10 before message 9. Now the ids are zero-padded and name order is store order.
#[tokio::test]
async fn export_names_keep_store_order_and_send_dir_sends_in_it() {
    let tmp = tempdir("export-order");
    let store_dir = tmp.path().join("data");
    let store = open_store(&store_dir);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();
    let sent: Vec<String> = (1..=12).map(|n| format!("ORDER-{n}")).collect();
    for control_id in &sent {
        assert_eq!(exchange(&mut conn, &original(control_id)).await.0, "AA");
    }
    let config = write_config(tmp.path(), &store_dir, "127.0.0.1:0".parse().unwrap());
    let out = tmp.path().join("export");
    hl7d(&["messages", "export", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let ids: Vec<i64> = names.iter().map(|n| n.split('-').next().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "name order is store order: {names:?}");
    assert!(names.iter().all(|n| n.split('-').next().unwrap().len() == 12), "{names:?}");

    // Sending the directory replays the messages in store order.
    let replay_dir = tmp.path().join("replay");
    let replay = open_store(&replay_dir);
    let second = start_with_store(vec![plain("lab")], replay.clone()).await;
    let to = second.local_addr("lab").unwrap().to_string();
    let out_arg = out.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || hl7d(&["send", "--to", &to, &out_arg])).await.unwrap();
    assert_eq!(stored_control_ids(&replay_dir), sent);
    second.shutdown(WAIT).await;
    server.shutdown(WAIT).await;
}

/// #13 item 11: `list --limit` took the newest, `export --limit` the oldest; and `list`
/// cut at 100 without saying so.
#[tokio::test]
async fn limit_takes_the_newest_in_list_and_export_and_list_says_it_cut() {
    let tmp = tempdir("limit");
    let store_dir = tmp.path().join("data");
    let store = open_store(&store_dir);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();
    for n in 1..=5 {
        exchange(&mut conn, &original(&format!("LIMIT-{n}"))).await;
    }
    let config = write_config(tmp.path(), &store_dir, "127.0.0.1:0".parse().unwrap());
    let config = config.to_str().unwrap();

    let (code, stdout, stderr) =
        hl7d_output(&["messages", "list", "--config", config, "--json", "--limit", "2"]);
    assert_eq!(code, 0, "{stderr}");
    let listed: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["control_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(listed, ["LIMIT-5", "LIMIT-4"]);
    assert!(stderr.contains("2 of 5 shown; --limit"), "{stderr}");

    let out = tmp.path().join("export");
    let (code, _, stderr) = hl7d_output(&[
        "messages",
        "export",
        "--config",
        config,
        "--out",
        out.to_str().unwrap(),
        "--limit",
        "2",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("2 of 5"), "{stderr}");
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].ends_with("-LIMIT-4.hl7") && names[1].ends_with("-LIMIT-5.hl7"), "{names:?}");

    // Not cut: nothing said.
    let (code, stdout, stderr) = hl7d_output(&["messages", "list", "--config", config, "--limit", "5"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    assert!(!stderr.contains("shown"), "{stderr}");
    server.shutdown(WAIT).await;
}

/// #13 item 11: a misspelt `--listener` listed nothing, as if the listener had no
/// messages. A listener the configuration no longer has but the store does is still known.
#[tokio::test]
async fn an_unknown_listener_is_a_usage_error_naming_the_known_ones() {
    let tmp = tempdir("listener-name");
    let store_dir = tmp.path().join("data");
    let store = open_store(&store_dir);
    let server = start_with_store(vec![plain("lab"), plain("retired")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("retired").unwrap()).await.unwrap();
    exchange(&mut conn, &original("OLD-1")).await;
    // The CLI's configuration names only `lab`.
    let config = write_config(tmp.path(), &store_dir, "127.0.0.1:0".parse().unwrap());
    let config = config.to_str().unwrap();
    for command in ["list", "purge"] {
        let (code, _, stderr) = hl7d_output(&["messages", command, "--config", config, "--listener", "lba"]);
        assert_eq!(code, 64, "{command}: {stderr}");
        assert!(stderr.contains("\"lba\"") && stderr.contains("lab, retired"), "{command}: {stderr}");
    }
    let (code, stdout, stderr) =
        hl7d_output(&["messages", "list", "--config", config, "--listener", "retired"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("OLD-1"), "{stdout}");
    let (code, stdout, _) = hl7d_output(&["messages", "list", "--config", config, "--listener", "lab"]);
    assert_eq!((code, stdout.lines().count()), (0, 1), "known, no messages: the header only");
    server.shutdown(WAIT).await;
}

/// #13 item 12: a benchmark against a production store left its messages there, looking
/// like real ones, with no way to remove them. Now they carry MSH-3 HL7D-BENCH and MSH-11
/// T, and `messages purge` deletes them by filter while `hl7d serve` keeps running,
/// leaving an audit line.
#[tokio::test]
async fn bench_messages_are_purged_from_a_running_server() {
    let tmp = tempdir("purge");
    let store_dir = tmp.path().join("data");
    let serve = ServeProcess::start(tmp.path(), &store_dir);
    let mut conn = TcpStream::connect(serve.addr).await.unwrap();
    for n in 1..=3 {
        assert_eq!(exchange(&mut conn, &original(&format!("REAL-{n}"))).await.0, "AA");
    }
    let to = serve.addr.to_string();
    let bench = tokio::task::spawn_blocking(move || {
        hl7d_output(&["bench", "--to", &to, "--messages", "40", "--connections", "2", "--quiet", "--json"])
    })
    .await
    .unwrap();
    assert_eq!(bench.0, 0, "{} {}", bench.1, bench.2);
    let reader = Reader::open(&store_dir).unwrap();
    let bench_filter = Filter { sending_application: Some("HL7D-BENCH".into()), ..Filter::default() };
    let benched = reader.list(&bench_filter).unwrap();
    assert_eq!(benched.len(), 40);
    assert!(benched.iter().all(|m| m.processing_id == "T"), "MSH-11 = T");

    // A configuration for the CLI: the same store, and an audit file.
    let audit = tmp.path().join("audit.jsonl");
    let config = tmp.path().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {store_dir:?}\n\n[audit]\nfile = {audit:?}\n\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let purge = |extra: &[&str]| {
        let mut args = vec!["messages", "purge", "--config", config];
        args.extend_from_slice(extra);
        hl7d_output(&args)
    };

    // No filter: refused unless --all.
    let (code, _, stderr) = purge(&[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("--all"), "{stderr}");
    let (code, _, stderr) = purge(&["--all", "--listener", "lab"]);
    assert_eq!(code, 64, "--all with a filter: {stderr}");

    let (code, stdout, stderr) = purge(&["--sending-application", "HL7D-BENCH", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "would delete 40 message(s)");
    assert_eq!(reader.count().unwrap(), 43, "a dry run deletes nothing");
    assert!(read_audit(&audit).is_empty(), "a dry run is not audited");

    // While the server runs and a sender stays connected.
    let (code, stdout, stderr) = purge(&["--sending-application", "HL7D-BENCH", "--since", "1h"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "deleted 40 message(s)");
    assert_eq!(stored_control_ids(&store_dir), ["REAL-1", "REAL-2", "REAL-3"]);
    let line = find_line(&read_audit(&audit), &[("event", "purge")]).expect("an audit line");
    assert_eq!(line["count"], 40, "{line}");
    let filter = line["filter"].as_str().unwrap();
    assert!(filter.contains("sending_application=HL7D-BENCH") && filter.contains("since="), "{line}");
    assert!(!line["user"].as_str().unwrap_or_default().is_empty(), "{line}");

    // The server goes on storing.
    assert_eq!(exchange(&mut conn, &original("REAL-4")).await.0, "AA");
    assert_eq!(reader.count().unwrap(), 4);
    let (code, stdout, _) = purge(&["--all", "--dry-run"]);
    assert_eq!((code, stdout.trim()), (0, "would delete 4 message(s)"));
    let (code, stdout, _) = purge(&["--listener", "lab", "--until", "2000-01-01"]);
    assert_eq!((code, stdout.trim()), (0, "deleted 0 message(s)"));
    assert_eq!(reader.count().unwrap(), 4);
    serve.kill();
}

/// Issue 14: the listener reads the key fields of each message as it stores it, and `hl7d
/// messages list` finds messages by patient, order, type glob and sender.
#[tokio::test]
async fn messages_are_found_by_patient_order_type_and_sender() {
    let tmp = tempdir("search");
    let store_dir = tmp.path().join("data");
    let store = open_store(&store_dir);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();
    // PID-3 PATID1234 from REGADT^MCM (ADT^A01); 770011 with order A12345 from CPOE^NORTH
    // (ORM^O01); 445566 in Windows-1252 from LEGACY^HOPITAL (ADT^A08).
    for name in ["adt_a01_v25.hl7", "orm_o01_v23.hl7", "windows1252_adt_a08.hl7"] {
        let (code, _) = exchange(&mut conn, &fixture(name)).await;
        assert!(code == "AA" || code == "CA", "{name}: {code}");
    }
    server.shutdown(WAIT).await;
    store.close();

    let config = write_config(tmp.path(), &store_dir, "127.0.0.1:0".parse().unwrap());
    let config = config.to_str().unwrap();
    let found = |filter: &[&str]| -> Vec<String> {
        let mut args = vec!["messages", "list", "--config", config, "--json"];
        args.extend_from_slice(filter);
        String::from_utf8(hl7d(&args))
            .unwrap()
            .lines()
            .map(|line| {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                row["control_id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    assert_eq!(found(&["--patient", "PATID1234"]), ["MSG00001"]);
    assert_eq!(found(&["--patient", "445566"]), ["CP1252-0001"]);
    assert!(found(&["--patient", "PATID"]).is_empty(), "exact match only");
    assert_eq!(found(&["--order", "A12345"]), ["ORM-55-0001"]);
    // Newest first.
    assert_eq!(found(&["--type", "ADT^A0*"]), ["CP1252-0001", "MSG00001"]);
    assert_eq!(found(&["--type", "ORM^O01"]), ["ORM-55-0001"]);
    assert_eq!(found(&["--sender", "CPOE^NORTH"]), ["ORM-55-0001"]);
    assert!(found(&["--sender", "CPOE^SOUTH"]).is_empty());
    assert_eq!(found(&["--sender", "REGADT", "--patient", "PATID1234"]), ["MSG00001"]);
}

/// Issue 14: `messages list --json` carries the key fields read at ingest (the
/// `key_fields` object `show --json` has too; null for a message without them), and `show`
/// prints those a message has.
#[tokio::test]
async fn list_json_and_show_print_the_key_fields() {
    let tmp = tempdir("key-fields");
    let store_dir = tmp.path().join("data");
    let store = open_store(&store_dir);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();
    assert_eq!(exchange(&mut conn, &fixture("oru_r01_v251_key_fields.hl7")).await.0, "CA");
    assert_eq!(exchange(&mut conn, &original("BARE-1")).await.0, "AA");
    server.shutdown(WAIT).await;
    store.close();

    let config = write_config(tmp.path(), &store_dir, "127.0.0.1:0".parse().unwrap());
    let config = config.to_str().unwrap();
    let json = String::from_utf8(hl7d(&["messages", "list", "--config", config, "--json"])).unwrap();
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let [bare, full] = &rows[..] else { panic!("two rows, newest first: {json}") };
    assert_eq!(full["control_id"], "XF-0001");
    let fields = &full["key_fields"];
    // PID-3's first repetition with an id: `PAT\T\77` unescaped, authority from CX.4's HD.2.
    assert_eq!(fields["patient_id"], "PAT&77");
    assert_eq!(fields["patient_authority"], "2.16.840.1.113883.19.5");
    assert_eq!(fields["visit_number"], "V-2026-0042");
    // ORC-2 is the HL7 null `""`: the placer number comes from OBR-2.
    assert_eq!(fields["placer_order"], "PLC-1");
    assert_eq!(fields["filler_order"], "FIL-9");
    // MSH-7 20261104153000.25-0500.
    assert_eq!(fields["message_time_utc"], "2026-11-04T20:30:00.250000Z");
    assert_eq!(fields["message_time_wall"], "2026-11-04T15:30:00.250000");
    assert_eq!(fields["trigger_event"], "R01");
    // `original` has PID-3 = its control id and an MSH-7 of a day with no offset.
    let fields = &bare["key_fields"];
    assert_eq!(fields["patient_id"], "BARE-1");
    for key in ["patient_authority", "visit_number", "placer_order", "filler_order", "message_time_utc"] {
        assert!(fields[key].is_null(), "{key}: {bare}");
    }
    assert_eq!(fields["message_time_wall"], "2026-11-28T00:00:00.000000");

    // `show --json` has the same object; `show` prints what there is.
    let id = full["id"].to_string();
    let shown: serde_json::Value =
        serde_json::from_slice(&hl7d(&["messages", "show", "--config", config, &id, "--json"])).unwrap();
    assert_eq!(shown["key_fields"], full["key_fields"]);
    let shown = String::from_utf8(hl7d(&["messages", "show", "--config", config, &id])).unwrap();
    for line in
        ["patient_id           PAT&77", "visit_number         V-2026-0042", "placer_order         PLC-1"]
    {
        assert!(shown.lines().any(|l| l == line), "{line:?} not in\n{shown}");
    }
    let id = bare["id"].to_string();
    let shown = String::from_utf8(hl7d(&["messages", "show", "--config", config, &id])).unwrap();
    assert!(!shown.contains("filler_order"), "{shown}");
}
