//! Refused messages are kept too (issue 13 item 15): a message answered AR/CR is stored with
//! status `rejected`, one answered AE/CE with status `error`, each with the reason it was
//! answered with (MSA-3 text, ERR-3 code), outside duplicate detection, and listed by
//! `hl7d messages list --status`. Storing one costs its answer at most one store round trip
//! and never changes the answer. And the schema migration that made room for them, run on a
//! store written by the release before.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hl7_proto::mllp::ERROR_PREFIX_LEN;
use hl7d::store::{
    Appended, BoxFuture, Disposition, Filter, MessageStore, NewMessage, Reader, SqliteStore, Status,
    StoreError, SCHEMA_VERSION,
};
use rusqlite::types::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

use crate::store::{enhanced, exchange, hl7d, open_store, original, write_config};
use crate::support::*;

/// MSH-15 AL with an MSH-18 no decoder knows: refused with CR, and its header readable.
const UNKNOWN_CHARSET: &[u8] =
    b"MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ADT^A01|CS-1|P|2.5|||AL|NE||LATIN-9\rPID|1\r";

/// What one stored row should hold: (status, ACK, ERR-3, reason, MSH-9, MSH-10, bytes).
type Expected<'a> = (Status, &'a str, Option<u16>, Option<&'a str>, &'a str, &'a str, &'a [u8]);

fn all(reader: &Reader) -> Vec<hl7d::store::StoredMessage> {
    reader.list(&Filter { oldest_first: true, ..Filter::default() }).unwrap()
}

#[tokio::test]
async fn a_malformed_message_is_answered_ar_and_kept_as_rejected_with_its_reason() {
    let tmp = tempdir("rejected");
    let store_dir = tmp.path().join("data");
    let store = open_store(&store_dir);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let addr = server.local_addr("lab").unwrap();
    let mut conn = TcpStream::connect(addr).await.unwrap();

    let no_control_id = fixture("invalid_missing_control_id.hl7");
    let not_hl7 = fixture("invalid_not_hl7.txt");
    assert_eq!(exchange(&mut conn, &no_control_id).await.0, "AR");
    assert_eq!(exchange(&mut conn, &not_hl7).await.0, "AR");
    assert_eq!(exchange(&mut conn, UNKNOWN_CHARSET).await, ("CR".into(), "CS-1".into()));
    // The same refused bytes again: kept again, not a duplicate.
    assert_eq!(exchange(&mut conn, &no_control_id).await.0, "AR");
    // Accepted messages are stored as before.
    let accepted = original("OK-1");
    assert_eq!(exchange(&mut conn, &accepted).await.0, "AA");

    let reader = Reader::open(&store_dir).unwrap();
    let rows = all(&reader);
    let missing = "required field MSH-10 (message control id) is empty";
    let no_msh = "first segment is not MSH";
    let charset = "character set: unknown character set \"LATIN-9\" in MSH-18";
    let expected: [Expected; 5] = [
        (Status::Rejected, "AR", Some(101), Some(missing), "ADT^A01", "", &no_control_id),
        (Status::Rejected, "AR", Some(100), Some(no_msh), "", "", &not_hl7),
        (Status::Rejected, "CR", Some(102), Some(charset), "ADT^A01", "CS-1", UNKNOWN_CHARSET),
        (Status::Rejected, "AR", Some(101), Some(missing), "ADT^A01", "", &no_control_id),
        (Status::Accepted, "AA", None, None, "ORU^R01", "OK-1", &accepted),
    ];
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    for (row, (status, ack, code, reason, message_type, control_id, bytes)) in rows.iter().zip(expected) {
        let what = format!("row {} ({control_id:?})", row.id);
        assert_eq!((row.status, row.ack_code.as_deref()), (status, Some(ack)), "{what}");
        assert_eq!((row.error_code, row.reason.as_deref()), (code, reason), "{what}");
        assert_eq!(
            (row.message_type.as_str(), row.control_id.as_str()),
            (message_type, control_id),
            "{what}"
        );
        assert_eq!((row.listener.as_str(), row.duplicate_count), ("lab", 0), "{what}");
        assert_eq!(row.size, bytes.len() as u64, "{what}");
        assert_eq!(
            reader.message(row.id).unwrap().unwrap().raw.as_deref(),
            Some(bytes),
            "{what}: the bytes sent"
        );
    }
    let stats = store.stats();
    assert_eq!((stats.stored, stats.refused, stats.duplicates), (1, 4, 0));

    // The command line: --status selects, show names status and reason, export takes the
    // accepted ones unless told otherwise.
    let config = write_config(tmp.path(), &store_dir, addr);
    let config = config.to_str().unwrap();
    let listed = |status: &str| -> Vec<serde_json::Value> {
        let out = hl7d(&["messages", "list", "--config", config, "--json", "--status", status]);
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let rejected = listed("rejected");
    assert_eq!(rejected.len(), 4);
    assert!(rejected.iter().all(|m| m["status"] == "rejected" && m["error_code"].is_u64()), "{rejected:?}");
    assert_eq!(rejected[0]["reason"], missing, "newest first");
    assert_eq!(rejected[1]["control_id"], "CS-1");
    let ok = listed("accepted");
    assert_eq!(
        (ok.len(), &ok[0]["control_id"], &ok[0]["reason"]),
        (1, &"OK-1".into(), &serde_json::Value::Null)
    );
    assert!(listed("error").is_empty());
    let table = String::from_utf8(hl7d(&["messages", "list", "--config", config])).unwrap();
    assert_eq!(table.lines().count(), 6, "header and every row:\n{table}");
    assert!(table.lines().next().unwrap().contains("STATUS"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" rejected ")).count(), 4, "{table}");
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["messages", "list", "--config", config, "--status", "received"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected accepted, rejected or error"));

    let shown =
        String::from_utf8(hl7d(&["messages", "show", "--config", config, &rows[0].id.to_string()])).unwrap();
    assert!(shown.contains("status               rejected\n"), "{shown}");
    assert!(shown.contains(&format!("reason               {missing}\n")), "{shown}");
    assert!(shown.contains("error_code           101\n"), "{shown}");
    assert!(shown.contains("ack_code             AR\n"), "{shown}");

    let out = tmp.path().join("export");
    hl7d(&["messages", "export", "--config", config, "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "accepted messages only by default");
    let out = tmp.path().join("export-rejected");
    hl7d(&["messages", "export", "--config", config, "--status", "rejected", "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
    // Refused messages can be cleaned up on their own.
    let purged = hl7d(&["messages", "purge", "--config", config, "--status", "rejected"]);
    assert!(String::from_utf8_lossy(&purged).contains("deleted 4 message(s)"), "{purged:?}");
    let left: Vec<_> = all(&reader).into_iter().map(|m| (m.control_id, m.status)).collect();
    assert_eq!(left, [("OK-1".to_string(), Status::Accepted)]);
    server.shutdown(WAIT).await;
}

#[tokio::test]
async fn frame_refusals_are_kept_and_abandoned_frames_are_not() {
    const LIMIT: usize = 8 * 1024;
    let tmp = tempdir("frames");
    let store = open_store(tmp.path());
    let mut listener = plain("lab");
    listener.max_message_size = LIMIT;
    let server = start_with_store(vec![listener], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();

    // Too large: answered as soon as it crosses the limit; its first 4 KiB are kept.
    let mut big = original("BIG-1");
    big.extend_from_slice(b"OBX|1|ED|PDF||^AP^^Base64^");
    big.extend(std::iter::repeat_n(b'A', 3 * LIMIT));
    big.push(b'\r');
    let answer = exchange(&mut conn, &big).await;
    assert_eq!(answer, ("AR".into(), "BIG-1".into()));
    // A broken end block (strict framing): the whole payload, though over 4 KiB.
    let mut broken = original("BAD-END");
    broken.extend_from_slice(b"NTE|1||");
    broken.extend(std::iter::repeat_n(b'n', 6000));
    broken.push(b'\r');
    let mut bytes = vec![0x0B];
    bytes.extend_from_slice(&broken);
    bytes.extend_from_slice(&[0x1C, b'X']);
    conn.write_all(&bytes).await.unwrap();
    assert_eq!(msa(&read_frame(&mut conn).await), ("AR".into(), "BAD-END".into()));
    // Abandoned: a new start block before the end. Never answered, not kept.
    let mut abandoned = vec![0x0B];
    abandoned.extend_from_slice(&original("GONE-1")[..40]);
    conn.write_all(&abandoned).await.unwrap();
    assert_eq!(exchange(&mut conn, &original("AFTER-1")).await, ("AA".into(), "AFTER-1".into()));

    let reader = Reader::open(tmp.path()).unwrap();
    let rows = all(&reader);
    let ids: Vec<(&str, Status)> = rows.iter().map(|m| (m.control_id.as_str(), m.status)).collect();
    assert_eq!(
        ids,
        [("BIG-1", Status::Rejected), ("BAD-END", Status::Rejected), ("AFTER-1", Status::Accepted)]
    );
    let big_row = reader.message(rows[0].id).unwrap().unwrap();
    assert_eq!(big_row.raw.as_deref(), Some(&big[..ERROR_PREFIX_LEN]));
    assert_eq!((big_row.size, big_row.error_code), (ERROR_PREFIX_LEN as u64, Some(104)));
    assert_eq!(
        big_row.reason.as_deref(),
        Some("message larger than max_message_size (8192 bytes); not stored")
    );
    let broken_row = reader.message(rows[1].id).unwrap().unwrap();
    assert_eq!(broken_row.raw.as_deref(), Some(&broken[..]));
    assert_eq!(broken_row.error_code, Some(100));
    assert_eq!(
        broken_row.reason.as_deref(),
        Some("MLLP end block not followed by a carriage return; not stored")
    );
    server.shutdown(WAIT).await;
}

/// The SQLite store behind switches: accepted messages fail while `fail_accepted` is set,
/// refused ones while `fail_refused` is; every append is counted.
struct Switched {
    inner: Arc<SqliteStore>,
    fail_accepted: AtomicBool,
    fail_refused: AtomicBool,
    appends: AtomicU64,
}

impl Switched {
    fn new(inner: Arc<SqliteStore>) -> Arc<Switched> {
        Arc::new(Switched {
            inner,
            fail_accepted: AtomicBool::new(false),
            fail_refused: AtomicBool::new(false),
            appends: AtomicU64::new(0),
        })
    }

    fn appends(&self) -> u64 {
        self.appends.load(Ordering::SeqCst)
    }
}

impl MessageStore for Switched {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        let fail = match message.disposition {
            Disposition::Accepted { .. } => &self.fail_accepted,
            Disposition::Refused(_) => &self.fail_refused,
        };
        if fail.load(Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(StoreError::Unavailable("injected i/o error".into()))));
        }
        self.inner.append(message)
    }
}

#[tokio::test]
async fn a_store_failure_is_answered_ae_and_kept_as_error_when_the_store_can_write_again() {
    let tmp = tempdir("error");
    let inner = open_store(tmp.path());
    let store = Switched::new(inner.clone());
    store.fail_accepted.store(true, Ordering::SeqCst);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();

    assert_eq!(exchange(&mut conn, &original("E-1")).await, ("AE".into(), "E-1".into()));
    assert_eq!(exchange(&mut conn, &enhanced("E-2")).await, ("CE".into(), "E-2".into()));
    assert_eq!(store.appends(), 4, "the message, then its refusal, once each");
    // The store works again: the resend is accepted as new, not as a duplicate of the error.
    store.fail_accepted.store(false, Ordering::SeqCst);
    assert_eq!(exchange(&mut conn, &original("E-1")).await.0, "AA");
    assert_eq!(exchange(&mut conn, &original("E-1")).await.0, "AA");

    let reader = Reader::open(tmp.path()).unwrap();
    let rows = all(&reader);
    let seen: Vec<_> = rows
        .iter()
        .map(|m| (m.control_id.as_str(), m.status, m.ack_code.as_deref(), m.duplicate_count))
        .collect();
    assert_eq!(
        seen,
        [
            ("E-1", Status::Error, Some("AE"), 0),
            ("E-2", Status::Error, Some("CE"), 0),
            ("E-1", Status::Accepted, Some("AA"), 1),
        ]
    );
    for row in &rows[..2] {
        assert_eq!(row.error_code, Some(207));
        assert_eq!(row.reason.as_deref(), Some("message not stored: store unavailable: injected i/o error"));
    }
    assert_eq!(reader.message(rows[0].id).unwrap().unwrap().raw, Some(original("E-1")));
    let errors = reader.list(&Filter { status: Some(Status::Error), ..Filter::default() }).unwrap();
    assert_eq!(errors.len(), 2);
    let stats = inner.stats();
    assert_eq!((stats.stored, stats.refused, stats.duplicates), (1, 2, 1));
    server.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_refusal_the_store_cannot_keep_is_tried_once_and_still_answered_as_refused() {
    let tmp = tempdir("unkept");
    let store = Switched::new(open_store(tmp.path()));
    store.fail_accepted.store(true, Ordering::SeqCst);
    store.fail_refused.store(true, Ordering::SeqCst);
    let server = start_with_store(vec![plain("lab")], store.clone()).await;
    let mut conn = TcpStream::connect(server.local_addr("lab").unwrap()).await.unwrap();

    assert_eq!(exchange(&mut conn, &original("X-1")).await, ("AE".into(), "X-1".into()));
    assert_eq!(store.appends(), 2, "no retry of the refusal");
    assert_eq!(exchange(&mut conn, &fixture("invalid_missing_control_id.hl7")).await.0, "AR");
    assert_eq!(store.appends(), 3);
    assert_eq!(Reader::open(tmp.path()).unwrap().count().unwrap(), 0);
    // The same connection goes on once the store is back.
    store.fail_accepted.store(false, Ordering::SeqCst);
    store.fail_refused.store(false, Ordering::SeqCst);
    assert_eq!(exchange(&mut conn, &original("X-1")).await.0, "AA");
    server.shutdown(WAIT).await;
}

/// Each append takes [`ROUND_TRIP`] and is counted; failing ones fail after it.
struct Slow {
    fail_accepted: bool,
    appends: AtomicU64,
}

const ROUND_TRIP: Duration = Duration::from_secs(1);

impl MessageStore for Slow {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            sleep(ROUND_TRIP).await;
            match message.disposition {
                Disposition::Accepted { .. } if self.fail_accepted => {
                    Err(StoreError::Unavailable("injected i/o error".into()))
                }
                _ => Ok(Appended::New),
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn keeping_a_refusal_delays_its_answer_by_one_store_round_trip_at_most() {
    for fail_accepted in [false, true] {
        let store = Arc::new(Slow { fail_accepted, appends: AtomicU64::new(0) });
        let server = start_with_store(vec![plain("lab")], store.clone()).await;
        let mut conn = connect_nodelay(server.local_addr("lab").unwrap()).await.unwrap();
        // Refused for what it is: one round trip, to keep it.
        let sent = Instant::now();
        assert_eq!(exchange(&mut conn, &fixture("invalid_missing_control_id.hl7")).await.0, "AR");
        assert!(sent.elapsed() >= ROUND_TRIP && sent.elapsed() < 2 * ROUND_TRIP, "{:?}", sent.elapsed());
        // Refused because the store failed: the failed append, then one to keep the refusal.
        let sent = Instant::now();
        let expected = if fail_accepted { "AE" } else { "AA" };
        assert_eq!(exchange(&mut conn, &original("S-1")).await.0, expected);
        let trips = if fail_accepted { 2 } else { 1 };
        assert!(
            sent.elapsed() >= trips * ROUND_TRIP && sent.elapsed() < (trips + 1) * ROUND_TRIP,
            "{expected}: {:?}",
            sent.elapsed()
        );
        assert_eq!(store.appends.load(Ordering::SeqCst), 1 + u64::from(trips));
        server.shutdown(WAIT).await;
    }
}

// ---------------------------------------------------------------------------------------
// Migration of a store written by the previous release

/// Every column schema version 1 had except `status`, in a SELECT both versions answer.
const V1_COLUMNS: &str =
    "id, listener, peer, client_thumbprint, received_at, charset, message_type, control_id, \
     sending_application, sending_facility, processing_id, version, size, ack_code, duplicate_count, \
     last_duplicate_at, raw";

fn rows(db: &Path, sql: &str) -> Vec<Vec<Value>> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut statement = conn.prepare(sql).unwrap();
    let width = statement.column_count();
    statement
        .query_map([], |row| (0..width).map(|i| row.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_store_written_by_the_previous_release_migrates_keeping_every_message() {
    let fixture_db = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1/messages.db");
    let tmp = tempdir("migrate");
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("messages.db");
    std::fs::copy(&fixture_db, &db).unwrap();

    let version = |db: &Path| -> i64 {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap()
    };
    assert_eq!(version(&db), 1, "the fixture is a version 1 store");
    let select = format!("SELECT {V1_COLUMNS} FROM messages ORDER BY id");
    let before = rows(&db, &select);
    assert_eq!(before.len(), 9, "the fixture's messages (generate.sh)");
    assert_eq!(rows(&db, "SELECT DISTINCT status FROM messages"), [vec![Value::Text("received".into())]]);
    // A reader does not migrate; it says how to.
    let Err(error) = Reader::open(&dir) else { panic!("a reader opened a version 1 store") };
    assert!(error.to_string().contains("start hl7d serve once to migrate"), "{error}");

    let store = SqliteStore::open(&dir, Default::default()).expect("migrates");
    store.close();
    assert_eq!(version(&db), SCHEMA_VERSION);
    assert_eq!(rows(&db, &select), before, "every message and its metadata, byte for byte");
    // Issue 14: the key-field columns are filled from each row's bytes, and every row has
    // its duplicate key.
    let key_fields = rows(
        &db,
        "SELECT control_id, patient_id, patient_authority, placer_order, trigger_event, \
         message_time_wall IS NOT NULL FROM messages WHERE control_id IN ('MSG00001', 'ORM-55-0001') ORDER BY id",
    );
    let text = |s: &str| Value::Text(s.into());
    assert_eq!(
        key_fields,
        [
            vec![
                text("MSG00001"),
                text("PATID1234"),
                text("MCM"),
                Value::Null,
                text("A01"),
                Value::Integer(1)
            ],
            vec![
                text("ORM-55-0001"),
                text("770011"),
                text("NORTH"),
                text("A12345"),
                text("O01"),
                Value::Integer(1)
            ],
        ]
    );
    assert_eq!(rows(&db, "SELECT count(*) FROM messages WHERE dup_key IS NULL"), [vec![Value::Integer(0)]]);
    // Schema 6: the lane keys are not stored in `messages` (the reader computes them from
    // the bytes: below).
    assert_eq!(
        rows(&db, "SELECT count(*) FROM messages WHERE lane_sender IS NOT NULL OR lane_patient IS NOT NULL"),
        [vec![Value::Integer(0)]]
    );

    let reader = Reader::open(&dir).unwrap();
    assert_eq!(reader.integrity_check().unwrap(), "ok");
    let migrated = all(&reader);
    assert_eq!(migrated.len(), before.len());
    for row in &migrated {
        assert_eq!(
            (row.status, &row.reason, row.error_code),
            (Status::Accepted, &None, None),
            "{}",
            row.control_id
        );
    }
    let by_id = |control_id: &str| {
        let row = migrated.iter().find(|m| m.control_id == control_id).unwrap();
        reader.message(row.id).unwrap().unwrap()
    };
    let first = by_id("MSG00001");
    assert_eq!(first.raw, Some(fixture("adt_a01_v25.hl7")));
    assert_eq!(first.fields.lane_patient.as_deref(), Some("patient/MCM/PATID1234"));
    assert_eq!(by_id("ORM-55-0001").fields.lane_patient.as_deref(), Some("patient/NORTH/770011"));
    assert_eq!(first.duplicate_count, 1);
    assert_eq!(by_id("CP1252-0001").raw, Some(fixture("windows1252_adt_a08.hl7")));
    assert_eq!(by_id("ENH-NE-1").ack_code, None);
    assert_eq!(by_id("BIG-12K").size, 12159);
    assert_eq!(
        reader.list(&Filter { status: Some(Status::Accepted), ..Filter::default() }).unwrap().len(),
        9
    );
    assert!(reader.list(&Filter { status: Some(Status::Rejected), ..Filter::default() }).unwrap().is_empty());
    drop(reader);

    // Opened again (already migrated): the old rows stay as they are, and new ones of every
    // status go in beside them.
    let store = SqliteStore::open(&dir, Default::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut message = NewMessage {
        listener: Arc::from("lab"),
        peer: "127.0.0.1:40000".parse().unwrap(),
        client_thumbprint: None,
        received_at: std::time::SystemTime::now(),
        charset: hl7_proto::charset::Charset::Utf8,
        message_type: "ADT^A01".into(),
        control_id: "NEW-1".into(),
        sending_application: "A".into(),
        sending_facility: "B".into(),
        processing_id: "P".into(),
        version: "2.5".into(),
        ack_code: None,
        disposition: Disposition::Accepted { duplicate_window: Some(Duration::from_secs(60)) },
        fields: Default::default(),
        raw: original("NEW-1").into(),
    };
    runtime.block_on(store.append(message.clone())).unwrap();
    message.disposition = Disposition::Refused(hl7_proto::refusal::Refusal::FrameBadEnd);
    runtime.block_on(store.append(message)).unwrap();
    store.close();
    assert_eq!(rows(&db, &format!("{select} LIMIT 9")), before);
    let reader = Reader::open(&dir).unwrap();
    let statuses: Vec<Status> = all(&reader).iter().skip(9).map(|m| m.status).collect();
    assert_eq!(statuses, [Status::Accepted, Status::Rejected]);
}
