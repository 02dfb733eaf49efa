//! Character sets: MSH-18 names (HL7 table 0211) to encodings, profile default, force switch.
//!
//! This module owns three things: which MSH-18 values hl7d accepts and what each one means
//! ([`Charset::from_msh18`], [`resolve`]), turning message bytes into text ([`Charset::decode`],
//! [`Charset::decode_strict`]) and turning text such as an ACK back into bytes
//! ([`Charset::encode_lossy`]). It does no I/O and never logs: errors carry at most a short,
//! sanitised copy of the MSH-18 value, never message contents.
//!
//! The encodings themselves come from `encoding_rs`, which implements the WHATWG Encoding
//! Standard. That standard deliberately maps some labels to supersets, and hl7d follows it:
//!
//! * `8859/1` is decoded as Windows-1252. The two differ only in 0x80–0x9F, where ISO 8859-1
//!   has C1 control characters; table 0211 promises only "the printable characters" of 8859/1,
//!   and real senders put €, curly quotes and dashes there.
//! * `8859/9` is decoded as Windows-1254 (the same superset relation, for Turkish).
//! * `KS X 1001` is decoded as EUC-KR as WHATWG defines it, i.e. Windows-949 (UHC).
//!
//! Byte-oriented HL7 parsing (finding `|`, `^`, CR on the raw frame) is only sound for some
//! of these sets; see [`Charset::is_ascii_compatible`].

use std::borrow::Cow;

use encoding_rs::{DecoderResult, EncoderResult, Encoding};
use thiserror::Error;

/// A character set an HL7 message can be written in (HL7 table 0211), in table order.
///
/// Only sets that `encoding_rs` can decode and encode are variants; the other table-0211
/// values are refused by [`Charset::from_msh18`] with [`CharsetError::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// `ASCII` (also `ISO IR6`): 7-bit US-ASCII; bytes above 0x7F are invalid.
    Ascii,
    /// `8859/1`, decoded and encoded as Windows-1252, a superset of the printable characters
    /// of ISO 8859-1: senders labelled 8859/1 routinely send €, curly quotes and dashes in
    /// 0x80–0x9F, where strict 8859-1 has only C1 control characters.
    Windows1252,
    /// `8859/2`: ISO 8859-2, Latin-2 (Central European).
    Iso8859_2,
    /// `8859/3`: ISO 8859-3, Latin-3 (South European).
    Iso8859_3,
    /// `8859/4`: ISO 8859-4, Latin-4 (North European).
    Iso8859_4,
    /// `8859/5`: ISO 8859-5, Latin/Cyrillic.
    Iso8859_5,
    /// `8859/6`: ISO 8859-6, Latin/Arabic.
    Iso8859_6,
    /// `8859/7`: ISO 8859-7, Latin/Greek.
    Iso8859_7,
    /// `8859/8`: ISO 8859-8, Latin/Hebrew. The bytes decode identically whether the sender
    /// meant visual or logical order; ordering is a display concern.
    Iso8859_8,
    /// `8859/9`: ISO 8859-9, Latin-5 (Turkish), decoded and encoded as its superset
    /// Windows-1254 (which is what `encoding_rs` serves for the label `iso-8859-9`).
    Iso8859_9,
    /// `8859/15`: ISO 8859-15, Latin-9 (Latin-1 with €).
    Iso8859_15,
    /// `ISO IR87`: JIS X 0208 reached through ISO 2022 escape sequences (`ESC $ B` into
    /// two-byte mode, `ESC ( B` back to ASCII), decoded as ISO-2022-JP. Not byte-parseable:
    /// see [`Charset::is_ascii_compatible`].
    Iso2022Jp,
    /// `KS X 1001`: Korean, decoded as EUC-KR as `encoding_rs` defines it (Windows-949/UHC,
    /// a superset of KS X 1001 in EUC form).
    EucKr,
    /// `GB 18030-2000`: Chinese, decoded as `encoding_rs`'s GB18030 (the current mapping,
    /// which differs from the 2000 edition only in a few private-use code points).
    Gb18030,
    /// `BIG-5`: traditional Chinese, decoded as `encoding_rs`'s Big5 (with HKSCS additions).
    Big5,
    /// `UNICODE UTF-8`.
    Utf8,
}

/// Why an MSH-18 value cannot be used, or why bytes are not valid in their character set.
///
/// Messages are lower-case; names are sanitised copies of peer input (at most 40 characters,
/// control characters replaced by U+FFFD), never message contents.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CharsetError {
    /// MSH-18 holds a value that is neither in HL7 table 0211 nor a known alias.
    #[error("unknown character set {name:?} in MSH-18")]
    Unknown {
        /// The value as received (lossy text, trimmed, truncated to 40 characters).
        name: String,
    },
    /// MSH-18 names a table-0211 character set that hl7d cannot or will not decode.
    #[error("unsupported character set {name:?} in MSH-18: {reason}")]
    Unsupported {
        /// The value as received (lossy text, trimmed, truncated to 40 characters).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The bytes are not valid in the character set they were declared in.
    #[error("malformed {charset} input at byte offset {offset}")]
    Malformed {
        /// The character set, in its MSH-18 (table 0211) spelling.
        charset: &'static str,
        /// Offset of the first byte of the first malformed sequence.
        offset: usize,
    },
}

/// Picks the character set for one message.
///
/// `msh18` is the first repetition of MSH-18 (see [`Charset::from_msh18`]). With `force` set,
/// the profile `default` wins and MSH-18 is ignored entirely, even when it is invalid: this is
/// the switch for senders whose label is known to be wrong. Without it, an empty MSH-18 means
/// `default`, a recognised one wins, and anything else is an error.
pub fn resolve(msh18: &[u8], default: Charset, force: bool) -> Result<Charset, CharsetError> {
    if force {
        return Ok(default);
    }
    Ok(Charset::from_msh18(msh18)?.unwrap_or(default))
}

/// Refusal reason for the UTF-16/UTF-32 family.
const NOT_MLLP_SAFE: &str = "multi-byte code units contain 0x0B and 0x1C bytes, \
    which MLLP reserves for framing";

/// What an MSH-18 spelling means to hl7d.
#[derive(Debug, Clone, Copy)]
enum Meaning {
    Supported(Charset),
    Unsupported(&'static str),
}

/// Every accepted MSH-18 spelling (compared case-insensitively after trimming): table 0211 in
/// table order, then aliases seen from real senders.
const MSH18_NAMES: &[(&str, Meaning)] = &[
    ("ASCII", Meaning::Supported(Charset::Ascii)),
    ("8859/1", Meaning::Supported(Charset::Windows1252)),
    ("8859/2", Meaning::Supported(Charset::Iso8859_2)),
    ("8859/3", Meaning::Supported(Charset::Iso8859_3)),
    ("8859/4", Meaning::Supported(Charset::Iso8859_4)),
    ("8859/5", Meaning::Supported(Charset::Iso8859_5)),
    ("8859/6", Meaning::Supported(Charset::Iso8859_6)),
    ("8859/7", Meaning::Supported(Charset::Iso8859_7)),
    ("8859/8", Meaning::Supported(Charset::Iso8859_8)),
    ("8859/9", Meaning::Supported(Charset::Iso8859_9)),
    ("8859/15", Meaning::Supported(Charset::Iso8859_15)),
    ("ISO IR6", Meaning::Supported(Charset::Ascii)),
    (
        "ISO IR14",
        Meaning::Unsupported(
            "JIS X 0201 has no stand-alone decoder (it is reachable only \
            through ISO IR87's ISO 2022 escapes)",
        ),
    ),
    ("ISO IR87", Meaning::Supported(Charset::Iso2022Jp)),
    ("ISO IR159", Meaning::Unsupported("JIS X 0212 is not implemented by the ISO-2022-JP decoder")),
    ("GB 18030-2000", Meaning::Supported(Charset::Gb18030)),
    ("KS X 1001", Meaning::Supported(Charset::EucKr)),
    ("CNS 11643-1992", Meaning::Unsupported("CNS 11643 has no decoder")),
    ("BIG-5", Meaning::Supported(Charset::Big5)),
    ("UNICODE", Meaning::Unsupported(NOT_MLLP_SAFE)),
    ("UNICODE UTF-8", Meaning::Supported(Charset::Utf8)),
    ("UNICODE UTF-16", Meaning::Unsupported(NOT_MLLP_SAFE)),
    ("UNICODE UTF-32", Meaning::Unsupported(NOT_MLLP_SAFE)),
    // Not in table 0211, but sent by real systems.
    ("UTF-8", Meaning::Supported(Charset::Utf8)),
    ("UTF8", Meaning::Supported(Charset::Utf8)),
    ("ISO-8859-1", Meaning::Supported(Charset::Windows1252)),
    ("ISO_8859-1", Meaning::Supported(Charset::Windows1252)),
    ("WINDOWS-1252", Meaning::Supported(Charset::Windows1252)),
    ("CP1252", Meaning::Supported(Charset::Windows1252)),
    ("UTF-16", Meaning::Unsupported(NOT_MLLP_SAFE)),
    ("UTF-32", Meaning::Unsupported(NOT_MLLP_SAFE)),
];

/// Every name [`Charset::from_config_name`] accepts: each set's [`Charset::config_name`]
/// (WHATWG labels, in table 0211 order), then aliases operators write.
pub const CONFIG_NAMES: &[(&str, Charset)] = &[
    ("ascii", Charset::Ascii),
    ("windows-1252", Charset::Windows1252),
    ("iso-8859-2", Charset::Iso8859_2),
    ("iso-8859-3", Charset::Iso8859_3),
    ("iso-8859-4", Charset::Iso8859_4),
    ("iso-8859-5", Charset::Iso8859_5),
    ("iso-8859-6", Charset::Iso8859_6),
    ("iso-8859-7", Charset::Iso8859_7),
    ("iso-8859-8", Charset::Iso8859_8),
    ("iso-8859-9", Charset::Iso8859_9),
    ("iso-8859-15", Charset::Iso8859_15),
    ("iso-2022-jp", Charset::Iso2022Jp),
    ("euc-kr", Charset::EucKr),
    ("gb18030", Charset::Gb18030),
    ("big5", Charset::Big5),
    ("utf-8", Charset::Utf8),
    // Aliases.
    ("us-ascii", Charset::Ascii),
    ("iso-8859-1", Charset::Windows1252),
    ("cp1252", Charset::Windows1252),
    ("utf8", Charset::Utf8),
];

/// Longest MSH-18 excerpt an error carries, in characters.
const MAX_NAME_CHARS: usize = 40;

impl Charset {
    /// Every supported character set, in HL7 table 0211 order.
    pub const ALL: [Charset; 16] = [
        Charset::Ascii,
        Charset::Windows1252,
        Charset::Iso8859_2,
        Charset::Iso8859_3,
        Charset::Iso8859_4,
        Charset::Iso8859_5,
        Charset::Iso8859_6,
        Charset::Iso8859_7,
        Charset::Iso8859_8,
        Charset::Iso8859_9,
        Charset::Iso8859_15,
        Charset::Iso2022Jp,
        Charset::EucKr,
        Charset::Gb18030,
        Charset::Big5,
        Charset::Utf8,
    ];

    /// Reads one MSH-18 value: `Ok(None)` when it is empty (or only spaces), so the profile
    /// default applies.
    ///
    /// MSH-18 may repeat: the first repetition is the message's default character set and
    /// later ones name alternates reached through escape sequences. The caller splits on the
    /// message's repetition separator (MSH-2) and passes the first repetition only; a `~` left
    /// in `value` makes it unknown. Note that Japanese senders often write `~ISO IR87` (an
    /// empty first repetition, i.e. ASCII with ISO 2022 escapes into JIS X 0208); recognising
    /// that needs the later repetitions, which is the caller's decision.
    ///
    /// Matching is case-insensitive and ignores surrounding ASCII whitespace. Table 0211
    /// values that cannot be served are [`CharsetError::Unsupported`]: `UNICODE`,
    /// `UNICODE UTF-16` and `UNICODE UTF-32` because their code units contain the MLLP framing
    /// bytes, `ISO IR14`, `ISO IR159` and `CNS 11643-1992` because no decoder exists here.
    pub fn from_msh18(value: &[u8]) -> Result<Option<Charset>, CharsetError> {
        let trimmed = value.trim_ascii();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let meaning = std::str::from_utf8(trimmed).ok().and_then(|name| {
            MSH18_NAMES
                .iter()
                .find(|(known, _)| known.eq_ignore_ascii_case(name))
                .map(|&(_, meaning)| meaning)
        });
        match meaning {
            Some(Meaning::Supported(charset)) => Ok(Some(charset)),
            Some(Meaning::Unsupported(reason)) => {
                Err(CharsetError::Unsupported { name: display_name(trimmed), reason })
            }
            None => Err(CharsetError::Unknown { name: display_name(trimmed) }),
        }
    }

    /// Reads a character-set name as an operator writes it: the listener's `encoding` key,
    /// `hl7d send --encoding`, and the encoding recorded with a stored message. This is the
    /// one list of such names ([`CONFIG_NAMES`]), compared case-insensitively after trimming.
    ///
    /// Accepts every [`Charset::config_name`] (`utf-8`, `windows-1252`, `ascii`,
    /// `iso-8859-2`, …) and the aliases `utf8`, `cp1252`, `us-ascii`, and `iso-8859-1`,
    /// which means [`Charset::Windows1252`] for the same reason as MSH-18 `8859/1`. Returns
    /// `None` for anything else; the caller names the key or flag.
    pub fn from_config_name(name: &str) -> Option<Charset> {
        let name = name.trim();
        CONFIG_NAMES.iter().find(|(known, _)| known.eq_ignore_ascii_case(name)).map(|&(_, charset)| charset)
    }

    /// The name used in profile configuration (WHATWG-style lower-case label, e.g. `utf-8`,
    /// `windows-1252`); [`Charset::from_config_name`] accepts it back.
    pub fn config_name(&self) -> &'static str {
        match self {
            Charset::Ascii => "ascii",
            Charset::Windows1252 => "windows-1252",
            Charset::Iso8859_2 => "iso-8859-2",
            Charset::Iso8859_3 => "iso-8859-3",
            Charset::Iso8859_4 => "iso-8859-4",
            Charset::Iso8859_5 => "iso-8859-5",
            Charset::Iso8859_6 => "iso-8859-6",
            Charset::Iso8859_7 => "iso-8859-7",
            Charset::Iso8859_8 => "iso-8859-8",
            Charset::Iso8859_9 => "iso-8859-9",
            Charset::Iso8859_15 => "iso-8859-15",
            Charset::Iso2022Jp => "iso-2022-jp",
            Charset::EucKr => "euc-kr",
            Charset::Gb18030 => "gb18030",
            Charset::Big5 => "big5",
            Charset::Utf8 => "utf-8",
        }
    }

    /// The HL7 table 0211 spelling, as written in MSH-18 (e.g. `8859/1`, `UNICODE UTF-8`).
    /// [`Charset::Windows1252`] has no code of its own and is written `8859/1`.
    pub fn msh18_name(&self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Windows1252 => "8859/1",
            Charset::Iso8859_2 => "8859/2",
            Charset::Iso8859_3 => "8859/3",
            Charset::Iso8859_4 => "8859/4",
            Charset::Iso8859_5 => "8859/5",
            Charset::Iso8859_6 => "8859/6",
            Charset::Iso8859_7 => "8859/7",
            Charset::Iso8859_8 => "8859/8",
            Charset::Iso8859_9 => "8859/9",
            Charset::Iso8859_15 => "8859/15",
            Charset::Iso2022Jp => "ISO IR87",
            Charset::EucKr => "KS X 1001",
            Charset::Gb18030 => "GB 18030-2000",
            Charset::Big5 => "BIG-5",
            Charset::Utf8 => "UNICODE UTF-8",
        }
    }

    /// Decodes `bytes` to text, replacing each malformed sequence with U+FFFD.
    ///
    /// Borrows when no conversion is needed (valid UTF-8, or pure ASCII in any other set;
    /// for ISO-2022-JP, ASCII without SO, SI or ESC). A byte-order mark is not
    /// special: an HL7 message starts with `MSH`, so a BOM would decode as U+FEFF.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        match self.encoding() {
            None => decode_ascii(bytes),
            Some(encoding) => encoding.decode_without_bom_handling(bytes).0,
        }
    }

    /// Decodes `bytes` to text, or reports the byte offset of the first malformed sequence.
    /// Borrows exactly when [`Charset::decode`] would.
    pub fn decode_strict<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, str>, CharsetError> {
        let malformed = |offset| CharsetError::Malformed { charset: self.msh18_name(), offset };
        match self.encoding() {
            None => match bytes.iter().position(|&b| b > 0x7F) {
                Some(offset) => Err(malformed(offset)),
                None => Ok(decode_ascii(bytes)),
            },
            Some(encoding) => encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or_else(|| malformed(first_malformed_offset(encoding, bytes))),
        }
    }

    /// Encodes `text`, writing `?` for each character the set cannot represent.
    ///
    /// Never writes HTML numeric character references (`&#8364;`), which is what
    /// `encoding_rs::Encoding::encode` does and which would be data corruption in HL7.
    /// Borrows when the bytes equal the UTF-8 of `text` (UTF-8 always; ASCII text in every
    /// set but ISO-2022-JP, where 0x0E, 0x0F and ESC are not representable).
    pub fn encode_lossy<'a>(&self, text: &'a str) -> Cow<'a, [u8]> {
        match self.encoding() {
            None if text.is_ascii() => Cow::Borrowed(text.as_bytes()),
            None => Cow::Owned(text.chars().map(|c| if c.is_ascii() { c as u8 } else { b'?' }).collect()),
            Some(encoding) if encoding == encoding_rs::UTF_8 => Cow::Borrowed(text.as_bytes()),
            Some(encoding) if text.is_ascii() && encoding.is_ascii_compatible() => {
                Cow::Borrowed(text.as_bytes())
            }
            // ISO-2022-JP starts (and, for ASCII text, stays) in ASCII mode.
            Some(encoding)
                if encoding == encoding_rs::ISO_2022_JP
                    && text.bytes().all(|b| b.is_ascii() && !matches!(b, 0x0E | 0x0F | 0x1B)) =>
            {
                Cow::Borrowed(text.as_bytes())
            }
            Some(encoding) => Cow::Owned(encode_with_question_marks(encoding, text)),
        }
    }

    /// Whether HL7 structure can be found on the raw bytes: every byte 0x00–0x7F in a valid
    /// stream stands for that ASCII character and is never part of a multi-byte character.
    ///
    /// When true, splitting a frame at delimiter bytes (`|`, `^`, `~`, `\`, `&`, CR) before
    /// decoding gives the same fields as decoding first and splitting the text, so the
    /// zero-copy parser is sound. That holds for ASCII, UTF-8 and every ISO 8859 /
    /// Windows single-byte set.
    ///
    /// It is false for:
    /// * [`Charset::Big5`] and [`Charset::Gb18030`]: trail bytes range over 0x40–0x7E, so `\`,
    ///   `^`, `|` and `~` occur inside characters (Big5 `許` is `B3 5C`);
    /// * [`Charset::EucKr`]: the UHC extension uses ASCII letters as trail bytes (no standard
    ///   delimiter, but a custom one or a segment id could match);
    /// * [`Charset::Iso2022Jp`]: in two-byte mode both bytes range over 0x21–0x7E. HL7
    ///   expects senders to shift back to ASCII (`ESC ( B`) before every delimiter and CR,
    ///   and CR itself can never occur in two-byte mode, but nothing enforces the former, so
    ///   a byte-level `|` may be half of a kanji.
    ///
    /// For these, decode the whole frame first and parse the text (MLLP framing is unaffected:
    /// 0x0B and 0x1C never occur inside their characters).
    pub fn is_ascii_compatible(&self) -> bool {
        !matches!(self, Charset::Iso2022Jp | Charset::EucKr | Charset::Gb18030 | Charset::Big5)
    }

    /// The `encoding_rs` encoding behind this set; `None` for ASCII, which `encoding_rs` does
    /// not have (its `ascii` label means Windows-1252).
    fn encoding(&self) -> Option<&'static Encoding> {
        Some(match self {
            Charset::Ascii => return None,
            Charset::Windows1252 => encoding_rs::WINDOWS_1252,
            Charset::Iso8859_2 => encoding_rs::ISO_8859_2,
            Charset::Iso8859_3 => encoding_rs::ISO_8859_3,
            Charset::Iso8859_4 => encoding_rs::ISO_8859_4,
            Charset::Iso8859_5 => encoding_rs::ISO_8859_5,
            Charset::Iso8859_6 => encoding_rs::ISO_8859_6,
            Charset::Iso8859_7 => encoding_rs::ISO_8859_7,
            Charset::Iso8859_8 => encoding_rs::ISO_8859_8,
            Charset::Iso8859_9 => encoding_rs::WINDOWS_1254,
            Charset::Iso8859_15 => encoding_rs::ISO_8859_15,
            Charset::Iso2022Jp => encoding_rs::ISO_2022_JP,
            Charset::EucKr => encoding_rs::EUC_KR,
            Charset::Gb18030 => encoding_rs::GB18030,
            Charset::Big5 => encoding_rs::BIG5,
            Charset::Utf8 => encoding_rs::UTF_8,
        })
    }
}

/// A peer-supplied name made safe for errors and logs: lossy UTF-8, control characters
/// replaced (so a log line stays one line), at most [`MAX_NAME_CHARS`] characters.
fn display_name(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .take(MAX_NAME_CHARS)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// ASCII decoding, which `encoding_rs` lacks: bytes above 0x7F become U+FFFD.
fn decode_ascii(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) if bytes.is_ascii() => Cow::Borrowed(text),
        _ => {
            Cow::Owned(bytes.iter().map(|&b| if b.is_ascii() { char::from(b) } else { '\u{FFFD}' }).collect())
        }
    }
}

/// Size of the scratch buffer the streaming coders write into; any size that holds one
/// character's output (at most 8 bytes, ISO-2022-JP escape plus pair) works.
const CHUNK: usize = 1024;

/// Offset of the first malformed sequence, for input already known to be malformed.
fn first_malformed_offset(encoding: &'static Encoding, bytes: &[u8]) -> usize {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut scratch = [0u8; CHUNK];
    let mut read_total = 0;
    loop {
        let (result, read, _) =
            decoder.decode_to_utf8_without_replacement(&bytes[read_total..], &mut scratch, true);
        read_total += read;
        match result {
            DecoderResult::OutputFull => continue,
            // Only called after a failed strict decode, so this is unreachable in practice;
            // the end of the input is the most honest answer.
            DecoderResult::InputEmpty => return bytes.len(),
            // `read_total` counts the bad sequence and the bytes consumed after it.
            DecoderResult::Malformed(bad, after) => {
                return read_total.saturating_sub(usize::from(bad) + usize::from(after));
            }
        }
    }
}

/// Encodes through the low-level encoder so unmappable characters become `?` rather than
/// `encoding_rs`'s HTML numeric references. ISO-2022-JP's encoder has already shifted back
/// to ASCII when it reports an unmappable character, so `?` is written in ASCII mode.
fn encode_with_question_marks(encoding: &'static Encoding, text: &str) -> Vec<u8> {
    let mut encoder = encoding.new_encoder();
    let mut out = Vec::with_capacity(text.len());
    let mut scratch = [0u8; CHUNK];
    let mut read_total = 0;
    loop {
        let (result, read, written) =
            encoder.encode_from_utf8_without_replacement(&text[read_total..], &mut scratch, true);
        read_total += read;
        out.extend_from_slice(&scratch[..written]);
        match result {
            EncoderResult::InputEmpty => return out,
            EncoderResult::OutputFull => {}
            EncoderResult::Unmappable(_) => out.push(b'?'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    const WINDOWS1252_ADT: &[u8] = include_bytes!("../tests/fixtures/windows1252_adt_a08.hl7");
    const UTF8_ADT: &[u8] = include_bytes!("../tests/fixtures/utf8_multilingual_adt_a08.hl7");

    /// MSH-18 of a fixture (first repetition), assuming `|` and `~` and an ASCII MSH.
    fn msh18(message: &[u8]) -> &[u8] {
        let msh = message.split(|&b| b == 0x0D).next().unwrap();
        let field = msh.split(|&b| b == b'|').nth(17).unwrap_or(b"");
        field.split(|&b| b == b'~').next().unwrap()
    }

    #[test]
    fn windows1252_fixture_labelled_8859_1_decodes_cp1252_punctuation() {
        let charset = resolve(msh18(WINDOWS1252_ADT), Charset::Utf8, false).unwrap();
        assert_eq!(charset, Charset::Windows1252);
        let text = charset.decode_strict(WINDOWS1252_ADT).unwrap();
        for expected in ["LEFÈVRE", "RENÉE", "Zoë", "€", "’", "“", "”", "«", "»"] {
            assert!(text.contains(expected), "missing {expected:?} in {text:?}");
        }
        assert!(!text.contains('\u{FFFD}'));
    }

    #[test]
    fn utf8_fixture_decodes_multilingual_names() {
        let charset = resolve(msh18(UTF8_ADT), Charset::Windows1252, false).unwrap();
        assert_eq!(charset, Charset::Utf8);
        let text = charset.decode_strict(UTF8_ADT).unwrap();
        assert!(matches!(text, Cow::Borrowed(_)));
        for expected in ["ΠΑΠΑΔΟΠΟΥΛΟΣ", "山田", "Straße", "München", "🩺"] {
            assert!(text.contains(expected), "missing {expected:?} in {text:?}");
        }
    }

    #[test]
    fn fixtures_round_trip_through_their_charsets() {
        for (bytes, charset) in [(WINDOWS1252_ADT, Charset::Windows1252), (UTF8_ADT, Charset::Utf8)] {
            assert_eq!(&*charset.encode_lossy(&charset.decode(bytes)), bytes);
        }
    }

    #[test]
    fn unmappable_characters_become_question_marks_not_html_entities() {
        assert_eq!(&*Charset::Windows1252.encode_lossy("€ 🩺"), b"\x80 ?".as_slice());
        assert_eq!(&*Charset::Ascii.encode_lossy("€ 🩺"), b"? ?".as_slice());
        assert_eq!(&*Charset::Iso8859_2.encode_lossy("€ Ł"), b"? \xA3".as_slice());
        assert_eq!(&*Charset::Big5.encode_lossy("許🩺"), b"\xB3\x5C?".as_slice());
    }

    #[test]
    fn iso2022jp_writes_question_mark_in_ascii_mode() {
        // あ is JIS X 0208 0x2422; 🩺 is unmappable, so the encoder shifts back first.
        let bytes = Charset::Iso2022Jp.encode_lossy("あ🩺|");
        assert_eq!(&*bytes, b"\x1B$B\x24\x22\x1B(B?|".as_slice());
        assert_eq!(Charset::Iso2022Jp.decode(&bytes), "あ?|");
    }

    #[test]
    fn borrows_when_no_conversion_is_needed() {
        for charset in Charset::ALL {
            assert!(matches!(charset.encode_lossy("MSH|^~\\&|A"), Cow::Borrowed(_)));
            assert!(matches!(charset.decode(b"MSH|^~\\&|A"), Cow::Borrowed(_)));
        }
        assert!(matches!(Charset::Utf8.encode_lossy("Zoë"), Cow::Borrowed(_)));
        assert!(matches!(Charset::Windows1252.decode(b"Zo\xEB"), Cow::Owned(_)));
    }

    #[test]
    fn strict_decoding_reports_the_first_malformed_byte() {
        let err = |charset: Charset, bytes: &[u8]| charset.decode_strict(bytes).unwrap_err();
        assert_eq!(
            err(Charset::Ascii, b"MSH|\xC3\xA9"),
            CharsetError::Malformed { charset: "ASCII", offset: 4 }
        );
        assert_eq!(
            err(Charset::Utf8, b"MSH|ok|\xE2\x82|"),
            CharsetError::Malformed { charset: "UNICODE UTF-8", offset: 7 }
        );
        // Truncated sequence at the very end.
        assert_eq!(
            err(Charset::Utf8, b"ab\xF0\x9F"),
            CharsetError::Malformed { charset: "UNICODE UTF-8", offset: 2 }
        );
        // 0xAE is unassigned in ISO 8859-7.
        assert_eq!(
            err(Charset::Iso8859_7, b"abc\xAE"),
            CharsetError::Malformed { charset: "8859/7", offset: 3 }
        );
        // A lone Big5 lead byte before a CR.
        assert_eq!(
            err(Charset::Big5, b"PID|\xB3\r"),
            CharsetError::Malformed { charset: "BIG-5", offset: 4 }
        );
        // Past the output scratch buffer, the offset is still absolute.
        let mut long = "é".repeat(3 * CHUNK).into_bytes();
        long.push(0xFF);
        assert_eq!(
            err(Charset::Utf8, &long),
            CharsetError::Malformed { charset: "UNICODE UTF-8", offset: 6 * CHUNK }
        );
        // GB18030 pairs whose UTF-8 outgrows the scratch buffer, then a lone lead byte.
        let mut long = vec![0xE9; 3 * CHUNK];
        long.push(0x81);
        assert_eq!(
            err(Charset::Gb18030, &long),
            CharsetError::Malformed { charset: "GB 18030-2000", offset: 3 * CHUNK }
        );
    }

    #[test]
    fn lossy_decoding_replaces_invalid_bytes() {
        assert_eq!(Charset::Ascii.decode(b"a\xE9b"), "a\u{FFFD}b");
        assert_eq!(Charset::Utf8.decode(b"a\xE9b"), "a\u{FFFD}b");
        assert_eq!(Charset::Windows1252.decode(b"a\xE9b"), "aéb");
    }

    #[test]
    fn every_table_0211_name_maps() {
        let supported = [
            ("ASCII", Charset::Ascii),
            ("8859/1", Charset::Windows1252),
            ("8859/2", Charset::Iso8859_2),
            ("8859/3", Charset::Iso8859_3),
            ("8859/4", Charset::Iso8859_4),
            ("8859/5", Charset::Iso8859_5),
            ("8859/6", Charset::Iso8859_6),
            ("8859/7", Charset::Iso8859_7),
            ("8859/8", Charset::Iso8859_8),
            ("8859/9", Charset::Iso8859_9),
            ("8859/15", Charset::Iso8859_15),
            ("ISO IR6", Charset::Ascii),
            ("ISO IR87", Charset::Iso2022Jp),
            ("GB 18030-2000", Charset::Gb18030),
            ("KS X 1001", Charset::EucKr),
            ("BIG-5", Charset::Big5),
            ("UNICODE UTF-8", Charset::Utf8),
        ];
        for (name, charset) in supported {
            assert_eq!(Charset::from_msh18(name.as_bytes()), Ok(Some(charset)), "{name}");
        }
        for name in ["ISO IR14", "ISO IR159", "CNS 11643-1992", "UNICODE", "UNICODE UTF-16", "UNICODE UTF-32"]
        {
            assert!(
                matches!(
                    Charset::from_msh18(name.as_bytes()),
                    Err(CharsetError::Unsupported { name: ref n, .. }) if n == name
                ),
                "{name}"
            );
        }
        // Every variant's own table spelling reads back as itself.
        for charset in Charset::ALL {
            assert_eq!(Charset::from_msh18(charset.msh18_name().as_bytes()), Ok(Some(charset)));
        }
    }

    #[test]
    fn encoding_rs_supersets_are_used_for_8859_1_and_8859_9() {
        // 0x80 is € in Windows-1252 (a C1 control in strict 8859-1).
        assert_eq!(Charset::Windows1252.decode(b"\x80"), "€");
        // 0x80 is € in Windows-1254 too; strict 8859-9 has ğ at 0xF0 either way.
        assert_eq!(Charset::Iso8859_9.decode(b"\x80\xF0"), "€ğ");
        assert_eq!(Charset::Iso8859_15.decode(b"\xA4"), "€");
        assert_eq!(Charset::Iso8859_5.decode(b"\xB0"), "А");
    }

    #[test]
    fn non_standard_spellings_are_accepted_case_insensitively_and_trimmed() {
        for (name, charset) in [
            ("UTF-8", Charset::Utf8),
            ("utf8", Charset::Utf8),
            (" unicode utf-8 ", Charset::Utf8),
            ("ISO-8859-1", Charset::Windows1252),
            ("iso_8859-1", Charset::Windows1252),
            ("Windows-1252", Charset::Windows1252),
            ("cp1252\t", Charset::Windows1252),
            ("ascii", Charset::Ascii),
            ("big-5", Charset::Big5),
        ] {
            assert_eq!(Charset::from_msh18(name.as_bytes()), Ok(Some(charset)), "{name}");
        }
    }

    #[test]
    fn utf16_and_utf32_are_refused_as_not_mllp_safe() {
        for name in ["UNICODE", "UNICODE UTF-16", "unicode utf-32", "UTF-16", "utf-32"] {
            let err = Charset::from_msh18(name.as_bytes()).unwrap_err();
            assert_eq!(err, CharsetError::Unsupported { name: name.to_owned(), reason: NOT_MLLP_SAFE });
            assert!(err.to_string().contains("0x0B"), "{err}");
        }
    }

    #[test]
    fn empty_msh18_means_none() {
        assert_eq!(Charset::from_msh18(b""), Ok(None));
        assert_eq!(Charset::from_msh18(b"  "), Ok(None));
    }

    #[test]
    fn unknown_names_are_reported_lossily_and_truncated() {
        assert_eq!(Charset::from_msh18(b"EBCDIC"), Err(CharsetError::Unknown { name: "EBCDIC".to_owned() }));
        assert_eq!(
            Charset::from_msh18(b"ISO IR6~ISO IR87"),
            Err(CharsetError::Unknown { name: "ISO IR6~ISO IR87".to_owned() })
        );
        let Err(CharsetError::Unknown { name }) = Charset::from_msh18(&[b'X'; 500]) else {
            panic!("expected unknown");
        };
        assert_eq!(name, "X".repeat(40));
        let Err(CharsetError::Unknown { name }) = Charset::from_msh18(b"\xFFbad\x1Bname") else {
            panic!("expected unknown");
        };
        assert_eq!(name, "\u{FFFD}bad\u{FFFD}name");
        let err = Charset::from_msh18(b"EBCDIC").unwrap_err();
        assert_eq!(err.to_string(), "unknown character set \"EBCDIC\" in MSH-18");
    }

    #[test]
    fn resolve_applies_default_and_force_switch() {
        assert_eq!(resolve(b"", Charset::Utf8, false), Ok(Charset::Utf8));
        assert_eq!(resolve(b"8859/1", Charset::Utf8, false), Ok(Charset::Windows1252));
        assert!(resolve(b"bogus", Charset::Utf8, false).is_err());
        assert!(resolve(b"UNICODE UTF-16", Charset::Utf8, false).is_err());
        // Forced: MSH-18 is ignored, even when valid, empty or invalid.
        for msh18 in [b"8859/1".as_slice(), b"", b"bogus", b"UNICODE UTF-16"] {
            assert_eq!(resolve(msh18, Charset::Utf8, true), Ok(Charset::Utf8));
        }
    }

    #[test]
    fn config_names() {
        for (name, charset) in [
            ("utf-8", Charset::Utf8),
            ("UTF-8", Charset::Utf8),
            ("windows-1252", Charset::Windows1252),
            ("iso-8859-1", Charset::Windows1252),
            ("ISO-8859-1", Charset::Windows1252),
            ("ascii", Charset::Ascii),
            // What the listener's `encoding` key accepted before the one table.
            ("UTF8", Charset::Utf8),
            ("cp1252", Charset::Windows1252),
            ("US-ASCII", Charset::Ascii),
            (" utf-8 ", Charset::Utf8),
        ] {
            assert_eq!(Charset::from_config_name(name), Some(charset), "{name}");
        }
        for name in ["utf-16", "8859/1", "latin1", "", "utf-8x"] {
            assert_eq!(Charset::from_config_name(name), None, "{name}");
        }
        for charset in Charset::ALL {
            assert_eq!(Charset::from_config_name(charset.config_name()), Some(charset));
        }
    }

    /// The table starts with exactly the canonical names, in [`Charset::ALL`] order, so
    /// error messages and docs can list `CONFIG_NAMES` without repeating a set.
    #[test]
    fn config_names_table_lists_each_canonical_name_once_first() {
        let canonical: Vec<&str> = Charset::ALL.iter().map(Charset::config_name).collect();
        let first: Vec<&str> = CONFIG_NAMES[..Charset::ALL.len()].iter().map(|&(name, _)| name).collect();
        assert_eq!(first, canonical);
        for &(name, charset) in CONFIG_NAMES {
            assert_eq!(name, name.to_ascii_lowercase(), "{name}");
            assert_eq!(Charset::from_config_name(name), Some(charset), "{name}");
        }
    }

    /// The counterexamples behind `is_ascii_compatible() == false`: a delimiter-valued byte
    /// inside one character.
    #[test]
    fn multibyte_sets_hide_ascii_bytes_inside_characters() {
        let cases: [(Charset, &[u8]); 4] = [
            (Charset::Big5, b"\xB3\x5C"),                  // 許, trail byte is `\`
            (Charset::Gb18030, b"\x81\x7C"),               // trail byte is `|`
            (Charset::EucKr, b"\x81\x41"),                 // UHC trail byte is `A`
            (Charset::Iso2022Jp, b"\x1B$B\x21\x7C\x1B(B"), // JIS pair 0x217C holds `|`
        ];
        for (charset, bytes) in cases {
            assert!(!charset.is_ascii_compatible());
            let text = charset.decode_strict(bytes).unwrap();
            assert_eq!(text.chars().count(), 1, "{charset:?}: {text:?}");
            assert!(!text.is_ascii(), "{charset:?}: {text:?}");
        }
    }

    fn charset() -> impl Strategy<Value = Charset> {
        proptest::sample::select(Charset::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn decode_never_panics(charset in charset(), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let lossy = charset.decode(&bytes);
            match charset.decode_strict(&bytes) {
                Ok(text) => prop_assert_eq!(text, lossy),
                Err(CharsetError::Malformed { offset, .. }) => {
                    prop_assert!(offset < bytes.len());
                    prop_assert!(lossy.contains(char::REPLACEMENT_CHARACTER));
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }

        #[test]
        fn ascii_text_round_trips(charset in charset(), text in "[\\x00-\\x7F]{0,200}") {
            // ISO-2022-JP gives SO, SI and ESC meaning (escape sequences); they are not text.
            prop_assume!(charset != Charset::Iso2022Jp || !text.contains(['\x0E', '\x0F', '\x1B']));
            let decoded = charset.decode(text.as_bytes());
            prop_assert_eq!(&*charset.encode_lossy(&decoded), text.as_bytes());
        }

        #[test]
        fn encode_lossy_never_panics(charset in charset(), text in any::<String>()) {
            let bytes = charset.encode_lossy(&text);
            if charset == Charset::Utf8 {
                prop_assert_eq!(&*bytes, text.as_bytes());
            }
        }

        /// What `is_ascii_compatible` promises: splitting raw bytes at `|` then decoding each
        /// piece equals decoding the whole frame and splitting the text.
        #[test]
        fn ascii_compatible_sets_split_like_text(
            charset in charset(),
            bytes in proptest::collection::vec(prop_oneof![Just(b'|'), any::<u8>()], 0..256),
        ) {
            prop_assume!(charset.is_ascii_compatible());
            let whole = charset.decode(&bytes);
            let from_text: Vec<&str> = whole.split('|').collect();
            let from_bytes: Vec<Cow<'_, str>> =
                bytes.split(|&b| b == b'|').map(|piece| charset.decode(piece)).collect();
            prop_assert_eq!(from_text, from_bytes);
        }
    }
}
