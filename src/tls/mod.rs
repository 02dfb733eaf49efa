//! TLS for listeners: rustls server configuration, client-certificate approval by
//! thumbprint, live reload, and certificate tools.
//!
//! Owns everything between an accepted TCP socket and a decrypted byte stream: the first
//! byte check (plaintext on a TLS port), the handshake and its timeout, the client
//! certificate verdict, the per-connection TLS log line, refusal audit lines, and the set
//! of live mutual-TLS connections that a reload may close. It must not read MLLP or HL7:
//! the connection task gets a stream and [`Session`] facts, nothing else.
//!
//! Policy, fixed here rather than configurable: TLS 1.2 and 1.3 only (rustls has nothing
//! older), only ECDHE key exchange with AEAD ciphers, one crypto provider (aws-lc-rs).
//! Mutual-TLS profiles disable session resumption, and every accepted client certificate is
//! checked again against the *current* approval list after the handshake, so a certificate
//! removed by a reload cannot come back.
//!
//! The parts, each owning one thing:
//! - `server_config.rs`: the crypto provider, cipher suites and rustls server config;
//! - `accept.rs`: the handshake of one connection, bounded by `handshake_timeout`;
//! - `hello.rs`: peeking at the first bytes (ClientHello sniffing, via `hl7_proto::sniff`);
//! - `refusal.rs`: why a connection was refused, and its audit line;
//! - `reload.rs`: each listener's live settings and mutual-TLS connections, reload, expiry;
//!   the reload of the whole server (which calls it) is `listener::reload`;
//! - `verifier.rs`, `load.rs`, `cert.rs`, `pki.rs`: client-certificate approval, reading
//!   PEM files, certificate facts (and the one expiry policy), certificate generation;
//! - `thumbprint.rs`: a certificate's thumbprint as configured and shown (`sha256:…`).

mod accept;
pub mod cert;
mod hello;
pub mod load;
pub mod pki;
mod refusal;
mod reload;
mod server_config;
pub mod thumbprint;
pub mod verifier;

pub use accept::{Accepted, Session, TlsConnection};
pub use cert::ClientCert;
pub use load::TlsError;
pub use refusal::{Refusal, RefusalReason};
pub(crate) use reload::unix_now;
pub use reload::{PreparedTls, ReloadOutcome, TlsListener};
pub use server_config::{check_settings, provider};
