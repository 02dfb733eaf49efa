//! MLLP framing: `<SB> payload <EB><CR>` (HL7 v2 Minimal Lower Layer Protocol, Release 1/2).
//!
//! Owns the byte framing only: the streaming [`Decoder`], the [`encode`] side, and the MLLP
//! Release 2 commit acknowledgement bytes ([`COMMIT_ACK`], [`COMMIT_NAK`]). It never looks
//! inside a payload and does no I/O: bytes are pushed in by the caller and whole frames come
//! out, so every framing edge case is a unit test.

use memchr::memchr2;
use thiserror::Error;

/// Default MLLP start block (vertical tab).
pub const START_BLOCK: u8 = 0x0B;
/// Default MLLP end block (file separator).
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return that follows the end block.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Longest start or end sequence a profile may configure.
pub const MAX_MARKER_LEN: usize = 4;

/// The framing bytes of one listener profile: a start sequence and an end sequence of
/// 1–4 bytes each (default `0x0B` … `0x1C 0x0D`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Framing {
    start: [u8; MAX_MARKER_LEN],
    start_len: u8,
    end: [u8; MAX_MARKER_LEN],
    end_len: u8,
}

/// A framing configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// A start or end sequence is empty or longer than [`MAX_MARKER_LEN`] bytes.
    #[error("{which} sequence must be 1 to {MAX_MARKER_LEN} bytes, got {len}")]
    BadLength {
        /// `"start"` or `"end"`.
        which: &'static str,
        /// The length given.
        len: usize,
    },
}

impl Framing {
    /// Standard MLLP framing: start `0x0B`, end `0x1C 0x0D`.
    pub const DEFAULT: Framing = Framing {
        start: [START_BLOCK, 0, 0, 0],
        start_len: 1,
        end: [END_BLOCK, CARRIAGE_RETURN, 0, 0],
        end_len: 2,
    };

    /// Custom framing bytes; each sequence must be 1 to 4 bytes long.
    pub fn new(start: &[u8], end: &[u8]) -> Result<Framing, FramingError> {
        fn pack(which: &'static str, bytes: &[u8]) -> Result<([u8; MAX_MARKER_LEN], u8), FramingError> {
            if bytes.is_empty() || bytes.len() > MAX_MARKER_LEN {
                return Err(FramingError::BadLength { which, len: bytes.len() });
            }
            let mut out = [0; MAX_MARKER_LEN];
            out[..bytes.len()].copy_from_slice(bytes);
            // The length is at most MAX_MARKER_LEN (4), so it fits in a u8.
            Ok((out, bytes.len() as u8))
        }
        let (start, start_len) = pack("start", start)?;
        let (end, end_len) = pack("end", end)?;
        Ok(Framing { start, start_len, end, end_len })
    }

    /// The start sequence.
    pub fn start(&self) -> &[u8] {
        &self.start[..usize::from(self.start_len)]
    }

    /// The end sequence.
    pub fn end(&self) -> &[u8] {
        &self.end[..usize::from(self.end_len)]
    }
}

impl Default for Framing {
    fn default() -> Self {
        Framing::DEFAULT
    }
}

impl std::fmt::Debug for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Framing(start={:02X?}, end={:02X?})", self.start(), self.end())
    }
}

/// How many payload bytes a [`FrameError::TooLarge`] or [`FrameError::Truncated`] keeps:
/// enough for the MSH segment (MSH-10 control id, MSH-9 message type) and the first
/// segments, so the caller can NACK a frame it had to reject and keep its start, without
/// holding on to a whole oversized payload.
pub const ERROR_PREFIX_LEN: usize = 4096;

/// MLLP Release 2 commit acknowledgement byte (ASCII ACK): the receiver has stored the
/// message and taken over responsibility for it.
pub const COMMIT_ACK: u8 = 0x06;

/// MLLP Release 2 negative commit acknowledgement byte (ASCII NAK): the receiver could not
/// store the message, so the sender must keep it and retry.
pub const COMMIT_NAK: u8 = 0x15;

/// Frames up to this many payload bytes are accepted by [`DecoderConfig::default`].
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1024 * 1024;

/// Settings of one [`Decoder`], one per listener profile.
///
/// Every limit here bounds what a peer can make the decoder hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Start and end sequences of this profile.
    pub framing: Framing,
    /// Largest payload (bytes between the start and end sequence) accepted. A larger frame
    /// is reported once as [`FrameError::TooLarge`] and skipped without being buffered, so
    /// the decoder never holds more than this plus one pushed chunk.
    pub max_frame_size: usize,
    /// End a frame at the first byte of the end sequence instead of requiring all of it.
    ///
    /// Some senders omit the trailing `0x0D` of `<EB><CR>` and then wait for the ACK; a
    /// strict decoder would wait with them until a timeout. When set, the remaining end
    /// bytes are consumed silently if they do arrive.
    pub lenient_end: bool,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            framing: Framing::DEFAULT,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            lenient_end: false,
        }
    }
}

/// A frame the decoder had to reject. The connection survives: decoding resumes with the
/// next frame.
///
/// Each variant carries payload bytes so the caller can still read the MSH, send a NACK and
/// keep what was refused: [`FrameError::TooLarge`] and [`FrameError::Truncated`] the first
/// ones (at most [`ERROR_PREFIX_LEN`] and at most `max_frame_size`), [`FrameError::BadEnd`]
/// the whole payload, which was read to its end and fits `max_frame_size`. Those bytes are
/// patient data: neither `Display` nor `Debug` print them, only their length.
#[derive(Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The payload grew past [`DecoderConfig::max_frame_size`]. Reported once per frame; the
    /// rest of that frame is dropped unbuffered up to its end sequence. Whatever else ends a
    /// frame ends the discard too: a new start sequence begins the next frame (so a sender
    /// that abandons a huge frame and resends does not lose the resend), and in strict mode
    /// a broken end resyncs as for [`FrameError::BadEnd`]. No second error is reported.
    #[error("frame payload exceeds the {limit} byte limit")]
    TooLarge {
        /// The configured `max_frame_size`.
        limit: usize,
        /// First payload bytes.
        prefix: Vec<u8>,
    },
    /// A start sequence arrived before the end sequence; the sender most likely gave up on
    /// this frame. The new start begins the next frame.
    #[error("frame truncated: a start sequence arrived before the end sequence")]
    Truncated {
        /// First payload bytes of the abandoned frame.
        prefix: Vec<u8>,
    },
    /// Strict mode only: the first end byte was followed by a byte that does not continue
    /// the end sequence (e.g. `0x1C 0x0B`). The offending byte is examined again as data
    /// between frames.
    #[error("frame has a malformed end sequence")]
    BadEnd {
        /// The whole payload, up to the broken end sequence (at most `max_frame_size`
        /// bytes): the frame was complete but for its end, so the refused message can be kept
        /// as it came.
        payload: Vec<u8>,
    },
}

impl FrameError {
    /// The payload bytes the error keeps (the first ones, or for [`FrameError::BadEnd`] all
    /// of them), for reading its MSH to build a NACK and for keeping the refused frame.
    pub fn prefix(&self) -> &[u8] {
        match self {
            FrameError::TooLarge { prefix, .. } | FrameError::Truncated { prefix } => prefix,
            FrameError::BadEnd { payload } => payload,
        }
    }
}

// Hand-written so that `{:?}` in a log line cannot leak payload bytes.
impl std::fmt::Debug for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix_len = self.prefix().len();
        match self {
            FrameError::TooLarge { limit, .. } => {
                f.debug_struct("TooLarge").field("limit", limit).field("prefix_len", &prefix_len).finish()
            }
            FrameError::Truncated { .. } => {
                f.debug_struct("Truncated").field("prefix_len", &prefix_len).finish()
            }
            FrameError::BadEnd { .. } => f.debug_struct("BadEnd").field("payload_len", &prefix_len).finish(),
        }
    }
}

/// Streaming MLLP frame decoder (HL7 v2 Appendix C, Minimal Lower Layer Protocol; MLLP
/// Release 2 uses the same framing).
///
/// Feed it whatever the socket returned with [`push`](Decoder::push), then call
/// [`next_frame`](Decoder::next_frame) until it returns `None`. Chunk boundaries never
/// change the output: a stream split at any offset yields the same frames and errors.
///
/// * Bytes between frames (NUL, CR, LF, keep-alive junk) are skipped and counted in
///   [`junk_bytes`](Decoder::junk_bytes).
/// * A frame whose payload exceeds `max_frame_size` yields [`FrameError::TooLarge`] once;
///   the rest of it is dropped as it arrives, up to whatever ends the frame.
/// * A start sequence inside a frame yields [`FrameError::Truncated`] and starts a new frame.
/// * In strict mode a broken end sequence yields [`FrameError::BadEnd`].
///
/// Memory stays bounded by `max_frame_size` plus one pushed chunk (and a few marker bytes),
/// provided `next_frame` is drained after every `push`.
pub struct Decoder {
    config: DecoderConfig,
    /// Received bytes; everything before `pos` is consumed and dropped on the next `push`.
    buf: Vec<u8>,
    /// First unconsumed byte of `buf`. In [`State::InFrame`] this is the first payload byte.
    pos: usize,
    state: State,
    junk: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames, looking for a start sequence.
    Idle,
    /// Inside a frame whose payload starts at `pos`. The first `scanned` payload bytes are
    /// known not to hold a marker, so they are not searched again.
    InFrame { scanned: usize },
    /// Inside a frame already reported as too large: bytes are dropped until the frame ends.
    Discarding,
    /// Lenient mode: the frame ended at the first end byte; `matched` end bytes are
    /// consumed and the rest are swallowed if they follow.
    EndTail { matched: usize },
}

impl Decoder {
    /// A decoder with an empty buffer, between frames.
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder { config, buf: Vec::new(), pos: 0, state: State::Idle, junk: 0 }
    }

    /// Appends received bytes. Call [`next_frame`](Decoder::next_frame) until it returns
    /// `None` before the next push, or the buffer grows with every push.
    pub fn push(&mut self, data: &[u8]) {
        // Compact first, so consumed frames and discarded bytes never accumulate.
        if self.pos == self.buf.len() {
            self.buf.clear();
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
        }
        self.pos = 0;
        // One large frame must not pin its buffer for the life of the connection. Shrinking
        // only far above the retained size keeps ordinary reads from reallocating each time.
        if self.buf.capacity() > 4 * RETAINED_CAPACITY && self.buf.len() + data.len() <= RETAINED_CAPACITY {
            self.buf.shrink_to(RETAINED_CAPACITY);
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame payload (between start and end sequence, exclusive), or a
    /// rejected frame, or `None` when more bytes are needed.
    ///
    /// An `Err` is not fatal: keep calling to get the frames after it.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        loop {
            let step = match self.state {
                State::Idle => self.step_idle(),
                State::InFrame { scanned } => self.step_in_frame(scanned),
                State::Discarding => self.step_discarding(),
                State::EndTail { matched } => self.step_end_tail(matched),
            };
            match step {
                Step::Continue => {}
                Step::NeedMore => return None,
                Step::Yield(item) => return Some(item),
            }
        }
    }

    /// Total bytes skipped between frames since the decoder was created. Not an error:
    /// senders pad with CR/LF or NUL, but a growing count points at a misconfigured peer.
    pub fn junk_bytes(&self) -> u64 {
        self.junk
    }

    /// Whether a frame has started and not yet ended (including an oversized frame being
    /// discarded). EOF or a stalled peer at this point means a lost message.
    pub fn is_mid_frame(&self) -> bool {
        matches!(self.state, State::InFrame { .. } | State::Discarding)
    }

    /// Bytes pushed but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn step_idle(&mut self) -> Step {
        let start = self.config.framing.start();
        let rest = &self.buf[self.pos..];
        let Some(offset) = rest.iter().position(|&b| b == start[0]) else {
            self.junk += rest.len() as u64;
            self.pos = self.buf.len();
            return Step::NeedMore;
        };
        self.junk += offset as u64;
        let at = self.pos + offset;
        match match_marker(&self.buf[at..], start) {
            Match::Full => {
                self.pos = at + start.len();
                self.state = State::InFrame { scanned: 0 };
                Step::Continue
            }
            Match::Partial => {
                self.pos = at;
                Step::NeedMore
            }
            Match::Mismatch(_) => {
                // Only the first byte is ruled out: a start may begin inside the mismatch.
                self.junk += 1;
                self.pos = at + 1;
                Step::Continue
            }
        }
    }

    fn step_in_frame(&mut self, scanned: usize) -> Step {
        let framing = self.config.framing;
        let (start, end) = (framing.start(), framing.end());
        let limit = self.config.max_frame_size;
        let from = self.pos + scanned;
        let Some(offset) = memchr2(start[0], end[0], &self.buf[from..]) else {
            let len = self.buf.len() - self.pos;
            if len > limit {
                return self.too_large(self.buf.len());
            }
            self.state = State::InFrame { scanned: len };
            return Step::NeedMore;
        };
        let at = from + offset;
        let len = at - self.pos;
        if len > limit {
            return self.too_large(at);
        }
        // The end is tested first so that a framing whose start and end share a first byte
        // still terminates frames.
        if self.buf[at] == end[0] {
            if self.config.lenient_end {
                let payload = self.buf[self.pos..at].to_vec();
                self.end_tail(at + 1);
                return Step::Yield(Ok(payload));
            }
            match match_marker(&self.buf[at..], end) {
                Match::Full => {
                    let payload = self.buf[self.pos..at].to_vec();
                    self.pos = at + end.len();
                    self.state = State::Idle;
                    Step::Yield(Ok(payload))
                }
                Match::Partial => {
                    self.state = State::InFrame { scanned: len };
                    Step::NeedMore
                }
                Match::Mismatch(matched) => {
                    // Within `max_frame_size` (checked above), like a frame that ends well.
                    let payload = self.buf[self.pos..at].to_vec();
                    // The byte that broke the end sequence is looked at again between frames.
                    self.pos = at + matched;
                    self.state = State::Idle;
                    Step::Yield(Err(FrameError::BadEnd { payload }))
                }
            }
        } else {
            match match_marker(&self.buf[at..], start) {
                Match::Full => {
                    let prefix = self.prefix(at);
                    self.pos = at + start.len();
                    self.state = State::InFrame { scanned: 0 };
                    Step::Yield(Err(FrameError::Truncated { prefix }))
                }
                Match::Partial => {
                    self.state = State::InFrame { scanned: len };
                    Step::NeedMore
                }
                Match::Mismatch(_) => {
                    // Just a payload byte that happens to equal the first start byte.
                    self.state = State::InFrame { scanned: len + 1 };
                    Step::Continue
                }
            }
        }
    }

    /// Reports the current frame as too large and drops its payload up to `at`, the first
    /// byte not yet known to be payload.
    fn too_large(&mut self, at: usize) -> Step {
        let prefix = self.prefix(at);
        self.pos = at;
        self.state = State::Discarding;
        Step::Yield(Err(FrameError::TooLarge { limit: self.config.max_frame_size, prefix }))
    }

    /// Mirrors `step_in_frame` without keeping bytes or reporting errors: whatever would
    /// have ended the frame (end sequence, new start, broken end) ends the discard, so an
    /// oversized frame that a sender abandoned does not swallow the next one.
    fn step_discarding(&mut self) -> Step {
        let framing = self.config.framing;
        let (start, end) = (framing.start(), framing.end());
        let Some(offset) = memchr2(start[0], end[0], &self.buf[self.pos..]) else {
            self.pos = self.buf.len();
            return Step::NeedMore;
        };
        let at = self.pos + offset;
        if self.buf[at] == end[0] {
            if self.config.lenient_end {
                self.end_tail(at + 1);
                return Step::Continue;
            }
            match match_marker(&self.buf[at..], end) {
                Match::Full => {
                    self.pos = at + end.len();
                    self.state = State::Idle;
                }
                Match::Partial => {
                    self.pos = at;
                    return Step::NeedMore;
                }
                Match::Mismatch(matched) => {
                    self.pos = at + matched;
                    self.state = State::Idle;
                }
            }
        } else {
            match match_marker(&self.buf[at..], start) {
                Match::Full => {
                    self.pos = at + start.len();
                    self.state = State::InFrame { scanned: 0 };
                }
                Match::Partial => {
                    self.pos = at;
                    return Step::NeedMore;
                }
                Match::Mismatch(_) => self.pos = at + 1,
            }
        }
        Step::Continue
    }

    /// Lenient mode: the frame ended at the first end byte, just before `next`.
    fn end_tail(&mut self, next: usize) {
        self.pos = next;
        self.state =
            if self.config.framing.end().len() > 1 { State::EndTail { matched: 1 } } else { State::Idle };
    }

    fn step_end_tail(&mut self, matched: usize) -> Step {
        let end = self.config.framing.end();
        let Some(&byte) = self.buf.get(self.pos) else {
            return Step::NeedMore;
        };
        // At most three bytes pass through here per frame, so byte-at-a-time is fine.
        if end.get(matched) == Some(&byte) {
            self.pos += 1;
            let matched = matched + 1;
            self.state = if matched == end.len() { State::Idle } else { State::EndTail { matched } };
        } else {
            // Not part of the end sequence: examine it as data between frames.
            self.state = State::Idle;
        }
        Step::Continue
    }

    /// The first payload bytes of the frame starting at `pos`, which has `at - pos` bytes.
    fn prefix(&self, at: usize) -> Vec<u8> {
        let len = (at - self.pos).min(self.config.max_frame_size).min(ERROR_PREFIX_LEN);
        self.buf[self.pos..self.pos + len].to_vec()
    }
}

// Hand-written so that `{:?}` cannot print buffered payload bytes.
impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("buffered", &self.buffered())
            .field("junk_bytes", &self.junk)
            .finish()
    }
}

/// Appends one MLLP frame — start sequence, `payload`, end sequence — to `out`.
///
/// MLLP has no escaping: the payload must not contain the start byte or the first end byte
/// (HL7 v2 messages never do), or the receiver will split it.
pub fn encode(framing: &Framing, payload: &[u8], out: &mut Vec<u8>) {
    let (start, end) = (framing.start(), framing.end());
    out.reserve(start.len() + payload.len() + end.len());
    out.extend_from_slice(start);
    out.extend_from_slice(payload);
    out.extend_from_slice(end);
}

/// One MLLP frame around `payload` in a new buffer; see [`encode`].
pub fn encode_to_vec(framing: &Framing, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(framing, payload, &mut out);
    out
}

/// Buffer capacity a [`Decoder`] keeps between frames; above four times this it shrinks
/// back once the large frame that grew it is gone.
const RETAINED_CAPACITY: usize = 64 * 1024;

/// What one state-machine step decided.
enum Step {
    /// State changed; run the next step.
    Continue,
    /// Everything buffered is consumed or waiting on more bytes.
    NeedMore,
    /// A frame or frame error for the caller.
    Yield(Result<Vec<u8>, FrameError>),
}

/// How a marker compares with the bytes at the start of `hay`.
enum Match {
    /// The whole marker is present.
    Full,
    /// `hay` ends before the marker could be confirmed or ruled out.
    Partial,
    /// The first `n` marker bytes match and byte `n` differs.
    Mismatch(usize),
}

fn match_marker(hay: &[u8], marker: &[u8]) -> Match {
    match hay.iter().zip(marker).position(|(h, m)| h != m) {
        Some(n) => Match::Mismatch(n),
        None if hay.len() >= marker.len() => Match::Full,
        None => Match::Partial,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SB: u8 = START_BLOCK;
    const EB: u8 = END_BLOCK;
    const CR: u8 = CARRIAGE_RETURN;

    type Item = Result<Vec<u8>, FrameError>;

    fn strict() -> DecoderConfig {
        DecoderConfig::default()
    }

    fn lenient() -> DecoderConfig {
        DecoderConfig { lenient_end: true, ..DecoderConfig::default() }
    }

    fn drain(decoder: &mut Decoder, out: &mut Vec<Item>) {
        while let Some(item) = decoder.next_frame() {
            out.push(item);
        }
    }

    /// Feeds `chunks` one push at a time, draining after each.
    fn decode_chunks<'a>(
        config: DecoderConfig,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Item>, Decoder) {
        let mut decoder = Decoder::new(config);
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            drain(&mut decoder, &mut out);
        }
        (out, decoder)
    }

    fn decode(config: DecoderConfig, stream: &[u8]) -> (Vec<Item>, Decoder) {
        decode_chunks(config, [stream])
    }

    fn frames(payloads: &[&[u8]]) -> Vec<Item> {
        payloads.iter().map(|p| Ok(p.to_vec())).collect()
    }

    /// Three frames with junk before, between and after them.
    fn sample_stream() -> (Vec<u8>, Vec<Item>, u64) {
        let f = Framing::DEFAULT;
        let mut stream = b"\r\n".to_vec();
        encode(&f, b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1", &mut stream);
        stream.extend_from_slice(&[0x00, CR, 0x0A]);
        encode(&f, b"", &mut stream);
        encode(&f, b"MSH|^~\\&|X\r", &mut stream);
        stream.extend_from_slice(b"zz");
        let expected =
            frames(&[b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1", b"", b"MSH|^~\\&|X\r"]);
        (stream, expected, 7)
    }

    #[test]
    fn stream_split_at_every_pair_of_offsets_gives_same_frames() {
        let (stream, expected, junk) = sample_stream();
        for i in 0..=stream.len() {
            for j in i..=stream.len() {
                let parts = [&stream[..i], &stream[i..j], &stream[j..]];
                let (out, decoder) = decode_chunks(strict(), parts);
                assert_eq!(out, expected, "split at {i} and {j}");
                assert_eq!(decoder.junk_bytes(), junk);
                assert!(!decoder.is_mid_frame());
                assert_eq!(decoder.buffered(), 0);
            }
        }
    }

    #[test]
    fn stream_fed_one_byte_at_a_time_gives_same_frames() {
        let (stream, expected, junk) = sample_stream();
        for config in [strict(), lenient()] {
            let (out, decoder) = decode_chunks(config, stream.chunks(1));
            assert_eq!(out, expected);
            assert_eq!(decoder.junk_bytes(), junk);
        }
    }

    #[test]
    fn several_frames_in_one_chunk() {
        let mut stream = Vec::new();
        for n in 0..50u8 {
            encode(&Framing::DEFAULT, &[b'A' + n % 26; 10], &mut stream);
        }
        let (out, decoder) = decode(strict(), &stream);
        assert_eq!(out.len(), 50);
        assert_eq!(out[3], Ok(vec![b'D'; 10]));
        assert_eq!(decoder.junk_bytes(), 0);
    }

    #[test]
    fn junk_between_frames_is_skipped_and_counted() {
        let mut stream = b"\0\0\r\n".to_vec();
        encode(&Framing::DEFAULT, b"one", &mut stream);
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        encode(&Framing::DEFAULT, b"two", &mut stream);
        stream.extend_from_slice(&[EB, CR, 0x00]);
        let (out, decoder) = decode(strict(), &stream);
        assert_eq!(out, frames(&[b"one", b"two"]));
        assert_eq!(decoder.junk_bytes(), 4 + 18 + 3);
    }

    #[test]
    fn oversized_frame_is_reported_then_next_frame_decodes() {
        let config = DecoderConfig { max_frame_size: 8, ..strict() };
        let mut stream = encode_to_vec(&config.framing, b"MSH|0123456789");
        encode(&config.framing, b"MSH|ok", &mut stream);
        let (out, decoder) = decode(config, &stream);
        assert_eq!(
            out,
            vec![
                Err(FrameError::TooLarge { limit: 8, prefix: b"MSH|0123".to_vec() }),
                Ok(b"MSH|ok".to_vec()),
            ]
        );
        assert_eq!(decoder.junk_bytes(), 0);
    }

    #[test]
    fn payload_of_exactly_the_limit_is_accepted() {
        let config = DecoderConfig { max_frame_size: 4, ..strict() };
        let stream = encode_to_vec(&config.framing, b"1234");
        let (out, _) = decode_chunks(config, stream.chunks(1));
        assert_eq!(out, frames(&[b"1234"]));
    }

    #[test]
    fn too_large_is_reported_once_and_discarded_bytes_are_not_kept() {
        let config = DecoderConfig { max_frame_size: 100, ..strict() };
        let mut decoder = Decoder::new(config);
        let mut out = Vec::new();
        decoder.push(&[SB]);
        for _ in 0..1000 {
            decoder.push(&[b'x'; 64]);
            drain(&mut decoder, &mut out);
            assert!(decoder.is_mid_frame());
            assert!(decoder.buffered() <= 100 + 64);
        }
        decoder.push(&[EB, CR, SB, b'o', b'k', EB, CR]);
        drain(&mut decoder, &mut out);
        assert_eq!(out.len(), 2);
        assert!(matches!(&out[0], Err(FrameError::TooLarge { limit: 100, prefix }) if prefix.len() == 100));
        assert_eq!(out[1], Ok(b"ok".to_vec()));
        assert!(!decoder.is_mid_frame());
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn buffer_shrinks_after_a_large_frame() {
        let mut decoder = Decoder::new(strict());
        decoder.push(&encode_to_vec(&Framing::DEFAULT, &vec![b'x'; 1_000_000]));
        assert_eq!(decoder.next_frame().map(|f| f.map(|p| p.len())), Some(Ok(1_000_000)));
        decoder.push(&encode_to_vec(&Framing::DEFAULT, b"small"));
        assert_eq!(decoder.next_frame(), Some(Ok(b"small".to_vec())));
        assert!(decoder.buf.capacity() <= RETAINED_CAPACITY);
    }

    #[test]
    fn too_large_prefix_is_capped() {
        let payload = vec![b'x'; 2 * ERROR_PREFIX_LEN];
        let config = DecoderConfig { max_frame_size: ERROR_PREFIX_LEN + 1, ..strict() };
        let (out, _) = decode(config, &encode_to_vec(&config.framing, &payload));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap_err().prefix().len(), ERROR_PREFIX_LEN);
    }

    #[test]
    fn start_inside_oversized_frame_ends_the_discard() {
        // A sender that gives up on a huge frame and resends must not lose the resend.
        let config = DecoderConfig { max_frame_size: 4, ..strict() };
        let mut stream = vec![SB];
        stream.extend_from_slice(b"too long");
        encode(&config.framing, b"next", &mut stream);
        let (out, _) = decode(config, &stream);
        assert!(matches!(out[0], Err(FrameError::TooLarge { .. })));
        assert_eq!(out[1..], frames(&[b"next"]));
    }

    #[test]
    fn start_inside_frame_truncates_it_and_begins_a_new_one() {
        let mut stream = vec![SB];
        stream.extend_from_slice(b"MSH|partial");
        encode(&Framing::DEFAULT, b"MSH|whole", &mut stream);
        for chunk in [stream.len(), 1] {
            let (out, _) = decode_chunks(strict(), stream.chunks(chunk));
            assert_eq!(
                out,
                vec![
                    Err(FrameError::Truncated { prefix: b"MSH|partial".to_vec() }),
                    Ok(b"MSH|whole".to_vec()),
                ]
            );
        }
    }

    #[test]
    fn strict_end_waits_for_the_whole_end_sequence() {
        let mut decoder = Decoder::new(strict());
        decoder.push(&[SB, b'a', EB]);
        assert_eq!(decoder.next_frame(), None);
        assert!(decoder.is_mid_frame());
        decoder.push(&[CR]);
        assert_eq!(decoder.next_frame(), Some(Ok(b"a".to_vec())));
        assert!(!decoder.is_mid_frame());
    }

    #[test]
    fn strict_end_rejects_a_broken_end_and_resyncs() {
        let stream = [SB, b'a', EB, SB, b'b', EB, CR];
        for chunk in [stream.len(), 1] {
            let (out, decoder) = decode_chunks(strict(), stream.chunks(chunk));
            assert_eq!(out, vec![Err(FrameError::BadEnd { payload: b"a".to_vec() }), Ok(b"b".to_vec()),]);
            assert_eq!(decoder.junk_bytes(), 0);
        }
    }

    /// Issue 13 item 15: a refused frame is kept in the store, so a broken end gives the
    /// whole payload (it was read to its end), not the first 4 KiB an oversized one gives.
    #[test]
    fn a_broken_end_keeps_the_whole_payload() {
        let payload = vec![b'x'; 3 * ERROR_PREFIX_LEN];
        let mut stream = vec![SB];
        stream.extend_from_slice(&payload);
        stream.extend_from_slice(&[EB, SB, b'b', EB, CR]);
        let config = DecoderConfig { max_frame_size: payload.len(), ..strict() };
        for chunk in [stream.len(), 1000, 1] {
            let (out, _) = decode_chunks(config, stream.chunks(chunk));
            assert_eq!(out, vec![Err(FrameError::BadEnd { payload: payload.clone() }), Ok(b"b".to_vec())]);
        }
    }

    #[test]
    fn lenient_end_yields_at_the_first_end_byte() {
        let mut decoder = Decoder::new(lenient());
        decoder.push(&[SB, b'a', EB]);
        assert_eq!(decoder.next_frame(), Some(Ok(b"a".to_vec())));
        assert!(!decoder.is_mid_frame());
        // The late CR is swallowed, not counted as junk.
        decoder.push(&[CR, SB, b'b', EB, SB, b'c', EB, CR, CR]);
        let mut out = Vec::new();
        drain(&mut decoder, &mut out);
        assert_eq!(out, frames(&[b"b", b"c"]));
        assert_eq!(decoder.junk_bytes(), 1);
    }

    #[test]
    fn custom_multi_byte_markers_split_across_pushes() {
        let cases: [(&[u8], &[u8]); 3] = [
            (&[0x02, 0x0B], &[0x1C, 0x0D]),
            (&[0xAA, 0xBB, 0xCC], &[0x1C, 0x1D, 0x0D]),
            (&[0x01, 0x02, 0x03, 0x04], &[0x05, 0x06, 0x07, 0x08]),
        ];
        for (start, end) in cases {
            let framing = Framing::new(start, end).unwrap();
            let mut stream = b"\r\n".to_vec();
            // A lone first start byte inside the payload is payload, not a new frame.
            let tricky = [b'x', start[0], b'y'];
            for payload in [&b"MSH|one"[..], b"", &tricky] {
                encode(&framing, payload, &mut stream);
                stream.push(start[0]);
            }
            let expected = frames(&[b"MSH|one", b"", &tricky]);
            for lenient_end in [false, true] {
                let config = DecoderConfig { framing, lenient_end, ..DecoderConfig::default() };
                for i in 0..=stream.len() {
                    for j in i..=stream.len() {
                        let parts = [&stream[..i], &stream[i..j], &stream[j..]];
                        let (out, decoder) = decode_chunks(config, parts);
                        assert_eq!(out, expected, "{framing:?} split at {i} and {j}");
                        assert_eq!(decoder.junk_bytes(), 2 + 2, "{framing:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn framing_rejects_empty_and_five_byte_sequences() {
        assert_eq!(Framing::new(&[], &[EB]), Err(FramingError::BadLength { which: "start", len: 0 }));
        assert_eq!(
            Framing::new(&[SB], &[1, 2, 3, 4, 5]),
            Err(FramingError::BadLength { which: "end", len: 5 })
        );
        assert!(Framing::new(&[1, 2, 3, 4], &[5]).is_ok());
    }

    #[test]
    fn errors_never_print_payload_bytes() {
        let prefix = b"PID|1||SECRET".to_vec();
        let errors = [
            FrameError::TooLarge { limit: 13, prefix: prefix.clone() },
            FrameError::Truncated { prefix: prefix.clone() },
            FrameError::BadEnd { payload: prefix },
        ];
        for error in errors {
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(!text.contains("SECRET") && !text.contains("80, 73, 68"), "{text}");
            }
        }
        let mut decoder = Decoder::new(strict());
        decoder.push(b"\x0bPID|1||SECRET");
        assert_eq!(decoder.next_frame(), None);
        assert!(!format!("{decoder:?}").contains("SECRET"));
    }

    #[test]
    fn error_messages_are_lower_case_without_trailing_period() {
        let error = FrameError::TooLarge { limit: 1048576, prefix: Vec::new() };
        assert_eq!(error.to_string(), "frame payload exceeds the 1048576 byte limit");
    }

    /// Framings drawn from a tiny alphabet so that markers, partial markers and collisions
    /// between start and end bytes all turn up in random input.
    fn small_framing() -> impl Strategy<Value = Framing> {
        let marker = || prop::collection::vec(0u8..4, 1..=MAX_MARKER_LEN);
        prop_oneof![
            Just(Framing::DEFAULT),
            (marker(), marker()).prop_map(|(s, e)| Framing::new(&s, &e).unwrap()),
        ]
    }

    fn config() -> impl Strategy<Value = DecoderConfig> {
        (small_framing(), 0usize..16, any::<bool>()).prop_map(|(framing, max_frame_size, lenient_end)| {
            DecoderConfig { framing, max_frame_size, lenient_end }
        })
    }

    /// Mostly bytes of the small framings and of the default one, plus anything at all.
    fn marker_heavy_byte() -> impl Strategy<Value = u8> {
        prop_oneof![0u8..4, Just(SB), Just(EB), Just(CR), any::<u8>()]
    }

    /// Splits `data` at the given cut points (taken modulo its length).
    fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut last = 0;
        for cut in cuts.into_iter().chain([data.len()]) {
            parts.push(&data[last..cut]);
            last = cut;
        }
        parts
    }

    proptest! {
        #[test]
        fn never_panics_and_chunking_does_not_change_output(
            config in config(),
            data in prop::collection::vec(marker_heavy_byte(), 0..300),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let (whole, whole_decoder) = decode(config, &data);
            let mut decoder = Decoder::new(config);
            let mut split_out = Vec::new();
            for part in split(&data, &cuts) {
                decoder.push(part);
                drain(&mut decoder, &mut split_out);
                // Memory stays bounded no matter how the peer chunks its bytes.
                prop_assert!(decoder.buffered() <= config.max_frame_size + MAX_MARKER_LEN);
            }
            prop_assert_eq!(&split_out, &whole);
            prop_assert_eq!(decoder.junk_bytes(), whole_decoder.junk_bytes());
            prop_assert_eq!(decoder.is_mid_frame(), whole_decoder.is_mid_frame());
            prop_assert_eq!(decoder.buffered(), whole_decoder.buffered());
            let (bytewise, _) = decode_chunks(config, data.chunks(1));
            prop_assert_eq!(&bytewise, &whole);
            for item in &whole {
                let kept = match item {
                    Err(FrameError::BadEnd { payload }) => payload.len() <= config.max_frame_size,
                    Err(error) => error.prefix().len() <= config.max_frame_size.min(ERROR_PREFIX_LEN),
                    Ok(_) => true,
                };
                prop_assert!(kept, "{item:?}");
            }
        }

        #[test]
        fn decode_of_encode_round_trips(
            framing in small_framing(),
            lenient_end in any::<bool>(),
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
            cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let (s0, e0) = (framing.start()[0], framing.end()[0]);
            let payloads: Vec<Vec<u8>> = payloads
                .into_iter()
                .map(|p| p.into_iter().filter(|&b| b != s0 && b != e0).collect())
                .collect();
            let mut stream = Vec::new();
            for payload in &payloads {
                encode(&framing, payload, &mut stream);
            }
            let config = DecoderConfig { framing, lenient_end, ..DecoderConfig::default() };
            let (out, decoder) = decode_chunks(config, split(&stream, &cuts));
            let expected: Vec<Item> = payloads.into_iter().map(Ok).collect();
            prop_assert_eq!(out, expected);
            prop_assert_eq!(decoder.junk_bytes(), 0);
            prop_assert!(!decoder.is_mid_frame());
        }
    }
}
