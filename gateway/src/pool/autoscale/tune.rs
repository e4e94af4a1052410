//! The tuner: every policy of a grid replayed against a trace ([`super::simulate`]), and the
//! cheapest that meets the operator's service objectives recommended.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::policy::{Policy, ScaleDown, ScaleUp, Targets};
use super::simulate::{simulate, Capacity, Outcome};
use super::trace::Sample;

/// The values to try, per policy field. Every combination is one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grid {
    pub min_brokers: Vec<u32>,
    /// Empty: from the trace, a quarter above what its busiest sample needs.
    pub max_brokers: Vec<u32>,
    /// The target per broker, as a share of a broker's capacity, for every signal.
    pub target_utilization: Vec<f64>,
    pub tolerance: Vec<f64>,
    pub scale_up_stabilization_seconds: Vec<u32>,
    pub scale_up_max_step: Vec<u32>,
    pub scale_down_stabilization_seconds: Vec<u32>,
    pub scale_down_max_step: Vec<u32>,
    pub scale_down_period_seconds: Vec<u32>,
}

impl Default for Grid {
    /// 720 candidates around what the stateless brokers' vendors and HPA recommend: CPU-like
    /// targets of 50-90%, HPA's 10% tolerance and its neighbours, windows from none to 30
    /// minutes (WarpStream's scale-down window).
    fn default() -> Self {
        Grid {
            min_brokers: vec![1],
            max_brokers: Vec::new(),
            target_utilization: vec![0.5, 0.6, 0.7, 0.8, 0.9],
            tolerance: vec![0.05, 0.1, 0.2],
            scale_up_stabilization_seconds: vec![0, 30, 120],
            scale_up_max_step: vec![2, 4],
            scale_down_stabilization_seconds: vec![0, 300, 900, 1_800],
            scale_down_max_step: vec![1, 2],
            scale_down_period_seconds: vec![60],
        }
    }
}

/// What the recommended policy must achieve over the trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Objectives {
    /// Seconds short of capacity at most.
    pub short_seconds: u64,
    /// p99 latency at most, from the capacity curve.
    pub p99_latency_ms: Option<u32>,
    /// Reversals (thrashing) at most.
    pub reversals: Option<usize>,
}

/// One candidate's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub policy: Policy,
    pub cost: Decimal,
    pub broker_seconds: u64,
    pub short_seconds: u64,
    pub p99_latency_ms: u32,
    pub scale_events: usize,
    pub reversals: usize,
    pub meets_objectives: bool,
}

/// The tuner's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Tuning {
    pub objectives: Objectives,
    /// Every candidate, cheapest first among those meeting the objectives, then the rest by
    /// time short of capacity.
    pub candidates: Vec<Candidate>,
    /// Whether the first candidate meets the objectives (if none does, it is the one least
    /// short of capacity).
    pub met: bool,
}

impl Grid {
    /// Every policy of the grid, checked; `max_brokers` from the trace when the grid has none.
    pub fn policies(&self, trace: &[Sample], capacity: &Capacity) -> Result<Vec<Policy>, String> {
        let needed = trace
            .iter()
            .map(|s| capacity.brokers_for(&s.load()))
            .max()
            .unwrap_or(1);
        let derived = [(needed + needed.div_ceil(4)).max(2)];
        let max_brokers: &[u32] = if self.max_brokers.is_empty() {
            &derived
        } else {
            &self.max_brokers
        };
        let mut out = Vec::new();
        for &min in &self.min_brokers {
            for &max in max_brokers {
                for &share in &self.target_utilization {
                    for &tolerance in &self.tolerance {
                        for &up_window in &self.scale_up_stabilization_seconds {
                            for &up_step in &self.scale_up_max_step {
                                for &down_window in &self.scale_down_stabilization_seconds {
                                    for &down_step in &self.scale_down_max_step {
                                        for &period in &self.scale_down_period_seconds {
                                            let target =
                                                |c: u64| Some(((c as f64 * share) as u64).max(1));
                                            let per = &capacity.per_broker;
                                            let policy = Policy {
                                                min_brokers: min,
                                                max_brokers: max,
                                                target_per_broker: Targets {
                                                    bytes_in_per_second: target(
                                                        per.bytes_in_per_second,
                                                    ),
                                                    bytes_out_per_second: target(
                                                        per.bytes_out_per_second,
                                                    ),
                                                    requests_per_second: target(
                                                        per.requests_per_second,
                                                    ),
                                                    connections: target(per.connections),
                                                },
                                                tolerance,
                                                scale_up: ScaleUp {
                                                    stabilization_seconds: up_window,
                                                    max_step: up_step,
                                                },
                                                scale_down: ScaleDown {
                                                    stabilization_seconds: down_window,
                                                    max_step: down_step,
                                                    period_seconds: period,
                                                },
                                                ..Policy::default()
                                            };
                                            policy.validate().map_err(|e| {
                                                format!("grid: a combination is no policy: {e}")
                                            })?;
                                            out.push(policy);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if out.is_empty() {
            return Err("grid: some field has no values, so there is no candidate".into());
        }
        Ok(out)
    }
}

/// Replays `trace` against every policy of `grid`, on every core, and ranks them.
pub fn tune(
    trace: &[Sample],
    capacity: &Capacity,
    grid: &Grid,
    objectives: Objectives,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Tuning, String> {
    let policies = grid.policies(trace, capacity)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(policies.len());
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = policies.len();
    let chunk = total.div_ceil(threads);
    let objectives = &objectives;
    let mut candidates: Vec<Candidate> = std::thread::scope(|scope| {
        let workers: Vec<_> = policies
            .chunks(chunk)
            .map(|chunk| {
                let done = &done;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|policy| {
                            let o = simulate(trace, policy, capacity);
                            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                            progress(n, total);
                            candidate(policy.clone(), &o, objectives)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a simulation panicked"))
            .collect()
    });
    candidates.sort_by(|a, b| {
        b.meets_objectives
            .cmp(&a.meets_objectives)
            .then_with(|| {
                if a.meets_objectives {
                    a.cost.cmp(&b.cost)
                } else {
                    a.short_seconds
                        .cmp(&b.short_seconds)
                        .then(a.cost.cmp(&b.cost))
                }
            })
            .then(a.reversals.cmp(&b.reversals))
            .then(a.scale_events.cmp(&b.scale_events))
    });
    let met = candidates.first().is_some_and(|c| c.meets_objectives);
    Ok(Tuning {
        objectives: *objectives,
        candidates,
        met,
    })
}

fn candidate(policy: Policy, o: &Outcome, objectives: &Objectives) -> Candidate {
    let meets = o.short_seconds <= objectives.short_seconds
        && objectives
            .p99_latency_ms
            .is_none_or(|p| o.p99_latency_ms <= p)
        && objectives.reversals.is_none_or(|r| o.reversals <= r);
    Candidate {
        policy,
        cost: o.cost,
        broker_seconds: o.broker_seconds,
        short_seconds: o.short_seconds,
        p99_latency_ms: o.p99_latency_ms,
        scale_events: o.decisions.len(),
        reversals: o.reversals,
        meets_objectives: meets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::autoscale::decide::Load;
    use crate::pool::autoscale::trace::{synthetic, Shape};

    fn capacity() -> Capacity {
        Capacity::from_json(
            r#"{"per_broker": {"bytes_in_per_second": 100, "bytes_out_per_second": 1000000,
                               "requests_per_second": 1000000, "connections": 1000000},
                "start_seconds": 60, "drain_seconds": 60, "price_per_broker_hour": "1",
                "latency_ms": [[0.0, 2], [1.0, 20]]}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_cheapest_policy_that_is_never_short_is_recommended() {
        let peak = Load {
            bytes_in_per_second: 400,
            ..Load::default()
        };
        let day = synthetic(Shape::Diurnal, 86_400, 60, &peak);
        let objectives = Objectives {
            short_seconds: 0,
            p99_latency_ms: None,
            reversals: None,
        };
        let tuning = tune(&day, &capacity(), &Grid::default(), objectives, &|_, _| {}).unwrap();
        assert_eq!(tuning.candidates.len(), 720);
        assert!(tuning.met);
        let best = &tuning.candidates[0];
        assert_eq!(best.short_seconds, 0);
        // Nothing that meets the objectives is cheaper, and the loosest targets (90%) are
        // short somewhere on a day with a 60 s broker start.
        assert!(tuning
            .candidates
            .iter()
            .filter(|c| c.meets_objectives)
            .all(|c| c.cost >= best.cost));
        assert!(tuning.candidates.iter().any(|c| !c.meets_objectives));
        // The pool must reach 4 brokers at the peak: max_brokers derived from the trace.
        assert_eq!(best.policy.max_brokers, 5);
    }

    #[test]
    fn a_grid_without_values_or_with_an_impossible_combination_is_refused() {
        let day = synthetic(Shape::Flat, 600, 60, &Load::default());
        let empty = Grid {
            tolerance: Vec::new(),
            ..Grid::default()
        };
        assert!(empty
            .policies(&day, &capacity())
            .unwrap_err()
            .contains("no values"));
        let impossible = Grid {
            min_brokers: vec![9],
            max_brokers: vec![3],
            ..Grid::default()
        };
        assert!(impossible
            .policies(&day, &capacity())
            .unwrap_err()
            .contains("max_brokers (3) must be at least min_brokers (9)"));
    }
}
