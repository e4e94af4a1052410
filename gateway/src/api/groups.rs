//! FindCoordinator and the consumer group APIs, offsets included.
//!
//! Group ids are mapped like topic names. Requests about one group go to the pool's coordinator
//! for the mapped id; a NOT_COORDINATOR answer drops the cached coordinator, and the client's
//! own retry (it re-runs FindCoordinator) finds the new one. The member metadata and
//! assignments inside JoinGroup and SyncGroup are opaque to brokers and carry the tenant's own
//! topic names, so they pass untouched.
//!
//! Batched requests (OffsetFetch v8+, DescribeGroups, DeleteGroups) are split per coordinator:
//! each coordinator is sent the groups it serves, concurrently, and the answers are merged.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{
    forward, Ctx, Reply, GROUP_DENIED, INVALID_GROUP, INVALID_REQUEST, NOT_COORDINATOR, TXN_DENIED,
};
use crate::identity::authz::Action;
use crate::pool::{is_network, Broker, PoolKind, UpstreamError, GROUP, TRANSACTION};
use crate::telemetry::lag::Commit;

/// Sends a single-group request to its coordinator. `refuse` builds the answer for an error
/// code found before the pool answers, and `code` reads the answer's error code.
#[allow(clippy::too_many_arguments)]
pub(super) async fn to_coordinator<Req, Resp>(
    ctx: &Ctx,
    key_type: i8,
    api: ApiKey,
    version: i16,
    physical_key: &str,
    req: &Req,
    refuse: fn(i16) -> Resp,
    code: fn(&Resp) -> i16,
    wrap: fn(Resp) -> ResponseKind,
) -> Result<Reply, UpstreamError>
where
    Req: Encodable + 'static,
    Resp: Decodable + Send + 'static,
{
    let answer = ctx.gw.router().coordinator(key_type, physical_key).await?;
    let Some(broker) = answer.broker else {
        return Ok(Reply::now(wrap(refuse(answer.error_code))));
    };
    // A coordinator that cannot be reached or stops answering is answered as NOT_COORDINATOR:
    // the client looks the coordinator up again, and by then the router has moved on.
    let pending = match forward::<_, Resp>(ctx, &broker, api, version, req).await {
        Ok(p) => p,
        Err(e) if is_network(&e) => {
            ctx.gw.router().broker_failed(&broker, &e);
            return Ok(Reply::now(wrap(refuse(NOT_COORDINATOR))));
        }
        Err(e) => return Err(e),
    };
    let ctx = ctx.clone();
    let key = physical_key.to_owned();
    Ok(Reply::later(async move {
        let resp = match pending.await {
            Ok(resp) => resp,
            Err(e) if is_network(&e) => {
                ctx.gw.router().broker_failed(&broker, &e);
                refuse(NOT_COORDINATOR)
            }
            Err(e) => return Err(e),
        };
        if code(&resp) == NOT_COORDINATOR {
            ctx.gw.router().coordinator_moved(key_type, &key);
        }
        Ok(wrap(resp))
    }))
}

/// Items by destination (in the order each destination first appears), and the items that
/// have none, with the error code to answer for them.
type Split<B, T> = (Vec<(B, Vec<T>)>, Vec<(T, i16)>);

/// Splits items by where they go, keeping the order in which each destination first appears
/// and the items' order within it. Items whose destination is `Err(code)` are set apart with
/// that code.
fn split_by<T, B>(routed: Vec<(T, Result<B, i16>)>, same: impl Fn(&B, &B) -> bool) -> Split<B, T> {
    let mut parts: Vec<(B, Vec<T>)> = Vec::new();
    let mut failed = Vec::new();
    for (item, dest) in routed {
        match dest {
            Ok(dest) => match parts.iter_mut().find(|(b, _)| same(b, &dest)) {
                Some((_, items)) => items.push(item),
                None => parts.push((dest, vec![item])),
            },
            Err(code) => failed.push((item, code)),
        }
    }
    (parts, failed)
}

/// The items of a batched group request, split by the coordinator of each one's group
/// (`key`: its physical group id), and the items whose coordinator is not known, with the
/// error code to answer for them.
async fn split_by_coordinator<T>(
    ctx: &Ctx,
    items: Vec<T>,
    key: impl Fn(&T) -> String,
) -> Result<Split<Arc<Broker>, T>, UpstreamError> {
    let mut routed = Vec::with_capacity(items.len());
    for item in items {
        let answer = ctx.gw.router().coordinator(GROUP, &key(&item)).await?;
        let dest = answer.broker.ok_or(answer.error_code);
        routed.push((item, dest));
    }
    Ok(split_by(routed, |a: &Arc<Broker>, b| a.addr() == b.addr()))
}

type PartAnswer<Resp> = Pin<Box<dyn Future<Output = Result<Resp, UpstreamError>> + Send>>;

/// A part sent: its coordinator, its physical group ids, and the answer to wait for (None:
/// the coordinator could not be reached).
type Sent<Resp> = (Arc<Broker>, Vec<String>, Option<PartAnswer<Resp>>);

/// Sends each part (its coordinator, the physical group ids it carries, its request) to its
/// coordinator, all of them before waiting for any, and resolves to one answer per part, in
/// the parts' order, with the part's group ids:
/// `Err(NOT_COORDINATOR)` for a part whose coordinator could not be reached or stopped
/// answering (the client looks the coordinator up again, and by then the router has moved
/// on).
async fn to_coordinators<Req, Resp>(
    ctx: &Ctx,
    api: ApiKey,
    version: i16,
    parts: Vec<(Arc<Broker>, Vec<String>, Req)>,
) -> Result<
    impl Future<Output = Result<Vec<(Vec<String>, Result<Resp, i16>)>, UpstreamError>> + Send,
    UpstreamError,
>
where
    Req: Encodable + 'static,
    Resp: Decodable + Send + 'static,
{
    let mut sent: Vec<Sent<Resp>> = Vec::with_capacity(parts.len());
    for (broker, keys, req) in parts {
        match forward::<_, Resp>(ctx, &broker, api, version, &req).await {
            Ok(p) => sent.push((broker, keys, Some(Box::pin(p)))),
            Err(e) if is_network(&e) => {
                ctx.gw.router().broker_failed(&broker, &e);
                sent.push((broker, keys, None));
            }
            Err(e) => return Err(e),
        }
    }
    let ctx = ctx.clone();
    Ok(async move {
        let mut answers = Vec::with_capacity(sent.len());
        for (broker, keys, pending) in sent {
            let answer = match pending {
                None => Err(NOT_COORDINATOR),
                Some(p) => match p.await {
                    Ok(resp) => Ok(resp),
                    Err(e) if is_network(&e) => {
                        ctx.gw.router().broker_failed(&broker, &e);
                        Err(NOT_COORDINATOR)
                    }
                    Err(e) => return Err(e),
                },
            };
            answers.push((keys, answer));
        }
        Ok(answers)
    })
}

pub async fn find_coordinator(
    ctx: &Ctx,
    version: i16,
    req: FindCoordinatorRequest,
) -> Result<Reply, UpstreamError> {
    let keys: Vec<StrBytes> = if version >= 4 {
        req.coordinator_keys
    } else {
        vec![req.key]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    for key in keys {
        let (action, code) = match req.key_type {
            GROUP => (Action::DescribeGroup, GROUP_DENIED),
            TRANSACTION => (Action::DescribeTransactionalId, TXN_DENIED),
            _ => {
                coordinators.push(
                    Coordinator::default()
                        .with_key(key)
                        .with_error_code(INVALID_REQUEST),
                );
                continue;
            }
        };
        let allowed = if req.key_type == GROUP {
            ctx.session.may_group(action, &key)
        } else {
            ctx.session.may_transactional_id(action, &key)
        };
        let mapped = ctx.session.namespace.id(&key);
        let entry = match (allowed, mapped) {
            (false, _) => Coordinator::default().with_error_code(code),
            (true, Err(_)) => Coordinator::default().with_error_code(if req.key_type == GROUP {
                INVALID_GROUP
            } else {
                INVALID_REQUEST
            }),
            (true, Ok(physical)) => {
                let answer = ctx.gw.router().coordinator(req.key_type, &physical).await?;
                if answer.broker.is_some() {
                    let node = ctx.gw.node_for(&key, -1);
                    Coordinator::default()
                        .with_node_id(BrokerId(node.id))
                        .with_host(StrBytes::from_string(node.host.clone()))
                        .with_port(node.port)
                } else {
                    Coordinator::default()
                        .with_error_code(answer.error_code)
                        .with_error_message(answer.error_message)
                }
            }
        };
        coordinators.push(entry.with_key(key));
    }
    let mut resp = FindCoordinatorResponse::default();
    if version >= 4 {
        resp.coordinators = coordinators;
    } else if let Some(c) = coordinators.pop() {
        resp.error_code = c.error_code;
        resp.error_message = c.error_message;
        resp.node_id = if c.error_code == 0 {
            c.node_id
        } else {
            BrokerId(-1)
        };
        resp.host = c.host;
        resp.port = if c.error_code == 0 { c.port } else { -1 };
    }
    Ok(Reply::now(ResponseKind::FindCoordinator(resp)))
}

/// One handler per single-group API: authorize AlterGroup, map the id, go to the coordinator.
macro_rules! single_group_api {
    ($fn_name:ident, $req:ty, $resp:ty, $api:ident) => {
        pub async fn $fn_name(
            ctx: &Ctx,
            version: i16,
            mut req: $req,
        ) -> Result<Reply, UpstreamError> {
            let refuse = |code| <$resp>::default().with_error_code(code);
            req.group_id = match ctx.admit_group(Action::AlterGroup, &req.group_id) {
                Ok(g) => g,
                Err(code) => return Ok(Reply::now(ResponseKind::$api(refuse(code)))),
            };
            let key = req.group_id.0.to_string();
            // A JoinGroup may make a new group: the cluster's max_consumer_groups.
            if ApiKey::$api == ApiKey::JoinGroup {
                if let Err(code) = crate::quotas::limits::admit_group(ctx, &key).await {
                    return Ok(Reply::now(ResponseKind::$api(refuse(code))));
                }
            }
            to_coordinator(
                ctx,
                GROUP,
                ApiKey::$api,
                version,
                &key,
                &req,
                refuse,
                |r: &$resp| r.error_code,
                ResponseKind::$api,
            )
            .await
        }
    };
}

single_group_api!(join_group, JoinGroupRequest, JoinGroupResponse, JoinGroup);
single_group_api!(sync_group, SyncGroupRequest, SyncGroupResponse, SyncGroup);
single_group_api!(heartbeat, HeartbeatRequest, HeartbeatResponse, Heartbeat);
single_group_api!(
    leave_group,
    LeaveGroupRequest,
    LeaveGroupResponse,
    LeaveGroup
);

pub async fn offset_commit(
    ctx: &Ctx,
    version: i16,
    mut req: OffsetCommitRequest,
) -> Result<Reply, UpstreamError> {
    let group_code = match ctx.admit_group(Action::AlterGroup, &req.group_id) {
        Ok(g) => {
            req.group_id = g;
            None
        }
        Err(code) => Some(code),
    };
    // A commit may make a new group (a consumer that assigns its partitions itself).
    let group_code = match group_code {
        None => (crate::quotas::limits::admit_group(ctx, req.group_id.0.as_str()).await).err(),
        refused => refused,
    };
    let mut refused = Vec::new();
    req.topics.retain_mut(|t| {
        let code = group_code.or_else(|| match ctx.admit_topic(Action::ReadData, &t.name) {
            Ok(p) => {
                t.name = p;
                None
            }
            Err(code) => Some(code),
        });
        if let Some(code) = code {
            refused.push(
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    ),
            );
        }
        code.is_none()
    });
    if req.topics.is_empty() {
        let resp = OffsetCommitResponse::default().with_topics(refused);
        return Ok(Reply::now(ResponseKind::OffsetCommit(resp)));
    }
    let key = req.group_id.0.to_string();
    let answer = ctx.gw.router().coordinator(GROUP, &key).await?;
    let Some(broker) = answer.broker else {
        let code = answer.error_code;
        let resp = OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .map(|t| {
                    let mut name = t.name.clone();
                    ctx.topic_back(&mut name);
                    OffsetCommitResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .chain(refused)
                .collect(),
        );
        return Ok(Reply::now(ResponseKind::OffsetCommit(resp)));
    };
    let commit = Commit::asked(&ctx.session.namespace, &key, &req);
    let pending =
        forward::<_, OffsetCommitResponse>(ctx, &broker, ApiKey::OffsetCommit, version, &req)
            .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        if let Some(commit) = commit {
            commit.stored(ctx.gw.lag(), ctx.session.cluster.id, &resp);
        }
        let moved = resp
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| p.error_code == NOT_COORDINATOR);
        if moved {
            ctx.gw.router().coordinator_moved(GROUP, &key);
        }
        resp.topics.retain_mut(|t| ctx.topic_back(&mut t.name));
        resp.topics.extend(refused);
        Ok(ResponseKind::OffsetCommit(resp))
    }))
}

pub async fn offset_fetch(
    ctx: &Ctx,
    version: i16,
    mut req: OffsetFetchRequest,
) -> Result<Reply, UpstreamError> {
    if version >= 8 {
        return offset_fetch_batched(ctx, version, req).await;
    }
    let refuse = |code| OffsetFetchResponse::default().with_error_code(code);
    req.group_id = match ctx.admit_group(Action::DescribeGroup, &req.group_id) {
        Ok(g) => g,
        Err(code) => return Ok(Reply::now(ResponseKind::OffsetFetch(refuse(code)))),
    };
    let mut refused = Vec::new();
    if let Some(topics) = req.topics.as_mut() {
        topics.retain_mut(|t| match ctx.admit_topic(Action::DescribeTopic, &t.name) {
            Ok(p) => {
                t.name = p;
                true
            }
            Err(code) => {
                refused.push(
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partition_indexes
                                .iter()
                                .map(|&i| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(i)
                                        .with_committed_offset(-1)
                                        .with_committed_leader_epoch(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        ),
                );
                false
            }
        });
        if topics.is_empty() {
            let resp = OffsetFetchResponse::default().with_topics(refused);
            return Ok(Reply::now(ResponseKind::OffsetFetch(resp)));
        }
    }
    let key = req.group_id.0.to_string();
    let answer = ctx.gw.router().coordinator(GROUP, &key).await?;
    let Some(broker) = answer.broker else {
        return Ok(Reply::now(ResponseKind::OffsetFetch(refuse(
            answer.error_code,
        ))));
    };
    let pending =
        forward::<_, OffsetFetchResponse>(ctx, &broker, ApiKey::OffsetFetch, version, &req).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        if resp.error_code == NOT_COORDINATOR {
            ctx.gw.router().coordinator_moved(GROUP, &key);
        }
        resp.topics.retain_mut(|t| {
            ctx.topic_back(&mut t.name)
                && ctx.session.allows_topic(Action::DescribeTopic, &t.name.0)
        });
        resp.topics.extend(refused);
        Ok(ResponseKind::OffsetFetch(resp))
    }))
}

/// OffsetFetch v8+: several groups in one request, sent to their coordinators in one request
/// per coordinator.
async fn offset_fetch_batched(
    ctx: &Ctx,
    version: i16,
    mut req: OffsetFetchRequest,
) -> Result<Reply, UpstreamError> {
    let mut refused: Vec<OffsetFetchResponseGroup> = Vec::new();
    req.groups.retain_mut(|g| {
        let logical = g.group_id.clone();
        match ctx.admit_group(Action::DescribeGroup, &g.group_id) {
            Ok(p) => g.group_id = p,
            Err(code) => {
                refused.push(
                    OffsetFetchResponseGroup::default()
                        .with_group_id(logical)
                        .with_error_code(code),
                );
                return false;
            }
        }
        let mut denied_topics = Vec::new();
        if let Some(topics) = g.topics.as_mut() {
            topics.retain_mut(|t| match ctx.admit_topic(Action::DescribeTopic, &t.name) {
                Ok(p) => {
                    t.name = p;
                    true
                }
                Err(code) => {
                    denied_topics.push(
                        OffsetFetchResponseTopics::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|&i| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(i)
                                            .with_committed_offset(-1)
                                            .with_committed_leader_epoch(-1)
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            ),
                    );
                    false
                }
            });
        }
        if !denied_topics.is_empty() {
            refused.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(logical)
                    .with_topics(denied_topics),
            );
        }
        true
    });
    if req.groups.is_empty() {
        let resp = OffsetFetchResponse::default().with_groups(refused);
        return Ok(Reply::now(ResponseKind::OffsetFetch(resp)));
    }
    let groups = std::mem::take(&mut req.groups);
    let key = |g: &OffsetFetchRequestGroup| g.group_id.0.to_string();
    let (parts, unrouted) = split_by_coordinator(ctx, groups, key).await?;
    let failed = |id: &GroupId, code| {
        OffsetFetchResponseGroup::default()
            .with_group_id(id.clone())
            .with_error_code(code)
    };
    let mut unanswered: Vec<_> = unrouted
        .iter()
        .map(|(g, code)| failed(&g.group_id, *code))
        .collect();
    let parts = parts
        .into_iter()
        .map(|(broker, groups)| {
            let keys = groups.iter().map(key).collect();
            (broker, keys, req.clone().with_groups(groups))
        })
        .collect();
    let answers =
        to_coordinators::<_, OffsetFetchResponse>(ctx, ApiKey::OffsetFetch, version, parts).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = OffsetFetchResponse::default();
        for (keys, answer) in answers.await? {
            match answer {
                Ok(part) => {
                    resp.throttle_time_ms = resp.throttle_time_ms.max(part.throttle_time_ms);
                    resp.groups.extend(part.groups);
                }
                Err(code) => unanswered.extend(
                    keys.into_iter()
                        .map(|k| failed(&GroupId(StrBytes::from_string(k)), code)),
                ),
            }
        }
        resp.groups.extend(unanswered);
        for g in resp
            .groups
            .iter()
            .filter(|g| g.error_code == NOT_COORDINATOR)
        {
            ctx.gw.router().coordinator_moved(GROUP, &g.group_id.0);
        }
        resp.groups.retain_mut(|g| ctx.group_back(&mut g.group_id));
        for g in &mut resp.groups {
            g.topics.retain_mut(|t| {
                ctx.topic_back(&mut t.name)
                    && ctx.session.allows_topic(Action::DescribeTopic, &t.name.0)
            });
        }
        // A group with both allowed and denied topics answers in two entries; merge them.
        for r in refused {
            match resp.groups.iter_mut().find(|g| g.group_id == r.group_id) {
                Some(g) => g.topics.extend(r.topics),
                None => resp.groups.push(r),
            }
        }
        Ok(ResponseKind::OffsetFetch(resp))
    }))
}

pub async fn describe_groups(
    ctx: &Ctx,
    version: i16,
    mut req: DescribeGroupsRequest,
) -> Result<Reply, UpstreamError> {
    let mut refused = Vec::new();
    req.groups
        .retain_mut(|g| match ctx.admit_group(Action::DescribeGroup, g) {
            Ok(p) => {
                *g = p;
                true
            }
            Err(code) => {
                refused.push(
                    DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(code)
                        .with_authorized_operations(i32::MIN),
                );
                false
            }
        });
    if req.groups.is_empty() {
        let resp = DescribeGroupsResponse::default().with_groups(refused);
        return Ok(Reply::now(ResponseKind::DescribeGroups(resp)));
    }
    req.include_authorized_operations = false;
    let groups = std::mem::take(&mut req.groups);
    let key = |g: &GroupId| g.0.to_string();
    let (parts, unrouted) = split_by_coordinator(ctx, groups, key).await?;
    let failed = |id: GroupId, code| {
        DescribedGroup::default()
            .with_group_id(id)
            .with_error_code(code)
    };
    let mut unanswered: Vec<_> = unrouted
        .into_iter()
        .map(|(g, code)| failed(g, code))
        .collect();
    let parts = parts
        .into_iter()
        .map(|(broker, groups)| {
            let keys = groups.iter().map(key).collect();
            (broker, keys, req.clone().with_groups(groups))
        })
        .collect();
    let answers =
        to_coordinators::<_, DescribeGroupsResponse>(ctx, ApiKey::DescribeGroups, version, parts)
            .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = DescribeGroupsResponse::default();
        for (keys, answer) in answers.await? {
            match answer {
                Ok(part) => {
                    resp.throttle_time_ms = resp.throttle_time_ms.max(part.throttle_time_ms);
                    resp.groups.extend(part.groups);
                }
                Err(code) => unanswered.extend(
                    keys.into_iter()
                        .map(|k| failed(GroupId(StrBytes::from_string(k)), code)),
                ),
            }
        }
        resp.groups.extend(unanswered);
        for g in resp
            .groups
            .iter()
            .filter(|g| g.error_code == NOT_COORDINATOR)
        {
            ctx.gw.router().coordinator_moved(GROUP, &g.group_id.0);
        }
        resp.groups.retain_mut(|g| ctx.group_back(&mut g.group_id));
        for g in &mut resp.groups {
            g.authorized_operations = i32::MIN;
            let consumer = g.protocol_type.as_str() == "consumer";
            for m in &mut g.members {
                // The host a member connected from, as the pool saw it, is the gateway's.
                m.client_host = StrBytes::from_static_str("");
                if consumer {
                    let back = |name: &str| ctx.back(name);
                    m.member_metadata = subscription_back(&m.member_metadata, back);
                    m.member_assignment = assignment_back(&m.member_assignment, back);
                }
            }
        }
        resp.groups.extend(refused);
        Ok(ResponseKind::DescribeGroups(resp))
    }))
}

/// The newest consumer-protocol version this gateway decodes.
const CONSUMER_PROTOCOL_MAX: i16 = 3;

/// Decodes consumer-protocol bytes (an i16 version, then the message), lets `edit` rename
/// topics, and encodes them again in the same version. Bytes that are not the consumer
/// protocol in a version this gateway knows are the members' own, and are left as they are.
fn consumer_bytes<M: Encodable + Decodable>(
    bytes: &bytes::Bytes,
    edit: impl FnOnce(&mut M),
) -> bytes::Bytes {
    let mut buf = bytes.clone();
    if buf.len() < 2 {
        return bytes.clone();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    if !(0..=CONSUMER_PROTOCOL_MAX).contains(&version) {
        return bytes.clone();
    }
    let _ = bytes::Buf::get_i16(&mut buf);
    let Ok(mut msg) = M::decode(&mut buf, version) else {
        return bytes.clone();
    };
    edit(&mut msg);
    let mut out = bytes::BytesMut::with_capacity(bytes.len());
    out.extend_from_slice(&version.to_be_bytes());
    match msg.encode(&mut out, version) {
        Ok(()) => out.freeze(),
        Err(_) => bytes::Bytes::new(),
    }
}

/// A member's subscription with this cluster's pool topic names (`back`: the tenant's name
/// for a pool name of this cluster) given back the tenant's names.
fn subscription_back(
    bytes: &bytes::Bytes,
    back: impl Fn(&str) -> Option<StrBytes>,
) -> bytes::Bytes {
    consumer_bytes(bytes, |s: &mut ConsumerProtocolSubscription| {
        for t in &mut s.topics {
            if let Some(name) = back(t.as_str()) {
                *t = name;
            }
        }
        for p in &mut s.owned_partitions {
            if let Some(name) = back(p.topic.0.as_str()) {
                p.topic.0 = name;
            }
        }
    })
}

/// A member's assignment, renamed as [`subscription_back`] does.
fn assignment_back(bytes: &bytes::Bytes, back: impl Fn(&str) -> Option<StrBytes>) -> bytes::Bytes {
    consumer_bytes(bytes, |a: &mut ConsumerProtocolAssignment| {
        for p in &mut a.assigned_partitions {
            if let Some(name) = back(p.topic.0.as_str()) {
                p.topic.0 = name;
            }
        }
    })
}

/// On a leader-based pool every broker coordinates some groups, so the listing asks all of
/// them; a stateless pool's brokers share one store, so one answers for all. A broker that
/// cannot be reached makes the answer COORDINATOR_NOT_AVAILABLE (retriable) rather than a
/// silently partial list.
pub async fn list_groups(
    ctx: &Ctx,
    version: i16,
    req: ListGroupsRequest,
) -> Result<Reply, UpstreamError> {
    let router = ctx.gw.router();
    let brokers = match router.kind() {
        PoolKind::Leader => router.pool().brokers(),
        PoolKind::Stateless => vec![router.any()?],
    };
    if brokers.is_empty() {
        return Err(UpstreamError::NoBrokers);
    }
    let mut pending = Vec::new();
    for broker in brokers {
        let answer =
            forward::<_, ListGroupsResponse>(ctx, &broker, ApiKey::ListGroups, version, &req).await;
        pending.push((broker, answer));
    }
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut merged = ListGroupsResponse::default();
        for (broker, answer) in pending {
            let resp = match answer {
                Ok(p) => p.await,
                Err(e) => Err(e),
            };
            let resp = match resp {
                Ok(resp) => resp,
                Err(e) if is_network(&e) => {
                    ctx.gw.router().broker_failed(&broker, &e);
                    merged.error_code = ResponseError::CoordinatorNotAvailable.code();
                    continue;
                }
                Err(e) => return Err(e),
            };
            if resp.error_code != 0 {
                merged.error_code = resp.error_code;
            }
            merged.throttle_time_ms = merged.throttle_time_ms.max(resp.throttle_time_ms);
            merged
                .groups
                .extend(resp.groups.into_iter().filter_map(|mut g| {
                    (ctx.group_back(&mut g.group_id)
                        && ctx
                            .session
                            .allows_group(Action::DescribeGroup, &g.group_id.0))
                    .then_some(g)
                }));
        }
        if merged.error_code != 0 {
            merged.groups.clear();
        }
        merged
            .groups
            .sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
        merged.groups.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(ResponseKind::ListGroups(merged))
    }))
}

pub async fn delete_groups(
    ctx: &Ctx,
    version: i16,
    mut req: DeleteGroupsRequest,
) -> Result<Reply, UpstreamError> {
    let mut refused = Vec::new();
    req.groups_names
        .retain_mut(|g| match ctx.admit_group(Action::DeleteGroup, g) {
            Ok(p) => {
                *g = p;
                true
            }
            Err(code) => {
                refused.push(
                    DeletableGroupResult::default()
                        .with_group_id(g.clone())
                        .with_error_code(code),
                );
                false
            }
        });
    if req.groups_names.is_empty() {
        let resp = DeleteGroupsResponse::default().with_results(refused);
        return Ok(Reply::now(ResponseKind::DeleteGroups(resp)));
    }
    let groups = std::mem::take(&mut req.groups_names);
    let key = |g: &GroupId| g.0.to_string();
    let (parts, unrouted) = split_by_coordinator(ctx, groups, key).await?;
    let failed = |id: GroupId, code| {
        DeletableGroupResult::default()
            .with_group_id(id)
            .with_error_code(code)
    };
    let mut unanswered: Vec<_> = unrouted
        .into_iter()
        .map(|(g, code)| failed(g, code))
        .collect();
    let parts = parts
        .into_iter()
        .map(|(broker, groups_names)| {
            let keys = groups_names.iter().map(key).collect();
            (broker, keys, req.clone().with_groups_names(groups_names))
        })
        .collect();
    let answers =
        to_coordinators::<_, DeleteGroupsResponse>(ctx, ApiKey::DeleteGroups, version, parts)
            .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = DeleteGroupsResponse::default();
        for (keys, answer) in answers.await? {
            match answer {
                Ok(part) => {
                    resp.throttle_time_ms = resp.throttle_time_ms.max(part.throttle_time_ms);
                    resp.results.extend(part.results);
                }
                Err(code) => unanswered.extend(
                    keys.into_iter()
                        .map(|k| failed(GroupId(StrBytes::from_string(k)), code)),
                ),
            }
        }
        resp.results.extend(unanswered);
        for g in resp
            .results
            .iter()
            .filter(|g| g.error_code == NOT_COORDINATOR)
        {
            ctx.gw.router().coordinator_moved(GROUP, &g.group_id.0);
        }
        resp.results.retain_mut(|g| ctx.group_back(&mut g.group_id));
        resp.results.extend(refused);
        Ok(ResponseKind::DeleteGroups(resp))
    }))
}

pub async fn offset_delete(
    ctx: &Ctx,
    version: i16,
    mut req: OffsetDeleteRequest,
) -> Result<Reply, UpstreamError> {
    let refuse = |code| OffsetDeleteResponse::default().with_error_code(code);
    req.group_id = match ctx.admit_group(Action::DeleteGroup, &req.group_id) {
        Ok(g) => g,
        Err(code) => return Ok(Reply::now(ResponseKind::OffsetDelete(refuse(code)))),
    };
    let mut refused = Vec::new();
    req.topics
        .retain_mut(|t| match ctx.admit_topic(Action::ReadData, &t.name) {
            Ok(p) => {
                t.name = p;
                true
            }
            Err(code) => {
                refused.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        ),
                );
                false
            }
        });
    if req.topics.is_empty() {
        let resp = OffsetDeleteResponse::default().with_topics(refused);
        return Ok(Reply::now(ResponseKind::OffsetDelete(resp)));
    }
    let key = req.group_id.0.to_string();
    let answer = ctx.gw.router().coordinator(GROUP, &key).await?;
    let Some(broker) = answer.broker else {
        return Ok(Reply::now(ResponseKind::OffsetDelete(refuse(
            answer.error_code,
        ))));
    };
    let pending =
        forward::<_, OffsetDeleteResponse>(ctx, &broker, ApiKey::OffsetDelete, version, &req)
            .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        if resp.error_code == NOT_COORDINATOR {
            ctx.gw.router().coordinator_moved(GROUP, &key);
        }
        resp.topics.retain_mut(|t| ctx.topic_back(&mut t.name));
        resp.topics.extend(refused);
        Ok(ResponseKind::OffsetDelete(resp))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<M: Encodable>(msg: &M, version: i16) -> bytes::Bytes {
        let mut out = bytes::BytesMut::new();
        out.extend_from_slice(&version.to_be_bytes());
        msg.encode(&mut out, version).unwrap();
        out.freeze()
    }

    fn back(name: &str) -> Option<StrBytes> {
        name.strip_prefix("tg-00ff-")
            .map(|n| StrBytes::from_string(n.to_owned()))
    }

    /// Consumer-protocol metadata and assignments in DescribeGroups name the tenant's topics,
    /// never the pool's; other names and undecodable bytes are left alone.
    #[test]
    fn consumer_protocol_topics_are_named_back() {
        use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as Assigned;
        use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as Owned;
        for version in 0..=CONSUMER_PROTOCOL_MAX {
            let sub = ConsumerProtocolSubscription::default()
                .with_topics(vec!["tg-00ff-orders".into(), "plain".into()])
                .with_owned_partitions(if version >= 1 {
                    vec![Owned::default()
                        .with_topic(TopicName("tg-00ff-orders".into()))
                        .with_partitions(vec![0, 2])]
                } else {
                    vec![]
                });
            let got = subscription_back(&encoded(&sub, version), back);
            let mut buf = got.slice(2..);
            let decoded = ConsumerProtocolSubscription::decode(&mut buf, version).unwrap();
            assert_eq!(got[..2], version.to_be_bytes());
            assert_eq!(
                decoded.topics,
                vec![StrBytes::from("orders"), "plain".into()]
            );
            if version >= 1 {
                assert_eq!(decoded.owned_partitions[0].topic.0.as_str(), "orders");
                assert_eq!(decoded.owned_partitions[0].partitions, vec![0, 2]);
            }

            let asg = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
                Assigned::default()
                    .with_topic(TopicName("tg-00ff-orders".into()))
                    .with_partitions(vec![1]),
            ]);
            let got = assignment_back(&encoded(&asg, version), back);
            let mut buf = got.slice(2..);
            let decoded = ConsumerProtocolAssignment::decode(&mut buf, version).unwrap();
            assert_eq!(decoded.assigned_partitions[0].topic.0.as_str(), "orders");
            assert_eq!(decoded.assigned_partitions[0].partitions, vec![1]);
        }
        for junk in [
            &b""[..],
            &b"\x00"[..],
            &b"\x00\x00\xff"[..],
            &b"\x7f\x00abc"[..],
        ] {
            let junk = bytes::Bytes::copy_from_slice(junk);
            assert_eq!(subscription_back(&junk, back), junk);
            assert_eq!(assignment_back(&junk, back), junk);
        }
    }

    /// Groups of a batched request whose coordinators differ are sent one request per
    /// coordinator, each with exactly its groups in request order; a group whose coordinator
    /// is unknown is answered with its own error code and sent nowhere.
    #[test]
    fn a_batch_is_split_per_coordinator() {
        let not_available = ResponseError::CoordinatorNotAvailable.code();
        let routed = vec![
            ("g0", Ok("broker-a:9092")),
            ("g1", Ok("broker-b:9092")),
            ("g2", Ok("broker-a:9092")),
            ("g3", Err(not_available)),
            ("g4", Ok("broker-b:9092")),
            ("g5", Ok("broker-c:9092")),
        ];
        let (parts, failed) = split_by(routed, |a, b| a == b);
        assert_eq!(
            parts,
            vec![
                ("broker-a:9092", vec!["g0", "g2"]),
                ("broker-b:9092", vec!["g1", "g4"]),
                ("broker-c:9092", vec!["g5"]),
            ]
        );
        assert_eq!(failed, vec![("g3", not_available)]);
    }

    #[test]
    fn one_coordinator_gets_the_whole_batch() {
        let routed = vec![("g0", Ok(1)), ("g1", Ok(1)), ("g2", Ok(1))];
        let (parts, failed) = split_by(routed, |a, b| a == b);
        assert_eq!(parts, vec![(1, vec!["g0", "g1", "g2"])]);
        assert!(failed.is_empty());
        let (parts, failed) = split_by(Vec::<(&str, Result<i32, i16>)>::new(), |a, b| a == b);
        assert!(parts.is_empty() && failed.is_empty());
    }
}
