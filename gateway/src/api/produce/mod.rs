//! Produce: authorization per topic, the cluster's message size limit, and names.
//!
//! Record batches are never decoded: their headers are read in place (see [`crate::records`])
//! to enforce `max_message_bytes`, to tell idempotent writes apart, to keep each producer's
//! batches in order ([`order`]) and to meter bytes in, each acknowledged batch once
//! ([`acked`]), and the bytes are forwarded as they came.

pub mod acked;
pub mod order;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, ResponseKind, TopicName};
use kafka_protocol::ResponseError;

use std::time::Duration;

use kafka_protocol::protocol::StrBytes;

use crate::records::{
    first_sequence, last_sequence, record_count, summarize, CorruptBatches, ProducerSequence,
};

use super::split::{dispatch, failure_code, keys, leader_moved, split, split_routed, Outcome};
use super::{
    topics_of_ids, Ctx, Reply, CLUSTER_DENIED, INVALID_REQUEST, INVALID_TOPIC, TOPIC_DENIED,
    TXN_DENIED,
};
use crate::identity::authz::Action;
use crate::pool::UpstreamError;

pub async fn produce(
    ctx: &Ctx,
    version: i16,
    mut req: ProduceRequest,
) -> Result<Reply, UpstreamError> {
    if names_a_partition_twice(&req) {
        // Which of the two would be written, and metered at which size? Kafka keeps the
        // last silently; a request no client sends is refused whole instead.
        tracing::debug!("produce request names a partition twice; refused");
        if req.acks == 0 {
            return Ok(Reply::Close(
                "an acks=0 produce request named a partition twice".into(),
            ));
        }
        let refused = req
            .topic_data
            .iter()
            .map(|t| {
                refusal(
                    t.name.clone(),
                    t.topic_id,
                    t.partition_data.iter().map(|p| (p.index, INVALID_REQUEST)),
                )
            })
            .collect();
        let resp = ProduceResponse::default().with_responses(refused);
        return Ok(Reply::now(ResponseKind::Produce(resp)));
    }
    if let Some(message) = crate::quotas::limits::storage_full(ctx) {
        if req.acks == 0 {
            return Ok(Reply::Close(message));
        }
        let resp = crate::quotas::limits::refuse_produce(&req, version, &message);
        return Ok(Reply::now(ResponseKind::Produce(resp)));
    }
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
    // Asked before any batch says it is idempotent; audited where one is refused for it.
    let may_idempotent = ctx.session.allows_cluster(Action::WriteDataIdempotently);
    let sequences = ctx.gw.produce_sequences();

    // v13 names topics by id only; see fetch.
    let by_id = version >= 13;
    let ids = topics_of_ids(ctx, req.topic_data.iter().map(|t| t.topic_id)).await?;
    let mut refused: Vec<TopicProduceResponse> = Vec::new();
    let mut accepted = Vec::with_capacity(req.topic_data.len());
    for mut topic in std::mem::take(&mut req.topic_data) {
        let id_code = if by_id {
            match ids.get(ctx, topic.topic_id) {
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
                        ctx.session.refused_cluster(Action::WriteDataIdempotently);
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
            refused.push(refusal(logical, topic.topic_id, refused_partitions));
        }
        if !topic.partition_data.is_empty() {
            accepted.push(topic);
        }
    }

    let acks = req.acks;
    // Each forwarded partition's batch bytes, metered once the pool says it took them, and
    // where it sits in its producer's sequence, to keep its order ([`order`]).
    let mut sizes: Vec<Forwarded> = accepted
        .iter()
        .flat_map(|t| {
            t.partition_data.iter().map(|p| {
                let records = p.records.as_deref().unwrap_or_default();
                Forwarded {
                    topic_id: t.topic_id,
                    name: t.name.clone(),
                    index: p.index,
                    bytes: records.len() as u64,
                    records: record_count(records),
                    seq: first_sequence(records),
                    last_seq: last_sequence(records),
                }
            })
        })
        .collect();
    // A producer's requests for a partition are routed and queued in the order they came;
    // acks=0 asks for no order, since nothing tells the client what was written.
    let admitted = if acks != 0 && !accepted.is_empty() {
        let partitions: Vec<order::Routed<'_>> = sizes.iter().map(Forwarded::routed).collect();
        let admitted = sequences.admit(&partitions).await;
        // Batches sent before their producer learnt that an earlier one failed.
        let behind = sequences.behind(&partitions);
        drop(partitions);
        if behind.contains(&true) {
            let mut flags = behind.iter();
            for t in &mut accepted {
                let mut refused_here = Vec::new();
                t.partition_data.retain(|p| {
                    let is_behind = flags.next().copied().unwrap_or(false);
                    if is_behind {
                        refused_here.push((p.index, ResponseError::NotLeaderOrFollower.code()));
                    }
                    !is_behind
                });
                if !refused_here.is_empty() {
                    let mut name = t.name.clone();
                    ctx.topic_back(&mut name);
                    refused.push(refusal(name, t.topic_id, refused_here));
                }
            }
            accepted.retain(|t| !t.partition_data.is_empty());
            let mut flags = behind.iter();
            sizes.retain(|_| !flags.next().copied().unwrap_or(false));
        }
        Some(admitted)
    } else {
        None
    };
    if accepted.is_empty() {
        if acks == 0 {
            return Ok(Reply::Close(acks_zero_refused(&refused)));
        }
        let resp = ProduceResponse::default().with_responses(refused);
        return Ok(Reply::now(ResponseKind::Produce(resp)));
    }
    let router = ctx.gw.router();
    let template = req;
    let build = |topics| {
        let mut r = template.clone();
        r.topic_data = topics;
        r
    };
    if acks == 0 {
        // Nothing will say whether the pool took them; with acks=0 the client does not ask
        // either, and what was forwarded is metered. A part whose broker is gone is lost, as
        // acks=0 allows.
        let parts = split(router, accepted).await;
        let mut forwarded = 0;
        for (broker, topics) in parts.parts {
            let bytes: u64 = topics
                .iter()
                .flat_map(|t| &t.partition_data)
                .map(|p| p.records.as_ref().map_or(0, |r| r.len() as u64))
                .sum();
            let request = build(topics);
            match broker
                .dispatch_for(ctx.client, ApiKey::Produce, version, &request, false)
                .await
            {
                Ok(_) => {
                    forwarded += bytes;
                    if let Some(metrics) = &ctx.session.metrics {
                        for t in &request.topic_data {
                            let (bytes, records) = t.partition_data.iter().fold((0, 0), |a, p| {
                                let r = p.records.as_deref().unwrap_or_default();
                                (a.0 + r.len() as u64, a.1 + record_count(r))
                            });
                            metrics.topic(&t.name.0).produced(bytes, records);
                        }
                    }
                }
                Err(e) => router.broker_failed(&broker, &e),
            }
        }
        ctx.gw.signals().bytes_in(forwarded);
        if let Some(c) = &ctx.session.counters {
            c.add_in(forwarded);
        }
        // As Kafka: the partitions it may write are written, and a refused one closes the
        // connection, the only way an acks=0 producer hears of it.
        if !refused.is_empty() {
            return Ok(Reply::Close(acks_zero_refused(&refused)));
        }
        return Ok(Reply::Nothing);
    }
    // Routed by the router, except where the producer has an earlier batch unanswered.
    let keys = keys(&accepted);
    let mut routes = router.route(&keys).await;
    let routed: Vec<order::Routed<'_>> = sizes.iter().map(Forwarded::routed).collect();
    let holding = sequences.hold(&routed, &mut routes, ctx.client.connection);
    let parts = split_routed(accepted, routes);
    let wait = Duration::from_millis(template.timeout_ms.max(0) as u64);
    // Followed batches take their predecessors' pool connection, so the broker reads them after.
    let mut sending = ctx.clone();
    if let Some(client) = holding.client {
        sending.client.connection = client;
    }
    let sent = dispatch::<_, _, ProduceResponse>(
        &sending,
        parts,
        ApiKey::Produce,
        version,
        wait,
        !holding.followed,
        build,
        |r: ProduceRequest| r.topic_data,
    )
    .await;
    // Queued on their pool connections: the producer's next request may be routed.
    drop(admitted);
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let router = ctx.gw.router();
        let physical = |id: &uuid::Uuid, name: &TopicName| -> Option<TopicName> {
            if by_id {
                sizes
                    .iter()
                    .find(|s| s.topic_id == *id)
                    .map(|s| s.name.clone())
            } else {
                Some(name.clone())
            }
        };
        let mut resp = ProduceResponse::default();
        let mut accepted_bytes = 0;
        let sequences = ctx.gw.produce_sequences();
        let acked = ctx.gw.acked_batches();
        // A batch answered with a retriable error opens a gap its producer's later batches
        // must not jump.
        let gap = |name: &TopicName, index: i32, code: i16| {
            if !ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable()) {
                return;
            }
            if let Some(seq) = sizes
                .iter()
                .find(|s| s.index == index && s.name == *name)
                .and_then(|s| s.seq)
            {
                sequences.failed(&name.0, index, seq);
            }
        };
        for part in sent {
            match part.outcome(router).await {
                Outcome::Answered(answer) => {
                    resp.throttle_time_ms = resp.throttle_time_ms.max(answer.throttle_time_ms);
                    for t in answer.responses {
                        let Some(name) = physical(&t.topic_id, &t.name) else {
                            continue;
                        };
                        // Looked up once per topic of the answer, not per partition.
                        let counters = ctx.session.metrics.as_ref().map(|m| m.topic(&name.0));
                        for p in &t.partition_responses {
                            if p.error_code == 0 {
                                let batch =
                                    sizes.iter().find(|s| s.index == p.index && s.name == name);
                                if let Some(s) = batch {
                                    let repeat = match (s.seq, s.last_seq) {
                                        (Some(first), Some(last)) => {
                                            acked.repeat(&name.0, p.index, first, last)
                                        }
                                        _ => false,
                                    };
                                    if !repeat {
                                        accepted_bytes += s.bytes;
                                    }
                                    if let Some(counters) = &counters {
                                        if !repeat {
                                            counters.produced(s.bytes, s.records);
                                        }
                                        // The offset after the batch's last record: the
                                        // partition's high watermark reached at least that.
                                        if p.base_offset >= 0 {
                                            let end =
                                                p.base_offset.saturating_add(s.records as i64);
                                            counters.high_watermark(p.index, end);
                                        }
                                    }
                                }
                            } else {
                                gap(&name, p.index, p.error_code);
                                if leader_moved(p.error_code) {
                                    router.leaders_moved(&name.0);
                                }
                            }
                        }
                        merge_topic(&mut resp.responses, t);
                    }
                }
                Outcome::Failed { sheet, error } => {
                    let code = failure_code(&error, true);
                    for s in sheet {
                        let name = TopicName(StrBytes::from_string(s.topic.clone()));
                        for &index in &s.partitions {
                            gap(&name, index, code);
                        }
                        router.leaders_moved(&s.topic);
                        merge_topic(
                            &mut resp.responses,
                            refusal(
                                name,
                                s.topic_id,
                                s.partitions.into_iter().map(|i| (i, code)),
                            ),
                        );
                    }
                }
            }
        }
        // Every part is answered: later produces of these partitions are routed afresh.
        drop(holding);
        ctx.gw.signals().bytes_in(accepted_bytes);
        if let Some(counters) = &ctx.session.counters {
            counters.add_in(accepted_bytes);
        }
        resp.responses.retain_mut(|t| {
            if by_id {
                sizes.iter().any(|s| s.topic_id == t.topic_id)
            } else {
                ctx.topic_back(&mut t.name)
            }
        });
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
        resp.responses.extend(refused);
        Ok(ResponseKind::Produce(resp))
    }))
}

/// A partition forwarded to the pool: its pool topic, batch bytes and producer sequence.
struct Forwarded {
    topic_id: uuid::Uuid,
    name: TopicName,
    index: i32,
    bytes: u64,
    /// Records in its batches, for `tollgate_topic_messages_in_total`.
    records: u64,
    seq: Option<ProducerSequence>,
    /// The sequence of its last record, for a batch with a producer id.
    last_seq: Option<i32>,
}

impl Forwarded {
    fn routed(&self) -> order::Routed<'_> {
        (self.name.0.as_str(), self.index, self.seq)
    }
}

/// Whether two entries of `req` name the same partition of the same topic (by name, or by id
/// from v13 on).
fn names_a_partition_twice(req: &ProduceRequest) -> bool {
    let mut seen: Vec<(&uuid::Uuid, &str, i32)> = req
        .topic_data
        .iter()
        .flat_map(|t| {
            t.partition_data
                .iter()
                .map(move |p| (&t.topic_id, t.name.0.as_str(), p.index))
        })
        .collect();
    let named = seen.len();
    seen.sort_unstable();
    seen.dedup();
    seen.len() != named
}

/// Adds a topic's answer, folding it into an entry for the same topic from another part.
fn merge_topic(into: &mut Vec<TopicProduceResponse>, t: TopicProduceResponse) {
    match into
        .iter_mut()
        .find(|e| e.name == t.name && e.topic_id == t.topic_id)
    {
        Some(e) => e.partition_responses.extend(t.partition_responses),
        None => into.push(t),
    }
}

/// A topic answer refusing partitions, each with its code.
fn refusal(
    name: TopicName,
    topic_id: uuid::Uuid,
    partitions: impl IntoIterator<Item = (i32, i16)>,
) -> TopicProduceResponse {
    TopicProduceResponse::default()
        .with_name(name)
        .with_topic_id(topic_id)
        .with_partition_responses(
            partitions
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
        )
}

/// Why an acks=0 produce closes its connection: the partitions refused and their codes.
fn acks_zero_refused(refused: &[TopicProduceResponse]) -> String {
    let codes: Vec<String> = refused
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(move |p| format!("{}-{}: error {}", t.name.0, p.index, p.error_code))
        })
        .collect();
    format!("acks=0 produce refused ({})", codes.join(", "))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::api::testing::{ctx, ctx_on};
    use crate::pool::testing::{batch, FakeBroker};
    use crate::pool::{Pool, Timeouts};

    const ALLOW_ALL: &str =
        r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#;

    fn request(acks: i16, entries: &[(&str, i32, &[u8])]) -> ProduceRequest {
        let mut topics: Vec<TopicProduceData> = Vec::new();
        for (name, index, value) in entries {
            topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string((*name).to_owned())))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(*index)
                        .with_records(Some(batch(&[Bytes::copy_from_slice(value)])))]),
            );
        }
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(1_000)
            .with_topic_data(topics)
    }

    #[tokio::test]
    async fn a_request_naming_a_partition_twice_is_refused_whole_and_nothing_forwarded() {
        // No pool behind the context: forwarding anything would fail with NoBrokers.
        let ctx = ctx(ALLOW_ALL);
        let req = request(
            -1,
            &[
                ("orders", 0, b"small"),
                ("other", 3, b"x"),
                ("orders", 0, &[7; 4096]),
            ],
        );
        let Ok(Reply::Now(kind)) = produce(&ctx, 7, req).await else {
            panic!("expected an answer at once");
        };
        let ResponseKind::Produce(resp) = *kind else {
            panic!("expected a produce answer");
        };
        let codes: Vec<(String, i32, i16)> = resp
            .responses
            .iter()
            .flat_map(|t| {
                t.partition_responses
                    .iter()
                    .map(move |p| (t.name.0.to_string(), p.index, p.error_code))
            })
            .collect();
        assert_eq!(
            codes,
            [
                ("orders".to_owned(), 0, INVALID_REQUEST),
                ("other".to_owned(), 3, INVALID_REQUEST),
                ("orders".to_owned(), 0, INVALID_REQUEST)
            ]
        );
        assert!(matches!(
            produce(&ctx, 7, request(0, &[("a", 1, b"x"), ("a", 1, b"y")])).await,
            Ok(Reply::Close(why)) if why.contains("twice")
        ));

        // The same topic twice with different partitions is fine: forwarded (and here, with
        // no pool, failing to find a broker rather than refused).
        let distinct = request(-1, &[("orders", 0, b"a"), ("orders", 1, b"b")]);
        assert!(!names_a_partition_twice(&distinct));
    }

    /// An idempotent producer's batch for partition 0 of `topic`.
    fn idempotent(topic: &TopicName, base_sequence: i32, value: &[u8]) -> ProduceRequest {
        let mut records = batch(&[Bytes::copy_from_slice(value)]).to_vec();
        // producer id 7, epoch 0, the given base sequence (batch header offsets 43, 51, 53);
        // the CRC is not checked on the way through.
        records[43..51].copy_from_slice(&7i64.to_be_bytes());
        records[51..53].copy_from_slice(&0i16.to_be_bytes());
        records[53..57].copy_from_slice(&base_sequence.to_be_bytes());
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic.clone())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(records)))])])
    }

    async fn answered(ctx: &Ctx, req: ProduceRequest) -> i16 {
        let Ok(Reply::Later(answer)) = produce(ctx, 7, req).await else {
            panic!("expected the request forwarded");
        };
        let Ok(crate::api::Answer::Message(ResponseKind::Produce(resp))) = answer.await else {
            panic!("expected a produce answer");
        };
        resp.responses[0].partition_responses[0].error_code
    }

    #[tokio::test]
    async fn a_batch_the_pool_acknowledges_again_is_metered_once() {
        let logical = TopicName(StrBytes::from_static_str("orders"));
        let probe = ctx(ALLOW_ALL);
        let physical = probe.topic_out(&logical).unwrap();
        let fake =
            FakeBroker::acking_produces(vec![(uuid::Uuid::new_v4(), physical.0.to_string())]).await;
        let pool = Pool::new(Timeouts::default());
        pool.add_broker(&fake.addr).await.unwrap();
        let ctx = ctx_on(ALLOW_ALL, pool);
        let metered = |ctx: &Ctx| -> u64 {
            ctx.gw
                .metering()
                .counter_set()
                .drain()
                .iter()
                .map(|d| d.bytes_in)
                .sum()
        };
        let first = idempotent(&logical, 0, b"first");
        let size = first.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .unwrap()
            .len() as u64;
        assert_eq!(answered(&ctx, first.clone()).await, 0);
        assert_eq!(metered(&ctx), size);
        // The producer did not get the answer and sends the batch again; the pool says it has
        // it (success): not metered again.
        assert_eq!(answered(&ctx, first).await, 0);
        assert_eq!(metered(&ctx), 0, "a repeat is not metered");
        // The next batch is.
        let next = idempotent(&logical, 1, b"second");
        assert_eq!(answered(&ctx, next).await, 0);
        assert_eq!(metered(&ctx), size + 1);
    }
}
