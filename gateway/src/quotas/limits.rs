//! The quotas that are counts rather than rates (issue 13; CONTRACT, "Quotas and limits"):
//! partitions, partition mutations per 5 minutes, connections and connection attempts,
//! consumer groups and stored bytes. Byte and request rates are the throttling's.
//!
//! - [`quotas_of`]: a cluster's quotas as they are now (the admin API changes them live).

use crate::quotas::Quotas;
use crate::state::Gateway;
use crate::tenancy::Cluster;

/// The quotas of `cluster` as the registry has them now: a PATCH applies to connections
/// already open. A cluster no longer registered keeps the quotas it connected with.
pub fn quotas_of(gw: &Gateway, cluster: &Cluster) -> Quotas {
    gw.registry()
        .get(&cluster.id)
        .map_or(cluster.quotas, |c| c.quotas)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::api::{testing, Ctx, Reply};

    const ALLOW_ALL: &str =
        r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#;

    /// Sets quotas on the test context's cluster, as a PATCH does.
    pub(crate) fn set_quotas(ctx: &Ctx, change: impl FnOnce(&mut Quotas)) {
        let mut cluster = (*ctx.gw.registry().get(&ctx.session.cluster.id).unwrap()).clone();
        change(&mut cluster.quotas);
        ctx.gw.registry().upsert(cluster);
    }

    fn now(reply: Reply) -> ResponseKind {
        match reply {
            Reply::Now(r) => *r,
            _ => panic!("answered by the pool, not refused"),
        }
    }

    #[tokio::test]
    async fn create_topics_keeps_to_the_live_max_partitions_quota() {
        let ctx = testing::ctx(ALLOW_ALL);
        set_quotas(&ctx, |q| q.max_partitions = Some(3));
        let topic = |name: &str, n: i32| {
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_num_partitions(n)
        };
        let req = CreateTopicsRequest::default().with_topics(vec![topic("big", 4)]);
        let ResponseKind::CreateTopics(resp) = now(crate::api::topics::create_topics(&ctx, 7, req)
            .await
            .unwrap())
        else {
            panic!()
        };
        let t = &resp.topics[0];
        assert_eq!(t.error_code, crate::api::topic_policy::POLICY_VIOLATION);
        let message = t.error_message.as_ref().unwrap().as_str();
        assert!(
            message.contains("at most 3 partitions") && message.contains("max_partitions"),
            "{message}"
        );
    }
}
