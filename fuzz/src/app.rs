//! Fuzz targets for the hl7d application crate: the configuration parser (`hl7d::config`),
//! the ACK parser of `hl7d send` (`hl7d::sender::parse_ack`), which reads whatever a server
//! sends back, and the PROXY protocol header reader (`hl7d::proxy_header`), which reads
//! whatever reaches a `proxy_protocol` listener first.
//!
//! They run under `cargo fuzz run -s none config|sender_ack|proxy_header` and, through `#[path]`, inside
//! `cargo test` (`tests/it/fuzz_app.rs`). Names only `hl7d`, `hl7_proto` and `std`, never
//! `crate::`.

use std::collections::HashSet;
use std::time::Duration;

use hl7_proto::ack::{self, AckCode, AckParams};
use hl7_proto::charset::Charset;
use hl7_proto::inbound::inspect;
use hl7_proto::refusal::Refusal;
use hl7d::config::{ClientAuth, Config, Thumbprint, Transport};
use hl7d::proxy_header::{self, Header, Progress};
use hl7d::sender::parse_ack;

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// `Config::from_toml_str` on any UTF-8 text (the file is read as UTF-8, so other bytes
/// never reach the parser). Checks:
/// * it never panics, and parsing is deterministic;
/// * an error has a non-empty message;
/// * an accepted configuration keeps every documented bound (docs/configuration.md):
///   at least one listener, names 1–64 characters of `[A-Za-z0-9_.-]` and unique, listen
///   addresses unique (port 0 aside), timeouts, sizes and connection counts within their
///   ranges, `proxy_protocol` only with a non-empty `proxy_from`, approved thumbprints
///   non-empty without duplicates, and each thumbprint's display form parses back to itself.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = Config::from_toml_str(text);
    let again = Config::from_toml_str(text);
    match (&parsed, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "parsing is not deterministic"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "errors are not deterministic"),
        _ => panic!("parsing is not deterministic"),
    }
    let config = match parsed {
        Ok(config) => config,
        Err(error) => {
            assert!(!error.to_string().trim().is_empty(), "an error without a message");
            return;
        }
    };
    assert!(!config.listeners.is_empty(), "a configuration without listeners");
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for listener in &config.listeners {
        let name = &listener.name;
        assert!(
            (1..=64).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
            "listener name {name:?} outside the documented alphabet"
        );
        assert!(names.insert(name.clone()), "listener name {name:?} accepted twice");
        if listener.listen.port() != 0 {
            assert!(addrs.insert(listener.listen), "listen address {} accepted twice", listener.listen);
        }
        assert!(
            (SECOND..=DAY).contains(&listener.idle_timeout),
            "{name}: idle_timeout {:?}",
            listener.idle_timeout
        );
        assert!((SECOND..=HOUR).contains(&listener.frame_timeout), "{name}: frame_timeout");
        assert!((SECOND..=HOUR).contains(&listener.write_timeout), "{name}: write_timeout");
        assert!((1024..=64 * 1024 * 1024).contains(&listener.max_message_size), "{name}: max_message_size");
        assert!((1..=100_000).contains(&listener.max_connections), "{name}: max_connections");
        if let Some(window) = listener.duplicate_window {
            assert!(window > Duration::ZERO, "{name}: a zero duplicate_window must mean None");
        }
        for net in &listener.allow_ips {
            assert_eq!(*net, net.trunc(), "{name}: allow_ips entry with host bits");
        }
        if let Some(proxy) = &listener.proxy {
            assert!(!proxy.from.is_empty(), "{name}: proxy_protocol without proxy_from");
            for net in &proxy.from {
                assert_eq!(*net, net.trunc(), "{name}: proxy_from entry with host bits");
            }
        }
        let framing = listener.framing;
        assert!((1..=4).contains(&framing.start().len()) && (1..=4).contains(&framing.end().len()));
        match &listener.transport {
            Transport::Plaintext => {}
            Transport::Tls(tls) => {
                assert!(
                    (SECOND..=5 * 60 * SECOND).contains(&tls.handshake_timeout),
                    "{name}: handshake_timeout"
                );
                assert!(!tls.cert.as_os_str().is_empty() && !tls.key.as_os_str().is_empty());
                if let ClientAuth::Required { thumbprints, .. } = &tls.client_auth {
                    assert!(!thumbprints.is_empty(), "{name}: client_auth required without thumbprints");
                    let unique: HashSet<&Thumbprint> = thumbprints.iter().collect();
                    assert_eq!(unique.len(), thumbprints.len(), "{name}: duplicate thumbprints");
                    for thumbprint in thumbprints {
                        let shown = thumbprint.to_string();
                        assert_eq!(shown.parse::<Thumbprint>().as_ref(), Ok(thumbprint), "{shown}");
                    }
                }
            }
        }
    }
    if let Some(retention) = config.store.retention {
        assert!(retention >= 60 * SECOND, "retention below one minute");
    }
}

/// `hl7d::sender::parse_ack` on any frame (a hostile or broken server chooses it): never a
/// panic. And when the frame is a message with a header, every ACK hl7d's own builder makes
/// for it is read back by the sender with the same code and MSA-2 = the message's MSH-10,
/// whatever its delimiters and character set: the two sides of hl7d agree.
pub fn sender_ack(data: &[u8]) {
    let _ = parse_ack(data, Charset::Utf8);
    let _ = parse_ack(data, Charset::Big5);
    let seen = inspect(data, Charset::Utf8, false);
    let Some(msh) = seen.msh() else { return };
    for code in [AckCode::ApplicationAccept, AckCode::ApplicationError, AckCode::CommitReject] {
        let error = seen.refusal().map(Refusal::ack_error);
        let params = AckParams {
            code,
            control_id: b"A1B2C3000001",
            timestamp: b"20261128101500+0000",
            charset: seen.charset(),
            error,
        };
        let bytes = ack::ack_to_vec(Some(msh), &params);
        let (received, msa2) = parse_ack(&bytes, Charset::Utf8).expect("the sender reads hl7d's own ACK");
        assert_eq!(received.code, code, "MSA-1 read back");
        assert_eq!(msa2.as_deref(), Some(&*String::from_utf8_lossy(msh.control_id)), "MSA-2 read back");
    }
}

/// `hl7d::proxy_header` on any first bytes of a connection. Checks:
/// * [`proxy_header::parse`] never panics; a header it accepts is at most
///   [`proxy_header::MAX_LEN`] bytes and no longer than the input;
/// * read as the listener reads it, in pieces of 1, 2, 13 and [`proxy_header::MAX_LEN`]
///   peeked bytes with [`proxy_header::next_part`] saying how many to take, the outcome is
///   the same whatever the pieces, never more than [`proxy_header::MAX_LEN`] bytes are
///   taken, an accepted header is exactly the bytes taken (not one past its end), and it is
///   the header `parse` finds in the whole input;
/// * the client address of an accepted header, written again as a v1 line and as a v2
///   header, reads back as the same address.
pub fn proxy_header(data: &[u8]) {
    let whole = proxy_header::parse(data);
    if let Progress::Done { len, .. } = whole {
        assert!(len <= data.len() && len <= proxy_header::MAX_LEN, "header of {len} bytes");
    }
    let mut outcomes = Vec::new();
    for chunk in [1, 2, 13, proxy_header::MAX_LEN] {
        let mut read: Vec<u8> = Vec::new();
        let outcome = loop {
            let progress = proxy_header::parse(&read);
            let rest = &data[read.len()..];
            if progress != Progress::Incomplete || rest.is_empty() {
                break progress;
            }
            let take = proxy_header::next_part(&read, &rest[..chunk.min(rest.len())]);
            assert!(take >= 1, "an unfinished header takes no byte");
            read.extend_from_slice(&rest[..take]);
            assert!(read.len() <= proxy_header::MAX_LEN, "{} bytes taken", read.len());
        };
        if let Progress::Done { len, .. } = outcome {
            assert_eq!(len, read.len(), "bytes taken past the header's end");
            assert_eq!(outcome, whole, "the reader and the whole input disagree");
        }
        if let Progress::Done { .. } = whole {
            assert_eq!(outcome, whole, "the whole input has a header the reader misses");
        }
        outcomes.push(outcome);
    }
    assert!(outcomes.windows(2).all(|pair| pair[0] == pair[1]), "pieces change the outcome: {outcomes:?}");
    if let Progress::Done { header: Header::Proxied { client, .. }, .. } = whole {
        for written in [v1_line(client), v2_header(client)] {
            match proxy_header::parse(&written) {
                Progress::Done { header: Header::Proxied { client: read_back, .. }, len } => {
                    assert_eq!(read_back, client, "client address read back");
                    assert_eq!(len, written.len());
                }
                other => panic!("{client} written again reads as {other:?}"),
            }
        }
    }
}

fn v1_line(client: std::net::SocketAddr) -> Vec<u8> {
    let (family, server) = if client.is_ipv4() { ("TCP4", "10.0.0.5") } else { ("TCP6", "2001:db8::5") };
    format!("PROXY {family} {} {server} {} 2575\r\n", client.ip(), client.port()).into_bytes()
}

fn v2_header(client: std::net::SocketAddr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\x00\r\nQUIT\n\x21".to_vec();
    let mut rest = Vec::new();
    match client.ip() {
        std::net::IpAddr::V4(ip) => {
            out.push(0x11);
            rest.extend_from_slice(&ip.octets());
            rest.extend_from_slice(&[10, 0, 0, 5]);
        }
        std::net::IpAddr::V6(ip) => {
            out.push(0x21);
            rest.extend_from_slice(&ip.octets());
            rest.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        }
    }
    rest.extend_from_slice(&client.port().to_be_bytes());
    rest.extend_from_slice(&2575u16.to_be_bytes());
    out.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    out.extend_from_slice(&rest);
    out
}
