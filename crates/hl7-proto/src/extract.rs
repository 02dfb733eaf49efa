//! Key fields of a message, read once at ingest so that the store can index them: patient
//! identifier, visit number, order numbers, message time, and the header fields.
//!
//! Owns which field each value comes from and how it is cleaned. It never fails a message:
//! whatever is missing or malformed is `None`, and every value is bounded
//! ([`MAX_VALUE_LEN`]) so that a hostile message cannot make huge index keys. It does not
//! decide what is stored or how it is searched; that is the store's.
//!
//! # Where each value comes from
//!
//! | value | field | how |
//! |---|---|---|
//! | [`Extracted::patient_id`] | PID-3 (CX) | CX.1 of the first repetition that has one (in practice the first) |
//! | [`Extracted::patient_id_authority`] | PID-3 (CX) | CX.4 (an HD) of that repetition: HD.1 namespace id, else HD.2 universal id (an OID) |
//! | [`Extracted::visit_number`] | PV1-19 (CX) | CX.1 |
//! | [`Extracted::placer_order`] | ORC-2, else OBR-2 (EI) | EI.1 entity identifier |
//! | [`Extracted::filler_order`] | ORC-3, else OBR-3 (EI) | EI.1 |
//! | [`Extracted::message_time`] | MSH-7 (DTM, or TS.1 before v2.6) | [`Dtm::parse`] |
//! | [`Extracted::message_code`], [`Extracted::trigger_event`], [`Extracted::message_structure`] | MSH-9.1/.2/.3 | components |
//! | [`Extracted::control_id`] | MSH-10 | whole field |
//! | [`Extracted::processing_id`] | MSH-11.1 | component |
//! | [`Extracted::version`] | MSH-12.1 | component |
//! | [`Extracted::sending_application`] … [`Extracted::receiving_facility`] | MSH-3 … MSH-6 (HD) | whole field, escapes kept |
//!
//! The first PID, PV1, ORC and OBR segment of the message count; later ones (a second order
//! group, the merged patient of an A40's MRG) do not.
//!
//! # How a value is cleaned
//!
//! Escape sequences are resolved (`\F\` → `|`, `\X41\` → `A`; HL7 v2 section 2.7), then the
//! bytes are decoded from the message's own character set (invalid sequences become
//! U+FFFD), surrounding whitespace is trimmed, and the text is cut to at most
//! [`MAX_VALUE_LEN`] bytes at a character boundary. An empty value and the HL7 null `""`
//! (which means "delete this value", not a value) are `None`.
//!
//! MSH-3 to MSH-6 are the exception: they are compound (HD: namespace id `^` universal id `^`
//! type), and resolving escapes in a whole compound field would make an escaped `\S\`
//! indistinguishable from a real component separator, so they are decoded and trimmed but
//! their escapes are kept as received (in practice they hold none).
//!
//! # Character sets
//!
//! The extractor takes the message's [`Charset`] and returns text, so that index keys are
//! comparable across senders whatever they send in. In the ASCII-compatible sets (UTF-8, the
//! ISO 8859 and Windows sets, ASCII) values are split on the raw bytes and each one is
//! decoded on its own; in Big5, GB 18030, KS X 1001 and ISO-2022-JP a delimiter byte can be
//! half of a character ([`Charset::is_ascii_compatible`]), so the whole message is decoded
//! first and the text is split. There, a `\Xhh\` escape yields the byte `hh` of UTF-8 text
//! rather than of the sender's set (lossy for non-ASCII bytes; such escapes are not seen in
//! practice).

use std::borrow::Cow;
use std::fmt;

use crate::charset::Charset;
use crate::dtm::Dtm;
use crate::message::{Message, Segment, Value};

/// Most bytes (of UTF-8) kept of one extracted value; longer values are cut at the last
/// character boundary before it.
pub const MAX_VALUE_LEN: usize = 256;

/// The key fields of one message; see the module documentation for where each comes from.
///
/// Its `Debug` output shows which fields are present and how long they are, never their
/// contents: they are patient data.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// MSH-3 sending application (whole field, escapes kept).
    pub sending_application: Option<String>,
    /// MSH-4 sending facility (whole field, escapes kept).
    pub sending_facility: Option<String>,
    /// MSH-5 receiving application (whole field, escapes kept).
    pub receiving_application: Option<String>,
    /// MSH-6 receiving facility (whole field, escapes kept).
    pub receiving_facility: Option<String>,
    /// MSH-7 date/time of message.
    pub message_time: Option<Dtm>,
    /// MSH-9.1 message code, e.g. `ADT`.
    pub message_code: Option<String>,
    /// MSH-9.2 trigger event, e.g. `A01`.
    pub trigger_event: Option<String>,
    /// MSH-9.3 message structure, e.g. `ADT_A01`.
    pub message_structure: Option<String>,
    /// MSH-10 message control id.
    pub control_id: Option<String>,
    /// MSH-11.1 processing id (`P`, `T`, `D`).
    pub processing_id: Option<String>,
    /// MSH-12.1 version id, e.g. `2.5.1`.
    pub version: Option<String>,
    /// PID-3 CX.1: the patient identifier.
    pub patient_id: Option<String>,
    /// PID-3 CX.4: the authority that assigned [`Extracted::patient_id`].
    pub patient_id_authority: Option<String>,
    /// PV1-19 CX.1: the visit number.
    pub visit_number: Option<String>,
    /// ORC-2 EI.1, else OBR-2 EI.1: the placer order number.
    pub placer_order: Option<String>,
    /// ORC-3 EI.1, else OBR-3 EI.1: the filler order number.
    pub filler_order: Option<String>,
}

/// Reads the key fields of the message in `raw`, a frame as received, in `charset` (the one
/// [`crate::inbound::inspect`] resolved for it). Never fails: a frame that does not parse as
/// a message gives an [`Extracted`] with every field `None`.
pub fn extract(raw: &[u8], charset: Charset) -> Extracted {
    if charset.is_ascii_compatible() {
        match Message::parse(raw) {
            Ok(message) => from_message(&message, charset),
            Err(_) => Extracted::default(),
        }
    } else {
        let text = charset.decode(raw);
        match Message::parse(text.as_bytes()) {
            // The text is UTF-8 now.
            Ok(message) => from_message(&message, Charset::Utf8),
            Err(_) => Extracted::default(),
        }
    }
}

/// The first segment of each kind the extractor reads, found in one pass.
#[derive(Default)]
struct Segments<'a> {
    pid: Option<Segment<'a>>,
    pv1: Option<Segment<'a>>,
    orc: Option<Segment<'a>>,
    obr: Option<Segment<'a>>,
}

impl<'a> Segments<'a> {
    fn find(message: &Message<'a>) -> Segments<'a> {
        let mut found = Segments::default();
        for segment in message.segments().skip(1) {
            let slot = match segment.id() {
                b"PID" => &mut found.pid,
                b"PV1" => &mut found.pv1,
                b"ORC" => &mut found.orc,
                b"OBR" => &mut found.obr,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(segment);
            }
            if found.pid.is_some() && found.pv1.is_some() && found.orc.is_some() && found.obr.is_some() {
                break;
            }
        }
        found
    }
}

/// Extraction from a parsed message whose bytes are in `charset`.
fn from_message<'a>(message: &Message<'a>, charset: Charset) -> Extracted {
    let clean = |value: Value<'a>| text(charset.decode(&value.unescape()));
    let whole = |value: Value<'a>| text(charset.decode(value.raw()));
    let msh = message.msh();
    let fields: [Value<'a>; 13] = msh.header_fields();
    let segments = Segments::find(message);
    let field = |segment: Option<Segment<'a>>, n: usize| segment.map(|s| s.field(n));

    // PID-3: the first repetition with a CX.1.
    let patient = field(segments.pid, 3)
        .and_then(|pid3| pid3.repetitions().find(|rep| clean(rep.component(1)).is_some()));
    let patient_id = patient.and_then(|rep| clean(rep.component(1)));
    let patient_id_authority = patient.and_then(|rep| {
        let hd = rep.component(4);
        clean(hd.subcomponent(1)).or_else(|| clean(hd.subcomponent(2)))
    });
    let order = |orc_field: usize, obr_field: usize| {
        field(segments.orc, orc_field)
            .and_then(|ei| clean(ei.component(1)))
            .or_else(|| field(segments.obr, obr_field).and_then(|ei| clean(ei.component(1))))
    };

    Extracted {
        sending_application: whole(fields[3]),
        sending_facility: whole(fields[4]),
        receiving_application: whole(fields[5]),
        receiving_facility: whole(fields[6]),
        message_time: Dtm::parse(fields[7].component(1).raw()),
        message_code: clean(fields[9].component(1)),
        trigger_event: clean(fields[9].component(2)),
        message_structure: clean(fields[9].component(3)),
        control_id: clean(fields[10]),
        processing_id: clean(fields[11].component(1)),
        version: clean(fields[12].component(1)),
        patient_id,
        patient_id_authority,
        visit_number: field(segments.pv1, 19).and_then(|cx| clean(cx.component(1))),
        placer_order: order(2, 2),
        filler_order: order(3, 3),
    }
}

/// Trims, drops empty values and the HL7 null `""`, and bounds the length.
fn text(decoded: Cow<'_, str>) -> Option<String> {
    let trimmed = decoded.trim();
    if trimmed.is_empty() || trimmed == "\"\"" {
        return None;
    }
    Some(truncate(trimmed, MAX_VALUE_LEN).to_owned())
}

/// The longest prefix of `text` of at most `max` bytes that ends at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl fmt::Debug for Extracted {
    /// Field names with `<n bytes>` for present values: never the values themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = |value: &Option<String>| value.as_ref().map(|v| Redacted(v.len()));
        f.debug_struct("Extracted")
            .field("sending_application", &len(&self.sending_application))
            .field("sending_facility", &len(&self.sending_facility))
            .field("receiving_application", &len(&self.receiving_application))
            .field("receiving_facility", &len(&self.receiving_facility))
            .field("message_time", &self.message_time.map(|t| t.precision))
            .field("message_code", &len(&self.message_code))
            .field("trigger_event", &len(&self.trigger_event))
            .field("message_structure", &len(&self.message_structure))
            .field("control_id", &len(&self.control_id))
            .field("processing_id", &len(&self.processing_id))
            .field("version", &len(&self.version))
            .field("patient_id", &len(&self.patient_id))
            .field("patient_id_authority", &len(&self.patient_id_authority))
            .field("visit_number", &len(&self.visit_number))
            .field("placer_order", &len(&self.placer_order))
            .field("filler_order", &len(&self.filler_order))
            .finish()
    }
}

struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}
