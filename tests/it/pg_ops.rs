//! The operator's delivery commands on the PostgreSQL store (issue 16: "parking, retry/skip
//! commands and metrics work the same on every node"): `hl7d routes parked|retry|skip|
//! backfill` and `hl7d messages resend` run as a separate process (another "node") while an
//! engine on its own runtime works the queue. Skipped loudly without `HL7D_TEST_PG_URL` (a
//! failure under CI).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hl7d::store::MessageStore;

use crate::pg_delivery::{ingest_store, Downstream, Node};
use crate::pg_store::{accepted, adt, hl7d, new_message};
use crate::support::pg::TestDb;

/// A `[store] url` configuration with route `r` (what the ingest store queues for) and
/// route `late` (configured after the messages arrived: backfill's).
fn config_file(url: &str) -> (crate::support::TestDir, String) {
    let dir = crate::support::tempdir("pg-ops");
    let path = dir.join("hl7d.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = {url:?}\nsslmode = \"disable\"\n\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\n\
             [[route]]\nname = \"r\"\nto = \"file:///unused\"\norder = \"per_patient\"\n\n\
             [[route]]\nname = \"late\"\nto = \"file:///unused\"\norder = \"per_patient\"\n"
        ),
    )
    .unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

/// The stored messages' ids, in the order they were appended (one at a time).
async fn message_ids(db: &TestDb) -> Vec<i64> {
    let rows = db.client().await.query("SELECT id FROM messages ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|row| row.get(0)).collect()
}

/// The control ids the downstream took, in order.
fn delivered(downstream: &Downstream) -> Vec<String> {
    downstream.delivered.lock().unwrap().iter().map(|(_, _, control_id)| control_id.clone()).collect()
}

/// Waits (real time, bounded) until the downstream took every one of `control_ids`.
fn wait_for(downstream: &Downstream, control_ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = delivered(downstream);
        if control_ids.iter().all(|id| seen.iter().any(|s| s == id)) {
            return;
        }
        assert!(Instant::now() < deadline, "waited for {control_ids:?}; delivered {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A parked delivery retried from the CLI is delivered by a running engine on another
/// node, its lane after it; a skip releases its lane and the skipped message is never
/// sent; a skip of a delivery in flight is refused, as on SQLite; the answers of `parked`,
/// `retry`, `skip` and `status` are SQLite's.
#[test]
fn parked_deliveries_are_retried_and_skipped_from_the_cli_while_a_node_works() {
    let setup = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(db) = setup.block_on(TestDb::create("parked_retried_and_skipped")) else { return };
    let (_dir, config) = config_file(&db.url);
    let config = config.as_str();
    // P0: M0 M1; P1: M2 M3; P2: M4.
    let ids: Vec<i64> = setup.block_on(async {
        let store = ingest_store(&db.url).await;
        for (control_id, patient) in [("M0", "P0"), ("M1", "P0"), ("M2", "P1"), ("M3", "P1"), ("M4", "P2")] {
            store.append(new_message(&adt(control_id, patient), accepted(None))).await.unwrap();
        }
        store.close().await;
        message_ids(&db).await
    });
    let sql = |statement: &str, id: i64| {
        setup.block_on(async { db.client().await.execute(statement, &[&id]).await.unwrap() });
    };
    // A node parked M0 and M2 (their lanes hold); M4 is in flight on a node.
    for id in [ids[0], ids[2]] {
        sql(
            "UPDATE deliveries SET state = 'parked', attempts = 3, done_at = 1, last_error = 'refused: AR' \
             WHERE message_id = $1",
            id,
        );
    }
    sql("UPDATE deliveries SET state = 'in_flight' WHERE message_id = $1", ids[4]);

    let (code, _, err) = hl7d(&["routes", "skip", "r", "--message", &ids[4].to_string(), "--config", config]);
    assert_eq!(code, 1, "a delivery in flight is not skipped: {err}");
    assert!(err.contains("in_flight (an attempt is under way"), "{err}");
    sql("UPDATE deliveries SET state = 'pending' WHERE message_id = $1", ids[4]);

    let (code, out, err) = hl7d(&["routes", "parked", "r", "--json", "--config", config]);
    assert_eq!(code, 0, "{err}");
    let parked: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let parked = parked.as_array().unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(parked[0]["message_id"], ids[0]);
    assert_eq!(parked[0]["lane"], "patient/FAC/P0");
    assert_eq!(parked[0]["control_id"], "M0");
    assert_eq!(parked[0]["attempts"], 3);
    assert_eq!(parked[0]["last_error"], "refused: AR");
    assert_eq!(parked[1]["message_id"], ids[2]);

    let downstream = Arc::new(Downstream::default());
    let mut node = Node::start("b", &db.url, Duration::from_secs(5), &downstream, 4);
    wait_for(&downstream, &["M4"]);
    // Lanes P0 and P1 hold behind their parked heads.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(delivered(&downstream), ["M4"]);

    let (code, out, err) =
        hl7d(&["routes", "skip", "r", "--message", &ids[2].to_string(), "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("skipped 1 delivery(ies) on route r:\n"), "{out}");
    assert!(out.contains(&format!("message {}  lane patient/FAC/P1  (was parked)", ids[2])), "{out}");
    assert!(err.contains("route_skip"), "one audit line: {err}");
    wait_for(&downstream, &["M3"]);

    let (code, out, err) =
        hl7d(&["routes", "retry", "r", "--message", &ids[0].to_string(), "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("released 1 parked delivery(ies) on route r:\n"), "{out}");
    assert!(err.contains("route_retry"), "one audit line: {err}");
    wait_for(&downstream, &["M0", "M1"]);
    let seen = delivered(&downstream);
    let at = |id: &str| seen.iter().position(|s| s == id).unwrap();
    assert!(at("M0") < at("M1"), "the lane goes on after its released head: {seen:?}");
    assert!(!seen.contains(&"M2".to_owned()), "a skipped message is never sent: {seen:?}");

    // Nothing parked is left: retrying again says why, as on SQLite.
    let (code, _, err) =
        hl7d(&["routes", "retry", "r", "--message", &ids[0].to_string(), "--config", config]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("message {} has no parked delivery on route r: delivered", ids[0])),
        "{err}"
    );
    let (code, out, _) = hl7d(&["routes", "retry", "r", "--all-parked", "--config", config]);
    assert_eq!(code, 0);
    assert_eq!(out, "nothing parked on route r\n");
    let (code, _, err) = hl7d(&["routes", "skip", "r", "--message", &ids[0].to_string(), "--config", config]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has no parked or pending delivery on route r: delivered"), "{err}");

    let (code, out, err) = hl7d(&["routes", "status", "--json", "--config", config]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let r = &status.as_array().unwrap()[0];
    assert_eq!(
        (r["name"].as_str(), r["delivered"].as_u64(), r["skipped"].as_u64()),
        (Some("r"), Some(4), Some(1))
    );
    assert_eq!(
        (r["parked"].as_u64(), r["held_lanes"].as_u64(), r["pending"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    node.stop();
}

/// `messages resend ID` queues a new delivery linked to the original (`resend_of`) that a
/// running node delivers again; a range resend and a backfill queue what SQLite's do, in the
/// lanes the writer computes, once.
#[test]
fn resend_links_the_original_and_backfill_queues_once() {
    let setup = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(db) = setup.block_on(TestDb::create("resend_and_backfill")) else { return };
    let (_dir, config) = config_file(&db.url);
    let config = config.as_str();
    let ids: Vec<i64> = setup.block_on(async {
        let store = ingest_store(&db.url).await;
        for (control_id, patient) in [("R0", "P0"), ("R1", "P1"), ("R2", "P0")] {
            store.append(new_message(&adt(control_id, patient), accepted(None))).await.unwrap();
        }
        store.close().await;
        message_ids(&db).await
    });
    let downstream = Arc::new(Downstream::default());
    let mut node = Node::start("b", &db.url, Duration::from_secs(5), &downstream, 4);
    wait_for(&downstream, &["R0", "R1", "R2"]);

    let (code, out, err) =
        hl7d(&["messages", "resend", &ids[1].to_string(), "--route", "r", "--config", config]);
    assert_eq!(code, 0, "{err}");
    let original: i64 = setup.block_on(async {
        db.client()
            .await
            .query_one("SELECT id FROM deliveries WHERE message_id = $1 AND resend_of IS NULL", &[&ids[1]])
            .await
            .unwrap()
            .get(0)
    });
    assert!(out.starts_with("queued 1 resend(s) on route r:\n"), "{out}");
    assert!(out.contains(&format!("(resend of delivery {original})")), "{out}");
    assert!(err.contains("message_resend"), "one audit line: {err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered(&downstream).iter().filter(|id| *id == "R1").count() < 2 {
        assert!(Instant::now() < deadline, "the resend was not delivered: {:?}", delivered(&downstream));
        std::thread::sleep(Duration::from_millis(20));
    }
    let resent: Vec<(Option<i64>, String)> = setup.block_on(async {
        db.client()
            .await
            .query("SELECT resend_of, state FROM deliveries WHERE message_id = $1 ORDER BY id", &[&ids[1]])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    });
    assert_eq!(resent, [(None, "delivered".to_owned()), (Some(original), "delivered".to_owned())]);

    // An unknown id beside a known one queues nothing (all or nothing).
    let (code, _, err) =
        hl7d(&["messages", "resend", &ids[0].to_string(), "999999", "--route", "r", "--config", config]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no message with id 999999"), "{err}");

    let (code, out, err) =
        hl7d(&["messages", "resend", "--route", "r", "--since", "1h", "--dry-run", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "would queue 3 resend(s) on route r\n");

    // Backfill: `late` was configured after the messages arrived.
    let (code, out, err) =
        hl7d(&["routes", "backfill", "late", "--since", "1h", "--dry-run", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "would queue 3 message(s) for route late\n");
    let (code, out, err) = hl7d(&["routes", "backfill", "late", "--since", "1h", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("queued 3 message(s) for route late (messages {} to {})\n", ids[0], ids[2]));
    assert!(err.contains("route_backfill"), "one audit line: {err}");
    let (code, out, _) = hl7d(&["routes", "backfill", "late", "--since", "1h", "--config", config]);
    assert_eq!(code, 0);
    assert_eq!(out, "queued 0 message(s) for route late\n", "running it again queues nothing");
    let lanes: Vec<(i64, String, String)> = setup.block_on(async {
        db.client()
            .await
            .query(
                "SELECT l.message_id, l.lane, r.lane FROM deliveries l JOIN deliveries r \
                 ON r.message_id = l.message_id AND r.route = 'r' AND r.resend_of IS NULL \
                 WHERE l.route = 'late' ORDER BY l.id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    });
    assert_eq!(lanes.len(), 3);
    for (message, late, r) in &lanes {
        assert_eq!(late, r, "message {message}: the writer's lane");
    }
    assert_eq!(lanes.iter().map(|l| l.0).collect::<Vec<_>>(), ids, "in the order stored");
    node.stop();
}

/// `messages purge` on PostgreSQL: the filter's messages go, with their delivery rows and
/// duplicate keys; one with a delivery still to do is kept (and counted) unless
/// `--include-undelivered`; `--dry-run` deletes nothing; an unfiltered purge needs `--all`.
#[test]
fn purge_deletes_the_selected_messages_and_keeps_undelivered_ones() {
    let setup = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(db) = setup.block_on(TestDb::create("purge")) else { return };
    let (_dir, config) = config_file(&db.url);
    let config = config.as_str();
    let ids: Vec<i64> = setup.block_on(async {
        let store = ingest_store(&db.url).await;
        for (control_id, patient) in [("U0", "P0"), ("U1", "P1"), ("U2", "P2"), ("U3", "P3")] {
            store.append(new_message(&adt(control_id, patient), accepted(None))).await.unwrap();
        }
        store.close().await;
        message_ids(&db).await
    });
    let count = |sql: &str| -> i64 {
        setup.block_on(async { db.client().await.query_one(sql, &[]).await.unwrap().get(0) })
    };
    // U0 and U1 were delivered; U2 is parked, U3 pending.
    setup.block_on(async {
        let client = db.client().await;
        client
            .execute(
                "UPDATE deliveries SET state = 'delivered', done_at = 1 WHERE message_id = ANY($1)",
                &[&&ids[..2]],
            )
            .await
            .unwrap();
        client
            .execute("UPDATE deliveries SET state = 'parked' WHERE message_id = $1", &[&ids[2]])
            .await
            .unwrap();
    });

    let (code, _, err) = hl7d(&["messages", "purge", "--config", config]);
    assert_eq!(code, 64, "an unfiltered purge needs --all: {err}");
    let (code, out, err) = hl7d(&["messages", "purge", "--all", "--dry-run", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "would delete 2 message(s)\nkept 2 message(s) with deliveries still to do (--include-undelivered deletes them too)\n"
    );
    assert_eq!(count("SELECT count(*) FROM messages"), 4, "a dry run deletes nothing");

    let (code, out, err) = hl7d(&["messages", "purge", "--control-id", "U0", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "deleted 1 message(s)\n");
    assert!(err.contains("stored messages purged"), "one audit line: {err}");
    let (code, out, err) = hl7d(&["messages", "purge", "--all", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "deleted 1 message(s)\nkept 2 message(s) with deliveries still to do (--include-undelivered deletes them too)\n"
    );
    assert_eq!(count("SELECT count(*) FROM messages"), 2);
    assert_eq!(count("SELECT count(*) FROM message_keys"), 2, "duplicate keys go with their messages");
    assert_eq!(
        count("SELECT coalesce(sum(rows), 0)::BIGINT FROM delivery_counts WHERE state = 'delivered'"),
        0
    );

    let (code, out, err) = hl7d(&["messages", "purge", "--all", "--include-undelivered", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "deleted 2 message(s)\n");
    assert_eq!(count("SELECT count(*) FROM messages"), 0);
    assert_eq!(count("SELECT count(*) FROM deliveries"), 0, "delivery rows go with their messages");
}
