//! hl7d behind a real HAProxy (issue 16): the Debian `haproxy` package relays `hl7d send`
//! to an `hl7d serve` child with `proxy_protocol = true`, in the shape of
//! `deploy/haproxy.cfg` (TCP mode, `send-proxy-v2`, health checks on the admin port's
//! `/ready`), all on loopback. HAProxy connects from 127.0.0.3, the sender from 127.0.0.1:
//! the store must name the sender. The shipped `deploy/haproxy.cfg` is checked with
//! `haproxy -c` too.
//!
//! HAProxy cannot be given port 0, so its frontend port is found by binding port 0 and
//! letting it go. Without HAProxy the test says loudly that it was skipped; under CI
//! (`CI=true`, where `.ci/run` installs it) that is a failure instead.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hl7d::store::{Filter, Reader};

use crate::support::{running_in_ci, tempdir, AdminServe, WAIT};

/// The address HAProxy connects to hl7d from (Linux routes all of 127/8 to `lo`).
pub(crate) const HAPROXY_SOURCE: &str = "127.0.0.3";

#[test]
fn hl7d_behind_haproxy_stores_the_senders_real_address() {
    let Some(haproxy) = haproxy("hl7d_behind_haproxy_stores_the_senders_real_address") else {
        return;
    };
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
    let check = Command::new(&haproxy).arg("-c").arg("-f").arg(&shipped).output().expect("run haproxy -c");
    assert!(check.status.success(), "deploy/haproxy.cfg: {}", String::from_utf8_lossy(&check.stderr));

    let dir = tempdir("haproxy");
    let store = dir.join("data");
    let node = start_node(&dir, &store);
    let front = free_port();
    let socket = dir.join("haproxy.sock");
    let config = dir.join("haproxy.cfg");
    std::fs::write(&config, haproxy_config(front, &node, &socket)).unwrap();
    let _haproxy = Haproxy::start(&haproxy, &config);
    wait_until_up(&socket);

    let message = dir.join("message.hl7");
    std::fs::write(
        &message,
        "MSH|^~\\&|LAB|FAC|HL7D|FAC|20261201||ORU^R01^ORU_R01|HA-1|P|2.5\rPID|1||123456\r",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hl7d"))
        .args(["send", "--to", &front.to_string(), "--json", "--ack-timeout", "5s"])
        .arg(&message)
        .output()
        .expect("run hl7d send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!((result["control_id"].as_str(), result["result"].as_str()), (Some("HA-1"), Some("AA")));

    // The sender's address, not HAProxy's, in the store and in the log.
    let rows = Reader::open(&store).unwrap().list(&Filter::default()).unwrap();
    assert_eq!(rows.len(), 1);
    let peer: SocketAddr = rows[0].peer.parse().unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.1", "stored peer {peer}");
    let opened = node.wait_for_line(|line| line.contains("connection opened"));
    assert!(opened.contains(&format!("peer={peer}")), "{opened}");
    assert!(opened.contains(&format!("proxy={HAPROXY_SOURCE}:")), "{opened}");
}

/// The HAProxy binary, or `None` after a loud "SKIPPED" line when it is not installed.
/// Under CI a missing HAProxy fails the test.
pub(crate) fn haproxy(test: &str) -> Option<PathBuf> {
    let found = ["haproxy", "/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|candidate| {
            Command::new(candidate)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
    if found.is_none() {
        assert!(
            !running_in_ci(),
            "{test}: HAProxy is required under CI (.ci/run installs the haproxy package)"
        );
        // Straight to the process's stderr: libtest captures only the print macros.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED {test}: no haproxy binary (Debian package `haproxy`; under CI=true this is a \
             failure)\n"
        );
    }
    found
}

/// A loopback port nobody listens on now (bound to port 0, then let go): HAProxy takes no
/// port 0.
pub(crate) fn free_port() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// `deploy/haproxy.cfg` on loopback: its frontend on `front`, one hl7d node, HAProxy's
/// connections from [`HAPROXY_SOURCE`], quick health checks, an admin socket to read
/// the servers' state from, no syslog.
fn haproxy_config(front: SocketAddr, node: &AdminServe, socket: &Path) -> String {
    format!(
        "global\n\
         \x20   stats socket {socket} mode 600 level admin\n\
         \x20   maxconn 100\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 31m\n\
         \x20   timeout server 31m\n\
         \x20   timeout check 3s\n\
         \x20   retries 2\n\
         \x20   option redispatch\n\
         frontend mllp\n\
         \x20   bind {front}\n\
         \x20   default_backend hl7d_mllp\n\
         backend hl7d_mllp\n\
         \x20   balance leastconn\n\
         \x20   option httpchk GET /ready\n\
         \x20   http-check expect status 200\n\
         \x20   default-server send-proxy-v2 check port {admin} inter 200ms fall 2 rise 1 maxconn 100 \
         source {HAPROXY_SOURCE}\n\
         \x20   server hl7d-1 {mllp}\n",
        socket = socket.display(),
        admin = node.admin.port(),
        mllp = node.mllp,
    )
}

/// Waits (bounded) until HAProxy's health check against `/ready` has passed (`L7OK`: an
/// HTTP answer as expected, not just a TCP connect) and the node is up.
pub(crate) fn wait_until_up(socket: &Path) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(mut admin) = UnixStream::connect(socket) {
            let _ = admin.write_all(b"show stat\n");
            last.clear();
            let _ = admin.read_to_string(&mut last);
            let server = last.lines().find(|line| line.starts_with("hl7d_mllp,hl7d-1,"));
            let fields: Vec<&str> = server.map(|line| line.split(',').collect()).unwrap_or_default();
            if fields.contains(&"UP") && fields.contains(&"L7OK") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("HAProxy never marked hl7d up from its /ready check; last state:\n{last}");
}

/// HAProxy in the foreground, killed when dropped.
pub(crate) struct Haproxy(Child);

impl Haproxy {
    pub(crate) fn start(binary: &Path, config: &Path) -> Haproxy {
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start haproxy");
        Haproxy(child)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An `hl7d serve` child with a `proxy_protocol` listener that trusts [`HAPROXY_SOURCE`]
/// and an admin endpoint, both on loopback ports of the OS's choosing; killed when
/// dropped.
fn start_node(dir: &Path, store: &Path) -> AdminServe {
    let config = dir.join("hl7d.toml");
    let text = format!(
        "[store]\npath = {store:?}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"lab\"\n\
         listen = \"127.0.0.1:0\"\nplaintext = true\nproxy_protocol = true\n\
         proxy_from = [\"{HAPROXY_SOURCE}\"]\n"
    );
    std::fs::write(&config, text).unwrap();
    AdminServe::start(&config, "hl7d serve")
}
