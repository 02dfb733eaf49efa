//! HL7 error conditions (table 0357) and the parse errors of the message view.
//!
//! Which code a refused message gets in ERR-3 (v2.5+) or ERR-1.4 (older) is decided in one
//! place, [`crate::refusal::Refusal::row`]; this module only names the codes and the errors.

use thiserror::Error;

/// HL7 table 0357 "Message error condition codes", in spec order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 0: message accepted.
    MessageAccepted,
    /// 100: segment sequence error (e.g. the first segment is not MSH).
    SegmentSequenceError,
    /// 101: required field missing (e.g. MSH-10 empty).
    RequiredFieldMissing,
    /// 102: data type error (e.g. malformed delimiters, bad character set bytes).
    DataTypeError,
    /// 103: table value not found (e.g. MSH-15 not one of AL/NE/ER/SU).
    TableValueNotFound,
    /// 104: value too long (since v2.7; e.g. a frame larger than `max_message_size`).
    ValueTooLong,
    /// 200: unsupported message type.
    UnsupportedMessageType,
    /// 201: unsupported event code.
    UnsupportedEventCode,
    /// 202: unsupported processing id.
    UnsupportedProcessingId,
    /// 203: unsupported version id.
    UnsupportedVersionId,
    /// 204: unknown key identifier.
    UnknownKeyIdentifier,
    /// 205: duplicate key identifier.
    DuplicateKeyIdentifier,
    /// 206: application record locked.
    ApplicationRecordLocked,
    /// 207: application internal error (e.g. the store could not save the message).
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code as written in ERR-3.1.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::MessageAccepted => 0,
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::ValueTooLong => 104,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKeyIdentifier => 204,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationRecordLocked => 206,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    /// The table 0357 description, as written in ERR-3.2.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::MessageAccepted => "Message accepted",
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::ValueTooLong => "Value too long",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }
}

/// Why a frame is not a usable HL7 v2 message.
///
/// Messages are lower-case and never include message contents (they end up in logs).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The frame holds no segments at all.
    #[error("empty message")]
    Empty,
    /// The first segment is not MSH.
    #[error("first segment is not MSH")]
    NoMsh,
    /// MSH is too short to carry its field separator and encoding characters.
    #[error("MSH segment too short to hold the delimiters")]
    MshTooShort,
    /// MSH-1/MSH-2 do not define a usable set of delimiters.
    #[error("invalid delimiters in MSH-1/MSH-2: {reason}")]
    BadDelimiters {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A required MSH field is empty.
    #[error("required field {field} ({name}) is empty")]
    RequiredFieldMissing {
        /// Field id, e.g. `MSH-10`.
        field: &'static str,
        /// Field name, e.g. `message control id`.
        name: &'static str,
    },
    /// A coded field holds a value not in its HL7 table.
    #[error("{field} holds a value not in HL7 table {table}")]
    BadTableValue {
        /// Field id, e.g. `MSH-15`.
        field: &'static str,
        /// Table number, e.g. `0155`.
        table: &'static str,
    },
}
