//! InitProducerId and the transaction APIs. Transactional ids are mapped like group ids, and
//! requests about a transaction go to the pool's coordinator for the mapped id.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;

use super::groups::to_coordinator;
use super::{forward, forward_any, Ctx, Reply, CLUSTER_DENIED, NOT_COORDINATOR};
use crate::identity::authz::Action;
use crate::pool::{UpstreamError, GROUP, TRANSACTION};
use crate::telemetry::lag::Commit;

pub async fn init_producer_id(
    ctx: &Ctx,
    version: i16,
    mut req: InitProducerIdRequest,
) -> Result<Reply, UpstreamError> {
    let refuse = |code| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
    };
    let Some(id) = req.transactional_id.take() else {
        if !ctx.session.may_cluster(Action::WriteDataIdempotently) {
            return Ok(Reply::now(ResponseKind::InitProducerId(refuse(
                CLUSTER_DENIED,
            ))));
        }
        let pending =
            forward_any::<_, InitProducerIdResponse>(ctx, ApiKey::InitProducerId, version, &req)
                .await?;
        return Ok(Reply::later(async move {
            Ok(ResponseKind::InitProducerId(pending.await?))
        }));
    };
    let physical = match ctx.admit_txn(&id) {
        Ok(p) => p,
        Err(code) => return Ok(Reply::now(ResponseKind::InitProducerId(refuse(code)))),
    };
    let key = physical.0.to_string();
    req.transactional_id = Some(physical);
    to_coordinator(
        ctx,
        TRANSACTION,
        ApiKey::InitProducerId,
        version,
        &key,
        &req,
        refuse,
        |r: &InitProducerIdResponse| r.error_code,
        ResponseKind::InitProducerId,
    )
    .await
}

pub async fn add_partitions_to_txn(
    ctx: &Ctx,
    version: i16,
    mut req: AddPartitionsToTxnRequest,
) -> Result<Reply, UpstreamError> {
    let refuse_topic = |t: &AddPartitionsToTxnTopic, code: i16| {
        AddPartitionsToTxnTopicResult::default()
            .with_name(t.name.clone())
            .with_results_by_partition(
                t.partitions
                    .iter()
                    .map(|&p| {
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(p)
                            .with_partition_error_code(code)
                    })
                    .collect(),
            )
    };
    match ctx.admit_txn(&req.v3_and_below_transactional_id) {
        Ok(p) => req.v3_and_below_transactional_id = p,
        Err(code) => {
            let resp = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
                req.v3_and_below_topics
                    .iter()
                    .map(|t| refuse_topic(t, code))
                    .collect(),
            );
            return Ok(Reply::now(ResponseKind::AddPartitionsToTxn(resp)));
        }
    }
    // Kafka fails the whole request when any partition is refused: the others are answered
    // OPERATION_NOT_ATTEMPTED.
    let mut verdicts = Vec::new();
    for t in &mut req.v3_and_below_topics {
        verdicts.push(ctx.admit_topic(Action::WriteData, &t.name));
    }
    if verdicts.iter().any(Result::is_err) {
        let not_attempted = kafka_protocol::ResponseError::OperationNotAttempted.code();
        let results = req
            .v3_and_below_topics
            .iter()
            .zip(&verdicts)
            .map(|(t, v)| refuse_topic(t, v.as_ref().err().copied().unwrap_or(not_attempted)))
            .collect();
        let resp =
            AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
        return Ok(Reply::now(ResponseKind::AddPartitionsToTxn(resp)));
    }
    for (t, v) in req.v3_and_below_topics.iter_mut().zip(verdicts) {
        t.name = v.expect("checked above");
    }
    let key = req.v3_and_below_transactional_id.0.to_string();
    let answer = ctx.gw.router().coordinator(TRANSACTION, &key).await?;
    let Some(broker) = answer.broker else {
        let code = answer.error_code;
        let results = req
            .v3_and_below_topics
            .iter()
            .map(|t| {
                let mut r = refuse_topic(t, code);
                ctx.topic_back(&mut r.name);
                r
            })
            .collect();
        let resp =
            AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
        return Ok(Reply::now(ResponseKind::AddPartitionsToTxn(resp)));
    };
    let pending = forward::<_, AddPartitionsToTxnResponse>(
        ctx,
        &broker,
        ApiKey::AddPartitionsToTxn,
        version,
        &req,
    )
    .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        let moved = resp
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| &t.results_by_partition)
            .any(|p| p.partition_error_code == NOT_COORDINATOR);
        if moved {
            ctx.gw.router().coordinator_moved(TRANSACTION, &key);
        }
        resp.results_by_topic_v3_and_below
            .retain_mut(|t| ctx.topic_back(&mut t.name));
        resp.results_by_transaction.clear();
        Ok(ResponseKind::AddPartitionsToTxn(resp))
    }))
}

pub async fn add_offsets_to_txn(
    ctx: &Ctx,
    version: i16,
    mut req: AddOffsetsToTxnRequest,
) -> Result<Reply, UpstreamError> {
    let refuse = |code| AddOffsetsToTxnResponse::default().with_error_code(code);
    let verdict = ctx.admit_txn(&req.transactional_id).and_then(|t| {
        ctx.admit_group(Action::AlterGroup, &req.group_id)
            .map(|g| (t, g))
    });
    match verdict {
        Ok((t, g)) => {
            req.transactional_id = t;
            req.group_id = g;
        }
        Err(code) => return Ok(Reply::now(ResponseKind::AddOffsetsToTxn(refuse(code)))),
    }
    let key = req.transactional_id.0.to_string();
    to_coordinator(
        ctx,
        TRANSACTION,
        ApiKey::AddOffsetsToTxn,
        version,
        &key,
        &req,
        refuse,
        |r: &AddOffsetsToTxnResponse| r.error_code,
        ResponseKind::AddOffsetsToTxn,
    )
    .await
}

pub async fn end_txn(
    ctx: &Ctx,
    version: i16,
    mut req: EndTxnRequest,
) -> Result<Reply, UpstreamError> {
    let refuse = |code| EndTxnResponse::default().with_error_code(code);
    match ctx.admit_txn(&req.transactional_id) {
        Ok(t) => req.transactional_id = t,
        Err(code) => return Ok(Reply::now(ResponseKind::EndTxn(refuse(code)))),
    }
    let key = req.transactional_id.0.to_string();
    to_coordinator(
        ctx,
        TRANSACTION,
        ApiKey::EndTxn,
        version,
        &key,
        &req,
        refuse,
        |r: &EndTxnResponse| r.error_code,
        ResponseKind::EndTxn,
    )
    .await
}

pub async fn txn_offset_commit(
    ctx: &Ctx,
    version: i16,
    mut req: TxnOffsetCommitRequest,
) -> Result<Reply, UpstreamError> {
    let whole = ctx.admit_txn(&req.transactional_id).and_then(|t| {
        ctx.admit_group(Action::AlterGroup, &req.group_id)
            .map(|g| (t, g))
    });
    let whole_code = match whole {
        Ok((t, g)) => {
            req.transactional_id = t;
            req.group_id = g;
            None
        }
        Err(code) => Some(code),
    };
    // A transaction's commit may make a new group, as an OffsetCommit may.
    let whole_code = match whole_code {
        None => (crate::quotas::limits::admit_group(ctx, req.group_id.0.as_str()).await).err(),
        refused => refused,
    };
    let mut refused = Vec::new();
    req.topics.retain_mut(|t| {
        let code = whole_code.or_else(|| match ctx.admit_topic(Action::ReadData, &t.name) {
            Ok(p) => {
                t.name = p;
                None
            }
            Err(code) => Some(code),
        });
        if let Some(code) = code {
            refused.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
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
        let resp = TxnOffsetCommitResponse::default().with_topics(refused);
        return Ok(Reply::now(ResponseKind::TxnOffsetCommit(resp)));
    }
    // TxnOffsetCommit goes to the group's coordinator, not the transaction's.
    let key = req.group_id.0.to_string();
    let answer = ctx.gw.router().coordinator(GROUP, &key).await?;
    let Some(broker) = answer.broker else {
        let code = answer.error_code;
        let topics = req
            .topics
            .iter()
            .map(|t| {
                let mut name = t.name.clone();
                ctx.topic_back(&mut name);
                TxnOffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
            })
            .chain(refused)
            .collect();
        let resp = TxnOffsetCommitResponse::default().with_topics(topics);
        return Ok(Reply::now(ResponseKind::TxnOffsetCommit(resp)));
    };
    let commit = Commit::asked(&ctx.session.namespace, &key, &req);
    let pending =
        forward::<_, TxnOffsetCommitResponse>(ctx, &broker, ApiKey::TxnOffsetCommit, version, &req)
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
        Ok(ResponseKind::TxnOffsetCommit(resp))
    }))
}
