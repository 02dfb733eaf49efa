//! Delivery: every stored message that matches a `[[route]]` is handed on to its downstream
//! (MLLP/MLLPS, HTTP(S), a directory), at least once, in lane order, with retries and
//! parking. The model, the keys and the operator's runbook are in `docs/delivery.md`.
//!
//! The parts:
//! - this file: what a transport is given ([`Outbound`]), what it answers ([`Outcome`],
//!   the outcome table of `docs/delivery.md`, one for every transport), and the
//!   [`Transport`] seam;
//! - `transport/`: one file per kind of downstream (`mllp.rs`, `http.rs`, `file.rs`); each
//!   turns what happened into an [`Outcome`] and decides nothing else (no retry loops, no
//!   sleeping: backoff and parking are the engine's);
//! - the queue (delivery rows in the store, written in the same transaction as their
//!   message), which the engine reads and changes through `queue/` ([`queue::DeliveryQueue`],
//!   one implementation per store), and the engine (lanes, backoff, parking) that drives
//!   the transports.
//!
//! It must not decide what a listener ACKs, nor read message fields again: the lane key and
//! header fields were extracted once at ingest and come with the [`Outbound`].

pub mod backoff;
pub mod engine;
pub mod lanes;
pub mod lease;
pub mod queue;
pub mod transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hl7_proto::charset::Charset;

/// A boxed future, so that [`Transport`] stays object-safe (`Box<dyn Transport>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One stored message on its way to one route: its bytes exactly as received and the
/// header fields a transport puts beside them (HTTP headers, file names).
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The message's id in the store (`X-HL7D-Message-Id`, `{id}` in file names).
    pub id: i64,
    /// The listener it was received on (`X-HL7D-Listener`).
    pub listener: Arc<str>,
    /// MSH-10 (`X-HL7D-Control-Id`, `{control_id}`); what an MLLP ACK's MSA-2 must echo.
    pub control_id: String,
    /// MSH-9 as `TYPE^TRIGGER` (`X-HL7D-Message-Type`).
    pub message_type: String,
    /// The character set it was read in (the HTTP `charset` parameter).
    pub charset: Charset,
    /// When hl7d received it (`{received:…}` in file names).
    pub received_at: SystemTime,
    /// The bytes exactly as received (segment separators and all).
    pub raw: Bytes,
}

/// What one attempt to deliver one message came to. The transports build it from the
/// outcome table; the engine acts on it and stores `error` and `response` for
/// `hl7d messages show` and `routes status`. Neither text carries message content: an
/// ACK is summarised by its codes and MSA-3/ERR text capped, an HTTP answer by its status
/// line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The downstream took it (AA/CA with the right MSA-2, HTTP 2xx, file written and
    /// synced, or an MLLP message that asked for no ACK and went out on a connection that
    /// stayed up).
    Delivered {
        /// What the downstream answered, e.g. `AA` or `HTTP 202 Accepted`; `None` when
        /// nothing is answered (files, no-ACK messages).
        response: Option<String>,
    },
    /// Try again after a backoff (the engine's), with the same bytes.
    Retry {
        /// Why, as the `reason` label of `hl7d_route_retries_total`.
        reason: RetryReason,
        /// What went wrong, one line, for the operator.
        error: String,
        /// What the downstream answered, if it answered at all.
        response: Option<String>,
        /// The downstream asked for this delay (HTTP `Retry-After`); the engine waits at
        /// least this long, still capped by the route's `retry_max`.
        retry_after: Option<Duration>,
    },
    /// The downstream refused it in a way a resend cannot fix (AR/CR, HTTP 4xx other than
    /// 408/425/429, AE/CE under `on_application_error = "park"`): park it.
    Park {
        /// Why, one line.
        error: String,
        /// What the downstream answered.
        response: Option<String>,
    },
}

/// Why an attempt is retried: the `reason` label of `hl7d_route_retries_total`, a short
/// fixed set so that the metric's cardinality stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// Could not connect (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// No answer in time (MLLP `ack_timeout`, HTTP timeout).
    Timeout,
    /// The connection was lost while sending or waiting.
    ConnectionLost,
    /// An answer that is not one for this message (no MSA, MSA-2 mismatch, unreadable).
    BadAck,
    /// MLLP AE/CE under `on_application_error = "retry"`.
    ApplicationError,
    /// HTTP 408, 425, 429 or 5xx.
    HttpStatus,
    /// A local I/O error (file routes: disk full, permission).
    Io,
}

impl RetryReason {
    /// Every reason, for tests and for registering the metric's series.
    pub const ALL: [RetryReason; 8] = [
        RetryReason::Connect,
        RetryReason::Tls,
        RetryReason::Timeout,
        RetryReason::ConnectionLost,
        RetryReason::BadAck,
        RetryReason::ApplicationError,
        RetryReason::HttpStatus,
        RetryReason::Io,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Tls => "tls",
            RetryReason::Timeout => "timeout",
            RetryReason::ConnectionLost => "connection_lost",
            RetryReason::BadAck => "bad_ack",
            RetryReason::ApplicationError => "application_error",
            RetryReason::HttpStatus => "http_status",
            RetryReason::Io => "io",
        }
    }
}

/// One downstream of one route. The engine owns one per lane in flight (an MLLP transport
/// keeps its connection open between messages), calls [`Transport::deliver`] for one
/// message at a time and never concurrently on the same value.
pub trait Transport: Send + 'static {
    /// One attempt: send `message`, wait for the downstream's answer (bounded by the
    /// route's timeouts), and say what it came to. Never panics, never retries by itself,
    /// never sleeps beyond its timeouts.
    fn deliver<'a>(&'a mut self, message: &'a Outbound) -> BoxFuture<'a, Outcome>;

    /// Drop any open connection (route removed, shutdown, or the engine gives the lane a
    /// rest). The default does nothing.
    fn close(&mut self) {}
}
