//! A partition's high watermark over time, to estimate a group's lag in seconds (MSK's
//! EstimatedMaxTimeLag).
//!
//! The method (the one Burrow-style exporters use): a group whose committed offset is `c`
//! has consumed everything written before the high watermark passed `c`, so its time lag is
//! how long ago that was. The history holds (time, high watermark) samples, taken at each
//! reconciliation and each collection; with the current high watermark as the newest point,
//! the moment the mark passed `c` is interpolated linearly between the newest sample at or
//! below `c` and the one after it. When `c` is below every sample (the group is further
//! behind than the history reaches), it is extrapolated back from the oldest sample at the
//! average rate over the whole history. A group with no lag is 0 seconds behind; one whose
//! lag the history cannot place (no sample yet beside the current mark, or a mark that never
//! moved) has no estimate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples kept per partition (16 bytes each). When full, the older half is thinned to every
/// other sample, so the history reaches further back at a coarser grain rather than forget its
/// oldest: at a sample every 15 s it covers the last quarter hour sample by sample, and hours
/// more coarsely.
pub const HISTORY_SAMPLES: usize = 64;

/// Samples closer together than this add nothing an interpolation can use: a collection
/// right after a reconciliation would otherwise spend a sample on the same moment.
const SAMPLE_SPACING: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct History {
    /// Oldest first; high watermarks never decrease along it.
    samples: VecDeque<(Instant, i64)>,
}

impl History {
    pub fn record(&mut self, at: Instant, hwm: i64) {
        if let Some(&(last_at, last)) = self.samples.back() {
            if hwm < last {
                // The mark went back: the partition was made anew (its topic deleted and
                // created again), and the old samples say nothing of it.
                self.samples.clear();
            } else if at < last_at + SAMPLE_SPACING {
                return;
            } else if hwm == last && self.samples.len() >= 2 {
                let before = self.samples[self.samples.len() - 2].1;
                if before == hwm {
                    // A run of the same mark: only its first sample (when the mark got
                    // there) and its last (when it was still there) place anything.
                    *self.samples.back_mut().expect("not empty") = (at, hwm);
                    return;
                }
            }
        }
        if self.samples.len() >= HISTORY_SAMPLES {
            self.thin();
        }
        self.samples.push_back((at, hwm));
    }

    /// Drops every other sample of the older half, keeping the oldest.
    fn thin(&mut self) {
        let half = self.samples.len() / 2;
        let mut i = 0;
        self.samples.retain(|_| {
            let keep = i >= half || i % 2 == 0;
            i += 1;
            keep
        });
    }

    /// Seconds since the high watermark was at `committed`, given the current mark
    /// `current` at `now`; see the module's method.
    pub fn seconds_behind(&self, now: Instant, current: i64, committed: i64) -> Option<f64> {
        let mut points: Vec<(f64, i64)> = self
            .samples
            .iter()
            .filter(|(_, hwm)| *hwm <= current)
            .map(|(at, hwm)| (now.saturating_duration_since(*at).as_secs_f64(), *hwm))
            .collect();
        points.push((0.0, current));
        seconds_behind(&points, committed)
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.samples.len()
    }
}

/// The estimate on (age in seconds, high watermark) points, oldest first, the last being the
/// current mark.
pub fn seconds_behind(points: &[(f64, i64)], committed: i64) -> Option<f64> {
    let &(_, current) = points.last()?;
    if committed >= current {
        return Some(0.0);
    }
    let age = match points.iter().rposition(|(_, hwm)| *hwm <= committed) {
        Some(i) => {
            // The newest point at or below `committed`; every later one is above it.
            let ((a0, h0), (a1, h1)) = (points[i], points[i + 1]);
            let fraction = (committed - h0) as f64 / (h1 - h0) as f64;
            a0 - fraction * (a0 - a1)
        }
        None => {
            let (oldest_age, oldest) = points[0];
            let span = oldest_age - points[points.len() - 1].0;
            if points.len() < 2 || current <= oldest || span <= 0.0 {
                return None;
            }
            let rate = (current - oldest) as f64 / span;
            oldest_age + (oldest - committed) as f64 / rate
        }
    };
    Some(age.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn no_lag_is_no_time_behind() {
        assert_eq!(seconds_behind(&[(0.0, 100)], 100), Some(0.0));
        assert_eq!(seconds_behind(&[(30.0, 50), (0.0, 100)], 120), Some(0.0));
    }

    #[test]
    fn the_moment_the_mark_passed_the_committed_offset_is_interpolated() {
        // 60 s ago the mark was 100, 30 s ago 200, now 400.
        let points = [(60.0, 100), (30.0, 200), (0.0, 400)];
        assert!(close(seconds_behind(&points, 150), 45.0));
        assert!(close(seconds_behind(&points, 200), 30.0));
        assert!(close(seconds_behind(&points, 300), 15.0));
        assert!(close(seconds_behind(&points, 100), 60.0));
        // A run of one mark: the group at it is behind since the mark left it, not since it
        // got there.
        let flat = [(60.0, 100), (20.0, 100), (0.0, 140)];
        assert!(close(seconds_behind(&flat, 100), 20.0));
        assert!(close(seconds_behind(&flat, 120), 10.0));
    }

    #[test]
    fn a_group_behind_the_whole_history_is_extrapolated_at_its_average_rate() {
        // 10 records a second over the last 60 s; committed 300 records before the oldest
        // sample: 30 s before it.
        let points = [(60.0, 1_000), (0.0, 1_600)];
        assert!(close(seconds_behind(&points, 700), 90.0));
        // Nothing to extrapolate from: only the current mark, or a mark that never moved.
        assert_eq!(seconds_behind(&[(0.0, 10)], 5), None);
        assert_eq!(seconds_behind(&[], 5), None);
    }

    #[test]
    fn the_history_is_bounded_and_reaches_back_at_a_coarser_grain() {
        let t0 = Instant::now();
        let mut h = History::default();
        // One sample a second for ten minutes, the mark rising by 10 each.
        for s in 0..600u64 {
            h.record(t0 + Duration::from_secs(s), 10 * s as i64);
        }
        assert!(h.kept() <= HISTORY_SAMPLES);
        // The first sample is still there, so the whole ten minutes is interpolated, not
        // extrapolated: a group at offset 50 is 595 s behind at t0 + 600 s (mark 6,000).
        let now = t0 + Duration::from_secs(600);
        assert!(close(h.seconds_behind(now, 6_000, 50), 595.0));
        assert!(close(h.seconds_behind(now, 6_000, 6_000), 0.0));
        // Steady rate: any offset is placed exactly.
        assert!(close(h.seconds_behind(now, 6_000, 3_000), 300.0));
    }

    #[test]
    fn close_samples_are_skipped_and_a_mark_that_goes_back_starts_afresh() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.record(t0, 10);
        h.record(t0 + Duration::from_millis(200), 20);
        assert_eq!(h.kept(), 1);
        h.record(t0 + Duration::from_secs(5), 30);
        h.record(t0 + Duration::from_secs(10), 30);
        h.record(t0 + Duration::from_secs(15), 30);
        h.record(t0 + Duration::from_secs(20), 30);
        // The run of 30 is two samples: 5 s and 20 s.
        assert_eq!(h.kept(), 3);
        let now = t0 + Duration::from_secs(30);
        // The mark left 30 after the run's last sample, 10 s ago.
        assert!(close(h.seconds_behind(now, 40, 30), 10.0));
        h.record(t0 + Duration::from_secs(25), 3);
        assert_eq!(h.kept(), 1);
    }
}
