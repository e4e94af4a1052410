//! The pool topic sink (`--audit-topic NAME`): batches of events produced as record batches to
//! partition 0 of a topic on the pool, made if missing. The topic is the operator's: its name
//! is outside every tenant's namespace ([`super::config`] refuses `tg-` names), so no tenant
//! can name, list, read or delete it through the gateway.
//!
//! Each record's value is one event's JSON object, its key the cluster id (none for events of
//! no cluster), its timestamp the event's time. Delivery is at least once: a produce whose
//! answer was lost is sent again.

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;

use super::delivery::{Batch, Line, Sink, SinkName};
use crate::pool::PoolKind;
use crate::state::Gateway;

/// Events per produce: a busy second's worth in one request.
const TOPIC_BATCH_EVENTS: usize = 500;
/// Bytes of JSON per produce: under Kafka's default `message.max.bytes` (1 MiB plus a little)
/// with room for the batch's framing, so no pool refuses a batch for its size.
const TOPIC_BATCH_BYTES: usize = 900 * 1024;
/// One partition: audit events are few, and one partition keeps them in the order they were
/// delivered for whoever reads the topic.
const AUDIT_TOPIC_PARTITIONS: i32 = 1;
/// How long the pool may take to acknowledge a batch on all its replicas.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
const CREATE_TIMEOUT_MS: i32 = 30_000;
/// Produce by topic name (v13 names topics by id); Metadata and CreateTopics versions every
/// pool the gateway supports speaks.
const PRODUCE_VERSION: i16 = 9;
const METADATA_VERSION: i16 = 12;
const CREATE_TOPICS_VERSION: i16 = 5;

pub(super) struct TopicSink {
    gw: Gateway,
    topic: String,
    /// The topic was seen or made on the pool; set again after the pool says it is unknown.
    known: bool,
}

impl TopicSink {
    pub(super) fn new(gw: Gateway, topic: String) -> TopicSink {
        TopicSink {
            gw,
            topic,
            known: false,
        }
    }

    fn name(&self) -> TopicName {
        TopicName(StrBytes::from_string(self.topic.clone()))
    }

    /// Makes the topic unless the pool has it.
    async fn ensure_topic(&self) -> Result<(), String> {
        let router = self.gw.router();
        let pool = router.pool();
        let (_, max) = pool
            .versions(ApiKey::Metadata)
            .ok_or("the pool does not support Metadata (no pool broker reached yet?)")?;
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(self.name()))
            ]))
            .with_allow_auto_topic_creation(false);
        let resp: MetadataResponse = router
            .call_any(max.min(METADATA_VERSION), &req)
            .await
            .map_err(|e| e.to_string())?;
        router.learn_metadata(&resp);
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        match resp.topics.first().map(|t| t.error_code) {
            Some(0) => return Ok(()),
            Some(code) if code != unknown => {
                return Err(format!("the pool's Metadata answered error {code}"))
            }
            _ => {}
        }
        let (_, max) = pool
            .versions(ApiKey::CreateTopics)
            .ok_or("the pool does not support CreateTopics")?;
        let version = max.min(CREATE_TOPICS_VERSION);
        // As for tenants' topics: the broker default on Apache Kafka (KIP-464, v4+), one copy
        // on a stateless pool, whose shared store is the replication.
        let replication_factor = match router.kind() {
            PoolKind::Leader if version >= 4 => -1,
            _ => 1,
        };
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(self.name())
                .with_num_partitions(AUDIT_TOPIC_PARTITIONS)
                .with_replication_factor(replication_factor)])
            .with_timeout_ms(CREATE_TIMEOUT_MS);
        let broker = router.any().map_err(|e| e.to_string())?;
        let resp: CreateTopicsResponse = broker.call(version, &req).await.map_err(|e| {
            router.broker_failed(&broker, &e);
            e.to_string()
        })?;
        let exists = ResponseError::TopicAlreadyExists.code();
        match resp.topics.first() {
            Some(t) if t.error_code == 0 => {
                tracing::info!(topic = %self.topic, "audit topic created on the pool");
                Ok(())
            }
            Some(t) if t.error_code == exists => Ok(()),
            Some(t) => Err(format!(
                "the pool refused to create the audit topic: error {}{}",
                t.error_code,
                t.error_message
                    .as_ref()
                    .map(|m| format!(" ({})", m.as_str()))
                    .unwrap_or_default()
            )),
            None => Err("the pool's CreateTopics answer names no topic".into()),
        }
    }
}

/// The batch as one uncompressed v2 record batch.
pub(super) fn record_batch(batch: &Batch) -> Result<Bytes, String> {
    let records: Vec<Record> = batch
        .lines
        .iter()
        .zip(0..)
        // Offsets from 0: the batch's offset deltas, which the pool adds to the offset it
        // assigns (equal deltas would put every record at one offset). The encoder keeps
        // records in one batch while offset minus sequence stays the same: sequence
        // `offset - 1` gives the batch the base sequence -1 of a producer without an id.
        .map(|(line, offset)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32 - 1,
            timestamp: line.time_ms,
            key: line.cluster.map(|c| Bytes::from(c.to_string())),
            value: Some(line.json()),
            headers: Default::default(),
        })
        .collect();
    let mut out = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut out, &records, &options).map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

impl Sink for TopicSink {
    const NAME: SinkName = SinkName::Topic;

    fn fits(&self, batch: &Batch, line: &Line) -> bool {
        batch.lines.len() < TOPIC_BATCH_EVENTS
            && batch.bytes + line.bytes.len() <= TOPIC_BATCH_BYTES
    }

    async fn deliver(&mut self, batch: &Batch) -> Result<(), String> {
        if !self.known {
            self.ensure_topic().await?;
            self.known = true;
        }
        let router = self.gw.router();
        let (_, max) = router
            .pool()
            .versions(ApiKey::Produce)
            .ok_or("the pool does not support Produce")?;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(self.name())
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(record_batch(batch)?))])]);
        let broker = router
            .route(&[(self.topic.as_str(), 0)])
            .await
            .pop()
            .unwrap_or(Err(crate::pool::UpstreamError::NoBrokers))
            .map_err(|e| e.to_string())?;
        let resp: ProduceResponse =
            broker
                .call(max.min(PRODUCE_VERSION), &req)
                .await
                .map_err(|e| {
                    router.broker_failed(&broker, &e);
                    e.to_string()
                })?;
        let code = resp
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .map(|p| p.error_code);
        match code {
            Some(0) => Ok(()),
            Some(code) => {
                if code == ResponseError::UnknownTopicOrPartition.code() {
                    // Deleted behind our back: made again on the next attempt.
                    self.known = false;
                } else if code == ResponseError::NotLeaderOrFollower.code()
                    || code == ResponseError::LeaderNotAvailable.code()
                {
                    router.leaders_moved(&self.topic);
                }
                Err(format!("the pool refused the audit batch: error {code}"))
            }
            None => Err("the pool's Produce answer names no partition".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::records::RecordBatchDecoder;

    use super::*;
    use crate::pool::testing::{fetch, live_broker, Tansu, FETCH};
    use crate::telemetry::audit::event::{Event, EventType, Record as Event_};

    fn batch_of(events: &[Event_]) -> Batch {
        let mut batch = Batch {
            lines: Vec::new(),
            bytes: 0,
            started: tokio::time::Instant::now(),
        };
        for e in events {
            batch.push(Line::of(e));
        }
        batch
    }

    /// Against a real pool: the first delivery makes the topic, batches land in order.
    #[tokio::test]
    async fn batches_land_in_a_topic_made_on_the_pool() {
        let tansu = Tansu::start().await;
        let (pool, broker) = live_broker(&tansu).await;
        let ctx = crate::api::testing::ctx_on(
            r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#,
            pool,
        );
        let mut sink = TopicSink::new(ctx.gw.clone(), "tollgate-audit".into());
        let events: Vec<Event_> = (0..3)
            .map(|n| {
                Event_::new(
                    Event::new(EventType::AdminChange, "POST /v1/tenants")
                        .with_cluster(ctx.session.cluster.id),
                    "s".into(),
                    n,
                )
            })
            .collect();
        sink.deliver(&batch_of(&events[..2])).await.unwrap();
        sink.deliver(&batch_of(&events[2..])).await.unwrap();
        let resp: FetchResponse = fetch(&broker, "tollgate-audit", 100)
            .await
            .decode(FETCH)
            .await
            .unwrap();
        let partition = &resp.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        let mut records = partition.records.clone().unwrap();
        let ids: Vec<String> = RecordBatchDecoder::decode_all(&mut records)
            .unwrap()
            .into_iter()
            .flat_map(|set| set.records)
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.value.unwrap()).unwrap();
                v["id"].as_str().unwrap().to_owned()
            })
            .collect();
        let sent: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
        assert_eq!(ids, sent);
        // A second sink (a restart) finds the topic there and goes on.
        let mut again = TopicSink::new(ctx.gw.clone(), "tollgate-audit".into());
        again.deliver(&batch_of(&events[..1])).await.unwrap();
    }

    #[test]
    fn a_batch_is_one_record_per_event_keyed_by_cluster() {
        let cluster = uuid::Uuid::new_v4();
        let mut batch = Batch {
            lines: Vec::new(),
            bytes: 0,
            started: tokio::time::Instant::now(),
        };
        let a = Event_::new(
            Event::new(EventType::QuotaBreached, "max_connections").with_cluster(cluster),
            "s".into(),
            1_000,
        );
        let b = Event_::new(
            Event::new(EventType::PoolScaled, "resize"),
            "s".into(),
            2_000,
        );
        batch.push(Line::of(&a));
        batch.push(Line::of(&b));
        let mut encoded = record_batch(&batch).unwrap();
        let decoded = RecordBatchDecoder::decode(&mut encoded).unwrap();
        let records = decoded.records;
        assert_eq!(records.len(), 2);
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 1], "one offset each");
        assert_eq!(records[0].sequence, -1, "no producer id, no sequence");
        assert!(encoded.is_empty(), "one batch");
        assert_eq!(
            records[0].key.as_deref(),
            Some(cluster.to_string().as_bytes())
        );
        assert_eq!(records[1].key, None);
        assert_eq!(records[0].timestamp, 1_000);
        let value: serde_json::Value =
            serde_json::from_slice(records[1].value.as_deref().unwrap()).unwrap();
        assert_eq!(value["id"], b.id.to_string());
        assert!(!records[0].value.as_deref().unwrap().ends_with(b"\n"));
    }
}
