//! Reload (#13 item 6): a running server re-reads its configuration file and applies
//! everything that can apply to new connections — `allow_ips` (closing open connections
//! from addresses it no longer allows), limits, listeners added, removed and moved, TLS
//! switched on — or, when anything in it cannot be used, changes nothing and says why.
//! In process with a temporary config file (`serve::reload`, as SIGHUP runs it, and `POST
//! /reload`), and one run of the binary with SIGHUP. Loopback only (127.0.0.1 and
//! 127.0.0.2 as two peers), port 0, every wait bounded, no sleeps.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hl7d::admin::Admin;
use hl7d::config::{AdminConfig, Config};
use hl7d::console::Role;
use hl7d::listener::{ListenerAction, ReloadReport, Server};
use hl7d::serve::ConfigSource;
use hl7d::store::{AcceptAfterParse, Appended, BoxFuture, MessageStore, NewMessage, StoreError};
use hl7d::tls::pki::{Ca, CertKind, Validity};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

use crate::admin::{http_as, running};
use crate::support::{
    self, expect_closed, logged_addr, msa, read_frame, send, tempdir, tls_client_config, write_key, Logs,
    TestDir, WAIT,
};

/// Upper bound of one whole test.
const TEST_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn allow_ips_change_refuses_new_connections_and_closes_open_ones_from_removed_addresses() {
    bounded(async {
        let logs = Logs::capture();
        let setup = Setup::new("allow", &[listener("rl-allow", "127.0.0.1:0", "")]);
        let server = setup.start(Arc::new(AcceptAfterParse::default())).await;
        let addr = server.local_addr("rl-allow").unwrap();
        let mut kept = connect_from("127.0.0.1", addr).await;
        let mut removed = connect_from("127.0.0.2", addr).await;
        exchange(&mut kept, 1).await;
        exchange(&mut removed, 2).await;

        setup.write(&[listener("rl-allow", "127.0.0.1:0", "allow_ips = [\"127.0.0.1/32\"]\n")]);
        let report = setup.reload(&server).await;
        assert!(report.is_ok(), "{report:?}");
        let change = report.listener("rl-allow").unwrap();
        assert_eq!(change.action, ListenerAction::Updated);
        assert_eq!(change.changed, ["allow_ips"]);
        assert_eq!(change.closed_connections, 1, "{report:?}");

        // The open connection from the address no longer allowed is closed; the other stays.
        expect_closed(&mut removed).await;
        exchange(&mut kept, 3).await;
        logs.wait_for(&["peer_no_longer_allowed", "127.0.0.2"]).await;
        logs.wait_for(&["connection closed", "127.0.0.2", "address no longer in allow_ips"]).await;
        // New connections: refused from the removed address, served from the kept one.
        let mut refused = connect_from("127.0.0.2", addr).await;
        expect_closed(&mut refused).await;
        logs.wait_for(&["connection refused", "127.0.0.2", "ip_not_allowed"]).await;
        let mut fresh = connect_from("127.0.0.1", addr).await;
        exchange(&mut fresh, 4).await;
        server.shutdown(WAIT).await;
    })
    .await;
}

/// Issue 16: `proxy_protocol` switched on by a reload applies to new connections (open ones
/// keep going without a header); a load balancer dropped from `proxy_from` has its
/// connections closed, the other's stay.
#[tokio::test]
async fn proxy_protocol_and_proxy_from_are_reloaded() {
    bounded(async {
        let logs = Logs::capture();
        let setup = Setup::new("proxy", &[listener("rl-proxy", "127.0.0.1:0", "")]);
        let server = setup.start(Arc::new(AcceptAfterParse::default())).await;
        let addr = server.local_addr("rl-proxy").unwrap();
        let mut direct = connect_from("127.0.0.1", addr).await;
        exchange(&mut direct, 1).await;

        let both = "proxy_protocol = true\nproxy_from = [\"127.0.0.1/32\", \"127.0.0.2/32\"]\n";
        setup.write(&[listener("rl-proxy", "127.0.0.1:0", both)]);
        let report = setup.reload(&server).await;
        assert!(report.is_ok(), "{report:?}");
        let change = report.listener("rl-proxy").unwrap();
        assert_eq!((change.changed.as_slice(), change.closed_connections), (&["proxy_protocol"][..], 0));
        exchange(&mut direct, 2).await;
        // New connections need a header; with one, the client is the peer.
        let mut headerless = connect_from("127.0.0.1", addr).await;
        send(&mut headerless, &message(3)).await;
        expect_closed(&mut headerless).await;
        logs.wait_for(&["connection refused", "proxy_header_missing"]).await;
        let mut first = connect_from("127.0.0.1", addr).await;
        first.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 2575\r\n").await.unwrap();
        exchange(&mut first, 4).await;
        let mut second = connect_from("127.0.0.2", addr).await;
        second.write_all(b"PROXY TCP4 192.0.2.8 127.0.0.1 4000 2575\r\n").await.unwrap();
        exchange(&mut second, 5).await;
        logs.wait_for(&["connection opened", "peer=192.0.2.8:4000", "proxy=127.0.0.2:"]).await;

        let one = "proxy_protocol = true\nproxy_from = [\"127.0.0.1/32\"]\n";
        setup.write(&[listener("rl-proxy", "127.0.0.1:0", one)]);
        let report = setup.reload(&server).await;
        let change = report.listener("rl-proxy").unwrap();
        assert_eq!((change.changed.as_slice(), change.closed_connections), (&["proxy_from"][..], 1));
        expect_closed(&mut second).await;
        logs.wait_for(&["proxy_no_longer_trusted", "peer=192.0.2.8:4000"]).await;
        logs.wait_for(&["connection closed", "load balancer no longer in proxy_from"]).await;
        exchange(&mut first, 6).await;
        exchange(&mut direct, 7).await;
        server.shutdown(WAIT).await;
    })
    .await;
}

#[tokio::test]
async fn limit_changes_apply_to_new_connections_and_open_ones_keep_theirs() {
    bounded(async {
        let setup = Setup::new("limits", &[listener("rl-limits", "127.0.0.1:0", "max_connections = 1\n")]);
        let server = setup.start(Arc::new(AcceptAfterParse::default())).await;
        let addr = server.local_addr("rl-limits").unwrap();
        let mut first = TcpStream::connect(addr).await.unwrap();
        exchange(&mut first, 1).await;
        let mut over = TcpStream::connect(addr).await.unwrap();
        expect_closed(&mut over).await;

        // More connections; smaller messages (1 KiB, the least allowed).
        let more = "max_connections = 3\nmax_message_size = \"1KiB\"\n";
        setup.write(&[listener("rl-limits", "127.0.0.1:0", more)]);
        let report = setup.reload(&server).await;
        assert!(report.is_ok(), "{report:?}");
        // Unset, max_connections_per_ip and max_pending follow a max_connections below their
        // defaults: they change with it.
        let changed = ["max_message_size", "max_connections", "max_connections_per_ip", "max_pending"];
        assert_eq!(report.listener("rl-limits").unwrap().changed, changed);
        let mut second = TcpStream::connect(addr).await.unwrap();
        exchange(&mut second, 2).await;
        // The new size limit is the new connection's; the old connection keeps 1 MiB.
        send(&mut second, &large(3)).await;
        assert_eq!(msa(&read_frame(&mut second).await).0, "AR");
        send(&mut first, &large(4)).await;
        assert_eq!(msa(&read_frame(&mut first).await), ("AA".into(), "L4".into()));

        // Lowered below what is open: nothing is closed, nothing new gets in.
        setup.write(&[listener("rl-limits", "127.0.0.1:0", "max_connections = 1\n")]);
        assert!(setup.reload(&server).await.is_ok());
        let mut third = TcpStream::connect(addr).await.unwrap();
        expect_closed(&mut third).await;
        exchange(&mut first, 5).await;
        exchange(&mut second, 6).await;
        server.shutdown(WAIT).await;
    })
    .await;
}

#[tokio::test]
async fn a_new_listener_accepts_and_a_removed_one_stops_after_acking_its_message_in_flight() {
    bounded(async {
        let logs = Logs::capture();
        let setup = Setup::new("add-remove", &[listener("rl-old", "127.0.0.1:0", "")]);
        let store = Arc::new(HoldingStore::default());
        let server = setup.start(store.clone()).await;
        let old = server.local_addr("rl-old").unwrap();
        let mut idle = TcpStream::connect(old).await.unwrap();
        exchange(&mut idle, 1).await;
        // In flight: received, and held in the store when the reload comes.
        let mut busy = TcpStream::connect(old).await.unwrap();
        send(&mut busy, &held(2)).await;
        store.wait_until_holding().await;

        setup.write(&[listener("rl-new", "127.0.0.1:0", "")]);
        let report = setup.reload(&server).await;
        assert!(report.is_ok(), "{report:?}");
        let added = report.listener("rl-new").unwrap();
        assert_eq!(added.action, ListenerAction::Added);
        let removed = report.listener("rl-old").unwrap();
        assert_eq!((removed.action, removed.listen), (ListenerAction::Removed, old));
        assert_eq!(removed.closed_connections, 2, "{report:?}");
        assert_eq!(server.local_addrs(), [("rl-new".to_owned(), added.listen)]);

        // The new listener is accepting as soon as the reload has answered.
        let mut new = TcpStream::connect(added.listen).await.unwrap();
        exchange(&mut new, 3).await;
        // The removed one accepts no more; its idle connection is closed at once.
        let refused = TcpStream::connect(old).await;
        assert!(refused.is_err(), "the removed listener's port still accepts");
        expect_closed(&mut idle).await;
        // The message in flight is stored and acknowledged, then its connection closes.
        store.release();
        assert_eq!(msa(&read_frame(&mut busy).await), ("AA".into(), "H2".into()));
        expect_closed(&mut busy).await;
        logs.wait_for(&["listener_removed", "rl-old"]).await;
        logs.wait_for(&["connection closed", "listener removed from the configuration"]).await;
        server.shutdown(WAIT).await;
    })
    .await;
}

#[tokio::test]
async fn a_listener_moves_to_its_new_address_and_keeps_its_connections() {
    bounded(async {
        let setup = Setup::new("move", &[listener("rl-move", "127.0.0.1:0", "")]);
        let server = setup.start(Arc::new(AcceptAfterParse::default())).await;
        let before = server.local_addr("rl-move").unwrap();
        let mut open = TcpStream::connect(before).await.unwrap();
        exchange(&mut open, 1).await;

        setup.write(&[listener("rl-move", "127.0.0.2:0", "")]);
        let report = setup.reload(&server).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.listener("rl-move").unwrap().changed, ["listen"]);
        let after = server.local_addr("rl-move").unwrap();
        assert_eq!(after.ip().to_string(), "127.0.0.2");
        assert!(TcpStream::connect(before).await.is_err(), "the old address still accepts");
        let mut moved = TcpStream::connect(after).await.unwrap();
        exchange(&mut moved, 2).await;
        exchange(&mut open, 3).await;
        server.shutdown(WAIT).await;
    })
    .await;
}

#[tokio::test]
async fn switching_a_listener_to_tls_applies_to_new_connections() {
    bounded(async {
        let setup = Setup::new("to-tls", &[listener("rl-tls", "127.0.0.1:0", "")]);
        let ca = Ca::new("reload test CA", Validity::days_from_now(30)).unwrap();
        let names = ["localhost".to_owned()];
        let cert = ca.issue(CertKind::Server, "server", &names, Validity::days_from_now(30)).unwrap();
        std::fs::write(setup.dir.join("server.pem"), &cert.cert_pem).unwrap();
        write_key(&setup.dir.join("server.key"), &cert.key_pem);
        let server = setup.start(Arc::new(AcceptAfterParse::default())).await;
        let addr = server.local_addr("rl-tls").unwrap();
        let mut plain = TcpStream::connect(addr).await.unwrap();
        exchange(&mut plain, 1).await;

        let tls = "[listener.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n";
        setup.write(&[listener("rl-tls", "127.0.0.1:0", tls)]);
        let report = setup.reload(&server).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.listener("rl-tls").unwrap().changed, ["plaintext"]);
        assert_eq!(report.reloaded[0].1.server_thumbprint, cert.digests().sha256());

        // New connections speak TLS; plaintext is refused; the open one keeps plaintext.
        let client = tls_client_config(&ca, None, &[&rustls::version::TLS13]);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut secure = TlsConnector::from(client).connect(name, tcp).await.expect("handshake");
        exchange(&mut secure, 2).await;
        let mut late = TcpStream::connect(addr).await.unwrap();
        send(&mut late, &message(3)).await;
        expect_closed(&mut late).await;
        exchange(&mut plain, 4).await;
        server.shutdown(WAIT).await;
    })
    .await;
}

#[tokio::test]
async fn a_store_path_change_is_listed_in_needs_restart_with_a_warning() {
    bounded(async {
        let logs = Logs::capture();
        let lab = listener("rl-store", "127.0.0.1:0", "");
        let setup = Setup::with_head("store", "[store]\npath = \"data-a\"\n", std::slice::from_ref(&lab));
        let server = setup.start(Arc::new(AcceptAfterParse::default())).await;
        setup.write_with_head("[store]\npath = \"data-b\"\n", &[lab]);
        let report = setup.reload(&server).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.needs_restart.len(), 1, "{report:?}");
        let note = &report.needs_restart[0];
        assert!(note.starts_with("[store] path") && note.contains("data-a"), "{note}");
        logs.wait_for(&["WARN", "[store] path", "restart hl7d to apply"]).await;
        assert_eq!(report.listener("rl-store").unwrap().action, ListenerAction::Unchanged);
        let mut conn = TcpStream::connect(server.local_addr("rl-store").unwrap()).await.unwrap();
        exchange(&mut conn, 1).await;
        server.shutdown(WAIT).await;
    })
    .await;
}

#[tokio::test]
async fn a_reload_that_cannot_apply_answers_why_over_http_and_changes_nothing() {
    bounded(async {
        let lab = listener("rl-fail", "127.0.0.1:0", "");
        let setup = Setup::new("fail", std::slice::from_ref(&lab));
        let (users, token) = support::users_with_token(&setup.dir, Role::Operator);
        let admin = Admin::start(&AdminConfig::new("127.0.0.1:0".parse().unwrap(), users)).await.unwrap();
        let at = admin.local_addr();
        let at = (at, token);
        let server = setup.start(Arc::new(AcceptAfterParse::default())).await;
        admin.attach(running(&server, Some(setup.file.clone())));
        let addr = server.local_addr("rl-fail").unwrap();
        let mut open = TcpStream::connect(addr).await.unwrap();
        exchange(&mut open, 1).await;

        // 1. The file no longer parses.
        setup.write(&[listener("rl-fail", "127.0.0.1:0", "max_connections = \"many\"\n")]);
        let (status, body) = reload_over_http(&at).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["ok"], false, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("does not load") && error.contains("max_connections"), "{error}");
        assert_eq!(body["listeners"], serde_json::json!([]), "{body}");

        // 2. A new listener whose port is taken, beside a tighter allow_ips: neither applies.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = taken.local_addr().unwrap().to_string();
        let tight = listener("rl-fail", "127.0.0.1:0", "allow_ips = [\"10.0.0.0/8\"]\n");
        setup.write(&[tight.clone(), listener("rl-taken", &taken_addr, "")]);
        let (status, body) = reload_over_http(&at).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["ok"], false, "{body}");
        assert_eq!(body["failed"][0]["listener"], "rl-taken", "{body}");
        let detail = body["failed"][0]["error"].as_str().unwrap();
        assert!(detail.contains("cannot listen on") && detail.contains(&taken_addr), "{detail}");
        assert!(body["error"].as_str().unwrap().contains("nothing changed"), "{body}");
        exchange(&mut open, 2).await;
        let mut still_allowed = TcpStream::connect(addr).await.unwrap();
        exchange(&mut still_allowed, 3).await;
        assert_eq!(server.local_addrs().len(), 1);

        // 3. A new TLS listener whose certificate does not exist.
        let missing = "[listener.tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n";
        setup.write(&[tight, listener("rl-cert", "127.0.0.1:0", missing)]);
        let (status, body) = reload_over_http(&at).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["failed"][0]["listener"], "rl-cert", "{body}");
        assert!(body["failed"][0]["error"].as_str().unwrap().contains("missing.pem"), "{body}");
        exchange(&mut open, 4).await;

        // The running configuration is intact: a good file applies.
        setup.write(&[lab, listener("rl-added", "127.0.0.1:0", "")]);
        let (status, body) = reload_over_http(&at).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ok"], true, "{body}");
        assert!(body.get("error").is_none(), "{body}");
        let actions: Vec<(&str, &str)> = body["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l["listener"].as_str().unwrap(), l["action"].as_str().unwrap()))
            .collect();
        assert_eq!(actions, [("rl-fail", "unchanged"), ("rl-added", "added")], "{body}");
        drop(taken);
        server.shutdown(WAIT).await;
        admin.stop().await;
    })
    .await;
}

#[test]
fn sighup_adds_a_listener_to_the_running_binary() {
    let setup =
        Setup::with_head("sighup", "[store]\npath = \"data\"\n", &[listener("rl-a", "127.0.0.1:0", "")]);
    let ready = setup.dir.join("ready");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["serve", "--config"])
        .arg(&setup.file)
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hl7d serve");
    let (lines, stderr) = std::sync::mpsc::channel::<String>();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let a = listening(&stderr, "rl-a");
        setup.write_with_head(
            "[store]\npath = \"data\"\n",
            &[listener("rl-a", "127.0.0.1:0", ""), listener("rl-b", "127.0.0.1:0", "")],
        );
        let status = Command::new("kill").arg("-HUP").arg(child.id().to_string()).status().unwrap();
        assert!(status.success());
        let b = listening(&stderr, "rl-b");
        assert_ne!(a, b);
        // The ready file is written again with the listeners the reload left running.
        let expected = format!("rl-a {a}\nrl-b {b}\n");
        let deadline = std::time::Instant::now() + WAIT;
        while std::fs::read_to_string(&ready).ok().as_deref() != Some(expected.as_str()) {
            assert!(std::time::Instant::now() < deadline, "--ready-file never listed rl-b: {ready:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(bounded(async {
            for (addr, i) in [(b, 1), (a, 2)] {
                let mut conn = TcpStream::connect(addr).await.unwrap();
                exchange(&mut conn, i).await;
            }
        }));
    }));
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A temporary directory with `hl7d.toml` in it (removed when dropped).
struct Setup {
    dir: TestDir,
    file: PathBuf,
}

impl Setup {
    fn new(label: &str, listeners: &[String]) -> Setup {
        Setup::with_head(label, "[store]\npath = \"data\"\n", listeners)
    }

    fn with_head(label: &str, head: &str, listeners: &[String]) -> Setup {
        let dir = tempdir(&format!("reload-{label}"));
        let setup = Setup { file: dir.join("hl7d.toml"), dir };
        setup.write_with_head(head, listeners);
        setup
    }

    /// Rewrites the file with these `[[listener]]` tables (the store in `data`).
    fn write(&self, listeners: &[String]) {
        self.write_with_head("[store]\npath = \"data\"\n", listeners);
    }

    fn write_with_head(&self, head: &str, listeners: &[String]) {
        std::fs::write(&self.file, format!("{head}{}", listeners.concat())).unwrap();
    }

    async fn start(&self, store: Arc<dyn MessageStore>) -> Server {
        let config = Config::load(&self.file).unwrap_or_else(|e| panic!("{e}"));
        Server::start(&config, store).await.expect("server starts")
    }

    /// What SIGHUP runs: re-read the file, apply it.
    async fn reload(&self, server: &Server) -> ReloadReport {
        hl7d::serve::reload(&server.reloader(), &ConfigSource::File(self.file.clone())).await
    }
}

/// One `[[listener]]` table, plaintext unless `extra` has a `[listener.tls]` table.
fn listener(name: &str, listen: &str, extra: &str) -> String {
    let plaintext = if extra.contains("[listener.tls]") { "" } else { "plaintext = true\n" };
    // Keys before a sub-table: `extra` may open `[listener.tls]`.
    let (keys, table) = match extra.find("[listener.tls]") {
        Some(at) => extra.split_at(at),
        None => (extra, ""),
    };
    format!("[[listener]]\nname = \"{name}\"\nlisten = \"{listen}\"\n{plaintext}{keys}{table}")
}

fn message(i: usize) -> Vec<u8> {
    format!("MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ORU^R01^ORU_R01|R{i}|P|2.5\rPID|1||{i}\r").into_bytes()
}

/// About 2 KB: over a 1 KiB `max_message_size`.
fn large(i: usize) -> Vec<u8> {
    let mut message =
        format!("MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ORU^R01^ORU_R01|L{i}|P|2.5\rNTE|1||").into_bytes();
    message.extend(std::iter::repeat_n(b'x', 2000));
    message.push(b'\r');
    message
}

/// A message that [`HoldingStore`] holds until released.
fn held(i: usize) -> Vec<u8> {
    format!("MSH|^~\\&|LAB|FAC|HL7D|FAC|20261128||ORU^R01^ORU_R01|H{i}|P|2.5\rPID|1||{i}\r").into_bytes()
}

/// Sends [`message`] `i` and expects AA for it.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S, i: usize) {
    send(stream, &message(i)).await;
    stream.flush().await.unwrap();
    assert_eq!(msa(&read_frame(stream).await), ("AA".into(), format!("R{i}")));
}

/// A connection from a chosen loopback address (Linux routes all of 127/8 to `lo`).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// `POST /reload` with an operator's token.
async fn reload_over_http((admin, token): &(SocketAddr, String)) -> (u16, serde_json::Value) {
    let (status, body) = http_as(*admin, "POST", "/reload", Some(token)).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
}

/// The address in the `listening` line of `name` (waits for it, bounded).
fn listening(stderr: &std::sync::mpsc::Receiver<String>, name: &str) -> SocketAddr {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = stderr.recv_timeout(left).unwrap_or_else(|_| panic!("no listening line for {name}"));
        if !line.contains(&format!("listener={name} ")) {
            continue;
        }
        if let Some(addr) = logged_addr(&line, "listening") {
            return addr;
        }
    }
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_LIMIT, test).await.expect("test finished within its limit");
}

/// Accepts every message at once, except those whose control id starts with `H`: those wait
/// until [`HoldingStore::release`].
struct HoldingStore {
    holding: AtomicUsize,
    entered: Semaphore,
    gate: Semaphore,
}

impl Default for HoldingStore {
    fn default() -> Self {
        HoldingStore { holding: AtomicUsize::new(0), entered: Semaphore::new(0), gate: Semaphore::new(0) }
    }
}

impl HoldingStore {
    async fn wait_until_holding(&self) {
        self.entered.acquire().await.expect("open").forget();
    }

    fn release(&self) {
        self.gate.add_permits(self.holding.load(Ordering::SeqCst));
    }
}

impl MessageStore for HoldingStore {
    fn append(&self, message: NewMessage) -> BoxFuture<'_, Result<Appended, StoreError>> {
        Box::pin(async move {
            if message.control_id.starts_with('H') {
                self.holding.fetch_add(1, Ordering::SeqCst);
                self.entered.add_permits(1);
                self.gate.acquire().await.expect("open").forget();
            }
            Ok(Appended::New)
        })
    }
}
