//! Certificate-expiry alarms for sites without a monitoring system: once a day, a warning
//! for every server certificate and every approved client certificate that expires within
//! `[log] cert_expiry_warning` (default 30 days), and an error for every one that has
//! expired.
//!
//! Approved client certificates are configured by thumbprint only, which carries no date:
//! a client certificate is known (and checked) once it has completed a handshake since
//! start. The server certificate is also checked at start-up and at every reload by the TLS
//! module itself (against a fixed 30 days), so the first daily check runs one day after start.
//!
//! Owns only the schedule and the wording; the certificate facts come from
//! [`crate::tls::TlsListener`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::tls::cert::format_time;
use crate::tls::Reloader;

/// Time between two checks.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// What a check says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Past notAfter: logged as an error.
    Expired(String),
    /// Within the warning threshold: logged as a warning.
    ExpiresSoon(String),
}

/// Checks every [`CHECK_INTERVAL`] (the first time one interval after start) until `stop`.
pub async fn watch(tls: Reloader, threshold: Duration, stop: CancellationToken) {
    let start = tokio::time::Instant::now() + CHECK_INTERVAL;
    let mut tick = tokio::time::interval_at(start, CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                check(&tls, threshold, unix_now());
            }
        }
    }
}

/// Logs a notice for each certificate of `tls` that needs one at `now` (Unix seconds);
/// returns how many were logged.
pub fn check(tls: &Reloader, threshold: Duration, now: i64) -> usize {
    let mut logged = 0;
    for listener in tls.listeners() {
        let name = listener.name();
        let server = listener.server_certificate();
        if let Some(found) = notice("server", &server.subject, server.not_after, now, threshold) {
            log(name, &server.digests.sha256().to_string(), &server.subject, &found);
            logged += 1;
        }
        for client in listener.approved_clients_seen() {
            if let Some(found) = notice("approved client", &client.subject, client.not_after, now, threshold)
            {
                log(name, &client.digests.sha256().to_string(), &client.subject, &found);
                logged += 1;
            }
        }
    }
    logged
}

/// The notice for a certificate (`kind` is "server" or "approved client") with this
/// notAfter, or `None` when it is valid for longer than `threshold`.
pub fn notice(kind: &str, subject: &str, not_after: i64, now: i64, threshold: Duration) -> Option<Notice> {
    let left = not_after - now;
    let threshold = i64::try_from(threshold.as_secs()).unwrap_or(i64::MAX);
    if left < 0 {
        Some(Notice::Expired(format!(
            "{kind} certificate {subject:?} expired {}: peers will refuse it",
            format_time(not_after)
        )))
    } else if left <= threshold {
        Some(Notice::ExpiresSoon(format!(
            "{kind} certificate {subject:?} expires {} (in {} days): renew it",
            format_time(not_after),
            left / (24 * 60 * 60)
        )))
    } else {
        None
    }
}

fn log(listener: &str, thumbprint: &str, subject: &str, found: &Notice) {
    match found {
        Notice::Expired(text) => error!(listener, thumbprint, subject, "{text}"),
        Notice::ExpiresSoon(text) => warn!(listener, thumbprint, subject, "{text}"),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 60 * 60;
    const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 60 * 60);

    #[test]
    fn notices_by_time_left() {
        let now = 1_700_000_000;
        assert_eq!(notice("server", "CN=s", now + 31 * DAY, now, THIRTY_DAYS), None);
        let soon = notice("server", "CN=s", now + 10 * DAY + 5, now, THIRTY_DAYS);
        assert!(
            matches!(&soon, Some(Notice::ExpiresSoon(text)) if text.contains("(in 10 days)") && text.contains("\"CN=s\"")),
            "{soon:?}"
        );
        let edge = notice("approved client", "CN=c", now + 30 * DAY, now, THIRTY_DAYS);
        assert!(
            matches!(&edge, Some(Notice::ExpiresSoon(text)) if text.starts_with("approved client")),
            "{edge:?}"
        );
        let expired = notice("server", "CN=s", now - 1, now, THIRTY_DAYS);
        assert!(matches!(&expired, Some(Notice::Expired(text)) if text.contains("expired")), "{expired:?}");
        // A longer threshold warns earlier.
        assert!(notice("server", "CN=s", now + 45 * DAY, now, 2 * THIRTY_DAYS).is_some());
    }

    #[test]
    fn checks_real_certificates() {
        use crate::tls::pki::{Ca, CertKind, Validity};
        let ca = Ca::new("expiry CA", Validity::days_from_now(400)).unwrap();
        let issued =
            ca.issue(CertKind::Server, "s", &["localhost".to_owned()], Validity::days_from_now(10)).unwrap();
        let cert = crate::tls::cert::CertSummary::parse(&issued.der).unwrap();
        let at = |threshold| notice("server", &cert.subject, cert.not_after, unix_now(), threshold);
        assert!(matches!(at(THIRTY_DAYS), Some(Notice::ExpiresSoon(_))));
        assert_eq!(at(Duration::from_secs(5 * 24 * 60 * 60)), None);
    }
}
