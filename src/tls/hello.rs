//! ClientHello sniffing: what the first bytes on a TLS port say before rustls sees them.
//!
//! Owns the peeking (nothing is consumed) and the words for a peer that is not TLS or
//! offers only an old version. It must not run the handshake.

use tokio::net::TcpStream;

/// First byte of every TLS record carrying a handshake message (content type 22).
pub(super) const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// `legacy_version` of TLS 1.2 (RFC 5246); TLS 1.3 clients send it too (RFC 8446 §4.1.2).
pub(super) const TLS12_WIRE_VERSION: u16 = 0x0303;
/// A plaintext fatal `protocol_version` alert record (RFC 8446 §6): what a TLS server
/// answers a hello it cannot accept the version of.
pub(super) const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];
/// Record header (5) + handshake type (1) + length (3) + client_version (2).
pub(super) const HELLO_VERSION_END: usize = 11;

/// Waits (bounded by the caller's handshake timeout) until the first 11 bytes are there
/// and returns the ClientHello's `client_version`, without consuming anything. `None`
/// when the peer closes first or the bytes are not a ClientHello: rustls then reports.
pub(super) async fn peek_hello_version(stream: &TcpStream) -> Option<u16> {
    let mut prefix = [0u8; HELLO_VERSION_END];
    loop {
        let n = stream.peek(&mut prefix).await.ok()?;
        if n == 0 {
            return None;
        }
        if n == HELLO_VERSION_END {
            return hello_version(&prefix);
        }
        // A hello split after a few bytes is rare; poll gently until the rest arrives.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// `client_version` from the first bytes of a TLS record holding a ClientHello.
fn hello_version(prefix: &[u8]) -> Option<u16> {
    match prefix {
        [TLS_HANDSHAKE_RECORD, _, _, _, _, 0x01, _, _, _, major, minor, ..] => {
            Some(u16::from_be_bytes([*major, *minor]))
        }
        _ => None,
    }
}

pub(super) fn wire_version_name(version: u16) -> String {
    match version {
        0x0300 => "SSL 3.0".to_owned(),
        0x0301 => "TLS 1.0".to_owned(),
        0x0302 => "TLS 1.1".to_owned(),
        other => format!("protocol version 0x{other:04X}"),
    }
}

pub(super) fn not_tls_detail(first: u8) -> String {
    let what = match first {
        0x0B => "plaintext MLLP (start block 0x0B)",
        b'M' => "plaintext HL7 without MLLP framing",
        b'G' | b'P' | b'H' | b'O' | b'C' => "probably an HTTP request",
        0x80 => "SSLv2-style hello",
        _ => "not a TLS handshake record",
    };
    format!("{what}: first byte 0x{first:02X}, expected 0x16")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_versions() {
        // openssl s_client -tls1: record version 0x0301, ClientHello, client_version 0x0301.
        let tls10 = [0x16, 0x03, 0x01, 0x00, 0x75, 0x01, 0x00, 0x00, 0x71, 0x03, 0x01];
        assert_eq!(hello_version(&tls10), Some(0x0301));
        assert_eq!(wire_version_name(0x0301), "TLS 1.0");
        let tls13 = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03];
        assert_eq!(hello_version(&tls13), Some(TLS12_WIRE_VERSION));
        // Not a ClientHello (handshake type 2), or not a handshake record.
        assert_eq!(hello_version(&[0x16, 0x03, 0x03, 0x00, 0x10, 0x02, 0, 0, 0, 3, 1]), None);
        assert_eq!(hello_version(&[0x17; 11]), None);
    }

    #[test]
    fn not_tls_details() {
        assert!(not_tls_detail(0x0B).starts_with("plaintext MLLP"));
        assert!(not_tls_detail(b'G').contains("HTTP"));
        assert!(not_tls_detail(0x42).ends_with("first byte 0x42, expected 0x16"));
    }
}
