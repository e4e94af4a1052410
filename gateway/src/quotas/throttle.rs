//! Rate quotas on the request path: what a request and its answer use of a cluster's quotas,
//! and the throttle written into the answer's `throttle_time_ms`.
//!
//! A request is charged when it arrives, after authentication: one request, and for Produce
//! its record bytes (they are taken from the pool then, whatever the answer). A fetch is
//! charged its answer's bytes once the answer is known, before it is written, so that the
//! answer itself can say how long the client is throttled. Either way the connection is muted
//! ([`Mute`]) for the throttle from the moment it is known.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{FetchResponse, ProduceRequest, ResponseKind};

use super::meter::{millis, ClusterMeter, Kind, Mute, PartitionKey};
use super::Quotas;
use crate::api::Answer;
use crate::pool::UpstreamError;
use crate::pool_admin::BoxFuture;

/// Record bytes of a Produce request.
pub fn produce_bytes(req: &ProduceRequest) -> u64 {
    req.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .map(|p| p.records.as_ref().map_or(0, |r| r.len() as u64))
        .sum()
}

/// Sets an answer's `throttle_time_ms` to `ms` unless the pool already asked for longer.
/// Answers of APIs without the field (ApiVersions v0, SASL) are left as they are.
pub fn set_throttle(body: &mut ResponseKind, ms: i32) {
    macro_rules! field {
        ($($kind:ident),* $(,)?) => {
            match body {
                $(ResponseKind::$kind(r) => r.throttle_time_ms = r.throttle_time_ms.max(ms),)*
                _ => {}
            }
        };
    }
    field!(
        AddOffsetsToTxn,
        AddPartitionsToTxn,
        CreatePartitions,
        CreateTopics,
        DeleteGroups,
        DeleteRecords,
        DeleteTopics,
        DescribeCluster,
        DescribeConfigs,
        DescribeGroups,
        EndTxn,
        Fetch,
        FindCoordinator,
        Heartbeat,
        IncrementalAlterConfigs,
        InitProducerId,
        JoinGroup,
        LeaveGroup,
        ListGroups,
        ListOffsets,
        Metadata,
        OffsetCommit,
        OffsetDelete,
        OffsetFetch,
        OffsetForLeaderEpoch,
        Produce,
        SyncGroup,
        TxnOffsetCommit,
    );
}

/// Bytes a fetch answer delivers: its records (a relayed answer: its whole body, which is
/// records but for a few dozen bytes per partition).
fn answer_bytes(answer: &Answer) -> u64 {
    match answer {
        Answer::Message(ResponseKind::Fetch(resp)) => resp
            .responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records.as_ref().map_or(0, |r| r.len() as u64))
            .sum(),
        Answer::Message(_) => 0,
        Answer::Relay(relay) => relay.body.len() as u64,
    }
}

/// The record bytes a fetch answer delivers from each partition, as the tenant names it.
fn fetched(resp: &FetchResponse) -> impl Iterator<Item = (PartitionKey, u64)> + '_ {
    resp.responses.iter().flat_map(|t| {
        t.partitions.iter().filter_map(move |p| {
            let bytes = p.records.as_ref().map_or(0, |r| r.len() as u64);
            (bytes > 0).then(|| ((t.topic.clone(), t.topic_id, p.partition_index), bytes))
        })
    })
}

/// What an answer still to come needs to be throttled: the throttle of its request, and for a
/// fetch, the cluster's egress meter and quotas to charge its bytes against.
pub struct Pending {
    pub throttle: Duration,
    pub egress: Option<(Arc<ClusterMeter>, Quotas)>,
    pub mute: Arc<Mute>,
}

impl Pending {
    /// Whether the answer needs looking at, or may go out as the pool gave it.
    pub fn needed(&self) -> bool {
        !self.throttle.is_zero() || self.egress.is_some()
    }

    /// The answer, charged and throttled.
    pub fn answer(
        self,
        reply: BoxFuture<'static, Result<Answer, UpstreamError>>,
    ) -> BoxFuture<'static, Result<Answer, UpstreamError>> {
        Box::pin(async move {
            let mut answer = reply.await?;
            let mut throttle = self.throttle;
            if let Some((meter, quotas)) = &self.egress {
                let mut egress = meter.charge(Kind::Egress, answer_bytes(&answer), quotas);
                match &mut answer {
                    Answer::Message(ResponseKind::Fetch(resp)) => {
                        egress = egress.max(meter.charge_fetched(fetched(resp), quotas));
                    }
                    // A relayed answer's partitions are known once it has gone through: their
                    // throttle mutes the connection from then, and the client's next answer
                    // says so (Kafka too tells a throttle in the answer after the one that
                    // earned it when it cannot know it before).
                    Answer::Relay(relay) if quotas.partition_egress_bytes_per_second.is_some() => {
                        relay.per_partition = true;
                        let (meter, quotas) = (meter.clone(), *quotas);
                        let mute = self.mute.clone();
                        let done = std::mem::replace(&mut relay.done, Box::new(|_| {}));
                        relay.done = Box::new(move |relayed| {
                            let parts = relayed.partitions.iter().cloned();
                            mute.extend(meter.charge_fetched(parts, &quotas));
                            done(relayed);
                        });
                    }
                    _ => {}
                }
                self.mute.extend(egress);
                throttle = throttle.max(egress);
            }
            let ms = millis(throttle);
            match &mut answer {
                Answer::Message(body) => set_throttle(body, ms),
                Answer::Relay(relay) => relay.throttle_time_ms = relay.throttle_time_ms.max(ms),
            }
            Ok(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{FetchResponse, MetadataResponse, ProduceResponse};

    use super::*;

    #[test]
    fn produce_bytes_are_the_records() {
        let req = ProduceRequest::default().with_topic_data(vec![
            TopicProduceData::default().with_partition_data(vec![
                PartitionProduceData::default().with_records(Some(vec![0u8; 100].into())),
                PartitionProduceData::default(),
            ]),
            TopicProduceData::default().with_partition_data(vec![
                PartitionProduceData::default().with_records(Some(vec![0u8; 23].into()))
            ]),
        ]);
        assert_eq!(produce_bytes(&req), 123);
    }

    #[test]
    fn the_longer_throttle_wins() {
        let mut body = ResponseKind::Produce(ProduceResponse::default().with_throttle_time_ms(50));
        set_throttle(&mut body, 20);
        let ResponseKind::Produce(r) = &body else {
            unreachable!()
        };
        assert_eq!(r.throttle_time_ms, 50, "the pool's");
        set_throttle(&mut body, 700);
        let ResponseKind::Produce(r) = &body else {
            unreachable!()
        };
        assert_eq!(r.throttle_time_ms, 700);
        let mut body = ResponseKind::Metadata(MetadataResponse::default());
        set_throttle(&mut body, 9);
        let ResponseKind::Metadata(r) = &body else {
            unreachable!()
        };
        assert_eq!(r.throttle_time_ms, 9);
    }

    #[tokio::test]
    async fn a_fetch_over_its_quota_says_so_and_mutes() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        let resp = FetchResponse::default()
            .with_responses(vec![FetchableTopicResponse::default().with_partitions(
                vec![PartitionData::default().with_records(Some(vec![0u8; 3_000].into()))],
            )]);
        let meter = Arc::new(ClusterMeter::default());
        let quotas = Quotas {
            egress_bytes_per_second: Some(1_000),
            ..Quotas::default()
        };
        let mute = Arc::new(Mute::default());
        let pending = Pending {
            throttle: Duration::ZERO,
            egress: Some((meter.clone(), quotas)),
            mute: mute.clone(),
        };
        assert!(pending.needed());
        let reply: BoxFuture<'static, Result<Answer, UpstreamError>> =
            Box::pin(async move { Ok(Answer::Message(ResponseKind::Fetch(resp))) });
        let Answer::Message(ResponseKind::Fetch(resp)) = pending.answer(reply).await.unwrap()
        else {
            unreachable!()
        };
        // 3,000 B at 1,000 B/s with a second's allowance: 2 s, less the instants between.
        assert!(
            (1_990..=2_000).contains(&resp.throttle_time_ms),
            "{}",
            resp.throttle_time_ms
        );
        assert!(mute.until().is_some());
        assert_eq!(meter.usage().throttles.egress, 1);
    }

    #[tokio::test]
    async fn a_partition_over_its_egress_quota_throttles_the_fetch() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::TopicName;
        let part = |index, n: usize| {
            PartitionData::default()
                .with_partition_index(index)
                .with_records(Some(vec![0u8; n].into()))
        };
        let fetch = |sizes: Vec<PartitionData>| {
            ResponseKind::Fetch(FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(TopicName("t".into()))
                    .with_partitions(sizes),
            ]))
        };
        let meter = Arc::new(ClusterMeter::default());
        let quotas = Quotas {
            egress_bytes_per_second: Some(1_000_000),
            partition_egress_bytes_per_second: Some(1_000),
            ..Quotas::default()
        };
        let answer = |body: ResponseKind| {
            let pending = Pending {
                throttle: Duration::ZERO,
                egress: Some((meter.clone(), quotas)),
                mute: Arc::new(Mute::default()),
            };
            let reply: BoxFuture<'static, Result<Answer, UpstreamError>> =
                Box::pin(async move { Ok(Answer::Message(body)) });
            pending.answer(reply)
        };
        let throttle = |a: Answer| match a {
            Answer::Message(ResponseKind::Fetch(r)) => r.throttle_time_ms,
            _ => unreachable!(),
        };
        // Each partition has a second of allowance of its own.
        let a = answer(fetch(vec![part(0, 1_000), part(1, 1_000)])).await;
        assert_eq!(throttle(a.unwrap()), 0);
        // Partition 0 goes 2,000 B over; the cluster is far under its own quota.
        let a = answer(fetch(vec![part(0, 2_000), part(1, 10)])).await;
        let ms = throttle(a.unwrap());
        assert!((1_990..=2_000).contains(&ms), "{ms}");
        let usage = meter.usage();
        assert_eq!(usage.throttles.partition_egress, 1);
        assert_eq!(usage.throttles.egress, 0);
    }
}
