//! Which pool broker serves a request.
//!
//! Two kinds of pool sit behind the same router ([`PoolKind`]):
//!
//! - **Leader-based** (Apache Kafka, librdkafka's mock cluster): every partition has one leader.
//!   Leaders are learned from the pool's metadata (from every Metadata answer that passes
//!   through, and asked for when a request names a topic the cache does not know) and
//!   forgotten when an answer says the leader moved, so the next request asks again. At most
//!   [`LEADER_TOPICS_CAPACITY`] topics are kept, the least recently used going first; a
//!   topic that was dropped is asked for again, as an unknown one is.
//! - **Stateless** (tansu brokers sharing one store, each claiming every partition): a
//!   partition is served by the live broker that wins a rendezvous (highest random weight) hash
//!   of topic and partition. The assignment is stable while the set of live brokers is, and a
//!   broker joining or leaving moves only its own share.
//!
//! Requests about several partitions are split per broker by [`crate::api::split`].
//!
//! The router also sends group and transaction requests to their coordinators
//! ([`super::coordinators`], which keeps what the pool named) and resolves topic ids
//! ([`super::topic_ids`], which keeps what the pool answered and sends one resolution at a
//! time).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::broker::Broker;
use super::cache::BoundedCache;
use super::coordinators::{
    CoordinatorAnswer, Coordinators, COORDINATORS_CAPACITY, COORDINATOR_NOT_AVAILABLE,
};
use super::error::{is_network, UpstreamError};
use super::membership::Pool;
use super::topic_ids::{TopicIds, MISSING_TOPIC_IDS_CAPACITY, TOPIC_IDS_CAPACITY};

/// How partitions map to pool brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Each partition has a leader, named by the pool's metadata.
    Leader,
    /// Every broker serves every partition (shared storage); the gateway spreads them.
    Stateless,
}

impl std::str::FromStr for PoolKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leader" => Ok(PoolKind::Leader),
            "stateless" => Ok(PoolKind::Stateless),
            other => Err(format!("unknown pool kind {other:?}: leader or stateless")),
        }
    }
}

/// A leader cache entry older than this is asked for again when a request finds it stale, so
/// a leader that is down (and still leader) costs the pool one metadata request per interval,
/// not one per client request.
const LEADER_REFRESH_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Topics whose leaders are kept. An entry is one pool topic the gateway routed to or saw in a
/// Metadata answer (a tenant asking for every topic brings in the whole pool's); a miss costs
/// one Metadata request for the topics of the request that missed. Room for every topic of 27
/// clusters at the 2,400 partitions each may have (`api::topic_policy`), and the entries
/// carry 4 bytes per partition besides the name: a few MiB for a pool that size.
pub const LEADER_TOPICS_CAPACITY: usize = 65_536;

/// Leaders of one topic's partitions, by pool node id (-1: none).
struct TopicLeaders {
    leaders: Vec<i32>,
    fetched: Instant,
    /// An answer said a leader moved: ask again before trusting this.
    stale: bool,
}

struct Leaders {
    /// Pool node id -> `host:port`, from the latest metadata.
    nodes: HashMap<i32, String>,
    topics: BoundedCache<String, TopicLeaders>,
}

/// How many entries each of the router's caches keyed by what tenants send may hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) leader_topics: usize,
    pub(super) coordinators: usize,
    pub(super) topic_ids: usize,
    pub(super) missing_topic_ids: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            leader_topics: LEADER_TOPICS_CAPACITY,
            coordinators: COORDINATORS_CAPACITY,
            topic_ids: TOPIC_IDS_CAPACITY,
            missing_topic_ids: MISSING_TOPIC_IDS_CAPACITY,
        }
    }
}

/// Which pool broker serves a request, and what the gateway learned from the pool to decide it.
pub struct Router {
    pool: Pool,
    kind: PoolKind,
    leaders: RwLock<Leaders>,
    coordinators: Coordinators,
    topic_ids: TopicIds,
}

impl Router {
    pub fn new(pool: Pool, kind: PoolKind) -> Self {
        Router::with_bounds(pool, kind, Bounds::default())
    }

    /// A router whose caches hold at most `bounds` entries: for tests, with small bounds.
    pub(super) fn with_bounds(pool: Pool, kind: PoolKind, bounds: Bounds) -> Self {
        Router {
            pool,
            kind,
            leaders: RwLock::new(Leaders {
                nodes: HashMap::new(),
                topics: BoundedCache::new(bounds.leader_topics),
            }),
            coordinators: Coordinators::new(bounds.coordinators),
            topic_ids: TopicIds::new(bounds.topic_ids, bounds.missing_topic_ids),
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn kind(&self) -> PoolKind {
        self.kind
    }

    /// The live broker that owns `key`, by rendezvous (highest random weight) hashing.
    pub fn pick(&self, key: &[u8]) -> Result<Arc<Broker>, UpstreamError> {
        self.pool
            .brokers()
            .into_iter()
            .max_by_key(|b| weight(b.addr(), key, 0))
            .ok_or(UpstreamError::NoBrokers)
    }

    /// Any live broker, for requests that are not about one partition or key.
    pub fn any(&self) -> Result<Arc<Broker>, UpstreamError> {
        self.pick(b"")
    }

    /// The broker serving each of `partitions` (physical topic names), in order. Leaders
    /// unknown to the cache are asked of the pool once, for all of them together.
    pub async fn route(
        &self,
        partitions: &[(&str, i32)],
    ) -> Vec<Result<Arc<Broker>, UpstreamError>> {
        match self.kind {
            PoolKind::Stateless => {
                let live = self.pool.brokers();
                partitions
                    .iter()
                    .map(|(topic, p)| {
                        live.iter()
                            .max_by_key(|b| weight(b.addr(), topic.as_bytes(), *p))
                            .cloned()
                            .ok_or(UpstreamError::NoBrokers)
                    })
                    .collect()
            }
            PoolKind::Leader => self.route_to_leaders(partitions).await,
        }
    }

    async fn route_to_leaders(
        &self,
        partitions: &[(&str, i32)],
    ) -> Vec<Result<Arc<Broker>, UpstreamError>> {
        let unknown: Vec<&str> = {
            let leaders = self.leaders.read().expect("poisoned");
            let mut unknown: Vec<&str> = partitions
                .iter()
                .filter(|(topic, _)| match leaders.topics.get(*topic) {
                    None => true,
                    Some(t) => t.stale && t.fetched.elapsed() >= LEADER_REFRESH_MIN_INTERVAL,
                })
                .map(|(topic, _)| *topic)
                .collect();
            unknown.sort_unstable();
            unknown.dedup();
            unknown
        };
        if !unknown.is_empty() {
            if let Err(e) = self.refresh_leaders(&unknown).await {
                tracing::warn!(error = %e, "could not refresh partition leaders");
            }
        }
        let mut out = Vec::with_capacity(partitions.len());
        for (topic, p) in partitions {
            let addr = {
                let leaders = self.leaders.read().expect("poisoned");
                leaders
                    .topics
                    .get(*topic)
                    .and_then(|t| t.leaders.get(usize::try_from(*p).ok()?).copied())
                    .filter(|node| *node >= 0)
                    .and_then(|node| leaders.nodes.get(&node).cloned())
            };
            out.push(match addr {
                Some(addr) => self.broker_at(&addr).await,
                // A topic or partition the pool does not know (or has no leader for): any
                // broker answers that with the right error code.
                None => self.any(),
            });
        }
        out
    }

    /// The pool broker at `addr`, connecting to it first if the pool has not met it yet.
    async fn broker_at(&self, addr: &str) -> Result<Arc<Broker>, UpstreamError> {
        if let Some(b) = self.pool.broker(addr) {
            return Ok(b);
        }
        self.pool.add_broker(addr).await?;
        self.pool.broker(addr).ok_or(UpstreamError::NoBrokers)
    }

    /// Asks the pool for the leaders of `topics`.
    pub async fn refresh_leaders(&self, topics: &[&str]) -> Result<(), UpstreamError> {
        let (_, max) = self
            .pool
            .versions(ApiKey::Metadata)
            .ok_or_else(|| UpstreamError::Encode("pool does not support Metadata".into()))?;
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string((*t).to_owned()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = self.call_any(max.min(12), &req).await?;
        self.learn_metadata(&resp);
        Ok(())
    }

    /// Sends a request to a live broker, trying another when one cannot be reached. Only for
    /// requests that change nothing, so any retry is safe.
    pub async fn call_any<R: kafka_protocol::protocol::Request + 'static>(
        &self,
        version: i16,
        req: &R,
    ) -> Result<R::Response, UpstreamError> {
        let mut last = UpstreamError::NoBrokers;
        for _ in 0..3 {
            let broker = self.any()?;
            match broker.call(version, req).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.broker_failed(&broker, &e);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Sends a request to the broker at `addr`, meeting it first if the pool has not: for
    /// requests each broker answers for itself (DescribeLogDirs). Only for requests that
    /// change nothing.
    pub async fn call_at<R: kafka_protocol::protocol::Request + 'static>(
        &self,
        addr: &str,
        version: i16,
        req: &R,
    ) -> Result<R::Response, UpstreamError> {
        let broker = self.broker_at(addr).await?;
        broker
            .call(version, req)
            .await
            .inspect_err(|e| self.broker_failed(&broker, e))
    }

    /// Learns brokers and leaders from a pool Metadata answer (leader-based pools only: a
    /// stateless pool's brokers each claim everything).
    pub fn learn_metadata(&self, resp: &MetadataResponse) {
        if self.kind != PoolKind::Leader {
            return;
        }
        let mut leaders = self.leaders.write().expect("poisoned");
        for b in &resp.brokers {
            leaders
                .nodes
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        let now = Instant::now();
        for t in &resp.topics {
            let Some(name) = &t.name else { continue };
            if t.error_code != 0 {
                leaders.topics.remove(name.0.as_str());
                continue;
            }
            // Partitions are numbered 0..n; an index past what was listed is ignored rather
            // than trusted with an allocation.
            let len = t.partitions.len();
            let mut by_partition = vec![-1; len];
            for p in &t.partitions {
                if let Some(slot) = usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| by_partition.get_mut(i))
                {
                    *slot = p.leader_id.0;
                }
            }
            leaders.topics.insert(
                name.0.to_string(),
                TopicLeaders {
                    leaders: by_partition,
                    fetched: now,
                    stale: false,
                },
            );
        }
    }

    /// Which pool broker serves each of `partitions` of the physical `topic`, as an index
    /// into a sorted list of the brokers currently serving (with that list's length), as
    /// far as is known without asking the pool: what [`Router::route`] would pick now. `None`
    /// for a partition whose broker is not known.
    pub fn placement(&self, topic: &str, partitions: &[i32]) -> (Vec<Option<usize>>, usize) {
        match self.kind {
            PoolKind::Stateless => {
                let mut live: Vec<String> = self
                    .pool
                    .brokers()
                    .iter()
                    .map(|b| b.addr().to_owned())
                    .collect();
                live.sort_unstable();
                let at = partitions
                    .iter()
                    .map(|p| {
                        (0..live.len()).max_by_key(|&i| weight(&live[i], topic.as_bytes(), *p))
                    })
                    .collect();
                (at, live.len())
            }
            PoolKind::Leader => {
                let leaders = self.leaders.read().expect("poisoned");
                let mut nodes: Vec<i32> = leaders.nodes.keys().copied().collect();
                nodes.sort_unstable();
                let known = leaders.topics.get(topic);
                let at = partitions
                    .iter()
                    .map(|p| {
                        let node = known?.leaders.get(usize::try_from(*p).ok()?)?;
                        nodes.binary_search(node).ok()
                    })
                    .collect();
                (at, nodes.len())
            }
        }
    }

    /// An answer said `topic`'s leadership changed (NOT_LEADER_OR_FOLLOWER and kin): the next
    /// request about it asks the pool again.
    pub fn leaders_moved(&self, topic: &str) {
        if let Some(t) = self
            .leaders
            .write()
            .expect("poisoned")
            .topics
            .get_mut(topic)
        {
            t.stale = true;
        }
    }

    /// A request to `broker` failed. Leaders it held are asked for anew and coordinators on it
    /// are forgotten. Only a broker that refuses connections is taken out of the routing
    /// (until the prober sees it answer again): a dropped connection or one slow answer is
    /// not a dead broker (tansu drops a connection over one bad request), and taking the
    /// broker away from every tenant over one tenant's request would let that tenant make
    /// the pool look down for all. The prober, on a connection of its own, notices a broker
    /// that stopped answering altogether.
    pub fn broker_failed(&self, broker: &Broker, error: &UpstreamError) {
        if !is_network(error) {
            return;
        }
        if matches!(error, UpstreamError::Connect { .. }) {
            self.pool.mark_down(broker.addr(), &error.to_string());
        } else {
            // Checked at once on a fresh connection: down only if that fails too.
            self.pool.suspect(broker.addr());
        }
        self.coordinators.forget_broker(broker.addr());
        if self.kind == PoolKind::Leader {
            let mut leaders = self.leaders.write().expect("poisoned");
            let nodes: Vec<i32> = leaders
                .nodes
                .iter()
                .filter(|(_, a)| a.as_str() == broker.addr())
                .map(|(n, _)| *n)
                .collect();
            for t in leaders.topics.values_mut() {
                if t.leaders.iter().any(|l| nodes.contains(l)) {
                    t.stale = true;
                }
            }
        }
    }

    /// The pool's coordinator for a physical group id or transactional id.
    pub async fn coordinator(
        &self,
        key_type: i8,
        key: &str,
    ) -> Result<CoordinatorAnswer, UpstreamError> {
        if let Some(b) = self.coordinators.cached(key_type, key, &self.pool) {
            return Ok(CoordinatorAnswer {
                error_code: 0,
                error_message: None,
                broker: Some(b),
            });
        }
        // On a stateless pool the broker asked becomes the coordinator, so the key's hash
        // spreads groups over the brokers; a leader-based pool answers the same from any.
        let asked = self.pick(key.as_bytes())?;
        let found = match Coordinators::find(&self.pool, &asked, key_type, key).await {
            Ok(found) => found,
            // The broker asked is gone: the client's retry will ask another.
            Err(e) if is_network(&e) => {
                self.broker_failed(&asked, &e);
                return Ok(CoordinatorAnswer {
                    error_code: COORDINATOR_NOT_AVAILABLE,
                    error_message: None,
                    broker: None,
                });
            }
            Err(e) => return Err(e),
        };
        let (error_code, error_message, addr) = found;
        if error_code != 0 {
            return Ok(CoordinatorAnswer {
                error_code,
                error_message,
                broker: None,
            });
        }
        let broker = match self.broker_at(&addr).await {
            Ok(b) => b,
            Err(e) if is_network(&e) => {
                return Ok(CoordinatorAnswer {
                    error_code: COORDINATOR_NOT_AVAILABLE,
                    error_message: None,
                    broker: None,
                })
            }
            Err(e) => return Err(e),
        };
        self.coordinators.remember(key_type, key, broker.clone());
        Ok(CoordinatorAnswer {
            error_code: 0,
            error_message: None,
            broker: Some(broker),
        })
    }

    /// Forgets a cached coordinator, after the pool said it is not (or no longer) the one.
    pub fn coordinator_moved(&self, key_type: i8, key: &str) {
        self.coordinators.forget(key_type, key);
    }

    /// Records topic ids seen in a pool answer.
    pub fn learn_topic_ids<'a>(&self, pairs: impl IntoIterator<Item = (Uuid, &'a str)>) {
        self.topic_ids.learn(pairs);
    }

    pub fn forget_topic_id(&self, id: &Uuid) {
        self.topic_ids.forget(id);
    }

    /// The physical name behind a topic id, asking the pool when the caches do not know it.
    pub async fn topic_name(&self, id: Uuid) -> Result<Option<String>, UpstreamError> {
        Ok(self.topic_names([id]).await?.remove(&id).flatten())
    }

    /// The physical names behind topic ids (`None` for an id the pool does not know, and for
    /// the nil id). The ids the caches do not know are asked of the pool together, in one
    /// Metadata request shared with every other caller waiting at the time
    /// ([`super::topic_ids`]).
    pub async fn topic_names(
        &self,
        ids: impl IntoIterator<Item = Uuid>,
    ) -> Result<HashMap<Uuid, Option<String>>, UpstreamError> {
        self.topic_ids.names(ids, || self.every_topic()).await
    }

    /// Metadata for every topic of the pool: not every pool can look topics up by id.
    async fn every_topic(&self) -> Result<MetadataResponse, UpstreamError> {
        let (_, max) = self
            .pool
            .versions(ApiKey::Metadata)
            .ok_or_else(|| UpstreamError::Encode("pool does not support Metadata".into()))?;
        let req = MetadataRequest::default().with_topics(None);
        self.call_any(max.min(12), &req).await
    }
}

/// Rendezvous weight of `broker` for a key: the live broker with the highest weight serves it.
fn weight(broker: &str, key: &[u8], partition: i32) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    broker.hash(&mut h);
    key.hash(&mut h);
    partition.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    //! Routing over real tansu brokers (memory engine): the pool is never mocked.

    use std::collections::HashMap;

    use super::*;
    use crate::pool::testing::{FakeBroker, Tansu};
    use crate::pool::{Timeouts, GROUP};
    use kafka_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::BrokerId;

    /// Where each of 6 topics x 10 partitions goes, as broker addresses.
    async fn placement(router: &Router) -> HashMap<(String, i32), String> {
        let keys: Vec<(String, i32)> = (0..6)
            .flat_map(|t| (0..10).map(move |p| (format!("tg-topic-{t}"), p)))
            .collect();
        let borrowed: Vec<(&str, i32)> = keys.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        let routes = router.route(&borrowed).await;
        keys.into_iter()
            .zip(routes)
            .map(|(k, r)| (k, r.expect("routed").addr().to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_stateless_pool_spreads_partitions_and_a_broker_leaving_moves_only_its_share() {
        let brokers = [
            Tansu::start().await,
            Tansu::start().await,
            Tansu::start().await,
        ];
        let pool = Pool::new(Timeouts::default());
        for b in &brokers {
            pool.add_broker(&b.addr).await.expect("tansu answers");
        }
        let router = Router::new(pool.clone(), PoolKind::Stateless);

        let before = placement(&router).await;
        for b in &brokers {
            let share = before.values().filter(|a| **a == b.addr).count();
            assert!(
                share >= 5,
                "{} serves {share} of 60 partitions: not spread",
                b.addr
            );
        }
        // Stable: asking again changes nothing.
        assert_eq!(placement(&router).await, before);

        let gone = &brokers[0].addr;
        pool.mark_down(gone, "test");
        let after = placement(&router).await;
        for (key, was) in &before {
            let now = &after[key];
            if was == gone {
                assert_ne!(now, gone, "{key:?} still on the broker that left");
            } else {
                assert_eq!(now, was, "{key:?} moved though its broker stayed");
            }
        }

        // Back again: it takes back exactly its share.
        pool.add_broker(gone).await.expect("answers again");
        assert_eq!(placement(&router).await, before);
    }

    #[tokio::test]
    async fn no_live_broker_is_an_error_for_each_partition() {
        let tansu = Tansu::start().await;
        let pool = Pool::new(Timeouts::default());
        pool.add_broker(&tansu.addr).await.expect("tansu answers");
        pool.mark_down(&tansu.addr, "test");
        let router = Router::new(pool, PoolKind::Stateless);
        let routes = router.route(&[("tg-a", 0), ("tg-a", 1)]).await;
        assert!(routes
            .iter()
            .all(|r| matches!(r, Err(UpstreamError::NoBrokers))));
    }

    fn small(leader_topics: usize, coordinators: usize) -> Bounds {
        Bounds {
            leader_topics,
            coordinators,
            ..Bounds::default()
        }
    }

    #[test]
    fn the_leader_cache_keeps_at_most_its_bound_of_topics() {
        let router = Router::with_bounds(
            Pool::new(Timeouts::default()),
            PoolKind::Leader,
            small(8, 1),
        );
        let topic = |i: usize| {
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(format!("tg-t-{i}")))))
                .with_partitions(vec![MetadataResponsePartition::default()
                    .with_partition_index(0)
                    .with_leader_id(BrokerId(1))])
        };
        // Every topic of a large pool at once, as a tenant listing every topic brings in.
        router.learn_metadata(
            &MetadataResponse::default().with_topics((0..100).map(topic).collect()),
        );
        assert_eq!(router.leaders.read().unwrap().topics.len(), 8);
        // A topic routed to stays while others come and go.
        router.learn_metadata(&MetadataResponse::default().with_topics(vec![topic(1000)]));
        for i in 100..200 {
            assert_eq!(
                router.placement("tg-t-1000", &[0]).0,
                [None],
                "no node is known"
            );
            assert!(
                router
                    .leaders
                    .read()
                    .unwrap()
                    .topics
                    .get("tg-t-1000")
                    .is_some(),
                "at {i}"
            );
            router.learn_metadata(&MetadataResponse::default().with_topics(vec![topic(i)]));
        }
        assert_eq!(router.leaders.read().unwrap().topics.len(), 8);
    }

    async fn coordinator_of(router: &Router, key: &str) -> String {
        let answer = router.coordinator(GROUP, key).await.unwrap();
        assert_eq!(answer.error_code, 0);
        answer.broker.expect("a coordinator").addr().to_owned()
    }

    #[tokio::test]
    async fn the_coordinator_cache_keeps_at_most_its_bound_and_a_group_in_use_stays() {
        let fake = FakeBroker::start(Vec::new(), Duration::ZERO).await;
        let pool = Pool::new(Timeouts::default());
        pool.add_broker(&fake.addr).await.expect("the fake answers");
        let router = Router::with_bounds(pool, PoolKind::Stateless, small(1, 4));

        for i in 0..50 {
            assert_eq!(coordinator_of(&router, "tg-g-busy").await, fake.addr);
            assert_eq!(
                coordinator_of(&router, &format!("tg-g-{i}")).await,
                fake.addr
            );
            assert!(router.coordinators.len() <= 4);
        }
        // One FindCoordinator per made-up group, one for the group in use.
        assert_eq!(fake.count(ApiKey::FindCoordinator), 51);
    }

    #[tokio::test]
    async fn unknown_topic_ids_from_many_requests_at_once_cost_the_pool_two_metadata_requests() {
        let known = Uuid::new_v4();
        let topics = vec![(known, "tg-t-known".to_string())];
        // Answers late enough that every lookup below is waiting before the first is answered.
        let fake = FakeBroker::start(topics, Duration::from_millis(200)).await;
        let pool = Pool::new(Timeouts::default());
        pool.add_broker(&fake.addr).await.expect("the fake answers");
        let router = Arc::new(Router::new(pool, PoolKind::Stateless));

        let mut lookups = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let router = router.clone();
            lookups.spawn(async move { router.topic_name(Uuid::new_v4()).await });
        }
        let known_too = router.clone();
        lookups.spawn(async move { known_too.topic_name(known).await });
        let mut named = Vec::new();
        while let Some(answer) = lookups.join_next().await {
            named.extend(answer.unwrap().expect("the pool answered"));
        }
        assert_eq!(named, ["tg-t-known"]);
        let asked = fake.count(ApiKey::Metadata);
        assert!((1..=2).contains(&asked), "{asked} Metadata requests");

        // Asked again, all of them come from the caches.
        let again = router.topic_names([known, Uuid::nil()]).await.unwrap();
        assert_eq!(again[&known].as_deref(), Some("tg-t-known"));
        assert_eq!(fake.count(ApiKey::Metadata), asked);
    }
}
