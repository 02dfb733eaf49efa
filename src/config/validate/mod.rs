//! Raw → typed: [`Builder`] checks every value of the [`RawConfig`] and builds the
//! [`Config`]. An invalid value is recorded as a [`Problem`] (section, key, line) and
//! replaced by a harmless stand-in, so that checking goes on and every problem is reported
//! at once. This file holds the whole-file rules (at least one listener, no two on one
//! port) and the small sections; `listener.rs` holds one `[[listener]]`.

mod listener;
mod route;
mod store;

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{listener_section, ConfigError, Problem, Section};
use super::raw::{locate_section, RawAdmin, RawAudit, RawConfig, RawDelivery, RawLog, RawNode, RawStore};
use super::types::{
    AdminConfig, AuditConfig, Config, DeliveryConfig, ListenerConfig, LogConfig, LogFormat, LogLevel,
    NodeConfig, StoreConfig, SyslogConfig, DEFAULT_ADMIN_LISTEN, DEFAULT_CERT_EXPIRY_WARNING, DEFAULT_LEASE,
    DEFAULT_SESSION_IDLE_TIMEOUT, DEFAULT_SESSION_LIFETIME, DEFAULT_STORE_PATH, DEFAULT_USERS_FILE,
};
use super::units::{parse_duration, DAY, MINUTE, SECOND};

const RETENTION_BOUNDS: (Duration, Duration) = (MINUTE, Duration::from_secs(36_500 * 24 * 60 * 60));
/// `[admin] session_idle_timeout` and `session_lifetime`: one second (tests) to a week.
const SESSION_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(7 * 24 * 60 * 60));
const CERT_EXPIRY_WARNING_BOUNDS: (Duration, Duration) = (DAY, Duration::from_secs(365 * 24 * 60 * 60));
/// `[delivery] lease`: at least a second (tests take over within seconds), at most an hour
/// (a dead node's lanes wait that long).
const LEASE_BOUNDS: (Duration, Duration) = (SECOND, Duration::from_secs(60 * 60));
/// `[node] name`: at most this many bytes.
const NODE_NAME_MAX: usize = 64;

/// TOML text → [`Config`], or every problem found. Relative paths are resolved against
/// `base` when given (the config file's directory).
pub(super) fn parse(text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError::Toml {
        section: error.span().and_then(|span| locate_section(text, span.start)),
        error: Box::new(error),
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
        let admin = raw.admin.map(|admin| self.admin(admin, &store.path));
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

        let routes = self.routes(raw.route, &listeners);
        let node = self.node(raw.node);
        let delivery = self.delivery(raw.delivery);

        Config { store, admin, log, audit, listeners, routes, node, delivery, warnings: Vec::new() }
    }

    fn node(&mut self, raw: RawNode) -> NodeConfig {
        let name = raw.name.and_then(|name| {
            let span = name.span();
            let name = name.into_inner();
            let fine = !name.is_empty()
                && name.len() <= NODE_NAME_MAX
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if fine {
                Some(name)
            } else {
                self.problem(
                    &Section::Node,
                    "name",
                    Some(span),
                    format!(
                        "must be 1–{NODE_NAME_MAX} characters of A-Z a-z 0-9 . _ -, e.g. \"hl7d-a\" \
                         (leave it out for the host name and process id)"
                    ),
                );
                None
            }
        });
        NodeConfig { name }
    }

    fn delivery(&mut self, raw: RawDelivery) -> DeliveryConfig {
        let lease =
            self.bounded_duration(&Section::Delivery, "lease", raw.lease, DEFAULT_LEASE, LEASE_BOUNDS);
        DeliveryConfig { lease }
    }

    fn store(&mut self, mut raw: RawStore) -> StoreConfig {
        let section = Section::Store;
        let postgres = self.postgres(&mut raw);
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
        StoreConfig { path, retention, postgres }
    }

    fn admin(&mut self, raw: RawAdmin, data_dir: &Path) -> AdminConfig {
        let section = Section::Admin;
        let listen = match raw.listen {
            Some(listen) => self.socket_addr(&section, "listen", listen),
            // The constant is a valid socket address literal.
            None => DEFAULT_ADMIN_LISTEN.parse().expect("valid default admin address"),
        };
        let users = match raw.users {
            Some(users) => self.path(&section, "users", users),
            None => data_dir.join(DEFAULT_USERS_FILE),
        };
        let session_idle_timeout = self.bounded_duration(
            &section,
            "session_idle_timeout",
            raw.session_idle_timeout,
            DEFAULT_SESSION_IDLE_TIMEOUT,
            SESSION_BOUNDS,
        );
        let session_lifetime = self.bounded_duration(
            &section,
            "session_lifetime",
            raw.session_lifetime,
            DEFAULT_SESSION_LIFETIME,
            SESSION_BOUNDS,
        );
        if session_idle_timeout > session_lifetime {
            self.warn(
                &section,
                "session_idle_timeout",
                "longer than session_lifetime: sessions end at session_lifetime all the same",
            );
        }
        let tls = raw.tls.map(|tls| self.tls(&section, tls.into_inner()));
        let admin = AdminConfig {
            listen,
            users,
            metrics_public: raw.metrics_public.unwrap_or(true),
            session_idle_timeout,
            session_lifetime,
            tls,
        };
        if admin.console_refused() && listen.port() != 0 {
            self.warn(
                &section,
                "listen",
                format!(
                    "{listen} is reachable from the network without [admin.tls]: the console, the \
                     API and POST /reload answer 403 there (passwords and tokens would travel in \
                     clear text); /live, /ready{} are served. Set [admin.tls] to use the console",
                    if admin.metrics_public { " and /metrics" } else { "" }
                ),
            );
        }
        admin
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

    /// A humantime duration; `None` (with a problem recorded) if it does not parse.
    fn duration(&mut self, section: &Section, key: &str, raw: Spanned<String>) -> Option<Duration> {
        match parse_duration(raw.get_ref()) {
            Ok(duration) => Some(duration),
            Err(message) => {
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

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use hl7_proto::ack::AckPolicy;
    use hl7_proto::charset::Charset;
    use hl7_proto::mllp::Framing;
    use ipnet::IpNet;

    use super::*;
    use crate::config::testing::{lab, parse_err, parse_ok};
    use crate::config::types::{ClientAuth, TlsVersion, Transport, DEFAULT_HANDSHAKE_TIMEOUT};
    use crate::config::units::HOUR;

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

    #[test]
    fn issue_3_example_parses_with_the_right_values() {
        let config = parse_ok(ISSUE_3_EXAMPLE);
        assert_eq!(config.store.path, PathBuf::from("hl7d-data"));
        assert_eq!(config.store.retention, None);
        assert_eq!(
            config.admin,
            Some(AdminConfig::new("127.0.0.1:9275".parse().unwrap(), "hl7d-data/users.toml"))
        );
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
max_connections_per_ip = 64
max_pending = 8
allow_ips = ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]
proxy_protocol = true
proxy_from = ["10.1.0.5", "10.1.0.6"]
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
        assert_eq!((listener.max_connections_per_ip, listener.max_pending), (64, 8));
        assert_eq!(listener.allow_ips.len(), 3);
        assert_eq!(listener.allow_ips[1], "192.168.1.7/32".parse::<IpNet>().unwrap());
        let proxies = &listener.proxy.as_ref().expect("proxy_protocol = true").from;
        assert_eq!(proxies, &["10.1.0.5/32".parse::<IpNet>().unwrap(), "10.1.0.6/32".parse().unwrap()]);
        assert!(listener.lenient_framing);
        assert_eq!(listener.duplicate_window, None);
        assert_eq!(listener.framing, Framing::new(&[0x02], &[0x1C, 0x0D]).unwrap());
    }

    #[test]
    fn at_least_one_listener() {
        assert_eq!(
            parse_err("[store]\npath = \"x\"\n"),
            "listener: no [[listener]] table: at least one listener is required"
        );
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
    fn duplicate_window_longer_than_retention_warns() {
        let config = parse_ok(&format!("[store]\nretention = \"1h\"\n{}", lab("")));
        assert_eq!(config.warnings.len(), 1);
        assert!(config.warnings[0].contains("duplicate_window: longer than [store] retention (1h)"));
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

    /// Issue 16: `[node] name` and `[delivery] lease`, with their defaults and bounds.
    #[test]
    fn node_name_and_delivery_lease() {
        let config = parse_ok(&lab(""));
        assert_eq!(config.node, NodeConfig::default());
        assert_eq!(config.delivery.lease, Duration::from_secs(30));
        let default_name = config.node.resolved_name();
        assert!(default_name.ends_with(&format!("-{}", std::process::id())), "{default_name}");

        let config =
            parse_ok(&format!("[node]\nname = \"hl7d-a.1\"\n[delivery]\nlease = \"2s\"\n{}", lab("")));
        assert_eq!(config.node.resolved_name(), "hl7d-a.1");
        assert_eq!(config.delivery.lease, Duration::from_secs(2));

        for bad in ["", "a b", "ünï"] {
            let error = parse_err(&format!("[node]\nname = \"{bad}\"\n{}", lab("")));
            assert!(error.starts_with("node: name: must be 1–64 characters"), "{error}");
        }
        assert!(parse_err(&format!("[node]\nname = \"{}\"\n{}", "n".repeat(65), lab("")))
            .starts_with("node: name:"));
        assert!(parse_err(&format!("[delivery]\nlease = \"500ms\"\n{}", lab("")))
            .starts_with("delivery: lease: must be at least 1s"));
        assert!(parse_err(&format!("[delivery]\nlease = \"2h\"\n{}", lab("")))
            .starts_with("delivery: lease: must be at most 1h"));
        assert!(parse_err(&format!("[delivery]\nleases = \"2s\"\n{}", lab(""))).contains("unknown field"));
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
            open.warnings[0]
                .starts_with("admin: listen: 0.0.0.0:9275 is reachable from the network without [admin.tls]"),
            "{:?}",
            open.warnings
        );
        assert!(open.admin.unwrap().console_refused());
        let with_tls = parse_ok(&format!(
            "[admin]\nlisten = \"0.0.0.0:9275\"\n[admin.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{}",
            lab("")
        ));
        assert!(with_tls.warnings.is_empty(), "{:?}", with_tls.warnings);
        assert!(!with_tls.admin.unwrap().console_refused());
    }

    #[test]
    fn admin_console_keys() {
        let config = parse_ok(&format!(
            "[store]\npath = \"/var/lib/hl7d\"\n[admin]\nmetrics_public = false\nsession_idle_timeout = \"10m\"\n\
             session_lifetime = \"8h\"\n[admin.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_auth = \"required\"\n\
             client_thumbprints = [\"sha256:{}\"]\n{}",
            "ab".repeat(32),
            lab("")
        ));
        let admin = config.admin.clone().unwrap();
        assert_eq!(
            admin.users,
            PathBuf::from("/var/lib/hl7d/users.toml"),
            "in the data directory by default"
        );
        assert_eq!(config.users_file(), admin.users);
        assert!(!admin.metrics_public);
        assert_eq!((admin.session_idle_timeout, admin.session_lifetime), (10 * MINUTE, 8 * HOUR));
        let tls = admin.tls.unwrap();
        assert_eq!(tls.cert, PathBuf::from("c.pem"));
        assert!(
            matches!(tls.client_auth, ClientAuth::Required { ref thumbprints, .. } if thumbprints.len() == 1)
        );
        let own = parse_ok(&format!("[admin]\nusers = \"/etc/hl7d/users.toml\"\n{}", lab("")));
        assert_eq!(own.users_file(), PathBuf::from("/etc/hl7d/users.toml"));
        assert_eq!(parse_ok(&lab("")).users_file(), PathBuf::from("hl7d-data/users.toml"), "no [admin]");

        let error = parse_err(&format!("[admin]\nsession_lifetime = \"30d\"\n[admin.tls]\ncert = \"c\"\nkey = \"k\"\nclient_auth = \"required\"\n{}", lab("")));
        assert!(error.contains("admin: session_lifetime: must be at most 7days"), "{error}");
        assert!(error.contains("admin: tls.client_thumbprints: client_auth = \"required\" needs"), "{error}");
        let short = parse_ok(&format!("[admin]\nsession_idle_timeout = \"13h\"\n{}", lab("")));
        assert!(short.warnings[0].contains("longer than session_lifetime"), "{:?}", short.warnings);
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
