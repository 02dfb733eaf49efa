//! Shared helpers: start a real server on loopback, frame and read MLLP, load fixtures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hl7d::audit::AuditTrail;
use hl7d::config::{AuditConfig, Config, ListenerConfig};
use hl7d::listener::Server;
use hl7d::store::{AcceptAfterParse, MessageStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing_subscriber::layer::SubscriberExt;

pub mod pg;

/// Upper bound for any single wait in a test, so that a broken server fails the test
/// instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// A byte-exact sample message from the protocol crate's fixtures.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/crates/hl7-proto/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Whether the tests run under CI (`CI=true`), where a missing test peer (the python `hl7`
/// package, HAProxy) fails its test instead of skipping it.
pub fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

/// A plaintext listener on 127.0.0.1:0 with default settings.
pub fn plain(name: &str) -> ListenerConfig {
    ListenerConfig::plaintext(name, "127.0.0.1:0".parse().unwrap())
}

/// A running in-process server and its store.
pub struct TestServer {
    pub server: Option<Server>,
    pub store: Arc<AcceptAfterParse>,
}

impl TestServer {
    /// Starts the given listeners with a counting store.
    pub async fn start(listeners: Vec<ListenerConfig>) -> TestServer {
        let store = Arc::new(AcceptAfterParse::default());
        let server = start_with_store(listeners, store.clone()).await;
        TestServer { server: Some(server), store }
    }

    /// Address of the named listener.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr(name).expect("listener exists")
    }

    /// Connects to the named listener (Nagle off, see [`connect_nodelay`]).
    pub async fn connect(&self, name: &str) -> TcpStream {
        connect_nodelay(self.addr(name)).await.expect("connect")
    }

    /// Graceful shutdown; returns the number of abandoned connections.
    pub async fn stop(&mut self) -> usize {
        self.server.take().unwrap().shutdown(WAIT).await
    }
}

/// Connects with Nagle's algorithm off, as the server's own sockets are. On tokio's paused
/// clock this matters: a small write held back by Nagle until the peer's delayed ACK (a
/// kernel timer) looks like silence, and the clock would jump past it to the next timeout.
pub async fn connect_nodelay(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Starts a server over any store.
pub async fn start_with_store(listeners: Vec<ListenerConfig>, store: Arc<dyn MessageStore>) -> Server {
    let mut config = Config::embedded_default();
    config.listeners = listeners;
    Server::start(&config, store).await.expect("server starts")
}

/// `0x0B payload 0x1C 0x0D`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x0B];
    out.extend_from_slice(payload);
    out.extend_from_slice(&[0x1C, 0x0D]);
    out
}

/// Sends one framed message.
pub async fn send<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) {
    stream.write_all(&frame(payload)).await.expect("write");
}

/// Reads one MLLP frame (default framing) and returns its payload; panics after [`WAIT`].
pub async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    read_frame_with(stream, &[0x0B], &[0x1C, 0x0D]).await
}

/// Reads one frame with custom framing bytes. Reads byte by byte: slow, exact, fine for tests.
pub async fn read_frame_with<S: AsyncRead + Unpin>(stream: &mut S, start: &[u8], end: &[u8]) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = stream.read(&mut byte).await.expect("read");
            assert!(
                n == 1,
                "connection closed before a whole frame; got {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.push(byte[0]);
            if buf.len() >= start.len() + end.len() && buf.ends_with(end) {
                assert!(buf.starts_with(start), "frame does not start with the start block: {buf:?}");
                return buf[start.len()..buf.len() - end.len()].to_vec();
            }
        }
    })
    .await
    .expect("an ACK within the test wait")
}

/// Expects the peer to close the connection (EOF or reset) without sending anything more.
pub async fn expect_closed<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 256];
    let result =
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await.expect("closed within the test wait");
    match result {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected close, got {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
    }
}

/// Parses an ACK payload into (MSA-1, MSA-2, whole text).
pub fn msa(ack: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(ack).into_owned();
    let line =
        text.split('\r').find(|s| s.starts_with("MSA")).unwrap_or_else(|| panic!("no MSA in {text:?}"));
    let sep = &line[3..4];
    let fields: Vec<&str> = line.split(sep).collect();
    (fields.get(1).unwrap_or(&"").to_string(), fields.get(2).unwrap_or(&"").to_string())
}

/// A fresh directory under the system temp dir (mode 0700), removed when dropped.
pub fn tempdir(label: &str) -> TestDir {
    TestDir(
        tempfile::Builder::new().prefix(&format!("hl7d-it-{label}-")).tempdir().expect("create a temp dir"),
    )
}

/// An admin endpoint on 127.0.0.1:0 whose users file does not exist (no console users):
/// for tests of `/live`, `/ready` and `/metrics`.
pub async fn start_admin() -> hl7d::admin::Admin {
    let config =
        hl7d::config::AdminConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent/hl7d-users.toml");
    hl7d::admin::Admin::start(&config).await.expect("admin binds")
}

/// A users file in `dir` with one API token of `role` called `test-operator` or
/// `test-viewer`; (the file, the token).
pub fn users_with_token(dir: &Path, role: hl7d::console::Role) -> (PathBuf, String) {
    let file = dir.join("users.toml");
    let name = format!("test-{}", role.as_str());
    let token =
        hl7d::console::auth::accounts::update(&file, |a| a.create_token(&name, role)).expect("token created");
    (file, token)
}

/// A [`tempfile::TempDir`] that derefs to its path, so it is used like one.
pub struct TestDir(tempfile::TempDir);

impl TestDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl std::ops::Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

/// The address a log line reports in its `addr=` field, if the line contains `message`.
/// `hl7d serve` logs the bound address of each listener ("listening") and of the admin
/// endpoint, so tests can ask for port 0 and read the port from there.
pub fn logged_addr(line: &str, message: &str) -> Option<SocketAddr> {
    if !line.contains(message) {
        return None;
    }
    let (_, rest) = line.split_once(" addr=")?;
    rest.split_whitespace().next()?.trim_matches('"').parse().ok()
}

/// A child `hl7d serve` (the real binary) with a plaintext listener named `lab` on a
/// loopback port of the OS's choosing and its store in `store`; killed when dropped, so a
/// failing test never leaves a server running.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl ServeProcess {
    /// Starts it on port 0 and waits for its "listening" line, which names the bound port.
    pub fn start(dir: &std::path::Path, store: &std::path::Path) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let config = dir.join("hl7d.toml");
        let text = format!(
            "[store]\npath = {store:?}\n\n[[listener]]\nname = \"lab\"\nlisten = \"127.0.0.1:0\"\nplaintext = true\n"
        );
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hl7d serve");
        let (found, listening) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        // Keeps reading (and echoing to the test's output) until the process ends, so that
        // the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("hl7d serve: {line}");
                if let Some(addr) = logged_addr(&line, "listening") {
                    let _ = found.send(addr);
                }
            }
        });
        match listening.recv_timeout(WAIT) {
            Ok(addr) => ServeProcess { child, addr },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("hl7d serve logged no \"listening\" line within {WAIT:?} (exit: {status:?})");
            }
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`, …).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the exit; SIGKILLs and fails past `limit`.
    pub fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("hl7d serve still running {limit:?} after the signal");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rustls client that trusts `ca`, speaks `versions`, and offers `client`'s certificate
/// when given (mutual TLS).
pub fn tls_client_config(
    ca: &hl7d::tls::pki::Ca,
    client: Option<&hl7d::tls::pki::Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert.der.clone())).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(client) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(client.der.clone())],
                PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    Arc::new(config)
}

/// Writes a private key file with mode 0600, as hl7d requires of the keys it loads.
pub fn write_key(path: &std::path::Path, pem: &str) {
    hl7d::private_files::write(path, pem.as_bytes(), true)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// An audit file for this test. `#[tokio::test]` runs every task on the test's thread, so
/// a thread-local subscriber sees this test's server and no other test's.
pub struct AuditCapture {
    path: PathBuf,
    _trail: AuditTrail,
    _guard: tracing::subscriber::DefaultGuard,
}

impl AuditCapture {
    pub fn start(dir: &Path) -> AuditCapture {
        // tracing-core caches each callsite's interest process-wide, and while exactly one
        // dispatcher exists it asks the *current thread's* one: a parallel test without a
        // subscriber that reaches a shared callsite first (say, the ip_not_allowed line)
        // would switch it off for this test too. A second, idle dispatcher makes it ask
        // every live one.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
        let path = dir.join("audit.jsonl");
        let trail = AuditTrail::open(&AuditConfig { file: Some(path.clone()), syslog: None }).unwrap();
        let subscriber = tracing_subscriber::registry().with(trail.layer());
        let guard = tracing::subscriber::set_default(subscriber);
        AuditCapture { path, _trail: trail, _guard: guard }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// The audit file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn find(&self, fields: &[(&str, &str)]) -> Option<serde_json::Value> {
        find_line(&read_audit(&self.path), fields)
    }

    pub async fn wait_for(&self, fields: &[(&str, &str)]) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.find(fields) {
                return line;
            }
            assert!(Instant::now() < deadline, "no audit line with {fields:?} in:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl AuditCapture {
    /// Waits (bounded) until `n` lines have all of `fields`; returns the last of them.
    pub async fn wait_for_nth(&self, fields: &[(&str, &str)], n: usize) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = read_audit(&self.path);
            let mut matching =
                lines.into_iter().filter(|line| fields.iter().all(|(k, v)| line[*k].as_str() == Some(*v)));
            if let Some(line) = matching.nth(n - 1) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} audit lines with {fields:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Every line of an audit file, parsed (each must be one JSON object).
pub fn read_audit(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

pub fn find_line(lines: &[serde_json::Value], fields: &[(&str, &str)]) -> Option<serde_json::Value> {
    lines.iter().find(|line| fields.iter().all(|(k, v)| line[*k].as_str() == Some(*v))).cloned()
}

/// Log lines of this test. `#[tokio::test]` runs every task on the test's own thread, so a
/// thread-local subscriber sees the server's events and no other test's.
pub struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

impl Logs {
    pub fn capture() -> Logs {
        // tracing-core caches each callsite's interest process-wide, and while exactly one
        // dispatcher exists it asks the *current thread's* one: a parallel test without a
        // subscriber that reaches a shared callsite first would switch it off for this
        // test too. A second, idle dispatcher makes it ask every live one.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(Capture(buffer.clone()))
            .finish();
        Logs { buffer, _guard: tracing::subscriber::set_default(subscriber) }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }

    /// Lines containing every one of `parts`.
    pub fn count(&self, parts: &[&str]) -> usize {
        self.text().lines().filter(|line| parts.iter().all(|part| line.contains(part))).count()
    }

    /// Waits (bounded, on tokio's clock, so that a paused test fails fast) for a line
    /// containing every one of `parts`.
    pub async fn wait_for(&self, parts: &[&str]) {
        self.wait_for_n(parts, 1).await;
    }

    /// Waits (bounded, as [`Logs::wait_for`]) for `n` lines containing every one of `parts`.
    pub async fn wait_for_n(&self, parts: &[&str], n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.count(parts) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fewer than {n} log lines with {parts:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A child `hl7d serve` with an admin endpoint (the real binary, on the configuration file
/// given, whose listener and `[admin]` both take port 0): the two bound addresses read from
/// its log, every log line echoed with `label` and kept for [`AdminServe::wait_for_line`];
/// SIGKILLed when dropped, so a failing test never leaves a server running.
pub struct AdminServe {
    pub child: std::process::Child,
    pub mllp: SocketAddr,
    pub admin: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
}

impl AdminServe {
    /// Starts it and waits (bounded) for both addresses, in whatever order they are logged
    /// (the admin endpoint starts first, then the listener).
    pub fn start(config: &std::path::Path, label: &str) -> AdminServe {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_hl7d"))
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hl7d serve");
        let (send, lines) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let echo = label.to_owned();
        // Reads (and echoes) until the process ends, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{echo}: {line}");
                let _ = send.send(line);
            }
        });
        let (mut mllp, mut admin) = (None, None);
        let deadline = std::time::Instant::now() + WAIT;
        while mllp.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                let _ = child.kill();
                panic!("{label}: no listening addresses within {WAIT:?} (exit: {:?})", child.wait());
            };
            mllp = mllp.or(logged_addr(&line, "listening"));
            admin = admin.or(logged_addr(&line, "admin endpoint"));
        }
        AdminServe { child, mllp: mllp.unwrap(), admin: admin.unwrap(), lines }
    }

    /// The next log line that `wanted` picks (waits, bounded).
    pub fn wait_for_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("hl7d serve: no such log line within {WAIT:?}"),
            }
        }
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "hl7d serve exit: {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hl7d serve did not stop within {WAIT:?}");
    }

    /// SIGKILL, and the exit reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AdminServe {
    fn drop(&mut self) {
        self.kill();
    }
}
