//! Hostile clients against a real server on loopback: slowloris in the TLS handshake and
//! inside a frame, connection floods and half-open connections, a client that never reads
//! its ACKs, oversized and endless frames, random bytes and scanner probes. Through all of
//! it a well-behaved sender on another connection must keep getting every ACK within
//! [`ACK_BOUND`], both on tokio's clock (no ACK waits for another peer's timeout) and in
//! real time (generous on purpose: the machine is shared, so no tighter timing is asserted).
//!
//! Every test runs on tokio's paused clock: the sockets are real, but the clock moves only
//! when every task waits, straight to the next timer. So the 1–2 s limits below cost no real
//! time, and "closed after at least the timeout" is exact. Every wait is bounded and every
//! test is wrapped in [`TEST_LIMIT`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hl7d::config::{ClientAuth, ListenerConfig, TlsConfig, TlsVersion, Transport};
use hl7d::listener::refusal_log::{FULL_LINES, SWEEP_EVERY, WINDOW};
use hl7d::tls::pki::{Ca, CertKind, Validity};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Every ACK to the well-behaved sender arrives within this.
const ACK_BOUND: Duration = Duration::from_secs(2);
/// Upper bound of one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(90);
/// Pause between the good sender's messages, so it does not compete for the CPU.
const PACE: Duration = Duration::from_millis(20);
/// The limits of the listeners under attack.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
const FRAME_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// A limit with slack for a loaded machine: "closed by a 1–2 s timeout" means within this.
const CLOSE_BOUND: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------------------
// Slowloris

#[tokio::test(start_paused = true)]
async fn slowloris_in_the_tls_handshake_is_closed_by_the_handshake_timeout() {
    bounded(async {
        let tls = TestTls::new("slow-handshake");
        let server = TestServer::start(vec![tls.listener("tls")]).await;
        let addr = server.addr("tls");
        let logs = Logs::capture();
        let good = GoodSender::spawn(tls.connect(addr).await, "TLS");
        // A real ClientHello, one byte every 250 ms: progress must not extend the deadline.
        let hello = tls.client_hello();
        let slow: Vec<_> =
            (0..10).map(|_| tokio::spawn(trickle(addr, hello.clone(), Duration::from_millis(250)))).collect();
        for task in slow {
            let closed_after = task.await.unwrap();
            assert!(closed_after >= HANDSHAKE_TIMEOUT, "closed after {closed_after:?}");
        }
        // All from 127.0.0.1: the first few refusals are written in full, the others told
        // in one summary line when the minute is over (issue 13 item 2).
        logs.wait_for_n(&["TLS connection refused", "handshake_timeout"], FULL_LINES as usize).await;
        good.finish().await;
        sleep(WINDOW + SWEEP_EVERY).await;
        let more = 10 - FULL_LINES;
        logs.wait_for(&[&format!("{more} more refused from 127.0.0.1: handshake_timeout {more}")]).await;
        assert_eq!(logs.count(&["TLS connection refused"]), FULL_LINES as usize, "{}", logs.text());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn slowloris_inside_a_frame_is_closed_by_the_frame_timeout() {
    bounded(async {
        let mut listener = hostile("lab");
        // A long idle timeout: the trickle resets it with every byte, so only the frame
        // timeout can end these connections.
        listener.idle_timeout = Duration::from_secs(60);
        let server = TestServer::start(vec![listener]).await;
        let addr = server.addr("lab");
        let logs = Logs::capture();
        let good = GoodSender::spawn(server.connect("lab").await, "PLAIN");
        let message = frame(&message("SLOW-1"));
        let slow: Vec<_> = (0..10)
            .map(|_| tokio::spawn(trickle(addr, message.clone(), Duration::from_millis(100))))
            .collect();
        for task in slow {
            let closed_after = task.await.unwrap();
            assert!(closed_after >= FRAME_TIMEOUT, "closed after {closed_after:?}");
        }
        logs.wait_for_n(&["connection closed", "reason=frame not completed within 1s"], 10).await;
        let report = good.finish().await;
        assert_eq!(server.store.accepted() as usize, report.acked, "a trickled message was accepted");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn bytes_trickled_between_frames_do_not_hold_a_connection_past_the_idle_timeout() {
    bounded(async {
        let server = TestServer::start(vec![hostile("lab")]).await;
        let addr = server.addr("lab");
        let logs = Logs::capture();
        let good = GoodSender::spawn(server.connect("lab").await, "PLAIN");
        // A message, then a CR every 250 ms for ever: keep-alive junk is not traffic.
        let slow: Vec<_> = (0..5)
            .map(|i| {
                tokio::spawn(async move {
                    let mut conn = connect_nodelay(addr).await.unwrap();
                    let id = format!("JUNK-{i}");
                    // From before the message: the server's last traffic is no earlier.
                    let started = Instant::now();
                    send(&mut conn, &message(&id)).await;
                    assert_eq!(msa(&read_frame(&mut conn).await).1, id);
                    trickle_on(conn, b"\r".to_vec(), Duration::from_millis(250)).await;
                    started.elapsed()
                })
            })
            .collect();
        for task in slow {
            let closed_after = task.await.unwrap();
            assert!(closed_after >= IDLE_TIMEOUT, "closed {closed_after:?} after the message");
        }
        logs.wait_for_n(&["connection closed", "reason=idle for"], 5).await;
        good.finish().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Floods and half-open connections

#[tokio::test(start_paused = true)]
async fn a_connection_flood_beyond_max_connections_is_refused_and_the_slots_come_back() {
    bounded(async {
        const MAX: usize = 8;
        let mut listener = hostile("lab");
        listener.max_connections = MAX;
        let server = TestServer::start(vec![listener]).await;
        let addr = server.addr("lab");
        let good = GoodSender::spawn(server.connect("lab").await, "PLAIN");
        sleep(Duration::from_millis(100)).await;

        // Forty connections that never send a byte.
        let started = Instant::now();
        let mut flood = Vec::new();
        for _ in 0..40 {
            flood.push(connect_nodelay(addr).await.unwrap());
        }
        let closes: Vec<_> = flood
            .into_iter()
            .map(|mut conn| tokio::spawn(async move { closed_within(&mut conn).await }))
            .collect();
        let mut held = 0;
        for close in closes {
            // Refused (or, silent, dropped for a newer one) connections close at once, the
            // ones still held at the idle timeout.
            if close.await.unwrap() >= IDLE_TIMEOUT / 2 {
                held += 1;
            }
        }
        assert!(started.elapsed() < CLOSE_BOUND);
        // The good sender holds one slot; at most the other seven were accepted (and then
        // closed by the idle timeout), the rest refused or dropped at once.
        assert!(held < MAX, "{held} flood connections were held open");
        good.finish().await;
        // Every slot is free again: MAX connections at once, each served.
        exchange_on_all(addr, MAX).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn half_open_and_half_closed_connections() {
    bounded(async {
        let tls = TestTls::new("half-open");
        let server = TestServer::start(vec![hostile("lab"), tls.listener("tls")]).await;
        let (plain_addr, tls_addr) = (server.addr("lab"), server.addr("tls"));
        let good = GoodSender::spawn(server.connect("lab").await, "PLAIN");

        // Connected, silent: closed by the idle timeout (plain) and the handshake timeout (TLS).
        let silent_plain =
            tokio::spawn(async move { closed_within(&mut connect_nodelay(plain_addr).await.unwrap()).await });
        let silent_tls =
            tokio::spawn(async move { closed_within(&mut connect_nodelay(tls_addr).await.unwrap()).await });
        // Half a frame, then FIN: the server sees EOF inside a frame and closes.
        let mut half_frame = connect_nodelay(plain_addr).await.unwrap();
        let framed = frame(&message("HALF-1"));
        half_frame.write_all(&framed[..20]).await.unwrap();
        half_frame.shutdown().await.unwrap();
        // A whole message, then FIN: the ACK is still written before the server closes.
        let mut half_closed = connect_nodelay(plain_addr).await.unwrap();
        send(&mut half_closed, &message("HALF-2")).await;
        half_closed.shutdown().await.unwrap();
        // Half a frame, then a reset (SO_LINGER 0): the peer is simply gone.
        let socket = TcpSocket::new_v4().unwrap();
        // Deprecated for a non-zero linger, which blocks on drop; zero resets at once.
        #[allow(deprecated)]
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        let mut reset = socket.connect(plain_addr).await.unwrap();
        reset.set_nodelay(true).unwrap();
        reset.write_all(&framed[..20]).await.unwrap();
        drop(reset);

        assert_eq!(msa(&read_frame(&mut half_closed).await), ("AA".into(), "HALF-2".into()));
        expect_closed(&mut half_closed).await;
        expect_closed(&mut half_frame).await;
        let idle = silent_plain.await.unwrap();
        assert!(idle >= IDLE_TIMEOUT, "idle close after {idle:?}");
        let handshake = silent_tls.await.unwrap();
        assert!(handshake >= HANDSHAKE_TIMEOUT, "handshake close after {handshake:?}");
        good.finish().await;
        exchange_on_all(plain_addr, 4).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// A client that never reads

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_its_acks_is_closed_by_the_write_timeout() {
    bounded(async {
        let server = TestServer::start(vec![hostile("lab")]).await;
        let addr = server.addr("lab");
        let logs = Logs::capture();
        let good = GoodSender::spawn(server.connect("lab").await, "PLAIN");
        let readers: Vec<_> = (0..3).map(|i| tokio::spawn(never_reads(addr, i))).collect();
        for reader in readers {
            let closed_after = reader.await.unwrap();
            assert!(closed_after >= WRITE_TIMEOUT, "closed after {closed_after:?}");
        }
        logs.wait_for_n(&["connection closed", "reason=ACK not written within 1s"], 3).await;
        let report = good.finish().await;
        eprintln!("good sender: {report:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Garbage and probes

#[tokio::test(start_paused = true)]
async fn oversized_and_endless_frames_get_one_reject_and_leave_the_others_alone() {
    bounded(async {
        let server = TestServer::start(vec![hostile("lab")]).await;
        let addr = server.addr("lab");
        let good = GoodSender::spawn(server.connect("lab").await, "PLAIN");

        // One frame of 1 MiB (16 times the limit): AR, and the connection goes on.
        let mut conn = connect_nodelay(addr).await.unwrap();
        send(&mut conn, &oversized("BIG-1", 1024 * 1024)).await;
        let ack = read_frame(&mut conn).await;
        assert_eq!(msa(&ack), ("AR".into(), "BIG-1".into()));
        assert!(String::from_utf8_lossy(&ack).contains("max_message_size"));
        send(&mut conn, &message("AFTER-BIG")).await;
        assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "AFTER-BIG".into()));

        // A frame that never ends: one AR, then the frame timeout closes it.
        let (rejected, closed_after) = endless_frame(addr).await;
        assert!(rejected, "no AR for the endless frame");
        assert!(closed_after >= FRAME_TIMEOUT, "closed after {closed_after:?}");
        good.finish().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn random_bytes_and_scanner_probes_are_closed_on_both_ports() {
    bounded(async {
        let tls = TestTls::new("probes");
        let server = TestServer::start(vec![hostile("lab"), tls.listener("tls")]).await;
        let (plain_addr, tls_addr) = (server.addr("lab"), server.addr("tls"));
        let good_plain = GoodSender::spawn(server.connect("lab").await, "PLAIN");
        let good_tls = GoodSender::spawn(tls.connect(tls_addr).await, "TLS");

        let mut probes: Vec<(&str, SocketAddr, Vec<u8>)> = vec![
            ("TLS hello on the plain port", plain_addr, tls.client_hello()),
            ("TLS 1.0 hello on the plain port", plain_addr, tls10_client_hello()),
            ("HTTP on the plain port", plain_addr, b"GET / HTTP/1.1\r\nHost: hl7d\r\n\r\n".to_vec()),
            ("MLLP on the TLS port", tls_addr, frame(&message("PLAIN-ON-TLS"))),
            ("HTTP on the TLS port", tls_addr, b"OPTIONS * HTTP/1.0\r\n\r\n".to_vec()),
            ("SSLv2 hello on the TLS port", tls_addr, vec![0x80, 0x2E, 0x01, 0x00, 0x02, 0x00, 0x15]),
            (
                "TLS record of garbage",
                tls_addr,
                [&[0x16, 0x03, 0x03, 0x01, 0x00][..], &random_bytes(7, 256)].concat(),
            ),
        ];
        for seed in 1..=6u64 {
            let mut bytes = random_bytes(seed, 64 * 1024);
            if seed % 2 == 0 {
                // Past the first-byte check: random bytes inside and between frames.
                bytes[0] = 0x0B;
            }
            probes.push(("random bytes", plain_addr, bytes.clone()));
            probes.push(("random bytes", tls_addr, bytes));
        }
        let tasks: Vec<_> = probes
            .into_iter()
            .map(|(what, addr, bytes)| {
                tokio::spawn(async move {
                    let mut conn = connect_nodelay(addr).await.unwrap();
                    // The server may close before everything is written.
                    let _ = conn.write_all(&bytes).await;
                    let closed_after = drain_until_closed(&mut conn).await;
                    assert!(closed_after < CLOSE_BOUND, "{what}: still open after {closed_after:?}");
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }

        // A TLS 1.0 client on the TLS port is told why, with a protocol_version alert.
        let mut old = connect_nodelay(tls_addr).await.unwrap();
        old.write_all(&tls10_client_hello()).await.unwrap();
        let mut alert = [0u8; 7];
        timeout(WAIT, old.read_exact(&mut alert)).await.unwrap().unwrap();
        assert_eq!(alert, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]);
        expect_closed(&mut old).await;

        good_plain.finish().await;
        good_tls.finish().await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Everything at once

#[tokio::test(start_paused = true)]
async fn under_every_attack_at_once_good_senders_keep_their_acks_and_shutdown_is_clean() {
    bounded(async {
        const MAX: usize = 24;
        let tls = TestTls::new("storm");
        let mut plain = hostile("lab");
        plain.max_connections = MAX;
        let mut secure = tls.listener("tls");
        secure.max_connections = MAX;
        let mut server = TestServer::start(vec![plain, secure]).await;
        let (plain_addr, tls_addr) = (server.addr("lab"), server.addr("tls"));
        let good_plain = GoodSender::spawn(server.connect("lab").await, "PLAIN");
        let good_tls = GoodSender::spawn(tls.connect(tls_addr).await, "TLS");

        let mut attacks: Vec<JoinHandle<()>> = Vec::new();
        let hello = tls.client_hello();
        for _ in 0..5 {
            let hello = hello.clone();
            attacks.push(tokio::spawn(async move {
                trickle(tls_addr, hello, Duration::from_millis(250)).await;
            }));
            attacks.push(tokio::spawn(async move {
                trickle(plain_addr, frame(&message("STORM-SLOW")), Duration::from_millis(100)).await;
            }));
        }
        for i in 0..2 {
            attacks.push(tokio::spawn(async move {
                never_reads(plain_addr, i).await;
            }));
        }
        attacks.push(tokio::spawn(async move {
            endless_frame(plain_addr).await;
        }));
        for seed in 10..16u64 {
            let addr = if seed % 2 == 0 { plain_addr } else { tls_addr };
            attacks.push(tokio::spawn(async move {
                if let Ok(mut conn) = connect_nodelay(addr).await {
                    let _ = conn.write_all(&random_bytes(seed, 32 * 1024)).await;
                    drain_until_closed(&mut conn).await;
                }
            }));
        }
        // A flood on both ports: beyond max_connections together with the attacks above.
        for addr in [plain_addr, tls_addr] {
            attacks.push(tokio::spawn(async move {
                let mut flood = Vec::new();
                for _ in 0..40 {
                    if let Ok(conn) = connect_nodelay(addr).await {
                        flood.push(conn);
                    }
                }
                for mut conn in flood {
                    closed_within(&mut conn).await;
                }
            }));
        }
        // Oversized messages, each answered with AR on a connection that goes on.
        attacks.push(tokio::spawn(async move {
            let mut conn = None;
            for _ in 0..50 {
                // Slots may all be taken by the flood for a moment.
                let mut candidate = connect_nodelay(plain_addr).await.unwrap();
                let written = candidate.write_all(&frame(&oversized("STORM-BIG", 256 * 1024))).await;
                let mut byte = [0u8; 1];
                if written.is_err() {
                    // Refused while writing.
                } else if let Ok(Ok(1)) = timeout(ACK_BOUND, candidate.peek(&mut byte)).await {
                    conn = Some(candidate);
                    break;
                }
                sleep(Duration::from_millis(200)).await;
            }
            let mut conn = conn.expect("a slot for the oversized sender");
            assert_eq!(msa(&read_frame(&mut conn).await).0, "AR");
            send(&mut conn, &message("STORM-AFTER-BIG")).await;
            assert_eq!(msa(&read_frame(&mut conn).await).0, "AA");
        }));
        for attack in attacks {
            timeout(Duration::from_secs(45), attack).await.expect("every attack ends").unwrap();
        }
        let plain_report = good_plain.finish().await;
        let tls_report = good_tls.finish().await;
        eprintln!("good senders under attack: plain {plain_report:?}, TLS {tls_report:?}");

        // No slot leaked: all but the good senders' slots can be used at once.
        exchange_on_all(plain_addr, MAX).await;
        let abandoned = timeout(WAIT * 2, server.stop()).await.expect("shutdown ends");
        assert_eq!(abandoned, 0, "connections abandoned at shutdown");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A plaintext listener with the short limits above.
fn hostile(name: &str) -> ListenerConfig {
    let mut listener = plain(name);
    listener.idle_timeout = IDLE_TIMEOUT;
    listener.frame_timeout = FRAME_TIMEOUT;
    listener.write_timeout = WRITE_TIMEOUT;
    listener.max_message_size = MAX_MESSAGE_SIZE;
    listener.max_connections = 64;
    listener
}

/// A small original-mode message (AA on success).
fn message(control_id: &str) -> Vec<u8> {
    format!("MSH|^~\\&|GOOD|FAC|HL7D|FAC|20261128||ORU^R01^ORU_R01|{control_id}|P|2.5\rPID|1||{control_id}\r")
        .into_bytes()
}

/// A message of about `size` bytes with a readable MSH (so the reject echoes its id).
fn oversized(control_id: &str, size: usize) -> Vec<u8> {
    let mut payload = message(control_id);
    payload.extend_from_slice(b"OBX|1|ED|PDF||^AP^^Base64^");
    payload.extend(std::iter::repeat_n(b'A', size));
    payload.push(b'\r');
    payload
}

async fn bounded<F: Future<Output = ()>>(test: F) {
    timeout(TEST_LIMIT, test).await.expect("the test finished within its limit");
}

#[derive(Debug, Default)]
struct Report {
    acked: usize,
    /// On tokio's (paused) clock: moves only if the ACK waited for some timer.
    slowest: Duration,
    /// In real time.
    slowest_real: Duration,
}

/// A well-behaved sender on its own connection: one message at a time, each ACK checked and
/// required within [`ACK_BOUND`], until [`GoodSender::finish`].
struct GoodSender {
    stop: CancellationToken,
    task: JoinHandle<Report>,
}

impl GoodSender {
    fn spawn<S>(mut stream: S, label: &'static str) -> GoodSender
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut report = Report::default();
            let mut n = 0;
            while !token.is_cancelled() {
                let id = format!("{label}-{n}");
                let started = Instant::now();
                let started_real = std::time::Instant::now();
                send(&mut stream, &message(&id)).await;
                stream.flush().await.expect("flush");
                let ack = timeout(ACK_BOUND, read_frame(&mut stream))
                    .await
                    .unwrap_or_else(|_| panic!("{id}: no ACK within {ACK_BOUND:?}"));
                assert_eq!(msa(&ack), ("AA".to_string(), id));
                report.acked += 1;
                report.slowest = report.slowest.max(started.elapsed());
                report.slowest_real = report.slowest_real.max(started_real.elapsed());
                n += 1;
                sleep(PACE).await;
            }
            report
        });
        GoodSender { stop, task }
    }

    async fn finish(self) -> Report {
        self.stop.cancel();
        let report = self.task.await.expect("the good sender failed (see its panic above)");
        assert!(report.acked > 0, "the good sender got no ACK at all");
        assert!(report.slowest <= ACK_BOUND && report.slowest_real <= ACK_BOUND, "{report:?}");
        report
    }
}

/// Connects and sends `bytes` one at a time, `every` apart (cycling), until the server
/// closes; returns how long that took. Panics past [`CLOSE_BOUND`].
async fn trickle(addr: SocketAddr, bytes: Vec<u8>, every: Duration) -> Duration {
    trickle_on(connect_nodelay(addr).await.unwrap(), bytes, every).await
}

async fn trickle_on(mut conn: TcpStream, bytes: Vec<u8>, every: Duration) -> Duration {
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    let mut buf = [0u8; 1024];
    for n in 0.. {
        assert!(
            started.elapsed() < CLOSE_BOUND,
            "a trickling client is still connected after {CLOSE_BOUND:?}"
        );
        tokio::select! {
            read = conn.read(&mut buf) => match read {
                Ok(0) | Err(_) => return started.elapsed(),
                // An alert or a NACK: keep trickling until the server closes.
                Ok(_) => {}
            },
            _ = tick.tick() => {
                if conn.write_all(&[bytes[n % bytes.len()]]).await.is_err() {
                    return started.elapsed();
                }
            }
        }
    }
    unreachable!()
}

/// Waits (reading and discarding whatever arrives) until the server closes; how long that
/// took. Panics past [`CLOSE_BOUND`].
async fn closed_within(conn: &mut TcpStream) -> Duration {
    let closed_after = drain_until_closed(conn).await;
    assert!(closed_after < CLOSE_BOUND, "still open after {closed_after:?}");
    closed_after
}

async fn drain_until_closed(conn: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(CLOSE_BOUND, conn.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Pipelines messages with large ACKs (MSH-3 is echoed into the ACK's MSH-5) on a socket
/// with a small receive buffer and never reads; returns when the server has closed it.
async fn never_reads(addr: SocketAddr, n: usize) -> Duration {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    conn.set_nodelay(true).unwrap();
    let sender = "S".repeat(32 * 1024);
    let payload =
        format!("MSH|^~\\&|{sender}|FAC|HL7D|FAC|20261128||ORU^R01|DEAF-{n}|P|2.5\rPID|1\r").into_bytes();
    let framed = frame(&payload);
    let started = Instant::now();
    loop {
        let left = CLOSE_BOUND.saturating_sub(started.elapsed());
        match timeout(left, conn.write_all(&framed)).await {
            Err(_) => panic!("a client that never reads is still connected after {CLOSE_BOUND:?}"),
            Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(())) => {}
        }
    }
}

/// A start block and an MSH, then bytes without end for as long as the server reads them.
/// Returns whether an AR came back, and when the server closed.
async fn endless_frame(addr: SocketAddr) -> (bool, Duration) {
    let conn = connect_nodelay(addr).await.unwrap();
    let (mut reader, mut writer) = conn.into_split();
    let started = Instant::now();
    let acks = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match timeout(CLOSE_BOUND, reader.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return got,
            }
        }
    });
    let mut head = vec![0x0B];
    head.extend_from_slice(&message("ENDLESS")[..]);
    let chunk = vec![b'x'; 16 * 1024];
    let mut data = head;
    loop {
        assert!(started.elapsed() < CLOSE_BOUND, "an endless frame is still accepted after {CLOSE_BOUND:?}");
        if writer.write_all(&data).await.is_err() {
            break;
        }
        data.clone_from(&chunk);
        sleep(Duration::from_millis(1)).await;
    }
    let closed_after = started.elapsed();
    let got = acks.await.unwrap();
    let text = String::from_utf8_lossy(&got);
    (text.contains("MSA|AR|ENDLESS"), closed_after)
}

/// Holds `n` connections open at once, each served one message. Each sends its message
/// before the next one connects: `n` silent connections at once would be `n` pending ones,
/// and beyond `max_pending` the oldest of those is dropped to make room (issue 13 item 1).
async fn exchange_on_all(addr: SocketAddr, n: usize) {
    let mut conns = Vec::new();
    // A slot is released when its connection task ends, a moment after the close is seen.
    for attempt in 0.. {
        conns.clear();
        let mut served = 0;
        for i in 0..n {
            let mut conn = connect_nodelay(addr).await.unwrap();
            let id = format!("SLOT-{attempt}-{i}");
            if conn.write_all(&frame(&message(&id))).await.is_err() {
                break;
            }
            match timeout(ACK_BOUND, read_frame_or_none(&mut conn)).await {
                Ok(Some(ack)) => {
                    assert_eq!(msa(&ack).1, id);
                    served += 1;
                }
                _ => break,
            }
            conns.push(conn);
        }
        if served == n {
            return;
        }
        assert!(attempt < 20, "only {served} of {n} connections served: a slot leaked");
        sleep(Duration::from_millis(250)).await;
    }
}

/// Like `read_frame`, but `None` when the server closes first.
async fn read_frame_or_none(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
        if buf.len() >= 3 && buf.ends_with(&[0x1C, 0x0D]) {
            return Some(buf[1..buf.len() - 2].to_vec());
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// A TLS 1.0 ClientHello as an old scanner sends it (one suite, no extensions).
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01]; // client_version TLS 1.0
    body.extend_from_slice(&[0x5A; 32]); // random
    body.push(0x00); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2F]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    record
}

/// A CA, a server certificate for localhost in a temp dir, and a client trusting the CA.
struct TestTls {
    dir: TestDir,
    client: Arc<ClientConfig>,
}

impl TestTls {
    fn new(label: &str) -> TestTls {
        let dir = tempdir(&format!("hostile-{label}"));
        let ca = Ca::new(&format!("hostile test CA {label}"), Validity::days_from_now(30)).unwrap();
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let server = ca.issue(CertKind::Server, "server", &names, Validity::days_from_now(30)).unwrap();
        std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
        write_key(&dir.join("server.key"), &server.key_pem);
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert.der.clone())).unwrap();
        let client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        TestTls { dir, client: Arc::new(client) }
    }

    fn listener(&self, name: &str) -> ListenerConfig {
        let mut listener = hostile(name);
        listener.transport = Transport::Tls(TlsConfig {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
            min_version: TlsVersion::Tls12,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            client_auth: ClientAuth::None,
        });
        listener
    }

    async fn connect(&self, addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = connect_nodelay(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(self.client.clone()).connect(name, tcp).await.expect("TLS handshake")
    }

    /// The first flight of a real client: its ClientHello record(s).
    fn client_hello(&self) -> Vec<u8> {
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(self.client.clone(), name).unwrap();
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        out
    }
}
