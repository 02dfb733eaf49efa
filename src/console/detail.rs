//! A stored message as the detail page shows it: a table of its segments and fields with
//! their positions (`PID-3`) and names (from [`hl7_proto::names`]), and the raw text with
//! its structure made visible — each delimiter, MSH-2, every escape sequence highlighted
//! and every segment terminator written out as `\r` — never interpreted: maud escapes all
//! of it for HTML, and control characters are shown as symbols.

use hl7_proto::lex::{self, Token};
use hl7_proto::message::{Delimiters, Message};
use hl7_proto::names;
use maud::{html, Markup};

use crate::ops::printable;

/// The segments table.
pub fn segments_table(text: &str) -> Markup {
    let Ok(message) = Message::parse(text.as_bytes()) else {
        return html! { p.muted { "The message does not start with a usable MSH segment: only the raw view below." } };
    };
    html! {
        div.scroll {
            table.segments {
                thead { tr { th { "Position" } th { "Name" } th { "Value (as received, escapes not interpreted)" } } }
                tbody {
                    @for (index, segment) in message.segments().enumerate() {
                        @let id = String::from_utf8_lossy(segment.id()).into_owned();
                        tr.segment {
                            th colspan="3" {
                                span.mono { (printable(&id)) }
                                @if let Some(name) = names::segment_name(&id) { " — " (name) }
                                span.muted { " (segment " (index + 1) ")" }
                            }
                        }
                        @for n in 1..=segment.field_count() {
                            @let value = segment.field(n);
                            @if !value.is_empty() {
                                tr {
                                    td.pos { (printable(&id)) "-" (n) }
                                    td { (names::field_name(&id, n).unwrap_or("")) }
                                    td.mono { (printable(&String::from_utf8_lossy(value.raw()))) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The raw view: one line per segment, its terminator shown.
pub fn raw_view(text: &str) -> Markup {
    let delimiters = Message::parse(text.as_bytes()).map(|m| m.delimiters()).unwrap_or(Delimiters::DEFAULT);
    // Keep what ends each segment, to show it as it came (CR, LF or CR LF).
    let mut lines: Vec<(&str, &str)> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let terminator_len = rest[end..].chars().take_while(|c| *c == '\r' || *c == '\n').count();
        lines.push((&rest[..end], &rest[end..end + terminator_len]));
        rest = &rest[end + terminator_len..];
    }
    html! {
        pre.raw {
            @for (segment, terminator) in &lines {
                @for token in lex::tokens(segment, &delimiters) {
                    @match token {
                        Token::Text(text) => (printable(text)),
                        Token::Delimiter(d) => span.d title="delimiter" { (d) },
                        Token::EncodingCharacters(e) => span.enc title="MSH-2: encoding characters" { (e) },
                        Token::Escape(e) => span.esc title="escape sequence (not interpreted)" { (e) },
                    }
                }
                @if !terminator.is_empty() {
                    span.seg-end title="segment terminator" { (terminator.replace('\r', "\\r").replace('\n', "\\n")) }
                }
                "\n"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "MSH|^~\\&|LAB|MCM|||20261104153000||ORU^R01|C1|P|2.5\r\
        PID|1||123456^^^HOSP^MR||<script>alert(1)</script>\r\
        OBX|1|TX|||a\\F\\b\r";

    #[test]
    fn fields_are_named_by_position_and_nothing_is_interpreted() {
        let html = segments_table(MESSAGE).into_string();
        assert!(html.contains("PID-3"), "{html}");
        assert!(html.contains("Patient Identifier List"));
        assert!(html.contains("OBX-5") && html.contains("Observation Value"));
        assert!(html.contains("Patient Identification"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn the_raw_view_shows_delimiters_escapes_and_terminators() {
        let html = raw_view(MESSAGE).into_string();
        assert!(
            html.contains(r#"<span class="esc" title="escape sequence (not interpreted)">\F\</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="enc" title="MSH-2: encoding characters">^~\&amp;</span>"#),
            "{html}"
        );
        assert_eq!(html.matches(r#"<span class="seg-end" title="segment terminator">\r</span>"#).count(), 3);
        assert!(!html.contains("<script>"));
        // A control character from the peer is a visible symbol, not a byte in the page.
        assert!(raw_view("MSH|^~\\&|A\u{1b}[31m").into_string().contains('\u{241b}'));
    }
}
