//! One file per kind of downstream, each a [`Transport`]: `mllp.rs` (MLLP and MLLP over
//! TLS, through the library's [`crate::sender::Client`]), `http.rs` (HTTP/1.1 and HTTP/2
//! over rustls) and `file.rs` (one file per message in a directory). [`build`] turns a
//! route's typed config into the right one.
//!
//! What the transports share lives here: the route's TLS settings as a rustls client
//! configuration (the same one `hl7d send` builds, [`crate::sender::tls::client_config`])
//! and the operator's words for a TLS failure. Building reads every file and environment
//! variable the route names, so a route that cannot work fails when it starts, not at its
//! first message. A transport decides only what one attempt came to: no retry loops, no
//! sleeping, no logging of message content (the engine logs and counts).

pub mod file;
pub mod http;
pub mod mllp;

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use thiserror::Error;

use crate::config::{RouteConfig, RouteTarget, RouteTls};
use crate::delivery::Transport;
use crate::sender::tls::{client_config, ClientTlsOptions, TlsFailure, TlsSetupError};

/// The transport for `route`: MLLP(S), HTTP(S) or a directory.
pub fn build(route: &RouteConfig) -> Result<Box<dyn Transport>, BuildError> {
    match &route.to {
        RouteTarget::Mllp { .. } => Ok(Box::new(mllp::MllpTransport::new(route)?)),
        RouteTarget::Http { .. } => Ok(Box::new(http::HttpTransport::new(route)?)),
        RouteTarget::File { dir } => Ok(Box::new(file::FileTransport::new(dir, route.file.name.clone()))),
    }
}

/// Why a route's transport cannot be built. Each names the route and the key at fault; none
/// ever carries a secret's value.
#[derive(Debug, Error)]
pub enum BuildError {
    /// `to` cannot be used as written.
    #[error("route {route:?}: to: {reason}")]
    Target {
        /// The route's name.
        route: String,
        /// Why.
        reason: String,
    },
    /// `[route.tls]` is set on a plaintext `mllp://` or `http://` route.
    #[error("route {route:?}: [route.tls] needs mllps:// or https:// in `to`")]
    TlsWithoutTls {
        /// The route's name.
        route: String,
    },
    /// `[route.tls]` has `cert` without `key`, or the other way round.
    #[error("route {route:?}: [route.tls] cert and key go together")]
    CertWithoutKey {
        /// The route's name.
        route: String,
    },
    /// `[route.tls]` names files that cannot be used, or rustls refused the combination.
    #[error("route {route:?}: [route.tls]: {source}")]
    Tls {
        /// The route's name.
        route: String,
        /// Why.
        source: TlsSetupError,
    },
    /// `[route.tls] server_name` (or the host of `to`) is not a name a certificate can
    /// be checked against.
    #[error("route {route:?}: [route.tls] server_name: {name:?} is not a valid server name")]
    ServerName {
        /// The route's name.
        route: String,
        /// The name as written.
        name: String,
    },
    /// A `env:NAME` value whose variable is not set (or not valid Unicode).
    #[error("route {route:?}: {key}: environment variable {variable} is not set")]
    MissingEnv {
        /// The route's name.
        route: String,
        /// The key that names it (`[route.http] headers."Authorization"`, `sign_secret`).
        key: String,
        /// The variable's name.
        variable: String,
    },
    /// A secret (`sign_secret`) that is empty: an HMAC under an empty key proves nothing.
    #[error("route {route:?}: {key} is empty")]
    EmptySecret {
        /// The route's name.
        route: String,
        /// The key.
        key: String,
    },
    /// A `[route.http] headers` entry that cannot be sent. The value is never shown.
    #[error("route {route:?}: [route.http] headers.{name:?}: {reason}")]
    Header {
        /// The route's name.
        route: String,
        /// The header name as written.
        name: String,
        /// Why.
        reason: String,
    },
}

impl BuildError {
    /// The name of the route at fault.
    pub fn route(&self) -> &str {
        match self {
            BuildError::Target { route, .. }
            | BuildError::TlsWithoutTls { route }
            | BuildError::CertWithoutKey { route }
            | BuildError::Tls { route, .. }
            | BuildError::ServerName { route, .. }
            | BuildError::MissingEnv { route, .. }
            | BuildError::EmptySecret { route, .. }
            | BuildError::Header { route, .. } => route,
        }
    }
}

/// The rustls client configuration and the name to verify for a TLS route: trust by
/// `[route.tls] ca` (else the system roots) or `pin`, a client certificate from `cert`/`key`
/// (mutual TLS), the name from `server_name` or else `host`. The same configuration
/// `hl7d send --tls` builds, with `alpn` added (HTTP/2 negotiation).
fn tls_client(
    route: &RouteConfig,
    host: &str,
    alpn: &[&[u8]],
) -> Result<(Arc<ClientConfig>, ServerName<'static>), BuildError> {
    let tls = &route.tls;
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(BuildError::CertWithoutKey { route: route.name.clone() });
    }
    let options = ClientTlsOptions {
        ca: tls.ca.clone(),
        pin: tls.pin,
        danger_insecure: false,
        cert: tls.cert.clone(),
        key: tls.key.clone(),
    };
    let mut config =
        client_config(&options).map_err(|source| BuildError::Tls { route: route.name.clone(), source })?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let name = tls.server_name.as_deref().unwrap_or(host);
    let unbracketed = name.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(unbracketed.to_owned())
        .map_err(|_| BuildError::ServerName { route: route.name.clone(), name: name.to_owned() })?;
    Ok((Arc::new(config), server_name))
}

/// Refuses `[route.tls]` settings on a plaintext route: they would be silently ignored, and
/// an operator who set a pin expects it to be checked.
fn no_tls_settings(route: &RouteConfig) -> Result<(), BuildError> {
    if route.tls == RouteTls::default() {
        Ok(())
    } else {
        Err(BuildError::TlsWithoutTls { route: route.name.clone() })
    }
}

/// A TLS failure in a route operator's words (the [`TlsFailure`] texts name `hl7d send`'s
/// flags); `plaintext` is the scheme to use instead when the server does not speak TLS.
fn tls_failure_text(failure: &TlsFailure, plaintext: &str) -> String {
    match failure {
        TlsFailure::UnknownCa => {
            "server certificate not trusted (unknown CA): set [route.tls] ca or pin".into()
        }
        TlsFailure::PinMismatch => "server certificate does not match [route.tls] pin".into(),
        TlsFailure::NameMismatch => {
            "server certificate not valid for this name: set [route.tls] server_name".into()
        }
        TlsFailure::NotTls => format!("the server does not speak TLS: use {plaintext}://"),
        other => other.to_string(),
    }
}
