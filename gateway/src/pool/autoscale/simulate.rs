//! Replaying a trace against a policy: what the pool would have cost and how often it would
//! have been short, decided by the same [`Decider`] as the live autoscaler.
//!
//! The model: a broker the decider adds serves after `start_seconds`; one it removes stops
//! serving at once (it leaves the routing first) and is paid for `drain_seconds` more. The
//! pool is short whenever the load of any signal exceeds what its serving brokers can carry;
//! latency follows the capacity file's curve of utilization. Money is `rust_decimal`, time is
//! whole seconds.

use std::collections::VecDeque;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::decide::{Decider, Decision, Load};
use super::policy::{Policy, Signal};
use super::trace::Sample;

/// One broker's capacity and costs (CONTRACT: the capacity file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// What one broker carries at most, per signal.
    pub per_broker: Load,
    /// From the decision to serving.
    pub start_seconds: u32,
    /// From the decision to stopped, paid for but no longer serving.
    pub drain_seconds: u32,
    /// A decimal string, e.g. "0.21".
    pub price_per_broker_hour: String,
    /// Latency (ms) at utilizations from 0 upwards: `[[0.0, 2], [0.8, 5], [1.0, 50]]`;
    /// interpolated between points, the last point's beyond it.
    pub latency_ms: Vec<(f64, u32)>,
}

impl Capacity {
    /// Reads a capacity file and checks it.
    pub fn from_json(text: &str) -> Result<Capacity, String> {
        let c: Capacity = serde_json::from_str(text).map_err(|e| format!("capacity: {e}"))?;
        c.price()?;
        if Signal::ALL.iter().any(|s| c.per_broker.get(*s) == 0) {
            return Err("capacity: every per_broker figure must be above 0".into());
        }
        if c.latency_ms.is_empty()
            || c.latency_ms.windows(2).any(|w| w[1].0 <= w[0].0)
            || c.latency_ms[0].0 < 0.0
        {
            return Err(
                "capacity: latency_ms needs points of increasing utilization from 0 up".into(),
            );
        }
        Ok(c)
    }

    fn price(&self) -> Result<Decimal, String> {
        Decimal::from_str(&self.price_per_broker_hour)
            .ok()
            .filter(|p| !p.is_sign_negative())
            .ok_or_else(|| {
                format!(
                    "capacity: price_per_broker_hour {:?} is not a decimal of at least 0",
                    self.price_per_broker_hour
                )
            })
    }

    /// Brokers needed to carry `load` at full capacity, on the busiest signal.
    pub fn brokers_for(&self, load: &Load) -> u32 {
        Signal::ALL
            .iter()
            .map(|s| load.get(*s).div_ceil(self.per_broker.get(*s)))
            .max()
            .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX).max(1))
    }

    /// Load over what `serving` brokers carry, on the busiest signal (infinite without any).
    fn utilization(&self, load: &Load, serving: u32) -> f64 {
        Signal::ALL
            .iter()
            .map(|s| load.get(*s) as f64 / (f64::from(serving) * self.per_broker.get(*s) as f64))
            .fold(0.0, f64::max)
    }

    fn latency(&self, utilization: f64) -> u32 {
        let curve = &self.latency_ms;
        match curve.iter().position(|(u, _)| *u >= utilization) {
            Some(0) => curve[0].1,
            Some(i) => {
                let ((u0, l0), (u1, l1)) = (curve[i - 1], curve[i]);
                let share = (utilization - u0) / (u1 - u0);
                (f64::from(l0) + share * (f64::from(l1) - f64::from(l0))).round() as u32
            }
            None => curve[curve.len() - 1].1,
        }
    }
}

/// What a policy would have done over a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// Every decision that changed the pool's size.
    pub decisions: Vec<Decision>,
    /// Brokers serving (the pool's capacity) from each time on, at every change: the first
    /// entry is the trace's start. A decision to grow serves `start_seconds` later.
    pub serving: Vec<(u64, u32)>,
    /// Brokers paid for (starting, serving, draining) times seconds.
    pub broker_seconds: u64,
    /// `broker_seconds` priced at the capacity file's rate, exact.
    pub cost: Decimal,
    /// Seconds in which some signal's load exceeded what the serving brokers carry.
    pub short_seconds: u64,
    /// The highest utilization of the serving brokers.
    pub max_utilization: f64,
    /// The latency 99% of the trace's time was at or under, from the capacity curve.
    pub p99_latency_ms: u32,
    /// Scale-ups followed by a scale-down (or the reverse) within [`REVERSAL_HORIZON`]: the
    /// thrashing operators complain about.
    pub reversals: usize,
}

/// Two decisions in opposite directions this close count as a reversal: a broker started and
/// drained within ten minutes did little but move partitions twice.
pub const REVERSAL_HORIZON: u64 = 600;

/// Replays `trace` against `policy` on brokers of `capacity`, from the trace's first recorded
/// pool size, or else the size the policy asks for at its first sample.
pub fn simulate(trace: &[Sample], policy: &Policy, capacity: &Capacity) -> Outcome {
    let price = capacity.price().unwrap_or_default();
    let mut decider = Decider::new(policy.clone());
    // A recorded trace starts with the pool it had; a synthetic one with the pool the policy
    // asks for its first sample, as if it had been running before (a cold start at the
    // minimum would count every policy short for its first broker start).
    let mut desired = match trace.first() {
        Some(s) if s.brokers > 0 => s.brokers,
        Some(s) => policy
            .target_per_broker
            .iter()
            .map(|(signal, target)| s.load().get(signal).div_ceil(target))
            .max()
            .map_or(policy.min_brokers, |n| {
                u32::try_from(n)
                    .unwrap_or(u32::MAX)
                    .clamp(policy.min_brokers, policy.max_brokers)
            }),
        None => policy.min_brokers,
    };
    let mut serving = desired;
    // Brokers on their way in (serving from), and on their way out (paid until).
    let mut starting: VecDeque<u64> = VecDeque::new();
    let mut draining: VecDeque<u64> = VecDeque::new();
    let mut decisions: Vec<Decision> = Vec::new();
    let mut next_decision = trace.first().map_or(0, |s| s.time);
    let (mut broker_seconds, mut short_seconds) = (0u64, 0u64);
    let mut max_utilization = 0.0f64;
    let mut latencies: Vec<(u32, u64)> = Vec::with_capacity(trace.len());
    let mut timeline: Vec<(u64, u32)> = Vec::new();

    for (i, sample) in trace.iter().enumerate() {
        let now = sample.time;
        let step = trace.get(i + 1).map_or(0, |n| n.time - now);
        while starting.front().is_some_and(|t| *t <= now) {
            starting.pop_front();
            serving += 1;
        }
        while draining.front().is_some_and(|t| *t <= now) {
            draining.pop_front();
        }
        let load = sample.load();
        if now >= next_decision {
            let step = decider.step(now, desired, &load);
            if step.to != desired {
                let decision = decider.explain(now, desired, &load, &step);
                let to = step.to;
                if to > desired {
                    let ready = now + u64::from(capacity.start_seconds);
                    starting.extend(std::iter::repeat_n(ready, (to - desired) as usize));
                } else {
                    // Brokers not started yet are cancelled first, then serving ones drain.
                    let mut fewer = desired - to;
                    while fewer > 0 && starting.pop_back().is_some() {
                        fewer -= 1;
                    }
                    serving -= fewer;
                    let until = now + u64::from(capacity.drain_seconds);
                    draining.extend(std::iter::repeat_n(until, fewer as usize));
                }
                desired = to;
                decisions.push(decision);
            }
            next_decision = now + u64::from(policy.interval_seconds);
        }
        if timeline.last().is_none_or(|(_, n)| *n != serving) {
            timeline.push((now, serving));
        }
        let paid = u64::from(serving) + starting.len() as u64 + draining.len() as u64;
        broker_seconds += paid * step;
        let u = capacity.utilization(&load, serving);
        max_utilization = max_utilization.max(u);
        if u > 1.0 {
            short_seconds += step;
        }
        latencies.push((capacity.latency(u), step));
    }

    let reversals = decisions
        .windows(2)
        .filter(|w| {
            let up = |d: &Decision| d.to_brokers > d.from_brokers;
            up(&w[0]) != up(&w[1]) && w[1].time - w[0].time <= REVERSAL_HORIZON
        })
        .count();
    Outcome {
        cost: Decimal::from(broker_seconds) * price / Decimal::from(3_600),
        decisions,
        serving: timeline,
        broker_seconds,
        short_seconds,
        max_utilization,
        p99_latency_ms: percentile(latencies, 99),
        reversals,
    }
}

/// The value at or under which `pct`% of the weight lies.
fn percentile(mut weighted: Vec<(u32, u64)>, pct: u64) -> u32 {
    weighted.sort_unstable();
    let total: u64 = weighted.iter().map(|(_, w)| w).sum();
    let mut seen = 0;
    for (value, weight) in &weighted {
        seen += weight;
        if seen * 100 >= total * pct {
            return *value;
        }
    }
    weighted.last().map_or(0, |(v, _)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::autoscale::policy::{ScaleDown, ScaleUp, Targets};

    fn capacity() -> Capacity {
        Capacity::from_json(
            r#"{"per_broker": {"bytes_in_per_second": 100, "bytes_out_per_second": 1000,
                               "requests_per_second": 1000, "connections": 1000},
                "start_seconds": 20, "drain_seconds": 10, "price_per_broker_hour": "0.36",
                "latency_ms": [[0.0, 2], [0.5, 2], [1.0, 12]]}"#,
        )
        .unwrap()
    }

    fn policy() -> Policy {
        Policy {
            min_brokers: 1,
            max_brokers: 4,
            interval_seconds: 10,
            target_per_broker: Targets {
                bytes_in_per_second: Some(100),
                ..Targets::default()
            },
            scale_up: ScaleUp {
                stabilization_seconds: 0,
                max_step: 4,
            },
            scale_down: ScaleDown {
                stabilization_seconds: 30,
                max_step: 4,
                period_seconds: 0,
            },
            ..Policy::default()
        }
    }

    fn trace(loads: &[u64]) -> Vec<Sample> {
        loads
            .iter()
            .enumerate()
            .map(|(i, l)| Sample {
                time: i as u64 * 10,
                bytes_in_per_second: *l,
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn a_small_trace_costs_and_falls_short_as_computed_by_hand() {
        // 10 s steps: 50, 300 (x4), 50 (x6). At t=10 the decider asks for 3; they serve from
        // t=30 (start 20 s), so t=10 and t=20 are short (300 on 1 broker). The load falls at
        // t=50; the 30 s window has seen only lower recommendations at t=80, when 2 of the 3
        // drain for 10 s.
        let out = simulate(
            &trace(&[50, 300, 300, 300, 300, 50, 50, 50, 50, 50, 50]),
            &policy(),
            &capacity(),
        );
        let changes: Vec<(u64, u32, u32)> = out
            .decisions
            .iter()
            .map(|d| (d.time, d.from_brokers, d.to_brokers))
            .collect();
        assert_eq!(changes, [(10, 1, 3), (80, 3, 1)]);
        // The two new brokers serve 20 s after the decision; the drained ones stop at once.
        assert_eq!(out.serving, [(0, 1), (30, 3), (80, 1)]);
        // Paid brokers per 10 s step (the last sample has no step): 1, 3 (1 serving + 2
        // starting), 3, 3, 3, 3, 3, 3, then 3 at t=80 (1 serving + 2 draining), 1 at t=90.
        assert_eq!(out.broker_seconds, 10 * (1 + 3 * 8 + 1));
        assert_eq!(
            out.cost,
            Decimal::from(260) * Decimal::from_str("0.36").unwrap() / Decimal::from(3600)
        );
        assert_eq!(out.cost, Decimal::from_str("0.026").unwrap());
        assert_eq!(out.short_seconds, 20);
        assert_eq!(out.max_utilization, 3.0);
        // Up at 10 s and down at 80 s: two brokers started and drained within ten minutes.
        assert_eq!(out.reversals, 1);
        // 40 s at 12 ms (20 s short, 20 s at full capacity), 60 s at 2 ms: p99 is 12 ms.
        assert_eq!(out.p99_latency_ms, 12);
    }

    #[test]
    fn the_latency_curve_is_interpolated_and_flat_beyond_its_ends() {
        let c = capacity();
        assert_eq!(c.latency(0.2), 2);
        assert_eq!(c.latency(0.75), 7);
        assert_eq!(c.latency(3.0), 12);
    }

    #[test]
    fn a_short_scale_down_window_thrashes_on_a_bursty_load_and_the_outcome_says_so() {
        // A minute at 250, a minute at 50, for an hour.
        let loads: Vec<u64> = (0..360)
            .map(|i| if (i / 6) % 2 == 0 { 250 } else { 50 })
            .collect();
        let bursty = trace(&loads);
        let mut hasty = policy();
        hasty.scale_down.stabilization_seconds = 0;
        let mut calm = policy();
        calm.scale_down.stabilization_seconds = 300;
        let hasty = simulate(&bursty, &hasty, &capacity());
        let calm = simulate(&bursty, &calm, &capacity());
        // Both start sized for the first minute (3). Hasty: down to 1 and back up to 3 every
        // two minutes; calm: never down, since every 300 s window holds a busy minute.
        assert!(calm.decisions.is_empty(), "{:?}", calm.decisions);
        assert_eq!((calm.reversals, calm.short_seconds), (0, 0));
        assert!(hasty.reversals >= 50, "{}", hasty.reversals);
        // Thrashing is paid for in time short (each rise waits out the 20 s start again),
        // not saved in money: the drained brokers are paid for 10 s more each time.
        assert!(hasty.short_seconds > calm.short_seconds);
    }

    #[test]
    fn bad_capacity_files_are_refused() {
        for (json, says) in [
            (
                r#"{"per_broker": {"bytes_in_per_second": 0, "bytes_out_per_second": 1, "requests_per_second": 1, "connections": 1}, "start_seconds": 1, "drain_seconds": 1, "price_per_broker_hour": "1", "latency_ms": [[0.0, 1]]}"#,
                "above 0",
            ),
            (
                r#"{"per_broker": {"bytes_in_per_second": 1, "bytes_out_per_second": 1, "requests_per_second": 1, "connections": 1}, "start_seconds": 1, "drain_seconds": 1, "price_per_broker_hour": "cheap", "latency_ms": [[0.0, 1]]}"#,
                "not a decimal",
            ),
            (
                r#"{"per_broker": {"bytes_in_per_second": 1, "bytes_out_per_second": 1, "requests_per_second": 1, "connections": 1}, "start_seconds": 1, "drain_seconds": 1, "price_per_broker_hour": "1", "latency_ms": [[0.5, 1], [0.2, 3]]}"#,
                "increasing utilization",
            ),
        ] {
            let err = Capacity::from_json(json).expect_err(json);
            assert!(err.contains(says), "{err}");
        }
    }
}
