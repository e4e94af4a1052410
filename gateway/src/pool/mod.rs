//! The broker pool behind the gateway: connections to its brokers, which of them are live, and
//! which of them serves each request. Only this module talks to the pool's brokers.
//!
//! - [`error`]: [`UpstreamError`], what can go wrong with a pool broker, and whether sending
//!   the request again is safe.
//! - [`connection`]: one multiplexed connection to a broker, its writer and reader tasks, and
//!   the requests waiting on it for their answers.
//! - [`lease`]: the connection a request holds until its answer arrives, and a broker's fetch
//!   connections, lent to one request at a time.
//! - [`stream`]: a reply on its way ([`PendingReply`]), taken whole or as it arrives
//!   ([`BodyStream`]).
//! - [`broker`]: one pool broker ([`Broker`]), its connections by [`Lane`], and the verbs that
//!   send it requests.
//! - [`membership`]: the changeable set of brokers ([`Pool`]): the one place brokers are added
//!   and removed, which of them are live, the generation that changes with either, and the API
//!   versions they all support.
//! - [`health`]: the prober that brings down brokers back and notices live ones that stopped
//!   answering, and the check after a failed request.
//! - [`cache`]: the bounded map behind every cache keyed by what tenants send.
//! - [`coordinators`]: the group and transaction coordinators the pool names, and the bounded
//!   cache of them.
//! - [`topic_ids`]: topic ids resolved to the pool's topic names: bounded caches of names and
//!   of ids the pool does not know, and one resolution at a time for every id waiting.
//! - [`routing`]: which broker serves a request ([`Router`]): for a partition, the leader on a
//!   leader-based pool, the rendezvous winner on a stateless one ([`PoolKind`]); for a group
//!   or transaction, its coordinator.
//! - [`autoscale`]: how many brokers the pool should have, from its load and a policy; uses
//!   none of the above.
//!
//! Each module uses only modules listed before it.

pub mod autoscale;
pub mod broker;
pub mod cache;
pub mod connection;
pub mod coordinators;
pub mod error;
pub mod health;
pub mod lease;
pub mod membership;
pub mod routing;
pub mod security;
pub mod stream;
#[cfg(test)]
pub(crate) mod testing;
pub mod topic_ids;

pub use broker::{Broker, Caller, ClientTag, Lane, Timeouts, PRODUCE_CONNECTIONS};
pub use coordinators::{CoordinatorAnswer, GROUP, TRANSACTION};
pub use error::{is_network, UpstreamError};
pub use membership::{BrokerState, Pool, DRAIN_TIMEOUT};
pub use routing::{PoolKind, Router};
pub use stream::{BodyStream, PendingReply};
