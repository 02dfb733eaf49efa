//! `hl7d store backup|verify`: a backup taken while a real `hl7d serve` receives a stream of
//! messages restores into a new data directory with every message acknowledged before it
//! started, byte for byte; verify says ok on it and finds a corrupted copy; the library's
//! stepped backup finishes while the writer keeps committing.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hl7d::store::backup::{self, BackupError, BackupOptions};
use hl7d::store::{
    Disposition, Filter, MessageStore, NewMessage, Reader, SqliteOptions, SqliteStore, DATABASE_FILE,
};
use tokio::net::TcpStream;

use crate::support::*;

/// Most messages one sender sends, so that the stream stops by itself.
const MAX_PER_SENDER: usize = 20_000;

/// A message of about 1.3 KB whose bytes differ with its control id (so that a mix-up
/// between two messages cannot compare equal).
fn message(control_id: &str) -> Vec<u8> {
    let mut state = control_id.bytes().fold(0x9e37_79b9_u32, |h, b| h.rotate_left(5) ^ u32::from(b));
    let note: String = (0..1200)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b'A' + (state >> 16) as u8 % 26)
        })
        .collect();
    format!("MSH|^~\\&|BACKUP|FAC|HL7D|FAC|20261128||ADT^A08|{control_id}|P|2.5\rPID|1||{control_id}\rNTE|1||{note}\r")
        .into_bytes()
}

/// What the senders did: every message written (control id → bytes) and the control ids
/// whose positive ACK came back, in order.
#[derive(Default)]
struct Stream {
    sent: Mutex<HashMap<String, Vec<u8>>>,
    acked: Mutex<Vec<String>>,
}

/// Sends messages one at a time on one connection until `stop`, recording each.
async fn sender(addr: std::net::SocketAddr, name: String, stream: Arc<Stream>, stop: Arc<AtomicBool>) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    for n in 0..MAX_PER_SENDER {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let control_id = format!("{name}-{n}");
        let raw = message(&control_id);
        stream.sent.lock().unwrap().insert(control_id.clone(), raw.clone());
        send(&mut conn, &raw).await;
        let (code, echoed) = msa(&read_frame(&mut conn).await);
        assert_eq!((code.as_str(), echoed.as_str()), ("AA", control_id.as_str()));
        stream.acked.lock().unwrap().push(control_id);
    }
}

/// Writes a configuration whose `[store] path` is `store` (and, as every configuration
/// must have one, a listener) to `path`.
fn store_config(path: &Path, store: &Path) -> std::path::PathBuf {
    let text = format!(
        "[store]\npath = {store:?}\n\n[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n"
    );
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

fn hl7d(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hl7d")).args(args).output().expect("run hl7d")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn wait_for_acks(stream: &Stream, at_least: usize) {
    let deadline = Instant::now() + WAIT * 3;
    while stream.acked.lock().unwrap().len() < at_least {
        assert!(Instant::now() < deadline, "fewer than {at_least} messages acknowledged in {:?}", WAIT * 3);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every message of the copy in `dir`, control id → bytes, through the library's reader.
fn stored(dir: &Path) -> HashMap<String, Vec<u8>> {
    let reader = Reader::open(dir).expect("the restored store reads");
    let mut out = HashMap::new();
    reader
        .for_each_message(&Filter::default(), |m| -> Result<(), hl7d::store::StoreError> {
            out.insert(m.control_id, m.raw.expect("for_each_message loads the bytes"));
            Ok(())
        })
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_message_byte_exact() {
    const SENDERS: usize = 4;
    let tmp = tempdir("backup");
    let data = tmp.path().join("data");
    let server = ServeProcess::start(tmp.path(), &data);
    let config = tmp.path().join("hl7d.toml");
    let config = config.to_str().unwrap().to_owned();

    let stream = Arc::new(Stream::default());
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(sender(server.addr, format!("S{s}"), stream.clone(), stop.clone())))
        .collect();
    // Enough for a store of a few hundred pages before the backup.
    wait_for_acks(&stream, 400).await;

    // Every message acknowledged by now must be in the copy.
    let acked_before: Vec<String> = stream.acked.lock().unwrap().clone();
    let out = tmp.path().join("backup.db");
    let args = ["store", "backup", "--config", &config, "--out", out.to_str().unwrap(), "--json"];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let output =
        tokio::task::spawn_blocking(move || hl7d(&args.iter().map(String::as_str).collect::<Vec<_>>()))
            .await
            .unwrap();
    let acked_at_end = stream.acked.lock().unwrap().len();
    assert!(
        output.status.success(),
        "backup failed: {}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("one JSON object");
    eprintln!(
        "backup: {report}; {} acknowledged before it, {} more while it ran",
        acked_before.len(),
        acked_at_end - acked_before.len()
    );
    assert_eq!(report["ok"], true);
    // The stream goes on after the backup: the server was never stopped or blocked.
    wait_for_acks(&stream, acked_at_end + 50).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        tokio::time::timeout(WAIT, sender).await.expect("sender stops").expect("sender saw only AA");
    }
    drop(server);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy holds patient data");
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let sidecar = format!("{}{suffix}", out.display());
        assert!(!Path::new(&sidecar).exists(), "{sidecar} beside the copy: it should be one file");
    }

    // Restore: the copy as messages.db of a new data directory, opened as a store.
    let restored = tmp.path().join("restored");
    hl7d::private_files::create_dir_all(&restored).unwrap();
    std::fs::copy(&out, restored.join(DATABASE_FILE)).unwrap();
    SqliteStore::open(&restored, SqliteOptions::default()).expect("the copy opens as a store").close();
    let copy = stored(&restored);
    assert_eq!(report["messages"].as_u64(), Some(copy.len() as u64));
    let sent = stream.sent.lock().unwrap();
    for control_id in &acked_before {
        let bytes = copy
            .get(control_id)
            .unwrap_or_else(|| panic!("{control_id} acknowledged before the backup, not in it"));
        assert!(bytes == &sent[control_id], "{control_id} differs from what was sent");
    }
    for (control_id, bytes) in &copy {
        assert!(sent.get(control_id) == Some(bytes), "{control_id} in the copy was never sent like that");
    }

    // Verify: ok on the copy, by file and as the store of a configuration.
    let verified = hl7d(&["store", "verify", "--file", out.to_str().unwrap()]);
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(stdout(&verified).contains(": ok (integrity_check ok"), "{}", stdout(&verified));
    let restored_config = store_config(&tmp.path().join("restored.toml"), &restored);
    let verified = hl7d(&["store", "verify", "--config", restored_config.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_str(stdout(&verified).trim()).unwrap();
    assert_eq!(
        (verified.status.code(), &json["ok"], &json["problems"]),
        (Some(0), &true.into(), &serde_json::json!([]))
    );

    // A corrupted copy: the first bytes of a page in the middle (its b-tree page header and
    // cell pointers) overwritten.
    let corrupt = tmp.path().join("corrupt.db");
    std::fs::copy(&out, &corrupt).unwrap();
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let page_size = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    let middle = bytes.len() / page_size / 2 * page_size;
    assert!(middle >= 2 * page_size, "a store of {} bytes is too small for this test", bytes.len());
    bytes[middle..middle + 64].fill(0xA5);
    std::fs::write(&corrupt, &bytes).unwrap();
    let found = hl7d(&["store", "verify", "--file", corrupt.to_str().unwrap()]);
    let text = stdout(&found);
    assert_eq!(found.status.code(), Some(1), "{text}");
    assert!(text.contains("problem(s) found") && text.contains("integrity_check:"), "{text}");
    let found = hl7d(&["store", "verify", "--file", corrupt.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_str(stdout(&found).trim()).unwrap();
    assert_eq!((found.status.code(), &json["ok"]), (Some(1), &false.into()));
    assert!(!json["problems"].as_array().unwrap().is_empty(), "{json}");
}

/// Without the snapshot held for the whole backup, each commit between two steps would
/// restart the copy, and a backup of one page per step under a stream of commits would never
/// finish. Here it must finish, while appends keep completing, and hold exactly the messages
/// stored before it started plus perhaps some after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stepped_backup_finishes_while_the_writer_commits() {
    let tmp = tempdir("stepped");
    let data = tmp.path().join("data");
    let store = Arc::new(SqliteStore::open(&data, SqliteOptions::default()).unwrap());
    // About 300 pages.
    let futures: Vec<_> = (0..800).map(|n| store.append(new_message(n))).collect();
    for future in futures {
        future.await.unwrap();
    }
    let before = 800;

    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(before));
    let writer = {
        let (store, stop, appended) = (store.clone(), stop.clone(), appended.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = appended.load(Ordering::Relaxed);
                store.append(new_message(n)).await.unwrap();
                appended.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let out = tmp.path().join("stepped.db");
    let options = BackupOptions { pages_per_step: 1, pause: Duration::from_millis(1) };
    let (dir, file) = (data.clone(), out.clone());
    let at_start = appended.load(Ordering::Relaxed);
    let report = tokio::time::timeout(
        WAIT * 3,
        tokio::task::spawn_blocking(move || backup::backup(&dir, &file, &options)),
    )
    .await
    .expect("the backup finishes although the writer commits between its steps")
    .unwrap()
    .expect("backup");
    let at_end = appended.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    eprintln!("{report:?}; {} messages committed while it ran", at_end - at_start);
    assert!(report.pages > 100 && report.steps >= report.pages, "{report:?}");
    assert!(
        at_end > at_start,
        "no append completed during a backup of {} steps: the writer was blocked",
        report.steps
    );

    // The copy is one snapshot: ids 1..=last_id without a gap, at least what was stored
    // before the backup started, at most what was stored by its end.
    let copy_dir = tmp.path().join("copy");
    hl7d::private_files::create_dir_all(&copy_dir).unwrap();
    std::fs::copy(&out, copy_dir.join(DATABASE_FILE)).unwrap();
    let reader = Reader::open(&copy_dir).unwrap();
    let ids: Vec<i64> = reader
        .list(&Filter { oldest_first: true, ..Filter::default() })
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    assert!(
        (at_start..=at_end + 1).contains(&(ids.len() as u64)),
        "{} messages in the copy; {at_start} stored when it started, {at_end} when it ended",
        ids.len()
    );
    assert_eq!(report.messages, ids.len() as u64);
    assert_eq!(report.last_id, ids.last().copied());
    let verified = backup::verify(&out).unwrap();
    assert!(verified.is_ok(), "{verified:?}");
    store.close();
}

/// Stored message number `n` (control id `W-n`), as the listener would hand it over.
fn new_message(n: u64) -> NewMessage {
    let control_id = format!("W-{n}");
    NewMessage {
        listener: Arc::from("lab"),
        peer: "127.0.0.1:4000".parse().unwrap(),
        client_thumbprint: None,
        received_at: std::time::SystemTime::now(),
        charset: hl7_proto::charset::Charset::Utf8,
        message_type: "ADT^A08".into(),
        control_id: control_id.clone(),
        sending_application: "BACKUP".into(),
        sending_facility: "FAC".into(),
        processing_id: "P".into(),
        version: "2.5".into(),
        ack_code: None,
        disposition: Disposition::Accepted { duplicate_window: None },
        fields: Default::default(),
        raw: Bytes::from(message(&control_id)),
    }
}

#[test]
fn a_backup_never_overwrites_and_leaves_nothing_behind_when_it_fails() {
    let tmp = tempdir("backup-refusals");
    let data = tmp.path().join("data");
    SqliteStore::open(&data, SqliteOptions::default()).unwrap().close();

    let existing = tmp.path().join("existing.db");
    std::fs::write(&existing, b"keep me").unwrap();
    let error = backup::backup(&data, &existing, &BackupOptions::default()).unwrap_err();
    assert!(matches!(error, BackupError::Exists { .. }), "{error}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    let config = store_config(&tmp.path().join("hl7d.toml"), &data);
    let output =
        hl7d(&["store", "backup", "--config", config.to_str().unwrap(), "--out", existing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"), "{output:?}");

    // No store there: nothing is created.
    let nowhere = tmp.path().join("no-store");
    let out = tmp.path().join("never.db");
    let error = backup::backup(&nowhere, &out, &BackupOptions::default()).unwrap_err();
    assert!(matches!(error, BackupError::Store(_)), "{error}");
    assert!(!out.exists());
    // A directory that does not exist.
    let error =
        backup::backup(&data, &tmp.path().join("missing/dir/b.db"), &BackupOptions::default()).unwrap_err();
    assert!(matches!(error, BackupError::Create { .. }), "{error}");

    // A configuration that does not load: 78, for both subcommands, with --json too.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[store]\nbogus = 1\n").unwrap();
    for args in [
        vec!["store", "backup", "--out", "x.db", "--config", bad.to_str().unwrap()],
        vec!["store", "verify", "--config", bad.to_str().unwrap(), "--json"],
    ] {
        let output = hl7d(&args);
        assert_eq!(output.status.code(), Some(78), "{args:?}: {output:?}");
    }
    let output = hl7d(&["store", "verify", "--config", bad.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(json["ok"], false);
    // Verify of a file that is not there: exit 1, not a crash.
    let output = hl7d(&["store", "verify", "--file", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    // Verify of a file that is not a database: a problem found.
    let output = hl7d(&["store", "verify", "--file", existing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("problem(s) found"), "{output:?}");
}
