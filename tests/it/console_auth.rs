//! The console's security without a browser (issue 17): every non-public route answers 401
//! without credentials, logins are rate-limited, a session's state-changing requests need
//! its CSRF token, roles are enforced, sessions expire and end at logout, cookies carry
//! their flags, every response carries the security headers, `[admin.tls]` (with client
//! certificates), and `hl7d users` / `hl7d tokens` run as the binary. In process on
//! 127.0.0.1:0 (sessions on a hand-moved clock), the CLI as a child process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hl7d::admin::Admin;
use hl7d::config::{AdminConfig, ClientAuth, Thumbprint, TlsConfig, TlsVersion};
use hl7d::console::auth::accounts::{self, Accounts};
use hl7d::console::auth::{self as console_auth, Clock};
use hl7d::console::Role;
use hl7d::tls::pki::{Ca, CertKind, Validity};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::{tempdir, tls_client_config, AuditCapture, WAIT};

const PASSWORD: &str = "correct horse battery";

// ---------------------------------------------------------------------------------------
// Routes and credentials

/// Every route of the admin server, and paths that do not exist, without credentials: only
/// the public ones answer anything but 401. The list is the server's own
/// (`hl7d::admin::ROUTES`, `console::auth::is_public`), plus the console's API paths.
#[tokio::test]
async fn every_non_public_route_answers_401_without_credentials() {
    let dir = tempdir("auth-routes");
    let (admin, _) = start(&dir, |_| {}).await;
    let at = admin.local_addr();
    let mut routes: Vec<(&str, &str)> = hl7d::admin::ROUTES.to_vec();
    routes.extend([
        ("GET", "/"),
        ("GET", "/messages"),
        ("GET", "/api/v1/messages?patient=1"),
        ("GET", "/api/v1/messages/1"),
        ("GET", "/api/v1/routes"),
        ("POST", "/api/v1/routes/lab/retry"),
        ("POST", "/api/v1/routes/lab/skip"),
        ("GET", "/no/such/page"),
        ("DELETE", "/reload"),
        ("GET", "/live/.."),
    ]);
    for (method, path) in routes {
        let response = request(at, method, path, &[], "").await;
        let public = console_auth::is_public(path, true);
        // The layer's refusal carries `WWW-Authenticate`; a public route may answer 401 of
        // its own (POST /login without a password), never that one.
        let refused_by_layer = response.status == 401 && response.header("www-authenticate").is_some();
        if public {
            assert!(!refused_by_layer, "{method} {path} is public: {response:?}");
        } else {
            assert!(refused_by_layer, "{method} {path} without credentials: {response:?}");
        }
    }
    // The same with metrics_public = false: /metrics joins the protected paths.
    let private_dir = tempdir("auth-metrics");
    let (private, token) = start(&private_dir, |c| c.metrics_public = false).await;
    let at = private.local_addr();
    assert_eq!(request(at, "GET", "/metrics", &[], "").await.status, 401);
    assert_eq!(request(at, "GET", "/live", &[], "").await.status, 200);
    let scrape = request(at, "GET", "/metrics", &[bearer(&token.viewer).as_pair()], "").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.body.contains("hl7d_build_info"), "{}", scrape.body);
}

#[tokio::test]
async fn a_page_request_without_a_session_gets_the_login_page_and_the_api_json() {
    let dir = tempdir("auth-login-page");
    let (admin, _) = start(&dir, |_| {}).await;
    let at = admin.local_addr();
    let page = request(at, "GET", "/messages?patient=1", &[("Accept", "text/html,*/*")], "").await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("type=\"password\""), "{}", page.body);
    assert!(page.body.contains("name=\"next\" value=\"/messages?patient=1\""), "{}", page.body);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    let api = request(at, "GET", "/api/v1/routes", &[("Accept", "application/json")], "").await;
    assert_eq!(api.status, 401);
    assert!(api.body.contains("\"error\""), "{}", api.body);
    assert_eq!(api.header("www-authenticate"), Some("Bearer realm=\"hl7d\""));
    let login = request(at, "GET", "/login", &[], "").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("type=\"password\"") && !login.body.contains("no-users"));
    // A users file without users: the login page says how to add one.
    let empty = tempdir("auth-no-users");
    let config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), empty.join("users.toml"));
    let bare = Admin::start(&config).await.unwrap();
    let login = request(bare.local_addr(), "GET", "/login", &[], "").await;
    assert!(login.body.contains("hl7d users add NAME --role operator"), "{}", login.body);
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let dir = tempdir("auth-headers");
    let (admin, tokens) = start(&dir, |_| {}).await;
    let at = admin.local_addr();
    for (path, headers) in [
        ("/live", vec![]),
        ("/login", vec![]),
        ("/", vec![]),
        ("/reload", vec![bearer(&tokens.viewer).as_pair()]),
        ("/nothing", vec![bearer(&tokens.viewer).as_pair()]),
    ] {
        let response = request(at, "GET", path, &headers, "").await;
        assert_eq!(
            response.header("content-security-policy"),
            Some(console_auth::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(response.header("referrer-policy"), Some("same-origin"), "{path}");
        assert_eq!(response.header("cache-control"), Some("no-store"), "{path}");
    }
    assert!(console_auth::CONTENT_SECURITY_POLICY.contains("script-src 'self'"));
    assert!(!console_auth::CONTENT_SECURITY_POLICY.contains("unsafe"));
}

#[tokio::test]
async fn a_viewer_token_is_refused_an_operator_action_and_a_bad_token_401() {
    let dir = tempdir("auth-roles");
    let audit = AuditCapture::start(&dir);
    let (admin, tokens) = start(&dir, |_| {}).await;
    let at = admin.local_addr();
    let viewer = request(at, "POST", "/reload", &[bearer(&tokens.viewer).as_pair()], "").await;
    assert_eq!(viewer.status, 403, "{}", viewer.body);
    let operator = request(at, "POST", "/reload", &[bearer(&tokens.operator).as_pair()], "").await;
    assert_eq!(operator.status, 503, "allowed (no server attached yet): {}", operator.body);
    let wrong = format!("{}0", tokens.operator);
    assert_eq!(request(at, "POST", "/reload", &[bearer(&wrong).as_pair()], "").await.status, 401);
    audit.wait_for(&[("event", "token_refused")]).await;
    // Revoked: refused at once (the server re-reads the users file when it changes).
    accounts::update(&dir.join("users.toml"), |a| a.revoke_token("ops").map(drop)).unwrap();
    assert_eq!(request(at, "POST", "/reload", &[bearer(&tokens.operator).as_pair()], "").await.status, 401);
    // Not a bearer token at all.
    let basic = request(at, "GET", "/", &[("Authorization", "Basic YTpi")], "").await;
    assert_eq!(basic.status, 401);
}

// ---------------------------------------------------------------------------------------
// Login, sessions, CSRF

#[tokio::test]
async fn login_sets_a_strict_cookie_and_logout_ends_the_session() {
    let dir = tempdir("auth-logout");
    let audit = AuditCapture::start(&dir);
    let (admin, _) = start(&dir, |_| {}).await;
    let at = admin.local_addr();
    let session = login(at, "ana", PASSWORD).await.expect("logged in");
    let cookie_line = &session.set_cookie;
    assert!(cookie_line.starts_with("hl7d_session="), "{cookie_line}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie_line.contains(flag), "{flag} in {cookie_line}");
    }
    assert!(!cookie_line.contains("Secure"), "plain HTTP on loopback: {cookie_line}");
    audit.wait_for(&[("event", "login"), ("user", "ana"), ("addr", "127.0.0.1")]).await;

    // The session reaches a protected route (404: no page there in this build, but past the layer).
    let inside = request(at, "GET", "/nothing", &[session.cookie_pair()], "").await;
    assert_eq!(inside.status, 404);

    // Logout needs the CSRF token too; then the session is gone.
    let refused = request(at, "POST", "/logout", &[session.cookie_pair(), form()], "").await;
    assert_eq!(refused.status, 403);
    let body = format!("csrf={}", session.csrf);
    let out = request(at, "POST", "/logout", &[session.cookie_pair(), form()], &body).await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/login"));
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    audit.wait_for(&[("event", "logout"), ("user", "ana")]).await;
    assert_eq!(request(at, "GET", "/nothing", &[session.cookie_pair()], "").await.status, 401);
    // No password or session id in the audit trail.
    let trail = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    assert!(!trail.contains(PASSWORD) && !trail.contains(&session.id), "{trail}");
}

#[tokio::test]
async fn a_state_changing_request_with_a_session_needs_its_csrf_token() {
    let dir = tempdir("auth-csrf");
    let (admin, _) = start(&dir, |_| {}).await;
    let at = admin.local_addr();
    let session = login(at, "ana", PASSWORD).await.unwrap();
    let other = login(at, "ana", PASSWORD).await.unwrap();
    assert_ne!(session.csrf, other.csrf, "one token per session");
    for (headers, body, expected) in [
        (vec![session.cookie_pair()], String::new(), 403),
        (vec![session.cookie_pair(), form()], "csrf=wrong".to_owned(), 403),
        (vec![session.cookie_pair(), form()], format!("csrf={}", other.csrf), 403),
        (vec![session.cookie_pair(), ("X-CSRF-Token", "wrong")], String::new(), 403),
        // With its token (field or header) the request passes the layer: an operator may
        // reload (503: no server attached in this test).
        (vec![session.cookie_pair(), form()], format!("csrf={}&x=1", session.csrf), 503),
        (vec![session.cookie_pair(), ("X-CSRF-Token", &session.csrf)], String::new(), 503),
    ] {
        let response = request(at, "POST", "/reload", &headers, &body).await;
        assert_eq!(response.status, expected, "{headers:?} {body}: {}", response.body);
    }
    // A safe method needs none.
    assert_eq!(request(at, "GET", "/nothing", &[session.cookie_pair()], "").await.status, 404);
}

#[tokio::test]
async fn wrong_passwords_are_rate_limited_per_user_and_unknown_users_answer_the_same() {
    let dir = tempdir("auth-limit");
    let audit = AuditCapture::start(&dir);
    let (admin, _) = start(&dir, |_| {}).await;
    let at = admin.local_addr();
    let unknown = login_response(at, "nobody", "whatever it is").await;
    let wrong = login_response(at, "ana", "not the password").await;
    assert_eq!((unknown.status, wrong.status), (401, 401));
    assert_eq!(unknown.body, wrong.body, "the same answer for an unknown user and a wrong password");
    for _ in 1..console_auth::limiter::USER_LIMIT {
        assert_eq!(login_response(at, "ana", "not the password").await.status, 401);
    }
    let limited = login_response(at, "ana", PASSWORD).await;
    assert_eq!(limited.status, 429, "even the right password, once limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= console_auth::limiter::WINDOW.as_secs(), "{retry}");
    audit.wait_for(&[("event", "login_rate_limited"), ("user", "ana")]).await;
    audit.wait_for(&[("event", "login_failed"), ("user", "nobody")]).await;
    // Another user from the same address is not locked out by ana's failures.
    assert!(login(at, "bo", PASSWORD).await.is_some());

    // Attempts made in parallel are counted as they start: no more than the limit get a
    // password check.
    let attempts =
        (0..3 * console_auth::limiter::USER_LIMIT).map(|_| login_response(at, "bo", "not the password"));
    let statuses: Vec<u16> = futures_join(attempts).await.into_iter().map(|r| r.status).collect();
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    assert_eq!(checked, console_auth::limiter::USER_LIMIT, "{statuses:?}");
    assert!(statuses.iter().all(|&s| s == 401 || s == 429), "{statuses:?}");
}

/// Runs the futures concurrently (as tasks on this test's runtime) and collects their outputs.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test]
async fn sessions_expire_idle_and_absolute_and_the_expiry_is_audited() {
    let dir = tempdir("auth-expiry");
    let audit = AuditCapture::start(&dir);
    let (clock, hand) = Clock::manual();
    let users = seed_users(&dir);
    let config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), users.file);
    let admin = Admin::start_with_clock(&config, clock).await.unwrap();
    let at = admin.local_addr();
    let session = login(at, "ana", PASSWORD).await.unwrap();
    hand.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        request(at, "GET", "/nothing", &[session.cookie_pair()], "").await.status,
        404,
        "used within 30 min"
    );
    hand.advance(Duration::from_secs(30 * 60));
    let expired = request(at, "GET", "/nothing", &[session.cookie_pair()], "").await;
    assert_eq!(expired.status, 401, "idle for 30 minutes");
    assert!(expired.header("set-cookie").unwrap().contains("Max-Age=0"));
    audit.wait_for(&[("event", "session_expired"), ("user", "ana"), ("reason", "idle")]).await;

    let session = login(at, "ana", PASSWORD).await.unwrap();
    for _ in 0..24 {
        hand.advance(Duration::from_secs(29 * 60));
        let status = request(at, "GET", "/nothing", &[session.cookie_pair()], "").await.status;
        assert_eq!(status, 404, "kept alive by use");
    }
    hand.advance(Duration::from_secs(29 * 60)); // 12 h 5 min after login
    assert_eq!(request(at, "GET", "/nothing", &[session.cookie_pair()], "").await.status, 401);
    audit.wait_for(&[("event", "session_expired"), ("reason", "lifetime")]).await;

    // A changed password ends the sessions of that user.
    let session = login(at, "ana", PASSWORD).await.unwrap();
    accounts::update(&dir.join("users.toml"), |a| a.set_password("ana", "another long password")).unwrap();
    assert_eq!(request(at, "GET", "/nothing", &[session.cookie_pair()], "").await.status, 401);
}

// ---------------------------------------------------------------------------------------
// [admin.tls]

#[tokio::test]
async fn admin_over_tls_with_client_certificates_and_secure_cookies() {
    let dir = tempdir("auth-tls");
    let ca = Ca::new("admin console CA", Validity::days_from_now(30)).unwrap();
    let server =
        ca.issue(CertKind::Server, "server", &["localhost".to_owned()], Validity::days_from_now(20)).unwrap();
    std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
    crate::support::write_key(&dir.join("server.key"), &server.key_pem);
    let browser = ca.issue(CertKind::Client, "ops-laptop", &[], Validity::days_from_now(10)).unwrap();
    let stranger = ca.issue(CertKind::Client, "stranger", &[], Validity::days_from_now(10)).unwrap();
    let users = seed_users(&dir);
    let mut config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), users.file);
    config.tls = Some(TlsConfig {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        min_version: TlsVersion::Tls12,
        handshake_timeout: Duration::from_secs(5),
        client_auth: ClientAuth::Required {
            thumbprints: vec![Thumbprint::Sha256(browser.digests().sha256)],
            ca: None,
        },
    });
    let admin = Admin::start(&config).await.unwrap();
    let at = admin.local_addr();

    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let approved = tls_client_config(&ca, Some(&browser), tls13);
    let mut stream = tls_connect(at, approved.clone()).await.expect("approved client certificate");
    let live = exchange(&mut stream, "GET", "/live", &[], "").await;
    assert_eq!(live.status, 200);

    let mut stream = tls_connect(at, approved.clone()).await.unwrap();
    let body = format!("user=ana&password={}", PASSWORD.replace(' ', "+"));
    let response = exchange(&mut stream, "POST", "/login", &[form()], &body).await;
    assert_eq!(response.status, 303, "{}", response.body);
    let cookie_line = response.header("set-cookie").unwrap().to_owned();
    assert!(cookie_line.starts_with("__Host-hl7d_session="), "{cookie_line}");
    assert!(cookie_line.contains("Secure") && cookie_line.contains("HttpOnly"), "{cookie_line}");
    let mut stream = tls_connect(at, approved).await.unwrap();
    let token = users.operator.clone();
    let reload = exchange(&mut stream, "POST", "/reload", &[bearer(&token).as_pair()], "").await;
    assert_eq!(reload.status, 503);

    // No client certificate, or one not approved: no HTTP at all.
    for client in [None, Some(&stranger)] {
        let config = tls_client_config(&ca, client, tls13);
        if let Some(mut stream) = tls_connect(at, config).await {
            // TLS 1.3: the refusal arrives at the first read.
            let _ = stream.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
            let mut buf = Vec::new();
            let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await.expect("answered");
            assert!(read.is_err() || buf.is_empty(), "refused: {}", String::from_utf8_lossy(&buf));
        }
    }
}

/// A non-loopback admin address without TLS refuses the console and API (403) but keeps
/// the health and metrics endpoints. The address check is the config's (unit-tested in
/// `config`); here the layer's refusal, on a loopback socket with the flag forced.
#[tokio::test]
async fn the_console_is_refused_without_tls_off_loopback() {
    let dir = tempdir("auth-refused");
    let users = seed_users(&dir);
    let settings = console_auth::AuthSettings {
        users_file: users.file,
        metrics_public: true,
        idle: Duration::from_secs(1800),
        lifetime: Duration::from_secs(43_200),
        tls: false,
        console_refused: true,
        clock: Clock::tokio(),
    };
    let auth = console_auth::AuthState::new(settings);
    let app = axum::Router::new()
        .route("/live", axum::routing::get(|| async { "live\n" }))
        .route("/metrics", axum::routing::get(|| async { "m\n" }))
        .merge(console_auth::routes(auth.clone()))
        .layer(axum::middleware::from_fn_with_state(auth, console_auth::layer));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = socket.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(socket, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
    });
    assert_eq!(request(at, "GET", "/live", &[], "").await.status, 200);
    assert_eq!(request(at, "GET", "/metrics", &[], "").await.status, 200);
    for (method, path) in [("GET", "/login"), ("GET", "/"), ("POST", "/reload"), ("GET", "/api/v1/routes")] {
        let response = request(at, method, path, &[bearer(&users.operator).as_pair()], "").await;
        assert_eq!(response.status, 403, "{method} {path}");
        assert!(response.body.contains("[admin.tls]"), "{}", response.body);
    }
}

// ---------------------------------------------------------------------------------------
// hl7d users / hl7d tokens

#[test]
fn users_and_tokens_commands() {
    let dir = tempdir("auth-cli");
    let config = dir.join("hl7d.toml");
    std::fs::write(
        &config,
        "[store]\npath = \"data\"\n[audit]\nfile = \"audit.jsonl\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[listener]]\nname = \"cli\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n",
    )
    .unwrap();
    let users_file = dir.join("data/users.toml");
    let run = |args: &[&str], stdin: &str| cli(&config, args, stdin);

    let check = run(&["check-config"], "");
    assert!(check.ok && check.stderr.contains("the console has no users yet"), "{check:?}");
    let added = run(&["users", "add", "ana", "--role", "operator"], &format!("{PASSWORD}\n"));
    assert!(added.ok, "{added:?}");
    assert!(added.stdout.contains("added user \"ana\""), "{added:?}");
    assert!(run(&["users", "add", "bo", "--role", "viewer"], "another long password\n").ok);
    let taken = run(&["users", "add", "ana", "--role", "viewer"], "another long password\n");
    assert_eq!(taken.code, Some(64), "{taken:?}");
    let short = run(&["users", "add", "cy", "--role", "viewer"], "short\n");
    assert_eq!(short.code, Some(64), "{short:?}");
    assert!(short.stderr.contains("too short"), "{short:?}");
    assert!(!run(&["check-config"], "").stderr.contains("no users"));
    let list = run(&["users", "list"], "");
    assert!(
        list.stdout.contains("ana") && list.stdout.contains("operator") && list.stdout.contains("bo"),
        "{list:?}"
    );
    assert!(!list.stdout.contains("argon2"), "{list:?}");
    let json: serde_json::Value =
        serde_json::from_str(&run(&["users", "list", "--json"], "").stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let accounts = Accounts::load(&users_file).unwrap();
    let old_hash = accounts.user("ana").unwrap().password_hash.clone();
    assert!(accounts::verify_password(&old_hash, PASSWORD));
    assert!(run(&["users", "passwd", "ana"], "a brand new password\n").ok);
    let new_hash = Accounts::load(&users_file).unwrap().user("ana").unwrap().password_hash.clone();
    assert!(accounts::verify_password(&new_hash, "a brand new password") && new_hash != old_hash);
    assert_eq!(run(&["users", "passwd", "nobody"], "a brand new password\n").code, Some(64));
    assert!(run(&["users", "remove", "bo"], "").ok);
    assert_eq!(run(&["users", "remove", "bo"], "").code, Some(64));
    assert!(Accounts::load(&users_file).unwrap().user("bo").is_none());

    let created = run(&["tokens", "create", "--role", "viewer", "--name", "grafana"], "");
    assert!(created.ok, "{created:?}");
    let token = created.stdout.lines().last().unwrap().to_owned();
    assert!(token.starts_with(accounts::TOKEN_PREFIX) && token.len() == 69, "{created:?}");
    assert_eq!(Accounts::load(&users_file).unwrap().token(&token).unwrap().role, Role::Viewer);
    assert_eq!(run(&["tokens", "create", "--role", "viewer", "--name", "grafana"], "").code, Some(64));
    let list = run(&["tokens", "list"], "");
    assert!(list.stdout.contains("grafana") && list.stdout.contains("viewer"), "{list:?}");
    let file = std::fs::read_to_string(&users_file).unwrap();
    for text in [&list.stdout, &file] {
        assert!(
            !text.contains(&token[accounts::TOKEN_PREFIX.len()..]),
            "the token is never shown again: {text}"
        );
    }
    assert!(run(&["tokens", "revoke", "grafana"], "").ok);
    assert!(Accounts::load(&users_file).unwrap().token(&token).is_none());
    assert_eq!(run(&["tokens", "revoke", "grafana"], "").code, Some(64));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&users_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let trail = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    for event in ["user_added", "user_password_changed", "user_removed", "token_created", "token_revoked"] {
        assert!(trail.contains(&format!("\"event\":\"{event}\"")), "{event} in {trail}");
    }
    assert!(!trail.contains(PASSWORD) && !trail.contains(&token), "{trail}");
}

/// `check-config` (and so `serve`) refuses an `[admin.tls]` whose files cannot be used, and
/// warns about a non-loopback admin address without TLS.
#[test]
fn check_config_checks_admin_tls_and_warns_without_it() {
    let dir = tempdir("auth-check");
    let config = dir.join("hl7d.toml");
    let listener = "[[listener]]\nname = \"c\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n";
    std::fs::write(
        &config,
        format!("[admin]\nlisten = \"127.0.0.1:0\"\n[admin.tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n{listener}"),
    )
    .unwrap();
    let check = cli(&config, &["check-config"], "");
    assert_eq!(check.code, Some(78), "{check:?}");
    assert!(check.stderr.contains("admin: [admin.tls]") && check.stderr.contains("missing.pem"), "{check:?}");
    // Not bound: check-config without --bind only reads the file.
    std::fs::write(&config, format!("[admin]\nlisten = \"0.0.0.0:19275\"\n{listener}")).unwrap();
    let check = cli(&config, &["check-config"], "");
    assert!(check.ok, "{check:?}");
    assert!(
        check.stderr.contains("0.0.0.0:19275 is reachable from the network without [admin.tls]"),
        "{check:?}"
    );
}

/// On a terminal `hl7d users add` asks twice, without echo. The terminal is a pty from
/// `script` (util-linux/bsdutils, part of every Debian system); each answer is written only
/// once its prompt has appeared.
#[test]
fn users_add_on_a_terminal_prompts_twice_without_echo() {
    use std::io::{Read, Write};
    let Ok(script) = which("script") else {
        assert!(!crate::support::running_in_ci(), "`script` (bsdutils) is required under CI");
        eprintln!("SKIPPED users_add_on_a_terminal_prompts_twice_without_echo: no `script` command");
        return;
    };
    let dir = tempdir("auth-tty");
    let config = dir.join("hl7d.toml");
    std::fs::write(
        &config,
        "[store]\npath = \"data\"\n[[listener]]\nname = \"t\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n",
    )
    .unwrap();
    let command = format!(
        "{} users add tty-user --role viewer --config {}",
        env!("CARGO_BIN_EXE_hl7d"),
        config.display()
    );
    let mut child = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = child.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = output.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = lines.send(all.clone());
        }
        all
    });
    let wait_for = |text: &str| loop {
        let so_far = seen.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no {text:?} prompt"));
        if so_far.contains(text) {
            return;
        }
    };
    wait_for("New password: ");
    input.write_all(b"typed on a tty 42\n").unwrap();
    wait_for("Again: ");
    input.write_all(b"typed on a tty 42\n").unwrap();
    let status = child.wait().unwrap();
    drop(input);
    let all = reader.join().unwrap();
    assert!(status.success(), "{all}");
    assert!(all.contains("added user \"tty-user\""), "{all}");
    assert!(!all.contains("typed on a tty"), "the password was echoed: {all}");
    let hash =
        Accounts::load(&dir.join("data/users.toml")).unwrap().user("tty-user").unwrap().password_hash.clone();
    assert!(accounts::verify_password(&hash, "typed on a tty 42"));
}

fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(tool)).find(|path| path.is_file()))
        .ok_or(())
}

// ---------------------------------------------------------------------------------------
// Helpers

struct SeededUsers {
    file: std::path::PathBuf,
    operator: String,
    viewer: String,
}

/// A users file in `dir`: ana (operator) and bo (viewer) with [`PASSWORD`], tokens `ops`
/// (operator) and `grafana` (viewer).
fn seed_users(dir: &Path) -> SeededUsers {
    let file = dir.join("users.toml");
    let (operator, viewer) = accounts::update(&file, |a| {
        a.add_user("ana", Role::Operator, PASSWORD)?;
        a.add_user("bo", Role::Viewer, PASSWORD)?;
        Ok((a.create_token("ops", Role::Operator)?, a.create_token("grafana", Role::Viewer)?))
    })
    .unwrap();
    SeededUsers { file, operator, viewer }
}

/// An admin endpoint on 127.0.0.1:0 with [`seed_users`], `adjust`ed.
async fn start(dir: &Path, adjust: impl FnOnce(&mut AdminConfig)) -> (Admin, SeededUsers) {
    let users = seed_users(dir);
    let mut config = AdminConfig::new("127.0.0.1:0".parse().unwrap(), users.file.clone());
    adjust(&mut config);
    (Admin::start(&config).await.unwrap(), users)
}

struct Header(String);

impl Header {
    fn as_pair(&self) -> (&str, &str) {
        ("Authorization", &self.0)
    }
}

fn bearer(token: &str) -> Header {
    Header(format!("Bearer {token}"))
}

fn form() -> (&'static str, &'static str) {
    ("Content-Type", "application/x-www-form-urlencoded")
}

#[derive(Debug)]
struct Session {
    id: String,
    csrf: String,
    set_cookie: String,
    cookie: String,
}

impl Session {
    fn cookie_pair(&self) -> (&str, &str) {
        ("Cookie", &self.cookie)
    }
}

async fn login_response(at: SocketAddr, user: &str, password: &str) -> Response {
    let body = format!("user={user}&password={}", password.replace(' ', "+"));
    request(at, "POST", "/login", &[form()], &body).await
}

/// Logs in; the session id, its CSRF token and the cookie.
async fn login(at: SocketAddr, user: &str, password: &str) -> Option<Session> {
    let response = login_response(at, user, password).await;
    if response.status != 303 {
        return None;
    }
    let set_cookie = response.header("set-cookie")?.to_owned();
    let cookie = set_cookie.split(';').next()?.to_owned();
    let id = cookie.split_once('=')?.1.to_owned();
    let csrf = whoami(at, &cookie).await;
    Some(Session { id, csrf, set_cookie, cookie })
}

/// The session's CSRF token: `GET /session` answers the caller's principal as JSON (what
/// the pages put in their forms).
async fn whoami(at: SocketAddr, cookie: &str) -> String {
    let response = request(at, "GET", "/session", &[("Cookie", cookie)], "").await;
    assert_eq!(response.status, 200, "{}", response.body);
    let json: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    json["csrf"].as_str().unwrap().to_owned()
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

async fn request(at: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut stream = TcpStream::connect(at).await.unwrap();
    exchange(&mut stream, method, path, headers, body).await
}

/// One HTTP/1.1 request (`Connection: close`) and its response.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let answer = async {
        stream.write_all(text.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        // A TLS peer may end without close_notify.
        let _ = stream.read_to_end(&mut raw).await;
        raw
    };
    let raw = tokio::time::timeout(WAIT, answer).await.expect("answered within the wait");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.get(9..12)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|line| line.split_once(": ")).map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
    Response { status, headers, body: body.to_owned() }
}

async fn tls_connect(
    at: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(at).await.ok()?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp)).await.ok()?.ok()
}

#[derive(Debug)]
struct CliRun {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn cli(config: &Path, args: &[&str], stdin: &str) -> CliRun {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hl7d");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
    }
    let output = child.wait_with_output().unwrap();
    CliRun {
        ok: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
