//! One `[[route]]` table (with its `[route.tls]`, `[route.http]` and `[route.file]`) → a
//! [`RouteConfig`]. The rules that compare routes with each other or with the listeners
//! (names unique, `listeners` naming listeners that exist) are in [`Builder::routes`].

use std::time::Duration;

use hl7_proto::keys::LaneOrder;
use toml::Spanned;

use super::Builder;
use crate::config::error::{route_section, Section};
use crate::config::file_name::FileName;
use crate::config::raw::{RawRoute, RawRouteFile, RawRouteHttp, RawRouteTls};
use crate::config::route::{
    OnApplicationError, RouteConfig, RouteFile, RouteHttp, RouteTarget, RouteTls, SecretValue,
    DEFAULT_IN_FLIGHT, DEFAULT_PARK_AFTER, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
    DEFAULT_ROUTE_ACK_TIMEOUT,
};
use crate::config::types::ListenerConfig;
use crate::config::units::{DAY, HOUR};
use crate::tls::thumbprint::Thumbprint;

const MAX_NAME_LEN: usize = 64;
/// Most lanes of one route in flight at once.
pub const MAX_IN_FLIGHT: usize = 256;
const RETRY_INITIAL_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), HOUR);
const RETRY_MAX_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), DAY);
/// `park_after = "0s"` parks at the first failure.
const PARK_AFTER_BOUNDS: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(365 * 24 * 60 * 60));
const ACK_TIMEOUT_BOUNDS: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(10 * 60));
/// Request headers hl7d sets itself: a route cannot set them.
const RESERVED_HEADERS: [&str; 5] =
    ["content-type", "content-length", "host", "transfer-encoding", "connection"];

impl Builder<'_> {
    /// Every `[[route]]`, checked alone and against each other and `listeners`.
    pub(super) fn routes(&mut self, raw: Vec<RawRoute>, listeners: &[ListenerConfig]) -> Vec<RouteConfig> {
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
        for (index, raw_route) in raw.into_iter().enumerate() {
            let name_span = raw_route.name.span();
            let route = self.route(index, raw_route, listeners);
            if let Some(other) =
                routes.iter().position(|other| !route.name.is_empty() && other.name == route.name)
            {
                let section = route_section(index, &route.name);
                self.problem(
                    &section,
                    "name",
                    Some(name_span),
                    format!("already used by route #{}", other + 1),
                );
            }
            routes.push(route);
        }
        routes
    }

    fn route(&mut self, index: usize, raw: RawRoute, listeners: &[ListenerConfig]) -> RouteConfig {
        let name = raw.name.get_ref().clone();
        let section = route_section(index, &name);
        self.check_route_name(&section, &raw.name);
        let to = self.route_target(&section, raw.to);

        let listener_names = raw.listeners.map(|names| {
            let span = names.span();
            let names = names.into_inner();
            if names.is_empty() {
                let message = "is empty, so the route would take no message: leave it out for every listener";
                self.problem(&section, "listeners", Some(span), message);
            }
            names
                .into_iter()
                .enumerate()
                .map(|(i, listener)| {
                    if listeners.iter().all(|l| l.name != *listener.get_ref()) {
                        let known: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
                        let message = format!(
                            "no listener is called {:?} (listeners: {})",
                            listener.get_ref(),
                            known.join(", ")
                        );
                        self.problem(&section, &format!("listeners[{i}]"), Some(listener.span()), message);
                    }
                    listener.into_inner()
                })
                .collect()
        });

        let message_types = raw.message_types.map_or_else(Vec::new, |types| {
            let span = types.span();
            let types = types.into_inner();
            if types.is_empty() {
                let message = "is empty, so the route would take no message: leave it out for every type";
                self.problem(&section, "message_types", Some(span), message);
            }
            types
                .into_iter()
                .enumerate()
                .map(|(i, pattern)| {
                    if let Err(message) = check_type_pattern(pattern.get_ref()) {
                        self.problem(&section, &format!("message_types[{i}]"), Some(pattern.span()), message);
                    }
                    pattern.into_inner()
                })
                .collect()
        });

        let order = raw.order.map_or(LaneOrder::PerPatient, |order| {
            LaneOrder::from_config_name(order.get_ref()).unwrap_or_else(|| {
                let message = format!("{:?}: expected per_patient, per_sender or strict", order.get_ref());
                self.problem(&section, "order", Some(order.span()), message);
                LaneOrder::PerPatient
            })
        });

        let mut in_flight =
            raw.in_flight.map_or(DEFAULT_IN_FLIGHT, |count| match usize::try_from(*count.get_ref()) {
                Ok(count) if (1..=MAX_IN_FLIGHT).contains(&count) => count,
                _ => {
                    let message = format!("{} is out of range 1..={MAX_IN_FLIGHT}", count.get_ref());
                    self.problem(&section, "in_flight", Some(count.span()), message);
                    DEFAULT_IN_FLIGHT
                }
            });
        if order == LaneOrder::Strict && in_flight > 1 {
            self.warn(
                &section,
                "in_flight",
                format!("{in_flight} has no effect with order = \"strict\": one lane, one message at a time"),
            );
            in_flight = 1;
        }

        let retry_initial = self.bounded_duration(
            &section,
            "retry_initial",
            raw.retry_initial,
            DEFAULT_RETRY_INITIAL,
            RETRY_INITIAL_BOUNDS,
        );
        let retry_max_span = raw.retry_max.as_ref().map(Spanned::span);
        let mut retry_max =
            self.bounded_duration(&section, "retry_max", raw.retry_max, DEFAULT_RETRY_MAX, RETRY_MAX_BOUNDS);
        if retry_max < retry_initial {
            let message = format!(
                "{} is below retry_initial ({})",
                humantime::format_duration(retry_max),
                humantime::format_duration(retry_initial)
            );
            self.problem(&section, "retry_max", retry_max_span, message);
            retry_max = retry_initial;
        }
        let park_after = self.bounded_duration(
            &section,
            "park_after",
            raw.park_after,
            DEFAULT_PARK_AFTER,
            PARK_AFTER_BOUNDS,
        );
        let on_application_error = raw.on_application_error.map_or(OnApplicationError::Park, |value| {
            match value.get_ref().as_str() {
                "park" => OnApplicationError::Park,
                "retry" => OnApplicationError::Retry,
                other => {
                    let message = format!("{other:?}: expected park or retry");
                    self.problem(&section, "on_application_error", Some(value.span()), message);
                    OnApplicationError::Park
                }
            }
        });
        let ack_timeout = self.bounded_duration(
            &section,
            "ack_timeout",
            raw.ack_timeout,
            DEFAULT_ROUTE_ACK_TIMEOUT,
            ACK_TIMEOUT_BOUNDS,
        );

        let (tls_wanted, http_wanted, file_wanted) = match &to {
            Some(RouteTarget::Mllp { tls, .. }) => (*tls, false, false),
            Some(RouteTarget::Http { tls, .. }) => (*tls, true, false),
            Some(RouteTarget::File { .. }) => (false, false, true),
            // `to` is wrong already: check the tables as if they fit.
            None => (true, true, true),
        };
        let tls = match raw.tls {
            None => RouteTls::default(),
            Some(tls) => {
                if !tls_wanted {
                    let message = "[route.tls] is only used with mllps:// and https:// routes";
                    self.problem(&section, "tls", Some(tls.span()), message);
                }
                self.route_tls(&section, tls.into_inner())
            }
        };
        let http = match raw.http {
            None => RouteHttp::default(),
            Some(http) => {
                if !http_wanted {
                    let message = "[route.http] is only used with http:// and https:// routes";
                    self.problem(&section, "http", Some(http.span()), message);
                }
                self.route_http(&section, http.into_inner())
            }
        };
        let file = match raw.file {
            None => RouteFile::default(),
            Some(file) => {
                if !file_wanted {
                    let message = "[route.file] is only used with file:// routes";
                    self.problem(&section, "file", Some(file.span()), message);
                }
                self.route_file(&section, file.into_inner())
            }
        };

        RouteConfig {
            name,
            // A stand-in when `to` is invalid (a problem is recorded, so it is never used).
            to: to.unwrap_or(RouteTarget::File { dir: "/".into() }),
            listeners: listener_names,
            message_types,
            order,
            in_flight,
            retry_initial,
            retry_max,
            park_after,
            on_application_error,
            ack_timeout,
            tls,
            http,
            file,
        }
    }

    fn check_route_name(&mut self, section: &Section, name: &Spanned<String>) {
        let value = name.get_ref();
        let message = if value.is_empty() {
            "must not be empty".to_owned()
        } else if value.len() > MAX_NAME_LEN {
            format!("is {} characters long; at most {MAX_NAME_LEN} are allowed", value.len())
        } else if let Some(bad) =
            value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')))
        {
            format!("{value:?} contains {bad:?}: use only lower-case letters, digits, '_' and '-'")
        } else {
            return;
        };
        self.problem(section, "name", Some(name.span()), message);
    }

    /// `to`: `mllp://host:port`, `mllps://host:port`, `http(s)://…`, `file:///dir`.
    fn route_target(&mut self, section: &Section, raw: Spanned<String>) -> Option<RouteTarget> {
        match parse_target(raw.get_ref().trim()) {
            Ok(target) => Some(target),
            Err(reason) => {
                self.problem(section, "to", Some(raw.span()), format!("{:?}: {reason}", raw.get_ref()));
                None
            }
        }
    }

    fn route_tls(&mut self, section: &Section, raw: RawRouteTls) -> RouteTls {
        let ca = raw.ca.map(|ca| self.path(section, "tls.ca", ca));
        let pin = raw.pin.and_then(|pin| match pin.get_ref().parse::<Thumbprint>() {
            Ok(thumbprint) => Some(thumbprint),
            Err(error) => {
                self.problem(section, "tls.pin", Some(pin.span()), format!("{:?} {error}", pin.get_ref()));
                None
            }
        });
        let cert_span = raw.cert.as_ref().map(Spanned::span);
        let key_span = raw.key.as_ref().map(Spanned::span);
        let cert = raw.cert.map(|cert| self.path(section, "tls.cert", cert));
        let key = raw.key.map(|key| self.path(section, "tls.key", key));
        match (&cert, &key) {
            (Some(_), None) => self.problem(
                section,
                "tls.key",
                cert_span,
                "tls.cert is set without tls.key: set both or neither",
            ),
            (None, Some(_)) => self.problem(
                section,
                "tls.cert",
                key_span,
                "tls.key is set without tls.cert: set both or neither",
            ),
            _ => {}
        }
        let server_name = raw.server_name.and_then(|name| {
            let value = name.get_ref().trim();
            if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '/') {
                let message = format!("{:?}: expected a DNS name or an IP address", name.get_ref());
                self.problem(section, "tls.server_name", Some(name.span()), message);
                None
            } else {
                Some(value.to_owned())
            }
        });
        RouteTls { ca, pin, cert, key, server_name }
    }

    fn route_http(&mut self, section: &Section, raw: RawRouteHttp) -> RouteHttp {
        let mut headers = Vec::new();
        for (name, value) in raw.headers {
            let key = format!("http.headers.{name}");
            let lower = name.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                let message = format!("{name:?} is not a valid header name");
                self.problem(section, &key, Some(value.span()), message);
                continue;
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-hl7d-") {
                let message = format!("{name} is set by hl7d itself and cannot be configured");
                self.problem(section, &key, Some(value.span()), message);
                continue;
            }
            if let Some(secret) = self.secret(section, &key, value) {
                headers.push((name, secret));
            }
        }
        let sign_secret = raw.sign_secret.and_then(|secret| self.secret(section, "http.sign_secret", secret));
        RouteHttp { headers, sign_secret }
    }

    /// A literal or `env:NAME`; checked for form only (the variable is read when the route
    /// starts, so that `check-config` needs no secrets).
    fn secret(&mut self, section: &Section, key: &str, raw: Spanned<String>) -> Option<SecretValue> {
        let span = raw.span();
        let value = SecretValue::parse(raw.get_ref());
        let message = match &value {
            SecretValue::Env(name)
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                format!("env:{name}: expected env:NAME with NAME made of letters, digits and '_'")
            }
            SecretValue::Literal(text) if text.bytes().any(|b| b.is_ascii_control()) => {
                "must not contain control characters".to_owned()
            }
            _ => return Some(value),
        };
        self.problem(section, key, Some(span), message);
        None
    }

    fn route_file(&mut self, section: &Section, raw: RawRouteFile) -> RouteFile {
        let Some(name) = raw.name else { return RouteFile::default() };
        match FileName::parse(name.get_ref()) {
            Ok(template) => RouteFile { name: template },
            Err(reason) => {
                self.problem(
                    section,
                    "file.name",
                    Some(name.span()),
                    format!("{:?} {reason}", name.get_ref()),
                );
                RouteFile::default()
            }
        }
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A `message_types` glob: `TYPE^EVENT` with `*` (any text) and `?` (one character); a
/// pattern without `^` is a message type with any event.
fn check_type_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if pattern.matches('^').count() > 1 {
        return Err(format!("{pattern:?}: expected TYPE^EVENT (MSH-9.1 and MSH-9.2), e.g. \"ADT^A*\""));
    }
    if let Some(bad) = pattern.chars().find(|c| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']'))
    {
        return Err(format!("{pattern:?} contains {bad:?}: only text, '*' and '?' are allowed"));
    }
    Ok(())
}

fn parse_target(text: &str) -> Result<RouteTarget, String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("expected mllp://HOST:PORT, mllps://, http://, https:// or file:///DIR")?;
    match scheme.to_ascii_lowercase().as_str() {
        scheme @ ("mllp" | "mllps") => {
            let address = rest.trim_end_matches('/');
            if address.contains(['/', '?', '#', '@']) {
                return Err("expected HOST:PORT after the scheme, nothing else".to_owned());
            }
            let (host, port) = address.rsplit_once(':').ok_or("no port: expected HOST:PORT")?;
            let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            if bare.is_empty() || bare.contains([' ', '[', ']']) || (bare.contains(':') && bare == host) {
                return Err("expected HOST:PORT (an IPv6 address in brackets: [::1]:2575)".to_owned());
            }
            match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("invalid port {port:?}")),
                Ok(_) => {}
            }
            Ok(RouteTarget::Mllp {
                address: address.to_owned(),
                host: bare.to_owned(),
                tls: scheme == "mllps",
            })
        }
        scheme @ ("http" | "https") => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            if host.is_empty() || host.starts_with(':') || text.contains(char::is_whitespace) {
                return Err("expected http(s)://HOST[:PORT]/PATH".to_owned());
            }
            Ok(RouteTarget::Http { url: text.to_owned(), tls: scheme == "https" })
        }
        "file" => {
            let dir = rest;
            if !dir.starts_with('/') {
                return Err("expected file:///DIR with an absolute directory (three slashes)".to_owned());
            }
            if dir.split('/').any(|part| part == "..") {
                return Err("the directory must not contain '..'".to_owned());
            }
            Ok(RouteTarget::File { dir: dir.into() })
        }
        other => Err(format!("unknown scheme {other:?}: expected mllp, mllps, http, https or file")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::testing::{lab, parse_err, parse_ok};
    use crate::config::{Config, ConfigError, Section};

    /// Two listeners (lab, adt) and the route table `route`.
    fn with_route(route: &str) -> String {
        format!(
            "{}[[listener]]\nname = \"adt\"\nlisten = \"127.0.0.1:2576\"\nplaintext = true\n[[route]]\n{route}\n",
            lab("")
        )
    }

    /// The issue's `[[route]]` example, verbatim but for the `ca` path.
    const ISSUE_15_EXAMPLE: &str = r#"
[[route]]
name = "engine"                      # unique, [a-z0-9_-]+
to = "mllps://engine.example:6661"   # mllp://host:port | mllps://host:port | http://… | https://… | file:///dir
listeners = ["lab", "adt"]           # optional, default: every listener
message_types = ["ADT^A*", "ORU^R01"]  # optional MSH-9 globs on TYPE^EVENT, default: all
order = "per_patient"                # per_patient (default) | per_sender | strict
in_flight = 1                        # lanes delivered at the same time (strict forces 1)
retry_initial = "1s"                 # exponential backoff with jitter …
retry_max = "5m"                     # … capped here
park_after = "24h"                   # a message still failing after this is parked
on_application_error = "park"        # AE/CE: park (default) | retry
ack_timeout = "30s"                  # mllp: wait this long for the ACK
[route.tls]                          # mllps/https: same meanings as `hl7d send`
ca = "/etc/hl7d/engine-ca.pem"       # also: pin, cert, key, server_name
"#;

    #[test]
    fn the_issue_example_parses() {
        let text = format!(
            "{}[[listener]]\nname = \"adt\"\nlisten = \"127.0.0.1:2576\"\nplaintext = true\n{ISSUE_15_EXAMPLE}",
            lab("")
        );
        let config = parse_ok(&text);
        assert_eq!(config.routes.len(), 1);
        let route = &config.routes[0];
        assert_eq!(route.name, "engine");
        assert_eq!(
            route.to,
            RouteTarget::Mllp {
                address: "engine.example:6661".into(),
                host: "engine.example".into(),
                tls: true
            }
        );
        assert_eq!(route.listeners, Some(vec!["lab".to_owned(), "adt".to_owned()]));
        assert_eq!(route.message_types, ["ADT^A*", "ORU^R01"]);
        assert_eq!(route.order, LaneOrder::PerPatient);
        assert_eq!(route.in_flight, 1);
        assert_eq!(
            (route.retry_initial, route.retry_max),
            (Duration::from_secs(1), Duration::from_secs(300))
        );
        assert_eq!(route.park_after, DAY);
        assert_eq!(route.on_application_error, OnApplicationError::Park);
        assert_eq!(route.ack_timeout, Duration::from_secs(30));
        assert_eq!(route.tls.ca, Some(PathBuf::from("/etc/hl7d/engine-ca.pem")));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn defaults_and_every_other_key() {
        let config = parse_ok(&with_route("name = \"files\"\nto = \"file:///var/spool/hl7\""));
        let route = &config.routes[0];
        assert_eq!(route.to, RouteTarget::File { dir: "/var/spool/hl7".into() });
        assert_eq!(route.listeners, None);
        assert!(route.message_types.is_empty());
        assert_eq!(route.order, LaneOrder::PerPatient);
        assert_eq!(route.in_flight, DEFAULT_IN_FLIGHT);
        assert_eq!(route.retry_initial, DEFAULT_RETRY_INITIAL);
        assert_eq!(route.retry_max, DEFAULT_RETRY_MAX);
        assert_eq!(route.park_after, DEFAULT_PARK_AFTER);
        assert_eq!(route.ack_timeout, DEFAULT_ROUTE_ACK_TIMEOUT);
        assert_eq!(route.file, RouteFile::default());
        assert!(parse_ok(&lab("")).routes.is_empty());

        std::env::remove_var("HL7D_TEST_NOT_SET");
        let config = parse_ok(&with_route(
            "name = \"web-1\"\nto = \"https://user@app.example:8443/hl7?x=1\"\norder = \"per_sender\"\n\
             in_flight = 8\nretry_initial = \"200ms\"\nretry_max = \"2s\"\npark_after = \"0s\"\n\
             on_application_error = \"retry\"\nack_timeout = \"250ms\"\n\
             [route.tls]\npin = \"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n\
             cert = \"c.pem\"\nkey = \"k.pem\"\nserver_name = \"app.internal\"\n\
             [route.http]\nheaders = { \"Authorization\" = \"env:HL7D_TEST_NOT_SET\", \"X-Tenant\" = \"a\" }\n\
             sign_secret = \"env:WEBHOOK_SECRET\"\n",
        ));
        let route = &config.routes[0];
        assert_eq!(
            route.to,
            RouteTarget::Http { url: "https://user@app.example:8443/hl7?x=1".into(), tls: true }
        );
        assert_eq!(route.order, LaneOrder::PerSender);
        assert_eq!(route.in_flight, 8);
        assert_eq!(
            (route.retry_initial, route.retry_max),
            (Duration::from_millis(200), Duration::from_secs(2))
        );
        assert_eq!(route.park_after, Duration::ZERO);
        assert_eq!(route.on_application_error, OnApplicationError::Retry);
        assert_eq!(route.ack_timeout, Duration::from_millis(250));
        assert!(route.tls.pin.is_some());
        assert_eq!(
            (route.tls.cert.as_deref(), route.tls.key.as_deref()),
            (Some("c.pem".as_ref()), Some("k.pem".as_ref()))
        );
        assert_eq!(route.tls.server_name.as_deref(), Some("app.internal"));
        // Checked for form only: the variable need not be set for the file to be valid.
        assert_eq!(
            route.http.headers,
            [
                ("Authorization".to_owned(), SecretValue::Env("HL7D_TEST_NOT_SET".into())),
                ("X-Tenant".to_owned(), SecretValue::Literal("a".into()))
            ]
        );
        assert_eq!(route.http.sign_secret, Some(SecretValue::Env("WEBHOOK_SECRET".into())));

        let config = parse_ok(&with_route(
            "name = \"f\"\nto = \"file:///d\"\n[route.file]\nname = \"{listener}/{id}.hl7\"",
        ));
        assert_eq!(config.routes[0].file.name.as_str(), "{listener}/{id}.hl7");
        let config = parse_ok(&with_route("name = \"m\"\nto = \"mllp://[::1]:2575\""));
        assert_eq!(
            config.routes[0].to,
            RouteTarget::Mllp { address: "[::1]:2575".into(), host: "::1".into(), tls: false }
        );
    }

    #[test]
    fn strict_forces_one_lane_in_flight_with_a_warning() {
        let config =
            parse_ok(&with_route("name = \"s\"\nto = \"file:///d\"\norder = \"strict\"\nin_flight = 4"));
        assert_eq!(config.routes[0].in_flight, 1);
        assert_eq!(config.warnings.len(), 1);
        assert!(
            config.warnings[0].starts_with("route \"s\": in_flight: 4 has no effect"),
            "{:?}",
            config.warnings
        );
        let quiet = parse_ok(&with_route("name = \"s\"\nto = \"file:///d\"\norder = \"strict\""));
        assert!(quiet.warnings.is_empty());
    }

    #[test]
    fn each_rule_names_the_route_and_the_key() {
        let cases: &[(&str, &str)] = &[
            ("name = \"Engine\"\nto = \"file:///d\"", "route \"Engine\": name: \"Engine\" contains 'E'"),
            ("name = \"\"\nto = \"file:///d\"", "route #1: name: must not be empty"),
            ("name = \"a.b\"\nto = \"file:///d\"", "route \"a.b\": name: \"a.b\" contains '.'"),
            ("name = \"r\"\nto = \"ftp://x\"", "route \"r\": to: \"ftp://x\": unknown scheme \"ftp\""),
            ("name = \"r\"\nto = \"engine:6661\"", "route \"r\": to: \"engine:6661\": expected mllp://"),
            ("name = \"r\"\nto = \"mllp://engine\"", "to: \"mllp://engine\": no port"),
            ("name = \"r\"\nto = \"mllp://engine:0\"", "invalid port \"0\""),
            ("name = \"r\"\nto = \"mllp://engine:66000\"", "invalid port \"66000\""),
            ("name = \"r\"\nto = \"mllp://::1:2575\"", "IPv6 address in brackets"),
            ("name = \"r\"\nto = \"mllp://h:1/path\"", "nothing else"),
            ("name = \"r\"\nto = \"https:///x\"", "expected http(s)://HOST"),
            ("name = \"r\"\nto = \"file://spool\"", "absolute directory"),
            ("name = \"r\"\nto = \"file:///a/../b\"", "must not contain '..'"),
            (
                "name = \"r\"\nto = \"file:///d\"\nlisteners = [\"lab\", \"nope\"]",
                "route \"r\": listeners[1]: no listener is called \"nope\"",
            ),
            ("name = \"r\"\nto = \"file:///d\"\nlisteners = []", "listeners: is empty"),
            ("name = \"r\"\nto = \"file:///d\"\nmessage_types = []", "message_types: is empty"),
            (
                "name = \"r\"\nto = \"file:///d\"\nmessage_types = [\"ADT^A01^ADT_A01\"]",
                "message_types[0]: \"ADT^A01^ADT_A01\": expected TYPE^EVENT",
            ),
            ("name = \"r\"\nto = \"file:///d\"\nmessage_types = [\"ADT^[AB]01\"]", "contains '['"),
            (
                "name = \"r\"\nto = \"file:///d\"\nmessage_types = [\"\"]",
                "message_types[0]: must not be empty",
            ),
            (
                "name = \"r\"\nto = \"file:///d\"\norder = \"fifo\"",
                "order: \"fifo\": expected per_patient, per_sender or strict",
            ),
            ("name = \"r\"\nto = \"file:///d\"\nin_flight = 0", "in_flight: 0 is out of range 1..=256"),
            (
                "name = \"r\"\nto = \"file:///d\"\nretry_initial = \"1ms\"",
                "retry_initial: must be at least 10ms",
            ),
            (
                "name = \"r\"\nto = \"file:///d\"\nretry_initial = \"soon\"",
                "retry_initial: invalid duration \"soon\"",
            ),
            (
                "name = \"r\"\nto = \"file:///d\"\nretry_initial = \"10s\"\nretry_max = \"5s\"",
                "retry_max: 5s is below retry_initial (10s)",
            ),
            ("name = \"r\"\nto = \"file:///d\"\nretry_max = \"2days\"", "retry_max: must be at most 1day"),
            ("name = \"r\"\nto = \"file:///d\"\npark_after = \"400days\"", "park_after: must be at most"),
            (
                "name = \"r\"\nto = \"file:///d\"\non_application_error = \"drop\"",
                "on_application_error: \"drop\": expected park or retry",
            ),
            ("name = \"r\"\nto = \"file:///d\"\nack_timeout = \"11m\"", "ack_timeout: must be at most 10m"),
            (
                "name = \"r\"\nto = \"mllp://h:1\"\n[route.tls]\nca = \"ca.pem\"",
                "route \"r\": tls: [route.tls] is only used with mllps:// and https://",
            ),
            (
                "name = \"r\"\nto = \"http://h/\"\n[route.tls]\nca = \"ca.pem\"",
                "tls: [route.tls] is only used",
            ),
            (
                "name = \"r\"\nto = \"mllps://h:1\"\n[route.tls]\ncert = \"c.pem\"",
                "tls.key: tls.cert is set without tls.key",
            ),
            (
                "name = \"r\"\nto = \"mllps://h:1\"\n[route.tls]\nkey = \"k.pem\"",
                "tls.cert: tls.key is set without tls.cert",
            ),
            ("name = \"r\"\nto = \"mllps://h:1\"\n[route.tls]\npin = \"abc\"", "tls.pin: \"abc\""),
            (
                "name = \"r\"\nto = \"mllps://h:1\"\n[route.tls]\nserver_name = \"a b\"",
                "tls.server_name: \"a b\": expected a DNS name",
            ),
            (
                "name = \"r\"\nto = \"mllps://h:1\"\n[route.http]\nsign_secret = \"s\"",
                "http: [route.http] is only used with http:// and https://",
            ),
            (
                "name = \"r\"\nto = \"http://h/\"\n[route.http]\nheaders = { \"Content-Type\" = \"x\" }",
                "http.headers.Content-Type: Content-Type is set by hl7d itself",
            ),
            (
                "name = \"r\"\nto = \"http://h/\"\n[route.http]\nheaders = { \"X-HL7D-Listener\" = \"x\" }",
                "set by hl7d itself",
            ),
            (
                "name = \"r\"\nto = \"http://h/\"\n[route.http]\nheaders = { \"Bad Name\" = \"x\" }",
                "http.headers.Bad Name: \"Bad Name\" is not a valid header name",
            ),
            (
                "name = \"r\"\nto = \"http://h/\"\n[route.http]\nheaders = { \"A\" = \"env:\" }",
                "http.headers.A: env:: expected env:NAME",
            ),
            (
                "name = \"r\"\nto = \"http://h/\"\n[route.http]\nheaders = { \"A\" = \"x\\ny\" }",
                "must not contain control characters",
            ),
            (
                "name = \"r\"\nto = \"http://h/\"\n[route.http]\nsign_secret = \"env:A-B\"",
                "http.sign_secret: env:A-B",
            ),
            (
                "name = \"r\"\nto = \"http://h/\"\n[route.file]\nname = \"{id}\"",
                "file: [route.file] is only used with file:// routes",
            ),
            (
                "name = \"r\"\nto = \"file:///d\"\n[route.file]\nname = \"{control_id}.hl7\"",
                "file.name: \"{control_id}.hl7\" must contain {id}",
            ),
        ];
        for (route, expected) in cases {
            let error = parse_err(&with_route(route));
            assert!(error.contains(expected), "{route}\n→ {error}\nexpected: {expected}");
            assert!(error.starts_with("route "), "{route}\n→ {error}");
        }
    }

    #[test]
    fn names_are_unique_and_unknown_keys_are_refused() {
        let text = format!(
            "{}[[route]]\nname = \"a\"\nto = \"file:///d\"\n[[route]]\nname = \"a\"\nto = \"file:///e\"\n",
            lab("")
        );
        assert_eq!(parse_err(&text), "route \"a\": name: already used by route #1 (line 10)");

        let error =
            Config::from_toml_str(&with_route("name = \"r\"\nto = \"file:///d\"\nretries = 3")).unwrap_err();
        assert!(
            matches!(&error, ConfigError::Toml { section: Some(Section::Route { index: 0, .. }), .. }),
            "{error:?}"
        );
        let error = error.to_string();
        assert!(error.starts_with("route \"r\": ") && error.contains("unknown field `retries`"), "{error}");
        let error =
            parse_err(&with_route("name = \"r\"\nto = \"mllps://h:1\"\n[route.tls]\nciphers = \"x\""));
        assert!(error.starts_with("route \"r\": ") && error.contains("unknown field `ciphers`"), "{error}");
        let error = parse_err(&with_route("name = \"r\"\nto = \"file:///d\"\n[route.file]\npath = \"x\""));
        assert!(error.contains("unknown field `path`"), "{error}");
    }

    #[test]
    fn relative_tls_paths_resolve_against_the_config_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("hl7d.toml");
        std::fs::write(
            &file,
            with_route("name = \"r\"\nto = \"mllps://h:1\"\n[route.tls]\nca = \"ca.pem\"\ncert = \"/abs/c.pem\"\nkey = \"k.pem\""),
        )
        .unwrap();
        let config = Config::load(&file).unwrap();
        let tls = &config.routes[0].tls;
        assert_eq!(tls.ca.as_deref(), Some(tmp.path().join("ca.pem").as_path()));
        assert_eq!(tls.cert.as_deref(), Some("/abs/c.pem".as_ref()));
        assert_eq!(tls.key.as_deref(), Some(tmp.path().join("k.pem").as_path()));
    }
}
