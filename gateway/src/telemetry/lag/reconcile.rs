//! Reconciliation with the pool. Each gateway instance sees only the commits and answers
//! that pass through it, and nothing from before it started, so every [`RECONCILE_EVERY`]
//! each live cluster's groups are read from the pool itself:
//!
//! 1. ListGroups on every pool broker that coordinates groups (one on a stateless pool,
//!    whose brokers share one store), once per round for all clusters, split by namespace.
//! 2. Per cluster, OffsetFetch of up to [`GROUPS_PER_ROUND`] of its groups from their
//!    coordinators (all of a coordinator's groups in one request from v8, Kafka 3.0).
//! 3. ListOffsets (latest, i.e. the high watermark) of up to [`PARTITIONS_PER_ROUND`] of the
//!    partitions those groups committed to, each from the broker that serves it; the answers
//!    raise the per-topic high watermarks the data path also raises.
//! 4. The cluster's committed offsets are replaced by the pool's answer: a group the pool no
//!    longer lists (deleted), or whose offsets expired, goes
//!    ([`super::committed::ClusterLag::replace`]).
//!
//! A cluster whose calls fail or take longer than [`CLUSTER_ROUND_TIMEOUT`] keeps what it had
//! and the round goes on with the next.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, BrokerId, GroupId, ListGroupsRequest, ListOffsetsRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::pool::{Broker, UpstreamError, GROUP};
use crate::state::Gateway;
use crate::tenancy::Cluster;

/// How often the pool is asked. Prometheus is usually set to scrape every 15 s (its example
/// configuration's interval), so a scrape sees traffic other instances carried at most one
/// round old. A round costs the pool one ListGroups per broker and, per cluster with groups,
/// one OffsetFetch per coordinator and one ListOffsets per broker serving its partitions.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(15);

/// Groups of one cluster whose offsets a round fetches: MSK Serverless's 500 consumer groups
/// per cluster (our default `max_consumer_groups`), so a cluster within the default quota is
/// fetched whole every round. A cluster with more is fetched a window at a time, the window
/// moving each round; its other groups keep what they had.
pub const GROUPS_PER_ROUND: usize = 500;

/// Partitions of one cluster whose latest offset a round asks for: MSK Serverless's 2,400
/// partitions per cluster, every partition a cluster may have.
pub const PARTITIONS_PER_ROUND: usize = 2_400;

/// How long one cluster's part of a round may take before it is left for the next round: a
/// pool broker that stops answering would otherwise hold the round for the pool's request
/// timeout (60 s) per call, and every other cluster with it.
pub const CLUSTER_ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// Groups per OffsetFetch (v8+): one request per coordinator for a cluster at its 500 groups,
/// in five parts, so no answer grows past a few hundred KiB.
const GROUPS_PER_REQUEST: usize = 100;

/// The newest OffsetFetch this module writes (v9; v10 names topics by id).
const OFFSET_FETCH_MAX: i16 = 9;
/// OffsetFetch from which one request carries several groups.
const OFFSET_FETCH_BATCHED: i16 = 8;
/// The newest ListOffsets this module writes (v7; v8 adds nothing it reads).
const LIST_OFFSETS_MAX: i16 = 7;
/// ListOffsets' timestamp for the latest offset (the high watermark at read_uncommitted).
const LATEST: i64 = -1;
/// The newest ListGroups this module writes (v4; v5 filters by group type).
const LIST_GROUPS_MAX: i16 = 4;

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Clusters whose offsets were read from the pool.
    pub reconciled: usize,
    /// Clusters whose calls failed or timed out; they keep what they had.
    pub failed: usize,
}

/// Reconciles every [`RECONCILE_EVERY`], the first round at once (so groups committed before
/// this process started show within seconds), until `shutdown`. Does nothing with metrics off.
pub async fn run(gw: Gateway, shutdown: impl Future<Output = ()>) {
    if !gw.metrics().enabled() {
        return;
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            round = reconcile_once(&gw) => if let Err(e) = round {
                tracing::debug!(error = %e, "consumer lag not reconciled; keeping what was known");
            },
            _ = &mut shutdown => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// One round over every live cluster. `Err` only when the pool's groups could not be listed
/// at all; a cluster's own failure is counted in [`Round::failed`].
pub async fn reconcile_once(gw: &Gateway) -> Result<Round, UpstreamError> {
    let lag = gw.lag();
    if !gw.metrics().enabled() {
        return Ok(Round::default());
    }
    lag.drop_deleted();
    let started = Instant::now();
    let listing = list_groups(gw).await?;
    let round = lag.inner.rounds.fetch_add(1, Ordering::Relaxed);
    let mut clusters = gw.registry().all();
    clusters.sort_by_key(|c| c.id);
    let mut done = Round::default();
    for cluster in clusters {
        let part = reconcile_cluster(gw, &cluster, &listing, started, round);
        match tokio::time::timeout(CLUSTER_ROUND_TIMEOUT, part).await {
            Ok(Ok(())) => done.reconciled += 1,
            Ok(Err(e)) => {
                tracing::debug!(cluster = %cluster.id, error = %e, "consumer lag of the cluster not reconciled");
                done.failed += 1;
            }
            Err(_) => {
                tracing::debug!(cluster = %cluster.id, "consumer lag of the cluster not reconciled in time");
                done.failed += 1;
            }
        }
    }
    Ok(done)
}

/// The pool's group ids, and whether every broker asked answered (only then may a group
/// missing from the list be taken as gone).
struct Listing {
    groups: Vec<String>,
    complete: bool,
}

async fn list_groups(gw: &Gateway) -> Result<Listing, UpstreamError> {
    let router = gw.router();
    let version = version(gw, ApiKey::ListGroups, LIST_GROUPS_MAX)?;
    let brokers = match router.kind() {
        crate::pool::PoolKind::Leader => router.pool().brokers(),
        crate::pool::PoolKind::Stateless => vec![router.any()?],
    };
    let mut listing = Listing {
        groups: Vec::new(),
        complete: true,
    };
    let mut last_error = UpstreamError::NoBrokers;
    let mut answered = false;
    for broker in brokers {
        match broker.call(version, &ListGroupsRequest::default()).await {
            Ok(resp) if resp.error_code == 0 => {
                answered = true;
                listing
                    .groups
                    .extend(resp.groups.into_iter().map(|g| g.group_id.0.to_string()));
            }
            Ok(resp) => {
                listing.complete = false;
                last_error = answered_error(&broker, "ListGroups", resp.error_code);
            }
            Err(e) => {
                router.broker_failed(&broker, &e);
                listing.complete = false;
                last_error = e;
            }
        }
    }
    if !answered {
        return Err(last_error);
    }
    listing.groups.sort_unstable();
    listing.groups.dedup();
    Ok(listing)
}

async fn reconcile_cluster(
    gw: &Gateway,
    cluster: &Cluster,
    listing: &Listing,
    started: Instant,
    round: u64,
) -> Result<(), UpstreamError> {
    let lag = gw.lag();
    let namespace = cluster.namespace();
    // (pool id, tenant name) of each of the cluster's groups, in name order.
    let groups: Vec<(&str, &str)> = listing
        .groups
        .iter()
        .filter_map(|g| Some((g.as_str(), namespace.strip(g)?)))
        .collect();
    if groups.is_empty() && lag.existing(&cluster.id).is_none() {
        return Ok(());
    }
    let listed: HashSet<String> = groups.iter().map(|(_, t)| t.to_string()).collect();
    let window: Vec<&str> = window(&groups, round, GROUPS_PER_ROUND)
        .map(|(pool, _)| *pool)
        .collect();
    let fetched = fetch_offsets(gw, &window).await?;

    // Each answered group's offsets under the tenant's names, and the partitions they are in.
    let mut partitions: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut offsets: HashMap<String, Vec<(String, i32, i64)>> = HashMap::new();
    for (group, committed) in fetched {
        let Some(group) = namespace.strip(&group) else {
            continue;
        };
        let mut mine = Vec::with_capacity(committed.len());
        for (topic, partition, offset) in committed {
            let Some(tenant_topic) = namespace.strip(&topic) else {
                continue;
            };
            mine.push((tenant_topic.to_owned(), partition, offset));
            partitions.insert((topic, partition));
        }
        offsets.insert(group.to_owned(), mine);
    }
    let partitions: Vec<(String, i32)> =
        partitions.into_iter().take(PARTITIONS_PER_ROUND).collect();
    let latest = latest_offsets(gw, &partitions).await?;
    if let Some(metrics) = gw.metrics().cluster(cluster.id) {
        for (topic, partition, offset) in latest {
            let tenant = || namespace.strip(&topic).map(str::to_owned);
            metrics
                .topics
                .get(topic.as_bytes(), tenant)
                .high_watermark(partition, offset);
        }
    }

    let marks = lag.marks(&cluster.id);
    let state = lag.cluster(cluster.id);
    let mut state = state.lock().expect("poisoned");
    state.replace(started, offsets, listing.complete.then_some(&listed));
    state.sample(Instant::now(), |topic, partition| {
        marks.get(topic, partition)
    });
    Ok(())
}

/// The `size` items starting at the round's place, wrapping around: every item is reached
/// within `len / size` rounds however many there are.
fn window<T>(items: &[T], round: u64, size: usize) -> impl Iterator<Item = &T> {
    let len = items.len();
    let start = if len <= size {
        0
    } else {
        // Both fit: `round` is taken modulo the number of windows before multiplying.
        let windows = len.div_ceil(size) as u64;
        ((round % windows) as usize * size) % len
    };
    items.iter().cycle().skip(start).take(size.min(len))
}

/// A pool broker's error code for a whole request, as an error.
fn answered_error(broker: &Broker, api: &str, code: i16) -> UpstreamError {
    UpstreamError::Decode {
        addr: broker.addr().to_owned(),
        reason: format!("{api} answered error code {code}"),
    }
}

/// The version of `api` to write: the pool's newest, at most `newest`.
fn version(gw: &Gateway, api: ApiKey, newest: i16) -> Result<i16, UpstreamError> {
    let (_, max) = gw
        .router()
        .pool()
        .versions(api)
        .ok_or_else(|| UpstreamError::Encode(format!("the pool does not offer {api:?}")))?;
    Ok(max.min(newest))
}

/// (pool topic, partition, committed offset) of one group.
type GroupOffsets = Vec<(String, i32, i64)>;

/// Each group's committed offsets, by pool group id, for the groups the pool answered for:
/// a group whose coordinator is unknown, moved or unreachable is left out (it keeps what it
/// had), and one the pool has no offsets for is answered with none.
async fn fetch_offsets(
    gw: &Gateway,
    groups: &[&str],
) -> Result<HashMap<String, GroupOffsets>, UpstreamError> {
    let router = gw.router();
    let version = version(gw, ApiKey::OffsetFetch, OFFSET_FETCH_MAX)?;
    let mut by_coordinator: Vec<(Arc<Broker>, Vec<&str>)> = Vec::new();
    for group in groups {
        let Some(broker) = router.coordinator(GROUP, group).await?.broker else {
            continue;
        };
        match by_coordinator
            .iter_mut()
            .find(|(b, _)| b.addr() == broker.addr())
        {
            Some((_, mine)) => mine.push(group),
            None => by_coordinator.push((broker, vec![group])),
        }
    }
    let not_coordinator = ResponseError::NotCoordinator.code();
    let not_found = ResponseError::GroupIdNotFound.code();
    let mut out = HashMap::new();
    for (broker, groups) in by_coordinator {
        let parts: Vec<&[&str]> = if version >= OFFSET_FETCH_BATCHED {
            groups.chunks(GROUPS_PER_REQUEST).collect()
        } else {
            groups.chunks(1).collect()
        };
        for part in parts {
            let answers = match offset_fetch(&broker, version, part).await {
                Ok(answers) => answers,
                Err(e) => {
                    router.broker_failed(&broker, &e);
                    continue;
                }
            };
            for (group, code, offsets) in answers {
                if code == not_coordinator {
                    router.coordinator_moved(GROUP, &group);
                } else if code == 0 || code == not_found {
                    out.insert(group, offsets);
                }
            }
        }
    }
    Ok(out)
}

/// One OffsetFetch of every topic's offsets for `groups` (one group before v8):
/// (group, error code, offsets) per group.
async fn offset_fetch(
    broker: &Broker,
    version: i16,
    groups: &[&str],
) -> Result<Vec<(String, i16, GroupOffsets)>, UpstreamError> {
    let id = |g: &str| GroupId(StrBytes::from_string(g.to_owned()));
    let committed = |error: i16, offset: i64| (error == 0 && offset >= 0).then_some(offset);
    if version >= OFFSET_FETCH_BATCHED {
        let req = OffsetFetchRequest::default().with_groups(
            groups
                .iter()
                .map(|g| {
                    OffsetFetchRequestGroup::default()
                        .with_group_id(id(g))
                        .with_topics(None)
                })
                .collect(),
        );
        let resp = broker.call(version, &req).await?;
        return Ok(resp
            .groups
            .into_iter()
            .map(|g| {
                let offsets = g
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().filter_map(|p| {
                            let offset = committed(p.error_code, p.committed_offset)?;
                            Some((t.name.0.to_string(), p.partition_index, offset))
                        })
                    })
                    .collect();
                (g.group_id.0.to_string(), g.error_code, offsets)
            })
            .collect());
    }
    // Before v2 a null topic list (every topic) cannot be asked for.
    if version < 2 {
        return Err(answered_error(broker, "OffsetFetch", -1));
    }
    let mut out = Vec::with_capacity(groups.len());
    for group in groups {
        let req = OffsetFetchRequest::default()
            .with_group_id(id(group))
            .with_topics(None);
        let resp = broker.call(version, &req).await?;
        let offsets = resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().filter_map(|p| {
                    let offset = committed(p.error_code, p.committed_offset)?;
                    Some((t.name.0.to_string(), p.partition_index, offset))
                })
            })
            .collect();
        out.push((group.to_string(), resp.error_code, offsets));
    }
    Ok(out)
}

/// Partition indexes by pool topic name.
type PartitionsByTopic<'a> = BTreeMap<&'a str, Vec<i32>>;

/// The latest offset (high watermark) of each of `partitions` (pool names) the pool answered
/// for, each asked of the broker that serves it, one request per broker.
async fn latest_offsets(
    gw: &Gateway,
    partitions: &[(String, i32)],
) -> Result<Vec<(String, i32, i64)>, UpstreamError> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let router = gw.router();
    let version = version(gw, ApiKey::ListOffsets, LIST_OFFSETS_MAX)?;
    // v0 answers a list of offsets rather than one.
    if version < 1 {
        return Err(UpstreamError::Encode(
            "the pool offers only ListOffsets v0".into(),
        ));
    }
    let asked: Vec<(&str, i32)> = partitions.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let routed = router.route(&asked).await;
    let mut by_broker: Vec<(Arc<Broker>, PartitionsByTopic)> = Vec::new();
    for ((topic, partition), broker) in asked.iter().zip(routed) {
        let Ok(broker) = broker else {
            continue;
        };
        let at = match by_broker
            .iter()
            .position(|(b, _)| b.addr() == broker.addr())
        {
            Some(i) => i,
            None => {
                by_broker.push((broker, BTreeMap::new()));
                by_broker.len() - 1
            }
        };
        by_broker[at].1.entry(topic).or_default().push(*partition);
    }
    let mut out = Vec::with_capacity(partitions.len());
    for (broker, topics) in by_broker {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(0)
            .with_topics(
                topics
                    .iter()
                    .map(|(topic, partitions)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(
                                partitions
                                    .iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(*p)
                                            .with_current_leader_epoch(-1)
                                            .with_timestamp(LATEST)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let resp = match broker.call(version, &req).await {
            Ok(resp) => resp,
            Err(e) => {
                router.broker_failed(&broker, &e);
                continue;
            }
        };
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code == 0 && p.offset >= 0 {
                    out.push((t.name.0.to_string(), p.partition_index, p.offset));
                } else {
                    // Moved or gone: the router asks where it is next time.
                    router.leaders_moved(&t.name.0);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        DeleteGroupsRequest, OffsetCommitRequest, OffsetCommitResponse, ResponseKind,
    };

    use crate::api::testing::ctx_on;
    use crate::api::{Answer, Reply};
    use crate::pool::testing::{create_topic, live_broker, produce_values, Tansu};
    use crate::telemetry::metrics::{collect, Family, Scope, Value};
    use crate::tenancy::Namespace;

    const ALLOW_ALL: &str =
        r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#;

    fn commit_request(group: &str, topic: &str, offset: i64) -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])])
    }

    /// Every sample of `name` as (its labels but `cluster`, joined, value), in order.
    fn samples(families: &[Family], name: &str) -> Vec<(String, u64)> {
        families
            .iter()
            .filter(|f| f.name == name)
            .flat_map(|f| &f.samples)
            .map(|s| {
                let labels: Vec<&str> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "cluster")
                    .map(|(_, v)| v.as_str())
                    .collect();
                let Value::Int(v) = s.value else {
                    panic!("{name} is an integer");
                };
                (labels.join("/"), v)
            })
            .collect()
    }

    /// Against a real pool: a commit through this gateway is noted at once; a round brings in
    /// what another instance committed and the partitions' latest offsets, keeps other
    /// clusters' groups out of this cluster's view, and drops a group deleted on the pool.
    #[tokio::test]
    async fn the_pools_groups_and_offsets_are_reconciled() {
        let tansu = Tansu::start().await;
        let (pool, broker) = live_broker(&tansu).await;
        let ctx = ctx_on(ALLOW_ALL, pool);
        let gw = &ctx.gw;
        let a = ctx.session.cluster.id;
        let ns = ctx.session.namespace.clone();
        let topic = ns.topic("orders").unwrap();
        create_topic(&broker, &topic).await;
        // A batch per record: tansu's memory engine answers a ListOffsets for the latest
        // offset with the last batch's base offset + 1 (its SQLite engine, which `tollgate
        // dev` runs, answers the high watermark).
        let produce = |topic: String, n: usize| {
            let broker = broker.clone();
            async move {
                for i in 0..n {
                    let record = [Bytes::from(format!("r{i}"))];
                    assert_eq!(produce_values(&broker, &topic, &record).await, 0);
                }
            }
        };
        produce(topic.clone(), 5).await;
        // Another cluster on the same pool, with a group of its own.
        let mut other = (*gw.registry().get(&a).unwrap()).clone();
        other.id = uuid::Uuid::from_u128(0xb);
        gw.registry().upsert(other);
        let b = uuid::Uuid::from_u128(0xb);
        let ns_b = Namespace::of(b);
        let topic_b = ns_b.topic("orders").unwrap();
        create_topic(&broker, &topic_b).await;
        produce(topic_b.clone(), 2).await;

        // Through the gateway's handler: noted as the answer passes.
        let (_, commit_max) = gw.router().pool().versions(ApiKey::OffsetCommit).unwrap();
        let version = commit_max.min(8);
        let req = commit_request("billing", "orders", 2);
        let Ok(Reply::Later(answer)) = crate::api::groups::offset_commit(&ctx, version, req).await
        else {
            panic!("the commit is forwarded");
        };
        let Ok(Answer::Message(ResponseKind::OffsetCommit(resp))) = answer.await else {
            panic!("an OffsetCommit answer");
        };
        assert_eq!(resp.topics[0].partitions[0].error_code, 0);
        let view = collect(gw, Scope::Cluster(a));
        assert_eq!(
            samples(&view, "kafka_consumergroup_current_offset"),
            vec![("billing/orders/0".into(), 2)]
        );
        // Produced straight to the pool: no high watermark known here yet, so no lag.
        assert!(samples(&view, "kafka_consumergroup_lag").is_empty());

        // Straight to the pool, as another gateway instance would: unknown here until a round.
        let direct = |group: String, topic: &str, offset| {
            let req = commit_request(&group, topic, offset);
            let broker = broker.clone();
            async move {
                let resp: OffsetCommitResponse = broker.call(version, &req).await.unwrap();
                assert_eq!(resp.topics[0].partitions[0].error_code, 0);
            }
        };
        direct(ns.id("reports").unwrap(), &topic, 4).await;
        direct(ns_b.id("foreign").unwrap(), &topic_b, 1).await;

        let round = reconcile_once(gw).await.expect("the pool lists its groups");
        assert_eq!(
            round,
            Round {
                reconciled: 2,
                failed: 0
            }
        );
        let view = collect(gw, Scope::Cluster(a));
        assert_eq!(
            samples(&view, "kafka_consumergroup_lag"),
            vec![
                ("billing/orders/0".into(), 3),
                ("reports/orders/0".into(), 1)
            ]
        );
        assert_eq!(
            samples(&view, "kafka_topic_partition_current_offset"),
            vec![("orders/0".into(), 5)]
        );
        assert_eq!(
            samples(&view, "tollgate_consumergroup_sum_lag"),
            vec![("billing".into(), 3), ("reports".into(), 1)]
        );
        // Nothing of cluster b in a's view; b's own view has its group.
        let labels: Vec<String> = view
            .iter()
            .filter(|f| {
                f.name.starts_with("kafka_") || f.name.starts_with("tollgate_consumergroup")
            })
            .flat_map(|f| &f.samples)
            .flat_map(|s| s.labels.iter().map(|(_, v)| v.clone()))
            .collect();
        assert!(!labels.iter().any(|l| l == "foreign" || l == &b.to_string()));
        assert_eq!(
            samples(&collect(gw, Scope::Cluster(b)), "kafka_consumergroup_lag"),
            vec![("foreign/orders/0".into(), 1)]
        );

        // Deleted on the pool: gone at the next round.
        let reports = ns.id("reports").unwrap();
        let coordinator = gw.router().coordinator(GROUP, &reports).await.unwrap();
        let (_, delete_max) = gw.router().pool().versions(ApiKey::DeleteGroups).unwrap();
        let req = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(reports))]);
        let resp = coordinator
            .broker
            .unwrap()
            .call(delete_max.min(2), &req)
            .await
            .unwrap();
        assert_eq!(resp.results[0].error_code, 0);
        reconcile_once(gw).await.unwrap();
        let view = collect(gw, Scope::Cluster(a));
        assert_eq!(
            samples(&view, "kafka_consumergroup_lag"),
            vec![("billing/orders/0".into(), 3)]
        );
        tansu.kill().await;
    }

    /// TxnOffsetCommit through the gateway's handler, inside a transaction on a real pool.
    #[tokio::test]
    async fn a_transactions_offsets_are_noted_as_the_pool_accepts_them() {
        use kafka_protocol::messages::txn_offset_commit_request::{
            TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::{
            AddOffsetsToTxnRequest, InitProducerIdRequest, TransactionalId, TxnOffsetCommitRequest,
        };

        let tansu = Tansu::start().await;
        let (pool, broker) = live_broker(&tansu).await;
        let ctx = ctx_on(ALLOW_ALL, pool);
        let gw = &ctx.gw;
        let topic = ctx.session.namespace.topic("orders").unwrap();
        create_topic(&broker, &topic).await;
        let versions = |api| gw.router().pool().versions(api).unwrap().1;
        let answer = |reply| async move {
            let Ok(Reply::Later(answer)) = reply else {
                panic!("forwarded");
            };
            let Ok(Answer::Message(resp)) = answer.await else {
                panic!("answered");
            };
            resp
        };
        let txn = TransactionalId(StrBytes::from_static_str("mover"));
        let group = GroupId(StrBytes::from_static_str("movers"));
        let init = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn.clone()))
            .with_transaction_timeout_ms(60_000);
        let version = versions(ApiKey::InitProducerId).min(4);
        let init = crate::api::txn::init_producer_id(&ctx, version, init).await;
        let ResponseKind::InitProducerId(init) = answer(init).await else {
            panic!("InitProducerId");
        };
        assert_eq!(init.error_code, 0);
        let add = AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn.clone())
            .with_producer_id(init.producer_id)
            .with_producer_epoch(init.producer_epoch)
            .with_group_id(group.clone());
        let version = versions(ApiKey::AddOffsetsToTxn).min(3);
        let add = crate::api::txn::add_offsets_to_txn(&ctx, version, add).await;
        let ResponseKind::AddOffsetsToTxn(add) = answer(add).await else {
            panic!("AddOffsetsToTxn");
        };
        assert_eq!(add.error_code, 0);
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(txn)
            .with_group_id(group)
            .with_producer_id(init.producer_id)
            .with_producer_epoch(init.producer_epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(7)])]);
        let version = versions(ApiKey::TxnOffsetCommit).min(3);
        let commit = crate::api::txn::txn_offset_commit(&ctx, version, commit).await;
        let ResponseKind::TxnOffsetCommit(commit) = answer(commit).await else {
            panic!("TxnOffsetCommit");
        };
        assert_eq!(commit.topics[0].partitions[0].error_code, 0);
        assert_eq!(
            samples(
                &collect(gw, Scope::Cluster(ctx.session.cluster.id)),
                "kafka_consumergroup_current_offset"
            ),
            vec![("movers/orders/0".into(), 7)]
        );
        tansu.kill().await;
    }

    #[test]
    fn the_window_moves_each_round_and_reaches_every_group() {
        let items: Vec<u32> = (0..7).collect();
        let seen = |round| window(&items, round, 3).copied().collect::<Vec<_>>();
        assert_eq!(seen(0), vec![0, 1, 2]);
        assert_eq!(seen(1), vec![3, 4, 5]);
        assert_eq!(seen(2), vec![6, 0, 1]);
        assert_eq!(seen(3), vec![0, 1, 2]);
        // Fewer than a window: all of them, every round.
        assert_eq!(
            window(&items, 5, 10).copied().collect::<Vec<_>>(),
            items.clone()
        );
        assert_eq!(window(&[] as &[u32], 3, 10).count(), 0);
        // Huge round numbers do not overflow.
        assert_eq!(window(&items, u64::MAX, 3).count(), 3);
    }
}
