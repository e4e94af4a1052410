//! The quotas that are counts rather than rates (issue 13; CONTRACT, "Quotas and limits"):
//! partitions, partition mutations per 5 minutes, connections and connection attempts,
//! consumer groups and stored bytes. Byte and request rates are the throttling's.
//!
//! - [`quotas_of`]: a cluster's quotas as they are now (the admin API changes them live).
//! - [`Counts`]: what each cluster has used of them on this gateway instance (partition
//!   mutations in the last 5 minutes), one entry per live cluster, dropped with it.
//! - [`mutation_refusal`]: how a partition mutation over the quota is answered (KIP-599);
//!   [`Mutations`]: one CreateTopics, CreatePartitions or DeleteTopics request's count.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::api::topic_policy::Refusal;
use crate::api::Ctx;
use crate::pool::UpstreamError;
use crate::quotas::Quotas;
use crate::state::Gateway;
use crate::tenancy::{Cluster, Registry};

/// The window of `partition_mutations_per_5_minutes`.
pub const MUTATION_WINDOW: Duration = Duration::from_secs(5 * 60);

pub const THROTTLING_QUOTA_EXCEEDED: i16 = ResponseError::ThrottlingQuotaExceeded.code();
pub const POLICY_VIOLATION: i16 = ResponseError::PolicyViolation.code();

/// The quotas of `cluster` as the registry has them now: a PATCH applies to connections
/// already open. A cluster no longer registered keeps the quotas it connected with.
pub fn quotas_of(gw: &Gateway, cluster: &Cluster) -> Quotas {
    gw.registry()
        .get(&cluster.id)
        .map_or(cluster.quotas, |c| c.quotas)
}

/// What each live cluster has used of its count quotas on this instance. Clusters are few
/// (hundreds), so one map behind a std mutex, never held across an await; an entry whose
/// cluster left the registry is dropped when the next new cluster is added.
pub struct Counts {
    registry: Registry,
    clusters: Mutex<HashMap<Uuid, ClusterCounts>>,
}

#[derive(Default)]
struct ClusterCounts {
    /// Partitions created or deleted, oldest first, each with when; none older than
    /// [`MUTATION_WINDOW`] once pruned.
    mutations: VecDeque<(Instant, u64)>,
    /// Refusals since the gateway started, for the admin API.
    refused: Refused,
}

/// How often each count quota refused something, per cluster, since the gateway started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    pub partition_mutations: u64,
}

impl Counts {
    pub fn new(registry: Registry) -> Self {
        Counts {
            registry,
            clusters: Mutex::default(),
        }
    }

    fn with<T>(&self, cluster: &Uuid, f: impl FnOnce(&mut ClusterCounts) -> T) -> T {
        let mut clusters = self.clusters.lock().expect("poisoned");
        if !clusters.contains_key(cluster) {
            clusters.retain(|id, _| self.registry.get(id).is_some());
        }
        f(clusters.entry(*cluster).or_default())
    }

    /// Counts `partitions` created or deleted now against `limit` partitions per
    /// [`MUTATION_WINDOW`] (None: no limit), or says how long until they would fit. A
    /// mutation that fits is counted; so is one larger than the whole quota when the window
    /// is empty, or such a topic could never be made (Kafka's strict quota admits whatever
    /// comes while it is not exceeded).
    pub fn mutate(
        &self,
        cluster: &Uuid,
        limit: Option<u64>,
        partitions: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        let Some(limit) = limit else { return Ok(()) };
        if partitions == 0 {
            return Ok(());
        }
        self.with(cluster, |c| {
            while c
                .mutations
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= MUTATION_WINDOW)
            {
                c.mutations.pop_front();
            }
            let used: u64 = c.mutations.iter().map(|(_, n)| n).sum();
            if used == 0 || used.saturating_add(partitions) <= limit {
                c.mutations.push_back((now, partitions));
                return Ok(());
            }
            // Room comes as the oldest mutations leave the window: enough of them for this
            // one to fit, or all of them for one larger than the quota.
            let excess = (used + partitions).saturating_sub(limit);
            let mut freed = 0;
            let mut room_at = now;
            for (at, n) in &c.mutations {
                freed += n;
                room_at = *at + MUTATION_WINDOW;
                if freed >= excess && partitions <= limit {
                    break;
                }
            }
            Err(room_at
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)))
        })
    }

    fn refused_mutations(&self, cluster: &Uuid) {
        self.with(cluster, |c| c.refused.partition_mutations += 1)
    }

    /// How often `cluster`'s count quotas refused something on this instance.
    pub fn refused(&self, cluster: &Uuid) -> Refused {
        self.with(cluster, |c| c.refused)
    }

    /// Gives back `partitions` counted by [`Counts::mutate`] that the pool did not create or
    /// delete after all (the topic existed, or did not), newest first.
    pub fn unmutate(&self, cluster: &Uuid, mut partitions: u64) {
        self.with(cluster, |c| {
            while partitions > 0 {
                let Some((_, n)) = c.mutations.back_mut() else {
                    break;
                };
                let taken = partitions.min(*n);
                *n -= taken;
                partitions -= taken;
                if *n == 0 {
                    c.mutations.pop_back();
                }
            }
        })
    }
}

/// The error code, message and throttle time of a partition mutation over the cluster's
/// `partition_mutations_per_5_minutes` quota. Versions since KIP-599 (CreateTopics v6,
/// CreatePartitions v3, DeleteTopics v5) get THROTTLING_QUOTA_EXCEEDED, which their clients
/// retry after the throttle time. Kafka lets older versions through and only delays their
/// next request; the gateway cannot let a tenant pass a quota of the shared pool by speaking
/// an old version, so it refuses them with POLICY_VIOLATION, which they know.
pub fn mutation_refusal(
    api: ApiKey,
    version: i16,
    limit: u64,
    wait: Duration,
) -> (i16, String, i32) {
    let strict_since = match api {
        ApiKey::CreateTopics => 6,
        ApiKey::CreatePartitions => 3,
        _ => 5,
    };
    let code = if version >= strict_since {
        THROTTLING_QUOTA_EXCEEDED
    } else {
        POLICY_VIOLATION
    };
    let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    let message = format!(
        "the cluster may create or delete at most {limit} partitions per 5 minutes \
         (quota partition_mutations_per_5_minutes); there is room again in {wait_ms} ms"
    );
    (code, message, wait_ms)
}

/// One topic administration request's partition mutations: each topic is counted against
/// the cluster's `partition_mutations_per_5_minutes` as it is admitted, and what the pool then
/// failed is given back. Moves into the request's answer future.
pub struct Mutations {
    gw: Gateway,
    cluster: Uuid,
    api: ApiKey,
    version: i16,
    limit: Option<u64>,
    /// Partitions counted per pool topic name.
    counted: HashMap<String, u64>,
    /// The longest wait of a refused topic: the answer's `throttle_time_ms`.
    pub throttle_ms: i32,
}

impl Mutations {
    /// `validate_only` requests change nothing and count nothing.
    pub fn new(ctx: &Ctx, api: ApiKey, version: i16, validate_only: bool) -> Self {
        let limit = if validate_only {
            None
        } else {
            quotas_of(&ctx.gw, &ctx.session.cluster).partition_mutations_per_5_minutes
        };
        Mutations {
            gw: ctx.gw.clone(),
            cluster: ctx.session.cluster.id,
            api,
            version,
            limit,
            counted: HashMap::new(),
            throttle_ms: 0,
        }
    }

    /// Counts `partitions` created or deleted in the pool topic `topic`, or refuses them.
    pub fn admit(&mut self, topic: &str, partitions: u64) -> Result<(), Refusal> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let counts = self.gw.quota_counts();
        match counts.mutate(&self.cluster, Some(limit), partitions, Instant::now()) {
            Ok(()) => {
                *self.counted.entry(topic.to_owned()).or_default() += partitions;
                Ok(())
            }
            Err(wait) => {
                let (code, message, wait_ms) =
                    mutation_refusal(self.api, self.version, limit, wait);
                self.throttle_ms = self.throttle_ms.max(wait_ms);
                counts.refused_mutations(&self.cluster);
                Err(Refusal { code, message })
            }
        }
    }

    /// Gives back what was counted for a pool topic the pool failed.
    pub fn failed(&mut self, topic: &str) {
        if let Some(n) = self.counted.remove(topic) {
            self.gw.quota_counts().unmutate(&self.cluster, n);
        }
    }
}

/// The partition counts of pool topics, as the pool has them now; topics it does not know, or
/// all of them when it cannot be asked, are missing (callers count what the request says).
pub async fn partition_counts(gw: &Gateway, topics: &[String]) -> HashMap<String, u64> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    if topics.is_empty() {
        return HashMap::new();
    }
    let Some((_, max)) = gw.router().pool().versions(ApiKey::Metadata) else {
        return HashMap::new();
    };
    let req = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    let resp: Result<MetadataResponse, UpstreamError> =
        gw.router().call_any(max.min(12), &req).await;
    let Ok(resp) = resp else {
        return HashMap::new();
    };
    resp.topics
        .into_iter()
        .filter(|t| t.error_code == 0)
        .filter_map(|t| Some((t.name?.0.to_string(), t.partitions.len() as u64)))
        .collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::api::{testing, Ctx, Reply};

    const ALLOW_ALL: &str =
        r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#;

    /// Sets quotas on the test context's cluster, as a PATCH does.
    pub(crate) fn set_quotas(ctx: &Ctx, change: impl FnOnce(&mut Quotas)) {
        let mut cluster = (*ctx.gw.registry().get(&ctx.session.cluster.id).unwrap()).clone();
        change(&mut cluster.quotas);
        ctx.gw.registry().upsert(cluster);
    }

    fn now(reply: Reply) -> ResponseKind {
        match reply {
            Reply::Now(r) => *r,
            _ => panic!("answered by the pool, not refused"),
        }
    }

    const WINDOW: Duration = MUTATION_WINDOW;

    #[test]
    fn partition_mutations_slide_out_of_a_five_minute_window() {
        let counts = Counts::new(Registry::default());
        let c = Uuid::from_u128(1);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(counts.mutate(&c, Some(10), 6, at(0)), Ok(()));
        assert_eq!(counts.mutate(&c, Some(10), 3, at(60)), Ok(()));
        // 9 used: 2 more wait for the first 6 to leave, at 300 s.
        assert_eq!(
            counts.mutate(&c, Some(10), 2, at(100)),
            Err(WINDOW - Duration::from_secs(100))
        );
        assert_eq!(counts.mutate(&c, Some(10), 1, at(100)), Ok(()));
        // Another cluster has its own window.
        assert_eq!(
            counts.mutate(&Uuid::from_u128(2), Some(10), 10, at(100)),
            Ok(())
        );
        // Once the first 6 have left, 2 fit.
        assert_eq!(counts.mutate(&c, Some(10), 2, at(300)), Ok(()));
        // No limit, and nothing mutated, always pass.
        assert_eq!(counts.mutate(&c, None, 1_000, at(300)), Ok(()));
        assert_eq!(counts.mutate(&c, Some(10), 0, at(300)), Ok(()));
    }

    #[test]
    fn a_mutation_larger_than_the_quota_needs_an_empty_window() {
        let counts = Counts::new(Registry::default());
        let c = Uuid::from_u128(1);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(counts.mutate(&c, Some(5), 1, at(0)), Ok(()));
        assert_eq!(counts.mutate(&c, Some(5), 1, at(10)), Ok(()));
        // Waits for the newest to leave, not the oldest.
        assert_eq!(
            counts.mutate(&c, Some(5), 8, at(20)),
            Err(WINDOW - Duration::from_secs(10))
        );
        assert_eq!(counts.mutate(&c, Some(5), 8, at(310)), Ok(()));
        assert!(counts.mutate(&c, Some(5), 1, at(311)).is_err());
    }

    #[test]
    fn refused_by_the_pool_gives_the_mutations_back() {
        let counts = Counts::new(Registry::default());
        let c = Uuid::from_u128(1);
        let now = Instant::now();
        counts.mutate(&c, Some(10), 4, now).unwrap();
        counts.mutate(&c, Some(10), 6, now).unwrap();
        assert!(counts.mutate(&c, Some(10), 1, now).is_err());
        counts.unmutate(&c, 7);
        assert_eq!(counts.mutate(&c, Some(10), 7, now), Ok(()));
        assert!(counts.mutate(&c, Some(10), 1, now).is_err());
    }

    #[test]
    fn a_deleted_clusters_counts_are_dropped() {
        let registry = Registry::default();
        let counts = Counts::new(registry.clone());
        let gone = Uuid::from_u128(1);
        counts.mutate(&gone, Some(10), 1, Instant::now()).unwrap();
        counts
            .mutate(&Uuid::from_u128(2), Some(10), 1, Instant::now())
            .unwrap();
        assert!(!counts.clusters.lock().unwrap().contains_key(&gone));
    }

    #[test]
    fn new_clients_are_throttled_and_old_ones_refused_by_policy() {
        let wait = Duration::from_millis(1_500);
        for (api, version, code) in [
            (ApiKey::CreateTopics, 6, THROTTLING_QUOTA_EXCEEDED),
            (ApiKey::CreateTopics, 5, POLICY_VIOLATION),
            (ApiKey::CreatePartitions, 3, THROTTLING_QUOTA_EXCEEDED),
            (ApiKey::CreatePartitions, 2, POLICY_VIOLATION),
            (ApiKey::DeleteTopics, 5, THROTTLING_QUOTA_EXCEEDED),
            (ApiKey::DeleteTopics, 4, POLICY_VIOLATION),
        ] {
            let (c, message, ms) = mutation_refusal(api, version, 250, wait);
            assert_eq!((c, ms), (code, 1_500), "{api:?} v{version}");
            assert!(
                message.contains("250") && message.contains("partition_mutations_per_5_minutes"),
                "{message}"
            );
        }
    }

    #[tokio::test]
    async fn create_topics_keeps_to_the_live_max_partitions_quota() {
        let ctx = testing::ctx(ALLOW_ALL);
        set_quotas(&ctx, |q| q.max_partitions = Some(3));
        let topic = |name: &str, n: i32| {
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_num_partitions(n)
        };
        let req = CreateTopicsRequest::default().with_topics(vec![topic("big", 4)]);
        let ResponseKind::CreateTopics(resp) = now(crate::api::topics::create_topics(&ctx, 7, req)
            .await
            .unwrap())
        else {
            panic!()
        };
        let t = &resp.topics[0];
        assert_eq!(t.error_code, crate::api::topic_policy::POLICY_VIOLATION);
        let message = t.error_message.as_ref().unwrap().as_str();
        assert!(
            message.contains("at most 3 partitions") && message.contains("max_partitions"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn topic_requests_over_the_mutation_quota_are_throttled() {
        use kafka_protocol::messages::{
            delete_topics_request::DeleteTopicState, DeleteTopicsRequest,
        };

        let ctx = testing::ctx(ALLOW_ALL);
        set_quotas(&ctx, |q| q.partition_mutations_per_5_minutes = Some(2));
        let cluster = ctx.session.cluster.id;
        ctx.gw
            .quota_counts()
            .mutate(&cluster, Some(2), 2, Instant::now())
            .unwrap();
        let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_num_partitions(1)]);
        for (version, code) in [(7, THROTTLING_QUOTA_EXCEEDED), (5, POLICY_VIOLATION)] {
            let reply = crate::api::topics::create_topics(&ctx, version, create.clone());
            let ResponseKind::CreateTopics(resp) = now(reply.await.unwrap()) else {
                panic!()
            };
            let t = &resp.topics[0];
            assert_eq!(t.error_code, code, "v{version}");
            let message = t.error_message.as_ref().unwrap().as_str();
            assert!(
                message.contains("partition_mutations_per_5_minutes"),
                "{message}"
            );
            assert!(
                resp.throttle_time_ms > 0 && resp.throttle_time_ms <= 300_000,
                "{}",
                resp.throttle_time_ms
            );
        }
        // Deleting a topic is a mutation too (its partitions, here unknown to a poolless test,
        // count as one).
        let delete = DeleteTopicsRequest::default().with_topics(vec![DeleteTopicState::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))]);
        let reply = crate::api::topics::delete_topics(&ctx, 6, delete);
        let ResponseKind::DeleteTopics(resp) = now(reply.await.unwrap()) else {
            panic!()
        };
        assert_eq!(resp.responses[0].error_code, THROTTLING_QUOTA_EXCEEDED);
        assert_eq!(
            resp.responses[0].name.as_ref().unwrap().0.as_str(),
            "orders"
        );
        assert!(resp.throttle_time_ms > 0);
        assert_eq!(
            ctx.gw.quota_counts().refused(&cluster).partition_mutations,
            3
        );
        // A validate-only request changes nothing, so it is not counted.
        let reply = crate::api::topics::create_topics(&ctx, 7, create.with_validate_only(true));
        assert!(matches!(reply.await, Err(_) | Ok(Reply::Later(_))));
    }
}
