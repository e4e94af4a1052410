//! A fixed-bucket histogram of durations: one relaxed add per bucket hit plus the sum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::model::Buckets;

/// Request latency bounds in seconds: from a cached metadata answer (well under a
/// millisecond) to a long-polling fetch (Kafka's default fetch.max.wait.ms is 500 ms; clients
/// allow up to 30 s for a request).
pub const REQUEST_SECONDS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Bound in nanoseconds, compared without floats on the data path.
    bounds_ns: Vec<u64>,
    /// Per bucket (not cumulative), the last for above every bound.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            bounds_ns: bounds.iter().map(|b| (b * 1e9) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        let bucket = self.bounds_ns.partition_point(|b| *b < ns);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The cumulative view, or `None` before the first observation.
    pub fn snapshot(&self) -> Option<Buckets> {
        let mut total = 0;
        let cumulative: Vec<u64> = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        (total > 0).then(|| Buckets {
            bounds: self.bounds,
            cumulative,
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let h = Histogram::new(&[0.001, 0.01]);
        assert!(h.snapshot().is_none());
        h.observe(Duration::from_micros(1_000)); // exactly on a bound: le="0.001"
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(2));
        let s = h.snapshot().unwrap();
        assert_eq!(s.cumulative, vec![1, 2, 3]);
        assert_eq!(s.count(), 3);
        assert!((s.sum - 2.006).abs() < 1e-9);
    }
}
