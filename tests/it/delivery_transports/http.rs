//! `http://` and `https://` routes against a hyper server on loopback: the request as the
//! server saw it (headers, body, signature, HTTP version), every status class, timeouts,
//! lost and refused connections, trust and mutual TLS.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hl7_proto::charset::Charset;
use hl7d::config::{RouteConfig, RouteHttp, RouteTarget, RouteTls, SecretValue};
use hl7d::delivery::transport::{self, BuildError};
use hl7d::delivery::{Outcome, RetryReason};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Sha256;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{build, deliver, outbound, retried, route, Pki, ACK_TIMEOUT};
use crate::support::fixture;

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Bytes,
}

/// What the server answers to the n-th request.
enum Answer {
    /// This status, these headers, this body.
    Status(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Never answers.
    Hang,
}

fn status(code: u16) -> Answer {
    Answer::Status(code, Vec::new(), b"ok".to_vec())
}

type Respond = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

/// An HTTP downstream on 127.0.0.1:0 (HTTPS with `tls`: HTTP/2 or HTTP/1.1 as ALPN says).
struct HttpServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl HttpServer {
    async fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        respond: impl Fn(usize) -> Answer + Send + Sync + 'static,
    ) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let respond: Respond = Arc::new(respond);
        let (log, count) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (tls, log, respond) = (tls.clone(), log.clone(), respond.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (log, respond) = (log.clone(), respond.clone());
                        async move { answer(request, &log, &*respond).await }
                    });
                    match tls {
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), service)
                                .await;
                        }
                        Some(config) => {
                            let Ok(stream) = TlsAcceptor::from(config).accept(tcp).await else { return };
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            } else {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        HttpServer { addr, seen, connections }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    fn route(&self) -> RouteConfig {
        route(RouteTarget::Http { url: self.url("http", "/"), tls: false })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn answer(
    request: Request<Incoming>,
    log: &Mutex<Vec<Seen>>,
    respond: &(dyn Fn(usize) -> Answer + Send + Sync),
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
    let n = {
        let mut log = log.lock().unwrap();
        log.push(Seen {
            version: parts.version,
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: parts.headers,
            body,
        });
        log.len() - 1
    };
    match respond(n) {
        Answer::Status(code, headers, body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = StatusCode::from_u16(code).unwrap();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            Ok(response)
        }
        Answer::Hang => std::future::pending().await,
    }
}

/// A rustls server configuration with the test server certificate, offering `alpn`, and
/// requiring a client certificate from the test CA when `mutual`.
fn server_tls(pki: &Pki, alpn: &[&[u8]], mutual: bool) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if mutual {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(pki.ca.cert.der.clone())).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(
            vec![CertificateDer::from(pki.server.der.clone())],
            PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

fn https_route(server: &HttpServer, tls: RouteTls) -> RouteConfig {
    let mut config = route(RouteTarget::Http { url: server.url("https", "/hl7"), tls: true });
    config.tls = tls;
    config
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", seen.headers))
        .to_str()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// The request

#[tokio::test]
async fn a_post_carries_the_bytes_the_headers_and_the_signature() {
    let server = HttpServer::start(None, |_| status(200)).await;
    // A variable cargo sets for the test process: setting one here would race with other
    // tests' threads reading the environment.
    let variable = "CARGO_PKG_NAME";
    let mut config = route(RouteTarget::Http { url: server.url("http", "/in/hl7?source=lab"), tls: false });
    config.http = RouteHttp {
        headers: vec![
            ("Authorization".into(), SecretValue::parse("Bearer s3cret-token")),
            ("X-Tenant".into(), SecretValue::parse(&format!("env:{variable}"))),
        ],
        sign_secret: Some(SecretValue::parse("webhook key")),
    };
    let mut transport = build(&config);
    let mut message = outbound(&fixture("windows1252_adt_a08.hl7"));
    message.charset = Charset::Windows1252;
    message.message_type = "ADT^A08".into();

    let outcome = deliver(&mut transport, &message).await;
    assert_eq!(outcome, Outcome::Delivered { response: Some("HTTP 200 OK".into()) });

    let seen = server.seen();
    let request = &seen[0];
    assert_eq!((request.method.as_str(), request.uri.as_str()), ("POST", "/in/hl7?source=lab"));
    assert_eq!(request.version, Version::HTTP_11);
    assert_eq!(request.body, message.raw, "the bytes exactly as received");
    assert_eq!(header(request, "content-type"), "x-application/hl7-v2+er7; charset=windows-1252");
    assert_eq!(header(request, "x-hl7d-message-id"), "42");
    assert_eq!(header(request, "x-hl7d-listener"), "lab");
    assert_eq!(header(request, "x-hl7d-control-id"), message.control_id);
    assert_eq!(header(request, "x-hl7d-message-type"), "ADT^A08");
    assert_eq!(header(request, "authorization"), "Bearer s3cret-token");
    assert_eq!(header(request, "x-tenant"), env!("CARGO_PKG_NAME"));
    assert_eq!(header(request, "host"), format!("127.0.0.1:{}", server.addr.port()));
    let signature = format!("sha256={}", hmac_hex(b"webhook key", &request.body));
    assert_eq!(header(request, "x-hl7d-signature"), signature);
    // A different body would not carry the same signature.
    assert_ne!(signature, format!("sha256={}", hmac_hex(b"webhook key", b"MSH|other")));
}

#[tokio::test]
async fn a_missing_environment_variable_is_a_build_error_that_names_it() {
    let variable = "HL7D_TEST_DELIVERY_SURELY_UNSET";
    assert!(std::env::var_os(variable).is_none());
    let mut config = route(RouteTarget::Http { url: "http://127.0.0.1:9/".into(), tls: false });
    config.http.headers = vec![("Authorization".into(), SecretValue::parse(&format!("env:{variable}")))];
    let error = transport::build(&config).err().expect("refused");
    assert!(matches!(&error, BuildError::MissingEnv { variable: v, .. } if v == variable), "{error}");
    assert_eq!(
        error.to_string(),
        format!("route \"downstream\": [route.http] headers.\"Authorization\": environment variable {variable} is not set")
    );

    config.http.headers = Vec::new();
    config.http.sign_secret = Some(SecretValue::parse(&format!("env:{variable}")));
    let error = transport::build(&config).err().expect("refused").to_string();
    assert!(error.contains("sign_secret") && error.contains(variable), "{error}");

    // Headers hl7d writes itself cannot be replaced.
    config.http.sign_secret = None;
    for name in ["Content-Type", "X-HL7D-Signature", "Host"] {
        config.http.headers = vec![(name.into(), SecretValue::parse("x"))];
        let error = transport::build(&config).err().expect("refused").to_string();
        assert!(error.contains("set by hl7d itself"), "{error}");
    }
}

#[tokio::test]
async fn https_negotiates_http2_and_keeps_one_connection() {
    let pki = Pki::new();
    let server =
        HttpServer::start(Some(server_tls(&pki, &[b"h2", b"http/1.1"], false)), |_| status(202)).await;
    let mut transport = build(&https_route(&server, pki.route_tls(false)));
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    for _ in 0..3 {
        let outcome = deliver(&mut transport, &message).await;
        assert_eq!(outcome, Outcome::Delivered { response: Some("HTTP 202 Accepted".into()) });
    }
    let seen = server.seen();
    assert!(seen.iter().all(|request| request.version == Version::HTTP_2), "{seen:?}");
    assert_eq!(seen[0].uri, server.url("https", "/hl7"));
    assert_eq!(seen[0].body, message.raw);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn https_without_h2_falls_back_to_http11() {
    let pki = Pki::new();
    let server = HttpServer::start(Some(server_tls(&pki, &[b"http/1.1"], false)), |_| status(200)).await;
    let mut transport = build(&https_route(&server, pki.route_tls(false)));
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    for _ in 0..2 {
        assert!(matches!(deliver(&mut transport, &message).await, Outcome::Delivered { .. }));
    }
    let seen = server.seen();
    assert!(seen.iter().all(|request| request.version == Version::HTTP_11), "{seen:?}");
    assert_eq!(seen[0].uri, "/hl7");
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn https_with_mutual_tls_and_the_trust_failures() {
    let pki = Pki::new();
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    let mutual =
        HttpServer::start(Some(server_tls(&pki, &[b"h2", b"http/1.1"], true)), |_| status(200)).await;
    let outcome = deliver(&mut build(&https_route(&mutual, pki.route_tls(true))), &message).await;
    assert_eq!(outcome, Outcome::Delivered { response: Some("HTTP 200 OK".into()) });

    let plain_tls =
        HttpServer::start(Some(server_tls(&pki, &[b"h2", b"http/1.1"], false)), |_| status(200)).await;
    let cases = [
        (https_route(&mutual, pki.route_tls(false)), "client certificate refused"),
        (
            https_route(
                &plain_tls,
                RouteTls { pin: Some(pki.client.digests().sha256()), ..RouteTls::default() },
            ),
            "does not match [route.tls] pin",
        ),
        (https_route(&plain_tls, RouteTls::default()), "unknown CA"),
    ];
    for (config, expected) in cases {
        let outcome = deliver(&mut build(&config), &message).await;
        let (reason, error) = retried(&outcome);
        assert_eq!(reason, RetryReason::Tls, "{error}");
        assert!(error.contains(expected), "expected {expected:?} in {error:?}");
    }
    // Pinned, the right certificate is enough.
    let pinned =
        https_route(&plain_tls, RouteTls { pin: Some(pki.server.digests().sha256()), ..RouteTls::default() });
    assert!(matches!(deliver(&mut build(&pinned), &message).await, Outcome::Delivered { .. }));
    assert_eq!(mutual.seen().len(), 1);
}

// ---------------------------------------------------------------------------------------
// Answers

#[tokio::test]
async fn every_status_class_has_its_outcome_and_retry_after_is_honoured() {
    let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
    let answers: Vec<(u16, Vec<(&'static str, String)>)> = vec![
        (200, vec![]),
        (204, vec![]),
        (400, vec![]),
        (404, vec![]),
        (422, vec![]),
        (301, vec![("location", "http://elsewhere.example/".into())]),
        (408, vec![]),
        (425, vec![]),
        (429, vec![("retry-after", "7".into())]),
        (500, vec![]),
        (503, vec![("retry-after", in_a_minute)]),
    ];
    let statuses: Vec<u16> = answers.iter().map(|(code, _)| *code).collect();
    let server = HttpServer::start(None, move |n| {
        let (code, headers) = answers[n].clone();
        Answer::Status(code, headers, b"body the transport never keeps".to_vec())
    })
    .await;
    let mut transport = build(&server.route());
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    let mut outcomes = Vec::new();
    for _ in &statuses {
        outcomes.push(deliver(&mut transport, &message).await);
    }
    for (code, outcome) in statuses.iter().zip(&outcomes) {
        match code {
            200 | 204 => assert!(matches!(outcome, Outcome::Delivered { .. }), "{code}: {outcome:?}"),
            301 | 400 | 404 | 422 => assert!(matches!(outcome, Outcome::Park { .. }), "{code}: {outcome:?}"),
            _ => assert_eq!(retried(outcome).0, RetryReason::HttpStatus, "{code}"),
        }
    }
    assert_eq!(outcomes[1], Outcome::Delivered { response: Some("HTTP 204 No Content".into()) });
    assert!(
        matches!(&outcomes[5], Outcome::Park { error, .. } if error.contains("redirects are not followed"))
    );
    assert!(
        matches!(&outcomes[8], Outcome::Retry { retry_after: Some(d), .. } if *d == Duration::from_secs(7))
    );
    let Outcome::Retry { retry_after: Some(after), response, .. } = &outcomes[10] else {
        panic!("{:?}", outcomes[10])
    };
    assert!(*after > Duration::from_secs(50) && *after <= Duration::from_secs(60), "{after:?}");
    assert_eq!(response.as_deref(), Some("HTTP 503 Service Unavailable"));
    assert!(matches!(&outcomes[9], Outcome::Retry { retry_after: None, .. }));
    // Every answer came on one kept-alive connection; the redirect was not followed.
    assert_eq!(server.seen().len(), statuses.len());
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_long_response_body_is_not_read_to_its_end() {
    let server = HttpServer::start(None, |_| Answer::Status(200, Vec::new(), vec![b'x'; 64 * 1024])).await;
    let mut transport = build(&server.route());
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    for _ in 0..2 {
        assert_eq!(
            deliver(&mut transport, &message).await,
            Outcome::Delivered { response: Some("HTTP 200 OK".into()) }
        );
    }
    // The unread rest cost the connection: each message had one of its own.
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn no_answer_in_time_is_a_timeout_and_the_next_attempt_reconnects() {
    let server = HttpServer::start(None, |n| if n == 0 { Answer::Hang } else { status(200) }).await;
    let mut transport = build(&server.route());
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    let started = std::time::Instant::now();
    let outcome = deliver(&mut transport, &message).await;
    assert_eq!(retried(&outcome), (RetryReason::Timeout, "no HTTP response within 300ms"));
    assert!(started.elapsed() >= ACK_TIMEOUT);
    assert!(matches!(deliver(&mut transport, &message).await, Outcome::Delivered { .. }));
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_lost() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            // Read the request's first bytes, then hang up.
            let mut buf = [0u8; 64];
            let _ = tcp.read(&mut buf).await;
        }
    });
    let config = route(RouteTarget::Http { url: format!("http://127.0.0.1:{}/", addr.port()), tls: false });
    let outcome = deliver(&mut build(&config), &outbound(&fixture("adt_a01_v25.hl7"))).await;
    let (reason, error) = retried(&outcome);
    assert_eq!(reason, RetryReason::ConnectionLost);
    assert!(error.starts_with("connection lost: "), "{error}");
}

#[tokio::test]
async fn a_server_that_never_finishes_the_handshake_is_a_tls_retry() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            open.push(tcp);
        }
    });
    let mut config =
        route(RouteTarget::Http { url: format!("https://127.0.0.1:{}/", addr.port()), tls: true });
    config.tls.pin = Some(hl7d::config::Thumbprint::Sha256([0; 32]));
    let started = std::time::Instant::now();
    let outcome = deliver(&mut build(&config), &outbound(&fixture("adt_a01_v25.hl7"))).await;
    assert_eq!(retried(&outcome), (RetryReason::Tls, "tls: handshake timed out"));
    assert!(started.elapsed() >= ACK_TIMEOUT);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_retry() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let config = route(RouteTarget::Http { url: format!("http://127.0.0.1:{}/", addr.port()), tls: false });
    let outcome = deliver(&mut build(&config), &outbound(&fixture("adt_a01_v25.hl7"))).await;
    let (reason, error) = retried(&outcome);
    assert_eq!(reason, RetryReason::Connect);
    assert!(error.starts_with(&format!("connect to 127.0.0.1:{}: ", addr.port())), "{error}");
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_replaced_without_a_retry() {
    // `Connection: close` on every answer: the server closes after each response.
    let server =
        HttpServer::start(None, |_| Answer::Status(200, vec![("connection", "close".into())], Vec::new()))
            .await;
    let mut transport = build(&server.route());
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    for _ in 0..3 {
        assert_eq!(
            deliver(&mut transport, &message).await,
            Outcome::Delivered { response: Some("HTTP 200 OK".into()) }
        );
    }
    assert_eq!(server.connections(), 3);
}
