//! Authorization denials of one connection. A request that names a resource its principal's
//! policy refuses (a produce to a topic, a join of a group, DescribeCluster) is an event, as
//! Kafka's authorizer logs denials of explicit requests; what a listing leaves out because
//! the policy hides it is not ([`crate::identity::authz`] keeps the two apart). The same
//! refusal on the same connection is emitted at most once per [`DENIAL_REPEAT_INTERVAL`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::event::{Event, EventType, Reason};
use super::repeat::Repeats;
use super::Audit;
use crate::tenancy::Cluster;

/// A consumer denied a topic asks again on every poll: one event a minute per connection,
/// action and resource says it.
pub const DENIAL_REPEAT_INTERVAL: Duration = Duration::from_secs(60);

/// (action, resource) pairs a connection remembers, by a hash of the pair (an ARN can be a
/// kilobyte): more distinct denials than any client makes by mistake.
const DENIALS_TRACKED: usize = 64;

/// Denial events one connection may emit per [`DENIAL_REPEAT_INTERVAL`]: one request can name
/// tens of thousands of refused topics, and the audit queue is every tenant's. Past it, one
/// more event says so and the rest of the minute's are not logged.
const DENIAL_EVENTS_PER_INTERVAL: u32 = 32;

/// A connection's recent denials and how many events it emitted in the current interval.
struct Recent {
    repeats: Repeats<u64>,
    interval_start: Instant,
    emitted: u32,
}

/// What a session reports to the audit log: where its client is, and which refusals it
/// reported lately. A session made without one (tests) reports nothing. One pointer in the
/// session; the table is made at the first refusal.
#[derive(Default)]
pub struct ConnectionAudit(Option<Box<Reporter>>);

struct Reporter {
    audit: Audit,
    client_address: Option<String>,
    recent: Mutex<Option<Recent>>,
}

impl std::fmt::Debug for ConnectionAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionAudit")
            .field("client_address", &self.client_address())
            .finish_non_exhaustive()
    }
}

impl ConnectionAudit {
    /// A connection from `client` (its address as the listener saw it).
    pub fn new(audit: &Audit, client: Option<std::net::IpAddr>) -> ConnectionAudit {
        ConnectionAudit(Some(Box::new(Reporter {
            audit: audit.clone(),
            client_address: client.map(|ip| ip.to_string()),
            recent: Mutex::new(None),
        })))
    }

    pub fn client_address(&self) -> Option<&str> {
        self.0.as_ref()?.client_address.as_deref()
    }

    /// `principal`'s policy refused `action` on `resource` (an ARN) of `cluster`.
    pub fn denied(
        &self,
        cluster: &Cluster,
        principal: &str,
        action: &'static str,
        resource: String,
    ) {
        let Some(reporter) = &self.0 else {
            return;
        };
        let now = Instant::now();
        let reason = {
            let mut recent = reporter.recent.lock().expect("poisoned");
            let recent = recent.get_or_insert_with(|| Recent {
                repeats: Repeats::new(DENIAL_REPEAT_INTERVAL, DENIALS_TRACKED),
                interval_start: now,
                emitted: 0,
            });
            if now.duration_since(recent.interval_start) >= DENIAL_REPEAT_INTERVAL {
                recent.interval_start = now;
                recent.emitted = 0;
            }
            if recent.emitted > DENIAL_EVENTS_PER_INTERVAL
                || !recent.repeats.due(pair_hash(action, &resource), now)
            {
                return;
            }
            recent.emitted += 1;
            if recent.emitted > DENIAL_EVENTS_PER_INTERVAL {
                "the principal's policy does not allow this action on this resource; this \
                 connection's further denials this minute are not logged"
            } else {
                "the principal's policy does not allow this action on this resource"
            }
        };
        let mut event = Event::new(EventType::AuthorizationDenied, action)
            .with_tenant(cluster.tenant.clone())
            .with_cluster(cluster.id)
            .with_principal(principal)
            .with_resource(resource)
            .with_reason(Reason::fixed(reason));
        event.client_address = reporter.client_address.clone();
        reporter.audit.emit(event);
    }
}

/// The key a denial is remembered by: a hash, so a connection's table stays small whatever
/// the names; a collision only holds back one event for a minute.
fn pair_hash(action: &str, resource: &str) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = KEYS.get_or_init(Default::default).build_hasher();
    action.hash(&mut h);
    resource.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use crate::identity::authz::{Action, Identity, Session};
    use crate::identity::credentials::Used;

    /// A session of cluster `orders` of tenant `acme` that may only read topic `allowed`.
    fn session(audit: &Audit) -> Session {
        let cluster = Arc::new(Cluster {
            id: Uuid::from_u128(0xa),
            tenant: "acme".into(),
            name: "orders".into(),
            max_message_bytes: 1 << 20,
            quotas: Default::default(),
            allowed_cidrs: None,
            credentials: Default::default(),
            created_at: 0,
        });
        let policy = r#"{"Statement": [{"Effect": "Allow", "Action": "kafka-cluster:ReadData",
            "Resource": "arn:tollgate:kafka:local:acme:topic/orders/*/allowed"}]}"#;
        let identity = Identity {
            principal: "alice".into(),
            policy: serde_json::from_str(policy).unwrap(),
            expires_at_ms: i64::MAX,
            used: Used::Token { jti: Uuid::nil() },
        };
        let mut session = Session::new(identity, cluster, "local".into(), None);
        session.audit = ConnectionAudit::new(audit, "198.51.100.7".parse().ok());
        session
    }

    #[test]
    fn an_explicit_refusal_is_an_event_and_a_filter_is_not() {
        let audit = Audit::default();
        let s = session(&audit);
        let cluster = Uuid::from_u128(0xa);
        assert!(s.may_topic(Action::ReadData, "allowed"));
        assert!(!s.allows_topic(Action::DescribeTopic, "secret-a"));
        assert!(!s.allows_group(Action::DescribeGroup, "g"));
        assert!(!s.allows_cluster(Action::WriteDataIdempotently));
        assert!(audit.cluster_events(&cluster).is_empty(), "silent checks");

        assert!(!s.may_topic(Action::ReadData, "secret-a"));
        let events = audit.cluster_events(&cluster);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.kind, EventType::AuthorizationDenied);
        assert_eq!(e.action, "kafka-cluster:ReadData");
        assert_eq!(
            e.resource.as_deref(),
            Some(
                "arn:tollgate:kafka:local:acme:topic/orders/00000000-0000-0000-0000-00000000000a/secret-a"
            )
        );
        assert_eq!(e.principal.as_deref(), Some("alice"));
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.client_address.as_deref(), Some("198.51.100.7"));
        assert!(!e.granted);

        s.refused_cluster(Action::WriteDataIdempotently);
        assert!(!s.may_cluster(Action::DescribeCluster));
        assert!(!s.may_group(Action::AlterGroup, "g"));
        assert!(!s.may_transactional_id(Action::AlterTransactionalId, "t"));
        let actions: Vec<String> = audit
            .cluster_events(&cluster)
            .iter()
            .map(|e| e.action.to_string())
            .collect();
        assert_eq!(
            actions,
            [
                "kafka-cluster:ReadData",
                "kafka-cluster:WriteDataIdempotently",
                "kafka-cluster:DescribeCluster",
                "kafka-cluster:AlterGroup",
                "kafka-cluster:AlterTransactionalId"
            ]
        );
    }

    #[test]
    fn a_repeated_refusal_is_held_back_per_connection() {
        let audit = Audit::default();
        let cluster = Uuid::from_u128(0xa);
        let first = session(&audit);
        for _ in 0..50 {
            assert!(!first.may_topic(Action::ReadData, "secret-a"));
        }
        assert_eq!(audit.cluster_events(&cluster).len(), 1);
        // Another resource, or another connection, is another event.
        assert!(!first.may_topic(Action::ReadData, "secret-b"));
        let second = session(&audit);
        assert!(!second.may_topic(Action::ReadData, "secret-a"));
        assert_eq!(audit.cluster_events(&cluster).len(), 3);
        assert_eq!(audit.emitted(EventType::AuthorizationDenied), 3);
    }

    #[test]
    fn one_connection_naming_many_refused_resources_makes_a_bounded_number_of_events() {
        let audit = Audit::default();
        let cluster = Uuid::from_u128(0xa);
        let s = session(&audit);
        for i in 0..10_000 {
            assert!(!s.may_topic(Action::ReadData, &format!("secret-{i}")));
        }
        let events = audit.cluster_events(&cluster);
        let limit = DENIAL_EVENTS_PER_INTERVAL as usize;
        assert_eq!(events.len(), limit + 1);
        let last = events.last().unwrap().reason.as_ref().unwrap().as_str();
        assert!(
            last.contains("further denials this minute are not logged"),
            "{last}"
        );
        // Another connection has its own allowance.
        assert!(!session(&audit).may_topic(Action::ReadData, "secret-0"));
        assert_eq!(audit.cluster_events(&cluster).len(), limit + 2);
    }

    #[test]
    fn a_session_without_an_audit_log_reports_nothing() {
        let audit = Audit::default();
        let mut s = session(&audit);
        s.audit = ConnectionAudit::default();
        assert!(!s.may_topic(Action::ReadData, "secret-a"));
        assert_eq!(audit.emitted(EventType::AuthorizationDenied), 0);
    }
}
