//! The store seam: where a received message becomes "ours" before its positive ACK.
//!
//! The listener calls [`MessageStore::append`] for every acceptable message and sends AA/CA
//! only when it returns `Ok`. The implementation `hl7d serve` uses is [`SqliteStore`]
//! (`<store.path>/messages.db`): `Ok` means the message is committed and fsynced.
//! [`AcceptAfterParse`] keeps nothing and only counts; tests use it where storage is beside
//! the point. Reading stored messages goes through [`Reader`], on its own read-only
//! connection, never through the writer; deleting them on request through [`purge`], on
//! a connection of its own, in small transactions.
//!
//! This module owns the database file (0600 in a 0700 directory whatever the umask, see
//! [`crate::private_files`]), its schema and its one writer thread. It must not
//! decide ACK codes: the listener decides them and passes the one it will send along.

mod purge;
mod read;
mod schema;
mod sqlite;

pub use purge::{purge, PURGE_BATCH};
pub use read::{Filter, Reader, StoredMessage};
pub use schema::SCHEMA_VERSION;
pub use sqlite::{ConnectionSetup, Durability, SqliteOptions, SqliteStore, StoreStats, DATABASE_FILE};

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hl7_proto::ack::AckCode;
use hl7_proto::charset::Charset;
use thiserror::Error;

/// A boxed future, so that the trait stays object-safe (`Arc<dyn MessageStore>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One received, acceptable message with the metadata kept beside its bytes.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Listener (profile) name.
    pub listener: Arc<str>,
    /// Peer address.
    pub peer: SocketAddr,
    /// SHA-256 thumbprint of the client certificate (mutual TLS), as `sha256:<lower-case hex>` (the form logs and config use).
    pub client_thumbprint: Option<String>,
    /// When the frame was complete.
    pub received_at: SystemTime,
    /// Character set the message was read in.
    pub charset: Charset,
    /// MSH-9 as `TYPE^TRIGGER`.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-3 sending application (raw field).
    pub sending_application: String,
    /// MSH-4 sending facility (raw field).
    pub sending_facility: String,
    /// MSH-11 processing id.
    pub processing_id: String,
    /// MSH-12 version id.
    pub version: String,
    /// The ACK code the listener sends if the message is kept (AA or CA, per MSH-15/16 and
    /// the profile's `ack` policy); `None` when no ACK is sent. The listener decides it
    /// before calling [`MessageStore::append`], since for an accepted message it depends
    /// only on the MSH and the profile, so the store records it in the same transaction
    /// and never has to update the row after the fact. (An error ACK is never recorded:
    /// a message that gets one is not stored.)
    pub ack_code: Option<AckCode>,
    /// The listener's `duplicate_window`: a message with the same listener, MSH-3/MSH-4,
    /// MSH-10 and identical bytes stored less than this long before `received_at` is a
    /// duplicate. `None` disables duplicate detection.
    pub duplicate_window: Option<Duration>,
    /// The message bytes exactly as received inside the frame.
    pub raw: Bytes,
}

/// What the store made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Newly accepted.
    New,
    /// The same message was already stored (duplicate detection); it is acknowledged again
    /// with the original positive answer and not stored twice.
    Duplicate,
}

/// Why the store could not be opened, read, or keep a message. For a message, the listener
/// answers AE/CE with ERR-3 = 207 and keeps serving.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store is not available (I/O error, disk full, locked past its bound). The next
    /// message tries again, so the store recovers once the cause is gone.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store was closed (shutdown) or its writer thread is gone.
    #[error("store closed")]
    Closed,
    /// The database could not be opened or migrated at start-up.
    #[error("cannot open message store {}: {reason}", path.display())]
    Open {
        /// The database file (or the directory that should hold it).
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The database was written by a newer hl7d whose schema this one does not know.
    #[error("message store {} has schema version {found}; this hl7d knows versions up to {supported}", path.display())]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest version this build can migrate to.
        supported: i64,
    },
}

/// Where acceptable messages go before their positive ACK.
pub trait MessageStore: Send + Sync + 'static {
    /// Takes one message. `Ok` means the message is kept (for a durable store: on disk and
    /// synced); only then may the listener send AA/CA.
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>>;
}

/// Keeps nothing: a message counts as received once parsed; it only counts. For tests of
/// the listener where storage is beside the point; `hl7d serve` never uses it.
#[derive(Debug, Default)]
pub struct AcceptAfterParse {
    accepted: AtomicU64,
}

impl AcceptAfterParse {
    /// Messages accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl MessageStore for AcceptAfterParse {
    fn append(&self, _message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(Appended::New)))
    }
}
