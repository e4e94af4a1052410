//! Produce: authorization per topic, the cluster's message size limit, and names.
//!
//! Record batches are never decoded: their headers are read in place (see [`crate::records`])
//! to enforce `max_message_bytes`, to tell idempotent writes apart and to meter bytes in, and
//! the bytes are forwarded as they came.

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use kafka_protocol::ResponseError;

use crate::records::{summarize, CorruptBatches};

use super::{
    forward, topic_of_id, Ctx, Reply, CLUSTER_DENIED, INVALID_TOPIC, TOPIC_DENIED, TXN_DENIED,
};
use crate::authz::Action;
use crate::upstream::UpstreamError;

pub async fn produce(
    ctx: &Ctx,
    version: i16,
    mut req: ProduceRequest,
) -> Result<Reply, UpstreamError> {
    let max_message_bytes = match ctx.gw.registry().get(&ctx.session.cluster.id) {
        Some(c) => c.max_message_bytes as usize,
        // Deleted while connected: the connection is closed by the caller on its next check;
        // until then nothing more is written.
        None => 0,
    };
    let txn_code = match &req.transactional_id {
        Some(id)
            if !ctx
                .session
                .may_transactional_id(Action::AlterTransactionalId, &id.0) =>
        {
            Some(TXN_DENIED)
        }
        Some(id) => match ctx.txn_out(id) {
            Ok(p) => {
                req.transactional_id = Some(p);
                None
            }
            Err(_) => Some(TXN_DENIED),
        },
        None => None,
    };
    let transactional = req.transactional_id.is_some();
    let may_idempotent = ctx.session.may_cluster(Action::WriteDataIdempotently);

    // v13 names topics by id only; see fetch.
    let by_id = version >= 13;
    let mut refused: Vec<TopicProduceResponse> = Vec::new();
    let mut accepted = Vec::with_capacity(req.topic_data.len());
    for mut topic in std::mem::take(&mut req.topic_data) {
        let id_code = if by_id {
            match topic_of_id(ctx, topic.topic_id).await? {
                Ok(name) => {
                    topic.name = name;
                    None
                }
                Err(code) => Some(code),
            }
        } else {
            None
        };
        let logical = topic.name.clone();
        let topic_code = if let Some(code) = txn_code.or(id_code) {
            Some(code)
        } else if !ctx.session.may_topic(Action::WriteData, &logical.0) {
            Some(TOPIC_DENIED)
        } else {
            match ctx.topic_out(&logical) {
                Ok(p) => {
                    topic.name = p;
                    None
                }
                Err(_) => Some(INVALID_TOPIC),
            }
        };
        let mut refused_partitions = Vec::new();
        if let Some(code) = topic_code {
            refused_partitions.extend(topic.partition_data.iter().map(|p| (p.index, code)));
            topic.partition_data.clear();
        } else {
            topic.partition_data.retain(|p| {
                let records: &[u8] = p.records.as_ref().map(Bytes::as_ref).unwrap_or_default();
                let code = match summarize(records) {
                    Err(CorruptBatches) => Some(ResponseError::CorruptMessage.code()),
                    Ok(s) if s.largest > max_message_bytes => {
                        Some(ResponseError::MessageTooLarge.code())
                    }
                    Ok(s) if s.has_producer_id && !transactional && !may_idempotent => {
                        Some(CLUSTER_DENIED)
                    }
                    Ok(_) => None,
                };
                if let Some(code) = code {
                    refused_partitions.push((p.index, code));
                }
                code.is_none()
            });
        }
        if !refused_partitions.is_empty() {
            refused.push(
                TopicProduceResponse::default()
                    .with_name(logical)
                    .with_topic_id(topic.topic_id)
                    .with_partition_responses(
                        refused_partitions
                            .into_iter()
                            .map(|(index, code)| {
                                PartitionProduceResponse::default()
                                    .with_index(index)
                                    .with_error_code(code)
                                    .with_base_offset(-1)
                                    .with_log_append_time_ms(-1)
                                    .with_log_start_offset(-1)
                            })
                            .collect(),
                    ),
            );
        }
        if !topic.partition_data.is_empty() {
            accepted.push(topic);
        }
    }

    let acks = req.acks;
    if accepted.is_empty() {
        if acks == 0 {
            return Ok(Reply::Nothing);
        }
        let resp = ProduceResponse::default().with_responses(refused);
        return Ok(Reply::now(ResponseKind::Produce(resp)));
    }
    let broker = ctx.gw.router().for_topic(&accepted[0].name.0)?;
    let forwarded_ids: Vec<_> = accepted.iter().map(|t| t.topic_id).collect();
    // Batch bytes per forwarded partition, metered once the pool says it took them.
    let sizes: Vec<(uuid::Uuid, TopicName, i32, u64)> = accepted
        .iter()
        .flat_map(|t| {
            t.partition_data.iter().map(|p| {
                let bytes = p.records.as_ref().map_or(0, |r| r.len() as u64);
                (t.topic_id, t.name.clone(), p.index, bytes)
            })
        })
        .collect();
    req.topic_data = accepted;
    if acks == 0 {
        broker
            .dispatch(ApiKey::Produce, version, &req, false)
            .await?;
        // Nothing will say whether the pool took them; with acks=0 the client does not ask
        // either, and what was forwarded is metered.
        if let Some(c) = &ctx.session.counters {
            c.add_in(sizes.iter().map(|s| s.3).sum());
        }
        return Ok(Reply::Nothing);
    }
    let answer = forward::<_, ProduceResponse>(&broker, ApiKey::Produce, version, &req).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = answer.await?;
        if let Some(counters) = &ctx.session.counters {
            let mut accepted_bytes = 0;
            for t in &resp.responses {
                for p in t.partition_responses.iter().filter(|p| p.error_code == 0) {
                    accepted_bytes += sizes
                        .iter()
                        .find(|(id, name, index, _)| {
                            *index == p.index
                                && if by_id {
                                    *id == t.topic_id
                                } else {
                                    *name == t.name
                                }
                        })
                        .map_or(0, |s| s.3);
                }
            }
            counters.add_in(accepted_bytes);
        }
        resp.responses.retain_mut(|t| {
            if by_id {
                forwarded_ids.contains(&t.topic_id)
            } else {
                ctx.topic_back(&mut t.name)
            }
        });
        // See fetch: unknown tags may name pool nodes.
        resp.unknown_tagged_fields.clear();
        for t in &mut resp.responses {
            t.unknown_tagged_fields.clear();
            for p in &mut t.partition_responses {
                p.unknown_tagged_fields.clear();
                // KIP-951 leader hints name pool nodes; the leader a client knows is a gateway
                // node already.
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id((-1).into())
                    .with_leader_epoch(-1);
            }
        }
        resp.node_endpoints.clear();
        resp.responses.extend(refused);
        Ok(ResponseKind::Produce(resp))
    }))
}
