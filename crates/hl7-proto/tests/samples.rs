//! What the core makes of every shared HL7 sample: control id, type, version, character set,
//! and the ACK under each policy. One row per file in `tests/fixtures/`.

use hl7_proto::ack::{self, AckCode, AckError, AckParams, AckPolicy, Outcome};
use hl7_proto::batch;
use hl7_proto::charset::Charset;
use hl7_proto::error::{ErrorCode, ParseError};
use hl7_proto::inbound::{inspect, Inspection};
use hl7_proto::message::Message;
use hl7_proto::mllp::{self, Decoder, DecoderConfig, Framing};
use hl7_proto::msh::Msh;
use hl7_proto::refusal::Refusal;
use proptest::prelude::*;

const TS: &[u8] = b"20261128093000+0000";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

use AckCode::{ApplicationAccept as AA, CommitAccept as CA, CommitReject as CR};

/// (file, control id, MSH-9, version, charset, ACK under `msh` on success, under `always`,
/// ACK under `msh` when the message is rejected)
#[allow(clippy::type_complexity)]
const ACCEPTED: &[(&str, &str, &str, &str, Charset, Option<AckCode>, AckCode, Option<AckCode>)] = &[
    ("adt_a01_v25.hl7", "MSG00001", "ADT^A01", "2.5", Charset::Utf8, Some(CA), CA, Some(CR)),
    (
        "adt_a04_v231_original_mode.hl7",
        "CTRL-20261105-0001",
        "ADT^A04",
        "2.3.1",
        Charset::Utf8,
        Some(AA),
        AA,
        Some(AckCode::ApplicationReject),
    ),
    (
        "crlf_segment_terminators.hl7",
        "CRLF-0001",
        "ADT^A03",
        "2.3",
        Charset::Utf8,
        Some(AA),
        AA,
        Some(AckCode::ApplicationReject),
    ),
    (
        "lf_segment_terminators.hl7",
        "LF-0001",
        "ADT^A03",
        "2.3",
        Charset::Utf8,
        Some(AA),
        AA,
        Some(AckCode::ApplicationReject),
    ),
    ("custom_delimiters.hl7", "CUSTOM-DELIM-1", "ADT^A01", "2.4", Charset::Utf8, Some(CA), CA, Some(CR)),
    ("enhanced_al_al.hl7", "ENH-AL-1", "ADT^A08", "2.5", Charset::Utf8, Some(CA), CA, Some(CR)),
    ("enhanced_ne_ne.hl7", "ENH-NE-1", "ADT^A08", "2.5", Charset::Utf8, None, CA, None),
    ("enhanced_er_ne.hl7", "ENH-ER-1", "ADT^A08", "2.5", Charset::Utf8, None, CA, Some(CR)),
    ("enhanced_su_ne.hl7", "ENH-SU-1", "ADT^A08", "2.5", Charset::Utf8, Some(CA), CA, None),
    ("mdm_t02_v25_base64_200k.hl7", "MDM-7001", "MDM^T02", "2.5", Charset::Utf8, Some(CA), CA, Some(CR)),
    (
        "orm_o01_v23.hl7",
        "ORM-55-0001",
        "ORM^O01",
        "2.3",
        Charset::Utf8,
        Some(AA),
        AA,
        Some(AckCode::ApplicationReject),
    ),
    ("oru_r01_v251_escapes.hl7", "LAB778812", "ORU^R01", "2.5.1", Charset::Utf8, None, CA, Some(CR)),
    ("processing_id_training.hl7", "TRN-1", "ADT^A01", "2.5.1", Charset::Utf8, Some(CA), CA, Some(CR)),
    (
        "qry_a19_v23.hl7",
        "QRY-1",
        "QRY^A19",
        "2.3",
        Charset::Utf8,
        Some(AA),
        AA,
        Some(AckCode::ApplicationReject),
    ),
    ("siu_s12_v24.hl7", "SIU-0001", "SIU^S12", "2.4", Charset::Utf8, Some(CA), CA, Some(CR)),
    ("utf8_multilingual_adt_a08.hl7", "UTF8-0001", "ADT^A08", "2.5", Charset::Utf8, Some(CA), CA, Some(CR)),
    ("v27_truncation_char.hl7", "V27-0001", "ADT^A01", "2.7", Charset::Utf8, Some(CA), CA, Some(CR)),
    (
        "windows1252_adt_a08.hl7",
        "CP1252-0001",
        "ADT^A08",
        "2.3",
        Charset::Windows1252,
        Some(AA),
        AA,
        Some(AckCode::ApplicationReject),
    ),
];

fn params(code: AckCode, charset: Charset, error: Option<AckError<'static>>) -> AckParams<'static> {
    AckParams { code, control_id: b"ACK1", timestamp: TS, charset, error }
}

/// Reads back an ACK we built: (MSH-9, MSH-10, MSA-1, MSA-2).
fn read_ack(bytes: &[u8]) -> (String, String, String, String) {
    let message = Message::parse(bytes).expect("our ACK parses");
    let msh = Msh::new(&message);
    msh.validate().expect("our ACK has every required MSH field");
    let msa = message.segment("MSA").expect("our ACK has an MSA");
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    (
        text(message.msh().field(9).raw()),
        text(msh.control_id),
        text(msa.field(1).raw()),
        text(msa.field(2).raw()),
    )
}

#[test]
fn every_accepted_sample() {
    for &(file, control_id, msg_type, version, charset, on_success, always, on_reject) in ACCEPTED {
        let raw = fixture(file);
        let Inspection::Accept { msh, charset: seen_charset } = inspect(&raw, Charset::Utf8, false) else {
            panic!("{file}: refused");
        };
        assert_eq!(msh.control_id, control_id.as_bytes(), "{file}");
        assert_eq!(msh.message_type.to_string(), msg_type, "{file}");
        assert_eq!(msh.version, version.as_bytes(), "{file}");
        assert_eq!(seen_charset, charset, "{file}");

        assert_eq!(ack::decide(Some(&msh), AckPolicy::Msh, Outcome::Accepted), on_success, "{file}");
        assert_eq!(ack::decide(Some(&msh), AckPolicy::Always, Outcome::Accepted), Some(always), "{file}");
        assert_eq!(ack::decide(Some(&msh), AckPolicy::Never, Outcome::Accepted), None, "{file}");
        assert_eq!(ack::decide(Some(&msh), AckPolicy::Msh, Outcome::Rejected), on_reject, "{file}");

        let bytes = ack::ack_to_vec(Some(&msh), &params(always, seen_charset, None));
        let (msh9, msh10, msa1, msa2) = read_ack(&bytes);
        let trigger = msg_type.split('^').nth(1).unwrap();
        let modern = msh.version_number().unwrap() >= (2, 5);
        let sep = msh.delimiters.component as char;
        let want_msh9 =
            if modern { format!("ACK{sep}{trigger}{sep}ACK") } else { format!("ACK{sep}{trigger}") };
        assert_eq!(msh9, want_msh9, "{file}");
        assert_eq!(msh10, "ACK1", "{file}");
        assert_eq!(msa1, always.as_str(), "{file}");
        assert_eq!(msa2, control_id, "{file}");
    }
}

#[test]
fn ack_bytes_enhanced_v25() {
    let raw = fixture("adt_a01_v25.hl7");
    let msh = Msh::parse(&raw).unwrap();
    let bytes = ack::ack_to_vec(Some(&msh), &params(CA, Charset::Utf8, None));
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "MSH|^~\\&|IFENG|MCM|REGADT|MCM|20261128093000+0000||ACK^A01^ACK|ACK1|P|2.5||||||UNICODE UTF-8\r\
         MSA|CA|MSG00001\r"
    );
}

#[test]
fn ack_bytes_original_v231() {
    let raw = fixture("adt_a04_v231_original_mode.hl7");
    let msh = Msh::parse(&raw).unwrap();
    let bytes = ack::ack_to_vec(Some(&msh), &params(AA, Charset::Utf8, None));
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "MSH|^~\\&|HIS|GENHOSP|FRONTDESK|CLINIC7|20261128093000+0000||ACK^A04|ACK1|P|2.3.1\r\
         MSA|AA|CTRL-20261105-0001\r"
    );
}

#[test]
fn ack_bytes_custom_delimiters() {
    let raw = fixture("custom_delimiters.hl7");
    let msh = Msh::parse(&raw).unwrap();
    let bytes = ack::ack_to_vec(Some(&msh), &params(CA, Charset::Utf8, None));
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "MSH$%*!@$RECV$FAC$SENDER$FAC$20261128093000+0000$$ACK%A01$ACK1$P$2.4\rMSA$CA$CUSTOM-DELIM-1\r"
    );
}

#[test]
fn ack_keeps_v27_encoding_characters() {
    let raw = fixture("v27_truncation_char.hl7");
    let msh = Msh::parse(&raw).unwrap();
    let bytes = ack::ack_to_vec(Some(&msh), &params(CA, Charset::Utf8, None));
    assert!(bytes.starts_with(b"MSH|^~\\&#|IFENG|HOSP|ADMIT|HOSP|"));
}

#[test]
fn missing_control_id_gets_ar_with_err() {
    let raw = fixture("invalid_missing_control_id.hl7");
    let seen = inspect(&raw, Charset::Utf8, false);
    let problem = seen.refusal().expect("rejected");
    assert_eq!(problem.row().code, ErrorCode::RequiredFieldMissing);
    let msh = seen.msh().unwrap();
    let code = ack::decide(Some(msh), AckPolicy::Msh, problem.outcome()).unwrap();
    assert_eq!(code, AckCode::ApplicationReject);
    let bytes = ack::ack_to_vec(Some(msh), &params(code, seen.charset(), Some(problem.ack_error())));
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "MSH|^~\\&|C|D|A|B|20261128093000+0000||ACK^A01^ACK|ACK1|P|2.5\r\
         MSA|AR||required field MSH-10 (message control id) is empty\r\
         ERR||MSH^1^10|101^Required field missing^HL70357|E||||required field MSH-10 (message control id) is empty\r"
    );
}

#[test]
fn err_before_v25_uses_err_1() {
    let raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A04|X9|P|2.3\r";
    let msh = Msh::parse(raw).unwrap();
    let err = AckError {
        code: ErrorCode::ApplicationInternalError,
        text: "store unavailable".into(),
        location: None,
    };
    let bytes = ack::ack_to_vec(Some(&msh), &params(AckCode::ApplicationError, Charset::Utf8, Some(err)));
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "MSH|^~\\&|C|D|A|B|20261128093000+0000||ACK^A04|ACK1|P|2.3\r\
         MSA|AE|X9|store unavailable\r\
         ERR|MSH^1^^207&Application internal error&HL70357\r"
    );
}

#[test]
fn no_msh_first_salvages_the_later_header() {
    let raw = fixture("invalid_no_msh_first.hl7");
    let seen = inspect(&raw, Charset::Utf8, false);
    let problem = seen.refusal().unwrap();
    assert_eq!(problem.row().code, ErrorCode::SegmentSequenceError);
    let msh = seen.msh().expect("the MSH after the PID is found");
    assert_eq!(msh.control_id, b"X1");
    let bytes = ack::ack_to_vec(
        Some(msh),
        &params(AckCode::ApplicationReject, seen.charset(), Some(problem.ack_error())),
    );
    let (_, _, msa1, msa2) = read_ack(&bytes);
    assert_eq!((msa1.as_str(), msa2.as_str()), ("AR", "X1"));
}

#[test]
fn not_hl7_gets_best_effort_ar() {
    let raw = fixture("invalid_not_hl7.txt");
    let seen = inspect(&raw, Charset::Utf8, false);
    assert!(seen.msh().is_none());
    let problem = seen.refusal().unwrap();
    assert_eq!(ack::decide(None, AckPolicy::Msh, Outcome::Rejected), Some(AckCode::ApplicationReject));
    assert_eq!(ack::decide(None, AckPolicy::Never, Outcome::Rejected), None);
    let bytes =
        ack::ack_to_vec(None, &params(AckCode::ApplicationReject, seen.charset(), Some(problem.ack_error())));
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "MSH|^~\\&|||||20261128093000+0000||ACK|ACK1|P|2.5\r\
         MSA|AR||first segment is not MSH\r\
         ERR||MSH^1|100^Segment sequence error^HL70357|E||||first segment is not MSH\r"
    );
}

#[test]
fn batch_sample_splits_into_three_acceptable_messages() {
    let raw = fixture("batch_fhs_bhs_3msgs.hl7");
    // A whole batch in one frame is not a message: its first segment is FHS.
    assert_eq!(inspect(&raw, Charset::Utf8, false).refusal(), Some(&Refusal::Parse(ParseError::NoMsh)));
    let batch = batch::split(&raw).unwrap();
    let ids: Vec<String> = batch
        .messages()
        .map(|m| {
            let Inspection::Accept { msh, .. } = inspect(m, Charset::Utf8, false) else {
                panic!("a batch message is refused");
            };
            assert_eq!(msh.message_type.to_string(), "ORU^R01");
            assert_eq!(ack::decide(Some(&msh), AckPolicy::Msh, Outcome::Accepted), Some(AA));
            String::from_utf8_lossy(msh.control_id).into_owned()
        })
        .collect();
    assert_eq!(ids, ["B1-M1", "B1-M2", "B1-M3"]);
}

#[test]
fn charset_default_and_force() {
    let cp1252 = fixture("windows1252_adt_a08.hl7");
    assert_eq!(inspect(&cp1252, Charset::Utf8, false).charset(), Charset::Windows1252);
    // force: MSH-18 is ignored.
    assert_eq!(inspect(&cp1252, Charset::Utf8, true).charset(), Charset::Utf8);
    // no MSH-18: the profile default.
    let orm = fixture("orm_o01_v23.hl7");
    assert_eq!(inspect(&orm, Charset::Windows1252, false).charset(), Charset::Windows1252);
    // UTF-16 is refused with a clear error.
    let utf16 = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|U16|P|2.5||||||UNICODE UTF-16\r";
    let seen = inspect(utf16, Charset::Utf8, false);
    assert_eq!(seen.refusal().unwrap().row().code, ErrorCode::DataTypeError);
}

#[test]
fn ack_text_is_encoded_in_the_message_charset_with_question_marks() {
    let raw = fixture("windows1252_adt_a08.hl7");
    let msh = Msh::parse(&raw).unwrap();
    let err =
        AckError {
            code: ErrorCode::ApplicationInternalError, text: "prix € – 山".into(), location: None
        };
    let bytes =
        ack::ack_to_vec(Some(&msh), &params(AckCode::ApplicationError, Charset::Windows1252, Some(err)));
    let msa = bytes.split(|&b| b == b'\r').nth(1).unwrap();
    assert_eq!(msa, b"MSA|AE|CP1252-0001|prix \x80 \x96 ?");
    assert!(!bytes.windows(2).any(|w| w == b"&#"), "no HTML entities");
}

#[test]
fn whole_pipeline_through_mllp() {
    // Every sample framed, concatenated, and decoded back, then inspected.
    let mut stream = Vec::new();
    for row in ACCEPTED {
        mllp::encode(&Framing::DEFAULT, &fixture(row.0), &mut stream);
    }
    let mut decoder = Decoder::new(DecoderConfig { max_frame_size: 1 << 20, ..DecoderConfig::default() });
    for chunk in stream.chunks(777) {
        decoder.push(chunk);
    }
    let mut ids = Vec::new();
    while let Some(frame) = decoder.next_frame() {
        let frame = frame.unwrap();
        let seen = inspect(&frame, Charset::Utf8, false);
        ids.push(String::from_utf8_lossy(seen.msh().unwrap().control_id).into_owned());
    }
    let want: Vec<_> = ACCEPTED.iter().map(|r| r.1.to_string()).collect();
    assert_eq!(ids, want);
}

#[test]
fn hl7_timestamps() {
    assert_eq!(ack::hl7_timestamp(0), "19700101000000+0000");
    assert_eq!(ack::hl7_timestamp(1_795_858_200), "20261128093000+0000");
    assert_eq!(ack::hl7_timestamp(951_782_400), "20000229000000+0000");
}

/// Checks an ACK built for `inbound` as its sender would read it, with the view parser (not
/// the ACK reader under test): MSA-1 is `code`, MSA-2 echoes the inbound MSH-10 (empty without
/// a header), MSH-3/4 and MSH-5/6 are swapped, and MSH-10 is the fresh id.
fn check_ack_fields(inbound: Option<&Msh<'_>>, code: AckCode, bytes: &[u8]) -> Result<(), TestCaseError> {
    let message =
        Message::parse(bytes).map_err(|e| TestCaseError::fail(format!("ACK does not parse: {e}")))?;
    let header = Msh::new(&message);
    let msa = message.segment("MSA").ok_or_else(|| TestCaseError::fail("ACK without MSA"))?;
    prop_assert_eq!(msa.field(1).raw(), code.as_str().as_bytes(), "MSA-1");
    let empty: &[u8] = b"";
    prop_assert_eq!(msa.field(2).raw(), inbound.map_or(empty, |m| m.control_id), "MSA-2");
    prop_assert_eq!(header.control_id, b"ACK1", "ACK MSH-10");
    prop_assert_eq!(header.message_type.code, b"ACK", "ACK MSH-9");
    let swapped = inbound.map_or([empty; 4], |m| {
        [m.receiving_application, m.receiving_facility, m.sending_application, m.sending_facility]
    });
    let got = [
        header.sending_application,
        header.sending_facility,
        header.receiving_application,
        header.receiving_facility,
    ];
    prop_assert_eq!(got, swapped, "MSH-3/4 <-> MSH-5/6");
    // The ACK reader sees the same code and control id.
    let read =
        ack::ReceivedAck::parse(bytes).ok_or_else(|| TestCaseError::fail("ACK reader refused our ACK"))?;
    prop_assert_eq!((read.code, read.control_id), (code, Some(inbound.map_or(empty, |m| m.control_id))));
    Ok(())
}

/// A well-formed message whose header fields vary: applications, facilities, control id,
/// version and MSH-15/16.
fn generated_message() -> impl Strategy<Value = Vec<u8>> {
    let name = "[A-Za-z0-9 .-]{0,12}";
    let condition = prop_oneof![Just(""), Just("AL"), Just("NE"), Just("ER"), Just("SU")];
    (
        (name, name, name, name),
        "[A-Za-z0-9.-]{1,20}",
        prop_oneof![Just("2.3"), Just("2.3.1"), Just("2.5"), Just("2.5.1"), Just("2.7")],
        (condition.clone(), condition),
    )
        .prop_map(|((app, fac, to_app, to_fac), id, version, (msh15, msh16))| {
            format!(
                "MSH|^~\\&|{app}|{fac}|{to_app}|{to_fac}|20261128||ADT^A01|{id}|P|{version}|||{msh15}|{msh16}\r\
                 PID|1||12345^^^HOSP^MR||DOE^JOHN\r"
            )
            .into_bytes()
        })
}

proptest! {
    #[test]
    fn inspect_and_ack_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        let seen = inspect(&raw, Charset::Utf8, false);
        let outcome = seen.refusal().map_or(Outcome::Accepted, Refusal::outcome);
        if let Some(code) = ack::decide(seen.msh(), AckPolicy::Always, outcome) {
            let error = seen.refusal().map(Refusal::ack_error);
            let bytes = ack::ack_to_vec(seen.msh(), &params(code, seen.charset(), error));
            check_ack_fields(seen.msh(), code, &bytes)?;
        }
    }

    /// Every generated message is accepted, and for each outcome and policy its ACK carries
    /// the right MSA-1, MSA-2 = its MSH-10, and the swapped sender and receiver.
    #[test]
    fn ack_answers_each_generated_message(raw in generated_message()) {
        let Inspection::Accept { msh, charset } = inspect(&raw, Charset::Utf8, false) else {
            return Err(TestCaseError::fail("a generated message was refused"));
        };
        let store_failed = Refusal::StoreFailed { reason: "disk full".into() };
        let too_large = Refusal::FrameTooLarge { limit: 1024 };
        for (outcome, error) in [
            (Outcome::Accepted, None),
            (store_failed.outcome(), Some(store_failed.ack_error())),
            (too_large.outcome(), Some(too_large.ack_error())),
        ] {
            for policy in [AckPolicy::Msh, AckPolicy::Always] {
                let Some(code) = ack::decide(Some(&msh), policy, outcome) else { continue };
                let bytes = ack::ack_to_vec(Some(&msh), &params(code, charset, error.clone()));
                check_ack_fields(Some(&msh), code, &bytes)?;
            }
        }
    }

    #[test]
    fn header_like_input_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut raw = b"MSH|^~\\&|".to_vec();
        raw.extend(tail);
        let seen = inspect(&raw, Charset::Windows1252, false);
        let code = ack::decide(seen.msh(), AckPolicy::Always, Outcome::Rejected).unwrap();
        let error = seen.refusal().map(Refusal::ack_error);
        let bytes = ack::ack_to_vec(seen.msh(), &params(code, seen.charset(), error));
        // Our own ACK always parses back, whatever the inbound header looked like.
        check_ack_fields(seen.msh(), code, &bytes)?;
    }
}
