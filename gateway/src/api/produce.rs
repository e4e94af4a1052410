//! Produce: authorization per topic, the cluster's message size limit, and names.
//!
//! Record batches are never decoded: their headers are read in place (length, magic, producer
//! id) to enforce `max_message_bytes` and to tell idempotent writes apart, and the bytes are
//! forwarded as they came.

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseKind};
use kafka_protocol::ResponseError;

use super::{
    forward, topic_of_id, Ctx, Reply, CLUSTER_DENIED, INVALID_TOPIC, TOPIC_DENIED, TXN_DENIED,
};
use crate::authz::Action;
use crate::upstream::UpstreamError;

/// Offsets in a v2 record batch header (KIP-98).
const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const PRODUCER_ID_AT: usize = 43;
const BATCH_HEADER_LEN: usize = 61;

/// What the gateway needs to know of a partition's records, read from batch headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub batches: usize,
    /// Total bytes of all batches, as on the wire.
    pub bytes: usize,
    pub largest: usize,
    /// Any batch carries a producer id (idempotent or transactional).
    pub has_producer_id: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record batches are malformed")]
pub struct CorruptBatches;

/// Walks the batch headers of a produce partition's records.
pub fn summarize(records: &[u8]) -> Result<BatchSummary, CorruptBatches> {
    let mut s = BatchSummary {
        batches: 0,
        bytes: 0,
        largest: 0,
        has_producer_id: false,
    };
    let mut rest = records;
    while !rest.is_empty() {
        if rest.len() < BATCH_HEADER_LEN || rest[MAGIC_AT] != 2 {
            return Err(CorruptBatches);
        }
        let len = i32::from_be_bytes(
            rest[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|&t| t >= BATCH_HEADER_LEN && t <= rest.len())
            .ok_or(CorruptBatches)?;
        let producer_id = i64::from_be_bytes(
            rest[PRODUCER_ID_AT..PRODUCER_ID_AT + 8]
                .try_into()
                .expect("8 bytes"),
        );
        s.batches += 1;
        s.bytes += total;
        s.largest = s.largest.max(total);
        s.has_producer_id |= producer_id >= 0;
        rest = &rest[total..];
    }
    Ok(s)
}

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
    req.topic_data = accepted;
    if acks == 0 {
        broker
            .dispatch(ApiKey::Produce, version, &req, false)
            .await?;
        return Ok(Reply::Nothing);
    }
    let answer = forward::<_, ProduceResponse>(&broker, ApiKey::Produce, version, &req).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = answer.await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(total_len: usize, producer_id: i64) -> Vec<u8> {
        let mut b = vec![0u8; total_len];
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4]
            .copy_from_slice(&((total_len - 12) as i32).to_be_bytes());
        b[MAGIC_AT] = 2;
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
        b
    }

    #[test]
    fn walks_batches_without_decoding_records() {
        let mut records = batch(100, -1);
        records.extend(batch(300, 7));
        let s = summarize(&records).unwrap();
        assert_eq!(s.batches, 2);
        assert_eq!(s.bytes, 400);
        assert_eq!(s.largest, 300);
        assert!(s.has_producer_id);
        assert_eq!(summarize(&[]).unwrap().batches, 0);
    }

    #[test]
    fn malformed_batches_are_refused_not_trusted() {
        let good = batch(100, -1);
        assert_eq!(summarize(&good[..50]), Err(CorruptBatches));
        let mut wrong_magic = good.clone();
        wrong_magic[MAGIC_AT] = 1;
        assert_eq!(summarize(&wrong_magic), Err(CorruptBatches));
        let mut overlong = good.clone();
        overlong[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&1000i32.to_be_bytes());
        assert_eq!(summarize(&overlong), Err(CorruptBatches));
        let mut negative = good;
        negative[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(summarize(&negative), Err(CorruptBatches));
    }
}
