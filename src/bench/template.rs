//! The message `hl7d bench` sends: the template (MSH-3 and MSH-11 marking it a benchmark's,
//! the place of its MSH-10) and the unique control ids written there.

use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use hl7_proto::ack::{self, Outcome};
use hl7_proto::message::Message;
use hl7_proto::mllp::Framing;
use hl7_proto::msh::{AckCondition, Msh};

use crate::sender::normalise_line_ends;

/// The default message: a realistic ADT^A01 v2.5 (608 bytes, enhanced mode, MSH-15 = AL;
/// 612 bytes as sent, with MSH-3 = `HL7D-BENCH`).
pub const DEFAULT_MESSAGE: &[u8] = include_bytes!("../../crates/hl7-proto/tests/fixtures/adt_a01_v25.hl7");
/// MSH-3 (sending application) of every message `hl7d bench` sends.
pub const BENCH_SENDING_APPLICATION: &str = "HL7D-BENCH";
/// MSH-11 (processing id) of every message `hl7d bench` sends: `T`, training (HL7 table
/// 0103), not `P`roduction.
pub const BENCH_PROCESSING_ID: &str = "T";

/// The message to send, with the place of its MSH-10: every message sent is a copy with a
/// unique control id there.
#[derive(Debug)]
pub struct Template {
    pub(super) message: Vec<u8>,
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
    pub(super) fn write_framed(&self, ids: &mut ControlIds, out: &mut Vec<u8>) -> Range<usize> {
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
pub(super) struct ControlIds {
    prefix: Vec<u8>,
    next: u64,
}

impl ControlIds {
    pub(super) fn new(run_tag: &str, connection: u32) -> ControlIds {
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
pub(super) fn run_tag() -> String {
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
}
