//! The store seam: where a received message becomes "ours" before its positive ACK.
//!
//! The listener calls [`MessageStore::append`] for every acceptable message and sends AA/CA
//! only when it returns `Ok`. The implementation `hl7d serve` uses is [`SqliteStore`]
//! (`<store.path>/messages.db`): `Ok` means the message is committed and fsynced.
//! [`AcceptAfterParse`] keeps nothing and only counts; tests use it where storage is beside
//! the point. Reading stored messages goes through [`Reader`], on its own read-only
//! connection, never through the writer; deleting them on request through [`purge`], on
//! a connection of its own, in small transactions. The operator's view of the delivery
//! queue and changes to it (`hl7d routes`, `hl7d messages show|resend`) are in
//! [`deliveries`]: [`Reader`] methods, and [`deliveries::DeliveryActions`] on a connection
//! of its own, in short transactions beside the writer.
//!
//! Refused messages are kept too ([`Disposition::Refused`]): the listener appends them once,
//! before their AR/AE (or CR/CE), whatever the append returns, so that an operator can see
//! what a sender sent that was refused. Their [`Status`] (`rejected`, `error`) keeps them
//! out of duplicate detection, and anything that forwards messages must select
//! [`Status::Accepted`] only.
//!
//! This module owns the database file (0600 in a 0700 directory whatever the umask, see
//! [`crate::private_files`]), its schema and its one writer thread. It must not
//! decide ACK codes or refusal reasons: the listener decides them (from
//! [`hl7_proto::refusal`]) and passes along the ones it sends.

mod actions;
pub mod backup;
pub mod deliveries;
mod fields;
pub mod postgres;
mod purge;
pub mod queue;
mod read;
mod reader;
mod schema;
mod sqlite;
mod stats;

pub use actions::{purge_at, StoreActions, StoreAt};
pub use fields::KeyFields;
pub use postgres::{PgActions, PgOptions, PgReader, PgStore};
pub use purge::{purge, PURGE_BATCH};
pub use read::{Filter, Reader, StoredMessage};
pub use reader::StoreReader;
pub use schema::SCHEMA_VERSION;
pub use sqlite::{
    micros, ConnectionSetup, Durability, SqliteOptions, SqliteStore, StoreStats, DATABASE_FILE,
};
pub use stats::{ListenerTraffic, SenderSeen};

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hl7_proto::ack::{AckCode, Outcome};
use hl7_proto::charset::Charset;
use hl7_proto::msh::Msh;
use hl7_proto::refusal::Refusal;
use thiserror::Error;

/// A boxed future, so that the trait stays object-safe (`Arc<dyn MessageStore>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One received message, accepted or refused, with the metadata kept beside its bytes.
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
    /// MSH-9 as `TYPE^TRIGGER`. The header fields below are empty for a refused frame
    /// without a readable MSH.
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
    /// The ACK code the listener sends: for an accepted message the one it sends if the
    /// message is kept (AA or CA, per MSH-15/16 and the profile's `ack` policy), for a
    /// refused one its AR/AE/CR/CE; `None` when no ACK is sent. The listener decides it
    /// before calling [`MessageStore::append`] (for an accepted message it depends only on
    /// the MSH and the profile), so the store records it in the same transaction and never
    /// has to update the row after the fact.
    pub ack_code: Option<AckCode>,
    /// Accepted (with its duplicate window) or refused (with why).
    pub disposition: Disposition,
    /// The key fields read from the message ([`KeyFields::extract`], once, by the
    /// listener), stored in columns of their own for search and delivery lanes.
    pub fields: KeyFields,
    /// The message bytes exactly as received inside the frame; for a frame refused as
    /// larger than `max_message_size`, its first bytes only (see
    /// [`hl7_proto::mllp::ERROR_PREFIX_LEN`]), since the rest is dropped unread.
    pub raw: Bytes,
}

/// Where a message came from: the listener that took it and the peer that sent it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Listener (profile) name.
    pub listener: Arc<str>,
    /// Peer address.
    pub peer: SocketAddr,
    /// Client certificate thumbprint (mutual TLS), `sha256:<hex>`.
    pub client_thumbprint: Option<String>,
}

impl NewMessage {
    /// The row for a received message, accepted or refused: its header fields from `msh`
    /// (empty when a refused frame had no readable MSH), its key fields read from `raw`
    /// (once, here; never fails), the ACK code decided for it and its disposition. The
    /// listener builds every row it appends with this, and so does the store generator in
    /// `bench/`, so that a generated store holds what hl7d would have written.
    pub fn received(
        origin: &Origin,
        received_at: SystemTime,
        msh: Option<&Msh<'_>>,
        charset: Charset,
        ack_code: Option<AckCode>,
        disposition: Disposition,
        raw: Bytes,
    ) -> NewMessage {
        let text = |field: for<'m> fn(&Msh<'m>) -> &'m [u8]| {
            msh.map(|msh| String::from_utf8_lossy(field(msh)).into_owned()).unwrap_or_default()
        };
        // An accepted message's header is its own, read by `inspect`: extraction reuses
        // it. A refused frame's may have been salvaged from later bytes, or be missing.
        let fields = match (&disposition, msh) {
            (Disposition::Accepted { .. }, Some(msh)) => KeyFields::extract_with_header(&raw, msh, charset),
            _ => KeyFields::extract(&raw, charset),
        };
        NewMessage {
            listener: origin.listener.clone(),
            peer: origin.peer,
            client_thumbprint: origin.client_thumbprint.clone(),
            received_at,
            charset,
            message_type: msh.map(|msh| msh.message_type.to_string()).unwrap_or_default(),
            control_id: text(|msh| msh.control_id),
            sending_application: text(|msh| msh.sending_application),
            sending_facility: text(|msh| msh.sending_facility),
            processing_id: text(|msh| msh.processing_id),
            version: text(|msh| msh.version_field),
            ack_code,
            disposition,
            fields,
            raw,
        }
    }
}

/// Whether a message is kept as accepted or as refused, and what each needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Accepted: stored with status `accepted`, answered AA/CA once the store says `Ok`.
    Accepted {
        /// The listener's `duplicate_window`: a message with the same listener,
        /// MSH-3/MSH-4, MSH-10 and identical bytes stored as accepted less than this long
        /// before `received_at` is a duplicate. `None` disables duplicate detection.
        duplicate_window: Option<Duration>,
    },
    /// Refused, and kept so that an operator can see it: status `rejected` or `error` (the
    /// refusal table's outcome), with the refusal's text and ERR-3 code. Never compared for
    /// duplicates, in either direction: a resend of a refused message is judged afresh.
    Refused(Refusal),
}

impl Disposition {
    /// The status this message is stored with.
    pub fn status(&self) -> Status {
        match self {
            Disposition::Accepted { .. } => Status::Accepted,
            Disposition::Refused(refusal) => match refusal.outcome() {
                Outcome::Error => Status::Error,
                // The refusal table gives only Rejected or Error (its tests check that).
                Outcome::Rejected | Outcome::Accepted => Status::Rejected,
            },
        }
    }
}

/// What became of a stored message: the `status` column, and `hl7d messages list --status`.
///
/// It is the one thing later stages select on: forwarding (routes) must take
/// [`Status::Accepted`] messages only, and duplicate detection compares with accepted
/// messages only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Stored before its positive ACK (AA/CA, or none when the sender asked for none).
    /// Every message stored by hl7d before refused messages were kept has this status.
    Accepted,
    /// Refused because of the message itself (AR/CR: unparseable, a required MSH field
    /// empty, an unusable character set, a frame too large or with a broken end): resending
    /// it unchanged fails the same way.
    Rejected,
    /// Refused because hl7d could not keep it (AE/CE: the store failed); the sender keeps
    /// it and resends, and the resend is stored as accepted.
    Error,
}

impl Status {
    /// Every status, in the order of this enum.
    pub const ALL: [Status; 3] = [Status::Accepted, Status::Rejected, Status::Error];

    /// The name in the `status` column, the CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Error => "error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`Status::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown status {0:?}: expected accepted, rejected or error")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(name: &str) -> Result<Status, UnknownStatus> {
        Status::ALL.into_iter().find(|s| s.as_str() == name).ok_or_else(|| UnknownStatus(name.to_string()))
    }
}

/// What the store made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored as a new row (accepted, or refused and kept).
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

/// Where acceptable messages go before their positive ACK, and refused ones before their
/// negative one.
pub trait MessageStore: Send + Sync + 'static {
    /// Takes one message. `Ok` means the message is kept (for a durable store: on disk and
    /// synced); only then may the listener send AA/CA for an accepted one. For a refused
    /// one the answer does not depend on it.
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>>;
}

/// Keeps nothing: a message counts as received once parsed; it only counts. For tests of
/// the listener where storage is beside the point; `hl7d serve` never uses it.
#[derive(Debug, Default)]
pub struct AcceptAfterParse {
    accepted: AtomicU64,
    refused: AtomicU64,
}

impl AcceptAfterParse {
    /// Accepted messages appended so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Refused messages appended so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl MessageStore for AcceptAfterParse {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let counter = match message.disposition {
            Disposition::Accepted { .. } => &self.accepted,
            Disposition::Refused(_) => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(Appended::New)))
    }
}

/// A message from `lab`, 127.0.0.1:40000, `ADT^A01` from `APP`/`FAC`, for the store's unit
/// tests.
#[cfg(test)]
pub(crate) fn test_message(
    control_id: &str,
    raw: &[u8],
    ack_code: Option<AckCode>,
    disposition: Disposition,
) -> NewMessage {
    NewMessage {
        listener: Arc::from("lab"),
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        client_thumbprint: None,
        received_at: SystemTime::now(),
        charset: Charset::Utf8,
        message_type: "ADT^A01".into(),
        control_id: control_id.into(),
        sending_application: "APP".into(),
        sending_facility: "FAC".into(),
        processing_id: "P".into(),
        version: "2.5".into(),
        ack_code,
        disposition,
        fields: KeyFields::extract(raw, Charset::Utf8),
        raw: Bytes::copy_from_slice(raw),
    }
}
