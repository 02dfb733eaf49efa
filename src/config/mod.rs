//! Configuration: TOML text → typed [`Config`] (store, admin, log, audit, listener profiles).
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
//! The file format is documented key by key in `docs/configuration.md`. The parts:
//!
//! - this file: [`Config::load`] and [`Config::from_toml_str`], the way in, and the embedded
//!   default configuration;
//! - `types.rs`: the typed configuration the rest of hl7d reads, with its defaults;
//! - `error.rs`: [`ConfigError`] and the [`Problem`]s it lists, each naming its [`Section`];
//! - `raw.rs`: the file as serde reads it (strings with their spans, unknown keys refused);
//! - `validate/`: raw → typed, every problem collected (`listener.rs`: one `[[listener]]`);
//! - `units.rs`: durations and sizes as written in the file.
//!
//! New sections (routes, PostgreSQL, console) get files of their own instead of growing
//! these: the typed struct in `config/<section>.rs` (re-exported here, as `types.rs` is),
//! its serde struct in `raw.rs`, and its checks as an `impl Builder` block in
//! `validate/<section>.rs`, as `validate/listener.rs` does for `[[listener]]`.

mod error;
pub mod file_name;
mod raw;
mod route;
#[cfg(test)]
mod testing;
mod types;
pub(crate) mod units;
mod validate;

// A thumbprint lives with the certificate code (`tls/thumbprint.rs`); `ClientAuth` holds
// them, and this re-export keeps `config::Thumbprint` working.
pub use crate::tls::thumbprint::{Thumbprint, ThumbprintError};
pub use error::{ConfigError, Problem, Section};
pub use route::*;
pub use types::*;

use std::path::Path;
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

impl Config {
    /// Parses and validates a configuration. Relative paths (`store.path`, TLS files) are
    /// kept as written, i.e. relative to the working directory; use [`Config::load`] for a
    /// file.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        validate::parse(text, None)
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
        validate::parse(&text, Some(base))
    }

    /// The configuration used without `--config`: [`EMBEDDED_DEFAULT_TOML`].
    pub fn embedded_default() -> Config {
        Config::from_toml_str(EMBEDDED_DEFAULT_TOML)
            // A constant, and the test `embedded_default_is_valid` parses it.
            .expect("the embedded default configuration is valid")
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use super::*;

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
    fn load_resolves_relative_paths_against_the_config_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
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
}
