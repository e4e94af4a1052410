//! The answer to give a client when the pool failed its request as a whole.
//!
//! A broker that cannot be reached, a connection that drops, an answer that never comes: the
//! client sent a valid request and is owed a response it understands. Closing its connection
//! instead would fail everything else in flight on it and make it reconnect and re-authenticate.
//! [`error_response`] builds what a Kafka broker itself answers when every resource in a
//! request fails with one error (Kafka's `AbstractRequest.getErrorResponse`): each topic,
//! partition, group, key or config resource the request named comes back with the code, and
//! everything else says "unknown" the way Kafka does (node -1, empty host, offsets -1). The
//! response is valid at the request's version, so it always encodes. [`retriable_code`] picks
//! the code that makes each client do the right thing next: look its coordinator up again,
//! refresh metadata, or retry.
//!
//! `request` is the client's request as it was decoded, with the tenant's names: the answer
//! goes back to the client and must name what the client named.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::scrub::message;
use super::split::failure_code;
use crate::pool::UpstreamError;

/// Kafka's `Node.noNode()`: the coordinator or leader is not known.
const NO_NODE: i32 = -1;
/// Kafka's offset and epoch sentinels for "none".
const NO_OFFSET: i64 = -1;
const NO_EPOCH: i32 = -1;

/// The response a Kafka broker gives to `request` (at `version`) when every resource in it
/// fails with `code`; `None` for APIs the gateway does not forward, and for a produce with
/// acks=0, which gets no response at all (a broker closes the connection instead).
pub fn error_response(request: &RequestKind, version: i16, code: i16) -> Option<ResponseKind> {
    Some(match request {
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(r, version, code)),
        RequestKind::DescribeCluster(_) => ResponseKind::DescribeCluster(describe_cluster(code)),
        RequestKind::Produce(r) => ResponseKind::Produce(produce(r, code)?),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch(r, version, code)),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets(r, code)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch(r, code))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(r, version, code))
        }
        RequestKind::JoinGroup(_) => ResponseKind::JoinGroup(join_group(version, code)),
        RequestKind::SyncGroup(_) => {
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(code))
        }
        RequestKind::Heartbeat(_) => {
            ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code))
        }
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group(r, version, code)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offset_commit(r, code)),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch(r, version, code)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups(r, version, code))
        }
        RequestKind::ListGroups(_) => {
            ResponseKind::ListGroups(ListGroupsResponse::default().with_error_code(code))
        }
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(delete_groups(r, code)),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(offset_delete(r, code)),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(create_topics(r, version, code)),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(delete_topics(r, version, code)),
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(delete_records(r, code)),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions(r, code))
        }
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(describe_configs(r, code)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs(r, code))
        }
        RequestKind::InitProducerId(_) => ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(add_partitions_to_txn(r, version, code))
        }
        RequestKind::AddOffsetsToTxn(_) => {
            ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code))
        }
        RequestKind::EndTxn(_) => ResponseKind::EndTxn(
            EndTxnResponse::default()
                .with_error_code(code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn_offset_commit(r, code))
        }
        _ => return None,
    })
}

/// The code to answer with when the pool failed a request of `api` with `e`.
///
/// - Partition APIs: what [`failure_code`] gives a failed part of a split request, so a whole
///   failure and a partial one look the same: NOT_LEADER_OR_FOLLOWER (refresh metadata, retry)
///   unless a write may have landed (Produce, DeleteRecords), then REQUEST_TIMED_OUT.
/// - Group and transaction coordinator APIs: NOT_COORDINATOR, on which every client looks the
///   coordinator up again and retries; FindCoordinator itself and ListGroups (not addressed to
///   one coordinator) get COORDINATOR_NOT_AVAILABLE, the one retriable answer they know.
/// - InitProducerId: COORDINATOR_LOAD_IN_PROGRESS. It is also sent by idempotent producers
///   without a transactional id, for which there is no coordinator to look up; this code is
///   retried as is by every client, with or without one, where others (REQUEST_TIMED_OUT) are
///   fatal to the Java producer.
/// - Admin APIs (metadata, topics, configs): REQUEST_TIMED_OUT, which admin clients retry.
///
/// An answer the pool sent that we cannot read, or a request we could not write, is nothing a
/// retry is known to fix: UNKNOWN_SERVER_ERROR, for every API, as [`failure_code`] decides.
pub fn retriable_code(api: ApiKey, e: &UpstreamError) -> i16 {
    match api {
        ApiKey::Produce | ApiKey::DeleteRecords => return failure_code(e, true),
        ApiKey::Fetch | ApiKey::ListOffsets | ApiKey::OffsetForLeaderEpoch => {
            return failure_code(e, false)
        }
        _ => {}
    }
    if matches!(e, UpstreamError::Encode(_) | UpstreamError::Decode { .. }) {
        return failure_code(e, false);
    }
    let chosen = match api {
        ApiKey::FindCoordinator | ApiKey::ListGroups => ResponseError::CoordinatorNotAvailable,
        ApiKey::InitProducerId => ResponseError::CoordinatorLoadInProgress,
        ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::DescribeGroups
        | ApiKey::DeleteGroups
        | ApiKey::OffsetDelete
        | ApiKey::AddPartitionsToTxn
        | ApiKey::AddOffsetsToTxn
        | ApiKey::EndTxn
        | ApiKey::TxnOffsetCommit => ResponseError::NotCoordinator,
        _ => ResponseError::RequestTimedOut,
    };
    chosen.code()
}

fn no_host() -> StrBytes {
    StrBytes::default()
}

fn metadata(r: &MetadataRequest, version: i16, code: i16) -> MetadataResponse {
    // A request for all topics (null, or an empty list at v0) fails with no topics listed and
    // no brokers, as from Kafka; clients drop a metadata answer without brokers and ask again.
    let topics = r
        .topics
        .iter()
        .flatten()
        .map(|t| {
            // v10-11 requests may name a topic by id alone, but those responses cannot carry a
            // null name: an empty one stands for it.
            let name = match &t.name {
                None if version < 12 => Some(TopicName::default()),
                name => name.clone(),
            };
            metadata_response::MetadataResponseTopic::default()
                .with_error_code(code)
                .with_name(name)
                .with_topic_id(t.topic_id)
                .with_is_internal(false)
        })
        .collect();
    let mut resp = MetadataResponse::default()
        .with_topics(topics)
        .with_controller_id(BrokerId(NO_NODE));
    // Only v13+ has a top-level code; before, the per-topic codes are all there is.
    if version >= 13 {
        resp.error_code = code;
    }
    resp
}

fn describe_cluster(code: i16) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_error_code(code)
        .with_error_message(message(code))
        .with_controller_id(BrokerId(NO_NODE))
}

fn produce(r: &ProduceRequest, code: i16) -> Option<ProduceResponse> {
    if r.acks == 0 {
        return None;
    }
    let responses = r
        .topic_data
        .iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .iter()
                .map(|p| {
                    produce_response::PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(code)
                        .with_base_offset(NO_OFFSET)
                        .with_log_append_time_ms(-1)
                        .with_log_start_offset(NO_OFFSET)
                })
                .collect();
            produce_response::TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partition_responses(partitions)
        })
        .collect();
    Some(ProduceResponse::default().with_responses(responses))
}

fn fetch(r: &FetchRequest, version: i16, code: i16) -> FetchResponse {
    // Kafka answers v13+ with the top-level code alone; the partitions are listed here at every
    // version, so clients that look at partition codes (and refresh metadata on them) see the
    // failure too, and the topic ids the request used come back as it sent them.
    let responses = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    fetch_response::PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(code)
                        .with_high_watermark(NO_OFFSET)
                        .with_last_stable_offset(NO_OFFSET)
                        .with_log_start_offset(NO_OFFSET)
                })
                .collect();
            fetch_response::FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    let mut resp = FetchResponse::default().with_responses(responses);
    // Session id stays 0: the gateway declines fetch sessions (see `fetch`), so no failure
    // can claim one exists.
    if version >= 7 {
        resp.error_code = code;
    }
    resp
}

fn list_offsets(r: &ListOffsetsRequest, code: i16) -> ListOffsetsResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    list_offsets_response::ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_timestamp(-1)
                        .with_offset(NO_OFFSET)
                        .with_leader_epoch(NO_EPOCH)
                })
                .collect();
            list_offsets_response::ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn offset_for_leader_epoch(
    r: &OffsetForLeaderEpochRequest,
    code: i16,
) -> OffsetForLeaderEpochResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    offset_for_leader_epoch_response::EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_error_code(code)
                        .with_leader_epoch(NO_EPOCH)
                        .with_end_offset(NO_OFFSET)
                })
                .collect();
            offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn find_coordinator(
    r: &FindCoordinatorRequest,
    version: i16,
    code: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        // Batched: one answer per key, and the top-level fields are not in these versions.
        let coordinators = r
            .coordinator_keys
            .iter()
            .map(|key| {
                find_coordinator_response::Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(NO_NODE))
                    .with_host(no_host())
                    .with_port(-1)
                    .with_error_code(code)
                    .with_error_message(message(code))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_error_code(code)
        // v0 has no message; whatever is set is not encoded there.
        .with_error_message(message(code))
        .with_node_id(BrokerId(NO_NODE))
        .with_host(no_host())
        .with_port(-1)
}

fn join_group(version: i16, code: i16) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        .with_leader(StrBytes::default())
        .with_member_id(StrBytes::default())
        // Kafka answers a null protocol name where the field is nullable (v7+), an empty one
        // before.
        .with_protocol_name((version < 7).then(StrBytes::default))
        .with_protocol_type(None)
}

fn leave_group(r: &LeaveGroupRequest, version: i16, code: i16) -> LeaveGroupResponse {
    // v3+ requests list members; each gets the code too, so a client reading only member codes
    // also sees the failure.
    let members = if version >= 3 {
        r.members
            .iter()
            .map(|m| {
                leave_group_response::MemberResponse::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(m.group_instance_id.clone())
                    .with_error_code(code)
            })
            .collect()
    } else {
        Vec::new()
    };
    LeaveGroupResponse::default()
        .with_error_code(code)
        .with_members(members)
}

fn offset_commit(r: &OffsetCommitRequest, code: i16) -> OffsetCommitResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            offset_commit_response::OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

fn offset_fetch(r: &OffsetFetchRequest, version: i16, code: i16) -> OffsetFetchResponse {
    use offset_fetch_response::*;
    if version >= 8 {
        // Batched by group: each group gets the code, with its partitions when it named them.
        let groups = r
            .groups
            .iter()
            .map(|g| {
                let topics = g
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        let partitions = t
                            .partition_indexes
                            .iter()
                            .map(|&i| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(i)
                                    .with_error_code(code)
                                    .with_committed_offset(NO_OFFSET)
                                    .with_committed_leader_epoch(NO_EPOCH)
                                    .with_metadata(Some(StrBytes::default()))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let topics = r
        .topics
        .iter()
        .flatten()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&i| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(i)
                        .with_error_code(code)
                        .with_committed_offset(NO_OFFSET)
                        .with_committed_leader_epoch(NO_EPOCH)
                        .with_metadata(Some(StrBytes::default()))
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let mut resp = OffsetFetchResponse::default().with_topics(topics);
    // v0-1 have only partition codes.
    if version >= 2 {
        resp.error_code = code;
    }
    resp
}

fn describe_groups(r: &DescribeGroupsRequest, version: i16, code: i16) -> DescribeGroupsResponse {
    let groups = r
        .groups
        .iter()
        .map(|g| {
            describe_groups_response::DescribedGroup::default()
                .with_group_id(g.clone())
                .with_error_code(code)
                // The message is v6+ only, and refused by the encoder before.
                .with_error_message(if version >= 6 { message(code) } else { None })
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

fn delete_groups(r: &DeleteGroupsRequest, code: i16) -> DeleteGroupsResponse {
    let results = r
        .groups_names
        .iter()
        .map(|g| {
            delete_groups_response::DeletableGroupResult::default()
                .with_group_id(g.clone())
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}

fn offset_delete(r: &OffsetDeleteRequest, code: i16) -> OffsetDeleteResponse {
    // Kafka sets the top-level code alone; the partitions are listed too, as everywhere else.
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    offset_delete_response::OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            offset_delete_response::OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default()
        .with_error_code(code)
        .with_topics(topics)
}

fn create_topics(r: &CreateTopicsRequest, version: i16, code: i16) -> CreateTopicsResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            create_topics_response::CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code)
                .with_error_message(if version >= 1 { message(code) } else { None })
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn delete_topics(r: &DeleteTopicsRequest, version: i16, code: i16) -> DeleteTopicsResponse {
    use delete_topics_response::DeletableTopicResult;
    let text = if version >= 5 { message(code) } else { None };
    // v6+ requests name topics by name or id; before, by name only.
    let responses = if version >= 6 {
        r.topics
            .iter()
            .map(|t| {
                DeletableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_error_code(code)
                    .with_error_message(text.clone())
            })
            .collect()
    } else {
        r.topic_names
            .iter()
            .map(|n| {
                DeletableTopicResult::default()
                    .with_name(Some(n.clone()))
                    .with_error_code(code)
                    .with_error_message(text.clone())
            })
            .collect()
    };
    DeleteTopicsResponse::default().with_responses(responses)
}

fn delete_records(r: &DeleteRecordsRequest, code: i16) -> DeleteRecordsResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    delete_records_response::DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_low_watermark(NO_OFFSET)
                })
                .collect();
            delete_records_response::DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

fn create_partitions(r: &CreatePartitionsRequest, code: i16) -> CreatePartitionsResponse {
    let results = r
        .topics
        .iter()
        .map(|t| {
            create_partitions_response::CreatePartitionsTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code)
                .with_error_message(message(code))
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

fn describe_configs(r: &DescribeConfigsRequest, code: i16) -> DescribeConfigsResponse {
    let results = r
        .resources
        .iter()
        .map(|c| {
            describe_configs_response::DescribeConfigsResult::default()
                .with_resource_type(c.resource_type)
                .with_resource_name(c.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message(code))
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn incremental_alter_configs(
    r: &IncrementalAlterConfigsRequest,
    code: i16,
) -> IncrementalAlterConfigsResponse {
    let responses = r
        .resources
        .iter()
        .map(|c| {
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(c.resource_type)
                .with_resource_name(c.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message(code))
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn add_partitions_to_txn(
    r: &AddPartitionsToTxnRequest,
    version: i16,
    code: i16,
) -> AddPartitionsToTxnResponse {
    use add_partitions_to_txn_response::*;
    if version >= 4 {
        // The broker-to-broker batched form: Kafka answers with the top-level code alone.
        return AddPartitionsToTxnResponse::default().with_error_code(code);
    }
    let topics = r
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|&i| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(i)
                        .with_partition_error_code(code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(partitions)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

fn txn_offset_commit(r: &TxnOffsetCommitRequest, code: i16) -> TxnOffsetCommitResponse {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            txn_offset_commit_response::TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use uuid::Uuid;

    use super::*;
    use crate::api::versions::HANDLED;
    use offset_for_leader_epoch_request::OffsetForLeaderPartition;
    use txn_offset_commit_request::TxnOffsetCommitRequestPartition;

    const ORDERS_ID: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    const PAYMENTS_ID: Uuid = Uuid::from_u128(0xfedc_ba98_7654_3210_fedc_ba98_7654_3210);

    fn s(text: &'static str) -> StrBytes {
        StrBytes::from_static_str(text)
    }

    fn topic(name: &'static str) -> TopicName {
        TopicName(s(name))
    }

    fn group(name: &'static str) -> GroupId {
        GroupId(s(name))
    }

    /// The versions the gateway accepts of `api`, as far as the message types support them.
    fn versions(api: ApiKey) -> std::ops::RangeInclusive<i16> {
        let &(_, min, max, _) = HANDLED
            .iter()
            .find(|(k, ..)| *k == api)
            .expect("handled API");
        let valid = api.valid_versions();
        min.max(valid.min)..=max.min(valid.max)
    }

    /// A request as the gateway has it: encoded by a client at `version` and decoded, so it
    /// holds only what that version carries.
    fn received(api: ApiKey, req: impl Into<RequestKind>, version: i16) -> RequestKind {
        let mut buf = BytesMut::new();
        req.into()
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("test request {api:?} v{version}: {e}"));
        RequestKind::decode(api, &mut buf.freeze(), version)
            .unwrap_or_else(|e| panic!("test request {api:?} v{version}: {e}"))
    }

    /// The error response as the client reads it: it must encode at the request's version.
    fn answered(api: ApiKey, req: &RequestKind, version: i16, code: i16) -> ResponseKind {
        let resp = error_response(req, version, code)
            .unwrap_or_else(|| panic!("{api:?} v{version} is covered"));
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("{api:?} v{version} does not encode: {e}"));
        ResponseKind::decode(api, &mut buf.freeze(), version)
            .unwrap_or_else(|e| panic!("{api:?} v{version} does not decode: {e}"))
    }

    /// Every version of `api`, with the request `build` makes for it, answered with the code
    /// a dropped connection gets; `check` sees the request and answer as the wire has them.
    fn each_version<R: Into<RequestKind>>(
        api: ApiKey,
        build: impl Fn(i16) -> R,
        check: impl Fn(i16, i16, &RequestKind, &ResponseKind),
    ) {
        let dropped = UpstreamError::Io {
            addr: "b:9092".into(),
            reason: "reset".into(),
        };
        let code = retriable_code(api, &dropped);
        assert_ne!(code, 0);
        for v in versions(api) {
            let req = received(api, build(v), v);
            let resp = answered(api, &req, v, code);
            check(v, code, &req, &resp);
        }
    }

    fn partitions<'a, T: 'a, P: 'a>(
        topics: &'a [T],
        parts: impl Fn(&'a T) -> &'a [P] + 'a,
        index: impl Fn(&P) -> i32 + 'a,
    ) -> Vec<Vec<i32>> {
        topics
            .iter()
            .map(|t| parts(t).iter().map(&index).collect())
            .collect()
    }

    #[test]
    fn every_forwarded_api_in_every_version_gets_an_answer_that_encodes() {
        // Empty requests too: no input may make an answer that does not encode, or panic.
        for &(api, ..) in HANDLED {
            for v in versions(api) {
                let req = RequestKind::decode(api, &mut empty_request(api, v), v)
                    .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
                match api {
                    ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => {
                        assert!(error_response(&req, v, 7).is_none())
                    }
                    _ => {
                        answered(api, &req, v, 7);
                    }
                }
            }
        }
    }

    /// The encoding of a default request of `api`.
    fn empty_request(api: ApiKey, version: i16) -> Bytes {
        let req: RequestKind = match api {
            ApiKey::ApiVersions => ApiVersionsRequest::default().into(),
            ApiKey::SaslHandshake => SaslHandshakeRequest::default().into(),
            ApiKey::SaslAuthenticate => SaslAuthenticateRequest::default().into(),
            ApiKey::DescribeCluster => DescribeClusterRequest::default().into(),
            ApiKey::Metadata => MetadataRequest::default().into(),
            ApiKey::Produce => ProduceRequest::default().with_acks(-1).into(),
            ApiKey::Fetch => FetchRequest::default().into(),
            ApiKey::ListOffsets => ListOffsetsRequest::default().into(),
            ApiKey::OffsetForLeaderEpoch => OffsetForLeaderEpochRequest::default().into(),
            ApiKey::FindCoordinator => FindCoordinatorRequest::default().into(),
            ApiKey::JoinGroup => JoinGroupRequest::default().into(),
            ApiKey::SyncGroup => SyncGroupRequest::default().into(),
            ApiKey::Heartbeat => HeartbeatRequest::default().into(),
            ApiKey::LeaveGroup => LeaveGroupRequest::default().into(),
            ApiKey::OffsetCommit => OffsetCommitRequest::default().into(),
            ApiKey::OffsetFetch => OffsetFetchRequest::default().into(),
            ApiKey::DescribeGroups => DescribeGroupsRequest::default().into(),
            ApiKey::ListGroups => ListGroupsRequest::default().into(),
            ApiKey::DeleteGroups => DeleteGroupsRequest::default().into(),
            ApiKey::OffsetDelete => OffsetDeleteRequest::default().into(),
            ApiKey::CreateTopics => CreateTopicsRequest::default().into(),
            ApiKey::DeleteTopics => DeleteTopicsRequest::default().into(),
            ApiKey::DeleteRecords => DeleteRecordsRequest::default().into(),
            ApiKey::CreatePartitions => CreatePartitionsRequest::default().into(),
            ApiKey::DescribeConfigs => DescribeConfigsRequest::default().into(),
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default().into(),
            ApiKey::InitProducerId => InitProducerIdRequest::default().into(),
            ApiKey::AddPartitionsToTxn => AddPartitionsToTxnRequest::default().into(),
            ApiKey::AddOffsetsToTxn => AddOffsetsToTxnRequest::default().into(),
            ApiKey::EndTxn => EndTxnRequest::default().into(),
            ApiKey::TxnOffsetCommit => TxnOffsetCommitRequest::default().into(),
            other => panic!("HANDLED lists {other:?}, which this test does not know"),
        };
        let mut buf = BytesMut::new();
        req.encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
        buf.freeze()
    }

    #[test]
    fn apis_the_gateway_does_not_forward_get_none() {
        assert!(error_response(&ApiVersionsRequest::default().into(), 3, 7).is_none());
        assert!(error_response(&SaslHandshakeRequest::default().into(), 1, 7).is_none());
        assert!(error_response(&DescribeAclsRequest::default().into(), 1, 7).is_none());
    }

    #[test]
    fn metadata_lists_each_topic_asked_for_with_the_error_and_no_brokers() {
        each_version(
            ApiKey::Metadata,
            |v| {
                let mut topics = vec![
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic("orders"))),
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(topic("payments"))),
                ];
                // Topic ids exist from v10, names may be null from v10.
                if v >= 10 {
                    topics.push(
                        metadata_request::MetadataRequestTopic::default()
                            .with_topic_id(ORDERS_ID)
                            .with_name(None),
                    );
                }
                MetadataRequest::default().with_topics(Some(topics))
            },
            |v, code, _, resp| {
                let ResponseKind::Metadata(resp) = resp else {
                    panic!("wrong kind")
                };
                let names: Vec<_> = resp.topics.iter().map(|t| t.name.clone()).collect();
                let mut want = vec![Some(topic("orders")), Some(topic("payments"))];
                if v >= 10 {
                    want.push(if v >= 12 { None } else { Some(topic("")) });
                    assert_eq!(resp.topics[2].topic_id, ORDERS_ID);
                }
                assert_eq!(names, want, "v{v}");
                assert!(resp
                    .topics
                    .iter()
                    .all(|t| t.error_code == code && t.partitions.is_empty() && !t.is_internal));
                assert!(resp.brokers.is_empty());
                assert_eq!(resp.controller_id, BrokerId(-1));
                assert_eq!(resp.error_code, 0, "no top-level code before v13");
            },
        );
        // All topics: nothing to list.
        let resp = error_response(&MetadataRequest::default().with_topics(None).into(), 12, 7);
        let Some(ResponseKind::Metadata(resp)) = resp else {
            panic!("metadata answer")
        };
        assert!(resp.topics.is_empty() && resp.brokers.is_empty());
        // v13 has a top-level code, which Kafka sets.
        let req = MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic("orders"))),
        ]));
        let resp = answered(ApiKey::Metadata, &req.into(), 13, 7);
        let ResponseKind::Metadata(resp) = resp else {
            panic!("metadata answer")
        };
        assert_eq!(resp.error_code, 7);
        assert_eq!(resp.topics[0].error_code, 7);
    }

    fn produce_request(v: i16) -> ProduceRequest {
        let topic_data = |name, id, parts: &[i32]| {
            let mut t = produce_request::TopicProduceData::default().with_partition_data(
                parts
                    .iter()
                    .map(|&i| {
                        produce_request::PartitionProduceData::default()
                            .with_index(i)
                            .with_records(Some(Bytes::from_static(b"batch")))
                    })
                    .collect(),
            );
            // v13 names topics by id only.
            if v >= 13 {
                t.topic_id = id;
            } else {
                t.name = topic(name);
            }
            t
        };
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                topic_data("orders", ORDERS_ID, &[0, 2, 5]),
                topic_data("payments", PAYMENTS_ID, &[1]),
            ])
    }

    #[test]
    fn produce_answers_every_partition_with_no_offset() {
        each_version(ApiKey::Produce, produce_request, |v, code, req, resp| {
            let (RequestKind::Produce(req), ResponseKind::Produce(resp)) = (req, resp) else {
                panic!("wrong kind")
            };
            let ids = |r: &[produce_response::TopicProduceResponse]| -> Vec<_> {
                r.iter().map(|t| (t.name.clone(), t.topic_id)).collect()
            };
            let want: Vec<_> = req
                .topic_data
                .iter()
                .map(|t| (t.name.clone(), t.topic_id))
                .collect();
            assert_eq!(ids(&resp.responses), want, "v{v}");
            assert_eq!(
                partitions(&resp.responses, |t| &t.partition_responses, |p| p.index),
                vec![vec![0, 2, 5], vec![1]]
            );
            for p in resp.responses.iter().flat_map(|t| &t.partition_responses) {
                assert_eq!(p.error_code, code);
                assert_eq!(p.base_offset, -1);
                assert_eq!(p.log_append_time_ms, -1);
                assert_eq!(p.log_start_offset, -1);
                assert!(p.record_errors.is_empty() && p.error_message.is_none());
            }
        });
        // A write may have been applied: idempotent producers must retry under the same
        // sequence numbers, which REQUEST_TIMED_OUT tells them.
        let dropped = UpstreamError::Timeout {
            addr: "b:9092".into(),
            timeout: std::time::Duration::from_secs(30),
        };
        assert_eq!(
            retriable_code(ApiKey::Produce, &dropped),
            ResponseError::RequestTimedOut.code()
        );
    }

    #[test]
    fn produce_with_acks_0_gets_no_answer() {
        let req = produce_request(9).with_acks(0);
        assert!(error_response(&req.into(), 9, 7).is_none());
    }

    #[test]
    fn fetch_answers_every_partition_by_name_or_id_and_sets_the_top_level_code() {
        each_version(
            ApiKey::Fetch,
            |v| {
                let fetch_topic = |name, id, parts: &[i32]| {
                    let mut t = fetch_request::FetchTopic::default().with_partitions(
                        parts
                            .iter()
                            .map(|&i| {
                                fetch_request::FetchPartition::default()
                                    .with_partition(i)
                                    .with_fetch_offset(1_000)
                                    .with_partition_max_bytes(1 << 20)
                            })
                            .collect(),
                    );
                    if v >= 13 {
                        t.topic_id = id;
                    } else {
                        t.topic = topic(name);
                    }
                    t
                };
                FetchRequest::default()
                    .with_max_wait_ms(500)
                    .with_min_bytes(1)
                    .with_topics(vec![
                        fetch_topic("orders", ORDERS_ID, &[0, 1]),
                        fetch_topic("payments", PAYMENTS_ID, &[3]),
                    ])
            },
            |v, code, _, resp| {
                let ResponseKind::Fetch(resp) = resp else {
                    panic!("wrong kind")
                };
                let ids: Vec<_> = resp
                    .responses
                    .iter()
                    .map(|t| (t.topic.0.to_string(), t.topic_id))
                    .collect();
                if v >= 13 {
                    assert_eq!(
                        ids,
                        [(String::new(), ORDERS_ID), (String::new(), PAYMENTS_ID)]
                    );
                } else {
                    assert_eq!(
                        ids,
                        [
                            ("orders".to_owned(), Uuid::nil()),
                            ("payments".to_owned(), Uuid::nil())
                        ]
                    );
                }
                assert_eq!(
                    partitions(&resp.responses, |t| &t.partitions, |p| p.partition_index),
                    vec![vec![0, 1], vec![3]]
                );
                for p in resp.responses.iter().flat_map(|t| &t.partitions) {
                    assert_eq!(p.error_code, code);
                    assert_eq!((p.high_watermark, p.last_stable_offset), (-1, -1));
                    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
                }
                assert_eq!(resp.error_code, if v >= 7 { code } else { 0 });
                assert_eq!(resp.session_id, 0);
            },
        );
    }

    #[test]
    fn list_offsets_answers_every_partition_with_no_offset() {
        each_version(
            ApiKey::ListOffsets,
            |_| {
                let t = |name, parts: &[i32]| {
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(topic(name))
                        .with_partitions(
                            parts
                                .iter()
                                .map(|&i| {
                                    list_offsets_request::ListOffsetsPartition::default()
                                        .with_partition_index(i)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                };
                ListOffsetsRequest::default()
                    .with_topics(vec![t("orders", &[0, 1, 2]), t("payments", &[4])])
            },
            |v, code, _, resp| {
                let ResponseKind::ListOffsets(resp) = resp else {
                    panic!("wrong kind")
                };
                let names: Vec<_> = resp.topics.iter().map(|t| t.name.clone()).collect();
                assert_eq!(names, [topic("orders"), topic("payments")], "v{v}");
                assert_eq!(
                    partitions(&resp.topics, |t| &t.partitions, |p| p.partition_index),
                    vec![vec![0, 1, 2], vec![4]]
                );
                for p in resp.topics.iter().flat_map(|t| &t.partitions) {
                    assert_eq!(p.error_code, code);
                    assert_eq!((p.timestamp, p.offset), (-1, -1));
                }
            },
        );
        // A read: never "may have been written".
        let dropped = UpstreamError::Io {
            addr: "b:9092".into(),
            reason: "reset".into(),
        };
        assert_eq!(
            retriable_code(ApiKey::ListOffsets, &dropped),
            ResponseError::NotLeaderOrFollower.code()
        );
    }

    #[test]
    fn offset_for_leader_epoch_answers_every_partition_with_undefined_epoch_offsets() {
        each_version(
            ApiKey::OffsetForLeaderEpoch,
            |_| {
                let t = |name, parts: &[i32]| {
                    offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                        .with_topic(topic(name))
                        .with_partitions(
                            parts
                                .iter()
                                .map(|&i| {
                                    OffsetForLeaderPartition::default()
                                        .with_partition(i)
                                        .with_leader_epoch(4)
                                })
                                .collect(),
                        )
                };
                OffsetForLeaderEpochRequest::default()
                    .with_topics(vec![t("orders", &[0, 3]), t("payments", &[1])])
            },
            |_, code, _, resp| {
                let ResponseKind::OffsetForLeaderEpoch(resp) = resp else {
                    panic!("wrong kind")
                };
                let names: Vec<_> = resp.topics.iter().map(|t| t.topic.clone()).collect();
                assert_eq!(names, [topic("orders"), topic("payments")]);
                assert_eq!(
                    partitions(&resp.topics, |t| &t.partitions, |p| p.partition),
                    vec![vec![0, 3], vec![1]]
                );
                for p in resp.topics.iter().flat_map(|t| &t.partitions) {
                    assert_eq!(p.error_code, code);
                    assert_eq!((p.leader_epoch, p.end_offset), (-1, -1));
                }
            },
        );
    }

    #[test]
    fn find_coordinator_answers_each_key_or_the_one_key_with_no_node() {
        each_version(
            ApiKey::FindCoordinator,
            |v| {
                let req = FindCoordinatorRequest::default();
                if v >= 4 {
                    req.with_key_type(1).with_coordinator_keys(vec![
                        s("txn-a"),
                        s("txn-b"),
                        s("txn-c"),
                    ])
                } else {
                    req.with_key(s("orders-app"))
                }
            },
            |v, code, _, resp| {
                let ResponseKind::FindCoordinator(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(code, ResponseError::CoordinatorNotAvailable.code());
                let want_message = message(code);
                if v >= 4 {
                    let keys: Vec<_> = resp.coordinators.iter().map(|c| c.key.clone()).collect();
                    assert_eq!(keys, [s("txn-a"), s("txn-b"), s("txn-c")]);
                    for c in &resp.coordinators {
                        assert_eq!(c.error_code, code);
                        assert_eq!((c.node_id, c.host.as_str(), c.port), (BrokerId(-1), "", -1));
                        assert_eq!(c.error_message, want_message);
                    }
                } else {
                    assert_eq!(resp.error_code, code);
                    assert_eq!(
                        (resp.node_id, resp.host.as_str(), resp.port),
                        (BrokerId(-1), "", -1)
                    );
                    if v >= 1 {
                        assert_eq!(resp.error_message, want_message);
                    }
                    assert!(resp.coordinators.is_empty());
                }
            },
        );
    }

    #[test]
    fn join_group_answers_with_no_generation_member_or_protocol() {
        each_version(
            ApiKey::JoinGroup,
            |v| {
                let mut req = JoinGroupRequest::default()
                    .with_group_id(group("orders-app"))
                    .with_session_timeout_ms(45_000)
                    .with_member_id(s("consumer-1-4f2a"))
                    .with_protocol_type(s("consumer"))
                    .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                    )
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"subscription"))]);
                if v >= 1 {
                    req.rebalance_timeout_ms = 300_000;
                }
                req
            },
            |v, code, _, resp| {
                let ResponseKind::JoinGroup(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(code, ResponseError::NotCoordinator.code());
                assert_eq!(resp.error_code, code);
                assert_eq!(resp.generation_id, -1);
                assert!(resp.member_id.is_empty() && resp.leader.is_empty());
                assert!(resp.members.is_empty());
                assert_eq!(resp.protocol_name, (v < 7).then(StrBytes::default));
            },
        );
    }

    #[test]
    fn sync_group_and_heartbeat_answer_with_the_code() {
        each_version(
            ApiKey::SyncGroup,
            |_| {
                SyncGroupRequest::default()
                    .with_group_id(group("orders-app"))
                    .with_generation_id(3)
                    .with_member_id(s("consumer-1-4f2a"))
                    .with_assignments(vec![
                        sync_group_request::SyncGroupRequestAssignment::default()
                            .with_member_id(s("consumer-1-4f2a"))
                            .with_assignment(Bytes::from_static(b"assignment")),
                    ])
            },
            |_, code, _, resp| {
                let ResponseKind::SyncGroup(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(resp.error_code, code);
                assert!(resp.assignment.is_empty());
            },
        );
        each_version(
            ApiKey::Heartbeat,
            |_| {
                HeartbeatRequest::default()
                    .with_group_id(group("orders-app"))
                    .with_generation_id(3)
                    .with_member_id(s("consumer-1-4f2a"))
            },
            |_, code, _, resp| {
                let ResponseKind::Heartbeat(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(resp.error_code, code);
            },
        );
    }

    #[test]
    fn leave_group_answers_each_member_it_names() {
        each_version(
            ApiKey::LeaveGroup,
            |v| {
                let req = LeaveGroupRequest::default().with_group_id(group("orders-app"));
                if v >= 3 {
                    req.with_members(vec![
                        leave_group_request::MemberIdentity::default()
                            .with_member_id(s("consumer-1-4f2a")),
                        leave_group_request::MemberIdentity::default()
                            .with_member_id(s("consumer-2-9b1c"))
                            .with_group_instance_id(Some(s("static-2"))),
                    ])
                } else {
                    req.with_member_id(s("consumer-1-4f2a"))
                }
            },
            |v, code, _, resp| {
                let ResponseKind::LeaveGroup(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(resp.error_code, code);
                let members: Vec<_> = resp
                    .members
                    .iter()
                    .map(|m| {
                        (
                            m.member_id.clone(),
                            m.group_instance_id.clone(),
                            m.error_code,
                        )
                    })
                    .collect();
                if v >= 3 {
                    assert_eq!(
                        members,
                        [
                            (s("consumer-1-4f2a"), None, code),
                            (s("consumer-2-9b1c"), Some(s("static-2")), code)
                        ]
                    );
                } else {
                    assert!(members.is_empty());
                }
            },
        );
    }

    #[test]
    fn offset_commit_answers_every_partition() {
        each_version(
            ApiKey::OffsetCommit,
            |_| {
                let t = |name, parts: &[i32]| {
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic(name))
                        .with_partitions(
                            parts
                                .iter()
                                .map(|&i| {
                                    offset_commit_request::OffsetCommitRequestPartition::default()
                                        .with_partition_index(i)
                                        .with_committed_offset(42)
                                })
                                .collect(),
                        )
                };
                OffsetCommitRequest::default()
                    .with_group_id(group("orders-app"))
                    .with_topics(vec![t("orders", &[0, 1]), t("payments", &[7])])
            },
            |_, code, _, resp| {
                let ResponseKind::OffsetCommit(resp) = resp else {
                    panic!("wrong kind")
                };
                let names: Vec<_> = resp.topics.iter().map(|t| t.name.clone()).collect();
                assert_eq!(names, [topic("orders"), topic("payments")]);
                assert_eq!(
                    partitions(&resp.topics, |t| &t.partitions, |p| p.partition_index),
                    vec![vec![0, 1], vec![7]]
                );
                assert!(resp
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|p| p.error_code == code));
            },
        );
    }

    #[test]
    fn offset_fetch_answers_each_group_and_partition() {
        each_version(
            ApiKey::OffsetFetch,
            |v| {
                if v >= 8 {
                    let t = |name, parts: Vec<i32>| {
                        offset_fetch_request::OffsetFetchRequestTopics::default()
                            .with_name(topic(name))
                            .with_partition_indexes(parts)
                    };
                    OffsetFetchRequest::default().with_groups(vec![
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(group("orders-app"))
                            .with_topics(Some(vec![
                                t("orders", vec![0, 1]),
                                t("payments", vec![2]),
                            ])),
                        // All of the group's partitions.
                        offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(group("audit"))
                            .with_topics(None),
                    ])
                } else {
                    let t = |name, parts: Vec<i32>| {
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic(name))
                            .with_partition_indexes(parts)
                    };
                    OffsetFetchRequest::default()
                        .with_group_id(group("orders-app"))
                        .with_topics(Some(vec![t("orders", vec![0, 1]), t("payments", vec![2])]))
                }
            },
            |v, code, _, resp| {
                let ResponseKind::OffsetFetch(resp) = resp else {
                    panic!("wrong kind")
                };
                if v >= 8 {
                    let groups: Vec<_> = resp
                        .groups
                        .iter()
                        .map(|g| (g.group_id.clone(), g.error_code))
                        .collect();
                    assert_eq!(
                        groups,
                        [(group("orders-app"), code), (group("audit"), code)]
                    );
                    let topics = &resp.groups[0].topics;
                    let names: Vec<_> = topics.iter().map(|t| t.name.clone()).collect();
                    assert_eq!(names, [topic("orders"), topic("payments")]);
                    assert_eq!(
                        partitions(topics, |t| &t.partitions, |p| p.partition_index),
                        vec![vec![0, 1], vec![2]]
                    );
                    for p in topics.iter().flat_map(|t| &t.partitions) {
                        assert_eq!((p.error_code, p.committed_offset), (code, -1));
                    }
                    assert!(resp.groups[1].topics.is_empty());
                } else {
                    assert_eq!(resp.error_code, if v >= 2 { code } else { 0 });
                    let names: Vec<_> = resp.topics.iter().map(|t| t.name.clone()).collect();
                    assert_eq!(names, [topic("orders"), topic("payments")]);
                    assert_eq!(
                        partitions(&resp.topics, |t| &t.partitions, |p| p.partition_index),
                        vec![vec![0, 1], vec![2]]
                    );
                    for p in resp.topics.iter().flat_map(|t| &t.partitions) {
                        assert_eq!((p.error_code, p.committed_offset), (code, -1));
                    }
                }
            },
        );
    }

    #[test]
    fn group_listing_and_deletion_answer_each_group() {
        each_version(
            ApiKey::DescribeGroups,
            |_| {
                DescribeGroupsRequest::default()
                    .with_groups(vec![group("orders-app"), group("audit")])
            },
            |v, code, _, resp| {
                let ResponseKind::DescribeGroups(resp) = resp else {
                    panic!("wrong kind")
                };
                let groups: Vec<_> = resp
                    .groups
                    .iter()
                    .map(|g| (g.group_id.clone(), g.error_code))
                    .collect();
                assert_eq!(
                    groups,
                    [(group("orders-app"), code), (group("audit"), code)]
                );
                for g in &resp.groups {
                    assert!(g.members.is_empty() && g.group_state.is_empty());
                    let want = if v >= 6 { message(code) } else { None };
                    assert_eq!(g.error_message, want);
                }
            },
        );
        each_version(
            ApiKey::ListGroups,
            |_| ListGroupsRequest::default(),
            |_, code, _, resp| {
                let ResponseKind::ListGroups(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(code, ResponseError::CoordinatorNotAvailable.code());
                assert_eq!(resp.error_code, code);
                assert!(resp.groups.is_empty());
            },
        );
        each_version(
            ApiKey::DeleteGroups,
            |_| {
                DeleteGroupsRequest::default()
                    .with_groups_names(vec![group("orders-app"), group("audit")])
            },
            |_, code, _, resp| {
                let ResponseKind::DeleteGroups(resp) = resp else {
                    panic!("wrong kind")
                };
                let groups: Vec<_> = resp
                    .results
                    .iter()
                    .map(|g| (g.group_id.clone(), g.error_code))
                    .collect();
                assert_eq!(
                    groups,
                    [(group("orders-app"), code), (group("audit"), code)]
                );
            },
        );
        each_version(
            ApiKey::OffsetDelete,
            |_| {
                let t = |name, parts: &[i32]| {
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic(name))
                        .with_partitions(
                            parts
                                .iter()
                                .map(|&i| {
                                    offset_delete_request::OffsetDeleteRequestPartition::default()
                                        .with_partition_index(i)
                                })
                                .collect(),
                        )
                };
                OffsetDeleteRequest::default()
                    .with_group_id(group("orders-app"))
                    .with_topics(vec![t("orders", &[0, 2]), t("payments", &[1])])
            },
            |_, code, _, resp| {
                let ResponseKind::OffsetDelete(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(resp.error_code, code);
                let names: Vec<_> = resp.topics.iter().map(|t| t.name.clone()).collect();
                assert_eq!(names, [topic("orders"), topic("payments")]);
                assert_eq!(
                    partitions(&resp.topics, |t| &t.partitions, |p| p.partition_index),
                    vec![vec![0, 2], vec![1]]
                );
                assert!(resp
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|p| p.error_code == code));
            },
        );
    }

    #[test]
    fn topic_administration_answers_each_topic() {
        each_version(
            ApiKey::CreateTopics,
            |_| {
                let t = |name| {
                    create_topics_request::CreatableTopic::default()
                        .with_name(topic(name))
                        .with_num_partitions(6)
                        .with_replication_factor(3)
                };
                CreateTopicsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![t("orders"), t("payments")])
            },
            |_, code, _, resp| {
                let ResponseKind::CreateTopics(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(code, ResponseError::RequestTimedOut.code());
                let names: Vec<_> = resp.topics.iter().map(|t| t.name.clone()).collect();
                assert_eq!(names, [topic("orders"), topic("payments")]);
                for t in &resp.topics {
                    assert_eq!(t.error_code, code);
                    assert_eq!(t.error_message, message(code));
                    assert_eq!((t.num_partitions, t.replication_factor), (-1, -1));
                }
            },
        );
        each_version(
            ApiKey::DeleteTopics,
            |v| {
                let req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
                if v >= 6 {
                    req.with_topics(vec![
                        delete_topics_request::DeleteTopicState::default()
                            .with_name(Some(topic("orders"))),
                        delete_topics_request::DeleteTopicState::default()
                            .with_name(None)
                            .with_topic_id(PAYMENTS_ID),
                    ])
                } else {
                    req.with_topic_names(vec![topic("orders"), topic("payments")])
                }
            },
            |v, code, _, resp| {
                let ResponseKind::DeleteTopics(resp) = resp else {
                    panic!("wrong kind")
                };
                let topics: Vec<_> = resp
                    .responses
                    .iter()
                    .map(|t| (t.name.clone(), t.topic_id, t.error_code))
                    .collect();
                if v >= 6 {
                    assert_eq!(
                        topics,
                        [
                            (Some(topic("orders")), Uuid::nil(), code),
                            (None, PAYMENTS_ID, code)
                        ]
                    );
                } else {
                    assert_eq!(
                        topics,
                        [
                            (Some(topic("orders")), Uuid::nil(), code),
                            (Some(topic("payments")), Uuid::nil(), code)
                        ]
                    );
                }
                for t in &resp.responses {
                    let want = if v >= 5 { message(code) } else { None };
                    assert_eq!(t.error_message, want);
                }
            },
        );
        each_version(
            ApiKey::DeleteRecords,
            |_| {
                let t = |name, parts: &[i32]| {
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(topic(name))
                        .with_partitions(
                            parts
                                .iter()
                                .map(|&i| {
                                    delete_records_request::DeleteRecordsPartition::default()
                                        .with_partition_index(i)
                                        .with_offset(100)
                                })
                                .collect(),
                        )
                };
                DeleteRecordsRequest::default()
                    .with_topics(vec![t("orders", &[0, 1]), t("payments", &[3])])
            },
            |_, code, _, resp| {
                let ResponseKind::DeleteRecords(resp) = resp else {
                    panic!("wrong kind")
                };
                // Records may have been deleted: not a plain "not the leader".
                assert_eq!(code, ResponseError::RequestTimedOut.code());
                let names: Vec<_> = resp.topics.iter().map(|t| t.name.clone()).collect();
                assert_eq!(names, [topic("orders"), topic("payments")]);
                assert_eq!(
                    partitions(&resp.topics, |t| &t.partitions, |p| p.partition_index),
                    vec![vec![0, 1], vec![3]]
                );
                for p in resp.topics.iter().flat_map(|t| &t.partitions) {
                    assert_eq!((p.error_code, p.low_watermark), (code, -1));
                }
            },
        );
        each_version(
            ApiKey::CreatePartitions,
            |_| {
                let t = |name| {
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic(name))
                        .with_count(12)
                };
                CreatePartitionsRequest::default().with_topics(vec![t("orders"), t("payments")])
            },
            |_, code, _, resp| {
                let ResponseKind::CreatePartitions(resp) = resp else {
                    panic!("wrong kind")
                };
                let topics: Vec<_> = resp
                    .results
                    .iter()
                    .map(|t| (t.name.clone(), t.error_code, t.error_message.clone()))
                    .collect();
                assert_eq!(
                    topics,
                    [
                        (topic("orders"), code, message(code)),
                        (topic("payments"), code, message(code))
                    ]
                );
            },
        );
    }

    #[test]
    fn config_requests_answer_each_resource() {
        each_version(
            ApiKey::DescribeConfigs,
            |_| {
                let r = |name| {
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(name))
                        .with_configuration_keys(Some(vec![s("retention.ms")]))
                };
                DescribeConfigsRequest::default().with_resources(vec![r("orders"), r("payments")])
            },
            |_, code, _, resp| {
                let ResponseKind::DescribeConfigs(resp) = resp else {
                    panic!("wrong kind")
                };
                let results: Vec<_> = resp
                    .results
                    .iter()
                    .map(|r| (r.resource_type, r.resource_name.clone(), r.error_code))
                    .collect();
                assert_eq!(results, [(2, s("orders"), code), (2, s("payments"), code)]);
                for r in &resp.results {
                    assert!(r.configs.is_empty());
                    assert_eq!(r.error_message, message(code));
                }
            },
        );
        each_version(
            ApiKey::IncrementalAlterConfigs,
            |_| {
                let r = |name| {
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s(name))
                        .with_configs(vec![
                            incremental_alter_configs_request::AlterableConfig::default()
                                .with_name(s("retention.ms"))
                                .with_value(Some(s("3600000"))),
                        ])
                };
                IncrementalAlterConfigsRequest::default()
                    .with_resources(vec![r("orders"), r("payments")])
            },
            |_, code, _, resp| {
                let ResponseKind::IncrementalAlterConfigs(resp) = resp else {
                    panic!("wrong kind")
                };
                let results: Vec<_> = resp
                    .responses
                    .iter()
                    .map(|r| {
                        let text = r.error_message.clone();
                        (r.resource_type, r.resource_name.clone(), r.error_code, text)
                    })
                    .collect();
                assert_eq!(
                    results,
                    [
                        (2, s("orders"), code, message(code)),
                        (2, s("payments"), code, message(code))
                    ]
                );
            },
        );
    }

    #[test]
    fn transaction_apis_answer_with_no_producer_and_every_partition() {
        for txn in [None, Some(TransactionalId(s("orders-writer")))] {
            each_version(
                ApiKey::InitProducerId,
                |_| {
                    InitProducerIdRequest::default()
                        .with_transactional_id(txn.clone())
                        .with_transaction_timeout_ms(60_000)
                },
                |_, code, _, resp| {
                    let ResponseKind::InitProducerId(resp) = resp else {
                        panic!("wrong kind")
                    };
                    assert_eq!(code, ResponseError::CoordinatorLoadInProgress.code());
                    assert_eq!(resp.error_code, code);
                    assert_eq!(
                        (resp.producer_id, resp.producer_epoch),
                        (ProducerId(-1), -1)
                    );
                },
            );
        }
        each_version(
            ApiKey::AddPartitionsToTxn,
            |_| {
                let t = |name, parts: Vec<i32>| {
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic(name))
                        .with_partitions(parts)
                };
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(s("orders-writer")))
                    .with_v3_and_below_producer_id(ProducerId(4000))
                    .with_v3_and_below_topics(vec![t("orders", vec![0, 1]), t("payments", vec![2])])
            },
            |_, code, _, resp| {
                let ResponseKind::AddPartitionsToTxn(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(code, ResponseError::NotCoordinator.code());
                let topics = &resp.results_by_topic_v3_and_below;
                let names: Vec<_> = topics.iter().map(|t| t.name.clone()).collect();
                assert_eq!(names, [topic("orders"), topic("payments")]);
                assert_eq!(
                    partitions(topics, |t| &t.results_by_partition, |p| p.partition_index),
                    vec![vec![0, 1], vec![2]]
                );
                assert!(topics
                    .iter()
                    .flat_map(|t| &t.results_by_partition)
                    .all(|p| p.partition_error_code == code));
            },
        );
        each_version(
            ApiKey::AddOffsetsToTxn,
            |_| {
                AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TransactionalId(s("orders-writer")))
                    .with_group_id(group("orders-app"))
            },
            |_, code, _, resp| {
                let ResponseKind::AddOffsetsToTxn(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(resp.error_code, code);
            },
        );
        each_version(
            ApiKey::EndTxn,
            |_| {
                EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(s("orders-writer")))
                    .with_committed(true)
            },
            |_, code, _, resp| {
                let ResponseKind::EndTxn(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(resp.error_code, code);
            },
        );
        each_version(
            ApiKey::TxnOffsetCommit,
            |_| {
                let t = |name, parts: &[i32]| {
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(topic(name))
                        .with_partitions(
                            parts
                                .iter()
                                .map(|&i| {
                                    TxnOffsetCommitRequestPartition::default()
                                        .with_partition_index(i)
                                        .with_committed_offset(42)
                                })
                                .collect(),
                        )
                };
                TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s("orders-writer")))
                    .with_group_id(group("orders-app"))
                    .with_topics(vec![t("orders", &[0, 1]), t("payments", &[5])])
            },
            |_, code, _, resp| {
                let ResponseKind::TxnOffsetCommit(resp) = resp else {
                    panic!("wrong kind")
                };
                let names: Vec<_> = resp.topics.iter().map(|t| t.name.clone()).collect();
                assert_eq!(names, [topic("orders"), topic("payments")]);
                assert_eq!(
                    partitions(&resp.topics, |t| &t.partitions, |p| p.partition_index),
                    vec![vec![0, 1], vec![5]]
                );
                assert!(resp
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|p| p.error_code == code));
            },
        );
    }

    #[test]
    fn add_partitions_to_txn_in_the_batched_form_gets_the_top_level_code() {
        // v4+ is not advertised, but an answer must still encode.
        let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s("orders-writer"))),
        ]);
        for v in 4..=5 {
            let req = received(ApiKey::AddPartitionsToTxn, req.clone(), v);
            let ResponseKind::AddPartitionsToTxn(resp) =
                answered(ApiKey::AddPartitionsToTxn, &req, v, 16)
            else {
                panic!("wrong kind")
            };
            assert_eq!(resp.error_code, 16);
        }
    }

    #[test]
    fn describe_cluster_answers_with_no_brokers_or_controller() {
        each_version(
            ApiKey::DescribeCluster,
            |_| DescribeClusterRequest::default(),
            |_, code, _, resp| {
                let ResponseKind::DescribeCluster(resp) = resp else {
                    panic!("wrong kind")
                };
                assert_eq!(resp.error_code, code);
                assert_eq!(resp.error_message, message(code));
                assert!(resp.brokers.is_empty());
                assert_eq!(resp.controller_id, BrokerId(-1));
            },
        );
    }

    #[test]
    fn codes_make_clients_find_their_coordinator_refresh_or_retry() {
        let refused = UpstreamError::Connect {
            addr: "b:9092".into(),
            reason: "refused".into(),
        };
        let dropped = UpstreamError::Io {
            addr: "b:9092".into(),
            reason: "reset".into(),
        };
        let late = UpstreamError::Timeout {
            addr: "b:9092".into(),
            timeout: std::time::Duration::from_secs(30),
        };
        let garbled = UpstreamError::Decode {
            addr: "b:9092".into(),
            reason: "short".into(),
        };
        let code = |api, e: &UpstreamError| ResponseError::try_from_code(retriable_code(api, e));
        for e in [&refused, &dropped, &late, &UpstreamError::NoBrokers] {
            for api in [ApiKey::JoinGroup, ApiKey::OffsetCommit, ApiKey::EndTxn] {
                assert_eq!(code(api, e), Some(ResponseError::NotCoordinator));
            }
            assert_eq!(
                code(ApiKey::FindCoordinator, e),
                Some(ResponseError::CoordinatorNotAvailable)
            );
            assert_eq!(
                code(ApiKey::CreateTopics, e),
                Some(ResponseError::RequestTimedOut)
            );
            assert_eq!(
                code(ApiKey::Fetch, e),
                Some(ResponseError::NotLeaderOrFollower)
            );
        }
        // Partition writes: only a request that never left says "not the leader".
        assert_eq!(
            code(ApiKey::Produce, &refused),
            Some(ResponseError::NotLeaderOrFollower)
        );
        for e in [&dropped, &late] {
            assert_eq!(
                code(ApiKey::Produce, e),
                Some(ResponseError::RequestTimedOut)
            );
        }
        // An answer we cannot read is no reason to retry, for any API, as for split parts.
        for api in [ApiKey::Produce, ApiKey::Heartbeat, ApiKey::Metadata] {
            assert_eq!(code(api, &garbled), Some(ResponseError::UnknownServerError));
        }
        // Everything else is one clients retry.
        for &(api, ..) in HANDLED {
            for e in [&refused, &dropped, &late, &UpstreamError::NoBrokers] {
                assert!(
                    code(api, e).is_some_and(|c| c.is_retriable()),
                    "{api:?} {e}"
                );
            }
        }
    }
}
