//! [`StoreActions`]: the operator's changes to the delivery queue (`hl7d routes
//! retry|skip|backfill`, `hl7d messages resend`, the console's actions) on whichever store
//! the configuration names: [`DeliveryActions`] on SQLite, [`PgActions`] on PostgreSQL.
//! Same arguments, same rows changed, same answers.

use std::path::Path;
use std::time::SystemTime;

use super::deliveries::{ActionError, Changed, DeliveryActions, Queued, QueuedRange, Release, RouteRule};
use super::{Filter, PgActions, StoreError};
use crate::config::{PostgresConfig, StoreConfig};

/// Where the store is: what [`StoreActions::open`] opens.
#[derive(Debug, Clone, Copy)]
pub enum StoreAt<'a> {
    /// The embedded store in this directory (`[store] path`).
    Sqlite(&'a Path),
    /// The shared store (`[store] url`).
    Postgres(&'a PostgresConfig),
}

impl<'a> StoreAt<'a> {
    /// The store `config` names.
    pub fn of(config: &'a StoreConfig) -> StoreAt<'a> {
        match &config.postgres {
            Some(postgres) => StoreAt::Postgres(postgres),
            None => StoreAt::Sqlite(&config.path),
        }
    }
}

/// `hl7d messages purge` on the store at `at`: [`super::purge`] on SQLite,
/// [`PgActions::purge`] on PostgreSQL (the same rows deleted, the same count).
pub fn purge_at(at: StoreAt<'_>, filter: &Filter, include_undelivered: bool) -> Result<u64, StoreError> {
    match at {
        StoreAt::Sqlite(dir) => super::purge(dir, filter, include_undelivered),
        StoreAt::Postgres(config) => PgActions::open(config)?.purge(filter, include_undelivered),
    }
}

/// A read-write connection for the operator's changes to the delivery queue.
pub enum StoreActions {
    /// On the embedded store.
    Sqlite(DeliveryActions),
    /// On the shared store.
    Postgres(PgActions),
}

impl StoreActions {
    /// Opens the store at `at` (it must exist, at this build's schema version).
    pub fn open(at: StoreAt<'_>) -> Result<StoreActions, StoreError> {
        match at {
            StoreAt::Sqlite(dir) => DeliveryActions::open(dir).map(StoreActions::Sqlite),
            StoreAt::Postgres(config) => PgActions::open(config).map(StoreActions::Postgres),
        }
    }

    /// See [`DeliveryActions::retry`].
    pub fn retry(
        &mut self,
        route: &str,
        which: &Release,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        match self {
            StoreActions::Sqlite(actions) => actions.retry(route, which, now),
            StoreActions::Postgres(actions) => actions.retry(route, which, now),
        }
    }

    /// See [`DeliveryActions::skip`].
    pub fn skip(
        &mut self,
        route: &str,
        message_id: i64,
        now: SystemTime,
    ) -> Result<Vec<Changed>, StoreError> {
        match self {
            StoreActions::Sqlite(actions) => actions.skip(route, message_id, now),
            StoreActions::Postgres(actions) => actions.skip(route, message_id, now),
        }
    }

    /// See [`DeliveryActions::backfill`].
    pub fn backfill(
        &mut self,
        route: &RouteRule,
        since: SystemTime,
        until: SystemTime,
        dry_run: bool,
        now: SystemTime,
    ) -> Result<QueuedRange, StoreError> {
        match self {
            StoreActions::Sqlite(actions) => actions.backfill(route, since, until, dry_run, now),
            StoreActions::Postgres(actions) => actions.backfill(route, since, until, dry_run, now),
        }
    }

    /// See [`DeliveryActions::resend_range`].
    pub fn resend_range(
        &mut self,
        route: &RouteRule,
        since: SystemTime,
        until: SystemTime,
        dry_run: bool,
        now: SystemTime,
    ) -> Result<QueuedRange, StoreError> {
        match self {
            StoreActions::Sqlite(actions) => actions.resend_range(route, since, until, dry_run, now),
            StoreActions::Postgres(actions) => actions.resend_range(route, since, until, dry_run, now),
        }
    }

    /// See [`DeliveryActions::resend`].
    pub fn resend(
        &mut self,
        route: &RouteRule,
        ids: &[i64],
        dry_run: bool,
        now: SystemTime,
    ) -> Result<Vec<Queued>, ActionError> {
        match self {
            StoreActions::Sqlite(actions) => actions.resend(route, ids, dry_run, now),
            StoreActions::Postgres(actions) => actions.resend(route, ids, dry_run, now),
        }
    }
}

impl std::fmt::Debug for StoreActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreActions::Sqlite(_) => f.write_str("StoreActions::Sqlite"),
            StoreActions::Postgres(actions) => write!(f, "StoreActions::Postgres({actions:?})"),
        }
    }
}
