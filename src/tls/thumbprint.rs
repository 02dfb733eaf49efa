//! [`Thumbprint`]: the digest of a DER-encoded certificate that approves one client (in
//! `client_thumbprints`) or pins one server (`hl7d send --pin`), and how it is written.

use std::fmt;
use std::str::FromStr;

use hl7_proto::hex;
use thiserror::Error;

/// The digest of a DER-encoded certificate that approves one client.
///
/// Parsed from any of the usual spellings (see [`Thumbprint::from_str`]); displayed as
/// `sha256:<64 lower-case hex digits>` or `sha1:<40 lower-case hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Thumbprint {
    /// SHA-256 of the certificate (64 hex digits).
    Sha256([u8; 32]),
    /// SHA-1 of the certificate (40 hex digits), as Windows shows it.
    Sha1([u8; 20]),
}

/// A string that is not a SHA-256 or SHA-1 thumbprint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ThumbprintError {
    /// A character other than a hex digit, space or colon.
    #[error("contains {found:?}, which is not a hex digit")]
    NotHex {
        /// The first offending character.
        found: char,
    },
    /// The number of hex digits fits neither algorithm.
    #[error("has {digits} hex digits: expected 64 (SHA-256) or 40 (SHA-1)")]
    Length {
        /// Hex digits found after removing separators.
        digits: usize,
    },
    /// A `sha256:` or `sha1:` prefix with the other algorithm's length.
    #[error("has the {prefix} prefix but {digits} hex digits (expected {expected})")]
    PrefixMismatch {
        /// The prefix as written, lower-cased (`"sha256:"`, `"sha1:"`).
        prefix: String,
        /// Hex digits found.
        digits: usize,
        /// Hex digits that prefix needs.
        expected: usize,
    },
}

impl Thumbprint {
    /// The digest bytes (32 for SHA-256, 20 for SHA-1).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Thumbprint::Sha256(digest) => digest,
            Thumbprint::Sha1(digest) => digest,
        }
    }

    /// Whether this thumbprint approves a certificate with these digests of its DER bytes.
    pub fn matches(&self, sha256: &[u8; 32], sha1: &[u8; 20]) -> bool {
        match self {
            Thumbprint::Sha256(digest) => digest == sha256,
            Thumbprint::Sha1(digest) => digest == sha1,
        }
    }
}

impl FromStr for Thumbprint {
    type Err = ThumbprintError;

    /// Accepts `sha256:`/`sha-256:`/`sha1:`/`sha-1:` prefixes or none, upper or lower case,
    /// and spaces or colons between digits (`"A9 4A 8F …"` as Windows shows it,
    /// `"9F:86:D0…"` as OpenSSL prints it). Invisible direction marks that the Windows
    /// certificate dialog copies along are dropped. The algorithm follows from the
    /// length: 64 hex digits are SHA-256, 40 are SHA-1.
    fn from_str(text: &str) -> Result<Thumbprint, ThumbprintError> {
        let cleaned: String =
            text.chars().filter(|c| !matches!(c, '\u{200E}' | '\u{200F}' | '\u{FEFF}')).collect();
        let cleaned = cleaned.trim();
        let lower = cleaned.to_ascii_lowercase();
        let mut expected = None;
        let mut digits_part = cleaned;
        for (prefix, len) in [("sha256:", 64), ("sha-256:", 64), ("sha1:", 40), ("sha-1:", 40)] {
            if lower.starts_with(prefix) {
                expected = Some((prefix, len));
                digits_part = &cleaned[prefix.len()..];
                break;
            }
        }
        let mut digits = String::with_capacity(64);
        for c in digits_part.chars() {
            match c {
                ' ' | '\t' | ':' => {}
                c if c.is_ascii_hexdigit() => digits.push(c),
                found => return Err(ThumbprintError::NotHex { found }),
            }
        }
        if let Some((prefix, len)) = expected {
            if digits.len() != len {
                return Err(ThumbprintError::PrefixMismatch {
                    prefix: prefix.replace('-', ""),
                    digits: digits.len(),
                    expected: len,
                });
            }
        }
        match digits.len() {
            // Every character in `digits` is a hex digit (checked above), so only the length
            // can fail, and it is matched here.
            64 => Ok(Thumbprint::Sha256(hex::decode_array(digits.as_bytes()).expect("64 hex digits"))),
            40 => Ok(Thumbprint::Sha1(hex::decode_array(digits.as_bytes()).expect("40 hex digits"))),
            digits => Err(ThumbprintError::Length { digits }),
        }
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = match self {
            Thumbprint::Sha256(_) => "sha256",
            Thumbprint::Sha1(_) => "sha1",
        };
        write!(f, "{algorithm}:")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const SHA1_HEX: &str = "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3";

    fn hex<const N: usize>(digits: &str) -> [u8; N] {
        hl7_proto::hex::decode_array(digits.as_bytes()).expect("test digits")
    }

    #[test]
    fn thumbprint_forms() {
        let sha256 = Thumbprint::Sha256(hex(SHA256_HEX));
        let upper_colons = SHA256_HEX
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        for text in [
            SHA256_HEX.to_owned(),
            format!("sha256:{SHA256_HEX}"),
            format!("SHA256:{upper_colons}"),
            format!("sha-256:{upper_colons}"),
            format!("  {}  ", SHA256_HEX.to_uppercase()),
        ] {
            assert_eq!(text.parse::<Thumbprint>(), Ok(sha256), "{text}");
        }
        let sha1 = Thumbprint::Sha1(hex(SHA1_HEX));
        for text in [
            "A9 4A 8F E5 CC B1 9B A6 1C 4C 08 73 D3 91 E9 87 98 2F BB D3",
            // Copied from the Windows certificate dialog: a left-to-right mark in front.
            "\u{200E}a9 4a 8f e5 cc b1 9b a6 1c 4c 08 73 d3 91 e9 87 98 2f bb d3",
            "sha1:A94A8FE5CCB19BA61C4C0873D391E987982FBBD3",
        ] {
            assert_eq!(text.parse::<Thumbprint>(), Ok(sha1), "{text}");
        }
        assert_eq!(sha256.to_string(), format!("sha256:{SHA256_HEX}"));
        assert_eq!(sha1.to_string(), format!("sha1:{SHA1_HEX}"));
        assert!(sha256.matches(&hex(SHA256_HEX), &[0; 20]));
        assert!(!sha256.matches(&[0; 32], &hex(SHA1_HEX)));
        assert!(sha1.matches(&[0; 32], &hex(SHA1_HEX)));
    }

    #[test]
    fn bad_thumbprints() {
        assert_eq!("abcd".parse::<Thumbprint>(), Err(ThumbprintError::Length { digits: 4 }));
        assert_eq!(
            format!("{SHA256_HEX}zz").parse::<Thumbprint>(),
            Err(ThumbprintError::NotHex { found: 'z' })
        );
        assert_eq!(
            format!("sha256:{SHA1_HEX}").parse::<Thumbprint>(),
            Err(ThumbprintError::PrefixMismatch { prefix: "sha256:".to_owned(), digits: 40, expected: 64 })
        );
        assert!("md5:00".parse::<Thumbprint>().is_err());
    }
}
