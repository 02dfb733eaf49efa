//! The audit trail: security-relevant events as JSON lines, in an append-only file of
//! their own and/or sent to a syslog collector (RFC 5424 over TCP or TLS).
//!
//! Events are ordinary `tracing` events with target [`TARGET`] (`"audit"`) and an `event`
//! field naming their kind (`connection_refused`, `tls_handshake_failed`, …; the list is in
//! docs/operations.md). They appear in the main log like any other line; [`AuditTrail::layer`]
//! is a `tracing` layer that additionally writes every event of that target, at any level and
//! whatever `[log] level` says, to the configured sinks. So the code that notices something
//! writes one line, and the trail cannot miss an event the log has.
//!
//! What an audit event may carry: listener, peer address, reason, client certificate
//! subject and thumbprint, counts, file names. Never message contents. The events come
//! from the accept loop (`listener/mod.rs`: connections accepted or refused), the TLS
//! module (`tls/accept.rs`, `tls/refusal.rs`, `tls/reload.rs`: handshakes, refusals,
//! reloads, revoked client certificates), `serve.rs` (start, stop, configuration reloads),
//! the admin endpoint (`admin.rs`: a reload requested over HTTP) and the `hl7d messages
//! purge` command (in the binary's `cmd/messages.rs`: what was deleted, by whom); none of
//! them holds a message.
//!
//! The file is written synchronously (one `write` per line, `O_APPEND`), so an event is in
//! the file when the call that logged it returns. Syslog goes through a bounded queue to a
//! writer thread that reconnects with backoff; while the collector is unreachable the queue
//! holds [`SYSLOG_QUEUE`] lines and further lines are dropped and counted
//! (`hl7d_audit_syslog_dropped_total`) — the file, when configured, still has them.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{filter_fn, Filtered};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{AuditConfig, SyslogConfig};

/// The `tracing` target of audit events.
pub const TARGET: &str = "audit";
/// Lines waiting for the syslog collector before new ones are dropped.
pub const SYSLOG_QUEUE: usize = 10_000;
/// RFC 5424 facility 13, "log audit".
const FACILITY_LOG_AUDIT: u8 = 13;
/// Longest wait to connect to the collector, per address.
const SYSLOG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for one write to the collector before the connection is dropped.
const SYSLOG_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff: first wait, then doubled up to the maximum.
const SYSLOG_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// An audit sink could not be opened.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The audit file cannot be opened for appending.
    #[error("audit file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The audit file cannot be created or appended to (found by [`AuditTrail::check`]).
    #[error("audit file {}: {reason}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why, e.g. that its directory does not exist.
        reason: String,
    },
    /// The syslog TLS settings cannot be used (e.g. an unreadable `syslog_ca`).
    #[error("audit syslog: {0}")]
    SyslogTls(String),
    /// The syslog writer thread could not be started.
    #[error("audit syslog: cannot start the writer thread: {0}")]
    Thread(io::Error),
}

/// The open sinks of the audit trail. Cheap to clone; the sinks close when the last clone
/// and the last layer are dropped.
#[derive(Clone)]
pub struct AuditTrail {
    inner: Arc<Sinks>,
}

struct Sinks {
    file: Option<FileSink>,
    syslog: Option<SyslogSink>,
    /// RFC 5424 HOSTNAME.
    host: String,
}

struct FileSink {
    path: PathBuf,
    file: Mutex<File>,
    /// Set while writes fail, so that the failure is reported once, not per line.
    failing: AtomicBool,
}

struct SyslogSink {
    queue: Mutex<Option<SyncSender<Vec<u8>>>>,
    writer: Mutex<Option<(JoinHandle<()>, Receiver<()>)>>,
}

/// Every open trail, so that [`reopen_files`] (SIGHUP, `POST /reload`) reaches them.
static TRAILS: Mutex<Vec<Weak<Sinks>>> = Mutex::new(Vec::new());

impl AuditTrail {
    /// Opens the sinks named by `config`: the file (created with mode 0640 if missing) and
    /// the syslog writer thread, which connects in the background (an unreachable
    /// collector does not stop start-up).
    pub fn open(config: &AuditConfig) -> Result<AuditTrail, AuditError> {
        let file = config.file.as_deref().map(FileSink::open).transpose()?;
        let syslog = config.syslog.as_ref().map(SyslogSink::start).transpose()?;
        let host = crate::tls::pki::hostname().unwrap_or_else(|| "-".to_owned());
        let inner = Arc::new(Sinks { file, syslog, host });
        let mut trails = TRAILS.lock().unwrap_or_else(PoisonError::into_inner);
        trails.retain(|trail| trail.strong_count() > 0);
        trails.push(Arc::downgrade(&inner));
        Ok(AuditTrail { inner })
    }

    /// Checks, without creating or opening anything, what [`AuditTrail::open`] needs: that
    /// the file exists and this process may append to it, or that its directory exists and
    /// this process may create it there (hl7d creates the file, not its directory); and that
    /// the syslog TLS settings load. The collector is not contacted: an unreachable one does
    /// not stop start-up either. Every problem found is returned.
    pub fn check(config: &AuditConfig) -> Vec<AuditError> {
        let mut problems = Vec::new();
        if let Some(path) = &config.file {
            if let Err(reason) = check_file(path) {
                problems.push(AuditError::Unusable { path: path.clone(), reason });
            }
        }
        if let Some(syslog) = &config.syslog {
            if let Err(e) = syslog_tls(syslog) {
                problems.push(e);
            }
        }
        problems
    }

    /// The `tracing` layer that writes every [`TARGET`] event to the sinks, at any level
    /// (its own per-layer filter, independent of the log level).
    pub fn layer<S>(&self) -> Filtered<AuditLayer, impl tracing_subscriber::layer::Filter<S>, S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        AuditLayer { sinks: self.inner.clone() }
            .with_filter(filter_fn(|metadata| metadata.target() == TARGET))
    }

    /// Reopens the audit file (after logrotate moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        match &self.inner.file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }

    /// Delivers what is queued for syslog (waiting at most `limit`) and stops the writer
    /// thread. Lines logged afterwards still go to the file; syslog drops them.
    pub fn flush(&self, limit: Duration) {
        if let Some(syslog) = &self.inner.syslog {
            syslog.stop(limit);
        }
    }

    /// Writes one event directly (for callers without a `tracing` subscriber, and tests).
    pub fn record(&self, level: Level, event: &str, message: &str, fields: &[(&str, &str)]) {
        let mut record = Record::new(level);
        record.event = Some(event.to_owned());
        record.message = Some(message.to_owned());
        for (key, value) in fields {
            record.fields.push(((*key).to_owned(), serde_json::Value::String((*value).to_owned())));
        }
        self.inner.write(&record);
    }
}

/// Reopens the file of every open audit trail; see [`AuditTrail::reopen`]. Failures are
/// logged, and the trail keeps writing to the file it had.
pub fn reopen_files() {
    let trails: Vec<Arc<Sinks>> =
        TRAILS.lock().unwrap_or_else(PoisonError::into_inner).iter().filter_map(Weak::upgrade).collect();
    for sinks in trails {
        if let Some(file) = &sinks.file {
            if let Err(e) = file.reopen() {
                tracing::error!(path = %file.path.display(), error = %e,
                    "cannot reopen the audit file; still writing to the previous one");
            }
        }
    }
}

/// The layer returned by [`AuditTrail::layer`].
pub struct AuditLayer {
    sinks: Arc<Sinks>,
}

impl<S: Subscriber> Layer<S> for AuditLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut record = Record::new(*event.metadata().level());
        event.record(&mut record);
        self.sinks.write(&record);
    }
}

impl Sinks {
    fn write(&self, record: &Record) {
        let json = record.to_json();
        if let Some(file) = &self.file {
            file.write_line(&json);
        }
        if let Some(syslog) = &self.syslog {
            syslog.send(record.to_syslog(&json, &self.host));
        }
    }
}

/// One audit event: its level, `event` kind, message and the other fields in the order
/// they were given.
struct Record {
    time: SystemTime,
    level: Level,
    event: Option<String>,
    message: Option<String>,
    fields: Vec<(String, serde_json::Value)>,
}

impl Record {
    fn new(level: Level) -> Record {
        Record { time: SystemTime::now(), level, event: None, message: None, fields: Vec::new() }
    }

    fn event(&self) -> &str {
        self.event.as_deref().unwrap_or("audit")
    }

    /// `{"time":…,"level":…,"event":…,"message":…, fields…}` on one line.
    fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{{\"time\":{},\"level\":{},\"event\":{}",
            quote(&rfc3339(self.time)),
            quote(self.level.as_str()),
            quote(self.event())
        );
        if let Some(message) = &self.message {
            let _ = write!(out, ",\"message\":{}", quote(message));
        }
        for (key, value) in &self.fields {
            let _ = write!(out, ",{}:{}", quote(key), value);
        }
        out.push('}');
        out
    }

    /// RFC 5424 message (`<PRI>1 TIMESTAMP HOSTNAME hl7d PROCID MSGID - MSG`, MSG = the
    /// JSON line) in RFC 6587 octet-counting framing.
    fn to_syslog(&self, json: &str, host: &str) -> Vec<u8> {
        let severity = match self.level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        let pri = FACILITY_LOG_AUDIT * 8 + severity;
        let msgid: String =
            self.event().chars().filter(|c| c.is_ascii_graphic()).take(32).collect::<String>();
        let msgid = if msgid.is_empty() { "-".to_owned() } else { msgid };
        let message =
            format!("<{pri}>1 {} {host} hl7d {} {msgid} - {json}", rfc3339(self.time), std::process::id());
        let mut framed = format!("{} ", message.len()).into_bytes();
        framed.extend_from_slice(message.as_bytes());
        framed
    }
}

impl Visit for Record {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, serde_json::Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, serde_json::Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, serde_json::Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, serde_json::Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here as Display wrapped in Debug, `message` as fmt::Arguments.
        self.put(field, serde_json::Value::from(format!("{value:?}")));
    }
}

impl Record {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(text)) => self.message = Some(text),
            ("event", serde_json::Value::String(text)) => self.event = Some(text),
            (name, value) => self.fields.push((name.to_owned(), value)),
        }
    }
}

/// `2026-01-31T12:00:00.123Z`.
fn rfc3339(time: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(time).format(&format).unwrap_or_else(|_| "-".to_owned())
}

impl FileSink {
    fn open(path: &Path) -> Result<FileSink, AuditError> {
        let file = open_append(path).map_err(|source| AuditError::File { path: path.to_owned(), source })?;
        Ok(FileSink { path: path.to_owned(), file: Mutex::new(file), failing: AtomicBool::new(false) })
    }

    fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        Ok(())
    }

    fn write_line(&self, json: &str) {
        let mut line = Vec::with_capacity(json.len() + 1);
        line.extend_from_slice(json.as_bytes());
        line.push(b'\n');
        // One write per line: with O_APPEND the line lands whole at the end of the file.
        let result = self.file.lock().unwrap_or_else(PoisonError::into_inner).write_all(&line);
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    eprintln!("hl7d: audit file {} is writable again", self.path.display());
                }
            }
            // Not through `tracing`: this runs inside the subscriber.
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!("hl7d: cannot write the audit file {}: {e}", self.path.display());
                }
            }
        }
    }
}

/// What [`AuditTrail::check`] asks of the file: see there.
fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Err("is a directory".to_owned()),
        Ok(_) => crate::private_files::can_read_write(path)
            .map_err(|e| format!("this process cannot append to it: {e}")),
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            match std::fs::metadata(dir) {
                Ok(metadata) if metadata.is_dir() => crate::private_files::can_create_in(dir)
                    .map_err(|e| format!("this process cannot create it in {}: {e}", dir.display())),
                Ok(_) => Err(format!("{} is not a directory", dir.display())),
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                    Err(format!(
                        "directory {} does not exist (hl7d creates the file, not its directory; \
                         under systemd LogsDirectory= makes it)",
                        dir.display()
                    ))
                }
                Err(e) => Err(format!("{}: {e}", dir.display())),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options.open(path)
}

impl SyslogSink {
    fn start(config: &SyslogConfig) -> Result<SyslogSink, AuditError> {
        let tls = syslog_tls(config)?;
        let (queue, lines) = mpsc::sync_channel(SYSLOG_QUEUE);
        let (done, finished) = mpsc::channel();
        let collector = Collector { host: config.host.clone(), port: config.port, tls };
        let handle = thread::Builder::new()
            .name("hl7d-audit-syslog".into())
            .spawn(move || {
                collector.run(lines);
                let _ = done.send(());
            })
            .map_err(AuditError::Thread)?;
        Ok(SyslogSink { queue: Mutex::new(Some(queue)), writer: Mutex::new(Some((handle, finished))) })
    }

    fn send(&self, line: Vec<u8>) {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = match queue.as_ref() {
            Some(queue) => match queue.try_send(line) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !sent {
            metrics::counter!(crate::metrics::AUDIT_DROPPED).increment(1);
        }
    }

    fn stop(&self, limit: Duration) {
        drop(self.queue.lock().unwrap_or_else(PoisonError::into_inner).take());
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((handle, finished)) = writer {
            match finished.recv_timeout(limit) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = handle.join();
                }
                // Still trying to reach the collector: leave the thread; the process exits.
                Err(RecvTimeoutError::Timeout) => {
                    eprintln!("hl7d: audit syslog collector unreachable; undelivered audit lines dropped");
                }
            }
        }
    }
}

/// The client TLS settings for a `tls://` collector (`None` for `tcp://`).
fn syslog_tls(config: &SyslogConfig) -> Result<Option<CollectorTls>, AuditError> {
    if !config.tls {
        return Ok(None);
    }
    let options = crate::sender::tls::ClientTlsOptions { ca: config.ca.clone(), ..Default::default() };
    let client =
        crate::sender::tls::client_config(&options).map_err(|e| AuditError::SyslogTls(e.to_string()))?;
    let name = crate::sender::tls::server_name(&config.host, None).map_err(AuditError::SyslogTls)?;
    Ok(Some((Arc::new(client), name)))
}

type CollectorTls = (Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>);

/// The syslog writer thread's view of the collector.
struct Collector {
    host: String,
    port: u16,
    tls: Option<CollectorTls>,
}

type Connection = Box<dyn Write + Send>;

impl Collector {
    /// Sends every queued line in order until the queue is closed and empty. A line whose
    /// write fails is sent again on the next connection (it may then arrive twice; syslog
    /// over TCP has no acknowledgement to tell).
    fn run(&self, lines: Receiver<Vec<u8>>) {
        let mut conn: Option<Connection> = None;
        let mut backoff = SYSLOG_BACKOFF.0;
        let mut reported = false;
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let line = match pending.take() {
                Some(line) => line,
                None => match lines.recv() {
                    Ok(line) => line,
                    Err(_) => break,
                },
            };
            if conn.is_none() {
                match self.connect() {
                    Ok(connected) => {
                        if reported {
                            eprintln!(
                                "hl7d: audit syslog collector {}:{} reachable again",
                                self.host, self.port
                            );
                        }
                        conn = Some(connected);
                        backoff = SYSLOG_BACKOFF.0;
                        reported = false;
                    }
                    Err(e) => {
                        if !reported {
                            eprintln!(
                                "hl7d: audit syslog collector {}:{} unreachable ({e}); retrying",
                                self.host, self.port
                            );
                            reported = true;
                        }
                        pending = Some(line);
                        thread::sleep(backoff);
                        backoff = (backoff * 2).min(SYSLOG_BACKOFF.1);
                        continue;
                    }
                }
            }
            // Just connected when it was `None`.
            let writer = conn.as_mut().expect("connected");
            if writer.write_all(&line).and_then(|()| writer.flush()).is_err() {
                // Also back off here: a collector that accepts and then hangs up at once
                // must not turn this into a busy loop.
                conn = None;
                pending = Some(line);
                thread::sleep(backoff);
                backoff = (backoff * 2).min(SYSLOG_BACKOFF.1);
            }
        }
    }

    fn connect(&self) -> io::Result<Connection> {
        let started = Instant::now();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in (self.host.as_str(), self.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, SYSLOG_CONNECT_TIMEOUT) {
                Ok(stream) => {
                    stream.set_write_timeout(Some(SYSLOG_WRITE_TIMEOUT))?;
                    stream.set_read_timeout(Some(SYSLOG_WRITE_TIMEOUT))?;
                    let _ = stream.set_nodelay(true);
                    return match &self.tls {
                        None => Ok(Box::new(stream)),
                        Some((config, name)) => {
                            let session = rustls::ClientConnection::new(config.clone(), name.clone())
                                .map_err(io::Error::other)?;
                            let mut tls = rustls::StreamOwned::new(session, stream);
                            // Handshake now, so that a certificate problem shows as "unreachable".
                            while tls.conn.is_handshaking() {
                                tls.conn.complete_io(&mut tls.sock)?;
                            }
                            Ok(Box::new(tls))
                        }
                    };
                }
                Err(e) => last = e,
            }
            if started.elapsed() > SYSLOG_CONNECT_TIMEOUT * 3 {
                break;
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use super::*;

    fn record() -> Record {
        let mut record = Record::new(Level::WARN);
        record.time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        record.event = Some("connection_refused".into());
        record.message = Some("connection refused: \"x\"".into());
        record.fields.push(("listener".into(), "lab".into()));
        record.fields.push(("max_connections".into(), 5u64.into()));
        record
    }

    #[test]
    fn json_line_has_time_level_event_first_and_escapes() {
        let json = record().to_json();
        assert_eq!(
            json,
            "{\"time\":\"2023-11-14T22:13:20.123Z\",\"level\":\"WARN\",\"event\":\"connection_refused\",\
             \"message\":\"connection refused: \\\"x\\\"\",\"listener\":\"lab\",\"max_connections\":5}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["max_connections"], 5);
    }

    #[test]
    fn syslog_frame_is_rfc5424_with_octet_count() {
        let record = record();
        let json = record.to_json();
        let framed = String::from_utf8(record.to_syslog(&json, "host1")).unwrap();
        let (len, message) = framed.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        // facility 13 (log audit) * 8 + severity 4 (warning) = 108
        let expected = format!(
            "<108>1 2023-11-14T22:13:20.123Z host1 hl7d {} connection_refused - {json}",
            std::process::id()
        );
        assert_eq!(message, expected);
    }

    #[test]
    fn check_names_a_missing_directory_and_an_unreadable_syslog_ca_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let good = AuditConfig { file: Some(dir.join("audit.jsonl")), syslog: None };
        assert!(AuditTrail::check(&good).is_empty());
        assert!(!dir.join("audit.jsonl").exists(), "check created the file");
        let config = AuditConfig {
            file: Some(dir.join("missing/audit.jsonl")),
            syslog: Some(SyslogConfig {
                host: "logs.example.org".into(),
                port: 6514,
                tls: true,
                ca: Some(dir.join("no-such-ca.pem")),
            }),
        };
        let problems: Vec<String> = AuditTrail::check(&config).iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("missing") && problems[0].contains("does not exist"), "{problems:?}");
        assert!(
            problems[1].starts_with("audit syslog: ") && problems[1].contains("no-such-ca.pem"),
            "{problems:?}"
        );
        // open agrees on the file.
        let open = AuditConfig { file: Some(dir.join("missing/audit.jsonl")), syslog: None };
        assert!(AuditTrail::open(&open).is_err());
        // A directory where the file should be.
        let as_dir = AuditConfig { file: Some(dir.clone()), syslog: None };
        assert!(AuditTrail::check(&as_dir)[0].to_string().contains("is a directory"));
    }

    #[test]
    fn file_and_syslog_sinks_receive_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let collector = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = collector.local_addr().unwrap().port();
        let config = AuditConfig {
            file: Some(path.clone()),
            syslog: Some(SyslogConfig { host: "127.0.0.1".into(), port, tls: false, ca: None }),
        };
        let trail = AuditTrail::open(&config).unwrap();
        trail.record(Level::INFO, "start", "hl7d started", &[("version", "1")]);
        trail.record(Level::WARN, "connection_refused", "refused", &[("reason", "ip_not_allowed")]);
        let (mut stream, _) = collector.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        trail.flush(Duration::from_secs(10));
        let mut received = String::new();
        stream.read_to_string(&mut received).unwrap();
        assert!(received.contains("<110>1 ") && received.contains(" hl7d "), "{received}");
        assert!(received.contains("connection_refused - {"), "{received}");

        // Rotation: move the file away, reopen, keep writing.
        std::fs::rename(&path, dir.join("audit.jsonl.1")).unwrap();
        reopen_files();
        trail.record(Level::INFO, "stop", "hl7d stopped", &[]);
        let rotated = std::fs::read_to_string(dir.join("audit.jsonl.1")).unwrap();
        let fresh = std::fs::read_to_string(&path).unwrap();
        let events: Vec<String> = rotated
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["event"].to_string())
            .collect();
        assert_eq!(events, ["\"start\"", "\"connection_refused\""]);
        assert!(fresh.contains("\"event\":\"stop\""), "{fresh}");
    }

    #[test]
    fn syslog_over_tls_reaches_a_collector_verified_by_syslog_ca() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        use crate::tls::pki::{Ca, CertKind, Validity};

        let tmp = tempfile::tempdir().unwrap();

        let dir = tmp.path().join("dir");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new("syslog test CA", Validity::days_from_now(30)).unwrap();
        std::fs::write(dir.join("ca.pem"), &ca.cert.cert_pem).unwrap();
        let names = ["localhost".to_owned()];
        let server = ca.issue(CertKind::Server, "collector", &names, Validity::days_from_now(30)).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(server.der.clone())],
                PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let collector = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = collector.local_addr().unwrap().port();
        let received = thread::spawn(move || {
            let (stream, _) = collector.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let session = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(session, stream);
            let mut text = Vec::new();
            let mut chunk = [0u8; 1024];
            // The writer hangs up without close_notify: keep what arrived before that.
            while let Ok(n) = tls.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8(text).unwrap()
        });
        // The collector's certificate names localhost; it is trusted through syslog_ca only.
        let syslog = SyslogConfig { host: "localhost".into(), port, tls: true, ca: Some(dir.join("ca.pem")) };
        let trail = AuditTrail::open(&AuditConfig { file: None, syslog: Some(syslog) }).unwrap();
        trail.record(Level::WARN, "client_cert_refused", "refused", &[("reason", "client_cert_unapproved")]);
        trail.flush(Duration::from_secs(10));
        let text = received.join().unwrap();
        assert!(text.contains("<108>1 ") && text.contains("client_cert_refused - {"), "{text:?}");
    }
}
