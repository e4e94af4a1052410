//! No free text from the pool reaches a tenant.
//!
//! Error messages are written by the pool's brokers for the pool's operators: they name
//! physical topics (`tg-<32 hex>-name`), other tenants' names, broker counts and addresses.
//! Renaming what we recognise in them cannot be complete, so [`scrub`] replaces every message
//! with one of the gateway's own made from the error code beside it, which is what clients act
//! on anyway. A message that was null stays null.
//!
//! Scrub the pool's answer before the gateway adds entries of its own (refusals), whose
//! messages are the gateway's and worth keeping.

use kafka_protocol::messages::ResponseKind;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// The gateway's message for an error code: the error's name (`NotCoordinator`,
/// `Unknown error code: 1234`); none for success.
pub fn message(code: i16) -> Option<StrBytes> {
    ResponseError::try_from_code(code).map(|e| StrBytes::from_string(e.to_string()))
}

/// Replaces a pool message with ours. Nothing is allocated when there is no message, so an
/// answer without messages costs one pass over its entries.
fn replace(text: &mut Option<StrBytes>, code: i16) {
    if text.is_some() {
        *text = message(code);
    }
}

/// Replaces every free-text field of the pool's answer with the gateway's message for the
/// error code it accompanies.
pub fn scrub(resp: &mut ResponseKind) {
    match resp {
        ResponseKind::Produce(r) => {
            for p in r
                .responses
                .iter_mut()
                .flat_map(|t| t.partition_responses.iter_mut())
            {
                replace(&mut p.error_message, p.error_code);
                // A batch's record errors explain the partition's code (INVALID_RECORD); they
                // quote the pool's validation text, so they get the partition's message.
                for e in &mut p.record_errors {
                    replace(&mut e.batch_index_error_message, p.error_code);
                }
            }
        }
        ResponseKind::FindCoordinator(r) => {
            replace(&mut r.error_message, r.error_code);
            for c in &mut r.coordinators {
                replace(&mut c.error_message, c.error_code);
            }
        }
        ResponseKind::DescribeGroups(r) => {
            for g in &mut r.groups {
                replace(&mut g.error_message, g.error_code);
            }
        }
        ResponseKind::CreateTopics(r) => {
            for t in &mut r.topics {
                replace(&mut t.error_message, t.error_code);
            }
        }
        ResponseKind::DeleteTopics(r) => {
            for t in &mut r.responses {
                replace(&mut t.error_message, t.error_code);
            }
        }
        ResponseKind::CreatePartitions(r) => {
            for t in &mut r.results {
                replace(&mut t.error_message, t.error_code);
            }
        }
        ResponseKind::DescribeConfigs(r) => {
            for c in &mut r.results {
                replace(&mut c.error_message, c.error_code);
            }
        }
        ResponseKind::IncrementalAlterConfigs(r) => {
            for c in &mut r.responses {
                replace(&mut c.error_message, c.error_code);
            }
        }
        ResponseKind::DescribeCluster(r) => replace(&mut r.error_message, r.error_code),
        // The other answers of the APIs the gateway forwards carry no free text: Metadata,
        // Fetch, ListOffsets, OffsetForLeaderEpoch, the group APIs but DescribeGroups,
        // DeleteRecords, InitProducerId and the transaction APIs have codes only.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::*;

    use super::*;
    use crate::api::versions::HANDLED;

    /// What a pool broker writes: physical names, other tenants, broker addresses.
    const POOL_TEXT: &str = "Topic tg-0123456789abcdef0123456789abcdef-orders has 3 replicas \
        but tenant tg-fedcba9876543210fedcba9876543210-billing; \
        brokers 10.0.3.7:9092,10.0.3.8:9092";

    fn pool_text() -> Option<StrBytes> {
        Some(StrBytes::from_static_str(POOL_TEXT))
    }

    const INVALID_RECORD: i16 = ResponseError::InvalidRecord.code();
    const POLICY: i16 = ResponseError::PolicyViolation.code();

    fn ours(code: i16) -> Option<StrBytes> {
        message(code)
    }

    #[test]
    fn messages_are_the_error_names_and_none_for_success() {
        assert_eq!(message(0), None);
        assert_eq!(message(16).as_deref(), Some("NotCoordinator"));
        assert_eq!(message(-1).as_deref(), Some("UnknownServerError"));
        // A code this library does not know still gets a message of ours, not the pool's.
        assert_eq!(message(9999).as_deref(), Some("Unknown error code: 9999"));
    }

    fn produce_answer(messages: bool) -> ProduceResponse {
        let partition = |i, code| {
            let mut p = produce_response::PartitionProduceResponse::default()
                .with_index(i)
                .with_error_code(code)
                .with_base_offset(if code == 0 { 100 } else { -1 });
            if messages && code != 0 {
                p.error_message = pool_text();
                p.record_errors = vec![
                    produce_response::BatchIndexAndErrorMessage::default()
                        .with_batch_index(0)
                        .with_batch_index_error_message(pool_text()),
                    produce_response::BatchIndexAndErrorMessage::default()
                        .with_batch_index(3)
                        .with_batch_index_error_message(None),
                ];
            }
            p
        };
        ProduceResponse::default().with_responses(vec![
            produce_response::TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_responses(vec![partition(0, 0), partition(1, INVALID_RECORD)]),
            produce_response::TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("payments")))
                .with_partition_responses(vec![partition(2, 0)]),
        ])
    }

    #[test]
    fn produce_messages_and_record_errors_are_replaced() {
        let mut resp = ResponseKind::Produce(produce_answer(true));
        scrub(&mut resp);
        let ResponseKind::Produce(resp) = resp else {
            panic!("kind changed")
        };
        let p = &resp.responses[0].partition_responses[1];
        assert_eq!(p.error_code, INVALID_RECORD);
        assert_eq!(p.error_message, ours(INVALID_RECORD));
        assert_eq!(p.record_errors[0].batch_index, 0);
        assert_eq!(
            p.record_errors[0].batch_index_error_message,
            ours(INVALID_RECORD)
        );
        assert_eq!(p.record_errors[1].batch_index_error_message, None);
        // Everything else as it was.
        let mut want = produce_answer(true);
        want.responses[0].partition_responses[1].error_message = ours(INVALID_RECORD);
        want.responses[0].partition_responses[1].record_errors[0].batch_index_error_message =
            ours(INVALID_RECORD);
        assert_eq!(resp, want);
    }

    #[test]
    fn an_answer_without_messages_is_left_as_it_is() {
        let mut resp = ResponseKind::Produce(produce_answer(false));
        let before = resp.clone();
        scrub(&mut resp);
        assert_eq!(resp, before);
        // Null messages stay null everywhere, next to errors or not.
        let mut resp =
            ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(vec![
                create_topics_response::CreatableTopicResult::default()
                    .with_error_code(POLICY)
                    .with_error_message(None),
            ]));
        let before = resp.clone();
        scrub(&mut resp);
        assert_eq!(resp, before);
    }

    #[test]
    fn a_message_beside_success_is_dropped() {
        let mut resp =
            ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(
                vec![describe_configs_response::DescribeConfigsResult::default()
                .with_error_code(0)
                .with_error_message(pool_text())],
            ));
        scrub(&mut resp);
        let ResponseKind::DescribeConfigs(resp) = resp else {
            panic!("kind changed")
        };
        assert_eq!(resp.results[0].error_message, None);
    }

    /// Scrubs `resp` and returns every message left in it.
    fn scrubbed(mut resp: ResponseKind) -> (ResponseKind, Vec<Option<StrBytes>>) {
        scrub(&mut resp);
        let texts = match &resp {
            ResponseKind::FindCoordinator(r) => std::iter::once(r.error_message.clone())
                .chain(r.coordinators.iter().map(|c| c.error_message.clone()))
                .collect(),
            ResponseKind::DescribeGroups(r) => {
                r.groups.iter().map(|g| g.error_message.clone()).collect()
            }
            ResponseKind::CreateTopics(r) => {
                r.topics.iter().map(|t| t.error_message.clone()).collect()
            }
            ResponseKind::DeleteTopics(r) => r
                .responses
                .iter()
                .map(|t| t.error_message.clone())
                .collect(),
            ResponseKind::CreatePartitions(r) => {
                r.results.iter().map(|t| t.error_message.clone()).collect()
            }
            ResponseKind::DescribeConfigs(r) => {
                r.results.iter().map(|t| t.error_message.clone()).collect()
            }
            ResponseKind::IncrementalAlterConfigs(r) => r
                .responses
                .iter()
                .map(|t| t.error_message.clone())
                .collect(),
            ResponseKind::DescribeCluster(r) => vec![r.error_message.clone()],
            other => panic!("no messages in {other:?}"),
        };
        (resp, texts)
    }

    #[test]
    fn every_message_field_is_replaced_and_codes_are_kept() {
        let code = POLICY;
        let cases = vec![
            ResponseKind::FindCoordinator(
                FindCoordinatorResponse::default()
                    .with_error_code(code)
                    .with_error_message(pool_text())
                    .with_coordinators(vec![find_coordinator_response::Coordinator::default()
                        .with_error_code(code)
                        .with_error_message(pool_text())]),
            ),
            ResponseKind::DescribeGroups(DescribeGroupsResponse::default().with_groups(vec![
                describe_groups_response::DescribedGroup::default()
                    .with_error_code(code)
                    .with_error_message(pool_text()),
            ])),
            ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(vec![
                create_topics_response::CreatableTopicResult::default()
                    .with_error_code(code)
                    .with_error_message(pool_text()),
            ])),
            ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(vec![
                delete_topics_response::DeletableTopicResult::default()
                    .with_error_code(code)
                    .with_error_message(pool_text()),
            ])),
            ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(
                vec![create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_error_code(code)
                    .with_error_message(pool_text())],
            )),
            ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(vec![
                describe_configs_response::DescribeConfigsResult::default()
                    .with_error_code(code)
                    .with_error_message(pool_text()),
            ])),
            ResponseKind::IncrementalAlterConfigs(
                IncrementalAlterConfigsResponse::default().with_responses(vec![
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_error_code(code)
                        .with_error_message(pool_text()),
                ]),
            ),
            ResponseKind::DescribeCluster(
                DescribeClusterResponse::default()
                    .with_error_code(code)
                    .with_error_message(pool_text()),
            ),
        ];
        for resp in cases {
            let (after, texts) = scrubbed(resp);
            assert!(!texts.is_empty());
            for t in texts {
                assert_eq!(t, ours(code), "{after:?}");
            }
            let debug = format!("{after:?}");
            assert!(
                !debug.contains("tg-") && !debug.contains("10.0.3"),
                "{debug}"
            );
            assert!(debug.contains(&format!("error_code: {code}")), "{debug}");
        }
    }

    #[test]
    fn scrubbed_pool_answers_still_encode_at_every_version() {
        // A pool answer decoded at some version, with a message where it carries one, must
        // encode at that version after scrubbing: fields the version lacks keep their defaults.
        for &(api, ..) in HANDLED {
            let valid = api.valid_versions();
            let &(_, min, max, _) = HANDLED.iter().find(|(k, ..)| *k == api).unwrap();
            for v in min.max(valid.min)..=max.min(valid.max) {
                let Some(req) = naming_one(api) else { continue };
                let failed = crate::api::errors::error_response(&req, v, POLICY);
                let mut resp = failed.expect("covered");
                let mut buf = BytesMut::new();
                resp.encode(&mut buf, v).unwrap();
                let mut resp2 = ResponseKind::decode(api, &mut buf.freeze(), v).unwrap();
                scrub(&mut resp);
                scrub(&mut resp2);
                for r in [resp, resp2] {
                    r.encode(&mut BytesMut::new(), v)
                        .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
                }
            }
        }
    }

    /// A request of `api` naming one resource, so the failed answer has a message in it;
    /// none for the APIs whose answers have no messages.
    fn naming_one(api: ApiKey) -> Option<RequestKind> {
        let name = || StrBytes::from_static_str("orders");
        Some(match api {
            ApiKey::FindCoordinator => FindCoordinatorRequest::default()
                .with_key(name())
                .with_coordinator_keys(vec![name()])
                .into(),
            ApiKey::DescribeGroups => DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(name())])
                .into(),
            ApiKey::CreateTopics => CreateTopicsRequest::default()
                .with_topics(vec![
                    create_topics_request::CreatableTopic::default().with_name(TopicName(name()))
                ])
                .into(),
            ApiKey::DeleteTopics => DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(name())])
                .with_topics(vec![delete_topics_request::DeleteTopicState::default()])
                .into(),
            ApiKey::CreatePartitions => CreatePartitionsRequest::default()
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(TopicName(name())),
                ])
                .into(),
            ApiKey::DescribeConfigs => DescribeConfigsRequest::default()
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_name(name()),
                ])
                .into(),
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::default()
                .with_resources(vec![
                    incremental_alter_configs_request::AlterConfigsResource::default()
                        .with_resource_name(name()),
                ])
                .into(),
            ApiKey::DescribeCluster => DescribeClusterRequest::default().into(),
            _ => return None,
        })
    }
}
