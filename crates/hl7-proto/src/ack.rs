//! Acknowledgments, both ways: whether a message wants one ([`wants_accept_ack`]), which one
//! to send (original or enhanced mode, per-profile policy: [`decide`]), its bytes
//! ([`build_ack`]), and reading one a receiver sent back ([`ReceivedAck`]).
//!
//! Owns HL7 v2 section 2.9 acknowledgment rules. Which error code a refusal carries is the
//! refusal table's ([`crate::refusal`]). It takes the time, the fresh control id and the
//! character set as arguments and never reads a clock.

use std::borrow::Cow;

use crate::charset::{self, Charset};
use crate::error::ErrorCode;
use crate::message::{Delimiters, Message, Segment};
use crate::mllp::{COMMIT_ACK, COMMIT_NAK};
use crate::msh::{AckCondition, Msh};

/// Per-profile ACK policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AckPolicy {
    /// Follow MSH-15/MSH-16 (default).
    #[default]
    Msh,
    /// Always answer, even when MSH-15 says NE (or ER/SU exclude this outcome).
    Always,
    /// Never write anything back.
    Never,
}

/// HL7 table 0008 acknowledgment codes, in spec order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// `AA`: original mode, application accept.
    ApplicationAccept,
    /// `AE`: original mode, application error.
    ApplicationError,
    /// `AR`: original mode, application reject.
    ApplicationReject,
    /// `CA`: enhanced mode, commit accept.
    CommitAccept,
    /// `CE`: enhanced mode, commit error.
    CommitError,
    /// `CR`: enhanced mode, commit reject.
    CommitReject,
}

impl AckCode {
    /// The two-letter code written in MSA-1.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::ApplicationAccept => "AA",
            AckCode::ApplicationError => "AE",
            AckCode::ApplicationReject => "AR",
            AckCode::CommitAccept => "CA",
            AckCode::CommitError => "CE",
            AckCode::CommitReject => "CR",
        }
    }

    /// Parses MSA-1.
    pub fn from_code(code: &[u8]) -> Option<AckCode> {
        match code {
            b"AA" => Some(AckCode::ApplicationAccept),
            b"AE" => Some(AckCode::ApplicationError),
            b"AR" => Some(AckCode::ApplicationReject),
            b"CA" => Some(AckCode::CommitAccept),
            b"CE" => Some(AckCode::CommitError),
            b"CR" => Some(AckCode::CommitReject),
            _ => None,
        }
    }

    /// AA or CA: the sender may now forget the message.
    pub fn is_accept(self) -> bool {
        matches!(self, AckCode::ApplicationAccept | AckCode::CommitAccept)
    }

    /// The code for an outcome in original (`AA/AE/AR`) or enhanced (`CA/CE/CR`) mode.
    pub fn for_outcome(outcome: Outcome, enhanced: bool) -> AckCode {
        match (outcome, enhanced) {
            (Outcome::Accepted, false) => AckCode::ApplicationAccept,
            (Outcome::Error, false) => AckCode::ApplicationError,
            (Outcome::Rejected, false) => AckCode::ApplicationReject,
            (Outcome::Accepted, true) => AckCode::CommitAccept,
            (Outcome::Error, true) => AckCode::CommitError,
            (Outcome::Rejected, true) => AckCode::CommitReject,
        }
    }
}

impl std::fmt::Display for AckCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a message, independent of the acknowledgment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Stored (AA/CA).
    Accepted,
    /// The message was fine but we could not take it now, e.g. the store failed; the sender
    /// should retry (AE/CE).
    Error,
    /// The message itself is unacceptable: unparseable, required fields missing, unknown
    /// character set (AR/CR). Resending it unchanged will not help.
    Rejected,
}

/// Whether a message asks for an accept (commit) acknowledgment when its outcome is
/// `outcome` (HL7 v2 section 2.9): in original mode (MSH-15 and MSH-16 empty) always; in
/// enhanced mode as MSH-15 says: AL always, NE never, ER only for errors and rejections, SU
/// only on success. An empty or invalid MSH-15 in enhanced mode counts as AL: an answer the
/// sender did not want costs less than one it waits for in vain.
///
/// The one answer to "does this message want an ACK", for the listener ([`decide`]), the
/// sender (is an ACK coming at all?) and the load generator (is one coming on success?).
pub fn wants_accept_ack(msh: &Msh<'_>, outcome: Outcome) -> bool {
    if msh.is_original_mode() {
        return true;
    }
    match msh.accept_ack().ok().flatten().unwrap_or(AckCondition::Always) {
        AckCondition::Always => true,
        AckCondition::Never => false,
        AckCondition::ErrorOnly => outcome != Outcome::Accepted,
        AckCondition::SuccessOnly => outcome == Outcome::Accepted,
    }
}

/// Decides whether to answer and with which code.
///
/// `msh` is `None` when no header could be read at all; the answer is then an AR (original
/// mode is assumed, since we cannot know what the sender asked for) unless the policy is
/// `Never`. With a header, original mode (MSH-15 and MSH-16 empty) answers AA/AE/AR, enhanced
/// mode a commit ACK CA/CE/CR when [`wants_accept_ack`] says so. hl7d is the receiving
/// system's store, so it answers the accept (commit) level only; MSH-16 (application
/// acknowledgment) is recorded, not acted on. `AckPolicy::Always` answers even when MSH-15
/// says not to; `AckPolicy::Never` never does.
pub fn decide(msh: Option<&Msh<'_>>, policy: AckPolicy, outcome: Outcome) -> Option<AckCode> {
    if policy == AckPolicy::Never {
        return None;
    }
    let Some(msh) = msh else {
        return Some(AckCode::ApplicationReject);
    };
    let enhanced = !msh.is_original_mode();
    (wants_accept_ack(msh, outcome) || policy == AckPolicy::Always)
        .then_some(AckCode::for_outcome(outcome, enhanced))
}

/// The error reported in MSA-3 and the ERR segment of a negative acknowledgment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError<'t> {
    /// Table 0357 code (ERR-3 from v2.5, ERR-1.4 before).
    pub code: ErrorCode,
    /// Human-readable reason (MSA-3 and ERR-8). Must not contain patient data.
    pub text: Cow<'t, str>,
    /// Segment id and field position (ERR-2 / ERR-1.1–1.3); field 0 = the whole segment.
    pub location: Option<(&'static str, u16)>,
}

/// Everything the ACK needs besides the inbound header.
#[derive(Debug, Clone)]
pub struct AckParams<'t> {
    /// MSA-1.
    pub code: AckCode,
    /// MSH-10 of the ACK itself: a fresh id from the caller.
    pub control_id: &'t [u8],
    /// MSH-7 of the ACK: the current time from the caller (see [`hl7_timestamp`]).
    pub timestamp: &'t [u8],
    /// Character set the ACK is encoded in: the one the message arrived in.
    pub charset: Charset,
    /// Present for AE/AR/CE/CR.
    pub error: Option<AckError<'t>>,
}

/// Builds an ACK for `msh` (or, with `None`, a best-effort one with default delimiters and
/// no echoed fields) and appends it to `out`. The result is the message only, not framed.
///
/// - MSH-1/MSH-2 as received; MSH-3/4 ↔ MSH-5/6 swapped; MSH-7 = `timestamp`;
/// - MSH-9 = `ACK^<trigger>^ACK` from v2.5, `ACK^<trigger>` before (`ACK` without trigger);
/// - MSH-10 = `control_id`; MSH-11, MSH-12 and MSH-18 echoed;
/// - MSA-1 code, MSA-2 = inbound MSH-10, MSA-3 = error text;
/// - ERR on errors: v2.5+ `ERR||<loc>|<code>^<text>^HL70357|E|||<text>`; before v2.5
///   `ERR|<seg>^1^<field>^<code>&<text>&HL70357`.
///
/// Echoed fields are copied byte for byte, so they stay in the message's own character set;
/// text we add is escaped and encoded in `params.charset` with `?` for what cannot be encoded.
pub fn build_ack(msh: Option<&Msh<'_>>, params: &AckParams<'_>, out: &mut Vec<u8>) {
    let d = msh.map_or(Delimiters::DEFAULT, |m| m.delimiters);
    let field = |out: &mut Vec<u8>| out.push(d.field);
    let empty: &[u8] = b"";
    let (app_from, fac_from, app_to, fac_to) = msh.map_or((empty, empty, empty, empty), |m| {
        (m.receiving_application, m.receiving_facility, m.sending_application, m.sending_facility)
    });
    // Echoed fields are already written with this message's delimiters. Values hl7d writes
    // itself are escaped: a sender may pick `+` or `.` as a delimiter, and MSH-7 ends in
    // `+0000` and the default MSH-12 is `2.5`.
    let version = match msh.map(|m| m.version_field) {
        Some(echoed) if !echoed.is_empty() => Cow::Borrowed(echoed),
        _ => d.escape(b"2.5"),
    };
    let modern = msh.map_or(Some((2, 5)), |m| m.version_number()).is_none_or(|v| v >= (2, 5));

    out.extend_from_slice(b"MSH");
    out.push(d.field);
    let (chars, len) = d.encoding_characters();
    out.extend_from_slice(&chars[..len]);
    for value in [app_from, fac_from, app_to, fac_to, &d.escape(params.timestamp), b""] {
        field(out);
        out.extend_from_slice(value);
    }
    field(out);
    out.extend_from_slice(b"ACK");
    let trigger = msh.map_or(empty, |m| m.message_type.trigger);
    if !trigger.is_empty() {
        out.push(d.component);
        out.extend_from_slice(trigger);
        if modern {
            out.push(d.component);
            out.extend_from_slice(b"ACK");
        }
    }
    field(out);
    out.extend_from_slice(&d.escape(params.control_id));
    field(out);
    let processing = msh.map_or(empty, |m| m.processing_id);
    out.extend_from_slice(if processing.is_empty() { b"P" } else { processing });
    field(out);
    out.extend_from_slice(&version);
    let charset_name = msh.map_or(empty, |m| m.character_set);
    if !charset_name.is_empty() {
        for _ in 13..=18 {
            field(out);
        }
        out.extend_from_slice(charset_name);
    }
    out.push(b'\r');

    out.extend_from_slice(b"MSA");
    field(out);
    out.extend_from_slice(params.code.as_str().as_bytes());
    field(out);
    out.extend_from_slice(msh.map_or(empty, |m| m.control_id));
    if let Some(err) = &params.error {
        field(out);
        push_text(out, &d, params.charset, &err.text);
    }
    out.push(b'\r');

    if let Some(err) = &params.error {
        push_err(out, &d, params.charset, err, modern);
    }
}

/// [`build_ack`] into a new vector.
pub fn ack_to_vec(msh: Option<&Msh<'_>>, params: &AckParams<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    build_ack(msh, params, &mut out);
    out
}

/// An acknowledgment as the sender of a message reads it: MSA-1, MSA-2, MSA-3 and the ERR
/// segments of an HL7 ACK, or an MLLP Release 2 commit byte. Borrows the frame; reading the
/// code and control id allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedAck<'a> {
    /// MSA-1; a Release 2 commit byte reads as CA ([`COMMIT_ACK`]) or CR ([`COMMIT_NAK`]).
    pub code: AckCode,
    /// MSA-2 as received: the MSH-10 of the message this ACK answers. `None` for a commit
    /// byte, which carries no id and answers the message just sent on the connection.
    pub control_id: Option<&'a [u8]>,
    /// The ACK message and its MSA; `None` for a commit byte.
    message: Option<(Message<'a>, Segment<'a>)>,
}

impl<'a> ReceivedAck<'a> {
    /// Reads one frame payload. `None` when it is neither a commit byte nor an HL7 message
    /// with an MSA segment whose MSA-1 is in table 0008.
    pub fn parse(frame: &'a [u8]) -> Option<ReceivedAck<'a>> {
        match frame {
            [COMMIT_ACK] => {
                return Some(ReceivedAck { code: AckCode::CommitAccept, control_id: None, message: None })
            }
            [COMMIT_NAK] => {
                return Some(ReceivedAck { code: AckCode::CommitReject, control_id: None, message: None })
            }
            _ => {}
        }
        let message = Message::parse(frame).ok()?;
        let msa = message.segment("MSA")?;
        let code = AckCode::from_code(msa.field(1).raw())?;
        Some(ReceivedAck { code, control_id: Some(msa.field(2).raw()), message: Some((message, msa)) })
    }

    /// True when this answers the message whose MSH-10 is `control_id`: MSA-2 echoes it, or
    /// the ACK is a commit byte (which answers the message just sent).
    pub fn answers(&self, control_id: &[u8]) -> bool {
        self.control_id.is_none_or(|id| id == control_id)
    }

    /// The character set the ACK's texts are in: its MSH-18 when that names a usable one,
    /// otherwise `default`.
    pub fn charset(&self, default: Charset) -> Charset {
        let Some((message, _)) = &self.message else { return default };
        let msh18 = message.msh().field(18).repetition(1);
        charset::resolve(msh18.raw(), default, false).unwrap_or(default)
    }

    /// The table 0357 code of each ERR segment, in order: ERR-3.1 (v2.5+), or ERR-1.4.1
    /// before v2.5; segments without a readable code are skipped.
    pub fn error_codes(&self) -> impl Iterator<Item = u16> + 'a {
        let segments = self.message.map(|(message, _)| message.segments());
        segments.into_iter().flatten().filter(|segment| segment.id() == b"ERR").filter_map(|err| {
            let modern = err.field(3).component(1);
            let code = if modern.is_empty() { err.field(1).component(4).subcomponent(1) } else { modern };
            code.as_str()?.trim().parse().ok()
        })
    }

    /// The text to show for this ACK: MSA-3, plus the first ERR's ERR-8 (or else ERR-3.2)
    /// when that adds something, unescaped and decoded in [`ReceivedAck::charset`]. Empty
    /// for a commit byte or an ACK without text.
    pub fn text(&self, default: Charset) -> String {
        let Some((message, msa)) = &self.message else { return String::new() };
        let charset = self.charset(default);
        let mut text = charset.decode(&msa.field(3).unescape()).into_owned();
        let detail = message.segment("ERR").and_then(|err| {
            [err.field(8).unescape(), err.field(3).component(2).unescape()]
                .into_iter()
                .find(|value| !value.is_empty())
                .map(|value| charset.decode(&value).into_owned())
        });
        if let Some(detail) = detail {
            if text.is_empty() {
                text = detail;
            } else if !text.contains(&detail) {
                text = format!("{text}; {detail}");
            }
        }
        text
    }
}

fn push_err(out: &mut Vec<u8>, d: &Delimiters, charset: Charset, err: &AckError<'_>, modern: bool) {
    let code = err.code.code().to_string();
    out.extend_from_slice(b"ERR");
    out.push(d.field);
    if modern {
        // ERR-1 (deprecated from v2.5) stays empty; ERR-2 location; ERR-3 code; ERR-4 severity.
        out.push(d.field);
        if let Some((segment, position)) = err.location {
            out.extend_from_slice(segment.as_bytes());
            out.push(d.component);
            out.push(b'1');
            if position > 0 {
                out.push(d.component);
                out.extend_from_slice(position.to_string().as_bytes());
            }
        }
        out.push(d.field);
        out.extend_from_slice(code.as_bytes());
        out.push(d.component);
        out.extend_from_slice(err.code.text().as_bytes());
        out.push(d.component);
        out.extend_from_slice(b"HL70357");
        out.push(d.field);
        out.push(b'E');
        for _ in 5..=8 {
            out.push(d.field);
        }
        push_text(out, d, charset, &err.text);
    } else {
        // ERR-1 (ELD): segment ^ sequence ^ field ^ code&text&table.
        let (segment, position) = err.location.unwrap_or(("MSH", 0));
        out.extend_from_slice(segment.as_bytes());
        out.push(d.component);
        out.push(b'1');
        out.push(d.component);
        if position > 0 {
            out.extend_from_slice(position.to_string().as_bytes());
        }
        out.push(d.component);
        let sub = d.subcomponent.unwrap_or(d.component);
        out.extend_from_slice(code.as_bytes());
        out.push(sub);
        out.extend_from_slice(err.code.text().as_bytes());
        out.push(sub);
        out.extend_from_slice(b"HL70357");
    }
    out.push(b'\r');
}

fn push_text(out: &mut Vec<u8>, d: &Delimiters, charset: Charset, text: &str) {
    let encoded = charset.encode_lossy(text);
    out.extend_from_slice(&d.escape(&encoded));
}

/// Formats a Unix time (seconds, UTC) as an HL7 DTM `YYYYMMDDHHMMSS+0000` for MSH-7.
pub fn hl7_timestamp(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}+0000", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) — H. Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(code: AckCode) -> AckParams<'static> {
        AckParams {
            code,
            control_id: b"A1B2C3000001",
            timestamp: b"20261128101500+0000",
            charset: Charset::Utf8,
            error: None,
        }
    }

    /// Found by the `message` fuzz target: with `+` as the field separator, the `+0000` of
    /// MSH-7 split the ACK's MSH, so MSH-9 and MSH-10 moved one field to the right.
    #[test]
    fn plus_as_field_separator_does_not_split_the_ack_timestamp() {
        let inbound = b"MSH+^~\\&+LAB+FAC+HL7D+FAC+20261128++ADT^A01+PLUS-1+P+2.5\r";
        let msh = Msh::parse(inbound).unwrap();
        let ack = ack_to_vec(Some(&msh), &params(AckCode::ApplicationAccept));
        let header = Msh::parse(&ack).unwrap();
        assert_eq!(header.date_time, b"20261128101500\\F\\0000");
        assert_eq!(header.message_type.code, b"ACK");
        assert_eq!(header.control_id, b"A1B2C3000001");
        assert!(ack.ends_with(b"\rMSA+AA+PLUS-1\r"), "{}", ack.escape_ascii());
    }

    /// The same for `.`, which split the default MSH-12 `2.5` of a message without one.
    #[test]
    fn dot_as_field_separator_does_not_split_the_default_version() {
        let inbound = b"MSH.^~\\&.LAB.FAC.HL7D.FAC.1..ADT^A01.DOT-1.P.\r";
        let msh = Msh::parse(inbound).unwrap();
        let ack = ack_to_vec(Some(&msh), &params(AckCode::ApplicationReject));
        let header = Msh::parse(&ack).unwrap();
        assert_eq!(header.version_field, b"2\\F\\5");
        assert_eq!(Message::parse(&ack).unwrap().msh().field_count(), 12);
    }

    #[test]
    fn wants_accept_ack_follows_msh_15_in_enhanced_mode_only() {
        use Outcome::{Accepted, Error, Rejected};
        for (msh15_16, on_success, on_failure) in [
            ("|", true, true), // original mode
            ("|AL|NE", true, true),
            ("|NE|AL", false, false),
            ("|ER|NE", false, true),
            ("|SU|NE", true, false),
            ("||AL", true, true),   // enhanced (MSH-16 set), MSH-15 empty: AL
            ("|XX|NE", true, true), // invalid MSH-15: AL
        ] {
            let raw = format!("MSH|^~\\&|A|B|C|D|1||ADT^A01|W-1|P|2.5||{msh15_16}\r");
            let msh = Msh::parse(raw.as_bytes()).unwrap();
            assert_eq!(wants_accept_ack(&msh, Accepted), on_success, "{msh15_16}");
            assert_eq!(wants_accept_ack(&msh, Error), on_failure, "{msh15_16}");
            assert_eq!(wants_accept_ack(&msh, Rejected), on_failure, "{msh15_16}");
        }
    }

    #[test]
    fn received_commit_bytes_answer_the_last_message() {
        for (byte, code) in [(COMMIT_ACK, AckCode::CommitAccept), (COMMIT_NAK, AckCode::CommitReject)] {
            let frame = [byte];
            let ack = ReceivedAck::parse(&frame).unwrap();
            assert_eq!((ack.code, ack.control_id), (code, None));
            assert!(ack.answers(b"ANY"));
            assert_eq!(ack.text(Charset::Utf8), "");
            assert_eq!(ack.error_codes().count(), 0);
        }
    }

    #[test]
    fn received_ack_reads_what_build_ack_writes() {
        use crate::refusal::Refusal;
        for (inbound, code) in [
            (&b"MSH|^~\\&|LAB|FAC|HL7D|FAC|1||ADT^A01|R-25|P|2.5\r"[..], AckCode::ApplicationReject),
            (b"MSH|^~\\&|LAB|FAC|HL7D|FAC|1||ADT^A01|R-23|P|2.3\r", AckCode::ApplicationError),
            (b"MSH$%*!@$LAB$FAC$HL7D$FAC$1$$ADT%A01$R-CUSTOM$P$2.5$$$AL\r", AckCode::CommitReject),
        ] {
            let msh = Msh::parse(inbound).unwrap();
            let refusal = Refusal::FrameTooLarge { limit: 1024 };
            let params = AckParams { error: Some(refusal.ack_error()), ..params(code) };
            let bytes = ack_to_vec(Some(&msh), &params);
            let ack = ReceivedAck::parse(&bytes).expect("our own ACK reads back");
            assert_eq!(ack.code, code);
            assert_eq!(ack.control_id, Some(msh.control_id));
            assert!(ack.answers(msh.control_id) && !ack.answers(b"OTHER"));
            assert_eq!(ack.error_codes().collect::<Vec<_>>(), [104], "{}", bytes.escape_ascii());
            assert_eq!(ack.text(Charset::Utf8), refusal.to_string());
        }
    }

    #[test]
    fn received_ack_text_adds_err_detail_and_decodes_msh_18() {
        let frame = b"MSH|^~\\&|R|F|S|F|1||ACK^A01^ACK|9|P|2.5||||||8859/1\rMSA|AE|X-1|caf\xe9\r\
            ERR||PID^1^5|102^Data type error^HL70357|E||||bad name\rERR|||207^Application internal error^HL70357|E\r";
        let ack = ReceivedAck::parse(frame).unwrap();
        assert_eq!(ack.charset(Charset::Utf8), Charset::Windows1252);
        assert_eq!(ack.text(Charset::Utf8), "café; bad name");
        assert_eq!(ack.error_codes().collect::<Vec<_>>(), [102, 207]);
        // Only ERR-3.2 when ERR-8 is empty; nothing repeated that MSA-3 already says.
        let frame =
            b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|AR|X-2\rERR|||100^Segment sequence error^HL70357|E\r";
        assert_eq!(ReceivedAck::parse(frame).unwrap().text(Charset::Utf8), "Segment sequence error");
        let frame = b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|AR|X-3|bad name\rERR||||E||||bad name\r";
        assert_eq!(ReceivedAck::parse(frame).unwrap().text(Charset::Utf8), "bad name");
    }

    #[test]
    fn frames_that_are_not_acks() {
        for frame in [
            &b""[..],
            b"\x06\x06",
            b"hello",
            b"MSH|^~\\&|R|F|S|F|1||ADT^A01|9|P|2.5\rPID|1\r",
            b"MSH|^~\\&|R|F|S|F|1||ACK|9|P|2.5\rMSA|OK|X-1\r",
        ] {
            assert!(ReceivedAck::parse(frame).is_none(), "{}", frame.escape_ascii());
        }
    }
}
