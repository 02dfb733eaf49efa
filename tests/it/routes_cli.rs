//! Issue 15, "Seeing and acting": `hl7d routes status|parked|retry|skip|backfill` and `hl7d
//! messages show|resend`, run as the real binary against the store of a running `hl7d
//! serve`. The messages are stored by that server (so their lane columns are the
//! writer's); the delivery rows are written with SQL on the migrated store, in every state.

use std::path::PathBuf;
use std::process::Command;

use hl7_proto::charset::Charset;
use hl7_proto::keys::{lane_key, LaneOrder};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::store::exchange;
use crate::support::*;

/// A running server with stored messages, and a configuration for the commands: the same
/// store, routes `engine` (every type) and `archive` (`ADT^A*` from `lab`), an audit file.
struct Setup {
    _tmp: TestDir,
    store: PathBuf,
    config: String,
    audit: PathBuf,
    serve: Option<ServeProcess>,
}

/// The messages stored, ids 1 to 7: (control id, MSH-9, PID-3 or none).
const MESSAGES: [(&str, &str, Option<&str>); 7] = [
    ("C1", "ADT^A01^ADT_A01", Some("P1")),
    ("C2", "ADT^A08^ADT_A01", Some("P1")),
    ("C3", "ADT^A01^ADT_A01", Some("P2")),
    ("C4", "ADT^A01^ADT_A01", None),
    ("C5", "ORU^R01^ORU_R01", Some("P3")),
    ("C6", "ADT^A03^ADT_A03", Some("P/4")),
    // Empty MSH-10: refused (AR), stored with status rejected.
    ("", "ADT^A01^ADT_A01", Some("P5")),
];

fn message(control_id: &str, kind: &str, patient: Option<&str>) -> Vec<u8> {
    let pid = patient.map_or_else(String::new, |p| format!("PID|1||{p}^^^HOSP\r"));
    format!("MSH|^~\\&|REG|MCM|HL7D|FAC|20261128||{kind}|{control_id}|P|2.5\r{pid}").into_bytes()
}

async fn setup(label: &str) -> Setup {
    let tmp = tempdir(label);
    let store = tmp.path().join("data");
    let serve = ServeProcess::start(tmp.path(), &store);
    let mut conn = TcpStream::connect(serve.addr).await.unwrap();
    for (control_id, kind, patient) in MESSAGES {
        let (code, _) = exchange(&mut conn, &message(control_id, kind, patient)).await;
        assert_eq!(code, if control_id.is_empty() { "AR" } else { "AA" }, "{control_id}");
    }
    let audit = tmp.path().join("audit.jsonl");
    let config = tmp.path().join("cli.toml");
    let spool = tmp.path().join("spool");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {store:?}\n\n[audit]\nfile = {audit:?}\n\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\n\
             [[route]]\nname = \"engine\"\nto = \"mllp://127.0.0.1:9\"\n\n\
             [[route]]\nname = \"archive\"\nto = \"file://{}\"\nlisteners = [\"lab\"]\nmessage_types = [\"ADT^A*\"]\n",
            spool.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    Setup { _tmp: tmp, store, config, audit, serve: Some(serve) }
}

impl Setup {
    fn db(&self) -> Connection {
        let conn = Connection::open(self.store.join("messages.db")).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        conn
    }

    /// `hl7d ARGS --config <ours>`: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(args)
            .args(["--config", &self.config])
            .output()
            .expect("run hl7d");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Like [`Setup::run`]; the command must succeed. Returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, 0, "hl7d {args:?}: {stdout}{stderr}");
        stdout
    }

    /// The lane of message `id` under per_patient, as the writer computes it at ingest
    /// (`hl7_proto::keys::lane_key` of the extraction; schema 6 stores it in the delivery
    /// rows only), from the message's stored bytes.
    fn lane(&self, id: i64) -> String {
        let (charset, raw): (String, Vec<u8>) = self
            .db()
            .query_row("SELECT charset, raw FROM messages WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        let charset = Charset::from_config_name(&charset).unwrap();
        lane_key(LaneOrder::PerPatient, &hl7_proto::extract::extract(&raw, charset))
    }

    /// Inserts a delivery row as the engine would have left it; returns its id.
    fn delivery(&self, message: i64, route: &str, state: &str) -> i64 {
        let conn = self.db();
        let now = micros_now();
        let done = matches!(state, "delivered" | "parked" | "skipped").then_some(now);
        let tried = (state != "pending").then_some(now);
        conn.execute(
            "INSERT INTO deliveries (message_id, route, lane, state, attempts, queued_at, next_attempt_at, \
             first_attempt_at, last_attempt_at, done_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?7, ?8)",
            params![
                message,
                route,
                self.lane(message),
                state,
                i64::from(tried.is_some()),
                now - 5_000_000,
                tried,
                done
            ],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn state(&self, delivery: i64) -> String {
        self.db().query_row("SELECT state FROM deliveries WHERE id = ?1", [delivery], |r| r.get(0)).unwrap()
    }

    /// (message id, lane, state, resend_of) of `route`'s rows, in queue order.
    fn rows(&self, route: &str) -> Vec<(i64, String, String, Option<i64>)> {
        self.db()
            .prepare("SELECT message_id, lane, state, resend_of FROM deliveries WHERE route = ?1 ORDER BY id")
            .unwrap()
            .query_map([route], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The rows of the typical queue: on `engine`, 1 parked (holds P1), 2 pending behind
    /// it, 3 in flight, 4 delivered, 6 parked (holds P/4); on `retired` (no longer
    /// configured), 1 pending. Returns the ids of 1, 2, 3, 4, 6 on `engine`.
    fn queue(&self) -> [i64; 5] {
        let ids = [
            self.delivery(1, "engine", "parked"),
            self.delivery(2, "engine", "pending"),
            self.delivery(3, "engine", "in_flight"),
            self.delivery(4, "engine", "delivered"),
            self.delivery(6, "engine", "parked"),
        ];
        self.delivery(1, "retired", "pending");
        let conn = self.db();
        conn.execute(
            "UPDATE deliveries SET last_error = 'AR: unknown patient', response = 'AR', last_attempt_at = last_attempt_at + 1 \
             WHERE id = ?1",
            [ids[0]],
        )
        .unwrap();
        // An earlier failure, in another lane.
        conn.execute(
            "UPDATE deliveries SET last_error = 'connection refused', last_attempt_at = last_attempt_at - 1000000 \
             WHERE id = ?1",
            [ids[2]],
        )
        .unwrap();
        ids
    }

    fn audit_lines(&self, event: &str) -> Vec<Value> {
        read_audit(&self.audit).into_iter().filter(|line| line["event"] == event).collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(serve) = self.serve.take() {
            serve.kill();
        }
    }
}

fn micros_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

/// The OS user the audit line must name: `id -un`, the effective user.
fn effective_user() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn assert_audited_by_os_user(line: &Value) {
    assert_eq!(line["user"].as_str(), Some(effective_user().as_str()), "{line}");
    assert_eq!(line["uid"].as_u64(), Some(u64::from(rustix::process::geteuid().as_raw())), "{line}");
}

#[tokio::test]
async fn status_counts_every_state_and_keeps_a_removed_route_visible() {
    let s = setup("routes-status").await;
    s.queue();

    let json: Value = serde_json::from_str(&s.ok(&["routes", "status", "--json"])).unwrap();
    let routes = json.as_array().expect("an array");
    let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["engine", "archive", "retired"], "configured first, then removed");
    for route in routes {
        for field in [
            "name",
            "pending",
            "in_flight",
            "delivered",
            "parked",
            "held_lanes",
            "oldest_pending_seconds",
            "last_error",
        ] {
            assert!(route.get(field).is_some(), "{field} missing in {route}");
        }
    }
    let engine = &routes[0];
    let counts: Vec<u64> = ["pending", "in_flight", "delivered", "parked", "held_lanes"]
        .iter()
        .map(|field| engine[*field].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 1, 1, 2, 2], "{engine}");
    assert!(
        (5..60).contains(&engine["oldest_pending_seconds"].as_u64().unwrap()),
        "queued 5 s ago: {engine}"
    );
    assert_eq!(engine["last_error"], "AR: unknown patient", "the latest failed attempt's: {engine}");
    assert_eq!(engine["removed"], false);
    let archive = &routes[1];
    assert_eq!((archive["pending"].as_u64(), archive["oldest_pending_seconds"].as_u64()), (Some(0), Some(0)));
    assert_eq!(archive["last_error"], Value::Null);
    let retired = &routes[2];
    assert_eq!(
        (retired["pending"].as_u64(), retired["removed"].as_bool()),
        (Some(1), Some(true)),
        "{retired}"
    );

    let table = s.ok(&["routes", "status"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ROUTE") && lines[0].contains("HELD LANES"), "{table}");
    assert!(lines[1].starts_with("engine ") && lines[1].contains("AR: unknown patient"), "{table}");
    assert!(lines[3].starts_with("retired (removed)"), "{table}");

    // A delivery finishing moves it from one count to the other at once.
    s.db().execute("UPDATE deliveries SET state = 'delivered' WHERE state = 'in_flight'", []).unwrap();
    let json: Value = serde_json::from_str(&s.ok(&["routes", "status", "--json"])).unwrap();
    assert_eq!((json[0]["in_flight"].as_u64(), json[0]["delivered"].as_u64()), (Some(0), Some(2)));
}

#[tokio::test]
async fn parked_lists_and_retry_releases_exactly_the_selected_rows_with_an_audit_line() {
    let s = setup("routes-retry").await;
    let [d1, d2, d3, d4, d6] = s.queue();

    let parked: Value = serde_json::from_str(&s.ok(&["routes", "parked", "engine", "--json"])).unwrap();
    let parked = parked.as_array().unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    let by_message: Vec<(i64, &str, &str)> = parked
        .iter()
        .map(|p| {
            (
                p["message_id"].as_i64().unwrap(),
                p["control_id"].as_str().unwrap(),
                p["lane"].as_str().unwrap(),
            )
        })
        .collect();
    let (lane1, lane6) = (s.lane(1), s.lane(6));
    let mut expected = vec![(1, "C1", lane1.as_str()), (6, "C6", lane6.as_str())];
    expected.sort_by_key(|(_, _, lane)| lane.to_owned());
    assert_eq!(by_message, expected);
    let first = parked.iter().find(|p| p["message_id"] == 1).unwrap();
    assert_eq!(first["delivery_id"].as_i64(), Some(d1));
    assert_eq!((first["message_type"].as_str(), first["attempts"].as_u64()), (Some("ADT^A01"), Some(1)));
    assert_eq!(
        (first["last_error"].as_str(), first["response"].as_str()),
        (Some("AR: unknown patient"), Some("AR"))
    );
    assert!(first["parked_at"].as_str().unwrap().ends_with('Z'), "{first}");
    let table = s.ok(&["routes", "parked", "engine"]);
    assert_eq!(table.lines().count(), 3, "{table}");

    // --message: only that message's parked row, pending and due now; attempts kept.
    let out = s.ok(&["routes", "retry", "engine", "--message", "1"]);
    assert!(
        out.contains("released 1 parked delivery(ies)") && out.contains(&format!("delivery {d1}")),
        "{out}"
    );
    assert_eq!(
        [s.state(d1), s.state(d2), s.state(d3), s.state(d4), s.state(d6)],
        ["pending", "pending", "in_flight", "delivered", "parked"]
    );
    let (attempts, next): (i64, i64) = s
        .db()
        .query_row("SELECT attempts, next_attempt_at FROM deliveries WHERE id = ?1", [d1], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(attempts, 1);
    assert!((micros_now() - next).abs() < 60_000_000, "due now");
    let line = &s.audit_lines("route_retry")[0];
    assert_eq!((line["route"].as_str(), line["action"].as_str()), (Some("engine"), Some("retry")));
    assert_eq!((line["count"].as_u64(), line["message_ids"].as_str()), (Some(1), Some("1")));
    assert_audited_by_os_user(line);

    // Nothing parked for it any more: a failure that says why.
    let (code, _, stderr) = s.run(&["routes", "retry", "engine", "--message", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no parked delivery") && stderr.contains("pending"), "{stderr}");

    // --lane: that lane's parked rows only (the lane key as `routes parked` shows it).
    let out = s.ok(&["routes", "retry", "engine", "--lane", &lane6]);
    assert!(out.contains(&format!("delivery {d6}")), "{out}");
    assert_eq!(s.state(d6), "pending");
    let lane_line = &s.audit_lines("route_retry")[2];
    assert_eq!(lane_line["selection"], "lane");
    assert!(!lane_line.to_string().contains(&lane6), "a lane names a patient; not in the audit: {lane_line}");

    // --all-parked: every parked row of the route, none of another route's.
    s.db().execute("UPDATE deliveries SET state = 'parked' WHERE id IN (?1, ?2)", [d1, d6]).unwrap();
    let retired_parked = s.delivery(2, "retired", "parked");
    let out = s.ok(&["routes", "retry", "engine", "--all-parked"]);
    assert!(out.contains("released 2 parked"), "{out}");
    assert_eq!(
        (s.state(d1), s.state(d6), s.state(retired_parked)),
        ("pending".into(), "pending".into(), "parked".into())
    );
    let out = s.ok(&["routes", "retry", "engine", "--all-parked"]);
    assert!(out.contains("nothing parked on route engine"), "{out}");

    // A removed route's parked rows can be released too, with a warning.
    let (code, _, stderr) = s.run(&["routes", "retry", "retired", "--all-parked"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("not in the configuration"), "{stderr}");
    assert_eq!(s.state(retired_parked), "pending");

    // Exactly one selector.
    for args in
        [&["routes", "retry", "engine"][..], &["routes", "retry", "engine", "--message", "1", "--all-parked"]]
    {
        assert_eq!(s.run(args).0, 64, "{args:?}");
    }
}

#[tokio::test]
async fn skip_gives_up_on_parked_and_pending_deliveries_but_not_one_in_flight() {
    let s = setup("routes-skip").await;
    let [d1, d2, d3, _, _] = s.queue();

    let out = s.ok(&["routes", "skip", "engine", "--message", "1"]);
    assert!(out.contains(&format!("delivery {d1}")) && out.contains("was parked"), "{out}");
    assert_eq!(s.state(d1), "skipped");
    let done: Option<i64> =
        s.db().query_row("SELECT done_at FROM deliveries WHERE id = ?1", [d1], |r| r.get(0)).unwrap();
    assert!(done.is_some());
    s.ok(&["routes", "skip", "engine", "--message", "2"]);
    assert_eq!(s.state(d2), "skipped");
    let (code, _, stderr) = s.run(&["routes", "skip", "engine", "--message", "3"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("in_flight"), "{stderr}");
    assert_eq!(s.state(d3), "in_flight");

    let lines = s.audit_lines("route_skip");
    assert_eq!(lines.len(), 3, "every attempt is audited, the one that changed nothing too");
    assert_eq!((lines[0]["message_ids"].as_str(), lines[0]["count"].as_u64()), (Some("1"), Some(1)));
    assert_eq!(lines[2]["count"].as_u64(), Some(0));
    assert_audited_by_os_user(&lines[0]);

    let json: Value = serde_json::from_str(&s.ok(&["routes", "status", "--json"])).unwrap();
    assert_eq!(
        (json[0]["parked"].as_u64(), json[0]["held_lanes"].as_u64(), json[0]["skipped"].as_u64()),
        (Some(1), Some(1), Some(2))
    );
}

/// Backfill queues what the route takes and never had, in store order, in the lanes the
/// writer gives (`hl7_proto::keys::lane_key` of each message), once.
#[tokio::test]
async fn backfill_queues_earlier_messages_once_in_the_writers_lanes() {
    let s = setup("routes-backfill").await;

    let out = s.ok(&["routes", "backfill", "archive", "--since", "1h", "--dry-run"]);
    assert_eq!(out.trim(), "would queue 5 message(s) for route archive", "ADT from lab, accepted");
    assert!(s.rows("archive").is_empty(), "a dry run writes nothing");
    assert!(s.audit_lines("route_backfill").is_empty(), "nor audits");

    let out = s.ok(&["routes", "backfill", "archive", "--since", "1h"]);
    assert_eq!(out.trim(), "queued 5 message(s) for route archive (messages 1 to 6)");
    let rows = s.rows("archive");
    let messages: Vec<i64> = rows.iter().map(|row| row.0).collect();
    assert_eq!(messages, [1, 2, 3, 4, 6], "store order; not the ORU, not the refused one");
    for (id, lane, state, resend_of) in &rows {
        assert_eq!((state.as_str(), *resend_of), ("pending", None));
        let (control_id, kind, patient) = MESSAGES[(*id - 1) as usize];
        let raw = message(control_id, kind, patient);
        let extracted = hl7_proto::extract::extract(&raw, Charset::Utf8);
        assert_eq!(lane, &lane_key(LaneOrder::PerPatient, &extracted), "message {id}");
        assert_eq!(lane, &s.lane(*id), "message {id}");
    }
    assert_eq!(rows[3].1, "sender/REG/MCM", "no PID: the sender's lane");
    assert_eq!(rows[4].1, "patient/MCM/P%2F4");
    let line = &s.audit_lines("route_backfill")[0];
    assert_eq!((line["route"].as_str(), line["count"].as_u64()), (Some("archive"), Some(5)));
    assert_eq!((line["first_message_id"].as_i64(), line["last_message_id"].as_i64()), (Some(1), Some(6)));
    assert_audited_by_os_user(line);

    let out = s.ok(&["routes", "backfill", "archive", "--since", "1h"]);
    assert_eq!(out.trim(), "queued 0 message(s) for route archive", "a second run queues nothing");
    assert_eq!(s.rows("archive").len(), 5);

    // `engine` already has some: only the others, the ORU included (it takes every type).
    s.queue();
    let out = s.ok(&["routes", "backfill", "engine", "--since", "1h", "--dry-run"]);
    assert_eq!(out.trim(), "would queue 1 message(s) for route engine");
    let out = s.ok(&["routes", "backfill", "engine", "--since", "2000-01-01", "--until", "2000-01-02"]);
    assert_eq!(out.trim(), "queued 0 message(s) for route engine", "outside the range");

    // A removed route cannot be backfilled (its listeners and types are gone).
    let (code, _, stderr) = s.run(&["routes", "backfill", "retired", "--since", "1h"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("not in the configuration") && stderr.contains("engine, archive"), "{stderr}");
}

#[tokio::test]
async fn resend_queues_new_deliveries_linked_to_the_originals() {
    let s = setup("routes-resend").await;
    let [_, _, _, d4, _] = s.queue();

    let out = s.ok(&["messages", "resend", "4", "--route", "engine", "--dry-run"]);
    assert_eq!(out.trim(), "would queue 1 resend(s) on route engine");
    assert_eq!(s.rows("engine").len(), 5);

    let out = s.ok(&["messages", "resend", "4", "5", "--route", "engine"]);
    assert!(out.contains("queued 2 resend(s)") && out.contains(&format!("resend of delivery {d4}")), "{out}");
    let rows = s.rows("engine");
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[5], (4, s.lane(4), "pending".into(), Some(d4)));
    assert_eq!(rows[6], (5, s.lane(5), "pending".into(), None), "no earlier delivery of message 5");
    let line = &s.audit_lines("message_resend")[0];
    assert_eq!(
        (line["route"].as_str(), line["message_ids"].as_str(), line["count"].as_u64()),
        (Some("engine"), Some("4,5"), Some(2))
    );
    assert_audited_by_os_user(line);

    // A range: every message the route had (6 of them now), each linked to its original.
    let out = s.ok(&["messages", "resend", "--route", "engine", "--since", "1h", "--dry-run"]);
    assert_eq!(out.trim(), "would queue 6 resend(s) on route engine");
    s.ok(&["messages", "resend", "--route", "engine", "--since", "1h"]);
    let rows = s.rows("engine");
    assert_eq!(rows.len(), 13);
    assert!(rows[7..].iter().all(|row| row.2 == "pending" && row.3.is_some()), "{rows:?}");

    // A refused message, an unknown one: nothing queued, exit 1.
    for id in ["7", "999"] {
        let (code, _, stderr) = s.run(&["messages", "resend", "1", id, "--route", "engine"]);
        assert_eq!(code, 1, "{id}: {stderr}");
    }
    assert_eq!(s.rows("engine").len(), 13, "all or nothing");
    // Neither ids nor --since.
    assert_eq!(s.run(&["messages", "resend", "--route", "engine"]).0, 64);
}

#[tokio::test]
async fn messages_show_has_each_routes_delivery_and_unknown_names_fail_with_their_codes() {
    let s = setup("routes-show").await;
    let [d1, ..] = s.queue();

    let text = s.ok(&["messages", "show", "1"]);
    assert!(text.contains(&format!("route engine         parked (delivery {d1})")), "{text}");
    assert!(text.contains("route retired        pending"), "{text}");
    assert!(text.contains("  last_error         AR: unknown patient"), "{text}");
    assert!(text.contains("  response           AR"), "{text}");
    assert!(text.contains("patient_id           P1"), "{text}");

    let json: Value = serde_json::from_str(&s.ok(&["messages", "show", "1", "--json"])).unwrap();
    assert_eq!(
        (json["id"].as_i64(), json["status"].as_str(), json["ack_code"].as_str()),
        (Some(1), Some("accepted"), Some("AA"))
    );
    assert_eq!(json["key_fields"]["patient_id"], "P1");
    let deliveries = json["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    let engine = deliveries.iter().find(|d| d["route"] == "engine").unwrap();
    assert_eq!((engine["state"].as_str(), engine["attempts"].as_u64()), (Some("parked"), Some(1)));
    assert_eq!(
        (engine["last_error"].as_str(), engine["response"].as_str()),
        (Some("AR: unknown patient"), Some("AR"))
    );
    for time in ["queued_at", "first_attempt_at", "last_attempt_at", "done_at"] {
        assert!(engine[time].as_str().is_some_and(|t| t.ends_with('Z')), "{time}: {engine}");
    }
    assert!(!json.to_string().contains("PID|"), "no message content in the JSON: {json}");
    assert_eq!(s.run(&["messages", "show", "1", "--json", "--raw"]).0, 64);

    // Unknown route: a usage error naming the known ones (the configured, the removed).
    for args in [
        &["routes", "parked", "nope"][..],
        &["routes", "retry", "nope", "--all-parked"],
        &["routes", "skip", "nope", "--message", "1"],
        &["routes", "backfill", "nope", "--since", "1h"],
        &["messages", "resend", "1", "--route", "nope"],
    ] {
        let (code, _, stderr) = s.run(args);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(stderr.contains("\"nope\"") && stderr.contains("engine"), "{args:?}: {stderr}");
    }
    let (_, _, stderr) = s.run(&["routes", "parked", "nope"]);
    assert!(stderr.contains("archive, engine, retired"), "{stderr}");
    // Unknown message: a failure.
    for args in [&["messages", "show", "999"][..], &["routes", "skip", "engine", "--message", "999"]] {
        let (code, _, stderr) = s.run(args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains("no message with id 999"), "{args:?}: {stderr}");
    }
    // A configuration that does not load.
    let output = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["routes", "status", "--config", "/nonexistent/hl7d.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    // The server stored on throughout.
    let serve = s.serve.as_ref().unwrap();
    let mut conn = TcpStream::connect(serve.addr).await.unwrap();
    assert_eq!(exchange(&mut conn, &message("C8", "ADT^A01^ADT_A01", Some("P1"))).await.0, "AA");
    let stored: Option<i64> = s
        .db()
        .query_row("SELECT id FROM messages WHERE control_id = 'C8'", [], |r| r.get(0))
        .optional()
        .unwrap();
    assert_eq!(stored, Some(8));
}

/// End to end with the delivery engine of a running `hl7d serve`: a file route whose
/// target names are taken parks two messages (two lanes held, the third lane flows);
/// `routes status` and `routes parked` show them; `routes retry` and `routes skip` from
/// this process release them within 2 s, and each lane goes on in order.
#[tokio::test]
async fn a_running_server_delivers_what_retry_releases_and_goes_past_what_skip_gives_up() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let tmp = tempdir("routes-e2e");
    let store = tmp.path().join("data");
    let spool = tmp.path().join("spool");
    let audit = tmp.path().join("audit.jsonl");
    std::fs::create_dir(&spool).unwrap();
    let config = tmp.path().join("hl7d.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {store:?}\n\n[audit]\nfile = {audit:?}\n\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\n\
             [[route]]\nname = \"files\"\nto = \"file://{}\"\nretry_initial = \"200ms\"\n\
             [route.file]\nname = \"{{control_id}}-{{id}}.hl7\"\n",
            spool.display()
        ),
    )
    .unwrap();
    // Taken names (the messages will be ids 1 and 3): a file is never overwritten, so A1
    // and B1 park.
    for taken in ["A1-1", "B1-3"] {
        std::fs::write(spool.join(format!("{taken}.hl7")), b"someone else's").unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (found, listening) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("hl7d serve: {line}");
            if let Some(addr) = logged_addr(&line, "listening") {
                let _ = found.send(addr);
            }
        }
    });
    let addr = listening.recv_timeout(WAIT).expect("listening");
    let s = Setup { _tmp: tmp, store, config: config.to_str().unwrap().to_owned(), audit, serve: None };
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);

    let mut conn = TcpStream::connect(addr).await.unwrap();
    for (control_id, patient) in [("A1", "PA"), ("A2", "PA"), ("B1", "PB"), ("B2", "PB"), ("C1", "PC")] {
        assert_eq!(exchange(&mut conn, &message(control_id, "ADT^A01^ADT_A01", Some(patient))).await.0, "AA");
    }
    let status = || -> Value { serde_json::from_str(&s.ok(&["routes", "status", "--json"])).unwrap() };
    let counts = |status: &Value| -> [u64; 4] {
        ["delivered", "parked", "held_lanes", "pending"].map(|field| status[0][field].as_u64().unwrap())
    };
    let wait_for = |expected: [u64; 4], limit: Duration| -> Duration {
        let started = Instant::now();
        loop {
            let now = status();
            if counts(&now) == expected {
                return started.elapsed();
            }
            assert!(started.elapsed() < limit, "{now} after {:?}, expected {expected:?}", started.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // C1 delivered; A1, B1 parked, each holding its lane (A2, B2 pending behind them).
    wait_for([1, 2, 2, 2], WAIT);
    let route = &status()[0];
    assert!(route["last_error"].as_str().unwrap().contains("never overwritten"), "{route}");
    let parked: Value = serde_json::from_str(&s.ok(&["routes", "parked", "files", "--json"])).unwrap();
    let ids: Vec<&str> =
        parked.as_array().unwrap().iter().map(|p| p["control_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["A1", "B1"]);
    let id_of = |control_id: &str| -> String {
        let id: i64 = s
            .db()
            .query_row("SELECT id FROM messages WHERE control_id = ?1", [control_id], |r| r.get(0))
            .unwrap();
        id.to_string()
    };

    // The operator moves the other file away and retries A1: A1 then A2 go out.
    std::fs::remove_file(spool.join("A1-1.hl7")).unwrap();
    s.ok(&["routes", "retry", "files", "--message", &id_of("A1")]);
    let took = wait_for([3, 1, 1, 1], WAIT);
    assert!(took < Duration::from_secs(2), "released after {took:?}");
    assert_eq!(std::fs::read(spool.join("A1-1.hl7")).unwrap(), message("A1", "ADT^A01^ADT_A01", Some("PA")));
    assert!(spool.join("A2-2.hl7").exists());

    // B1 is given up on: kept, never sent; B2 goes out; the other file is untouched.
    s.ok(&["routes", "skip", "files", "--message", &id_of("B1")]);
    let took = wait_for([4, 0, 0, 0], WAIT);
    assert!(took < Duration::from_secs(2), "released after {took:?}");
    assert_eq!(std::fs::read(spool.join("B1-3.hl7")).unwrap(), b"someone else's");
    assert!(spool.join("B2-4.hl7").exists());
    assert_eq!(status()[0]["skipped"].as_u64(), Some(1));

    let shown: Value = serde_json::from_str(&s.ok(&["messages", "show", &id_of("B1"), "--json"])).unwrap();
    assert_eq!(shown["deliveries"][0]["state"], "skipped");
    // Both processes wrote to the one audit file: the operator's actions and the engine's
    // lane lines.
    assert_eq!(s.audit_lines("route_retry").len(), 1);
    assert_eq!(s.audit_lines("route_skip").len(), 1);
    let deadline = Instant::now() + WAIT;
    while s.audit_lines("lane_released").len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", read_audit(&s.audit));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.audit_lines("lane_held").len(), 2);
}
