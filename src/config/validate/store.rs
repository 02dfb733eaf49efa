//! `[store] url` and the keys beside it → a [`PostgresConfig`] (issue 16). The URL is
//! parsed here, once, by the driver's own parser, so a URL `serve` would fail to use is a
//! config error naming the key. The rules: a password never in the file (`password =
//! "env:NAME"` or `password_file`), never in the URL; `sslmode` only as its own key; `ca`
//! only with `verify-full`.

use std::str::FromStr;

use super::super::raw::RawStore;
use super::super::types::{PasswordSource, PostgresConfig, SslMode, DEFAULT_PG_POOL_SIZE};
use super::{Builder, Section};

/// Most connections `pool_size` may ask for.
const MAX_POOL_SIZE: i64 = 256;

impl Builder<'_> {
    /// The PostgreSQL settings, `None` without `url` (the embedded SQLite store); the
    /// PostgreSQL-only keys without `url` are problems. Takes those keys out of `raw`.
    pub(super) fn postgres(&mut self, raw: &mut RawStore) -> Option<PostgresConfig> {
        let section = Section::Store;
        let Some(url) = raw.url.take() else {
            for (key, given) in [
                ("password", raw.password.as_ref().map(|v| v.span())),
                ("password_file", raw.password_file.as_ref().map(|v| v.span())),
                ("sslmode", raw.sslmode.as_ref().map(|v| v.span())),
                ("ca", raw.ca.as_ref().map(|v| v.span())),
                ("pool_size", raw.pool_size.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = given {
                    self.problem(
                        &section,
                        key,
                        Some(span),
                        "only with url = \"postgresql://…\" (the PostgreSQL store)",
                    );
                }
            }
            return None;
        };
        let url_span = url.span();
        let url = url.into_inner();
        match tokio_postgres::Config::from_str(&url) {
            _ if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) => self.problem(
                &section,
                "url",
                Some(url_span.clone()),
                "must start with postgresql:// (e.g. \"postgresql://hl7d@db.example/hl7d\")",
            ),
            Err(e) => {
                self.problem(&section, "url", Some(url_span.clone()), format!("not a PostgreSQL URL: {e}"))
            }
            Ok(parsed) => {
                if parsed.get_password().is_some() {
                    self.problem(
                        &section,
                        "url",
                        Some(url_span.clone()),
                        "must not hold a password: use password = \"env:NAME\" or password_file",
                    );
                }
                if parsed.get_hosts().is_empty() {
                    self.problem(
                        &section,
                        "url",
                        Some(url_span.clone()),
                        "names no host (postgresql://user@host/db)",
                    );
                }
                if parsed.get_user().is_none() {
                    self.problem(
                        &section,
                        "url",
                        Some(url_span.clone()),
                        "names no user (postgresql://user@host/db)",
                    );
                }
                if url.contains("sslmode=") {
                    self.problem(
                        &section,
                        "url",
                        Some(url_span.clone()),
                        "use the sslmode key, not ?sslmode= in the URL",
                    );
                }
            }
        }
        let password = match (raw.password.take(), raw.password_file.take()) {
            (Some(_), Some(file)) => {
                self.problem(
                    &section,
                    "password_file",
                    Some(file.span()),
                    "give password or password_file, not both",
                );
                None
            }
            (Some(password), None) => {
                let span = password.span();
                match password.get_ref().strip_prefix("env:") {
                    Some(name) if !name.is_empty() && !name.contains('=') => {
                        Some(PasswordSource::Env(name.to_owned()))
                    }
                    _ => {
                        // The value may be a password: never repeat it.
                        self.problem(
                            &section,
                            "password",
                            Some(span),
                            "must be \"env:NAME\" (the environment variable holding the password); \
                             a password is never written in the file (or use password_file)",
                        );
                        None
                    }
                }
            }
            (None, Some(file)) => Some(PasswordSource::File(self.path(&section, "password_file", file))),
            (None, None) => None,
        };
        let sslmode = match raw.sslmode.take() {
            None => SslMode::default(),
            Some(mode) => match mode.get_ref().as_str() {
                "disable" => SslMode::Disable,
                "require" => SslMode::Require,
                "verify-full" => SslMode::VerifyFull,
                other => {
                    self.problem(
                        &section,
                        "sslmode",
                        Some(mode.span()),
                        format!("unknown mode {other:?}: use \"disable\", \"require\" or \"verify-full\""),
                    );
                    SslMode::default()
                }
            },
        };
        let ca = raw.ca.take().map(|ca| {
            let span = ca.span();
            let path = self.path(&section, "ca", ca);
            if sslmode != SslMode::VerifyFull {
                self.problem(&section, "ca", Some(span), "only with sslmode = \"verify-full\" (the default)");
            }
            path
        });
        let pool_size = match raw.pool_size.take() {
            None => DEFAULT_PG_POOL_SIZE,
            Some(size) => {
                let value = *size.get_ref();
                if !(1..=MAX_POOL_SIZE).contains(&value) {
                    self.problem(
                        &section,
                        "pool_size",
                        Some(size.span()),
                        format!("must be 1..={MAX_POOL_SIZE}"),
                    );
                }
                value.clamp(1, MAX_POOL_SIZE) as usize
            }
        };
        Some(PostgresConfig { url, password, sslmode, ca, pool_size })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::testing::{lab, parse_err, parse_ok};
    use crate::config::{PasswordSource, SslMode};

    fn store(keys: &str) -> String {
        format!("[store]\n{keys}\n{}", lab(""))
    }

    #[test]
    fn no_url_is_the_sqlite_store() {
        assert_eq!(parse_ok(&lab("")).store.postgres, None);
    }

    #[test]
    fn url_selects_postgresql_with_safe_defaults() {
        let config = parse_ok(&store("url = \"postgresql://hl7d@db.example/hl7d\""));
        let pg = config.store.postgres.unwrap();
        assert_eq!(pg.url, "postgresql://hl7d@db.example/hl7d");
        assert_eq!((pg.password, pg.sslmode, pg.ca, pg.pool_size), (None, SslMode::VerifyFull, None, 16));
    }

    #[test]
    fn every_key_is_read() {
        let config = parse_ok(&store(
            "url = \"postgres://hl7d@db:5433/hl7d\"\npassword = \"env:PGPASS\"\nsslmode = \"verify-full\"\n\
             ca = \"/etc/hl7d/db-ca.pem\"\npool_size = 4",
        ));
        let pg = config.store.postgres.unwrap();
        assert_eq!(pg.password, Some(PasswordSource::Env("PGPASS".into())));
        assert_eq!(pg.ca, Some(PathBuf::from("/etc/hl7d/db-ca.pem")));
        assert_eq!(pg.pool_size, 4);
        let config = parse_ok(&store(
            "url = \"postgresql://u@h/d\"\npassword_file = \"/run/pg\"\nsslmode = \"disable\"",
        ));
        let pg = config.store.postgres.unwrap();
        assert_eq!(
            (pg.password, pg.sslmode),
            (Some(PasswordSource::File("/run/pg".into())), SslMode::Disable)
        );
    }

    #[test]
    fn a_password_in_the_file_or_url_is_refused_without_repeating_it() {
        let error = parse_err(&store("url = \"postgresql://u@h/d\"\npassword = \"hunter2\""));
        assert!(error.starts_with("store: password"), "{error}");
        assert!(error.contains("env:NAME") && !error.contains("hunter2"), "{error}");
        let error = parse_err(&store("url = \"postgresql://u:hunter2@h/d\""));
        assert!(error.contains("must not hold a password"), "{error}");
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(parse_err(&store("url = \"mysql://u@h/d\"")).contains("must start with postgresql://"));
        assert!(parse_err(&store("url = \"postgresql://h/d\"")).contains("names no user"));
        assert!(
            parse_err(&store("url = \"postgresql://u@h/d?sslmode=disable\"")).contains("use the sslmode key")
        );
        assert!(parse_err(&store("url = \"postgresql://u@h/d\"\nsslmode = \"prefer\""))
            .starts_with("store: sslmode: unknown mode \"prefer\""));
        assert!(parse_err(&store("url = \"postgresql://u@h/d\"\nsslmode = \"require\"\nca = \"x.pem\""))
            .contains("ca: only with sslmode"));
        assert!(parse_err(&store("url = \"postgresql://u@h/d\"\npool_size = 0"))
            .contains("pool_size: must be 1..=256"));
        assert!(parse_err(&store(
            "url = \"postgresql://u@h/d\"\npassword = \"env:A\"\npassword_file = \"f\""
        ))
        .contains("not both"));
    }

    #[test]
    fn postgresql_keys_without_url_are_refused() {
        let error = parse_err(&store("sslmode = \"disable\""));
        assert!(error.starts_with("store: sslmode: only with url"), "{error}");
    }

    #[test]
    fn debug_names_where_the_password_is_never_the_password() {
        let config = parse_ok(&store("url = \"postgresql://u@h/d\"\npassword = \"env:PGPASS\""));
        assert!(format!("{:?}", config.store).contains("env:PGPASS"));
    }
}
