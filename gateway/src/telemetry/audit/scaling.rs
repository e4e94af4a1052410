//! Pool scale events: the autoscaler resized the pool, failed to, or decided a size it does
//! not apply (shadow mode, no actuator). Pool-wide: no cluster's, so in no tenant's view.

use super::event::{Event, EventType, Reason, SecretFree};
use super::Audit;
use crate::pool::autoscale::Decision;

/// What became of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Resized,
    Failed,
    /// Decided and recorded, not applied: the policy is in shadow mode or nothing can resize
    /// this pool.
    NotApplied(&'static str),
}

/// A decision and its outcome, in words.
struct Scaling<'a> {
    decision: &'a Decision,
    outcome: Outcome,
}

impl std::fmt::Display for Scaling<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.decision;
        write!(f, "{} -> {} brokers", d.from_brokers, d.to_brokers)?;
        match self.outcome {
            Outcome::Resized => f.write_str(", resized")?,
            Outcome::Failed => f.write_str(", the resize failed (see the gateway log)")?,
            Outcome::NotApplied(why) => write!(f, ", not applied ({why})")?,
        }
        write!(f, ": {}", d.reason)
    }
}

/// Broker counts and the decider's own words (signal names, numbers, the rule that decided);
/// an actuator's error, which could quote anything, is left to the gateway log.
impl SecretFree for Scaling<'_> {}

impl Audit {
    /// Emits the `pool.scaled` event of `decision`.
    pub fn pool_scaled(&self, decision: &Decision, outcome: Outcome) {
        let event = Event::new(EventType::PoolScaled, "resize")
            .with_principal("autoscaler")
            .with_resource("pool")
            .with_granted(outcome == Outcome::Resized)
            .with_reason(Reason::of(&Scaling { decision, outcome }));
        self.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_says_the_sizes_and_why() {
        let (audit, mut seen) = Audit::capturing(4);
        let decision = Decision {
            time: 0,
            from_brokers: 1,
            to_brokers: 2,
            signal: None,
            utilization: Vec::new(),
            reason: "min_brokers is 2".into(),
        };
        audit.pool_scaled(&decision, Outcome::Resized);
        audit.pool_scaled(&decision, Outcome::NotApplied("shadow mode"));
        let resized = seen.try_recv().unwrap();
        assert!(resized.granted);
        assert_eq!(resized.cluster, None, "in no tenant's view");
        assert_eq!(
            resized.reason.as_ref().unwrap().as_str(),
            "1 -> 2 brokers, resized: min_brokers is 2"
        );
        let shadow = seen.try_recv().unwrap();
        assert!(!shadow.granted);
        assert_eq!(
            shadow.reason.as_ref().unwrap().as_str(),
            "1 -> 2 brokers, not applied (shadow mode): min_brokers is 2"
        );
    }
}
