//! Metadata and DescribeCluster: the gateway's nodes are the cluster's brokers.
//!
//! The pool's brokers, node ids, addresses and cluster id never reach a tenant: brokers are
//! replaced by the gateway nodes, every partition is led by a gateway node (replicas and ISR
//! are that node), the cluster id is the tenant cluster's id, and topics outside the tenant's
//! namespace (or that the principal may not describe) are not listed at all.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest,
    MetadataResponse, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{forward_any, topics_of_ids, Ctx, Reply, INVALID_TOPIC, TOPIC_DENIED};
use crate::identity::authz::Action;
use crate::pool::UpstreamError;

pub async fn metadata(
    ctx: &Ctx,
    version: i16,
    mut req: MetadataRequest,
) -> Result<Reply, UpstreamError> {
    // v0 spells "all topics" as an empty list; later versions as null.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let mut refused: Vec<MetadataResponseTopic> = Vec::new();
    if all {
        req.topics = None;
        // Creating topics as a side effect of listing them all is never what a tenant means.
        req.allow_auto_topic_creation = false;
    } else {
        let mut wanted = Vec::new();
        let mut may_create = true;
        let topics = req.topics.take().unwrap_or_default();
        // By id, the name is null or (as some encoders write it) empty.
        let named_by_id = topics
            .iter()
            .filter(|t| t.name.as_ref().is_none_or(|n| n.0.is_empty()));
        let ids = topics_of_ids(ctx, named_by_id.map(|t| t.topic_id)).await?;
        for mut t in topics {
            // By id: resolve to our name first, so authorization and mapping are uniform.
            let name = match &t.name {
                Some(n) if !n.0.is_empty() || t.topic_id.is_nil() => n.clone(),
                _ => match ids.get(ctx, t.topic_id) {
                    Ok(n) => n,
                    Err(code) => {
                        refused.push(error_topic(None, t.topic_id, code));
                        continue;
                    }
                },
            };
            let physical = match ctx.topic_out(&name) {
                Ok(p) => p,
                Err(_) => {
                    refused.push(error_topic(Some(name), t.topic_id, INVALID_TOPIC));
                    continue;
                }
            };
            if !ctx.session.may_topic(Action::DescribeTopic, &name.0) {
                refused.push(error_topic(Some(name), t.topic_id, TOPIC_DENIED));
                continue;
            }
            // Auto-creation is implicit: not allowed, it just does not happen.
            may_create &= ctx.session.allows_topic(Action::CreateTopic, &name.0);
            t.name = Some(physical);
            // Ask by name only; older pools may not look up ids.
            t.topic_id = uuid::Uuid::nil();
            wanted.push(t);
        }
        req.allow_auto_topic_creation &= may_create;
        if wanted.is_empty() {
            let resp = presented(ctx, version, MetadataResponse::default(), refused);
            return Ok(Reply::now(ResponseKind::Metadata(resp)));
        }
        req.topics = Some(wanted);
    }
    // The field exists from v4; before, the pool's own setting decides (a pool the gateway
    // fronts must not create topics on a Metadata request: see deploy/README.md), and setting
    // it would make the request impossible to encode.
    if version < 4 {
        req.allow_auto_topic_creation = true;
    }
    // Per-topic authorized operations are computed by the pool for its own principal; they
    // would be meaningless, so they are not asked for.
    req.include_cluster_authorized_operations = false;
    req.include_topic_authorized_operations = false;

    let answer = forward_any::<_, MetadataResponse>(ctx, ApiKey::Metadata, version, &req).await?;
    let ctx = ctx.clone();
    Ok(Reply::later(async move {
        let resp = answer.await?;
        ctx.gw.router().learn_metadata(&resp);
        ctx.gw.router().learn_topic_ids(
            resp.topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| (t.topic_id, n.0.as_str()))),
        );
        Ok(ResponseKind::Metadata(presented(
            &ctx, version, resp, refused,
        )))
    }))
}

fn error_topic(name: Option<TopicName>, id: uuid::Uuid, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name)
        .with_topic_id(id)
        .with_error_code(code)
        .with_topic_authorized_operations(i32::MIN)
}

/// Rewrites a pool answer into what the tenant sees.
fn presented(
    ctx: &Ctx,
    version: i16,
    mut resp: MetadataResponse,
    refused: Vec<MetadataResponseTopic>,
) -> MetadataResponse {
    resp.brokers = ctx
        .gw
        .config()
        .nodes
        .iter()
        .map(|n| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(n.id))
                .with_host(StrBytes::from_string(n.host.clone()))
                .with_port(n.port)
        })
        .collect();
    resp.cluster_id = Some(StrBytes::from_string(
        ctx.session.cluster.id.as_hyphenated().to_string(),
    ));
    resp.controller_id = BrokerId(ctx.gw.first_node().id);
    resp.cluster_authorized_operations = i32::MIN;
    resp.unknown_tagged_fields.clear();
    resp.topics.retain_mut(|t| {
        let Some(name) = t.name.as_mut() else {
            return false;
        };
        let physical = name.0.clone();
        if !ctx.topic_back(name) || !ctx.session.allows_topic(Action::DescribeTopic, &name.0) {
            return false;
        }
        t.is_internal = false;
        t.topic_authorized_operations = i32::MIN;
        t.unknown_tagged_fields.clear();
        let ids: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
        let (at, brokers) = ctx.gw.router().placement(&physical, &ids);
        let logical = name.0.to_string();
        for (p, at) in t.partitions.iter_mut().zip(at) {
            let node = ctx
                .gw
                .partition_node(&logical, p.partition_index, at, brokers);
            let leader = BrokerId(node.id);
            p.leader_id = leader;
            p.replica_nodes = vec![leader];
            p.isr_nodes = vec![leader];
            p.offline_replicas = Vec::new();
            p.unknown_tagged_fields.clear();
        }
        true
    });
    resp.topics.extend(refused);
    let _ = version;
    resp
}

pub fn describe_cluster(ctx: &Ctx, version: i16, req: DescribeClusterRequest) -> Reply {
    let _ = version;
    let mut resp = DescribeClusterResponse::default()
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(
            ctx.session.cluster.id.as_hyphenated().to_string(),
        ))
        .with_controller_id(BrokerId(ctx.gw.first_node().id))
        .with_cluster_authorized_operations(i32::MIN);
    if !ctx.session.may_cluster(Action::DescribeCluster) {
        resp.error_code = super::CLUSTER_DENIED;
        resp.error_message = Some(StrBytes::from_static_str(
            "the policy does not allow kafka-cluster:DescribeCluster",
        ));
        return Reply::now(ResponseKind::DescribeCluster(resp));
    }
    resp.brokers = ctx
        .gw
        .config()
        .nodes
        .iter()
        .map(|n| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(n.id))
                .with_host(StrBytes::from_string(n.host.clone()))
                .with_port(n.port)
        })
        .collect();
    Reply::now(ResponseKind::DescribeCluster(resp))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use kafka_protocol::messages::metadata_response::MetadataResponsePartition;
    use kafka_protocol::protocol::{Decodable, Encodable};
    use uuid::Uuid;

    use super::*;
    use crate::api::testing::{ctx, ctx_on};
    use crate::pool::testing::FakeBroker;
    use crate::pool::{Pool, Timeouts};

    fn topic(name: &str, partitions: i32) -> MetadataResponseTopic {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.into()))))
            .with_topic_id(Uuid::new_v4())
            .with_partitions(
                (0..partitions)
                    .map(|i| {
                        MetadataResponsePartition::default()
                            .with_partition_index(i)
                            .with_leader_id(BrokerId(111))
                            .with_replica_nodes(vec![BrokerId(111), BrokerId(112)])
                            .with_isr_nodes(vec![BrokerId(111)])
                    })
                    .collect(),
            )
    }

    #[test]
    fn metadata_shows_only_own_described_topics_and_gateway_nodes() {
        let ctx = ctx(
            r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"},
               {"Effect":"Deny","Action":"kafka-cluster:DescribeTopic","Resource":"*/secret"}]}"#,
        );
        let own = ctx.session.namespace.prefix().to_owned();
        let other = crate::tenancy::Namespace::of(Uuid::from_u128(0xb));
        let pool = MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(111))
                .with_host(StrBytes::from_static_str("pool-0.internal"))
                .with_port(9092)])
            .with_cluster_id(Some(StrBytes::from_static_str("pool-cluster")))
            .with_controller_id(BrokerId(111))
            .with_topics(vec![
                topic(&format!("{own}orders"), 2),
                topic(&format!("{own}secret"), 1),
                topic(&other.topic("orders").unwrap(), 3),
                topic("__consumer_offsets", 50),
            ]);
        for version in [1, 9, 12] {
            let shown = presented(&ctx, version, pool.clone(), Vec::new());
            // Round trip: what the gateway encodes is what a client decodes.
            let mut buf = BytesMut::new();
            shown.encode(&mut buf, version).unwrap();
            let decoded = MetadataResponse::decode(&mut buf.freeze(), version).unwrap();
            let names: Vec<_> = decoded
                .topics
                .iter()
                .map(|t| t.name.as_ref().unwrap().0.to_string())
                .collect();
            assert_eq!(names, ["orders"], "v{version}");
            assert_eq!(decoded.brokers.len(), 1);
            assert_eq!(decoded.brokers[0].node_id.0, 7);
            assert_eq!(decoded.brokers[0].host.as_str(), "gw.example");
            assert_eq!(decoded.controller_id.0, 7);
            for p in &decoded.topics[0].partitions {
                assert_eq!(p.leader_id.0, 7);
                assert_eq!(p.replica_nodes, vec![BrokerId(7)]);
                assert_eq!(p.isr_nodes, vec![BrokerId(7)]);
            }
            if version >= 2 {
                let expected = Uuid::from_u128(0xa).as_hyphenated().to_string();
                assert_eq!(decoded.cluster_id.as_deref(), Some(expected.as_str()));
            }
        }
    }

    /// Versions before 4 have no field for automatic topic creation: the request must still
    /// encode (it used to be refused as unencodable, closing the client's connection).
    #[tokio::test]
    async fn every_metadata_version_is_forwarded() {
        let fake = FakeBroker::start(Vec::new(), Duration::ZERO).await;
        let pool = Pool::new(Timeouts::default());
        pool.add_broker(&fake.addr).await.expect("the fake answers");
        let ctx = ctx_on(
            r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#,
            pool,
        );
        for version in 1..=12 {
            let every_topic = MetadataRequest::default().with_topics(None);
            let Reply::Later(answer) = metadata(&ctx, version, every_topic).await.unwrap() else {
                panic!("v{version}: expected the request forwarded");
            };
            assert!(answer.await.is_ok(), "v{version}");
        }
    }

    /// The pool learns which cluster a request is for from its client id, and nothing of the
    /// client's own (handlers are never given it). What reached the broker is what is under
    /// test, which only a fake broker records.
    #[tokio::test]
    async fn a_forwarded_request_names_the_cluster_to_the_pool() {
        let fake = FakeBroker::start(Vec::new(), Duration::ZERO).await;
        let pool = Pool::new(Timeouts::default());
        pool.add_broker(&fake.addr).await.expect("the fake answers");
        let ctx = ctx_on(
            r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#,
            pool,
        );
        let every_topic = MetadataRequest::default().with_topics(None);
        let Reply::Later(answer) = metadata(&ctx, 12, every_topic).await.unwrap() else {
            panic!("metadata is asked of the pool");
        };
        assert!(answer.await.is_ok());
        let asked: Vec<_> = fake
            .seen()
            .into_iter()
            .filter(|s| s.api == ApiKey::Metadata)
            .map(|s| s.client_id)
            .collect();
        let cluster = Uuid::from_u128(0xa).hyphenated();
        assert_eq!(asked, [Some(format!("tollgate/{cluster}"))]);
    }
}
