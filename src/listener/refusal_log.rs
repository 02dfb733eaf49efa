//! Refusal lines, rate-limited per peer address.
//!
//! Every refused connection (a TLS refusal, `ip_not_allowed`, `max_connections`,
//! `max_connections_per_ip`, a pending connection dropped for `max_pending`) is a warning
//! in the log and an audit event. A peer refused over and over would otherwise decide how
//! fast both grow. So, per listener and peer address, the first [`FULL_LINES`] refusals of a
//! [`WINDOW`] are logged in full; the others are counted by reason and told in one summary
//! line once the window is over: `17 more refused from 192.0.2.7: client_cert_unapproved 15,
//! handshake_timeout 2` (audit event `refusals_suppressed`). Metrics still count every
//! refusal.
//!
//! The table of addresses is bounded ([`MAX_PEERS`]): a window that is over leaves it at the
//! next sweep (every [`SWEEP_EVERY`]), and when it is full a new address takes the place of
//! the one whose window began first, whose summary is written at once. Nothing counted is
//! ever lost, only summarised early.
//!
//! [`RefusalLimiter`] is the rule, with no clock and no I/O (the time is an argument), so
//! that it is tested with explicit instants; [`RefusalLog`] shares one limiter among a
//! listener's tasks, reads tokio's clock (which tests can pause) and writes the summaries.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics::Counter;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Refusals of one address logged in full per window.
pub const FULL_LINES: u32 = 5;
/// The window: "the first few per minute", then one summary per minute.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once per listener.
pub const MAX_PEERS: usize = 4096;
/// How often windows that are over are summarised and forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The rate-limit rule over the addresses of one listener.
#[derive(Debug)]
pub struct RefusalLimiter {
    full_lines: u32,
    window: Duration,
    capacity: usize,
    peers: HashMap<IpAddr, PeerWindow>,
}

#[derive(Debug)]
struct PeerWindow {
    started: Instant,
    logged: u32,
    /// Refusals not logged in this window, by reason (a handful of reasons at most).
    suppressed: Vec<(&'static str, u64)>,
}

/// What to do with one refusal.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Log this refusal in full.
    pub log: bool,
    /// Summaries that are due now, to be logged before it: the address's previous window
    /// when it is over, or the address that gave way in a full table.
    pub summaries: Vec<Summary>,
}

/// The refusals of one address that were not logged in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The peer address.
    pub peer: IpAddr,
    /// How many were not logged.
    pub refused: u64,
    /// How many for each reason: most frequent first, then by name.
    pub reasons: Vec<(&'static str, u64)>,
}

impl RefusalLimiter {
    /// A limiter that logs `full_lines` refusals per address and `window`, tracking at most
    /// `capacity` addresses (at least one).
    pub fn new(full_lines: u32, window: Duration, capacity: usize) -> RefusalLimiter {
        RefusalLimiter { full_lines, window, capacity: capacity.max(1), peers: HashMap::new() }
    }

    /// Counts a refusal of `peer` for `reason` at `now` and says whether to log it.
    pub fn check(&mut self, peer: IpAddr, reason: &'static str, now: Instant) -> Verdict {
        let peer = peer.to_canonical();
        let mut summaries = Vec::new();
        if let Some(window) = self.peers.get_mut(&peer) {
            if now.saturating_duration_since(window.started) >= self.window {
                summaries.extend(window.summary(peer));
                *window = PeerWindow::new(now);
            }
        } else {
            if self.peers.len() >= self.capacity {
                summaries.extend(self.give_way());
            }
            self.peers.insert(peer, PeerWindow::new(now));
        }
        // Inserted or found just above.
        let window = self.peers.get_mut(&peer).expect("the address has a window");
        let log = window.logged < self.full_lines;
        if log {
            window.logged += 1;
        } else {
            match window.suppressed.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, count)) => *count += 1,
                None => window.suppressed.push((reason, 1)),
            }
        }
        Verdict { log, summaries }
    }

    /// Forgets every window that is over at `now`, returning the summaries of those that
    /// suppressed something.
    pub fn sweep(&mut self, now: Instant) -> Vec<Summary> {
        let mut summaries = Vec::new();
        let window = self.window;
        self.peers.retain(|peer, w| {
            let over = now.saturating_duration_since(w.started) >= window;
            if over {
                summaries.extend(w.summary(*peer));
            }
            !over
        });
        sort(&mut summaries);
        summaries
    }

    /// Forgets every window, returning what each suppressed (at shutdown).
    pub fn flush(&mut self) -> Vec<Summary> {
        let mut summaries: Vec<Summary> =
            self.peers.drain().filter_map(|(peer, w)| w.summary(peer)).collect();
        sort(&mut summaries);
        summaries
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// No address is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Makes room for one address: the window that began first goes (a linear scan, only
    /// when the table is full).
    fn give_way(&mut self) -> Option<Summary> {
        let (&peer, _) = self.peers.iter().min_by_key(|(_, w)| w.started)?;
        self.peers.remove(&peer)?.summary(peer)
    }
}

impl PeerWindow {
    fn new(started: Instant) -> PeerWindow {
        PeerWindow { started, logged: 0, suppressed: Vec::new() }
    }

    fn summary(&self, peer: IpAddr) -> Option<Summary> {
        if self.suppressed.is_empty() {
            return None;
        }
        let mut reasons = self.suppressed.clone();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Some(Summary { peer, refused: reasons.iter().map(|(_, n)| n).sum(), reasons })
    }
}

fn sort(summaries: &mut [Summary]) {
    summaries.sort_by_key(|s| s.peer);
}

impl Summary {
    /// `client_cert_unapproved 15, handshake_timeout 2`.
    pub fn reasons_text(&self) -> String {
        let parts: Vec<String> = self.reasons.iter().map(|(reason, n)| format!("{reason} {n}")).collect();
        parts.join(", ")
    }
}

impl fmt::Display for Summary {
    /// `17 more refused from 192.0.2.7: client_cert_unapproved 15, handshake_timeout 2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} more refused from {}: {}", self.refused, self.peer, self.reasons_text())
    }
}

/// One listener's limiter, shared by its accept loop and connection tasks.
pub struct RefusalLog {
    listener: Arc<str>,
    limiter: Mutex<RefusalLimiter>,
    suppressed: Counter,
}

impl RefusalLog {
    /// The refusal log of `listener`, counting suppressed lines in `suppressed`.
    pub fn new(listener: Arc<str>, suppressed: Counter) -> RefusalLog {
        let limiter = Mutex::new(RefusalLimiter::new(FULL_LINES, WINDOW, MAX_PEERS));
        RefusalLog { listener, limiter, suppressed }
    }

    /// Whether the refusal of `peer` for `reason` is to be logged in full now (the caller
    /// logs it). Summaries that are due are written first.
    pub fn allow(&self, peer: IpAddr, reason: &'static str) -> bool {
        let verdict = self.lock().check(peer, reason, now());
        self.write(&verdict.summaries);
        if !verdict.log {
            self.suppressed.increment(1);
        }
        verdict.log
    }

    /// Writes the summaries of windows that are over, every [`SWEEP_EVERY`], until `stop`
    /// is cancelled; then the summaries of every window still open.
    pub async fn sweep_until(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {
                    let summaries = self.lock().sweep(now());
                    self.write(&summaries);
                }
            }
        }
        let summaries = self.lock().flush();
        self.write(&summaries);
    }

    fn write(&self, summaries: &[Summary]) {
        for summary in summaries {
            let listener = &*self.listener;
            let reasons = summary.reasons_text();
            warn!(target: "audit", event = "refusals_suppressed", listener, peer = %summary.peer,
                refused = summary.refused, reasons, "{summary}");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RefusalLimiter> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// tokio's clock, so that a test with a paused clock can move a window along.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn limiter() -> RefusalLimiter {
        RefusalLimiter::new(FULL_LINES, WINDOW, MAX_PEERS)
    }

    #[test]
    fn the_first_few_per_window_are_logged_the_rest_summarised_when_it_is_over() {
        let mut limiter = limiter();
        let t0 = Instant::now();
        let logged: Vec<bool> = (0..12)
            .map(|i| {
                let reason = if i % 4 == 3 { "handshake_timeout" } else { "client_cert_unapproved" };
                let verdict = limiter.check(ip(7), reason, t0 + Duration::from_secs(i));
                assert!(verdict.summaries.is_empty());
                verdict.log
            })
            .collect();
        assert_eq!(logged, [true, true, true, true, true, false, false, false, false, false, false, false]);
        // Still inside the window: nothing to say yet.
        assert!(limiter.sweep(t0 + Duration::from_secs(59)).is_empty());
        assert_eq!(limiter.len(), 1);
        let summaries = limiter.sweep(t0 + WINDOW);
        assert_eq!(
            summaries,
            [Summary {
                peer: ip(7),
                refused: 7,
                reasons: vec![("client_cert_unapproved", 5), ("handshake_timeout", 2)]
            }]
        );
        assert_eq!(
            summaries[0].to_string(),
            "7 more refused from 192.0.2.7: client_cert_unapproved 5, handshake_timeout 2"
        );
        assert!(limiter.is_empty(), "a window that is over is forgotten");
        // A new window logs in full again.
        assert!(limiter.check(ip(7), "not_tls", t0 + WINDOW + Duration::from_secs(1)).log);
    }

    #[test]
    fn a_window_with_nothing_suppressed_has_no_summary() {
        let mut limiter = limiter();
        let t0 = Instant::now();
        for i in 0..FULL_LINES {
            assert!(limiter.check(ip(1), "not_tls", t0 + Duration::from_secs(i.into())).log);
        }
        assert!(limiter.sweep(t0 + WINDOW * 2).is_empty());
        assert!(limiter.is_empty());
    }

    #[test]
    fn the_next_refusal_after_the_window_brings_its_summary_without_a_sweep() {
        let mut limiter = limiter();
        let t0 = Instant::now();
        for _ in 0..FULL_LINES + 3 {
            limiter.check(ip(9), "ip_not_allowed", t0);
        }
        let verdict = limiter.check(ip(9), "ip_not_allowed", t0 + WINDOW);
        assert!(verdict.log, "a new window began");
        assert_eq!(verdict.summaries.len(), 1);
        assert_eq!(verdict.summaries[0].to_string(), "3 more refused from 192.0.2.9: ip_not_allowed 3");
    }

    #[test]
    fn addresses_are_counted_apart_and_v4_mapped_is_the_v4_address() {
        let mut limiter = limiter();
        let t0 = Instant::now();
        for _ in 0..FULL_LINES {
            assert!(limiter.check(ip(1), "not_tls", t0).log);
        }
        assert!(!limiter.check(ip(1), "not_tls", t0).log);
        assert!(limiter.check(ip(2), "not_tls", t0).log, "another address has its own quota");
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert!(!limiter.check(mapped, "not_tls", t0).log, "::ffff:192.0.2.1 is 192.0.2.1");
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_window_gives_way_with_its_summary() {
        let mut limiter = RefusalLimiter::new(1, WINDOW, 3);
        let t0 = Instant::now();
        for last in 1..=3u8 {
            let at = t0 + Duration::from_secs(last.into());
            limiter.check(ip(last), "max_pending", at);
            limiter.check(ip(last), "max_pending", at);
        }
        assert_eq!(limiter.len(), 3);
        // A fourth address: 192.0.2.1 (the oldest window) gives way, and its count is told.
        let verdict = limiter.check(ip(4), "max_pending", t0 + Duration::from_secs(10));
        assert!(verdict.log);
        assert_eq!(
            verdict.summaries,
            [Summary { peer: ip(1), refused: 1, reasons: vec![("max_pending", 1)] }]
        );
        assert_eq!(limiter.len(), 3);
        // Thousands of addresses never grow it.
        for i in 0..10_000u32 {
            let peer = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i));
            limiter.check(peer, "max_pending", t0 + Duration::from_secs(20));
        }
        assert_eq!(limiter.len(), 3);
    }

    #[test]
    fn flush_tells_every_open_window() {
        let mut limiter = RefusalLimiter::new(0, WINDOW, 10);
        let t0 = Instant::now();
        limiter.check(ip(2), "not_tls", t0);
        limiter.check(ip(1), "not_tls", t0);
        limiter.check(ip(1), "tls_version", t0);
        let summaries = limiter.flush();
        assert_eq!(
            summaries.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "2 more refused from 192.0.2.1: not_tls 1, tls_version 1",
                "1 more refused from 192.0.2.2: not_tls 1",
            ]
        );
        assert!(limiter.is_empty());
    }

    /// The shared log on tokio's paused clock: a summary comes from the sweeper once the
    /// window is over, without another refusal.
    #[tokio::test(start_paused = true)]
    async fn the_sweeper_writes_a_summary_after_the_window() {
        let log = Arc::new(RefusalLog::new(Arc::from("lab"), Counter::noop()));
        let stop = CancellationToken::new();
        let sweeper = tokio::spawn(log.clone().sweep_until(stop.clone()));
        let allowed = (0..8).filter(|_| log.allow(ip(3), "client_cert_unapproved")).count();
        assert_eq!(allowed, FULL_LINES as usize);
        assert_eq!(log.lock().len(), 1);
        tokio::time::sleep(WINDOW + SWEEP_EVERY).await;
        assert!(log.lock().is_empty(), "the sweeper summarised and forgot the window");
        stop.cancel();
        sweeper.await.unwrap();
    }
}
