//! MLLP client: send one message, wait for its ACK, check that it is the ACK of *this*
//! message, and retry on timeout or connection loss.
//!
//! Used by `hl7d send`, `hl7d bench` and the tests. A late or mismatched ACK (MSA-2 not this
//! message's MSH-10) is never taken for this message: accepting one is how duplicate floods
//! start. Resending is safe because receivers (hl7d among them) detect duplicates.
//!
//! A message whose MSH-15 asks for no accept ACK on success (NE, ER; asked of
//! [`hl7_proto::ack::wants_accept_ack`]) is not waited on for the whole ACK timeout: silence
//! for [`ClientOptions::error_wait`] on a connection that stays open means it was taken (an
//! ER receiver answers only when it refuses). Resending it would store it again.
//!
//! A client on the wrong kind of port fails at once instead of retrying: see [`probe`].

mod probe;
pub mod tls;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hl7_proto::ack::{self, AckCode, Outcome};
use hl7_proto::charset::Charset;
use hl7_proto::mllp::{self, Decoder, DecoderConfig, Framing};
use hl7_proto::msh::{AckCondition, Msh};
use hl7_proto::sniff::{self, ServerReply};
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub use tls::TlsFailure;

/// Largest ACK the client accepts.
const MAX_ACK_SIZE: usize = 1024 * 1024;

/// The port `--to HOST` means without one: 2575, the IANA port for HL7 over MLLP (and the
/// embedded default profile's).
pub const DEFAULT_PORT: u16 = 2575;

/// `to` with [`DEFAULT_PORT`] added when it names no port: `host` → `host:2575`,
/// `[::1]` and a bare `::1` → `[::1]:2575`; `host:port` and `[::1]:port` stay as they are.
pub fn with_default_port(to: &str) -> String {
    if to.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{to}]:{DEFAULT_PORT}");
    }
    let has_port = match to.strip_prefix('[') {
        Some(bracketed) => bracketed.contains("]:"),
        None => to.contains(':'),
    };
    if has_port {
        to.to_owned()
    } else {
        format!("{to}:{DEFAULT_PORT}")
    }
}

/// How to reach the listener and how patient to be.
#[derive(Clone)]
pub struct ClientOptions {
    /// `HOST:PORT`.
    pub to: String,
    /// MLLP framing bytes.
    pub framing: Framing,
    /// How long to wait for each ACK.
    pub ack_timeout: Duration,
    /// For a message that asks for no accept ACK on success (MSH-15 NE or ER): how long
    /// to listen for an error ACK before counting it as taken. Zero: do not wait.
    pub error_wait: Duration,
    /// How long to wait for the TCP connection and TLS handshake.
    pub connect_timeout: Duration,
    /// Resends after a timeout or lost connection (0 = try once).
    pub retries: u32,
    /// Delay before the first resend; doubled for each further one.
    pub retry_delay: Duration,
    /// Open a new connection for every message.
    pub reconnect_each: bool,
    /// TLS: the client configuration and the name to verify.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// Character set for reading ACK texts whose MSH-18 is empty.
    pub charset: Charset,
}

impl ClientOptions {
    /// Plain TCP with the defaults of `hl7d send` (30 s ACK timeout, 1 s error wait, 3
    /// retries from 2 s).
    pub fn plain(to: impl Into<String>) -> ClientOptions {
        ClientOptions {
            to: to.into(),
            framing: Framing::DEFAULT,
            ack_timeout: Duration::from_secs(30),
            error_wait: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            retries: 3,
            retry_delay: Duration::from_secs(2),
            reconnect_each: false,
            tls: None,
            charset: Charset::Utf8,
        }
    }
}

/// The acknowledgment received for a message, owned and decoded for reporting (read with
/// [`hl7_proto::ack::ReceivedAck`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedAck {
    /// MSA-1, or the MLLP Release 2 commit byte read as CA (0x06) / CR (0x15).
    pub code: AckCode,
    /// MSA-3 and/or ERR text, if any (as sent; may be empty).
    pub text: String,
    /// The ACK message as received (without framing).
    pub raw: Vec<u8>,
    /// The character set `raw` is in: its MSH-18, or the client's default.
    pub charset: Charset,
}

impl ReceivedAck {
    /// The ACK's segments, decoded, in order (empty for an MLLP commit byte).
    pub fn segments(&self) -> Vec<String> {
        if ack::ReceivedAck::parse(&self.raw).is_some_and(|read| read.control_id.is_none()) {
            return Vec::new();
        }
        // Segments end with CR; tolerate peers that use LF or CR LF.
        self.charset
            .decode(&self.raw)
            .split(['\r', '\n'])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// MSH-10 of the message sent.
    pub control_id: String,
    /// The ACK; `None` when the message asked for none on success and none came within
    /// [`ClientOptions::error_wait`].
    pub ack: Option<ReceivedAck>,
    /// MSH-15 of the message, when it is set and valid (enhanced mode).
    pub accept_ack: Option<AckCondition>,
    /// Times the message was sent (1 = no resend).
    pub attempts: u32,
    /// From the last send to its ACK.
    pub latency: Duration,
}

/// Why one attempt failed.
#[derive(Debug, Error)]
pub enum SendError {
    /// TCP connect failed or timed out.
    #[error("connect to {to}: {reason}")]
    Connect {
        /// The target.
        to: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake (or the first read after it, in TLS 1.3) failed.
    #[error("tls: {0}")]
    Tls(TlsFailure),
    /// Sent without TLS to a port that speaks TLS (it answered in TLS, or closed the
    /// connection and then answered a TLS hello).
    #[error("the server speaks TLS: add --tls")]
    ServerSpeaksTls,
    /// No matching ACK within the ACK timeout.
    #[error("no ACK within {}{}", humantime::format_duration(*.waited), mismatch_note(.mismatched))]
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// MSA-2 values of ACKs that arrived but were for other messages.
        mismatched: Vec<String>,
    },
    /// The listener closed the connection before the ACK.
    #[error("connection closed before the ACK")]
    Closed,
    /// Another socket error.
    #[error("i/o: {0}")]
    Io(io::Error),
    /// The message cannot be sent at all (no MSH, no MSH-10).
    #[error("message not sendable: {0}")]
    Unsendable(String),
}

fn mismatch_note(mismatched: &[String]) -> String {
    if mismatched.is_empty() {
        String::new()
    } else {
        format!(" (ignored {} ACK(s) for other control ids: {})", mismatched.len(), mismatched.join(", "))
    }
}

impl SendError {
    /// Whether resending could help (timeouts and lost connections; not TLS refusals).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SendError::Timeout { .. } | SendError::Closed | SendError::Io(_) | SendError::Connect { .. }
        )
    }
}

/// A message that could not be delivered after all retries.
#[derive(Debug, Error)]
#[error("{control_id}: delivery failed after {attempts} attempt(s): {last}")]
pub struct DeliveryFailed {
    /// MSH-10 of the message.
    pub control_id: String,
    /// How many times it was sent.
    pub attempts: u32,
    /// The last attempt's error.
    pub last: SendError,
}

/// An MLLP client connection that reconnects as needed.
pub struct Client {
    options: ClientOptions,
    conn: Option<Conn>,
    decoder: Decoder,
    /// Bytes read on the current connection: a plaintext connection closed before the
    /// server said anything may have reached a TLS port.
    received: usize,
}

impl Client {
    /// A client; it connects on the first send.
    pub fn new(options: ClientOptions) -> Client {
        let decoder = Self::decoder(&options);
        Client { options, conn: None, decoder, received: 0 }
    }

    fn decoder(options: &ClientOptions) -> Decoder {
        Decoder::new(DecoderConfig {
            framing: options.framing,
            max_frame_size: MAX_ACK_SIZE,
            lenient_end: true,
        })
    }

    /// Connects now (otherwise the first send does).
    pub async fn connect(&mut self) -> Result<(), SendError> {
        if self.conn.is_none() {
            self.conn = Some(self.open().await?);
            self.decoder = Self::decoder(&self.options);
            self.received = 0;
        }
        Ok(())
    }

    /// Drops the connection, if any.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Drops the connection if the server closed it (or it failed) while it sat idle, so
    /// that the next send opens a new one instead of writing into a dead socket and then
    /// counting a lost connection. Receivers close idle connections (hl7d's `idle_timeout`);
    /// a long-lived client such as a delivery route asks this before each message. Never
    /// waits: it reads only what has already arrived. Bytes the server sent meanwhile (a
    /// late ACK) are kept for the next exchange, where they count as ACKs for other
    /// messages, exactly as if they had arrived during it.
    pub async fn drop_if_closed(&mut self) {
        /// At most this much is read here, so that a peer that never stops sending cannot
        /// keep the caller in this loop.
        const MAX_READ: usize = 64 * 1024;
        let Some(conn) = self.conn.as_mut() else { return };
        let mut buf = [0u8; 4096];
        let mut read = 0;
        let closed = std::future::poll_fn(|cx| loop {
            let mut filled = ReadBuf::new(&mut buf);
            match Pin::new(&mut *conn).poll_read(cx, &mut filled) {
                Poll::Pending => return Poll::Ready(false),
                Poll::Ready(Err(_)) => return Poll::Ready(true),
                Poll::Ready(Ok(())) if filled.filled().is_empty() => return Poll::Ready(true),
                Poll::Ready(Ok(())) => {
                    let n = filled.filled().len();
                    self.decoder.push(filled.filled());
                    self.received += n;
                    read += n;
                    if read >= MAX_READ {
                        return Poll::Ready(false);
                    }
                }
            }
        })
        .await;
        if closed {
            self.disconnect();
        }
    }

    /// Sends one message and waits for its ACK, resending after timeouts and lost
    /// connections with exponential backoff, up to `retries` times.
    pub async fn send(&mut self, message: &[u8]) -> Result<Delivery, DeliveryFailed> {
        let (control_id, accept_ack, wants_ack) = match outbound_header(message) {
            Ok(header) => header,
            Err(reason) => {
                return Err(DeliveryFailed {
                    control_id: String::new(),
                    attempts: 0,
                    last: SendError::Unsendable(reason),
                });
            }
        };
        let mut attempts = 0;
        let mut delay = self.options.retry_delay;
        loop {
            attempts += 1;
            let started = Instant::now();
            match self.attempt(message, &control_id, wants_ack).await {
                Ok(ack) => {
                    let latency = started.elapsed();
                    if self.options.reconnect_each {
                        self.disconnect();
                    }
                    return Ok(Delivery { control_id, ack, accept_ack, attempts, latency });
                }
                Err(error) => {
                    // Whatever happened, this connection's state is unknown now.
                    self.disconnect();
                    if !error.is_retryable() || attempts > self.options.retries {
                        return Err(DeliveryFailed { control_id, attempts, last: error });
                    }
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
            }
        }
    }

    /// One send on the current connection (opened first if needed). With `wants_ack` the
    /// ACK must come within the ACK timeout; without, silence for the error wait on an open
    /// connection is success (`Ok(None)`), and an ACK that does come is returned.
    async fn attempt(
        &mut self,
        message: &[u8],
        control_id: &str,
        wants_ack: bool,
    ) -> Result<Option<ReceivedAck>, SendError> {
        self.connect().await?;
        let result = self.exchange(message, control_id, wants_ack).await;
        match result {
            Err(SendError::Closed) if self.closed_by_a_tls_port().await => Err(SendError::ServerSpeaksTls),
            other => other,
        }
    }

    async fn exchange(
        &mut self,
        message: &[u8],
        control_id: &str,
        wants_ack: bool,
    ) -> Result<Option<ReceivedAck>, SendError> {
        let conn = self.conn.as_mut().expect("connect() above opened it");
        let framed = mllp::encode_to_vec(&self.options.framing, message);
        let deadline = Instant::now() + self.options.ack_timeout;
        match timeout_at(deadline, async {
            conn.write_all(&framed).await?;
            conn.flush().await
        })
        .await
        {
            Err(_) => {
                return Err(SendError::Timeout { waited: self.options.ack_timeout, mismatched: Vec::new() })
            }
            Ok(Err(e)) => return Err(classify_io(e)),
            Ok(Ok(())) => {}
        }
        let deadline = if wants_ack {
            deadline
        } else if self.options.error_wait.is_zero() {
            return Ok(None);
        } else {
            Instant::now() + self.options.error_wait
        };
        let start_block = self.options.framing.start()[0];
        let plaintext = self.options.tls.is_none();
        let mut mismatched = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(frame) = self.decoder.next_frame() {
                let Ok(frame) = frame else { continue };
                match parse_ack(&frame, self.options.charset) {
                    Some((ack, Some(msa2))) if msa2 == control_id => return Ok(Some(ack)),
                    // MLLP Release 2 commit bytes carry no control id: they answer the
                    // message just sent on this connection.
                    Some((ack, None)) => return Ok(Some(ack)),
                    Some((_, Some(other))) => mismatched.push(other),
                    None => mismatched.push("<not an ACK>".to_string()),
                }
            }
            let n = match timeout_at(deadline, conn.read(&mut buf)).await {
                // Silence on an open connection: what a message that wants no ACK on
                // success gets when it was taken.
                Err(_) if !wants_ack => return Ok(None),
                Err(_) => return Err(SendError::Timeout { waited: self.options.ack_timeout, mismatched }),
                Ok(Err(e)) => return Err(classify_io(e)),
                Ok(Ok(0)) => return Err(SendError::Closed),
                Ok(Ok(n)) => n,
            };
            if plaintext
                && self.received == 0
                && sniff::server_reply(&buf[..n], start_block) == Some(ServerReply::Tls)
            {
                return Err(SendError::ServerSpeaksTls);
            }
            self.received += n;
            self.decoder.push(&buf[..n]);
        }
    }

    /// Whether a plaintext connection that closed before the server said a word was
    /// closed by a TLS port (hl7d's closes on the first plaintext byte): only then is a TLS
    /// hello sent to the same address to ask.
    async fn closed_by_a_tls_port(&self) -> bool {
        self.options.tls.is_none()
            && self.received == 0
            && probe::speaks_tls(&self.options.to, self.options.connect_timeout).await
    }

    async fn open(&self) -> Result<Conn, SendError> {
        let to = self.options.to.clone();
        let limit = self.options.connect_timeout;
        let tcp = match timeout(limit, TcpStream::connect(&to)).await {
            Err(_) => {
                return Err(SendError::Connect {
                    to,
                    reason: format!("timed out after {}", humantime::format_duration(limit)),
                })
            }
            Ok(Err(e)) => return Err(SendError::Connect { to, reason: e.to_string() }),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let Some((config, name)) = &self.options.tls else {
            return Ok(Conn::Plain(tcp));
        };
        let connector = TlsConnector::from(config.clone());
        let handshake = connector.connect(name.clone(), Recording::new(tcp)).into_fallible();
        match timeout(limit, handshake).await {
            Err(_) => Err(SendError::Tls(TlsFailure::HandshakeTimeout)),
            Ok(Err((e, tcp))) => Err(SendError::Tls(self.handshake_failure(&e, tcp.first_bytes()).await)),
            Ok(Ok(stream)) => Ok(Conn::Tls(Box::new(stream))),
        }
    }

    /// Why a TLS handshake failed. A server that answered the hello with something other
    /// than TLS, or closed without a word and then waits for the rest of an MLLP frame,
    /// is a plaintext port.
    async fn handshake_failure(&self, error: &io::Error, first_bytes: &[u8]) -> TlsFailure {
        let failure = TlsFailure::from_io(error);
        let start_block = self.options.framing.start()[0];
        match sniff::server_reply(first_bytes, start_block) {
            Some(ServerReply::NotTls(_)) => TlsFailure::NotTls,
            // TLS bytes that rustls could not read: not a plaintext port after all.
            Some(ServerReply::Tls) if failure == TlsFailure::NotTls => TlsFailure::Other(error.to_string()),
            Some(ServerReply::Tls) => failure,
            None if TlsFailure::from_io_opt(error).is_none()
                && probe::speaks_mllp(
                    &self.options.to,
                    &self.options.framing,
                    self.options.connect_timeout,
                )
                .await =>
            {
                TlsFailure::NotTls
            }
            None => failure,
        }
    }
}

/// MSH-10, MSH-15, and whether the message wants an accept ACK when it is taken (not with
/// MSH-15 = NE or ER in enhanced mode: an ER receiver answers only when it refuses).
fn outbound_header(message: &[u8]) -> Result<(String, Option<AckCondition>, bool), String> {
    // An empty MSH-10 is sent anyway (operators test a listener's NACK that way); its ACK is
    // then the one whose MSA-2 is empty too.
    let msh = Msh::parse(message).map_err(|e| e.to_string())?;
    let accept_ack = if msh.is_original_mode() { None } else { msh.accept_ack().ok().flatten() };
    let wants_ack = ack::wants_accept_ack(&msh, Outcome::Accepted);
    Ok((String::from_utf8_lossy(msh.control_id).into_owned(), accept_ack, wants_ack))
}

/// Reads an ACK frame: its code, text and MSA-2 (`None` for MLLP R2 commit bytes). Text is
/// decoded in the ACK's MSH-18 character set, or `default` when it names none.
pub fn parse_ack(frame: &[u8], default: Charset) -> Option<(ReceivedAck, Option<String>)> {
    let read = ack::ReceivedAck::parse(frame)?;
    let received = ReceivedAck {
        code: read.code,
        text: read.text(default),
        raw: frame.to_vec(),
        charset: read.charset(default),
    };
    Some((received, read.control_id.map(|id| String::from_utf8_lossy(id).into_owned())))
}

fn classify_io(e: io::Error) -> SendError {
    if let Some(failure) = TlsFailure::from_io_opt(&e) {
        return SendError::Tls(failure);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
            SendError::Closed
        }
        _ => SendError::Io(e),
    }
}

/// A plain or TLS connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<Recording>>),
}

/// A TCP stream that keeps the first bytes it reads, so that a failed TLS handshake can
/// say what the server sent instead.
struct Recording {
    tcp: TcpStream,
    first: Vec<u8>,
}

impl Recording {
    /// Bytes kept: enough for [`sniff::server_reply`].
    const KEEP: usize = 16;

    fn new(tcp: TcpStream) -> Recording {
        Recording { tcp, first: Vec::with_capacity(Self::KEEP) }
    }

    fn first_bytes(&self) -> &[u8] {
        &self.first
    }
}

impl AsyncRead for Recording {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if this.first.len() < Self::KEEP {
            let new = &buf.filled()[before..];
            let take = new.len().min(Self::KEEP - this.first.len());
            this.first.extend_from_slice(&new[..take]);
        }
        result
    }
}

impl AsyncWrite for Recording {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// `\n` and `\r\n` line ends become `\r` (the HL7 segment terminator), so that messages
/// written in a text editor can be sent as they are (`hl7d send`, `hl7d bench`).
pub fn normalise_line_ends(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(b'\r');
                i += 2;
                continue;
            }
            b'\n' => out.push(b'\r'),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_port_only_when_none_is_named() {
        assert_eq!(with_default_port("localhost"), "localhost:2575");
        assert_eq!(with_default_port("10.0.0.5"), "10.0.0.5:2575");
        assert_eq!(with_default_port("::1"), "[::1]:2575");
        assert_eq!(with_default_port("[::1]"), "[::1]:2575");
        assert_eq!(with_default_port("localhost:6661"), "localhost:6661");
        assert_eq!(with_default_port("[::1]:6661"), "[::1]:6661");
    }

    #[test]
    fn line_ends_become_segment_terminators() {
        assert_eq!(
            normalise_line_ends(b"MSH|a\r\nPID|1\nPV1|2\rOBX|\r\r\n"),
            b"MSH|a\rPID|1\rPV1|2\rOBX|\r\r"
        );
        assert_eq!(normalise_line_ends(b"\n\r"), b"\r\r");
        assert_eq!(normalise_line_ends(b""), b"");
    }
}
