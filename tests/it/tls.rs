//! TLS listeners: versions, mutual TLS by thumbprint, refusals with their audit reasons,
//! live reload, and `openssl s_client` as an independent client. Certificates are minted
//! per test (rcgen through `hl7d::tls::pki`); everything runs on loopback, every wait is
//! bounded.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hl7d::config::{ClientAuth, Config, ListenerConfig, Thumbprint, TlsConfig, TlsVersion, Transport};
use hl7d::listener::{ServeError, Server};
use hl7d::store::{AcceptAfterParse, Appended, BoxFuture, MessageStore, NewMessage, StoreError};
use hl7d::tls::pki::{Ca, CertKind, Issued, Validity};
use hl7d::tls::TlsError;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, SupportedProtocolVersion};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::{
    self, expect_closed, fixture, msa, read_frame, send, tempdir, tls_client_config, Logs, WAIT,
};

/// Upper bound of one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(60);
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

// ---------------------------------------------------------------------------------------
// Versions and suites

#[tokio::test]
async fn tls12_and_tls13_get_acks() {
    bounded(async {
        let logs = Logs::capture();
        let pki = Pki::new("versions");
        let server = start(vec![pki.listener("tls", ClientAuth::None)]).await;
        for versions in [TLS12, TLS13] {
            let mut stream =
                connect(server.addr, pki.client_config(None, versions)).await.expect("handshake");
            for _ in 0..2 {
                exchange_ok(&mut stream).await;
            }
        }
        logs.wait_for(&["connection opened", "TLSv1.2", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]).await;
        logs.wait_for(&["connection opened", "TLSv1.3", "TLS13_AES_128_GCM_SHA256"]).await;
    })
    .await;
}

#[tokio::test]
async fn min_version_13_refuses_a_tls12_client() {
    bounded(async {
        let logs = Logs::capture();
        let pki = Pki::new("min13");
        let mut listener = pki.listener("tls", ClientAuth::None);
        tls_mut(&mut listener).min_version = TlsVersion::Tls13;
        let server = start(vec![listener]).await;
        let error = connect(server.addr, pki.client_config(None, TLS12)).await.expect_err("refused");
        assert!(error.to_string().contains("ProtocolVersion"), "{error}");
        logs.wait_for(&["TLS connection refused", "tls_version"]).await;
        let mut stream = connect(server.addr, pki.client_config(None, TLS13)).await.expect("TLS 1.3 works");
        exchange_ok(&mut stream).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Mutual TLS

#[tokio::test]
async fn approved_thumbprints_in_sha256_and_sha1_form_are_accepted_and_recorded() {
    bounded(async {
        let pki = Pki::new("approved");
        let by_sha256 = pki.client("sender-a", Validity::days_from_now(30));
        let by_sha1 = pki.client("sender-b", Validity::days_from_now(30));
        // The SHA-1 form exactly as Windows shows it, parsed like the config file does.
        let sha1: Thumbprint = by_sha1.digests().sha1_windows().parse().unwrap();
        let approved = vec![by_sha256.digests().sha256(), sha1];
        let recorder = Arc::new(Recorder::default());
        let server = start_with(vec![pki.listener("mtls", required(approved))], recorder.clone()).await;
        for versions in [TLS12, TLS13] {
            for client in [&by_sha256, &by_sha1] {
                let mut stream =
                    connect(server.addr, pki.client_config(Some(client), versions)).await.expect("handshake");
                exchange_ok(&mut stream).await;
            }
        }
        let recorded = recorder.thumbprints();
        let expected: Vec<Option<String>> = [&by_sha256, &by_sha1, &by_sha256, &by_sha1]
            .iter()
            .map(|client| Some(client.digests().sha256().to_string()))
            .collect();
        assert_eq!(recorded, expected);
    })
    .await;
}

#[tokio::test]
async fn unapproved_expired_not_yet_valid_and_missing_client_certs_are_refused() {
    bounded(async {
        let logs = Logs::capture();
        let pki = Pki::new("refused");
        let now = OffsetDateTime::now_utc();
        let day = Duration::from_secs(86_400);
        let approved = pki.client("approved", Validity::days_from_now(30));
        let unapproved = pki.client("stranger", Validity::days_from_now(30));
        let expired = pki.client("expired", Validity { not_before: now - 30 * day, not_after: now - day });
        let not_yet = pki.client("future", Validity { not_before: now + day, not_after: now + 30 * day });
        // Expired and future certificates are approved: they must fail on their dates alone.
        let thumbprints = [&approved, &expired, &not_yet].iter().map(|c| c.digests().sha256()).collect();
        let server = start(vec![pki.listener("mtls", required(thumbprints))]).await;

        let cases: [(Option<&Issued>, &str, &str); 4] = [
            (Some(&unapproved), "client_cert_unapproved", "AccessDenied"),
            (Some(&expired), "client_cert_expired", "CertificateExpired"),
            (Some(&not_yet), "client_cert_not_yet_valid", "CertificateExpired"),
            (None, "client_cert_missing", "CertificateRequired"),
        ];
        for versions in [TLS12, TLS13] {
            for (client, reason, alert) in cases {
                let error = expect_refused(server.addr, pki.client_config(client, versions)).await;
                assert!(error.contains(alert), "{reason}: client saw {error:?}");
                let mut expected = vec!["TLS connection refused", reason];
                let thumbprint = client.map(|c| c.digests().sha256().to_string());
                if let Some(thumbprint) = &thumbprint {
                    expected.push(thumbprint);
                }
                logs.wait_for(&expected).await;
            }
        }
        let mut stream =
            connect(server.addr, pki.client_config(Some(&approved), TLS13)).await.expect("approved");
        exchange_ok(&mut stream).await;
    })
    .await;
}

#[tokio::test]
async fn client_ca_is_enforced_in_addition_to_the_thumbprint() {
    bounded(async {
        let logs = Logs::capture();
        let pki = Pki::new("client-ca");
        let other = Pki::new("client-ca-other");
        let ours = pki.client("ours", Validity::days_from_now(30));
        let theirs = other.client("theirs", Validity::days_from_now(30));
        let thumbprints = vec![ours.digests().sha256(), theirs.digests().sha256()];
        let listener =
            pki.listener("mtls", ClientAuth::Required { thumbprints, ca: Some(pki.dir.join("ca.pem")) });
        let server = start(vec![listener]).await;
        let mut stream =
            connect(server.addr, pki.client_config(Some(&ours), TLS13)).await.expect("handshake");
        exchange_ok(&mut stream).await;
        // Approved by thumbprint, but issued by another CA.
        let error = expect_refused(server.addr, pki.client_config(Some(&theirs), TLS13)).await;
        assert!(error.contains("UnknownCA"), "{error}");
        logs.wait_for(&["TLS connection refused", "client_cert_untrusted"]).await;
    })
    .await;
}

#[tokio::test]
async fn client_auth_none_ignores_an_offered_certificate() {
    bounded(async {
        let pki = Pki::new("none");
        let now = OffsetDateTime::now_utc();
        // Expired and unapproved: it would fail every check if the server looked at it.
        let offered = pki.client(
            "ignored",
            Validity {
                not_before: now - Duration::from_secs(7200),
                not_after: now - Duration::from_secs(3600),
            },
        );
        let recorder = Arc::new(Recorder::default());
        let server = start_with(vec![pki.listener("tls", ClientAuth::None)], recorder.clone()).await;
        for versions in [TLS12, TLS13] {
            let mut stream =
                connect(server.addr, pki.client_config(Some(&offered), versions)).await.expect("handshake");
            exchange_ok(&mut stream).await;
            assert!(stream.get_ref().1.peer_certificates().is_some());
        }
        assert_eq!(recorder.thumbprints(), [None, None]);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Refusals before the handshake

#[tokio::test]
async fn plaintext_client_on_a_tls_port_is_refused() {
    bounded(async {
        let logs = Logs::capture();
        let pki = Pki::new("plaintext");
        let server = start(vec![pki.listener("tls", ClientAuth::None)]).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        send(&mut stream, &fixture("adt_a04_v231_original_mode.hl7")).await;
        expect_closed(&mut stream).await;
        logs.wait_for(&["TLS connection refused", "not_tls", "plaintext MLLP"]).await;

        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        expect_closed(&mut stream).await;
        logs.wait_for(&["TLS connection refused", "not_tls", "HTTP"]).await;

        // A health check's connect-and-close is routine: no audit line.
        drop(TcpStream::connect(server.addr).await.unwrap());
        logs.wait_for(&["closed_before_handshake"]).await;
        assert_eq!(logs.count(&["TLS connection refused"]), 2, "{}", logs.text());
    })
    .await;
}

// On tokio's paused clock: the handshake timeout costs no real time, and is exact.
#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_times_out() {
    bounded(async {
        const HANDSHAKE: Duration = Duration::from_secs(1);
        let logs = Logs::capture();
        let pki = Pki::new("stalled");
        let mut listener = pki.listener("tls", ClientAuth::None);
        tls_mut(&mut listener).handshake_timeout = HANDSHAKE;
        let server = start(vec![listener]).await;

        let started = tokio::time::Instant::now();
        let mut silent = support::connect_nodelay(server.addr).await.unwrap();
        expect_closed(&mut silent).await;
        assert!(started.elapsed() >= HANDSHAKE, "closed after {:?}", started.elapsed());
        logs.wait_for(&["TLS connection refused", "handshake_timeout", "no ClientHello"]).await;

        // The first bytes of a TLS record, then nothing.
        let started = tokio::time::Instant::now();
        let mut stalled = support::connect_nodelay(server.addr).await.unwrap();
        stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        expect_closed(&mut stalled).await;
        assert!(started.elapsed() >= HANDSHAKE, "closed after {:?}", started.elapsed());
        logs.wait_for(&["TLS connection refused", "handshake_timeout", "handshake not finished"]).await;
    })
    .await;
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_is_refused_at_start() {
    bounded(async {
        let pki = Pki::new("mismatch");
        let mut listener = pki.listener("tls", ClientAuth::None);
        let other = pki.client("other", Validity::days_from_now(30));
        support::write_key(&pki.dir.join("other.key"), &other.key_pem);
        tls_mut(&mut listener).key = pki.dir.join("other.key");
        let mut config = Config::embedded_default();
        config.listeners = vec![listener];
        let error =
            Server::start(&config, Arc::new(AcceptAfterParse::default())).await.err().expect("refused");
        assert!(matches!(&error, ServeError::Tls { error: TlsError::KeyMismatch { .. }, .. }), "{error}");
        assert!(error.to_string().contains("does not match certificate"), "{error}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Live reload

#[tokio::test]
async fn reload_swaps_the_server_certificate_for_new_connections_only() {
    bounded(async {
        let logs = Logs::capture();
        let pki = Pki::new("reload-cert");
        let listener = pki.listener("tls", ClientAuth::None);
        let config = config_of(vec![listener]);
        let server = start_config(&config, Arc::new(AcceptAfterParse::default())).await;
        let client = pki.client_config(None, TLS13);

        let mut old = connect(server.addr, client.clone()).await.expect("handshake");
        exchange_ok(&mut old).await;
        assert_eq!(presented(&old), pki.server.der);

        let renewed = pki.write_server("renewed");
        let report = server.server.reloader().reload(&config).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.reloaded[0].1.server_thumbprint, renewed.digests().sha256());
        logs.wait_for(&["TLS configuration reloaded"]).await;

        let mut new = connect(server.addr, client.clone()).await.expect("handshake");
        assert_eq!(presented(&new), renewed.der);
        exchange_ok(&mut new).await;
        // The connection made before the reload keeps its session.
        exchange_ok(&mut old).await;

        // A broken key file: the reload fails and the renewed certificate stays in use.
        std::fs::write(
            pki.dir.join("server.key"),
            "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let report = server.server.reloader().reload(&config).await;
        assert!(!report.is_ok());
        assert!(report.failed[0].1.contains("server.key"), "{report:?}");
        logs.wait_for(&["TLS reload failed", "keeping the previous"]).await;
        let mut after = connect(server.addr, client).await.expect("handshake with the kept config");
        assert_eq!(presented(&after), renewed.der);
        exchange_ok(&mut after).await;
        exchange_ok(&mut old).await;
    })
    .await;
}

#[tokio::test]
async fn removing_a_thumbprint_closes_that_clients_connection() {
    bounded(async {
        let logs = Logs::capture();
        let pki = Pki::new("reload-revoke");
        let kept = pki.client("kept", Validity::days_from_now(30));
        let removed = pki.client("removed", Validity::days_from_now(30));
        let both = vec![kept.digests().sha256(), removed.digests().sha1()];
        let config = config_of(vec![pki.listener("mtls", required(both))]);
        let server = start_config(&config, Arc::new(AcceptAfterParse::default())).await;

        let mut kept_conn = connect(server.addr, pki.client_config(Some(&kept), TLS13)).await.expect("kept");
        let mut removed_conn =
            connect(server.addr, pki.client_config(Some(&removed), TLS12)).await.expect("removed");
        exchange_ok(&mut kept_conn).await;
        exchange_ok(&mut removed_conn).await;

        let config = config_of(vec![pki.listener("mtls", required(vec![kept.digests().sha256()]))]);
        let report = server.server.reloader().reload(&config).await;
        assert_eq!(report.reloaded[0].1.closed_connections, 1, "{report:?}");

        expect_closed(&mut removed_conn).await;
        logs.wait_for(&["no longer approved", &removed.digests().sha256().to_string()]).await;
        logs.wait_for(&["connection closed", "client certificate no longer approved"]).await;
        exchange_ok(&mut kept_conn).await;
        let error = expect_refused(server.addr, pki.client_config(Some(&removed), TLS13)).await;
        assert!(error.contains("AccessDenied"), "{error}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// An independent client: openssl s_client

#[tokio::test]
async fn openssl_s_client_refused_below_tls12_and_served_at_12_and_13() {
    bounded(async {
        let logs = Logs::capture();
        let pki = Pki::new("openssl");
        let mut listener = pki.listener("tls", ClientAuth::None);
        // s_client keeps the connection until the server closes it: make that quick.
        listener.idle_timeout = Duration::from_secs(1);
        let server = start(vec![listener]).await;
        let ca = pki.dir.join("ca.pem");
        for flag in ["-tls1", "-tls1_1"] {
            let run = s_client(server.addr, &ca, flag).await;
            assert!(!run.handshake_done(), "{flag} must not complete a handshake:\n{}", run.output);
            assert!(
                run.output.contains("alert protocol version"),
                "{flag}: expected a protocol_version alert:\n{}",
                run.output
            );
            logs.wait_for(&["TLS connection refused", "tls_version"]).await;
        }
        assert_eq!(logs.count(&["tls_version"]), 2, "{}", logs.text());
        for (flag, protocol) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
            let run = s_client(server.addr, &ca, flag).await;
            assert!(run.handshake_done(), "{flag}:\n{}", run.output);
            assert!(
                run.output.contains(&format!("Protocol  : {protocol}"))
                    || run.output.contains(&format!("New, {protocol}")),
                "{flag}:\n{}",
                run.output
            );
            assert!(run.output.contains("Verify return code: 0 (ok)"), "{flag}:\n{}", run.output);
            assert!(run.output.contains("MSA|AA|"), "{flag}: expected an ACK:\n{}", run.output);
        }
    })
    .await;
}

struct SClientRun {
    output: String,
}

impl SClientRun {
    fn handshake_done(&self) -> bool {
        self.output.contains("-----BEGIN CERTIFICATE-----")
            && self.output.contains("Cipher is ")
            && !self.output.contains("Cipher is (NONE)")
    }
}

/// Runs `openssl s_client` with one version flag, an HL7 message on stdin, and waits
/// (bounded) for it to end. The security level is lowered so that the client really sends
/// a TLS 1.0/1.1 hello instead of refusing locally: the refusal must come from hl7d.
async fn s_client(addr: SocketAddr, ca: &Path, version_flag: &str) -> SClientRun {
    let mut command = std::process::Command::new("openssl");
    command
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", "-CAfile"])
        .arg(ca)
        .args([version_flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-ign_eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => panic!(
            "this test needs the `openssl` command-line tool (Debian package `openssl`, installed by .ci/run): \
             cannot run it: {e}"
        ),
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&support::frame(&fixture("adt_a04_v231_original_mode.hl7"))).unwrap();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let output = tokio::task::spawn_blocking(move || loop {
        match child.try_wait().unwrap() {
            Some(_) => return child.wait_with_output().unwrap(),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "openssl s_client did not finish within 20s:\n{}",
                    String::from_utf8_lossy(&output.stdout)
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    // Segment separators are carriage returns; make the ACK greppable.
    SClientRun { output: text.replace('\r', "\n") }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A CA, a server certificate for localhost in `dir`, and client certificates on demand.
struct Pki {
    dir: support::TestDir,
    ca: Ca,
    server: Issued,
}

impl Pki {
    fn new(label: &str) -> Pki {
        let dir = tempdir(&format!("tls-{label}"));
        let ca = Ca::new(&format!("test CA {label}"), Validity::days_from_now(30)).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.cert.cert_pem).unwrap();
        let mut pki = Pki { dir, ca, server: placeholder() };
        pki.server = pki.write_server("server");
        pki
    }

    /// Issues a server certificate for localhost and writes it over `server.pem`/`.key`.
    fn write_server(&self, name: &str) -> Issued {
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let server = self.ca.issue(CertKind::Server, name, &names, Validity::days_from_now(30)).unwrap();
        std::fs::write(self.dir.join("server.pem"), &server.cert_pem).unwrap();
        support::write_key(&self.dir.join("server.key"), &server.key_pem);
        server
    }

    fn client(&self, name: &str, validity: Validity) -> Issued {
        self.ca.issue(CertKind::Client, name, &[], validity).unwrap()
    }

    fn listener(&self, name: &str, client_auth: ClientAuth) -> ListenerConfig {
        let mut listener = ListenerConfig::plaintext(name, "127.0.0.1:0".parse().unwrap());
        listener.transport = Transport::Tls(TlsConfig {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            min_version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(5),
            client_auth,
        });
        listener
    }

    /// A client trusting this CA, offering `client`'s certificate if given.
    fn client_config(
        &self,
        client: Option<&Issued>,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        tls_client_config(&self.ca, client, versions)
    }
}

fn placeholder() -> Issued {
    Issued { cert_pem: String::new(), key_pem: String::new(), der: Vec::new() }
}

fn required(thumbprints: Vec<Thumbprint>) -> ClientAuth {
    ClientAuth::Required { thumbprints, ca: None }
}

fn tls_mut(listener: &mut ListenerConfig) -> &mut TlsConfig {
    match &mut listener.transport {
        Transport::Tls(tls) => tls,
        Transport::Plaintext => panic!("a TLS listener"),
    }
}

fn config_of(listeners: Vec<ListenerConfig>) -> Config {
    let mut config = Config::embedded_default();
    config.listeners = listeners;
    config
}

/// A running server with one listener, stopped when dropped.
struct Running {
    server: Server,
    addr: SocketAddr,
}

async fn start(listeners: Vec<ListenerConfig>) -> Running {
    start_with(listeners, Arc::new(AcceptAfterParse::default())).await
}

async fn start_with(listeners: Vec<ListenerConfig>, store: Arc<dyn MessageStore>) -> Running {
    start_config(&config_of(listeners), store).await
}

async fn start_config(config: &Config, store: Arc<dyn MessageStore>) -> Running {
    let server = Server::start(config, store).await.expect("server starts");
    let addr = server.local_addrs()[0].1;
    Running { server, addr }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake within the test wait")
}

/// Sends one message and expects AA echoing its control id.
async fn exchange_ok<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    send(stream, &fixture("adt_a04_v231_original_mode.hl7")).await;
    stream.flush().await.unwrap();
    let (code, _) = msa(&read_frame(stream).await);
    assert_eq!(code, "AA");
}

/// Connects and tries one message; returns what the client saw as the refusal. A TLS 1.3
/// client learns of a refused certificate only on its first read, so both the handshake
/// and that read count.
async fn expect_refused(addr: SocketAddr, config: Arc<ClientConfig>) -> String {
    let mut stream = match connect(addr, config).await {
        Err(e) => return e.to_string(),
        Ok(stream) => stream,
    };
    let _ = stream.write_all(&support::frame(&fixture("adt_a04_v231_original_mode.hl7"))).await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("refused within the test wait") {
        Ok(0) => "closed".to_owned(),
        Ok(n) => panic!("expected a refusal, got {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => e.to_string(),
    }
}

/// The leaf certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().expect("server certificate")[0].to_vec()
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("test finished within its limit");
}

/// A store that records the client thumbprint of every message.
#[derive(Default)]
struct Recorder {
    thumbprints: Mutex<Vec<Option<String>>>,
}

impl Recorder {
    fn thumbprints(&self) -> Vec<Option<String>> {
        self.thumbprints.lock().unwrap().clone()
    }
}

impl MessageStore for Recorder {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.thumbprints.lock().unwrap().push(message.client_thumbprint.clone());
        Box::pin(std::future::ready(Ok(Appended::New)))
    }
}
