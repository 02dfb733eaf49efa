//! Configuration: TOML text → typed [`Config`] (store, admin, log, listener profiles).
//!
//! This module owns the config file format and every rule about which values are allowed.
//! Everything is parsed into typed values once, at start-up: later code takes a
//! [`ListenerConfig`] and never looks at strings again. A bad file yields a [`ConfigError`]
//! naming the listener and the key at fault (with a line number where the TOML had one).
//!
//! It must not do anything else: no sockets, no certificate reading, no logging. The only
//! I/O is [`Config::load`] reading the file itself; warnings are returned in
//! [`Config::warnings`] for the caller to print.
//!
//! The file format is documented key by key in `docs/configuration.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hl7_proto::ack::AckPolicy;
use hl7_proto::charset::{Charset, CONFIG_NAMES};
use hl7_proto::hex;
use hl7_proto::mllp::{Framing, MAX_MARKER_LEN};
use ipnet::IpNet;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

/// The configuration `hl7d serve` uses when no `--config` is given: one TLS listener on
/// 0.0.0.0:2575 and the store in `./hl7d-data` (relative to the working directory). The
/// certificate and key are generated on first start by a local CA in `./hl7d-data/tls/`
/// (see `tls::pki::ensure_local_tls`).
///
/// Kept as TOML text, not as a struct literal, so the default goes through the same parser
/// and validation as a user's file (see [`Config::embedded_default`]).
pub const EMBEDDED_DEFAULT_TOML: &str = r#"# hl7d embedded default: used by `hl7d serve` when no --config is given.
[store]
path = "./hl7d-data"

[[listener]]
name = "default"
listen = "0.0.0.0:2575"

# Generated on first start by a local CA (./hl7d-data/tls/ca.pem is what senders trust).
[listener.tls]
cert = "./hl7d-data/tls/server.pem"
key = "./hl7d-data/tls/server.key"
"#;

/// Default `[store] path`.
pub const DEFAULT_STORE_PATH: &str = "hl7d-data";
/// Default `[admin] listen` when an `[admin]` table is present without `listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9275";
/// Default `idle_timeout`: 30 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default `frame_timeout`: 60 seconds from a frame's first byte to its end.
pub const DEFAULT_FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `write_timeout`: 30 seconds to write one ACK.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `duplicate_window`: 24 hours.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Default `[listener.tls] handshake_timeout`: 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `max_message_size`: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = MIB;
/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;
/// Default `[log] cert_expiry_warning`: 30 days.
pub const DEFAULT_CERT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

const MIN_MESSAGE_SIZE: usize = KIB;
const MAX_MESSAGE_SIZE: usize = 64 * MIB;
const MAX_CONNECTIONS: usize = 100_000;
const MAX_NAME_LEN: usize = 64;
const IDLE_TIMEOUT_BOUNDS: (Duration, Duration) = (SECOND, DAY);
/// Below this `idle_timeout` a warning is issued (short values are for tests).
const IDLE_TIMEOUT_WARN_BELOW: Duration = MINUTE;
const FRAME_TIMEOUT_BOUNDS: (Duration, Duration) = (SECOND, HOUR);
const WRITE_TIMEOUT_BOUNDS: (Duration, Duration) = (SECOND, HOUR);
const HANDSHAKE_TIMEOUT_BOUNDS: (Duration, Duration) = (SECOND, Duration::from_secs(5 * 60));
/// Upper bound of `duplicate_window` (zero disables it).
const MAX_DUPLICATE_WINDOW: Duration = Duration::from_secs(365 * 24 * 60 * 60);
const RETENTION_BOUNDS: (Duration, Duration) = (MINUTE, Duration::from_secs(36_500 * 24 * 60 * 60));
const CERT_EXPIRY_WARNING_BOUNDS: (Duration, Duration) = (DAY, Duration::from_secs(365 * 24 * 60 * 60));

/// The whole configuration of one hl7d process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[store]`: where received messages are kept.
    pub store: StoreConfig,
    /// `[admin]`: the health/metrics endpoint; `None` (no `[admin]` table) = off.
    pub admin: Option<AdminConfig>,
    /// `[log]`: log format and level.
    pub log: LogConfig,
    /// `[audit]`: where the audit trail goes besides the log; `None` (no `[audit]` table) =
    /// audit events appear in the log only.
    pub audit: Option<AuditConfig>,
    /// `[[listener]]`: one or more listener profiles, in file order, names and ports unique.
    pub listeners: Vec<ListenerConfig>,
    /// Things that are allowed but probably unintended (e.g. an idle timeout below one
    /// minute). Not printed here: the caller logs them at start-up and `check-config`
    /// shows them.
    pub warnings: Vec<String>,
}

/// `[store]`: the message store.
///
/// Durability (`fsync`) is deliberately not configurable: a positive ACK always means the
/// message is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Data directory (`path`, default `hl7d-data`). [`Config::load`] resolves a relative
    /// path against the config file's directory.
    pub path: PathBuf,
    /// Delete messages older than this (`retention`); `None` keeps them forever.
    pub retention: Option<Duration>,
}

/// `[admin]`: the HTTP endpoint for `/live`, `/ready` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to bind (`listen`, default 127.0.0.1:9275).
    pub listen: SocketAddr,
}

/// `[log]`: how the process logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// `format`: `human` (default) or `json`.
    pub format: LogFormat,
    /// `level`: the most verbose level logged (default `info`).
    pub level: LogLevel,
    /// `cert_expiry_warning`: the daily certificate check warns about a server or approved
    /// client certificate that expires within this time (default 30 days).
    pub cert_expiry_warning: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: LogLevel::default(),
            cert_expiry_warning: DEFAULT_CERT_EXPIRY_WARNING,
        }
    }
}

/// `[audit]`: the audit trail's own sinks (at least one of them is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// `file`: append-only JSON-lines file. [`Config::load`] resolves a relative path
    /// against the config file's directory.
    pub file: Option<PathBuf>,
    /// `syslog` (with `syslog_ca`): an RFC 5424 collector over TCP or TLS.
    pub syslog: Option<SyslogConfig>,
}

/// Where audit events are sent as RFC 5424 syslog messages (RFC 6587 octet counting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// Host name or IP address of the collector (resolved at each connect).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `tls://`: RFC 5425 syslog over TLS; `tcp://`: plain TCP.
    pub tls: bool,
    /// `syslog_ca`: CA bundle that the collector's certificate must chain to (`tls://`
    /// only); `None` = the system's trusted roots.
    pub ca: Option<PathBuf>,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event (`human`).
    #[default]
    Human,
    /// One JSON object per line (`json`).
    Json,
}

/// `[log] level`, least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// `error`
    Error,
    /// `warn`
    Warn,
    /// `info` (default)
    #[default]
    Info,
    /// `debug`: adds one line per message (never segment contents).
    Debug,
    /// `trace`
    Trace,
}

impl LogLevel {
    /// The level as written in the config file, e.g. `"info"` (also the `tracing` filter
    /// directive for that level).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// One `[[listener]]` profile: a port with its own transport, limits and message policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// `name`: unique, 1–64 characters of `[A-Za-z0-9_.-]`; appears in logs, metrics and
    /// the store.
    pub name: String,
    /// `listen`: address to bind. Port 0 lets the OS choose (tests).
    pub listen: SocketAddr,
    /// TLS (`[listener.tls]`) or, only with `plaintext = true`, plain TCP.
    pub transport: Transport,
    /// `ack`: when to answer (`msh` follows MSH-15/MSH-16, `always`, `never`).
    pub ack: AckPolicy,
    /// `encoding`: character set used when MSH-18 is empty (or always, with
    /// `force_encoding`).
    pub encoding: Charset,
    /// `force_encoding`: ignore MSH-18 and always use `encoding`.
    pub force_encoding: bool,
    /// `idle_timeout`: close a connection that sends nothing for this long.
    pub idle_timeout: Duration,
    /// `frame_timeout`: longest time from a frame's first byte to its end sequence, so a
    /// peer cannot hold a connection open by trickling one frame (slowloris).
    pub frame_timeout: Duration,
    /// `write_timeout`: longest time to write one ACK before the connection is dropped.
    pub write_timeout: Duration,
    /// `max_message_size`: largest frame payload in bytes (1 KiB ..= 64 MiB).
    pub max_message_size: usize,
    /// `max_connections`: concurrent connections on this listener (1 ..= 100 000).
    pub max_connections: usize,
    /// `allow_ips`: networks allowed to connect (host bits cleared); empty = any. Use
    /// [`ListenerConfig::allows`] rather than matching these directly.
    pub allow_ips: Vec<IpNet>,
    /// `[listener.framing]`: MLLP start and end bytes.
    pub framing: Framing,
    /// `lenient_framing`: end a frame at the first end byte (`0x1C`) without waiting for
    /// the rest of the end sequence (`0x0D`); maps to the decoder's `lenient_end`.
    pub lenient_framing: bool,
    /// `duplicate_window`: how long a resent message (same sender, MSH-10 control id and
    /// bytes) is recognised as a duplicate; `None` (`"0"`) disables duplicate detection.
    pub duplicate_window: Option<Duration>,
}

/// How a listener talks to its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP: only with `plaintext = true` and no `[listener.tls]` table.
    Plaintext,
    /// TLS 1.2/1.3 per the `[listener.tls]` table.
    Tls(TlsConfig),
}

/// `[listener.tls]`: typed TLS settings. Certificates are not read here; the TLS module
/// loads the files named by these paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `cert`: PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// `key`: PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `min_version`: lowest TLS version offered (`"1.2"` default, or `"1.3"`).
    pub min_version: TlsVersion,
    /// `handshake_timeout`: a handshake not finished in this time is dropped.
    pub handshake_timeout: Duration,
    /// `client_auth` with `client_thumbprints` and `client_ca`.
    pub client_auth: ClientAuth,
}

/// `[listener.tls] min_version`. TLS 1.0 and 1.1 cannot be configured at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TlsVersion {
    /// `"1.2"` (default): TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// `"1.3"`: TLS 1.3 only.
    Tls13,
}

/// Client-certificate authentication of one TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_auth = "none"`: no client certificate is requested; one offered is ignored.
    None,
    /// `client_auth = "required"`: the client must present a valid certificate whose
    /// thumbprint is listed (and, with `ca`, that chains to that CA).
    Required {
        /// `client_thumbprints`: approved certificates; never empty, no duplicates.
        thumbprints: Vec<Thumbprint>,
        /// `client_ca`: optional CA bundle the client chain must also verify against.
        ca: Option<PathBuf>,
    },
}

/// The digest of a DER-encoded certificate that approves one client.
///
/// Parsed from any of the usual spellings (see [`Thumbprint::from_str`]); displayed as
/// `sha256:<64 lower-case hex digits>` or `sha1:<40 lower-case hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Thumbprint {
    /// SHA-256 of the certificate (64 hex digits).
    Sha256([u8; 32]),
    /// SHA-1 of the certificate (40 hex digits), as Windows shows it.
    Sha1([u8; 20]),
}

/// A string that is not a SHA-256 or SHA-1 thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ThumbprintError {
    /// A character other than a hex digit, space or colon.
    #[error("contains {found:?}, which is not a hex digit")]
    NotHex {
        /// The first offending character.
        found: char,
    },
    /// The number of hex digits fits neither algorithm.
    #[error("has {digits} hex digits: expected 64 (SHA-256) or 40 (SHA-1)")]
    Length {
        /// Hex digits found after removing separators.
        digits: usize,
    },
    /// A `sha256:` or `sha1:` prefix with the other algorithm's length.
    #[error("has the {prefix} prefix but {digits} hex digits (expected {expected})")]
    PrefixMismatch {
        /// The prefix as written, lower-cased (`"sha256:"`, `"sha1:"`).
        prefix: String,
        /// Hex digits found.
        digits: usize,
        /// Hex digits that prefix needs.
        expected: usize,
    },
}

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    ///
    /// The I/O error is part of the message rather than a `source`, so that printing the
    /// error with `{}` (as `check-config` does) says why, and `{:#}` does not say it twice.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// Not valid TOML, an unknown key, a missing key or a value of the wrong type. The
    /// message is toml's own, with line, column and the offending key, prefixed by the
    /// section (e.g. `listener "lab": `) where it could be located.
    #[error("{}{error}", section_prefix(section.as_ref()))]
    Toml {
        /// The table the error is in, when it could be located.
        section: Option<Section>,
        /// toml's error.
        error: toml::de::Error,
    },
    /// Well-formed TOML with values that are not allowed; every problem found is listed,
    /// one per line.
    #[error("{}", display_problems(problems))]
    Invalid {
        /// At least one problem, in file order per section.
        problems: Vec<Problem>,
    },
}

/// One invalid value: where it is, which key, what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The table it is in.
    pub section: Section,
    /// The key, with a path below the section where needed (`tls.client_thumbprints[1]`,
    /// `allow_ips[0]`, `framing.start`).
    pub key: String,
    /// What is wrong, lower case, no trailing period.
    pub message: String,
    /// 1-based line of the value in the TOML text, when known.
    pub line: Option<usize>,
}

/// A table of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Section {
    /// Top level (outside any table).
    Root,
    /// `[store]`
    Store,
    /// `[admin]`
    Admin,
    /// `[log]`
    Log,
    /// `[audit]`
    Audit,
    /// One `[[listener]]` table (and its `[listener.tls]`, `[listener.framing]`).
    Listener {
        /// 0-based position among the `[[listener]]` tables.
        index: usize,
        /// Its `name`, when it has a non-empty one.
        name: Option<String>,
    },
}

impl Config {
    /// Parses and validates a configuration. Relative paths (`store.path`, TLS files) are
    /// kept as written, i.e. relative to the working directory; use [`Config::load`] for a
    /// file.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, None)
    }

    /// Reads, parses and validates a config file. Relative paths in `[store] path` and in
    /// `[listener.tls]` `cert`, `key` and `client_ca` are resolved against the directory
    /// of `path`, so the file means the same whatever the working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        // A bare file name has an empty parent: relative paths then stay relative to the
        // working directory, which is where that file is.
        let base = path.parent().unwrap_or(Path::new(""));
        parse(&text, Some(base))
    }

    /// The configuration used without `--config`: [`EMBEDDED_DEFAULT_TOML`].
    pub fn embedded_default() -> Config {
        Config::from_toml_str(EMBEDDED_DEFAULT_TOML)
            // A constant, and the test `embedded_default_is_valid` parses it.
            .expect("the embedded default configuration is valid")
    }

    /// The listener called `name`, if any.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|listener| listener.name == name)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: PathBuf::from(DEFAULT_STORE_PATH), retention: None }
    }
}

impl ListenerConfig {
    /// A plaintext listener with every other setting at its default: for tests and
    /// programmatic set-ups that build a config without a file.
    pub fn plaintext(name: impl Into<String>, listen: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            listen,
            transport: Transport::Plaintext,
            ack: AckPolicy::Msh,
            encoding: Charset::Utf8,
            force_encoding: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            frame_timeout: DEFAULT_FRAME_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            allow_ips: Vec::new(),
            framing: Framing::DEFAULT,
            lenient_framing: false,
            duplicate_window: Some(DEFAULT_DUPLICATE_WINDOW),
        }
    }

    /// Whether a peer at `ip` may connect: `allow_ips` is empty, or one of its networks
    /// contains `ip`.
    ///
    /// An IPv4 rule also matches the IPv4-mapped IPv6 form of its addresses
    /// (`::ffff:10.1.2.3`), which is how a dual-stack `[::]` socket reports IPv4 peers, and
    /// an IPv4-mapped IPv6 rule matches the plain IPv4 peer.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.allow_ips.is_empty() {
            return true;
        }
        let canonical = ip.to_canonical();
        let mapped = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        };
        self.allow_ips.iter().any(|net| {
            net.contains(&ip)
                || net.contains(&canonical)
                || mapped.is_some_and(|mapped| net.contains(&mapped))
        })
    }

    /// The TLS settings, or `None` for a plaintext listener.
    pub fn tls(&self) -> Option<&TlsConfig> {
        match &self.transport {
            Transport::Plaintext => None,
            Transport::Tls(tls) => Some(tls),
        }
    }
}

impl Thumbprint {
    /// The digest bytes (32 for SHA-256, 20 for SHA-1).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Thumbprint::Sha256(digest) => digest,
            Thumbprint::Sha1(digest) => digest,
        }
    }

    /// Whether this thumbprint approves a certificate with these digests of its DER bytes.
    pub fn matches(&self, sha256: &[u8; 32], sha1: &[u8; 20]) -> bool {
        match self {
            Thumbprint::Sha256(digest) => digest == sha256,
            Thumbprint::Sha1(digest) => digest == sha1,
        }
    }
}

impl FromStr for Thumbprint {
    type Err = ThumbprintError;

    /// Accepts `sha256:`/`sha-256:`/`sha1:`/`sha-1:` prefixes or none, upper or lower case,
    /// and spaces or colons between digits (`"A9 4A 8F …"` as Windows shows it,
    /// `"9F:86:D0…"` as OpenSSL prints it). Invisible direction marks that the Windows
    /// certificate dialog copies along are dropped. The algorithm follows from the
    /// length: 64 hex digits are SHA-256, 40 are SHA-1.
    fn from_str(text: &str) -> Result<Thumbprint, ThumbprintError> {
        let cleaned: String =
            text.chars().filter(|c| !matches!(c, '\u{200E}' | '\u{200F}' | '\u{FEFF}')).collect();
        let cleaned = cleaned.trim();
        let lower = cleaned.to_ascii_lowercase();
        let mut expected = None;
        let mut digits_part = cleaned;
        for (prefix, len) in [("sha256:", 64), ("sha-256:", 64), ("sha1:", 40), ("sha-1:", 40)] {
            if lower.starts_with(prefix) {
                expected = Some((prefix, len));
                digits_part = &cleaned[prefix.len()..];
                break;
            }
        }
        let mut digits = String::with_capacity(64);
        for c in digits_part.chars() {
            match c {
                ' ' | '\t' | ':' => {}
                c if c.is_ascii_hexdigit() => digits.push(c),
                found => return Err(ThumbprintError::NotHex { found }),
            }
        }
        if let Some((prefix, len)) = expected {
            if digits.len() != len {
                return Err(ThumbprintError::PrefixMismatch {
                    prefix: prefix.replace('-', ""),
                    digits: digits.len(),
                    expected: len,
                });
            }
        }
        match digits.len() {
            // Every character in `digits` is a hex digit (checked above), so only the length
            // can fail, and it is matched here.
            64 => Ok(Thumbprint::Sha256(hex::decode_array(digits.as_bytes()).expect("64 hex digits"))),
            40 => Ok(Thumbprint::Sha1(hex::decode_array(digits.as_bytes()).expect("40 hex digits"))),
            digits => Err(ThumbprintError::Length { digits }),
        }
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = match self {
            Thumbprint::Sha256(_) => "sha256",
            Thumbprint::Sha1(_) => "sha1",
        };
        write!(f, "{algorithm}:")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&section_prefix(Some(&self.section)))?;
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Root => f.write_str("top level"),
            Section::Store => f.write_str("store"),
            Section::Admin => f.write_str("admin"),
            Section::Log => f.write_str("log"),
            Section::Audit => f.write_str("audit"),
            Section::Listener { name: Some(name), .. } => write!(f, "listener {name:?}"),
            Section::Listener { index, name: None } => write!(f, "listener #{}", index + 1),
        }
    }
}

/// `"listener \"lab\": "`, or nothing for the top level.
fn section_prefix(section: Option<&Section>) -> String {
    match section {
        None | Some(Section::Root) => String::new(),
        Some(section) => format!("{section}: "),
    }
}

fn display_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------
// Raw file format: what serde reads. Values that need checking are kept as strings with
// their span, so a problem can name its line.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    store: RawStore,
    admin: Option<RawAdmin>,
    #[serde(default)]
    log: RawLog,
    audit: Option<RawAudit>,
    #[serde(default)]
    listener: Vec<RawListener>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<Spanned<String>>,
    level: Option<Spanned<String>>,
    cert_expiry_warning: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    file: Option<Spanned<String>>,
    syslog: Option<Spanned<String>>,
    syslog_ca: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Spanned<String>,
    listen: Spanned<String>,
    plaintext: Option<Spanned<bool>>,
    ack: Option<Spanned<String>>,
    encoding: Option<Spanned<String>>,
    #[serde(default)]
    force_encoding: bool,
    idle_timeout: Option<Spanned<String>>,
    frame_timeout: Option<Spanned<String>>,
    write_timeout: Option<Spanned<String>>,
    max_message_size: Option<Spanned<RawSize>>,
    max_connections: Option<Spanned<i64>>,
    #[serde(default)]
    allow_ips: Vec<Spanned<String>>,
    framing: Option<RawFraming>,
    #[serde(default)]
    lenient_framing: bool,
    duplicate_window: Option<Spanned<String>>,
    tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFraming {
    start: Option<Spanned<String>>,
    end: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
    min_version: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<String>>,
    client_auth: Option<Spanned<String>>,
    client_thumbprints: Option<Spanned<Vec<Spanned<String>>>>,
    client_ca: Option<Spanned<String>>,
}

/// A size as written: a number of bytes, or a string with a unit (`"1MiB"`).
enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawSize, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"1MiB\", \"512KiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(value).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(value.to_owned()))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

// ---------------------------------------------------------------------------------------
// Raw → typed, collecting every problem.

fn parse(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Toml {
        section: error.span().and_then(|span| locate_section(text, span.start)),
        error,
    })?;
    let mut builder = Builder { text, base, problems: Vec::new(), warnings: Vec::new() };
    let config = builder.config(raw);
    if builder.problems.is_empty() {
        Ok(Config { warnings: builder.warnings, ..config })
    } else {
        Err(ConfigError::Invalid { problems: builder.problems })
    }
}

/// Turns raw values into typed ones. Invalid values are recorded as problems and replaced
/// by a harmless stand-in so that checking continues and every problem is reported at once.
struct Builder<'a> {
    text: &'a str,
    base: Option<&'a Path>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Builder<'_> {
    fn config(&mut self, raw: RawConfig) -> Config {
        let store = self.store(raw.store);
        let admin = raw.admin.map(|admin| self.admin(admin));
        let log = self.log(raw.log);
        let audit = raw.audit.map(|audit| self.audit(audit));

        if raw.listener.is_empty() {
            self.problem(
                &Section::Root,
                "listener",
                None,
                "no [[listener]] table: at least one listener is required",
            );
        }
        let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(raw.listener.len());
        for (index, raw_listener) in raw.listener.into_iter().enumerate() {
            let name_span = raw_listener.name.span();
            let listen_span = raw_listener.listen.span();
            let listener = self.listener(index, raw_listener);
            let section = listener_section(index, &listener.name);
            for (other_index, other) in listeners.iter().enumerate() {
                let other_section = listener_section(other_index, &other.name);
                if !listener.name.is_empty() && listener.name == other.name {
                    self.problem(
                        &section,
                        "name",
                        Some(name_span.clone()),
                        format!("already used by listener #{}", other_index + 1),
                    );
                }
                if let Some(detail) = address_clash(listener.listen, other.listen) {
                    self.problem(
                        &section,
                        "listen",
                        Some(listen_span.clone()),
                        format!("port {} already used by {other_section}{detail}", listener.listen.port()),
                    );
                }
            }
            listeners.push(listener);
        }

        if let Some(admin) = &admin {
            for (index, listener) in listeners.iter().enumerate() {
                if let Some(detail) = address_clash(admin.listen, listener.listen) {
                    let other = listener_section(index, &listener.name);
                    self.problem(
                        &Section::Admin,
                        "listen",
                        None,
                        format!("port {} already used by {other}{detail}", admin.listen.port()),
                    );
                }
            }
        }

        if let Some(retention) = store.retention {
            for (index, listener) in listeners.iter().enumerate() {
                if listener.duplicate_window.is_some_and(|window| window > retention) {
                    self.warn(
                        &listener_section(index, &listener.name),
                        "duplicate_window",
                        format!(
                            "longer than [store] retention ({}): duplicates of messages \
                             already deleted are stored again",
                            humantime::format_duration(retention)
                        ),
                    );
                }
            }
        }

        Config { store, admin, log, audit, listeners, warnings: Vec::new() }
    }

    fn store(&mut self, raw: RawStore) -> StoreConfig {
        let section = Section::Store;
        let path = match raw.path {
            None => PathBuf::from(DEFAULT_STORE_PATH),
            Some(path) => self.path(&section, "path", path),
        };
        let retention = raw.retention.and_then(|retention| {
            let span = retention.span();
            let value = self.duration(&section, "retention", retention)?;
            if value.is_zero() {
                self.problem(
                    &section,
                    "retention",
                    Some(span),
                    "must not be zero: leave retention out to keep messages forever",
                );
                return None;
            }
            let (min, max) = RETENTION_BOUNDS;
            self.check_bounds(&section, "retention", span, value, min, max);
            Some(value)
        });
        StoreConfig { path, retention }
    }

    fn admin(&mut self, raw: RawAdmin) -> AdminConfig {
        let listen = match raw.listen {
            Some(listen) => self.socket_addr(&Section::Admin, "listen", listen),
            // The constant is a valid socket address literal.
            None => DEFAULT_ADMIN_LISTEN.parse().expect("valid default admin address"),
        };
        if !listen.ip().to_canonical().is_loopback() && listen.port() != 0 {
            self.warn(
                &Section::Admin,
                "listen",
                format!(
                    "{listen} is reachable from the network: the admin endpoint has no \
                     authentication (POST /reload, /metrics); keep it on a management network"
                ),
            );
        }
        AdminConfig { listen }
    }

    fn log(&mut self, raw: RawLog) -> LogConfig {
        let section = Section::Log;
        let format = raw.format.map_or(LogFormat::default(), |format| {
            let span = format.span();
            match format.get_ref().to_ascii_lowercase().as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                _ => {
                    let message = format!("{:?}: expected \"human\" or \"json\"", format.get_ref());
                    self.problem(&section, "format", Some(span), message);
                    LogFormat::default()
                }
            }
        });
        let level = raw.level.map_or(LogLevel::default(), |level| {
            let span = level.span();
            match level.get_ref().to_ascii_lowercase().as_str() {
                "error" => LogLevel::Error,
                "warn" | "warning" => LogLevel::Warn,
                "info" => LogLevel::Info,
                "debug" => LogLevel::Debug,
                "trace" => LogLevel::Trace,
                _ => {
                    let message =
                        format!("{:?}: expected error, warn, info, debug or trace", level.get_ref());
                    self.problem(&section, "level", Some(span), message);
                    LogLevel::default()
                }
            }
        });
        let cert_expiry_warning = self.bounded_duration(
            &section,
            "cert_expiry_warning",
            raw.cert_expiry_warning,
            DEFAULT_CERT_EXPIRY_WARNING,
            CERT_EXPIRY_WARNING_BOUNDS,
        );
        LogConfig { format, level, cert_expiry_warning }
    }

    fn audit(&mut self, raw: RawAudit) -> AuditConfig {
        let section = Section::Audit;
        let file = raw.file.map(|file| self.path(&section, "file", file));
        let ca = raw.syslog_ca.map(|ca| (ca.span(), self.path(&section, "syslog_ca", ca)));
        let syslog = raw.syslog.and_then(|syslog| {
            let span = syslog.span();
            match parse_syslog_url(syslog.get_ref()) {
                Ok((host, port, tls)) => Some(SyslogConfig { host, port, tls, ca: None }),
                Err(reason) => {
                    let message = format!("{:?}: {reason}", syslog.get_ref());
                    self.problem(&section, "syslog", Some(span), message);
                    None
                }
            }
        });
        let syslog = match (syslog, ca) {
            (Some(syslog), Some((span, _))) if !syslog.tls => {
                self.problem(&section, "syslog_ca", Some(span), "only used with a tls:// syslog address");
                Some(syslog)
            }
            (Some(syslog), ca) => Some(SyslogConfig { ca: ca.map(|(_, ca)| ca), ..syslog }),
            (None, _) => None,
        };
        if file.is_none() && syslog.is_none() && !self.problems.iter().any(|p| p.section == section) {
            self.problem(
                &section,
                "file",
                None,
                "[audit] needs file and/or syslog: leave the table out to keep audit events in the log only",
            );
        }
        AuditConfig { file, syslog }
    }

    fn listener(&mut self, index: usize, raw: RawListener) -> ListenerConfig {
        let name = raw.name.get_ref().clone();
        let section = listener_section(index, &name);
        self.check_name(&section, &raw.name);

        let listen = self.socket_addr(&section, "listen", raw.listen);
        if matches!(&raw.plaintext, Some(plaintext) if *plaintext.get_ref())
            && raw.tls.is_none()
            && !listen.ip().to_canonical().is_loopback()
        {
            self.warn(
                &section,
                "plaintext",
                format!(
                    "{listen} accepts unencrypted connections from the network: messages \
                     (patient data) travel in clear text"
                ),
            );
        }
        let transport = self.transport(&section, raw.plaintext, raw.tls);

        let ack = raw.ack.map_or(AckPolicy::Msh, |ack| {
            let span = ack.span();
            match ack.get_ref().to_ascii_lowercase().as_str() {
                "msh" => AckPolicy::Msh,
                "always" => AckPolicy::Always,
                "never" => AckPolicy::Never,
                _ => {
                    let message = format!("{:?}: expected msh, always or never", ack.get_ref());
                    self.problem(&section, "ack", Some(span), message);
                    AckPolicy::Msh
                }
            }
        });

        let encoding = raw.encoding.map_or(Charset::Utf8, |encoding| {
            let span = encoding.span();
            Charset::from_config_name(encoding.get_ref()).unwrap_or_else(|| {
                let names: Vec<&str> = CONFIG_NAMES.iter().map(|&(name, _)| name).collect();
                let message = format!(
                    "unknown encoding {:?}: expected one of {}",
                    encoding.get_ref(),
                    names.join(", ")
                );
                self.problem(&section, "encoding", Some(span), message);
                Charset::Utf8
            })
        });

        let idle_timeout = self.bounded_duration(
            &section,
            "idle_timeout",
            raw.idle_timeout,
            DEFAULT_IDLE_TIMEOUT,
            IDLE_TIMEOUT_BOUNDS,
        );
        if idle_timeout < IDLE_TIMEOUT_WARN_BELOW {
            self.warn(
                &section,
                "idle_timeout",
                format!(
                    "{} is below 1 minute: senders that pause between messages will be \
                     disconnected often (fine for tests)",
                    humantime::format_duration(idle_timeout)
                ),
            );
        }
        let frame_timeout = self.bounded_duration(
            &section,
            "frame_timeout",
            raw.frame_timeout,
            DEFAULT_FRAME_TIMEOUT,
            FRAME_TIMEOUT_BOUNDS,
        );
        let write_timeout = self.bounded_duration(
            &section,
            "write_timeout",
            raw.write_timeout,
            DEFAULT_WRITE_TIMEOUT,
            WRITE_TIMEOUT_BOUNDS,
        );

        let max_message_size = raw
            .max_message_size
            .map_or(DEFAULT_MAX_MESSAGE_SIZE, |size| self.size(&section, "max_message_size", size));

        let max_connections = raw.max_connections.map_or(DEFAULT_MAX_CONNECTIONS, |count| {
            let span = count.span();
            match usize::try_from(*count.get_ref()) {
                Ok(count) if (1..=MAX_CONNECTIONS).contains(&count) => count,
                _ => {
                    let message = format!("{} is out of range 1..=100000", count.get_ref());
                    self.problem(&section, "max_connections", Some(span), message);
                    DEFAULT_MAX_CONNECTIONS
                }
            }
        });

        let allow_ips = raw
            .allow_ips
            .into_iter()
            .enumerate()
            .filter_map(|(i, rule)| self.ip_net(&section, &format!("allow_ips[{i}]"), rule))
            .collect();

        let framing = match raw.framing {
            None => Framing::DEFAULT,
            Some(framing) => self.framing(&section, framing),
        };
        if raw.lenient_framing && framing.end().len() == 1 {
            self.warn(&section, "lenient_framing", "has no effect with a one-byte end sequence");
        }

        let duplicate_window = match raw.duplicate_window {
            None => Some(DEFAULT_DUPLICATE_WINDOW),
            Some(window) => {
                let span = window.span();
                match self.duration(&section, "duplicate_window", window) {
                    Some(window) if window.is_zero() => None,
                    Some(window) => {
                        self.check_bounds(
                            &section,
                            "duplicate_window",
                            span,
                            window,
                            SECOND,
                            MAX_DUPLICATE_WINDOW,
                        );
                        Some(window)
                    }
                    None => Some(DEFAULT_DUPLICATE_WINDOW),
                }
            }
        };

        ListenerConfig {
            name,
            listen,
            transport,
            ack,
            encoding,
            force_encoding: raw.force_encoding,
            idle_timeout,
            frame_timeout,
            write_timeout,
            max_message_size,
            max_connections,
            allow_ips,
            framing,
            lenient_framing: raw.lenient_framing,
            duplicate_window,
        }
    }

    fn check_name(&mut self, section: &Section, name: &Spanned<String>) {
        let value = name.get_ref();
        let message = if value.is_empty() {
            "must not be empty".to_owned()
        } else if value.len() > MAX_NAME_LEN {
            format!("is {} characters long; at most {MAX_NAME_LEN} are allowed", value.len())
        } else if let Some(bad) =
            value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            format!("{value:?} contains {bad:?}: use only letters, digits, '_', '.' and '-'")
        } else {
            return;
        };
        self.problem(section, "name", Some(name.span()), message);
    }

    /// `plaintext = true` XOR a `[listener.tls]` table.
    fn transport(
        &mut self,
        section: &Section,
        plaintext: Option<Spanned<bool>>,
        tls: Option<Spanned<RawTls>>,
    ) -> Transport {
        let plaintext_span = plaintext.as_ref().map(Spanned::span);
        let plaintext = plaintext.is_some_and(|plaintext| plaintext.into_inner());
        match (plaintext, tls) {
            (true, None) => Transport::Plaintext,
            (false, Some(tls)) => Transport::Tls(self.tls(section, tls.into_inner())),
            (false, None) => {
                self.problem(
                    section,
                    "plaintext",
                    plaintext_span,
                    "no [listener.tls] table: set plaintext = true to run without TLS",
                );
                Transport::Plaintext
            }
            (true, Some(tls)) => {
                self.problem(
                    section,
                    "plaintext",
                    plaintext_span.or(Some(tls.span())),
                    "plaintext = true conflicts with the [listener.tls] table: remove one of them",
                );
                Transport::Plaintext
            }
        }
    }

    fn tls(&mut self, section: &Section, raw: RawTls) -> TlsConfig {
        let cert = self.path(section, "tls.cert", raw.cert);
        let key = self.path(section, "tls.key", raw.key);
        let min_version = raw.min_version.map_or(TlsVersion::Tls12, |version| {
            let span = version.span();
            match version.get_ref().trim() {
                "1.2" => TlsVersion::Tls12,
                "1.3" => TlsVersion::Tls13,
                "1.0" | "1.1" => {
                    let message =
                        format!("TLS {} is not supported: use \"1.2\" or \"1.3\"", version.get_ref().trim());
                    self.problem(section, "tls.min_version", Some(span), message);
                    TlsVersion::Tls12
                }
                _ => {
                    let message = format!("{:?}: expected \"1.2\" or \"1.3\"", version.get_ref());
                    self.problem(section, "tls.min_version", Some(span), message);
                    TlsVersion::Tls12
                }
            }
        });
        let handshake_timeout = self.bounded_duration(
            section,
            "tls.handshake_timeout",
            raw.handshake_timeout,
            DEFAULT_HANDSHAKE_TIMEOUT,
            HANDSHAKE_TIMEOUT_BOUNDS,
        );

        let required = match &raw.client_auth {
            None => false,
            Some(client_auth) => match client_auth.get_ref().to_ascii_lowercase().as_str() {
                "none" => false,
                "required" => true,
                _ => {
                    let message = format!("{:?}: expected \"none\" or \"required\"", client_auth.get_ref());
                    self.problem(section, "tls.client_auth", Some(client_auth.span()), message);
                    // Treat as required so the thumbprint checks below still run.
                    true
                }
            },
        };
        let thumbprints_span = raw.client_thumbprints.as_ref().map(Spanned::span);
        let mut thumbprints: Vec<Thumbprint> = Vec::new();
        let mut invalid_thumbprints = 0;
        for (i, entry) in
            raw.client_thumbprints.map(Spanned::into_inner).unwrap_or_default().into_iter().enumerate()
        {
            let key = format!("tls.client_thumbprints[{i}]");
            match entry.get_ref().parse::<Thumbprint>() {
                Ok(thumbprint) if thumbprints.contains(&thumbprint) => {
                    self.warn(section, &key, format!("{thumbprint} is listed twice"));
                }
                Ok(thumbprint) => thumbprints.push(thumbprint),
                Err(error) => {
                    invalid_thumbprints += 1;
                    let message = format!("{:?} {error}", entry.get_ref());
                    self.problem(section, &key, Some(entry.span()), message);
                }
            }
        }
        let ca = raw.client_ca.map(|ca| (ca.span(), self.path(section, "tls.client_ca", ca)));

        let client_auth = if required {
            // Entries that did not parse are already reported one by one.
            if thumbprints.is_empty() && invalid_thumbprints == 0 {
                self.problem(
                    section,
                    "tls.client_thumbprints",
                    thumbprints_span,
                    "client_auth = \"required\" needs at least one approved thumbprint",
                );
            }
            ClientAuth::Required { thumbprints, ca: ca.map(|(_, path)| path) }
        } else {
            // Fail closed: a list that would silently not be enforced is an error, not a
            // warning, since the operator evidently meant to restrict clients.
            if !thumbprints.is_empty() || thumbprints_span.is_some() {
                self.problem(
                    section,
                    "tls.client_thumbprints",
                    thumbprints_span,
                    "set but client_auth is \"none\", so it would not be enforced: set \
                     client_auth = \"required\" or remove the list",
                );
            }
            if let Some((span, _)) = ca {
                self.problem(
                    section,
                    "tls.client_ca",
                    Some(span),
                    "set but client_auth is \"none\", so it would not be enforced: set \
                     client_auth = \"required\" or remove it",
                );
            }
            ClientAuth::None
        };

        TlsConfig { cert, key, min_version, handshake_timeout, client_auth }
    }

    fn framing(&mut self, section: &Section, raw: RawFraming) -> Framing {
        let default = Framing::DEFAULT;
        let start_span = raw.start.as_ref().map(Spanned::span);
        let start = raw
            .start
            .map_or(Some(default.start().to_vec()), |start| self.marker(section, "framing.start", start));
        let end =
            raw.end.map_or(Some(default.end().to_vec()), |end| self.marker(section, "framing.end", end));
        let (Some(start), Some(end)) = (start, end) else {
            return default;
        };
        if start[0] == end[0] {
            let message = format!(
                "start byte 0x{:02X} is also the first end byte: a frame's start could not \
                 be told from its end",
                start[0]
            );
            self.problem(section, "framing.start", start_span, message);
            return default;
        }
        match Framing::new(&start, &end) {
            Ok(framing) => framing,
            Err(error) => {
                self.problem(section, "framing", None, error.to_string());
                default
            }
        }
    }

    /// One framing sequence: 1–4 hex bytes.
    fn marker(&mut self, section: &Section, key: &str, raw: Spanned<String>) -> Option<Vec<u8>> {
        let span = raw.span();
        let message = match hex::parse_byte_list(raw.get_ref()) {
            Ok(bytes) if (1..=MAX_MARKER_LEN).contains(&bytes.len()) => return Some(bytes),
            Ok(bytes) => format!(
                "{:?} is {} bytes: a framing sequence is 1 to {MAX_MARKER_LEN} bytes",
                raw.get_ref(),
                bytes.len()
            ),
            Err(reason) => format!("{:?}: {reason}", raw.get_ref()),
        };
        self.problem(section, key, Some(span), message);
        None
    }

    fn ip_net(&mut self, section: &Section, key: &str, raw: Spanned<String>) -> Option<IpNet> {
        let text = raw.get_ref().trim();
        let parsed = text.parse::<IpNet>().ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
        match parsed {
            Some(net) => {
                let trunc = net.trunc();
                if trunc != net {
                    self.warn(section, key, format!("{text:?} has host bits set; using {trunc}"));
                }
                Some(trunc)
            }
            None => {
                let message = format!("invalid address or CIDR {:?}", raw.get_ref());
                self.problem(section, key, Some(raw.span()), message);
                None
            }
        }
    }

    fn socket_addr(&mut self, section: &Section, key: &str, raw: Spanned<String>) -> SocketAddr {
        match raw.get_ref().trim().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                let message = format!(
                    "invalid address {:?}: expected IP:port such as \"0.0.0.0:2575\" or \
                     \"[::]:2575\" (host names are not resolved)",
                    raw.get_ref()
                );
                self.problem(section, key, Some(raw.span()), message);
                // Port 0 never clashes with another listener, so this stand-in adds no
                // spurious "already used" problems.
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        }
    }

    fn path(&mut self, section: &Section, key: &str, raw: Spanned<String>) -> PathBuf {
        if raw.get_ref().trim().is_empty() {
            self.problem(section, key, Some(raw.span()), "must not be empty");
        }
        let path = PathBuf::from(raw.into_inner());
        match self.base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path,
        }
    }

    fn size(&mut self, section: &Section, key: &str, raw: Spanned<RawSize>) -> usize {
        let span = raw.span();
        let parsed = match raw.into_inner() {
            RawSize::Bytes(bytes) => u64::try_from(bytes).map_err(|_| format!("{bytes} is negative")),
            RawSize::Text(text) => parse_size(&text).map_err(|reason| format!("{text:?}: {reason}")),
        };
        match parsed {
            Ok(bytes) if bytes < MIN_MESSAGE_SIZE as u64 => {
                let message = format!(
                    "{} is below the minimum of {}",
                    format_size(bytes),
                    format_size(MIN_MESSAGE_SIZE as u64)
                );
                self.problem(section, key, Some(span), message);
            }
            Ok(bytes) if bytes > MAX_MESSAGE_SIZE as u64 => {
                let message = format!(
                    "{} is above the maximum of {}",
                    format_size(bytes),
                    format_size(MAX_MESSAGE_SIZE as u64)
                );
                self.problem(section, key, Some(span), message);
            }
            // In range, and 64 MiB fits in usize on every supported target.
            Ok(bytes) => return bytes as usize,
            Err(message) => self.problem(section, key, Some(span), message),
        }
        DEFAULT_MAX_MESSAGE_SIZE
    }

    /// A humantime duration; `None` (with a problem recorded) if it does not parse.
    fn duration(&mut self, section: &Section, key: &str, raw: Spanned<String>) -> Option<Duration> {
        match humantime::parse_duration(raw.get_ref()) {
            Ok(duration) => Some(duration),
            Err(error) => {
                let message = format!(
                    "invalid duration {:?} ({error}): use e.g. \"30s\", \"10m\", \"2h\", \"1d\"",
                    raw.get_ref()
                );
                self.problem(section, key, Some(raw.span()), message);
                None
            }
        }
    }

    fn bounded_duration(
        &mut self,
        section: &Section,
        key: &str,
        raw: Option<Spanned<String>>,
        default: Duration,
        (min, max): (Duration, Duration),
    ) -> Duration {
        let Some(raw) = raw else {
            return default;
        };
        let span = raw.span();
        match self.duration(section, key, raw) {
            Some(value) if self.check_bounds(section, key, span, value, min, max) => value,
            _ => default,
        }
    }

    /// Records a problem unless `min <= value <= max`; returns whether it was in bounds.
    fn check_bounds(
        &mut self,
        section: &Section,
        key: &str,
        span: Range<usize>,
        value: Duration,
        min: Duration,
        max: Duration,
    ) -> bool {
        let message = if value < min {
            format!("must be at least {}", humantime::format_duration(min))
        } else if value > max {
            format!("must be at most {}", humantime::format_duration(max))
        } else {
            return true;
        };
        self.problem(section, key, Some(span), message);
        false
    }

    fn problem(
        &mut self,
        section: &Section,
        key: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) {
        let line = span.map(|span| line_of(self.text, span.start));
        self.problems.push(Problem {
            section: section.clone(),
            key: key.to_owned(),
            message: message.into(),
            line,
        });
    }

    fn warn(&mut self, section: &Section, key: &str, message: impl Into<String>) {
        let warning =
            Problem { section: section.clone(), key: key.to_owned(), message: message.into(), line: None };
        self.warnings.push(warning.to_string());
    }
}

/// `tcp://host:port` or `tls://host:port` (IPv6 literals in brackets) → (host, port, tls).
fn parse_syslog_url(text: &str) -> Result<(String, u16, bool), String> {
    let text = text.trim();
    let (tls, rest) = if let Some(rest) = text.strip_prefix("tcp://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("tls://") {
        (true, rest)
    } else {
        return Err("expected tcp://HOST:PORT or tls://HOST:PORT (UDP is not supported)".to_owned());
    };
    let (host, port) = rest.rsplit_once(':').ok_or("no port: expected HOST:PORT")?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ']) {
        return Err("expected tcp://HOST:PORT or tls://HOST:PORT".to_owned());
    }
    Ok((host.to_owned(), port, tls))
}

fn listener_section(index: usize, name: &str) -> Section {
    Section::Listener { index, name: (!name.is_empty()).then(|| name.to_owned()) }
}

/// Whether two bound addresses would collide, and why (empty detail for an exact match).
///
/// Port 0 never collides (the OS picks a free port). A wildcard address collides with any
/// address of its family on the same port, and `[::]` with IPv4 addresses too, since on
/// Linux it is dual-stack by default.
fn address_clash(a: SocketAddr, b: SocketAddr) -> Option<String> {
    if a.port() == 0 || a.port() != b.port() {
        return None;
    }
    let (ip_a, ip_b) = (a.ip().to_canonical(), b.ip().to_canonical());
    if ip_a == ip_b {
        return Some(String::new());
    }
    let covers = |wildcard: IpAddr, other: IpAddr| match wildcard {
        IpAddr::V6(v6) if v6.is_unspecified() => true,
        IpAddr::V4(v4) if v4.is_unspecified() => other.is_ipv4(),
        _ => false,
    };
    if covers(ip_a, ip_b) {
        Some(format!(" ({ip_a} includes {ip_b})"))
    } else if covers(ip_b, ip_a) {
        Some(format!(" ({ip_b} includes {ip_a})"))
    } else {
        None
    }
}

/// `"65536"`, `"64KiB"`, `"1MiB"`, `"1MB"`, `"1 MiB"` → bytes. Units are case-insensitive:
/// `B`, `KB` (1000), `KiB` (1024), `MB`, `MiB`, `GB`, `GiB`. Whole numbers only.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("expected a whole number with an optional unit, e.g. \"1MiB\"".to_owned());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1024,
        "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("unknown unit {:?}: use B, KB, KiB, MB, MiB, GB or GiB", unit.trim())),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .ok_or_else(|| "too large".to_owned())
}

/// `1048576` → `"1MiB"`, `1500` → `"1500 bytes"`.
fn format_size(bytes: u64) -> String {
    const KIB64: u64 = KIB as u64;
    const MIB64: u64 = MIB as u64;
    if bytes >= MIB64 && bytes % MIB64 == 0 {
        format!("{}MiB", bytes / MIB64)
    } else if bytes >= KIB64 && bytes % KIB64 == 0 {
        format!("{}KiB", bytes / KIB64)
    } else {
        format!("{bytes} bytes")
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The section a toml error at byte `offset` is in: the table whose header (or key) starts
/// last before it. Only used to prefix toml's own message, so a guess that fails just
/// leaves the prefix out.
fn locate_section(text: &str, offset: usize) -> Option<Section> {
    /// Each `[[listener]]` table with the span of its header.
    #[derive(Deserialize)]
    struct Listeners {
        #[serde(default)]
        listener: Vec<Spanned<toml::Table>>,
    }

    // Every top-level key with the span of its table header (or of its value).
    let top: BTreeMap<String, Spanned<toml::Value>> = toml::from_str(text).ok()?;
    let mut starts: Vec<(usize, Section)> = Vec::new();
    for (key, value) in &top {
        let section = match key.as_str() {
            "listener" => continue,
            "store" => Section::Store,
            "admin" => Section::Admin,
            "log" => Section::Log,
            "audit" => Section::Audit,
            _ => Section::Root,
        };
        starts.push((value.span().start, section));
    }
    if let Ok(listeners) = toml::from_str::<Listeners>(text) {
        for (index, listener) in listeners.listener.iter().enumerate() {
            let name = listener.get_ref().get("name").and_then(toml::Value::as_str).unwrap_or("");
            starts.push((listener.span().start, listener_section(index, name)));
        }
    }
    starts
        .into_iter()
        .filter(|(start, _)| *start <= offset)
        .max_by_key(|(start, _)| *start)
        .map(|(_, section)| section)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// The `[[listener]]` example of issue 3, verbatim.
    const ISSUE_3_EXAMPLE: &str = r#"
[store]
path = "hl7d-data"            # data directory (embedded store lands here)

[admin]
listen = "127.0.0.1:9275"     # health and metrics (observability issue)

[[listener]]
name = "lab"                  # unique; appears in logs, metrics, the store
listen = "0.0.0.0:2575"
plaintext = true              # required to run without a [listener.tls] table
ack = "msh"                   # msh (default) | always | never
encoding = "utf-8"            # default when MSH-18 is empty: utf-8 | windows-1252
force_encoding = false        # true: ignore MSH-18, always use `encoding`
idle_timeout = "30m"          # close a connection idle this long (humantime)
max_message_size = "1MiB"
max_connections = 100
allow_ips = []                # CIDRs/addresses; empty = any
[listener.framing]
start = "0B"                  # hex bytes
end = "1C 0D"
"#;

    /// The `[listener.tls]` example of issue 4 (with client_auth switched on so the
    /// thumbprint list is allowed).
    const ISSUE_4_TLS: &str = r#"
[[listener]]
name = "secure"
listen = "0.0.0.0:2576"
[listener.tls]
cert = "tls/server.pem"          # PEM, leaf first then intermediates (the chain is presented)
key = "tls/server.key"           # PKCS#8, PKCS#1 or SEC1 PEM
min_version = "1.2"              # "1.2" (default) or "1.3"
handshake_timeout = "10s"
client_auth = "required"         # none (default) | required
client_thumbprints = [           # approved client certificates (required when client_auth = required)
  "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
  "A9 4A 8F E5 CC B1 9B A6 1C 4C 08 73 D3 91 E9 87 98 2F BB D3",   # SHA-1, as Windows shows it
]
client_ca = "tls/clients-ca.pem" # optional: additionally require a chain to this CA
"#;

    const SHA256_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const SHA1_HEX: &str = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3";

    /// One plaintext loopback listener "lab" with `extra` lines added to its table.
    fn lab(extra: &str) -> String {
        format!("[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:2575\"\nplaintext = true\n{extra}\n")
    }

    fn parse_ok(text: &str) -> Config {
        match Config::from_toml_str(text) {
            Ok(config) => config,
            Err(error) => panic!("config should parse, got:\n{error}\n---\n{text}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match Config::from_toml_str(text) {
            Ok(config) => panic!("config should be refused, got {config:#?}\n---\n{text}"),
            Err(error) => error.to_string(),
        }
    }

    fn hex<const N: usize>(digits: &str) -> [u8; N] {
        hl7_proto::hex::decode_array(digits.as_bytes()).expect("test digits")
    }

    #[test]
    fn issue_3_example_parses_with_the_right_values() {
        let config = parse_ok(ISSUE_3_EXAMPLE);
        assert_eq!(config.store.path, PathBuf::from("hl7d-data"));
        assert_eq!(config.store.retention, None);
        assert_eq!(config.admin, Some(AdminConfig { listen: "127.0.0.1:9275".parse().unwrap() }));
        assert_eq!(config.log, LogConfig::default());
        assert_eq!(config.listeners.len(), 1);
        let lab = &config.listeners[0];
        let expected = ListenerConfig {
            name: "lab".to_owned(),
            listen: "0.0.0.0:2575".parse().unwrap(),
            ..ListenerConfig::plaintext("", "0.0.0.0:0".parse().unwrap())
        };
        assert_eq!(lab, &expected);
        assert_eq!(lab.transport, Transport::Plaintext);
        assert_eq!(lab.ack, AckPolicy::Msh);
        assert_eq!(lab.encoding, Charset::Utf8);
        assert!(!lab.force_encoding);
        assert_eq!(lab.idle_timeout, Duration::from_secs(1800));
        assert_eq!(lab.max_message_size, 1024 * 1024);
        assert_eq!(lab.max_connections, 100);
        assert!(lab.allow_ips.is_empty());
        assert_eq!(lab.framing, Framing::DEFAULT);
        assert_eq!(config.listener("lab"), Some(lab));
        // Plaintext on 0.0.0.0 is allowed, but flagged.
        assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
        assert!(config.warnings[0].starts_with("listener \"lab\": plaintext: 0.0.0.0:2575"));
    }

    #[test]
    fn issue_4_tls_table_parses() {
        let config = parse_ok(ISSUE_4_TLS);
        let tls = config.listeners[0].tls().expect("a TLS listener");
        assert_eq!(tls.cert, PathBuf::from("tls/server.pem"));
        assert_eq!(tls.key, PathBuf::from("tls/server.key"));
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(
            tls.client_auth,
            ClientAuth::Required {
                thumbprints: vec![Thumbprint::Sha256(hex(SHA256_HEX)), Thumbprint::Sha1(hex(SHA1_HEX))],
                ca: Some(PathBuf::from("tls/clients-ca.pem")),
            }
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn defaults() {
        let config = parse_ok("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:2575\"\nplaintext = true\n");
        assert_eq!(config.store, StoreConfig::default());
        assert_eq!(config.store.path, PathBuf::from("hl7d-data"));
        assert_eq!(config.admin, None);
        assert_eq!(
            config.log,
            LogConfig { format: LogFormat::Human, level: LogLevel::Info, ..LogConfig::default() }
        );
        let listener = &config.listeners[0];
        assert_eq!(listener, &ListenerConfig::plaintext("a", "127.0.0.1:2575".parse().unwrap()));
        assert_eq!(listener.frame_timeout, Duration::from_secs(60));
        assert_eq!(listener.write_timeout, Duration::from_secs(30));
        assert_eq!(listener.duplicate_window, Some(Duration::from_secs(86_400)));
        assert!(!listener.lenient_framing);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);

        // An empty [admin] table turns the endpoint on at its default address.
        let config = parse_ok(&format!("[admin]\n{}", lab("")));
        assert_eq!(config.admin.unwrap().listen, "127.0.0.1:9275".parse().unwrap());

        let tls = parse_ok(
            "[[listener]]\nname = \"t\"\nlisten = \"0.0.0.0:2576\"\n[listener.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        );
        let tls = tls.listeners[0].tls().unwrap();
        assert_eq!(tls.min_version, TlsVersion::Tls12);
        assert_eq!(tls.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(tls.client_auth, ClientAuth::None);
    }

    #[test]
    fn embedded_default_is_valid() {
        let config = Config::embedded_default();
        assert_eq!(config.store.path, PathBuf::from("./hl7d-data"));
        assert_eq!(config.admin, None);
        assert_eq!(config.listeners.len(), 1);
        let listener = &config.listeners[0];
        assert_eq!(listener.name, "default");
        assert_eq!(listener.listen, SocketAddr::from(([0, 0, 0, 0], 2575)));
        let tls = listener.tls().expect("the embedded default is TLS");
        assert_eq!(tls.cert, PathBuf::from("./hl7d-data/tls/server.pem"));
        assert_eq!(tls.key, PathBuf::from("./hl7d-data/tls/server.key"));
        assert_eq!(tls.client_auth, ClientAuth::None);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn every_other_key_parses() {
        let config = parse_ok(
            r#"
[store]
path = "/var/lib/hl7d"
retention = "30d"

[log]
format = "JSON"
level = "debug"

[[listener]]
name = "adt.feed-1"
listen = "[::]:2575"
plaintext = true
ack = "Never"
encoding = "CP1252"
force_encoding = true
idle_timeout = "2h"
frame_timeout = "15s"
write_timeout = "5s"
max_message_size = 65536
max_connections = 100000
allow_ips = ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]
lenient_framing = true
duplicate_window = "0"
[listener.framing]
start = "0x02"
end = "1c0d"
"#,
        );
        assert_eq!(config.store.path, PathBuf::from("/var/lib/hl7d"));
        assert_eq!(config.store.retention, Some(30 * DAY));
        assert_eq!(
            config.log,
            LogConfig { format: LogFormat::Json, level: LogLevel::Debug, ..LogConfig::default() }
        );
        let listener = &config.listeners[0];
        assert_eq!(listener.ack, AckPolicy::Never);
        assert_eq!(listener.encoding, Charset::Windows1252);
        assert!(listener.force_encoding);
        assert_eq!(listener.idle_timeout, 2 * HOUR);
        assert_eq!(listener.frame_timeout, Duration::from_secs(15));
        assert_eq!(listener.write_timeout, Duration::from_secs(5));
        assert_eq!(listener.max_message_size, 65536);
        assert_eq!(listener.max_connections, 100_000);
        assert_eq!(listener.allow_ips.len(), 3);
        assert_eq!(listener.allow_ips[1], "192.168.1.7/32".parse::<IpNet>().unwrap());
        assert!(listener.lenient_framing);
        assert_eq!(listener.duplicate_window, None);
        assert_eq!(listener.framing, Framing::new(&[0x02], &[0x1C, 0x0D]).unwrap());
    }

    #[test]
    fn encoding_names() {
        let encoding = |name: &str| parse_ok(&lab(&format!("encoding = {name:?}"))).listeners[0].encoding;
        // Everything the key accepted before the one charset-name table, unchanged.
        for (name, expected) in [
            ("utf-8", Charset::Utf8),
            ("UTF8", Charset::Utf8),
            ("Windows-1252", Charset::Windows1252),
            ("cp1252", Charset::Windows1252),
            ("ascii", Charset::Ascii),
            ("US-ASCII", Charset::Ascii),
            (" utf-8 ", Charset::Utf8),
        ] {
            assert_eq!(encoding(name), expected, "{name}");
        }
        let error = parse_err(&lab("encoding = \"latin1\""));
        assert!(
            error.starts_with(
                "listener \"lab\": encoding: unknown encoding \"latin1\": expected one of ascii, windows-1252, "
            ) && error.ends_with(" (line 5)"),
            "{error}"
        );
    }

    /// Issue 12: `hl7d send --encoding iso-8859-1` worked while `encoding = "iso-8859-1"` was
    /// refused here. Both now read the one table in `hl7_proto::charset`, so every name the
    /// CLI takes, the config takes too.
    #[test]
    fn encoding_accepts_every_name_send_accepts() {
        assert_eq!(parse_ok(&lab("encoding = \"iso-8859-1\"")).listeners[0].encoding, Charset::Windows1252);
        for &(name, charset) in CONFIG_NAMES {
            let config = parse_ok(&lab(&format!("encoding = {name:?}")));
            assert_eq!(config.listeners[0].encoding, charset, "{name}");
        }
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let error = Config::from_toml_str(&format!("bogus = 1\n{}", lab(""))).unwrap_err();
        assert!(matches!(error, ConfigError::Toml { section: None, .. }), "{error:?}");
        let error = error.to_string();
        assert!(error.contains("unknown field `bogus`"), "{error}");
        assert!(error.contains("line 1"), "{error}");

        let error = parse_err(&format!("{}[metrics]\nx = 1\n", lab("")));
        assert!(error.contains("unknown field `metrics`"), "{error}");
        assert!(!error.starts_with("listener"), "{error}");
    }

    #[test]
    fn unknown_store_key_is_named() {
        // Durability is not configurable.
        let error = parse_err(&format!("[store]\nfsync = false\n{}", lab("")));
        assert!(error.starts_with("store: "), "{error}");
        assert!(error.contains("unknown field `fsync`"), "{error}");
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn unknown_listener_key_names_the_listener() {
        let text = format!(
            "{}{}[admin]\nlisten = \"127.0.0.1:9275\"\n",
            lab(""),
            "[[listener]]\nname = \"adt\"\nlisten = \"127.0.0.1:2576\"\nplaintext = true\nidle_timout = \"5m\"\n"
        );
        let error = Config::from_toml_str(&text).unwrap_err();
        assert!(
            matches!(&error, ConfigError::Toml { section: Some(Section::Listener { index: 1, .. }), .. }),
            "{error:?}"
        );
        let error = error.to_string();
        assert!(error.starts_with("listener \"adt\": "), "{error}");
        assert!(error.contains("unknown field `idle_timout`"), "{error}");
        assert!(error.contains("line 10"), "{error}");

        // A listener without a name is named by its position.
        let error = parse_err(&format!("{}[[listener]]\nlisten = \"127.0.0.1:2576\"\n", lab("")));
        assert!(error.starts_with("listener #2: "), "{error}");
        assert!(error.contains("missing field `name`"), "{error}");
    }

    #[test]
    fn unknown_framing_key_names_the_listener() {
        let error = parse_err(&lab("[listener.framing]\nstart = \"0B\"\nstop = \"1C\""));
        assert!(error.starts_with("listener \"lab\": "), "{error}");
        assert!(error.contains("unknown field `stop`"), "{error}");
    }

    #[test]
    fn unknown_tls_key_names_the_listener() {
        let error = parse_err(
            "[[listener]]\nname = \"sec\"\nlisten = \"0.0.0.0:2576\"\n[listener.tls]\ncert = \"c\"\nkey = \"k\"\nciphers = \"ALL\"\n",
        );
        assert!(error.starts_with("listener \"sec\": "), "{error}");
        assert!(error.contains("unknown field `ciphers`"), "{error}");
        assert!(error.contains("line 7"), "{error}");
    }

    #[test]
    fn wrong_types_are_reported_with_their_line() {
        let error = parse_err(&lab("idle_timeout = 30"));
        assert!(error.starts_with("listener \"lab\": "), "{error}");
        assert!(error.contains("line 5"), "{error}");
        let error = parse_err(&lab("max_message_size = true"));
        assert!(error.contains("a size such as"), "{error}");
        let error = parse_err("[listener]\nname = \"lab\"\n");
        assert!(error.contains("expected a sequence"), "{error}");
    }

    #[test]
    fn at_least_one_listener() {
        assert_eq!(
            parse_err("[store]\npath = \"x\"\n"),
            "listener: no [[listener]] table: at least one listener is required"
        );
    }

    #[test]
    fn names_must_be_valid_and_unique() {
        let error = parse_err("[[listener]]\nname = \"\"\nlisten = \"127.0.0.1:1\"\nplaintext = true\n");
        assert_eq!(error, "listener #1: name: must not be empty (line 2)");
        let error =
            parse_err("[[listener]]\nname = \"lab one\"\nlisten = \"127.0.0.1:1\"\nplaintext = true\n");
        assert!(error.starts_with("listener \"lab one\": name: \"lab one\" contains ' '"), "{error}");
        let long = "x".repeat(65);
        let error = parse_err(&format!(
            "[[listener]]\nname = \"{long}\"\nlisten = \"127.0.0.1:1\"\nplaintext = true\n"
        ));
        assert!(error.contains("name: is 65 characters long"), "{error}");

        let text = format!("{}{}", lab(""), lab("").replace("2575", "2576"));
        assert_eq!(parse_err(&text), "listener \"lab\": name: already used by listener #1 (line 7)");
    }

    #[test]
    fn duplicate_port_names_both_listeners() {
        let text = "[[listener]]\nname = \"adt\"\nlisten = \"0.0.0.0:2575\"\nplaintext = true\n\
                    [[listener]]\nname = \"lab\"\nlisten = \"0.0.0.0:2575\"\nplaintext = true\n";
        assert_eq!(
            parse_err(text),
            "listener \"lab\": listen: port 2575 already used by listener \"adt\" (line 7)"
        );
    }

    #[test]
    fn wildcard_addresses_clash_with_specific_ones() {
        let pair = |a: &str, b: &str| {
            format!(
                "[[listener]]\nname = \"a\"\nlisten = \"{a}\"\nplaintext = true\n\
                 [[listener]]\nname = \"b\"\nlisten = \"{b}\"\nplaintext = true\n"
            )
        };
        for (a, b) in [
            ("0.0.0.0:2575", "127.0.0.1:2575"),
            ("127.0.0.1:2575", "0.0.0.0:2575"),
            ("[::]:2575", "127.0.0.1:2575"),
            ("[::1]:2575", "[::]:2575"),
            ("[::ffff:127.0.0.1]:2575", "127.0.0.1:2575"),
        ] {
            let error = parse_err(&pair(a, b));
            assert!(
                error.starts_with("listener \"b\": listen: port 2575 already used by listener \"a\""),
                "{a} {b}: {error}"
            );
        }
        for (a, b) in [
            ("127.0.0.1:2575", "127.0.0.2:2575"),
            ("0.0.0.0:2575", "0.0.0.0:2576"),
            ("0.0.0.0:2575", "[::1]:2575"),
            ("127.0.0.1:0", "127.0.0.1:0"),
        ] {
            parse_ok(&pair(a, b));
        }
    }

    #[test]
    fn admin_port_must_not_clash_with_a_listener() {
        let error = parse_err(&format!("[admin]\nlisten = \"0.0.0.0:2575\"\n{}", lab("")));
        assert!(error.starts_with("admin: listen: port 2575 already used by listener \"lab\""), "{error}");
    }

    #[test]
    fn bad_listen_address() {
        let error = parse_err(&lab("").replace("127.0.0.1:2575", "localhost:2575"));
        assert!(error.starts_with("listener \"lab\": listen: invalid address \"localhost:2575\""), "{error}");
    }

    #[test]
    fn bad_cidr_names_listener_key_and_index() {
        let error = parse_err(&lab("allow_ips = [\"10.0.0.0/8\", \"10.0.0/8\"]"));
        assert_eq!(error, "listener \"lab\": allow_ips[1]: invalid address or CIDR \"10.0.0/8\" (line 5)");
        let error = parse_err(&lab("allow_ips = [\"10.0.0.0/33\"]"));
        assert!(error.contains("allow_ips[0]: invalid address or CIDR"), "{error}");
    }

    #[test]
    fn host_bits_in_a_cidr_are_cleared_with_a_warning() {
        let config = parse_ok(&lab("allow_ips = [\"10.1.2.3/8\"]"));
        assert_eq!(config.listeners[0].allow_ips, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!(config.warnings.len(), 1);
        assert!(config.warnings[0].contains("allow_ips[0]: \"10.1.2.3/8\" has host bits set"));
    }

    #[test]
    fn framing_hex_forms() {
        // Each notation is `hl7_proto::hex::parse_byte_list`'s (tested there); here, that the
        // key reads it.
        for (text, expected) in [("1c0d", [0x1C, 0x0D]), ("0x1C 0x0D", [0x1C, 0x0D]), ("1C:0D", [0x1C, 0x0D])]
        {
            let config = parse_ok(&lab(&format!("[listener.framing]\nend = {text:?}")));
            assert_eq!(config.listeners[0].framing.end(), expected, "{text}");
        }
        let config = parse_ok(&lab("[listener.framing]\nstart = \"02\"\nend = \"03\""));
        assert_eq!(config.listeners[0].framing, Framing::new(&[0x02], &[0x03]).unwrap());
        // One key alone keeps the other's default.
        let config = parse_ok(&lab("[listener.framing]\nend = \"1C\""));
        assert_eq!(config.listeners[0].framing, Framing::new(&[0x0B], &[0x1C]).unwrap());
    }

    #[test]
    fn bad_framing_is_named() {
        let error = parse_err(&lab("[listener.framing]\nstart = \"0G\""));
        assert_eq!(error, "listener \"lab\": framing.start: \"0G\": 'G' is not a hex digit (line 6)");
        let error = parse_err(&lab("[listener.framing]\nend = \"1C0\""));
        assert!(error.starts_with("listener \"lab\": framing.end: \"1C0\": "), "{error}");
        let error = parse_err(&lab("[listener.framing]\nend = \"\""));
        assert!(error.contains("framing.end: \"\": no hex bytes"), "{error}");
        let error = parse_err(&lab("[listener.framing]\nend = \"1C 0D 0A 0D 0A\""));
        assert!(error.contains("framing.end: \"1C 0D 0A 0D 0A\" is 5 bytes"), "{error}");
        let error = parse_err(&lab("[listener.framing]\nstart = \"1C\""));
        assert!(
            error.starts_with("listener \"lab\": framing.start: start byte 0x1C is also the first end byte"),
            "{error}"
        );
    }

    #[test]
    fn lenient_framing_with_one_end_byte_warns() {
        let config = parse_ok(&lab("lenient_framing = true\n[listener.framing]\nend = \"1C\""));
        assert!(config.listeners[0].lenient_framing);
        assert_eq!(config.warnings.len(), 1);
        assert!(config.warnings[0].contains("lenient_framing: has no effect"));
    }

    #[test]
    fn size_strings() {
        for (text, expected) in [
            ("65536", 65536),
            ("1MiB", 1 << 20),
            ("1mib", 1 << 20),
            ("512KiB", 512 * 1024),
            ("1MB", 1_000_000),
            ("64 KB", 64_000),
            ("2048B", 2048),
            ("1GiB", 1 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
        for text in ["", "MiB", "1.5MiB", "1 TB", "-1", "1K", "99999999999999999999"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(2048), "2KiB");
        assert_eq!(format_size(1500), "1500 bytes");
    }

    #[test]
    fn max_message_size_bounds() {
        let size = |value: &str| {
            parse_ok(&lab(&format!("max_message_size = {value}"))).listeners[0].max_message_size
        };
        assert_eq!(size("\"512KiB\""), 512 * 1024);
        assert_eq!(size("65536"), 65536);
        assert_eq!(size("\"1MB\""), 1_000_000);
        assert_eq!(size("\"1KiB\""), 1024);
        assert_eq!(size("\"64MiB\""), 64 << 20);
        assert_eq!(
            parse_err(&lab("max_message_size = \"100MiB\"")),
            "listener \"lab\": max_message_size: 100MiB is above the maximum of 64MiB (line 5)"
        );
        assert_eq!(
            parse_err(&lab("max_message_size = 512")),
            "listener \"lab\": max_message_size: 512 bytes is below the minimum of 1KiB (line 5)"
        );
        assert!(parse_err(&lab("max_message_size = -1")).contains("max_message_size: -1 is negative"));
        assert!(parse_err(&lab("max_message_size = \"1 TB\"")).contains("unknown unit \"TB\""));
    }

    #[test]
    fn max_connections_bounds() {
        for bad in ["0", "-5", "100001"] {
            let error = parse_err(&lab(&format!("max_connections = {bad}")));
            assert_eq!(
                error,
                format!("listener \"lab\": max_connections: {bad} is out of range 1..=100000 (line 5)")
            );
        }
        assert_eq!(parse_ok(&lab("max_connections = 1")).listeners[0].max_connections, 1);
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(
            parse_err(&lab("idle_timeout = \"500ms\"")),
            "listener \"lab\": idle_timeout: must be at least 1s (line 5)"
        );
        assert!(parse_err(&lab("idle_timeout = \"25h\"")).contains("idle_timeout: must be at most 1day"));
        assert!(
            parse_err(&lab("idle_timeout = \"soon\"")).contains("idle_timeout: invalid duration \"soon\"")
        );
        assert!(parse_err(&lab("frame_timeout = \"0\"")).contains("frame_timeout: must be at least 1s"));
        assert!(parse_err(&lab("write_timeout = \"2h\"")).contains("write_timeout: must be at most 1h"));
        assert!(parse_err(&lab("duplicate_window = \"400d\"")).contains("duplicate_window: must be at most"));
        assert!(parse_err(&format!("[store]\nretention = \"0s\"\n{}", lab("")))
            .starts_with("store: retention: must not be zero"));
        assert!(parse_err(&format!("[store]\nretention = \"10s\"\n{}", lab("")))
            .starts_with("store: retention: must be at least 1m"));
    }

    #[test]
    fn short_idle_timeout_is_a_warning() {
        let config = parse_ok(&lab("idle_timeout = \"5s\""));
        assert_eq!(config.listeners[0].idle_timeout, Duration::from_secs(5));
        assert_eq!(config.warnings.len(), 1);
        assert!(
            config.warnings[0].starts_with("listener \"lab\": idle_timeout: 5s is below 1 minute"),
            "{:?}",
            config.warnings
        );
        assert!(parse_ok(&lab("idle_timeout = \"1m\"")).warnings.is_empty());
        assert!(parse_ok(&lab("idle_timeout = \"1s\"")).warnings.len() == 1);
    }

    #[test]
    fn duplicate_window_longer_than_retention_warns() {
        let config = parse_ok(&format!("[store]\nretention = \"1h\"\n{}", lab("")));
        assert_eq!(config.warnings.len(), 1);
        assert!(config.warnings[0].contains("duplicate_window: longer than [store] retention (1h)"));
    }

    #[test]
    fn thumbprint_forms() {
        let sha256 = Thumbprint::Sha256(hex(SHA256_HEX));
        let upper_colons = SHA256_HEX
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        for text in [
            SHA256_HEX.to_owned(),
            format!("sha256:{SHA256_HEX}"),
            format!("SHA256:{upper_colons}"),
            format!("sha-256:{upper_colons}"),
            format!("  {}  ", SHA256_HEX.to_uppercase()),
        ] {
            assert_eq!(text.parse::<Thumbprint>(), Ok(sha256), "{text}");
        }
        let sha1 = Thumbprint::Sha1(hex(SHA1_HEX));
        for text in [
            "A9 4A 8F E5 CC B1 9B A6 1C 4C 08 73 D3 91 E9 87 98 2F BB D3",
            // Copied from the Windows certificate dialog: a left-to-right mark in front.
            "\u{200E}a9 4a 8f e5 cc b1 9b a6 1c 4c 08 73 d3 91 e9 87 98 2f bb d3",
            "sha1:A94A8FE5CCB19BA61C4C0873D391E987982FBBD3",
        ] {
            assert_eq!(text.parse::<Thumbprint>(), Ok(sha1), "{text}");
        }
        assert_eq!(sha256.to_string(), format!("sha256:{SHA256_HEX}"));
        assert_eq!(sha1.to_string(), format!("sha1:{SHA1_HEX}"));
        assert!(sha256.matches(&hex(SHA256_HEX), &[0; 20]));
        assert!(!sha256.matches(&[0; 32], &hex(SHA1_HEX)));
        assert!(sha1.matches(&[0; 32], &hex(SHA1_HEX)));
    }

    #[test]
    fn bad_thumbprints() {
        assert_eq!("abcd".parse::<Thumbprint>(), Err(ThumbprintError::Length { digits: 4 }));
        assert_eq!(
            format!("{SHA256_HEX}zz").parse::<Thumbprint>(),
            Err(ThumbprintError::NotHex { found: 'z' })
        );
        assert_eq!(
            format!("sha256:{SHA1_HEX}").parse::<Thumbprint>(),
            Err(ThumbprintError::PrefixMismatch { prefix: "sha256:".to_owned(), digits: 40, expected: 64 })
        );
        assert!("md5:00".parse::<Thumbprint>().is_err());

        let text = ISSUE_4_TLS.replace("\"A9 4A", "\"A9 4A 00");
        let error = parse_err(&text);
        assert!(
            error.starts_with(
                "listener \"secure\": tls.client_thumbprints[1]: \"A9 4A 00 8F E5 CC B1 9B A6 1C 4C 08 73 \
                 D3 91 E9 87 98 2F BB D3\" has 42 hex digits: expected 64 (SHA-256) or 40 (SHA-1)"
            ),
            "{error}"
        );
    }

    #[test]
    fn duplicate_thumbprints_are_merged_with_a_warning() {
        let text =
            ISSUE_4_TLS.replace("\"A9 4A 8F", &format!("\"{}\",\n  \"A9 4A 8F", SHA256_HEX.to_uppercase()));
        let config = parse_ok(&text);
        let ClientAuth::Required { thumbprints, .. } = &config.listeners[0].tls().unwrap().client_auth else {
            panic!("client auth required");
        };
        assert_eq!(thumbprints.len(), 2);
        assert_eq!(config.warnings.len(), 1);
        assert!(
            config.warnings[0].contains("tls.client_thumbprints[1]: sha256:9f86"),
            "{:?}",
            config.warnings
        );
    }

    #[test]
    fn plaintext_or_tls_exactly_one() {
        let neither = "[[listener]]\nname = \"lab\"\nlisten = \"0.0.0.0:2575\"\n";
        assert_eq!(
            parse_err(neither),
            "listener \"lab\": plaintext: no [listener.tls] table: set plaintext = true to run without TLS"
        );
        assert_eq!(
            parse_err(&format!("{neither}plaintext = false\n")),
            "listener \"lab\": plaintext: no [listener.tls] table: set plaintext = true to run without \
             TLS (line 4)"
        );
        let both = format!("{neither}plaintext = true\n[listener.tls]\ncert = \"c\"\nkey = \"k\"\n");
        assert!(parse_err(&both).starts_with(
            "listener \"lab\": plaintext: plaintext = true conflicts with the [listener.tls] table"
        ),);
        let tls =
            parse_ok(&format!("{neither}plaintext = false\n[listener.tls]\ncert = \"c\"\nkey = \"k\"\n"));
        assert!(tls.listeners[0].tls().is_some());
        // A TLS listener on 0.0.0.0 is not flagged.
        assert!(tls.warnings.is_empty());
    }

    #[test]
    fn tls_rules() {
        let tls = |extra: &str| {
            format!("[[listener]]\nname = \"sec\"\nlisten = \"0.0.0.0:2576\"\n[listener.tls]\ncert = \"c\"\nkey = \"k\"\n{extra}\n")
        };
        assert_eq!(
            parse_ok(&tls("min_version = \"1.3\"")).listeners[0].tls().unwrap().min_version,
            TlsVersion::Tls13
        );
        assert!(
            parse_err(&tls("min_version = \"1.1\"")).contains("tls.min_version: TLS 1.1 is not supported")
        );
        assert!(
            parse_err(&tls("min_version = \"TLSv1.2\"")).contains("tls.min_version: \"TLSv1.2\": expected")
        );
        assert_eq!(
            parse_err(&tls("client_auth = \"required\"")),
            "listener \"sec\": tls.client_thumbprints: client_auth = \"required\" needs at least one \
             approved thumbprint"
        );
        assert!(parse_err(&tls("client_auth = \"required\"\nclient_thumbprints = []"))
            .starts_with("listener \"sec\": tls.client_thumbprints: client_auth = \"required\" needs"));
        assert!(
            parse_err(&tls("client_auth = \"optional\"")).contains("tls.client_auth: \"optional\": expected")
        );
        assert!(parse_err(&tls(&format!("client_thumbprints = [\"{SHA256_HEX}\"]")))
            .starts_with("listener \"sec\": tls.client_thumbprints: set but client_auth is \"none\""));
        assert!(parse_err(&tls("client_ca = \"ca.pem\""))
            .starts_with("listener \"sec\": tls.client_ca: set but client_auth is \"none\""));
        assert!(parse_err(&tls("handshake_timeout = \"1h\""))
            .contains("tls.handshake_timeout: must be at most 5m"));
        assert!(parse_err(&tls("").replace("cert = \"c\"", "cert = \"\""))
            .contains("tls.cert: must not be empty"));
        let error = parse_err(&tls("").replace("key = \"k\"\n", ""));
        assert!(error.starts_with("listener \"sec\": "), "{error}");
        assert!(error.contains("missing field `key`"), "{error}");
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let error =
            Config::from_toml_str(&lab("idle_timeout = \"0s\"\nmax_connections = 0\nack = \"maybe\""))
                .unwrap_err();
        let ConfigError::Invalid { problems } = &error else {
            panic!("expected Invalid, got {error:?}");
        };
        let keys: Vec<&str> = problems.iter().map(|problem| problem.key.as_str()).collect();
        assert_eq!(keys, ["ack", "idle_timeout", "max_connections"]);
        assert_eq!(error.to_string().lines().count(), 3);
    }

    #[test]
    fn allows_v4_v6_cidr_and_v4_mapped() {
        let mut listener = ListenerConfig::plaintext("lab", "0.0.0.0:2575".parse().unwrap());
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let v6 = |text: &str| IpAddr::V6(text.parse::<Ipv6Addr>().unwrap());

        // Empty list: anyone.
        assert!(listener.allows(v4(203, 0, 113, 9)));
        assert!(listener.allows(v6("2001:db8::1")));

        listener.allow_ips = ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32", "::1/128"]
            .iter()
            .map(|net| net.parse().unwrap())
            .collect();
        assert!(listener.allows(v4(10, 200, 3, 4)));
        assert!(listener.allows(v4(192, 168, 1, 7)));
        assert!(!listener.allows(v4(192, 168, 1, 8)));
        assert!(!listener.allows(v4(11, 0, 0, 1)));
        assert!(listener.allows(v6("2001:db8:ffff::1")));
        assert!(!listener.allows(v6("2001:db9::1")));
        assert!(listener.allows(v6("::1")));
        assert!(!listener.allows(v4(127, 0, 0, 1)));
        // IPv4 peers seen through a dual-stack socket.
        assert!(listener.allows(v6("::ffff:10.1.2.3")));
        assert!(listener.allows(v6("::ffff:192.168.1.7")));
        assert!(!listener.allows(v6("::ffff:11.1.2.3")));

        // An IPv4-mapped rule matches the plain IPv4 peer too.
        listener.allow_ips = vec!["::ffff:172.16.0.0/108".parse().unwrap()];
        assert!(listener.allows(v4(172, 16, 5, 5)));
        assert!(!listener.allows(v4(172, 32, 0, 1)));
    }

    #[test]
    fn allow_ips_from_config_accept_single_addresses() {
        let config = parse_ok(&lab("allow_ips = [\"127.0.0.1\", \"::1\", \"10.0.0.0/8\"]"));
        let listener = &config.listeners[0];
        assert!(listener.allows(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(listener.allows(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!listener.allows(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    }

    #[test]
    fn load_resolves_relative_paths_against_the_config_directory() {
        let dir = std::env::temp_dir().join(format!("hl7d-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hl7d.toml");
        std::fs::write(
            &file,
            "[store]\npath = \"data\"\n\
             [[listener]]\nname = \"sec\"\nlisten = \"0.0.0.0:2576\"\n\
             [listener.tls]\ncert = \"tls/server.pem\"\nkey = \"/etc/hl7d/server.key\"\n\
             client_auth = \"required\"\nclient_thumbprints = [\"sha1:A94A8FE5CCB19BA61C4C0873D391E987982FBBD3\"]\n\
             client_ca = \"ca.pem\"\n",
        )
        .unwrap();
        let config = Config::load(&file);
        std::fs::remove_dir_all(&dir).unwrap();
        let config = config.unwrap();
        assert_eq!(config.store.path, dir.join("data"));
        let tls = config.listeners[0].tls().unwrap();
        assert_eq!(tls.cert, dir.join("tls/server.pem"));
        assert_eq!(tls.key, PathBuf::from("/etc/hl7d/server.key"));
        let ClientAuth::Required { ca, .. } = &tls.client_auth else {
            panic!("client auth required");
        };
        assert_eq!(ca.as_deref(), Some(dir.join("ca.pem").as_path()));
    }

    #[test]
    fn load_reports_a_missing_file() {
        let path = Path::new("/nonexistent/hl7d.toml");
        let error = Config::load(path).unwrap_err();
        assert!(matches!(&error, ConfigError::Read { path: p, .. } if p == path));
        assert!(error.to_string().starts_with("cannot read config file /nonexistent/hl7d.toml: "), "{error}");
    }

    #[test]
    fn audit_sinks_and_expiry_warning() {
        let config = parse_ok(&format!(
            "[log]\ncert_expiry_warning = \"60d\"\n\
             [audit]\nfile = \"/var/log/hl7d/audit.jsonl\"\nsyslog = \"tls://[::1]:6514\"\nsyslog_ca = \"/etc/ca.pem\"\n{}",
            lab("")
        ));
        assert_eq!(config.log.cert_expiry_warning, 60 * DAY);
        let audit = config.audit.expect("[audit] present");
        assert_eq!(audit.file, Some(PathBuf::from("/var/log/hl7d/audit.jsonl")));
        let syslog = audit.syslog.expect("syslog set");
        assert_eq!((syslog.host.as_str(), syslog.port, syslog.tls), ("::1", 6514, true));
        assert_eq!(syslog.ca, Some(PathBuf::from("/etc/ca.pem")));

        let plain = parse_ok(&format!("[audit]\nsyslog = \"tcp://logs.example:601\"\n{}", lab("")));
        let syslog = plain.audit.unwrap().syslog.unwrap();
        assert_eq!((syslog.host.as_str(), syslog.port, syslog.tls), ("logs.example", 601, false));
        assert_eq!(parse_ok(&lab("")).log.cert_expiry_warning, DEFAULT_CERT_EXPIRY_WARNING);
        assert_eq!(parse_ok(&lab("")).audit, None);
    }

    #[test]
    fn admin_off_loopback_is_a_warning() {
        let quiet = parse_ok(&format!("[admin]\nlisten = \"127.0.0.1:9275\"\n{}", lab("")));
        assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
        let open = parse_ok(&format!("[admin]\nlisten = \"0.0.0.0:9275\"\n{}", lab("")));
        assert_eq!(open.warnings.len(), 1);
        assert!(
            open.warnings[0].starts_with("admin: listen: 0.0.0.0:9275 is reachable"),
            "{:?}",
            open.warnings
        );
    }

    #[test]
    fn bad_audit_tables_name_the_key() {
        let cases = [
            ("[audit]\n", "audit: file: [audit] needs file and/or syslog"),
            ("[audit]\nsyslog = \"udp://h:514\"\n", "audit: syslog: \"udp://h:514\": expected tcp://"),
            ("[audit]\nsyslog = \"tcp://h\"\n", "audit: syslog: \"tcp://h\": no port"),
            (
                "[audit]\nsyslog = \"tcp://h:601\"\nsyslog_ca = \"ca.pem\"\n",
                "audit: syslog_ca: only used with a tls://",
            ),
            ("[log]\ncert_expiry_warning = \"1h\"\n", "log: cert_expiry_warning: must be at least 1day"),
        ];
        for (table, expected) in cases {
            let error = Config::from_toml_str(&format!("{table}{}", lab(""))).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{table}: {error}");
        }
        let error = Config::from_toml_str(&format!("[audit]\nfile = \"a\"\nfsync = true\n{}", lab("")))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("audit: ") && error.contains("unknown field `fsync`"), "{error}");
    }
}
