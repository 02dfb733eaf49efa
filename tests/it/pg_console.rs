//! Issue 17 on the shared store (issue 16): the console's pages and `/api/v1/` read and act
//! on `[store] url` as they do on SQLite — patient search with keyset paging, the message's
//! detail with its delivery, the dashboard (traffic, senders, routes, the database's size),
//! and an operator's retry of a parked delivery that changes the row in PostgreSQL. Messages
//! arrive through a running listener on 127.0.0.1:0. Skipped loudly without
//! `HL7D_TEST_PG_URL` (a failure under CI).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hl7d::config::{Config, StoreConfig};
use hl7d::console::{self, Role};
use hl7d::listener::{ReloadReport, Server};
use hl7d::store::MessageStore;
use serde_json::Value;

use crate::console::{get_json, http, ids, post_json, principal};
use crate::pg_delivery::ingest_store;
use crate::pg_store::{adt, pg_config};
use crate::support::pg::TestDb;
use crate::support::*;

/// Control id and patient of each message, in the order sent.
const MESSAGES: [(&str, &str); 4] = [("C1", "P1"), ("C2", "P2"), ("C3", "P1"), ("C4", "P1")];

#[tokio::test]
async fn the_console_searches_shows_and_retries_on_the_postgresql_store() {
    let Some(db) = TestDb::create("console_on_pg").await else { return };
    let text = format!(
        "[store]\nurl = {:?}\nsslmode = \"disable\"\n\n\
         [[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n\n\
         [[route]]\nname = \"r\"\nto = \"file:///unused\"\norder = \"per_patient\"\n",
        db.url
    );
    let config = Config::from_toml_str(&text).unwrap();
    let store = Arc::new(ingest_store(&db.url).await);
    let dyn_store: Arc<dyn MessageStore> = store.clone();
    let server = Server::start(&config, dyn_store).await.unwrap();
    let mut conn = connect_nodelay(server.local_addr("lab").unwrap()).await.unwrap();
    for (control_id, patient) in MESSAGES {
        send(&mut conn, &adt(control_id, patient)).await;
        assert_eq!(msa(&read_frame(&mut conn).await).0, "AA", "{control_id}");
    }
    let client = db.client().await;
    let id_of = |control_id: &'static str| {
        let client = &client;
        async move {
            let row = client.query_one("SELECT id FROM messages WHERE control_id = $1", &[&control_id]).await;
            row.unwrap().get::<_, i64>(0)
        }
    };
    let (c1, c3, c4) = (id_of("C1").await, id_of("C3").await, id_of("C4").await);
    // A node gave up on C1 on route r: its lane (patient P1) holds behind it.
    client
        .execute(
            "UPDATE deliveries SET state = 'parked', attempts = 3, done_at = 1, last_error = 'refused: AR' \
             WHERE message_id = $1",
            &[&c1],
        )
        .await
        .unwrap();

    let slot = console::Slot::default();
    let store_config =
        StoreConfig { path: "unused".into(), retention: None, postgres: Some(pg_config(&db.url)) };
    let _ = slot.set(console::Context {
        store: store_config,
        config: Arc::new(ArcSwap::from_pointee(config)),
        reloader: server.reloader(),
        reload: Arc::new(|| Box::pin(async { ReloadReport::default() })),
        started: SystemTime::now(),
    });
    let app = console::router(slot.clone()).layer(axum::Extension(principal("olga", Role::Operator)));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(socket, app).await });

    // Search by patient, newest first, paged by keyset.
    let (status, page) = get_json(addr, "/api/v1/messages?patient=P1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), [c4, c3, c1]);
    let (_, first) = get_json(addr, "/api/v1/messages?patient=P1&limit=2").await;
    assert_eq!((ids(&first), first["next_before"].as_i64()), (vec![c4, c3], Some(c3)));
    let (_, second) = get_json(addr, &format!("/api/v1/messages?patient=P1&limit=2&before={c3}")).await;
    assert_eq!((ids(&second), &second["next_before"]), (vec![c1], &Value::Null));
    let (status, html) = {
        let (status, _, body) = http(addr, "GET", "/messages?patient=P1", None, b"").await;
        (status, body)
    };
    assert_eq!(status, 200);
    assert!(html.contains(&format!(r#"href="/messages/{c1}""#)) && !html.contains("C2"), "{html}");

    // The detail: segments, and the parked delivery with its error.
    let (status, detail) = get_json(addr, &format!("/api/v1/messages/{c1}")).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["control_id"], "C1");
    assert_eq!(detail["segments"][1], "PID|1||P1^^^HOSP");
    assert_eq!(detail["deliveries"][0]["route"], "r");
    assert_eq!(detail["deliveries"][0]["state"], "parked");
    assert_eq!(detail["deliveries"][0]["last_error"], "refused: AR");
    let (status, _, html) = http(addr, "GET", &format!("/messages/{c1}"), None, b"").await;
    assert_eq!(status, 200);
    assert!(html.contains("PID-3") && html.contains("state-parked"), "{html}");
    assert_eq!(get_json(addr, "/api/v1/messages/999999").await.0, 404);

    // The dashboard and the routes: traffic of the last hour, the parked delivery and its
    // held lane, the database's size.
    let (status, dashboard) = get_json(addr, "/api/v1/dashboard").await;
    assert_eq!(status, 200, "{dashboard}");
    let lab = &dashboard["listeners"][0];
    assert_eq!((lab["name"].as_str(), lab["accepted_last_hour"].as_u64()), (Some("lab"), Some(4)));
    assert_eq!(dashboard["senders"][0]["messages_last_hour"], 4);
    assert!(dashboard["store_bytes"].as_u64().unwrap() > 1_000_000, "{dashboard}");
    let (_, routes) = get_json(addr, "/api/v1/routes").await;
    let r = &routes[0];
    assert_eq!(
        (r["name"].as_str(), r["parked"].as_u64(), r["held_lanes"].as_u64(), r["pending"].as_u64()),
        (Some("r"), Some(1), Some(1), Some(3)),
        "{routes}"
    );

    // The operator's retry changes the row in PostgreSQL; a second one says why not.
    let (status, done) = post_json(addr, "/api/v1/routes/r/retry", serde_json::json!({"message": c1})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!((done["count"].as_u64(), done["deliveries"][0]["was"].as_str()), (Some(1), Some("parked")));
    let state: String =
        client.query_one("SELECT state FROM deliveries WHERE message_id = $1", &[&c1]).await.unwrap().get(0);
    assert_eq!(state, "pending");
    let (status, again) = post_json(addr, "/api/v1/routes/r/retry", serde_json::json!({"message": c1})).await;
    assert_eq!(status, 409, "{again}");
    assert!(again["error"].as_str().unwrap().contains("pending"), "{again}");

    drop(conn);
    server.shutdown(WAIT).await;
    store.close().await;
}
