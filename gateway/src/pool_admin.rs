//! What the admin API needs from the broker pool, as a trait so the admin API can be tested
//! without one and the data path's upstream code stays the only thing that talks to brokers.

use std::future::Future;
use std::pin::Pin;

use crate::tenancy::Namespace;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Pool-side effects of cluster lifecycle changes.
///
/// Implementations must be idempotent: deleting the topics of a namespace that has none, or
/// whose topics are already gone, succeeds. An `Err` carries a message fit for the admin API's
/// 5xx answer; it must never name the pool's brokers or other tenants' resources.
pub trait PoolAdmin: Send + Sync + 'static {
    /// Deletes every topic on the pool whose name is in `namespace`, and returns how many.
    fn delete_namespace_topics(&self, namespace: Namespace) -> BoxFuture<'_, Result<usize, String>>;
}
