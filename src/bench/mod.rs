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

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hl7_proto::ack::{self, AckCode, Outcome, ReceivedAck};
use hl7_proto::message::Message;
use hl7_proto::mllp::{Decoder, DecoderConfig, Framing};
use hl7_proto::msh::{AckCondition, Msh};
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
use crate::sender::{normalise_line_ends, TlsFailure};

/// The default message: a realistic ADT^A01 v2.5 (608 bytes, enhanced mode, MSH-15 = AL;
/// 612 bytes as sent, with MSH-3 = `HL7D-BENCH`).
pub const DEFAULT_MESSAGE: &[u8] = include_bytes!("../../crates/hl7-proto/tests/fixtures/adt_a01_v25.hl7");
/// MSH-3 (sending application) of every message `hl7d bench` sends.
pub const BENCH_SENDING_APPLICATION: &str = "HL7D-BENCH";
/// MSH-11 (processing id) of every message `hl7d bench` sends: `T`, training (HL7 table
/// 0103), not `P`roduction.
pub const BENCH_PROCESSING_ID: &str = "T";

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
        })
    }
}

/// The message to send, with the place of its MSH-10: every message sent is a copy with a
/// unique control id there.
#[derive(Debug)]
pub struct Template {
    message: Vec<u8>,
    /// Byte range of MSH-10 in `message` (may be empty).
    control_id: Range<usize>,
}

impl Template {
    /// Checks that the message has an MSH with a tenth field and asks for an ACK. `\n` and
    /// `\r\n` line ends become `\r` first; MSH-3 and MSH-11 become the benchmark's
    /// ([`BENCH_SENDING_APPLICATION`], [`BENCH_PROCESSING_ID`]).
    pub fn new(message: &[u8]) -> Result<Template, String> {
        let message = mark_as_bench(&normalise_line_ends(message))?;
        let parsed = Message::parse(&message).map_err(|e| format!("--message: {e}"))?;
        let msh = Msh::new(&parsed);
        if !ack::wants_accept_ack(&msh, Outcome::Accepted) {
            let msh15 = msh.accept_ack().ok().flatten().map_or("NE", AckCondition::code);
            return Err(format!(
                "--message: MSH-15 = {msh15} asks for no ACK on success; bench needs an ACK for every message"
            ));
        }
        let segment = parsed.msh().raw();
        // `Message::parse` may skip leading line ends; the MSH segment is a subslice.
        let segment_start = segment.as_ptr() as usize - message.as_ptr() as usize;
        let control_id = msh10_span(segment, parsed.delimiters().field)
            .ok_or("--message: the MSH segment has no MSH-10 field")?;
        let control_id = segment_start + control_id.start..segment_start + control_id.end;
        Ok(Template { message, control_id })
    }

    /// Writes the framed message with `id` as MSH-10 into `out` (cleared first) and returns
    /// the range of the id in `out`.
    fn write_framed(&self, ids: &mut ControlIds, out: &mut Vec<u8>) -> Range<usize> {
        let framing = Framing::DEFAULT;
        out.clear();
        out.extend_from_slice(framing.start());
        out.extend_from_slice(&self.message[..self.control_id.start]);
        let start = out.len();
        ids.write_next(out);
        let id = start..out.len();
        out.extend_from_slice(&self.message[self.control_id.end..]);
        out.extend_from_slice(framing.end());
        id
    }
}

/// `message` with MSH-3 = [`BENCH_SENDING_APPLICATION`] and MSH-11 = [`BENCH_PROCESSING_ID`]
/// (added when the MSH ends before it). An MSH without MSH-10 is left as it is, for
/// [`Template::new`] to refuse.
fn mark_as_bench(message: &[u8]) -> Result<Vec<u8>, String> {
    /// `fields[n - 1]` is MSH-n: MSH-1 is the separator itself, so splitting the segment
    /// at it gives `MSH`, MSH-2, MSH-3, …
    const MSH3: usize = 2;
    const MSH10: usize = 9;
    const MSH11: usize = 10;
    let parsed = Message::parse(message).map_err(|e| format!("--message: {e}"))?;
    let segment = parsed.msh().raw();
    let separator = parsed.delimiters().field;
    let mut fields: Vec<&[u8]> = segment.split(|&b| b == separator).collect();
    if fields.len() <= MSH10 {
        return Ok(message.to_vec());
    }
    fields.resize(fields.len().max(MSH11 + 1), b"");
    fields[MSH3] = BENCH_SENDING_APPLICATION.as_bytes();
    fields[MSH11] = BENCH_PROCESSING_ID.as_bytes();
    // `Message::parse` may skip leading line ends; the MSH segment is a subslice.
    let start = segment.as_ptr() as usize - message.as_ptr() as usize;
    let mut out = Vec::with_capacity(message.len() + BENCH_SENDING_APPLICATION.len() + 2);
    out.extend_from_slice(&message[..start]);
    out.extend_from_slice(&fields.join(&separator));
    out.extend_from_slice(&message[start + segment.len()..]);
    Ok(out)
}

/// Byte range of MSH-10 within the MSH segment: after the ninth field separator (the first
/// is MSH-1 itself, right after "MSH"), up to the next one.
fn msh10_span(segment: &[u8], separator: u8) -> Option<Range<usize>> {
    let mut separators = segment.iter().enumerate().filter(|(_, &b)| b == separator).map(|(i, _)| i);
    let start = separators.nth(8)? + 1;
    let end = separators.next().unwrap_or(segment.len());
    Some(start..end)
}

/// Control ids unique to one connection of one run: `B`, the run tag (start time and pid,
/// base 36), the connection number (base 36), `.`, a sequence number. Up to 64
/// connections and 10^8 messages per connection this stays within 20 characters, the
/// MSH-10 length of HL7 v2.5. Unique across runs too, so a listener's duplicate detection
/// never turns a benchmark into a duplicate test.
struct ControlIds {
    prefix: Vec<u8>,
    next: u64,
}

impl ControlIds {
    fn new(run_tag: &str, connection: u32) -> ControlIds {
        let mut prefix = format!("B{run_tag}").into_bytes();
        push_base36(&mut prefix, u64::from(connection), 1);
        prefix.push(b'.');
        ControlIds { prefix, next: 1 }
    }

    fn write_next(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        push_decimal(out, self.next);
        self.next += 1;
    }
}

/// Eight base-36 characters from the time and the process id.
fn run_tag() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut tag = Vec::with_capacity(8);
    push_base36(&mut tag, secs % 36u64.pow(6), 6);
    push_base36(&mut tag, u64::from(std::process::id()) % (36 * 36), 2);
    // Only ASCII digits and letters were pushed.
    String::from_utf8(tag).expect("base 36 is ASCII")
}

fn push_base36(out: &mut Vec<u8>, mut n: u64, min_width: usize) {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    while n > 0 || tmp.len() - i < min_width {
        i -= 1;
        tmp[i] = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    out.extend_from_slice(&tmp[i..]);
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
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
        let id = plan.template.write_framed(&mut link.ids, &mut link.out);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
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
        json
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let transport = if self.tls { "TLS" } else { "plaintext" };
        let mode = if self.handshakes_mode { "new connection per message" } else { "persistent" };
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
    fn template_finds_msh10_and_rewrites_only_it() {
        let template = Template::new(DEFAULT_MESSAGE).unwrap();
        assert_eq!(&template.message[template.control_id.clone()], b"MSG00001");
        let mut ids = ControlIds::new("TAG", 3);
        let mut out = Vec::new();
        let id = template.write_framed(&mut ids, &mut out);
        assert_eq!(&out[id.clone()], b"BTAG3.1");
        assert_eq!(out[0], 0x0B);
        assert!(out.ends_with(&[0x1C, 0x0D]));
        let payload = &out[1..out.len() - 2];
        let msh = Msh::parse(payload).unwrap();
        assert_eq!(msh.control_id, b"BTAG3.1");
        let expected = String::from_utf8_lossy(DEFAULT_MESSAGE)
            .replacen("|REGADT|", "|HL7D-BENCH|", 1)
            .replacen("|MSG00001|P|", "|BTAG3.1|T|", 1);
        assert_eq!(String::from_utf8_lossy(payload), expected);
        assert_eq!(template.message.len(), 612);
        // The buffer is reused: the next message has the next id and the same length.
        let id2 = template.write_framed(&mut ids, &mut out);
        assert_eq!(&out[id2], b"BTAG3.2");
    }

    #[test]
    fn template_handles_last_field_and_custom_separator() {
        let template = Template::new(b"MSH#^~\\&#A#B#C#D#2026##ADT^A01#ID9").unwrap();
        assert_eq!(&template.message[template.control_id.clone()], b"ID9");
        assert_eq!(template.message, b"MSH#^~\\&#HL7D-BENCH#B#C#D#2026##ADT^A01#ID9#T");
        let template = Template::new(b"\r\nMSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\rPID|1\r").unwrap();
        assert!(template.control_id.is_empty());
        assert_eq!(&template.message[template.control_id.start - 1..template.control_id.start + 2], b"||T");
    }

    /// #13 item 12: bench messages looked like production ones (the template's MSH-3 and
    /// MSH-11 as given), so a run against a production store could not be told apart.
    #[test]
    fn bench_messages_say_what_they_are() {
        for raw in [DEFAULT_MESSAGE, b"MSH|^~\\&|LAB|F|C|D|2026||ORU^R01|X1|P^T|2.5\rOBX|1\r"] {
            let template = Template::new(raw).unwrap();
            let msh = Msh::parse(&template.message).unwrap();
            assert_eq!(msh.sending_application, BENCH_SENDING_APPLICATION.as_bytes());
            assert_eq!(msh.processing_id, BENCH_PROCESSING_ID.as_bytes());
            // Everything else as given.
            let given = Msh::parse(raw).unwrap();
            assert_eq!(msh.sending_facility, given.sending_facility);
            assert_eq!(msh.message_type.code, given.message_type.code);
        }
    }

    #[test]
    fn template_refuses_messages_that_cannot_be_benchmarked() {
        assert!(Template::new(b"PID|1\r").is_err());
        let short = Template::new(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01\r").unwrap_err();
        assert!(short.contains("MSH-10"), "{short}");
        let no_ack = Template::new(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|X1|P|2.5|||NE|NE\r").unwrap_err();
        assert!(no_ack.contains("MSH-15 = NE"), "{no_ack}");
        // ER answers only failures: every accepted message would time out waiting for its ACK.
        let error_only = Template::new(b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|X1|P|2.5|||ER|NE\r").unwrap_err();
        assert!(error_only.contains("MSH-15 = ER"), "{error_only}");
        for wanted in [&b"|||AL|NE"[..], b"|||SU|NE", b""] {
            let mut raw = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|X1|P|2.5".to_vec();
            raw.extend_from_slice(wanted);
            raw.push(b'\r');
            assert!(Template::new(&raw).is_ok(), "{}", wanted.escape_ascii());
        }
    }

    #[test]
    fn control_ids_are_unique_and_fit_msh10() {
        let tag = run_tag();
        assert_eq!(tag.len(), 8);
        let mut seen = std::collections::HashSet::new();
        for connection in [0, 1, 35, 36, 63] {
            let mut ids = ControlIds::new(&tag, connection);
            for _ in 0..1000 {
                let mut out = Vec::new();
                ids.write_next(&mut out);
                assert!(seen.insert(out));
            }
        }
        let mut ids = ControlIds::new(&tag, 63);
        ids.next = 99_999_999;
        let mut out = Vec::new();
        ids.write_next(&mut out);
        assert!(out.len() <= 20, "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn digits() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        push_decimal(&mut out, 1234567890);
        push_base36(&mut out, 0, 2);
        push_base36(&mut out, 36 * 36 - 1, 1);
        assert_eq!(out, b"0123456789000ZZ");
    }

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
