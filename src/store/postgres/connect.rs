//! The connection pool to the shared PostgreSQL store: the driver's configuration from
//! `[store] url` and its keys, TLS on the same rustls/aws-lc-rs stack as the rest of hl7d
//! (`crate::sender::tls`), and a deadpool pool that replaces broken connections by itself.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PasswordSource, PostgresConfig, SslMode};
use crate::sender::tls::{client_config, ClientTlsOptions};

/// How long opening one connection may take (TCP, TLS, authentication).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long waiting for a free connection from the pool, or for a new one, may take before
/// the work that needed it fails (an append then gets an error ACK).
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// Why the pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL did not parse (config validation should have caught it).
    #[error("url: {0}")]
    Url(String),
    /// The password could not be read.
    #[error("password: {0}")]
    Password(String),
    /// The TLS configuration could not be built (the `ca` file).
    #[error("tls: {0}")]
    Tls(String),
    /// deadpool refused the configuration.
    #[error("pool: {0}")]
    Pool(String),
}

/// A pool of at most `config.pool_size` connections. Opens none yet: the first `get` does.
/// A connection that broke (a database restart, a network cut) is dropped when it is next
/// taken and a new one opened in its place, so the pool reconnects by itself.
pub fn pool(config: &PostgresConfig) -> Result<Pool, ConnectError> {
    let mut pg =
        tokio_postgres::Config::from_str(&config.url).map_err(|e| ConnectError::Url(e.to_string()))?;
    if let Some(password) = &config.password {
        pg.password(read_password(password)?);
    }
    pg.connect_timeout(CONNECT_TIMEOUT);
    pg.application_name("hl7d");
    // Notice a dead peer within a minute even when idle (a half-open TCP connection).
    pg.keepalives(true).keepalives_idle(Duration::from_secs(30));
    let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match config.sslmode {
        SslMode::Disable => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
        }
        SslMode::Require | SslMode::VerifyFull => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let options = ClientTlsOptions {
                ca: config.ca.clone(),
                // libpq's `require`: encrypted, the certificate not checked (the mode's
                // documented meaning; `verify-full` is the default).
                danger_insecure: config.sslmode == SslMode::Require,
                ..ClientTlsOptions::default()
            };
            let tls = client_config(&options).map_err(|e| ConnectError::Tls(e.to_string()))?;
            Manager::from_config(pg, MakeRustlsConnect::new(tls), manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| ConnectError::Pool(e.to_string()))
}

/// The password from its source: the environment variable, or the file's first line.
fn read_password(source: &PasswordSource) -> Result<String, ConnectError> {
    match source {
        PasswordSource::Env(name) => std::env::var(name)
            .map_err(|_| ConnectError::Password(format!("environment variable {name} is not set"))),
        PasswordSource::File(path) => std::fs::read_to_string(path)
            .map(|text| text.lines().next().unwrap_or_default().to_owned())
            .map_err(|e| ConnectError::Password(format!("{}: {e}", path.display()))),
    }
}

/// `url` for messages and logs: as configured (it holds no password, config validation
/// refuses one).
pub fn display_url(config: &PostgresConfig) -> &str {
    &config.url
}
