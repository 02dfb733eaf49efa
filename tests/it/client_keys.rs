//! Client keys on a mutual-TLS listener: a client that presents an approved certificate but
//! signs the handshake with another key, and certificates with RSA keys too weak to accept.
//! Each refusal is one audit line with its own reason and the presented certificate's subject
//! and thumbprint. Loopback only, every wait bounded; `openssl` is the client for RSA keys
//! (rcgen here makes only ECDSA keys).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hl7d::config::{ClientAuth, Config, ListenerConfig, Thumbprint, TlsConfig, TlsVersion, Transport};
use hl7d::listener::Server;
use hl7d::store::AcceptAfterParse;
use hl7d::tls::cert::{CertSummary, Digests};
use hl7d::tls::load;
use hl7d::tls::pki::{Ca, CertKind, Issued, Validity};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, SignatureScheme, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::{fixture, frame, tempdir, write_key, AuditCapture, TestDir, WAIT};

/// Upper bound of one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_wrong_client_key_is_refused_with_the_certificates_subject_and_thumbprint() {
    bounded(async {
        let site = Site::new("wrong-key");
        let audit = AuditCapture::start(&site.dir);
        let approved =
            site.ca.issue(CertKind::Client, "lab sender", &[], Validity::days_from_now(30)).unwrap();
        let other =
            site.ca.issue(CertKind::Client, "someone else", &[], Validity::days_from_now(30)).unwrap();
        let thumbprint = approved.digests().sha256();
        let server = site.start(vec![thumbprint]).await;
        let subject = CertSummary::parse(&approved.der).unwrap().subject;

        let versions = [&[&rustls::version::TLS12][..], &[&rustls::version::TLS13][..]];
        for (n, versions) in versions.into_iter().enumerate() {
            // The approved certificate, copied, with a key that is not its own.
            let client = site.client_config(versions, Arc::new(Impostor::new(&approved, &other)));
            expect_refused(server.addr, client).await;
            let line = audit
                .wait_for_nth(
                    &[
                        ("event", "client_cert_refused"),
                        ("reason", "client_signature_invalid"),
                        ("client_thumbprint", &thumbprint.to_string()),
                        ("client_subject", &subject),
                    ],
                    n + 1,
                )
                .await;
            assert!(line["detail"].as_str().unwrap().contains("key"), "{line}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_rsa_client_key_under_2048_bits_has_its_own_refusal_reason() {
    bounded(async {
        let site = Site::new("weak-key");
        let audit = AuditCapture::start(&site.dir);
        let weak = OpensslClient::generate(&site.dir, "weak", 1024);
        let strong = OpensslClient::generate(&site.dir, "strong", 2048);
        let server = site.start(vec![weak.thumbprint, strong.thumbprint]).await;

        for (n, version) in ["-tls1_2", "-tls1_3"].into_iter().enumerate() {
            let run = weak.s_client(server.addr, &site.dir.join("ca.pem"), version).await;
            assert!(!run.contains("MSA|AA|"), "{version}: a weak key must not get an ACK:\n{run}");
            let line = audit
                .wait_for_nth(
                    &[
                        ("event", "client_cert_refused"),
                        ("reason", "client_key_too_weak"),
                        ("client_thumbprint", &weak.thumbprint.to_string()),
                        ("client_subject", "CN=weak sender"),
                    ],
                    n + 1,
                )
                .await;
            assert!(line["detail"].as_str().unwrap().contains("1024-bit RSA"), "{line}");

            // 2048 bits: the same path, accepted.
            let run = strong.s_client(server.addr, &site.dir.join("ca.pem"), version).await;
            assert!(run.contains("MSA|AA|"), "{version}: a 2048-bit key is accepted:\n{run}");
        }
        let strong_thumbprint = strong.thumbprint.to_string();
        assert!(
            audit
                .find(&[("event", "client_cert_refused"), ("client_thumbprint", &strong_thumbprint)])
                .is_none(),
            "{}",
            audit.text()
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A CA and a server certificate for localhost in a temp dir.
struct Site {
    dir: TestDir,
    ca: Ca,
}

impl Site {
    fn new(label: &str) -> Site {
        let dir = tempdir(&format!("client-keys-{label}"));
        let ca = Ca::new(&format!("client keys test CA {label}"), Validity::days_from_now(30)).unwrap();
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let server = ca.issue(CertKind::Server, "server", &names, Validity::days_from_now(30)).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.cert.cert_pem).unwrap();
        std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
        write_key(&dir.join("server.key"), &server.key_pem);
        Site { dir, ca }
    }

    /// A mutual-TLS listener approving `thumbprints`, on 127.0.0.1:0.
    async fn start(&self, thumbprints: Vec<Thumbprint>) -> Running {
        let mut listener = ListenerConfig::plaintext("mtls", "127.0.0.1:0".parse().unwrap());
        // s_client keeps the connection until the server closes it: make that quick.
        listener.idle_timeout = Duration::from_secs(1);
        listener.transport = Transport::Tls(TlsConfig {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            min_version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(5),
            client_auth: ClientAuth::Required { thumbprints, ca: None },
        });
        let mut config = Config::embedded_default();
        config.listeners = vec![listener];
        let server =
            Server::start(&config, Arc::new(AcceptAfterParse::default())).await.expect("server starts");
        let addr = server.local_addrs()[0].1;
        Running { server, addr }
    }

    fn client_config(
        &self,
        versions: &[&'static SupportedProtocolVersion],
        identity: Arc<dyn ResolvesClientCert>,
    ) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.ca.cert.der.clone())).unwrap();
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_client_cert_resolver(identity);
        Arc::new(config)
    }
}

struct Running {
    server: Server,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}

/// Presents one certificate and signs with another certificate's key (rustls's own
/// `with_client_auth_cert` refuses such a pair, so it comes through a resolver).
#[derive(Debug)]
struct Impostor(Arc<CertifiedKey>);

impl Impostor {
    fn new(presented: &Issued, key_of: &Issued) -> Impostor {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let key = PrivateKeyDer::from_pem_slice(key_of.key_pem.as_bytes()).unwrap();
        let signing_key = provider.key_provider.load_private_key(key).unwrap();
        Impostor(Arc::new(CertifiedKey::new(vec![CertificateDer::from(presented.der.clone())], signing_key)))
    }
}

impl ResolvesClientCert for Impostor {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Connects and tries one message; the server must refuse (TLS 1.3 clients learn it on
/// their first read).
async fn expect_refused(addr: SocketAddr, config: Arc<ClientConfig>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let handshake = tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp)).await;
    let Ok(mut stream) = handshake.expect("handshake within the test wait") else {
        return;
    };
    let _ = stream.write_all(&frame(&fixture("adt_a04_v231_original_mode.hl7"))).await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("refused within the test wait") {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected a refusal, got {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
    }
}

/// A self-signed RSA client certificate made by the `openssl` command-line tool.
struct OpensslClient {
    cert: PathBuf,
    key: PathBuf,
    thumbprint: Thumbprint,
}

impl OpensslClient {
    fn generate(dir: &Path, name: &str, bits: u32) -> OpensslClient {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        let output = Command::new("openssl")
            .args(["req", "-x509", "-newkey", &format!("rsa:{bits}"), "-nodes", "-days", "30"])
            .args(["-subj", &format!("/CN={name} sender")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs the `openssl` command-line tool (installed by .ci/run): {e}")
            });
        assert!(output.status.success(), "openssl req: {}", String::from_utf8_lossy(&output.stderr));
        let der = load::certificates(&cert).unwrap().remove(0);
        OpensslClient { cert, key, thumbprint: Digests::of(&der).sha256() }
    }

    /// Runs `openssl s_client` with this certificate, one version flag and an HL7 message
    /// on stdin; returns its output. The security level is lowered so that openssl offers
    /// a 1024-bit key instead of refusing it locally: the refusal must come from hl7d.
    async fn s_client(&self, addr: SocketAddr, ca: &Path, version_flag: &str) -> String {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", "-CAfile"])
            .arg(ca)
            .arg("-cert")
            .arg(&self.cert)
            .arg("-key")
            .arg(&self.key)
            .args([version_flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-ign_eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openssl s_client");
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, &frame(&fixture("adt_a04_v231_original_mode.hl7"))).unwrap();
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(20);
        let output = tokio::task::spawn_blocking(move || loop {
            match child.try_wait().unwrap() {
                Some(_) => return child.wait_with_output().unwrap(),
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    panic!("openssl s_client did not finish within 20s");
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        })
        .await
        .unwrap();
        let text =
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        text.replace('\r', "\n")
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("test finished within its limit");
}
