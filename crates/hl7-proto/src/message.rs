//! Zero-copy view over one HL7 v2 message.
//!
//! Owns delimiter discovery (MSH-1 and MSH-2), segment splitting and field, repetition,
//! component and subcomponent access. Nothing here allocates except [`Value::unescape`] when
//! the value actually holds escape sequences. It never decodes characters: it splits raw
//! bytes, and text is decoded later by the charset module. That is exact for every
//! ASCII-compatible character set (UTF-8, ASCII, the 8859 family, Windows-1252). In Big5,
//! GB 18030, KS X 1001 and ISO-2022-JP a delimiter byte can be the second half of a
//! character; hl7d still reads the MSH on raw bytes (its routing fields are ASCII in practice)
//! and stores the raw bytes untouched, but field access deeper into such a message must
//! decode first (see `Charset::is_ascii_compatible`).

use std::borrow::Cow;

use crate::error::ParseError;
use crate::hex;

/// Segment terminator (HL7 v2 section 2.5.3: a carriage return).
pub const SEGMENT_TERMINATOR: u8 = 0x0D;

/// The delimiters of one message, read from MSH-1 (field separator) and MSH-2 (encoding
/// characters: component, repetition, escape, subcomponent and, from v2.7, truncation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// MSH-1, usually `|`.
    pub field: u8,
    /// MSH-2.1, usually `^`.
    pub component: u8,
    /// MSH-2.2, usually `~`.
    pub repetition: u8,
    /// MSH-2.3, usually `\`; absent when MSH-2 holds only two characters.
    pub escape: Option<u8>,
    /// MSH-2.4, usually `&`; absent when MSH-2 holds fewer than four characters.
    pub subcomponent: Option<u8>,
    /// MSH-2.5, v2.7+ truncation character, usually `#`.
    pub truncation: Option<u8>,
}

impl Delimiters {
    /// The recommended delimiters `|^~\&`.
    pub const DEFAULT: Delimiters = Delimiters {
        field: b'|',
        component: b'^',
        repetition: b'~',
        escape: Some(b'\\'),
        subcomponent: Some(b'&'),
        truncation: None,
    };

    /// Reads MSH-1 and MSH-2 from the start of an MSH segment.
    ///
    /// MSH-1 is the byte right after `MSH`; MSH-2 runs from there to the next field separator
    /// (or the end of the segment) and must hold 2 to 5 distinct characters.
    pub fn from_msh(segment: &[u8]) -> Result<Delimiters, ParseError> {
        if segment.len() < 4 || !segment.starts_with(b"MSH") {
            return Err(ParseError::MshTooShort);
        }
        Self::from_header(segment)
    }

    /// Like [`Delimiters::from_msh`] for any header segment that declares delimiters the
    /// same way (MSH, FHS, BHS).
    pub fn from_header(segment: &[u8]) -> Result<Delimiters, ParseError> {
        let Some(&field) = segment.get(3) else {
            return Err(ParseError::MshTooShort);
        };
        check_delimiter(field)?;
        let rest = &segment[4..];
        let end = rest.iter().position(|&b| b == field || b == b'\r' || b == b'\n').unwrap_or(rest.len());
        let chars = &rest[..end];
        if chars.len() < 2 {
            return Err(ParseError::BadDelimiters {
                reason: "MSH-2 holds fewer than two encoding characters",
            });
        }
        if chars.len() > 5 {
            return Err(ParseError::BadDelimiters {
                reason: "MSH-2 holds more than five encoding characters",
            });
        }
        for (i, &c) in chars.iter().enumerate() {
            check_delimiter(c)?;
            if c == field || chars[..i].contains(&c) {
                return Err(ParseError::BadDelimiters { reason: "delimiters must be distinct" });
            }
        }
        Ok(Delimiters {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars.get(2).copied(),
            subcomponent: chars.get(3).copied(),
            truncation: chars.get(4).copied(),
        })
    }

    /// MSH-2 as it would be written back (the encoding characters in order), without
    /// allocating: the first `len` bytes of the array.
    pub fn encoding_characters(&self) -> ([u8; 5], usize) {
        let mut out = [self.component, self.repetition, 0, 0, 0];
        let mut len = 2;
        for c in [self.escape, self.subcomponent, self.truncation].into_iter().flatten() {
            out[len] = c;
            len += 1;
        }
        (out, len)
    }

    /// Escapes `text` so that it can be placed in a field: delimiters become `\F\ \S\ \T\
    /// \R\ \E\` (with this message's escape character). Without an escape character the
    /// delimiters are replaced by spaces, since they cannot be represented.
    pub fn escape<'t>(&self, text: &'t [u8]) -> Cow<'t, [u8]> {
        let special = |b: u8| {
            b == self.field
                || b == self.component
                || b == self.repetition
                || Some(b) == self.escape
                || Some(b) == self.subcomponent
                || b == b'\r'
                || b == b'\n'
        };
        if !text.iter().any(|&b| special(b)) {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len() + 8);
        for &b in text {
            if !special(b) {
                out.push(b);
                continue;
            }
            let Some(esc) = self.escape else {
                out.push(b' ');
                continue;
            };
            let code: &[u8] = if b == self.field {
                b"F"
            } else if b == self.component {
                b"S"
            } else if b == self.repetition {
                b"R"
            } else if Some(b) == self.escape {
                b"E"
            } else if Some(b) == self.subcomponent {
                b"T"
            } else if b == b'\r' {
                b"X0D"
            } else {
                b"X0A"
            };
            out.push(esc);
            out.extend_from_slice(code);
            out.push(esc);
        }
        Cow::Owned(out)
    }
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters::DEFAULT
    }
}

fn check_delimiter(b: u8) -> Result<(), ParseError> {
    if b.is_ascii_alphanumeric() || b == b' ' || !b.is_ascii_graphic() {
        return Err(ParseError::BadDelimiters { reason: "delimiters must be printable ASCII punctuation" });
    }
    Ok(())
}

/// One HL7 v2 message: the raw bytes and the delimiters its MSH declares.
///
/// Built with [`Message::parse`], which checks only that the first segment is an MSH with
/// usable delimiters; the typed header is [`crate::msh::Msh`].
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
}

impl<'a> Message<'a> {
    /// Parses the framing of a message: leading CR/LF are skipped (broken senders), the first
    /// segment must be MSH, and MSH-1/MSH-2 must define distinct delimiters.
    pub fn parse(raw: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let start = raw.iter().position(|&b| !is_line_end(b)).unwrap_or(raw.len());
        let raw = &raw[start..];
        if raw.is_empty() {
            return Err(ParseError::Empty);
        }
        if !raw.starts_with(b"MSH") {
            return Err(ParseError::NoMsh);
        }
        let delimiters = Delimiters::from_msh(raw)?;
        Ok(Message { raw, delimiters })
    }

    /// The message bytes (from `MSH` on).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The delimiters declared in MSH-1/MSH-2.
    pub fn delimiters(&self) -> Delimiters {
        self.delimiters
    }

    /// All segments, in order. `\r` is the terminator; `\n` and `\r\n` are accepted too, and
    /// empty lines are skipped.
    pub fn segments(&self) -> Segments<'a> {
        Segments { rest: self.raw, delimiters: self.delimiters }
    }

    /// The first segment with this id (e.g. `"PID"`).
    pub fn segment(&self, id: &str) -> Option<Segment<'a>> {
        self.segments().find(|s| s.id() == id.as_bytes())
    }

    /// The MSH segment (always the first).
    pub fn msh(&self) -> Segment<'a> {
        // `parse` checked that the message starts with "MSH", so there is a first segment.
        self.segments().next().expect("a parsed message starts with MSH")
    }
}

fn is_line_end(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// Iterator over the segments of a message.
#[derive(Debug, Clone)]
pub struct Segments<'a> {
    rest: &'a [u8],
    delimiters: Delimiters,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            // memchr2 scans a word (or SIMD block) at a time; segments are tens to
            // hundreds of bytes, so this is where parsing spends its time.
            let end = memchr::memchr2(b'\r', b'\n', self.rest).unwrap_or(self.rest.len());
            let raw = &self.rest[..end];
            let skip = self.rest[end..].iter().take_while(|&&b| is_line_end(b)).count();
            self.rest = &self.rest[end + skip..];
            if !raw.is_empty() {
                return Some(Segment { raw, delimiters: self.delimiters });
            }
        }
    }
}

/// One segment, without its terminator.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    /// The raw bytes of the segment.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The segment id, e.g. `b"PID"` (the bytes before the first field separator).
    pub fn id(&self) -> &'a [u8] {
        let end = self.raw.iter().position(|&b| b == self.delimiters.field).unwrap_or(self.raw.len());
        &self.raw[..end]
    }

    fn is_header(&self) -> bool {
        matches!(self.id(), b"MSH" | b"FHS" | b"BHS")
    }

    /// Field `n` (1-based, as in `PID-5`); empty when absent.
    ///
    /// In MSH (and FHS/BHS) field 1 is the field separator itself and field 2 the encoding
    /// characters, which are returned whole and never split further.
    pub fn field(&self, n: usize) -> Value<'a> {
        let empty = Value { raw: &[], delimiters: self.delimiters, level: Level::Field };
        if n == 0 {
            return empty;
        }
        let (index, literal) = if self.is_header() {
            match n {
                // MSH-1 is the separator byte right after the segment id. A bare `MSH`,
                // `FHS` or `BHS` line (possible after the first segment) has none.
                1 => {
                    return Value {
                        raw: self.raw.get(3..4).unwrap_or(&[]),
                        delimiters: self.delimiters,
                        level: Level::Literal,
                    };
                }
                2 => (1, true),
                _ => (n - 1, false),
            }
        } else {
            (n, false)
        };
        match self.raw.split(|&b| b == self.delimiters.field).nth(index) {
            Some(raw) => Value {
                raw,
                delimiters: self.delimiters,
                level: if literal { Level::Literal } else { Level::Field },
            },
            None => empty,
        }
    }

    /// Fields `0..N` of a header segment (MSH, FHS, BHS) in one pass, indexed by field
    /// number as [`Segment::field`] numbers them (index 0 is unused). Building the typed MSH
    /// with `field(n)` twelve times rescanned the segment each time; this is the hot path.
    pub(crate) fn header_fields<const N: usize>(&self) -> [Value<'a>; N] {
        let empty = Value { raw: &[], delimiters: self.delimiters, level: Level::Field };
        let mut out = [empty; N];
        if N > 1 && self.raw.len() > 3 {
            out[1] = Value { raw: &self.raw[3..4], delimiters: self.delimiters, level: Level::Literal };
        }
        // Part 0 is the segment id, part 1 is MSH-2, part i is MSH-(i+1).
        for (i, raw) in self.raw.split(|&b| b == self.delimiters.field).enumerate().skip(1) {
            let n = i + 1;
            if n >= N {
                break;
            }
            let level = if n == 2 { Level::Literal } else { Level::Field };
            out[n] = Value { raw, delimiters: self.delimiters, level };
        }
        out
    }

    /// The number of fields present (the segment id not counted).
    pub fn field_count(&self) -> usize {
        let separators = self.raw.iter().filter(|&&b| b == self.delimiters.field).count();
        if self.is_header() {
            separators + 1
        } else {
            separators
        }
    }
}

/// How far a [`Value`] has been split already; decides which separator the next split uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Field,
    Repetition,
    Component,
    Subcomponent,
    /// MSH-1 and MSH-2: never split.
    Literal,
}

/// A field, repetition, component or subcomponent: raw bytes, still escaped.
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    raw: &'a [u8],
    delimiters: Delimiters,
    level: Level,
}

impl<'a> Value<'a> {
    /// A whole field of a segment, from its raw bytes (e.g. one the MSH view kept).
    pub(crate) fn field(raw: &'a [u8], delimiters: Delimiters) -> Value<'a> {
        Value { raw, delimiters, level: Level::Field }
    }

    /// The raw (still escaped) bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// True when the value is empty (HL7 "not present").
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Repetition `n` (1-based) of a field. On a value that is already a repetition or
    /// smaller, repetition 1 is the value itself.
    pub fn repetition(&self, n: usize) -> Value<'a> {
        match self.level {
            Level::Field => self.split(self.delimiters.repetition, n, Level::Repetition),
            _ => self.only_first(n),
        }
    }

    /// Component `n` (1-based). On a field this is a component of its first repetition.
    pub fn component(&self, n: usize) -> Value<'a> {
        match self.level {
            Level::Field => self.repetition(1).component(n),
            Level::Repetition => self.split(self.delimiters.component, n, Level::Component),
            _ => self.only_first(n),
        }
    }

    /// Subcomponent `n` (1-based). On a field or repetition this is a subcomponent of its
    /// first component.
    pub fn subcomponent(&self, n: usize) -> Value<'a> {
        match self.level {
            Level::Field | Level::Repetition => self.component(1).subcomponent(n),
            Level::Component => match self.delimiters.subcomponent {
                Some(sep) => self.split(sep, n, Level::Subcomponent),
                None => self.only_first(n),
            },
            _ => self.only_first(n),
        }
    }

    /// All repetitions of a field.
    pub fn repetitions(&self) -> impl Iterator<Item = Value<'a>> + 'a {
        let me = *self;
        let sep = if self.level == Level::Field { Some(self.delimiters.repetition) } else { None };
        let parts: Box<dyn Iterator<Item = &'a [u8]> + 'a> = match sep {
            Some(sep) => Box::new(me.raw.split(move |&b| b == sep)),
            None => Box::new(std::iter::once(me.raw)),
        };
        parts.map(move |raw| Value { raw, delimiters: me.delimiters, level: Level::Repetition })
    }

    fn split(&self, sep: u8, n: usize, level: Level) -> Value<'a> {
        let raw = if n == 0 { None } else { self.raw.split(|&b| b == sep).nth(n - 1) };
        Value { raw: raw.unwrap_or(&[]), delimiters: self.delimiters, level }
    }

    fn only_first(&self, n: usize) -> Value<'a> {
        let raw = if n == 1 { self.raw } else { &[] };
        Value { raw, delimiters: self.delimiters, level: self.level }
    }

    /// The value with escape sequences resolved (HL7 v2 section 2.7): `\F\ \S\ \T\ \R\ \E\`
    /// become the delimiters, `\Xhh…\` the bytes given in hex. Formatting and character-set
    /// escapes (`\H\ \N\ \.br\ \Cxxyy\ \Mxxyyzz\ \Z…\`) and anything malformed are passed
    /// through unchanged. Borrows when there is nothing to unescape.
    pub fn unescape(&self) -> Cow<'a, [u8]> {
        unescape(self.raw, &self.delimiters)
    }

    /// The raw bytes as UTF-8 text, when they are valid UTF-8 (IDs and codes usually are).
    pub fn as_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.raw).ok()
    }
}

impl PartialEq<[u8]> for Value<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        self.raw == other
    }
}

impl PartialEq<&str> for Value<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.raw == other.as_bytes()
    }
}

/// Resolves escape sequences in `raw` (see [`Value::unescape`]).
pub fn unescape<'a>(raw: &'a [u8], delimiters: &Delimiters) -> Cow<'a, [u8]> {
    let Some(esc) = delimiters.escape else {
        return Cow::Borrowed(raw);
    };
    if !raw.contains(&esc) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != esc {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(len) = raw[i + 1..].iter().position(|&c| c == esc) else {
            // Unterminated escape: keep the rest literally.
            out.extend_from_slice(&raw[i..]);
            break;
        };
        let body = &raw[i + 1..i + 1 + len];
        let whole = &raw[i..i + len + 2];
        match body {
            b"F" => out.push(delimiters.field),
            b"S" => out.push(delimiters.component),
            b"R" => out.push(delimiters.repetition),
            b"E" => out.push(esc),
            b"T" => match delimiters.subcomponent {
                Some(sub) => out.push(sub),
                None => out.extend_from_slice(whole),
            },
            [b'X', digits @ ..] if !digits.is_empty() => match hex::decode(digits) {
                Some(bytes) => out.extend(bytes),
                None => out.extend_from_slice(whole),
            },
            _ => out.extend_from_slice(whole),
        }
        i += len + 2;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = include_bytes!("../tests/fixtures/adt_a01_v25.hl7");

    /// Found by the `message` fuzz target: `field(1)` sliced past the end of a bare `MSH`
    /// segment after the first one and panicked.
    #[test]
    fn bare_header_segment_after_the_first_has_empty_fields() {
        let raw = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5\rMSH\rBHS\r";
        let m = Message::parse(raw).unwrap();
        for segment in m.segments().skip(1) {
            assert_eq!(segment.field_count(), 1);
            for n in 0..4 {
                assert!(segment.field(n).is_empty(), "{:?} field {n}", segment.id());
            }
        }
    }

    #[test]
    fn default_delimiters_and_fields() {
        let m = Message::parse(ADT).unwrap();
        assert_eq!(m.delimiters(), Delimiters::DEFAULT);
        let msh = m.msh();
        assert_eq!(msh.field(1), "|");
        assert_eq!(msh.field(2), "^~\\&");
        assert_eq!(msh.field(3), "REGADT");
        assert_eq!(msh.field(9).component(1), "ADT");
        assert_eq!(msh.field(9).component(2), "A01");
        assert_eq!(msh.field(10), "MSG00001");
        assert_eq!(msh.field(99), "");
        let pid = m.segment("PID").unwrap();
        assert_eq!(pid.field(3).repetition(2).component(1), "123-45-6789");
        assert_eq!(pid.field(5).component(2), "WILLIAM");
        assert!(m.segment("ZZZ").is_none());
    }

    #[test]
    fn msh2_is_never_split() {
        let m = Message::parse(ADT).unwrap();
        let msh2 = m.msh().field(2);
        assert_eq!(msh2.component(1), "^~\\&");
        assert_eq!(msh2.repetition(1), "^~\\&");
    }

    #[test]
    fn five_encoding_characters() {
        let m = Message::parse(include_bytes!("../tests/fixtures/v27_truncation_char.hl7")).unwrap();
        assert_eq!(m.delimiters().truncation, Some(b'#'));
        assert_eq!(m.msh().field(10), "V27-0001");
    }

    #[test]
    fn custom_delimiters() {
        let m = Message::parse(include_bytes!("../tests/fixtures/custom_delimiters.hl7")).unwrap();
        let d = m.delimiters();
        assert_eq!((d.field, d.component, d.repetition), (b'$', b'%', b'*'));
        assert_eq!((d.escape, d.subcomponent), (Some(b'!'), Some(b'@')));
        assert_eq!(m.msh().field(10), "CUSTOM-DELIM-1");
        assert_eq!(m.msh().field(9).component(2), "A01");
        assert_eq!(m.segment("PID").unwrap().field(5).component(1), "DOE");
    }

    #[test]
    fn lenient_line_ends() {
        for fixture in [
            &include_bytes!("../tests/fixtures/lf_segment_terminators.hl7")[..],
            &include_bytes!("../tests/fixtures/crlf_segment_terminators.hl7")[..],
        ] {
            let m = Message::parse(fixture).unwrap();
            let ids: Vec<_> = m.segments().map(|s| s.id().to_vec()).collect();
            assert_eq!(ids[0], b"MSH");
            assert!(ids.iter().all(|id| !id.is_empty() && !id.contains(&b'\n')));
            assert_eq!(m.segment("PID").unwrap().field(1), "1");
        }
    }

    #[test]
    fn rejects_non_msh_and_bad_delimiters() {
        assert_eq!(Message::parse(b"").unwrap_err(), ParseError::Empty);
        assert_eq!(Message::parse(b"\r\n\r").unwrap_err(), ParseError::Empty);
        assert_eq!(
            Message::parse(include_bytes!("../tests/fixtures/invalid_no_msh_first.hl7")).unwrap_err(),
            ParseError::NoMsh
        );
        assert_eq!(
            Message::parse(include_bytes!("../tests/fixtures/invalid_not_hl7.txt")).unwrap_err(),
            ParseError::NoMsh
        );
        assert_eq!(Message::parse(b"MSH").unwrap_err(), ParseError::MshTooShort);
        assert!(matches!(Message::parse(b"MSH|^|A").unwrap_err(), ParseError::BadDelimiters { .. }));
        assert!(matches!(Message::parse(b"MSH|^^~\\&|A").unwrap_err(), ParseError::BadDelimiters { .. }));
        assert!(matches!(Message::parse(b"MSHA^~\\&|A").unwrap_err(), ParseError::BadDelimiters { .. }));
        assert!(matches!(Message::parse(b"MSH|^~\\&#*|").unwrap_err(), ParseError::BadDelimiters { .. }));
    }

    #[test]
    fn unescape_sequences() {
        let d = Delimiters::DEFAULT;
        let cases: &[(&[u8], &[u8])] = &[
            (b"plain", b"plain"),
            (b"A\\F\\B", b"A|B"),
            (b"\\S\\\\T\\\\R\\\\E\\", b"^&~\\"),
            (b"\\X0D0A\\", b"\r\n"),
            (b"line\\.br\\next", b"line\\.br\\next"),
            (b"\\H\\bold\\N\\", b"\\H\\bold\\N\\"),
            (b"bad\\Xzz\\", b"bad\\Xzz\\"),
            (b"open\\F", b"open\\F"),
        ];
        for (raw, want) in cases {
            assert_eq!(&*unescape(raw, &d), *want, "{}", String::from_utf8_lossy(raw));
        }
        assert!(matches!(unescape(b"plain", &d), Cow::Borrowed(_)));
    }

    #[test]
    fn unescape_uses_the_message_escape_character() {
        let m = Message::parse(b"MSH$%*!@$A\rNTE$1$$x!F!y!S!z\r").unwrap();
        assert_eq!(&*m.segment("NTE").unwrap().field(3).unescape(), b"x$y%z");
    }

    #[test]
    fn escape_round_trips() {
        let d = Delimiters::DEFAULT;
        let text = b"a|b^c~d\\e&f\rg";
        let escaped = d.escape(text);
        assert!(!escaped.iter().any(|&b| b == b'|' || b == b'\r'));
        assert_eq!(&*unescape(&escaped, &d), text);
    }

    #[test]
    fn escapes_in_fixture() {
        let m = Message::parse(include_bytes!("../tests/fixtures/oru_r01_v251_escapes.hl7")).unwrap();
        let obx: Vec<_> = m.segments().filter(|s| s.id() == b"OBX").collect();
        assert_eq!(
            &*obx[2].field(5).unescape(),
            &b"Specimen slightly hemolyzed & recollect if K ^ 5.5 | see note \\ repeat~second"[..]
        );
        assert_eq!(&*obx[3].field(5).unescape(), &b"Line one\\.br\\Line two\r\\H\\bold\\N\\ text"[..]);
        // NTE-3 has two real repetitions; the escaped \R\ in OBX-5 is not one.
        assert_eq!(m.segment("NTE").unwrap().field(3).repetitions().count(), 2);
        assert_eq!(obx[2].field(5).repetitions().count(), 1);
    }

    proptest::proptest! {
        #[test]
        fn header_fields_agree_with_field(tail in "[A-Z0-9|^~&\\\\]{0,120}") {
            let raw = format!("MSH|^~\\&|{tail}\r");
            let m = Message::parse(raw.as_bytes()).unwrap();
            let seg = m.msh();
            let fields: [Value<'_>; 19] = seg.header_fields();
            for (n, field) in fields.iter().enumerate().skip(1) {
                proptest::prop_assert_eq!(field.raw(), seg.field(n).raw(), "MSH-{}", n);
            }
        }
    }

    #[test]
    fn header_field_count() {
        let m = Message::parse(b"MSH|^~\\&|A|B\r").unwrap();
        assert_eq!(m.msh().field_count(), 4);
        assert_eq!(m.msh().field(4), "B");
        assert_eq!(m.msh().field(5), "");
    }
}
