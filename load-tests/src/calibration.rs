//! From stepped load to the capacity file `tollgate autoscale simulate` and `tune` read
//! (CONTRACT "Pool and autoscaling"; the gateway's `pool::autoscale::simulate::Capacity`):
//! where a series of steps stops following the load it is offered, and how latency grows
//! with utilization on the way there. Free of I/O: the `calibrate` binary measures the steps.
//!
//! A series offers a rising load, step by step. A step is **under** capacity when what came
//! through follows what was offered ([`FOLLOW_SHARE`]) and its p99 latency stays below the
//! knee ([`latency_limit`]); the first step that is not ends the series. The capacity is the
//! gateway's own figure of the signal (what the autoscaler compares with it) at the last step
//! under: a rate at which the latency was still acceptable, not the most that could be forced
//! through.

use serde::{Deserialize, Serialize};

/// A step follows its offered load when at least this share of it came through: a producer
/// that keeps up loses a few percent to the edges of the measuring window and its rate
/// loop's rounding, one that falls behind loses more every second.
pub const FOLLOW_SHARE: f64 = 0.9;

/// The latency knee: a step's p99 above this multiple of the series' lowest p99 so far ...
pub const KNEE_FACTOR: f64 = 4.0;

/// ... and above it by at least this much (ms). The SQLite pool stalls now and then for up to
/// ~100 ms whatever the load (a light load's p99 is 5-100 ms from run to run), so a factor
/// alone would call that noise a knee when the lowest p99 happens to be a few ms.
pub const KNEE_MARGIN_MS: f64 = 250.0;

/// Seconds a leaving broker may drain: the gateway's bound (`DRAIN` in
/// `gateway/src/devpool.rs`: a fetch held at most 5 s at the pool, plus the 10 s every answer
/// is given).
pub const DRAIN_SECONDS: u32 = 15;

/// One step of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    /// What the clients were asked to send per second (payload bytes, or records), or hold
    /// (connections).
    pub offered: f64,
    /// What came through, in the same unit: records acknowledged per second, or connections
    /// that authenticated.
    pub achieved: f64,
    /// Produce latency at the 99th percentile, ms, measured by the client from send to
    /// acknowledgement (records never acknowledged count with the time they waited).
    pub p99_ms: f64,
    /// The gateway's own figure of the series' signal during the step, in the signal's unit
    /// (bytes per second, requests per second, connections).
    pub signal: f64,
}

/// Why a step is not under capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Over {
    /// Less than [`FOLLOW_SHARE`] of the offered load came through.
    Behind,
    /// The p99 latency passed the knee.
    Slow,
}

/// The p99 latency (ms) above which a step is past the knee, given the lowest p99 of the
/// series up to it (the pool's latency when it is least loaded).
pub fn latency_limit(baseline_p99_ms: f64) -> f64 {
    (baseline_p99_ms * KNEE_FACTOR).max(baseline_p99_ms + KNEE_MARGIN_MS)
}

/// Whether `step` is over capacity, against `baseline_p99_ms` ([`latency_limit`]).
pub fn over(baseline_p99_ms: f64, step: &Step) -> Option<Over> {
    if step.achieved < FOLLOW_SHARE * step.offered {
        Some(Over::Behind)
    } else if step.p99_ms.is_nan() || step.p99_ms > latency_limit(baseline_p99_ms) {
        // No latency measured counts as past the knee: nothing came back.
        Some(Over::Slow)
    } else {
        None
    }
}

/// Each step's verdict, in order of offered load, against the lowest p99 of the steps up to
/// it: the first step's alone would make one unlucky stall at the lightest load the baseline.
pub fn verdicts(steps: &[Step]) -> Vec<Option<Over>> {
    let mut baseline = f64::INFINITY;
    steps
        .iter()
        .map(|s| {
            if s.p99_ms.is_finite() {
                baseline = baseline.min(s.p99_ms);
            }
            over(baseline, s)
        })
        .collect()
}

/// How far a series' capacity is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Between the last step under and the first step over.
    Knee,
    /// No step was over: the capacity is at least the last step's figure.
    NotReached,
    /// The first step was already over: the capacity is at most its figure.
    FirstStepOver,
}

/// Where a series stops following its load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Knee {
    /// The gateway's figure of the signal at the step the capacity is read from.
    pub capacity: f64,
    /// The achieved load (client's unit) at that step.
    pub achieved: f64,
    /// The step the capacity is read from.
    pub step: usize,
    /// The first step over, and why.
    pub first_over: Option<(usize, Over)>,
    pub bound: Bound,
}

/// The knee of a series whose steps offer a rising load; `None` for no steps.
pub fn find_knee(steps: &[Step]) -> Option<Knee> {
    steps.first()?;
    let first_over = verdicts(steps)
        .into_iter()
        .enumerate()
        .find_map(|(i, v)| v.map(|why| (i, why)));
    let (step, bound) = match first_over {
        None => (steps.len() - 1, Bound::NotReached),
        Some((0, _)) => (0, Bound::FirstStepOver),
        Some((i, _)) => (i - 1, Bound::Knee),
    };
    Some(Knee {
        capacity: steps[step].signal,
        achieved: steps[step].achieved,
        step,
        first_over,
        bound,
    })
}

/// The latency-vs-utilization curve of a series: one point per step up to the first step over,
/// at utilization `offered / knee.achieved` (the demand over what the broker carries, as the
/// simulator computes it), with the p99 in whole ms rounded up. Latency never falls as the
/// load grows (a lower p99 at a higher load is the pool's noise): each point keeps the highest
/// p99 of the steps up to it. Starts at utilization 0 with the first step's latency.
pub fn latency_curve(steps: &[Step], knee: &Knee) -> Vec<(f64, u32)> {
    let last = knee.first_over.map_or(steps.len(), |(i, _)| i + 1);
    let mut curve: Vec<(f64, u32)> = Vec::new();
    let mut highest = 0u32;
    for s in &steps[..last.min(steps.len())] {
        if !(s.p99_ms.is_finite() && knee.achieved > 0.0) {
            continue;
        }
        let utilization = (s.offered / knee.achieved * 1000.0).round() / 1000.0;
        highest = highest.max(s.p99_ms.ceil().max(1.0) as u32);
        if curve.is_empty() && utilization > 0.0 {
            curve.push((0.0, highest));
        }
        match curve.last_mut() {
            Some((u, l)) if *u >= utilization => *l = highest,
            _ => curve.push((utilization, highest)),
        }
    }
    curve
}

/// What one broker carries, per signal (the gateway's `Load`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerBroker {
    pub bytes_in_per_second: u64,
    pub bytes_out_per_second: u64,
    pub requests_per_second: u64,
    pub connections: u64,
}

/// The capacity file, field for field as the gateway's `Capacity::from_json` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityFile {
    pub per_broker: PerBroker,
    /// From starting a broker to its serving.
    pub start_seconds: u32,
    /// From a broker leaving the routing to its stopping.
    pub drain_seconds: u32,
    /// A decimal string.
    pub price_per_broker_hour: String,
    /// `[utilization, p99 ms]` points of increasing utilization from 0.
    pub latency_ms: Vec<(f64, u32)>,
}

impl CapacityFile {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("plain data serializes");
        text.push('\n');
        text
    }
}

/// A figure as the file's whole number; `None` when there is none to write (not measured,
/// or under 1: the gateway refuses 0, a broker that carries nothing cannot be scaled for).
pub fn whole(figure: f64) -> Option<u64> {
    let rounded = figure.round();
    (rounded.is_finite() && rounded >= 1.0).then_some(rounded as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offered: f64, achieved: f64, p99_ms: f64) -> Step {
        Step {
            offered,
            achieved,
            p99_ms,
            // The gateway counts framing too: a little more than the payload.
            signal: achieved * 1.1,
        }
    }

    #[test]
    fn capacity_is_the_last_step_that_follows_its_load() {
        let steps = [
            step(1e6, 1e6, 20.0),
            step(2e6, 1.98e6, 30.0),
            step(4e6, 3.9e6, 60.0),
            step(8e6, 5e6, 3_000.0),
        ];
        let knee = find_knee(&steps).unwrap();
        assert_eq!(knee.step, 2);
        assert_eq!(knee.bound, Bound::Knee);
        assert_eq!(knee.first_over, Some((3, Over::Behind)));
        assert_eq!(knee.capacity, 3.9e6 * 1.1);
        assert_eq!(knee.achieved, 3.9e6);
    }

    #[test]
    fn a_latency_knee_ends_the_series_though_the_load_still_follows() {
        // 20 ms at best: the knee is at max(4 x 20, 20 + 250) = 270 ms.
        assert_eq!(latency_limit(20.0), 270.0);
        assert_eq!(latency_limit(100.0), 400.0);
        let steps = [
            step(1e3, 1e3, 20.0),
            step(2e3, 2e3, 260.0),
            step(4e3, 4e3, 280.0),
        ];
        let knee = find_knee(&steps).unwrap();
        assert_eq!((knee.step, knee.first_over), (1, Some((2, Over::Slow))));
        assert_eq!(knee.capacity, 2e3 * 1.1);
    }

    #[test]
    fn the_baseline_is_the_lowest_p99_so_far() {
        // A stall at the first step (90 ms) would put the knee at 360 ms; the second step's
        // 10 ms puts it at 260 ms.
        let steps = [
            step(1e3, 1e3, 90.0),
            step(2e3, 2e3, 10.0),
            step(4e3, 4e3, 300.0),
        ];
        assert_eq!(verdicts(&steps), [None, None, Some(Over::Slow)]);
        assert_eq!(find_knee(&steps).unwrap().step, 1);
    }

    #[test]
    fn steps_after_the_first_over_do_not_count() {
        let steps = [
            step(1e3, 1e3, 20.0),
            step(2e3, 1e3, 20.0),
            step(4e3, 4e3, 20.0),
        ];
        assert_eq!(find_knee(&steps).unwrap().step, 0);
    }

    #[test]
    fn bounds_when_the_knee_is_outside_the_steps() {
        let never = [step(1e3, 1e3, 5.0), step(2e3, 2e3, 6.0)];
        let knee = find_knee(&never).unwrap();
        assert_eq!((knee.step, knee.bound), (1, Bound::NotReached));
        assert_eq!(knee.first_over, None);

        let at_once = [step(1e3, 0.5e3, 5.0), step(2e3, 0.5e3, 6.0)];
        let knee = find_knee(&at_once).unwrap();
        assert_eq!((knee.step, knee.bound), (0, Bound::FirstStepOver));

        assert_eq!(find_knee(&[]), None);
    }

    #[test]
    fn nothing_acknowledged_is_over() {
        let steps = [step(1e3, 1e3, 5.0), step(2e3, 2e3, f64::NAN)];
        assert_eq!(find_knee(&steps).unwrap().first_over, Some((1, Over::Slow)));
    }

    #[test]
    fn curve_runs_from_zero_through_the_knee_to_the_first_step_over() {
        let steps = [
            step(1e6, 1e6, 19.2),
            step(2e6, 2e6, 12.0), // noise: lower than before
            step(4e6, 4e6, 40.5),
            step(8e6, 5e6, 2_999.1),
            step(16e6, 5e6, 9_000.0), // past the first over: not on the curve
        ];
        let knee = find_knee(&steps).unwrap();
        assert_eq!(knee.step, 2);
        let curve = latency_curve(&steps, &knee);
        assert_eq!(
            curve,
            vec![(0.0, 20), (0.25, 20), (0.5, 20), (1.0, 41), (2.0, 3_000)]
        );
    }

    #[test]
    fn the_file_has_the_gateways_field_names() {
        let file = CapacityFile {
            per_broker: PerBroker {
                bytes_in_per_second: 1,
                bytes_out_per_second: 2,
                requests_per_second: 3,
                connections: 4,
            },
            start_seconds: 1,
            drain_seconds: DRAIN_SECONDS,
            price_per_broker_hour: "0.21".into(),
            latency_ms: vec![(0.0, 2), (1.0, 50)],
        };
        let value: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "per_broker": {"bytes_in_per_second": 1, "bytes_out_per_second": 2,
                               "requests_per_second": 3, "connections": 4},
                "start_seconds": 1, "drain_seconds": 15, "price_per_broker_hour": "0.21",
                "latency_ms": [[0.0, 2], [1.0, 50]]})
        );
    }

    #[test]
    fn whole_figures_are_at_least_one() {
        assert_eq!(whole(0.2), None);
        assert_eq!(whole(f64::NAN), None);
        assert_eq!(whole(1_234.6), Some(1_235));
    }
}
