//! One request about many partitions, served by several pool brokers.
//!
//! [`split`] groups a request's partitions by the broker the router picks for each (the leader
//! on a leader-based pool, the rendezvous winner on a stateless one); [`dispatch`] sends one
//! request per broker, in order, and [`Sent::outcome`] waits for each answer. The API handlers
//! merge the answers into the one response the client expects, and turn a part that failed
//! into per-partition retriable error codes ([`failure_code`]), so a broker that goes away
//! costs clients a retry, never their connection.
//!
//! When every partition lands on one broker (one-broker pools, single-partition requests,
//! which is what most producers send) the request goes through untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::pool::{Broker, Caller, Router, UpstreamError};

/// A topic entry of a request: its (physical) name, id and partitions.
pub trait Partitioned: Clone {
    type Partition;
    fn topic(&self) -> &str;
    fn topic_id(&self) -> Uuid {
        Uuid::nil()
    }
    fn partitions(&self) -> &Vec<Self::Partition>;
    fn partitions_mut(&mut self) -> &mut Vec<Self::Partition>;
    fn index(p: &Self::Partition) -> i32;
}

/// Which partitions of which topic a part carried, to answer for them if it fails.
#[derive(Debug, Clone)]
pub struct Sheet {
    /// Physical topic name.
    pub topic: String,
    pub topic_id: Uuid,
    pub partitions: Vec<i32>,
}

pub fn sheet<T: Partitioned>(topics: &[T]) -> Vec<Sheet> {
    topics
        .iter()
        .map(|t| Sheet {
            topic: t.topic().to_owned(),
            topic_id: t.topic_id(),
            partitions: t.partitions().iter().map(T::index).collect(),
        })
        .collect()
}

/// A request's topics grouped by broker.
pub struct Split<T> {
    pub parts: Vec<(Arc<Broker>, Vec<T>)>,
    /// Partitions no broker can take now (no live broker, leader unreachable).
    pub unroutable: Vec<(T, UpstreamError)>,
}

/// Groups `topics` (with physical names) by the broker serving each partition, keeping the
/// request's order within each group.
pub async fn split<T: Partitioned>(router: &Router, topics: Vec<T>) -> Split<T> {
    let routes = router.route(&keys(&topics)).await;
    split_routed(topics, routes)
}

/// Each partition of `topics` as (physical topic, partition), in the request's order: what
/// [`Router::route`] takes.
pub fn keys<T: Partitioned>(topics: &[T]) -> Vec<(&str, i32)> {
    topics
        .iter()
        .flat_map(|t| t.partitions().iter().map(move |p| (t.topic(), T::index(p))))
        .collect()
}

/// [`split`] with the routes already chosen, one per partition in the order of [`keys`].
pub fn split_routed<T: Partitioned>(
    topics: Vec<T>,
    routes: Vec<Result<Arc<Broker>, UpstreamError>>,
) -> Split<T> {
    if let Some(Ok(first)) = routes.first() {
        if routes
            .iter()
            .all(|r| matches!(r, Ok(b) if b.addr() == first.addr()))
        {
            let broker = first.clone();
            return Split {
                parts: vec![(broker, topics)],
                unroutable: Vec::new(),
            };
        }
    }
    let mut parts: Vec<(Arc<Broker>, Vec<T>)> = Vec::new();
    let mut unroutable = Vec::new();
    let mut routes = routes.into_iter();
    for mut topic in topics {
        let partitions = std::mem::take(topic.partitions_mut());
        // Where this topic's entry sits in each part it has partitions in: (part, entry).
        let mut placed: Vec<(usize, usize)> = Vec::new();
        for p in partitions {
            let Some(route) = routes.next() else { break };
            match route {
                Ok(broker) => {
                    let part = match parts.iter().position(|(b, _)| b.addr() == broker.addr()) {
                        Some(i) => i,
                        None => {
                            parts.push((broker, Vec::new()));
                            parts.len() - 1
                        }
                    };
                    let entry = match placed.iter().find(|(pi, _)| *pi == part) {
                        Some((_, e)) => *e,
                        None => {
                            parts[part].1.push(topic.clone());
                            let e = parts[part].1.len() - 1;
                            placed.push((part, e));
                            e
                        }
                    };
                    parts[part].1[entry].partitions_mut().push(p);
                }
                Err(e) => {
                    let mut alone = topic.clone();
                    alone.partitions_mut().push(p);
                    unroutable.push((alone, e));
                }
            }
        }
    }
    Split { parts, unroutable }
}

type Answer<R> = Pin<Box<dyn Future<Output = Result<R, UpstreamError>> + Send>>;

/// One part on its way.
pub struct Sent<R> {
    pub broker: Option<Arc<Broker>>,
    pub sheet: Vec<Sheet>,
    answer: Result<Answer<R>, UpstreamError>,
}

/// What became of one part.
pub enum Outcome<R> {
    Answered(R),
    Failed {
        sheet: Vec<Sheet>,
        error: UpstreamError,
    },
}

impl<R> Sent<R> {
    /// Waits for the answer. A broker that could not be reached or stopped answering is
    /// reported to the router, which stops routing to it until it answers again.
    pub async fn outcome(self, router: &Router) -> Outcome<R> {
        let result = match self.answer {
            Ok(answer) => answer.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => Outcome::Answered(r),
            Err(error) => {
                if let Some(b) = &self.broker {
                    router.broker_failed(b, &error);
                }
                tracing::debug!(%error, "a part of a split request failed");
                Outcome::Failed {
                    sheet: self.sheet,
                    error,
                }
            }
        }
    }
}

/// How long to wait for a part's answer beyond what the request itself asks the broker to
/// wait (a produce's timeout_ms, a fetch's max_wait_ms).
pub const ANSWER_MARGIN: Duration = Duration::from_secs(10);

/// Sends each part to its broker, in order. With `reroute`, a part whose broker cannot be
/// reached is routed once more: nothing was sent, so a second try cannot duplicate anything,
/// and on a stateless pool it reaches another broker (produces behind an unanswered earlier
/// produce pass `false`: see [`super::produce::order`]). `build` makes the request for a
/// part's topics, and `unbuild` takes them back out of a request that was never sent. Produces
/// travel on the produce connection `ctx`'s client keeps to.
#[allow(clippy::too_many_arguments)]
pub async fn dispatch<T, Req, Resp>(
    ctx: &super::Ctx,
    parts: Split<T>,
    api: ApiKey,
    version: i16,
    wait: Duration,
    reroute: bool,
    build: impl Fn(Vec<T>) -> Req,
    unbuild: impl Fn(Req) -> Vec<T>,
) -> Vec<Sent<Resp>>
where
    T: Partitioned,
    Req: Encodable + 'static,
    Resp: Decodable + Send + 'static,
{
    let router = ctx.gw.router();
    let mut sent = Vec::with_capacity(parts.parts.len() + parts.unroutable.len());
    let mut again = Vec::new();
    for (broker, topics) in parts.parts {
        let sheet = sheet(&topics);
        let req = build(topics);
        match send::<Req, Resp>(&broker, ctx.client, api, version, wait, &req).await {
            Err(e) if reroute && e.nothing_sent() => {
                router.broker_failed(&broker, &e);
                again.extend(unbuild(req));
            }
            answer => sent.push(Sent {
                broker: Some(broker),
                sheet,
                answer,
            }),
        }
    }
    let mut unroutable = parts.unroutable;
    if !again.is_empty() {
        let second = split(router, again).await;
        for (broker, topics) in second.parts {
            let sheet = sheet(&topics);
            let req = build(topics);
            let answer = send::<Req, Resp>(&broker, ctx.client, api, version, wait, &req).await;
            sent.push(Sent {
                broker: Some(broker),
                sheet,
                answer,
            });
        }
        unroutable.extend(second.unroutable);
    }
    for (topic, error) in unroutable {
        sent.push(Sent {
            broker: None,
            sheet: sheet(std::slice::from_ref(&topic)),
            answer: Err(error),
        });
    }
    sent
}

async fn send<Req, Resp>(
    broker: &Broker,
    client: Caller,
    api: ApiKey,
    version: i16,
    wait: Duration,
    req: &Req,
) -> Result<Answer<Resp>, UpstreamError>
where
    Req: Encodable + 'static,
    Resp: Decodable + Send + 'static,
{
    let pending = broker
        .dispatch_for(client, api, version, req, true)
        .await?
        .expect("a reply was asked for")
        .with_timeout(wait + ANSWER_MARGIN);
    Ok(Box::pin(pending.decode::<Resp>(version)))
}

/// The error code clients get for the partitions of a part that failed: retriable in every
/// case a broker can cause. NOT_LEADER_OR_FOLLOWER when the request never reached a broker
/// (the client refreshes metadata and retries); REQUEST_TIMED_OUT when it may have been
/// written (`possibly_written`), which idempotent producers retry under the same sequence
/// numbers, so the pool drops the duplicate.
pub fn failure_code(error: &UpstreamError, possibly_written: bool) -> i16 {
    match error {
        // The pool answered something we cannot read, or we could not write the request:
        // nothing a retry is known to fix.
        UpstreamError::Encode(_) | UpstreamError::Decode { .. } => {
            ResponseError::UnknownServerError.code()
        }
        e if possibly_written && !e.nothing_sent() => ResponseError::RequestTimedOut.code(),
        _ => ResponseError::NotLeaderOrFollower.code(),
    }
}

/// Error codes in a partition answer that mean the router's idea of the partition's broker
/// is out of date.
pub fn leader_moved(code: i16) -> bool {
    const MOVED: [ResponseError; 6] = [
        ResponseError::NotLeaderOrFollower,
        ResponseError::LeaderNotAvailable,
        ResponseError::FencedLeaderEpoch,
        ResponseError::UnknownLeaderEpoch,
        ResponseError::UnknownTopicOrPartition,
        ResponseError::KafkaStorageError,
    ];
    MOVED.iter().any(|e| e.code() == code)
}

/// `Partitioned` for a request's topic type: its name field, id field (or none), partitions
/// field and the partition's index field.
macro_rules! partitioned {
    ($topic:ty, $name:ident, $id:ident, $parts:ident, $part:ty, $index:ident) => {
        partitioned!(@impl $topic, $name, $parts, $part, $index,
            fn topic_id(&self) -> Uuid { self.$id });
    };
    ($topic:ty, $name:ident, $parts:ident, $part:ty, $index:ident) => {
        partitioned!(@impl $topic, $name, $parts, $part, $index,);
    };
    (@impl $topic:ty, $name:ident, $parts:ident, $part:ty, $index:ident, $($id_fn:item)?) => {
        impl Partitioned for $topic {
            type Partition = $part;
            fn topic(&self) -> &str {
                self.$name.0.as_str()
            }
            $($id_fn)?
            fn partitions(&self) -> &Vec<$part> {
                &self.$parts
            }
            fn partitions_mut(&mut self) -> &mut Vec<$part> {
                &mut self.$parts
            }
            fn index(p: &$part) -> i32 {
                p.$index
            }
        }
    };
}

use kafka_protocol::messages::{
    delete_records_request, fetch_request, list_offsets_request, offset_for_leader_epoch_request,
    produce_request,
};

partitioned!(
    produce_request::TopicProduceData,
    name,
    topic_id,
    partition_data,
    produce_request::PartitionProduceData,
    index
);
partitioned!(
    fetch_request::FetchTopic,
    topic,
    topic_id,
    partitions,
    fetch_request::FetchPartition,
    partition
);
partitioned!(
    list_offsets_request::ListOffsetsTopic,
    name,
    partitions,
    list_offsets_request::ListOffsetsPartition,
    partition_index
);
partitioned!(
    offset_for_leader_epoch_request::OffsetForLeaderTopic,
    topic,
    partitions,
    offset_for_leader_epoch_request::OffsetForLeaderPartition,
    partition
);
partitioned!(
    delete_records_request::DeleteRecordsTopic,
    name,
    partitions,
    delete_records_request::DeleteRecordsPartition,
    partition_index
);

/// A response made of topics with partition answers, for the APIs whose parts are merged
/// by simply gathering them (ListOffsets, OffsetForLeaderEpoch, DeleteRecords).
pub trait Gathered: Default {
    type Topic;
    fn throttle_time_ms(&mut self) -> &mut i32;
    fn topics(&mut self) -> &mut Vec<Self::Topic>;
    fn name(t: &Self::Topic) -> &str;
    fn codes(t: &Self::Topic) -> Vec<i16>;
    fn merge(into: &mut Self::Topic, from: Self::Topic);
    /// An answer for `partitions` of a physical topic, each with `code`.
    fn failed(topic: String, partitions: Vec<i32>, code: i16) -> Self::Topic;
}

/// Waits for every part and merges the answers into one response, in the order the parts were
/// sent; failed parts become `failure_code` answers for their partitions.
pub async fn gather<R: Gathered>(router: &Router, sent: Vec<Sent<R>>, possibly_written: bool) -> R {
    let mut merged = R::default();
    for part in sent {
        match part.outcome(router).await {
            Outcome::Answered(mut answer) => {
                let throttle = *answer.throttle_time_ms();
                let t = merged.throttle_time_ms();
                *t = (*t).max(throttle);
                for topic in std::mem::take(answer.topics()) {
                    if R::codes(&topic).into_iter().any(leader_moved) {
                        router.leaders_moved(R::name(&topic));
                    }
                    add(&mut merged, topic);
                }
            }
            Outcome::Failed { sheet, error } => {
                let code = failure_code(&error, possibly_written);
                for s in sheet {
                    router.leaders_moved(&s.topic);
                    add(&mut merged, R::failed(s.topic, s.partitions, code));
                }
            }
        }
    }
    merged
}

fn add<R: Gathered>(merged: &mut R, topic: R::Topic) {
    let topics = merged.topics();
    match topics.iter_mut().find(|t| R::name(t) == R::name(&topic)) {
        Some(t) => R::merge(t, topic),
        None => topics.push(topic),
    }
}

/// `Gathered` for a response type: its topic type, the topic's name and partitions fields,
/// and how to make a failed partition answer from (index, code).
macro_rules! gathered {
    ($resp:ty, $topic:ty, $name:ident, $parts:ident, $code:ident, |$i:ident, $c:ident| $failed:expr) => {
        impl Gathered for $resp {
            type Topic = $topic;
            fn throttle_time_ms(&mut self) -> &mut i32 {
                &mut self.throttle_time_ms
            }
            fn topics(&mut self) -> &mut Vec<$topic> {
                &mut self.topics
            }
            fn name(t: &$topic) -> &str {
                t.$name.0.as_str()
            }
            fn codes(t: &$topic) -> Vec<i16> {
                t.$parts.iter().map(|p| p.$code).collect()
            }
            fn merge(into: &mut $topic, from: $topic) {
                into.$parts.extend(from.$parts);
            }
            fn failed(topic: String, partitions: Vec<i32>, code: i16) -> $topic {
                let mut t = <$topic>::default();
                t.$name = kafka_protocol::messages::TopicName(
                    kafka_protocol::protocol::StrBytes::from_string(topic),
                );
                t.$parts = partitions
                    .into_iter()
                    .map(|$i| {
                        let $c = code;
                        $failed
                    })
                    .collect();
                t
            }
        }
    };
}

use kafka_protocol::messages::{
    delete_records_response, list_offsets_response, offset_for_leader_epoch_response,
    DeleteRecordsResponse, ListOffsetsResponse, OffsetForLeaderEpochResponse,
};

gathered!(
    ListOffsetsResponse,
    list_offsets_response::ListOffsetsTopicResponse,
    name,
    partitions,
    error_code,
    |i, code| list_offsets_response::ListOffsetsPartitionResponse::default()
        .with_partition_index(i)
        .with_error_code(code)
        .with_timestamp(-1)
        .with_offset(-1)
);
gathered!(
    OffsetForLeaderEpochResponse,
    offset_for_leader_epoch_response::OffsetForLeaderTopicResult,
    topic,
    partitions,
    error_code,
    |i, code| offset_for_leader_epoch_response::EpochEndOffset::default()
        .with_partition(i)
        .with_error_code(code)
        .with_leader_epoch(-1)
        .with_end_offset(-1)
);
gathered!(
    DeleteRecordsResponse,
    delete_records_response::DeleteRecordsTopicResult,
    name,
    partitions,
    error_code,
    |i, code| delete_records_response::DeleteRecordsPartitionResult::default()
        .with_partition_index(i)
        .with_error_code(code)
        .with_low_watermark(-1)
);

/// Splits `topics` over their brokers, sends the parts now, and returns the reply that gathers
/// the answers; `finish` turns the merged answer into what the tenant sees.
#[allow(clippy::too_many_arguments)]
pub async fn forward_gathered<T, Req, Resp>(
    ctx: &super::Ctx,
    topics: Vec<T>,
    api: ApiKey,
    version: i16,
    possibly_written: bool,
    build: impl Fn(Vec<T>) -> Req,
    unbuild: impl Fn(Req) -> Vec<T>,
    finish: impl FnOnce(&super::Ctx, Resp) -> kafka_protocol::messages::ResponseKind + Send + 'static,
) -> super::Reply
where
    T: Partitioned,
    Req: Encodable + 'static,
    Resp: Gathered + Decodable + Send + 'static,
{
    let router = ctx.gw.router();
    let parts = split(router, topics).await;
    let sent = dispatch(
        ctx,
        parts,
        api,
        version,
        Duration::ZERO,
        true,
        build,
        unbuild,
    )
    .await;
    let ctx = ctx.clone();
    super::Reply::later(async move {
        let merged: Resp = gather(ctx.gw.router(), sent, possibly_written).await;
        Ok(finish(&ctx, merged))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_parts_get_retriable_codes_that_say_whether_a_write_may_have_landed() {
        let refused = UpstreamError::Connect {
            addr: "b:9092".into(),
            reason: "refused".into(),
        };
        let dropped = UpstreamError::Io {
            addr: "b:9092".into(),
            reason: "reset".into(),
        };
        let not_leader = ResponseError::NotLeaderOrFollower.code();
        let timed_out = ResponseError::RequestTimedOut.code();
        // Never sent: the client retries after a metadata refresh, for reads and writes.
        assert_eq!(failure_code(&refused, true), not_leader);
        assert_eq!(failure_code(&refused, false), not_leader);
        assert_eq!(failure_code(&UpstreamError::NoBrokers, true), not_leader);
        // Sent, then lost: a write may have landed, which idempotent producers must know.
        assert_eq!(failure_code(&dropped, true), timed_out);
        assert_eq!(failure_code(&dropped, false), not_leader);
        // Every code a broker can cause is one clients retry.
        for code in [not_leader, timed_out] {
            assert!(ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable()));
        }
    }
}
