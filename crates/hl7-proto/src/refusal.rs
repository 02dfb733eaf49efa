//! Why a message is refused, and the one table from each reason to its acknowledgment.
//!
//! Every reason hl7d answers a message with something other than AA/CA is a [`Refusal`]
//! variant: the parse and header checks, the character set, the two frame errors that are
//! answered, and a store failure. [`Refusal::row`] maps each one to the outcome (which the
//! ACK builder turns into AE/AR or CE/CR), the HL7 table 0357 code for ERR-3 and the location
//! for ERR-2. The listener, the tests and the fuzz targets ask this table; nothing else
//! chooses an error code.

use thiserror::Error;

use crate::ack::{AckError, Outcome};
use crate::charset::CharsetError;
use crate::error::{ErrorCode, ParseError};
use crate::mllp::FrameError;

/// Why a message is not accepted. The `Display` text goes into MSA-3 and ERR-8 (and the log):
/// lower-case, never message contents.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The frame is not a usable HL7 v2 message, or its MSH fails the required checks.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// MSH-18 names a character set hl7d cannot or will not decode.
    #[error("character set: {0}")]
    Charset(#[from] CharsetError),
    /// Strict framing: the MLLP end block was not followed by its carriage return.
    #[error("MLLP end block not followed by a carriage return; not stored")]
    FrameBadEnd,
    /// The frame grew past the listener's `max_message_size`.
    #[error("message larger than max_message_size ({limit} bytes); not stored")]
    FrameTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The message was fine but the store could not make it durable; the sender should
    /// resend it later.
    #[error("message not stored: {reason}")]
    StoreFailed {
        /// The store's error, without message contents.
        reason: String,
    },
}

/// One row of the refusal table: what a [`Refusal`] means for the acknowledgment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Rejected (AR/CR: resending it unchanged will not help) or Error (AE/CE: try again).
    pub outcome: Outcome,
    /// HL7 table 0357 code for ERR-3 (v2.5+) or ERR-1.4 (before).
    pub code: ErrorCode,
    /// Segment id and field position for ERR-2 / ERR-1.1–1.3 (field 0 = the whole segment);
    /// `None` when the error is not in one field.
    pub location: Option<(&'static str, u16)>,
}

impl Refusal {
    /// The refusal table.
    ///
    /// - Framing and header errors are the sender's (Rejected, AR/CR): 100 when there is no
    ///   usable MSH, 101 for an empty required field, 102 for bad delimiters and for every
    ///   character-set problem, 103 for a value outside its HL7 table.
    /// - Character sets: table 0357 has no "unsupported character set" code. 102 (data type
    ///   error) fits malformed bytes exactly; 103 would be defensible for an unknown MSH-18
    ///   name, since MSH-18 is bound to table 0211, but one code for all of them keeps the
    ///   answer predictable. 203 ("unsupported version id") does not fit, and 207 blames the
    ///   receiver.
    /// - An oversize frame is 104 "value too long" (table 0357 since v2.7: "a value exceeded
    ///   the normative length, or the length that the application is able to safely
    ///   handle"), Rejected. It is the sender's message that is too large, and resending it
    ///   unchanged will fail the same way, so AR/CR and not AE/CE; 207 ("application
    ///   internal error") would tell an integration engineer that hl7d is broken and invite
    ///   endless resends. A pre-v2.7 receiver of our ACK that does not know 104 still reads
    ///   ERR-3.2 "Value too long" and MSA-3 naming the limit.
    /// - A store failure is hl7d's own problem and temporary: Error (AE/CE) with 207, so the
    ///   sender keeps the message and resends it.
    pub fn row(&self) -> Row {
        use ErrorCode::*;
        use Outcome::{Error, Rejected};
        let (outcome, code, location) = match self {
            Refusal::Parse(ParseError::Empty | ParseError::NoMsh | ParseError::MshTooShort) => {
                (Rejected, SegmentSequenceError, Some(("MSH", 0)))
            }
            Refusal::Parse(ParseError::BadDelimiters { .. }) => (Rejected, DataTypeError, Some(("MSH", 2))),
            Refusal::Parse(ParseError::RequiredFieldMissing { field, .. }) => {
                (Rejected, RequiredFieldMissing, msh_field(field))
            }
            Refusal::Parse(ParseError::BadTableValue { field, .. }) => {
                (Rejected, TableValueNotFound, msh_field(field))
            }
            Refusal::Charset(_) => (Rejected, DataTypeError, Some(("MSH", 18))),
            Refusal::FrameBadEnd => (Rejected, SegmentSequenceError, None),
            Refusal::FrameTooLarge { .. } => (Rejected, ValueTooLong, None),
            Refusal::StoreFailed { .. } => (Error, ApplicationInternalError, None),
        };
        Row { outcome, code, location }
    }

    /// The outcome the ACK code is decided from (see [`crate::ack::decide`]).
    pub fn outcome(&self) -> Outcome {
        self.row().outcome
    }

    /// MSA-3, ERR-2, ERR-3 and ERR-8 of the negative acknowledgment.
    pub fn ack_error(&self) -> AckError<'static> {
        let row = self.row();
        AckError { code: row.code, text: self.to_string().into(), location: row.location }
    }

    /// The refusal for a frame the MLLP decoder gave up on, or `None` for a frame the sender
    /// abandoned (a new start block before its end block): that sender has already moved on
    /// to the next message, so an answer would be taken for the next message's ACK.
    pub fn from_frame_error(error: &FrameError) -> Option<Refusal> {
        match error {
            FrameError::TooLarge { limit, .. } => Some(Refusal::FrameTooLarge { limit: *limit }),
            FrameError::BadEnd { .. } => Some(Refusal::FrameBadEnd),
            FrameError::Truncated { .. } => None,
        }
    }
}

/// `"MSH-10"` → `("MSH", 10)`.
fn msh_field(field: &str) -> Option<(&'static str, u16)> {
    field.strip_prefix("MSH-")?.parse().ok().map(|n| ("MSH", n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorCode::*;
    use Outcome::{Error, Rejected};

    /// (refusal, outcome, ERR-3 code, ERR-2 location, MSA-3 text)
    type TableRow = (Refusal, Outcome, u16, Option<(&'static str, u16)>, &'static str);

    /// One sample of every variant, nested ones included. [`variant`] below has no wildcard,
    /// so a new variant does not compile until it is added there; the test then fails until
    /// it has a row here.
    fn table() -> Vec<TableRow> {
        vec![
            (ParseError::Empty.into(), Rejected, 100, Some(("MSH", 0)), "empty message"),
            (ParseError::NoMsh.into(), Rejected, 100, Some(("MSH", 0)), "first segment is not MSH"),
            (
                ParseError::MshTooShort.into(),
                Rejected,
                100,
                Some(("MSH", 0)),
                "MSH segment too short to hold the delimiters",
            ),
            (
                ParseError::BadDelimiters { reason: "repeated" }.into(),
                Rejected,
                102,
                Some(("MSH", 2)),
                "invalid delimiters in MSH-1/MSH-2: repeated",
            ),
            (
                ParseError::RequiredFieldMissing { field: "MSH-10", name: "message control id" }.into(),
                Rejected,
                101,
                Some(("MSH", 10)),
                "required field MSH-10 (message control id) is empty",
            ),
            (
                ParseError::BadTableValue { field: "MSH-15", table: "0155" }.into(),
                Rejected,
                103,
                Some(("MSH", 15)),
                "MSH-15 holds a value not in HL7 table 0155",
            ),
            (
                CharsetError::Unknown { name: "LATIN-9".into() }.into(),
                Rejected,
                102,
                Some(("MSH", 18)),
                "character set: unknown character set \"LATIN-9\" in MSH-18",
            ),
            (
                CharsetError::Unsupported { name: "UNICODE".into(), reason: "no" }.into(),
                Rejected,
                102,
                Some(("MSH", 18)),
                "character set: unsupported character set \"UNICODE\" in MSH-18: no",
            ),
            (
                CharsetError::Malformed { charset: "ASCII", offset: 7 }.into(),
                Rejected,
                102,
                Some(("MSH", 18)),
                "character set: malformed ASCII input at byte offset 7",
            ),
            (
                Refusal::FrameBadEnd,
                Rejected,
                100,
                None,
                "MLLP end block not followed by a carriage return; not stored",
            ),
            (
                Refusal::FrameTooLarge { limit: 1024 },
                Rejected,
                104,
                None,
                "message larger than max_message_size (1024 bytes); not stored",
            ),
            (
                Refusal::StoreFailed { reason: "database or disk is full".into() },
                Error,
                207,
                None,
                "message not stored: database or disk is full",
            ),
        ]
    }

    /// Which leaf variant a refusal is. No wildcard arm: see [`table`].
    fn variant(refusal: &Refusal) -> &'static str {
        match refusal {
            Refusal::Parse(ParseError::Empty) => "Parse(Empty)",
            Refusal::Parse(ParseError::NoMsh) => "Parse(NoMsh)",
            Refusal::Parse(ParseError::MshTooShort) => "Parse(MshTooShort)",
            Refusal::Parse(ParseError::BadDelimiters { .. }) => "Parse(BadDelimiters)",
            Refusal::Parse(ParseError::RequiredFieldMissing { .. }) => "Parse(RequiredFieldMissing)",
            Refusal::Parse(ParseError::BadTableValue { .. }) => "Parse(BadTableValue)",
            Refusal::Charset(CharsetError::Unknown { .. }) => "Charset(Unknown)",
            Refusal::Charset(CharsetError::Unsupported { .. }) => "Charset(Unsupported)",
            Refusal::Charset(CharsetError::Malformed { .. }) => "Charset(Malformed)",
            Refusal::FrameBadEnd => "FrameBadEnd",
            Refusal::FrameTooLarge { .. } => "FrameTooLarge",
            Refusal::StoreFailed { .. } => "StoreFailed",
        }
    }

    /// Every leaf variant [`variant`] knows, so a row cannot be silently missing.
    const VARIANTS: usize = 12;

    #[test]
    fn every_refusal_has_its_row() {
        let table = table();
        let mut covered: Vec<&str> = table.iter().map(|row| variant(&row.0)).collect();
        covered.sort_unstable();
        covered.dedup();
        assert_eq!(covered.len(), VARIANTS, "a variant has no row in the table: {covered:?}");
        for (refusal, outcome, code, location, text) in table {
            let row = refusal.row();
            assert_eq!(row.outcome, outcome, "{refusal:?}");
            assert_eq!(row.code.code(), code, "{refusal:?}");
            assert_eq!(row.location, location, "{refusal:?}");
            assert_eq!(refusal.outcome(), outcome, "{refusal:?}");
            let error = refusal.ack_error();
            assert_eq!((error.code, error.text.as_ref(), error.location), (row.code, text, location));
        }
    }

    /// Issue 12: the oversize frame was answered with 207 "application internal error",
    /// which blames the receiver and invites resends of a message that can never fit.
    #[test]
    fn oversize_frame_is_the_senders_fault_not_207() {
        let error = FrameError::TooLarge { limit: 1024, prefix: b"MSH|^~\\&|".to_vec() };
        let refusal = Refusal::from_frame_error(&error).expect("answered");
        assert_eq!(refusal.row(), Row { outcome: Rejected, code: ValueTooLong, location: None });
        assert_ne!(refusal.row().code, ApplicationInternalError);
    }

    #[test]
    fn frame_errors_that_are_answered() {
        let bad_end = FrameError::BadEnd { payload: Vec::new() };
        assert_eq!(Refusal::from_frame_error(&bad_end), Some(Refusal::FrameBadEnd));
        let abandoned = FrameError::Truncated { prefix: b"MSH|^~\\&|".to_vec() };
        assert_eq!(Refusal::from_frame_error(&abandoned), None);
    }

    /// Only a store failure asks the sender to try again; everything else is the message's.
    #[test]
    fn only_store_failures_are_errors() {
        for (refusal, ..) in table() {
            let retry = matches!(refusal, Refusal::StoreFailed { .. });
            assert_eq!(refusal.outcome() == Error, retry, "{refusal:?}");
            assert_eq!(refusal.row().code == ApplicationInternalError, retry, "{refusal:?}");
        }
    }
}
