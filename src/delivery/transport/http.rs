//! `http://` and `https://` routes: each message is one `POST` of its bytes exactly as
//! received, and the status code becomes an [`Outcome`] by the outcome table's HTTP rows.
//!
//! The client is hyper's connection-level one (no pool, no redirects, no proxy): one
//! connection per transport, kept open between messages and replaced when the server has
//! closed it. `https://` runs over tokio-rustls with the listener's crypto provider
//! (aws-lc-rs) and the trust settings of `hl7d send` ([`crate::sender::tls::client_config`]:
//! `ca`, `pin`, client certificate), and offers HTTP/2 and HTTP/1.1 by ALPN; `http://` speaks
//! HTTP/1.1. Connecting, the TLS handshake and the whole exchange up to the response
//! headers are bounded by the route's `ack_timeout`.
//!
//! The request carries `Content-Type: x-application/hl7-v2+er7; charset=…` (the message's
//! own character set), `X-HL7D-Message-Id`, `X-HL7D-Listener`, `X-HL7D-Control-Id`,
//! `X-HL7D-Message-Type`, the route's `[route.http] headers` (whose `env:` values are read
//! when the transport is built, and sent as sensitive: HTTP/2 never puts them in its
//! compression table), and with `sign_secret` an `X-HL7D-Signature: sha256=<hex>` HMAC of
//! the body. Of the response only the status line and `Retry-After` are used; at most
//! [`MAX_RESPONSE_BODY`] bytes of its body are read (so that the connection can carry the
//! next message) and never kept or logged.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsConnector;

use super::{no_tls_settings, tls_client, tls_failure_text, BuildError};
use crate::config::{RouteConfig, RouteTarget, SecretValue};
use crate::delivery::{BoxFuture, Outbound, Outcome, RetryReason, Transport};
use crate::peer_text;
use crate::sender::TlsFailure;

/// The media type of an HL7 v2 message in its pipe-and-hat (ER7) encoding.
pub const CONTENT_TYPE_ER7: &str = "x-application/hl7-v2+er7";

/// The most of a response body that is read: enough to finish a typical short answer so
/// that the connection can be reused; a longer body closes the connection instead.
pub const MAX_RESPONSE_BODY: usize = 4 * 1024;

/// `X-HL7D-Message-Id`: the message's id in the store.
pub const HEADER_MESSAGE_ID: HeaderName = HeaderName::from_static("x-hl7d-message-id");
/// `X-HL7D-Listener`: the listener it was received on.
pub const HEADER_LISTENER: HeaderName = HeaderName::from_static("x-hl7d-listener");
/// `X-HL7D-Control-Id`: its MSH-10.
pub const HEADER_CONTROL_ID: HeaderName = HeaderName::from_static("x-hl7d-control-id");
/// `X-HL7D-Message-Type`: its MSH-9 as `TYPE^TRIGGER`.
pub const HEADER_MESSAGE_TYPE: HeaderName = HeaderName::from_static("x-hl7d-message-type");
/// `X-HL7D-Signature`: `sha256=` and the lower-case hex HMAC-SHA256 of the body, keyed with
/// `sign_secret`.
pub const HEADER_SIGNATURE: HeaderName = HeaderName::from_static("x-hl7d-signature");

/// Request headers the route's `headers` may not set: hl7d writes them itself, or they
/// belong to the connection (HTTP/1.1 framing, hop-by-hop).
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

/// One HTTP(S) downstream and its open connection.
pub struct HttpTransport {
    endpoint: Endpoint,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `[route.http] headers`, resolved and marked sensitive.
    headers: HeaderMap,
    /// `sign_secret`, resolved.
    sign_key: Option<Vec<u8>>,
    timeout: Duration,
    connection: Option<Connection>,
}

impl HttpTransport {
    /// The transport of an `http://` or `https://` route. Reads `[route.tls]`'s files and
    /// the `env:` values of `[route.http]` now (a missing variable is an error that names
    /// it); connects on the first message.
    pub fn new(route: &RouteConfig) -> Result<HttpTransport, BuildError> {
        let RouteTarget::Http { url, tls } = &route.to else {
            return Err(BuildError::Target {
                route: route.name.clone(),
                reason: "not an http:// or https:// URL".into(),
            });
        };
        let endpoint = Endpoint::parse(url, *tls)
            .map_err(|reason| BuildError::Target { route: route.name.clone(), reason })?;
        let tls = if *tls {
            let (config, name) = tls_client(route, &endpoint.host, &[b"h2", b"http/1.1"])?;
            Some((TlsConnector::from(config), name))
        } else {
            no_tls_settings(route)?;
            None
        };
        let headers = route_headers(route)?;
        let sign_key = sign_key(route)?;
        Ok(HttpTransport { endpoint, tls, headers, sign_key, timeout: route.ack_timeout, connection: None })
    }

    async fn attempt(&mut self, message: &Outbound) -> Outcome {
        let deadline = Instant::now() + self.timeout;
        let connection = match self.ready(deadline).await {
            Ok(connection) => connection,
            Err(failure) => return failure.outcome(),
        };
        let request = self.request(message, connection.version);
        let connection = self.connection.insert(connection);
        let response = match timeout_at(deadline, connection.send(request)).await {
            Err(_) => Err(Failure::Timeout(format!(
                "no HTTP response within {}",
                humantime::format_duration(self.timeout)
            ))),
            Ok(Err(error)) => Err(Failure::from_hyper(&error, connection.tls_failure())),
            Ok(Ok(response)) => Ok(response),
        };
        let response = match response {
            Ok(response) => response,
            Err(failure) => {
                self.connection = None;
                return failure.outcome();
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| parse_retry_after(value.as_bytes(), SystemTime::now()));
        // The status decides; the body is read only so that the connection can carry the
        // next message.
        let finished = timeout_at(deadline, drain(response)).await.unwrap_or(false);
        if !finished {
            self.connection = None;
        }
        outcome_for_status(status, retry_after)
    }

    /// The open connection if the server has not closed it, else a new one. Either way it
    /// is taken out of `self.connection`, which is empty after a failure.
    async fn ready(&mut self, deadline: Instant) -> Result<Connection, Failure> {
        if let Some(mut connection) = self.connection.take() {
            if !connection.is_closed()
                && timeout_at(deadline, connection.ready()).await.is_ok_and(|r| r.is_ok())
            {
                return Ok(connection);
            }
        }
        self.connect(deadline).await
    }

    async fn connect(&self, deadline: Instant) -> Result<Connection, Failure> {
        let endpoint = &self.endpoint;
        let connect_error =
            |reason: String| Failure::Connect(format!("connect to {}: {reason}", endpoint.authority));
        let tcp =
            match timeout_at(deadline, TcpStream::connect((endpoint.host.as_str(), endpoint.port))).await {
                Err(_) => {
                    return Err(connect_error(format!(
                        "timed out after {}",
                        humantime::format_duration(self.timeout)
                    )))
                }
                Ok(Err(error)) => return Err(connect_error(error.to_string())),
                Ok(Ok(tcp)) => tcp,
            };
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Connection::http1(TokioIo::new(tcp), None).await;
        };
        let tls = match timeout_at(deadline, connector.connect(name.clone(), tcp)).await {
            Err(_) => return Err(Failure::Tls(tls_failure_text(&TlsFailure::HandshakeTimeout, "http"))),
            Ok(Err(error)) => {
                return Err(Failure::Tls(tls_failure_text(&TlsFailure::from_io(&error), "http")))
            }
            Ok(Ok(tls)) => tls,
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let slot = TlsErrorSlot::default();
        let io = TokioIo::new(Watched { inner: tls, slot: slot.clone() });
        if h2 {
            Connection::http2(io, Some(slot)).await
        } else {
            Connection::http1(io, Some(slot)).await
        }
    }

    /// The `POST` of one message.
    fn request(&self, message: &Outbound, version: Version) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(message.raw.clone()));
        *request.method_mut() = Method::POST;
        *request.version_mut() = version;
        // HTTP/1.1 takes the path and a Host header; HTTP/2 the whole URI, from which it
        // sends :scheme, :authority and :path.
        *request.uri_mut() = if version == Version::HTTP_2 {
            self.endpoint.absolute.clone()
        } else {
            self.endpoint.origin.clone()
        };
        let headers = request.headers_mut();
        if version != Version::HTTP_2 {
            headers.insert(HOST, self.endpoint.host_header.clone());
        }
        headers.insert(CONTENT_TYPE, content_type(message));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("hl7d/", env!("CARGO_PKG_VERSION"))));
        headers.insert(HEADER_MESSAGE_ID, HeaderValue::from(message.id));
        headers.insert(HEADER_LISTENER, header_text(&message.listener));
        headers.insert(HEADER_CONTROL_ID, header_text(&message.control_id));
        headers.insert(HEADER_MESSAGE_TYPE, header_text(&message.message_type));
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        if let Some(key) = &self.sign_key {
            let signature = format!("sha256={}", signature(key, &message.raw));
            headers.insert(
                HEADER_SIGNATURE,
                HeaderValue::try_from(signature).expect("\"sha256=\" and hex digits are valid in a header"),
            );
        }
        request
    }
}

impl Transport for HttpTransport {
    fn deliver<'a>(&'a mut self, message: &'a Outbound) -> BoxFuture<'a, Outcome> {
        Box::pin(self.attempt(message))
    }

    fn close(&mut self) {
        self.connection = None;
    }
}

/// `to`, taken apart once.
#[derive(Debug)]
struct Endpoint {
    /// The host to connect to (an IPv6 address without its brackets).
    host: String,
    port: u16,
    /// `host:port` as written, for messages.
    authority: String,
    /// HTTP/1.1's `Host`.
    host_header: HeaderValue,
    /// HTTP/1.1's request target: the path and query.
    origin: Uri,
    /// HTTP/2's: the whole URI.
    absolute: Uri,
}

impl Endpoint {
    fn parse(url: &str, tls: bool) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let scheme = if tls { "https" } else { "http" };
        if uri.scheme_str() != Some(scheme) {
            return Err(format!("expected a {scheme}:// URL"));
        }
        let authority = uri.authority().ok_or("the URL names no host")?.clone();
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not sent: put them in [route.http] headers".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err("the URL names no host".into());
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        let path = if path.is_empty() { "/" } else { path };
        let origin: Uri = path.parse().map_err(|e| format!("path: {e}"))?;
        let absolute = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| format!("not a URL: {e}"))?;
        let host_header = HeaderValue::try_from(authority.as_str()).map_err(|e| format!("host: {e}"))?;
        Ok(Endpoint { host, port, authority: authority.to_string(), host_header, origin, absolute })
    }
}

/// An open HTTP/1.1 or HTTP/2 connection: the request handle and the task that drives the
/// connection (ended when this is dropped).
struct Connection {
    sender: Sender,
    version: Version,
    driver: JoinHandle<()>,
    /// HTTPS: the TLS error that ended the connection, if one did.
    tls: Option<TlsErrorSlot>,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Connection {
    async fn http1<T>(io: TokioIo<T>, tls: Option<TlsErrorSlot>) -> Result<Connection, Failure>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|error| Failure::from_hyper(&error, tls.as_ref()))?;
        let driver = tokio::spawn(async move {
            // Its error, if any, reaches the request that was in flight.
            let _ = connection.await;
        });
        Ok(Connection { sender: Sender::Http1(sender), version: Version::HTTP_11, driver, tls })
    }

    async fn http2<T>(io: TokioIo<T>, tls: Option<TlsErrorSlot>) -> Result<Connection, Failure>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await
            .map_err(|error| Failure::from_hyper(&error, tls.as_ref()))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection { sender: Sender::Http2(sender), version: Version::HTTP_2, driver, tls })
    }

    fn tls_failure(&self) -> Option<&TlsErrorSlot> {
        self.tls.as_ref()
    }

    fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    async fn ready(&mut self) -> Result<(), hyper::Error> {
        match &mut self.sender {
            Sender::Http1(sender) => sender.ready().await,
            Sender::Http2(sender) => sender.ready().await,
        }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => sender.send_request(request).await,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Where a [`Watched`] stream keeps the TLS error that ended it.
type TlsErrorSlot = Arc<Mutex<Option<TlsFailure>>>;

/// A TLS stream that remembers the TLS error that ended it. hyper's HTTP/2 keeps only the
/// text of an I/O error it read, so without this a client certificate the server refused
/// (which TLS 1.3 reports at the first read after the handshake) would read as a lost
/// connection instead of a TLS failure.
struct Watched<S> {
    inner: S,
    slot: TlsErrorSlot,
}

impl<S> Watched<S> {
    fn note<T>(&self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(error)) = &result {
            if let Some(failure) = TlsFailure::from_io_opt(error) {
                *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure);
            }
        }
        result
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.note(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.note(result)
    }
}

/// Why an attempt got no status code.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Tls(String),
    Lost(String),
    Timeout(String),
}

impl Failure {
    /// A request that failed on the connection: a TLS error (e.g. a client certificate the
    /// server refused, which TLS 1.3 reports only after the handshake) or a lost
    /// connection. `tls` is what the connection's TLS stream saw, if it is one.
    fn from_hyper(error: &hyper::Error, tls: Option<&TlsErrorSlot>) -> Failure {
        if let Some(failure) =
            tls.and_then(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).clone())
        {
            return Failure::Tls(tls_failure_text(&failure, "http"));
        }
        let mut source: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(current) = source {
            if let Some(failure) = current.downcast_ref::<io::Error>().and_then(TlsFailure::from_io_opt) {
                return Failure::Tls(tls_failure_text(&failure, "http"));
            }
            if let Some(tls) = current.downcast_ref::<rustls::Error>() {
                return Failure::Tls(tls_failure_text(&TlsFailure::from_rustls(tls), "http"));
            }
            source = current.source();
        }
        Failure::Lost(format!("connection lost: {}", peer_text::cap(&error_chain(error))))
    }

    fn outcome(self) -> Outcome {
        let (reason, error) = match self {
            Failure::Connect(error) => (RetryReason::Connect, error),
            Failure::Tls(error) => (RetryReason::Tls, format!("tls: {error}")),
            Failure::Lost(error) => (RetryReason::ConnectionLost, error),
            Failure::Timeout(error) => (RetryReason::Timeout, error),
        };
        Outcome::Retry { reason, error, response: None, retry_after: None }
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        let next = current.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = current.source();
    }
    text
}

/// The outcome table's HTTP rows: 2xx delivered; 408, 425, 429 and 5xx retried (after
/// `Retry-After` if the server gave one); other 4xx, and 3xx (redirects are not followed:
/// a moved endpoint is a configuration change), parked. A 1xx never ends an exchange in
/// hyper; should one arrive, it is retried as an answer that decided nothing.
fn outcome_for_status(status: StatusCode, retry_after: Option<Duration>) -> Outcome {
    let line = status_line(status);
    let error = format!("the downstream answered {line}");
    let response = Some(line);
    match status.as_u16() {
        200..=299 => Outcome::Delivered { response },
        408 | 425 | 429 | 500..=599 => {
            Outcome::Retry { reason: RetryReason::HttpStatus, error, response, retry_after }
        }
        300..=399 => {
            Outcome::Park { error: format!("{error} (redirects are not followed: update `to`)"), response }
        }
        400..=499 => Outcome::Park { error, response },
        _ => Outcome::Retry { reason: RetryReason::HttpStatus, error, response, retry_after: None },
    }
}

/// `HTTP 202 Accepted`: the code and its standard reason phrase, never the server's own
/// (which is text the server chose).
fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// `Retry-After` (RFC 9110 section 10.2.3): a number of seconds, or an HTTP date (a date
/// in the past means now). `None` when it is neither.
fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is "a very long time".
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads the response body to its end unless it is longer than [`MAX_RESPONSE_BODY`];
/// whether it ended (the connection can carry the next request). The bytes are dropped.
async fn drain(response: Response<Incoming>) -> bool {
    let mut body = response.into_body();
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if read > MAX_RESPONSE_BODY {
                return false;
            }
        }
    }
    true
}

/// `x-application/hl7-v2+er7; charset=utf-8`, with the message's character set by its
/// configuration name (`utf-8`, `windows-1252`, `iso-8859-2`, …).
fn content_type(message: &Outbound) -> HeaderValue {
    HeaderValue::try_from(format!("{CONTENT_TYPE_ER7}; charset={}", message.charset.config_name()))
        .expect("character-set names are ASCII letters, digits and dashes")
}

/// A header value for text taken from a message or the config: visible ASCII and spaces
/// as they are; any other byte, and `%` itself, percent-encoded (`%0A`, `%C3%A9`), so that
/// a control id with a line feed or an accented letter can neither break the request nor
/// be refused.
fn header_text(text: &str) -> HeaderValue {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'%' => encoded.push_str("%25"),
            0x20..=0x7E => encoded.push(char::from(byte)),
            other => encoded.push_str(&format!("%{other:02X}")),
        }
    }
    // Leading and trailing spaces would be trimmed by the receiver.
    let encoded = match (encoded.strip_prefix(' '), encoded.strip_suffix(' ')) {
        (None, None) => encoded,
        _ => encoded.replace(' ', "%20"),
    };
    HeaderValue::try_from(encoded).expect("only visible ASCII and inner spaces are left")
}

/// The lower-case hex HMAC-SHA256 of `body` under `key`.
fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `[route.http] headers`, resolved, checked and marked sensitive.
fn route_headers(route: &RouteConfig) -> Result<HeaderMap, BuildError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &route.http.headers {
        let key = format!("[route.http] headers.{name:?}");
        let header_error = |reason: &str| BuildError::Header {
            route: route.name.clone(),
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let header =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| header_error("not a header name"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) || header.as_str().starts_with("x-hl7d-") {
            return Err(header_error("set by hl7d itself"));
        }
        let mut value = HeaderValue::try_from(resolve(route, &key, value)?)
            .map_err(|_| header_error("the value holds a character a header cannot carry"))?;
        value.set_sensitive(true);
        headers.append(header, value);
    }
    Ok(headers)
}

/// `[route.http] sign_secret`, resolved; an empty one is refused.
fn sign_key(route: &RouteConfig) -> Result<Option<Vec<u8>>, BuildError> {
    let Some(secret) = &route.http.sign_secret else { return Ok(None) };
    let key = "[route.http] sign_secret";
    let value = resolve(route, key, secret)?;
    if value.is_empty() {
        return Err(BuildError::EmptySecret { route: route.name.clone(), key: key.into() });
    }
    Ok(Some(value.into_bytes()))
}

/// A `[route.http]` value: the literal, or its environment variable's (an error names the
/// variable, never a value).
fn resolve(route: &RouteConfig, key: &str, value: &SecretValue) -> Result<String, BuildError> {
    match value {
        SecretValue::Literal(text) => Ok(text.clone()),
        SecretValue::Env(variable) => value.resolve().map_err(|_| BuildError::MissingEnv {
            route: route.name.clone(),
            key: key.to_owned(),
            variable: variable.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_class_has_its_outcome() {
        let delivered = outcome_for_status(StatusCode::ACCEPTED, None);
        assert_eq!(delivered, Outcome::Delivered { response: Some("HTTP 202 Accepted".into()) });
        for code in [408, 425, 429, 500, 502, 503, 504, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            let outcome = outcome_for_status(status, Some(Duration::from_secs(7)));
            assert!(
                matches!(
                    &outcome,
                    Outcome::Retry { reason: RetryReason::HttpStatus, retry_after: Some(d), .. }
                        if *d == Duration::from_secs(7)
                ),
                "{code}: {outcome:?}"
            );
        }
        for code in [301, 302, 307, 400, 401, 403, 404, 409, 413, 422, 499] {
            let status = StatusCode::from_u16(code).unwrap();
            let outcome = outcome_for_status(status, Some(Duration::from_secs(7)));
            assert!(matches!(&outcome, Outcome::Park { .. }), "{code}: {outcome:?}");
        }
        let Outcome::Park { error, response } = outcome_for_status(StatusCode::BAD_REQUEST, None) else {
            panic!()
        };
        assert_eq!(response.as_deref(), Some("HTTP 400 Bad Request"));
        assert_eq!(error, "the downstream answered HTTP 400 Bad Request");
        let odd = outcome_for_status(StatusCode::from_u16(299).unwrap(), None);
        assert_eq!(odd, Outcome::Delivered { response: Some("HTTP 299".into()) });
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(b" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:30:30 GMT", now), Some(Duration::from_secs(150)));
        assert_eq!(parse_retry_after(b"Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(b"99999999999999999999999", now), Some(Duration::from_secs(u64::MAX)));
        for junk in [&b""[..], b"-5", b"1.5", b"soon", b"\xff"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn header_text_encodes_what_a_header_cannot_carry() {
        assert_eq!(header_text("MSG00001"), "MSG00001");
        assert_eq!(header_text("ADT^A01"), "ADT^A01");
        assert_eq!(header_text("a b"), "a b");
        assert_eq!(header_text("50%\n"), "50%25%0A");
        assert_eq!(header_text("é"), "%C3%A9");
        assert_eq!(header_text(" x "), "%20x%20");
        assert_eq!(header_text(""), "");
    }

    #[test]
    fn endpoints_take_the_url_apart() {
        let e = Endpoint::parse("https://engine.example/in/hl7?x=1", true).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority.as_str()),
            ("engine.example", 443, "engine.example")
        );
        assert_eq!(e.origin, "/in/hl7?x=1");
        assert_eq!(e.absolute, "https://engine.example/in/hl7?x=1");
        let e = Endpoint::parse("http://[::1]:8080", false).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8080));
        assert_eq!(e.origin, "/");
        assert_eq!(e.host_header, "[::1]:8080");
        assert!(Endpoint::parse("http://user:pw@engine/", false).unwrap_err().contains("credentials"));
        assert!(Endpoint::parse("https://engine/", false).is_err());
        assert!(Endpoint::parse("http:///x", false).is_err());
    }
}
