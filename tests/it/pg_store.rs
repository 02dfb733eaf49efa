//! The PostgreSQL store (issue 16) against a real PostgreSQL: each test on a database of
//! its own (`support::pg`), skipped loudly without `HL7D_TEST_PG_URL` (a failure under CI).

use crate::support::pg::TestDb;

/// The harness itself: a fresh, empty database per test, usable at once, dropped after.
#[tokio::test]
async fn each_test_gets_a_fresh_database() {
    let Some(first) = TestDb::create("each_test_gets_a_fresh_database").await else { return };
    let second = TestDb::create("each_test_gets_a_fresh_database").await.unwrap();
    assert_ne!(first.url, second.url);
    let client = first.client().await;
    client.batch_execute("CREATE TABLE t (x int)").await.unwrap();
    let tables: i64 = second
        .client()
        .await
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "the second database is empty");
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use hl7_proto::ack::AckCode;
use hl7_proto::charset::Charset;
use hl7_proto::keys::LaneOrder;
use hl7_proto::refusal::Refusal;
use hl7d::config::{PostgresConfig, SslMode};
use hl7d::store::postgres::schema::{self, PG_SCHEMA_VERSION};
use hl7d::store::queue::{QueueRoute, RouteTable};
use hl7d::store::{
    Appended, Disposition, KeyFields, MessageStore, NewMessage, PgOptions, PgStore, StoreError,
};
use tokio::sync::Notify;

/// The store's settings for a test database: no TLS on loopback, a small pool.
pub(crate) fn pg_config(url: &str) -> PostgresConfig {
    PostgresConfig { url: url.to_owned(), password: None, sslmode: SslMode::Disable, ca: None, pool_size: 4 }
}

/// An ADT^A01 from LAB/FAC for patient `patient` on listener `lab`.
pub(crate) fn adt(control_id: &str, patient: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|FAC|HL7D|FAC|20261201||ADT^A01^ADT_A01|{control_id}|P|2.5\rPID|1||{patient}^^^HOSP\r"
    )
    .into_bytes()
}

/// `raw` as the listener would append it, accepted with `window` or refused.
pub(crate) fn new_message(raw: &[u8], disposition: Disposition) -> NewMessage {
    let text = String::from_utf8_lossy(raw);
    let msh: Vec<&str> = text.split('\r').next().unwrap().split('|').collect();
    NewMessage {
        listener: Arc::from("lab"),
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        client_thumbprint: None,
        received_at: SystemTime::now(),
        charset: Charset::Utf8,
        message_type: msh[8].split('^').take(2).collect::<Vec<_>>().join("^"),
        control_id: msh[9].to_owned(),
        sending_application: msh[2].to_owned(),
        sending_facility: msh[3].to_owned(),
        processing_id: msh[10].to_owned(),
        version: msh[11].to_owned(),
        ack_code: Some(AckCode::ApplicationAccept),
        disposition,
        fields: KeyFields::extract(raw, Charset::Utf8),
        raw: Bytes::copy_from_slice(raw),
    }
}

pub(crate) fn accepted(window: Option<Duration>) -> Disposition {
    Disposition::Accepted { duplicate_window: window }
}

const HOUR: Option<Duration> = Some(Duration::from_secs(3600));

/// Several nodes starting together on a new database: every open succeeds and exactly one
/// of them applies the migrations (the advisory lock).
#[tokio::test]
async fn concurrent_opens_migrate_once() {
    let Some(db) = TestDb::create("concurrent_opens_migrate_once").await else { return };
    let opens = (0..6).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let (mut client, connection) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            schema::migrate(&mut client, &url).await
        })
    });
    let mut applied = Vec::new();
    for open in opens {
        applied.push(open.await.unwrap().expect("every node's migration succeeds"));
    }
    let migrated: Vec<_> = applied.iter().filter(|versions| !versions.is_empty()).collect();
    assert_eq!(migrated.len(), 1, "one node migrates: {applied:?}");
    assert_eq!(migrated[0], &(1..=PG_SCHEMA_VERSION).collect::<Vec<_>>());
    let client = db.client().await;
    let rows: i64 = client.query_one("SELECT count(*) FROM hl7d_schema_versions", &[]).await.unwrap().get(0);
    assert_eq!(rows, PG_SCHEMA_VERSION);
    // And the full store opens on it without migrating again.
    let store = PgStore::open(&pg_config(&db.url), PgOptions::default()).await.unwrap();
    store.close().await;
}

/// A database migrated by a newer hl7d is refused, not used.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(db) = TestDb::create("a_newer_schema_is_refused").await else { return };
    let store = PgStore::open(&pg_config(&db.url), PgOptions::default()).await.unwrap();
    store.close().await;
    db.client()
        .await
        .execute("INSERT INTO hl7d_schema_versions (version) VALUES ($1)", &[&(PG_SCHEMA_VERSION + 1)])
        .await
        .unwrap();
    match PgStore::open(&pg_config(&db.url), PgOptions::default()).await {
        Err(StoreError::SchemaTooNew { found, .. }) => assert_eq!(found, PG_SCHEMA_VERSION + 1),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// A table of one route taking every ADT message, laned per patient.
fn adt_route() -> (Arc<ArcSwap<RouteTable>>, Arc<Notify>) {
    let queued = Arc::new(Notify::new());
    let route = QueueRoute {
        name: Arc::from("adt"),
        listeners: None,
        message_types: vec!["ADT".into()],
        order: LaneOrder::PerPatient,
        queued: queued.clone(),
    };
    (Arc::new(ArcSwap::from_pointee(RouteTable::new(vec![route]))), queued)
}

/// Append, duplicate, refused and the delivery rows of a new accepted message, all in the
/// database as SQLite would have them.
#[tokio::test]
async fn appends_duplicates_refusals_and_delivery_rows() {
    let Some(db) = TestDb::create("appends_duplicates_refusals_and_delivery_rows").await else { return };
    let (routes, queued) = adt_route();
    let options = PgOptions { routes: Some(routes), ..PgOptions::default() };
    let store = PgStore::open(&pg_config(&db.url), options).await.unwrap();
    let first = adt("PG-1", "P1");
    assert_eq!(store.append(new_message(&first, accepted(HOUR))).await.unwrap(), Appended::New);
    // Woken after the commit: the engine reads what it is woken for.
    tokio::time::timeout(Duration::from_secs(5), queued.notified()).await.expect("route woken");
    assert_eq!(store.append(new_message(&first, accepted(HOUR))).await.unwrap(), Appended::Duplicate);
    assert_eq!(store.append(new_message(&first, accepted(HOUR))).await.unwrap(), Appended::Duplicate);
    // Same control id, other bytes: not a duplicate.
    let changed = adt("PG-1", "P2");
    assert_eq!(store.append(new_message(&changed, accepted(HOUR))).await.unwrap(), Appended::New);
    // No window: stored again.
    assert_eq!(store.append(new_message(&first, accepted(None))).await.unwrap(), Appended::New);
    // Refused: kept, never a duplicate, never delivered.
    let refusal = Refusal::FrameBadEnd;
    let refused = new_message(&first, Disposition::Refused(refusal));
    assert_eq!(store.append(refused.clone()).await.unwrap(), Appended::New);
    assert_eq!(store.append(refused).await.unwrap(), Appended::New);

    let client = db.client().await;
    let rows = client
        .query(
            "SELECT control_id, status, duplicate_count, patient_id, lane_patient, error_code, raw \
             FROM messages ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let summary: Vec<(String, String, i64, Option<String>)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        summary,
        [
            ("PG-1".into(), "accepted".into(), 2, Some("P1".into())),
            ("PG-1".into(), "accepted".into(), 0, Some("P2".into())),
            ("PG-1".into(), "accepted".into(), 0, Some("P1".into())),
            ("PG-1".into(), "rejected".into(), 0, Some("P1".into())),
            ("PG-1".into(), "rejected".into(), 0, Some("P1".into())),
        ]
    );
    assert_eq!(rows[0].get::<_, Vec<u8>>(6), first, "bytes kept exactly");
    assert!(rows[3].get::<_, Option<i64>>(5).is_some(), "a refusal keeps its ERR-3 code");
    let deliveries = client
        .query("SELECT d.route, d.lane, d.state, m.patient_id FROM deliveries d JOIN messages m ON m.id = d.message_id ORDER BY d.id", &[])
        .await
        .unwrap();
    let deliveries: Vec<(String, String, String, String)> =
        deliveries.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let lane = rows[0].get::<_, String>(4);
    assert_eq!(deliveries.len(), 3, "one per new accepted message: {deliveries:?}");
    assert_eq!(deliveries[0], ("adt".into(), lane, "pending".into(), "P1".into()));
    let stats = store.stats();
    assert_eq!((stats.stored, stats.duplicates, stats.refused, stats.queued), (3, 2, 2, 3));
    store.close().await;
}

/// Two nodes (two stores on one database) storing the same messages at the same moment:
/// each message is stored once, and each node's answer is New or Duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_store_a_message_once() {
    let Some(db) = TestDb::create("two_nodes_store_a_message_once").await else { return };
    let config = pg_config(&db.url);
    let a = Arc::new(PgStore::open(&config, PgOptions::default()).await.unwrap());
    let b = Arc::new(PgStore::open(&config, PgOptions::default()).await.unwrap());
    let messages: Vec<Vec<u8>> = (0..200).map(|n| adt(&format!("TWO-{n}"), &format!("P{}", n % 7))).collect();
    let mut tasks = Vec::new();
    for node in [a.clone(), b.clone()] {
        for chunk in messages.chunks(25) {
            let (node, chunk) = (node.clone(), chunk.to_vec());
            tasks.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for raw in chunk {
                    outcomes.push(node.append(new_message(&raw, accepted(HOUR))).await.unwrap());
                }
                outcomes
            }));
        }
    }
    let mut new = 0;
    for task in tasks {
        new += task.await.unwrap().iter().filter(|outcome| **outcome == Appended::New).count();
    }
    assert_eq!(new, messages.len(), "each message New on exactly one node");
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT control_id), sum(duplicate_count)::bigint FROM messages",
            &[],
        )
        .await
        .unwrap();
    let (rows, distinct, duplicates): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((rows, distinct, duplicates), (200, 200, 200));
    a.close().await;
    b.close().await;
}

/// The answer comes only after COMMIT: an append held up inside its transaction (the table
/// locked by another session) stays unanswered; when its connection is cut before the
/// COMMIT, it fails (error ACK), nothing is stored, and a resend is stored once.
#[tokio::test]
async fn an_append_is_answered_only_after_its_commit() {
    let Some(db) = TestDb::create("an_append_is_answered_only_after_its_commit").await else { return };
    let store = Arc::new(PgStore::open(&pg_config(&db.url), PgOptions::default()).await.unwrap());
    let mut blocker = db.client().await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE messages IN EXCLUSIVE MODE").await.unwrap();
    let raw = adt("COMMIT-1", "P1");
    let append = tokio::spawn({
        let (store, message) = (store.clone(), new_message(&raw, accepted(HOUR)));
        async move { store.append(message).await }
    });
    // Wait until the writer's statement waits for the lock.
    let admin = db.client().await;
    let pid: i32 = loop {
        let waiting = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'hl7d' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = waiting.first() {
            break row.get(0);
        }
        assert!(!append.is_finished(), "answered while its INSERT cannot have run: {:?}", append.await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!append.is_finished(), "no answer before COMMIT");
    let terminated: bool = admin.query_one("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap().get(0);
    assert!(terminated);
    let answer = tokio::time::timeout(Duration::from_secs(10), append).await.unwrap().unwrap();
    assert!(matches!(answer, Err(StoreError::Unavailable(_))), "{answer:?}");
    lock.rollback().await.unwrap();
    // The sender resends after its error ACK: stored once, on a fresh connection.
    assert_eq!(store.append(new_message(&raw, accepted(HOUR))).await.unwrap(), Appended::New);
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1);
    store.close().await;
}

/// Runs `hl7d ARGS` and returns (exit code, stdout, stderr).
pub(crate) fn hl7d(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hl7d")).args(args).output().expect("run hl7d");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `hl7d messages list|show|export` and `check-config` against a `[store] url`
/// configuration, with the answers SQLite gives; the commands this build does not have on
/// PostgreSQL say so (usage error), `store backup` names pg_dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_read_the_postgresql_store() {
    let Some(db) = TestDb::create("operator_commands_read_the_postgresql_store").await else { return };
    let store = PgStore::open(&pg_config(&db.url), PgOptions::default()).await.unwrap();
    let oru =
        b"MSH|^~\\&|LAB|FAC|HL7D|FAC|20261201||ORU^R01^ORU_R01|OR-1|P|2.5\rPID|1||P9^^^HOSP\rOBR|1|PL7|FI7\r"
            .to_vec();
    for raw in [adt("CLI-1", "P1"), adt("CLI-2", "P2"), oru.clone(), adt("CLI-3", "P1")] {
        store.append(new_message(&raw, accepted(HOUR))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    store.append(new_message(&adt("BAD-1", "P1"), Disposition::Refused(Refusal::FrameBadEnd))).await.unwrap();
    store.close().await;

    let dir = crate::support::tempdir("pg-cli");
    let config = dir.join("hl7d.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = {:?}\nsslmode = \"disable\"\n\n[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n",
            db.url
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec!["messages", "list", "--config", config, "--json"];
        args.extend_from_slice(extra);
        let (code, out, err) = hl7d(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out.lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["control_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&[]), ["BAD-1", "CLI-3", "OR-1", "CLI-2", "CLI-1"], "newest first");
    assert_eq!(list(&["--patient", "P1", "--status", "accepted"]), ["CLI-3", "CLI-1"]);
    assert_eq!(list(&["--type", "ADT^A0*", "--limit", "2", "--status", "accepted"]), ["CLI-3", "CLI-2"]);
    assert_eq!(list(&["--order", "FI7"]), ["OR-1"]);
    assert_eq!(list(&["--control-id", "CLI-2"]), ["CLI-2"]);
    assert_eq!(list(&["--status", "rejected"]), ["BAD-1"]);
    assert_eq!(list(&["--sender", "LAB^FAC", "--type", "ORU^R01"]), ["OR-1"]);
    assert!(list(&["--since", "2000-01-01", "--until", "2001-01-01"]).is_empty());

    let (code, all, _) = hl7d(&["messages", "list", "--config", config, "--json", "--control-id", "OR-1"]);
    assert_eq!(code, 0);
    let id = serde_json::from_str::<serde_json::Value>(all.lines().next().unwrap()).unwrap()["id"]
        .as_i64()
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["messages", "show", "--config", config, "--raw", &id.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.stdout, oru, "show --raw gives the bytes exactly");
    let (code, shown, err) = hl7d(&["messages", "show", "--config", config, "--json", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(shown["control_id"], "OR-1");

    let exported = dir.join("export");
    let (code, _, err) =
        hl7d(&["messages", "export", "--config", config, "--out", exported.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(&exported).unwrap().count(), 4, "accepted messages only");

    let (code, out, err) = hl7d(&["check-config", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("store: postgresql {} (sslmode disable)", db.url)), "{out}");
    let (code, out, _) = hl7d(&["check-config", "--config", config, "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(json["store"]["kind"], "postgresql");

    // `routes status` and `parked` read the PostgreSQL store (the actions and purge: see
    // pg_ops.rs); a route neither configured nor in the rows is a usage error, as on
    // SQLite.
    let (code, _, err) = hl7d(&["routes", "status", "--config", config]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = hl7d(&["routes", "parked", "r", "--config", config]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("unknown route \"r\"; known: none"), "{err}");
    let (code, _, err) =
        hl7d(&["store", "backup", "--config", config, "--out", dir.join("b.db").to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("pg_dump"), "{err}");
}

/// TLS to the database on rustls: `verify-full` with the right CA connects (and the session
/// is encrypted), with another CA it is refused; `require` connects without checking;
/// `disable` does not encrypt.
#[tokio::test]
async fn tls_to_the_database_follows_sslmode() {
    const TEST: &str = "tls_to_the_database_follows_sslmode";
    let dir = crate::support::tempdir("pg-tls");
    hl7d::tls::pki::dev_pki(&dir.join("pki"), &[], false).unwrap();
    hl7d::tls::pki::dev_pki(&dir.join("other"), &[], false).unwrap();
    let Some(cluster) = crate::support::pg::Cluster::start_with_tls(TEST, &dir.join("pki")) else { return };
    let db = TestDb::create_on(&cluster.url, "tls").await;
    // The certificate names localhost and 127.0.0.1; verify-full checks the URL's host.
    let url = db.url.replacen("127.0.0.1", "localhost", 1);
    let encrypted = |store: &PgStore| {
        let pool = store.pool().clone();
        async move {
            let client = pool.get().await.unwrap();
            client
                .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    let config = |sslmode, ca: Option<&str>| PostgresConfig {
        sslmode,
        ca: ca.map(|name| dir.join(name).join("ca.pem")),
        ..pg_config(&url)
    };

    let store = PgStore::open(&config(SslMode::VerifyFull, Some("pki")), PgOptions::default()).await.unwrap();
    assert!(encrypted(&store).await, "verify-full: encrypted");
    assert_eq!(store.append(new_message(&adt("TLS-1", "P1"), accepted(HOUR))).await.unwrap(), Appended::New);
    store.close().await;

    match PgStore::open(&config(SslMode::VerifyFull, Some("other")), PgOptions::default()).await {
        Err(StoreError::Open { reason, .. }) => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}")
        }
        other => panic!("verify-full with another CA must fail, got {other:?}"),
    }

    let store = PgStore::open(&config(SslMode::Require, None), PgOptions::default()).await.unwrap();
    assert!(encrypted(&store).await, "require: encrypted, not verified");
    store.close().await;

    let store = PgStore::open(&config(SslMode::Disable, None), PgOptions::default()).await.unwrap();
    assert!(!encrypted(&store).await, "disable: plain");
    store.close().await;
}

/// With no traffic, the health probe alone notices the database going away and coming
/// back (what `/ready` follows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_follows_the_database_without_traffic() {
    const TEST: &str = "the_health_probe_follows_the_database_without_traffic";
    let Some(cluster) = crate::support::pg::Cluster::start(TEST).map(Arc::new) else { return };
    let db = TestDb::create_on(&cluster.url, "probe").await;
    let options = PgOptions { probe_interval: Some(Duration::from_millis(50)), ..PgOptions::default() };
    let store = PgStore::open(&pg_config(&db.url), options).await.unwrap();
    let health = store.health();
    assert!(health.is_up());
    let restarting = cluster.clone();
    let restart = tokio::task::spawn_blocking(move || restarting.restart());
    let mut seen_down = false;
    while !restart.is_finished() {
        seen_down |= !health.is_up();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    restart.await.unwrap();
    assert!(seen_down, "the probe never saw the database down during its restart");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !health.is_up() {
        assert!(std::time::Instant::now() < deadline, "the probe did not see the database back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
}
