//! Autoscaling the pool: the brokers follow the load (issue 12; CONTRACT, "Pool and
//! autoscaling").
//!
//! - [`policy`]: the policy file an operator writes, read and checked.
//! - [`decide`]: the decision ([`Decider`]): how many brokers the pool should have, from its
//!   load and the policy. It reads no clock and touches no pool, so the live autoscaler and
//!   the simulator make the same decisions from the same samples.
//! - [`trace`]: load traces (the history's format, CSV or JSON) and synthetic ones.
//! - [`simulate`]: a trace replayed against a policy on brokers of a given capacity: cost,
//!   time short of capacity, latency, thrashing.
//! - [`report`]: `report.json`, `report.html` and the chart files of `simulate` and `tune`.
//! - [`tune`]: every policy of a grid simulated, the cheapest meeting the objectives
//!   recommended.
//! - [`live`]: the gateway's load as it happens ([`Signals`]), sampled and decided on every
//!   interval ([`Autoscaler`]), with its events and history.
//! - [`shared`]: several gateway instances on one Redis: their loads summed, one decider.
//! - [`actuator`]: what resizes the pool ([`Actuator`]): `tollgate dev`'s
//!   [`crate::devpool::DevPool`], and for `tollgate serve` an operator's command or the
//!   Kubernetes API ([`actuator::ExternalPool`]).

pub mod actuator;
pub mod decide;
pub mod live;
pub mod policy;
pub mod report;
pub mod shared;
pub mod simulate;
pub mod trace;
pub mod tune;

pub use actuator::Actuator;
pub use decide::{Decider, Decision, Load};
pub use live::{Autoscaler, Signals};
pub use policy::{Mode, Policy, PolicyError, Signal, Targets};
