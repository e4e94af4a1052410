//! Who a connection is, and what it may do.
//!
//! A [`Session`] is made when a client authenticates: the token's claims, its cluster, and the
//! namespace that cluster's names live in on the pool. Every request is checked against the
//! token's policy with the action Amazon MSK requires for that Kafka API (derived, as MSK's
//! are, from the Kafka ACL each API needs):
//!
//! | action (`kafka-cluster:`…)          | Kafka APIs                                                                 | resource        |
//! |--------------------------------------|----------------------------------------------------------------------------|-----------------|
//! | Connect                              | every connection, at SaslAuthenticate                                      | cluster         |
//! | DescribeCluster                      | DescribeCluster                                                            | cluster         |
//! | AlterCluster                         | (CreateAcls, DeleteAcls, reassignments: never reachable by tenants)       | cluster         |
//! | DescribeClusterDynamicConfiguration  | DescribeConfigs on BROKER resources (refused: the pool's brokers are not the tenant's) | cluster |
//! | AlterClusterDynamicConfiguration     | AlterConfigs / IncrementalAlterConfigs on BROKER resources (refused)      | cluster         |
//! | WriteDataIdempotently                | InitProducerId without a transactional id; idempotent Produce             | cluster         |
//! | CreateTopic                          | CreateTopics; Metadata with auto-creation                                 | topic           |
//! | DescribeTopic                        | Metadata, ListOffsets, OffsetFetch (topics), OffsetForLeaderEpoch         | topic           |
//! | AlterTopic                           | CreatePartitions                                                          | topic           |
//! | DeleteTopic                          | DeleteTopics, DeleteRecords                                               | topic           |
//! | DescribeTopicDynamicConfiguration    | DescribeConfigs on TOPIC resources                                        | topic           |
//! | AlterTopicDynamicConfiguration       | AlterConfigs / IncrementalAlterConfigs on TOPIC resources                 | topic           |
//! | ReadData                             | Fetch, OffsetCommit (topics), TxnOffsetCommit (topics), OffsetDelete (topics) | topic       |
//! | WriteData                            | Produce, AddPartitionsToTxn                                               | topic           |
//! | DescribeGroup                        | FindCoordinator (group), OffsetFetch (group), DescribeGroups, ListGroups  | group           |
//! | AlterGroup                           | JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit (group), AddOffsetsToTxn, TxnOffsetCommit (group) | group |
//! | DeleteGroup                          | DeleteGroups, OffsetDelete (group)                                        | group           |
//! | DescribeTransactionalId              | FindCoordinator (transaction)                                             | transactional-id |
//! | AlterTransactionalId                 | InitProducerId with an id, transactional Produce, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit | transactional-id |
//!
//! ListGroups answers with the groups the principal may describe, and listing all topics answers
//! with the topics it may describe: what a principal may not see does not appear, rather than
//! failing the whole listing, which is how Kafka's own authorizer behaves.
//!
//! Two ways to ask, as Kafka's authorizer has `logIfDenied`: the `may_*` methods authorize what
//! a request names explicitly, and a refusal is an audit event (`authorization.denied`, held
//! back when the connection repeats it: [`crate::telemetry::audit::denials`]); the `allows_*`
//! methods ask silently, for what a listing filters out and for implicit checks (topic
//! auto-creation on Metadata, whether a produce could be idempotent).

use std::sync::Arc;

use tollgate_meter::counters::Counters;

use super::credentials::Used;
use super::policy::Policy;
use super::token::Claims;
use crate::tenancy::{Cluster, Namespace};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Connect,
    DescribeCluster,
    WriteDataIdempotently,
    CreateTopic,
    DescribeTopic,
    AlterTopic,
    DeleteTopic,
    DescribeTopicDynamicConfiguration,
    AlterTopicDynamicConfiguration,
    ReadData,
    WriteData,
    DescribeGroup,
    AlterGroup,
    DeleteGroup,
    DescribeTransactionalId,
    AlterTransactionalId,
}

impl Action {
    pub fn iam_name(self) -> &'static str {
        match self {
            Action::Connect => "kafka-cluster:Connect",
            Action::DescribeCluster => "kafka-cluster:DescribeCluster",
            Action::WriteDataIdempotently => "kafka-cluster:WriteDataIdempotently",
            Action::CreateTopic => "kafka-cluster:CreateTopic",
            Action::DescribeTopic => "kafka-cluster:DescribeTopic",
            Action::AlterTopic => "kafka-cluster:AlterTopic",
            Action::DeleteTopic => "kafka-cluster:DeleteTopic",
            Action::DescribeTopicDynamicConfiguration => {
                "kafka-cluster:DescribeTopicDynamicConfiguration"
            }
            Action::AlterTopicDynamicConfiguration => {
                "kafka-cluster:AlterTopicDynamicConfiguration"
            }
            Action::ReadData => "kafka-cluster:ReadData",
            Action::WriteData => "kafka-cluster:WriteData",
            Action::DescribeGroup => "kafka-cluster:DescribeGroup",
            Action::AlterGroup => "kafka-cluster:AlterGroup",
            Action::DeleteGroup => "kafka-cluster:DeleteGroup",
            Action::DescribeTransactionalId => "kafka-cluster:DescribeTransactionalId",
            Action::AlterTransactionalId => "kafka-cluster:AlterTransactionalId",
        }
    }
}

/// An authenticated connection's identity.
#[derive(Debug)]
pub struct Session {
    pub principal: String,
    pub cluster: Arc<Cluster>,
    pub namespace: Namespace,
    pub policy: Policy,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
    /// Where this connection's bytes are counted; `None` with metering off.
    pub counters: Option<Arc<Counters>>,
    /// Its cluster's metrics (per-topic counters); `None` with metrics off.
    pub metrics: Option<Arc<crate::telemetry::metrics::ClusterMetrics>>,
    /// The credential it was made from, which must still stand for it to go on.
    pub used: Used,
    /// Where its refusals are reported, with its client's address.
    pub audit: crate::telemetry::audit::ConnectionAudit,
    region: Arc<str>,
}

/// Who a credential says a client is, before it becomes a [`Session`] of its cluster.
#[derive(Debug)]
pub struct Identity {
    pub principal: String,
    pub policy: Policy,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
    pub used: Used,
}

impl Identity {
    pub fn of_token(claims: Claims) -> Self {
        Identity {
            principal: claims.sub,
            policy: claims.policy,
            expires_at_ms: claims.exp.saturating_mul(1000),
            used: Used::Token { jti: claims.jti },
        }
    }
}

impl Session {
    pub fn new(
        identity: Identity,
        cluster: Arc<Cluster>,
        region: Arc<str>,
        counters: Option<Arc<Counters>>,
    ) -> Self {
        Session {
            principal: identity.principal,
            namespace: cluster.namespace(),
            cluster,
            policy: identity.policy,
            expires_at_ms: identity.expires_at_ms,
            counters,
            metrics: None,
            used: identity.used,
            audit: Default::default(),
            region,
        }
    }

    /// Authorizes `action` on the cluster, which the request asks for: a refusal is audited.
    pub fn may_cluster(&self, action: Action) -> bool {
        self.decide(action, self.cluster.arn(&self.region), true)
    }

    /// Authorizes `action` on a topic the request names: a refusal is audited.
    pub fn may_topic(&self, action: Action, topic: &str) -> bool {
        self.may(action, "topic", topic, true)
    }

    /// Authorizes `action` on a group the request names: a refusal is audited.
    pub fn may_group(&self, action: Action, group: &str) -> bool {
        self.may(action, "group", group, true)
    }

    /// Authorizes `action` on a transactional id the request names: a refusal is audited.
    pub fn may_transactional_id(&self, action: Action, id: &str) -> bool {
        self.may(action, "transactional-id", id, true)
    }

    /// Whether the policy allows `action` on the cluster, asked silently.
    pub fn allows_cluster(&self, action: Action) -> bool {
        self.decide(action, self.cluster.arn(&self.region), false)
    }

    /// Whether the policy allows `action` on a topic, asked silently (a listing's filter).
    pub fn allows_topic(&self, action: Action, topic: &str) -> bool {
        self.may(action, "topic", topic, false)
    }

    /// Whether the policy allows `action` on a group, asked silently (a listing's filter).
    pub fn allows_group(&self, action: Action, group: &str) -> bool {
        self.may(action, "group", group, false)
    }

    /// Audits a refusal of `action` on the cluster decided after a silent
    /// [`Session::allows_cluster`] (an idempotent batch, once the batch says it is one).
    pub fn refused_cluster(&self, action: Action) {
        self.audit.denied(
            &self.cluster,
            &self.principal,
            action.iam_name(),
            self.cluster.arn(&self.region),
        );
    }

    fn may(&self, action: Action, kind: &str, name: &str, audited: bool) -> bool {
        let arn = self.cluster.resource_arn(&self.region, kind, name);
        self.decide(action, arn, audited)
    }

    fn decide(&self, action: Action, arn: String, audited: bool) -> bool {
        let allowed = self.policy.allows(action.iam_name(), &arn);
        if !allowed && audited {
            self.audit
                .denied(&self.cluster, &self.principal, action.iam_name(), arn);
        }
        allowed
    }
}
