//! Typed MSH view, built once per message.
//!
//! Later code (ACK builder, store, logs) takes an [`Msh`], never raw field indexes. Building
//! the view never fails once [`Message::parse`] has succeeded: absent fields are empty, so a
//! NACK can still swap sender and receiver. [`Msh::validate`] then says whether the header is
//! complete enough to accept the message.

use crate::error::ParseError;
use crate::message::{Delimiters, Message, Value};

/// HL7 table 0155 "Accept/application acknowledgment conditions" (MSH-15, MSH-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCondition {
    /// `AL`: always acknowledge.
    Always,
    /// `NE`: never acknowledge.
    Never,
    /// `ER`: acknowledge only on error or rejection.
    ErrorOnly,
    /// `SU`: acknowledge only on successful completion.
    SuccessOnly,
}

impl AckCondition {
    /// Parses a table 0155 value; `None` for anything else.
    pub fn from_code(code: &[u8]) -> Option<AckCondition> {
        match code {
            b"AL" => Some(AckCondition::Always),
            b"NE" => Some(AckCondition::Never),
            b"ER" => Some(AckCondition::ErrorOnly),
            b"SU" => Some(AckCondition::SuccessOnly),
            _ => None,
        }
    }

    /// The table 0155 code.
    pub fn code(self) -> &'static str {
        match self {
            AckCondition::Always => "AL",
            AckCondition::Never => "NE",
            AckCondition::ErrorOnly => "ER",
            AckCondition::SuccessOnly => "SU",
        }
    }
}

/// MSH-9 message type: code, trigger event and message structure (`ADT^A01^ADT_A01`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageType<'a> {
    /// MSH-9.1, e.g. `ADT`.
    pub code: &'a [u8],
    /// MSH-9.2, e.g. `A01`.
    pub trigger: &'a [u8],
    /// MSH-9.3, e.g. `ADT_A01` (often empty before v2.5).
    pub structure: &'a [u8],
}

impl std::fmt::Display for MessageType<'_> {
    /// `ADT^A01` (the form used in logs; the structure is left out).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.code))?;
        if !self.trigger.is_empty() {
            write!(f, "^{}", String::from_utf8_lossy(self.trigger))?;
        }
        Ok(())
    }
}

/// The typed MSH of one message. Fields hold raw (still escaped) bytes exactly as received,
/// so they can be echoed into an ACK byte for byte, in the message's own character set.
#[derive(Debug, Clone, Copy)]
pub struct Msh<'a> {
    /// MSH-1 and MSH-2.
    pub delimiters: Delimiters,
    /// MSH-3 sending application (whole field).
    pub sending_application: &'a [u8],
    /// MSH-4 sending facility.
    pub sending_facility: &'a [u8],
    /// MSH-5 receiving application.
    pub receiving_application: &'a [u8],
    /// MSH-6 receiving facility.
    pub receiving_facility: &'a [u8],
    /// MSH-7 date/time of message.
    pub date_time: &'a [u8],
    /// MSH-9 message type.
    pub message_type: MessageType<'a>,
    /// MSH-10 message control id (MSA-2 of the ACK echoes it).
    pub control_id: &'a [u8],
    /// MSH-11 processing id, whole field (echoed into the ACK).
    pub processing_id: &'a [u8],
    /// MSH-12 version id, whole field (echoed into the ACK).
    pub version_field: &'a [u8],
    /// MSH-12.1, e.g. `2.5.1`.
    pub version: &'a [u8],
    /// MSH-15 accept acknowledgment type, raw.
    pub accept_ack_type: &'a [u8],
    /// MSH-16 application acknowledgment type, raw.
    pub application_ack_type: &'a [u8],
    /// MSH-18 character set, first repetition (HL7 says the first one is the default
    /// encoding of the message; later ones name alternates for escape sequences).
    pub character_set: &'a [u8],
}

impl<'a> Msh<'a> {
    /// Builds the typed view from a parsed message. Absent fields are empty.
    pub fn new(message: &Message<'a>) -> Msh<'a> {
        let fields: [Value<'a>; 19] = message.msh().header_fields();
        let raw = |n: usize| fields[n].raw();
        let msh9 = fields[9];
        let msh12 = fields[12];
        Msh {
            delimiters: message.delimiters(),
            sending_application: raw(3),
            sending_facility: raw(4),
            receiving_application: raw(5),
            receiving_facility: raw(6),
            date_time: raw(7),
            message_type: MessageType {
                code: msh9.component(1).raw(),
                trigger: msh9.component(2).raw(),
                structure: msh9.component(3).raw(),
            },
            control_id: raw(10),
            processing_id: raw(11),
            version_field: msh12.raw(),
            version: msh12.component(1).raw(),
            accept_ack_type: raw(15),
            application_ack_type: raw(16),
            character_set: fields[18].repetition(1).raw(),
        }
    }

    /// Parses a message and builds its MSH view in one step.
    pub fn parse(raw: &'a [u8]) -> Result<Msh<'a>, ParseError> {
        Ok(Msh::new(&Message::parse(raw)?))
    }

    /// The first readable header in `raw`: the message's own, or one further in, so that a
    /// refusal can still swap sender and receiver and echo MSH-10 in MSA-2. For frames that
    /// do not parse (e.g. a PID sent before the MSH) and for the first bytes of a frame the
    /// decoder gave up on, which may end in the middle of a field. An `MSH` counts only at
    /// the start of a line. `None` when there is none.
    pub fn salvage(raw: &'a [u8]) -> Option<Msh<'a>> {
        let mut start = 0;
        while let Some(pos) = memchr::memmem::find(&raw[start..], b"MSH") {
            let at = start + pos;
            let at_line_start = at == 0 || matches!(raw[at - 1], b'\r' | b'\n');
            if at_line_start {
                if let Ok(message) = Message::parse(&raw[at..]) {
                    return Some(Msh::new(&message));
                }
            }
            start = at + 3;
        }
        None
    }

    /// Checks that the header is complete enough to accept the message: MSH-9.1, MSH-10,
    /// MSH-11 and MSH-12 present (HL7 v2 marks them required), MSH-15/16 from table 0155.
    pub fn validate(&self) -> Result<(), ParseError> {
        let required: [(&[u8], &'static str, &'static str); 4] = [
            (self.message_type.code, "MSH-9", "message type"),
            (self.control_id, "MSH-10", "message control id"),
            (self.processing_id, "MSH-11", "processing id"),
            (self.version, "MSH-12", "version id"),
        ];
        for (value, field, name) in required {
            if value.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(ParseError::RequiredFieldMissing { field, name });
            }
        }
        self.accept_ack()?;
        self.application_ack()?;
        Ok(())
    }

    /// MSH-15 as a table 0155 value (`None` when empty).
    pub fn accept_ack(&self) -> Result<Option<AckCondition>, ParseError> {
        condition(self.accept_ack_type, "MSH-15")
    }

    /// MSH-16 as a table 0155 value (`None` when empty).
    pub fn application_ack(&self) -> Result<Option<AckCondition>, ParseError> {
        condition(self.application_ack_type, "MSH-16")
    }

    /// Original acknowledgment mode: MSH-15 and MSH-16 both empty (HL7 v2 section 2.9.2).
    /// Anything else is enhanced mode.
    pub fn is_original_mode(&self) -> bool {
        self.accept_ack_type.is_empty() && self.application_ack_type.is_empty()
    }

    /// MSH-12.1 as (major, minor), e.g. `2.5.1` → (2, 5); `None` when unreadable.
    pub fn version_number(&self) -> Option<(u32, u32)> {
        let text = std::str::from_utf8(self.version).ok()?;
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
        Some((major, minor))
    }
}

fn condition(raw: &[u8], field: &'static str) -> Result<Option<AckCondition>, ParseError> {
    if raw.is_empty() {
        return Ok(None);
    }
    AckCondition::from_code(raw).map(Some).ok_or(ParseError::BadTableValue { field, table: "0155" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msh(raw: &[u8]) -> Msh<'_> {
        Msh::parse(raw).unwrap()
    }

    #[test]
    fn adt_a01() {
        let m = msh(include_bytes!("../tests/fixtures/adt_a01_v25.hl7"));
        assert_eq!(m.sending_application, b"REGADT");
        assert_eq!(m.sending_facility, b"MCM");
        assert_eq!(m.receiving_application, b"IFENG");
        assert_eq!(m.receiving_facility, b"MCM");
        assert_eq!(m.date_time, b"20261104153000");
        assert_eq!(m.message_type.code, b"ADT");
        assert_eq!(m.message_type.trigger, b"A01");
        assert_eq!(m.message_type.structure, b"ADT_A01");
        assert_eq!(m.message_type.to_string(), "ADT^A01");
        assert_eq!(m.control_id, b"MSG00001");
        assert_eq!(m.processing_id, b"P");
        assert_eq!(m.version, b"2.5");
        assert_eq!(m.version_number(), Some((2, 5)));
        assert_eq!(m.accept_ack().unwrap(), Some(AckCondition::Always));
        assert_eq!(m.application_ack().unwrap(), Some(AckCondition::Never));
        assert_eq!(m.character_set, b"UNICODE UTF-8");
        assert!(!m.is_original_mode());
        m.validate().unwrap();
    }

    #[test]
    fn version_numbers() {
        let v = |s: &[u8]| {
            let mut raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|".to_vec();
            raw.extend_from_slice(s);
            Msh::parse(&raw).unwrap().version_number()
        };
        assert_eq!(v(b"2.3.1"), Some((2, 3)));
        assert_eq!(v(b"2.7"), Some((2, 7)));
        assert_eq!(v(b"2.5^USA"), Some((2, 5)));
        assert_eq!(v(b"3"), Some((3, 0)));
        assert_eq!(v(b"x"), None);
    }

    #[test]
    fn missing_control_id_is_reported() {
        let m = msh(include_bytes!("../tests/fixtures/invalid_missing_control_id.hl7"));
        let err = m.validate().unwrap_err();
        assert_eq!(err, ParseError::RequiredFieldMissing { field: "MSH-10", name: "message control id" });
    }

    #[test]
    fn bad_ack_condition_is_reported() {
        let m = msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5|||XX|NE\r");
        assert_eq!(m.validate().unwrap_err(), ParseError::BadTableValue { field: "MSH-15", table: "0155" });
    }

    #[test]
    fn processing_id_and_repeated_charset() {
        let m = msh(b"MSH|^~\\&|A|B|C|D|1||ADT^A01|1|T^I|2.5||||||8859/1~ISO IR87\r");
        assert_eq!(m.processing_id, b"T^I");
        assert_eq!(m.character_set, b"8859/1");
    }

    #[test]
    fn salvage_finds_the_first_header_at_a_line_start() {
        let pid_first = b"PID|1||X\rMSH|^~\\&|A|B|C|D|1||ADT^A01|LATER-1|P|2.5\r";
        assert_eq!(Msh::salvage(pid_first).unwrap().control_id, b"LATER-1");
        // A prefix cut in the middle of a field still yields its header.
        assert_eq!(
            Msh::salvage(b"\r\nMSH|^~\\&|A|B|C|D|1||ADT^A01|CUT-1|P|2.5|||A").unwrap().control_id,
            b"CUT-1"
        );
        // `MSH` inside a field is not a header.
        assert!(Msh::salvage(b"PID|1||MSH|^~\\&|A|B|C|D|1||ADT^A01|IN-FIELD|P|2.5\r").is_none());
        assert!(Msh::salvage(b"not hl7 at all").is_none());
        assert!(Msh::salvage(b"").is_none());
    }
}
