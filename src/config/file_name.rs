//! `[route.file] name`: the template a file route names each message's file with, parsed
//! once ([`FileName::parse`]) and rendered per message ([`FileName::render`]). Pure: no
//! files, no clock (the time received comes in as a value).
//!
//! | placeholder | becomes |
//! |---|---|
//! | `{id}` | the message's id in the store, e.g. `42` |
//! | `{id:0N}` | the same, zero-padded to N digits (1–20), e.g. `{id:012}` → `000000000042` |
//! | `{control_id}` | MSH-10, made safe for a file name |
//! | `{listener}` | the listener it was received on, made safe |
//! | `{type}` | MSH-9 `TYPE^EVENT` as `TYPE_EVENT`, made safe |
//! | `{received}` | the time received, UTC, as `%Y%m%dT%H%M%S` |
//! | `{received:FORMAT}` | the time received, UTC, in FORMAT: `%Y` `%m` `%d` `%H` `%M` `%S` `%%` and text |
//! | `{{`, `}}` | a literal brace |
//!
//! "Made safe": letters, digits, `.`, `_` and `-` are kept, every other character becomes
//! `_`, a leading `.` becomes `_` (no hidden files, never `..`), an empty value is `_`, and
//! at most 64 bytes are kept. `/` in the template (not in values) makes subdirectories.
//! The template must contain `{id}` or `{id:0N}`: the message id is what makes names unique.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest value a placeholder other than `{id}`/`{received}` puts into a name, in bytes.
pub const MAX_VALUE_LEN: usize = 64;
/// Longest literal text in one path component of the template, in bytes (a file name is at
/// most 255 bytes on common file systems, and the placeholders need room).
const MAX_LITERAL_LEN: usize = 128;

/// A parsed `[route.file] name` template.
#[derive(Clone, PartialEq, Eq)]
pub struct FileName {
    text: String,
    /// Path components, each a sequence of parts.
    components: Vec<Vec<Part>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Id { width: usize },
    ControlId,
    Listener,
    MessageType,
    Received(Vec<TimePart>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TimePart {
    Text(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// What a name is made of, for one message.
#[derive(Debug, Clone, Copy)]
pub struct FileNameFields<'a> {
    /// The message's id in the store.
    pub id: i64,
    /// MSH-10.
    pub control_id: &'a str,
    /// The listener's name.
    pub listener: &'a str,
    /// MSH-9 as `TYPE^EVENT`.
    pub message_type: &'a str,
    /// When it was received.
    pub received_at: SystemTime,
}

impl FileName {
    /// Parses a template; the error says what is wrong, lower case.
    pub fn parse(text: &str) -> Result<FileName, String> {
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if text.starts_with('/') {
            return Err("must be relative to the route's directory (no leading '/')".to_owned());
        }
        if text.contains(['\0', '\\']) {
            return Err("must not contain NUL or '\\'".to_owned());
        }
        let mut components = Vec::new();
        let mut has_id = false;
        for component in split_components(text)? {
            let parts = parse_component(&component)?;
            has_id |= parts.iter().any(|part| matches!(part, Part::Id { .. }));
            let literal: String = parts
                .iter()
                .filter_map(|part| match part {
                    Part::Text(text) => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            if parts.is_empty() {
                return Err("has an empty path component ('//' or a trailing '/')".to_owned());
            }
            if literal.len() > MAX_LITERAL_LEN {
                return Err(format!("a path component has more than {MAX_LITERAL_LEN} bytes of text"));
            }
            if let Some(Part::Text(first)) = parts.first() {
                if first.starts_with('.') {
                    return Err(format!(
                        "path component {component:?} starts with '.': hidden names are hl7d's \
                         temporary files (and '.'/'..' are not names)"
                    ));
                }
            }
            components.push(parts);
        }
        if !has_id {
            return Err(
                "must contain {id} or {id:0N} (e.g. {id:012}): the message id keeps names unique".to_owned()
            );
        }
        Ok(FileName { text: text.to_owned(), components })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The relative path of one message's file: its components, in order (the last is the
    /// file name). Never empty, never `.`/`..`, never starting with `.`, never holding `/`.
    pub fn render(&self, fields: &FileNameFields<'_>) -> Vec<String> {
        let time = Civil::from(fields.received_at);
        self.components
            .iter()
            .map(|parts| {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(text) => out.push_str(text),
                        Part::Id { width } => out.push_str(&format!("{:0width$}", fields.id, width = *width)),
                        Part::ControlId => out.push_str(&safe(fields.control_id)),
                        Part::Listener => out.push_str(&safe(fields.listener)),
                        Part::MessageType => out.push_str(&safe(&fields.message_type.replace('^', "_"))),
                        Part::Received(format) => time.format(format, &mut out),
                    }
                }
                out
            })
            .collect()
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileName({:?})", self.text)
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits at '/' outside braces (a `{received:%Y/%m}` would be refused by its own parser).
fn split_components(text: &str) -> Result<Vec<String>, String> {
    let mut components = vec![String::new()];
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '/' if depth == 0 => {
                components.push(String::new());
                continue;
            }
            _ => {}
        }
        // Just pushed one if empty.
        components.last_mut().expect("at least one component").push(c);
    }
    Ok(components)
}

fn parse_component(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '}' => return Err("has a '}' without its '{' (write '}}' for a literal brace)".to_owned()),
            '{' => {
                let mut inner = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => inner.push(c),
                        None => return Err(format!("{{{inner} is not closed with '}}'")),
                    }
                }
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(placeholder(&inner)?);
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

fn placeholder(inner: &str) -> Result<Part, String> {
    let (name, argument) = match inner.split_once(':') {
        Some((name, argument)) => (name, Some(argument)),
        None => (inner, None),
    };
    let unknown = || {
        format!(
            "unknown placeholder {{{inner}}}: use {{id}}, {{id:0N}}, {{control_id}}, {{listener}}, {{type}}, \
             {{received}} or {{received:FORMAT}}"
        )
    };
    match (name, argument) {
        ("id", None) => Ok(Part::Id { width: 0 }),
        ("id", Some(width)) => {
            let digits = width.strip_prefix('0').filter(|d| !d.is_empty()).ok_or_else(|| {
                format!("{{id:{width}}}: expected {{id:0N}}, N digits with leading zeros, e.g. {{id:012}}")
            })?;
            match digits.parse::<usize>() {
                Ok(width) if (1..=20).contains(&width) => Ok(Part::Id { width }),
                _ => Err(format!("{{id:{width}}}: the width must be 1 to 20")),
            }
        }
        ("control_id", None) => Ok(Part::ControlId),
        ("listener", None) => Ok(Part::Listener),
        ("type", None) => Ok(Part::MessageType),
        ("received", None) => Ok(Part::Received(parse_time_format("%Y%m%dT%H%M%S")?)),
        ("received", Some(format)) => Ok(Part::Received(parse_time_format(format)?)),
        _ => Err(unknown()),
    }
}

fn parse_time_format(format: &str) -> Result<Vec<TimePart>, String> {
    if format.is_empty() {
        return Err("{received:}: the format is empty".to_owned());
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            if c == '/' || c == '{' {
                return Err(format!("{{received:{format}}}: {c:?} is not allowed in the format"));
            }
            literal.push(c);
            continue;
        }
        let part = match chars.next() {
            Some('%') => {
                literal.push('%');
                continue;
            }
            Some('Y') => TimePart::Year,
            Some('m') => TimePart::Month,
            Some('d') => TimePart::Day,
            Some('H') => TimePart::Hour,
            Some('M') => TimePart::Minute,
            Some('S') => TimePart::Second,
            other => {
                let spec = other.map_or(String::new(), String::from);
                return Err(format!(
                    "{{received:{format}}}: %{spec} is not supported: use %Y %m %d %H %M %S or %%"
                ));
            }
        };
        if !literal.is_empty() {
            parts.push(TimePart::Text(std::mem::take(&mut literal)));
        }
        parts.push(part);
    }
    if !literal.is_empty() {
        parts.push(TimePart::Text(literal));
    }
    Ok(parts)
}

/// A value made safe for a file name (see the module documentation).
fn safe(value: &str) -> String {
    let mut out: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .take(MAX_VALUE_LEN)
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// A UTC civil time, to the second.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl From<SystemTime> for Civil {
    fn from(time: SystemTime) -> Civil {
        let seconds = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_secs() as i64,
            Err(before) => {
                let before = before.duration();
                -(before.as_secs() as i64) - i64::from(before.subsec_nanos() > 0)
            }
        };
        let (days, in_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (in_day / 3600) as u32,
            minute: (in_day % 3600 / 60) as u32,
            second: (in_day % 60) as u32,
        }
    }
}

impl Civil {
    fn format(&self, parts: &[TimePart], out: &mut String) {
        for part in parts {
            let text = match part {
                TimePart::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                TimePart::Year => format!("{:04}", self.year),
                TimePart::Month => format!("{:02}", self.month),
                TimePart::Day => format!("{:02}", self.day),
                TimePart::Hour => format!("{:02}", self.hour),
                TimePart::Minute => format!("{:02}", self.minute),
                TimePart::Second => format!("{:02}", self.second),
            };
            out.push_str(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn fields(control_id: &str) -> FileNameFields<'_> {
        FileNameFields {
            id: 42,
            control_id,
            listener: "lab",
            message_type: "ADT^A01",
            // 2026-11-04 15:30:07 UTC
            received_at: UNIX_EPOCH + Duration::from_secs(1_793_806_207),
        }
    }

    #[test]
    fn the_default_template_renders_a_dated_directory_and_a_padded_id() {
        let name = FileName::parse(crate::config::DEFAULT_FILE_NAME).unwrap();
        assert_eq!(name.render(&fields("MSG-1")), ["20261104", "000000000042-MSG-1.hl7"]);
    }

    #[test]
    fn every_placeholder() {
        let name = FileName::parse(
            "{listener}/{type}/{received}/{received:%Y-%m-%d %H.%M.%S %%}/{id}-{{x}}-{id:03}-{control_id}",
        )
        .unwrap();
        assert_eq!(
            name.render(&fields("a/b\\c d")),
            ["lab", "ADT_A01", "20261104T153007", "2026-11-04 15.30.07 %", "42-{x}-042-a_b_c_d"]
        );
    }

    #[test]
    fn values_are_made_safe() {
        let name = FileName::parse("{id}-{control_id}").unwrap();
        assert_eq!(name.render(&fields(".."))[0], "42-_.");
        assert_eq!(name.render(&fields(""))[0], "42-_");
        assert_eq!(name.render(&fields("é/\0"))[0], "42-___");
        let long = "x".repeat(300);
        assert_eq!(name.render(&fields(&long))[0].len(), 3 + MAX_VALUE_LEN);
        let name = FileName::parse("{control_id}{id}").unwrap();
        assert_eq!(name.render(&fields(".hidden"))[0], "_hidden42", "never a hidden file");
    }

    #[test]
    fn bad_templates_say_why() {
        for (text, expected) in [
            ("", "must not be empty"),
            ("/abs/{id}", "relative"),
            ("{control_id}.hl7", "must contain {id}"),
            ("a//{id}", "empty path component"),
            ("{id}/", "empty path component"),
            ("../{id}", "starts with '.'"),
            ("./{id}", "starts with '.'"),
            (".{id}", "starts with '.'"),
            ("{id", "not closed"),
            ("{id}}", "without its '{'"),
            ("{nope}-{id}", "unknown placeholder {nope}"),
            ("{id:12}", "expected {id:0N}"),
            ("{id:099}", "width must be 1 to 20"),
            ("{received:%Y/%m}/{id}", "not allowed in the format"),
            ("{received:%s}/{id}", "%s is not supported"),
            ("{received:%}/{id}", "% is not supported"),
            ("a\\b{id}", "NUL or '\\'"),
        ] {
            let error = FileName::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        assert!(FileName::parse(&format!("{}{{id}}", "x".repeat(200))).is_err());
    }

    #[test]
    fn civil_dates_around_the_epoch_and_leap_days() {
        let render = |seconds: i64| {
            let time = if seconds >= 0 {
                UNIX_EPOCH + Duration::from_secs(seconds as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs((-seconds) as u64)
            };
            let mut out = String::new();
            Civil::from(time).format(&parse_time_format("%Y-%m-%d %H:%M:%S").unwrap(), &mut out);
            out
        };
        assert_eq!(render(0), "1970-01-01 00:00:00");
        assert_eq!(render(-1), "1969-12-31 23:59:59");
        assert_eq!(render(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(render(4_107_542_399), "2100-02-28 23:59:59");
    }
}
