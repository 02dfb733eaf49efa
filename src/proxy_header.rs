//! The PROXY protocol header (HAProxy's, v1 text and v2 binary) that a load balancer sends
//! before anything else on a connection it relays, naming the real client.
//!
//! Owns what a header is, how long one may be, and which headers hl7d accepts: a TCP client
//! address (v1 `TCP4`/`TCP6`, v2 `PROXY` over IPv4/IPv6 stream), or the proxy's own
//! connection (v2 `LOCAL`, v1 `UNKNOWN`: health checks). The syntax is read by the `ppp`
//! crate; this module bounds it (v1 at most [`V1_MAX_LEN`] bytes, v2 at most
//! [`V2_MAX_LEN`], TLVs included) and words every refusal. The version is told by the first
//! byte, so a listener takes both.
//!
//! No I/O: the caller peeks at the socket, asks [`next_part`] how many of the peeked bytes
//! belong to the header (never one byte past its end, so that the TLS handshake or the
//! first MLLP frame that follows is left on the socket), reads those, and asks [`parse`]
//! about everything read so far.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use hl7_proto::sniff::{self, PeerKind};
use ppp::v1;
use ppp::v2;
use ppp::PartialResult;

use crate::peer_text;

/// The longest v1 header, `\r\n` included (the protocol's own limit).
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a v2 header: signature (12), version and command, family and
/// protocol, and the length of the rest (2).
pub const V2_FIXED_LEN: usize = 16;
/// The largest address block of v2 (two unix socket paths of 108 bytes).
const V2_MAX_ADDRESSES: usize = 216;
/// The TLV bytes (type-length-value extensions) accepted after the addresses. hl7d reads
/// none of them; HAProxy sends none unless `proxy-v2-options` asks for some.
pub const V2_MAX_TLVS: usize = 256;
/// The longest v2 header accepted.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + V2_MAX_ADDRESSES + V2_MAX_TLVS;
/// The longest header of either version: what a reader needs to buffer at most.
pub const MAX_LEN: usize = V2_MAX_LEN;

/// `PROXY ` opens every v1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// Which version of the protocol a header was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text: `PROXY TCP4 192.0.2.7 10.0.0.5 51234 2575\r\n`.
    V1,
    /// Binary, starting with `\r\n\r\n\0\r\nQUIT\n`.
    V2,
}

impl Version {
    /// `v1` or `v2`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accepted header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed client connection: the client's address and port as the proxy saw them.
    Proxied {
        /// The real client.
        client: SocketAddr,
        /// The header's version.
        version: Version,
    },
    /// The proxy's own connection, relaying no client: v2 `LOCAL` (HAProxy's health checks)
    /// or v1 `PROXY UNKNOWN`.
    Local {
        /// The header's version.
        version: Version,
    },
}

/// What [`parse`] makes of the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A header may still come: read more (see [`next_part`]).
    Incomplete,
    /// A whole header, `len` bytes long (the bytes after it are the relayed connection's).
    Done {
        /// What it says.
        header: Header,
        /// Its length in bytes.
        len: usize,
    },
    /// No header, or one hl7d does not accept: refuse the connection.
    Invalid(Invalid),
}

/// Why a connection's first bytes are not an acceptable header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// They are not a PROXY header at all (a client connecting directly, past the load
    /// balancer, or a proxy configured without `send-proxy`).
    Missing {
        /// What they look like instead.
        looks_like: PeerKind,
        /// The first byte.
        first: u8,
    },
    /// Longer than the limit of its version: a v1 header without `\r\n` within
    /// [`V1_MAX_LEN`] bytes, or a v2 header announcing more than [`V2_MAX_LEN`].
    TooLong {
        /// Which version.
        version: Version,
        /// Its length: announced (v2) or read without an end (v1).
        len: usize,
    },
    /// A header, but broken.
    Malformed {
        /// Which version.
        version: Version,
        /// What is wrong (hl7d's words; for v1 with the header's text, capped).
        problem: String,
    },
    /// A well-formed header that names no TCP client address: v2 `PROXY` with a unix
    /// socket, UDP, or unspecified address.
    NoClientAddress {
        /// Which version.
        version: Version,
        /// What it carries instead, e.g. `a unix socket address`.
        carries: &'static str,
    },
}

impl Invalid {
    /// The `reason` of the audit line and of `hl7d_connections_refused_total`:
    /// `proxy_header_missing` or `proxy_header_invalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Missing { .. } => "proxy_header_missing",
            Invalid::TooLong { .. } | Invalid::Malformed { .. } | Invalid::NoClientAddress { .. } => {
                "proxy_header_invalid"
            }
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Missing { looks_like, first } => {
                write!(
                    f,
                    "no PROXY header: the connection starts with {looks_like} (first byte 0x{first:02X})"
                )
            }
            Invalid::TooLong { version: Version::V1, len } => {
                write!(f, "PROXY v1 header without \\r\\n within {len} bytes (at most {V1_MAX_LEN})")
            }
            Invalid::TooLong { version: Version::V2, len } => write!(
                f,
                "PROXY v2 header of {len} bytes: at most {V2_MAX_LEN} are accepted (TLVs at most \
                 {V2_MAX_TLVS} bytes; send fewer proxy-v2-options)"
            ),
            Invalid::Malformed { version, problem } => {
                write!(f, "malformed PROXY {version} header: {problem}")
            }
            Invalid::NoClientAddress { version, carries } => {
                write!(f, "PROXY {version} header carries {carries}, not a TCP client address")
            }
        }
    }
}

/// Judges the bytes read so far from a connection on a `proxy_protocol` listener.
/// `buf` holds the connection's first bytes; anything after a complete header is ignored
/// (the reader never reads it when it follows [`next_part`]).
pub fn parse(buf: &[u8]) -> Progress {
    let Some(&first) = buf.first() else { return Progress::Incomplete };
    if first == v2::PROTOCOL_PREFIX[0] {
        parse_v2(buf)
    } else {
        parse_v1(buf)
    }
}

/// Of `next`, the bytes that follow `read` on the connection (peeked, not read yet), how
/// many belong to the header and may be read: never past its end. A v2 header says its
/// length in its first 16 bytes; a v1 header ends at its first `\n` (and within
/// [`V1_MAX_LEN`]). At least one byte while `next` is not empty and the header is
/// unfinished; 0 once it is complete or refused.
pub fn next_part(read: &[u8], next: &[u8]) -> usize {
    if !matches!(parse(read), Progress::Incomplete) {
        return 0;
    }
    let Some(&first) = read.first().or(next.first()) else { return 0 };
    let wanted = if first == v2::PROTOCOL_PREFIX[0] {
        match read.get(14..16) {
            None => V2_FIXED_LEN - read.len(),
            // `parse` refused anything longer than the limit.
            Some(length) => (V2_FIXED_LEN + usize::from(u16::from_be_bytes([length[0], length[1]])))
                .saturating_sub(read.len()),
        }
    } else {
        let room = V1_MAX_LEN.saturating_sub(read.len());
        let window = &next[..room.min(next.len())];
        window.iter().position(|&b| b == b'\n').map_or(window.len(), |newline| newline + 1)
    };
    wanted.min(next.len())
}

fn parse_v2(buf: &[u8]) -> Progress {
    let signature = v2::PROTOCOL_PREFIX;
    if !signature.starts_with(&buf[..buf.len().min(signature.len())]) {
        return missing(buf);
    }
    if buf.len() < V2_FIXED_LEN {
        return Progress::Incomplete;
    }
    let len = V2_FIXED_LEN + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_LEN {
        return Progress::Invalid(Invalid::TooLong { version: Version::V2, len });
    }
    let header = match v2::Header::try_from(buf) {
        Ok(header) => header,
        Err(error) if error.is_incomplete() => return Progress::Incomplete,
        Err(error) => {
            return Progress::Invalid(Invalid::Malformed {
                version: Version::V2,
                problem: v2_problem(&error),
            })
        }
    };
    let version = Version::V2;
    let header_len = header.header.len();
    let proxied = |client| Progress::Done { header: Header::Proxied { client, version }, len: header_len };
    let no_client = |carries| Progress::Invalid(Invalid::NoClientAddress { version, carries });
    match (header.command, header.protocol, header.addresses) {
        (v2::Command::Local, _, _) => Progress::Done { header: Header::Local { version }, len: header_len },
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => {
            proxied(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => {
            proxied(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, _, v2::Addresses::Unix(_)) => no_client("a unix socket address"),
        (v2::Command::Proxy, _, v2::Addresses::Unspecified) => no_client("no address (AF_UNSPEC)"),
        (v2::Command::Proxy, v2::Protocol::Datagram, _) => no_client("a UDP address"),
        (v2::Command::Proxy, _, _) => no_client("an address of no transport protocol"),
    }
}

fn parse_v1(buf: &[u8]) -> Progress {
    if !V1_SIGNATURE.starts_with(&buf[..buf.len().min(V1_SIGNATURE.len())]) {
        return missing(buf);
    }
    let version = Version::V1;
    // A v1 header is one line: judged once it is whole. (Judging a part of it would refuse
    // a header split after a space, e.g. after the source port.)
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Progress::Invalid(Invalid::TooLong { version, len: buf.len() });
        }
        return Progress::Incomplete;
    };
    let line = &buf[..=newline];
    if line.len() > V1_MAX_LEN {
        return Progress::Invalid(Invalid::TooLong { version, len: line.len() });
    }
    let header = match v1::Header::try_from(line) {
        Ok(header) => header,
        Err(error) => {
            let text = line.escape_ascii().to_string();
            let problem = format!("{} in \"{}\"", v1_problem(&error), peer_text::cap(&text));
            return Progress::Invalid(Invalid::Malformed { version, problem });
        }
    };
    let len = header.header.len();
    let header = match header.addresses {
        v1::Addresses::Tcp4(a) => {
            Header::Proxied { client: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port), version }
        }
        v1::Addresses::Tcp6(a) => {
            Header::Proxied { client: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port), version }
        }
        v1::Addresses::Unknown => Header::Local { version },
    };
    Progress::Done { header, len }
}

/// Bytes that are no PROXY header, described as the plaintext sniffer sees their first byte
/// (an MLLP frame, a TLS handshake, HTTP…). Only the first byte: how many bytes a reader
/// holds when it gives up depends on how they arrived, and the verdict must not. Their
/// content is never quoted: it may be a message.
fn missing(buf: &[u8]) -> Progress {
    let looks_like = sniff::plaintext(&buf[..1], MLLP_START_BLOCK).unwrap_or(PeerKind::Unrecognised);
    Progress::Invalid(Invalid::Missing { looks_like, first: buf[0] })
}

/// The default MLLP start block, for telling a direct MLLP sender from other bytes.
const MLLP_START_BLOCK: u8 = 0x0B;

fn v1_problem(error: &v1::BinaryParseError) -> String {
    use v1::ParseError as E;
    let parse = match error {
        v1::BinaryParseError::InvalidUtf8(_) => return "not ASCII text".to_owned(),
        v1::BinaryParseError::Parse(parse) => parse,
    };
    match parse {
        E::InvalidProtocol | E::MissingProtocol => "protocol is not TCP4, TCP6 or UNKNOWN",
        E::InvalidSourceAddress(_) => "invalid source address",
        E::InvalidDestinationAddress(_) => "invalid destination address",
        E::InvalidSourcePort(_) => "invalid source port",
        E::InvalidDestinationPort(_) => "invalid destination port",
        E::InvalidSuffix | E::MissingNewLine => "does not end with \\r\\n after the ports",
        E::MissingSourceAddress
        | E::MissingDestinationAddress
        | E::MissingSourcePort
        | E::MissingDestinationPort => "addresses or ports missing",
        _ => "not a PROXY v1 line",
    }
    .to_owned()
}

fn v2_problem(error: &v2::ParseError) -> String {
    use v2::ParseError as E;
    match error {
        E::Version(version) => format!("version {} (expected 2)", version >> 4),
        E::Command(command) => format!("command 0x{command:X} (expected LOCAL 0x0 or PROXY 0x1)"),
        E::AddressFamily(family) => format!("address family 0x{family:02X} is unknown"),
        E::Protocol(protocol) => format!("transport protocol 0x{protocol:X} is unknown"),
        E::InvalidAddresses(len, needed) => {
            format!("{len} bytes after the fixed part cannot hold its {needed}-byte addresses")
        }
        other => format!("{other}").to_lowercase().trim_end_matches('.').to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header: `command` 0x0 LOCAL / 0x1 PROXY, `family_protocol` e.g. 0x11 (TCP over
    /// IPv4), then `rest` (addresses and TLVs), its length written in.
    pub(crate) fn v2(command: u8, family_protocol: u8, rest: &[u8]) -> Vec<u8> {
        let mut out = v2::PROTOCOL_PREFIX.to_vec();
        out.push(0x20 | command);
        out.push(family_protocol);
        out.extend_from_slice(&u16::try_from(rest.len()).unwrap().to_be_bytes());
        out.extend_from_slice(rest);
        out
    }

    fn v2_tcp4(client: [u8; 4], port: u16) -> Vec<u8> {
        let mut rest = client.to_vec();
        rest.extend_from_slice(&[10, 0, 0, 5]);
        rest.extend_from_slice(&port.to_be_bytes());
        rest.extend_from_slice(&2575u16.to_be_bytes());
        v2(0x1, 0x11, &rest)
    }

    fn done(bytes: &[u8]) -> (Header, usize) {
        match parse(bytes) {
            Progress::Done { header, len } => (header, len),
            other => panic!("{:?}: {other:?}", bytes.escape_ascii().to_string()),
        }
    }

    fn invalid(bytes: &[u8]) -> Invalid {
        match parse(bytes) {
            Progress::Invalid(invalid) => invalid,
            other => panic!("{:?}: {other:?}", bytes.escape_ascii().to_string()),
        }
    }

    /// Reads `stream` as the listener does: in pieces of at most `chunk` peeked bytes, taking
    /// only what [`next_part`] allows. Returns the outcome and the bytes taken.
    fn read_in_chunks(stream: &[u8], chunk: usize) -> (Progress, usize) {
        let mut read = Vec::new();
        loop {
            let progress = parse(&read);
            let rest = &stream[read.len()..];
            if progress != Progress::Incomplete || rest.is_empty() {
                return (progress, read.len());
            }
            let take = next_part(&read, &rest[..chunk.min(rest.len())]);
            assert!(take >= 1, "an unfinished header always takes a byte");
            read.extend_from_slice(&rest[..take]);
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.5 51234 2575\r\n";
        let client = "192.0.2.7:51234".parse().unwrap();
        assert_eq!(done(line), (Header::Proxied { client, version: Version::V1 }, line.len()));
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::5 443 2575\r\n";
        let client = "[2001:db8::7]:443".parse().unwrap();
        assert_eq!(done(line), (Header::Proxied { client, version: Version::V1 }, line.len()));
        // Bytes after the header are not part of it.
        let mut with_frame = b"PROXY TCP4 192.0.2.7 10.0.0.5 51234 2575\r\n".to_vec();
        with_frame.extend_from_slice(b"\x0bMSH|^~\\&|\x1c\r");
        assert_eq!(done(&with_frame).1, 42);
    }

    #[test]
    fn v2_tcp4_tcp6_and_tlvs() {
        let header = v2_tcp4([192, 0, 2, 7], 51234);
        let client = "192.0.2.7:51234".parse().unwrap();
        assert_eq!(done(&header), (Header::Proxied { client, version: Version::V2 }, 28));

        let mut rest = "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec();
        rest.extend_from_slice(&"2001:db8::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
        rest.extend_from_slice(&[0x01, 0xBB, 0x0A, 0x0F]);
        // A NOOP TLV and an authority TLV are skipped.
        rest.extend_from_slice(&[0x04, 0x00, 0x01, 0x00, 0x02, 0x00, 0x03, b'l', b'a', b'b']);
        let header = v2(0x1, 0x21, &rest);
        let client = "[2001:db8::7]:443".parse().unwrap();
        assert_eq!(done(&header), (Header::Proxied { client, version: Version::V2 }, header.len()));
    }

    #[test]
    fn local_and_unknown_relay_no_client() {
        assert_eq!(done(&v2(0x0, 0x00, &[])), (Header::Local { version: Version::V2 }, 16));
        // LOCAL with addresses (allowed by the spec): still the proxy's own connection.
        let mut local = v2_tcp4([192, 0, 2, 7], 1);
        local[12] = 0x20;
        assert_eq!(done(&local).0, Header::Local { version: Version::V2 });
        assert_eq!(done(b"PROXY UNKNOWN\r\n"), (Header::Local { version: Version::V1 }, 15));
        let line = b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
        assert_eq!(done(line), (Header::Local { version: Version::V1 }, line.len()));
    }

    #[test]
    fn incomplete_headers_wait_for_more() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.5 51234 2575\r\n";
        let v2 = v2_tcp4([192, 0, 2, 7], 51234);
        for whole in [&v1[..], &v2[..]] {
            for cut in 0..whole.len() {
                assert_eq!(
                    parse(&whole[..cut]),
                    Progress::Incomplete,
                    "{cut} bytes of {:?}",
                    whole.escape_ascii().to_string()
                );
            }
        }
    }

    #[test]
    fn the_reader_never_takes_a_byte_past_the_header() {
        let frame = b"\x0bMSH|^~\\&|LAB|\r\x1c\r";
        let hello = [0x16, 0x03, 0x01, 0x00, 0xC8, 0x01];
        for header in [
            b"PROXY TCP4 192.0.2.7 10.0.0.5 51234 2575\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2_tcp4([192, 0, 2, 7], 51234),
            v2(0x0, 0x00, &[]),
        ] {
            for after in [&frame[..], &hello[..], b"\n\n", b"PROXY TCP4 1.1.1.1 1.1.1.1 1 1\r\n"] {
                let mut stream = header.clone();
                stream.extend_from_slice(after);
                for chunk in [1, 2, 7, 16, 17, 100, MAX_LEN] {
                    let (progress, taken) = read_in_chunks(&stream, chunk);
                    assert!(
                        matches!(progress, Progress::Done { len, .. } if len == header.len()),
                        "{progress:?}"
                    );
                    assert_eq!(taken, header.len(), "chunk {chunk}");
                }
            }
        }
    }

    #[test]
    fn no_header_says_what_came_instead() {
        let cases: [(&[u8], PeerKind); 4] = [
            (b"\x0bMSH|^~\\&|", PeerKind::Mllp),
            (&[0x16, 0x03, 0x01, 0x00, 0xC8], PeerKind::TlsHandshake),
            (b"GET /ready HTTP/1.1\r\n", PeerKind::Http),
            (b"MSH|^~\\&|", PeerKind::Hl7WithoutMllp),
        ];
        for (bytes, kind) in cases {
            let error = invalid(bytes);
            assert_eq!(error, Invalid::Missing { looks_like: kind, first: bytes[0] });
            assert_eq!(error.reason(), "proxy_header_missing");
            assert!(!error.to_string().contains("MSH"), "the bytes are never quoted: {error}");
        }
        assert_eq!(
            invalid(&[0x16, 0x03]).to_string(),
            "no PROXY header: the connection starts with TLS handshake (first byte 0x16)"
        );
        // Decided as soon as the bytes leave both signatures.
        assert!(matches!(invalid(b"PROXX"), Invalid::Missing { .. }));
        assert!(matches!(invalid(b"\r\n\r\n\x00\r\nQUIX"), Invalid::Missing { .. }));
        assert!(matches!(invalid(b"PROXYTCP4"), Invalid::Missing { .. }));
    }

    #[test]
    fn malformed_v1_names_the_fault_and_caps_the_text() {
        for (line, fault) in [
            (&b"PROXY TCP5 192.0.2.7 10.0.0.5 1 2\r\n"[..], "protocol is not TCP4, TCP6 or UNKNOWN"),
            (b"PROXY TCP4 192.0.2.300 10.0.0.5 1 2\r\n", "invalid source address"),
            (b"PROXY TCP4 2001:db8::7 10.0.0.5 1 2\r\n", "invalid source address"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.5 65536 2\r\n", "invalid source port"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.5 01 2\r\n", "invalid source port"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.5 1 2\n", "invalid destination port"),
            (b"PROXY TCP4 192.0.2.7 10.0.0.5 1 2\rX\n", "does not end with \\r\\n"),
            (b"PROXY TCP4 192.0.2.7\r\n", "addresses or ports missing"),
            (b"PROXY TCP4 192.0.2.7 \xff 1 2\r\n", "not ASCII text"),
        ] {
            let error = invalid(line);
            assert_eq!(error.reason(), "proxy_header_invalid");
            let text = error.to_string();
            assert!(text.starts_with(&format!("malformed PROXY v1 header: {fault}")), "{text}");
            assert!(text.len() <= 64 + peer_text::MAX_BYTES, "{text}");
        }
        let error = invalid(b"PROXY TCP4 192.0.2.7 10.0.0.5 1 2\n");
        assert!(error.to_string().ends_with(r#" in "PROXY TCP4 192.0.2.7 10.0.0.5 1 2\n""#), "{error}");
    }

    #[test]
    fn v1_longer_than_107_bytes_is_refused() {
        let mut line = b"PROXY TCP6 ".to_vec();
        line.resize(V1_MAX_LEN, b'1');
        assert_eq!(invalid(&line), Invalid::TooLong { version: Version::V1, len: 107 });
        assert_eq!(parse(&line[..106]), Progress::Incomplete);
        // A reader stops taking bytes at the limit, so it never holds more.
        let mut stream = line.clone();
        stream.extend_from_slice(&[b'1'; 500]);
        assert_eq!(read_in_chunks(&stream, MAX_LEN).1, V1_MAX_LEN);
        assert!(invalid(&line).to_string().contains("without \\r\\n within 107 bytes"));
    }

    #[test]
    fn v2_beyond_the_cap_is_refused_from_its_fixed_part() {
        let header = v2(0x1, 0x11, &vec![0; V2_MAX_LEN - V2_FIXED_LEN]);
        assert!(matches!(parse(&header), Progress::Done { .. }), "the largest accepted");
        let header = v2(0x1, 0x11, &vec![0; V2_MAX_LEN - V2_FIXED_LEN + 1]);
        let error = invalid(&header[..V2_FIXED_LEN]);
        assert_eq!(error, Invalid::TooLong { version: Version::V2, len: V2_MAX_LEN + 1 });
        assert_eq!(error.reason(), "proxy_header_invalid");
        assert_eq!(read_in_chunks(&header, MAX_LEN).1, V2_FIXED_LEN, "nothing read past the fixed part");
    }

    #[test]
    fn v2_without_a_tcp_client_address_is_refused() {
        for (family_protocol, rest, carries) in [
            (0x31, vec![0u8; 216], "a unix socket address"),
            (0x00, Vec::new(), "no address (AF_UNSPEC)"),
            (0x12, vec![0u8; 12], "a UDP address"),
            (0x10, vec![0u8; 12], "an address of no transport protocol"),
        ] {
            let error = invalid(&v2(0x1, family_protocol, &rest));
            assert_eq!(error, Invalid::NoClientAddress { version: Version::V2, carries });
            assert_eq!(error.reason(), "proxy_header_invalid");
        }
    }

    #[test]
    fn malformed_v2_names_the_fault() {
        let mut bad_version = v2_tcp4([192, 0, 2, 7], 1);
        bad_version[12] = 0x11;
        let mut bad_command = v2_tcp4([192, 0, 2, 7], 1);
        bad_command[12] = 0x2F;
        let mut bad_family = v2_tcp4([192, 0, 2, 7], 1);
        bad_family[13] = 0x41;
        for (header, fault) in [
            (bad_version, "version 1 (expected 2)"),
            (bad_command, "command 0xF (expected LOCAL 0x0 or PROXY 0x1)"),
            (bad_family, "address family 0x40 is unknown"),
            (v2(0x1, 0x11, &[0; 11]), "11 bytes after the fixed part cannot hold its 12-byte addresses"),
        ] {
            assert_eq!(invalid(&header).to_string(), format!("malformed PROXY v2 header: {fault}"));
        }
    }
}
