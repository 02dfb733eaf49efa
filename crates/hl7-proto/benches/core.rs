//! Micro-benchmarks of the protocol core on the ADT^A01 v2.5 sample: MLLP decode, inspect
//! (parse + MSH view + checks + charset), ACK decision and build, and the whole per-message
//! pipeline, next to a memcpy baseline so results can be read as ratios on a noisy machine.
//!
//! Run: `cargo bench -p hl7-proto --bench core`. Every benchmark processes one message per
//! iteration (`Throughput::Elements(1)`), so criterion reports time/message and messages/s.
//! Results and how to read them: `BENCHMARKS.md` at the repository root.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hl7_proto::ack::{self, AckParams, AckPolicy, Outcome};
use hl7_proto::charset::Charset;
use hl7_proto::inbound::inspect;
use hl7_proto::mllp::{self, Decoder, DecoderConfig, Framing};

/// The ADT^A01 v2.5 sample (enhanced mode, MSH-15 `AL`: every message gets a CA).
const MESSAGE: &[u8] = include_bytes!("../tests/fixtures/adt_a01_v25.hl7");
/// Messages in the framed stream the decoder is fed.
const STREAM_MESSAGES: usize = 64;
/// Size of each push into the decoder, like one socket read.
const CHUNK: usize = 16 * 1024;
/// Fixed MSH-7 and MSH-10 of the ACK: the core takes time and ids as arguments.
const TIMESTAMP: &[u8] = b"20261128093000+0000";
const CONTROL_ID: &[u8] = b"ACK0000000001";

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

/// Reused buffers of the pipeline: the ACK message and its framed bytes.
struct Pipeline {
    feed: Feed,
    ack: Vec<u8>,
    out: Vec<u8>,
}

impl Pipeline {
    fn new() -> Pipeline {
        Pipeline { feed: Feed::new(), ack: Vec::with_capacity(256), out: Vec::with_capacity(256) }
    }

    /// Decode one frame, inspect it, decide and build its ACK, frame the ACK into `out`.
    /// Returns the number of bytes to write back.
    fn step(&mut self) -> usize {
        let frame = self.feed.next_frame();
        let seen = inspect(&frame, Charset::Utf8, false);
        let outcome = if seen.is_acceptable() { Outcome::Accepted } else { Outcome::Rejected };
        self.out.clear();
        if let Some(code) = ack::decide(seen.msh.as_ref(), AckPolicy::Msh, outcome) {
            let error = seen.problem.as_ref().map(Into::into);
            let params = AckParams {
                code,
                control_id: CONTROL_ID,
                timestamp: TIMESTAMP,
                charset: seen.charset,
                error,
            };
            self.ack.clear();
            ack::build_ack(seen.msh.as_ref(), &params, &mut self.ack);
            mllp::encode(&Framing::DEFAULT, &self.ack, &mut self.out);
        }
        self.out.len()
    }
}

/// Checks once that the benchmarked path is the intended one (the sample is accepted and
/// answered with a CA), so a regression to an error path cannot pass for a speed-up.
fn sanity_check() {
    let mut pipeline = Pipeline::new();
    for _ in 0..3 * STREAM_MESSAGES {
        assert!(pipeline.step() > 0);
        let ack = &pipeline.out[1..pipeline.out.len() - 2];
        let seen = inspect(ack, Charset::Utf8, false);
        assert!(seen.is_acceptable(), "{:?}", seen.problem);
        assert!(ack.windows(17).any(|w| w == b"\rMSA|CA|MSG00001\r"), "{}", String::from_utf8_lossy(ack));
    }
}

fn core(c: &mut Criterion) {
    sanity_check();
    let mut group = c.benchmark_group("adt_a01");
    group.throughput(Throughput::Elements(1));

    // Baseline: one copy of the message into a reused buffer (no allocation).
    let mut copy = Vec::with_capacity(MESSAGE.len());
    group.bench_function("baseline_memcpy", |b| {
        b.iter(|| {
            copy.clear();
            copy.extend_from_slice(black_box(MESSAGE));
            black_box(copy.as_ptr());
        })
    });

    // Second baseline: allocate, copy and free, which the decoder does once per frame.
    group.bench_function("baseline_to_vec", |b| b.iter(|| black_box(black_box(MESSAGE).to_vec())));

    let mut feed = Feed::new();
    group.bench_function("mllp_decode", |b| b.iter(|| black_box(feed.next_frame())));

    group.bench_function("inspect", |b| {
        b.iter(|| black_box(inspect(black_box(MESSAGE), Charset::Utf8, false)))
    });

    let seen = inspect(MESSAGE, Charset::Utf8, false);
    let mut out = Vec::with_capacity(256);
    group.bench_function("ack_build", |b| {
        b.iter(|| {
            let msh = black_box(seen.msh.as_ref());
            let code = ack::decide(msh, AckPolicy::Msh, Outcome::Accepted).expect("AL asks for an ACK");
            let params = AckParams {
                code,
                control_id: CONTROL_ID,
                timestamp: TIMESTAMP,
                charset: seen.charset,
                error: None,
            };
            out.clear();
            ack::build_ack(msh, &params, &mut out);
            black_box(out.as_ptr());
        })
    });

    let mut pipeline = Pipeline::new();
    group.bench_function("pipeline", |b| b.iter(|| black_box(pipeline.step())));

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
criterion_main!(benches);
