//! The listener over plain TCP: ordering, reconnects, framing, ACK policies, limits, shutdown.
//!
//! Tests that wait for a timeout run on tokio's paused clock (`start_paused`): real loopback
//! I/O, but the clock moves only when every task waits, straight to the next timer.

use std::sync::Arc;
use std::time::Duration;

use hl7_proto::ack::AckPolicy;
use hl7_proto::mllp::Framing;
use hl7d::store::{Appended, BoxFuture, MessageStore, NewMessage, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::support::*;

fn numbered(i: usize) -> Vec<u8> {
    format!("MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ORU^R01^ORU_R01|N{i}|P|2.5\rPID|1||{i}\r").into_bytes()
}

#[tokio::test]
async fn many_messages_on_one_connection_in_order() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let mut conn = server.connect("lab").await;
    for i in 0..200 {
        send(&mut conn, &numbered(i)).await;
        let (code, control) = msa(&read_frame(&mut conn).await);
        assert_eq!((code.as_str(), control), ("AA", format!("N{i}")));
    }
    assert_eq!(server.store.accepted(), 200);
}

#[tokio::test]
async fn pipelined_messages_get_acks_in_order() {
    // A sender that writes several messages before reading: ACKs come back in order.
    let server = TestServer::start(vec![plain("lab")]).await;
    let mut conn = server.connect("lab").await;
    let mut burst = Vec::new();
    for i in 0..50 {
        burst.extend(frame(&numbered(i)));
    }
    conn.write_all(&burst).await.unwrap();
    for i in 0..50 {
        assert_eq!(msa(&read_frame(&mut conn).await).1, format!("N{i}"));
    }
}

#[tokio::test]
async fn one_message_per_connection() {
    let server = TestServer::start(vec![plain("lab")]).await;
    for i in 0..20 {
        let mut conn = server.connect("lab").await;
        send(&mut conn, &numbered(i)).await;
        assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), format!("N{i}")));
    }
}

#[tokio::test]
async fn frames_split_byte_by_byte_and_with_junk_between() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let mut conn = server.connect("lab").await;
    let mut stream = frame(&fixture("adt_a01_v25.hl7"));
    stream.extend_from_slice(b"\r\n\0");
    stream.extend(frame(&fixture("orm_o01_v23.hl7")));
    for byte in &stream {
        conn.write_all(std::slice::from_ref(byte)).await.unwrap();
    }
    assert_eq!(msa(&read_frame(&mut conn).await), ("CA".into(), "MSG00001".into()));
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "ORM-55-0001".into()));
}

#[tokio::test]
async fn large_message_in_many_writes() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let mut conn = server.connect("lab").await;
    let framed = frame(&fixture("mdm_t02_v25_base64_200k.hl7"));
    for chunk in framed.chunks(1000) {
        conn.write_all(chunk).await.unwrap();
    }
    assert_eq!(msa(&read_frame(&mut conn).await), ("CA".into(), "MDM-7001".into()));
}

/// What the listener answers to each MSH-15 sample under each policy on success.
// Paused: "nothing written" means nothing by the time the server had nothing left to do.
#[tokio::test(start_paused = true)]
async fn ack_policies_against_msh15() {
    let cases: &[(&str, &str, [Option<&str>; 3])] = &[
        // file, control id, [msh, always, never]
        ("enhanced_al_al.hl7", "ENH-AL-1", [Some("CA"), Some("CA"), None]),
        ("enhanced_ne_ne.hl7", "ENH-NE-1", [None, Some("CA"), None]),
        ("enhanced_er_ne.hl7", "ENH-ER-1", [None, Some("CA"), None]),
        ("enhanced_su_ne.hl7", "ENH-SU-1", [Some("CA"), Some("CA"), None]),
        ("adt_a04_v231_original_mode.hl7", "CTRL-20261105-0001", [Some("AA"), Some("AA"), None]),
    ];
    let mut listeners = Vec::new();
    for (name, policy) in
        [("msh", AckPolicy::Msh), ("always", AckPolicy::Always), ("never", AckPolicy::Never)]
    {
        let mut l = plain(name);
        l.ack = policy;
        listeners.push(l);
    }
    let server = TestServer::start(listeners).await;
    for (p, policy) in ["msh", "always", "never"].iter().enumerate() {
        let mut conn = server.connect(policy).await;
        for (file, control_id, expected) in cases {
            send(&mut conn, &fixture(file)).await;
            if let Some(code) = expected[p] {
                let got = msa(&read_frame(&mut conn).await);
                assert_eq!(got, (code.to_string(), control_id.to_string()), "{policy} {file}");
            }
        }
        // A marker message proves nothing else was written for the unanswered ones: the
        // next bytes on the wire are the marker's ACK (policy never: no bytes at all).
        send(&mut conn, &fixture("orm_o01_v23.hl7")).await;
        if *policy == "never" {
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await;
            assert!(read.is_err(), "ack = never wrote something");
        } else {
            assert_eq!(msa(&read_frame(&mut conn).await).1, "ORM-55-0001", "{policy}");
        }
    }
    // Messages are received even when not answered.
    assert_eq!(server.store.accepted(), 18);
}

#[tokio::test]
async fn er_mode_answers_a_rejected_message() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let mut conn = server.connect("lab").await;
    send(&mut conn, b"MSH|^~\\&|A|B|C|D|1||ADT^A08|ER-BAD|P||||ER|NE\r").await;
    let ack = read_frame(&mut conn).await;
    assert_eq!(msa(&ack), ("CR".into(), "ER-BAD".into()));
    assert!(String::from_utf8_lossy(&ack).contains("ERR||MSH^1^12|101^"));
}

#[tokio::test]
async fn unparseable_messages_get_ar_and_the_connection_stays() {
    let server = TestServer::start(vec![plain("lab")]).await;
    let mut conn = server.connect("lab").await;
    for (file, control) in [
        ("invalid_not_hl7.txt", ""),
        ("invalid_missing_control_id.hl7", ""),
        ("invalid_no_msh_first.hl7", "X1"),
    ] {
        send(&mut conn, &fixture(file)).await;
        let ack = read_frame(&mut conn).await;
        assert_eq!(msa(&ack), ("AR".into(), control.into()), "{file}");
        assert!(String::from_utf8_lossy(&ack).contains("\rERR|"), "{file}");
    }
    send(&mut conn, &numbered(1)).await;
    assert_eq!(msa(&read_frame(&mut conn).await).0, "AA");
    assert_eq!(server.store.accepted(), 1);
}

#[tokio::test]
async fn oversize_message_gets_ar_then_the_connection_continues() {
    let mut l = plain("lab");
    l.max_message_size = 4096;
    let server = TestServer::start(vec![l]).await;
    let mut conn = server.connect("lab").await;
    let mut big = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|BIG-1|P|2.5\rNTE|1||".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10_000));
    big.push(b'\r');
    send(&mut conn, &big).await;
    let ack = read_frame(&mut conn).await;
    assert_eq!(msa(&ack), ("AR".into(), "BIG-1".into()));
    assert!(String::from_utf8_lossy(&ack).contains("max_message_size"));
    // Issue 12: ERR-3 was 207 "application internal error", which blames the receiver.
    let read = hl7_proto::ack::ReceivedAck::parse(&ack).expect("an ACK");
    assert_eq!(read.error_codes().collect::<Vec<_>>(), [104], "{}", String::from_utf8_lossy(&ack));
    assert!(String::from_utf8_lossy(&ack).contains("|104^Value too long^HL70357|"));
    send(&mut conn, &numbered(2)).await;
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "N2".into()));
    assert_eq!(server.store.accepted(), 1);
}

#[tokio::test]
async fn end_block_without_cr_strict_and_lenient() {
    let mut lenient = plain("lenient");
    lenient.lenient_framing = true;
    let server = TestServer::start(vec![plain("strict"), lenient]).await;

    let mut conn = server.connect("strict").await;
    let mut raw = vec![0x0B];
    raw.extend(numbered(1));
    raw.push(0x1C);
    raw.push(0x0B); // the next frame starts without the CR
    raw.extend(numbered(2));
    raw.extend([0x1C, 0x0D]);
    conn.write_all(&raw).await.unwrap();
    assert_eq!(msa(&read_frame(&mut conn).await), ("AR".into(), "N1".into()));
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "N2".into()));

    let mut conn = server.connect("lenient").await;
    let mut raw = vec![0x0B];
    raw.extend(numbered(3));
    raw.push(0x1C);
    conn.write_all(&raw).await.unwrap();
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".into(), "N3".into()));
}

#[tokio::test]
async fn custom_framing_bytes() {
    let mut l = plain("custom");
    l.framing = Framing::new(&[0x02], &[0x03, 0x0D, 0x0A]).unwrap();
    let server = TestServer::start(vec![l]).await;
    let mut conn = server.connect("custom").await;
    let mut raw = vec![0x02];
    raw.extend(numbered(7));
    raw.extend([0x03, 0x0D, 0x0A]);
    conn.write_all(&raw).await.unwrap();
    let ack = read_frame_with(&mut conn, &[0x02], &[0x03, 0x0D, 0x0A]).await;
    assert_eq!(msa(&ack), ("AA".into(), "N7".into()));
}

#[tokio::test]
async fn not_mllp_is_closed_at_once() {
    let server = TestServer::start(vec![plain("lab")]).await;
    for probe in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
        b"MSH|^~\\&|bare\r",
    ] {
        let mut conn = server.connect("lab").await;
        conn.write_all(probe).await.unwrap();
        expect_closed(&mut conn).await;
    }
    // The listener still serves.
    let mut conn = server.connect("lab").await;
    send(&mut conn, &numbered(1)).await;
    assert_eq!(msa(&read_frame(&mut conn).await).0, "AA");
}

#[tokio::test(start_paused = true)]
async fn idle_connection_is_closed_and_the_sender_can_reconnect() {
    const IDLE: Duration = Duration::from_secs(1);
    let logs = Logs::capture();
    let mut l = plain("lab");
    l.idle_timeout = IDLE;
    let server = TestServer::start(vec![l]).await;
    let mut conn = server.connect("lab").await;
    let peer = conn.local_addr().unwrap();
    send(&mut conn, &numbered(1)).await;
    read_frame(&mut conn).await;
    // Half the idle time later, a second message: the idle time counts from that one, not
    // from the first or from the connect.
    tokio::time::sleep(IDLE / 2).await;
    let started = Instant::now();
    send(&mut conn, &numbered(2)).await;
    read_frame(&mut conn).await;
    expect_closed(&mut conn).await;
    let waited = started.elapsed();
    assert!(waited >= IDLE, "closed {waited:?} after the message, before the idle timeout");
    assert!(waited < 2 * IDLE, "closed only {waited:?} after the message");
    logs.wait_for(&["connection closed", &format!("peer={peer}"), "reason=idle for"]).await;
    let mut again = server.connect("lab").await;
    send(&mut again, &numbered(3)).await;
    assert_eq!(msa(&read_frame(&mut again).await).1, "N3");
}

#[tokio::test(start_paused = true)]
async fn stalled_frame_is_closed_by_the_frame_timeout() {
    const FRAME: Duration = Duration::from_secs(1);
    let logs = Logs::capture();
    let mut l = plain("lab");
    l.frame_timeout = FRAME;
    // Far longer: only the frame timeout can end this connection in time.
    l.idle_timeout = Duration::from_secs(60);
    let server = TestServer::start(vec![l]).await;
    let mut conn = server.connect("lab").await;
    let peer = conn.local_addr().unwrap();
    send(&mut conn, &numbered(1)).await;
    read_frame(&mut conn).await;
    // Half the frame time later, half a frame: the frame time counts from its first byte,
    // not from the message before or from the connect.
    tokio::time::sleep(FRAME / 2).await;
    let started = Instant::now();
    conn.write_all(b"\x0bMSH|^~\\&|half a message").await.unwrap();
    expect_closed(&mut conn).await;
    let waited = started.elapsed();
    assert!(waited >= FRAME, "closed {waited:?} after the frame began, before the frame timeout");
    assert!(waited < 2 * FRAME, "closed only {waited:?} after the frame began");
    logs.wait_for(&["connection closed", &format!("peer={peer}"), "reason=frame not completed within 1s"])
        .await;
    assert_eq!(server.store.accepted(), 1);
}

#[tokio::test]
async fn allow_ips_refuses_other_addresses_before_reading() {
    let mut l = plain("lab");
    l.allow_ips = vec!["127.0.0.1/32".parse().unwrap()];
    let server = TestServer::start(vec![l]).await;
    let addr = server.addr("lab");

    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).expect("bind 127.0.0.2 (loopback range)");
    let mut refused = socket.connect(addr).await.unwrap();
    // Write may or may not fail depending on timing; the connection must end unanswered.
    let _ = refused.write_all(&frame(&numbered(1))).await;
    expect_closed(&mut refused).await;

    let mut allowed = TcpStream::connect(addr).await.unwrap();
    send(&mut allowed, &numbered(2)).await;
    assert_eq!(msa(&read_frame(&mut allowed).await).1, "N2");
    assert_eq!(server.store.accepted(), 1);
}

#[tokio::test]
async fn max_connections_refuses_the_next_and_keeps_the_others() {
    let mut l = plain("lab");
    l.max_connections = 2;
    let server = TestServer::start(vec![l]).await;
    let mut first = server.connect("lab").await;
    let mut second = server.connect("lab").await;
    // Make sure both are accepted and being served.
    for (i, conn) in [&mut first, &mut second].into_iter().enumerate() {
        send(conn, &numbered(i)).await;
        read_frame(conn).await;
    }
    let mut third = server.connect("lab").await;
    expect_closed(&mut third).await;
    send(&mut first, &numbered(10)).await;
    assert_eq!(msa(&read_frame(&mut first).await).1, "N10");
    // A slot frees when a connection leaves.
    drop(second);
    let mut fourth = None;
    for _ in 0..50 {
        let mut conn = server.connect("lab").await;
        conn.write_all(&frame(&numbered(11))).await.unwrap();
        let mut byte = [0u8; 1];
        match tokio::time::timeout(WAIT, conn.peek(&mut byte)).await {
            Ok(Ok(1)) => {
                fourth = Some(conn);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut fourth = fourth.expect("a slot frees after a connection closes");
    assert_eq!(msa(&read_frame(&mut fourth).await).1, "N11");
}

#[tokio::test]
async fn one_connection_error_does_not_affect_another() {
    let mut l = plain("lab");
    l.max_message_size = 2048;
    let server = TestServer::start(vec![l]).await;
    let mut good = server.connect("lab").await;
    let mut bad = server.connect("lab").await;
    bad.write_all(&[0x0B; 1]).await.unwrap();
    bad.write_all(&vec![b'z'; 50_000]).await.unwrap();
    for i in 0..10 {
        send(&mut good, &numbered(i)).await;
        assert_eq!(msa(&read_frame(&mut good).await).1, format!("N{i}"));
    }
    drop(bad);
    send(&mut good, &numbered(99)).await;
    assert_eq!(msa(&read_frame(&mut good).await).1, "N99");
}

#[tokio::test]
async fn several_listeners_in_one_process_keep_their_own_policies() {
    let mut windows = plain("windows");
    windows.encoding = hl7_proto::charset::Charset::Windows1252;
    windows.force_encoding = true;
    let server = TestServer::start(vec![plain("utf8"), windows]).await;
    assert_ne!(server.addr("utf8").port(), server.addr("windows").port());
    // MSH-18 says UNICODE UTF-8; the forced profile still answers (in Windows-1252).
    let mut conn = server.connect("windows").await;
    send(&mut conn, &fixture("utf8_multilingual_adt_a08.hl7")).await;
    assert_eq!(msa(&read_frame(&mut conn).await), ("CA".into(), "UTF8-0001".into()));
    // An unsupported MSH-18 is rejected on the honouring profile.
    let mut conn = server.connect("utf8").await;
    send(&mut conn, b"MSH|^~\\&|A|B|C|D|1||ADT^A01|U16|P|2.5||||||UNICODE UTF-16\r").await;
    assert_eq!(msa(&read_frame(&mut conn).await), ("AR".into(), "U16".into()));
}

// Paused: each sleep lasts until the server has done all it can with what it was sent.
#[tokio::test(start_paused = true)]
async fn graceful_shutdown_finishes_the_message_in_flight() {
    let mut server = TestServer::start(vec![plain("lab")]).await;
    let mut idle = server.connect("lab").await;
    let mut busy = server.connect("lab").await;
    send(&mut idle, &numbered(1)).await;
    read_frame(&mut idle).await;
    // Half a frame, then shutdown, then the rest.
    let framed = frame(&numbered(2));
    let (head, tail) = framed.split_at(20);
    busy.write_all(head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = server.store.clone();
    let stopping = tokio::spawn(async move { server.stop().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    expect_closed(&mut idle).await;
    busy.write_all(tail).await.unwrap();
    assert_eq!(msa(&read_frame(&mut busy).await), ("AA".into(), "N2".into()));
    expect_closed(&mut busy).await;
    let abandoned = tokio::time::timeout(WAIT, stopping).await.expect("shutdown completes").unwrap();
    assert_eq!(abandoned, 0);
    assert_eq!(store.accepted(), 2);
}

/// A store whose append panics: the connection task that calls it dies by a panic.
struct PanickingStore;

impl MessageStore for PanickingStore {
    fn append(&self, _message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        panic!("injected panic in MessageStore::append (expected by this test)");
    }
}

/// `hl7d_connections_open{listener}` as `/metrics` would show it now.
fn open_connections(listener: &str) -> Option<f64> {
    let scrape = hl7d::metrics::render(&[], std::time::SystemTime::now());
    let series = format!("{}{{listener=\"{listener}\"}} ", hl7d::metrics::CONNECTIONS_OPEN);
    scrape.lines().find_map(|line| line.strip_prefix(&series)?.parse().ok())
}

/// Regression: the gauge was decremented after the connection's `.await`, which a panic
/// never reaches, so every panicked connection stayed "open" for ever.
#[tokio::test]
async fn open_connections_gauge_comes_back_after_a_connection_task_panics() {
    // The recorder must be in place before the listener registers its metrics.
    hl7d::metrics::install();
    let name = "gauge-panic";
    let server = start_with_store(vec![plain(name)], Arc::new(PanickingStore)).await;
    let addr = server.local_addr(name).unwrap();
    let before = open_connections(name).unwrap_or(0.0);

    let mut conn = TcpStream::connect(addr).await.unwrap();
    send(&mut conn, &numbered(1)).await;
    expect_closed(&mut conn).await;
    // The listener survives the panic and a second connection is counted while it lives.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(b"\r\n").await.unwrap();
    let counted = wait_for_gauge(name, |open| open == before + 1.0).await;
    assert!(counted, "the live connection is counted (gauge {:?})", open_connections(name));
    drop(second);

    let back = wait_for_gauge(name, |open| open == before).await;
    assert!(back, "gauge back to {before} after the panic, is {:?}", open_connections(name));
    server.shutdown(WAIT).await;
}

/// Polls the gauge (every 10 ms, at most [`WAIT`]) until `done` holds.
async fn wait_for_gauge(listener: &str, done: impl Fn(f64) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if open_connections(listener).is_some_and(&done) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
