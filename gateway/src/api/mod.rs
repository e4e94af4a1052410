//! The Kafka APIs tenants may use, one module per family:
//!
//! - [`versions`]: ApiVersions, and the table of everything the gateway advertises.
//! - [`cluster`]: Metadata and DescribeCluster, where the gateway presents itself as the
//!   cluster's brokers.
//! - [`produce`]: Produce, with per-cluster message size limits.
//! - [`fetch`]: Fetch, ListOffsets, OffsetForLeaderEpoch; [`relay`] passes a fetch answer on
//!   while it arrives.
//! - [`groups`]: FindCoordinator and the consumer group APIs, including offsets.
//! - [`topics`]: CreateTopics, DeleteTopics, DeleteRecords, CreatePartitions and topic configs.
//! - [`txn`]: InitProducerId and the transaction APIs.
//! - [`split`]: how a request about partitions on several pool brokers is split per broker and
//!   its answers merged.
//!
//! Each handler authorizes every resource in the request, maps the tenant's names to the
//! pool's, dispatches to the pool broker the router picks, and returns a [`Reply`] whose
//! future maps the pool's answer back. Handlers never touch the client's socket, so they can be
//! tested on values alone. Dispatch happens before a handler returns, so requests from one
//! client reach the pool in the order the client sent them.

pub mod cluster;
pub mod errors;
pub mod fetch;
pub mod groups;
pub mod produce;
pub mod relay;
pub mod scrub;
pub mod split;
#[cfg(test)]
pub(crate) mod testing;
pub mod topic_policy;
pub mod topics;
pub mod txn;
pub mod versions;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use kafka_protocol::messages::{
    ApiKey, GroupId, RequestKind, ResponseKind, TopicName, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;

use crate::identity::authz::{Action, Session};
use crate::pool::{Broker, Caller, UpstreamError};
use crate::pool_admin::BoxFuture;
use crate::state::Gateway;
use crate::tenancy::NameError;

/// A handler's answer.
pub enum Reply {
    /// Known without asking the pool (refusals, local APIs). Boxed: this is the rare path,
    /// and it keeps every `Reply` small.
    Now(Box<ResponseKind>),
    /// Dispatched to the pool; resolves to the rewritten answer.
    Later(BoxFuture<'static, Result<Answer, UpstreamError>>),
    /// The client expects no response (produce with acks=0).
    Nothing,
    /// A request refused that has no response to say so (an acks=0 produce): the connection
    /// is closed, as Kafka closes an acks=0 producer's connection when its produce fails, so
    /// the client learns of it rather than lose records silently.
    Close(String),
}

/// An answer from the pool, rewritten for the client.
pub enum Answer {
    /// Decoded and rewritten, to be encoded.
    Message(ResponseKind),
    /// Rewritten while it is written out (a fetch answer from one broker).
    Relay(relay::Relay),
}

impl Reply {
    pub fn now(body: ResponseKind) -> Self {
        Reply::Now(Box::new(body))
    }

    pub fn later<F>(f: F) -> Self
    where
        F: Future<Output = Result<ResponseKind, UpstreamError>> + Send + 'static,
    {
        Reply::Later(Box::pin(async move { f.await.map(Answer::Message) }))
    }

    pub fn answer<F>(f: F) -> Self
    where
        F: Future<Output = Result<Answer, UpstreamError>> + Send + 'static,
    {
        Reply::Later(Box::pin(f))
    }
}

/// What a handler knows about the request's connection.
#[derive(Clone)]
pub struct Ctx {
    pub gw: Gateway,
    pub session: Arc<Session>,
    /// Who the pool is asked for: the client connection, unique in this process (its produces
    /// keep to one of each pool broker's produce connections), and its cluster, which the
    /// pool sees as the requests' client id ([`Caller`]).
    pub client: Caller,
}

pub const NONE: i16 = 0;
pub const TOPIC_DENIED: i16 = ResponseError::TopicAuthorizationFailed.code();
pub const GROUP_DENIED: i16 = ResponseError::GroupAuthorizationFailed.code();
pub const CLUSTER_DENIED: i16 = ResponseError::ClusterAuthorizationFailed.code();
pub const TXN_DENIED: i16 = ResponseError::TransactionalIdAuthorizationFailed.code();
pub const INVALID_TOPIC: i16 = ResponseError::InvalidTopicException.code();
pub const INVALID_GROUP: i16 = ResponseError::InvalidGroupId.code();
pub const UNKNOWN_TOPIC_ID: i16 = ResponseError::UnknownTopicId.code();
pub const NOT_COORDINATOR: i16 = ResponseError::NotCoordinator.code();
pub const INVALID_REQUEST: i16 = ResponseError::InvalidRequest.code();

impl Ctx {
    pub fn topic_out(&self, name: &TopicName) -> Result<TopicName, NameError> {
        self.session
            .namespace
            .topic(name.0.as_str())
            .map(|p| TopicName(StrBytes::from_string(p)))
    }

    pub fn group_out(&self, id: &GroupId) -> Result<GroupId, NameError> {
        self.session
            .namespace
            .id(id.0.as_str())
            .map(|p| GroupId(StrBytes::from_string(p)))
    }

    pub fn txn_out(&self, id: &TransactionalId) -> Result<TransactionalId, NameError> {
        self.session
            .namespace
            .id(id.0.as_str())
            .map(|p| TransactionalId(StrBytes::from_string(p)))
    }

    /// The tenant's name for a pool name, if it is this cluster's.
    pub fn back(&self, physical: &str) -> Option<StrBytes> {
        self.session
            .namespace
            .strip(physical)
            .map(|s| StrBytes::from_string(s.to_owned()))
    }

    /// Renames a pool topic name in place; false when it is not this cluster's, in which case
    /// the caller drops the entry.
    pub fn topic_back(&self, name: &mut TopicName) -> bool {
        match self.back(name.0.as_str()) {
            Some(n) => {
                name.0 = n;
                true
            }
            None => false,
        }
    }

    /// Authorizes `action` on a topic and maps its name: `Err(code)` is the per-resource
    /// error to answer instead.
    pub fn admit_topic(&self, action: Action, name: &TopicName) -> Result<TopicName, i16> {
        if !self.session.may_topic(action, &name.0) {
            return Err(TOPIC_DENIED);
        }
        self.topic_out(name).map_err(|_| INVALID_TOPIC)
    }

    /// Authorizes `action` on a group id and maps it.
    pub fn admit_group(&self, action: Action, id: &GroupId) -> Result<GroupId, i16> {
        if !self.session.may_group(action, &id.0) {
            return Err(GROUP_DENIED);
        }
        self.group_out(id).map_err(|_| INVALID_GROUP)
    }

    /// Authorizes AlterTransactionalId on a transactional id and maps it.
    pub fn admit_txn(&self, id: &TransactionalId) -> Result<TransactionalId, i16> {
        if !self
            .session
            .may_transactional_id(Action::AlterTransactionalId, &id.0)
        {
            return Err(TXN_DENIED);
        }
        self.txn_out(id).map_err(|_| TXN_DENIED)
    }

    pub fn group_back(&self, id: &mut GroupId) -> bool {
        match self.back(id.0.as_str()) {
            Some(n) => {
                id.0 = n;
                true
            }
            None => false,
        }
    }
}

/// The topics a request names by id (Produce v13, Fetch v13+, Metadata and DeleteTopics by
/// id), looked up together before the request's topics are gone through one by one: the ids
/// no cache knows cost the pool one Metadata request between them, however many there are.
/// Nil ids (requests by name) cost nothing.
pub async fn topics_of_ids(
    ctx: &Ctx,
    ids: impl IntoIterator<Item = uuid::Uuid>,
) -> Result<TopicsById, UpstreamError> {
    Ok(TopicsById(ctx.gw.router().topic_names(ids).await?))
}

/// Physical topic names by id, from [`topics_of_ids`].
pub struct TopicsById(HashMap<uuid::Uuid, Option<String>>);

impl TopicsById {
    /// The tenant's name for the topic `id` names, or UNKNOWN_TOPIC_ID when the id is unknown
    /// or another cluster's: both look the same.
    pub fn get(&self, ctx: &Ctx, id: uuid::Uuid) -> Result<TopicName, i16> {
        self.0
            .get(&id)
            .and_then(|p| ctx.back(p.as_deref()?))
            .map(TopicName)
            .ok_or(UNKNOWN_TOPIC_ID)
    }
}

/// Sends `req` to `broker` now, for this client, and returns the future of its decoded answer.
pub async fn forward<Req, Resp>(
    ctx: &Ctx,
    broker: &Broker,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Result<impl Future<Output = Result<Resp, UpstreamError>> + Send + 'static, UpstreamError>
where
    Req: Encodable + 'static,
    Resp: Decodable + Send + 'static,
{
    let mut pending = broker
        .dispatch_for(ctx.client, api, version, req, true)
        .await?
        .expect("a reply was asked for");
    if let Some(wait) = longest_wait(api) {
        pending = pending.with_timeout(wait);
    }
    Ok(pending.decode::<Resp>(version))
}

/// How long a pool broker may take over requests that legitimately wait longer than the
/// default request timeout: a JoinGroup is held until the whole group has rejoined (up to
/// the members' rebalance timeout, max.poll.interval.ms, 5 minutes by default) and a SyncGroup
/// until the leader has sent the assignment.
fn longest_wait(api: ApiKey) -> Option<std::time::Duration> {
    match api {
        ApiKey::JoinGroup | ApiKey::SyncGroup => Some(std::time::Duration::from_secs(15 * 60)),
        _ => None,
    }
}

/// Sends `req` now to any live broker (requests not about a partition or key: metadata, topic
/// administration), trying another when one cannot be reached, which is safe because nothing
/// reached it.
pub async fn forward_any<Req, Resp>(
    ctx: &Ctx,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Result<impl Future<Output = Result<Resp, UpstreamError>> + Send + 'static, UpstreamError>
where
    Req: Encodable + 'static,
    Resp: Decodable + Send + 'static,
{
    let router = ctx.gw.router();
    let mut tries = 0;
    loop {
        let broker = router.any()?;
        match forward::<Req, Resp>(ctx, &broker, api, version, req).await {
            Err(e) if e.nothing_sent() && tries < 2 => {
                router.broker_failed(&broker, &e);
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Runs the handler for one decoded request.
pub async fn handle(ctx: &Ctx, version: i16, req: RequestKind) -> Result<Reply, UpstreamError> {
    match req {
        RequestKind::Metadata(r) => cluster::metadata(ctx, version, r).await,
        RequestKind::DescribeCluster(r) => Ok(cluster::describe_cluster(ctx, version, r)),
        RequestKind::Produce(r) => produce::produce(ctx, version, r).await,
        RequestKind::Fetch(r) => fetch::fetch(ctx, version, r).await,
        RequestKind::ListOffsets(r) => fetch::list_offsets(ctx, version, r).await,
        RequestKind::OffsetForLeaderEpoch(r) => {
            fetch::offset_for_leader_epoch(ctx, version, r).await
        }
        RequestKind::FindCoordinator(r) => groups::find_coordinator(ctx, version, r).await,
        RequestKind::JoinGroup(r) => groups::join_group(ctx, version, r).await,
        RequestKind::SyncGroup(r) => groups::sync_group(ctx, version, r).await,
        RequestKind::Heartbeat(r) => groups::heartbeat(ctx, version, r).await,
        RequestKind::LeaveGroup(r) => groups::leave_group(ctx, version, r).await,
        RequestKind::OffsetCommit(r) => groups::offset_commit(ctx, version, r).await,
        RequestKind::OffsetFetch(r) => groups::offset_fetch(ctx, version, r).await,
        RequestKind::DescribeGroups(r) => groups::describe_groups(ctx, version, r).await,
        RequestKind::ListGroups(r) => groups::list_groups(ctx, version, r).await,
        RequestKind::DeleteGroups(r) => groups::delete_groups(ctx, version, r).await,
        RequestKind::OffsetDelete(r) => groups::offset_delete(ctx, version, r).await,
        RequestKind::CreateTopics(r) => topics::create_topics(ctx, version, r).await,
        RequestKind::DeleteTopics(r) => topics::delete_topics(ctx, version, r).await,
        RequestKind::DeleteRecords(r) => topics::delete_records(ctx, version, r).await,
        RequestKind::CreatePartitions(r) => topics::create_partitions(ctx, version, r).await,
        RequestKind::DescribeConfigs(r) => topics::describe_configs(ctx, version, r).await,
        RequestKind::IncrementalAlterConfigs(r) => {
            topics::incremental_alter_configs(ctx, version, r).await
        }
        RequestKind::InitProducerId(r) => txn::init_producer_id(ctx, version, r).await,
        RequestKind::AddPartitionsToTxn(r) => txn::add_partitions_to_txn(ctx, version, r).await,
        RequestKind::AddOffsetsToTxn(r) => txn::add_offsets_to_txn(ctx, version, r).await,
        RequestKind::EndTxn(r) => txn::end_txn(ctx, version, r).await,
        RequestKind::TxnOffsetCommit(r) => txn::txn_offset_commit(ctx, version, r).await,
        // The connection only decodes what `versions::HANDLED` lists, and answers the local
        // APIs (ApiVersions, SASL) itself; anything reaching here is a bug, refused safely.
        other => Err(UpstreamError::Encode(format!(
            "no handler for {:?}",
            std::mem::discriminant(&other)
        ))),
    }
}
