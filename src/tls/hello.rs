//! ClientHello sniffing: what the first bytes on a TLS port say before rustls sees them.
//!
//! Owns the peeking (nothing is consumed, so rustls later reads every byte) and the words
//! for a peer that does not speak TLS. The verdict on the bytes is
//! [`hl7_proto::sniff::tls`], shared with the plaintext path. It must not run the
//! handshake.

use std::io;
use std::time::Duration;

use hl7_proto::sniff::{self, HelloVersion, PeerKind, TlsFirstBytes, HELLO_VERSION_END};
use tokio::net::TcpStream;

/// How often a ClientHello split after a few bytes is peeked at again.
const SPLIT_HELLO_POLL: Duration = Duration::from_millis(10);

/// Waits for the first bytes (bounded by the caller's handshake timeout) and judges them.
/// `Ok(None)` when the peer closed without sending anything.
pub(super) async fn peek_first_bytes(stream: &TcpStream) -> io::Result<Option<TlsFirstBytes>> {
    let mut prefix = [0u8; HELLO_VERSION_END];
    let n = stream.peek(&mut prefix).await?;
    Ok(sniff::tls(&prefix[..n]))
}

/// Waits (bounded by the caller's handshake timeout) until the ClientHello's
/// `client_version` can be read. [`HelloVersion::NotClientHello`] when the peer closes
/// first or the bytes are not a ClientHello: rustls then says what is wrong.
pub(super) async fn peek_hello_version(stream: &TcpStream) -> HelloVersion {
    let mut prefix = [0u8; HELLO_VERSION_END];
    loop {
        let Ok(n) = stream.peek(&mut prefix).await else {
            return HelloVersion::NotClientHello;
        };
        match sniff::hello_version(&prefix[..n]) {
            // A hello split after a few bytes is rare; poll gently until the rest arrives.
            HelloVersion::Incomplete if n > 0 => tokio::time::sleep(SPLIT_HELLO_POLL).await,
            HelloVersion::Incomplete => return HelloVersion::NotClientHello,
            known => return known,
        }
    }
}

/// The `detail` of a `not_tls` refusal, e.g. `HTTP request: first byte 0x47, expected 0x16`.
pub(super) fn not_tls_detail(kind: PeerKind, first: u8) -> String {
    format!("{kind}: first byte 0x{first:02X}, expected 0x{:02X}", sniff::TLS_HANDSHAKE_RECORD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_tls_details() {
        assert!(not_tls_detail(PeerKind::Mllp, 0x0B).starts_with("plaintext MLLP"));
        assert!(not_tls_detail(PeerKind::Http, b'G').contains("HTTP"));
        assert_eq!(
            not_tls_detail(PeerKind::Unrecognised, 0x42),
            "unrecognised bytes: first byte 0x42, expected 0x16"
        );
    }
}
