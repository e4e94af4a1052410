//! Topic administration: CreateTopics, DeleteTopics, DeleteRecords, CreatePartitions, and topic
//! configs (DescribeConfigs, IncrementalAlterConfigs).
//!
//! Only TOPIC config resources are a tenant's: broker configs describe the pool, so BROKER and
//! BROKER_LOGGER resources are refused with CLUSTER_AUTHORIZATION_FAILED. Manual replica
//! assignments name pool brokers and are refused too; the pool places partitions.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::split::forward_gathered;
use super::topic_policy;
use super::{
    forward_any, topics_of_ids, Ctx, Reply, CLUSTER_DENIED, INVALID_REQUEST, INVALID_TOPIC,
    TOPIC_DENIED,
};
use crate::identity::authz::Action;
use crate::pool::{PoolKind, UpstreamError};
use crate::quotas::limits::{partition_counts, Mutations};

/// Config resource type for topics (Kafka's `ConfigResource.Type.TOPIC`).
const TOPIC_RESOURCE: i8 = 2;
/// DescribeConfigs' `config_source` for a default (Kafka's `ConfigSource.DEFAULT_CONFIG`);
/// 2 to 4 are the brokers' dynamic, default-dynamic and static settings.
const DEFAULT_CONFIG_SOURCE: i8 = 5;

fn refusal(r: topic_policy::Refusal) -> (i16, Option<StrBytes>) {
    (r.code, Some(StrBytes::from_string(r.message)))
}

fn message(code: i16) -> Option<StrBytes> {
    let text = match code {
        TOPIC_DENIED => "the policy does not allow this action on the topic",
        INVALID_TOPIC => "invalid topic name: use ASCII letters, digits, '.', '_' and '-', at most 213 characters",
        CLUSTER_DENIED => "broker resources are not available to tenants",
        INVALID_REQUEST => "manual replica assignment is not available; the pool places partitions",
        _ => return None,
    };
    Some(StrBytes::from_static_str(text))
}

pub async fn create_topics(
    ctx: &Ctx,
    version: i16,
    mut req: CreateTopicsRequest,
) -> Result<Reply, UpstreamError> {
    let mut refused = Vec::new();
    // Partitions the cluster has, as last reconciled with the pool, plus what this request
    // already took: the limit holds across the request's topics.
    let mut in_use = ctx.gw.metering().partitions(&ctx.session.cluster.id);
    let quotas = crate::quotas::limits::quotas_of(&ctx.gw, &ctx.session.cluster);
    let mut mutations = Mutations::new(ctx, ApiKey::CreateTopics, version, req.validate_only);
    let max_message_bytes = ctx.session.cluster.max_message_bytes;
    // The operator's choice, not the tenant's: the broker default on Apache Kafka (KIP-464,
    // v4+), and 1 on a stateless pool, whose shared store is the replication.
    let replication_factor = match ctx.gw.router().kind() {
        PoolKind::Leader if version >= 4 => -1,
        _ => 1,
    };
    req.topics.retain_mut(|t| {
        if t.num_partitions == -1 {
            // Counted exactly, whatever the pool's default.
            t.num_partitions = 1;
        }
        let verdict = if !t.assignments.is_empty() {
            Err((INVALID_REQUEST, message(INVALID_REQUEST)))
        } else {
            ctx.admit_topic(Action::CreateTopic, &t.name)
                .map_err(|code| (code, message(code)))
                .and_then(|p| {
                    for c in &t.configs {
                        topic_policy::check_config(
                            c.name.as_str(),
                            c.value.as_ref().map(|v| v.as_str()),
                            max_message_bytes,
                        )
                        .map_err(refusal)?;
                    }
                    let adding = u64::try_from(t.num_partitions).unwrap_or(0);
                    crate::quotas::limits::admit_partitions(
                        ctx,
                        in_use,
                        adding,
                        quotas.max_partitions,
                    )
                    .map_err(refusal)?;
                    mutations.admit(p.0.as_str(), adding).map_err(refusal)?;
                    in_use += adding;
                    Ok(p)
                })
        };
        match verdict {
            Ok(p) => {
                t.name = p;
                t.replication_factor = replication_factor;
                true
            }
            Err((code, message)) => {
                refused.push(
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(code)
                        .with_error_message(message)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
                false
            }
        }
    });
    if req.topics.is_empty() {
        let resp = CreateTopicsResponse::default()
            .with_topics(refused)
            .with_throttle_time_ms(mutations.throttle_ms);
        return Ok(Reply::now(ResponseKind::CreateTopics(resp)));
    }
    let pending =
        forward_any::<_, CreateTopicsResponse>(ctx, ApiKey::CreateTopics, version, &req).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        for t in resp.topics.iter().filter(|t| t.error_code != 0) {
            mutations.failed(t.name.0.as_str());
        }
        resp.throttle_time_ms = resp.throttle_time_ms.max(mutations.throttle_ms);
        ctx.gw.metering().topics_changed();
        ctx.gw
            .router()
            .learn_topic_ids(resp.topics.iter().map(|t| (t.topic_id, t.name.0.as_str())));
        resp.topics.retain_mut(|t| ctx.topic_back(&mut t.name));
        resp.topics.extend(refused);
        Ok(ResponseKind::CreateTopics(resp))
    }))
}

pub async fn delete_topics(
    ctx: &Ctx,
    version: i16,
    mut req: DeleteTopicsRequest,
) -> Result<Reply, UpstreamError> {
    // v6 names topics by name or id; older versions by name only. Normalize to names.
    let mut wanted: Vec<(TopicName, uuid::Uuid)> = Vec::new();
    let mut refused = Vec::new();
    let entries: Vec<(Option<TopicName>, uuid::Uuid)> = if version >= 6 {
        // By id, the name is null or (as some encoders write it) empty.
        req.topics
            .drain(..)
            .map(|t| {
                let by_id = !t.topic_id.is_nil() && t.name.as_ref().is_none_or(|n| n.0.is_empty());
                (if by_id { None } else { t.name }, t.topic_id)
            })
            .collect()
    } else {
        req.topic_names
            .drain(..)
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let named_by_id = entries.iter().filter(|(name, _)| name.is_none());
    let ids = topics_of_ids(ctx, named_by_id.map(|(_, id)| *id)).await?;
    for (name, id) in entries {
        let name = match name {
            Some(n) => n,
            None => match ids.get(ctx, id) {
                Ok(n) => n,
                Err(code) => {
                    refused.push(
                        DeletableTopicResult::default()
                            .with_topic_id(id)
                            .with_error_code(code),
                    );
                    continue;
                }
            },
        };
        match ctx.admit_topic(Action::DeleteTopic, &name) {
            Ok(p) => wanted.push((p, id)),
            Err(code) => refused.push(
                DeletableTopicResult::default()
                    .with_name(Some(name))
                    .with_topic_id(id)
                    .with_error_code(code)
                    .with_error_message(message(code)),
            ),
        }
    }
    // Each topic's partitions count against the cluster's partition mutations.
    let mut mutations = Mutations::new(ctx, ApiKey::DeleteTopics, version, false);
    let names: Vec<String> = wanted.iter().map(|(n, _)| n.0.to_string()).collect();
    let partitions = match mutations.limited() {
        true => partition_counts(&ctx.gw, &names).await,
        false => Default::default(),
    };
    wanted.retain(|(p, id)| {
        let n = partitions.get(p.0.as_str()).copied().unwrap_or(1);
        match mutations.admit(p.0.as_str(), n) {
            Ok(()) => true,
            Err(e) => {
                refused.push(
                    DeletableTopicResult::default()
                        .with_name(ctx.back(p.0.as_str()).map(TopicName))
                        .with_topic_id(*id)
                        .with_error_code(e.code)
                        .with_error_message(Some(StrBytes::from_string(e.message))),
                );
                false
            }
        }
    });
    if wanted.is_empty() {
        let resp = DeleteTopicsResponse::default()
            .with_responses(refused)
            .with_throttle_time_ms(mutations.throttle_ms);
        return Ok(Reply::now(ResponseKind::DeleteTopics(resp)));
    }
    if version >= 6 {
        req.topics = wanted
            .iter()
            .map(|(n, _)| {
                delete_topics_request::DeleteTopicState::default().with_name(Some(n.clone()))
            })
            .collect();
    } else {
        req.topic_names = wanted.iter().map(|(n, _)| n.clone()).collect();
    }
    let pending =
        forward_any::<_, DeleteTopicsResponse>(ctx, ApiKey::DeleteTopics, version, &req).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        ctx.gw.metering().topics_changed();
        for r in &resp.responses {
            if r.error_code == 0 {
                ctx.gw.router().forget_topic_id(&r.topic_id);
            } else if let Some(n) = &r.name {
                mutations.failed(n.0.as_str());
            }
        }
        resp.throttle_time_ms = resp.throttle_time_ms.max(mutations.throttle_ms);
        resp.responses.retain_mut(|r| match r.name.as_mut() {
            Some(n) => ctx.topic_back(n),
            None => false,
        });
        resp.responses.extend(refused);
        Ok(ResponseKind::DeleteTopics(resp))
    }))
}

pub async fn delete_records(
    ctx: &Ctx,
    version: i16,
    mut req: DeleteRecordsRequest,
) -> Result<Reply, UpstreamError> {
    let mut refused = Vec::new();
    req.topics
        .retain_mut(|t| match ctx.admit_topic(Action::DeleteTopic, &t.name) {
            Ok(p) => {
                t.name = p;
                true
            }
            Err(code) => {
                refused.push(
                    DeleteRecordsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    DeleteRecordsPartitionResult::default()
                                        .with_partition_index(p.partition_index)
                                        .with_low_watermark(-1)
                                        .with_error_code(code)
                                })
                                .collect(),
                        ),
                );
                false
            }
        });
    if req.topics.is_empty() {
        let resp = DeleteRecordsResponse::default().with_topics(refused);
        return Ok(Reply::now(ResponseKind::DeleteRecords(resp)));
    }
    let topics = std::mem::take(&mut req.topics);
    let template = req;
    // Deleting up to an offset is idempotent, but a part that may have reached its broker is
    // answered as timed out, so the client retries rather than assumes.
    Ok(forward_gathered(
        ctx,
        topics,
        ApiKey::DeleteRecords,
        version,
        true,
        |topics| {
            let mut r = template.clone();
            r.topics = topics;
            r
        },
        |r: DeleteRecordsRequest| r.topics,
        move |ctx, mut resp: DeleteRecordsResponse| {
            // Deleted records free storage: measure it now, not in ten seconds.
            ctx.gw.metering().topics_changed();
            resp.topics.retain_mut(|t| ctx.topic_back(&mut t.name));
            resp.topics.extend(refused);
            ResponseKind::DeleteRecords(resp)
        },
    )
    .await)
}

pub async fn create_partitions(
    ctx: &Ctx,
    version: i16,
    mut req: CreatePartitionsRequest,
) -> Result<Reply, UpstreamError> {
    let mut refused = Vec::new();
    // `count` is a topic's new total, and its current count is the pool's to know: where the
    // pool cannot say, counting all of it refuses early rather than ever late.
    let mut in_use = ctx.gw.metering().partitions(&ctx.session.cluster.id);
    let quotas = crate::quotas::limits::quotas_of(&ctx.gw, &ctx.session.cluster);
    let mut mutations = Mutations::new(ctx, ApiKey::CreatePartitions, version, req.validate_only);
    let names: Vec<String> = (req.topics.iter())
        .filter_map(|t| ctx.topic_out(&t.name).ok().map(|p| p.0.to_string()))
        .collect();
    let current = partition_counts(&ctx.gw, &names).await;
    req.topics.retain_mut(|t| {
        let verdict = if t.assignments.is_some() {
            Err((INVALID_REQUEST, message(INVALID_REQUEST)))
        } else {
            ctx.admit_topic(Action::AlterTopic, &t.name)
                .map_err(|code| (code, message(code)))
                .and_then(|p| {
                    let total = u64::try_from(t.count).unwrap_or(0);
                    let adding =
                        total.saturating_sub(current.get(p.0.as_str()).copied().unwrap_or(0));
                    crate::quotas::limits::admit_partitions(
                        ctx,
                        in_use,
                        adding,
                        quotas.max_partitions,
                    )
                    .map_err(refusal)?;
                    mutations.admit(p.0.as_str(), adding).map_err(refusal)?;
                    in_use += adding;
                    Ok(p)
                })
        };
        match verdict {
            Ok(p) => {
                t.name = p;
                true
            }
            Err((code, message)) => {
                refused.push(
                    CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(code)
                        .with_error_message(message),
                );
                false
            }
        }
    });
    if req.topics.is_empty() {
        let resp = CreatePartitionsResponse::default()
            .with_results(refused)
            .with_throttle_time_ms(mutations.throttle_ms);
        return Ok(Reply::now(ResponseKind::CreatePartitions(resp)));
    }
    let pending =
        forward_any::<_, CreatePartitionsResponse>(ctx, ApiKey::CreatePartitions, version, &req)
            .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        for t in resp.results.iter().filter(|t| t.error_code != 0) {
            mutations.failed(t.name.0.as_str());
        }
        resp.throttle_time_ms = resp.throttle_time_ms.max(mutations.throttle_ms);
        ctx.gw.metering().topics_changed();
        resp.results.retain_mut(|t| ctx.topic_back(&mut t.name));
        resp.results.extend(refused);
        Ok(ResponseKind::CreatePartitions(resp))
    }))
}

/// Authorizes every config resource of a request with `action` and maps its name in place.
/// Returns the refused ones as (resource type, name, error code); only TOPIC resources are a
/// tenant's.
fn admit_configs<R>(
    ctx: &Ctx,
    action: Action,
    resources: &mut Vec<R>,
    key: impl Fn(&mut R) -> (i8, &mut StrBytes),
) -> Vec<(i8, StrBytes, i16)> {
    let mut refused = Vec::new();
    resources.retain_mut(|r| {
        let (resource_type, name) = key(r);
        let verdict = if resource_type == TOPIC_RESOURCE {
            ctx.admit_topic(action, &TopicName(name.clone()))
                .map(|t| t.0)
        } else {
            Err(CLUSTER_DENIED)
        };
        match verdict {
            Ok(physical) => {
                *name = physical;
                true
            }
            Err(code) => {
                refused.push((resource_type, name.clone(), code));
                false
            }
        }
    });
    refused
}

/// Maps the resource names of a pool answer back, dropping any that are not this cluster's.
fn unmap_configs<R>(ctx: &Ctx, results: &mut Vec<R>, name: impl Fn(&mut R) -> &mut StrBytes) {
    results.retain_mut(|r| {
        let name = name(r);
        match ctx.back(name) {
            Some(n) => {
                *name = n;
                true
            }
            None => false,
        }
    });
}

pub async fn describe_configs(
    ctx: &Ctx,
    version: i16,
    mut req: DescribeConfigsRequest,
) -> Result<Reply, UpstreamError> {
    let refused: Vec<_> = admit_configs(
        ctx,
        Action::DescribeTopicDynamicConfiguration,
        &mut req.resources,
        |r| (r.resource_type, &mut r.resource_name),
    )
    .into_iter()
    .map(|(resource_type, name, code)| {
        DescribeConfigsResult::default()
            .with_resource_type(resource_type)
            .with_resource_name(name)
            .with_error_code(code)
            .with_error_message(message(code))
    })
    .collect();
    if req.resources.is_empty() {
        let resp = DescribeConfigsResponse::default().with_results(refused);
        return Ok(Reply::now(ResponseKind::DescribeConfigs(resp)));
    }
    let pending =
        forward_any::<_, DescribeConfigsResponse>(ctx, ApiKey::DescribeConfigs, version, &req)
            .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        unmap_configs(&ctx, &mut resp.results, |r| &mut r.resource_name);
        // Synonyms name the brokers' own settings, and a broker-level source says the pool
        // was configured: to the tenant, what it did not set on the topic is a default.
        for config in resp.results.iter_mut().flat_map(|r| r.configs.iter_mut()) {
            config.synonyms.clear();
            if matches!(config.config_source, 2..=4) {
                config.config_source = DEFAULT_CONFIG_SOURCE;
            }
        }
        resp.results.extend(refused);
        Ok(ResponseKind::DescribeConfigs(resp))
    }))
}

pub async fn incremental_alter_configs(
    ctx: &Ctx,
    version: i16,
    mut req: IncrementalAlterConfigsRequest,
) -> Result<Reply, UpstreamError> {
    let mut refused: Vec<_> = admit_configs(
        ctx,
        Action::AlterTopicDynamicConfiguration,
        &mut req.resources,
        |r| (r.resource_type, &mut r.resource_name),
    )
    .into_iter()
    .map(|(resource_type, name, code)| {
        AlterConfigsResourceResponse::default()
            .with_resource_type(resource_type)
            .with_resource_name(name)
            .with_error_code(code)
            .with_error_message(message(code))
    })
    .collect();
    // Every change of an admitted topic must keep to the topic policy; one refused change
    // refuses its resource whole, as a broker's AlterConfigPolicy does.
    let max_message_bytes = ctx.session.cluster.max_message_bytes;
    req.resources.retain(|r| {
        let verdict = r.configs.iter().try_for_each(|c| {
            // Deleting (op 1) returns a config to its default: allowed for allowed names.
            let value =
                (c.config_operation != 1).then(|| c.value.as_ref().map_or("", |v| v.as_str()));
            topic_policy::check_config(c.name.as_str(), value, max_message_bytes)
        });
        match verdict {
            Ok(()) => true,
            Err(e) => {
                refused.push(
                    AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(ctx.back(r.resource_name.as_str()).unwrap_or_default())
                        .with_error_code(e.code)
                        .with_error_message(Some(StrBytes::from_string(e.message))),
                );
                false
            }
        }
    });
    if req.resources.is_empty() {
        let resp = IncrementalAlterConfigsResponse::default().with_responses(refused);
        return Ok(Reply::now(ResponseKind::IncrementalAlterConfigs(resp)));
    }
    let pending = forward_any::<_, IncrementalAlterConfigsResponse>(
        ctx,
        ApiKey::IncrementalAlterConfigs,
        version,
        &req,
    )
    .await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let mut resp = pending.await?;
        unmap_configs(&ctx, &mut resp.responses, |r| &mut r.resource_name);
        resp.responses.extend(refused);
        Ok(ResponseKind::IncrementalAlterConfigs(resp))
    }))
}
