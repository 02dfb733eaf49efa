//! [`Histogram`]: latency samples of a benchmark run, kept in fixed memory to within 1.6 %.

use std::time::Duration;

/// `x` rounded to three decimals, for the JSON report.
pub(super) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Sub-buckets per power of two: values are kept to within 1/64 (1.6 %).
const SUB_BUCKET_BITS: u32 = 6;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Enough buckets for any `u64` nanosecond value.
const BUCKETS: usize = (64 - SUB_BUCKET_BITS as usize + 1) * SUB_BUCKETS;

/// A log-linear histogram of durations in nanoseconds (the idea of HdrHistogram, in a few
/// lines): exact below 64 ns, then 64 buckets per power of two. Fixed size (30 KiB), so a
/// long run costs no more memory than a short one; `max` is kept exactly.
pub(super) struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), count: 0, sum_ns: 0, max_ns: 0 }
    }
}

impl Histogram {
    pub(super) fn record(&mut self, value: Duration) {
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket(ns)] += 1;
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub(super) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The value at quantile `q` (0..=1): the highest value its bucket holds, never more
    /// than the maximum seen; 0 when empty.
    fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_top(index).min(self.max_ns);
            }
        }
        self.max_ns
    }

    fn mean_ns(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            (self.sum_ns / u128::from(self.count)) as u64
        }
    }

    pub(super) fn summary_us(&self) -> serde_json::Value {
        let us = |ns: u64| round3(ns as f64 / 1000.0);
        serde_json::json!({
            "p50": us(self.quantile_ns(0.50)),
            "p90": us(self.quantile_ns(0.90)),
            "p99": us(self.quantile_ns(0.99)),
            "max": us(self.max_ns),
            "mean": us(self.mean_ns()),
        })
    }

    pub(super) fn text_us(&self) -> String {
        if self.count == 0 {
            return ": no samples".into();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        format!(
            " µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}  mean {:.0}",
            us(self.quantile_ns(0.50)),
            us(self.quantile_ns(0.90)),
            us(self.quantile_ns(0.99)),
            us(self.max_ns),
            us(self.mean_ns())
        )
    }
}

fn bucket(ns: u64) -> usize {
    if ns < SUB_BUCKETS as u64 {
        return ns as usize;
    }
    // `ns >> shift` keeps the top SUB_BUCKET_BITS + 1 bits: 64..=127.
    let shift = 63 - ns.leading_zeros() - SUB_BUCKET_BITS;
    (shift as usize + 1) * SUB_BUCKETS + ((ns >> shift) as usize - SUB_BUCKETS)
}

/// The highest value that falls into bucket `index`.
fn bucket_top(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let shift = (index / SUB_BUCKETS - 1) as u32;
    let low = ((index % SUB_BUCKETS + SUB_BUCKETS) as u64) << shift;
    low + ((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut previous_top = None;
        for index in 0..BUCKETS - 1 {
            let top = bucket_top(index);
            if let Some(previous) = previous_top {
                assert!(top > previous, "bucket {index}");
                assert_eq!(bucket(previous + 1), index, "first value of bucket {index}");
            }
            assert_eq!(bucket(top), index);
            previous_top = Some(top);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for ns in [64u64, 1000, 123_456, 10_000_000_000] {
            let top = bucket_top(bucket(ns));
            assert!(top >= ns && (top - ns) as f64 <= ns as f64 / 64.0, "{ns} -> {top}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ns(0.5), 0);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let close = |got: u64, want_us: u64| {
            let want = want_us * 1000;
            assert!(got >= want && got - want <= want / 64, "{got} vs {want}");
        };
        close(h.quantile_ns(0.50), 50);
        close(h.quantile_ns(0.90), 90);
        close(h.quantile_ns(0.99), 99);
        assert_eq!(h.quantile_ns(1.0), 100_000);
        assert_eq!(h.mean_ns(), 50_500);
        let mut other = Histogram::default();
        other.record(Duration::from_millis(5));
        h.merge(&other);
        assert_eq!(h.count, 101);
        assert_eq!(h.max_ns, 5_000_000);
        assert_eq!(h.quantile_ns(1.0), 5_000_000);
    }
}
