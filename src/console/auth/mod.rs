//! The console's security: who may use the admin server beyond `/live`, `/ready` and
//! `/metrics`, and how they prove it.
//!
//! [`layer`] is one axum middleware in front of every route of the admin server, the
//! fallback included, so a route added later is protected without anyone remembering to:
//! only the paths [`is_public`] names pass without credentials. For every other request it
//! - refuses everything with 403 when the console may not be served (a non-loopback
//!   address without `[admin.tls]`, see [`AuthSettings::console_refused`]);
//! - accepts `Authorization: Bearer TOKEN` (an API token from the users file), or a
//!   session cookie from `POST /login`; a state-changing request with a session must carry
//!   the session's CSRF token (form field [`CSRF_FIELD`] in an urlencoded body, or the
//!   `X-CSRF-Token` header), a token request needs none;
//! - answers 401 without valid credentials: an HTML page request gets the login page as
//!   its body, anything else a JSON error;
//! - otherwise puts the caller's [`Principal`] in the request's extensions for the
//!   handlers, which ask [`Principal::may`] (403 when not).
//!
//! [`security_headers`] adds the Content-Security-Policy and friends to every response.
//! The parts: `accounts.rs` (users file, password and token hashing), `sessions.rs` and
//! `limiter.rs` (pure tables with the time passed in), `page.rs` (the login page).
//!
//! Audit events (target `audit`): `login`, `login_failed`, `login_rate_limited`, `logout`,
//! `session_expired`, `token_refused`; never a password, a token or a session id.

pub mod accounts;
pub mod limiter;
mod page;
pub mod sessions;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use self::accounts::Accounts;
use self::limiter::Limiter;
use self::sessions::{Lookup, Sessions};
use super::{Credential, Principal, CSRF_FIELD};
use crate::peer_text;

/// The session cookie's name over plain HTTP (loopback only).
pub const SESSION_COOKIE: &str = "hl7d_session";
/// The session cookie's name under TLS: the `__Host-` prefix makes the browser refuse it
/// unless it is `Secure`, `Path=/` and without `Domain`.
pub const SESSION_COOKIE_TLS: &str = "__Host-hl7d_session";
/// The header that may carry the CSRF token instead of the form field.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The Content-Security-Policy of every response: nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Largest urlencoded body the layer reads to find the CSRF field (and `POST /login` reads).
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// Password checks run at once (each takes 19 MiB and tens of milliseconds); further logins
/// wait.
pub const CONCURRENT_PASSWORD_CHECKS: usize = 2;

/// Paths served without credentials: the health and metrics endpoints (metrics only with
/// `metrics_public`), the login page and the console's static assets (no data in them).
/// The one list: the layer and the tests ask it.
pub fn is_public(path: &str, metrics_public: bool) -> bool {
    matches!(path, "/live" | "/ready") || (path == "/metrics" && metrics_public) || is_login_or_asset(path)
}

/// Paths that need no credentials but are part of the console (refused with it when the
/// console is refused).
fn is_login_or_asset(path: &str) -> bool {
    path == "/login" || path.starts_with("/assets/")
}

/// Where the layer's time comes from: tokio's clock (paused in tests that ask for it), or a
/// clock a test moves by hand ([`ManualClock`]).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Instant + Send + Sync>);

impl Clock {
    /// tokio's clock.
    pub fn tokio() -> Clock {
        Clock(Arc::new(|| tokio::time::Instant::now().into_std()))
    }

    /// A clock that moves only when the returned handle says so.
    pub fn manual() -> (Clock, ManualClock) {
        let now = Arc::new(Mutex::new(Instant::now()));
        let read = now.clone();
        (Clock(Arc::new(move || *read.lock().unwrap_or_else(PoisonError::into_inner))), ManualClock(now))
    }

    fn now(&self) -> Instant {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::tokio()
    }
}

/// The handle of a [`Clock::manual`].
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

/// What the layer is configured with (from `[admin]`).
#[derive(Clone)]
pub struct AuthSettings {
    /// The users file (`[admin] users`).
    pub users_file: PathBuf,
    /// `metrics_public`: `/metrics` without credentials.
    pub metrics_public: bool,
    /// `session_idle_timeout`.
    pub idle: Duration,
    /// `session_lifetime`.
    pub lifetime: Duration,
    /// The admin server speaks TLS: cookies are `Secure`.
    pub tls: bool,
    /// The console and API are refused (403): the admin address is reachable from the
    /// network and there is no TLS, so passwords, tokens and cookies would travel in clear.
    pub console_refused: bool,
    /// The layer's clock.
    pub clock: Clock,
}

/// The layer's state: users file (re-read when it changes), sessions, rate limits.
pub struct AuthState {
    settings: AuthSettings,
    accounts: Mutex<CachedAccounts>,
    sessions: Mutex<Sessions>,
    limiter: Mutex<Limiter>,
    password_checks: Semaphore,
}

struct CachedAccounts {
    /// (modified, length, inode) of the file when read; `None` = not read yet.
    stamp: Option<FileStamp>,
    accounts: Arc<Accounts>,
}

type FileStamp = Option<(std::time::SystemTime, u64, u64)>;

impl AuthState {
    /// The state for `settings`; reads the users file now (a missing one is no users).
    pub fn new(settings: AuthSettings) -> Arc<AuthState> {
        let sessions = Sessions::new(settings.idle, settings.lifetime);
        let state = Arc::new(AuthState {
            settings,
            accounts: Mutex::new(CachedAccounts { stamp: None, accounts: Arc::default() }),
            sessions: Mutex::new(sessions),
            limiter: Mutex::new(Limiter::default()),
            password_checks: Semaphore::new(CONCURRENT_PASSWORD_CHECKS),
        });
        state.accounts();
        // Hashed now rather than at the first login with an unknown name, whose answer
        // would otherwise take longer than a wrong password's.
        let _ = accounts::decoy_hash();
        state
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The users and tokens, re-read when the file changed since the last look (one `stat`
    /// per request). A file that cannot be read or understood counts as no users and no
    /// tokens (fail closed), with an error logged once per change.
    pub fn accounts(&self) -> Arc<Accounts> {
        let path = &self.settings.users_file;
        let stamp = file_stamp(path);
        let mut cached = lock(&self.accounts);
        if cached.stamp.as_ref() != Some(&stamp) {
            cached.accounts = match Accounts::load(path) {
                Ok(accounts) => Arc::new(accounts),
                Err(e) => {
                    error!(error = %e, "console users file unusable: nobody can log in until it is fixed");
                    Arc::default()
                }
            };
            cached.stamp = Some(stamp);
        }
        cached.accounts.clone()
    }

    fn now(&self) -> Instant {
        self.settings.clock.now()
    }

    fn cookie_name(&self) -> &'static str {
        if self.settings.tls {
            SESSION_COOKIE_TLS
        } else {
            SESSION_COOKIE
        }
    }

    fn session_cookie(&self, id: &str) -> String {
        let secure = if self.settings.tls { "; Secure" } else { "" };
        format!("{}={id}; HttpOnly; SameSite=Strict; Path=/{secure}", self.cookie_name())
    }

    fn clear_cookie(&self) -> String {
        let secure = if self.settings.tls { "; Secure" } else { "" };
        format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}", self.cookie_name())
    }

    fn session_id(&self, headers: &HeaderMap) -> Option<String> {
        cookie(headers, self.cookie_name())
    }

    /// Removes expired sessions and writes their audit lines (the admin server calls this
    /// every minute, so that an abandoned session's end is recorded too).
    pub fn sweep(&self) {
        let ended = lock(&self.sessions).sweep(self.now());
        for (user, reason) in ended {
            info!(target: "audit", event = "session_expired", user = %user, reason, "console session expired");
        }
    }
}

/// The auth module's own routes: `GET /login` (the form), `POST /login`, `POST /logout`,
/// and `GET /session` (the caller as JSON: user, role, credential and, for a session, its
/// CSRF token, for a script that posts with `X-CSRF-Token`).
pub fn routes<S>(state: Arc<AuthState>) -> Router<S> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/session", get(whoami))
        .with_state(state)
}

/// Behind the layer: the caller.
async fn whoami(axum::Extension(principal): axum::Extension<Principal>) -> Response {
    let credential = match &principal.credential {
        Credential::Session => "session",
        Credential::Token { .. } => "token",
    };
    let body = serde_json::json!({
        "user": principal.user,
        "role": principal.role.as_str(),
        "credential": credential,
        "csrf": principal.csrf,
    });
    ([(header::CONTENT_TYPE, "application/json")], format!("{body}\n")).into_response()
}

/// The middleware in front of the whole admin server (see the module comment): use with
/// `axum::middleware::from_fn_with_state(state, auth::layer)`.
pub async fn layer(State(auth): State<Arc<AuthState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let settings = &auth.settings;
    if is_public(path, settings.metrics_public) && !is_login_or_asset(path) {
        return next.run(request).await;
    }
    if settings.console_refused {
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "the console and API are off: the admin address is reachable from the network and \
             [admin.tls] is not set, so passwords and tokens would travel in clear text; set \
             [admin.tls], or listen on a loopback address\n",
        )
            .into_response();
    }
    if is_login_or_asset(path) {
        return next.run(request).await;
    }
    let addr = client_addr(&request);
    let now = auth.now();

    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let Some(secret) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim) else {
            return unauthorized(&auth, &request, "use Authorization: Bearer TOKEN");
        };
        if let Some(wait) = lock(&auth.limiter).check_address(addr, now) {
            warn!(target: "audit", event = "login_rate_limited", %addr, credential = "token",
                retry_after = wait.as_secs(), "API token refused: too many failures from this address");
            return too_many(wait);
        }
        let accounts = auth.accounts();
        let Some(token) = accounts.token(secret) else {
            lock(&auth.limiter).failed(None, addr, now);
            warn!(target: "audit", event = "token_refused", %addr, "API token not recognised");
            return unauthorized(&auth, &request, "unknown or revoked token");
        };
        let principal = Principal {
            user: token.name.clone(),
            role: token.role,
            credential: Credential::Token { name: token.name.clone() },
            addr,
            csrf: None,
        };
        let mut request = request;
        request.extensions_mut().insert(principal);
        return next.run(request).await;
    }

    let Some(id) = auth.session_id(request.headers()) else {
        return unauthorized(&auth, &request, "log in, or use Authorization: Bearer TOKEN");
    };
    let looked_up = lock(&auth.sessions).touch(&id, now);
    let session = match looked_up {
        Ok(session) => session,
        Err(Lookup::Expired { user, reason }) => {
            info!(target: "audit", event = "session_expired", user = %user, %addr, reason, "console session expired");
            return with_cleared_cookie(
                &auth,
                unauthorized(&auth, &request, "the session has expired: log in again"),
            );
        }
        Err(Lookup::Unknown) => {
            return with_cleared_cookie(
                &auth,
                unauthorized(&auth, &request, "no such session: log in again"),
            );
        }
    };
    // The users file is the authority: a removed user or a changed password ends the
    // session, and a changed role applies at once.
    let accounts = auth.accounts();
    let role = match accounts.user(&session.user) {
        Some(user) if user.password_hash == session.password_hash => user.role,
        _ => {
            lock(&auth.sessions).remove(&id);
            info!(target: "audit", event = "session_expired", user = %session.user, %addr,
                reason = "user_changed", "console session ended: user removed or password changed");
            return with_cleared_cookie(
                &auth,
                unauthorized(&auth, &request, "the session has ended: log in again"),
            );
        }
    };
    let mut request = request;
    if !is_safe(request.method()) {
        let (checked, csrf_ok) = match check_csrf(request, &session).await {
            Ok(pair) => pair,
            Err(response) => return response,
        };
        if !csrf_ok {
            warn!(target: "audit", event = "csrf_refused", user = %session.user, %addr,
                path = %peer_text::cap(checked.uri().path()), "state-changing request without its CSRF token");
            return json_error(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
        }
        request = checked;
    }
    let principal = Principal {
        user: session.user.clone(),
        role,
        credential: Credential::Session,
        addr,
        csrf: Some(session.csrf.clone()),
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Adds the security headers to every response: the Content-Security-Policy,
/// `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`,
/// `X-Frame-Options: DENY`, and `Cache-Control: no-store` on everything but `/assets/`.
/// Use with `axum::middleware::from_fn(security_headers)`.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: under it Chromium sends `Origin: null` with a form's POST, and the
    // login's same-origin check refuses a real browser. `same-origin` still keeps URLs
    // (which may name a patient) from every other site.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn login_page(State(auth): State<Arc<AuthState>>, request: Request) -> Response {
    let next = query_field(request.uri().query().unwrap_or(""), "next");
    let no_users = auth.accounts().users.is_empty();
    page::login(StatusCode::OK, None, next.as_deref(), no_users)
}

async fn login(State(auth): State<Arc<AuthState>>, request: Request) -> Response {
    let addr = client_addr(&request);
    if !same_origin(request.headers()) {
        return json_error(StatusCode::FORBIDDEN, "cross-origin login refused");
    }
    let body = match read_form(request.into_body()).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let user = form_field(&body, "user").unwrap_or_default();
    let password = form_field(&body, "password").unwrap_or_default();
    let next = form_field(&body, "next");
    let no_users = auth.accounts().users.is_empty();
    let failed = |status, message: &str| page::login(status, Some(message), next.as_deref(), no_users);
    if user.is_empty() || password.is_empty() {
        return failed(StatusCode::UNAUTHORIZED, "enter a user name and a password");
    }
    if let Some(wait) = lock(&auth.limiter).check(&user, addr, auth.now()) {
        warn!(target: "audit", event = "login_rate_limited", user = %peer_text::cap(&user), %addr,
            retry_after = wait.as_secs(), "console login refused: too many failures");
        let mut response = failed(StatusCode::TOO_MANY_REQUESTS, "too many failed logins: try again later");
        set_retry_after(&mut response, wait);
        return response;
    }
    // Counted as a failure before the check, and cleared on success: attempts made in
    // parallel cannot all slip under the limit while their checks run.
    lock(&auth.limiter).failed(Some(&user), addr, auth.now());
    let accounts = auth.accounts();
    let known = accounts.user(&user).cloned();
    // An unknown user costs one Argon2 run like a known one, and gets the same answer.
    let hash = known.as_ref().map_or_else(|| accounts::decoy_hash().to_owned(), |u| u.password_hash.clone());
    let permit = auth.password_checks.acquire().await;
    let matched = tokio::task::spawn_blocking(move || accounts::verify_password(&hash, &password))
        .await
        .unwrap_or(false);
    drop(permit);
    let now = auth.now();
    let Some(known) = known.filter(|_| matched) else {
        warn!(target: "audit", event = "login_failed", user = %peer_text::cap(&user), %addr,
            "console login failed: wrong user name or password");
        return failed(StatusCode::UNAUTHORIZED, "wrong user name or password");
    };
    lock(&auth.limiter).succeeded(&user);
    let (id, _csrf) = lock(&auth.sessions).create(&known.name, known.role, &known.password_hash, now);
    info!(target: "audit", event = "login", user = %known.name, role = known.role.as_str(), %addr,
        "console login");
    let to = next.filter(|next| local_path(next)).unwrap_or_else(|| "/".to_owned());
    let mut response = redirect(&to);
    if let Ok(cookie) = HeaderValue::from_str(&auth.session_cookie(&id)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Behind the layer: the session and its CSRF token are checked already.
async fn logout(State(auth): State<Arc<AuthState>>, request: Request) -> Response {
    let addr = client_addr(&request);
    if let Some(id) = auth.session_id(request.headers()) {
        if let Some(user) = lock(&auth.sessions).remove(&id) {
            info!(target: "audit", event = "logout", user = %user, %addr, "console logout");
        }
    }
    with_cleared_cookie(&auth, redirect("/login"))
}

/// 401: the login page for a browser asking for a page, a JSON error for anything else.
fn unauthorized(auth: &AuthState, request: &Request, why: &str) -> Response {
    let wants_html = matches!(*request.method(), Method::GET | Method::HEAD)
        && request
            .headers()
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        let next = request.uri().path_and_query().map(|p| p.as_str().to_owned());
        let no_users = auth.accounts().users.is_empty();
        return page::login(StatusCode::UNAUTHORIZED, None, next.as_deref(), no_users);
    }
    let mut response = json_error(StatusCode::UNAUTHORIZED, why);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"hl7d\""));
    response
}

/// 429 for an API request from an address with too many failures.
fn too_many(wait: Duration) -> Response {
    let mut response =
        json_error(StatusCode::TOO_MANY_REQUESTS, "too many failures from this address: try again later");
    set_retry_after(&mut response, wait);
    response
}

fn set_retry_after(response: &mut Response, wait: Duration) {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
}

/// `{"error": …}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], format!("{body}\n")).into_response()
}

fn with_cleared_cookie(auth: &AuthState, mut response: Response) -> Response {
    if let Ok(cookie) = HeaderValue::from_str(&auth.clear_cookie()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn redirect(to: &str) -> Response {
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// Whether the request carries the session's CSRF token: the header, or the form field of
/// an urlencoded body (read up to [`MAX_FORM_BYTES`] and handed on unchanged).
async fn check_csrf(request: Request, session: &sessions::Session) -> Result<(Request, bool), Response> {
    if let Some(value) = request.headers().get(CSRF_HEADER) {
        let ok = value.to_str().is_ok_and(|value| session.csrf_matches(value));
        return Ok((request, ok));
    }
    let urlencoded = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !urlencoded {
        return Ok((request, false));
    }
    let (parts, body) = request.into_parts();
    let bytes = read_form(body).await?;
    let ok = form_field(&bytes, CSRF_FIELD).is_some_and(|value| session.csrf_matches(&value));
    Ok((Request::from_parts(parts, Body::from(bytes)), ok))
}

async fn read_form(body: Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| json_error(StatusCode::PAYLOAD_TOO_LARGE, "form too large or unreadable"))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `POST /login` from another origin is refused (login CSRF): when the browser sends
/// `Origin`, its host must be the `Host` the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// A redirect target after login: a path on this server, never another origin.
fn local_path(next: &str) -> bool {
    next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.contains(['\r', '\n'])
}

fn client_addr(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip().to_canonical())
}

/// The value of cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// The first value of `name` in an urlencoded body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    query_field(std::str::from_utf8(body).ok()?, name)
}

fn query_field(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find_map(|(key, value)| {
        (percent_decode(key).as_deref() == Some(name)).then(|| percent_decode(value)).flatten()
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; the result
/// must be UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn file_stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.modified().ok()?, metadata.len(), inode))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_paths() {
        for path in ["/live", "/ready", "/login", "/assets/console.css"] {
            assert!(is_public(path, false), "{path}");
        }
        assert!(is_public("/metrics", true));
        for path in
            ["/metrics", "/", "/reload", "/logout", "/api/v1/messages", "/live/x", "/assets", "/loginx"]
        {
            assert!(!is_public(path, false), "{path}");
        }
    }

    #[test]
    fn forms_cookies_and_redirects() {
        assert_eq!(form_field(b"user=ana&password=a+b%26c%3D", "password").as_deref(), Some("a b&c="));
        assert_eq!(form_field(b"csrf=1&csrf=2", "csrf").as_deref(), Some("1"));
        assert_eq!(form_field(b"user=%zz", "user"), None);
        assert_eq!(form_field(b"x=1", "user"), None);
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; hl7d_session=abc; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, SESSION_COOKIE_TLS), None);
        assert!(local_path("/messages?patient=1"));
        for bad in
            ["//evil.example", "/\\evil.example", "https://evil.example", "evil", "/a\r\nSet-Cookie: x"]
        {
            assert!(!local_path(bad), "{bad}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9275"));
        assert!(same_origin(&headers), "no Origin: not a cross-origin browser request");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9275"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&headers));
    }
}
