//! What a failed attempt leads to: the next attempt's time (exponential backoff with
//! jitter, `Retry-After` honoured, capped by `retry_max`) or parking (`park_after`). Pure:
//! the time, the attempt count and the jitter come in as arguments.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::config::RouteConfig;

/// A route's retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// `retry_initial`: the nominal delay after the first failure.
    pub initial: Duration,
    /// `retry_max`: no delay is longer (a `Retry-After` included).
    pub max: Duration,
    /// `park_after`: a message whose first attempt is at least this old and fails again is
    /// parked.
    pub park_after: Duration,
}

impl RetryPolicy {
    /// The policy of `route`.
    pub fn of(route: &RouteConfig) -> RetryPolicy {
        RetryPolicy { initial: route.retry_initial, max: route.retry_max, park_after: route.park_after }
    }
}

/// What comes after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time (micros since the epoch).
    RetryAt(i64),
    /// Park it: it has been failing for `park_after`; the text says so.
    Park(String),
}

/// The decision after attempt number `attempts` (1 for the first) of a message first tried
/// at `first_attempt_at` failed at `now` (both micros).
///
/// The nominal delay doubles with each attempt from `initial` (`initial`, 2×, 4×, …) up to
/// `max`; the delay used is drawn between half of it and all of it (`jitter` in `[0, 1)`:
/// 0 gives the nominal delay, values towards 1 shorten it towards half), so that lanes
/// failing together do not retry in step. A `retry_after` the downstream asked for is
/// waited at least, still capped by `max`. When `now` is `park_after` or more after the
/// first attempt, the message is parked instead.
pub fn after_failure(
    policy: &RetryPolicy,
    attempts: u32,
    first_attempt_at: i64,
    now: i64,
    retry_after: Option<Duration>,
    jitter: f64,
) -> AfterFailure {
    let failing_for = Duration::from_micros(now.saturating_sub(first_attempt_at).max(0) as u64);
    if failing_for >= policy.park_after {
        return AfterFailure::Park(format!(
            "still failing after {} ({attempts} attempt{}); park_after is {}",
            humantime::format_duration(round_to_millis(failing_for)),
            if attempts == 1 { "" } else { "s" },
            humantime::format_duration(policy.park_after)
        ));
    }
    let nominal = nominal_delay(policy, attempts);
    let jittered = nominal.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0);
    let delay = retry_after.map_or(jittered, |asked| jittered.max(asked)).min(policy.max);
    AfterFailure::RetryAt(now.saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX)))
}

/// `initial × 2^(attempts − 1)`, at most `max`.
pub fn nominal_delay(policy: &RetryPolicy, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(40);
    policy.initial.checked_mul(1u32 << doublings.min(31)).map_or(policy.max, |delay| delay.min(policy.max))
}

/// A jitter value in `[0, 1)` for one attempt of one delivery, from the process's random
/// hash keys: different for each attempt, each delivery and each process.
pub fn jitter(delivery_id: i64, attempts: u32) -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_i64(delivery_id);
    hasher.write_u32(attempts);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn round_to_millis(duration: Duration) -> Duration {
    Duration::from_millis(duration.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
            park_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let delays: Vec<u128> = (1..=8).map(|n| nominal_delay(&policy(), n).as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(nominal_delay(&policy(), u32::MAX), Duration::from_secs(5), "no overflow");
        let at = |attempts, jitter| after_failure(&policy(), attempts, 0, 10 * SECOND, None, jitter);
        assert_eq!(at(1, 0.0), AfterFailure::RetryAt(10 * SECOND + 200_000));
        assert_eq!(at(3, 0.0), AfterFailure::RetryAt(10 * SECOND + 800_000));
        assert_eq!(at(30, 0.0), AfterFailure::RetryAt(15 * SECOND));
    }

    #[test]
    fn jitter_shortens_by_at_most_half() {
        let at = |jitter| match after_failure(&policy(), 3, 0, 0, None, jitter) {
            AfterFailure::RetryAt(at) => at,
            park => panic!("{park:?}"),
        };
        assert_eq!(at(0.0), 800_000);
        assert_eq!(at(0.5), 600_000);
        assert!(at(0.999_999) >= 400_000);
        let values: Vec<f64> = (0..100).map(|n| jitter(n, 1)).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        assert!(values.iter().any(|v| *v > 0.5) && values.iter().any(|v| *v < 0.5), "{values:?}");
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let at = |asked| after_failure(&policy(), 1, 0, 0, Some(asked), 0.0);
        assert_eq!(at(Duration::from_secs(2)), AfterFailure::RetryAt(2 * SECOND));
        assert_eq!(
            at(Duration::from_millis(50)),
            AfterFailure::RetryAt(200_000),
            "never shorter than the backoff"
        );
        assert_eq!(at(Duration::from_secs(3600)), AfterFailure::RetryAt(5 * SECOND), "capped by retry_max");
    }

    #[test]
    fn a_message_failing_past_park_after_is_parked() {
        let decide = |now| after_failure(&policy(), 7, 100 * SECOND, now, None, 0.0);
        assert!(matches!(decide(159 * SECOND), AfterFailure::RetryAt(_)));
        let AfterFailure::Park(why) = decide(160 * SECOND) else { panic!("parked at park_after") };
        assert_eq!(why, "still failing after 1m (7 attempts); park_after is 1m");
        let zero = RetryPolicy { park_after: Duration::ZERO, ..policy() };
        assert!(
            matches!(after_failure(&zero, 1, 5, 5, None, 0.0), AfterFailure::Park(_)),
            "park_after 0: first failure"
        );
    }
}
