//! Delivery transports (issue 15's outcome table, MLLP and HTTP rows): each row against a
//! real downstream on loopback — an in-process hl7d listener (plaintext, TLS, mutual TLS),
//! small scripted MLLP peers that answer what a test needs, and an HTTP(S) server (hyper,
//! HTTP/1.1 and HTTP/2 by ALPN). Timeouts are short (hundreds of milliseconds); every wait
//! is bounded.

mod http;
mod mllp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hl7_proto::charset::Charset;
use hl7_proto::keys::LaneOrder;
use hl7_proto::msh::Msh;
use hl7d::config::{
    ClientAuth, ListenerConfig, OnApplicationError, RouteConfig, RouteFile, RouteHttp, RouteTarget, RouteTls,
    TlsConfig, TlsVersion, DEFAULT_PARK_AFTER, DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX,
};
use hl7d::delivery::transport::{self, BuildError};
use hl7d::delivery::{Outbound, Outcome, RetryReason, Transport};
use hl7d::tls::pki::{Ca, CertKind, Issued, Validity};

use crate::support::{plain, tempdir, write_key, TestDir, WAIT};

/// The ACK timeout of the test routes: short, so that "no answer" tests are quick.
const ACK_TIMEOUT: Duration = Duration::from_millis(300);

/// A route to `to` with the defaults and [`ACK_TIMEOUT`].
fn route(to: RouteTarget) -> RouteConfig {
    RouteConfig {
        name: "downstream".into(),
        to,
        listeners: None,
        message_types: Vec::new(),
        order: LaneOrder::PerPatient,
        in_flight: 1,
        retry_initial: DEFAULT_RETRY_INITIAL,
        retry_max: DEFAULT_RETRY_MAX,
        park_after: DEFAULT_PARK_AFTER,
        on_application_error: OnApplicationError::Park,
        ack_timeout: ACK_TIMEOUT,
        tls: RouteTls::default(),
        http: RouteHttp::default(),
        file: RouteFile::default(),
    }
}

/// A stored message on its way: `raw` with its MSH-10, id 42 from listener `lab`.
fn outbound(raw: &[u8]) -> Outbound {
    let msh = Msh::parse(raw).expect("a test message with an MSH");
    Outbound {
        id: 42,
        listener: Arc::from("lab"),
        control_id: String::from_utf8_lossy(msh.control_id).into_owned(),
        message_type: "ADT^A01".into(),
        charset: Charset::Utf8,
        received_at: SystemTime::now(),
        raw: Bytes::copy_from_slice(raw),
    }
}

/// Builds the route's transport; panics with the build error.
fn build(route: &RouteConfig) -> Box<dyn Transport> {
    transport::build(route).unwrap_or_else(|e| panic!("{e}"))
}

/// One delivery, bounded by the test wait.
async fn deliver(transport: &mut Box<dyn Transport>, message: &Outbound) -> Outcome {
    tokio::time::timeout(WAIT, transport.deliver(message)).await.expect("an outcome within the test wait")
}

/// The retry reason and error of a `Retry`; panics on another outcome.
fn retried(outcome: &Outcome) -> (RetryReason, &str) {
    match outcome {
        Outcome::Retry { reason, error, .. } => (*reason, error),
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// A test CA, a server certificate for `localhost` and `127.0.0.1`, and a client
/// certificate, written to a private directory (`ca.pem`, `server.pem`/`.key`,
/// `client.pem`/`.key`).
struct Pki {
    dir: TestDir,
    ca: Ca,
    server: Issued,
    client: Issued,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempdir("delivery-tls");
        let ca = Ca::new("delivery test CA", Validity::days_from_now(30)).unwrap();
        let names = ["localhost".to_string(), "127.0.0.1".to_string()];
        let server = ca.issue(CertKind::Server, "localhost", &names, Validity::days_from_now(30)).unwrap();
        let client = ca.issue(CertKind::Client, "hl7d route", &[], Validity::days_from_now(30)).unwrap();
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
        Pki { dir, ca, server, client }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An hl7d TLS listener with this server certificate.
    fn listener(&self, name: &str, client_auth: ClientAuth) -> ListenerConfig {
        let mut listener = plain(name);
        listener.transport = hl7d::config::Transport::Tls(TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            min_version: TlsVersion::Tls12,
            handshake_timeout: Duration::from_secs(5),
            client_auth,
        });
        listener
    }

    /// `[route.tls]` trusting this CA, with the client certificate when `mutual`.
    fn route_tls(&self, mutual: bool) -> RouteTls {
        RouteTls {
            ca: Some(self.path("ca.pem")),
            cert: mutual.then(|| self.path("client.pem")),
            key: mutual.then(|| self.path("client.key")),
            ..RouteTls::default()
        }
    }
}

#[test]
fn file_routes_are_built_by_the_file_transport() {
    let dir = tempdir("delivery-file");
    let built = transport::build(&route(RouteTarget::File { dir: dir.to_path_buf() }));
    assert!(built.is_ok(), "a file route builds");
}

#[test]
fn tls_settings_on_a_plaintext_route_are_refused() {
    let pki = Pki::new();
    for to in [
        RouteTarget::Mllp { address: "127.0.0.1:1".into(), host: "127.0.0.1".into(), tls: false },
        RouteTarget::Http { url: "http://127.0.0.1:1/".into(), tls: false },
    ] {
        let mut config = route(to);
        config.tls = pki.route_tls(false);
        let error = transport::build(&config).err().expect("refused");
        assert!(matches!(error, BuildError::TlsWithoutTls { .. }), "{error}");
    }
}

#[test]
fn unreadable_tls_files_fail_the_build_and_name_the_file() {
    let pki = Pki::new();
    let mut config =
        route(RouteTarget::Mllp { address: "127.0.0.1:1".into(), host: "127.0.0.1".into(), tls: true });
    config.tls = RouteTls { ca: Some(pki.path("missing-ca.pem")), ..RouteTls::default() };
    let error = transport::build(&config).err().expect("refused").to_string();
    assert!(error.contains("missing-ca.pem") && error.contains("[route.tls]"), "{error}");

    config.tls = RouteTls { cert: Some(pki.path("client.pem")), ..RouteTls::default() };
    let error = transport::build(&config).err().expect("refused").to_string();
    assert_eq!(error, "route \"downstream\": [route.tls] cert and key go together");
}
