//! The web console and its JSON API on the admin HTTP server (issue 17).
//!
//! Two parts meet here:
//! - `auth` (users file, API tokens, sessions, CSRF, login rate limits, `[admin.tls]`): an
//!   axum layer in front of every route except `/live`, `/ready` and (unless
//!   `metrics_public = false`) `/metrics`. It answers 401 to a request without valid
//!   credentials (an HTML request without a session is sent to the login page), refuses a
//!   state-changing request that carries a session but not its CSRF token, and otherwise
//!   puts the caller's [`Principal`] in the request's extensions.
//! - the pages and `/api/v1/` handlers: they take `Extension<Principal>`, ask
//!   [`Principal::may`] before an action (403 when not), and put [`Principal::csrf`] in every
//!   form they render as the hidden field [`CSRF_FIELD`].

pub mod auth;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use axum::Router;

use crate::admin::ReloadFn;
use crate::config::{Config, StoreConfig};
use crate::listener::Reloader;

pub mod api;
mod assets;
mod audit;
pub mod data;
mod detail;
mod pages;
mod respond;

/// What the console reads and acts on, handed over once the server runs (the admin endpoint
/// starts before the store is open: until then every console route answers 503).
pub struct Context {
    /// The store (`[store] path`, or `url` for PostgreSQL): each request opens its own
    /// read-only [`crate::store::StoreReader`] (and actions a short writable connection), as
    /// the CLI does.
    pub store: StoreConfig,
    /// The configuration in force (swapped by every reload that applied): the routes and
    /// listeners the pages show.
    pub config: Arc<ArcSwap<Config>>,
    /// The running listeners (connections, TLS, certificates).
    pub reloader: Reloader,
    /// What the reload action runs: the same as SIGHUP and `POST /reload`.
    pub reload: ReloadFn,
    /// When the server started.
    pub started: SystemTime,
}

/// Where the [`Context`] is put once the server runs.
pub type Slot = Arc<OnceLock<Context>>;

/// The console's pages, assets and `/api/v1/` routes. Every route but `/assets/…` takes the
/// caller's [`Principal`] from the request's extensions: the auth layer in front of this
/// router puts it there (a request that reaches a handler without one is answered 500 by
/// axum, never served).
pub fn router(slot: Slot) -> Router {
    Router::new()
        .merge(pages::router())
        .merge(api::router())
        .merge(assets::router())
        .layer(axum::middleware::from_fn(respond::security_headers))
        .with_state(slot)
}

/// What a user or token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: dashboard, message search and detail, route states.
    Viewer,
    /// Reads, delivery actions (retry, skip, resend, release a lane) and reload.
    Operator,
}

impl Role {
    /// The name used in the users file, the token store, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    /// The role called `name`, if any.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }
}

/// Something a handler may be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Any read.
    Read,
    /// Retry, skip, resend, release a held lane.
    Deliver,
    /// Reload the configuration.
    Reload,
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A console session (cookie); state-changing requests also carried its CSRF token.
    Session,
    /// An API token (`Authorization: Bearer …`), named when it was created.
    Token {
        /// The token's name (`hl7d tokens create --name`).
        name: String,
    },
}

/// The authenticated caller of one request (the auth layer puts it in the request's
/// extensions).
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user's name (for a token: the token's name).
    pub user: String,
    /// What it may do.
    pub role: Role,
    /// Session or token.
    pub credential: Credential,
    /// The client's address (audit events name it).
    pub addr: IpAddr,
    /// The session's CSRF token, for the hidden field of every form a page renders; `None`
    /// for a token (scripts do not need one).
    pub csrf: Option<String>,
}

impl Principal {
    /// Whether this caller may do `action`.
    pub fn may(&self, action: Action) -> bool {
        match action {
            Action::Read => true,
            Action::Deliver | Action::Reload => self.role == Role::Operator,
        }
    }
}

/// The form field (and `X-CSRF-Token` the header) that carries a session's CSRF token.
pub const CSRF_FIELD: &str = "csrf";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_only_operators_act() {
        for role in [Role::Viewer, Role::Operator] {
            assert_eq!(Role::from_name(role.as_str()), Some(role));
        }
        assert_eq!(Role::from_name("admin"), None);
        let principal = |role| Principal {
            user: "ana".into(),
            role,
            credential: Credential::Session,
            addr: IpAddr::from([127, 0, 0, 1]),
            csrf: Some("t".into()),
        };
        assert!(principal(Role::Viewer).may(Action::Read));
        assert!(!principal(Role::Viewer).may(Action::Deliver));
        assert!(!principal(Role::Viewer).may(Action::Reload));
        assert!(principal(Role::Operator).may(Action::Deliver));
        assert!(principal(Role::Operator).may(Action::Reload));
    }
}
