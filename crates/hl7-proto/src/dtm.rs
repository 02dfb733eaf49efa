//! HL7 v2 date/time values (data type DTM, and component 1 of the older TS):
//! `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.
//!
//! Owns reading such a value into numbers and turning it into microseconds since the Unix
//! epoch. It never guesses a time zone: a value with an offset (`+0100`, `-0500`) has a UTC
//! instant ([`Dtm::utc_micros`]); one without has only the wall-clock time the sender wrote
//! ([`Dtm::wall_micros`]), since HL7 says it is in the sender's local zone, which the message
//! does not name. What to do with such a value (store it apart, or interpret it in a
//! configured zone) is the caller's decision, not this module's.

/// How much of a [`Dtm`] was given; the parts after it read as their start (month 1, day 1,
/// 00:00:00.000000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `YYYY`.
    Year,
    /// `YYYYMM`.
    Month,
    /// `YYYYMMDD`.
    Day,
    /// `YYYYMMDDHH`.
    Hour,
    /// `YYYYMMDDHHMM`.
    Minute,
    /// `YYYYMMDDHHMMSS`.
    Second,
    /// `YYYYMMDDHHMMSS.S` to `.SSSSSS`.
    Fraction,
}

/// A date/time as written in an HL7 DTM value: the sender's wall-clock time and, when given,
/// its offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dtm {
    /// 0–9999.
    pub year: u16,
    /// 1–12.
    pub month: u8,
    /// 1 to the last day of the month (leap years per the Gregorian calendar).
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59 (HL7 has no leap second).
    pub second: u8,
    /// 0–999 999: the fraction after the seconds, in microseconds.
    pub micros: u32,
    /// How much was given.
    pub precision: Precision,
    /// `+/-ZZZZ` in minutes east of UTC (`-0500` is −300); `None` when the value has none.
    pub offset_minutes: Option<i16>,
}

/// Most fraction digits read. HL7 allows four; some senders write six (microseconds), which
/// is still unambiguous, so up to six are accepted.
const MAX_FRACTION_DIGITS: usize = 6;

impl Dtm {
    /// Parses a DTM value. `None` for anything that does not match the form above: empty,
    /// an odd number of digits after the year, a `.` before the seconds, more than six
    /// fraction digits, a field out of range (month 13, 30 February, hour 24, minute 60,
    /// second 60), an offset that is not a sign and four digits `HHMM` with HH ≤ 23 and
    /// MM ≤ 59, or anything after it. Surrounding spaces are not accepted either.
    ///
    /// Examples: `2026` (year precision), `20261104153000` (second, no offset),
    /// `20261104153000.1234-0500` (fraction, UTC−5), `202611+0100` (month, UTC+1).
    pub fn parse(raw: &[u8]) -> Option<Dtm> {
        let (body, offset_minutes) = match raw.iter().position(|&b| b == b'+' || b == b'-') {
            Some(at) => (&raw[..at], Some(parse_offset(&raw[at..])?)),
            None => (raw, None),
        };
        let (digits, fraction) = match body.iter().position(|&b| b == b'.') {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = digits.get(range)?;
            part.iter().try_fold(0u32, |n, &b| b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0')))
        };
        if fraction.is_some() && digits.len() != 14 {
            return None;
        }
        let precision = match digits.len() {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 => Precision::Hour,
            12 => Precision::Minute,
            14 if fraction.is_some() => Precision::Fraction,
            14 => Precision::Second,
            _ => return None,
        };
        let year = number(0..4)?;
        let month = if digits.len() >= 6 { number(4..6)? } else { 1 };
        let day = if digits.len() >= 8 { number(6..8)? } else { 1 };
        let hour = if digits.len() >= 10 { number(8..10)? } else { 0 };
        let minute = if digits.len() >= 12 { number(10..12)? } else { 0 };
        let second = if digits.len() >= 14 { number(12..14)? } else { 0 };
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let micros = match fraction {
            None => 0,
            Some(f) if f.is_empty() || f.len() > MAX_FRACTION_DIGITS || !f.iter().all(u8::is_ascii_digit) => {
                return None
            }
            Some(f) => {
                let value = f.iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'));
                value * 10u32.pow((MAX_FRACTION_DIGITS - f.len()) as u32)
            }
        };
        // Every value was range-checked above, so the narrowing casts cannot truncate.
        Some(Dtm {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            micros,
            precision,
            offset_minutes,
        })
    }

    /// The wall-clock time as written, counted as if it were UTC: microseconds from
    /// 1970-01-01T00:00:00 to it on the same calendar (negative before 1970). For a value
    /// with an offset this is the sender's local time, not the instant; see
    /// [`Dtm::utc_micros`].
    pub fn wall_micros(&self) -> i64 {
        let days = days_from_civil(i64::from(self.year), u32::from(self.month), u32::from(self.day));
        let seconds = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        seconds * 1_000_000 + i64::from(self.micros)
    }

    /// The instant in microseconds since the Unix epoch (UTC), when the value carries an
    /// offset: the wall time minus the offset (`20261104153000-0500` is 20:30:00 UTC).
    /// `None` without an offset: the zone is unknown.
    pub fn utc_micros(&self) -> Option<i64> {
        let offset = i64::from(self.offset_minutes?);
        Some(self.wall_micros() - offset * 60 * 1_000_000)
    }
}

/// `+HHMM` / `-HHMM` to minutes east of UTC.
fn parse_offset(raw: &[u8]) -> Option<i16> {
    let [sign, h1, h2, m1, m2] = raw else { return None };
    let digit = |b: u8| b.is_ascii_digit().then(|| i16::from(b - b'0'));
    let hours = digit(*h1)? * 10 + digit(*h2)?;
    let minutes = digit(*m1)? * 10 + digit(*m2)?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let total = hours * 60 + minutes;
    match sign {
        b'+' => Some(total),
        b'-' => Some(-total),
        _ => None,
    }
}

fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::hl7_timestamp;

    fn parse(text: &str) -> Option<Dtm> {
        Dtm::parse(text.as_bytes())
    }

    const SECOND: i64 = 1_000_000;

    #[test]
    fn every_precision() {
        let cases = [
            ("2026", Precision::Year, (2026, 1, 1, 0, 0, 0, 0)),
            ("202611", Precision::Month, (2026, 11, 1, 0, 0, 0, 0)),
            ("20261104", Precision::Day, (2026, 11, 4, 0, 0, 0, 0)),
            ("2026110415", Precision::Hour, (2026, 11, 4, 15, 0, 0, 0)),
            ("202611041530", Precision::Minute, (2026, 11, 4, 15, 30, 0, 0)),
            ("20261104153059", Precision::Second, (2026, 11, 4, 15, 30, 59, 0)),
            ("20261104153059.1", Precision::Fraction, (2026, 11, 4, 15, 30, 59, 100_000)),
            ("20261104153059.1234", Precision::Fraction, (2026, 11, 4, 15, 30, 59, 123_400)),
            ("20261104153059.123456", Precision::Fraction, (2026, 11, 4, 15, 30, 59, 123_456)),
        ];
        for (text, precision, (y, mo, d, h, mi, s, us)) in cases {
            let t = parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(t.precision, precision, "{text}");
            assert_eq!(
                (t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros),
                (y, mo, d, h, mi, s, us)
            );
            assert_eq!(t.offset_minutes, None, "{text}");
            assert_eq!(t.utc_micros(), None, "{text}: no offset, no instant");
        }
    }

    #[test]
    fn offsets_give_the_instant() {
        // 2026-11-04T15:30:00 = 1_793_806_200 s after the epoch when read as UTC.
        let wall = 1_793_806_200 * SECOND;
        let t = parse("20261104153000").unwrap();
        assert_eq!(t.wall_micros(), wall);
        let cases = [
            ("+0000", 0),
            ("-0000", 0),
            ("+0100", -3600),
            ("-0500", 5 * 3600),
            ("+0530", -(5 * 3600 + 1800)),
        ];
        for (offset, shift) in cases {
            let t = parse(&format!("20261104153000{offset}")).unwrap();
            assert_eq!(t.wall_micros(), wall, "{offset}: the wall time is as written");
            assert_eq!(t.utc_micros(), Some(wall + shift * SECOND), "{offset}");
        }
        let t = parse("202611+0100").unwrap();
        assert_eq!((t.precision, t.offset_minutes), (Precision::Month, Some(60)));
        let t = parse("20261104153000.25-0330").unwrap();
        assert_eq!((t.micros, t.offset_minutes), (250_000, Some(-210)));
        assert_eq!(t.utc_micros(), Some(wall + 250_000 + (3 * 3600 + 1800) * SECOND));
    }

    #[test]
    fn malformed_values_are_none() {
        for text in [
            "",
            "20",
            "202",
            "20261",
            "2026110415305",
            "202611041530591",
            "2026-11-04",
            "2026110415:30",
            " 20261104",
            "20261104 ",
            "20261304",
            "20260001",
            "20261100",
            "20260229",
            "20261131",
            "2026110424",
            "202611041560",
            "20261104153060",
            "20261104153000.",
            "20261104153000.1234567",
            "20261104153000.12a",
            "202611041530.5",
            "20261104.5",
            "20261104153000+",
            "20261104153000+01",
            "20261104153000+01000",
            "20261104153000+2400",
            "20261104153000+0160",
            "20261104153000*0100",
            "20261104153000+01:00",
            "20261104153000+0100Z",
            "+0100",
            "20261104153000-0500-0500",
            "２０２６",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn leap_years() {
        assert!(parse("20240229").is_some());
        assert!(parse("20000229").is_some());
        assert!(parse("19000229").is_none());
        assert!(parse("20260229").is_none());
    }

    #[test]
    fn extremes() {
        assert_eq!(parse("1970").unwrap().wall_micros(), 0);
        assert_eq!(parse("19691231235959").unwrap().wall_micros(), -SECOND);
        assert_eq!(parse("0000").unwrap().wall_micros(), -62_167_219_200 * SECOND);
        assert_eq!(
            parse("99991231235959.999999-2359").unwrap().utc_micros(),
            Some((253_402_300_799 + 86_340) * SECOND + 999_999)
        );
    }

    proptest::proptest! {
        /// `ack::hl7_timestamp` writes UTC times with `+0000`; reading them back gives the
        /// same instant, for every second of years 0000 to 9999.
        #[test]
        fn reads_back_what_the_ack_builder_writes(seconds in -62_167_219_200i64..253_402_300_800) {
            let text = hl7_timestamp(seconds);
            let t = Dtm::parse(text.as_bytes()).unwrap();
            proptest::prop_assert_eq!(t.utc_micros(), Some(seconds * SECOND));
            proptest::prop_assert_eq!(t.wall_micros(), seconds * SECOND);
        }

        #[test]
        fn never_panics(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            if let Some(t) = Dtm::parse(&raw) {
                let _ = t.utc_micros();
                proptest::prop_assert!(t.micros < 1_000_000);
            }
        }

        #[test]
        fn never_panics_on_digits(raw in "[0-9]{0,16}(\\.[0-9]{0,8})?([+-][0-9]{0,6})?") {
            let _ = Dtm::parse(raw.as_bytes()).map(|t| (t.wall_micros(), t.utc_micros()));
        }
    }
}
