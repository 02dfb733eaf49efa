//! Certificate-expiry alarms for sites without a monitoring system: once a day, a warning
//! for every server certificate and every approved client certificate that expires within
//! `[log] cert_expiry_warning` (default 30 days), and an error for every one that has
//! expired.
//!
//! Approved client certificates are configured by thumbprint only, which carries no date:
//! a client certificate is known (and checked) once it has completed a handshake since
//! start. Every TLS listener also checks its certificates when it loads and at every
//! reload, against the same threshold, so the first daily check runs one day after start.
//!
//! Owns only the schedule. The policy and its wording are [`crate::tls::cert::expiry_notice`],
//! the certificate facts and the log lines [`crate::tls::TlsListener::check_expiry`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::listener::Reloader;

/// Time between two checks.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks every [`CHECK_INTERVAL`] (the first time one interval after start) until `stop`,
/// against `[log] cert_expiry_warning` as of the last reload.
pub async fn watch(tls: Reloader, stop: CancellationToken) {
    let start = tokio::time::Instant::now() + CHECK_INTERVAL;
    let mut tick = tokio::time::interval_at(start, CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                check(&tls, tls.cert_expiry_warning(), crate::tls::unix_now());
            }
        }
    }
}

/// Logs a notice for each certificate of `tls` that needs one at `now` (Unix seconds);
/// returns how many were logged.
pub fn check(tls: &Reloader, threshold: Duration, now: i64) -> usize {
    tls.check_expiry(now, threshold)
}
