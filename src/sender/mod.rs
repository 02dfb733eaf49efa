//! MLLP client: send one message, wait for its ACK, check that it is the ACK of *this*
//! message, and retry on timeout or connection loss.
//!
//! Used by `hl7d send`, `hl7d bench` and the tests. A late or mismatched ACK (MSA-2 not this
//! message's MSH-10) is never taken for this message: accepting one is how duplicate floods
//! start. Resending is safe because receivers (hl7d among them) detect duplicates.

pub mod tls;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hl7_proto::ack::{self, AckCode, Outcome};
use hl7_proto::charset::Charset;
use hl7_proto::mllp::{self, Decoder, DecoderConfig, Framing};
use hl7_proto::msh::Msh;
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

/// How to reach the listener and how patient to be.
#[derive(Clone)]
pub struct ClientOptions {
    /// `HOST:PORT`.
    pub to: String,
    /// MLLP framing bytes.
    pub framing: Framing,
    /// How long to wait for each ACK.
    pub ack_timeout: Duration,
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
    /// Plain TCP with the defaults of `hl7d send` (30 s ACK timeout, 3 retries from 2 s).
    pub fn plain(to: impl Into<String>) -> ClientOptions {
        ClientOptions {
            to: to.into(),
            framing: Framing::DEFAULT,
            ack_timeout: Duration::from_secs(30),
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
}

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// MSH-10 of the message sent.
    pub control_id: String,
    /// The ACK; `None` when the message asked for none (MSH-15 = NE).
    pub ack: Option<ReceivedAck>,
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
}

impl Client {
    /// A client; it connects on the first send.
    pub fn new(options: ClientOptions) -> Client {
        let decoder = Self::decoder(&options);
        Client { options, conn: None, decoder }
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
        }
        Ok(())
    }

    /// Drops the connection, if any.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Sends one message and waits for its ACK, resending after timeouts and lost
    /// connections with exponential backoff, up to `retries` times.
    pub async fn send(&mut self, message: &[u8]) -> Result<Delivery, DeliveryFailed> {
        let (control_id, wants_ack) = match outbound_header(message) {
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
                    return Ok(Delivery { control_id, ack, attempts, latency });
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

    async fn attempt(
        &mut self,
        message: &[u8],
        control_id: &str,
        wants_ack: bool,
    ) -> Result<Option<ReceivedAck>, SendError> {
        self.connect().await?;
        let conn = self.conn.as_mut().expect("connected above");
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
        if !wants_ack {
            return Ok(None);
        }
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
                Err(_) => return Err(SendError::Timeout { waited: self.options.ack_timeout, mismatched }),
                Ok(Err(e)) => return Err(classify_io(e)),
                Ok(Ok(0)) => return Err(SendError::Closed),
                Ok(Ok(n)) => n,
            };
            self.decoder.push(&buf[..n]);
        }
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
        match timeout(limit, connector.connect(name.clone(), tcp)).await {
            Err(_) => Err(SendError::Tls(TlsFailure::HandshakeTimeout)),
            Ok(Err(e)) => Err(SendError::Tls(TlsFailure::from_io(&e))),
            Ok(Ok(stream)) => Ok(Conn::Tls(Box::new(stream))),
        }
    }
}

/// MSH-10 and whether an ACK can come back for the message at all (not when MSH-15 = NE in
/// enhanced mode; an ER message is answered when it fails).
fn outbound_header(message: &[u8]) -> Result<(String, bool), String> {
    // An empty MSH-10 is sent anyway (operators test a listener's NACK that way); its ACK is
    // then the one whose MSA-2 is empty too.
    let msh = Msh::parse(message).map_err(|e| e.to_string())?;
    let wants_ack = [Outcome::Accepted, Outcome::Rejected]
        .into_iter()
        .any(|outcome| ack::wants_accept_ack(&msh, outcome));
    Ok((String::from_utf8_lossy(msh.control_id).into_owned(), wants_ack))
}

/// Reads an ACK frame: its code, text and MSA-2 (`None` for MLLP R2 commit bytes). Text is
/// decoded in the ACK's MSH-18 character set, or `default` when it names none.
pub fn parse_ack(frame: &[u8], default: Charset) -> Option<(ReceivedAck, Option<String>)> {
    let read = ack::ReceivedAck::parse(frame)?;
    let received = ReceivedAck { code: read.code, text: read.text(default), raw: frame.to_vec() };
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
    Tls(Box<TlsStream<TcpStream>>),
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
    fn line_ends_become_segment_terminators() {
        assert_eq!(
            normalise_line_ends(b"MSH|a\r\nPID|1\nPV1|2\rOBX|\r\r\n"),
            b"MSH|a\rPID|1\rPV1|2\rOBX|\r\r"
        );
        assert_eq!(normalise_line_ends(b"\n\r"), b"\r\r");
        assert_eq!(normalise_line_ends(b""), b"");
    }
}
