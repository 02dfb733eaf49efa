//! `[[route]]`: where stored messages are delivered to (see `docs/delivery.md`).
//!
//! The typed form only; the serde form is in `raw.rs` and the checks in
//! `validate/route.rs`. Secrets (`env:NAME` values) are kept as written and resolved when
//! the route starts, so that a config dump never holds them.

use std::path::PathBuf;
use std::time::Duration;

use hl7_proto::keys::LaneOrder;

use crate::config::file_name::FileName;
use crate::config::Thumbprint;

/// Default `in_flight`: lanes delivered at the same time.
pub const DEFAULT_IN_FLIGHT: usize = 1;
/// Default `retry_initial`.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Default `retry_max`.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5 * 60);
/// Default `park_after`.
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Default `ack_timeout`.
pub const DEFAULT_ROUTE_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `[route.file] name`.
pub const DEFAULT_FILE_NAME: &str = "{received:%Y%m%d}/{id:012}-{control_id}.hl7";

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// `name`: unique, `[a-z0-9_-]+`.
    pub name: String,
    /// `to`: the downstream.
    pub to: RouteTarget,
    /// `listeners`: only messages received on these listeners; `None` = every listener.
    pub listeners: Option<Vec<String>>,
    /// `message_types`: MSH-9 globs on `TYPE^EVENT` (`*` and `?`); empty = every type.
    pub message_types: Vec<String>,
    /// `order`: which messages share a lane.
    pub order: LaneOrder,
    /// `in_flight`: lanes delivered at the same time (`strict` forces 1).
    pub in_flight: usize,
    /// `retry_initial`: first backoff delay.
    pub retry_initial: Duration,
    /// `retry_max`: backoff cap.
    pub retry_max: Duration,
    /// `park_after`: a message still failing this long after its first attempt is parked.
    pub park_after: Duration,
    /// `on_application_error`: what an AE/CE answer does.
    pub on_application_error: OnApplicationError,
    /// `ack_timeout`: MLLP routes wait this long for each ACK.
    pub ack_timeout: Duration,
    /// `[route.tls]`: for `mllps://` and `https://`.
    pub tls: RouteTls,
    /// `[route.http]`: for `http://` and `https://`.
    pub http: RouteHttp,
    /// `[route.file]`: for `file://`.
    pub file: RouteFile,
}

/// `to`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// `mllp://host:port` (plain TCP) or `mllps://host:port` (`tls = true`).
    Mllp {
        /// `host:port` as written (a host name is resolved at each connect).
        address: String,
        /// The host part, for SNI and certificate checks unless `server_name` says otherwise.
        host: String,
        /// `mllps://`.
        tls: bool,
    },
    /// `http://…` or `https://…`: the URL as written.
    Http {
        /// The whole URL.
        url: String,
        /// `https://`.
        tls: bool,
    },
    /// `file:///dir`: the directory (absolute).
    File {
        /// The directory messages are written under.
        dir: PathBuf,
    },
}

impl RouteTarget {
    /// The scheme as written in `to`: `mllp`, `mllps`, `http`, `https` or `file`.
    pub fn scheme(&self) -> &'static str {
        match self {
            RouteTarget::Mllp { tls: false, .. } => "mllp",
            RouteTarget::Mllp { tls: true, .. } => "mllps",
            RouteTarget::Http { tls: false, .. } => "http",
            RouteTarget::Http { tls: true, .. } => "https",
            RouteTarget::File { .. } => "file",
        }
    }
}

/// `to` as written, except that a URL's user information (`https://user:password@host/`)
/// is shown as `***@`: fit for logs, `check-config` and the audit trail.
impl std::fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteTarget::Mllp { address, .. } => write!(f, "{}://{address}", self.scheme()),
            RouteTarget::Http { url, .. } => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                match rest[..authority_end].rfind('@') {
                    Some(at) => write!(f, "{scheme}://***{}", &rest[at..]),
                    None => f.write_str(url),
                }
            }
            RouteTarget::File { dir } => write!(f, "file://{}", dir.display()),
        }
    }
}

/// `on_application_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnApplicationError {
    /// `park` (default): an AE/CE parks the message.
    #[default]
    Park,
    /// `retry`: an AE/CE is retried with backoff like a lost connection.
    Retry,
}

/// `[route.tls]`: the same meanings as `hl7d send`'s options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteTls {
    /// `ca`: trust this CA bundle instead of the system roots.
    pub ca: Option<PathBuf>,
    /// `pin`: accept exactly the server certificate with this thumbprint.
    pub pin: Option<Thumbprint>,
    /// `cert`: client certificate chain for mutual TLS.
    pub cert: Option<PathBuf>,
    /// `key`: its private key.
    pub key: Option<PathBuf>,
    /// `server_name`: the name to verify instead of the host in `to`.
    pub server_name: Option<String>,
}

/// `[route.http]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteHttp {
    /// `headers`: extra request headers; a value `env:NAME` is read from the environment.
    pub headers: Vec<(String, SecretValue)>,
    /// `sign_secret`: HMAC-SHA256 key for `X-HL7D-Signature`.
    pub sign_secret: Option<SecretValue>,
}

/// `[route.file]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFile {
    /// `name`: the file name template, relative to the directory (see [`FileName`] for
    /// its placeholders).
    pub name: FileName,
}

impl Default for RouteFile {
    fn default() -> Self {
        // A constant, and `file_name`'s tests parse it.
        RouteFile {
            name: FileName::parse(DEFAULT_FILE_NAME).expect("the default file name template is valid"),
        }
    }
}

/// A value that may come from the environment (`env:NAME`) instead of the file.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretValue {
    /// Written in the file.
    Literal(String),
    /// `env:NAME`: read from the environment variable `NAME` when the route starts.
    Env(String),
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretValue::Literal(_) => f.write_str("Literal(..)"),
            SecretValue::Env(name) => write!(f, "Env({name:?})"),
        }
    }
}

impl SecretValue {
    /// `env:NAME` → [`SecretValue::Env`], anything else literal.
    pub fn parse(text: &str) -> SecretValue {
        match text.strip_prefix("env:") {
            Some(name) => SecretValue::Env(name.to_owned()),
            None => SecretValue::Literal(text.to_owned()),
        }
    }

    /// The value: the literal, or the environment variable's (an error names the variable,
    /// never a value).
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SecretValue::Literal(value) => Ok(value.clone()),
            SecretValue::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_display_as_written_without_user_information() {
        let http = |url: &str| RouteTarget::Http { url: url.into(), tls: url.starts_with("https") };
        assert_eq!(http("https://u:secret@h.example/x@y").to_string(), "https://***@h.example/x@y");
        assert_eq!(http("http://h.example:8080/in?a=b@c").to_string(), "http://h.example:8080/in?a=b@c");
        let mllp = RouteTarget::Mllp { address: "[::1]:2575".into(), host: "::1".into(), tls: true };
        assert_eq!(mllp.to_string(), "mllps://[::1]:2575");
        assert_eq!(RouteTarget::File { dir: "/var/spool".into() }.to_string(), "file:///var/spool");
    }
}
