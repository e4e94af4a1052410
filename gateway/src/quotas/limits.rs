//! The quotas that are counts rather than rates (issue 13; CONTRACT, "Quotas and limits"):
//! partitions, partition mutations per 5 minutes, connections and connection attempts,
//! consumer groups and stored bytes. Byte and request rates are the throttling's.
//!
//! - [`quotas_of`]: a cluster's quotas as they are now (the admin API changes them live).
//! - [`Counts`]: what each cluster has used of them on this gateway instance (partition
//!   mutations in the last 5 minutes), one entry per live cluster, dropped with it.
//! - [`Counts::connect`]: a connection's place in its cluster's `max_connections` and
//!   `connections_per_second`, taken once it has authenticated (when its cluster is known),
//!   held by a [`ConnectionSlot`] until it closes.
//! - [`admit_group`]: `max_consumer_groups`, against the groups the pool has of the cluster.
//! - [`storage_full`]: `storage_limit_bytes`, against the cluster's stored bytes as metering
//!   has them; [`refuse_produce`] answers a Produce refused for it.
//! - [`mutation_refusal`]: how a partition mutation over the quota is answered (KIP-599);
//!   [`Mutations`]: one CreateTopics, CreatePartitions or DeleteTopics request's count.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::api::topic_policy::Refusal;
use crate::api::Ctx;
use crate::pool::UpstreamError;
use crate::quotas::Quotas;
use crate::state::Gateway;
use crate::telemetry::audit::{Breach, Who};
use crate::tenancy::{Cluster, Registry};

/// The window of `connections_per_second`.
const CONNECTION_WINDOW: Duration = Duration::from_secs(1);

/// How long a cluster's list of groups is trusted before a group it does not hold makes the
/// gateway ask the pool again: a client creating groups in a loop costs the pool one
/// ListGroups per broker this often, not one per group.
const GROUPS_FRESH: Duration = Duration::from_secs(5);

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
    /// Authenticated connections open; shared with their slots, so a slot outliving this entry
    /// (its cluster deleted) is harmless.
    open: Arc<AtomicU64>,
    /// When the connections of the last [`CONNECTION_WINDOW`] were admitted, oldest first; at
    /// most the quota's worth.
    admitted: VecDeque<Instant>,
    /// The cluster's groups (pool ids) as the pool last listed them, plus those admitted
    /// since, and when it listed them.
    groups: Option<(HashSet<String>, Instant)>,
    /// What the other gateway instances sharing Redis count of the cluster, as Redis last
    /// had it ([`super::shared`]).
    others: Others,
}

/// The other instances' counts of a cluster: connections open, connections admitted in their
/// last second, partitions created or deleted in their last [`MUTATION_WINDOW`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Others {
    pub open: u64,
    pub admitted: u64,
    pub mutations: u64,
}

/// An authenticated connection's place in its cluster's `max_connections`, given back when
/// the connection ends (this is dropped with it).
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicU64>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often each count quota refused something, per cluster, since the gateway started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    pub partition_mutations: u64,
    /// Connections closed at `max_connections`.
    pub connections: u64,
    /// Connections closed over `connections_per_second`.
    pub connection_rate: u64,
    /// JoinGroup and OffsetCommit requests for a new group at `max_consumer_groups`.
    pub consumer_groups: u64,
    /// Produce requests refused at `storage_limit_bytes`.
    pub storage: u64,
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
            // With other instances sharing Redis, theirs count too (as of the last exchange).
            let elsewhere = c.others.mutations;
            let used: u64 = c.mutations.iter().map(|(_, n)| n).sum::<u64>() + elsewhere;
            if used == 0 || used.saturating_add(partitions) <= limit {
                c.mutations.push_back((now, partitions));
                return Ok(());
            }
            // Room comes as the oldest mutations leave the window: enough of them for this
            // one to fit, or all of them for one larger than the quota. The others' ages are
            // not known here: when this instance's own cannot make the room, theirs leave
            // within a window at the latest.
            let excess = (used + partitions).saturating_sub(limit);
            let mut freed = 0;
            let mut room_at = None;
            for (at, n) in &c.mutations {
                freed += n;
                if freed >= excess && partitions <= limit {
                    room_at = Some(*at + MUTATION_WINDOW);
                    break;
                }
            }
            let room_at = room_at.unwrap_or_else(|| match c.mutations.back() {
                Some((at, _)) if elsewhere == 0 => *at + MUTATION_WINDOW,
                _ => now + MUTATION_WINDOW,
            });
            Err(room_at
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)))
        })
    }

    /// Admits an authenticated connection of `cluster` under its quotas as they are now, or
    /// says which it would pass: the caller closes the connection, as Kafka closes one over
    /// its connection quotas. Connections refused do not count as attempts, so a client
    /// retrying fast is not locked out by its own retries.
    pub fn connect(&self, gw: &Gateway, cluster: &Cluster) -> Result<ConnectionSlot, String> {
        self.admit_connection(cluster.id, &quotas_of(gw, cluster), Instant::now())
            .map_err(|breach| {
                gw.audit()
                    .quota_breached(cluster.id, breach, Who::cluster(cluster));
                connection_refusal(&breach)
            })
    }

    #[cfg(test)]
    pub(super) fn connect_at(
        &self,
        cluster: Uuid,
        quotas: &Quotas,
        now: Instant,
    ) -> Result<ConnectionSlot, String> {
        self.admit_connection(cluster, quotas, now)
            .map_err(|breach| connection_refusal(&breach))
    }

    fn admit_connection(
        &self,
        cluster: Uuid,
        quotas: &Quotas,
        now: Instant,
    ) -> Result<ConnectionSlot, Breach> {
        self.with(&cluster, |c| {
            while c
                .admitted
                .front()
                .is_some_and(|at| now.saturating_duration_since(*at) >= CONNECTION_WINDOW)
            {
                c.admitted.pop_front();
            }
            // Cluster-wide with other instances sharing Redis: theirs as of the last
            // exchange (at most an interval old), or as last known while Redis is away.
            let Others {
                open: others_open,
                admitted: others_admitted,
                ..
            } = c.others;
            let open = c.open.load(Ordering::Relaxed) + others_open;
            if let Some(max) = quotas.max_connections.filter(|max| open >= *max) {
                c.refused.connections += 1;
                return Err(Breach::refused(MAX_CONNECTIONS, max, Some(open)));
            }
            let rate = quotas.connections_per_second;
            let admitted = c.admitted.len() as u64 + others_admitted;
            if let Some(rate) = rate.filter(|rate| admitted >= *rate) {
                c.refused.connection_rate += 1;
                return Err(Breach::refused(
                    CONNECTIONS_PER_SECOND,
                    rate,
                    Some(admitted),
                ));
            }
            if rate.is_some() {
                c.admitted.push_back(now);
            }
            c.open.fetch_add(1, Ordering::Relaxed);
            Ok(ConnectionSlot(c.open.clone()))
        })
    }

    /// Authenticated connections of `cluster` open on this instance.
    pub fn connections(&self, cluster: &Uuid) -> u64 {
        self.with(cluster, |c| c.open.load(Ordering::Relaxed))
    }

    /// Authenticated connections of `cluster` open on the other instances sharing Redis, as
    /// this one last heard.
    pub fn connections_elsewhere(&self, cluster: &Uuid) -> u64 {
        self.with(cluster, |c| c.others.open)
    }

    /// What this instance tells the others sharing Redis of each cluster it has connections
    /// of, admitted some in the last second, made partition mutations in the last window, or
    /// hears of others' counts of (so that it keeps hearing until they are gone).
    pub fn report(&self, now: Instant) -> Vec<(Uuid, Others)> {
        let clusters = self.clusters.lock().expect("poisoned");
        clusters
            .iter()
            .filter_map(|(id, c)| {
                let mine = Others {
                    open: c.open.load(Ordering::Relaxed),
                    admitted: c
                        .admitted
                        .iter()
                        .filter(|at| now.saturating_duration_since(**at) < CONNECTION_WINDOW)
                        .count() as u64,
                    mutations: c
                        .mutations
                        .iter()
                        .filter(|(at, _)| now.saturating_duration_since(*at) < MUTATION_WINDOW)
                        .map(|(_, n)| n)
                        .sum(),
                };
                (mine != Others::default() || c.others != Others::default()).then_some((*id, mine))
            })
            .collect()
    }

    /// Records what the other instances count of `cluster`, as Redis has it now.
    pub fn set_others(&self, cluster: &Uuid, others: Others) {
        self.with(cluster, |c| c.others = others)
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

const MAX_CONNECTIONS: &str = "max_connections";
const CONNECTIONS_PER_SECOND: &str = "connections_per_second";

/// Why a connection is closed over its cluster's connection quotas, as the log says it.
fn connection_refusal(breach: &Breach) -> String {
    let used = breach.used.unwrap_or_default();
    let limit = breach.limit;
    if breach.quota == MAX_CONNECTIONS {
        format!("the cluster has {used} connections open, at its quota max_connections ({limit})")
    } else {
        format!(
            "the cluster had {used} connections in the last second, at its quota \
             connections_per_second ({limit})"
        )
    }
}

/// What [`Counts::group`] decided.
#[derive(Debug, PartialEq, Eq)]
enum GroupVerdict {
    Admitted,
    /// The cluster's list of groups is missing or stale: ask the pool, then decide again.
    List,
    Refused(usize),
}

impl Counts {
    fn group(&self, cluster: &Uuid, limit: u64, group: &str, now: Instant) -> GroupVerdict {
        self.with(cluster, |c| {
            let Some((known, listed_at)) = &mut c.groups else {
                return GroupVerdict::List;
            };
            if known.contains(group) {
                return GroupVerdict::Admitted;
            }
            if now.saturating_duration_since(*listed_at) >= GROUPS_FRESH {
                return GroupVerdict::List;
            }
            if known.len() as u64 >= limit {
                c.refused.consumer_groups += 1;
                return GroupVerdict::Refused(known.len());
            }
            known.insert(group.to_owned());
            GroupVerdict::Admitted
        })
    }

    /// The pool's list of `cluster`'s groups, taken at `now`.
    fn listed(&self, cluster: &Uuid, groups: HashSet<String>, now: Instant) {
        self.with(cluster, |c| c.groups = Some((groups, now)))
    }
}

/// The error code of a JoinGroup or OffsetCommit for a new group over `max_consumer_groups`:
/// POLICY_VIOLATION, which clients do not retry (the Java consumer raises it from `poll` and
/// `commitSync`) and which says a limit rather than a missing permission
/// (GROUP_AUTHORIZATION_FAILED would send the tenant to its policy) or a full group
/// (GROUP_MAX_SIZE_REACHED is about members). Neither response carries a message, so the
/// gateway logs the quota.
pub const GROUP_LIMIT: i16 = POLICY_VIOLATION;

/// Admits a JoinGroup or OffsetCommit for the pool group id `group` under the cluster's
/// `max_consumer_groups`: a group the pool already has always passes; a new one passes while
/// the cluster has fewer groups than the quota. The cluster's groups are listed from the pool
/// (ListGroups on every pool broker, kept to the cluster's namespace) when a group not known
/// names them and the list is older than [`GROUPS_FRESH`]. If the pool cannot list them, the
/// request passes: the pool is what answers it then.
pub async fn admit_group(ctx: &Ctx, group: &str) -> Result<(), i16> {
    let Some(limit) = quotas_of(&ctx.gw, &ctx.session.cluster).max_consumer_groups else {
        return Ok(());
    };
    let cluster = ctx.session.cluster.id;
    let counts = ctx.gw.quota_counts();
    let mut verdict = counts.group(&cluster, limit, group, Instant::now());
    if verdict == GroupVerdict::List {
        let now = Instant::now();
        match list_groups(ctx).await {
            Ok(groups) => counts.listed(&cluster, groups, now),
            Err(e) => {
                tracing::debug!(cluster = %cluster, error = %e, "cannot list groups for max_consumer_groups");
                return Ok(());
            }
        }
        verdict = counts.group(&cluster, limit, group, now);
    }
    match verdict {
        GroupVerdict::Refused(have) => {
            ctx.gw.audit().quota_breached(
                cluster,
                Breach::refused("max_consumer_groups", limit, Some(have as u64)),
                Who::session(&ctx.session),
            );
            tracing::info!(
                cluster = %cluster,
                group = ctx.session.namespace.strip(group).unwrap_or(group),
                "new consumer group refused: the cluster has {have} groups, at its quota \
                 max_consumer_groups ({limit})"
            );
            Err(GROUP_LIMIT)
        }
        _ => Ok(()),
    }
}

/// The pool ids of the cluster's groups, from every pool broker that coordinates groups.
async fn list_groups(ctx: &Ctx) -> Result<HashSet<String>, UpstreamError> {
    use kafka_protocol::messages::ListGroupsRequest;

    let router = ctx.gw.router();
    let (_, max) = router
        .pool()
        .versions(ApiKey::ListGroups)
        .ok_or_else(|| UpstreamError::Encode("pool does not support ListGroups".into()))?;
    let brokers = match router.kind() {
        crate::pool::PoolKind::Leader => router.pool().brokers(),
        crate::pool::PoolKind::Stateless => vec![router.any()?],
    };
    let mut groups = HashSet::new();
    for broker in brokers {
        let resp = broker
            .call(max.min(4), &ListGroupsRequest::default())
            .await?;
        if resp.error_code != 0 {
            return Err(UpstreamError::Encode(format!(
                "ListGroups answered error {}",
                resp.error_code
            )));
        }
        groups.extend(
            resp.groups
                .into_iter()
                .map(|g| g.group_id.0.to_string())
                .filter(|g| ctx.session.namespace.strip(g).is_some()),
        );
    }
    Ok(groups)
}

/// Why a Produce of the cluster is refused now, if it is: its stored bytes (as
/// [`crate::metering`] has them; an estimate where the pool cannot measure them) are at or
/// over its `storage_limit_bytes`. Counted as a refusal.
pub fn storage_full(ctx: &Ctx) -> Option<String> {
    let cluster = &ctx.session.cluster;
    let limit = quotas_of(&ctx.gw, cluster).storage_limit_bytes?;
    let stored = ctx.gw.metering().stored_bytes(&cluster.id);
    if stored < limit {
        return None;
    }
    ctx.gw
        .quota_counts()
        .with(&cluster.id, |c| c.refused.storage += 1);
    ctx.gw.audit().quota_breached(
        cluster.id,
        Breach::refused("storage_limit_bytes", limit, Some(stored)),
        Who::session(&ctx.session),
    );
    Some(format!(
        "the cluster stores {stored} bytes, at or over its quota storage_limit_bytes \
         ({limit}); delete records or topics, or raise the quota"
    ))
}

/// The answer to a Produce refused whole for `storage_limit_bytes`: POLICY_VIOLATION on every
/// partition it names, as the client named them, with `message` where the version carries one
/// (v8+).
pub fn refuse_produce(
    req: &kafka_protocol::messages::ProduceRequest,
    version: i16,
    message: &str,
) -> kafka_protocol::messages::ProduceResponse {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::protocol::StrBytes;

    let message = (version >= 8).then(|| StrBytes::from_string(message.to_owned()));
    let responses = req
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partition_responses(
                    t.partition_data
                        .iter()
                        .map(|p| {
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(POLICY_VIOLATION)
                                .with_error_message(message.clone())
                                .with_base_offset(-1)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    kafka_protocol::messages::ProduceResponse::default().with_responses(responses)
}

/// Checks that `adding` partitions fit the cluster's `max_partitions` quota with `in_use`
/// already there ([`crate::api::topic_policy::check_partitions`]); a refusal is audited.
pub fn admit_partitions(
    ctx: &Ctx,
    in_use: u64,
    adding: u64,
    limit: Option<u64>,
) -> Result<(), Refusal> {
    crate::api::topic_policy::check_partitions(in_use, adding, limit).inspect_err(|_| {
        ctx.gw.audit().quota_breached(
            ctx.session.cluster.id,
            Breach::refused("max_partitions", limit.unwrap_or_default(), Some(in_use)),
            Who::session(&ctx.session),
        );
    })
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
    /// Who asked, for the audit event of a refusal.
    session: Arc<crate::identity::authz::Session>,
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
            session: ctx.session.clone(),
            api,
            version,
            limit,
            counted: HashMap::new(),
            throttle_ms: 0,
        }
    }

    /// Whether anything is counted: false with no limit or for a validate-only request.
    pub fn limited(&self) -> bool {
        self.limit.is_some()
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
                self.gw.audit().quota_breached(
                    self.cluster,
                    Breach::refused("partition_mutations_per_5_minutes", limit, None),
                    Who::session(&self.session),
                );
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
    fn refusals_are_audited_once_per_cluster_and_quota_a_minute() {
        use crate::telemetry::audit::{ConnectionAudit, EventType};
        let mut ctx = testing::ctx(ALLOW_ALL);
        std::sync::Arc::get_mut(&mut ctx.session).unwrap().audit =
            ConnectionAudit::new(ctx.gw.audit(), "203.0.113.5".parse().ok());
        let cluster = ctx.session.cluster.id;
        set_quotas(&ctx, |q| {
            q.max_connections = Some(1);
            q.storage_limit_bytes = Some(100);
            q.max_partitions = Some(4);
        });
        let live = ctx.gw.registry().get(&cluster).unwrap();
        let _held = ctx.gw.quota_counts().connect(&ctx.gw, &live).unwrap();
        for _ in 0..5 {
            assert!(ctx.gw.quota_counts().connect(&ctx.gw, &live).is_err());
        }
        ctx.gw.metering().set_stored_bytes(cluster, 500);
        assert!(storage_full(&ctx).is_some());
        assert!(storage_full(&ctx).is_some());
        assert!(admit_partitions(&ctx, 3, 2, Some(4)).is_err());
        assert!(admit_partitions(&ctx, 3, 1, Some(4)).is_ok());
        let events = ctx.gw.audit().cluster_events(&cluster);
        let seen: Vec<(&str, bool, Option<&str>)> = events
            .iter()
            .map(|e| (e.action.as_ref(), e.granted, e.principal.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("max_connections", false, None),
                ("storage_limit_bytes", false, Some("svc")),
                ("max_partitions", false, Some("svc")),
            ]
        );
        assert!(events.iter().all(|e| e.kind == EventType::QuotaBreached));
        assert_eq!(
            events[1].reason.as_ref().unwrap().as_str(),
            "refused: at its quota storage_limit_bytes (100) with 500 in use"
        );
        assert_eq!(events[1].client_address.as_deref(), Some("203.0.113.5"));
        assert_eq!(events[0].tenant.as_deref(), Some("acme"));
    }

    /// Counts for live clusters 1 and 2.
    fn counts() -> Counts {
        let registry = Registry::default();
        for id in [1, 2] {
            registry.upsert(Cluster {
                id: Uuid::from_u128(id),
                tenant: "acme".into(),
                name: format!("c{id}"),
                max_message_bytes: 1 << 20,
                created_at: 0,
                quotas: Quotas::default(),
                allowed_cidrs: None,
                credentials: Default::default(),
            });
        }
        Counts::new(registry)
    }

    #[test]
    fn partition_mutations_slide_out_of_a_five_minute_window() {
        let counts = counts();
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
        let counts = counts();
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
        let counts = counts();
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
        let counts = counts();
        let (gone, live) = (Uuid::from_u128(1), Uuid::from_u128(2));
        counts.mutate(&gone, Some(10), 1, Instant::now()).unwrap();
        counts.mutate(&live, Some(10), 1, Instant::now()).unwrap();
        counts.registry.remove(&gone);
        // Dropped when the next cluster is counted.
        counts.mutate(&live, Some(10), 1, Instant::now()).unwrap();
        assert!(counts.clusters.lock().unwrap().contains_key(&gone));
        counts
            .mutate(&Uuid::from_u128(3), Some(10), 1, Instant::now())
            .unwrap();
        let clusters = counts.clusters.lock().unwrap();
        assert!(!clusters.contains_key(&gone) && clusters.contains_key(&live));
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

    #[test]
    fn connections_count_until_they_close() {
        let counts = counts();
        let c = Uuid::from_u128(1);
        let quotas = Quotas {
            max_connections: Some(2),
            connections_per_second: None,
            ..Quotas::default()
        };
        let now = Instant::now();
        let a = counts.connect_at(c, &quotas, now).unwrap();
        let _b = counts.connect_at(c, &quotas, now).unwrap();
        let e = counts.connect_at(c, &quotas, now).unwrap_err();
        assert!(e.contains("max_connections (2)"), "{e}");
        // Another cluster is not touched.
        counts.connect_at(Uuid::from_u128(2), &quotas, now).unwrap();
        assert_eq!(counts.connections(&c), 2);
        drop(a);
        assert_eq!(counts.connections(&c), 1);
        let _c = counts.connect_at(c, &quotas, now).unwrap();
        assert_eq!(counts.refused(&c).connections, 1);
        // No limit.
        let open = Quotas {
            max_connections: None,
            ..quotas
        };
        let _d = counts.connect_at(c, &open, now).unwrap();
    }

    #[test]
    fn connections_per_second_slide_out_of_a_second() {
        let counts = counts();
        let c = Uuid::from_u128(1);
        let quotas = Quotas {
            max_connections: None,
            connections_per_second: Some(3),
            ..Quotas::default()
        };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut slots = Vec::new();
        for ms in [0, 100, 200] {
            slots.push(counts.connect_at(c, &quotas, at(ms)).unwrap());
        }
        let e = counts.connect_at(c, &quotas, at(900)).unwrap_err();
        assert!(e.contains("connections_per_second (3)"), "{e}");
        // Closing does not give back an attempt; a second later there is room.
        slots.clear();
        assert!(counts.connect_at(c, &quotas, at(999)).is_err());
        slots.push(counts.connect_at(c, &quotas, at(1_000)).unwrap());
        assert!(counts.connect_at(c, &quotas, at(1_050)).is_err());
        assert_eq!(counts.refused(&c).connection_rate, 3);
    }

    #[test]
    fn new_groups_stop_at_the_quota_and_known_ones_pass() {
        let counts = counts();
        let c = Uuid::from_u128(1);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Nothing listed yet: ask the pool.
        assert_eq!(counts.group(&c, 2, "a", at(0)), GroupVerdict::List);
        counts.listed(&c, HashSet::from(["a".to_owned()]), at(0));
        assert_eq!(counts.group(&c, 2, "a", at(0)), GroupVerdict::Admitted);
        // A new group is admitted and counted until the next listing.
        assert_eq!(counts.group(&c, 2, "b", at(1)), GroupVerdict::Admitted);
        assert_eq!(counts.group(&c, 2, "c", at(2)), GroupVerdict::Refused(2));
        assert_eq!(counts.group(&c, 2, "b", at(2)), GroupVerdict::Admitted);
        // A stale list is listed again before a new group is refused; a deleted group
        // makes room.
        assert_eq!(counts.group(&c, 2, "c", at(10)), GroupVerdict::List);
        counts.listed(&c, HashSet::from(["b".to_owned()]), at(10));
        assert_eq!(counts.group(&c, 2, "c", at(10)), GroupVerdict::Admitted);
        assert_eq!(counts.refused(&c).consumer_groups, 1);
    }

    #[tokio::test]
    async fn join_group_and_offset_commit_for_a_new_group_stop_at_the_quota() {
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::{GroupId, JoinGroupRequest, OffsetCommitRequest};

        let ctx = testing::ctx(ALLOW_ALL);
        set_quotas(&ctx, |q| q.max_consumer_groups = Some(1));
        let group = |id: &'static str| GroupId(StrBytes::from_static_str(id));
        let known = ctx.group_out(&group("known")).unwrap().0.to_string();
        // As the pool listed them: the cluster has one group.
        let cluster = ctx.session.cluster.id;
        ctx.gw
            .quota_counts()
            .listed(&cluster, HashSet::from([known]), Instant::now());
        let join = |id| JoinGroupRequest::default().with_group_id(group(id));
        let reply = crate::api::groups::join_group(&ctx, 5, join("new")).await;
        let ResponseKind::JoinGroup(resp) = now(reply.unwrap()) else {
            panic!()
        };
        assert_eq!(resp.error_code, GROUP_LIMIT);
        let commit = OffsetCommitRequest::default()
            .with_group_id(group("new"))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()])]);
        let reply = crate::api::groups::offset_commit(&ctx, 8, commit).await;
        let ResponseKind::OffsetCommit(resp) = now(reply.unwrap()) else {
            panic!()
        };
        assert_eq!(resp.topics[0].name.0.as_str(), "orders");
        assert_eq!(resp.topics[0].partitions[0].error_code, GROUP_LIMIT);
        // A transaction's commit to a new group is refused too.
        let txn_commit = kafka_protocol::messages::TxnOffsetCommitRequest::default()
            .with_transactional_id(kafka_protocol::messages::TransactionalId(
                StrBytes::from_static_str("tx"),
            ))
            .with_group_id(group("new"))
            .with_topics(vec![
                kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("orders")))
                    .with_partitions(vec![Default::default()]),
            ]);
        let reply = crate::api::txn::txn_offset_commit(&ctx, 3, txn_commit).await;
        let ResponseKind::TxnOffsetCommit(resp) = now(reply.unwrap()) else {
            panic!()
        };
        assert_eq!(resp.topics[0].partitions[0].error_code, GROUP_LIMIT);
        assert_eq!(ctx.gw.quota_counts().refused(&cluster).consumer_groups, 3);
        // The group the cluster has goes on to its coordinator (none in this test).
        let reply = crate::api::groups::join_group(&ctx, 5, join("known")).await;
        assert!(!matches!(reply, Ok(Reply::Now(_))));
    }

    #[tokio::test]
    async fn produce_is_refused_at_the_storage_limit_and_resumes_under_it() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::ProduceRequest;

        let ctx = testing::ctx(ALLOW_ALL);
        let cluster = ctx.session.cluster.id;
        set_quotas(&ctx, |q| q.storage_limit_bytes = Some(1_000));
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![
                    PartitionProduceData::default().with_index(0),
                    PartitionProduceData::default().with_index(3),
                ])]);
        ctx.gw.metering().set_stored_bytes(cluster, 1_000);
        for (version, has_message) in [(9, true), (7, false)] {
            let reply = crate::api::produce::produce(&ctx, version, req.clone()).await;
            let ResponseKind::Produce(resp) = now(reply.unwrap()) else {
                panic!()
            };
            let t = &resp.responses[0];
            assert_eq!(t.name.0.as_str(), "orders");
            let partitions: Vec<_> = t.partition_responses.iter().map(|p| p.index).collect();
            assert_eq!(partitions, [0, 3]);
            for p in &t.partition_responses {
                assert_eq!(p.error_code, POLICY_VIOLATION);
                match &p.error_message {
                    Some(m) => assert!(
                        has_message && m.contains("storage_limit_bytes (1000)"),
                        "v{version}: {m}"
                    ),
                    None => assert!(!has_message, "v{version} carries the message"),
                }
            }
            // Encodable in its version: the message only where the version has it.
            let mut buf = bytes::BytesMut::new();
            kafka_protocol::protocol::Encodable::encode(&resp, &mut buf, version).unwrap();
        }
        // An acks=0 produce has no answer to carry the refusal: its connection is closed,
        // as Kafka closes it, rather than its records dropped in silence.
        let reply = crate::api::produce::produce(&ctx, 9, req.clone().with_acks(0)).await;
        assert!(
            matches!(&reply, Ok(Reply::Close(why)) if why.contains("storage_limit_bytes")),
            "acks=0 over the limit closes"
        );
        assert_eq!(ctx.gw.quota_counts().refused(&cluster).storage, 3);
        // Under the limit (a deletion measured), or no limit: produce goes on to the pool.
        ctx.gw.metering().set_stored_bytes(cluster, 999);
        let reply = crate::api::produce::produce(&ctx, 9, req.clone()).await;
        assert!(!matches!(reply, Ok(Reply::Now(_))));
        ctx.gw.metering().set_stored_bytes(cluster, 5_000);
        set_quotas(&ctx, |q| q.storage_limit_bytes = None);
        let reply = crate::api::produce::produce(&ctx, 9, req).await;
        assert!(!matches!(reply, Ok(Reply::Now(_))));
    }
}
