//! What resizes the pool when the autoscaler decides: the [`Actuator`] contract, and the
//! actuators of pools the gateway does not run ([`external::ExternalPool`]: an operator's
//! [`command`] or the [`kubernetes`] API asks for brokers, [`discovery`] finds them).
//! `tollgate dev`'s own is [`crate::devpool::DevPool`].

pub mod command;
pub mod discovery;
pub mod external;
pub mod kubernetes;

pub use discovery::Discovery;
pub use external::{ExternalPool, Scaler};

use crate::pool_admin::BoxFuture;

/// Brings the pool to a number of brokers.
///
/// The contract implementers keep:
/// - `resize(n)` returns once the pool has `n` brokers serving (or fails saying why), with the
///   size it reached;
/// - a broker it starts is added to the gateway's [`crate::pool::Pool`] only once it answers,
///   so no request is routed to a broker that cannot take it;
/// - a broker it removes leaves the routing first and its requests in flight finish
///   ([`crate::pool::Pool::drain`]), and only then is it stopped: clients see at most
///   retriable errors, and an acknowledged record is never lost (where the pool stops brokers
///   on its own, the discovery drains each as it disappears: see [`discovery`]);
/// - it never goes below one broker.
pub trait Actuator: Send + Sync {
    fn resize(&self, brokers: u32) -> BoxFuture<'_, Result<u32, String>>;

    /// Another gateway instance (the decider) is resizing the pool to `brokers`: bring this
    /// instance's routing in line without asking the pool for anything (drain the brokers
    /// that leave, take in the ones that join). The decider waits a drain's length after
    /// announcing a scale-in before it asks for fewer brokers.
    fn follow(&self, brokers: u32) -> BoxFuture<'_, ()> {
        let _ = brokers;
        Box::pin(async {})
    }
}
