//! Issue 17: the console's pages and `/api/v1/` over real HTTP on 127.0.0.1:0, against a
//! store filled by a running listener. The caller is put in the request's extensions by a
//! stand-in for the auth layer (a fixed [`Principal`]); the real layer's own tests are the
//! auth part's. What is checked here: pages and API show the same data, a patient search
//! pages by keyset, the detail shows the segments with their names and never interprets
//! the message, a viewer gets no action button and a 403, an operator's retry and skip
//! (two steps on the page) change the queue, and the audit trail has exactly one event per
//! view of a message's content.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use axum::{Extension, Router};
use hl7d::config::Config;
use hl7d::console::{self, Credential, Principal, Role};
use hl7d::listener::{ReloadReport, Server};
use hl7d::store::{MessageStore, SqliteOptions, SqliteStore};
use rusqlite::{params, Connection};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// The messages stored, in order: (control id, patient, extra segment).
const MESSAGES: [(&str, &str, &str); 4] = [
    ("C1", "P1", "OBX|1|TX|||a\\F\\b <script>x()</script>\r"),
    ("C2", "P2", ""),
    ("C3", "P1", "NTE|1||note\r"),
    ("C4", "P1", ""),
];

fn message(control_id: &str, patient: &str, extra: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|REG|MCM|HL7D|FAC|20261128||ORU^R01^ORU_R01|{control_id}|P|2.5\rPID|1||{patient}^^^HOSP^MR||DOE^JANE\r{extra}"
    )
    .into_bytes()
}

/// A store with [`MESSAGES`] (ids 1 to 4) received by a running listener, routes `engine`
/// and `archive` in the configuration, and a parked delivery of message 1 on `engine`.
pub(crate) struct Setup {
    _tmp: TestDir,
    pub store: PathBuf,
    server: Option<Server>,
    slot: console::Slot,
}

impl Setup {
    pub(crate) async fn start(label: &str) -> Setup {
        let tmp = tempdir(label);
        let store_dir = tmp.path().join("data");
        let text = format!(
            "[store]\npath = {store_dir:?}\n\n\
             [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\n\
             [[route]]\nname = \"engine\"\nto = \"mllp://127.0.0.1:9\"\n\n\
             [[route]]\nname = \"archive\"\nto = \"mllp://127.0.0.1:9\"\n"
        );
        let config = Config::from_toml_str(&text).unwrap();
        let store = Arc::new(SqliteStore::open(&store_dir, SqliteOptions::default()).unwrap());
        let dyn_store: Arc<dyn MessageStore> = store.clone();
        let server = Server::start(&config, dyn_store).await.unwrap();
        let mut conn = connect_nodelay(server.local_addr("lab").unwrap()).await.unwrap();
        for (control_id, patient, extra) in MESSAGES {
            send(&mut conn, &message(control_id, patient, extra)).await;
            assert_eq!(msa(&read_frame(&mut conn).await).0, "AA", "{control_id}");
        }
        let db = Connection::open(store_dir.join("messages.db")).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        let now = hl7d::store::micros(SystemTime::now());
        for (message_id, route, state) in
            [(1, "engine", "parked"), (3, "engine", "pending"), (1, "archive", "delivered")]
        {
            db.execute(
                "INSERT INTO deliveries (message_id, route, lane, state, attempts, queued_at, next_attempt_at, \
                 first_attempt_at, last_attempt_at, done_at, last_error, response) \
                 VALUES (?1, ?2, 'REG^MCM', ?3, 3, ?4, ?4, ?4, ?4, ?5, ?6, ?7)",
                params![
                    message_id,
                    route,
                    state,
                    now - 5_000_000,
                    (state != "pending").then_some(now),
                    (state == "parked").then_some("downstream refused: AR"),
                    (state == "parked").then_some("MSA|AR|C1|unknown patient"),
                ],
            )
            .unwrap();
        }
        let slot = console::Slot::default();
        let reloader = server.reloader();
        let _ = slot.set(console::Context {
            store: hl7d::config::StoreConfig { path: store_dir.clone(), retention: None, postgres: None },
            config: Arc::new(ArcSwap::from_pointee(config)),
            reloader,
            reload: Arc::new(|| Box::pin(async { ReloadReport::default() })),
            started: SystemTime::now(),
        });
        Setup { _tmp: tmp, store: store_dir, server: Some(server), slot }
    }

    /// Serves the console on 127.0.0.1:0 with `principal` as every request's caller (the
    /// stand-in for the auth layer).
    pub(crate) async fn serve_as(&self, principal: Principal) -> SocketAddr {
        let app: Router = console::router(self.slot.clone()).layer(Extension(principal));
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(socket, app).await });
        addr
    }

    pub(crate) fn delivery_state(&self, message: i64, route: &str) -> String {
        let db = Connection::open(self.store.join("messages.db")).unwrap();
        db.query_row(
            "SELECT state FROM deliveries WHERE message_id = ?1 AND route = ?2 ORDER BY id DESC LIMIT 1",
            params![message, route],
            |row| row.get(0),
        )
        .unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            tokio::spawn(server.shutdown(WAIT));
        }
    }
}

pub(crate) fn principal(user: &str, role: Role) -> Principal {
    Principal {
        user: user.into(),
        role,
        credential: Credential::Session,
        addr: IpAddr::from([127, 0, 0, 7]),
        csrf: Some("csrf-token-of-the-test".into()),
    }
}

/// One HTTP/1.1 exchange (`Connection: close`): status, headers (lower-cased names) and body.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String, String) {
    http_within(addr, method, path, content_type, body, WAIT).await
}

/// [`http`] with its own bound on the whole exchange. The body ends at its
/// `Content-Length` when the head gives one (chromedriver keeps the connection open), else
/// at the end of the stream.
pub(crate) async fn http_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
    bound: std::time::Duration,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(content_type) = content_type {
        head += &format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len());
    } else if method == "POST" {
        head += "Content-Length: 0\r\n";
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let exchange = async {
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse::<usize>().ok());
                if length.is_some_and(|length| raw.len() >= end + 4 + length) {
                    break;
                }
            }
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        raw
    };
    let raw = tokio::time::timeout(bound, exchange).await.expect("response in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

pub(crate) async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = http(addr, "GET", path, None, b"").await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

pub(crate) async fn post_json(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let (status, _, body) =
        http(addr, "POST", path, Some("application/json"), body.to_string().as_bytes()).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

async fn post_form(addr: SocketAddr, path: &str, form: &str) -> (u16, String) {
    let (status, _, body) =
        http(addr, "POST", path, Some("application/x-www-form-urlencoded"), form.as_bytes()).await;
    (status, body)
}

pub(crate) fn ids(page: &Value) -> Vec<i64> {
    page["messages"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect()
}

fn count(audit: &AuditCapture, event: &str) -> usize {
    read_audit(audit.path()).iter().filter(|line| line["event"] == event).count()
}

#[tokio::test]
async fn a_patient_search_pages_by_keyset_and_pages_and_api_agree() {
    let dir = tempdir("console-audit-search");
    let audit = AuditCapture::start(dir.path());
    let setup = Setup::start("console-search").await;
    let addr = setup.serve_as(principal("ana", Role::Viewer)).await;

    let (status, page) = get_json(addr, "/api/v1/messages?patient=P1").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), [4, 3, 1], "newest first");
    assert_eq!(page["next_before"], Value::Null);
    assert_eq!(page["messages"][0]["key_fields"]["patient_id"], "P1");

    // Keyset pages: 2, then the rest; no gap, no repeat.
    let (_, first) = get_json(addr, "/api/v1/messages?patient=P1&limit=2").await;
    assert_eq!(ids(&first), [4, 3]);
    assert_eq!(first["next_before"], 3);
    let (_, second) = get_json(addr, "/api/v1/messages?patient=P1&limit=2&before=3").await;
    assert_eq!(ids(&second), [1]);
    assert_eq!(second["next_before"], Value::Null);

    // The page lists the same messages, each linked to its detail, and links the next page.
    let (status, headers, html) = http(addr, "GET", "/messages?patient=P1&limit=2", None, b"").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"href="/messages/4""#) && html.contains(r#"href="/messages/3""#), "{html}");
    assert!(!html.contains(r#"href="/messages/1""#));
    assert!(html.contains("before=3"), "{html}");
    assert!(
        headers.contains("content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'")
    );
    assert!(headers.contains("cache-control: no-store"));
    assert!(headers.contains("server-timing: app;dur="));

    // Other indexed filters; a bad one is a 400 that says which.
    let (_, by_control) = get_json(addr, "/api/v1/messages?control_id=C2").await;
    assert_eq!(ids(&by_control), [2]);
    let (_, by_sender) =
        get_json(addr, "/api/v1/messages?sender=REG%5EMCM&type=ORU%5ER01*&status=accepted").await;
    assert_eq!(ids(&by_sender), [4, 3, 2, 1]);
    let (status, bad) = get_json(addr, "/api/v1/messages?since=yesterday-ish").await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().starts_with("since:"), "{bad}");

    // One audit event per search naming a patient (4 above), none for the others; the
    // patient id is not in it.
    assert_eq!(count(&audit, "messages_searched"), 4, "{}", audit.text());
    let line = audit.find(&[("event", "messages_searched")]).unwrap();
    assert_eq!((line["user"].as_str(), line["addr"].as_str()), (Some("ana"), Some("127.0.0.7")));
    assert_eq!(line["message_ids"], "4,3,1");
    assert!(!audit.text().contains("P1"), "{}", audit.text());
}

#[tokio::test]
async fn the_detail_names_fields_shows_escapes_and_deliveries_and_each_view_is_audited_once() {
    let dir = tempdir("console-audit-views");
    let audit = AuditCapture::start(dir.path());
    let setup = Setup::start("console-detail").await;
    let addr = setup.serve_as(principal("ana", Role::Operator)).await;

    let (status, _, html) = http(addr, "GET", "/messages/1", None, b"").await;
    assert_eq!(status, 200);
    for expected in [
        "PID-3",
        "Patient Identifier List",
        "OBX-5",
        "Observation Value",
        // The escape is highlighted, never interpreted; the peer's markup is text.
        r#"<span class="esc" title="escape sequence (not interpreted)">\F\</span>"#,
        "&lt;script&gt;x()&lt;/script&gt;",
        // Each segment's terminator is shown.
        r#"<span class="seg-end" title="segment terminator">\r</span>"#,
        // The delivery that is parked, in words, with why and what the downstream said.
        "state-parked",
        "downstream refused: AR",
        "MSA|AR|C1|unknown patient",
        // The operator's buttons, each a form carrying the CSRF token.
        r#"data-action="retry""#,
        r#"data-action="skip""#,
        r#"name="csrf" value="csrf-token-of-the-test""#,
        "utf-8",
    ] {
        assert!(html.contains(expected), "{expected} not in:\n{html}");
    }
    assert!(!html.contains("<script"), "{html}");

    let (status, json) = get_json(addr, "/api/v1/messages/1").await;
    assert_eq!(status, 200);
    assert_eq!(json["control_id"], "C1");
    assert_eq!(json["ack"]["code"], "AA");
    let states: Vec<(&str, &str)> = json["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["route"].as_str().unwrap(), d["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("archive", "delivered"), ("engine", "parked")]);
    assert_eq!(json["segments"][1], "PID|1||P1^^^HOSP^MR||DOE^JANE");

    let (status, _) = get_json(addr, "/api/v1/messages/99").await;
    assert_eq!(status, 404);

    // Exactly one event per view: two views of message 1 (page, API); the missing one is not
    // a view of content.
    let views =
        read_audit(audit.path()).into_iter().filter(|l| l["event"] == "message_viewed").collect::<Vec<_>>();
    assert_eq!(views.len(), 2, "{}", audit.text());
    assert!(views.iter().all(|l| l["message_ids"] == 1 && l["user"] == "ana" && l["via"] == "session"));
    assert_eq!(views.iter().map(|l| l["surface"].as_str().unwrap()).collect::<Vec<_>>(), ["page", "api"]);
    assert!(!audit.text().contains("DOE"), "no content in the trail");
}

#[tokio::test]
async fn a_viewer_sees_no_action_and_is_refused_one() {
    let setup = Setup::start("console-viewer").await;
    let addr = setup.serve_as(principal("val", Role::Viewer)).await;
    let (_, _, html) = http(addr, "GET", "/messages/1", None, b"").await;
    assert!(html.contains("state-parked"), "{html}");
    assert!(!html.contains("data-action"), "{html}");
    let (_, _, html) = http(addr, "GET", "/routes/engine", None, b"").await;
    assert!(html.contains(r#"href="/messages/1""#) && !html.contains("data-action"), "{html}");

    let (status, json) =
        post_json(addr, "/api/v1/routes/engine/retry", serde_json::json!({"message": 1})).await;
    assert_eq!(status, 403, "{json}");
    let (status, _) = post_form(addr, "/routes/engine/retry", "message=1&confirmed=yes").await;
    assert_eq!(status, 403);
    let (status, _) = post_json(addr, "/api/v1/reload", serde_json::json!({})).await;
    assert_eq!(status, 403);
    assert_eq!(setup.delivery_state(1, "engine"), "parked");
}

#[tokio::test]
async fn an_operator_retries_and_skips_through_the_api_and_the_two_step_pages() {
    let dir = tempdir("console-audit-actions");
    let audit = AuditCapture::start(dir.path());
    let setup = Setup::start("console-operator").await;
    let addr = setup.serve_as(principal("olga", Role::Operator)).await;

    let (status, json) =
        post_json(addr, "/api/v1/routes/engine/retry", serde_json::json!({"message": 1})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!((json["count"].as_u64(), json["deliveries"][0]["was"].as_str()), (Some(1), Some("parked")));
    assert_eq!(setup.delivery_state(1, "engine"), "pending");
    let line = audit.wait_for(&[("event", "route_retry")]).await;
    assert_eq!(
        (line["user"].as_str(), line["addr"].as_str(), line["via"].as_str()),
        (Some("olga"), Some("127.0.0.7"), Some("session"))
    );
    assert_eq!(line["message_ids"], "1");
    // Nothing parked any more: a conflict that says what the delivery is.
    let (status, json) =
        post_json(addr, "/api/v1/routes/engine/retry", serde_json::json!({"message": 1})).await;
    assert_eq!(status, 409, "{json}");
    assert!(json["error"].as_str().unwrap().contains("pending"), "{json}");
    let (status, _) =
        post_json(addr, "/api/v1/routes/nowhere/retry", serde_json::json!({"message": 1})).await;
    assert_eq!(status, 404);
    let (status, _) =
        post_json(addr, "/api/v1/routes/engine/retry", serde_json::json!({"message": 1, "all_parked": true}))
            .await;
    assert_eq!(status, 400);

    // The page asks first: nothing changes until the confirmed form comes back.
    let (status, html) = post_form(addr, "/routes/engine/skip", "csrf=x&message=3").await;
    assert_eq!(status, 200);
    assert!(html.contains("You are about to skip message 3 on route engine"), "{html}");
    assert!(html.contains(r#"name="confirmed" value="yes""#) && html.contains(r#"name="csrf""#));
    assert_eq!(setup.delivery_state(3, "engine"), "pending");
    let (status, html) = post_form(addr, "/routes/engine/skip", "csrf=x&message=3&confirmed=yes").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("skipped 1 delivery(ies) on route engine"), "{html}");
    assert_eq!(setup.delivery_state(3, "engine"), "skipped");

    // Resend from the detail's form (its route chosen in the form).
    let (status, html) = post_form(addr, "/routes/-/resend", "message=2&route=archive&confirmed=yes").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("queued 1 resend(s) on route archive"), "{html}");
    assert_eq!(setup.delivery_state(2, "archive"), "pending");
    let resend = audit.wait_for(&[("event", "message_resend")]).await;
    assert_eq!(resend["user"], "olga");

    // The same figures on the API and in the route list.
    let (_, routes) = get_json(addr, "/api/v1/routes").await;
    let engine = routes.as_array().unwrap().iter().find(|r| r["name"] == "engine").unwrap();
    assert_eq!(
        (engine["pending"].as_u64(), engine["parked"].as_u64(), engine["skipped"].as_u64()),
        (Some(1), Some(0), Some(1))
    );
    let (_, dashboard) = get_json(addr, "/api/v1/dashboard").await;
    assert_eq!(dashboard["listeners"][0]["name"], "lab");
    assert_eq!(dashboard["listeners"][0]["accepted_last_hour"], 4);
    assert_eq!(dashboard["listeners"][0]["tls"], false);
    assert_eq!(dashboard["senders"][0]["sending_application"], "REG");
    let (_, _, html) = http(addr, "GET", "/", None, b"").await;
    assert!(html.contains(r#"<meta http-equiv="refresh" content="15">"#), "{html}");
    assert!(html.contains("olga (operator)"));
}
