//! The forwarding-delay histogram: how long a publisher's packet spends in the bridge, from the shard that received
//! it to the moment it has been sealed and handed to the socket for one subscriber. One sample per packet per
//! subscriber.
//!
//! Log-linear buckets over microseconds (as HdrHistogram with 4 bits of precision: every bucket is at most 1/16 of
//! its value wide, so a quantile is within ~6%): 0–15 µs one bucket each, then 16 buckets per power of two, up to
//! 2^37 µs (the last bucket takes anything longer). Each shard records into its own histogram with relaxed atomic adds (no lock, no sharing of cache lines
//! between shards); readers sum the shards' snapshots.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

const SUB: u32 = 16;
const SUB_BITS: u32 = 4;
const MAX_POW: u32 = 36;
/// Number of buckets.
pub const BUCKETS: usize = (SUB + (MAX_POW - SUB_BITS + 1) * SUB) as usize;

fn index(us: u64) -> usize {
    if us < u64::from(SUB) {
        return us as usize;
    }
    let b = 63 - us.leading_zeros();
    if b > MAX_POW {
        // Beyond ~19 hours: the last bucket, whose upper bound is unbounded.
        return BUCKETS - 1;
    }
    let sub = ((us >> (b - SUB_BITS)) & u64::from(SUB - 1)) as u32;
    ((b - SUB_BITS + 1) * SUB + sub) as usize
}

/// The smallest value, µs, that falls into bucket `i`.
fn lower(i: usize) -> u64 {
    let i = i as u64;
    if i < u64::from(SUB) {
        return i;
    }
    let b = i / u64::from(SUB) + u64::from(SUB_BITS) - 1;
    let sub = i % u64::from(SUB);
    (u64::from(SUB) + sub) << (b - u64::from(SUB_BITS))
}

/// The largest value, µs, that falls into bucket `i`.
fn upper(i: usize) -> u64 {
    if i + 1 >= BUCKETS { u64::MAX } else { lower(i + 1) - 1 }
}

/// One shard's histogram.
#[derive(Debug)]
pub struct DelayHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        Self { counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl DelayHistogram {
    /// Counts one delay.
    pub fn record(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        if let Some(c) = self.counts.get(index(us)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect() }
    }
}

/// Counts per bucket at one moment; snapshots add up (shards) and subtract (a window between two reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    counts: Vec<u64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS] }
    }
}

/// The non-empty buckets of a snapshot, for JSON: `[upper bound µs, count]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Median, µs (upper bound of its bucket).
    pub p50_us: Option<u64>,
    /// 90th percentile, µs.
    pub p90_us: Option<u64>,
    /// 99th percentile, µs.
    pub p99_us: Option<u64>,
    /// 99.9th percentile, µs.
    pub p999_us: Option<u64>,
    /// Upper bound of the highest non-empty bucket, µs.
    pub max_us: Option<u64>,
    /// `[upper bound µs, count]` of each non-empty bucket, ascending: a reader subtracts two of these to get a window.
    pub buckets: Vec<(u64, u64)>,
}

impl Snapshot {
    /// Adds another shard's counts.
    pub fn add(&mut self, other: &Snapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// What was counted after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot { counts: self.counts.iter().zip(&earlier.counts).map(|(a, b)| a.saturating_sub(*b)).collect() }
    }

    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (`0..=1`), as the upper bound of its bucket, µs; `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i));
            }
        }
        None
    }

    /// Quantiles and the non-empty buckets.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count(),
            p50_us: self.quantile_us(0.5),
            p90_us: self.quantile_us(0.9),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.counts.iter().rposition(|c| *c > 0).map(upper),
            buckets: self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (upper(i), *c)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_and_are_at_most_a_sixteenth_wide() {
        assert_eq!(lower(0), 0);
        for i in 0..BUCKETS - 1 {
            assert_eq!(upper(i) + 1, lower(i + 1), "bucket {i}");
            assert!(lower(i) <= upper(i));
            if lower(i) >= 16 {
                assert!((upper(i) - lower(i) + 1) * 16 <= lower(i), "bucket {i}: {}..={}", lower(i), upper(i));
            }
        }
        for us in (0..100_000u64).chain([1 << 30, (1 << 36) - 1, 1 << 36, (1 << 37) - 1]) {
            let i = index(us);
            assert!(lower(i) <= us && us <= upper(i), "{us} µs in bucket {i} = {}..={}", lower(i), upper(i));
        }
        assert_eq!(index((1 << 37) - 1), BUCKETS - 1);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_windows_and_shards() {
        let h = DelayHistogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 1000);
        // Within a bucket's width (≤ 1/16) above the exact value.
        let p50 = s.quantile_us(0.5).unwrap();
        assert!((500..=532).contains(&p50), "{p50}");
        let p99 = s.quantile_us(0.99).unwrap();
        assert!((990..=1055).contains(&p99), "{p99}");
        assert_eq!(s.quantile_us(0.0), Some(1));

        // A window: only what came after the first read.
        h.record(Duration::from_millis(50));
        let w = h.snapshot().since(&s);
        assert_eq!(w.count(), 1);
        let p = w.quantile_us(0.5).unwrap();
        assert!((50_000..=53_300).contains(&p), "{p}");

        // Two shards add up.
        let other = DelayHistogram::default();
        other.record(Duration::from_micros(3));
        let mut all = h.snapshot();
        all.add(&other.snapshot());
        assert_eq!(all.count(), 1002);
        let sum = all.summary();
        assert_eq!(sum.count, 1002);
        assert_eq!(sum.buckets.iter().map(|b| b.1).sum::<u64>(), 1002);
        assert_eq!(sum.max_us, Some(upper(index(50_000))));
        assert_eq!(Snapshot::default().summary().p50_us, None);
    }
}
