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
