//! One connection: read bytes, cut frames, handle each message in order, write its ACK.
//!
//! Owns the per-connection limits (idle time, frame progress time, write time) and the rule
//! that a message's ACK is written before the next message on the connection is handled.
//! It is generic over the stream so that TLS plugs into the same path. Errors end this
//! connection only; they never reach the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hl7_proto::ack::{self, AckCode, AckError, AckParams, Outcome};
use hl7_proto::charset::Charset;
use hl7_proto::inbound::{inspect, inspect_frame_error, Inspection, Refused};
use hl7_proto::mllp::{self, Decoder, FrameError};
use hl7_proto::msh::Msh;
use hl7_proto::refusal::Refusal;
use hl7_proto::sniff::{self, PeerKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission::Slot;
use super::deadlines::{Close, Deadlines, Handled, Limits, Read, MAX_JUNK_RUN};
use super::Profile;
use crate::peer_text;
use crate::store::{Appended, Disposition, MessageStore, NewMessage, Origin};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// Why a connection ended (logged with the connection summary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the connection between messages.
    PeerClosed,
    /// The peer closed the connection in the middle of a frame; that message was not
    /// acknowledged and is not kept.
    PeerClosedInFrame {
        /// Bytes of the unfinished frame.
        buffered: usize,
    },
    /// No byte for `idle_timeout`.
    Idle(Duration),
    /// A frame did not complete within `frame_timeout` (slow or stalled sender).
    FrameTimeout(Duration),
    /// The ACK could not be written within `write_timeout` (peer not reading).
    WriteTimeout(Duration),
    /// The first bytes were not MLLP but what this says (e.g. a TLS handshake, an HTTP
    /// request).
    NotMllp(PeerKind),
    /// Too many bytes outside any frame.
    TooMuchJunk(u64),
    /// Server shutting down.
    Shutdown,
    /// Socket error.
    Io(String),
}

impl CloseReason {
    /// The `reason` label of the `hl7d_connections_closed_total` metric: one fixed name per
    /// variant, never the variant's data.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerClosedInFrame { .. } => "peer_closed_in_frame",
            CloseReason::Idle(_) => "idle",
            CloseReason::FrameTimeout(_) => "frame_timeout",
            CloseReason::WriteTimeout(_) => "write_timeout",
            CloseReason::NotMllp(_) => "not_mllp",
            CloseReason::TooMuchJunk(_) => "junk",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Io(_) => "io_error",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => write!(f, "peer closed"),
            CloseReason::PeerClosedInFrame { buffered } => {
                write!(f, "peer closed inside a frame ({buffered} bytes not acknowledged)")
            }
            CloseReason::Idle(d) => write!(f, "idle for {}", humantime::format_duration(*d)),
            CloseReason::FrameTimeout(d) => {
                write!(f, "frame not completed within {}", humantime::format_duration(*d))
            }
            CloseReason::WriteTimeout(d) => {
                write!(f, "ACK not written within {} (peer not reading)", humantime::format_duration(*d))
            }
            CloseReason::NotMllp(what) => write!(f, "not MLLP: {what}"),
            CloseReason::TooMuchJunk(n) => write!(f, "{n} bytes outside MLLP frames"),
            CloseReason::Shutdown => write!(f, "server shutting down"),
            CloseReason::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl From<Close> for CloseReason {
    fn from(close: Close) -> CloseReason {
        match close {
            Close::Idle(silence) => CloseReason::Idle(silence),
            Close::FrameTimeout(limit) => CloseReason::FrameTimeout(limit),
            Close::TooMuchJunk(bytes) => CloseReason::TooMuchJunk(bytes),
        }
    }
}

/// Counters for one connection, logged when it closes.
#[derive(Debug, Default, Clone)]
pub struct ConnectionStats {
    /// Messages accepted (AA/CA, including duplicates).
    pub accepted: u64,
    /// Messages answered with an error or reject, or refused at the frame level.
    pub refused: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// Per-connection facts that do not change while it lives.
pub struct ConnectionInfo {
    /// Peer address.
    pub peer: SocketAddr,
    /// SHA-256 thumbprint of the verified client certificate, if any.
    pub client_thumbprint: Option<String>,
    /// The connection's admission slot while it is pending: a plaintext connection is
    /// established by its first MLLP byte (see [`super::admission`]).
    pub pending: Option<Slot>,
}

/// Serves one connection until the peer leaves, a limit is hit, or shutdown is asked for
/// (in which case a frame in progress is still read, stored and acknowledged first).
pub async fn serve<S>(
    mut stream: S,
    info: ConnectionInfo,
    profile: Arc<Profile>,
    store: Arc<dyn MessageStore>,
    shutdown: CancellationToken,
) -> (CloseReason, ConnectionStats)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection {
        info,
        decoder: Decoder::new(profile.decoder_config()),
        profile,
        store,
        stats: ConnectionStats::default(),
        seen_first_byte: false,
        junk_at_last_frame: 0,
    };
    let reason = conn.run(&mut stream, &shutdown).await;
    // Best effort: the peer may already be gone.
    let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
    (reason, conn.stats)
}

struct Connection {
    info: ConnectionInfo,
    profile: Arc<Profile>,
    store: Arc<dyn MessageStore>,
    decoder: Decoder,
    stats: ConnectionStats,
    seen_first_byte: bool,
    junk_at_last_frame: u64,
}

impl Connection {
    /// Reads, hands the frames to `drain_frames`, and closes when the deadlines say so. Only
    /// the I/O and the clock are here: every rule about when to close lives in [`Deadlines`].
    async fn run<S>(&mut self, stream: &mut S, shutdown: &CancellationToken) -> CloseReason
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let limits = Limits {
            idle_timeout: self.profile.config.idle_timeout,
            frame_timeout: self.profile.config.frame_timeout,
            max_junk_run: MAX_JUNK_RUN,
        };
        let mut deadlines = Deadlines::new(limits, Instant::now().into_std());
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let deadline = Instant::from_std(deadlines.deadline());
            let read = tokio::select! {
                biased;
                // Between frames, shutdown closes at once; inside a frame, the message in
                // flight is read to its end and acknowledged first.
                _ = shutdown.cancelled(), if !deadlines.in_frame() => return CloseReason::Shutdown,
                read = timeout_at(deadline, stream.read(&mut buf)) => read,
            };
            let n = match read {
                Err(_elapsed) => match deadlines.check(Instant::now().into_std()) {
                    Some(close) => return close.into(),
                    // The timer fired before the deadline: wait for the rest.
                    None => continue,
                },
                Ok(Err(e)) => return CloseReason::Io(e.to_string()),
                Ok(Ok(0)) => {
                    return if self.decoder.is_mid_frame() {
                        CloseReason::PeerClosedInFrame { buffered: self.decoder.buffered() }
                    } else {
                        CloseReason::PeerClosed
                    };
                }
                Ok(Ok(n)) => n,
            };
            let read_at = Instant::now();
            self.stats.bytes_in += n as u64;
            self.profile.metrics.bytes_in.increment(n as u64);
            let chunk = &buf[..n];
            if !self.seen_first_byte {
                if let Some(reason) = self.check_first_bytes(chunk) {
                    return reason;
                }
            }
            let (junk_before, frames_before) = (self.decoder.junk_bytes(), self.frames_handled());
            self.decoder.push(chunk);
            if let Err(reason) = self.drain_frames(stream).await {
                return reason;
            }
            let handled = (self.frames_handled() != frames_before).then(|| Handled {
                at: Instant::now().into_std(),
                junk_after: self.decoder.junk_bytes() - self.junk_at_last_frame,
            });
            let read = Read {
                at: read_at.into_std(),
                len: n as u64,
                junk: self.decoder.junk_bytes() - junk_before,
                mid_frame: self.decoder.is_mid_frame(),
                handled,
            };
            if let Err(close) = deadlines.on_read(&read) {
                return close.into();
            }
        }
    }

    /// Frames answered or refused so far on this connection.
    fn frames_handled(&self) -> u64 {
        self.stats.accepted + self.stats.refused
    }

    /// A peer whose first non-blank byte is not the start block is not an MLLP sender; say
    /// what it looks like instead of waiting for its idle timeout.
    fn check_first_bytes(&mut self, chunk: &[u8]) -> Option<CloseReason> {
        let start_block = self.profile.config.framing.start()[0];
        match sniff::plaintext(chunk, start_block)? {
            PeerKind::Mllp => {
                self.seen_first_byte = true;
                if let Some(slot) = self.info.pending.take() {
                    slot.established();
                }
                None
            }
            other => Some(CloseReason::NotMllp(other)),
        }
    }

    async fn drain_frames<S>(&mut self, stream: &mut S) -> Result<(), CloseReason>
    where
        S: AsyncWrite + Unpin,
    {
        // ACK latency counts from the read that completed the frame.
        let received = Instant::now();
        while let Some(item) = self.decoder.next_frame() {
            self.junk_at_last_frame = self.decoder.junk_bytes();
            let reply = match item {
                Ok(frame) => {
                    self.profile.metrics.messages.increment(1);
                    self.handle_message(Bytes::from(frame)).await
                }
                Err(error) => self.handle_frame_error(&error).await,
            };
            if let Some((code, reply)) = reply {
                self.write(stream, &reply).await?;
                self.profile.metrics.ack(code).increment(1);
                self.profile.metrics.ack_latency.record(received.elapsed().as_secs_f64());
            }
        }
        Ok(())
    }

    async fn write<S>(&mut self, stream: &mut S, message: &[u8]) -> Result<(), CloseReason>
    where
        S: AsyncWrite + Unpin,
    {
        let mut out = Vec::with_capacity(message.len() + 8);
        mllp::encode(&self.profile.config.framing, message, &mut out);
        let limit = self.profile.config.write_timeout;
        match timeout(limit, async {
            stream.write_all(&out).await?;
            stream.flush().await
        })
        .await
        {
            Err(_) => Err(CloseReason::WriteTimeout(limit)),
            Ok(Err(e)) => Err(CloseReason::Io(e.to_string())),
            Ok(Ok(())) => {
                self.stats.bytes_out += out.len() as u64;
                self.profile.metrics.bytes_out.increment(out.len() as u64);
                Ok(())
            }
        }
    }

    /// One complete frame: inspect, store, decide, build the ACK.
    async fn handle_message(&mut self, frame: Bytes) -> Option<(AckCode, Vec<u8>)> {
        let received_at = SystemTime::now();
        let (refused, what) =
            match inspect(&frame, self.profile.config.encoding, self.profile.config.force_encoding) {
                Inspection::Accept { msh, charset } => {
                    // Decided once, before the append: the row is written with the code that is
                    // sent when the store returns `Ok`.
                    let code = ack::decide(Some(&msh), self.profile.config.ack, Outcome::Accepted);
                    let accepted =
                        Disposition::Accepted { duplicate_window: self.profile.config.duplicate_window };
                    let record = self.record(Some(&msh), charset, code, accepted, frame.clone(), received_at);
                    match self.store.append(record).await {
                        Ok(appended) => {
                            let duplicate = appended == Appended::Duplicate;
                            self.log_accepted(&msh, frame.len(), code, duplicate);
                            if duplicate {
                                self.profile.metrics.duplicates.increment(1);
                            }
                            self.stats.accepted += 1;
                            let code = code?;
                            return Some(self.build_ack(Some(&msh), charset, code, None));
                        }
                        Err(e) => {
                            let refused = Refused {
                                msh: Some(msh),
                                charset,
                                reason: Refusal::StoreFailed { reason: e.to_string() },
                            };
                            (refused, "message not stored; answering with an error ACK")
                        }
                    }
                }
                Inspection::Refuse(refused) => (refused, "message rejected"),
            };
        self.stats.refused += 1;
        self.refuse(&refused, frame.clone(), received_at, what).await
    }

    /// The row for a message ([`NewMessage::received`]): its header fields (empty when a
    /// refused frame had no readable MSH), the answer decided for it and whether it is
    /// accepted or refused.
    fn record(
        &self,
        msh: Option<&Msh<'_>>,
        charset: Charset,
        ack_code: Option<AckCode>,
        disposition: Disposition,
        raw: Bytes,
        received_at: SystemTime,
    ) -> NewMessage {
        let origin = Origin {
            listener: self.profile.name.clone(),
            peer: self.info.peer,
            client_thumbprint: self.info.client_thumbprint.clone(),
        };
        NewMessage::received(&origin, received_at, msh, charset, ack_code, disposition, raw)
    }

    /// A refused message or frame: decides its answer from the refusal table and the
    /// profile's ACK policy, logs one warning (header fields that identify the message, never
    /// its contents; the reason; the answer), keeps the message in the store with its status
    /// and reason, and builds the answer, if any.
    ///
    /// Keeping it is one append, awaited, whatever it returns: the answer is the refusal's
    /// either way (a stored refusal never turns into an ACK), it waits for at most that one
    /// store round trip, and a failure is only logged. When the refusal is itself a store
    /// failure this second attempt may well fail too; it is not retried. Awaiting it, rather
    /// than leaving it queued, keeps a peer that sends nothing but refused frames to one
    /// row in flight, as an accepted message is.
    async fn refuse(
        &self,
        refused: &Refused<'_>,
        raw: Bytes,
        received_at: SystemTime,
        what: &'static str,
    ) -> Option<(AckCode, Vec<u8>)> {
        let code = ack::decide(refused.msh.as_ref(), self.profile.config.ack, refused.reason.outcome());
        let (message_type, control_id) = match &refused.msh {
            Some(msh) => header_for_log(msh),
            None => Default::default(),
        };
        let size = raw.len();
        warn!(listener = &*self.profile.name, peer = %self.info.peer, message_type, control_id, size,
            ack = code.map_or("none", AckCode::as_str), reason = %refused.reason, "{what}");
        let disposition = Disposition::Refused(refused.reason.clone());
        let record = self.record(refused.msh.as_ref(), refused.charset, code, disposition, raw, received_at);
        if let Err(e) = self.store.append(record).await {
            warn!(listener = &*self.profile.name, peer = %self.info.peer, error = %e,
                "refused message not kept in the store; answering as refused all the same");
        }
        Some(self.build_ack(refused.msh.as_ref(), refused.charset, code?, Some(refused.reason.ack_error())))
    }

    fn build_ack(
        &self,
        msh: Option<&Msh<'_>>,
        charset: Charset,
        code: AckCode,
        error: Option<AckError<'_>>,
    ) -> (AckCode, Vec<u8>) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp = ack::hl7_timestamp(now.as_secs() as i64);
        let control_id = self.profile.next_ack_id();
        let params = AckParams {
            code,
            control_id: control_id.as_bytes(),
            timestamp: timestamp.as_bytes(),
            charset,
            error,
        };
        (code, ack::ack_to_vec(msh, &params))
    }

    fn log_accepted(&self, msh: &Msh<'_>, size: usize, code: Option<AckCode>, duplicate: bool) {
        let (message_type, control_id) = header_for_log(msh);
        let ack = code.map_or("none", AckCode::as_str);
        let listener = &*self.profile.name;
        let peer = self.info.peer;
        if duplicate {
            info!(listener, %peer, message_type, %control_id, size, ack,
                "duplicate message acknowledged again, not stored twice");
        } else {
            debug!(listener, %peer, message_type, %control_id, size, ack, "message accepted");
        }
    }

    /// Frame-level errors: oversize and bad end blocks are answered as the refusal table
    /// says, to the header in the bytes the error keeps, and kept with status `rejected` (an
    /// oversized frame: its first 4 KiB, since the rest is dropped unread; a broken end: the
    /// whole payload). An abandoned frame (a new start block before its end) is logged only
    /// and not kept: it was never answered, and its sender has already moved on to the next
    /// message, most often a resend of the same one.
    async fn handle_frame_error(&mut self, error: &FrameError) -> Option<(AckCode, Vec<u8>)> {
        self.stats.refused += 1;
        self.profile.metrics.frame_error(match error {
            FrameError::Truncated { .. } => "abandoned",
            FrameError::TooLarge { .. } => "too_large",
            FrameError::BadEnd { .. } => "bad_end",
        });
        let config = &self.profile.config;
        let Some(refused) = inspect_frame_error(error, config.encoding, config.force_encoding) else {
            warn!(listener = &*self.profile.name, peer = %self.info.peer, size = error.prefix().len(),
                "frame abandoned by the sender (new start block before the end block); not acknowledged");
            return None;
        };
        let raw = Bytes::copy_from_slice(error.prefix());
        self.refuse(&refused, raw, SystemTime::now(), "frame refused").await
    }
}

/// MSH-9 (`ADT^A01`) and MSH-10 as log fields: the sender chose both, so both are capped
/// ([`peer_text::cap`]).
fn header_for_log(msh: &Msh<'_>) -> (String, String) {
    let message_type = peer_text::cap(&msh.message_type.to_string()).into_owned();
    (message_type, peer_text::cap_bytes(msh.control_id).into_owned())
}
