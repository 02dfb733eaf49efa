//! Fuzz targets for the sans-IO protocol core (`hl7-proto`).
//!
//! Each target takes arbitrary bytes, drives one part of the core and checks properties that
//! must hold for *every* input, so a failure is a panic the fuzzer can minimise. The same
//! functions run in two places:
//!
//! * `cargo fuzz run -s none <target>` (coverage-guided, `fuzz/fuzz_targets/*.rs`), and
//! * `cargo test` (`crates/hl7-proto/tests/fuzz_targets.rs`, which includes this file with
//!   `#[path]`): every seed once, then a few hundred proptest-mutated seeds.
//!
//! This file must therefore name only `hl7_proto` and `std`, never `crate::`.

use std::borrow::Cow;

use hl7_proto::ack::{self, AckCode, AckError, AckParams, AckPolicy, Outcome};
use hl7_proto::batch;
use hl7_proto::charset::{self, Charset};
use hl7_proto::error::ErrorCode;
use hl7_proto::extract::{extract as extract_fields, extract_with_header, Extracted, MAX_VALUE_LEN};
use hl7_proto::inbound::{inspect, inspect_frame_error, Inspection};
use hl7_proto::keys::{duplicate_key, duplicate_key_of, lane_key, LaneOrder};
use hl7_proto::message::{unescape, Delimiters, Message, Value};
use hl7_proto::mllp::{self, Decoder, DecoderConfig, FrameError, Framing, MAX_MARKER_LEN};
use hl7_proto::msh::Msh;
use hl7_proto::refusal::Refusal;

// ---------------------------------------------------------------------------------------
// mllp_decoder

/// Framings that make markers collide: shared first bytes, start equal to end, markers that
/// overlap themselves. Index 0 is the standard one.
const FRAMINGS: [(&[u8], &[u8]); 8] = [
    (&[0x0B], &[0x1C, 0x0D]),
    (&[0x0B], &[0x1C, 0x0D]),
    (&[0x02], &[0x03]),
    (&[0x01, 0x02], &[0x02, 0x03]),
    (&[0x0B, 0x0B], &[0x0B, 0x1C]),
    (&[0x01], &[0x01]),
    (&[0x01, 0x01, 0x02], &[0x1C, 0x1C, 0x0D]),
    (&[0x0B, 0x1C, 0x0B, 0x1C], &[0x1C, 0x0D, 0x1C, 0x0D]),
];

/// `max_frame_size` choices; index 0 is the production default.
const MAX_SIZES: [usize; 16] =
    [mllp::DEFAULT_MAX_FRAME_SIZE, 0, 1, 2, 3, 4, 5, 8, 13, 16, 64, 100, 1000, 4095, 4096, 4097];

/// MLLP decoder: `[selector, chunking, stream…]`.
///
/// `selector` picks the framing (bits 0–2), lenient end (bit 3) and `max_frame_size` (bits
/// 4–7); `0x00` is the production configuration. `chunking` seeds the sizes of the pieces the
/// stream is pushed in. Checks:
/// * the same frames, errors, junk count and end state whether the stream is pushed whole,
///   in pieces or one byte at a time (a sender may split anywhere);
/// * memory stays bounded: never more than `max_frame_size` plus a marker buffered after a
///   drain, and error prefixes within their cap;
/// * an accepted payload fits the limit and never holds the first end byte;
/// * re-encoding the accepted payloads decodes to exactly those payloads.
pub fn mllp_decoder(data: &[u8]) {
    let [selector, chunking, stream @ ..] = data else { return };
    let (start, end) = FRAMINGS[usize::from(selector & 0x07)];
    let framing = Framing::new(start, end).expect("FRAMINGS entries are 1 to 4 bytes");
    let config = DecoderConfig {
        framing,
        lenient_end: selector & 0x08 != 0,
        max_frame_size: MAX_SIZES[usize::from(selector >> 4)],
    };

    let (whole, whole_decoder) = decode_pieces(config, [stream]);
    let (pieces, pieces_decoder) = decode_pieces(config, split(stream, *chunking));
    assert_eq!(pieces, whole, "chunking changed the frames ({config:?})");
    let (bytewise, bytewise_decoder) = decode_pieces(config, stream.chunks(1));
    assert_eq!(bytewise, whole, "byte-at-a-time changed the frames ({config:?})");
    for decoder in [&pieces_decoder, &bytewise_decoder] {
        assert_eq!(decoder.junk_bytes(), whole_decoder.junk_bytes());
        assert_eq!(decoder.is_mid_frame(), whole_decoder.is_mid_frame());
        assert_eq!(decoder.buffered(), whole_decoder.buffered());
    }

    let mut accepted = Vec::new();
    for item in &whole {
        match item {
            Ok(payload) => {
                assert!(payload.len() <= config.max_frame_size, "payload over the limit");
                assert!(!payload.contains(&end[0]), "payload holds the first end byte");
                accepted.push(payload.clone());
            }
            Err(error) => {
                let cap = config.max_frame_size.min(mllp::ERROR_PREFIX_LEN);
                assert!(error.prefix().len() <= cap, "error prefix over its cap");
            }
        }
    }
    let mut again = Vec::new();
    for payload in &accepted {
        mllp::encode(&framing, payload, &mut again);
    }
    let (round_trip, decoder) = decode_pieces(config, [&again[..]]);
    let expected: Vec<Result<Vec<u8>, FrameError>> = accepted.into_iter().map(Ok).collect();
    assert_eq!(round_trip, expected, "re-encoded payloads decode differently ({config:?})");
    assert_eq!(decoder.junk_bytes(), 0);
    assert!(!decoder.is_mid_frame());
}

type Items = Vec<Result<Vec<u8>, FrameError>>;

/// Pushes each piece, draining after each one as the connection does, and checks the memory
/// bound after every drain.
fn decode_pieces<'a>(config: DecoderConfig, pieces: impl IntoIterator<Item = &'a [u8]>) -> (Items, Decoder) {
    let mut decoder = Decoder::new(config);
    let mut out = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        while let Some(item) = decoder.next_frame() {
            out.push(item);
        }
        assert!(
            decoder.buffered() <= config.max_frame_size + MAX_MARKER_LEN,
            "{} bytes buffered after a drain ({config:?})",
            decoder.buffered()
        );
    }
    (out, decoder)
}

/// Cuts `stream` into pieces of 1 to 64 bytes, sizes drawn from a generator seeded by `seed`.
fn split(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = (1 + (state >> 16) as usize % 64).min(rest.len());
        let (piece, tail) = rest.split_at(len);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

// ---------------------------------------------------------------------------------------
// message

/// A store error with every delimiter, both line ends and non-ASCII text: what the ACK
/// builder must escape and encode without breaking the ACK's structure.
const HOSTILE_REASON: &str = "disk full |^~\\&# \r\n é € 中 \u{1F600}";

/// The frame as the listener sees it: [`inspect`], a walk over every value of the message,
/// then an ACK for every outcome and policy, and the answer to the same bytes as the prefix of
/// a frame that grew too large. Checks:
/// * every value the view hands out is a slice of the input;
/// * a forced profile charset is always the one used;
/// * every ACK parses back with the inbound delimiters, has exactly MSH, MSA and (for
///   errors) ERR, swaps MSH-3/4 with MSH-5/6, carries the fresh MSH-10, MSA-1 = the code and
///   MSA-2 = the inbound MSH-10, and its error text survives escaping byte for byte;
/// * escaping and unescaping arbitrary bytes with the message's delimiters round-trips.
pub fn message(data: &[u8]) {
    let forced = Charset::ALL[data.len() % Charset::ALL.len()];
    for (default, force) in [(Charset::Utf8, false), (forced, true)] {
        let seen = inspect(data, default, force);
        if force {
            assert_eq!(seen.charset(), default, "force_encoding ignored");
        }
        if let Some(msh) = seen.msh() {
            assert_within(data, msh.control_id);
            assert_within(data, msh.character_set);
            let _ = msh.version_number();
            let _ = msh.message_type.to_string();
        }
        if let Ok(message) = Message::parse(data) {
            walk(data, &message);
            check_escape_round_trip(data, message.delimiters());
        }
        for outcome in [Outcome::Accepted, Outcome::Error, Outcome::Rejected] {
            for policy in [AckPolicy::Msh, AckPolicy::Always, AckPolicy::Never] {
                let code = ack::decide(seen.msh(), policy, outcome);
                match policy {
                    AckPolicy::Never => assert_eq!(code, None),
                    AckPolicy::Always => assert!(code.is_some()),
                    AckPolicy::Msh => {}
                }
                if seen.msh().is_none() && policy != AckPolicy::Never {
                    assert_eq!(code, Some(AckCode::ApplicationReject));
                }
                if let Some(code) = code {
                    assert_eq!(code.is_accept(), outcome == Outcome::Accepted && seen.msh().is_some());
                    let error = match (seen.refusal(), outcome) {
                        (_, Outcome::Accepted) => None,
                        (Some(refusal), _) => Some(refusal.ack_error()),
                        (None, _) => Some(Refusal::StoreFailed { reason: HOSTILE_REASON.into() }.ack_error()),
                    };
                    check_ack(seen.msh(), code, seen.charset(), error);
                }
            }
        }
    }
    if let Some(salvaged) = Msh::salvage(data) {
        assert_within(data, salvaged.control_id);
    }
    let too_large = FrameError::TooLarge { limit: data.len(), prefix: data.to_vec() };
    let refused =
        inspect_frame_error(&too_large, Charset::Utf8, false).expect("a too-large frame is answered");
    assert_eq!(refused.reason.row().code, ErrorCode::ValueTooLong);
    if let Some(msh) = &refused.msh {
        assert_within(too_large.prefix(), msh.control_id);
    }
    let code =
        ack::decide(refused.msh.as_ref(), AckPolicy::Always, refused.reason.outcome()).expect("always");
    assert!(!code.is_accept(), "a too-large frame accepted");
    check_ack(refused.msh.as_ref(), code, refused.charset, Some(refused.reason.ack_error()));
    check_timestamp(data);
}

/// Every segment, field, repetition, component and subcomponent (bounded, so a long frame
/// stays fast), unescaped; each must be a slice of the frame.
fn walk(data: &[u8], message: &Message<'_>) {
    let _ = message.msh();
    for segment in message.segments().take(64) {
        assert_within(data, segment.raw());
        assert_within(data, segment.id());
        let count = segment.field_count();
        for n in 0..=count.min(32) + 1 {
            let field = segment.field(n);
            assert_within(data, field.raw());
            if n > count {
                assert!(field.is_empty(), "field {n} of {count} is not empty");
            }
            for repetition in field.repetitions().take(8) {
                visit(data, repetition);
                for c in 0..=4 {
                    let component = repetition.component(c);
                    visit(data, component);
                    for s in 0..=3 {
                        visit(data, component.subcomponent(s));
                    }
                }
            }
            visit(data, field.repetition(2));
            visit(data, field.subcomponent(2));
        }
    }
}

fn visit(data: &[u8], value: Value<'_>) {
    assert_within(data, value.raw());
    let _ = value.unescape();
    let _ = value.as_str();
}

/// Panics unless `part` is empty or lies inside `whole` (zero-copy: the view never copies).
fn assert_within(whole: &[u8], part: &[u8]) {
    if part.is_empty() {
        return;
    }
    let (start, end) = (whole.as_ptr() as usize, whole.as_ptr() as usize + whole.len());
    let p = part.as_ptr() as usize;
    assert!(p >= start && p + part.len() <= end, "a view value is not a slice of the input");
}

fn check_escape_round_trip(data: &[u8], delimiters: Delimiters) {
    let escaped = delimiters.escape(data);
    if delimiters.escape.is_some() {
        assert_eq!(unescape(&escaped, &delimiters), data, "escape/unescape does not round-trip");
    }
    for &b in escaped.iter() {
        let special = b == delimiters.field
            || b == delimiters.component
            || b == delimiters.repetition
            || Some(b) == delimiters.subcomponent
            || b == b'\r'
            || b == b'\n';
        assert!(!special, "escaped text still holds a delimiter or line end");
    }
}

/// Builds the ACK and reads it back as a receiver would.
fn check_ack(msh: Option<&Msh<'_>>, code: AckCode, charset: Charset, error: Option<AckError<'_>>) {
    let params = AckParams {
        code,
        control_id: b"A1B2C3000001",
        timestamp: b"20261128101500+0000",
        charset,
        error: error.clone(),
    };
    let bytes = ack::ack_to_vec(msh, &params);
    let parsed = Message::parse(&bytes).expect("an ACK is a parseable message");
    let delimiters = msh.map_or(Delimiters::DEFAULT, |m| m.delimiters);
    assert_eq!(parsed.delimiters(), delimiters, "the ACK changed the delimiters");

    let ids: Vec<&[u8]> = parsed.segments().map(|s| s.id()).collect();
    let expected: &[&[u8]] = if error.is_some() { &[b"MSH", b"MSA", b"ERR"] } else { &[b"MSH", b"MSA"] };
    assert_eq!(ids, expected, "ACK segments");

    let header = Msh::new(&parsed);
    assert_eq!(header.control_id, b"A1B2C3000001", "ACK MSH-10");
    assert_eq!(header.message_type.code, b"ACK", "ACK MSH-9.1");
    if let Some(msh) = msh {
        assert_eq!(header.sending_application, msh.receiving_application, "MSH-3 ↔ MSH-5");
        assert_eq!(header.sending_facility, msh.receiving_facility, "MSH-4 ↔ MSH-6");
        assert_eq!(header.receiving_application, msh.sending_application, "MSH-5 ↔ MSH-3");
        assert_eq!(header.receiving_facility, msh.sending_facility, "MSH-6 ↔ MSH-4");
        assert_eq!(header.message_type.trigger, msh.message_type.trigger, "ACK MSH-9.2");
        assert_eq!(header.character_set, msh.character_set, "ACK MSH-18");
    }

    let msa = parsed.segment("MSA").expect("checked above");
    assert_eq!(msa.field(1).raw(), code.as_str().as_bytes(), "MSA-1");
    assert_eq!(msa.field(2).raw(), msh.map_or(&b""[..], |m| m.control_id), "MSA-2");
    if let Some(error) = &error {
        let sent = charset.encode_lossy(&error.text);
        let expected: Cow<'_, [u8]> = match delimiters.escape {
            Some(_) => sent,
            // Without an escape character, delimiters cannot be represented: spaces.
            None => Cow::Owned(delimiters.escape(&sent).into_owned()),
        };
        assert_eq!(msa.field(3).unescape(), expected, "MSA-3 error text");
    }
}

/// MSH-7 timestamps from arbitrary Unix times: never a panic, and the fixed
/// `YYYYMMDDHHMMSS+0000` shape for years 0 to 9999.
fn check_timestamp(data: &[u8]) {
    let mut raw = [0u8; 8];
    let n = data.len().min(8);
    raw[..n].copy_from_slice(&data[..n]);
    let seconds = i64::from_le_bytes(raw);
    let _ = ack::hl7_timestamp(seconds);
    // 0000-01-01 .. 9999-12-31 in Unix seconds.
    let bounded = seconds.rem_euclid(253_402_300_800 + 62_167_219_200) - 62_167_219_200;
    let text = ack::hl7_timestamp(bounded);
    assert_eq!(text.len(), 19, "{bounded} → {text}");
    assert!(text.ends_with("+0000") && text[..14].bytes().all(|b| b.is_ascii_digit()), "{text}");
    let field = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap();
    assert!((1..=12).contains(&field(4..6)), "month in {text}");
    assert!((1..=31).contains(&field(6..8)), "day in {text}");
    assert!(field(8..10) < 24 && field(10..12) < 60 && field(12..14) < 60, "time in {text}");
}

// ---------------------------------------------------------------------------------------
// batch

/// Batch splitting. Checks: every message is a slice of the input that starts with `MSH`,
/// messages are in order and do not overlap, counts agree, and a file of plain messages
/// (no batch segments) splits into messages that concatenate back to the whole input.
pub fn batch(data: &[u8]) {
    let result = batch::split(data);
    if batch::is_batch(data) {
        assert!(!matches!(result, Err(batch::BatchError::NoHeader)), "a batch without a header");
    }
    let Ok(split) = result else { return };
    let mut last_end = data.as_ptr() as usize;
    let mut total = 0;
    for message in split.messages() {
        assert_within(data, message);
        assert!(message.starts_with(b"MSH"), "a message that does not start with MSH");
        let start = message.as_ptr() as usize;
        assert!(start >= last_end, "messages overlap or are out of order");
        last_end = start + message.len();
        total += 1;
        let _ = inspect(message, Charset::Utf8, false);
    }
    assert_eq!(total, split.message_count());
    let _ = split.count_mismatches();

    let trimmed = &data[data.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(data.len())..];
    let has_batch_segments = trimmed
        .split(|&b| b == b'\r' || b == b'\n')
        .any(|line| [&b"FHS"[..], b"BHS", b"BTS", b"FTS"].iter().any(|id| line.starts_with(id)));
    if !has_batch_segments {
        assert!(split.file_header.is_none());
        let joined: Vec<u8> = split.messages().flatten().copied().collect();
        assert_eq!(joined, trimmed, "plain messages do not concatenate back to the input");
    }
}

// ---------------------------------------------------------------------------------------
// charset

/// Character sets: `[index < 16, bytes…]` decodes `bytes` in `Charset::ALL[index]`; any other
/// first byte treats the whole input as a message and decodes it in the set its MSH-18 names
/// (as the listener would). Checks:
/// * strict and lossy decoding agree, and a strict failure points inside the input at a
///   sequence after a valid prefix and shows up as U+FFFD in the lossy text;
/// * text decoded from a single-byte or UTF-8 set encodes back and decodes to the same
///   text (U+FFFD written as `?`);
/// * an MSH-18 name is resolved without panicking, errors carry at most 40 characters.
pub fn charset(data: &[u8]) {
    let (set, bytes) = match data.split_first() {
        Some((&index, rest)) if usize::from(index) < Charset::ALL.len() => {
            (Charset::ALL[usize::from(index)], rest)
        }
        _ => {
            let seen = inspect(data, Charset::Utf8, false);
            (seen.charset(), data)
        }
    };
    let lossy = set.decode(bytes);
    match set.decode_strict(bytes) {
        Ok(text) => assert_eq!(text, lossy, "strict and lossy decoding disagree ({set:?})"),
        Err(charset::CharsetError::Malformed { offset, .. }) => {
            assert!(offset < bytes.len(), "malformed offset {offset} past the end ({set:?})");
            assert!(lossy.contains('\u{FFFD}'), "strict decoding failed but lossy has no U+FFFD ({set:?})");
            assert!(
                set.decode_strict(&bytes[..offset]).is_ok(),
                "bytes before the malformed offset do not decode ({set:?})"
            );
        }
        Err(other) => panic!("decode_strict returned {other:?}"),
    }
    let encoded = set.encode_lossy(&lossy);
    if set.is_ascii_compatible() {
        let expected: Cow<'_, str> = if set == Charset::Utf8 {
            Cow::Borrowed(&lossy)
        } else {
            Cow::Owned(lossy.replace('\u{FFFD}', "?"))
        };
        assert_eq!(set.decode(&encoded), expected, "decode(encode(text)) != text ({set:?})");
    }

    for name in [bytes, data] {
        let name = &name[..name.len().min(64)];
        match Charset::from_msh18(name) {
            Ok(Some(found)) => assert_eq!(charset::resolve(name, Charset::Ascii, false), Ok(found)),
            Ok(None) => assert_eq!(charset::resolve(name, Charset::Big5, false), Ok(Charset::Big5)),
            Err(error) => {
                let text = error.to_string();
                assert!(!text.contains('\r') && !text.contains('\n'), "an error spans lines: {text:?}");
                assert_eq!(Refusal::from(error).row().code, ErrorCode::DataTypeError);
            }
        }
        if let Ok(text) = std::str::from_utf8(name) {
            if let Some(found) = Charset::from_config_name(text) {
                assert_eq!(Charset::from_config_name(found.config_name()), Some(found));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// extract

/// Key fields, lane keys and the duplicate key, as the store computes them at ingest: the
/// frame in the character set [`inspect`] resolves for it, and in one forced set. Checks:
/// * extraction never panics and is deterministic;
/// * every value is non-empty, trimmed, not the HL7 null `""`, and at most
///   [`MAX_VALUE_LEN`] bytes;
/// * a lane key is `strict`, or `sender/…/…` / `patient/…/…` whose two parts read back
///   (percent-decoded) to exactly the extracted values, and `patient/` exactly when there is
///   a patient id; its length stays within the documented bound;
/// * the duplicate key of a readable header is the hash of its fields' text;
/// * for an accepted frame, extraction from the header `inspect` built gives the same.
pub fn extract(data: &[u8]) {
    let seen = inspect(data, Charset::Utf8, false);
    let forced = Charset::ALL[data.len() % Charset::ALL.len()];
    for charset in [seen.charset(), forced] {
        let fields = extract_fields(data, charset);
        assert!(fields == extract_fields(data, charset), "extraction is not deterministic");
        if let Inspection::Accept { msh, .. } = &seen {
            assert!(
                extract_with_header(data, msh, charset) == fields,
                "extraction from the inspected header differs"
            );
        }
        check_extracted(&fields);
        for order in LaneOrder::ALL {
            check_lane_key(order, &fields, &lane_key(order, &fields));
        }
    }
    if let Some(msh) = seen.msh() {
        let text = |raw: &[u8]| String::from_utf8_lossy(raw).into_owned();
        assert_eq!(
            duplicate_key("lab", msh),
            duplicate_key_of(
                "lab",
                &text(msh.sending_application),
                &text(msh.sending_facility),
                &text(msh.control_id)
            ),
            "the duplicate key is not the hash of the fields' text"
        );
    }
}

fn check_extracted(fields: &Extracted) {
    let values = [
        &fields.sending_application,
        &fields.sending_facility,
        &fields.receiving_application,
        &fields.receiving_facility,
        &fields.message_code,
        &fields.trigger_event,
        &fields.message_structure,
        &fields.control_id,
        &fields.processing_id,
        &fields.version,
        &fields.patient_id,
        &fields.patient_id_authority,
        &fields.visit_number,
        &fields.placer_order,
        &fields.filler_order,
    ];
    for value in values.into_iter().flatten() {
        assert!(!value.is_empty(), "an empty value is not None");
        assert!(value.len() <= MAX_VALUE_LEN, "a value of {} bytes", value.len());
        assert_eq!(value.trim(), value, "a value with surrounding whitespace");
        assert_ne!(value, "\"\"", "the HL7 null as a value");
    }
    if let Some(time) = fields.message_time {
        assert!(time.micros < 1_000_000);
        let _ = (time.wall_micros(), time.utc_micros());
    }
}

fn check_lane_key(order: LaneOrder, fields: &Extracted, key: &str) {
    assert!(key.len() <= "patient/".len() + 2 * 3 * MAX_VALUE_LEN + 1, "a lane key of {} bytes", key.len());
    assert!(!key.chars().any(char::is_control), "a lane key with a control character");
    if order == LaneOrder::Strict {
        assert_eq!(key, "strict");
        return;
    }
    let part = |value: &Option<String>| value.clone().unwrap_or_default();
    let parts: Vec<&str> = key.split('/').collect();
    let [kind, first, second] = parts[..] else { panic!("lane key {key:?} is not kind/part/part") };
    let (first, second) = (percent_decode(first), percent_decode(second));
    match (order, &fields.patient_id) {
        (LaneOrder::PerPatient, Some(patient)) => {
            assert_eq!(kind, "patient");
            assert_eq!((first, &second), (part(&fields.sending_facility), patient));
        }
        _ => {
            assert_eq!(kind, "sender");
            assert_eq!((first, second), (part(&fields.sending_application), part(&fields.sending_facility)));
        }
    }
}

/// `%XX` back to bytes, then UTF-8.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("two hex digits after %");
            out.push(u8::from_str_radix(hex, 16).expect("two hex digits after %"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("a lane key part decodes to UTF-8")
}
