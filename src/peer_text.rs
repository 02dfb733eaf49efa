//! Text a peer chose, on its way into a log line or the audit trail: capped.
//!
//! A client certificate's subject and issuer, a server name (SNI), MSH-9 and MSH-10, MSH-3
//! and MSH-4, a connection's first bytes: a peer decides how long they are. Logged as they
//! are, a peer would decide how much one refused connection writes to the log and to the
//! audit trail (a self-signed certificate with a 56 KB subject wrote 56 KB per attempt).
//! [`cap`] keeps such text whole up to [`MAX_BYTES`]; longer text keeps its beginning, cut at
//! a character boundary, and ends with a visible marker that gives the whole length:
//! `CN=aaaa…(56123 bytes)`. Every log and audit field that carries peer-chosen text goes
//! through [`cap`] (or [`cap_bytes`] for raw bytes), and nothing else shortens such text.
//!
//! Pure functions: no logging here.

use std::borrow::Cow;

/// The longest peer-chosen text a log or audit field carries, marker included, in bytes.
pub const MAX_BYTES: usize = 256;

/// `text` as it may appear in a log line: unchanged up to [`MAX_BYTES`], otherwise its
/// beginning (cut at a UTF-8 character boundary) followed by `…(N bytes)`, N being the
/// length of the whole, so that the result is at most [`MAX_BYTES`] long.
pub fn cap(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_BYTES {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(cut(text, text.len()))
    }
}

/// Raw bytes (an HL7 field, a connection's first bytes) as [`cap`] would show their text:
/// invalid UTF-8 becomes U+FFFD, and N in the marker counts the bytes received. Only the
/// first [`MAX_BYTES`] bytes are ever converted, however long the input.
pub fn cap_bytes(bytes: &[u8]) -> Cow<'_, str> {
    let head = &bytes[..bytes.len().min(MAX_BYTES)];
    let text = String::from_utf8_lossy(head);
    if head.len() == bytes.len() && text.len() <= MAX_BYTES {
        return text;
    }
    // A replacement character is longer than the byte it replaces, so the text may be
    // longer than the bytes; either way it is cut below MAX_BYTES, and the last character
    // (possibly the half of one that the byte cut split) falls off with the cut.
    Cow::Owned(cut(&text, bytes.len()))
}

/// The beginning of `text` and the marker, together at most [`MAX_BYTES`].
fn cut(text: &str, whole: usize) -> String {
    let marker = format!("…({whole} bytes)");
    let mut end = MAX_BYTES.saturating_sub(marker.len()).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + marker.len());
    out.push_str(&text[..end]);
    out.push_str(&marker);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_unchanged_and_not_copied() {
        for text in ["", "CN=lab-sender, O=Hospital", &"x".repeat(MAX_BYTES)] {
            assert!(matches!(cap(text), Cow::Borrowed(t) if t == text), "{text}");
        }
        assert!(matches!(cap_bytes(b"ADT^A01"), Cow::Borrowed("ADT^A01")));
    }

    #[test]
    fn long_text_keeps_its_beginning_and_names_its_length() {
        let subject = format!("CN={}", "a".repeat(56_000));
        let capped = cap(&subject);
        assert!(capped.len() <= MAX_BYTES, "{}", capped.len());
        assert!(capped.starts_with("CN=aaaa"), "{capped}");
        assert!(capped.ends_with("…(56003 bytes)"), "{capped}");
        // One byte over the limit is cut too.
        let text = "y".repeat(MAX_BYTES + 1);
        let capped = cap(&text);
        assert_eq!(capped.len(), MAX_BYTES);
        assert!(capped.ends_with("…(257 bytes)"), "{capped}");
    }

    #[test]
    fn the_cut_never_splits_a_character() {
        // Two-, three- and four-byte characters at every alignment relative to the cut.
        for filler in ["é", "€", "𝄞"] {
            for offset in 0..4 {
                let text = format!("{}{}", "a".repeat(offset), filler.repeat(200));
                let capped = cap(&text);
                assert!(capped.len() <= MAX_BYTES);
                // Valid UTF-8 by construction (a `str`); the kept part is a prefix of the text.
                let kept = capped.rsplit_once('…').map(|(kept, _)| kept).unwrap();
                assert!(text.starts_with(kept), "{filler} {offset}");
                assert!(kept.len() > MAX_BYTES - 32, "kept only {} bytes", kept.len());
                assert!(capped.ends_with(&format!("…({} bytes)", text.len())));
            }
        }
    }

    #[test]
    fn bytes_are_capped_before_they_are_converted() {
        let field = vec![b'Z'; 1 << 20];
        let capped = cap_bytes(&field);
        assert!(capped.len() <= MAX_BYTES);
        assert!(capped.ends_with("…(1048576 bytes)"), "{capped}");
        // Invalid UTF-8 is shown as U+FFFD; the length is still the bytes received.
        let capped = cap_bytes(&[0xFF; 300]);
        assert!(capped.len() <= MAX_BYTES, "{}", capped.len());
        assert!(capped.starts_with('\u{FFFD}'));
        assert!(capped.ends_with("…(300 bytes)"), "{capped}");
        // Short, but longer than the limit once converted (3 bytes per replacement).
        let capped = cap_bytes(&[0xFF; 100]);
        assert!(capped.len() <= MAX_BYTES, "{}", capped.len());
        assert!(capped.ends_with("…(100 bytes)"), "{capped}");
        // A multi-byte character split by the byte cut does not leave half a character.
        let mut text = "a".repeat(MAX_BYTES - 1).into_bytes();
        text.extend_from_slice("€€€".as_bytes());
        let capped = cap_bytes(&text);
        assert!(!capped.contains('\u{FFFD}'), "{capped}");
    }
}
