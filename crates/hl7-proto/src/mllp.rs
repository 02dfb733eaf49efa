//! MLLP framing: `<SB> payload <EB><CR>` (HL7 v2 Minimal Lower Layer Protocol, Release 1/2).
//!
//! Owns the byte framing only. It never looks inside a payload and does no I/O: bytes are
//! pushed in by the caller and whole frames come out.

use thiserror::Error;

/// Default MLLP start block (vertical tab).
pub const START_BLOCK: u8 = 0x0B;
/// Default MLLP end block (file separator).
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return that follows the end block.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Longest start or end sequence a profile may configure.
pub const MAX_MARKER_LEN: usize = 4;

/// The framing bytes of one listener profile: a start sequence and an end sequence of
/// 1–4 bytes each (default `0x0B` … `0x1C 0x0D`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Framing {
    start: [u8; MAX_MARKER_LEN],
    start_len: u8,
    end: [u8; MAX_MARKER_LEN],
    end_len: u8,
}

/// A framing configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// A start or end sequence is empty or longer than [`MAX_MARKER_LEN`] bytes.
    #[error("{which} sequence must be 1 to {MAX_MARKER_LEN} bytes, got {len}")]
    BadLength {
        /// `"start"` or `"end"`.
        which: &'static str,
        /// The length given.
        len: usize,
    },
}

impl Framing {
    /// Standard MLLP framing: start `0x0B`, end `0x1C 0x0D`.
    pub const DEFAULT: Framing = Framing {
        start: [START_BLOCK, 0, 0, 0],
        start_len: 1,
        end: [END_BLOCK, CARRIAGE_RETURN, 0, 0],
        end_len: 2,
    };

    /// Custom framing bytes; each sequence must be 1 to 4 bytes long.
    pub fn new(start: &[u8], end: &[u8]) -> Result<Framing, FramingError> {
        fn pack(which: &'static str, bytes: &[u8]) -> Result<([u8; MAX_MARKER_LEN], u8), FramingError> {
            if bytes.is_empty() || bytes.len() > MAX_MARKER_LEN {
                return Err(FramingError::BadLength { which, len: bytes.len() });
            }
            let mut out = [0; MAX_MARKER_LEN];
            out[..bytes.len()].copy_from_slice(bytes);
            // The length is at most MAX_MARKER_LEN (4), so it fits in a u8.
            Ok((out, bytes.len() as u8))
        }
        let (start, start_len) = pack("start", start)?;
        let (end, end_len) = pack("end", end)?;
        Ok(Framing { start, start_len, end, end_len })
    }

    /// The start sequence.
    pub fn start(&self) -> &[u8] {
        &self.start[..usize::from(self.start_len)]
    }

    /// The end sequence.
    pub fn end(&self) -> &[u8] {
        &self.end[..usize::from(self.end_len)]
    }
}

impl Default for Framing {
    fn default() -> Self {
        Framing::DEFAULT
    }
}

impl std::fmt::Debug for Framing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Framing(start={:02X?}, end={:02X?})", self.start(), self.end())
    }
}
