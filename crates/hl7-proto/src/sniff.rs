//! What does this peer look like? The first bytes of a connection, judged once for both
//! kinds of port.
//!
//! Owns the recognition of a peer that speaks the wrong protocol: TLS, HTTP or a load
//! balancer's PROXY protocol header on a plaintext MLLP port ([`plaintext`]), plaintext MLLP, HL7 or HTTP on a TLS port, and the
//! `client_version` of a ClientHello ([`tls`]); and, for a client, whether a server's reply
//! is TLS at all ([`server_reply`]). It must not do I/O: the caller peeks at the socket and
//! passes the bytes in; deciding what to do about a verdict (close, refuse, answer with an
//! alert, tell the operator to add or drop `--tls`) is the caller's.

use std::fmt;

/// First byte of a TLS record carrying a handshake message (content type 22, RFC 8446 §5.1).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// First byte of a TLS record carrying an alert (content type 21, RFC 8446 §5.1).
pub const TLS_ALERT_RECORD: u8 = 0x15;
/// Major byte of every TLS record version (`0x03`: SSL 3.0 to TLS 1.3 on the wire).
const TLS_RECORD_MAJOR: u8 = 0x03;
/// `legacy_version` of TLS 1.2 (RFC 5246); TLS 1.3 clients send it too (RFC 8446 §4.1.2).
pub const TLS12_WIRE_VERSION: u16 = 0x0303;
/// A plaintext fatal `protocol_version` alert record (RFC 8446 §6): what a TLS server
/// answers a hello whose version it cannot accept.
pub const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];
/// Record header (5) + handshake type (1) + length (3) + `client_version` (2): the bytes
/// needed to read a ClientHello's version.
pub const HELLO_VERSION_END: usize = 11;

/// The first 12 bytes of a PROXY protocol v2 header (HAProxy's `send-proxy-v2`); a v1
/// header starts with `PROXY `.
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\x00\r\nQUIT\n";

/// Bytes that MLLP senders put between frames (and some before the first): NUL, CR, LF,
/// space, tab. They say nothing about the protocol.
const BLANK: [u8; 5] = [0x00, b'\r', b'\n', b' ', b'\t'];
/// Request lines of the HTTP methods that scanners and misdirected clients send, cut to
/// four bytes.
const HTTP_METHODS: [&[u8]; 6] = [b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"CONN"];
/// An SSLv2-compatible ClientHello starts with a two-byte record length whose high bit is
/// set; old scanners still send one.
const SSLV2_HELLO: u8 = 0x80;

/// What a peer's first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// An MLLP frame: the profile's start block (usually `0x0B`).
    Mllp,
    /// A TLS handshake record (`0x16`).
    TlsHandshake,
    /// An SSLv2-style hello (`0x80`).
    SslV2Hello,
    /// An HTTP request line (`GET `, `POST`, …; a prefix of one while fewer bytes are in).
    Http,
    /// An HL7 message without MLLP framing (`MSH`, or a prefix of it).
    Hl7WithoutMllp,
    /// A load balancer's PROXY protocol header (`PROXY `, or the whole v2 signature) on a
    /// listener that does not expect one.
    ProxyHeader,
    /// None of the above.
    Unrecognised,
}

impl PeerKind {
    /// A short description for logs, e.g. `HTTP request`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Mllp => "plaintext MLLP",
            PeerKind::TlsHandshake => "TLS handshake",
            PeerKind::SslV2Hello => "SSLv2-style hello",
            PeerKind::Http => "HTTP request",
            PeerKind::Hl7WithoutMllp => "HL7 without MLLP framing",
            PeerKind::ProxyHeader => "PROXY protocol header (a load balancer's: see proxy_protocol)",
            PeerKind::Unrecognised => "unrecognised bytes",
        }
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Judges the first bytes of a connection on a plaintext MLLP port. Blank bytes (NUL, CR,
/// LF, space, tab) are skipped; `None` while nothing else has arrived. `start_block` is the
/// first byte of the profile's start sequence.
pub fn plaintext(bytes: &[u8], start_block: u8) -> Option<PeerKind> {
    // Its first seven bytes are blanks, which are skipped below.
    if bytes.starts_with(&PROXY_V2_SIGNATURE) {
        return Some(PeerKind::ProxyHeader);
    }
    let first = bytes.iter().position(|b| !BLANK.contains(b))?;
    Some(kind(&bytes[first..], start_block))
}

/// The verdict on the first bytes of a connection on a TLS port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFirstBytes {
    /// A TLS handshake record: go on with the handshake.
    Handshake(HelloVersion),
    /// Not TLS: what it looks like, and the first byte (for the log).
    NotTls {
        /// What the bytes look like.
        kind: PeerKind,
        /// The first byte received.
        first: u8,
    },
}

/// The `client_version` of a ClientHello, as far as the bytes received tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloVersion {
    /// Fewer than [`HELLO_VERSION_END`] bytes so far.
    Incomplete,
    /// The record does not hold a ClientHello (the TLS library will say what is wrong).
    NotClientHello,
    /// The offered `client_version`, e.g. `0x0303`.
    Offered(u16),
}

impl HelloVersion {
    /// Whether the client offers at most a version older than TLS 1.2 (which TLS 1.3
    /// clients never do: they send `0x0303` here).
    pub fn is_before_tls12(self) -> bool {
        matches!(self, HelloVersion::Offered(version) if version < TLS12_WIRE_VERSION)
    }
}

/// Judges the first bytes of a connection on a TLS port; `None` when `bytes` is empty. A
/// TLS client's first byte is its record's content type, so nothing is skipped.
pub fn tls(bytes: &[u8]) -> Option<TlsFirstBytes> {
    let first = *bytes.first()?;
    Some(match kind(bytes, crate::mllp::START_BLOCK) {
        PeerKind::TlsHandshake => TlsFirstBytes::Handshake(hello_version(bytes)),
        kind => TlsFirstBytes::NotTls { kind, first },
    })
}

/// The `client_version` of the ClientHello that `bytes` (from the record's first byte)
/// start with.
pub fn hello_version(bytes: &[u8]) -> HelloVersion {
    match bytes {
        [TLS_HANDSHAKE_RECORD, _, _, _, _, 0x01, _, _, _, major, minor, ..] => {
            HelloVersion::Offered(u16::from_be_bytes([*major, *minor]))
        }
        [TLS_HANDSHAKE_RECORD, _, _, _, _, handshake_type, ..] if *handshake_type != 0x01 => {
            HelloVersion::NotClientHello
        }
        [TLS_HANDSHAKE_RECORD, ..] if bytes.len() < HELLO_VERSION_END => HelloVersion::Incomplete,
        _ => HelloVersion::NotClientHello,
    }
}

/// What a server's first bytes say about the protocol it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerReply {
    /// A TLS record: a handshake message (a ServerHello) or an alert, record version 3.x.
    /// What a TLS server answers a ClientHello, and what many answer plaintext with.
    Tls,
    /// Anything else, and what it looks like (an MLLP frame, HTTP, …).
    NotTls(PeerKind),
}

/// Judges the first bytes a server sent, for a client that wonders whether it chose TLS
/// rightly: a plaintext MLLP client that gets a TLS record back is talking to a TLS port, a
/// TLS client that gets an MLLP frame back is talking to a plaintext one. `None` when
/// `bytes` is empty. `start_block` is the first byte of the MLLP start sequence in use.
pub fn server_reply(bytes: &[u8], start_block: u8) -> Option<ServerReply> {
    let first = *bytes.first()?;
    let record = matches!(first, TLS_HANDSHAKE_RECORD | TLS_ALERT_RECORD)
        && bytes.get(1).is_none_or(|&major| major == TLS_RECORD_MAJOR);
    Some(if record { ServerReply::Tls } else { ServerReply::NotTls(kind(bytes, start_block)) })
}

/// The name of a TLS wire version older than TLS 1.2, e.g. `TLS 1.0`.
pub fn wire_version_name(version: u16) -> String {
    match version {
        0x0300 => "SSL 3.0".to_owned(),
        0x0301 => "TLS 1.0".to_owned(),
        0x0302 => "TLS 1.1".to_owned(),
        0x0303 => "TLS 1.2".to_owned(),
        other => format!("protocol version 0x{other:04X}"),
    }
}

/// What `bytes` (non-empty, from the first meaningful byte) look like. A signature is
/// recognised from as many of its bytes as have arrived: `G` alone already reads as HTTP.
fn kind(bytes: &[u8], start_block: u8) -> PeerKind {
    let starts = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        bytes[..n] == signature[..n]
    };
    match bytes[0] {
        b if b == start_block => PeerKind::Mllp,
        TLS_HANDSHAKE_RECORD => PeerKind::TlsHandshake,
        SSLV2_HELLO => PeerKind::SslV2Hello,
        _ if HTTP_METHODS.iter().any(|method| starts(method)) => PeerKind::Http,
        _ if starts(b"MSH") => PeerKind::Hl7WithoutMllp,
        _ if starts(b"PROXY ") || bytes.starts_with(&PROXY_V2_SIGNATURE) => PeerKind::ProxyHeader,
        _ => PeerKind::Unrecognised,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VT: u8 = 0x0B;

    #[test]
    fn plaintext_port_verdicts() {
        let cases: &[(&[u8], Option<PeerKind>)] = &[
            (b"", None),
            (b"\r\n\0 \t", None),
            (b"\x0bMSH|^~\\&|", Some(PeerKind::Mllp)),
            (b"\r\n\x0bMSH", Some(PeerKind::Mllp)),
            (&[0x16, 0x03, 0x01, 0x00, 0x75, 0x01], Some(PeerKind::TlsHandshake)),
            (b"GET / HTTP/1.1\r\n", Some(PeerKind::Http)),
            (b"POST /x HTTP/1.1\r\n", Some(PeerKind::Http)),
            (b"HEAD / HTTP/1.0\r\n", Some(PeerKind::Http)),
            (b"PUT /x HTTP/1.1\r\n", Some(PeerKind::Http)),
            (b"OPTIONS * HTTP/1.1\r\n", Some(PeerKind::Http)),
            (b"CONNECT a:1 HTTP/1.1\r\n", Some(PeerKind::Http)),
            (b"GE", Some(PeerKind::Http)),
            (b"MSH|^~\\&|LAB", Some(PeerKind::Hl7WithoutMllp)),
            (b"\nMS", Some(PeerKind::Hl7WithoutMllp)),
            (&[0x80, 0x2E, 0x01], Some(PeerKind::SslV2Hello)),
            (b"GARBAGE", Some(PeerKind::Unrecognised)),
            (b"PUTX", Some(PeerKind::Unrecognised)),
            (b"MSX", Some(PeerKind::Unrecognised)),
            // A load balancer's header on a listener without proxy_protocol.
            (b"PROXY TCP4 192.0.2.7 10.0.0.5 51234 2575\r\n", Some(PeerKind::ProxyHeader)),
            (b"PROX", Some(PeerKind::ProxyHeader)),
            (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c", Some(PeerKind::ProxyHeader)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(plaintext(bytes, VT), *expected, "{bytes:02X?}");
        }
    }

    #[test]
    fn plaintext_port_uses_the_profiles_start_block() {
        assert_eq!(plaintext(b"\x1cMSH", 0x1C), Some(PeerKind::Mllp));
        assert_eq!(plaintext(b"\x0bMSH", 0x1C), Some(PeerKind::Unrecognised));
    }

    #[test]
    fn tls_port_verdicts() {
        assert_eq!(tls(b""), None);
        let not_tls = |bytes: &[u8], kind| Some(TlsFirstBytes::NotTls { kind, first: bytes[0] });
        assert_eq!(tls(b"\x0bMSH|"), not_tls(b"\x0b", PeerKind::Mllp));
        assert_eq!(tls(b"GET / HTTP/1.1"), not_tls(b"G", PeerKind::Http));
        assert_eq!(tls(b"P"), not_tls(b"P", PeerKind::Http));
        assert_eq!(tls(b"MSH|"), not_tls(b"M", PeerKind::Hl7WithoutMllp));
        assert_eq!(tls(&[0x80, 0x2E]), not_tls(&[0x80], PeerKind::SslV2Hello));
        assert_eq!(tls(&[0x42]), not_tls(&[0x42], PeerKind::Unrecognised));
        // Nothing is skipped on a TLS port: a blank byte is not a record.
        assert_eq!(tls(b"\r\n\x16"), not_tls(b"\r", PeerKind::Unrecognised));
        assert_eq!(tls(b"PROXY TCP4 "), not_tls(b"P", PeerKind::ProxyHeader));
        assert_eq!(tls(&PROXY_V2_SIGNATURE), not_tls(b"\r", PeerKind::ProxyHeader));
        assert_eq!(tls(&[0x16]), Some(TlsFirstBytes::Handshake(HelloVersion::Incomplete)));
    }

    #[test]
    fn hello_versions() {
        // openssl s_client -tls1: record version 0x0301, ClientHello, client_version 0x0301.
        let tls10 = [0x16, 0x03, 0x01, 0x00, 0x75, 0x01, 0x00, 0x00, 0x71, 0x03, 0x01];
        assert_eq!(tls(&tls10), Some(TlsFirstBytes::Handshake(HelloVersion::Offered(0x0301))));
        assert!(hello_version(&tls10).is_before_tls12());
        assert_eq!(wire_version_name(0x0301), "TLS 1.0");
        let tls13 = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03, 0xAA];
        assert_eq!(hello_version(&tls13), HelloVersion::Offered(TLS12_WIRE_VERSION));
        assert!(!hello_version(&tls13).is_before_tls12());
        // Split hellos: not enough bytes yet.
        for end in 1..HELLO_VERSION_END {
            assert_eq!(hello_version(&tls10[..end]), HelloVersion::Incomplete, "{end}");
        }
        // Not a ClientHello (handshake type 2), or not a handshake record.
        assert_eq!(hello_version(&[0x16, 0x03, 0x03, 0x00, 0x10, 0x02]), HelloVersion::NotClientHello);
        assert_eq!(hello_version(&[0x17; 11]), HelloVersion::NotClientHello);
        assert!(!HelloVersion::Incomplete.is_before_tls12());
    }

    #[test]
    fn server_reply_verdicts() {
        let cases: &[(&[u8], Option<ServerReply>)] = &[
            (b"", None),
            // A ServerHello, and a fatal alert (rustls answering plaintext bytes).
            (&[0x16, 0x03, 0x03, 0x00, 0x7A, 0x02], Some(ServerReply::Tls)),
            (&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32], Some(ServerReply::Tls)),
            (&PROTOCOL_VERSION_ALERT, Some(ServerReply::Tls)),
            // One byte so far: judged by the content type.
            (&[0x16], Some(ServerReply::Tls)),
            (&[0x15], Some(ServerReply::Tls)),
            // Not version 3.x: not a TLS record.
            (&[0x15, 0x41], Some(ServerReply::NotTls(PeerKind::Unrecognised))),
            (b"\x0bMSH|^~\\&|", Some(ServerReply::NotTls(PeerKind::Mllp))),
            (b"MSH|^~\\&|", Some(ServerReply::NotTls(PeerKind::Hl7WithoutMllp))),
            (b"\r\n", Some(ServerReply::NotTls(PeerKind::Unrecognised))),
        ];
        for (bytes, expected) in cases {
            assert_eq!(server_reply(bytes, VT), *expected, "{bytes:02X?}");
        }
        assert_eq!(server_reply(b"\x1cMSH", 0x1C), Some(ServerReply::NotTls(PeerKind::Mllp)));
    }

    #[test]
    fn descriptions_are_distinct() {
        use PeerKind::*;
        let all = [Mllp, TlsHandshake, SslV2Hello, Http, Hl7WithoutMllp, ProxyHeader, Unrecognised];
        let names: std::collections::HashSet<_> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), all.len());
    }
}
