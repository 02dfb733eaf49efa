//! One `[[listener]]` table (with its `[listener.tls]` and `[listener.framing]`) → a
//! [`ListenerConfig`]: name, address, transport, ACK policy, encoding, timeouts, limits,
//! allowed networks, framing and duplicate window. The rules that compare listeners with
//! each other are in `validate/mod.rs`.

use std::net::IpAddr;
use std::time::Duration;

use hl7_proto::ack::AckPolicy;
use hl7_proto::charset::{Charset, CONFIG_NAMES};
use hl7_proto::hex;
use hl7_proto::mllp::{Framing, MAX_MARKER_LEN};
use ipnet::IpNet;
use toml::Spanned;

use super::Builder;
use crate::config::error::{listener_section, Section};
use crate::config::raw::{RawFraming, RawListener, RawSize, RawTls};
use crate::config::types::{
    ClientAuth, ListenerConfig, ProxyProtocol, TlsConfig, TlsVersion, Transport, DEFAULT_DUPLICATE_WINDOW,
    DEFAULT_FRAME_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_PENDING, DEFAULT_WRITE_TIMEOUT,
};
use crate::config::units::{format_size, parse_size, DAY, HOUR, KIB, MIB, MINUTE, SECOND};
use crate::tls::thumbprint::Thumbprint;

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

impl Builder<'_> {
    pub(super) fn listener(&mut self, index: usize, raw: RawListener) -> ListenerConfig {
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
        let max_connections_per_ip = self.share_of_connections(
            &section,
            "max_connections_per_ip",
            raw.max_connections_per_ip,
            DEFAULT_MAX_CONNECTIONS_PER_IP,
            max_connections,
        );
        let max_pending = self.share_of_connections(
            &section,
            "max_pending",
            raw.max_pending,
            DEFAULT_MAX_PENDING,
            max_connections,
        );

        let allow_ips = raw
            .allow_ips
            .into_iter()
            .enumerate()
            .filter_map(|(i, rule)| self.ip_net(&section, &format!("allow_ips[{i}]"), rule))
            .collect();
        let proxy = self.proxy(&section, raw.proxy_protocol, raw.proxy_from);

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
            max_connections_per_ip,
            max_pending,
            allow_ips,
            proxy,
            framing,
            lenient_framing: raw.lenient_framing,
            duplicate_window,
        }
    }

    /// A limit on part of the listener's connections (`max_connections_per_ip`,
    /// `max_pending`): 1 ..= `max_connections`, since a larger one could never apply. Unset,
    /// it is `default`, or `max_connections` when that is lower, so that a small
    /// `max_connections` alone stays a valid configuration.
    fn share_of_connections(
        &mut self,
        section: &Section,
        key: &str,
        raw: Option<Spanned<i64>>,
        default: usize,
        max_connections: usize,
    ) -> usize {
        let fallback = default.min(max_connections);
        let Some(value) = raw else { return fallback };
        let span = value.span();
        let message = match usize::try_from(*value.get_ref()) {
            Ok(count) if (1..=max_connections).contains(&count) => return count,
            Ok(count) if count > max_connections && count <= MAX_CONNECTIONS => format!(
                "{count} is above max_connections ({max_connections}), so it could never apply: \
                 lower it or raise max_connections"
            ),
            _ => format!("{} is out of range 1..=max_connections ({max_connections})", value.get_ref()),
        };
        self.problem(section, key, Some(span), message);
        fallback
    }

    /// `proxy_protocol` and `proxy_from`: both or neither. A list without the switch is an
    /// error rather than ignored (whoever wrote it meant connections to come through those
    /// proxies), and a list that trusts every address is allowed with a warning.
    fn proxy(
        &mut self,
        section: &Section,
        switch: Option<Spanned<bool>>,
        from: Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<ProxyProtocol> {
        let switch_span = switch.as_ref().map(Spanned::span);
        let on = switch.is_some_and(Spanned::into_inner);
        let from_span = from.as_ref().map(Spanned::span);
        let entries = from.map(Spanned::into_inner).unwrap_or_default();
        let listed = !entries.is_empty();
        let mut nets = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let key = format!("proxy_from[{i}]");
            let Some(net) = self.ip_net(section, &key, entry) else { continue };
            if net.prefix_len() == 0 {
                self.warn(
                    section,
                    &key,
                    format!(
                        "{net} trusts every address to name its own client: any host that can connect                          can pose as any sender, past allow_ips and max_connections_per_ip; list the                          load balancers' addresses"
                    ),
                );
            }
            nets.push(net);
        }
        match (on, listed) {
            (true, false) => {
                self.problem(
                    section,
                    "proxy_from",
                    from_span.or(switch_span),
                    "proxy_protocol = true needs the load balancers' addresses, e.g. \
                     proxy_from = [\"10.0.0.5\", \"10.0.0.6\"]",
                );
                None
            }
            // Entries that did not parse are reported one by one.
            (true, true) => (!nets.is_empty()).then_some(ProxyProtocol { from: nets }),
            (false, _) if from_span.is_some() => {
                self.problem(
                    section,
                    "proxy_from",
                    from_span,
                    "set but proxy_protocol is not true, so no PROXY header would be read: set \
                     proxy_protocol = true or remove the list",
                );
                None
            }
            (false, _) => None,
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

    /// One `[listener.tls]` (or `[admin.tls]`: the same keys, named `tls.…` in problems).
    pub(super) fn tls(&mut self, section: &Section, raw: RawTls) -> TlsConfig {
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
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::path::PathBuf;

    use super::*;
    use crate::config::testing::{hex, lab, parse_err, parse_ok, SHA1_HEX, SHA256_HEX};

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
    fn per_ip_and_pending_limits_default_within_max_connections() {
        let listener = &parse_ok(&lab("")).listeners[0];
        assert_eq!((listener.max_connections_per_ip, listener.max_pending), (32, 16));
        // A small max_connections alone stays valid: the defaults follow it down.
        let listener = &parse_ok(&lab("max_connections = 10")).listeners[0];
        assert_eq!((listener.max_connections_per_ip, listener.max_pending), (10, 10));
        let listener =
            &parse_ok(&lab("max_connections = 500\nmax_connections_per_ip = 500\nmax_pending = 1")).listeners
                [0];
        assert_eq!((listener.max_connections_per_ip, listener.max_pending), (500, 1));
    }

    #[test]
    fn per_ip_and_pending_limits_are_bounded_by_max_connections() {
        for key in ["max_connections_per_ip", "max_pending"] {
            for bad in ["0", "-5", "100001"] {
                assert_eq!(
                    parse_err(&lab(&format!("{key} = {bad}"))),
                    format!(
                        "listener \"lab\": {key}: {bad} is out of range 1..=max_connections (100) (line 5)"
                    )
                );
            }
            assert_eq!(
                parse_err(&lab(&format!("max_connections = 20\n{key} = 21"))),
                format!(
                    "listener \"lab\": {key}: 21 is above max_connections (20), so it could never apply: \
                     lower it or raise max_connections (line 6)"
                )
            );
        }
        assert!(parse_err(&lab("max_pending = \"16\"")).contains("invalid type"));
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
    fn bad_thumbprint_names_its_entry() {
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
    fn proxy_protocol_with_its_proxies() {
        let config = parse_ok(&lab("proxy_protocol = true\nproxy_from = [\"10.0.0.5\", \"2001:db8::/64\"]"));
        let proxy = config.listeners[0].proxy.as_ref().expect("proxy_protocol on");
        assert_eq!(
            proxy.from,
            vec!["10.0.0.5/32".parse::<IpNet>().unwrap(), "2001:db8::/64".parse().unwrap()]
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        // Off by default, and off when said so.
        assert_eq!(parse_ok(&lab("")).listeners[0].proxy, None);
        assert_eq!(parse_ok(&lab("proxy_protocol = false")).listeners[0].proxy, None);
    }

    #[test]
    fn proxy_protocol_needs_proxy_from_and_the_list_needs_the_switch() {
        assert_eq!(
            parse_err(&lab("proxy_protocol = true")),
            "listener \"lab\": proxy_from: proxy_protocol = true needs the load balancers' addresses, \
             e.g. proxy_from = [\"10.0.0.5\", \"10.0.0.6\"] (line 5)"
        );
        assert!(parse_err(&lab("proxy_protocol = true\nproxy_from = []"))
            .starts_with("listener \"lab\": proxy_from: proxy_protocol = true needs"));
        for switch in ["", "proxy_protocol = false\n"] {
            let error = parse_err(&lab(&format!("{switch}proxy_from = [\"10.0.0.5\"]")));
            assert!(
                error.starts_with("listener \"lab\": proxy_from: set but proxy_protocol is not true"),
                "{error}"
            );
        }
        let error = parse_err(&lab("proxy_protocol = true\nproxy_from = [\"10.0.0.5\", \"10.0.0/8\"]"));
        assert_eq!(error, "listener \"lab\": proxy_from[1]: invalid address or CIDR \"10.0.0/8\" (line 6)");
        assert!(parse_err(&lab("proxy_protocol = \"yes\"")).contains("invalid type"));
    }

    #[test]
    fn proxy_from_everyone_is_a_warning() {
        for everyone in ["0.0.0.0/0", "::/0"] {
            let config = parse_ok(&lab(&format!("proxy_protocol = true\nproxy_from = [{everyone:?}]")));
            assert!(config.listeners[0].proxy.is_some());
            assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
            assert!(
                config.warnings[0].starts_with(&format!(
                    "listener \"lab\": proxy_from[0]: {everyone} trusts every address to name its own client"
                )),
                "{:?}",
                config.warnings
            );
        }
        // Host bits are cleared with a warning, as in allow_ips.
        let config = parse_ok(&lab("proxy_protocol = true\nproxy_from = [\"10.0.0.5/8\"]"));
        assert_eq!(
            config.listeners[0].proxy.as_ref().unwrap().from,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert!(config.warnings[0].contains("proxy_from[0]: \"10.0.0.5/8\" has host bits set"));
    }

    #[test]
    fn allow_ips_from_config_accept_single_addresses() {
        let config = parse_ok(&lab("allow_ips = [\"127.0.0.1\", \"::1\", \"10.0.0.0/8\"]"));
        let listener = &config.listeners[0];
        assert!(listener.allows(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(listener.allows(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!listener.allows(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    }
}
