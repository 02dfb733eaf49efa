//! `mllp://` and `mllps://` routes: a real hl7d listener (plaintext, TLS, mutual TLS) and
//! scripted peers for every answer the outcome table names.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hl7_proto::mllp::{Decoder, DecoderConfig, Framing};
use hl7d::config::{ClientAuth, OnApplicationError, RouteConfig, RouteTarget, RouteTls};
use hl7d::delivery::{Outcome, RetryReason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{build, deliver, outbound, retried, route, Pki};
use crate::support::{fixture, frame, plain, TestServer, WAIT};

/// An `mllp://` (or `mllps://`) route to `addr`, checked against the name `host`.
fn mllp_route(addr: SocketAddr, host: &str, tls: bool) -> RouteConfig {
    route(RouteTarget::Mllp { address: format!("{host}:{}", addr.port()), host: host.into(), tls })
}

/// An ACK payload answering `control_id` with `code`, MSA-3 `text`.
fn ack(code: &str, control_id: &str, text: &str) -> Vec<u8> {
    format!("MSH|^~\\&|DOWN|STREAM|HL7D|LAB|20260101000000||ACK^A01^ACK|ACK1|P|2.5\rMSA|{code}|{control_id}|{text}\r")
        .into_bytes()
}

/// What a scripted peer does with one frame it read.
enum Reply {
    /// Write this payload, framed.
    Send(Vec<u8>),
    /// Write this payload, framed, then close the connection.
    SendThenClose(Vec<u8>),
    /// Nothing.
    Silence,
    /// Close the connection.
    Close,
}

/// A scripted MLLP downstream on 127.0.0.1:0: `script(n, frame)` answers the n-th frame it
/// reads (counted over all connections). Like hl7d, it closes a connection whose first
/// byte is not an MLLP start block (the client's "is this a TLS port?" probe).
struct Peer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    frames: Arc<AtomicUsize>,
}

impl Peer {
    async fn start(script: impl Fn(usize, &[u8]) -> Reply + Send + Sync + 'static) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let frames = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let (count, ended, seen) = (connections.clone(), closed.clone(), frames.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (script, ended, seen) = (script.clone(), ended.clone(), seen.clone());
                tokio::spawn(async move {
                    serve(&mut stream, &*script, &seen).await;
                    drop(stream);
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Peer { addr, connections, closed, frames }
    }

    /// A peer that answers every frame with the same ACK code for MSG00001.
    async fn answering(code: &'static str, text: &'static str) -> Peer {
        Peer::start(move |_, _| Reply::Send(ack(code, "MSG00001", text))).await
    }

    fn route(&self) -> RouteConfig {
        mllp_route(self.addr, "127.0.0.1", false)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn frames(&self) -> usize {
        self.frames.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections have been closed by the peer.
    async fn wait_closed(&self, n: usize) {
        tokio::time::timeout(WAIT, async {
            while self.closed.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the peer closed its connections within the test wait");
    }
}

/// One connection of a [`Peer`], until the script closes it or the client does.
async fn serve(
    stream: &mut TcpStream,
    script: &(dyn Fn(usize, &[u8]) -> Reply + Send + Sync),
    seen: &AtomicUsize,
) {
    let mut decoder = Decoder::new(DecoderConfig {
        framing: Framing::DEFAULT,
        max_frame_size: 1 << 20,
        lenient_end: false,
    });
    let mut buf = [0u8; 4096];
    let mut first = true;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if std::mem::take(&mut first) && buf[0] != 0x0B {
            return;
        }
        decoder.push(&buf[..n]);
        while let Some(Ok(payload)) = decoder.next_frame() {
            match script(seen.fetch_add(1, Ordering::SeqCst), &payload) {
                Reply::Send(answer) => {
                    let _ = stream.write_all(&frame(&answer)).await;
                }
                Reply::SendThenClose(answer) => {
                    let _ = stream.write_all(&frame(&answer)).await;
                    return;
                }
                Reply::Silence => {}
                Reply::Close => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A real hl7d downstream

#[tokio::test]
async fn mllp_to_an_hl7d_listener_is_delivered_with_its_ack_code() {
    let server = TestServer::start(vec![plain("in")]).await;
    let mut transport = build(&mllp_route(server.addr("in"), "127.0.0.1", false));

    // Enhanced mode, MSH-15 AL: a commit ACK.
    let enhanced = outbound(&fixture("adt_a01_v25.hl7"));
    assert_eq!(deliver(&mut transport, &enhanced).await, Outcome::Delivered { response: Some("CA".into()) });
    // Original mode: AA.
    let original = outbound(&fixture("adt_a04_v231_original_mode.hl7"));
    assert_eq!(deliver(&mut transport, &original).await, Outcome::Delivered { response: Some("AA".into()) });
    assert_eq!(server.store.accepted(), 2);
}

#[tokio::test]
async fn mllps_with_mutual_tls_to_an_hl7d_listener_is_delivered() {
    let pki = Pki::new();
    let approved = pki.client.digests().sha256();
    let listener = pki.listener("mtls", ClientAuth::Required { thumbprints: vec![approved], ca: None });
    let server = TestServer::start(vec![listener]).await;
    let mut config = mllp_route(server.addr("mtls"), "127.0.0.1", true);
    config.tls = pki.route_tls(true);
    let mut transport = build(&config);
    for _ in 0..2 {
        let outcome = deliver(&mut transport, &outbound(&fixture("adt_a01_v25.hl7"))).await;
        assert_eq!(outcome, Outcome::Delivered { response: Some("CA".into()) });
    }
    assert_eq!(server.store.accepted(), 2);

    // By the name in the certificate instead of the address, and by pin.
    config.to = RouteTarget::Mllp {
        address: format!("localhost:{}", server.addr("mtls").port()),
        host: "localhost".into(),
        tls: true,
    };
    config.tls.ca = None;
    config.tls.pin = Some(pki.server.digests().sha256());
    let outcome = deliver(&mut build(&config), &outbound(&fixture("adt_a01_v25.hl7"))).await;
    assert_eq!(outcome, Outcome::Delivered { response: Some("CA".into()) });
    assert_eq!(server.store.accepted(), 3);
}

#[tokio::test]
async fn tls_failures_are_retried_with_the_reason_in_route_terms() {
    let pki = Pki::new();
    let approved = pki.client.digests().sha256();
    let server = TestServer::start(vec![
        pki.listener("mtls", ClientAuth::Required { thumbprints: vec![approved], ca: None }),
        pki.listener("tls", ClientAuth::None),
        plain("plain"),
    ])
    .await;
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    let tls_route = |listener: &str, tls: RouteTls| {
        let mut config = mllp_route(server.addr(listener), "127.0.0.1", true);
        config.tls = tls;
        config
    };
    let cases = [
        // A pin that is not the server's certificate.
        (
            tls_route("tls", RouteTls { pin: Some(pki.client.digests().sha256()), ..RouteTls::default() }),
            "does not match [route.tls] pin",
        ),
        // The system roots do not know the test CA.
        (tls_route("tls", RouteTls::default()), "unknown CA"),
        // The certificate is not for this name.
        (
            tls_route("tls", RouteTls { server_name: Some("engine.example".into()), ..pki.route_tls(false) }),
            "[route.tls] server_name",
        ),
        // Mutual TLS without a client certificate.
        (tls_route("mtls", pki.route_tls(false)), "client certificate refused"),
        // mllps:// to a plaintext port.
        (tls_route("plain", pki.route_tls(false)), "does not speak TLS: use mllp://"),
        // mllp:// to a TLS port.
        (mllp_route(server.addr("tls"), "127.0.0.1", false), "the server speaks TLS: use mllps://"),
    ];
    for (config, expected) in cases {
        let outcome = deliver(&mut build(&config), &message).await;
        let (reason, error) = retried(&outcome);
        assert_eq!(reason, RetryReason::Tls, "{error}");
        assert!(error.contains(expected), "expected {expected:?} in {error:?}");
    }
    assert_eq!(server.store.accepted(), 0);
}

#[tokio::test]
async fn a_message_that_wants_no_ack_is_delivered_after_the_grace() {
    let server = TestServer::start(vec![plain("in")]).await;
    let mut transport = build(&mllp_route(server.addr("in"), "127.0.0.1", false));
    // MSH-15 NE: hl7d stores it and answers nothing.
    let message = outbound(&fixture("enhanced_ne_ne.hl7"));
    let started = std::time::Instant::now();
    assert_eq!(deliver(&mut transport, &message).await, Outcome::Delivered { response: None });
    assert!(started.elapsed() >= super::ACK_TIMEOUT, "waited the grace: {:?}", started.elapsed());
    assert_eq!(server.store.accepted(), 1);
}

#[tokio::test]
async fn a_message_that_wants_no_ack_on_a_connection_closed_at_once_is_retried() {
    let peer = Peer::start(|_, _| Reply::Close).await;
    let outcome = deliver(&mut build(&peer.route()), &outbound(&fixture("enhanced_ne_ne.hl7"))).await;
    assert_eq!(retried(&outcome).0, RetryReason::ConnectionLost);
}

#[tokio::test]
async fn an_error_ack_to_a_message_that_wants_none_on_success_counts() {
    // MSH-15 ER: an answer comes only when the receiver refuses.
    let message = outbound(&fixture("enhanced_er_ne.hl7"));
    let control_id = message.control_id.clone();
    let peer = Peer::start(move |_, _| Reply::Send(ack("CR", &control_id, "unknown patient"))).await;
    let outcome = deliver(&mut build(&peer.route()), &message).await;
    assert!(matches!(&outcome, Outcome::Park { response: Some(code), .. } if code == "CR"), "{outcome:?}");
}

// ---------------------------------------------------------------------------------------
// Scripted answers

#[tokio::test]
async fn application_errors_park_by_default_or_retry_when_the_route_says_so() {
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    for code in ["AE", "CE"] {
        let peer = Peer::answering(code, "database busy").await;
        let outcome = deliver(&mut build(&peer.route()), &message).await;
        assert_eq!(
            outcome,
            Outcome::Park {
                error: format!("the downstream answered {code}: database busy"),
                response: Some(code.into())
            }
        );

        let mut config = peer.route();
        config.on_application_error = OnApplicationError::Retry;
        let outcome = deliver(&mut build(&config), &message).await;
        assert_eq!(retried(&outcome).0, RetryReason::ApplicationError);
        assert!(matches!(&outcome, Outcome::Retry { response: Some(r), .. } if r == code), "{outcome:?}");
    }
}

#[tokio::test]
async fn rejections_park_even_when_application_errors_retry() {
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    for code in ["AR", "CR"] {
        let peer = Peer::answering(code, "unsupported message type").await;
        let mut config = peer.route();
        config.on_application_error = OnApplicationError::Retry;
        let outcome = deliver(&mut build(&config), &message).await;
        let Outcome::Park { error, response } = &outcome else { panic!("{outcome:?}") };
        assert_eq!(response.as_deref(), Some(code));
        assert!(error.contains("unsupported message type"), "{error}");
    }
}

#[tokio::test]
async fn answered_messages_keep_the_connection() {
    let peer = Peer::start(|n, _| Reply::Send(ack(if n == 1 { "AE" } else { "AA" }, "MSG00001", ""))).await;
    let mut transport = build(&peer.route());
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    assert!(matches!(deliver(&mut transport, &message).await, Outcome::Delivered { .. }));
    assert!(matches!(deliver(&mut transport, &message).await, Outcome::Park { .. }));
    assert!(matches!(deliver(&mut transport, &message).await, Outcome::Delivered { .. }));
    assert_eq!((peer.frames(), peer.connections()), (3, 1));

    // `close` drops it; the next message opens a new one.
    transport.close();
    assert!(matches!(
        deliver(&mut transport, &message).await,
        Outcome::Park { .. } | Outcome::Delivered { .. }
    ));
    assert_eq!(peer.connections(), 2);
}

#[tokio::test]
async fn an_ack_for_another_message_is_a_bad_ack_and_the_next_attempt_reconnects() {
    // The first answer names another control id; later ones are right.
    let peer =
        Peer::start(|n, _| Reply::Send(ack("AA", if n == 0 { "MSG99999" } else { "MSG00001" }, ""))).await;
    let mut transport = build(&peer.route());
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    let outcome = deliver(&mut transport, &message).await;
    let (reason, error) = retried(&outcome);
    assert_eq!(reason, RetryReason::BadAck);
    assert!(error.contains("MSA-2 \"MSG99999\""), "{error}");
    assert_eq!(deliver(&mut transport, &message).await, Outcome::Delivered { response: Some("AA".into()) });
    assert_eq!(peer.connections(), 2, "the failed attempt dropped its connection");
}

#[tokio::test]
async fn an_answer_without_msa_is_a_bad_ack() {
    let peer = Peer::start(|_, _| {
        Reply::Send(b"MSH|^~\\&|DOWN|STREAM|HL7D|LAB|20260101000000||ACK^A01^ACK|ACK1|P|2.5\r".to_vec())
    })
    .await;
    let outcome = deliver(&mut build(&peer.route()), &outbound(&fixture("adt_a01_v25.hl7"))).await;
    let (reason, error) = retried(&outcome);
    assert_eq!(reason, RetryReason::BadAck);
    assert!(error.contains("without a readable MSA"), "{error}");
}

#[tokio::test]
async fn no_answer_within_the_ack_timeout_is_a_timeout_and_the_next_attempt_reconnects() {
    let peer =
        Peer::start(|n, _| if n == 0 { Reply::Silence } else { Reply::Send(ack("CA", "MSG00001", "")) })
            .await;
    let mut transport = build(&peer.route());
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    let started = std::time::Instant::now();
    let outcome = deliver(&mut transport, &message).await;
    assert_eq!(retried(&outcome), (RetryReason::Timeout, "no ACK within 300ms"));
    assert!(started.elapsed() >= super::ACK_TIMEOUT);
    assert_eq!(deliver(&mut transport, &message).await, Outcome::Delivered { response: Some("CA".into()) });
    assert_eq!(peer.connections(), 2);
}

#[tokio::test]
async fn a_connection_closed_before_the_ack_is_lost() {
    let peer = Peer::start(|_, _| Reply::Close).await;
    let outcome = deliver(&mut build(&peer.route()), &outbound(&fixture("adt_a01_v25.hl7"))).await;
    let (reason, error) = retried(&outcome);
    assert_eq!(reason, RetryReason::ConnectionLost);
    assert_eq!(error, "connection closed before the ACK");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_retry() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let outcome =
        deliver(&mut build(&mllp_route(addr, "127.0.0.1", false)), &outbound(&fixture("adt_a01_v25.hl7")))
            .await;
    let (reason, error) = retried(&outcome);
    assert_eq!(reason, RetryReason::Connect);
    assert!(error.starts_with(&format!("connect to 127.0.0.1:{}", addr.port())), "{error}");
}

/// Receivers close idle connections (hl7d's `idle_timeout`): the next message must not
/// be written into the closed connection and counted as lost.
#[tokio::test]
async fn a_connection_the_receiver_closed_while_idle_is_replaced_without_a_retry() {
    let peer = Peer::start(|_, _| Reply::SendThenClose(ack("AA", "MSG00001", ""))).await;
    let mut transport = build(&peer.route());
    let message = outbound(&fixture("adt_a01_v25.hl7"));
    for n in 1..=3 {
        assert_eq!(
            deliver(&mut transport, &message).await,
            Outcome::Delivered { response: Some("AA".into()) }
        );
        peer.wait_closed(n).await;
    }
    assert_eq!((peer.frames(), peer.connections()), (3, 3));
}
