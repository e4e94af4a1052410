//! What resizes the pool when the autoscaler decides.

use crate::pool_admin::BoxFuture;

/// Brings the pool to a number of brokers.
///
/// The contract implementers keep:
/// - `resize(n)` returns once the pool has `n` brokers serving (or fails saying why), with the
///   size it reached;
/// - a broker it starts is added to the gateway's [`crate::pool::Pool`] only once it answers,
///   so no request is routed to a broker that cannot take it;
/// - a broker it removes leaves the routing first ([`crate::pool::Pool::remove_broker`]), its
///   requests in flight finish (drain), and only then is it stopped: clients see at most
///   retriable errors, and an acknowledged record is never lost;
/// - it never goes below one broker.
pub trait Actuator: Send + Sync {
    fn resize(&self, brokers: u32) -> BoxFuture<'_, Result<u32, String>>;
}
