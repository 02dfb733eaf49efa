//! The PostgreSQL schema (issue 16) and its migrations, applied once however many nodes
//! start together.
//!
//! The tables mean what SQLite schema version 5 means (`../schema.rs`), with version 7's
//! `(control_id, received_at)` index: the same columns with the same names and units, so
//! the readers and the operator's commands share their meaning. Unlike SQLite since version
//! 6/7, PostgreSQL keeps writing `lane_sender`, `lane_patient` and `dup_key` (the last is
//! part of the duplicate key below). Choices made for PostgreSQL:
//! - Times stay microseconds since the Unix epoch in `BIGINT` (not `timestamptz`): the
//!   same values as in SQLite, so `Filter`, JSON output and the delivery engine need no
//!   second conversion. Every integer is `BIGINT` (read as `i64`).
//! - `messages.id` comes from the sequence `messages_id_seq`: unique across nodes, not in
//!   commit order across nodes (readers order by `received_at, id`, as in SQLite).
//! - Duplicate detection is a table of its own, `message_keys`, whose primary key
//!   `(dup_key, listener, raw_sha256)` is the UNIQUE constraint that makes it safe under
//!   concurrent inserts from several nodes: one row per distinct message (listener, MSH-3,
//!   MSH-4, MSH-10 through `dup_key`, and the SHA-256 of the bytes standing for SQLite's
//!   byte comparison), pointing at the newest accepted original and its time. The window
//!   is checked against that time (`../postgres/mod.rs`), so the semantics are SQLite's:
//!   a duplicate is an identical message accepted on the same listener less than
//!   `duplicate_window` before. SQLite's `messages_dup_key` index is not needed here.
//! - `deliveries.message_id` and `message_keys.message_id` reference `messages (id) ON
//!   DELETE CASCADE` where SQLite uses a trigger; `delivery_counts` is kept by PL/pgSQL
//!   triggers with SQLite's rules.
//! - The leases of delivery across nodes (part 2 of issue 16) are migration 2: a table of
//!   their own, `delivery_leases`, one row per lane being worked (see
//!   `crate::delivery::lease`).
//!
//! Migrations are recorded in `hl7d_schema_versions` (one row per version applied) and run
//! under a session advisory lock ([`MIGRATION_LOCK`]), each in its own transaction with its
//! row: the first node to take the lock migrates, the others wait for it and find nothing
//! left to do. Migrations are only ever appended.

use tokio_postgres::Client;

use super::super::StoreError;

/// The schema version this build creates and understands (the number of migrations).
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The key of the advisory lock that serializes migrations (`pg_advisory_lock`): any
/// fixed number no other application on the database uses; "hl7d" in ASCII.
pub const MIGRATION_LOCK: i64 = 0x686c_3764;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: schema v2 of the store (SQLite version 5's tables), the duplicate keys, the
    // delivery queue and its counts.
    r#"
    CREATE TABLE messages (
        id                  BIGSERIAL PRIMARY KEY,
        listener            TEXT   NOT NULL,
        peer                TEXT   NOT NULL,
        client_thumbprint   TEXT,
        received_at         BIGINT NOT NULL,
        charset             TEXT   NOT NULL,
        message_type        TEXT   NOT NULL,
        control_id          TEXT   NOT NULL,
        sending_application TEXT   NOT NULL,
        sending_facility    TEXT   NOT NULL,
        processing_id       TEXT   NOT NULL,
        version             TEXT   NOT NULL,
        size                BIGINT NOT NULL,
        ack_code            TEXT,
        status              TEXT   NOT NULL,
        reason              TEXT,
        error_code          BIGINT,
        duplicate_count     BIGINT NOT NULL DEFAULT 0,
        last_duplicate_at   BIGINT,
        patient_id          TEXT,
        patient_authority   TEXT,
        visit_number        TEXT,
        placer_order        TEXT,
        filler_order        TEXT,
        message_time_utc    BIGINT,
        message_time_wall   BIGINT,
        trigger_event       TEXT,
        lane_sender         TEXT,
        lane_patient        TEXT,
        dup_key             BIGINT NOT NULL,
        raw                 BYTEA  NOT NULL
    );
    CREATE INDEX messages_received_at ON messages (received_at);
    CREATE INDEX messages_refused ON messages (status) WHERE status <> 'accepted';
    CREATE INDEX messages_patient ON messages (patient_id, received_at) WHERE patient_id IS NOT NULL;
    CREATE INDEX messages_visit ON messages (visit_number) WHERE visit_number IS NOT NULL;
    CREATE INDEX messages_placer_order ON messages (placer_order) WHERE placer_order IS NOT NULL;
    CREATE INDEX messages_filler_order ON messages (filler_order) WHERE filler_order IS NOT NULL;
    CREATE INDEX messages_control_id ON messages (control_id, received_at);
    CREATE INDEX messages_type ON messages (message_type, received_at);
    CREATE INDEX messages_sender ON messages (sending_application, sending_facility, received_at);

    CREATE TABLE message_keys (
        dup_key     BIGINT NOT NULL,
        listener    TEXT   NOT NULL,
        raw_sha256  BYTEA  NOT NULL,
        message_id  BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (dup_key, listener, raw_sha256)
    );
    CREATE INDEX message_keys_message ON message_keys (message_id);

    CREATE TABLE deliveries (
        id               BIGSERIAL PRIMARY KEY,
        message_id       BIGINT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        route            TEXT   NOT NULL,
        lane             TEXT   NOT NULL,
        state            TEXT   NOT NULL,
        attempts         BIGINT NOT NULL DEFAULT 0,
        queued_at        BIGINT NOT NULL,
        next_attempt_at  BIGINT NOT NULL,
        first_attempt_at BIGINT,
        last_attempt_at  BIGINT,
        done_at          BIGINT,
        last_error       TEXT,
        response         TEXT,
        resend_of        BIGINT
    );
    CREATE INDEX deliveries_open ON deliveries (route, lane, id)
        WHERE state IN ('pending', 'in_flight', 'parked');
    CREATE INDEX deliveries_message ON deliveries (message_id);
    CREATE INDEX deliveries_parked ON deliveries (route, lane, id) WHERE state = 'parked';

    CREATE TABLE delivery_counts (
        route TEXT   NOT NULL,
        state TEXT   NOT NULL,
        rows  BIGINT NOT NULL,
        PRIMARY KEY (route, state)
    );
    CREATE FUNCTION deliveries_count() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state IN ('delivered', 'skipped')
            AND (TG_OP = 'DELETE' OR NEW.state <> OLD.state OR NEW.route <> OLD.route) THEN
            UPDATE delivery_counts SET rows = rows - 1 WHERE route = OLD.route AND state = OLD.state;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state IN ('delivered', 'skipped')
            AND (TG_OP = 'INSERT' OR NEW.state <> OLD.state OR NEW.route <> OLD.route) THEN
            INSERT INTO delivery_counts (route, state, rows) VALUES (NEW.route, NEW.state, 1)
                ON CONFLICT (route, state) DO UPDATE SET rows = delivery_counts.rows + 1;
        END IF;
        RETURN NULL;
    END;
    $$;
    CREATE TRIGGER deliveries_count AFTER INSERT OR UPDATE OF state, route OR DELETE ON deliveries
        FOR EACH ROW EXECUTE FUNCTION deliveries_count();
    "#,
    // 2: delivery across nodes (issue 16, `crate::delivery::lease`): one row per lane a
    // node works now, with the node's name, the take's token and the lease's expiry in the
    // database's clock. Rows come and go with lane tasks (taken, renewed, deleted); a dead
    // node's rows stay until another node takes their lanes after `expires_at`.
    r#"
    CREATE SEQUENCE delivery_lease_tokens;
    CREATE TABLE delivery_leases (
        route      TEXT        NOT NULL,
        lane       TEXT        NOT NULL,
        node       TEXT        NOT NULL,
        token      BIGINT      NOT NULL,
        taken_at   TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (route, lane)
    );
    "#,
];

/// Brings the database to [`PG_SCHEMA_VERSION`] under the migration lock. Returns the
/// versions this call applied (empty when another node had done it, or nothing was due).
/// Fails on a database migrated by a newer hl7d.
pub async fn migrate(client: &mut Client, url: &str) -> Result<Vec<i64>, StoreError> {
    let open_error = |e: tokio_postgres::Error| StoreError::Open { path: url.into(), reason: describe(&e) };
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(open_error)?;
    let result = migrate_locked(client, url).await;
    // Session locks end with the session too; unlocking keeps a pooled connection clean.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    let applied = result?;
    unlocked.map_err(open_error)?;
    Ok(applied)
}

async fn migrate_locked(client: &mut Client, url: &str) -> Result<Vec<i64>, StoreError> {
    let open_error = |e: tokio_postgres::Error| StoreError::Open { path: url.into(), reason: describe(&e) };
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS hl7d_schema_versions (\
                 version BIGINT PRIMARY KEY, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(open_error)?;
    let found = version(client).await.map_err(open_error)?;
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew { path: url.into(), found, supported: PG_SCHEMA_VERSION });
    }
    let mut applied = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let next = index as i64 + 1;
        let tx = client.transaction().await.map_err(open_error)?;
        tx.batch_execute(sql).await.map_err(open_error)?;
        tx.execute("INSERT INTO hl7d_schema_versions (version) VALUES ($1)", &[&next])
            .await
            .map_err(open_error)?;
        tx.commit().await.map_err(open_error)?;
        applied.push(next);
    }
    Ok(applied)
}

/// The newest version recorded (0 on a new database).
pub async fn version(client: &Client) -> Result<i64, tokio_postgres::Error> {
    let row = client.query_one("SELECT coalesce(max(version), 0) FROM hl7d_schema_versions", &[]).await?;
    Ok(row.get(0))
}

/// A driver error as one line: the server's message and SQLSTATE when it sent one, else
/// the driver's (a closed connection, an I/O error). Never holds message content: hl7d's
/// statements carry it only as parameters, which errors do not repeat.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}
