//! The state every connection shares: configuration, the pool, the router and the registry of
//! live clusters. [`Gateway`] is a cheap-to-clone handle.

use std::sync::Arc;

use crate::metering::Metering;
use crate::router::{PoolKind, Router};
use crate::tenancy::Registry;
use crate::token::Tokens;
use crate::upstream::Pool;

/// A gateway node as clients see it: one of "the cluster's brokers".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The gateway nodes clients are told about; partitions and coordinators are spread over
    /// them. Every gateway instance serves every request, so this is a presentation, not a
    /// placement.
    pub nodes: Vec<Node>,
    /// Region in ARNs.
    pub region: Arc<str>,
    /// Largest request frame an authenticated client may send.
    pub max_frame_bytes: usize,
    /// Largest frame before authentication: SASL messages are small.
    pub max_sasl_frame_bytes: usize,
    /// Requests one client connection may have in flight before we stop reading from it.
    pub max_in_flight: usize,
    /// How partitions map to the pool's brokers.
    pub pool_kind: PoolKind,
}

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    router: Router,
    registry: Registry,
    tokens: Arc<Tokens>,
    metering: Arc<Metering>,
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        pool: Pool,
        registry: Registry,
        tokens: Arc<Tokens>,
        metering: Arc<Metering>,
    ) -> Self {
        assert!(
            !config.nodes.is_empty(),
            "a gateway needs at least one node"
        );
        let pool_kind = config.pool_kind;
        Gateway {
            inner: Arc::new(Inner {
                config,
                router: Router::new(pool, pool_kind),
                registry,
                tokens,
                metering,
            }),
        }
    }

    pub fn metering(&self) -> &Arc<Metering> {
        &self.inner.metering
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The node clients should see as leader of a partition: spread by hashing, so several
    /// gateway nodes share the load, and stable, so clients do not chase leaders.
    pub fn node_for(&self, key: &str, partition: i32) -> &Node {
        use std::hash::{Hash, Hasher};
        let nodes = &self.inner.config.nodes;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        partition.hash(&mut h);
        &nodes[(h.finish() % nodes.len() as u64) as usize]
    }

    pub fn first_node(&self) -> &Node {
        &self.inner.config.nodes[0]
    }
}
