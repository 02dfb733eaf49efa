//! Is the client on the wrong kind of port? Asked only after a connection failed in a way
//! that a wrong `--tls` explains, so that `hl7d send` can say "add --tls" or "drop --tls"
//! at once instead of retrying for a quarter of a minute.
//!
//! hl7d's TLS port closes a connection whose first byte is plaintext MLLP, and its
//! plaintext port closes one whose first bytes are a TLS hello, both without a word: the
//! failed connection alone cannot tell a wrong port from a refused client. So each probe
//! opens one more connection and asks the other question: does this address answer a TLS
//! hello in TLS, or wait for the rest of an MLLP frame? The bytes are judged by
//! [`hl7_proto::sniff::server_reply`]. A probe never sends a message; it closes its
//! connection after the first answer.

use std::sync::Arc;
use std::time::Duration;

use hl7_proto::mllp::Framing;
use hl7_proto::sniff::{self, ServerReply};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest wait for a probe's answer. A TLS server answers a hello at once; an MLLP server
/// that waits this long for the rest of a frame is waiting for it.
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// Whether the server at `to` answers a TLS ClientHello with a TLS record (a ServerHello,
/// or an alert). The hello is never followed up, so no certificate is checked or trusted.
pub(super) async fn speaks_tls(to: &str, connect_timeout: Duration) -> bool {
    let Some(hello) = client_hello(to) else { return false };
    let first = first_answer(to, &hello, connect_timeout).await;
    matches!(first.as_deref().and_then(|bytes| sniff::server_reply(bytes, 0x0B)), Some(ServerReply::Tls))
}

/// Whether the server at `to` takes the start of an MLLP frame the way an MLLP server does:
/// it waits for the rest (or answers in MLLP) instead of closing or answering in TLS.
pub(super) async fn speaks_mllp(to: &str, framing: &Framing, connect_timeout: Duration) -> bool {
    // The start block and the first field of an MSH: not a message, and not a TLS record
    // (a TLS server that reads it as a record header gives up).
    let mut start = framing.start().to_vec();
    start.extend_from_slice(b"MSH|");
    match first_answer(to, &start, connect_timeout).await {
        // Still open and silent: waiting for the rest of the frame.
        Some(bytes) if bytes.is_empty() => true,
        Some(bytes) => matches!(
            sniff::server_reply(&bytes, framing.start()[0]),
            Some(ServerReply::NotTls(sniff::PeerKind::Mllp))
        ),
        None => false,
    }
}

/// Connects, writes `bytes`, and returns what came back within [`PROBE_WAIT`]: the first
/// bytes read, empty when the connection stayed open and silent, `None` when it could not
/// be opened or was closed.
async fn first_answer(to: &str, bytes: &[u8], connect_timeout: Duration) -> Option<Vec<u8>> {
    let mut tcp = timeout(connect_timeout, TcpStream::connect(to)).await.ok()?.ok()?;
    timeout(PROBE_WAIT, tcp.write_all(bytes)).await.ok()?.ok()?;
    let mut buf = [0u8; 16];
    match timeout(PROBE_WAIT, tcp.read(&mut buf)).await {
        Err(_) => Some(Vec::new()),
        Ok(Ok(0)) | Ok(Err(_)) => None,
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
    }
}

/// The bytes of a TLS 1.2/1.3 ClientHello for the host of `to` (as SNI when it is a name).
/// Built by rustls with an empty trust store: the handshake never gets as far as a
/// certificate.
fn client_hello(to: &str) -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .ok()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = super::tls::server_name(to, None)
        .or_else(|_| ServerName::try_from("localhost").map_err(|_| ()))
        .ok()?;
    let mut connection = ClientConnection::new(Arc::new(config), name).ok()?;
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).ok()?;
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_hello_is_a_tls_hello() {
        let hello = client_hello("localhost:2575").expect("a hello");
        assert!(matches!(
            sniff::tls(&hello),
            Some(sniff::TlsFirstBytes::Handshake(sniff::HelloVersion::Offered(0x0303)))
        ));
        assert!(client_hello("10.0.0.1:2575").is_some());
    }
}
