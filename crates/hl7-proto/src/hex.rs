//! Hex digits to bytes: the one decoder behind HL7's `\Xhh…\` escape, the framing bytes of
//! `[listener.framing]` and `--framing-*` (`"1C 0D"`), and certificate thumbprints.
//!
//! Owns only the digit arithmetic and the notation for byte lists. Callers keep their own
//! rules on top (a thumbprint's length, a framing sequence's 1–4 bytes).

use thiserror::Error;

/// Why a byte list written in hex cannot be read. Messages are lower-case reasons; the
/// caller names the key or flag and quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HexError {
    /// A character that is neither a hex digit nor a separator.
    #[error("{found:?} is not a hex digit")]
    NotHex {
        /// The first such character.
        found: char,
    },
    /// A group of digits of odd length (`"1C0"`): which byte was meant is ambiguous.
    #[error("{token:?} has an odd number of hex digits")]
    OddDigits {
        /// The group as written (without a `0x` prefix).
        token: String,
    },
    /// Nothing but separators.
    #[error("no hex bytes")]
    Empty,
}

/// Decodes an even number of hex digits (either case), e.g. `b"0D0A"` → `[0x0D, 0x0A]`.
/// `None` when a byte is not a hex digit or the count is odd. No separators are allowed.
pub fn decode(digits: &[u8]) -> Option<Vec<u8>> {
    if digits.len() % 2 != 0 {
        return None;
    }
    digits.chunks_exact(2).map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?)).collect()
}

/// Decodes exactly `2 * N` hex digits into `N` bytes (a SHA-256 thumbprint is `N = 32`);
/// `None` for any other length or a non-hex byte.
pub fn decode_array<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *slot = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Reads a byte list as operators write it: `"0B"`, `"1C 0D"`, `"1c0d"`, `"0x1C 0x0D"`,
/// `"1C:0D"`, `"1C,0D"`. Groups are separated by whitespace, `:` or `,`; each group may carry
/// a `0x` prefix and holds one or more whole bytes. At least one byte is required.
pub fn parse_byte_list(text: &str) -> Result<Vec<u8>, HexError> {
    let mut bytes = Vec::new();
    for token in text.split(|c: char| c.is_whitespace() || c == ':' || c == ',') {
        let token = token.strip_prefix("0x").or_else(|| token.strip_prefix("0X")).unwrap_or(token);
        if token.is_empty() {
            continue;
        }
        if let Some(found) = token.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(HexError::NotHex { found });
        }
        // Every character is an ASCII hex digit (checked above), so only an odd count fails.
        let decoded =
            decode(token.as_bytes()).ok_or_else(|| HexError::OddDigits { token: token.to_owned() })?;
        bytes.extend(decoded);
    }
    if bytes.is_empty() {
        return Err(HexError::Empty);
    }
    Ok(bytes)
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs_in_either_case() {
        assert_eq!(decode(b"0D0a"), Some(vec![0x0D, 0x0A]));
        assert_eq!(decode(b"fF00"), Some(vec![0xFF, 0x00]));
        assert_eq!(decode(b""), Some(vec![]));
        for bad in [&b"0"[..], b"0G", b"0x0D", b" 0D", b"+1"] {
            assert_eq!(decode(bad), None, "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn decodes_fixed_length_arrays() {
        assert_eq!(decode_array::<2>(b"1C0D"), Some([0x1C, 0x0D]));
        assert_eq!(decode_array::<2>(b"1C0D00"), None);
        assert_eq!(decode_array::<2>(b"1C0"), None);
        assert_eq!(decode_array::<2>(b"1C0Z"), None);
    }

    #[test]
    fn byte_lists_in_every_documented_form() {
        for (text, expected) in [
            ("0B", vec![0x0B]),
            ("1C 0D", vec![0x1C, 0x0D]),
            ("1c0d", vec![0x1C, 0x0D]),
            ("0x1C 0x0D", vec![0x1C, 0x0D]),
            ("0X1C,0X0D", vec![0x1C, 0x0D]),
            ("1C:0D", vec![0x1C, 0x0D]),
            ("  1C\t0D  ", vec![0x1C, 0x0D]),
        ] {
            assert_eq!(parse_byte_list(text), Ok(expected), "{text}");
        }
        assert_eq!(parse_byte_list("0G"), Err(HexError::NotHex { found: 'G' }));
        assert_eq!(parse_byte_list("1C0"), Err(HexError::OddDigits { token: "1C0".into() }));
        assert_eq!(parse_byte_list("0x"), Err(HexError::Empty));
        assert_eq!(parse_byte_list("  "), Err(HexError::Empty));
        assert_eq!(HexError::NotHex { found: 'G' }.to_string(), "'G' is not a hex digit");
        assert_eq!(
            HexError::OddDigits { token: "1C0".into() }.to_string(),
            "\"1C0\" has an odd number of hex digits"
        );
    }
}
