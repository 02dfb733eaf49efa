//! Fuzz targets for the hl7d application crate: the configuration parser (`hl7d::config`)
//! and the ACK parser of `hl7d send` (`hl7d::sender::parse_ack`), which reads whatever a
//! server sends back.
//!
//! They run under `cargo fuzz run -s none config|sender_ack` and, through `#[path]`, inside
//! `cargo test` (`tests/it/fuzz_app.rs`). Names only `hl7d`, `hl7_proto` and `std`, never
//! `crate::`.

use std::collections::HashSet;
use std::time::Duration;

use hl7_proto::ack::{self, AckCode, AckParams};
use hl7_proto::charset::Charset;
use hl7_proto::inbound::inspect;
use hl7_proto::refusal::Refusal;
use hl7d::config::{ClientAuth, Config, Thumbprint, Transport};
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
