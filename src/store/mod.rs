//! The store seam: where a received message becomes "ours" before its positive ACK.
//!
//! The listener calls [`MessageStore::append`] for every acceptable message and sends AA/CA
//! only when it returns `Ok`. Until the durable store lands (issue #5), the only
//! implementation is [`AcceptAfterParse`], which keeps nothing: a message counts as received
//! once parsed. It is named so that no one mistakes it for storage.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
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
    /// SHA-256 thumbprint of the client certificate (mutual TLS), lower-case hex.
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

/// Why a message could not be kept. The listener answers AE/CE with ERR-3 = 207.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store is not available (I/O error, disk full, locked past its bound).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Where acceptable messages go before their positive ACK.
pub trait MessageStore: Send + Sync + 'static {
    /// Takes one message. `Ok` means the message is kept (for a durable store: on disk and
    /// synced); only then may the listener send AA/CA.
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>>;
}

/// Keeps nothing: a message counts as received once parsed. This is the placeholder named
/// in issue #3 until the durable store (issue #5) replaces it; it only counts.
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
