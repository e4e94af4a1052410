//! The autoscaling policy: the file an operator writes (CONTRACT, "Pool and autoscaling"),
//! read with unknown fields refused and checked by [`Policy::validate`] before it is used.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the autoscaler may do, and what load one broker should carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The pool never shrinks below this many brokers.
    pub min_brokers: u32,
    /// Nor grows beyond this many.
    pub max_brokers: u32,
    /// How often the autoscaler samples the load and decides.
    pub interval_seconds: u32,
    /// `apply` changes the pool; `shadow` decides and records, and changes nothing.
    pub mode: Mode,
    /// The load one broker should carry, per signal; a signal left out does not drive
    /// decisions. Omitted altogether: [`Targets::documented`].
    #[serde(default = "Targets::documented")]
    pub target_per_broker: Targets,
    /// How far utilization may stray from 1.0 before the pool is resized (Kubernetes' HPA uses
    /// 0.1): without it, noise around the target would resize the pool at every step.
    pub tolerance: f64,
    pub scale_up: ScaleUp,
    pub scale_down: ScaleDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Apply,
    Shadow,
}

/// The load per broker at which the pool is the right size, per signal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
}

/// How fast the pool grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleUp {
    /// A larger pool is taken only if every recommendation of this window wanted at least
    /// that many (0: at once, as HPA does by default: under-provisioning costs latency now).
    pub stabilization_seconds: u32,
    /// Brokers added in one decision at most.
    pub max_step: u32,
}

/// How slowly the pool shrinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleDown {
    /// A smaller pool is taken only if no recommendation of this window wanted more (HPA's
    /// default 300 s): a load that dips and returns does not cost a drain and a restart.
    pub stabilization_seconds: u32,
    /// Brokers removed in one decision at most (one at a time: each drain moves partitions
    /// and groups).
    pub max_step: u32,
    /// Seconds between two scale-downs.
    pub period_seconds: u32,
}

/// One signal the autoscaler can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    BytesInPerSecond,
    BytesOutPerSecond,
    RequestsPerSecond,
    Connections,
}

impl Signal {
    pub const ALL: [Signal; 4] = [
        Signal::BytesInPerSecond,
        Signal::BytesOutPerSecond,
        Signal::RequestsPerSecond,
        Signal::Connections,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Signal::BytesInPerSecond => "bytes_in_per_second",
            Signal::BytesOutPerSecond => "bytes_out_per_second",
            Signal::RequestsPerSecond => "requests_per_second",
            Signal::Connections => "connections",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Targets {
    /// The targets when a policy names none: a fifth of MSK Serverless's per-cluster ingress
    /// (200 MBps) and egress (400 MBps) quotas, a third of its 15,000 requests per second, a
    /// third of its 3,000 connections, so a pool of a few brokers carries a busy cluster.
    pub fn documented() -> Targets {
        Targets {
            bytes_in_per_second: Some(20 * 1024 * 1024),
            bytes_out_per_second: Some(40 * 1024 * 1024),
            requests_per_second: Some(5_000),
            connections: Some(1_000),
        }
    }

    pub fn get(&self, signal: Signal) -> Option<u64> {
        match signal {
            Signal::BytesInPerSecond => self.bytes_in_per_second,
            Signal::BytesOutPerSecond => self.bytes_out_per_second,
            Signal::RequestsPerSecond => self.requests_per_second,
            Signal::Connections => self.connections,
        }
    }

    /// The signals that drive decisions, with their targets.
    pub fn iter(&self) -> impl Iterator<Item = (Signal, u64)> + '_ {
        Signal::ALL
            .into_iter()
            .filter_map(|s| self.get(s).map(|t| (s, t)))
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_brokers: 1,
            max_brokers: 3,
            interval_seconds: 5,
            mode: Mode::Apply,
            target_per_broker: Targets::documented(),
            tolerance: 0.1,
            scale_up: ScaleUp::default(),
            scale_down: ScaleDown::default(),
        }
    }
}

impl Default for ScaleUp {
    fn default() -> Self {
        ScaleUp {
            stabilization_seconds: 0,
            max_step: 2,
        }
    }
}

impl Default for ScaleDown {
    fn default() -> Self {
        ScaleDown {
            stabilization_seconds: 300,
            max_step: 1,
            period_seconds: 60,
        }
    }
}

/// The most brokers a policy may ask for: far beyond any pool one gateway drives, small
/// enough that a typo (an extra zero) is caught.
pub const MAX_BROKERS: u32 = 1_000;
/// The longest window or period a policy may set: a day.
pub const MAX_WINDOW_SECONDS: u32 = 86_400;

/// Why a policy cannot be used, in words that say what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("autoscaling policy: {0}")]
pub struct PolicyError(pub String);

impl Policy {
    /// Reads a policy from JSON and checks it.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = serde_json::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Refuses a policy that cannot work, saying what to change.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let fail = |why: String| Err(PolicyError(why));
        if self.min_brokers < 1 {
            return fail("min_brokers must be at least 1: a pool needs a broker".into());
        }
        if self.max_brokers < self.min_brokers {
            return fail(format!(
                "max_brokers ({}) must be at least min_brokers ({})",
                self.max_brokers, self.min_brokers
            ));
        }
        if self.max_brokers > MAX_BROKERS {
            return fail(format!(
                "max_brokers ({}) is over {MAX_BROKERS}",
                self.max_brokers
            ));
        }
        if !(1..=3_600).contains(&self.interval_seconds) {
            return fail(format!(
                "interval_seconds ({}) must be from 1 to 3600",
                self.interval_seconds
            ));
        }
        if !(0.0..1.0).contains(&self.tolerance) {
            return fail(format!(
                "tolerance ({}) must be at least 0 and below 1 (0.1 ignores changes within 10% of the target)",
                self.tolerance
            ));
        }
        if self.target_per_broker.iter().next().is_none() {
            return fail(
                "target_per_broker names no signal: give at least one of bytes_in_per_second, \
                 bytes_out_per_second, requests_per_second, connections"
                    .into(),
            );
        }
        if let Some((signal, _)) = self.target_per_broker.iter().find(|(_, t)| *t == 0) {
            return fail(format!(
                "target_per_broker.{signal} must be above 0 (leave the signal out to ignore it)"
            ));
        }
        if self.scale_up.max_step < 1 || self.scale_down.max_step < 1 {
            return fail("scale_up.max_step and scale_down.max_step must be at least 1".into());
        }
        for (name, seconds) in [
            (
                "scale_up.stabilization_seconds",
                self.scale_up.stabilization_seconds,
            ),
            (
                "scale_down.stabilization_seconds",
                self.scale_down.stabilization_seconds,
            ),
            ("scale_down.period_seconds", self.scale_down.period_seconds),
        ] {
            if seconds > MAX_WINDOW_SECONDS {
                return fail(format!(
                    "{name} ({seconds}) is over {MAX_WINDOW_SECONDS} (a day)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contracts_example_reads_and_omitted_fields_take_the_documented_defaults() {
        let example = r#"{"min_brokers": 1, "max_brokers": 3, "interval_seconds": 5, "mode": "apply",
            "target_per_broker": {"bytes_in_per_second": 20971520, "bytes_out_per_second": 41943040,
                                  "requests_per_second": 5000, "connections": 1000},
            "tolerance": 0.1,
            "scale_up": {"stabilization_seconds": 0, "max_step": 2},
            "scale_down": {"stabilization_seconds": 300, "max_step": 1, "period_seconds": 60}}"#;
        assert_eq!(Policy::from_json(example).unwrap(), Policy::default());
        assert_eq!(Policy::from_json("{}").unwrap(), Policy::default());
        let some =
            Policy::from_json(r#"{"mode": "shadow", "target_per_broker": {"connections": 10}}"#)
                .unwrap();
        assert_eq!(some.mode, Mode::Shadow);
        assert_eq!(
            some.target_per_broker.iter().collect::<Vec<_>>(),
            [(Signal::Connections, 10)]
        );
        assert_eq!(some.scale_down, ScaleDown::default());
    }

    #[test]
    fn a_policy_that_cannot_work_is_refused_saying_what_to_change() {
        for (json, says) in [
            (r#"{"min_brokers": 0}"#, "min_brokers must be at least 1"),
            (
                r#"{"min_brokers": 4, "max_brokers": 2}"#,
                "max_brokers (2) must be at least min_brokers (4)",
            ),
            (r#"{"max_brokers": 30000}"#, "over 1000"),
            (r#"{"interval_seconds": 0}"#, "interval_seconds (0)"),
            (r#"{"tolerance": 1.5}"#, "tolerance (1.5)"),
            (r#"{"target_per_broker": {}}"#, "names no signal"),
            (
                r#"{"target_per_broker": {"connections": 0}}"#,
                "target_per_broker.connections must be above 0",
            ),
            (
                r#"{"scale_down": {"max_step": 0}}"#,
                "max_step must be at least 1",
            ),
            (
                r#"{"scale_down": {"period_seconds": 100000}}"#,
                "scale_down.period_seconds (100000)",
            ),
            (r#"{"max_broker": 3}"#, "unknown field `max_broker`"),
            (r#"{"mode": "dry-run"}"#, "unknown variant `dry-run`"),
            (
                r#"{"target_per_broker": {"cpu": 50}}"#,
                "unknown field `cpu`",
            ),
            (r#"{"min_brokers": -1}"#, "invalid value"),
        ] {
            let err = Policy::from_json(json).expect_err(json).to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
    }
}
