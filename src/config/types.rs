//! The typed configuration: what the rest of hl7d reads once the file has been checked
//! (`validate/` builds it), with the default of every key.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hl7_proto::ack::AckPolicy;
use hl7_proto::charset::Charset;
use hl7_proto::mllp::Framing;
use ipnet::IpNet;

use super::route::RouteConfig;
use super::units::MIB;
use crate::tls::thumbprint::Thumbprint;

/// Default `[store] path`.
pub const DEFAULT_STORE_PATH: &str = "hl7d-data";
/// Default `[admin] listen` when an `[admin]` table is present without `listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9275";
/// Default `[admin] users`: this file in the data directory.
pub const DEFAULT_USERS_FILE: &str = "users.toml";
/// Default `[admin] session_idle_timeout`: 30 minutes.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default `[admin] session_lifetime`: 12 hours.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
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
/// Default `max_connections_per_ip` (`max_connections` when that is lower).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 32;
/// Default `max_pending` (`max_connections` when that is lower).
pub const DEFAULT_MAX_PENDING: usize = 16;
/// Default `[log] cert_expiry_warning`: 30 days.
pub const DEFAULT_CERT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);
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
    /// `[[route]]`: where stored messages are delivered, in file order, names unique
    /// (see `docs/delivery.md`).
    pub routes: Vec<RouteConfig>,
    /// `[node]`: this process's name among several on one shared store.
    pub node: NodeConfig,
    /// `[delivery]`: settings of the delivery engine shared by every route.
    pub delivery: DeliveryConfig,
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
    /// `url` and its keys: the shared PostgreSQL store instead of the embedded SQLite one in
    /// `path` (issue 16). `None` = SQLite.
    pub postgres: Option<PostgresConfig>,
}

/// `[node]`: who this hl7d process is among several on one shared store (docs/scale-out.md,
/// "Delivery across nodes").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// `name`: shown by `hl7d routes status` beside the lanes this node holds, and kept
    /// in the lease rows. `None` = [`NodeConfig::resolved_name`]'s default.
    pub name: Option<String>,
}

impl NodeConfig {
    /// The node's name: `name`, else the host name and the process id (`host-1234`), so
    /// that two processes on one host never share one.
    pub fn resolved_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "hl7d".to_owned());
        format!("{host}-{}", std::process::id())
    }
}

/// Default `[delivery] lease`: 30 s.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// `[delivery]`: the engine's settings shared by every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// `lease`: on a shared store, how long a node's hold on a lane lasts without renewal
    /// (renewed every third of it); a dead node's lanes are taken over this long after its
    /// last renewal. Unused on the embedded store (one node owns every lane).
    pub lease: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig { lease: DEFAULT_LEASE }
    }
}

/// `[store] url = "postgresql://user@host/db"` and the keys beside it: where the shared
/// PostgreSQL store is and how to reach it. Its `Debug` never shows a password (the URL
/// cannot hold one, and the password itself is read only when a connection is made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `url`: `postgresql://user@host[:port]/database` (or `postgres://`), without a
    /// password and without `sslmode` (the keys below say those).
    pub url: String,
    /// `password = "env:NAME"` or `password_file`; `None` = no password (trust, peer or
    /// certificate authentication on the server's side).
    pub password: Option<PasswordSource>,
    /// `sslmode`: TLS to the database (default `verify-full`).
    pub sslmode: SslMode,
    /// `ca`: the CA certificates (PEM) the database's certificate must chain to; `None` =
    /// the system's trust store.
    pub ca: Option<PathBuf>,
    /// `pool_size`: most connections this node opens to the database (default 16).
    pub pool_size: usize,
}

/// Where the database password is read from, when the store opens (a changed password
/// takes a restart).
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `password = "env:NAME"`: the environment variable `NAME`.
    Env(String),
    /// `password_file = "…"`: the file's first line.
    File(PathBuf),
}

impl std::fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names where the password is, never the password.
        match self {
            PasswordSource::Env(name) => write!(f, "env:{name}"),
            PasswordSource::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// `[store] sslmode`: how the connection to the database is protected, after libpq's
/// modes of the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// `disable`: no TLS (a local socket, a private network, tests).
    Disable,
    /// `require`: TLS, encrypted, without checking the server's certificate (as libpq's
    /// `require`: it protects against eavesdropping, not against an active attacker).
    Require,
    /// `verify-full` (the default): TLS, the certificate chains to `ca` (or the system's
    /// roots) and names the URL's host.
    #[default]
    VerifyFull,
}

impl SslMode {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Default `[store] pool_size`.
pub const DEFAULT_PG_POOL_SIZE: usize = 16;

/// `[admin]`: the HTTP endpoint for `/live`, `/ready`, `/metrics`, `POST /reload` and the
/// console (see `docs/console.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to bind (`listen`, default 127.0.0.1:9275).
    pub listen: SocketAddr,
    /// `users`: the console's users and API tokens (default `users.toml` in the data
    /// directory); written by `hl7d users` and `hl7d tokens`.
    pub users: PathBuf,
    /// `metrics_public` (default true): `/metrics` without credentials; `false` puts it
    /// behind a token or session like the console.
    pub metrics_public: bool,
    /// `session_idle_timeout` (default 30 minutes): a console session unused this long ends.
    pub session_idle_timeout: Duration,
    /// `session_lifetime` (default 12 hours): a console session ends this long after login.
    pub session_lifetime: Duration,
    /// `[admin.tls]`: serve over TLS 1.2/1.3 (optionally with client certificates); required
    /// for the console and API on a non-loopback `listen`.
    pub tls: Option<TlsConfig>,
}

impl AdminConfig {
    /// `listen` with the users file `users` and every other key at its default: for tests
    /// and programmatic set-ups.
    pub fn new(listen: SocketAddr, users: impl Into<PathBuf>) -> AdminConfig {
        AdminConfig {
            listen,
            users: users.into(),
            metrics_public: true,
            session_idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            tls: None,
        }
    }

    /// Whether the console and API are refused: `listen` is reachable from the network
    /// and there is no `[admin.tls]`, so passwords, tokens and cookies would travel in clear
    /// text. `/live`, `/ready` and a public `/metrics` are served all the same.
    pub fn console_refused(&self) -> bool {
        self.tls.is_none() && !self.listen.ip().to_canonical().is_loopback()
    }
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
    /// `max_connections_per_ip`: concurrent connections from one peer address
    /// (1 ..= `max_connections`); the next one from that address is refused.
    pub max_connections_per_ip: usize,
    /// `max_pending`: concurrent connections that have not finished their TLS handshake
    /// or (plaintext) sent their first MLLP byte (1 ..= `max_connections`); beyond it the
    /// oldest pending connection is dropped, never an established one.
    pub max_pending: usize,
    /// `allow_ips`: networks allowed to connect (host bits cleared); empty = any. Use
    /// [`ListenerConfig::allows`] rather than matching these directly.
    pub allow_ips: Vec<IpNet>,
    /// `proxy_protocol = true` with `proxy_from`: every connection comes through a load
    /// balancer that names the real client in a PROXY protocol header; `None` = direct
    /// connections (the default).
    pub proxy: Option<ProxyProtocol>,
    /// `[listener.framing]`: MLLP start and end bytes.
    pub framing: Framing,
    /// `lenient_framing`: end a frame at the first end byte (`0x1C`) without waiting for
    /// the rest of the end sequence (`0x0D`); maps to the decoder's `lenient_end`.
    pub lenient_framing: bool,
    /// `duplicate_window`: how long a resent message (same sender, MSH-10 control id and
    /// bytes) is recognised as a duplicate; `None` (`"0"`) disables duplicate detection.
    pub duplicate_window: Option<Duration>,
}

/// `proxy_protocol = true`: connections come from load balancers that send a PROXY protocol
/// header (v1 or v2) before anything else; the address in it is the peer for `allow_ips`,
/// the per-address limit, logs, audit and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// `proxy_from`: the load balancers' networks (host bits cleared), never empty. A
    /// connection from any other address is refused before a byte is read.
    pub from: Vec<IpNet>,
}

impl ProxyProtocol {
    /// Whether a connection from `ip` may send a PROXY header (matched as
    /// [`ListenerConfig::allows`] matches: IPv4 and its IPv4-mapped IPv6 form alike).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        contains(&self.from, ip)
    }
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
impl Config {
    /// The console's users file: `[admin] users`, else `users.toml` in the data directory
    /// (`hl7d users` and `hl7d tokens` work without an `[admin]` table too).
    pub fn users_file(&self) -> PathBuf {
        match &self.admin {
            Some(admin) => admin.users.clone(),
            None => self.store.path.join(DEFAULT_USERS_FILE),
        }
    }

    /// The listener called `name`, if any.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|listener| listener.name == name)
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|route| route.name == name)
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: PathBuf::from(DEFAULT_STORE_PATH), retention: None, postgres: None }
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
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_pending: DEFAULT_MAX_PENDING,
            allow_ips: Vec::new(),
            proxy: None,
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
        self.allow_ips.is_empty() || contains(&self.allow_ips, ip)
    }

    /// The TLS settings, or `None` for a plaintext listener.
    pub fn tls(&self) -> Option<&TlsConfig> {
        match &self.transport {
            Transport::Plaintext => None,
            Transport::Tls(tls) => Some(tls),
        }
    }
}

/// Whether one of `nets` contains `ip`, an IPv4 address and its IPv4-mapped IPv6 form being
/// the same address.
fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let canonical = ip.to_canonical();
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    nets.iter().any(|net| {
        net.contains(&ip) || net.contains(&canonical) || mapped.is_some_and(|mapped| net.contains(&mapped))
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

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
    fn proxies_are_matched_like_allow_ips_but_never_all_by_default() {
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let proxy =
            ProxyProtocol { from: vec!["10.0.0.5/32".parse().unwrap(), "2001:db8::/64".parse().unwrap()] };
        assert!(proxy.trusts(v4(10, 0, 0, 5)));
        assert!(proxy.trusts("::ffff:10.0.0.5".parse().unwrap()), "as a dual-stack socket reports it");
        assert!(proxy.trusts("2001:db8::7".parse().unwrap()));
        assert!(!proxy.trusts(v4(10, 0, 0, 6)));
        assert!(!ProxyProtocol { from: Vec::new() }.trusts(v4(10, 0, 0, 5)), "an empty list trusts nobody");
    }
}
