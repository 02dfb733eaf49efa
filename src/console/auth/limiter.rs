//! Login rate limits: failures counted per user name and per client address in a sliding
//! window; a key with too many failures is refused (429 with `Retry-After`) until its
//! oldest failure leaves the window.
//!
//! A pure table: the time comes in as an argument. Bounded: at most [`MAX_KEYS`] keys
//! per kind, each holding at most its limit of failure times; when full, the key whose
//! newest failure is oldest gives way.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures of one user name within [`WINDOW`] before its logins are refused.
pub const USER_LIMIT: usize = 5;
/// Failures from one address within [`WINDOW`] before its logins are refused (higher than
/// a user's: several people may log in from one jump host).
pub const ADDRESS_LIMIT: usize = 20;
/// Keys remembered per kind.
pub const MAX_KEYS: usize = 10_000;

/// Failure counts per user and per address.
#[derive(Debug, Default)]
pub struct Limiter {
    users: Window<String>,
    addresses: Window<IpAddr>,
}

impl Limiter {
    /// `None` when a login for `user` from `addr` may be tried now; otherwise how long
    /// until it may (the longer of the two waits).
    pub fn check(&mut self, user: &str, addr: IpAddr, now: Instant) -> Option<Duration> {
        let user = self.users.wait(&user.to_lowercase(), USER_LIMIT, now);
        let addr = self.addresses.wait(&addr, ADDRESS_LIMIT, now);
        user.max(addr)
    }

    /// Whether requests from `addr` are refused now (bad API tokens count against it too).
    pub fn check_address(&mut self, addr: IpAddr, now: Instant) -> Option<Duration> {
        self.addresses.wait(&addr, ADDRESS_LIMIT, now)
    }

    /// Records a failed login (`user` is `None` for a bad API token).
    pub fn failed(&mut self, user: Option<&str>, addr: IpAddr, now: Instant) {
        if let Some(user) = user {
            self.users.record(user.to_lowercase(), USER_LIMIT, now);
        }
        self.addresses.record(addr, ADDRESS_LIMIT, now);
    }

    /// Forgets the failures of `user` after a successful login. The address keeps its
    /// count: one account's password must not reset the limit for guessing others'.
    pub fn succeeded(&mut self, user: &str) {
        self.users.failures.remove(&user.to_lowercase());
    }
}

#[derive(Debug)]
struct Window<K> {
    failures: HashMap<K, VecDeque<Instant>>,
}

impl<K> Default for Window<K> {
    fn default() -> Self {
        Window { failures: HashMap::new() }
    }
}

impl<K: Hash + Eq + Clone> Window<K> {
    fn wait(&mut self, key: &K, limit: usize, now: Instant) -> Option<Duration> {
        let times = self.failures.get_mut(key)?;
        forget_old(times, now);
        if times.is_empty() {
            self.failures.remove(key);
            return None;
        }
        if times.len() < limit {
            return None;
        }
        // The oldest of the last `limit` failures leaves the window first.
        let oldest = times[times.len() - limit];
        Some((oldest + WINDOW).saturating_duration_since(now).max(Duration::from_secs(1)))
    }

    fn record(&mut self, key: K, limit: usize, now: Instant) {
        if !self.failures.contains_key(&key) && self.failures.len() >= MAX_KEYS {
            self.failures.retain(|_, times| {
                forget_old(times, now);
                !times.is_empty()
            });
            if self.failures.len() >= MAX_KEYS {
                let stalest =
                    self.failures.iter().min_by_key(|(_, t)| t.back().copied()).map(|(k, _)| k.clone());
                if let Some(stalest) = stalest {
                    self.failures.remove(&stalest);
                }
            }
        }
        let times = self.failures.entry(key).or_default();
        forget_old(times, now);
        times.push_back(now);
        while times.len() > limit {
            times.pop_front();
        }
    }
}

fn forget_old(times: &mut VecDeque<Instant>, now: Instant) {
    while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_of_a_user_wait_until_the_first_leaves_the_window() {
        let start = Instant::now();
        let addr = IpAddr::from([127, 0, 0, 1]);
        let other = IpAddr::from([127, 0, 0, 2]);
        let mut limiter = Limiter::default();
        for i in 0..USER_LIMIT as u64 {
            assert_eq!(limiter.check("ana", addr, start), None);
            limiter.failed(Some("ana"), addr, start + Duration::from_secs(i));
        }
        let now = start + Duration::from_secs(10);
        assert_eq!(limiter.check("ana", addr, now), Some(WINDOW - Duration::from_secs(10)));
        assert!(limiter.check("ANA", other, now).is_some(), "the user, from anywhere, in any case");
        assert_eq!(limiter.check("bob", addr, now), None, "the address is below its own limit");
        assert_eq!(limiter.check("ana", addr, start + WINDOW), None, "the first failure left the window");
        limiter.failed(Some("ana"), addr, start + WINDOW);
        assert!(limiter.check("ana", addr, start + WINDOW).is_some());
        limiter.succeeded("ana");
        assert_eq!(limiter.check("ana", addr, start + WINDOW), None);
    }

    #[test]
    fn an_address_is_limited_across_user_names_and_memory_is_bounded() {
        let start = Instant::now();
        let addr = IpAddr::from([10, 0, 0, 1]);
        let mut limiter = Limiter::default();
        for i in 0..ADDRESS_LIMIT {
            limiter.failed(Some(&format!("user{i}")), addr, start);
        }
        assert!(limiter.check("someone", addr, start).is_some());
        assert!(limiter.check_address(addr, start).is_some());
        for i in 0..MAX_KEYS + 10 {
            limiter.failed(Some(&format!("u{i}")), addr, start);
        }
        assert!(limiter.users.failures.len() <= MAX_KEYS);
    }
}
