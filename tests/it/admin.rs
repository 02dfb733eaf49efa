//! Operations: the admin endpoint (`/live`, `/ready`, `/metrics`, `POST /reload`), the
//! metrics moving with traffic, and the audit trail's line for every refusal kind. In
//! process where possible; one test runs the `hl7d serve` binary end to end (readiness
//! flag, audit start/stop, SIGHUP). Loopback only, every wait bounded.
//!
//! The metrics recorder is process-wide, so each test uses listener names of its own
//! (`adm-…`) and reads only its own series.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hl7d::admin::{Admin, Running};
use hl7d::config::{AdminConfig, ClientAuth, Config, Thumbprint, TlsConfig, TlsVersion, Transport};
use hl7d::console::Role;
use hl7d::listener::Server;
use hl7d::store::{AcceptAfterParse, MessageStore, SqliteOptions, SqliteStore};
use hl7d::tls::pki::{Ca, CertKind, Issued, Validity};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::{
    self, expect_closed, find_line, fixture, msa, plain, read_audit, read_frame, send, tempdir,
    tls_client_config, AuditCapture, TestServer, WAIT,
};

/// Upper bound of one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Endpoints

#[tokio::test]
async fn ready_is_503_until_the_listeners_run_then_200_and_reload_answers() {
    bounded(async {
        let dir = tempdir("admin-ready");
        let audit = AuditCapture::start(&dir);
        let (users, operator) = support::users_with_token(&dir, Role::Operator);
        let viewer =
            hl7d::console::auth::accounts::update(&users, |a| a.create_token("adm-viewer", Role::Viewer))
                .unwrap();
        let admin = Admin::start(&AdminConfig::new("127.0.0.1:0".parse().unwrap(), users))
            .await
            .expect("admin binds");
        let at = admin.local_addr();
        let reload = |token: &'static str| http_as(at, "POST", "/reload", Some(token));
        let (operator, viewer): (&'static str, &'static str) = (operator.leak(), viewer.leak());

        // Stage 1: admin up, nothing else.
        assert_eq!(http(at, "GET", "/live").await, (200, "live\n".to_owned()));
        assert_eq!(http(at, "GET", "/ready").await.0, 503);
        assert_eq!(http(at, "POST", "/reload").await.0, 401, "no credentials");
        assert_eq!(reload(viewer).await.0, 403, "a viewer may not reload");
        assert_eq!(reload(operator).await.0, 503, "no server to reload yet");
        assert_eq!(http_as(at, "GET", "/nothing", Some(operator)).await.0, 404);
        assert_eq!(http(at, "GET", "/nothing").await.0, 401, "unknown paths are not public either");
        assert_eq!(http_as(at, "GET", "/reload", Some(operator)).await.0, 405);

        // Stage 2: listeners bound; still not ready until the flag says so.
        let config_file = dir.join("hl7d.toml");
        std::fs::write(
            &config_file,
            "[[listener]]\nname = \"adm-ready\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n",
        )
        .unwrap();
        let config = Config::load(&config_file).unwrap();
        let server = Server::start(&config, Arc::new(AcceptAfterParse::default())).await.unwrap();
        assert_eq!(http(at, "GET", "/ready").await.0, 503);
        admin.attach(running(&server, Some(config_file.clone())));
        admin.readiness().set(true);
        assert_eq!(http(at, "GET", "/ready").await, (200, "ready\n".to_owned()));

        // POST /reload: same as SIGHUP, for an operator.
        let (status, body) = reload(operator).await;
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["ok"], true, "{body}");
        std::fs::write(&config_file, "[[listener]]\nname = \"adm-ready\"\nlisten = nope\n").unwrap();
        let (status, body) = reload(operator).await;
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("does not load"), "{body}");
        audit
            .wait_for(&[
                ("event", "reload_requested"),
                ("source", "admin"),
                ("user", "test-operator"),
                ("credential", "token"),
            ])
            .await;

        // Shutdown begins: not ready any more.
        admin.readiness().set(false);
        assert_eq!(http(at, "GET", "/ready").await.0, 503);
        server.shutdown(WAIT).await;
        admin.stop().await;
    })
    .await;
}

#[tokio::test]
async fn metrics_count_traffic_refusals_closes_and_store_commits() {
    bounded(async {
        let dir = tempdir("admin-metrics");
        let admin = support::start_admin().await;
        let at = admin.local_addr();
        let store = Arc::new(SqliteStore::open(&dir, SqliteOptions::default()).unwrap());
        let mut traffic = plain("adm-traffic");
        traffic.max_message_size = 1024;
        let mut fenced = plain("adm-fenced");
        fenced.allow_ips = vec!["10.0.0.0/8".parse().unwrap()];
        let mut single = plain("adm-single");
        single.max_connections = 1;
        let store_dyn: Arc<dyn MessageStore> = store.clone();
        let server = support::start_with_store(vec![traffic, fenced, single], store_dyn).await;

        // Traffic: AA, the same again (duplicate, AA), not HL7 (AR), too large (AR).
        let mut conn = TcpStream::connect(server.local_addr("adm-traffic").unwrap()).await.unwrap();
        let message = fixture("adt_a04_v231_original_mode.hl7");
        let mut big = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|BIG-1|P|2.5\rNTE|1||".to_vec();
        big.extend(std::iter::repeat_n(b'x', 2000));
        let mut sent = 0;
        let mut received = 0;
        for (payload, code) in [
            (message.clone(), "AA"),
            (message.clone(), "AA"),
            (fixture("invalid_not_hl7.txt"), "AR"),
            (big, "AR"),
        ] {
            send(&mut conn, &payload).await;
            sent += payload.len() + 3;
            let ack = read_frame(&mut conn).await;
            received += ack.len() + 3;
            assert_eq!(msa(&ack).0, code);
        }
        drop(conn);

        let traffic = [("listener", "adm-traffic")];
        let scrape = wait_metric(
            at,
            "hl7d_connections_closed_total",
            &[("listener", "adm-traffic"), ("reason", "peer_closed")],
            1.0,
        )
        .await;
        let value = |name: &str, extra: &[(&str, &str)]| {
            let mut labels = traffic.to_vec();
            labels.extend_from_slice(extra);
            metric(&scrape, name, &labels)
        };
        assert_eq!(value("hl7d_connections_accepted_total", &[]), Some(1.0));
        assert_eq!(value("hl7d_connections_open", &[]), Some(0.0));
        assert_eq!(value("hl7d_messages_received_total", &[]), Some(3.0));
        assert_eq!(value("hl7d_acks_sent_total", &[("code", "AA")]), Some(2.0));
        assert_eq!(value("hl7d_acks_sent_total", &[("code", "AR")]), Some(2.0));
        assert_eq!(value("hl7d_acks_sent_total", &[("code", "CA")]), Some(0.0), "every code has a series");
        assert_eq!(value("hl7d_messages_duplicate_total", &[]), Some(1.0));
        assert_eq!(value("hl7d_frame_errors_total", &[("reason", "too_large")]), Some(1.0));
        assert_eq!(value("hl7d_received_bytes_total", &[]), Some(sent as f64));
        assert_eq!(value("hl7d_sent_bytes_total", &[]), Some(received as f64));
        assert_eq!(value("hl7d_ack_latency_seconds_count", &[]), Some(4.0));
        assert_eq!(value("hl7d_ack_latency_seconds_bucket", &[("le", "+Inf")]), Some(4.0));
        // Group commit: one transaction per stored message here, and the duplicate is
        // recognised inside a transaction too.
        assert!(metric(&scrape, "hl7d_store_commit_seconds_count", &[]).unwrap_or(0.0) >= 2.0, "{scrape}");
        assert!(metric(&scrape, "hl7d_store_commit_messages_bucket", &[("le", "1")]).unwrap_or(0.0) >= 2.0);
        assert!(scrape.contains("hl7d_build_info{version=\""), "{scrape}");

        // Refused at accept, by reason.
        let mut refused = TcpStream::connect(server.local_addr("adm-fenced").unwrap()).await.unwrap();
        expect_closed(&mut refused).await;
        wait_metric(
            at,
            "hl7d_connections_refused_total",
            &[("listener", "adm-fenced"), ("reason", "ip_not_allowed")],
            1.0,
        )
        .await;
        let mut first = TcpStream::connect(server.local_addr("adm-single").unwrap()).await.unwrap();
        send(&mut first, &message).await;
        read_frame(&mut first).await;
        let mut second = TcpStream::connect(server.local_addr("adm-single").unwrap()).await.unwrap();
        expect_closed(&mut second).await;
        let scrape = wait_metric(
            at,
            "hl7d_connections_refused_total",
            &[("listener", "adm-single"), ("reason", "max_connections")],
            1.0,
        )
        .await;
        assert_eq!(metric(&scrape, "hl7d_connections_open", &[("listener", "adm-single")]), Some(1.0));

        drop(first);
        server.shutdown(WAIT).await;
        admin.stop().await;
        drop(store);
    })
    .await;
}

/// Each timeout and the junk limit close a connection under its own `reason` label. On
/// tokio's paused clock, so the timeouts cost no real time.
#[tokio::test(start_paused = true)]
async fn closes_are_counted_by_reason() {
    bounded(async {
        let admin = support::start_admin().await;
        let at = admin.local_addr();
        let mut idle = plain("adm-close-idle");
        idle.idle_timeout = Duration::from_secs(1);
        let mut stalled = plain("adm-close-frame");
        stalled.frame_timeout = Duration::from_secs(1);
        let junk = plain("adm-close-junk");
        let mut server = TestServer::start(vec![idle, stalled, junk]).await;

        // Silent after one message: closed by the idle timeout.
        let mut quiet = server.connect("adm-close-idle").await;
        send(&mut quiet, &fixture("adt_a04_v231_original_mode.hl7")).await;
        read_frame(&mut quiet).await;
        expect_closed(&mut quiet).await;
        // Half a frame: closed by the frame timeout.
        let mut half = server.connect("adm-close-frame").await;
        half.write_all(b"\x0bMSH|^~\\&|half a message").await.unwrap();
        expect_closed(&mut half).await;
        // A frame, then more than 64 KiB of bytes outside any frame.
        let mut noisy = server.connect("adm-close-junk").await;
        send(&mut noisy, &fixture("adt_a04_v231_original_mode.hl7")).await;
        read_frame(&mut noisy).await;
        let _ = noisy.write_all(&vec![b'\n'; 65 * 1024]).await;
        expect_closed(&mut noisy).await;

        for (listener, reason) in
            [("adm-close-idle", "idle"), ("adm-close-frame", "frame_timeout"), ("adm-close-junk", "junk")]
        {
            let scrape = wait_metric(
                at,
                "hl7d_connections_closed_total",
                &[("listener", listener), ("reason", reason)],
                1.0,
            )
            .await;
            // And under no other reason.
            let closed: f64 = scrape
                .lines()
                .filter(|line| {
                    line.starts_with("hl7d_connections_closed_total{")
                        && line.contains(&format!("listener=\"{listener}\""))
                })
                .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            assert_eq!(closed, 1.0, "{listener}:\n{scrape}");
        }
        server.stop().await;
        admin.stop().await;
    })
    .await;
}

#[tokio::test]
async fn every_refusal_kind_has_an_audit_line_and_tls_metrics_move() {
    bounded(async {
        let dir = tempdir("admin-audit");
        let audit = AuditCapture::start(&dir);
        let admin = support::start_admin().await;
        let at = admin.local_addr();

        let ca = Ca::new("admin test CA", Validity::days_from_now(30)).unwrap();
        let names = ["localhost".to_owned()];
        let server_cert = ca.issue(CertKind::Server, "server", &names, Validity::days_from_now(20)).unwrap();
        std::fs::write(dir.join("server.pem"), &server_cert.cert_pem).unwrap();
        crate::support::write_key(&dir.join("server.key"), &server_cert.key_pem);
        let approved =
            ca.issue(CertKind::Client, "approved-sender", &[], Validity::days_from_now(10)).unwrap();
        let stranger = ca.issue(CertKind::Client, "stranger", &[], Validity::days_from_now(10)).unwrap();
        let approved_thumbprint = Thumbprint::Sha256(approved.digests().sha256);
        let stranger_thumbprint = Thumbprint::Sha256(stranger.digests().sha256).to_string();

        let mut mtls = plain("adm-mtls");
        mtls.transport = Transport::Tls(TlsConfig {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            min_version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(5),
            client_auth: ClientAuth::Required { thumbprints: vec![approved_thumbprint], ca: None },
        });
        let mut fenced = plain("adm-audit-fenced");
        fenced.allow_ips = vec!["10.0.0.0/8".parse().unwrap()];
        let mut single = plain("adm-audit-single");
        single.max_connections = 1;
        let server = support::start_with_store(
            vec![mtls, fenced, single, plain("adm-audit-plain")],
            Arc::new(AcceptAfterParse::default()),
        )
        .await;
        admin.attach(running(&server, None));
        let mtls_addr = server.local_addr("adm-mtls").unwrap();

        // Accepted with the approved certificate.
        let mut ok = tls_connect(mtls_addr, client_config(&ca, Some(&approved))).await.expect("handshake");
        send(&mut ok, &fixture("adt_a04_v231_original_mode.hl7")).await;
        assert_eq!(msa(&read_frame(&mut ok).await).0, "AA");
        drop(ok);
        audit.wait_for(&[("event", "connection_accepted"), ("listener", "adm-mtls")]).await;

        // Client certificate refused: not approved.
        let _ = tls_exchange(mtls_addr, client_config(&ca, Some(&stranger))).await;
        let line =
            audit.wait_for(&[("event", "client_cert_refused"), ("reason", "client_cert_unapproved")]).await;
        assert_eq!(line["client_thumbprint"], stranger_thumbprint.as_str(), "{line}");
        assert!(line["client_subject"].as_str().unwrap().contains("stranger"), "{line}");
        assert_eq!(line["level"], "WARN");
        // No certificate at all.
        let _ = tls_exchange(mtls_addr, client_config(&ca, None)).await;
        audit.wait_for(&[("event", "client_cert_refused"), ("reason", "client_cert_missing")]).await;

        // TLS handshake failure: plaintext MLLP on the TLS port.
        let mut plain_on_tls = TcpStream::connect(mtls_addr).await.unwrap();
        send(&mut plain_on_tls, b"MSH|^~\\&|A").await;
        expect_closed(&mut plain_on_tls).await;
        audit.wait_for(&[("event", "tls_handshake_failed"), ("reason", "not_tls")]).await;

        // Refused at accept: allowlist and connection limit.
        let mut refused = TcpStream::connect(server.local_addr("adm-audit-fenced").unwrap()).await.unwrap();
        expect_closed(&mut refused).await;
        let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "ip_not_allowed")]).await;
        assert_eq!(line["listener"], "adm-audit-fenced");
        assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{line}");
        let mut first = TcpStream::connect(server.local_addr("adm-audit-single").unwrap()).await.unwrap();
        send(&mut first, &fixture("adt_a04_v231_original_mode.hl7")).await;
        read_frame(&mut first).await;
        let mut second = TcpStream::connect(server.local_addr("adm-audit-single").unwrap()).await.unwrap();
        expect_closed(&mut second).await;
        let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "max_connections")]).await;
        assert_eq!(line["max_connections"], 1);

        // A health check (connect, close) is not an audit event, nor an accepted connection.
        drop(TcpStream::connect(server.local_addr("adm-audit-plain").unwrap()).await.unwrap());
        wait_metric(
            at,
            "hl7d_connections_closed_total",
            &[("listener", "adm-audit-plain"), ("reason", "closed_before_data")],
            1.0,
        )
        .await;
        assert!(audit.find(&[("listener", "adm-audit-plain")]).is_none(), "{}", audit.text());

        // TLS metrics and certificate expiry gauges.
        let scrape = wait_metric(
            at,
            "hl7d_tls_handshake_failures_total",
            &[("listener", "adm-mtls"), ("reason", "not_tls")],
            1.0,
        )
        .await;
        let mtls = [("listener", "adm-mtls")];
        let handshakes = metric(&scrape, "hl7d_tls_handshakes_total", &[mtls[0], ("version", "TLSv1.3")]);
        assert_eq!(handshakes, Some(1.0), "{scrape}");
        for reason in ["client_cert_unapproved", "client_cert_missing"] {
            let failures =
                metric(&scrape, "hl7d_tls_handshake_failures_total", &[mtls[0], ("reason", reason)]);
            assert_eq!(failures, Some(1.0), "{reason}: {scrape}");
        }
        let server_expiry = metric(&scrape, "hl7d_tls_server_cert_expiry_timestamp_seconds", &mtls).unwrap();
        let in_twenty_days = unix_now() + 20.0 * 86_400.0;
        assert!((server_expiry - in_twenty_days).abs() < 2.0 * 86_400.0, "{server_expiry}");
        let thumbprint = approved_thumbprint.to_string();
        let client_expiry = metric(
            &scrape,
            "hl7d_tls_client_cert_expiry_timestamp_seconds",
            &[mtls[0], ("thumbprint", thumbprint.as_str())],
        );
        assert!(client_expiry.is_some_and(|t| t > unix_now()), "{scrape}");
        assert_eq!(metric(&scrape, "hl7d_tls_approved_clients", &mtls), Some(1.0));
        // The daily check finds both certificates inside the 30-day window.
        assert_eq!(
            hl7d::expiry::check(&server.reloader(), Duration::from_secs(30 * 86_400), unix_now() as i64),
            2
        );

        // Nothing from inside a message reaches the audit trail.
        assert!(!audit.text().contains("NGUYEN"), "{}", audit.text());
        drop(first);
        server.shutdown(WAIT).await;
        admin.stop().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The real binary: readiness wiring, audit trail with start/stop, reload by HTTP and SIGHUP

#[test]
fn serve_end_to_end_with_admin_and_audit_file() {
    let dir = tempdir("admin-serve");
    let audit_file = dir.join("audit.jsonl");
    // Port 0 for both: the bound ports are read from the log.
    let config = "[store]\npath = \"data\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [audit]\nfile = \"audit.jsonl\"\n\
         [[listener]]\nname = \"adm-proc\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n";
    std::fs::write(dir.join("hl7d.toml"), config).unwrap();
    // An operator's API token for POST /reload, made as an operator would.
    let created = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["tokens", "create", "--role", "operator", "--name", "adm-ops", "--config"])
        .arg(dir.join("hl7d.toml"))
        .output()
        .expect("run hl7d tokens create");
    assert!(created.status.success(), "{created:?}");
    let token = String::from_utf8(created.stdout).unwrap().lines().last().unwrap().to_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["serve", "--config"])
        .arg(dir.join("hl7d.toml"))
        // The log at info (it names the bound ports) except the audit target, which the
        // log then shows only from warn; the audit trail must still get every audit event.
        .env("RUST_LOG", "info,audit=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hl7d serve");
    let pid = child.id().to_string();
    let log = ChildLog::read(child.stderr.take().unwrap());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let admin = log.addr("admin endpoint");
        let listener = log.addr("listening");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(bounded(async {
            // Ready once the store is open and the listener bound.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some((200, _)) = try_http(admin, "GET", "/ready", None).await {
                    break;
                }
                assert!(Instant::now() < deadline, "hl7d never became ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut conn = TcpStream::connect(listener).await.unwrap();
            send(&mut conn, &fixture("adt_a04_v231_original_mode.hl7")).await;
            assert_eq!(msa(&read_frame(&mut conn).await).0, "AA");
            drop(conn);
            let scrape =
                wait_metric(admin, "hl7d_acks_sent_total", &[("listener", "adm-proc"), ("code", "AA")], 1.0)
                    .await;
            assert!(
                metric(&scrape, "hl7d_store_commit_seconds_count", &[]).unwrap_or(0.0) >= 1.0,
                "{scrape}"
            );
            assert_eq!(http(admin, "POST", "/reload").await.0, 401, "not without credentials");
            assert_eq!(http_as(admin, "POST", "/reload", Some(&token)).await.0, 200);
        }));
        signal("HUP", &pid);
        wait_for_audit(&audit_file, &[("event", "reload_requested"), ("source", "SIGHUP")]);
    }));
    signal("TERM", &pid);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let stderr = log.finish();
    if let Err(panic) = outcome {
        eprintln!("hl7d stderr:\n{stderr}");
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "hl7d exited with {status:?}:\n{stderr}");
    let lines = read_audit(&audit_file);
    let events: Vec<&str> = lines.iter().filter_map(|line| line["event"].as_str()).collect();
    for expected in ["start", "connection_accepted", "reload_requested", "config_reloaded", "stop"] {
        assert!(events.contains(&expected), "no {expected} in {events:?}");
    }
    // `hl7d tokens create` wrote to the same trail before the server started.
    assert_eq!(events[..2], ["token_created", "start"], "{events:?}");
    assert_eq!(events.last(), Some(&"stop"), "{events:?}");
    assert!(!raw_contains(&audit_file, &token), "the token is not in the audit trail");
    let http_reload = find_line(&lines, &[("event", "reload_requested"), ("source", "admin")]).unwrap();
    assert_eq!(
        (http_reload["user"].as_str(), http_reload["credential"].as_str()),
        (Some("adm-ops"), Some("token"))
    );
    // The log's filter does not thin out the audit trail: the audit-only line is not in the
    // log, and it is in the trail (checked above).
    assert!(!stderr.contains("connection opened"), "{stderr}");
    let raw = std::fs::read_to_string(&audit_file).unwrap();
    assert!(!raw.contains("NGUYEN") && !raw.contains("CTRL-20261105"), "{raw}");
}

#[test]
fn deploy_example_config_is_valid_and_names_every_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/hl7d.example.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.admin.is_some() && config.audit.is_some());
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "retention",
        "cert_expiry_warning",
        "syslog",
        "syslog_ca",
        "plaintext",
        "force_encoding",
        "frame_timeout",
        "write_timeout",
        "lenient_framing",
        "duplicate_window",
        "handshake_timeout",
        "client_ca",
        "[listener.framing]",
        "metrics_public",
        "session_idle_timeout",
        "[admin.tls]",
    ] {
        assert!(text.contains(key), "the example does not mention {key}");
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn raw_contains(file: &Path, text: &str) -> bool {
    std::fs::read_to_string(file).unwrap_or_default().contains(text)
}

/// What `hl7d serve` hands the admin endpoint: the server's TLS listeners and its reload
/// (the configuration at `config_path`, or the embedded default).
pub(crate) fn running(server: &Server, config_path: Option<PathBuf>) -> Running {
    let reloader = server.reloader();
    let source = match config_path {
        Some(path) => hl7d::serve::ConfigSource::File(path),
        None => hl7d::serve::ConfigSource::Embedded { listen: None },
    };
    let reload: hl7d::admin::ReloadFn = Arc::new(move || {
        let (reloader, source) = (reloader.clone(), source.clone());
        Box::pin(async move { hl7d::serve::reload(&reloader, &source).await })
    });
    Running { reloader: server.reloader(), reload }
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("test finished within its limit");
}

/// One HTTP/1.1 request without a body or credentials; (status, body).
pub(crate) async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_as(addr, method, path, None).await
}

/// One HTTP/1.1 request without a body, with `Authorization: Bearer TOKEN` when given;
/// (status, body).
pub(crate) async fn http_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    tokio::time::timeout(WAIT, try_http(addr, method, path, token))
        .await
        .expect("admin answers within the test wait")
        .expect("admin answers")
}

async fn try_http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let authorization = token.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{authorization}Content-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// The value of the series `name` whose labels include all of `labels`.
fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)),
            None => (series, BTreeMap::new()),
        };
        let matches = series_name == name
            && labels.iter().all(|(k, v)| series_labels.get(*k).map(String::as_str) == Some(*v));
        matches.then(|| value.parse().ok()).flatten()
    })
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key.to_owned(), value.trim_end_matches('"').to_owned()))
        })
        .collect()
}

/// Scrapes until the series reaches `expected` (bounded); returns that scrape.
async fn wait_metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)], expected: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, scrape) = http(admin, "GET", "/metrics").await;
        assert_eq!(status, 200);
        if metric(&scrape, name, labels) == Some(expected) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{name}{labels:?} never reached {expected}:\n{scrape}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wait_for_audit(path: &Path, fields: &[(&str, &str)]) {
    let deadline = Instant::now() + WAIT;
    while find_line(&read_audit(path), fields).is_none() {
        assert!(Instant::now() < deadline, "no audit line with {fields:?} in {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client_config(ca: &Ca, client: Option<&Issued>) -> Arc<ClientConfig> {
    tls_client_config(ca, client, &[&rustls::version::TLS13])
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake within the test wait")
}

/// Handshake, one message, one read: a TLS 1.3 client learns of a refused certificate on
/// its first read. Returns whether an ACK came back.
async fn tls_exchange(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    let Ok(mut stream) = tls_connect(addr, config).await else { return false };
    let _ = stream.write_all(&support::frame(&fixture("adt_a04_v231_original_mode.hl7"))).await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(WAIT, stream.read(&mut buf)).await, Ok(Ok(n)) if n > 0)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The stderr of a child `hl7d serve`, read line by line on a thread of its own (so the
/// child never blocks on a full pipe).
struct ChildLog {
    lines: std::sync::mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl ChildLog {
    fn read(stderr: std::process::ChildStderr) -> ChildLog {
        use std::io::BufRead;
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        ChildLog { lines, seen: Default::default(), reader }
    }

    /// The address logged with `message` (waiting for the line, bounded).
    fn addr(&self, message: &str) -> SocketAddr {
        let found = |seen: &[String]| seen.iter().find_map(|line| support::logged_addr(line, message));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(addr) = found(&self.seen.borrow()) {
                return addr;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.borrow_mut().push(line),
                Err(_) => panic!(
                    "hl7d logged no {message:?} line with an address:\n{}",
                    self.seen.borrow().join("\n")
                ),
            }
        }
    }

    /// Everything the child wrote, once it has exited.
    fn finish(self) -> String {
        let _ = self.reader.join();
        let mut seen = self.seen.into_inner();
        seen.extend(self.lines.try_iter());
        seen.join("\n")
    }
}

fn signal(name: &str, pid: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), pid]).status().expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hl7d did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
