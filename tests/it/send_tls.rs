//! `hl7d send` over TLS: trust by CA file or pin, mutual TLS, and the reason for each refusal.

use std::process::Command;
use std::time::Duration;

use hl7d::config::{ClientAuth, ListenerConfig, TlsConfig, TlsVersion, Transport};
use hl7d::tls::pki::{Ca, CertKind, Issued, Validity};

use crate::support::*;

struct Files {
    dir: TestDir,
    server: Issued,
    client: Issued,
}

impl Files {
    fn new() -> Files {
        let dir = tempdir("send-tls");
        let ca = Ca::new("send test CA", Validity::days_from_now(30)).unwrap();
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let server = ca.issue(CertKind::Server, "localhost", &names, Validity::days_from_now(30)).unwrap();
        let client = ca.issue(CertKind::Client, "lab sender", &[], Validity::days_from_now(30)).unwrap();
        for (name, text) in [
            ("ca.pem", &ca.cert.cert_pem),
            ("server.pem", &server.cert_pem),
            ("server.key", &server.key_pem),
            ("client.pem", &client.cert_pem),
            ("client.key", &client.key_pem),
        ] {
            if name.ends_with(".key") {
                write_key(&dir.join(name), text);
            } else {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        Files { dir, server, client }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn listener(&self, name: &str, client_auth: ClientAuth) -> ListenerConfig {
        let mut l = plain(name);
        l.transport = Transport::Tls(TlsConfig {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            min_version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(5),
            client_auth,
        });
        l
    }
}

fn sha256_hex(issued: &Issued) -> String {
    issued.digests().sha256().to_string()
}

async fn send(to: String, extra: Vec<String>) -> (i32, String) {
    let message = format!("{}/crates/hl7-proto/tests/fixtures/adt_a01_v25.hl7", env!("CARGO_MANIFEST_DIR"));
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(["send", "--to", &to, "--retries", "0", "--ack-timeout", "5s"])
            .args(&extra)
            .arg(&message)
            .output()
            .expect("run hl7d send");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn trust_by_ca_by_pin_and_the_reasons_for_refusal() {
    let files = Files::new();
    let server = TestServer::start(vec![files.listener("tls", ClientAuth::None), plain("plain")]).await;
    let port = server.addr("tls").port();
    let localhost = format!("localhost:{port}");
    let ca = files.path("ca.pem");

    let (code, out) = send(localhost.clone(), args(&["--tls", "--ca", &ca])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("MSG00001") && out.contains("CA"), "{out}");

    let pin = sha256_hex(&files.server);
    let (code, out) = send(format!("127.0.0.1:{port}"), args(&["--tls", "--pin", &pin])).await;
    assert_eq!(code, 0, "pinned: {out}");

    let wrong_pin = sha256_hex(&files.client);
    let (code, out) = send(localhost.clone(), args(&["--tls", "--pin", &wrong_pin])).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not match --pin"), "{out}");

    // The system roots do not know our test CA.
    let (code, out) = send(localhost.clone(), args(&["--tls"])).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown CA"), "{out}");

    let (code, out) =
        send(localhost.clone(), args(&["--tls", "--ca", &ca, "--server-name", "lab.example"])).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not valid for this name"), "{out}");

    // TLS to a plaintext port.
    let plain_port = server.addr("plain").port();
    let (code, out) = send(format!("localhost:{plain_port}"), args(&["--tls", "--ca", &ca])).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the server does not speak TLS: drop --tls"), "{out}");

    // --insecure works, loudly.
    let (code, out) = send(localhost.clone(), args(&["--tls", "--insecure"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("WARNING"), "{out}");
}

#[tokio::test]
async fn mutual_tls_with_an_approved_client_certificate() {
    let files = Files::new();
    let approved = files.client.digests().sha256();
    let listener = files.listener("mtls", ClientAuth::Required { thumbprints: vec![approved], ca: None });
    let server = TestServer::start(vec![listener]).await;
    let to = format!("localhost:{}", server.addr("mtls").port());
    let ca = files.path("ca.pem");

    let (code, out) = send(
        to.clone(),
        args(&[
            "--tls",
            "--ca",
            &ca,
            "--cert",
            &files.path("client.pem"),
            "--key",
            &files.path("client.key"),
        ]),
    )
    .await;
    assert_eq!(code, 0, "{out}");

    let (code, out) = send(to.clone(), args(&["--tls", "--ca", &ca])).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("client certificate refused"), "{out}");

    // A client certificate the listener does not know.
    let stranger_dir = Files::new();
    let (code, out) = send(
        to,
        args(&[
            "--tls",
            "--ca",
            &ca,
            "--cert",
            &stranger_dir.path("client.pem"),
            "--key",
            &stranger_dir.path("client.key"),
        ]),
    )
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("client certificate refused"), "{out}");
}

/// Runs `hl7d send --json` with the default retries (3, from 2 s) and returns the exit code,
/// the one JSON result line, stderr and how long it took.
async fn send_default_retries(to: String, extra: Vec<String>) -> (i32, serde_json::Value, String, Duration) {
    let message = format!("{}/crates/hl7-proto/tests/fixtures/adt_a01_v25.hl7", env!("CARGO_MANIFEST_DIR"));
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(["send", "--json", "--to", &to])
            .args(&extra)
            .arg(&message)
            .output()
            .expect("run hl7d send");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?} {stderr}"));
        (out.status.code().unwrap_or(-1), line, stderr, started.elapsed())
    })
    .await
    .unwrap()
}

/// #13 item 8: a plaintext send to a TLS port was retried for 14 s (2 + 4 + 8) and then
/// blamed on a lost connection; hl7d's TLS port closes on the first plaintext byte.
#[tokio::test]
async fn plaintext_send_to_a_tls_port_says_add_tls_at_once() {
    let files = Files::new();
    let server = TestServer::start(vec![files.listener("tls", ClientAuth::None)]).await;
    let (code, line, stderr, took) = send_default_retries(server.addr("tls").to_string(), Vec::new()).await;
    assert_eq!(code, 2, "{line} {stderr}");
    assert!(stderr.contains("the server speaks TLS: add --tls"), "{stderr}");
    assert_eq!(line["result"], "failed");
    assert_eq!(line["attempts"], 1, "not resent: {line}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(server.store.accepted(), 0);
}

/// #13 item 8: a TLS send to a plaintext port said only "tls: …"; hl7d's plaintext port
/// closes on a TLS hello without a word.
#[tokio::test]
async fn tls_send_to_a_plaintext_port_says_drop_tls_at_once() {
    let server = TestServer::start(vec![plain("plain")]).await;
    let to = server.addr("plain").to_string();
    let (code, line, stderr, took) = send_default_retries(to, args(&["--tls", "--insecure"])).await;
    assert_eq!(code, 2, "{line} {stderr}");
    assert!(stderr.contains("the server does not speak TLS: drop --tls"), "{stderr}");
    assert_eq!(line["attempts"], 1, "not resent: {line}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(server.store.accepted(), 0);
}
