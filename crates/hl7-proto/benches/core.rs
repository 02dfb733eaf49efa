//! Micro-benchmarks of the protocol core on the ADT^A01 v2.5 sample: MLLP decode, inspect
//! (parse + MSH view + checks + charset), ACK decision and build, and the whole per-message
//! pipeline, next to memcpy baselines so results can be read as ratios on a noisy machine.
//!
//! Run: `cargo bench -p hl7-proto --bench core`. Every benchmark processes one message per
//! iteration (`Throughput::Elements(1)`), so criterion reports time/message and messages/s.
//!
//! Loop mode, for instruction counts that do not depend on machine load: with
//! `HL7_BENCH_LOOP=<bench>:<count>` set, the binary runs that benchmark's per-message code
//! `count` times without criterion and exits, e.g. under `valgrind --tool=callgrind`.
//! Results and how to read them: `BENCHMARKS.md` at the repository root.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use hl7_proto::ack::{self, AckParams, AckPolicy, Outcome};
use hl7_proto::charset::Charset;
use hl7_proto::extract;
use hl7_proto::inbound::{inspect, Inspection};
use hl7_proto::keys::{lane_key, LaneOrder};
use hl7_proto::mllp::{self, Decoder, DecoderConfig, Framing};
use hl7_proto::refusal::Refusal;

/// The ADT^A01 v2.5 sample (enhanced mode, MSH-15 `AL`: every message gets a CA).
const MESSAGE: &[u8] = include_bytes!("../tests/fixtures/adt_a01_v25.hl7");
/// Messages in the framed stream the decoder is fed.
const STREAM_MESSAGES: usize = 64;
/// Size of each push into the decoder, like one socket read.
const CHUNK: usize = 16 * 1024;
/// Fixed MSH-7 and MSH-10 of the ACK: the core takes time and ids as arguments.
const TIMESTAMP: &[u8] = b"20261128093000+0000";
const CONTROL_ID: &[u8] = b"ACK0000000001";

/// Benchmark names, in the order they run.
const NAMES: [&str; 8] = [
    "baseline_memcpy",
    "baseline_to_vec",
    "mllp_decode",
    "inspect",
    "ack_build",
    "pipeline",
    "extract",
    "extract_with_header",
];

/// `STREAM_MESSAGES` framed copies of the sample, back to back.
fn framed_stream() -> Vec<u8> {
    let mut stream = Vec::with_capacity(STREAM_MESSAGES * (MESSAGE.len() + 3));
    for _ in 0..STREAM_MESSAGES {
        mllp::encode(&Framing::DEFAULT, MESSAGE, &mut stream);
    }
    stream
}

/// A decoder fed an endless stream: the framed messages repeated forever, pushed in
/// `CHUNK`-byte pieces. Chunks straddle frame boundaries, so partial frames are carried
/// over between pushes as on a real connection, and the push cost is spread over the
/// frames each chunk completes.
struct Feed {
    decoder: Decoder,
    stream: Vec<u8>,
    at: usize,
}

impl Feed {
    fn new() -> Feed {
        Feed { decoder: Decoder::new(DecoderConfig::default()), stream: framed_stream(), at: 0 }
    }

    /// The next frame payload, pushing the next chunk whenever the decoder runs dry.
    fn next_frame(&mut self) -> Vec<u8> {
        loop {
            match self.decoder.next_frame() {
                Some(Ok(frame)) => return frame,
                Some(Err(e)) => panic!("the sample stream decodes cleanly: {e}"),
                None => {
                    let end = (self.at + CHUNK).min(self.stream.len());
                    self.decoder.push(&self.stream[self.at..end]);
                    self.at = if end == self.stream.len() { 0 } else { end };
                }
            }
        }
    }
}

/// State of every benchmark; each method is the work for one message.
struct Bench {
    feed: Feed,
    /// The sample inspected once, for `ack_build`.
    seen: Inspection<'static>,
    /// Reused buffers: message copy, ACK message, framed ACK.
    copy: Vec<u8>,
    ack: Vec<u8>,
    out: Vec<u8>,
}

impl Bench {
    fn new() -> Bench {
        Bench {
            feed: Feed::new(),
            seen: inspect(MESSAGE, Charset::Utf8, false),
            copy: Vec::with_capacity(MESSAGE.len()),
            ack: Vec::with_capacity(256),
            out: Vec::with_capacity(256),
        }
    }

    /// Baseline: one copy of the message into a reused buffer (no allocation).
    fn baseline_memcpy(&mut self) {
        self.copy.clear();
        self.copy.extend_from_slice(black_box(MESSAGE));
        black_box(self.copy.as_ptr());
    }

    /// Second baseline: allocate, copy and free, which the decoder does once per frame.
    fn baseline_to_vec(&mut self) {
        black_box(black_box(MESSAGE).to_vec());
    }

    fn mllp_decode(&mut self) {
        black_box(self.feed.next_frame());
    }

    fn inspect(&mut self) {
        black_box(inspect(black_box(MESSAGE), Charset::Utf8, false));
    }

    /// The store's key fields of an inspected message: what the listener's `record` adds
    /// to `inspect` (the key fields read from the frame, and both lane keys).
    fn extract(&mut self) {
        let fields = extract::extract(black_box(MESSAGE), Charset::Utf8);
        black_box(lane_key(LaneOrder::PerSender, &fields));
        black_box(lane_key(LaneOrder::PerPatient, &fields));
        black_box(fields);
    }

    /// The same from the header `inspect` built (the MSH is not split again).
    fn extract_with_header(&mut self) {
        let msh = self.seen.msh().expect("the sample has a header");
        let fields = extract::extract_with_header(black_box(MESSAGE), msh, Charset::Utf8);
        black_box(lane_key(LaneOrder::PerSender, &fields));
        black_box(lane_key(LaneOrder::PerPatient, &fields));
        black_box(fields);
    }

    /// `ack::decide` and `ack::build_ack` into a reused buffer (not framed).
    fn ack_build(&mut self) {
        let msh = black_box(self.seen.msh());
        let code = ack::decide(msh, AckPolicy::Msh, Outcome::Accepted).expect("AL asks for an ACK");
        let params = AckParams {
            code,
            control_id: CONTROL_ID,
            timestamp: TIMESTAMP,
            charset: self.seen.charset(),
            error: None,
        };
        self.ack.clear();
        ack::build_ack(msh, &params, &mut self.ack);
        black_box(self.ack.as_ptr());
    }

    /// Decode one frame, inspect it, decide and build its ACK, frame the ACK into `out`.
    /// Returns the number of bytes to write back.
    fn pipeline(&mut self) -> usize {
        let frame = self.feed.next_frame();
        let seen = inspect(&frame, Charset::Utf8, false);
        let outcome = seen.refusal().map_or(Outcome::Accepted, Refusal::outcome);
        self.out.clear();
        if let Some(code) = ack::decide(seen.msh(), AckPolicy::Msh, outcome) {
            let error = seen.refusal().map(Refusal::ack_error);
            let params = AckParams {
                code,
                control_id: CONTROL_ID,
                timestamp: TIMESTAMP,
                charset: seen.charset(),
                error,
            };
            self.ack.clear();
            ack::build_ack(seen.msh(), &params, &mut self.ack);
            mllp::encode(&Framing::DEFAULT, &self.ack, &mut self.out);
        }
        black_box(self.out.len())
    }

    /// Runs benchmark `name` `count` times; false for an unknown name.
    fn run(&mut self, name: &str, count: u64) -> bool {
        match name {
            "baseline_memcpy" => self.repeat(count, Bench::baseline_memcpy),
            "baseline_to_vec" => self.repeat(count, Bench::baseline_to_vec),
            "mllp_decode" => self.repeat(count, Bench::mllp_decode),
            "inspect" => self.repeat(count, Bench::inspect),
            "ack_build" => self.repeat(count, Bench::ack_build),
            "extract" => self.repeat(count, Bench::extract),
            "extract_with_header" => self.repeat(count, Bench::extract_with_header),
            "pipeline" => self.repeat(count, |b| {
                b.pipeline();
            }),
            _ => return false,
        }
        true
    }

    /// Calls `step` `count` times; generic, so each loop calls its step directly.
    fn repeat(&mut self, count: u64, step: impl Fn(&mut Bench)) {
        for _ in 0..count {
            step(self);
        }
    }
}

/// Checks once that the benchmarked path is the intended one (the sample is accepted and
/// answered with a CA), so a regression to an error path cannot pass for a speed-up.
fn sanity_check() {
    let mut bench = Bench::new();
    for _ in 0..3 * STREAM_MESSAGES {
        assert!(bench.pipeline() > 0);
        let ack = &bench.out[1..bench.out.len() - 2];
        let seen = inspect(ack, Charset::Utf8, false);
        assert!(matches!(seen, Inspection::Accept { .. }), "{:?}", seen.refusal());
        assert!(ack.windows(17).any(|w| w == b"\rMSA|CA|MSG00001\r"), "{}", String::from_utf8_lossy(ack));
    }
}

fn core(c: &mut Criterion) {
    sanity_check();
    let mut bench = Bench::new();
    let mut group = c.benchmark_group("adt_a01");
    group.throughput(Throughput::Elements(1));
    // Each closure calls its method directly (no dispatch) so the baselines stay honest.
    group.bench_function(NAMES[0], |b| b.iter(|| bench.baseline_memcpy()));
    group.bench_function(NAMES[1], |b| b.iter(|| bench.baseline_to_vec()));
    group.bench_function(NAMES[2], |b| b.iter(|| bench.mllp_decode()));
    group.bench_function(NAMES[3], |b| b.iter(|| bench.inspect()));
    group.bench_function(NAMES[4], |b| b.iter(|| bench.ack_build()));
    group.bench_function(NAMES[5], |b| b.iter(|| bench.pipeline()));
    group.bench_function(NAMES[6], |b| b.iter(|| bench.extract()));
    group.bench_function(NAMES[7], |b| b.iter(|| bench.extract_with_header()));
    group.finish();
}

fn config() -> Criterion {
    // Short run: the benchmark machine has two shared cores.
    Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = core
}

/// `HL7_BENCH_LOOP=<bench>:<count>`: run one benchmark's per-message code without criterion.
fn loop_mode(spec: &str) {
    let parsed = spec.split_once(':').and_then(|(name, count)| Some((name, count.parse().ok()?)));
    let Some((name, count)) = parsed else {
        panic!("HL7_BENCH_LOOP must be <bench>:<count>, got {spec:?}");
    };
    sanity_check();
    assert!(Bench::new().run(name, count), "unknown benchmark {name:?}; one of {NAMES:?}");
}

// `criterion_main!` plus the loop mode.
fn main() {
    if let Ok(spec) = std::env::var("HL7_BENCH_LOOP") {
        loop_mode(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
