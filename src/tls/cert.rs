//! Certificate facts: thumbprints of a DER certificate and a readable summary of it.
//!
//! Pure functions over bytes: no files, no clock (the caller passes "now" where validity
//! matters), no logging. Used by the listener (client thumbprints, expiry warnings) and by
//! `hl7d cert`.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::public_key::PublicKey;

use super::thumbprint::Thumbprint;

/// Seconds in a day, for "days until expiry".
const DAY_SECS: i64 = 24 * 60 * 60;

/// SHA-256 and SHA-1 digests of one DER-encoded certificate: what a thumbprint approves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digests {
    /// SHA-256 of the DER bytes.
    pub sha256: [u8; 32],
    /// SHA-1 of the DER bytes (the "Thumbprint" field of the Windows certificate dialog).
    pub sha1: [u8; 20],
}

impl Digests {
    /// Digests of `der`, the certificate exactly as sent in the handshake.
    pub fn of(der: &[u8]) -> Digests {
        Digests { sha256: Sha256::digest(der).into(), sha1: Sha1::digest(der).into() }
    }

    /// The SHA-256 thumbprint (`sha256:<hex>`), the form logged and stored with messages.
    pub fn sha256(&self) -> Thumbprint {
        Thumbprint::Sha256(self.sha256)
    }

    /// The SHA-1 thumbprint.
    pub fn sha1(&self) -> Thumbprint {
        Thumbprint::Sha1(self.sha1)
    }

    /// Whether any thumbprint in `approved` names this certificate.
    pub fn approved_by(&self, approved: &[Thumbprint]) -> bool {
        approved.iter().any(|thumbprint| thumbprint.matches(&self.sha256, &self.sha1))
    }

    /// The SHA-1 thumbprint as the Windows certificate dialog shows it:
    /// `A9 4A 8F E5 …` (upper case, one space between bytes).
    pub fn sha1_windows(&self) -> String {
        spaced_hex(&self.sha1, ' ')
    }
}

/// Where a certificate stands relative to its validity period at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidityStatus {
    /// `now` is before notBefore.
    NotYetValid,
    /// notBefore ≤ `now` ≤ notAfter.
    Valid,
    /// `now` is after notAfter.
    Expired,
}

/// A certificate that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not a valid X.509 certificate: {detail}")]
pub struct CertParseError {
    /// What the parser said.
    pub detail: String,
}

/// What an operator wants to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject distinguished name, e.g. `CN=lab-sender, O=Hospital`.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// Subject alternative names (`DNS:…`, `IP:…`, `email:…`, `URI:…`).
    pub sans: Vec<String>,
    /// Public key type and size, e.g. `EC P-256`, `RSA 2048`, `Ed25519`.
    pub key: String,
    /// Signature algorithm, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// Basic constraints say this is a CA.
    pub is_ca: bool,
    /// Thumbprints.
    pub digests: Digests,
}

impl CertSummary {
    /// Parses one DER certificate. Trailing bytes after the certificate are an error.
    pub fn parse(der: &[u8]) -> Result<CertSummary, CertParseError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| CertParseError { detail: e.to_string() })?;
        if !rest.is_empty() {
            return Err(CertParseError { detail: format!("{} bytes after the certificate", rest.len()) });
        }
        let validity = cert.validity();
        Ok(CertSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            sans: sans(&cert),
            key: key_description(&cert),
            signature_algorithm: oid_name(&cert.signature_algorithm.algorithm),
            is_ca: cert.is_ca(),
            digests: Digests::of(der),
        })
    }

    /// The validity status at `now` (seconds since the Unix epoch).
    pub fn validity_at(&self, now: i64) -> ValidityStatus {
        if now < self.not_before {
            ValidityStatus::NotYetValid
        } else if now > self.not_after {
            ValidityStatus::Expired
        } else {
            ValidityStatus::Valid
        }
    }

    /// Whole days from `now` until notAfter; negative once expired.
    pub fn days_until_expiry(&self, now: i64) -> i64 {
        (self.not_after - now).div_euclid(DAY_SECS)
    }

    /// A short name for logs: the subject, or the issuer and serial when the subject is
    /// empty (as it may be for certificates that carry only SANs).
    pub fn display_name(&self) -> String {
        if self.subject.is_empty() {
            format!("(no subject; issuer {}, serial {})", self.issuer, self.serial)
        } else {
            self.subject.clone()
        }
    }
}

/// A client certificate that passed the approval check (`verifier::ClientPolicy::check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Subject distinguished name.
    pub subject: String,
    /// Thumbprints of the certificate.
    pub digests: Digests,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
}

/// What an expiry check says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryNotice {
    /// Past notAfter (logged as an error): peers refuse it.
    Expired(String),
    /// Before notBefore (logged as a warning): peers refuse it until then.
    NotYetValid(String),
    /// Expires within the warning threshold (logged as a warning).
    ExpiresSoon(String),
}

/// The one certificate-expiry policy, used when a listener loads or reloads its
/// certificate and by the daily check: a notice for a certificate (`kind` is e.g. "server"
/// or "approved client") that has expired, is not valid yet, or expires within
/// `warn_within` (`[log] cert_expiry_warning`) of `now`; `None` otherwise.
pub fn expiry_notice(
    kind: &str,
    subject: &str,
    (not_before, not_after): (i64, i64),
    now: i64,
    warn_within: Duration,
) -> Option<ExpiryNotice> {
    let left = not_after - now;
    let warn_within = i64::try_from(warn_within.as_secs()).unwrap_or(i64::MAX);
    if left < 0 {
        Some(ExpiryNotice::Expired(format!(
            "{kind} certificate {subject:?} expired {}: peers will refuse it",
            format_time(not_after)
        )))
    } else if now < not_before {
        Some(ExpiryNotice::NotYetValid(format!(
            "{kind} certificate {subject:?} is not valid before {}: peers will refuse it until then",
            format_time(not_before)
        )))
    } else if left <= warn_within {
        Some(ExpiryNotice::ExpiresSoon(format!(
            "{kind} certificate {subject:?} expires {} (in {} days): renew it",
            format_time(not_after),
            left.div_euclid(DAY_SECS)
        )))
    } else {
        None
    }
}

/// A Unix time as `2026-01-31 12:00:00 UTC`; out-of-range values are printed as seconds.
pub fn format_time(unix: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{unix} (seconds since 1970)"))
}

/// Upper-case hex with `separator` between bytes.
pub fn spaced_hex(bytes: &[u8], separator: char) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, byte) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(separator);
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02X}");
    }
    out
}

fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    extension.value.general_names.iter().map(GeneralNameText).map(|name| name.to_string()).collect()
}

struct GeneralNameText<'a, 'b>(&'a GeneralName<'b>);

impl fmt::Display for GeneralNameText<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            GeneralName::DNSName(name) => write!(f, "DNS:{name}"),
            GeneralName::RFC822Name(mail) => write!(f, "email:{mail}"),
            GeneralName::URI(uri) => write!(f, "URI:{uri}"),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => write!(f, "IP:{}", IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("length checked"))),
                16 => write!(f, "IP:{}", IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("length checked"))),
                _ => write!(f, "IP:(invalid, {} bytes)", bytes.len()),
            },
            GeneralName::DirectoryName(name) => write!(f, "DirName:{name}"),
            other => write!(f, "{other:?}"),
        }
    }
}

fn key_description(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        // id-Ed25519, id-Ed448 (RFC 8410)
        "1.3.101.112" => return "Ed25519".to_owned(),
        "1.3.101.113" => return "Ed448".to_owned(),
        _ => {}
    }
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => "EC P-256".to_owned(),
                "1.3.132.0.34" => "EC P-384".to_owned(),
                "1.3.132.0.35" => "EC P-521".to_owned(),
                "" => format!("EC ({} bits)", point.key_size()),
                other => format!("EC curve {other}"),
            }
        }
        Ok(PublicKey::DSA(_)) => "DSA".to_owned(),
        _ => format!("unknown ({})", oid_name(&spki.algorithm.algorithm)),
    }
}

fn oid_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    x509_parser::objects::oid_registry()
        .get(oid)
        .map(|entry| entry.sn().to_owned())
        .unwrap_or_else(|| oid.to_id_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(sans: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "unit test");
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(1_700_000_000 + 10 * DAY_SECS).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn digests_match_known_vectors() {
        // SHA-256("test") and SHA-1("test"): the thumbprints used in the config tests' examples.
        let digests = Digests::of(b"test");
        assert_eq!(
            digests.sha256().to_string(),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(digests.sha1_windows(), "A9 4A 8F E5 CC B1 9B A6 1C 4C 08 73 D3 91 E9 87 98 2F BB D3");
        let windows: Thumbprint = digests.sha1_windows().parse().unwrap();
        assert!(digests.approved_by(&[windows]));
        assert!(!Digests::of(b"other").approved_by(&[windows, digests.sha256()]));
    }

    #[test]
    fn summary_of_a_generated_certificate() {
        let der = self_signed(&["localhost", "127.0.0.1", "::1"]);
        let summary = CertSummary::parse(&der).unwrap();
        assert_eq!(summary.subject, "CN=unit test");
        assert_eq!(summary.issuer, "CN=unit test");
        assert_eq!(summary.sans, ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]);
        assert_eq!(summary.key, "EC P-256");
        assert_eq!(summary.signature_algorithm, "ecdsa-with-SHA256");
        assert!(!summary.is_ca);
        assert_eq!(summary.digests, Digests::of(&der));
        assert_eq!(summary.validity_at(1_699_999_999), ValidityStatus::NotYetValid);
        assert_eq!(summary.validity_at(1_700_000_000), ValidityStatus::Valid);
        assert_eq!(summary.validity_at(1_700_000_000 + 10 * DAY_SECS + 1), ValidityStatus::Expired);
        assert_eq!(summary.days_until_expiry(1_700_000_000), 10);
        assert_eq!(summary.days_until_expiry(1_700_000_000 + 11 * DAY_SECS), -1);
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(CertSummary::parse(b"not a certificate").is_err());
        let mut der = self_signed(&["localhost"]);
        der.push(0);
        assert!(CertSummary::parse(&der).unwrap_err().detail.contains("1 bytes after"));
    }

    const THIRTY_DAYS: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 60 * 60);

    #[test]
    fn expiry_notices_by_time_left() {
        let now = 1_700_000_000;
        let valid = |not_after| (now - DAY_SECS, not_after);
        assert_eq!(expiry_notice("server", "CN=s", valid(now + 31 * DAY_SECS), now, THIRTY_DAYS), None);
        let soon = expiry_notice("server", "CN=s", valid(now + 10 * DAY_SECS + 5), now, THIRTY_DAYS);
        assert!(
            matches!(&soon, Some(ExpiryNotice::ExpiresSoon(text)) if text.contains("(in 10 days)") && text.contains("\"CN=s\"")),
            "{soon:?}"
        );
        let edge = expiry_notice("approved client", "CN=c", valid(now + 30 * DAY_SECS), now, THIRTY_DAYS);
        assert!(
            matches!(&edge, Some(ExpiryNotice::ExpiresSoon(text)) if text.starts_with("approved client")),
            "{edge:?}"
        );
        let expired = expiry_notice("server", "CN=s", valid(now - 1), now, THIRTY_DAYS);
        assert!(
            matches!(&expired, Some(ExpiryNotice::Expired(text)) if text.contains("expired")),
            "{expired:?}"
        );
        let early = expiry_notice("server", "CN=s", (now + 1, now + 90 * DAY_SECS), now, THIRTY_DAYS);
        assert!(
            matches!(&early, Some(ExpiryNotice::NotYetValid(text)) if text.contains("not valid before")),
            "{early:?}"
        );
        // The configured threshold decides: a longer one warns earlier, a shorter one later.
        assert!(expiry_notice("server", "CN=s", valid(now + 45 * DAY_SECS), now, 2 * THIRTY_DAYS).is_some());
        let five_days = std::time::Duration::from_secs(5 * 24 * 60 * 60);
        assert_eq!(expiry_notice("server", "CN=s", valid(now + 10 * DAY_SECS), now, five_days), None);
    }

    #[test]
    fn expiry_notice_of_a_real_certificate() {
        use crate::tls::pki::{Ca, CertKind, Validity};
        let ca = Ca::new("expiry CA", Validity::days_from_now(400)).unwrap();
        let issued =
            ca.issue(CertKind::Server, "s", &["localhost".to_owned()], Validity::days_from_now(10)).unwrap();
        let cert = CertSummary::parse(&issued.der).unwrap();
        let now = crate::tls::unix_now();
        let at = |threshold| {
            expiry_notice("server", &cert.subject, (cert.not_before, cert.not_after), now, threshold)
        };
        assert!(matches!(at(THIRTY_DAYS), Some(ExpiryNotice::ExpiresSoon(_))));
        assert_eq!(at(std::time::Duration::from_secs(5 * 24 * 60 * 60)), None);
    }
}
