//! The load generator behind `hl7d bench`, for any MLLP listener, hl7d or another.
//!
//! Each of `connections` tasks sends one message and waits for its ACK before sending the
//! next, as HL7 senders do, so per-message latency *is* throughput. Every message gets a fresh
//! MSH-10 (written into a copy of the template; nothing else changes) and its ACK must echo it
//! in MSA-2 (HL7 v2: "MSA-2 echoes the inbound MSH-10"). An ACK for another control id is an
//! error, never a success. Every message says it is a benchmark's: MSH-3 is
//! [`BENCH_SENDING_APPLICATION`] and MSH-11 [`BENCH_PROCESSING_ID`], so that a run against a
//! production store can be found and removed (`hl7d messages purge --sending-application
//! HL7D-BENCH`) and a receiver that routes by processing id keeps it out of production.
//!
//! The loop is deliberately leaner than [`crate::sender::Client`]: no resends (a benchmark
//! reports failures instead of hiding them), no ACK text decoding, and no allocation per
//! message beyond the decoder's frame, so that on a shared machine the client takes as little
//! CPU from the server under test as it can. It shares the client's pieces: the TLS client
//! configuration (built by the caller), [`TlsFailure`] and the MLLP codec.
//!
//! [`Plan::new`] checks [`BenchOptions`] before the first connection, [`run`] runs the plan
//! and returns a [`Report`]; the command line and the exit codes are `cmd/bench.rs`'s.

mod histogram;
mod template;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hl7_proto::ack::{AckCode, ReceivedAck};
use hl7_proto::mllp::{Decoder, DecoderConfig, Framing};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::{timeout, timeout_at};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use self::histogram::{round3, Histogram};
use self::template::{run_tag, ControlIds};
pub use self::template::{Template, BENCH_PROCESSING_ID, BENCH_SENDING_APPLICATION, DEFAULT_MESSAGE};
use crate::sender::TlsFailure;

/// Largest ACK accepted; anything bigger is not an ACK of ours.
const MAX_ACK_SIZE: usize = 64 * 1024;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Pause after a failed connection attempt, so a dead server is not hammered.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// A connection task gives up after this many failed connection attempts in a row.
const MAX_CONNECT_FAILURES: u32 = 10;
/// Time allowed for the TCP connection and the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run, as plain values (`hl7d bench` builds them from its arguments).
pub struct BenchOptions {
    /// Listener address, `HOST:PORT` (resolved once, by [`Plan::new`]).
    pub to: String,
    /// Concurrent connections, each with one message in flight.
    pub connections: u32,
    /// When the run ends.
    pub stop: Stop,
    /// The HL7 message to send, checked.
    pub template: Template,
    /// A new connection (with TLS: a full handshake) for every message.
    pub handshakes: bool,
    /// TLS: the client configuration and the name to verify; `None` = plain TCP.
    pub tls: Option<(ClientConfig, ServerName<'static>)>,
    /// Let the client resume TLS sessions (otherwise every handshake is a full one).
    pub tls_resumption: bool,
    /// How long to wait for each ACK before counting an error and reconnecting.
    pub ack_timeout: Duration,
    /// Runtime threads the caller runs the plan on (shown in the report).
    pub threads: u16,
    /// Send at this many messages per second in total instead of as fast as the ACKs come
    /// (persistent connections only; see [`Pacing`]).
    pub rate: Option<f64>,
}

/// Everything a run needs, checked before the first connection.
pub struct Plan {
    /// As given, for the report and the TLS server name.
    to: String,
    /// Resolved once: a name lookup per connection would be measured too.
    addr: SocketAddr,
    connections: u32,
    stop: Stop,
    template: Template,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    handshakes: bool,
    ack_timeout: Duration,
    threads: u16,
    rate: Option<f64>,
}

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many messages in total.
    Messages(u64),
    /// After this long; messages in flight then still get their ACK.
    Duration(Duration),
}

impl Plan {
    /// Resolves the address; the error is one line for the operator.
    pub async fn new(options: BenchOptions) -> Result<Plan, String> {
        let tls = options.tls.map(|(mut config, name)| {
            if !options.tls_resumption {
                // Every handshake a full one: that is what --handshakes measures.
                config.resumption = Resumption::disabled();
            }
            (TlsConnector::from(Arc::new(config)), name)
        });
        let addr = tokio::net::lookup_host(&options.to)
            .await
            .map_err(|e| format!("--to {}: {e}", options.to))?
            .next()
            .ok_or_else(|| format!("--to {}: no address", options.to))?;
        Ok(Plan {
            to: options.to,
            addr,
            connections: options.connections,
            stop: options.stop,
            template: options.template,
            tls,
            handshakes: options.handshakes,
            ack_timeout: options.ack_timeout,
            threads: options.threads,
            rate: options.rate,
        })
    }
}

/// Why one message (or one connection attempt) failed.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Tls(TlsFailure),
    Timeout,
    Closed,
    /// An ACK whose MSA-2 is not the MSH-10 just sent.
    Mismatch,
    /// A frame that is not an ACK (no MSA, unknown MSA-1, MLLP commit byte, oversized).
    NotAck,
    Io(String),
}

impl Failure {
    const KINDS: [&'static str; 7] = ["connect", "tls", "timeout", "closed", "mismatch", "not_ack", "io"];

    fn kind(&self) -> usize {
        match self {
            Failure::Connect(_) => 0,
            Failure::Tls(_) => 1,
            Failure::Timeout => 2,
            Failure::Closed => 3,
            Failure::Mismatch => 4,
            Failure::NotAck => 5,
            Failure::Io(_) => 6,
        }
    }

    fn from_io(e: std::io::Error) -> Failure {
        if let Some(tls) = TlsFailure::from_io_opt(&e) {
            return Failure::Tls(tls);
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => Failure::Closed,
            _ => Failure::Io(e.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(reason) => write!(f, "connect: {reason}"),
            Failure::Tls(failure) => write!(f, "tls: {failure}"),
            Failure::Timeout => write!(f, "no ACK within --ack-timeout"),
            Failure::Closed => write!(f, "connection closed before the ACK"),
            Failure::Mismatch => write!(f, "ACK for another message (MSA-2 is not the MSH-10 sent)"),
            Failure::NotAck => write!(f, "answer is not an HL7 ACK with MSA-1 and MSA-2"),
            Failure::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

/// Counters shared by the connection tasks and read by the progress line.
struct Shared {
    plan: Plan,
    run_tag: String,
    /// Messages handed out (for `Stop::Messages`).
    issued: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    errors: [AtomicU64; Failure::KINDS.len()],
    handshakes: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    /// Takes the right to send one more message, or says the run is over.
    fn claim(&self, deadline: Option<std::time::Instant>) -> bool {
        match (self.plan.stop, deadline) {
            (Stop::Messages(n), _) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
            (Stop::Duration(_), Some(deadline)) => std::time::Instant::now() < deadline,
            (Stop::Duration(_), None) => false,
        }
    }

    fn is_over(&self, deadline: Option<std::time::Instant>) -> bool {
        match (self.plan.stop, deadline) {
            (Stop::Messages(n), _) => self.issued.load(Ordering::Relaxed) >= n,
            (Stop::Duration(_), Some(deadline)) => std::time::Instant::now() >= deadline,
            (Stop::Duration(_), None) => true,
        }
    }

    fn answered(&self, code: AckCode) {
        if code.is_accept() {
            self.acked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fail(&self, failure: &Failure) {
        self.errors[failure.kind()].fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(failure.to_string());
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum()
    }
}

/// Per-task latency samples, merged at the end.
#[derive(Default)]
struct Samples {
    /// From writing a message to reading its ACK.
    ack: Histogram,
    /// TCP connect plus TLS handshake (`--handshakes` only).
    connect: Histogram,
}

/// Runs the plan and reports; with `progress`, one line per second on stderr.
pub async fn run(plan: Plan, progress: bool) -> Report {
    let shared = Arc::new(Shared {
        plan,
        run_tag: run_tag(),
        issued: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        errors: Default::default(),
        handshakes: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let connections = shared.plan.connections;
    // Persistent connections are opened (and TLS handshakes done) before the clock starts.
    let ready = Arc::new(Barrier::new(connections as usize + 1));
    let mut tasks = Vec::with_capacity(connections as usize);
    for index in 0..connections {
        let (shared, ready) = (shared.clone(), ready.clone());
        tasks.push(tokio::spawn(async move {
            if shared.plan.handshakes {
                one_per_message(index, &shared, &ready).await
            } else {
                persistent(index, &shared, &ready).await
            }
        }));
    }
    ready.wait().await;
    let started = std::time::Instant::now();
    let done = CancellationToken::new();
    let reporter = progress.then(|| tokio::spawn(report_progress(shared.clone(), started, done.clone())));
    let mut samples = Samples::default();
    for task in tasks {
        // A panicking task is a bug; its messages are simply missing from the report.
        if let Ok(task) = task.await {
            samples.ack.merge(&task.ack);
            samples.connect.merge(&task.connect);
        }
    }
    let elapsed = started.elapsed();
    done.cancel();
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }
    Report::new(&shared, elapsed, samples)
}

/// Persistent mode: one connection, reopened only after a failure.
async fn persistent(index: u32, shared: &Shared, ready: &Barrier) -> Samples {
    let plan = &shared.plan;
    let mut samples = Samples::default();
    let mut link = Link::new(&shared.run_tag, index);
    let mut stream = match connect(plan).await {
        Ok(stream) => Some(stream),
        Err(failure) => {
            shared.fail(&failure);
            None
        }
    };
    ready.wait().await;
    let deadline = deadline(plan.stop);
    let mut pacing = plan.rate.map(|rate| Pacing::new(rate, plan.connections, index));
    let mut failures_in_a_row = u32::from(stream.is_none());
    loop {
        let conn = match stream.as_mut() {
            Some(conn) => conn,
            None => {
                if shared.is_over(deadline) || failures_in_a_row >= MAX_CONNECT_FAILURES {
                    break;
                }
                match connect(plan).await {
                    Ok(new) => {
                        failures_in_a_row = 0;
                        link.reset();
                        stream.insert(new)
                    }
                    Err(failure) => {
                        shared.fail(&failure);
                        failures_in_a_row += 1;
                        tokio::time::sleep(RECONNECT_DELAY).await;
                        continue;
                    }
                }
            }
        };
        if !shared.claim(deadline) {
            break;
        }
        let started = match pacing.as_mut() {
            Some(pacing) => pacing.wait().await,
            None => std::time::Instant::now(),
        };
        let id = plan.template.write_framed(&mut link.ids, &mut link.out);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        match exchange(conn, &mut link, id, plan.ack_timeout).await {
            Ok(code) => {
                samples.ack.record(started.elapsed());
                shared.answered(code);
            }
            Err(failure) => {
                shared.fail(&failure);
                // The connection's state is unknown now: start afresh.
                stream = None;
            }
        }
    }
    if let Some(mut stream) = stream {
        let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
    samples
}

/// `--rate`: when each message of one connection is due. The connections share the rate
/// (each sends every `connections / rate` seconds, their first messages spread over one
/// interval). A message is sent when it is due, or as soon as the one before it was
/// answered when that came later; so a server that stalls gets the backlog at once, as
/// from real senders with a queue, and the total stays at the rate. Latency is counted
/// from when the message was due, not from when it could be written: the time a message
/// waited behind a slow answer is part of what its sender sees (no coordinated omission).
#[derive(Debug)]
struct Pacing {
    interval: Duration,
    next: std::time::Instant,
}

impl Pacing {
    fn new(rate: f64, connections: u32, index: u32) -> Pacing {
        let interval = Duration::from_secs_f64(f64::from(connections) / rate);
        let offset = interval.mul_f64(f64::from(index) / f64::from(connections));
        Pacing { interval, next: std::time::Instant::now() + offset }
    }

    /// Waits until the next message is due and returns when it was due.
    async fn wait(&mut self) -> std::time::Instant {
        let due = self.next;
        self.next += self.interval;
        tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        due
    }
}

/// `--handshakes`: a new connection (and TLS handshake) for every message.
async fn one_per_message(index: u32, shared: &Shared, ready: &Barrier) -> Samples {
    let plan = &shared.plan;
    let mut samples = Samples::default();
    let mut link = Link::new(&shared.run_tag, index);
    ready.wait().await;
    let deadline = deadline(plan.stop);
    let mut failures_in_a_row = 0;
    while failures_in_a_row < MAX_CONNECT_FAILURES && shared.claim(deadline) {
        let started = std::time::Instant::now();
        let mut stream = match connect(plan).await {
            Ok(stream) => stream,
            Err(failure) => {
                shared.fail(&failure);
                failures_in_a_row += 1;
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
        };
        failures_in_a_row = 0;
        samples.connect.record(started.elapsed());
        shared.handshakes.fetch_add(1, Ordering::Relaxed);
        link.reset();
        let id = plan.template.write_framed(&mut link.ids, &mut link.out);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        match exchange(&mut stream, &mut link, id, plan.ack_timeout).await {
            Ok(code) => {
                samples.ack.record(started.elapsed());
                shared.answered(code);
                // A polite close (TLS close_notify, then FIN), as a sender would.
                let _ = timeout(Duration::from_secs(1), stream.shutdown()).await;
            }
            Err(failure) => shared.fail(&failure),
        }
    }
    samples
}

fn deadline(stop: Stop) -> Option<std::time::Instant> {
    match stop {
        Stop::Messages(_) => None,
        Stop::Duration(d) => Some(std::time::Instant::now() + d),
    }
}

type Stream = Either<TcpStream, TlsStream<TcpStream>>;

async fn connect(plan: &Plan) -> Result<Stream, Failure> {
    let tcp = match timeout(CONNECT_TIMEOUT, TcpStream::connect(plan.addr)).await {
        Err(_) => return Err(Failure::Connect("timed out".into())),
        Ok(Err(e)) => return Err(Failure::Connect(e.to_string())),
        Ok(Ok(tcp)) => tcp,
    };
    // One small message at a time, each waiting for its answer: Nagle would only add delay.
    let _ = tcp.set_nodelay(true);
    let Some((connector, name)) = &plan.tls else {
        return Ok(Either::Left(tcp));
    };
    match timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp)).await {
        Err(_) => Err(Failure::Tls(TlsFailure::HandshakeTimeout)),
        Ok(Err(e)) => Err(Failure::Tls(TlsFailure::from_io(&e))),
        Ok(Ok(tls)) => Ok(Either::Right(tls)),
    }
}

/// One connection's buffers, reused for every message.
struct Link {
    ids: ControlIds,
    decoder: Decoder,
    out: Vec<u8>,
    read_buf: Box<[u8]>,
}

impl Link {
    fn new(run_tag: &str, index: u32) -> Link {
        Link {
            ids: ControlIds::new(run_tag, index),
            decoder: Self::decoder(),
            out: Vec::new(),
            read_buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
        }
    }

    fn decoder() -> Decoder {
        Decoder::new(DecoderConfig {
            framing: Framing::DEFAULT,
            max_frame_size: MAX_ACK_SIZE,
            lenient_end: true,
        })
    }

    /// Forgets bytes of a previous connection.
    fn reset(&mut self) {
        self.decoder = Self::decoder();
    }
}

/// Writes `link.out` and reads until the next frame, which must be this message's ACK.
async fn exchange<S>(
    stream: &mut S,
    link: &mut Link,
    id: Range<usize>,
    ack_timeout: Duration,
) -> Result<AckCode, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + ack_timeout;
    let written = timeout_at(deadline, async {
        stream.write_all(&link.out).await?;
        stream.flush().await
    })
    .await;
    match written {
        Err(_) => return Err(Failure::Timeout),
        Ok(Err(e)) => return Err(Failure::from_io(e)),
        Ok(Ok(())) => {}
    }
    loop {
        if let Some(frame) = link.decoder.next_frame() {
            let frame = frame.map_err(|_| Failure::NotAck)?;
            return check_ack(&frame, &link.out[id]);
        }
        let n = match timeout_at(deadline, stream.read(&mut link.read_buf)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(Failure::from_io(e)),
            Ok(Ok(0)) => return Err(Failure::Closed),
            Ok(Ok(n)) => n,
        };
        link.decoder.push(&link.read_buf[..n]);
    }
}

/// MSA-1 of `frame` if its MSA-2 is `control_id`. An MLLP R2 commit byte is not an answer
/// here: bench must see its message's own MSA-2.
fn check_ack(frame: &[u8], control_id: &[u8]) -> Result<AckCode, Failure> {
    let ack = ReceivedAck::parse(frame).ok_or(Failure::NotAck)?;
    match ack.control_id {
        None => Err(Failure::NotAck),
        Some(id) if id == control_id => Ok(ack.code),
        Some(_) => Err(Failure::Mismatch),
    }
}

/// One line on stderr per second: totals and the rate over the last second.
async fn report_progress(shared: Arc<Shared>, started: std::time::Instant, done: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tick.tick() => {}
        }
        let acked = shared.acked.load(Ordering::Relaxed);
        eprintln!(
            "hl7d bench: {:>4.0}s  sent {}  acked {}  rejected {}  errors {}  {}/s",
            started.elapsed().as_secs_f64(),
            shared.sent.load(Ordering::Relaxed),
            acked,
            shared.rejected.load(Ordering::Relaxed),
            shared.error_count(),
            acked - last,
        );
        last = acked;
    }
}

/// The result of a run.
pub struct Report {
    to: String,
    tls: bool,
    handshakes_mode: bool,
    connections: u32,
    threads: u16,
    message_bytes: usize,
    sent: u64,
    acked: u64,
    rejected: u64,
    errors: Vec<(&'static str, u64)>,
    first_error: Option<String>,
    handshakes: u64,
    rate: Option<f64>,
    elapsed: Duration,
    samples: Samples,
}

impl Report {
    fn new(shared: &Shared, elapsed: Duration, samples: Samples) -> Report {
        let plan = &shared.plan;
        Report {
            to: plan.to.clone(),
            tls: plan.tls.is_some(),
            handshakes_mode: plan.handshakes,
            connections: plan.connections,
            threads: plan.threads,
            message_bytes: plan.template.message.len(),
            sent: shared.sent.load(Ordering::Relaxed),
            acked: shared.acked.load(Ordering::Relaxed),
            rejected: shared.rejected.load(Ordering::Relaxed),
            errors: Failure::KINDS
                .iter()
                .zip(&shared.errors)
                .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
                .collect(),
            first_error: shared.first_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            handshakes: shared.handshakes.load(Ordering::Relaxed),
            rate: plan.rate,
            elapsed,
            samples,
        }
    }

    /// Messages and connection attempts that failed (no ACK, wrong ACK, connection or TLS).
    pub fn error_count(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    /// Messages answered with AE/AR/CE/CR.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    fn per_second(&self, n: u64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            n as f64 / secs
        } else {
            0.0
        }
    }

    /// The report as one JSON object (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        let errors: serde_json::Map<String, serde_json::Value> =
            self.errors.iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), (*n).into())).collect();
        let mut json = serde_json::json!({
            "to": self.to,
            "tls": self.tls,
            "mode": if self.handshakes_mode { "handshakes" } else { "persistent" },
            "connections": self.connections,
            "threads": self.threads,
            "message_bytes": self.message_bytes,
            "sent": self.sent,
            "acked": self.acked,
            "rejected": self.rejected,
            "errors": self.error_count(),
            "error_kinds": errors,
            "first_error": self.first_error,
            "elapsed_s": round3(self.elapsed.as_secs_f64()),
            "messages_per_s": round3(self.per_second(self.acked + self.rejected)),
            "latency_us": self.samples.ack.summary_us(),
        });
        if self.handshakes_mode {
            json["handshakes"] = self.handshakes.into();
            json["handshakes_per_s"] = round3(self.per_second(self.handshakes)).into();
            json["connect_latency_us"] = self.samples.connect.summary_us();
        }
        if let Some(rate) = self.rate {
            json["rate_per_s"] = round3(rate).into();
        }
        json
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let transport = if self.tls { "TLS" } else { "plaintext" };
        let mode = match (self.handshakes_mode, self.rate) {
            (true, _) => "new connection per message".to_owned(),
            (false, None) => "persistent".to_owned(),
            (false, Some(rate)) => format!("persistent at {rate} msg/s"),
        };
        let _ = writeln!(
            out,
            "hl7d bench: {} ({transport}), {} connection(s), {mode}, {:.2} s, {}-byte message",
            self.to,
            self.connections,
            self.elapsed.as_secs_f64(),
            self.message_bytes
        );
        let _ = writeln!(
            out,
            "  sent {}  acked {}  rejected {}  errors {}",
            self.sent,
            self.acked,
            self.rejected,
            self.error_count()
        );
        for (kind, n) in self.errors.iter().filter(|(_, n)| *n > 0) {
            let _ = writeln!(out, "    {kind}: {n}");
        }
        if let Some(first) = &self.first_error {
            let _ = writeln!(out, "    first error: {first}");
        }
        let _ = writeln!(out, "  {:.0} messages/s", self.per_second(self.acked + self.rejected));
        if self.handshakes_mode {
            let _ = writeln!(
                out,
                "  {:.0} connections/s ({} handshakes)",
                self.per_second(self.handshakes),
                self.handshakes
            );
            let _ = writeln!(out, "  connect{}", self.samples.connect.text_us());
        }
        let _ = writeln!(out, "  ACK latency{}", self.samples.ack.text_us());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_must_echo_the_control_id() {
        let ack = b"MSH|^~\\&|B|B|A|A|2026||ACK^A01^ACK|A1|P|2.5\rMSA|CA|BX1.7\r";
        assert_eq!(check_ack(ack, b"BX1.7").unwrap(), AckCode::CommitAccept);
        assert!(matches!(check_ack(ack, b"BX1.8"), Err(Failure::Mismatch)));
        let nack = b"MSH|^~\\&|B|B|A|A|2026||ACK|A1|P|2.5\rMSA|AR|BX1.7|bad\rERR|||207\r";
        assert_eq!(check_ack(nack, b"BX1.7").unwrap(), AckCode::ApplicationReject);
        assert!(matches!(check_ack(b"\x06", b"BX1.7"), Err(Failure::NotAck)));
        assert!(matches!(check_ack(b"MSH|^~\\&|B\rPID|1\r", b"BX1.7"), Err(Failure::NotAck)));
        assert!(matches!(check_ack(b"MSH|^~\\&|B\rMSA|XX|BX1.7\r", b"BX1.7"), Err(Failure::NotAck)));
    }
}
