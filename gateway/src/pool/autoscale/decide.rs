//! The decision: how many brokers the pool should have, from its load and the policy.
//!
//! The same code decides live and in simulation: [`Decider::decide`] reads no clock and no
//! pool; the caller passes the time, the pool's size and its load. The arithmetic is
//! Kubernetes' HPA's (facts learnt from its documentation, not its code):
//!
//! - per signal, `desired = ceil(load / target per broker)`, which is
//!   `ceil(current * utilization)`; a utilization within the tolerance of 1.0 keeps the
//!   current size; the signal asking for the most brokers wins;
//! - a larger pool is taken only if every recommendation of the scale-up window asked for at
//!   least that many (the lowest of them), at most `scale_up.max_step` brokers at once;
//! - a smaller pool only if no recommendation of the scale-down window asked for more (the
//!   highest of them), at most `scale_down.max_step` brokers at once and one scale-down per
//!   `scale_down.period_seconds`, and never before the decider has seen a whole window (a
//!   restarted gateway does not shrink the pool on its first sample);
//! - never outside `[min_brokers, max_brokers]`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::policy::{Policy, Signal};

/// A figure per signal: the pool's load over the last interval (rates per second and counts),
/// or what one broker carries ([`super::simulate::Capacity`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    pub bytes_in_per_second: u64,
    pub bytes_out_per_second: u64,
    pub requests_per_second: u64,
    pub connections: u64,
}

impl Load {
    pub fn get(&self, signal: Signal) -> u64 {
        match signal {
            Signal::BytesInPerSecond => self.bytes_in_per_second,
            Signal::BytesOutPerSecond => self.bytes_out_per_second,
            Signal::RequestsPerSecond => self.requests_per_second,
            Signal::Connections => self.connections,
        }
    }
}

/// One decision, with what drove it: an event of `GET /v1/pool/events` when it changes the
/// pool's size.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Decision {
    /// Seconds since the Unix epoch (or since the trace's start, in simulation).
    pub time: u64,
    pub from_brokers: u32,
    pub to_brokers: u32,
    /// The signal that asked for the most brokers; `None` when every signal was within the
    /// tolerance.
    pub signal: Option<Signal>,
    /// Load over capacity at the current size, per signal the policy follows:
    /// `load / (brokers * target)`.
    pub utilization: Vec<(Signal, f64)>,
    /// What the numbers were and which rule decided, in words.
    pub reason: String,
}

impl Decision {
    pub fn changes(&self) -> bool {
        self.from_brokers != self.to_brokers
    }
}

/// Decides the pool's size at each interval, remembering the recommendations its windows need.
#[derive(Debug, Clone)]
pub struct Decider {
    policy: Policy,
    /// Recent recommendations (time, brokers), oldest first, as far back as the longer window.
    recent: VecDeque<(u64, u32)>,
    /// When the first decision was made: scale-down waits for a whole window of them.
    started: Option<u64>,
    last_scale_down: Option<u64>,
}

impl Decider {
    /// A decider for `policy`, which must have passed [`Policy::validate`].
    pub fn new(policy: Policy) -> Decider {
        Decider {
            policy,
            recent: VecDeque::new(),
            started: None,
            last_scale_down: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the policy; the recommendations seen so far still count in the new windows.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// How many brokers the pool should have at `now`, with `current` brokers carrying `load`,
    /// with the numbers and the rule that decided, in words.
    pub fn decide(&mut self, now: u64, current: u32, load: &Load) -> Decision {
        let step = self.step(now, current, load);
        self.explain(now, current, load, &step)
    }

    /// [`Decider::decide`] without the words: what the simulator calls at every sample, so
    /// that replaying a month costs no formatting. Its decisions are [`Decider::decide`]'s.
    pub fn step(&mut self, now: u64, current: u32, load: &Load) -> Step {
        let p = &self.policy;
        let started = *self.started.get_or_insert(now);
        let (min, max) = (p.min_brokers, p.max_brokers);
        let serving = current.max(1);

        // Per signal: utilization at the current size, and the brokers it asks for.
        let mut utilization = [None; Signal::ALL.len()];
        let mut wanted: Option<(Signal, u32)> = None;
        let mut within = true;
        for (signal, target) in p.target_per_broker.iter() {
            let load = load.get(signal);
            let u = load as f64 / (f64::from(serving) * target as f64);
            utilization[signal as usize] = Some(u);
            let asks = if (u - 1.0).abs() <= p.tolerance {
                serving
            } else {
                within = false;
                u32::try_from(load.div_ceil(target)).unwrap_or(u32::MAX)
            };
            if wanted.is_none_or(|(_, most)| asks > most) {
                wanted = Some((signal, asks));
            }
        }
        let (signal, asked) = wanted.map_or((None, serving), |(s, n)| (Some(s), n));
        let recommended = asked.clamp(min, max);

        self.recent.push_back((now, recommended));
        let keep = p
            .scale_up
            .stabilization_seconds
            .max(p.scale_down.stabilization_seconds);
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > u64::from(keep))
        {
            self.recent.pop_front();
        }
        let in_window = |seconds: u32| {
            self.recent
                .iter()
                .filter(move |(t, _)| now.saturating_sub(*t) <= u64::from(seconds))
                .map(|(_, n)| *n)
        };
        let done = |to: u32, rule: Rule| Step {
            to,
            signal,
            recommended,
            utilization,
            rule,
        };

        // Outside the bounds (a new policy, or a pool started at another size): back inside.
        if current < min || current > max {
            return done(current.clamp(min, max), Rule::Bounds);
        }
        if recommended > current {
            let steady = in_window(p.scale_up.stabilization_seconds)
                .min()
                .unwrap_or(current);
            let to = steady
                .min(current.saturating_add(p.scale_up.max_step))
                .max(current);
            let rule = if to == current {
                Rule::UpWindow
            } else if to < steady {
                Rule::UpStep
            } else {
                Rule::Up
            };
            return done(to, rule);
        }
        if recommended < current {
            let window = p.scale_down.stabilization_seconds;
            if now.saturating_sub(started) < u64::from(window) {
                return done(current, Rule::DownUnwatched);
            }
            let steady = in_window(window).max().unwrap_or(current);
            if steady >= current {
                return done(current, Rule::DownWindow(steady));
            }
            if self.last_scale_down.is_some_and(|last| {
                now.saturating_sub(last) < u64::from(p.scale_down.period_seconds)
            }) {
                return done(current, Rule::DownPeriod);
            }
            let to = steady
                .max(current.saturating_sub(p.scale_down.max_step))
                .max(min);
            self.last_scale_down = Some(now);
            return done(
                to,
                if to > steady {
                    Rule::DownStep
                } else {
                    Rule::Down
                },
            );
        }
        done(current, if within { Rule::Within } else { Rule::Has })
    }

    /// A [`Step`] in words, with the numbers behind it.
    pub fn explain(&self, now: u64, current: u32, load: &Load, step: &Step) -> Decision {
        let p = &self.policy;
        let r = step.recommended;
        let numbers = match step.signal {
            Some(s) => format!(
                "{s} {} over {current} broker(s) is {:.2} of the target {} per broker",
                load.get(s),
                step.utilization[s as usize].unwrap_or(0.0),
                p.target_per_broker.get(s).unwrap_or(0)
            ),
            None => "no signal".to_owned(),
        };
        let (up, down) = (&p.scale_up, &p.scale_down);
        let rule = match step.rule {
            Rule::Bounds => format!(
                "the policy allows {} to {} brokers",
                p.min_brokers, p.max_brokers
            ),
            Rule::UpWindow => format!(
                "{r} recommended, but not for the whole {} s scale-up window",
                up.stabilization_seconds
            ),
            Rule::UpStep => format!("{r} recommended, at most {} added at once", up.max_step),
            Rule::Up => format!("{r} recommended"),
            Rule::DownUnwatched => format!(
                "{r} recommended, but the {} s scale-down window has not been watched whole yet",
                down.stabilization_seconds
            ),
            Rule::DownWindow(steady) => format!(
                "{r} recommended, but {steady} was within the last {} s",
                down.stabilization_seconds
            ),
            Rule::DownPeriod => format!(
                "{r} recommended, but the last scale-down was under {} s ago",
                down.period_seconds
            ),
            Rule::DownStep => {
                format!("{r} recommended, at most {} removed at once", down.max_step)
            }
            Rule::Down => format!(
                "{r} recommended for the whole {} s window",
                down.stabilization_seconds
            ),
            Rule::Within => format!("within the tolerance of {}", p.tolerance),
            Rule::Has => format!("{r} recommended, which the pool has"),
        };
        Decision {
            time: now,
            from_brokers: current,
            to_brokers: step.to,
            signal: step.signal,
            utilization: Signal::ALL
                .iter()
                .filter_map(|s| step.utilization[*s as usize].map(|u| (*s, u)))
                .collect(),
            reason: format!("{numbers}: {rule}"),
        }
    }
}

/// What [`Decider::step`] decided, before it is put in words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub to: u32,
    /// The signal that asked for the most brokers.
    pub signal: Option<Signal>,
    /// What the signals asked for, within the bounds, before windows and steps.
    pub recommended: u32,
    /// Per signal (indexed as [`Signal::ALL`]), for the signals the policy follows.
    pub utilization: [Option<f64>; Signal::ALL.len()],
    pub rule: Rule,
}

/// Which rule of the policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The pool was outside `[min_brokers, max_brokers]`.
    Bounds,
    /// More wanted, but not for the whole scale-up window.
    UpWindow,
    /// More wanted, limited by the scale-up step.
    UpStep,
    Up,
    /// Fewer wanted, but the decider has not seen a whole scale-down window yet.
    DownUnwatched,
    /// Fewer wanted now, but this many within the scale-down window.
    DownWindow(u32),
    /// Fewer wanted, but the last scale-down is too recent.
    DownPeriod,
    /// Fewer wanted, limited by the scale-down step.
    DownStep,
    Down,
    /// Every signal within the tolerance.
    Within,
    /// The pool has what the signals ask for.
    Has,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::autoscale::policy::{ScaleDown, ScaleUp, Targets};
    use proptest::prelude::*;

    fn policy(min: u32, max: u32, up: (u32, u32), down: (u32, u32, u32)) -> Policy {
        Policy {
            min_brokers: min,
            max_brokers: max,
            target_per_broker: Targets {
                bytes_in_per_second: Some(100),
                ..Targets::default()
            },
            scale_up: ScaleUp {
                stabilization_seconds: up.0,
                max_step: up.1,
            },
            scale_down: ScaleDown {
                stabilization_seconds: down.0,
                max_step: down.1,
                period_seconds: down.2,
            },
            ..Policy::default()
        }
    }

    fn bytes_in(n: u64) -> Load {
        Load {
            bytes_in_per_second: n,
            ..Load::default()
        }
    }

    #[test]
    fn the_hpa_arithmetic_with_tolerance_steps_and_bounds() {
        let mut d = Decider::new(policy(1, 10, (0, 2), (0, 1, 0)));
        // 450 over 2 brokers of 100: 2.25 of the target, 5 wanted, 2 added at most.
        let first = d.decide(0, 2, &bytes_in(450));
        assert_eq!(first.to_brokers, 4);
        assert_eq!(first.signal, Some(Signal::BytesInPerSecond));
        assert_eq!(first.utilization, [(Signal::BytesInPerSecond, 2.25)]);
        assert!(
            first
                .reason
                .contains("bytes_in_per_second 450 over 2 broker(s) is 2.25 of the target 100"),
            "{}",
            first.reason
        );
        assert!(first
            .reason
            .contains("5 recommended, at most 2 added at once"));
        assert_eq!(d.decide(5, 4, &bytes_in(450)).to_brokers, 5);
        // 3 brokers at 105 each: within 10%, no change; at 115 each, one more.
        assert_eq!(d.decide(10, 3, &bytes_in(315)).to_brokers, 3);
        assert_eq!(d.decide(15, 3, &bytes_in(345)).to_brokers, 4);
        // Never beyond max, never below min.
        assert_eq!(d.decide(20, 10, &bytes_in(5_000)).to_brokers, 10);
        assert_eq!(d.decide(25, 1, &bytes_in(0)).to_brokers, 1);
        // A pool outside the bounds is brought back inside.
        let back = d.decide(30, 12, &bytes_in(900));
        assert_eq!(back.to_brokers, 10);
        assert!(back.reason.contains("allows 1 to 10"));
    }

    #[test]
    fn the_signal_asking_for_the_most_brokers_decides() {
        let mut p = policy(1, 10, (0, 10), (0, 1, 0));
        p.target_per_broker.connections = Some(50);
        let mut d = Decider::new(p);
        let load = Load {
            bytes_in_per_second: 150,
            connections: 400,
            ..Load::default()
        };
        let decision = d.decide(0, 1, &load);
        assert_eq!(decision.signal, Some(Signal::Connections));
        assert_eq!(decision.to_brokers, 8);
    }

    #[test]
    fn scale_up_waits_out_its_window_and_scale_down_its_window_and_period() {
        let mut d = Decider::new(policy(1, 10, (20, 5), (60, 1, 30)));
        // A spike shorter than the scale-up window changes nothing.
        assert_eq!(d.decide(0, 2, &bytes_in(200)).to_brokers, 2);
        assert_eq!(d.decide(10, 2, &bytes_in(600)).to_brokers, 2);
        assert_eq!(d.decide(20, 2, &bytes_in(200)).to_brokers, 2);
        // A rise that lasts the window: the lowest recommendation of the window is taken.
        assert_eq!(d.decide(30, 2, &bytes_in(600)).to_brokers, 2);
        assert_eq!(d.decide(40, 2, &bytes_in(500)).to_brokers, 2);
        let up = d.decide(50, 2, &bytes_in(600));
        assert_eq!(up.to_brokers, 5, "{}", up.reason);
        // The load falls: nothing until the whole scale-down window asked for fewer.
        for t in [60, 80, 100] {
            assert_eq!(d.decide(t, 5, &bytes_in(100)).to_brokers, 5);
        }
        let down = d.decide(111, 5, &bytes_in(100));
        assert_eq!(down.to_brokers, 4, "one at a time: {}", down.reason);
        // The next one waits for the period.
        let held = d.decide(121, 4, &bytes_in(100));
        assert_eq!(held.to_brokers, 4);
        assert!(held.reason.contains("under 30 s ago"), "{}", held.reason);
        assert_eq!(d.decide(141, 4, &bytes_in(100)).to_brokers, 3);
    }

    #[test]
    fn a_new_decider_does_not_shrink_the_pool_before_it_has_watched_a_window() {
        let mut d = Decider::new(policy(1, 10, (0, 1), (60, 1, 0)));
        let first = d.decide(1_000, 5, &bytes_in(0));
        assert_eq!(first.to_brokers, 5);
        assert!(
            first.reason.contains("not been watched whole"),
            "{}",
            first.reason
        );
        assert_eq!(d.decide(1_060, 5, &bytes_in(0)).to_brokers, 4);
    }

    proptest! {
        #[test]
        fn never_outside_the_bounds_and_never_beyond_a_step(
            min in 1u32..5,
            extra in 0u32..10,
            up in (0u32..60, 1u32..4),
            down in (0u32..120, 1u32..3, 0u32..60),
            start in 1u32..20,
            loads in proptest::collection::vec(0u64..3_000, 1..200),
        ) {
            let max = min + extra;
            let mut d = Decider::new(policy(min, max, up, down));
            let mut brokers = start;
            for (i, load) in loads.iter().enumerate() {
                let decision = d.decide(i as u64 * 5, brokers, &bytes_in(*load));
                let to = decision.to_brokers;
                prop_assert!((min..=max).contains(&to), "{} outside [{min}, {max}]", to);
                if (min..=max).contains(&brokers) {
                    prop_assert!(to <= brokers + up.1 && to + down.1 >= brokers);
                }
                brokers = to;
            }
        }

        #[test]
        fn a_noisy_flat_load_within_the_tolerance_never_resizes_the_pool(
            brokers in 1u32..8,
            noise in proptest::collection::vec(-9i64..=9, 1..300),
        ) {
            // Each sample within 9% of the target for the pool's size (tolerance 10%).
            let mut d = Decider::new(policy(1, 10, (0, 2), (0, 1, 0)));
            let flat = i64::from(brokers) * 100;
            for (i, n) in noise.iter().enumerate() {
                let load = (flat + flat * n / 100) as u64;
                let decision = d.decide(i as u64 * 5, brokers, &bytes_in(load));
                prop_assert_eq!(decision.to_brokers, brokers, "{}", decision.reason);
            }
        }
    }
}
