//! The state every connection shares: configuration, the pool, the router and the registry of
//! live clusters. [`Gateway`] is a cheap-to-clone handle.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::identity::token::Tokens;
use crate::limits::Limits;
use crate::metering::Metering;
use crate::pool::{Pool, PoolKind, Router};
use crate::tenancy::Registry;

/// A gateway node as clients see it: one of "the cluster's brokers".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: i32,
    pub host: String,
    pub port: i32,
}

/// The nodes of gateway addresses (`host`, `port`) with `lanes` nodes each: lane `l` of an
/// address is its port + `l`. Ids from 1, address-major.
pub fn presented_nodes(addresses: &[(String, i32)], lanes: usize) -> Vec<Node> {
    addresses
        .iter()
        .flat_map(|(host, port)| (0..lanes).map(move |l| (host, port + l as i32)))
        .zip(1..)
        .map(|((host, port), id)| Node {
            id,
            host: host.clone(),
            port,
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The gateway nodes clients are told about: each advertised address presents `lanes`
    /// nodes, address-major (node `a * lanes + l` is lane `l` of address `a`; see
    /// [`presented_nodes`]). Every node serves every request, so this is a presentation, not a
    /// placement: it decides which partitions a client asks about together.
    pub nodes: Vec<Node>,
    /// Nodes per advertised address. A client keeps requests in flight per node (one fetch,
    /// a few produces), so each lane is another fetch in flight, and partitions are put on
    /// lanes by the pool broker that serves them, so that a client's request to one lane
    /// goes to one broker whole instead of being split.
    pub lanes: usize,
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
    /// What one client, source or request may cost.
    pub limits: Limits,
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
    /// What each cluster has used of its count quotas (partition mutations, connections).
    quota_counts: Arc<crate::quotas::limits::Counts>,
    /// Each cluster's budget of request bytes in flight ([`Limits::cluster_bytes_in_flight`]),
    /// kept apart from the registry's `Cluster` values, which an update replaces.
    cluster_bytes: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Arc<Semaphore>>>,
    /// Each producer's partitions' batches in flight and failed ([`crate::api::produce::order`]).
    produce_sequences: Arc<crate::api::produce::order::Sequences>,
    acked_batches: crate::api::produce::acked::Acked,
    /// The load the autoscaler samples.
    signals: Arc<crate::pool::autoscale::Signals>,
    /// Each cluster's byte and request rates, held to its quotas.
    quota_meters: crate::quotas::meter::Meters,
    /// SCRAM salts for user names that do not exist.
    decoy_salts: crate::identity::scram::DecoySalts,
    metrics: crate::telemetry::metrics::Metrics,
    audit: crate::telemetry::audit::Audit,
    /// Consumer lag, a collector of `metrics` ([`crate::telemetry::lag`]).
    lag: crate::telemetry::lag::Lag,
    /// Samples requests for OTLP traces (`--otlp-endpoint`); `None` without an endpoint.
    tracer: Option<crate::telemetry::otlp::Tracer>,
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
            !config.nodes.is_empty() && config.lanes > 0 && config.nodes.len() % config.lanes == 0,
            "a gateway needs at least one node, and the same number of lanes on each address"
        );
        let pool_kind = config.pool_kind;
        let metrics = crate::telemetry::metrics::Metrics::default();
        let lag = crate::telemetry::lag::Lag::new(registry.clone(), metrics.clone());
        Gateway {
            inner: Arc::new(Inner {
                config,
                router: Router::new(pool, pool_kind),
                quota_counts: Arc::new(crate::quotas::limits::Counts::new(registry.clone())),
                registry,
                tokens,
                metering,
                cluster_bytes: Default::default(),
                produce_sequences: Default::default(),
                acked_batches: Default::default(),
                signals: Default::default(),
                quota_meters: Default::default(),
                decoy_salts: Default::default(),
                metrics,
                audit: Default::default(),
                lag,
                tracer: None,
            }),
        }
    }

    /// Replaces the default metrics registry and audit log; only while nothing else holds the
    /// gateway (at assembly, in [`crate::run`]).
    pub fn with_telemetry(
        mut self,
        metrics: crate::telemetry::metrics::Metrics,
        audit: crate::telemetry::audit::Audit,
    ) -> Self {
        let inner = Arc::get_mut(&mut self.inner).expect("telemetry is set before sharing");
        inner.lag = crate::telemetry::lag::Lag::new(inner.registry.clone(), metrics.clone());
        inner.metrics = metrics;
        inner.audit = audit;
        self
    }

    /// Traces a sample of requests from now on; only while nothing else holds the gateway.
    pub fn with_tracer(mut self, tracer: crate::telemetry::otlp::Tracer) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the tracer is set before sharing")
            .tracer = Some(tracer);
        self
    }

    pub fn tracer(&self) -> Option<&crate::telemetry::otlp::Tracer> {
        self.inner.tracer.as_ref()
    }

    pub fn metrics(&self) -> &crate::telemetry::metrics::Metrics {
        &self.inner.metrics
    }

    pub fn audit(&self) -> &crate::telemetry::audit::Audit {
        &self.inner.audit
    }

    /// Consumer lag: committed offsets noted by the group handlers, reconciled with the pool.
    pub fn lag(&self) -> &crate::telemetry::lag::Lag {
        &self.inner.lag
    }

    pub fn decoy_salts(&self) -> &crate::identity::scram::DecoySalts {
        &self.inner.decoy_salts
    }

    pub fn metering(&self) -> &Arc<Metering> {
        &self.inner.metering
    }

    /// What each cluster has used of its count quotas on this instance.
    pub fn quota_counts(&self) -> &Arc<crate::quotas::limits::Counts> {
        &self.inner.quota_counts
    }

    /// The budget of request bytes in flight of `cluster`'s connections. Deleted clusters'
    /// budgets are dropped once the table holds twice as many as there are clusters.
    pub fn cluster_bytes(&self, cluster: &uuid::Uuid) -> Arc<Semaphore> {
        let mut budgets = self.inner.cluster_bytes.lock().expect("poisoned");
        if budgets.len() > 2 * self.inner.registry.len() + 16 {
            let registry = &self.inner.registry;
            budgets.retain(|id, _| registry.get(id).is_some());
        }
        budgets
            .entry(*cluster)
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.inner.config.limits.cluster_bytes_in_flight,
                ))
            })
            .clone()
    }

    /// Where every producer's batches in flight went, and which failed (keyed by pool names,
    /// so one cluster's producers never touch another's).
    pub fn produce_sequences(&self) -> &Arc<crate::api::produce::order::Sequences> {
        &self.inner.produce_sequences
    }

    /// The last sequence the pool acknowledged per producer and partition, so a batch
    /// acknowledged again is metered once.
    pub fn acked_batches(&self) -> &crate::api::produce::acked::Acked {
        &self.inner.acked_batches
    }

    /// Requests, bytes and connections as they happen, for the autoscaler.
    pub fn signals(&self) -> &Arc<crate::pool::autoscale::Signals> {
        &self.inner.signals
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Each cluster's byte and request rates on this instance ([`crate::quotas::meter`]).
    pub fn quota_meters(&self) -> &crate::quotas::meter::Meters {
        &self.inner.quota_meters
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
        let nodes = &self.inner.config.nodes;
        &nodes[(spread(key, partition) % nodes.len() as u64) as usize]
    }

    /// The node clients should see as leader of `partition` of the tenant's `topic`, given
    /// which of the `brokers` serving pool brokers serves it (`at`, from
    /// [`crate::pool::Router::placement`]).
    ///
    /// The address is spread by hashing, as coordinators are. The lane follows the pool
    /// broker: with at least as many brokers as lanes, broker `b` is on lane `b % lanes`;
    /// with fewer, broker `b` owns lanes `b, b + brokers, ...` and its partitions are spread
    /// over them, so a small pool still gets a fetch in flight per lane.
    pub fn partition_node(
        &self,
        topic: &str,
        partition: i32,
        at: Option<usize>,
        brokers: usize,
    ) -> &Node {
        let nodes = &self.inner.config.nodes;
        let lanes = self.inner.config.lanes;
        let addresses = (nodes.len() / lanes) as u64;
        let h = spread(topic, partition);
        let address = (h % addresses) as usize;
        &nodes[address * lanes + lane(at, brokers, lanes, h / addresses)]
    }

    pub fn first_node(&self) -> &Node {
        &self.inner.config.nodes[0]
    }
}

/// A stable hash of a key (topic, group id) and partition: the same in every instance of one
/// build, so instances present the same placement.
fn spread(key: &str, partition: i32) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    partition.hash(&mut h);
    h.finish()
}

/// The lane of a partition served by broker `at` of `brokers`; `spread` (a hash of the
/// partition) picks among the lanes a broker owns, or among all when the broker is unknown.
fn lane(at: Option<usize>, brokers: usize, lanes: usize, spread: u64) -> usize {
    match at {
        Some(b) if b < brokers && brokers >= lanes => b % lanes,
        Some(b) if b < brokers => {
            // Broker b owns lanes b, b + brokers, ... below `lanes`.
            let owned = (lanes - b).div_ceil(brokers);
            b + brokers * (spread % owned as u64) as usize
        }
        _ => (spread % lanes as u64) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn lanes_of(b: usize, brokers: usize, lanes: usize) -> BTreeSet<usize> {
        (0..1000)
            .map(|h| lane(Some(b), brokers, lanes, h))
            .collect()
    }

    #[test]
    fn lanes_follow_brokers() {
        // As many brokers as lanes, or more: a broker's partitions all on one lane.
        for b in 0..3 {
            assert_eq!(lanes_of(b, 3, 3), BTreeSet::from([b]));
        }
        assert_eq!(lanes_of(4, 6, 3), BTreeSet::from([1]));
        // Fewer: every lane owned by exactly one broker, a broker's partitions over its own.
        assert_eq!(lanes_of(0, 1, 3), BTreeSet::from([0, 1, 2]));
        assert_eq!(lanes_of(0, 2, 3), BTreeSet::from([0, 2]));
        assert_eq!(lanes_of(1, 2, 3), BTreeSet::from([1]));
        assert_eq!(lanes_of(1, 2, 5), BTreeSet::from([1, 3]));
        // Unknown, or a broker index out of range: any lane, never out of bounds.
        let any: BTreeSet<usize> = (0..1000).map(|h| lane(None, 3, 3, h)).collect();
        assert_eq!(any, BTreeSet::from([0, 1, 2]));
        assert!((0..100).all(|h| lane(Some(7), 3, 3, h) < 3));
        assert!((0..100).all(|h| lane(Some(0), 0, 2, h) < 2));
    }

    #[test]
    fn nodes_are_address_major_with_ids_from_one() {
        let nodes = presented_nodes(&[("a".into(), 1), ("b".into(), 2)], 2);
        let shown: Vec<(i32, &str, i32)> = nodes
            .iter()
            .map(|n| (n.id, n.host.as_str(), n.port))
            .collect();
        assert_eq!(shown, [(1, "a", 1), (2, "a", 2), (3, "b", 2), (4, "b", 3)]);
    }
}
