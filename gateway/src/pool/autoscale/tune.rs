//! The tuner: every policy of a grid replayed against a trace ([`super::simulate`]), and the
//! cheapest that meets the operator's service objectives recommended, once it has been
//! re-checked under [`Stress`] (brokers slower to start, more load than the trace had).
//!
//! Beside the recommendation: every candidate's figures and margin (what the tenants' usage
//! bills, [`super::trace::Revenue`], minus the pool's cost), the [`pareto_front`] of cost
//! against time short of capacity, and the recommendation's [`diff`] to the current policy.

use std::sync::atomic::{AtomicUsize, Ordering};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::decide::Load;
use super::policy::{Policy, ScaleDown, ScaleUp, Targets};
use super::simulate::{simulate, Capacity, Outcome};
use super::trace::Sample;

/// The values to try, per policy field. Every combination is one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grid {
    pub min_brokers: Vec<u32>,
    /// Empty: from the trace, a quarter above what its busiest sample needs under stress.
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

impl Objectives {
    fn met_by(&self, o: &Outcome) -> bool {
        o.short_seconds <= self.short_seconds
            && self.p99_latency_ms.is_none_or(|p| o.p99_latency_ms <= p)
            && self.reversals.is_none_or(|r| o.reversals <= r)
    }
}

/// The harder conditions a recommendation must also meet the objectives under: the issue's
/// "start time doubled, load +20%" by default. A trace is one month of the past; the next may
/// be busier, and brokers start slower on a bad day (image pulls, a cold cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stress {
    /// Broker start seconds are multiplied by this.
    pub start_multiplier: u32,
    /// Every load signal of every sample is raised by this many percent (rounded up).
    pub load_percent: u32,
}

impl Default for Stress {
    fn default() -> Self {
        Stress {
            start_multiplier: 2,
            load_percent: 20,
        }
    }
}

impl Stress {
    /// `load` raised by `load_percent`.
    pub fn load(&self, load: &Load) -> Load {
        let up = |n: u64| {
            // u128: no overflow for any u64 load; the result is clamped back.
            let raised = (u128::from(n) * (100 + u128::from(self.load_percent))).div_ceil(100);
            u64::try_from(raised).unwrap_or(u64::MAX)
        };
        Load {
            bytes_in_per_second: up(load.bytes_in_per_second),
            bytes_out_per_second: up(load.bytes_out_per_second),
            requests_per_second: up(load.requests_per_second),
            connections: up(load.connections),
        }
    }

    /// The trace and capacity under stress. The recorded pool sizes and partitions are kept:
    /// only the load and the start time are harder.
    pub fn apply(&self, trace: &[Sample], capacity: &Capacity) -> (Vec<Sample>, Capacity) {
        let trace = trace
            .iter()
            .map(|s| {
                let load = self.load(&s.load());
                Sample {
                    bytes_in_per_second: load.bytes_in_per_second,
                    bytes_out_per_second: load.bytes_out_per_second,
                    requests_per_second: load.requests_per_second,
                    connections: load.connections,
                    ..*s
                }
            })
            .collect();
        let capacity = Capacity {
            start_seconds: capacity.start_seconds.saturating_mul(self.start_multiplier),
            ..capacity.clone()
        };
        (trace, capacity)
    }

    /// In words, for the report: `broker start x2 (30 s -> 60 s), load +20%`.
    pub fn describe(&self, capacity: &Capacity) -> String {
        format!(
            "broker start x{} ({} s -> {} s), load +{}%",
            self.start_multiplier,
            capacity.start_seconds,
            capacity.start_seconds.saturating_mul(self.start_multiplier),
            self.load_percent
        )
    }
}

/// One policy's figures over a trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub cost: Decimal,
    pub broker_seconds: u64,
    pub short_seconds: u64,
    pub p99_latency_ms: u32,
    pub scale_events: usize,
    pub reversals: usize,
    pub meets_objectives: bool,
}

impl Figures {
    pub fn of(o: &Outcome, objectives: &Objectives) -> Figures {
        Figures {
            cost: o.cost,
            broker_seconds: o.broker_seconds,
            short_seconds: o.short_seconds,
            p99_latency_ms: o.p99_latency_ms,
            scale_events: o.decisions.len(),
            reversals: o.reversals,
            meets_objectives: objectives.met_by(o),
        }
    }
}

/// One candidate's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub policy: Policy,
    /// On the trace as it was.
    #[serde(flatten)]
    pub figures: Figures,
    /// The trace's revenue minus this candidate's cost.
    pub margin: Decimal,
    /// Under [`Stress`]; only for the candidates the search re-checked (see
    /// [`Tuning::stress_checked`]).
    pub under_stress: Option<Figures>,
    /// No other candidate is at most as dear and at most as short, and better in one.
    pub on_pareto_front: bool,
}

/// What the search is over and what its answer must achieve.
#[derive(Debug, Clone)]
pub struct Tuner {
    pub grid: Grid,
    pub objectives: Objectives,
    pub stress: Stress,
    /// The policy in force: fields the grid does not vary are taken from it.
    pub current: Policy,
    /// What the tenants' usage over the trace bills ([`super::trace::Revenue::total`]).
    pub revenue: Decimal,
}

/// The tuner's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Tuning {
    pub objectives: Objectives,
    pub stress: Stress,
    /// [`Stress::describe`].
    pub stress_applied: String,
    pub revenue: Decimal,
    /// Every candidate ranked on the trace: cheapest first among those meeting the
    /// objectives, then the rest by time short of capacity.
    pub candidates: Vec<Candidate>,
    /// The recommendation, an index into `candidates`: the first (cheapest) that meets the
    /// objectives both on the trace and under stress. If none meeting them on the trace does
    /// under stress, the one of those least short under stress; if none meets them on the
    /// trace, the first.
    pub recommended: usize,
    /// Whether the recommendation meets the objectives on the trace.
    pub met: bool,
    /// And under stress.
    pub met_under_stress: bool,
    /// How many candidates were re-checked under stress (in rank order until one passed).
    pub stress_checked: usize,
    /// Indices into `candidates` of the Pareto front of cost against seconds short of
    /// capacity, cheapest first.
    pub pareto_front: Vec<usize>,
}

impl Tuning {
    pub fn recommendation(&self) -> &Candidate {
        &self.candidates[self.recommended]
    }
}

impl Grid {
    /// Every policy of the grid, checked. Fields the grid does not vary (`interval_seconds`,
    /// `mode`) are `base`'s, so the recommendation differs from the current policy only where
    /// it was tuned. `max_brokers`, when the grid has none, is a quarter above what the
    /// trace's busiest sample needs under `stress` (a recommendation capped below the stressed
    /// peak could never pass the stress check).
    pub fn policies(
        &self,
        trace: &[Sample],
        capacity: &Capacity,
        base: &Policy,
        stress: &Stress,
    ) -> Result<Vec<Policy>, String> {
        let needed = trace
            .iter()
            .map(|s| capacity.brokers_for(&stress.load(&s.load())))
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
                                                ..base.clone()
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

/// Replays `trace` against every policy of the tuner's grid, on every core, ranks them, and
/// re-checks the cheapest under stress until one passes.
pub fn tune(
    trace: &[Sample],
    capacity: &Capacity,
    tuner: &Tuner,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Tuning, String> {
    let objectives = &tuner.objectives;
    let policies = tuner
        .grid
        .policies(trace, capacity, &tuner.current, &tuner.stress)?;
    let done = AtomicUsize::new(0);
    let total = policies.len();
    let mut candidates: Vec<Candidate> = in_parallel(&policies, |policy| {
        let figures = Figures::of(&simulate(trace, policy, capacity), objectives);
        progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
        Candidate {
            policy: policy.clone(),
            figures,
            margin: tuner.revenue - figures.cost,
            under_stress: None,
            on_pareto_front: false,
        }
    });
    candidates.sort_by(|a, b| {
        let (a, b) = (&a.figures, &b.figures);
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

    // Under stress, in rank order, a batch of one per core at a time: the cheapest candidates
    // usually pass (or the first batch shows they do not), so few are simulated twice.
    let (stressed_trace, stressed_capacity) = tuner.stress.apply(trace, capacity);
    let meeting = candidates
        .iter()
        .take_while(|c| c.figures.meets_objectives)
        .count();
    let batch = threads(1_000);
    let mut checked = 0;
    let mut passed = None;
    while passed.is_none() && checked < meeting.max(1) {
        let to = (checked + batch).min(meeting.max(1)).min(candidates.len());
        let figures = in_parallel(&candidates[checked..to], |c| {
            Figures::of(
                &simulate(&stressed_trace, &c.policy, &stressed_capacity),
                objectives,
            )
        });
        for (c, f) in candidates[checked..to].iter_mut().zip(figures) {
            c.under_stress = Some(f);
        }
        passed = (checked..to).find(|&i| {
            candidates[i].figures.meets_objectives
                && candidates[i]
                    .under_stress
                    .is_some_and(|f| f.meets_objectives)
        });
        checked = to;
    }
    let recommended = passed.unwrap_or_else(|| {
        (0..checked)
            .min_by_key(|&i| {
                let f = candidates[i].under_stress.expect("checked under stress");
                (f.short_seconds, f.cost)
            })
            .unwrap_or(0)
    });

    let front = pareto_front(
        &candidates
            .iter()
            .map(|c| (c.figures.cost, c.figures.short_seconds))
            .collect::<Vec<_>>(),
    );
    for &i in &front {
        candidates[i].on_pareto_front = true;
    }
    let chosen = &candidates[recommended];
    Ok(Tuning {
        objectives: *objectives,
        stress: tuner.stress,
        stress_applied: tuner.stress.describe(capacity),
        revenue: tuner.revenue,
        met: chosen.figures.meets_objectives,
        met_under_stress: chosen.under_stress.is_some_and(|f| f.meets_objectives),
        recommended,
        stress_checked: checked,
        pareto_front: front,
        candidates,
    })
}

/// Worker threads for `jobs` jobs: one per core, no more than jobs.
fn threads(jobs: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs)
        .max(1)
}

/// `f` over `items` on every core, results in the items' order. Workers take the next item
/// as they finish one, so a slow part of the list does not hold one core while others idle.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a simulation panicked"))
            .collect()
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The Pareto front of `(cost, violation)` points, both to be as low as possible: the indices
/// of the points no other point dominates (at most as dear and at most as short, better in
/// one), cheapest first. Points with the same figures are all on it, or all off.
pub fn pareto_front<V: Ord + Copy>(points: &[(Decimal, V)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| points[a].cmp(&points[b]).then(a.cmp(&b)));
    let mut front = Vec::new();
    // The least violation of any strictly cheaper point.
    let mut best: Option<V> = None;
    let mut i = 0;
    while i < order.len() {
        let cost = points[order[i]].0;
        let group_end = order[i..]
            .iter()
            .position(|&j| points[j].0 != cost)
            .map_or(order.len(), |n| i + n);
        // Sorted by violation within a cost: the group's first has its least.
        let least = points[order[i]].1;
        if best.is_none_or(|b| least < b) {
            front.extend(
                order[i..group_end]
                    .iter()
                    .take_while(|&&j| points[j].1 == least),
            );
            best = Some(least);
        }
        i = group_end;
    }
    front
}

/// One field that differs between two policies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The field's path in the policy file, e.g. `scale_down.stabilization_seconds`.
    pub field: String,
    /// `null` for a target the policy does not follow.
    pub current: serde_json::Value,
    pub recommended: serde_json::Value,
}

/// Field by field, where `recommended` differs from `current`, in the policy file's field
/// names (sorted).
pub fn diff(current: &Policy, recommended: &Policy) -> Vec<Change> {
    fn leaves(
        prefix: &str,
        value: &serde_json::Value,
        out: &mut std::collections::BTreeMap<String, serde_json::Value>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&path, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let flat = |p: &Policy| {
        let mut out = std::collections::BTreeMap::new();
        leaves(
            "",
            &serde_json::to_value(p).expect("a policy is JSON"),
            &mut out,
        );
        out
    };
    let (mut a, mut b) = (flat(current), flat(recommended));
    // Targets a policy does not follow are absent from its JSON: show them as null.
    for key in a.keys().chain(b.keys()).cloned().collect::<Vec<_>>() {
        a.entry(key.clone()).or_insert(serde_json::Value::Null);
        b.entry(key).or_insert(serde_json::Value::Null);
    }
    a.into_iter()
        .zip(b)
        .filter(|((_, x), (_, y))| x != y)
        .map(|((field, current), (_, recommended))| Change {
            field,
            current,
            recommended,
        })
        .collect()
}

/// A value of a [`Change`] as people read it: `null` as `not followed`.
pub fn describe_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "not followed".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A change as a line: `tolerance: 0.1 -> 0.05`.
pub fn describe_change(c: &Change) -> String {
    format!(
        "{}: {} -> {}",
        c.field,
        describe_value(&c.current),
        describe_value(&c.recommended)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::autoscale::trace::{synthetic, Shape};
    use std::str::FromStr;

    fn capacity() -> Capacity {
        Capacity::from_json(
            r#"{"per_broker": {"bytes_in_per_second": 100, "bytes_out_per_second": 1000000,
                               "requests_per_second": 1000000, "connections": 1000000},
                "start_seconds": 60, "drain_seconds": 60, "price_per_broker_hour": "1",
                "latency_ms": [[0.0, 2], [1.0, 20]]}"#,
        )
        .unwrap()
    }

    fn never_short() -> Objectives {
        Objectives {
            short_seconds: 0,
            p99_latency_ms: None,
            reversals: None,
        }
    }

    fn tuner(grid: Grid) -> Tuner {
        Tuner {
            grid,
            objectives: never_short(),
            stress: Stress::default(),
            current: Policy::default(),
            revenue: Decimal::from(100),
        }
    }

    fn day(peak_bytes_in: u64) -> Vec<Sample> {
        let peak = Load {
            bytes_in_per_second: peak_bytes_in,
            ..Load::default()
        };
        synthetic(Shape::Diurnal, 86_400, 60, &peak)
    }

    #[test]
    fn the_cheapest_policy_never_short_on_the_trace_and_under_stress_is_recommended() {
        let tuning = tune(&day(400), &capacity(), &tuner(Grid::default()), &|_, _| {}).unwrap();
        assert_eq!(tuning.candidates.len(), 720);
        assert!(tuning.met && tuning.met_under_stress);
        let best = tuning.recommendation();
        assert_eq!(best.figures.short_seconds, 0);
        assert_eq!(best.under_stress.unwrap().short_seconds, 0);
        assert_eq!(best.margin, Decimal::from(100) - best.figures.cost);
        // Every candidate ranked before it is cheaper on the trace and was found short under
        // stress; nothing meeting the objectives on the trace is cheaper.
        for c in &tuning.candidates[..tuning.recommended] {
            assert!(c.figures.meets_objectives && c.figures.cost <= best.figures.cost);
            assert!(!c.under_stress.unwrap().meets_objectives);
        }
        assert!(tuning
            .candidates
            .iter()
            .filter(|c| c.figures.meets_objectives)
            .all(|c| c.figures.cost >= tuning.candidates[0].figures.cost));
        // Only the ones looked at were simulated twice.
        let stressed = tuning
            .candidates
            .iter()
            .filter(|c| c.under_stress.is_some())
            .count();
        assert_eq!(stressed, tuning.stress_checked);
        assert!(tuning.stress_checked > tuning.recommended);
        assert!(tuning.stress_checked < 720);
        // The loosest targets (90%) are short somewhere on a day with a 60 s broker start.
        assert!(tuning
            .candidates
            .iter()
            .any(|c| !c.figures.meets_objectives));
        // The stressed peak (480) needs 5 brokers: max_brokers is a quarter above that.
        assert_eq!(best.policy.max_brokers, 7);
        assert_eq!(
            tuning.stress_applied,
            "broker start x2 (60 s -> 120 s), load +20%"
        );
        // The front runs from the cheapest candidate of all to the cheapest never short.
        let cheapest = tuning
            .candidates
            .iter()
            .map(|c| c.figures.cost)
            .min()
            .unwrap();
        assert_eq!(
            tuning.candidates[tuning.pareto_front[0]].figures.cost,
            cheapest
        );
        let last = &tuning.candidates[*tuning.pareto_front.last().unwrap()];
        assert_eq!(last.figures.short_seconds, 0);
        assert_eq!(last.figures.cost, tuning.candidates[0].figures.cost);
    }

    #[test]
    fn stress_can_change_the_recommendation() {
        // An hour at 70 bytes/s, then an hour at 90, on brokers of 100. A 90% target keeps one
        // broker throughout and is never short; under stress the second hour is 108 and it is
        // short while a second broker starts. A 60% target has two brokers from the start:
        // dearer, but never short under stress either, so it is recommended.
        let trace: Vec<Sample> = (0..120)
            .map(|i| Sample {
                time: i * 60,
                bytes_in_per_second: if i < 60 { 70 } else { 90 },
                ..Sample::default()
            })
            .collect();
        let grid = Grid {
            target_utilization: vec![0.6, 0.9],
            tolerance: vec![0.0],
            scale_up_stabilization_seconds: vec![0],
            scale_up_max_step: vec![2],
            scale_down_stabilization_seconds: vec![300],
            scale_down_max_step: vec![1],
            max_brokers: vec![4],
            ..Grid::default()
        };
        let tuning = tune(&trace, &capacity(), &tuner(grid), &|_, _| {}).unwrap();
        let loose = &tuning.candidates[0];
        assert_eq!(loose.policy.target_per_broker.bytes_in_per_second, Some(90));
        assert_eq!(loose.figures.short_seconds, 0);
        assert_eq!(loose.figures.broker_seconds, 119 * 60);
        // Short from the jump until the second broker serves 120 s later.
        assert_eq!(loose.under_stress.unwrap().short_seconds, 120);
        assert_eq!(tuning.recommended, 1);
        let chosen = tuning.recommendation();
        assert_eq!(
            chosen.policy.target_per_broker.bytes_in_per_second,
            Some(60)
        );
        assert_eq!(chosen.figures.broker_seconds, 2 * 119 * 60);
        assert_eq!(chosen.under_stress.unwrap().short_seconds, 0);
        assert!(tuning.met && tuning.met_under_stress);
        assert_eq!(tuning.stress_checked, 2);
        // Both are never short on the trace: only the cheaper is on the front.
        assert_eq!(tuning.pareto_front, [0]);
    }

    #[test]
    fn stress_raises_every_load_signal_and_doubles_the_start() {
        let trace = [Sample {
            time: 7,
            brokers: 3,
            bytes_in_per_second: 100,
            bytes_out_per_second: 101,
            requests_per_second: 0,
            connections: u64::MAX,
            partitions: 12,
        }];
        let (stressed, c) = Stress::default().apply(&trace, &capacity());
        assert_eq!(
            stressed,
            [Sample {
                time: 7,
                brokers: 3,
                bytes_in_per_second: 120,
                // 121.2, rounded up: the stress never comes out lighter than it says.
                bytes_out_per_second: 122,
                requests_per_second: 0,
                connections: u64::MAX,
                partitions: 12,
            }]
        );
        assert_eq!(c.start_seconds, 120);
        assert_eq!(c.drain_seconds, capacity().drain_seconds);
        let none = Stress {
            start_multiplier: 1,
            load_percent: 0,
        };
        assert_eq!(none.apply(&trace, &capacity()).0, trace);
    }

    #[test]
    fn the_pareto_front_keeps_the_points_nothing_beats_on_both_cost_and_shortness() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        let points = [
            (d("5"), 100u64), // 0: cheapest: on the front
            (d("6"), 100),    // 1: dearer and no less short than 0
            (d("7"), 40),     // 2: on the front
            (d("7"), 50),     // 3: as dear as 2 and shorter
            (d("9"), 0),      // 4: on the front
            (d("9.00"), 0),   // 5: the same point as 4: on it too
            (d("12"), 0),     // 6: dearer than 4 for nothing
            (d("8"), 30),     // 7: cheaper than 4, less short than 2: on the front
            (d("7.5"), 40),   // 8: as short as 2, dearer
        ];
        assert_eq!(pareto_front(&points), [0, 2, 7, 4, 5]);
        assert!(pareto_front::<u64>(&[]).is_empty());
        assert_eq!(pareto_front(&[(d("1"), 3u32)]), [0]);
    }

    #[test]
    fn the_diff_names_every_changed_field_by_its_path_in_the_policy_file() {
        let current = Policy::default();
        let mut recommended = Policy {
            max_brokers: 7,
            tolerance: 0.05,
            ..Policy::default()
        };
        recommended.scale_down.stabilization_seconds = 900;
        recommended.target_per_broker.requests_per_second = None;
        recommended.target_per_broker.bytes_in_per_second = Some(1_000);
        let changes = diff(&current, &recommended);
        let lines: Vec<String> = changes.iter().map(describe_change).collect();
        assert_eq!(
            lines,
            [
                "max_brokers: 3 -> 7",
                "scale_down.stabilization_seconds: 300 -> 900",
                "target_per_broker.bytes_in_per_second: 20971520 -> 1000",
                "target_per_broker.requests_per_second: 5000 -> not followed",
                "tolerance: 0.1 -> 0.05",
            ]
        );
        assert!(diff(&current, &current).is_empty());
    }

    #[test]
    fn a_grid_without_values_or_with_an_impossible_combination_is_refused() {
        let day = synthetic(Shape::Flat, 600, 60, &Load::default());
        let policies =
            |g: &Grid| g.policies(&day, &capacity(), &Policy::default(), &Stress::default());
        let empty = Grid {
            tolerance: Vec::new(),
            ..Grid::default()
        };
        assert!(policies(&empty).unwrap_err().contains("no values"));
        let impossible = Grid {
            min_brokers: vec![9],
            max_brokers: vec![3],
            ..Grid::default()
        };
        assert!(policies(&impossible)
            .unwrap_err()
            .contains("max_brokers (3) must be at least min_brokers (9)"));
    }

    #[test]
    fn fields_the_grid_does_not_vary_come_from_the_current_policy() {
        let day = synthetic(Shape::Flat, 600, 60, &Load::default());
        let current = Policy {
            interval_seconds: 15,
            mode: crate::pool::autoscale::Mode::Shadow,
            ..Policy::default()
        };
        let policies = Grid::default()
            .policies(&day, &capacity(), &current, &Stress::default())
            .unwrap();
        assert!(policies
            .iter()
            .all(|p| p.interval_seconds == 15 && p.mode == current.mode));
    }
}
