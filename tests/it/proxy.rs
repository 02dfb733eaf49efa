//! Behind a load balancer (issue 16): a `proxy_protocol` listener on loopback, with PROXY v1
//! and v2 headers built by hand. The client named in the header is the peer everywhere: the
//! store's `peer` column, logs and audit, `allow_ips`, `max_connections_per_ip`; connections
//! from outside `proxy_from`, without a valid header, or too slow with it are refused with
//! an audit line; a `LOCAL` header (a health check) is closed quietly; TLS follows the
//! header. The same against a real HAProxy is in `haproxy.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hl7d::config::{ClientAuth, ListenerConfig, ProxyProtocol, TlsConfig, TlsVersion, Transport};
use hl7d::store::{Filter, Reader};
use hl7d::tls::pki::{Ca, CertKind, Validity};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::store::{exchange, open_store, original};
use crate::support::*;

/// A plaintext listener on 127.0.0.1:0 that takes connections from `from` only, each with
/// a PROXY header.
fn proxied(name: &str, from: &[&str]) -> ListenerConfig {
    let mut listener = plain(name);
    listener.proxy = Some(ProxyProtocol { from: from.iter().map(|net| net.parse().unwrap()).collect() });
    listener
}

/// `PROXY TCP4|TCP6 <client> <server> <port> 2575\r\n`.
fn v1(client: SocketAddr) -> Vec<u8> {
    let (family, server) = if client.is_ipv4() { ("TCP4", "127.0.0.1") } else { ("TCP6", "::1") };
    format!("PROXY {family} {} {server} {} 2575\r\n", client.ip(), client.port()).into_bytes()
}

/// A v2 header: `command` 0x1 PROXY (with `client`'s addresses over TCP) or 0x0 LOCAL.
fn v2(command: u8, client: SocketAddr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\x00\r\nQUIT\n".to_vec();
    out.push(0x20 | command);
    let mut rest = Vec::new();
    match client.ip() {
        IpAddr::V4(ip) => {
            out.push(0x11);
            rest.extend_from_slice(&ip.octets());
            rest.extend_from_slice(&[127, 0, 0, 1]);
        }
        IpAddr::V6(ip) => {
            out.push(0x21);
            rest.extend_from_slice(&ip.octets());
            rest.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        }
    }
    rest.extend_from_slice(&client.port().to_be_bytes());
    rest.extend_from_slice(&2575u16.to_be_bytes());
    out.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    out.extend_from_slice(&rest);
    out
}

/// Connects to `addr` as a load balancer would and writes `header`.
async fn through_proxy(addr: SocketAddr, header: &[u8]) -> TcpStream {
    let mut stream = connect_nodelay(addr).await.expect("connect");
    stream.write_all(header).await.expect("write the header");
    stream
}

fn client(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn the_client_in_a_v1_or_v2_header_is_the_peer_in_the_store_and_the_audit_trail() {
    let dir = tempdir("proxy-peer");
    let audit = AuditCapture::start(&dir);
    let store_dir = dir.join("data");
    let store = open_store(&store_dir);
    let server = start_with_store(vec![proxied("lab", &["127.0.0.1/32"])], store).await;
    let addr = server.local_addr("lab").unwrap();

    // The header and the first frame in one write: the header step must leave the frame.
    let mut bytes = v1(client("192.0.2.7:51234"));
    bytes.extend_from_slice(&frame(&original("PX-1")));
    let mut conn = through_proxy(addr, &bytes).await;
    assert_eq!(msa(&read_frame(&mut conn).await), ("AA".to_owned(), "PX-1".to_owned()));
    let proxy = conn.local_addr().unwrap().to_string();
    let opened = audit.wait_for(&[("event", "connection_accepted"), ("peer", "192.0.2.7:51234")]).await;
    assert_eq!(opened["proxy"], proxy.as_str(), "{opened}");
    drop(conn);

    // v2, an IPv6 client, the header written a few bytes at a time.
    let v2_client = client("[2001:db8::7]:443");
    let header = v2(0x1, v2_client);
    let mut conn = connect_nodelay(addr).await.unwrap();
    for piece in header.chunks(5) {
        conn.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(exchange(&mut conn, &original("PX-2")).await.0, "AA");
    drop(conn);

    let rows =
        Reader::open(&store_dir).unwrap().list(&Filter { oldest_first: true, ..Filter::default() }).unwrap();
    let peers: Vec<(&str, &str)> =
        rows.iter().map(|row| (row.control_id.as_str(), row.peer.as_str())).collect();
    assert_eq!(peers, [("PX-1", "192.0.2.7:51234"), ("PX-2", "[2001:db8::7]:443")]);
    // The proxy's own address is in no peer column.
    assert!(rows.iter().all(|row| !row.peer.starts_with("127.0.0.1")));
}

#[tokio::test]
async fn allow_ips_applies_to_the_client_not_to_the_proxy() {
    let dir = tempdir("proxy-allow");
    let audit = AuditCapture::start(&dir);
    let mut listener = proxied("lab", &["127.0.0.1/32"]);
    // The proxy (127.0.0.1) is not in it: only clients are checked.
    listener.allow_ips = vec!["192.0.2.0/24".parse().unwrap()];
    let server = TestServer::start(vec![listener]).await;
    let addr = server.addr("lab");

    let mut refused = through_proxy(addr, &v1(client("198.51.100.7:4000"))).await;
    let _ = refused.write_all(&frame(&original("PX-NO"))).await;
    expect_closed(&mut refused).await;
    let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "ip_not_allowed")]).await;
    assert_eq!(line["peer"], "198.51.100.7:4000");
    assert_eq!(line["proxy"], refused.local_addr().unwrap().to_string().as_str());

    let mut allowed = through_proxy(addr, &v2(0x1, client("192.0.2.9:4000"))).await;
    assert_eq!(exchange(&mut allowed, &original("PX-YES")).await.0, "AA");
    assert_eq!((server.store.accepted(), server.store.refused()), (1, 0));
}

#[tokio::test]
async fn max_connections_per_ip_counts_the_client_behind_the_proxy() {
    let dir = tempdir("proxy-per-ip");
    let audit = AuditCapture::start(&dir);
    let mut listener = proxied("lab", &["127.0.0.1/32"]);
    listener.max_connections_per_ip = 2;
    let server = TestServer::start(vec![listener]).await;
    let addr = server.addr("lab");

    // Every connection comes from 127.0.0.1; two clients behind it, two connections each.
    let mut held = Vec::new();
    for (i, who) in
        ["192.0.2.7:1000", "192.0.2.7:1001", "192.0.2.8:1000", "192.0.2.8:1001"].iter().enumerate()
    {
        let mut conn = through_proxy(addr, &v1(client(who))).await;
        assert_eq!(exchange(&mut conn, &original(&format!("PI-{i}"))).await.0, "AA", "{who}");
        held.push(conn);
    }
    let mut third = through_proxy(addr, &v1(client("192.0.2.7:1002"))).await;
    expect_closed(&mut third).await;
    let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "max_connections_per_ip")]).await;
    assert_eq!(line["peer"], "192.0.2.7:1002");
    assert_eq!(line["max_connections_per_ip"], 2);
    // A third client still gets in through the same proxy, and a client that leaves frees
    // its place.
    let mut other = through_proxy(addr, &v1(client("192.0.2.9:1000"))).await;
    assert_eq!(exchange(&mut other, &original("PI-9")).await.0, "AA");
    drop(held.remove(0));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = through_proxy(addr, &v1(client("192.0.2.7:1003"))).await;
        send(&mut again, &original("PI-AGAIN")).await;
        let mut buf = [0u8; 1];
        match tokio::time::timeout(WAIT, again.read(&mut buf)).await.unwrap() {
            Ok(1) => break,
            // Refused while the server had not yet seen the first connection close.
            _ => assert!(tokio::time::Instant::now() < deadline, "the freed place was never given back"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_from_outside_proxy_from_is_refused_before_its_header_is_read() {
    let dir = tempdir("proxy-not-from");
    let audit = AuditCapture::start(&dir);
    let server = TestServer::start(vec![proxied("lab", &["192.0.2.1/32", "2001:db8::1/128"])]).await;
    // Even with a valid header: 127.0.0.1 is not a listed load balancer.
    let mut conn = through_proxy(server.addr("lab"), &v1(client("192.0.2.7:4000"))).await;
    let _ = conn.write_all(&frame(&original("PX-DIRECT"))).await;
    expect_closed(&mut conn).await;
    let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "not_from_proxy")]).await;
    assert_eq!(line["peer"], conn.local_addr().unwrap().to_string().as_str(), "the socket's address");
    assert_eq!(server.store.accepted() + server.store.refused(), 0);
}

#[tokio::test]
async fn a_missing_or_broken_header_is_refused_and_says_what_was_wrong() {
    let dir = tempdir("proxy-bad");
    let audit = AuditCapture::start(&dir);
    let server = TestServer::start(vec![proxied("lab", &["127.0.0.1/32"])]).await;
    let addr = server.addr("lab");

    // A sender that connects directly: its MLLP frame is not a header (and is not quoted).
    let mut direct = through_proxy(addr, &frame(&original("PX-DIRECT"))).await;
    expect_closed(&mut direct).await;
    let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "proxy_header_missing")]).await;
    let detail = line["detail"].as_str().unwrap();
    assert_eq!(detail, "no PROXY header: the connection starts with plaintext MLLP (first byte 0x0B)");
    assert!(!audit.text().contains("PX-DIRECT"), "message bytes in the audit trail");

    // A v1 header with a bad address: named, with the header's text.
    let mut bad = through_proxy(addr, b"PROXY TCP4 192.0.2.300 127.0.0.1 4000 2575\r\n").await;
    expect_closed(&mut bad).await;
    let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "proxy_header_invalid")]).await;
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("malformed PROXY v1 header: invalid source address in \"PROXY TCP4 192.0.2.300"),
        "{detail}"
    );

    // A v2 header announcing more than the cap: refused from its first 16 bytes.
    let mut huge = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    huge.extend_from_slice(&[0; 64]);
    let mut conn = through_proxy(addr, &huge).await;
    expect_closed(&mut conn).await;
    audit.wait_for(&[("event", "connection_refused"), ("detail", &format!(
        "PROXY v2 header of 65551 bytes: at most {} are accepted (TLVs at most {} bytes; send fewer proxy-v2-options)",
        hl7d::proxy_header::V2_MAX_LEN, hl7d::proxy_header::V2_MAX_TLVS
    ))]).await;

    // A header cut short by the peer.
    let mut cut = through_proxy(addr, b"PROXY TCP4 192.0.2.7").await;
    cut.shutdown().await.unwrap();
    expect_closed(&mut cut).await;
    audit
        .wait_for(&[
            ("event", "connection_refused"),
            ("detail", "connection closed after 20 bytes of a PROXY header"),
        ])
        .await;
    assert_eq!(server.store.accepted() + server.store.refused(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_header_not_sent_in_time_is_refused() {
    let logs = Logs::capture();
    let mut listener = proxied("lab", &["127.0.0.1/32"]);
    // Plaintext: the header has the default handshake time (10 s), at most idle_timeout.
    listener.idle_timeout = Duration::from_secs(2);
    let server = TestServer::start(vec![listener]).await;
    let started = tokio::time::Instant::now();
    let mut conn = through_proxy(server.addr("lab"), b"PROXY TCP4 ").await;
    expect_closed(&mut conn).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(5), "closed after {waited:?}");
    logs.wait_for(&[
        "connection refused",
        "proxy_header_timeout",
        "no whole PROXY header within 2s (11 bytes received)",
    ])
    .await;
}

#[tokio::test]
async fn a_local_header_is_a_health_check_closed_quietly() {
    // Every level, audit events included.
    let logs = Logs::capture();
    let server = TestServer::start(vec![proxied("lab", &["127.0.0.1/32"])]).await;
    let addr = server.addr("lab");
    for header in [v2(0x0, client("127.0.0.1:0")), b"PROXY UNKNOWN\r\n".to_vec(), Vec::new()] {
        let mut check = through_proxy(addr, &header).await;
        if header.is_empty() {
            // A TCP check: connect and close without a byte.
            check.shutdown().await.unwrap();
        }
        expect_closed(&mut check).await;
    }
    logs.wait_for_n(&["PROXY header without a client (health check): closing"], 2).await;
    logs.wait_for(&["connection closed before sending data (health check?)"]).await;
    // Then a real connection: the server is not put off by them.
    let mut conn = through_proxy(addr, &v1(client("192.0.2.7:4000"))).await;
    assert_eq!(exchange(&mut conn, &original("PX-AFTER")).await.0, "AA");
    logs.wait_for(&["connection opened", "peer=192.0.2.7:4000"]).await;
    assert_eq!(logs.count(&["refused"]), 0, "{}", logs.text());
    assert_eq!(server.store.accepted(), 1);
}

#[tokio::test]
async fn tls_follows_the_header_and_the_client_is_the_peer() {
    let dir = tempdir("proxy-tls");
    let audit = AuditCapture::start(&dir);
    let ca = Ca::new("proxy test CA", Validity::days_from_now(30)).unwrap();
    let names = ["localhost".to_owned()];
    let server_cert = ca.issue(CertKind::Server, "server", &names, Validity::days_from_now(30)).unwrap();
    std::fs::write(dir.join("server.pem"), &server_cert.cert_pem).unwrap();
    write_key(&dir.join("server.key"), &server_cert.key_pem);
    let mut listener = proxied("tls", &["127.0.0.1/32"]);
    listener.transport = Transport::Tls(TlsConfig {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        min_version: TlsVersion::Tls12,
        handshake_timeout: Duration::from_secs(10),
        client_auth: ClientAuth::None,
    });
    let store_dir = dir.join("data");
    let server = start_with_store(vec![listener], open_store(&store_dir)).await;
    let addr = server.local_addr("tls").unwrap();

    let tcp = through_proxy(addr, &v2(0x1, client("192.0.2.7:51234"))).await;
    let config = tls_client_config(&ca, None, &[&rustls::version::TLS13]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls =
        TlsConnector::from(config).connect(name, tcp).await.expect("the handshake after the header");
    send(&mut tls, &original("PX-TLS")).await;
    assert_eq!(msa(&read_frame(&mut tls).await), ("AA".to_owned(), "PX-TLS".to_owned()));
    let opened = audit.wait_for(&[("event", "connection_accepted"), ("tls_version", "TLSv1.3")]).await;
    assert_eq!(opened["peer"], "192.0.2.7:51234");
    let rows = Reader::open(&store_dir).unwrap().list(&Filter::default()).unwrap();
    assert_eq!(rows.iter().map(|row| row.peer.as_str()).collect::<Vec<_>>(), ["192.0.2.7:51234"]);

    // A TLS client that skips the load balancer: refused, its hello named.
    let config = tls_client_config(&ca, None, &[&rustls::version::TLS13]);
    let tcp = connect_nodelay(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(TlsConnector::from(config).connect(name, tcp).await.is_err());
    let line = audit.wait_for(&[("event", "connection_refused"), ("reason", "proxy_header_missing")]).await;
    assert_eq!(line["detail"], "no PROXY header: the connection starts with TLS handshake (first byte 0x16)");
}

/// The usual mistake, HAProxy sending headers to a listener without `proxy_protocol`: the
/// close line says what came.
#[tokio::test]
async fn a_header_on_a_listener_without_proxy_protocol_is_named() {
    let logs = Logs::capture();
    let server = TestServer::start(vec![plain("lab")]).await;
    for header in [v1(client("192.0.2.7:4000")), v2(0x1, client("192.0.2.7:4000"))] {
        let mut conn = through_proxy(server.addr("lab"), &header).await;
        send(&mut conn, &original("PX-UNEXPECTED")).await;
        expect_closed(&mut conn).await;
    }
    logs.wait_for_n(
        &["connection closed", "not MLLP: PROXY protocol header (a load balancer's: see proxy_protocol)"],
        2,
    )
    .await;
    assert_eq!(server.store.accepted() + server.store.refused(), 0);
}
