//! Pre-authentication limits and refusal logging (issue 13, items 1 and 2): idle sockets must
//! not lock an approved sender out (`max_pending`), one address must not take every slot
//! (`max_connections_per_ip`), and a refused peer must not decide how much is written to the
//! log and the audit trail (capped text, per-address rate limit). Real servers on loopback;
//! every wait is bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hl7d::audit::AuditTrail;
use hl7d::config::{AuditConfig, ClientAuth, ListenerConfig, TlsConfig, TlsVersion, Transport};
use hl7d::listener::refusal_log::{FULL_LINES, SWEEP_EVERY, WINDOW};
use hl7d::peer_text;
use hl7d::tls::pki::{Ca, CertKind, Issued, Validity};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{
    expect_closed, fixture, frame, msa, plain, read_audit, read_frame, send, tempdir, tls_client_config,
    write_key, AuditCapture, TestDir, TestServer, WAIT,
};

/// Upper bound of one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Item 1: pending connections and connections per address

/// 200 sockets that connect and never send a byte used to fill `max_connections = 100` on a
/// mutual-TLS listener until `handshake_timeout` freed the slots; the approved sender was
/// refused meanwhile. Now at most `max_pending` of them are held, the oldest going first, and
/// the approved sender gets its ACK within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cannot_lock_an_approved_mutual_tls_sender_out() {
    bounded(async {
        let pki = Pki::new("pending-flood");
        let approved = pki.client("approved");
        let mut listener = pki.listener("mtls", vec![approved.digests().sha256()]);
        // The defaults that matter here: max_connections 100, max_pending 16. The flood comes
        // from one address, so the per-address cap is lifted to isolate the pending cap.
        assert_eq!((listener.max_connections, listener.max_pending), (100, 16));
        listener.max_connections_per_ip = 1_000;
        // Long enough that no flood socket is closed by the timeout during the test.
        tls_mut(&mut listener).handshake_timeout = Duration::from_secs(60);
        let server = TestServer::start(vec![listener]).await;
        let addr = server.addr("mtls");

        let mut flood = Vec::new();
        for _ in 0..200 {
            flood.push(TcpStream::connect(addr).await.expect("the kernel accepts the connection"));
        }
        let started = Instant::now();
        let mut stream = pki.connect(addr, Some(&approved)).await.expect("the approved sender's handshake");
        send(&mut stream, &fixture("adt_a04_v231_original_mode.hl7")).await;
        let (code, _) = msa(&read_frame(&mut stream).await);
        let took = started.elapsed();
        assert_eq!(code, "AA");
        assert!(took < Duration::from_secs(1), "the approved sender waited {took:?} for its ACK");

        // All but the newest max_pending flood sockets are closed by the server, long before
        // the handshake timeout: they were dropped to make room.
        let closes: Vec<_> = flood
            .into_iter()
            .map(|mut conn| {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut byte)).await {
                        Ok(Ok(0) | Err(_)) => false,
                        Ok(Ok(n)) => panic!("a flood socket received {n} bytes"),
                        Err(_) => true,
                    }
                })
            })
            .collect();
        let mut still_open = 0;
        for close in closes {
            still_open += usize::from(close.await.unwrap());
        }
        assert!(still_open <= 16, "{still_open} silent connections still held");
        // The approved sender, established, was never a candidate.
        send(&mut stream, &fixture("adt_a04_v231_original_mode.hl7")).await;
        assert_eq!(msa(&read_frame(&mut stream).await).0, "AA");
    })
    .await;
}

/// The 33rd connection from one address is refused (default `max_connections_per_ip` = 32)
/// while another address still gets in, and a connection that leaves frees its address's
/// place.
#[tokio::test]
async fn max_connections_per_ip_refuses_the_33rd_from_one_address_only() {
    let dir = tempdir("per-ip");
    let audit = AuditCapture::start(&dir);
    let listener = plain("lab");
    assert_eq!(listener.max_connections_per_ip, 32);
    let server = TestServer::start(vec![listener]).await;
    let addr = server.addr("lab");

    let mut held = Vec::new();
    for i in 0..32 {
        let mut conn = server.connect("lab").await;
        send(&mut conn, &numbered(i)).await;
        assert_eq!(msa(&read_frame(&mut conn).await).1, format!("N{i}"));
        held.push(conn);
    }
    let mut refused = server.connect("lab").await;
    expect_closed(&mut refused).await;
    let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "max_connections_per_ip")]).await;
    assert_eq!(line["max_connections_per_ip"], 32);

    // Another loopback address is another peer.
    let other = TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).expect("bind 127.0.0.2 (loopback range)");
    let mut other = other.connect(addr).await.unwrap();
    send(&mut other, &numbered(100)).await;
    assert_eq!(msa(&read_frame(&mut other).await).1, "N100");

    // One of the 32 leaves: its place is free again (once the server has seen it go).
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        let mut conn = server.connect("lab").await;
        let _ = conn.write_all(&frame(&numbered(200))).await;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(WAIT, conn.peek(&mut byte)).await {
            Ok(Ok(1)) => {
                again = Some(conn);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let mut again = again.expect("a place frees when a connection from that address closes");
    assert_eq!(msa(&read_frame(&mut again).await).1, "N200");
}

// ---------------------------------------------------------------------------------------
// Item 2: refusal log amplification

/// A self-signed client certificate with a 30 KB subject, refused 20 times: before, every
/// refusal wrote the whole subject to the log and again to the audit trail. Now the subject
/// is capped, the first few refusals per minute are written in full and the rest are told in
/// one summary line when the minute is over.
#[tokio::test]
async fn a_huge_client_certificate_subject_cannot_flood_the_log_or_the_audit_trail() {
    const ATTEMPTS: usize = 20;
    let pki = Pki::new("huge-subject");
    let approved = pki.client("approved");
    let capture = LogAndAudit::start(&pki.dir);
    let listener = pki.listener("mtls", vec![approved.digests().sha256()]);
    let server = TestServer::start(vec![listener]).await;
    let addr = server.addr("mtls");

    let subject_len = 30_000;
    let huge = self_signed_with_subject_of(subject_len);
    for _ in 0..ATTEMPTS {
        // TLS 1.3: the refusal arrives with the first read; either way the server has
        // logged before the connection ends (one thread: it logs in the poll that closes).
        let refused = pki.attempt(addr, &huge).await;
        assert!(refused.contains("AccessDenied") || refused == "closed", "{refused}");
    }
    let written = (capture.audit_bytes(), capture.log_bytes());

    let lines = read_audit(&capture.audit);
    let full: Vec<_> = lines.iter().filter(|l| l["event"] == "client_cert_refused").collect();
    assert_eq!(full.len(), FULL_LINES as usize, "{lines:#?}");
    for line in &full {
        let text = line.to_string();
        assert!(text.len() <= 1024, "an audit line of {} bytes", text.len());
        let subject = line["client_subject"].as_str().unwrap();
        assert!(subject.len() <= peer_text::MAX_BYTES, "{}", subject.len());
        assert!(subject.starts_with("CN=aaaa"), "{subject}");
        assert!(subject.ends_with(&format!("…({} bytes)", subject_len + 3)), "{subject}");
        assert_eq!(line["reason"], "client_cert_unapproved");
    }
    assert!(
        written.0 <= 1024 * ATTEMPTS && written.1 <= 1024 * ATTEMPTS,
        "{written:?} bytes (audit, log) for {ATTEMPTS} refusals"
    );

    // The summary comes when the minute is over.
    tokio::time::pause();
    tokio::time::advance(WINDOW + SWEEP_EVERY).await;
    let summary = capture.wait_for_audit("refusals_suppressed").await;
    let suppressed = ATTEMPTS - FULL_LINES as usize;
    assert_eq!(summary["refused"], suppressed as u64);
    assert_eq!(summary["reasons"], format!("client_cert_unapproved {suppressed}"));
    assert_eq!(
        summary["message"],
        format!("{suppressed} more refused from 127.0.0.1: client_cert_unapproved {suppressed}")
    );
    let log = capture.log_text();
    assert_eq!(log.matches("TLS connection refused").count(), FULL_LINES as usize, "{log}");
    assert!(log.contains(&format!("{suppressed} more refused from 127.0.0.1")), "{log}");
    eprintln!(
        "{ATTEMPTS} refusals of a {subject_len}-byte subject: {} audit bytes, {} log bytes",
        written.0, written.1
    );
}

// ---------------------------------------------------------------------------------------
// Helpers

fn numbered(i: usize) -> Vec<u8> {
    format!("MSH|^~\\&|SND|FAC|RCV|FAC|20260101||ADT^A01|N{i}|P|2.5\rPID|1||{i}\r").into_bytes()
}

/// A self-signed client certificate whose subject is `CN=` and `len` times `a`.
fn self_signed_with_subject_of(len: usize) -> Issued {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "a".repeat(len));
    let cert = params.self_signed(&key).unwrap();
    Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
}

/// A CA, a server certificate for localhost in a temp dir, and clients on demand.
struct Pki {
    dir: TestDir,
    ca: Ca,
}

impl Pki {
    fn new(label: &str) -> Pki {
        let dir = tempdir(&format!("limits-{label}"));
        let ca = Ca::new(&format!("limits test CA {label}"), Validity::days_from_now(30)).unwrap();
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let server = ca.issue(CertKind::Server, "server", &names, Validity::days_from_now(30)).unwrap();
        std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
        write_key(&dir.join("server.key"), &server.key_pem);
        Pki { dir, ca }
    }

    fn client(&self, name: &str) -> Issued {
        self.ca.issue(CertKind::Client, name, &[], Validity::days_from_now(30)).unwrap()
    }

    /// A mutual-TLS listener on 127.0.0.1:0 approving `thumbprints`.
    fn listener(&self, name: &str, thumbprints: Vec<hl7d::config::Thumbprint>) -> ListenerConfig {
        let mut listener = ListenerConfig::plaintext(name, "127.0.0.1:0".parse().unwrap());
        listener.transport = Transport::Tls(TlsConfig {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            min_version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(10),
            client_auth: ClientAuth::Required { thumbprints, ca: None },
        });
        listener
    }

    fn client_config(&self, client: Option<&Issued>) -> Arc<ClientConfig> {
        tls_client_config(&self.ca, client, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        client: Option<&Issued>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(WAIT, TlsConnector::from(self.client_config(client)).connect(name, tcp))
            .await
            .expect("handshake within the test wait")
    }

    /// Connects with `client`, sends a message and returns how the server refused.
    async fn attempt(&self, addr: SocketAddr, client: &Issued) -> String {
        let mut stream = match self.connect(addr, Some(client)).await {
            Err(e) => return e.to_string(),
            Ok(stream) => stream,
        };
        let _ = stream.write_all(&frame(&fixture("adt_a04_v231_original_mode.hl7"))).await;
        let _ = stream.flush().await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("refused within the test wait") {
            Ok(0) => "closed".to_owned(),
            Ok(n) => panic!("expected a refusal, got {n} bytes"),
            Err(e) => e.to_string(),
        }
    }
}

fn tls_mut(listener: &mut ListenerConfig) -> &mut TlsConfig {
    match &mut listener.transport {
        Transport::Tls(tls) => tls,
        Transport::Plaintext => panic!("a TLS listener"),
    }
}

/// This test's log (as `[log] format = "human"` writes it, every level) and audit file,
/// through a thread-local subscriber (see [`AuditCapture`] for why that sees only this
/// test's server).
struct LogAndAudit {
    audit: PathBuf,
    log: Arc<Mutex<Vec<u8>>>,
    _trail: AuditTrail,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogAndAudit {
    fn start(dir: &std::path::Path) -> LogAndAudit {
        // The same second dispatcher as AuditCapture's, for the same reason.
        drop(AuditCapture::start(dir));
        let audit = dir.join("audit.jsonl");
        let trail = AuditTrail::open(&AuditConfig { file: Some(audit.clone()), syslog: None }).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = Buffer(log.clone());
        let subscriber = tracing_subscriber::registry()
            .with(trail.layer())
            .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || writer.clone()));
        let guard = tracing::subscriber::set_default(subscriber);
        LogAndAudit { audit, log, _trail: trail, _guard: guard }
    }

    fn audit_bytes(&self) -> usize {
        std::fs::metadata(&self.audit).map_or(0, |m| m.len() as usize)
    }

    fn log_bytes(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    async fn wait_for_audit(&self, event: &str) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = read_audit(&self.audit).into_iter().find(|l| l["event"] == event) {
                return line;
            }
            assert!(Instant::now() < deadline, "no {event} line in the audit trail");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[derive(Clone)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("test finished within its limit");
}
