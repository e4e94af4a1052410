//! Fetch, ListOffsets and OffsetForLeaderEpoch: reading partitions.
//!
//! A fetch whose partitions are all on one broker (with lanes, nearly every fetch) is sent whole
//! and its answer relayed to the client as it arrives ([`super::relay`]); a fetch over several
//! brokers is split, its parts long-polled together, and their answers merged ([`merged`]).
//! Both rewrite the answer the same way.
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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::relay::{Relay, Relayed};
use super::split::{
    dispatch, failure_code, forward_gathered, leader_moved, sheet, split, Outcome, Sent, Sheet,
    ANSWER_MARGIN,
};
use super::{topics_of_ids, Answer, Ctx, Reply};
use crate::identity::authz::Action;
use crate::pool::{Broker, PendingReply, UpstreamError};

/// A consumer's replica id in requests that also serve followers.
const CONSUMER: i32 = -1;

pub async fn fetch(ctx: &Ctx, version: i16, mut req: FetchRequest) -> Result<Reply, UpstreamError> {
    req.replica_id = BrokerId(CONSUMER);
    req.replica_state = Default::default();
    req.cluster_id = None;
    req.session_id = 0;
    req.session_epoch = -1;
    req.forgotten_topics_data.clear();
    // A long poll holds a pool connection of its own for as long as it waits: capped, so one
    // tenant's parked fetches cannot hold the pool's connections (see `Limits::max_fetch_wait`).
    let cap = ctx.gw.config().limits.max_fetch_wait.as_millis();
    req.max_wait_ms = req
        .max_wait_ms
        .clamp(0, i32::try_from(cap).unwrap_or(i32::MAX));

    // From v13 topics are named by id only: resolve each to the tenant's name first, so
    // authorization and refusals work on names as in older versions.
    let by_id = version >= 13;
    let mut id_codes = Vec::with_capacity(req.topics.len());
    if by_id {
        let ids = topics_of_ids(ctx, req.topics.iter().map(|t| t.topic_id)).await?;
        for t in &mut req.topics {
            match ids.get(ctx, t.topic_id) {
                Ok(name) => {
                    t.topic = name;
                    id_codes.push(None);
                }
                Err(code) => id_codes.push(Some(code)),
            }
        }
    }
    let mut id_codes = id_codes.into_iter();
    // (physical name, id) of every topic sent on.
    let mut forwarded: Vec<(String, Uuid)> = Vec::new();
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
                forwarded.push((t.topic.0.to_string(), t.topic_id));
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
                                .map(|p| no_data(p.partition, code))
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
    let router = ctx.gw.router();
    let mut parts = split(router, std::mem::take(&mut req.topics)).await;
    let mut template = req;
    let max_wait = Duration::from_millis(template.max_wait_ms.max(0) as u64);
    // All of it on one broker, as lanes make the rule: the answer is relayed as it arrives.
    if refused.is_empty() && parts.parts.len() == 1 && parts.unroutable.is_empty() {
        let (broker, topics) = parts.parts.pop().expect("one part");
        let sheet = sheet(&topics);
        template.topics = topics;
        match broker
            .dispatch_streamed(ctx.client, ApiKey::Fetch, version, &template)
            .await
        {
            Ok(pending) => {
                let pending = pending.with_timeout(max_wait + ANSWER_MARGIN);
                return Ok(relayed(ctx, version, broker, pending, sheet, forwarded));
            }
            // Nothing came back, so nothing moved: routed afresh below, as a split fetch.
            Err(e) => {
                router.broker_failed(&broker, &e);
                parts = split(router, std::mem::take(&mut template.topics)).await;
            }
        }
    }
    // The response size limit is the client's to enforce: each part gets its share, so the
    // merged answer never exceeds what the client can receive.
    let shares = (parts.parts.len() as i32).max(1);
    let part_max_bytes = (template.max_bytes / shares).max(1);
    let min_bytes = template.min_bytes.max(0) as u64;
    // Each part waits for its share of min_bytes, not all of it: the parts together answer
    // once they hold min_bytes (see `long_poll`), and a part holding its share answers early
    // instead of sitting out max_wait_ms for bytes the other parts have.
    let part_min_bytes = (template.min_bytes.max(0) as u64).div_ceil(shares as u64) as i32;
    let sent = dispatch::<_, _, FetchResponse>(
        ctx,
        parts,
        ApiKey::Fetch,
        version,
        max_wait,
        true,
        |topics| {
            let mut r = template.clone();
            r.topics = topics;
            r.max_bytes = part_max_bytes;
            r.min_bytes = part_min_bytes;
            r
        },
        |r: FetchRequest| r.topics,
    )
    .await;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let outcomes = long_poll(&ctx, sent, min_bytes).await;
        let resp = merged(&ctx, outcomes, &forwarded, refused, by_id);
        Ok(ResponseKind::Fetch(resp))
    }))
}

/// The answer of a fetch sent whole to one broker, passed on as it arrives ([`Relay`]); if
/// the broker fails before answering, its partitions get retriable errors.
fn relayed(
    ctx: &Ctx,
    version: i16,
    broker: Arc<Broker>,
    pending: PendingReply,
    sheet: Vec<Sheet>,
    forwarded: Vec<(String, Uuid)>,
) -> Reply {
    let ctx = ctx.clone();
    Reply::answer(async move {
        let error = match pending.stream().await {
            Ok(body) => {
                let gw = ctx.gw.clone();
                let counters = ctx.session.counters.clone();
                return Ok(Answer::Relay(Relay {
                    version,
                    body,
                    addr: broker.addr().to_owned(),
                    prefix: ctx.session.namespace.prefix().to_owned(),
                    forwarded,
                    done: Box::new(move |relayed: Relayed| {
                        for topic in &relayed.moved {
                            gw.router().leaders_moved(topic);
                        }
                        gw.signals().bytes_out(relayed.delivered);
                        if let Some(counters) = counters {
                            counters.add_out(relayed.delivered);
                        }
                    }),
                    throttle_time_ms: 0,
                    per_partition: false,
                    metrics: ctx.session.metrics.clone(),
                }));
            }
            Err(error) => error,
        };
        ctx.gw.router().broker_failed(&broker, &error);
        let failed = Polled::Done(Outcome::Failed { sheet, error });
        let resp = merged(&ctx, vec![failed], &forwarded, Vec::new(), version >= 13);
        Ok(Answer::Message(ResponseKind::Fetch(resp)))
    })
}

/// The one answer the client gets for the parts of a fetch, rewritten for the tenant.
fn merged(
    ctx: &Ctx,
    outcomes: Vec<Polled>,
    forwarded: &[(String, Uuid)],
    refused: Vec<FetchableTopicResponse>,
    by_id: bool,
) -> FetchResponse {
    let router = ctx.gw.router();
    let mut resp = FetchResponse::default();
    for outcome in outcomes {
        match outcome {
            Polled::Done(Outcome::Answered(answer)) => {
                resp.throttle_time_ms = resp.throttle_time_ms.max(answer.throttle_time_ms);
                if answer.error_code != 0 {
                    resp.error_code = answer.error_code;
                }
                for t in answer.responses {
                    if t.partitions.iter().any(|p| leader_moved(p.error_code)) {
                        if let Some(name) = physical_name(forwarded, &t) {
                            router.leaders_moved(name);
                        }
                    }
                    merge_topic(&mut resp.responses, t);
                }
            }
            Polled::Done(Outcome::Failed { sheet, error }) => {
                let code = failure_code(&error, false);
                merge_sheet(&mut resp.responses, sheet, code);
            }
            // Still waiting on its broker when the others had enough: answered as "no
            // data yet", as a broker answers partitions with nothing new.
            Polled::Pending(sheet) => merge_sheet(&mut resp.responses, sheet, 0),
        }
    }
    let mut delivered = 0;
    for t in &resp.responses {
        let topic_bytes: u64 = t
            .partitions
            .iter()
            .filter_map(|p| p.records.as_deref())
            .map(crate::records::complete_batch_bytes)
            .sum();
        delivered += topic_bytes;
        let counters = ctx
            .session
            .metrics
            .as_ref()
            .and_then(|m| physical_name(forwarded, t).map(|name| m.topic(name)));
        if let Some(counters) = counters {
            counters.consumed(topic_bytes);
            for p in t.partitions.iter().filter(|p| p.error_code == 0) {
                counters.high_watermark(p.partition_index, p.high_watermark);
            }
        }
    }
    ctx.gw.signals().bytes_out(delivered);
    if let Some(counters) = &ctx.session.counters {
        counters.add_out(delivered);
    }
    resp.session_id = 0;
    resp.node_endpoints.clear();
    // Tags we do not know may carry pool addresses (tansu sends node endpoints in tags
    // older versions do not define): what we do not understand does not reach tenants.
    resp.unknown_tagged_fields.clear();
    resp.responses.retain_mut(|t| {
        if by_id {
            forwarded.iter().any(|(_, id)| *id == t.topic_id)
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
    resp
}

/// A part of a fetch, answered or still waiting on its broker.
enum Polled {
    Done(Outcome<FetchResponse>),
    Pending(Vec<Sheet>),
}

/// Waits for a split fetch the way one broker would wait for an unsplit one: until the parts
/// together hold `min_bytes` of records, or one has an error to report, or all have answered
/// (each after at most the client's max_wait_ms, which every part carries).
///
/// Brokers that have data answer at once, and at about the same time, so once there is
/// enough the others get a short while to settle (as long again as the first answer took, at
/// least [`SETTLE_MIN`], at most [`SETTLE_MAX`]): otherwise the fastest broker's answer would
/// go back alone and the data the others were already sending would be dropped. Parts still
/// waiting after that are answered as holding nothing new; their late answers are dropped,
/// which loses nothing, since a fetch moves no offsets.
async fn long_poll(ctx: &Ctx, sent: Vec<Sent<FetchResponse>>, min_bytes: u64) -> Vec<Polled> {
    if sent.len() == 1 {
        let part = sent.into_iter().next().expect("one part");
        return vec![Polled::Done(part.outcome(ctx.gw.router()).await)];
    }
    let started = tokio::time::Instant::now();
    let mut polled: Vec<Polled> = sent
        .iter()
        .map(|s| Polled::Pending(s.sheet.clone()))
        .collect();
    let mut waiting = tokio::task::JoinSet::new();
    for (i, part) in sent.into_iter().enumerate() {
        let gw = ctx.gw.clone();
        waiting.spawn(async move { (i, part.outcome(gw.router()).await) });
    }
    let mut bytes = 0u64;
    let mut settle_until: Option<tokio::time::Instant> = None;
    loop {
        let joined = match settle_until {
            None => waiting.join_next().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, waiting.join_next()).await {
                Ok(joined) => joined,
                Err(_) => break,
            },
        };
        let Some(joined) = joined else { break };
        let Ok((i, outcome)) = joined else { continue };
        let enough = match &outcome {
            Outcome::Failed { .. } => true,
            Outcome::Answered(r) => {
                let partitions = || r.responses.iter().flat_map(|t| &t.partitions);
                bytes += partitions()
                    .filter_map(|p| p.records.as_ref())
                    .map(|r| r.len() as u64)
                    .sum::<u64>();
                r.error_code != 0
                    || partitions().any(|p| p.error_code != 0)
                    || (bytes > 0 && bytes >= min_bytes)
            }
        };
        polled[i] = Polled::Done(outcome);
        if enough && settle_until.is_none() {
            let now = tokio::time::Instant::now();
            settle_until = Some(now + (now - started).clamp(SETTLE_MIN, SETTLE_MAX));
        }
    }
    waiting.abort_all();
    polled
}

/// Bounds of the time a split fetch waits for the rest of its parts once it has enough.
const SETTLE_MIN: Duration = Duration::from_millis(1);
const SETTLE_MAX: Duration = Duration::from_millis(20);

/// The physical name of a fetch answer's topic: named in versions before 13, by id after.
fn physical_name<'a>(
    forwarded: &'a [(String, Uuid)],
    t: &'a FetchableTopicResponse,
) -> Option<&'a str> {
    if t.topic_id.is_nil() {
        Some(t.topic.0.as_str())
    } else {
        forwarded
            .iter()
            .find(|(_, id)| *id == t.topic_id)
            .map(|(n, _)| n.as_str())
    }
}

/// Adds a topic's answer, folding it into an entry for the same topic from another part.
fn merge_topic(into: &mut Vec<FetchableTopicResponse>, t: FetchableTopicResponse) {
    match into
        .iter_mut()
        .find(|e| e.topic == t.topic && e.topic_id == t.topic_id)
    {
        Some(e) => e.partitions.extend(t.partitions),
        None => into.push(t),
    }
}

/// Answers every partition of `sheet` with `code` and no records.
fn merge_sheet(into: &mut Vec<FetchableTopicResponse>, sheet: Vec<Sheet>, code: i16) {
    for s in sheet {
        merge_topic(
            into,
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(s.topic)))
                .with_topic_id(s.topic_id)
                .with_partitions(s.partitions.into_iter().map(|i| no_data(i, code)).collect()),
        );
    }
}

/// A partition answer without records. Offsets are -1, "unknown", which clients skip rather
/// than take as the partition's end.
fn no_data(partition: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()))
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
    let topics = std::mem::take(&mut req.topics);
    let template = req;
    Ok(forward_gathered(
        ctx,
        topics,
        ApiKey::ListOffsets,
        version,
        false,
        |topics| {
            let mut r = template.clone();
            r.topics = topics;
            r
        },
        |r: ListOffsetsRequest| r.topics,
        move |ctx, mut resp: ListOffsetsResponse| {
            resp.topics.retain_mut(|t| ctx.topic_back(&mut t.name));
            resp.topics.extend(refused);
            ResponseKind::ListOffsets(resp)
        },
    )
    .await)
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
    let topics = std::mem::take(&mut req.topics);
    let template = req;
    Ok(forward_gathered(
        ctx,
        topics,
        ApiKey::OffsetForLeaderEpoch,
        version,
        false,
        |topics| {
            let mut r = template.clone();
            r.topics = topics;
            r
        },
        |r: OffsetForLeaderEpochRequest| r.topics,
        move |ctx, mut resp: OffsetForLeaderEpochResponse| {
            resp.topics.retain_mut(|t| ctx.topic_back(&mut t.topic));
            resp.topics.extend(refused);
            ResponseKind::OffsetForLeaderEpoch(resp)
        },
    )
    .await)
}
