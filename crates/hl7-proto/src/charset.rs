//! Character sets: MSH-18 names (HL7 table 0211) to encodings, profile default, force switch.

/// A character set an HL7 message can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// `ASCII`: 7-bit US-ASCII.
    Ascii,
    /// `UNICODE UTF-8`.
    Utf8,
    /// Windows-1252 (also used for `8859/1`, since such senders routinely send € and curly quotes).
    Windows1252,
}
