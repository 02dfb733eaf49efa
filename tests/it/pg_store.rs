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

use hl7d::store::postgres::schema::{self, PG_SCHEMA_VERSION};

/// Several nodes starting together on a new database: every open succeeds and exactly one
/// of them applies the migrations (the advisory lock).
#[tokio::test]
async fn concurrent_opens_migrate_once() {
    let Some(db) = TestDb::create("concurrent_opens_migrate_once").await else { return };
    let opens = (0..6).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
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
}
