//! One segment cut into what a reader of the raw message should see apart: text, each
//! delimiter, MSH-2's encoding characters, and escape sequences (`\F\`, `\X0D\`, `\.br\` …)
//! — for a raw view that shows the structure without interpreting any of it.
//!
//! Works on the segment's text (decoded from its character set or not: delimiters are
//! ASCII). Never fails: an escape character with no closing one is text.

use crate::message::Delimiters;

/// Longest escape sequence recognised between its two escape characters (`\Xhhhh…\` of a
/// few bytes, `\.sp5\`, `\H\`); a longer run is text with a stray escape character in it.
const MAX_ESCAPE: usize = 32;

/// A piece of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// Ordinary text (the segment id included).
    Text(&'a str),
    /// A field, component, repetition or subcomponent separator.
    Delimiter(&'a str),
    /// MSH-2 (FHS-2, BHS-2): the encoding characters, never an escape.
    EncodingCharacters(&'a str),
    /// An escape sequence with its escape characters (`\F\`).
    Escape(&'a str),
}

/// Cuts `segment` (one segment, without its terminator) into [`Token`]s that join back to
/// it exactly.
pub fn tokens<'a>(segment: &'a str, delimiters: &Delimiters) -> Vec<Token<'a>> {
    let mut out = Vec::new();
    let bytes = segment.as_bytes();
    let mut i = 0;
    let mut text_from = 0;
    let is_header = ["MSH", "FHS", "BHS"].iter().any(|id| segment.starts_with(id));
    let is_delimiter = |b: u8| {
        b == delimiters.field
            || b == delimiters.component
            || b == delimiters.repetition
            || Some(b) == delimiters.subcomponent
    };
    let flush = |out: &mut Vec<Token<'a>>, from: usize, to: usize| {
        if to > from {
            out.push(Token::Text(&segment[from..to]));
        }
    };
    if is_header && bytes.len() > 3 {
        // `MSH`, MSH-1 (the field separator), then MSH-2 up to the next separator.
        out.push(Token::Text(&segment[..3]));
        out.push(Token::Delimiter(&segment[3..4]));
        let end = bytes[4..].iter().position(|&b| b == delimiters.field).map_or(bytes.len(), |p| p + 4);
        if end > 4 {
            out.push(Token::EncodingCharacters(&segment[4..end]));
        }
        i = end;
        text_from = end;
    }
    while i < bytes.len() {
        let b = bytes[i];
        if is_delimiter(b) {
            flush(&mut out, text_from, i);
            out.push(Token::Delimiter(&segment[i..i + 1]));
            i += 1;
            text_from = i;
            continue;
        }
        if Some(b) == delimiters.escape {
            let close = bytes[i + 1..]
                .iter()
                .take(MAX_ESCAPE + 1)
                .position(|&c| Some(c) == delimiters.escape || is_delimiter(c))
                .map(|p| p + i + 1)
                .filter(|&end| Some(bytes[end]) == delimiters.escape && end > i + 1);
            if let Some(end) = close {
                flush(&mut out, text_from, i);
                out.push(Token::Escape(&segment[i..=end]));
                i = end + 1;
                text_from = i;
                continue;
            }
        }
        // Delimiters and escapes are ASCII; step over a whole character otherwise.
        i += segment[i..].chars().next().map_or(1, char::len_utf8);
    }
    flush(&mut out, text_from, bytes.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(tokens: &[Token<'_>]) -> String {
        tokens
            .iter()
            .map(|t| match t {
                Token::Text(s) | Token::Delimiter(s) | Token::EncodingCharacters(s) | Token::Escape(s) => *s,
            })
            .collect()
    }

    #[test]
    fn msh_two_is_not_an_escape_and_escapes_are_found() {
        let d = Delimiters::DEFAULT;
        let msh = "MSH|^~\\&|APP";
        let t = tokens(msh, &d);
        assert_eq!(
            t,
            [
                Token::Text("MSH"),
                Token::Delimiter("|"),
                Token::EncodingCharacters("^~\\&"),
                Token::Delimiter("|"),
                Token::Text("APP")
            ]
        );
        let obx = "OBX|1|TX|||a\\F\\b\\.br\\c~d^e&f";
        let t = tokens(obx, &d);
        assert_eq!(joined(&t), obx);
        assert!(t.contains(&Token::Escape("\\F\\")));
        assert!(t.contains(&Token::Escape("\\.br\\")));
        assert_eq!(t.iter().filter(|t| matches!(t, Token::Delimiter(_))).count(), 8);
    }

    #[test]
    fn a_lone_escape_character_is_text_and_unicode_survives() {
        let d = Delimiters::DEFAULT;
        for text in ["NTE|1||C:\\dir|é\\", "PID|1||ü\\X0D\\ö", "NTE|\\\\|x", ""] {
            assert_eq!(joined(&tokens(text, &d)), text);
        }
        assert!(!tokens("NTE|1||C:\\dir|x", &d).iter().any(|t| matches!(t, Token::Escape(_))));
    }
}
