//! Fetch, ListOffsets and OffsetForLeaderEpoch: reading partitions.
//!
//! Fetch sessions (KIP-227) are declined: every fetch goes to the pool as a full fetch
//! (session id 0, final epoch) and the client is told no session was made, which every client
//! handles (brokers decline sessions whenever their cache is full). A session on the pool would
//! be tied to one broker and to the exact set of partitions the tenant may read; full fetches
//! are routed and authorized afresh every time.

use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ResponseKind,
};

use super::{forward, topic_of_id, Ctx, Reply};
use crate::authz::Action;
use crate::upstream::UpstreamError;

/// A consumer's replica id in requests that also serve followers.
const CONSUMER: i32 = -1;

pub async fn fetch(ctx: &Ctx, version: i16, mut req: FetchRequest) -> Result<Reply, UpstreamError> {
    req.replica_id = BrokerId(CONSUMER);
    req.replica_state = Default::default();
    req.cluster_id = None;
    req.session_id = 0;
    req.session_epoch = -1;
    req.forgotten_topics_data.clear();

    // From v13 topics are named by id only: resolve each to the tenant's name first, so
    // authorization and refusals work on names as in older versions.
    let by_id = version >= 13;
    let mut id_codes = Vec::with_capacity(req.topics.len());
    if by_id {
        for t in &mut req.topics {
            match topic_of_id(ctx, t.topic_id).await? {
                Ok(name) => {
                    t.topic = name;
                    id_codes.push(None);
                }
                Err(code) => id_codes.push(Some(code)),
            }
        }
    }
    let mut id_codes = id_codes.into_iter();
    let mut forwarded_ids = Vec::new();
    let mut refused = Vec::new();
    req.topics.retain_mut(|t| {
        let logical = t.topic.clone();
        let verdict = match id_codes.next().flatten() {
            Some(code) => Err(code),
            None => ctx
                .admit_topic(Action::ReadData, &t.topic)
                .map(|p| t.topic = p),
        };
        match verdict {
            Ok(()) => {
                forwarded_ids.push(t.topic_id);
                true
            }
            Err(code) => {
                refused.push(
                    FetchableTopicResponse::default()
                        .with_topic(logical)
                        .with_topic_id(t.topic_id)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    PartitionData::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(code)
                                        .with_high_watermark(-1)
                                        .with_last_stable_offset(-1)
                                        .with_log_start_offset(-1)
                                })
                                .collect(),
                        ),
                );
                false
            }
        }
    });
    if req.topics.is_empty() {
        let resp = FetchResponse::default().with_responses(refused);
        return Ok(Reply::now(ResponseKind::Fetch(resp)));
    }
    let broker = ctx.gw.router().for_topic(&req.topics[0].topic.0)?;
    let answer = forward::<_, FetchResponse>(&broker, ApiKey::Fetch, version, &req).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = answer.await?;
        if let Some(counters) = &ctx.session.counters {
            let delivered: u64 = resp
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .filter_map(|p| p.records.as_deref())
                .map(crate::records::complete_batch_bytes)
                .sum();
            counters.add_out(delivered);
        }
        resp.session_id = 0;
        resp.node_endpoints.clear();
        // Tags we do not know may carry pool addresses (tansu sends node endpoints in tags
        // older versions do not define): what we do not understand does not reach tenants.
        resp.unknown_tagged_fields.clear();
        resp.responses.retain_mut(|t| {
            if by_id {
                forwarded_ids.contains(&t.topic_id)
            } else {
                ctx.topic_back(&mut t.topic)
            }
        });
        for t in &mut resp.responses {
            t.unknown_tagged_fields.clear();
            for p in &mut t.partitions {
                p.unknown_tagged_fields.clear();
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1);
                p.preferred_read_replica = BrokerId(-1);
            }
        }
        resp.responses.extend(refused);
        Ok(ResponseKind::Fetch(resp))
    }))
}

pub async fn list_offsets(
    ctx: &Ctx,
    version: i16,
    mut req: ListOffsetsRequest,
) -> Result<Reply, UpstreamError> {
    req.replica_id = BrokerId(CONSUMER);
    let mut refused = Vec::new();
    req.topics.retain_mut(|t| {
        let logical = t.name.clone();
        match ctx
            .admit_topic(Action::DescribeTopic, &t.name)
            .map(|p| t.name = p)
        {
            Ok(()) => true,
            Err(code) => {
                refused.push(
                    ListOffsetsTopicResponse::default()
                        .with_name(logical)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                        .with_timestamp(-1)
                                        .with_offset(-1)
                                })
                                .collect(),
                        ),
                );
                false
            }
        }
    });
    if req.topics.is_empty() {
        let resp = ListOffsetsResponse::default().with_topics(refused);
        return Ok(Reply::now(ResponseKind::ListOffsets(resp)));
    }
    let broker = ctx.gw.router().for_topic(&req.topics[0].name.0)?;
    let answer =
        forward::<_, ListOffsetsResponse>(&broker, ApiKey::ListOffsets, version, &req).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = answer.await?;
        resp.topics.retain_mut(|t| ctx.topic_back(&mut t.name));
        resp.topics.extend(refused);
        Ok(ResponseKind::ListOffsets(resp))
    }))
}

pub async fn offset_for_leader_epoch(
    ctx: &Ctx,
    version: i16,
    mut req: OffsetForLeaderEpochRequest,
) -> Result<Reply, UpstreamError> {
    req.replica_id = BrokerId(CONSUMER);
    let mut refused = Vec::new();
    req.topics.retain_mut(|t| {
        let logical = t.topic.clone();
        match ctx
            .admit_topic(Action::DescribeTopic, &t.topic)
            .map(|p| t.topic = p)
        {
            Ok(()) => true,
            Err(code) => {
                refused.push(
                    OffsetForLeaderTopicResult::default()
                        .with_topic(logical)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    EpochEndOffset::default()
                                        .with_partition(p.partition)
                                        .with_error_code(code)
                                        .with_leader_epoch(-1)
                                        .with_end_offset(-1)
                                })
                                .collect(),
                        ),
                );
                false
            }
        }
    });
    if req.topics.is_empty() {
        let resp = OffsetForLeaderEpochResponse::default().with_topics(refused);
        return Ok(Reply::now(ResponseKind::OffsetForLeaderEpoch(resp)));
    }
    let broker = ctx.gw.router().for_topic(&req.topics[0].topic.0)?;
    let answer = forward::<_, OffsetForLeaderEpochResponse>(
        &broker,
        ApiKey::OffsetForLeaderEpoch,
        version,
        &req,
    )
    .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = answer.await?;
        resp.topics.retain_mut(|t| ctx.topic_back(&mut t.topic));
        resp.topics.extend(refused);
        Ok(ResponseKind::OffsetForLeaderEpoch(resp))
    }))
}
