//! Which pool broker serves a request.
//!
//! Two kinds of pool sit behind the same router ([`PoolKind`]):
//!
//! - **Leader-based** (Apache Kafka, librdkafka's mock cluster): every partition has one leader.
//!   Leaders are learned from the pool's metadata (from every Metadata answer that passes
//!   through, and asked for when a request names a topic the cache does not know) and
//!   forgotten when an answer says the leader moved, so the next request asks again.
//! - **Stateless** (tansu brokers sharing one store, each claiming every partition): a
//!   partition is served by the live broker that wins a rendezvous (highest random weight) hash
//!   of topic and partition. The assignment is stable while the set of live brokers is, and a
//!   broker joining or leaving moves only its own share.
//!
//! Requests about several partitions are split per broker by [`crate::api::split`].
//!
//! Group and transaction requests go to the coordinator the pool names for the (physical)
//! key, asked of the broker the key hashes to and cached until a response says NOT_COORDINATOR
//! or the coordinator stops answering.
//!
//! Topic ids are resolved to physical names through a cache filled from every metadata and
//! create-topics answer that passes through, so a tenant's request by id can be checked
//! against its namespace before it goes anywhere.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use crate::upstream::{Broker, Pool, UpstreamError};

pub const GROUP: i8 = 0;
pub const TRANSACTION: i8 = 1;

const COORDINATOR_NOT_AVAILABLE: i16 =
    kafka_protocol::ResponseError::CoordinatorNotAvailable.code();

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

/// What the pool answered for a coordinator lookup.
#[derive(Clone)]
pub struct CoordinatorAnswer {
    pub error_code: i16,
    pub error_message: Option<StrBytes>,
    /// Set when `error_code` is 0.
    pub broker: Option<Arc<Broker>>,
}

/// Leaders of one topic's partitions, by pool node id (-1: none).
struct TopicLeaders {
    leaders: Vec<i32>,
    fetched: Instant,
    /// An answer said a leader moved: ask again before trusting this.
    stale: bool,
}

#[derive(Default)]
struct Leaders {
    /// Pool node id -> `host:port`, from the latest metadata.
    nodes: HashMap<i32, String>,
    topics: HashMap<String, TopicLeaders>,
}

pub struct Router {
    pool: Pool,
    kind: PoolKind,
    leaders: RwLock<Leaders>,
    coordinators: Mutex<HashMap<(i8, String), Arc<Broker>>>,
    topic_ids: RwLock<HashMap<Uuid, String>>,
}

impl Router {
    pub fn new(pool: Pool, kind: PoolKind) -> Self {
        Router {
            pool,
            kind,
            leaders: RwLock::default(),
            coordinators: Mutex::default(),
            topic_ids: RwLock::default(),
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
        self.coordinators
            .lock()
            .expect("poisoned")
            .retain(|_, b| b.addr() != broker.addr());
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
        let cache_key = (key_type, key.to_owned());
        {
            let mut cache = self.coordinators.lock().expect("poisoned");
            match cache.get(&cache_key) {
                Some(b) if self.pool.is_live(b.addr()) => {
                    return Ok(CoordinatorAnswer {
                        error_code: 0,
                        error_message: None,
                        broker: Some(b.clone()),
                    });
                }
                // Its broker stopped answering: ask where the key lives now.
                Some(_) => {
                    cache.remove(&cache_key);
                }
                None => {}
            }
        }
        // On a stateless pool the broker asked becomes the coordinator, so the key's hash
        // spreads groups over the brokers; a leader-based pool answers the same from any.
        let asked = self.pick(key.as_bytes())?;
        let found = match self.find_coordinator(&asked, key_type, key).await {
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
        self.coordinators
            .lock()
            .expect("poisoned")
            .insert(cache_key, broker.clone());
        Ok(CoordinatorAnswer {
            error_code: 0,
            error_message: None,
            broker: Some(broker),
        })
    }

    /// FindCoordinator for one key: (error code, message, coordinator address).
    async fn find_coordinator(
        &self,
        asked: &Broker,
        key_type: i8,
        key: &str,
    ) -> Result<(i16, Option<StrBytes>, String), UpstreamError> {
        let (_, max) = self
            .pool
            .versions(ApiKey::FindCoordinator)
            .ok_or_else(|| UpstreamError::Encode("pool does not support FindCoordinator".into()))?;
        let key_str = StrBytes::from_string(key.to_owned());
        let (error_code, error_message, host, port) = if max >= 4 {
            let version = max.min(6);
            let req = FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_coordinator_keys(vec![key_str]);
            let resp: FindCoordinatorResponse = asked.call(version, &req).await?;
            let c = resp
                .coordinators
                .into_iter()
                .next()
                .ok_or_else(|| UpstreamError::Decode {
                    addr: asked.addr().to_owned(),
                    reason: "FindCoordinator answered no coordinator".into(),
                })?;
            (c.error_code, c.error_message, c.host, c.port)
        } else {
            let req = FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_key(key_str);
            let resp: FindCoordinatorResponse = asked.call(max, &req).await?;
            (resp.error_code, resp.error_message, resp.host, resp.port)
        };
        Ok((
            error_code,
            error_message,
            format!("{}:{}", host.as_str(), port),
        ))
    }

    /// Forgets a cached coordinator, after the pool said it is not (or no longer) the one.
    pub fn coordinator_moved(&self, key_type: i8, key: &str) {
        self.coordinators
            .lock()
            .expect("poisoned")
            .remove(&(key_type, key.to_owned()));
    }

    /// Records topic ids seen in a pool answer.
    pub fn learn_topic_ids<'a>(&self, pairs: impl IntoIterator<Item = (Uuid, &'a str)>) {
        let mut ids = self.topic_ids.write().expect("poisoned");
        for (id, name) in pairs {
            if !id.is_nil() {
                ids.insert(id, name.to_owned());
            }
        }
    }

    pub fn forget_topic_id(&self, id: &Uuid) {
        self.topic_ids.write().expect("poisoned").remove(id);
    }

    /// The physical name behind a topic id, asking the pool when the cache does not know it.
    pub async fn topic_name(&self, id: Uuid) -> Result<Option<String>, UpstreamError> {
        if id.is_nil() {
            return Ok(None);
        }
        if let Some(name) = self.topic_ids.read().expect("poisoned").get(&id) {
            return Ok(Some(name.clone()));
        }
        let (_, max) = self
            .pool
            .versions(ApiKey::Metadata)
            .ok_or_else(|| UpstreamError::Encode("pool does not support Metadata".into()))?;
        let version = max.min(12);
        // Every topic: a rare path (an id this gateway has not seen in any answer yet), and
        // not every pool can look topics up by id.
        let req = MetadataRequest::default().with_topics(None);
        let resp: MetadataResponse = self.call_any(version, &req).await?;
        self.learn_topic_ids(
            resp.topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| (t.topic_id, n.as_str()))),
        );
        Ok(self.topic_ids.read().expect("poisoned").get(&id).cloned())
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

/// Whether a failure says the broker could not be reached or stopped answering (as opposed
/// to a message that could not be encoded or decoded).
pub fn is_network(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Connect { .. } | UpstreamError::Io { .. } | UpstreamError::Timeout { .. }
    )
}

#[cfg(test)]
mod tests {
    //! Routing over real tansu brokers (memory engine): the pool is never mocked.

    use std::collections::HashMap;

    use super::*;
    use crate::upstream::tests::Tansu;
    use crate::upstream::Timeouts;

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
}
