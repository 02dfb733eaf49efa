//! [`StoreReader`]: the operator's reads (`hl7d messages list|show|export`) on whichever
//! store the configuration names: [`Reader`] on SQLite (`[store] path`), [`PgReader`] on
//! PostgreSQL (`[store] url`). Same [`Filter`], same [`StoredMessage`] rows, same order.

use std::time::SystemTime;

use super::deliveries::{Delivery, ParkedDelivery, RouteStatus};
use super::{Filter, ListenerTraffic, PgReader, Reader, SenderSeen, StoreError, StoredMessage};
use crate::config::StoreConfig;

/// A read-only view of the configured store.
pub enum StoreReader {
    /// The embedded store in `[store] path`.
    Sqlite(Reader),
    /// The shared store at `[store] url`.
    Postgres(PgReader),
}

impl StoreReader {
    /// Opens the store `config` names (never creates or migrates one).
    pub fn open(config: &StoreConfig) -> Result<StoreReader, StoreError> {
        match &config.postgres {
            None => Reader::open(&config.path).map(StoreReader::Sqlite),
            Some(postgres) => PgReader::open(postgres).map(StoreReader::Postgres),
        }
    }

    /// Messages matching `filter`, without their bytes.
    pub fn list(&self, filter: &Filter) -> Result<Vec<StoredMessage>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.list(filter),
            StoreReader::Postgres(reader) => reader.list(filter),
        }
    }

    /// Calls `each` for every message matching `filter`, with its bytes, one at a time.
    pub fn for_each_message<E: From<StoreError>>(
        &self,
        filter: &Filter,
        each: impl FnMut(StoredMessage) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            StoreReader::Sqlite(reader) => reader.for_each_message(filter, each),
            StoreReader::Postgres(reader) => reader.for_each_message(filter, each),
        }
    }

    /// The message with this id, with its bytes.
    pub fn message(&self, id: i64) -> Result<Option<StoredMessage>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.message(id),
            StoreReader::Postgres(reader) => reader.message(id),
        }
    }

    /// Number of stored messages that `filter` selects, its limit aside.
    pub fn count_matching(&self, filter: &Filter) -> Result<u64, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.count_matching(filter),
            StoreReader::Postgres(reader) => reader.count_matching(filter),
        }
    }

    /// `min(matching, cap)`, counting no further than `cap`.
    pub fn count_matching_up_to(&self, filter: &Filter, cap: u64) -> Result<u64, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.count_matching_up_to(filter, cap),
            StoreReader::Postgres(reader) => reader.count_matching_up_to(filter, cap),
        }
    }

    /// Number of stored messages that `filter` selects with a delivery still to do.
    pub fn count_undelivered(&self, filter: &Filter) -> Result<u64, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.count_undelivered(filter),
            StoreReader::Postgres(reader) => reader.count_undelivered(filter),
        }
    }

    /// The listener names that stored messages carry, sorted.
    pub fn listeners(&self) -> Result<Vec<String>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.listeners(),
            StoreReader::Postgres(reader) => reader.listeners(),
        }
    }

    /// Every delivery row of message `message_id`, by route then queue order.
    pub fn deliveries_of(&self, message_id: i64) -> Result<Vec<Delivery>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.deliveries_of(message_id),
            StoreReader::Postgres(reader) => reader.deliveries_of(message_id),
        }
    }

    /// The routes that delivery rows name, sorted.
    pub fn delivery_routes(&self) -> Result<Vec<String>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.delivery_routes(),
            StoreReader::Postgres(reader) => reader.delivery_routes(),
        }
    }

    /// Whether any delivery row names `route`.
    pub fn route_has_deliveries(&self, route: &str) -> Result<bool, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.route_has_deliveries(route),
            StoreReader::Postgres(reader) => reader.route_has_deliveries(route),
        }
    }

    /// `route`'s parked deliveries, by lane then queue order.
    pub fn parked(&self, route: &str) -> Result<Vec<ParkedDelivery>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.parked(route),
            StoreReader::Postgres(reader) => reader.parked(route),
        }
    }
}

impl StoreReader {
    /// Where message `id` stands in a newest-first list, for [`Filter::before`].
    pub fn position(&self, id: i64) -> Result<Option<(SystemTime, i64)>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.position(id),
            StoreReader::Postgres(reader) => reader.position(id),
        }
    }

    /// Per listener: the messages stored since `since` (the console's dashboard).
    pub fn traffic_since(&self, since: SystemTime) -> Result<Vec<ListenerTraffic>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.traffic_since(since),
            StoreReader::Postgres(reader) => reader.traffic_since(since),
        }
    }

    /// The senders seen since `since`, the most recent first, at most `limit`.
    pub fn senders_since(&self, since: SystemTime, limit: u64) -> Result<Vec<SenderSeen>, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.senders_since(since, limit),
            StoreReader::Postgres(reader) => reader.senders_since(since, limit),
        }
    }

    /// `route`'s counts, held lanes, oldest pending row and last error.
    pub fn route_status(&self, route: &str) -> Result<RouteStatus, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => reader.route_status(route),
            StoreReader::Postgres(reader) => reader.route_status(route),
        }
    }

    /// Bytes the store takes: the database file and its WAL (SQLite), the database on its
    /// server (PostgreSQL).
    pub fn store_bytes(&self) -> Result<u64, StoreError> {
        match self {
            StoreReader::Sqlite(reader) => Ok(reader.file_bytes()),
            StoreReader::Postgres(reader) => reader.database_bytes(),
        }
    }
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreReader::Sqlite(_) => f.write_str("StoreReader::Sqlite"),
            StoreReader::Postgres(reader) => write!(f, "StoreReader::Postgres({reader:?})"),
        }
    }
}
