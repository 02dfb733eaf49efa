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
use crate::msh::Msh;

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

/// [`extract`] for a frame whose header has been read already: `msh` must be the frame's
/// own MSH (what [`crate::inbound::inspect`] built when it accepted the frame, not a header
/// salvaged from later bytes). The MSH is not split again: its values come from `msh`, and
/// only the segments after it are read. The result is the same as `extract(raw, charset)`
/// (a property test checks it). In the sets where a delimiter byte can be half of a
/// character the message is decoded first, so the raw header cannot be reused, and this is
/// [`extract`].
pub fn extract_with_header(raw: &[u8], msh: &Msh<'_>, charset: Charset) -> Extracted {
    if !charset.is_ascii_compatible() {
        return extract(raw, charset);
    }
    match Message::parse(raw) {
        Ok(message) => from_parts(Header::of(msh), &message, charset),
        Err(_) => Extracted::default(),
    }
}

/// The MSH values the extractor reads, each as the field or component it comes from.
struct Header<'a> {
    /// MSH-3 to MSH-6, whole fields.
    sending_application: Value<'a>,
    sending_facility: Value<'a>,
    receiving_application: Value<'a>,
    receiving_facility: Value<'a>,
    /// MSH-7, whole field (its first component is read).
    date_time: Value<'a>,
    /// MSH-9.1, MSH-9.2, MSH-9.3.
    message_code: Value<'a>,
    trigger_event: Value<'a>,
    message_structure: Value<'a>,
    /// MSH-10, whole field.
    control_id: Value<'a>,
    /// MSH-11, whole field (its first component is read).
    processing_id: Value<'a>,
    /// MSH-12.1.
    version: Value<'a>,
}

impl<'a> Header<'a> {
    /// Splits the MSH of `message`.
    fn read(message: &Message<'a>) -> Header<'a> {
        let fields: [Value<'a>; 13] = message.msh().header_fields();
        Header {
            sending_application: fields[3],
            sending_facility: fields[4],
            receiving_application: fields[5],
            receiving_facility: fields[6],
            date_time: fields[7],
            message_code: fields[9].component(1),
            trigger_event: fields[9].component(2),
            message_structure: fields[9].component(3),
            control_id: fields[10],
            processing_id: fields[11],
            version: fields[12].component(1),
        }
    }

    /// The same values from an MSH view: its slices are those fields and components.
    fn of(msh: &Msh<'a>) -> Header<'a> {
        let value = |raw| Value::field(raw, msh.delimiters);
        Header {
            sending_application: value(msh.sending_application),
            sending_facility: value(msh.sending_facility),
            receiving_application: value(msh.receiving_application),
            receiving_facility: value(msh.receiving_facility),
            date_time: value(msh.date_time),
            message_code: value(msh.message_type.code),
            trigger_event: value(msh.message_type.trigger),
            message_structure: value(msh.message_type.structure),
            control_id: value(msh.control_id),
            processing_id: value(msh.processing_id),
            version: value(msh.version),
        }
    }
}

/// Extraction from a parsed message whose bytes are in `charset`.
fn from_message<'a>(message: &Message<'a>, charset: Charset) -> Extracted {
    from_parts(Header::read(message), message, charset)
}

/// Extraction from the header's values and the segments of `message`.
fn from_parts<'a>(header: Header<'a>, message: &Message<'a>, charset: Charset) -> Extracted {
    let clean = |value: Value<'a>| text(charset.decode(&value.unescape()));
    let whole = |value: Value<'a>| text(charset.decode(value.raw()));
    let segments = Segments::find(message);
    let field = |segment: Option<Segment<'a>>, n: usize| segment.map(|s| s.field(n));

    // PID-3: the first repetition with a CX.1.
    let patient = field(segments.pid, 3)
        .and_then(|pid3| pid3.repetitions().find_map(|rep| Some((rep, clean(rep.component(1))?))));
    let patient_id_authority = patient.as_ref().and_then(|(rep, _)| {
        let hd = rep.component(4);
        clean(hd.subcomponent(1)).or_else(|| clean(hd.subcomponent(2)))
    });
    let patient_id = patient.map(|(_, id)| id);
    let order = |orc_field: usize, obr_field: usize| {
        field(segments.orc, orc_field)
            .and_then(|ei| clean(ei.component(1)))
            .or_else(|| field(segments.obr, obr_field).and_then(|ei| clean(ei.component(1))))
    };

    Extracted {
        sending_application: whole(header.sending_application),
        sending_facility: whole(header.sending_facility),
        receiving_application: whole(header.receiving_application),
        receiving_facility: whole(header.receiving_facility),
        message_time: Dtm::parse(header.date_time.component(1).raw()),
        message_code: clean(header.message_code),
        trigger_event: clean(header.trigger_event),
        message_structure: clean(header.message_structure),
        control_id: clean(header.control_id),
        processing_id: clean(header.processing_id.component(1)),
        version: clean(header.version),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::dtm::Precision;

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    #[test]
    fn key_fields_fixture() {
        let e = extract(include_bytes!("../tests/fixtures/oru_r01_v251_key_fields.hl7"), Charset::Utf8);
        assert_eq!(e.sending_application, some("LIS^2.16.840.1.113883.3.9^ISO"));
        assert_eq!(e.sending_facility, some("CITYLAB"));
        assert_eq!(e.receiving_application, some("EHR"));
        assert_eq!(e.receiving_facility, some("MAIN"));
        assert_eq!(
            (e.message_code, e.trigger_event, e.message_structure),
            (some("ORU"), some("R01"), some("ORU_R01"))
        );
        assert_eq!((e.control_id, e.processing_id, e.version), (some("XF-0001"), some("P"), some("2.5.1")));
        // The first PID-3 repetition is empty; the second holds the id, escaped, and an
        // authority given only as an OID (HD.2).
        assert_eq!(e.patient_id, some("PAT&77"));
        assert_eq!(e.patient_id_authority, some("2.16.840.1.113883.19.5"));
        assert_eq!(e.visit_number, some("V-2026-0042"));
        // ORC-2 is the HL7 null "": OBR-2 instead. ORC-3 is there. The second order group
        // does not count.
        assert_eq!(e.placer_order, some("PLC-1"));
        assert_eq!(e.filler_order, some("FIL-9"));
        let time = e.message_time.unwrap();
        assert_eq!(
            (time.precision, time.micros, time.offset_minutes),
            (Precision::Fraction, 250_000, Some(-300))
        );
        // 2026-11-04T15:30:00.25-05:00 = 20:30:00.25 UTC.
        assert_eq!(time.utc_micros(), Some((1_793_806_200 + 5 * 3600) * 1_000_000 + 250_000));
    }

    #[test]
    fn shared_samples() {
        let adt = extract(include_bytes!("../tests/fixtures/adt_a01_v25.hl7"), Charset::Utf8);
        assert_eq!((adt.patient_id, adt.patient_id_authority), (some("PATID1234"), some("MCM")));
        assert_eq!((adt.trigger_event, adt.sending_facility), (some("A01"), some("MCM")));
        // Its PV1 stops before field 19; it has no orders.
        assert_eq!((adt.visit_number, adt.placer_order, adt.filler_order), (None, None, None));
        let time = adt.message_time.unwrap();
        assert_eq!((time.precision, time.utc_micros()), (Precision::Second, None));
        assert_eq!(time.wall_micros(), 1_793_806_200 * 1_000_000);

        let orm = extract(include_bytes!("../tests/fixtures/orm_o01_v23.hl7"), Charset::Utf8);
        assert_eq!((orm.patient_id, orm.patient_id_authority), (some("770011"), some("NORTH")));
        assert_eq!((orm.placer_order, orm.filler_order), (some("A12345"), None));
        assert_eq!(
            (orm.message_code, orm.trigger_event, orm.message_structure),
            (some("ORM"), some("O01"), None)
        );

        let oru = extract(include_bytes!("../tests/fixtures/oru_r01_v251_escapes.hl7"), Charset::Utf8);
        assert_eq!(oru.patient_id, some("556677"));
        assert_eq!((oru.placer_order, oru.filler_order), (some("ORD1001"), some("FIL2002")));
        assert_eq!(oru.sending_facility, some("CENTRAL LAB"));

        let custom = extract(include_bytes!("../tests/fixtures/custom_delimiters.hl7"), Charset::Utf8);
        assert_eq!((custom.patient_id, custom.patient_id_authority), (some("5"), some("FAC")));
        assert_eq!(custom.trigger_event, some("A01"));

        for lf in [
            &include_bytes!("../tests/fixtures/lf_segment_terminators.hl7")[..],
            &include_bytes!("../tests/fixtures/crlf_segment_terminators.hl7")[..],
        ] {
            let e = extract(lf, Charset::Utf8);
            assert!(e.control_id.is_some() && e.trigger_event == some("A03"));
        }

        let utf8 = extract(include_bytes!("../tests/fixtures/utf8_multilingual_adt_a08.hl7"), Charset::Utf8);
        assert_eq!((utf8.patient_id, utf8.sending_facility), (some("778899"), some("CLINIC")));
    }

    /// Every shared sample extracts without surprises: what parses has its control id.
    #[test]
    fn every_fixture() {
        let fixtures: &[(&[u8], Option<&str>)] = &[
            (include_bytes!("../tests/fixtures/adt_a04_v231_original_mode.hl7"), Some("CTRL-20261105-0001")),
            (include_bytes!("../tests/fixtures/batch_fhs_bhs_3msgs.hl7"), None),
            (include_bytes!("../tests/fixtures/enhanced_al_al.hl7"), Some("ENH-AL-1")),
            (include_bytes!("../tests/fixtures/invalid_missing_control_id.hl7"), None),
            (include_bytes!("../tests/fixtures/invalid_no_msh_first.hl7"), None),
            (include_bytes!("../tests/fixtures/invalid_not_hl7.txt"), None),
            (include_bytes!("../tests/fixtures/mdm_t02_v25_base64_200k.hl7"), Some("MDM-7001")),
            (include_bytes!("../tests/fixtures/processing_id_training.hl7"), Some("TRN-1")),
            (include_bytes!("../tests/fixtures/qry_a19_v23.hl7"), Some("QRY-1")),
            (include_bytes!("../tests/fixtures/siu_s12_v24.hl7"), Some("SIU-0001")),
            (include_bytes!("../tests/fixtures/v27_truncation_char.hl7"), Some("V27-0001")),
            (include_bytes!("../tests/fixtures/windows1252_adt_a08.hl7"), Some("CP1252-0001")),
        ];
        for (raw, control_id) in fixtures {
            let e = extract(raw, Charset::Utf8);
            assert_eq!(e.control_id.as_deref(), *control_id, "{e:?}");
        }
        let mdm = extract(fixtures[6].0, Charset::Utf8);
        assert!(mdm.patient_id.is_some(), "PID before the 200 KB OBX");
        let processing = extract(fixtures[7].0, Charset::Utf8);
        assert_eq!(processing.processing_id, some("T"));
    }

    #[test]
    fn values_are_decoded_from_the_message_charset() {
        let raw =
            b"MSH|^~\\&|H\xd4PITAL|CH\xc9|R|R|20261104||ADT^A08|W-1|P|2.3||||||8859/1\rPID|1||\xc9MILE-7\r";
        let e = extract(raw, Charset::Windows1252);
        assert_eq!((e.sending_application, e.sending_facility), (some("HÔPITAL"), some("CHÉ")));
        assert_eq!(e.patient_id, some("ÉMILE-7"));
        // Read as UTF-8, the same bytes are invalid: U+FFFD, never a failure.
        assert_eq!(extract(raw, Charset::Utf8).patient_id, some("\u{FFFD}MILE-7"));
    }

    /// In Big5 a delimiter byte can be the second half of a character: `四` is `A5 7C` (a
    /// `|`), `許` is `B3 5C` (a `\`). Split on the raw bytes, PID-3 would be cut in two and
    /// the "escape" resolved; decoded first, it is read whole.
    #[test]
    fn multi_byte_sets_are_decoded_before_splitting() {
        let mut raw = b"MSH|^~\\&|APP|FAC|R|R|20261104||ADT^A08|B5-1|P|2.5||||||BIG-5\rPID|1||".to_vec();
        raw.extend_from_slice(&[0xA5, 0x7C, 0xB3, 0x5C, 0xA5, 0x5C]);
        raw.extend_from_slice(b"^^^FAC\rPV1|1|I\r");
        let e = extract(&raw, Charset::Big5);
        assert_eq!(e.patient_id, some("四許功"));
        assert_eq!(e.patient_id_authority, some("FAC"));
        assert_eq!(e.control_id, some("B5-1"));
        // What splitting the raw bytes would have given.
        let naive = extract(&raw, Charset::Windows1252);
        assert_ne!(naive.patient_id, some("四許功"));
    }

    #[test]
    fn empty_null_and_blank_values_are_none() {
        let e = extract(
            b"MSH|^~\\&|  |\"\"|R|R|||ADT|\"\"|P|2.5\rPID|1||  ^^^\"\"\rPV1|1\rORC|NW|\"\"|\rOBR|1\r",
            Charset::Utf8,
        );
        assert_eq!(e.sending_application, None);
        assert_eq!(e.sending_facility, None);
        assert_eq!(e.control_id, None);
        assert_eq!((e.message_time, e.trigger_event), (None, None));
        assert_eq!((e.patient_id, e.patient_id_authority, e.visit_number), (None, None, None));
        assert_eq!((e.placer_order, e.filler_order), (None, None));
        assert_eq!(e.message_code, some("ADT"));
        // Surrounding spaces are trimmed; inner ones kept.
        let e = extract(b"MSH|^~\\&|A|F|R|R|1||ADT^A08|1|P|2.5\rPID|1|| 12 34 \r", Charset::Utf8);
        assert_eq!(e.patient_id, some("12 34"));
    }

    #[test]
    fn malformed_time_is_none_and_ts_precision_component_is_ignored() {
        let with = |msh7: &str| {
            let raw = format!("MSH|^~\\&|A|F|R|R|{msh7}||ADT^A08|1|P|2.3\r");
            extract(raw.as_bytes(), Charset::Utf8).message_time
        };
        assert_eq!(with("2026-11-04"), None);
        assert_eq!(with("20261340"), None);
        // v2.3 TS: time ^ degree of precision.
        assert_eq!(with("202611041530^M").unwrap().precision, Precision::Minute);
        assert_eq!(with("20261104153000+0100").unwrap().offset_minutes, Some(60));
    }

    #[test]
    fn values_are_bounded() {
        let long = "9".repeat(10_000);
        let raw = format!("MSH|^~\\&|{long}|F|R|R|1||ADT^A08|{long}|P|2.5\rPID|1||{long}^^^{long}\r");
        let e = extract(raw.as_bytes(), Charset::Utf8);
        for value in [&e.sending_application, &e.control_id, &e.patient_id, &e.patient_id_authority] {
            assert_eq!(value.as_deref().map(str::len), Some(MAX_VALUE_LEN));
        }
        // Cut at a character boundary: 'é' is two bytes.
        let accents = "é".repeat(200);
        let raw = format!("MSH|^~\\&|A|F|R|R|1||ADT^A08|1|P|2.5\rPID|1||{accents}\r");
        let id = extract(raw.as_bytes(), Charset::Utf8).patient_id.unwrap();
        assert_eq!((id.len(), id.chars().count()), (MAX_VALUE_LEN, MAX_VALUE_LEN / 2));
        let three = "€".repeat(100);
        let raw = format!("MSH|^~\\&|A|F|R|R|1||ADT^A08|1|P|2.5\rPID|1||{three}\r");
        assert_eq!(extract(raw.as_bytes(), Charset::Utf8).patient_id.unwrap().len(), 255);
    }

    #[test]
    fn not_a_message_gives_nothing() {
        for raw in [&b""[..], b"hello", b"PID|1||X\rMSH|^~\\&|A\r", b"MSH|^|"] {
            assert_eq!(extract(raw, Charset::Utf8), Extracted::default());
            assert_eq!(extract(raw, Charset::Big5), Extracted::default());
        }
    }

    #[test]
    fn debug_shows_no_values() {
        let e = extract(include_bytes!("../tests/fixtures/adt_a01_v25.hl7"), Charset::Utf8);
        let text = format!("{e:?}");
        assert!(text.contains("patient_id: Some(<9 bytes>)"), "{text}");
        for value in ["PATID1234", "MCM", "REGADT", "MSG00001"] {
            assert!(!text.contains(value), "{text}");
        }
    }

    /// One HL7-ish line: a segment id the extractor reads, then fields drawn from bytes that
    /// include every delimiter, escapes and the null.
    fn segment() -> impl Strategy<Value = String> {
        let id = prop::sample::select(vec!["PID", "PV1", "ORC", "OBR", "OBX", "MSH", "EVN"]);
        let field = prop::string::string_regex(
            "([A-Za-z0-9 .&^~\"é€/%-]|\\\\[FSTRE]\\\\|\\\\X[0-9A-F]{0,4}\\\\|\\\\){0,12}",
        )
        .expect("a valid pattern");
        (id, prop::collection::vec(field, 0..22))
            .prop_map(|(id, fields)| format!("{id}|{}", fields.join("|")))
    }

    fn check(e: &Extracted) {
        let values = [
            &e.sending_application,
            &e.sending_facility,
            &e.receiving_application,
            &e.receiving_facility,
            &e.message_code,
            &e.trigger_event,
            &e.message_structure,
            &e.control_id,
            &e.processing_id,
            &e.version,
            &e.patient_id,
            &e.patient_id_authority,
            &e.visit_number,
            &e.placer_order,
            &e.filler_order,
        ];
        for value in values.into_iter().flatten() {
            assert!(!value.is_empty() && value.len() <= MAX_VALUE_LEN, "{value:?}");
            assert_eq!(value.trim(), value);
            assert_ne!(value, "\"\"");
        }
        if let Some(time) = e.message_time {
            let _ = (time.wall_micros(), time.utc_micros());
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(raw in prop::collection::vec(any::<u8>(), 0..600), set in 0..Charset::ALL.len()) {
            check(&extract(&raw, Charset::ALL[set]));
        }

        #[test]
        fn never_panics_on_messages(
            msh in "MSH\\|\\^~\\\\&\\|[A-Z^&]{0,8}\\|[A-Z]{0,6}\\|R\\|R\\|[0-9.+-]{0,24}\\|\\|ADT\\^A0[0-9]\\|[A-Z0-9]{0,8}\\|P\\|2\\.5",
            segments in prop::collection::vec(segment(), 0..8),
            set in 0..Charset::ALL.len(),
        ) {
            let raw = format!("{msh}\r{}\r", segments.join("\r"));
            let charset = Charset::ALL[set];
            let e = extract(raw.as_bytes(), charset);
            check(&e);
            // Deterministic, and the ASCII header reads the same in every set.
            prop_assert_eq!(&e, &extract(raw.as_bytes(), charset));
            prop_assert_eq!(e.message_code.as_deref(), Some("ADT"));
        }

        /// The header view's values are the ones `extract` reads itself, in every set (and
        /// with leading line ends, which `Message::parse` skips).
        #[test]
        fn with_the_header_gives_the_same(
            msh in r"\r?MSH\|\^~\\&\|[A-Z^&~\\]{0,8}\|[A-Z&]{0,6}\|R\|R\|[0-9.+^-]{0,24}\|\|[A-Z]{0,3}(\^[A-Z0-9_]{0,7}){0,3}\|[A-Z0-9~^\\]{0,8}\|[PT^]{0,3}\|[0-9.^]{0,7}",
            segments in prop::collection::vec(segment(), 0..8),
            set in 0..Charset::ALL.len(),
        ) {
            let raw = format!("{msh}\r{}\r", segments.join("\r"));
            let charset = Charset::ALL[set];
            let header = Msh::parse(raw.as_bytes()).expect("an MSH");
            prop_assert_eq!(extract_with_header(raw.as_bytes(), &header, charset), extract(raw.as_bytes(), charset));
        }
    }

    #[test]
    fn with_the_header_gives_the_same_on_every_fixture() {
        let fixtures: &[&[u8]] = &[
            include_bytes!("../tests/fixtures/oru_r01_v251_key_fields.hl7"),
            include_bytes!("../tests/fixtures/adt_a01_v25.hl7"),
            include_bytes!("../tests/fixtures/custom_delimiters.hl7"),
            include_bytes!("../tests/fixtures/crlf_segment_terminators.hl7"),
            include_bytes!("../tests/fixtures/windows1252_adt_a08.hl7"),
            include_bytes!("../tests/fixtures/v27_truncation_char.hl7"),
            include_bytes!("../tests/fixtures/processing_id_training.hl7"),
        ];
        for raw in fixtures {
            let header = Msh::parse(raw).unwrap();
            for charset in Charset::ALL {
                assert_eq!(extract_with_header(raw, &header, charset), extract(raw, charset));
            }
        }
    }
}
