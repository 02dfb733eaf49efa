//! Values as written in the config file: durations (`"30s"`) and sizes (`"1MiB"`). Each
//! parser returns a lower-case reason on failure; which key it was and which values are
//! allowed is the caller's. Hex bytes (`"1C 0D"`) are read by `hl7_proto::hex`, which
//! `hl7d send` shares.

use std::time::Duration;

pub(crate) const KIB: usize = 1024;
pub(crate) const MIB: usize = 1024 * 1024;
pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(crate) const MINUTE: Duration = Duration::from_secs(60);
pub(crate) const HOUR: Duration = Duration::from_secs(60 * 60);
pub(crate) const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A humantime duration (`"30s"`, `"10m"`, `"2h"`, `"1d"`); the error names the text and
/// shows the accepted forms.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| {
        format!("invalid duration {text:?} ({error}): use e.g. \"30s\", \"10m\", \"2h\", \"1d\"")
    })
}

/// `"65536"`, `"64KiB"`, `"1MiB"`, `"1MB"`, `"1 MiB"` → bytes. Units are case-insensitive:
/// `B`, `KB` (1000), `KiB` (1024), `MB`, `MiB`, `GB`, `GiB`. Whole numbers only.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("expected a whole number with an optional unit, e.g. \"1MiB\"".to_owned());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1024,
        "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("unknown unit {:?}: use B, KB, KiB, MB, MiB, GB or GiB", unit.trim())),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .ok_or_else(|| "too large".to_owned())
}

/// `1048576` → `"1MiB"`, `1500` → `"1500 bytes"`.
pub(crate) fn format_size(bytes: u64) -> String {
    const KIB64: u64 = KIB as u64;
    const MIB64: u64 = MIB as u64;
    if bytes >= MIB64 && bytes % MIB64 == 0 {
        format!("{}MiB", bytes / MIB64)
    } else if bytes >= KIB64 && bytes % KIB64 == 0 {
        format!("{}KiB", bytes / KIB64)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_strings() {
        for (text, expected) in [
            ("65536", 65536),
            ("1MiB", 1 << 20),
            ("1mib", 1 << 20),
            ("512KiB", 512 * 1024),
            ("1MB", 1_000_000),
            ("64 KB", 64_000),
            ("2048B", 2048),
            ("1GiB", 1 << 30),
        ] {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
        for text in ["", "MiB", "1.5MiB", "1 TB", "-1", "1K", "99999999999999999999"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(2048), "2KiB");
        assert_eq!(format_size(1500), "1500 bytes");
    }

    #[test]
    fn durations_name_the_text() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Ok(DAY));
        let error = parse_duration("soon").unwrap_err();
        assert!(error.starts_with("invalid duration \"soon\" ("), "{error}");
        assert!(error.ends_with("use e.g. \"30s\", \"10m\", \"2h\", \"1d\""), "{error}");
    }
}
