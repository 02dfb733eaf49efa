//! The config file as serde reads it. Values that need checking are kept as strings with
//! their span, so that a problem can name its line; `deny_unknown_fields` everywhere, so a
//! misspelt key is an error, not a silent default. Nothing here decides what is allowed:
//! that is `validate/`'s.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::error::{listener_section, route_section, Section};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) store: RawStore,
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) log: RawLog,
    pub(super) audit: Option<RawAudit>,
    #[serde(default)]
    pub(super) listener: Vec<RawListener>,
    #[serde(default)]
    pub(super) route: Vec<RawRoute>,
    #[serde(default)]
    pub(super) node: RawNode,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) name: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) lease: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<Spanned<String>>,
    pub(super) retention: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) sslmode: Option<Spanned<String>>,
    pub(super) ca: Option<Spanned<String>>,
    pub(super) pool_size: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) users: Option<Spanned<String>>,
    pub(super) metrics_public: Option<bool>,
    pub(super) session_idle_timeout: Option<Spanned<String>>,
    pub(super) session_lifetime: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<Spanned<String>>,
    pub(super) level: Option<Spanned<String>>,
    pub(super) cert_expiry_warning: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub(super) file: Option<Spanned<String>>,
    pub(super) syslog: Option<Spanned<String>>,
    pub(super) syslog_ca: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: Spanned<String>,
    pub(super) listen: Spanned<String>,
    pub(super) plaintext: Option<Spanned<bool>>,
    pub(super) ack: Option<Spanned<String>>,
    pub(super) encoding: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) force_encoding: bool,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) frame_timeout: Option<Spanned<String>>,
    pub(super) write_timeout: Option<Spanned<String>>,
    pub(super) max_message_size: Option<Spanned<RawSize>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) max_connections_per_ip: Option<Spanned<i64>>,
    pub(super) max_pending: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) allow_ips: Vec<Spanned<String>>,
    pub(super) proxy_protocol: Option<Spanned<bool>>,
    pub(super) proxy_from: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) framing: Option<RawFraming>,
    #[serde(default)]
    pub(super) lenient_framing: bool,
    pub(super) duplicate_window: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawTls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFraming {
    pub(super) start: Option<Spanned<String>>,
    pub(super) end: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<String>,
    pub(super) min_version: Option<Spanned<String>>,
    pub(super) handshake_timeout: Option<Spanned<String>>,
    pub(super) client_auth: Option<Spanned<String>>,
    pub(super) client_thumbprints: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) client_ca: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Spanned<String>,
    pub(super) to: Spanned<String>,
    pub(super) listeners: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) message_types: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) order: Option<Spanned<String>>,
    pub(super) in_flight: Option<Spanned<i64>>,
    pub(super) retry_initial: Option<Spanned<String>>,
    pub(super) retry_max: Option<Spanned<String>>,
    pub(super) park_after: Option<Spanned<String>>,
    pub(super) on_application_error: Option<Spanned<String>>,
    pub(super) ack_timeout: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawRouteTls>>,
    pub(super) http: Option<Spanned<RawRouteHttp>>,
    pub(super) file: Option<Spanned<RawRouteFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteTls {
    pub(super) ca: Option<Spanned<String>>,
    pub(super) pin: Option<Spanned<String>>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) server_name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteHttp {
    /// In file order is not kept (a TOML table has none that matters for headers).
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Spanned<String>>,
    pub(super) sign_secret: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteFile {
    pub(super) name: Option<Spanned<String>>,
}

/// A size as written: a number of bytes, or a string with a unit (`"1MiB"`).
pub(super) enum RawSize {
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

/// The section a toml error at byte `offset` is in: the table whose header (or key) starts
/// last before it. Only used to prefix toml's own message, so a guess that fails just
/// leaves the prefix out.
pub(super) fn locate_section(text: &str, offset: usize) -> Option<Section> {
    /// Each `[[listener]]` and `[[route]]` table with the span of its header.
    #[derive(Deserialize)]
    struct Tables {
        #[serde(default)]
        listener: Vec<Spanned<toml::Table>>,
        #[serde(default)]
        route: Vec<Spanned<toml::Table>>,
    }

    // Every top-level key with the span of its table header (or of its value).
    let top: BTreeMap<String, Spanned<toml::Value>> = toml::from_str(text).ok()?;
    let mut starts: Vec<(usize, Section)> = Vec::new();
    for (key, value) in &top {
        let section = match key.as_str() {
            "listener" | "route" => continue,
            "store" => Section::Store,
            "admin" => Section::Admin,
            "log" => Section::Log,
            "audit" => Section::Audit,
            "node" => Section::Node,
            "delivery" => Section::Delivery,
            _ => Section::Root,
        };
        starts.push((value.span().start, section));
    }
    if let Ok(tables) = toml::from_str::<Tables>(text) {
        for (index, listener) in tables.listener.iter().enumerate() {
            let name = listener.get_ref().get("name").and_then(toml::Value::as_str).unwrap_or("");
            starts.push((listener.span().start, listener_section(index, name)));
        }
        for (index, route) in tables.route.iter().enumerate() {
            let name = route.get_ref().get("name").and_then(toml::Value::as_str).unwrap_or("");
            starts.push((route.span().start, route_section(index, name)));
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
    use crate::config::testing::{lab, parse_err};
    use crate::config::{Config, ConfigError, Section};

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
}
