//! Autoscaling the pool: the brokers follow the load (issue 12; CONTRACT, "Pool and
//! autoscaling").
//!
//! - [`policy`]: the policy file an operator writes, read and checked.
//! - [`decide`]: the decision ([`Decider`]): how many brokers the pool should have, from its
//!   load and the policy. It reads no clock and touches no pool, so the live autoscaler and
//!   the simulator make the same decisions from the same samples.
//!
//! Still to come (issue 12): the signals sampled from the pool, the actuators that start and
//! stop brokers, draining on scale-in, the admin endpoints, the history, and the simulator
//! and tuner.

pub mod decide;
pub mod policy;

pub use decide::{Decider, Decision, Load};
pub use policy::{Mode, Policy, PolicyError, Signal, Targets};
