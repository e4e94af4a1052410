//! Quota breaches as audit events: a quota refused something (a connection, a new group, a
//! partition, a produce over the storage limit) or throttled a client. A client at its quota
//! retries all the time, so a cluster gets at most one event per quota per
//! [`QUOTA_EVENT_INTERVAL`]; the metrics count every one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use uuid::Uuid;

use super::event::{Event, EventType, Reason, SecretFree};
use super::Audit;

/// At most one event per cluster and quota this often: a throttled producer is throttled on
/// nearly every request, and one line a minute says as much as thousands.
pub const QUOTA_EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// (cluster, quota) pairs remembered for the interval: every quota of thousands of clusters.
pub(super) const QUOTA_KEYS: usize = 16_384;

/// What a quota did, in numbers: the event's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breach {
    /// The quota's name as the admin API spells it (`max_connections`, ...).
    pub quota: &'static str,
    pub limit: u64,
    /// What was in use when it refused, where that is known.
    pub used: Option<u64>,
    /// How long the client was told to wait; `None` for a refusal.
    pub throttle_ms: Option<u64>,
}

impl Breach {
    pub fn refused(quota: &'static str, limit: u64, used: Option<u64>) -> Breach {
        Breach {
            quota,
            limit,
            used,
            throttle_ms: None,
        }
    }

    pub fn throttled(quota: &'static str, limit: u64, wait: Duration) -> Breach {
        Breach {
            quota,
            limit,
            used: None,
            throttle_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.throttle_ms {
            Some(ms) => write!(f, "throttled {ms} ms")?,
            None => f.write_str("refused")?,
        }
        write!(f, ": at its quota {} ({})", self.quota, self.limit)?;
        if let Some(used) = self.used {
            write!(f, " with {used} in use")?;
        }
        Ok(())
    }
}

/// Names and numbers only.
impl SecretFree for Breach {}

/// Who breached, as far as the emitter knows: the cluster's tenant, the session's principal
/// and client address.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    pub tenant: Option<&'a str>,
    pub principal: Option<&'a str>,
    pub client_address: Option<&'a str>,
}

impl<'a> Who<'a> {
    pub fn session(session: &'a crate::identity::authz::Session) -> Who<'a> {
        Who {
            tenant: Some(&session.cluster.tenant),
            principal: Some(&session.principal),
            client_address: session.audit.client_address(),
        }
    }

    /// Any client of `cluster`.
    pub fn cluster(cluster: &'a crate::tenancy::Cluster) -> Who<'a> {
        Who {
            tenant: Some(&cluster.tenant),
            ..Who::default()
        }
    }
}

/// A cluster's rate meter's throttles as events ([`crate::quotas::meter`]): the throttled
/// path checks a quota was set and the wait is not zero, and takes a lock only then.
#[derive(Debug, Default, Clone)]
pub struct Throttles {
    cluster: Uuid,
    audit: Arc<OnceLock<Audit>>,
}

impl Throttles {
    /// `cluster`'s throttles, reported to the audit log once it is set in `audit`.
    pub fn new(cluster: Uuid, audit: Arc<OnceLock<Audit>>) -> Throttles {
        Throttles { cluster, audit }
    }

    /// A request or answer was throttled `wait` by `quota` (`limit`: its value).
    pub fn throttled(&self, quota: &'static str, limit: Option<u64>, wait: Duration) {
        if wait.is_zero() {
            return;
        }
        if let (Some(audit), Some(limit)) = (self.audit.get(), limit) {
            audit.quota_breached(
                self.cluster,
                Breach::throttled(quota, limit, wait),
                Who::default(),
            );
        }
    }
}

impl Audit {
    /// Emits `breach` of `cluster`'s quota unless one of the same quota was emitted for the
    /// cluster within [`QUOTA_EVENT_INTERVAL`]. A throttle is `granted` (the request is served,
    /// later); a refusal is not.
    pub fn quota_breached(&self, cluster: Uuid, breach: Breach, who: Who<'_>) {
        if !self.quota_due(cluster, breach.quota) {
            return;
        }
        let mut event = Event::new(EventType::QuotaBreached, breach.quota)
            .with_cluster(cluster)
            .with_granted(breach.throttle_ms.is_some())
            .with_reason(Reason::of(&breach));
        event.tenant = who.tenant.map(str::to_owned);
        event.principal = who.principal.map(str::to_owned);
        event.client_address = who.client_address.map(str::to_owned);
        self.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_say_the_numbers() {
        assert_eq!(
            Breach::refused("max_connections", 3, Some(3)).to_string(),
            "refused: at its quota max_connections (3) with 3 in use"
        );
        assert_eq!(
            Breach::throttled("ingress_bytes_per_second", 1000, Duration::from_millis(250))
                .to_string(),
            "throttled 250 ms: at its quota ingress_bytes_per_second (1000)"
        );
    }

    #[test]
    fn one_event_per_cluster_and_quota_per_interval() {
        let audit = Audit::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let over = |c| {
            audit.quota_breached(
                c,
                Breach::throttled("egress_bytes_per_second", 10, Duration::from_millis(5)),
                Who::default(),
            )
        };
        for _ in 0..100 {
            over(a);
        }
        over(b);
        audit.quota_breached(
            a,
            Breach::refused("max_connections", 1, Some(1)),
            Who {
                principal: Some("alice"),
                client_address: Some("10.1.2.3"),
                ..Who::default()
            },
        );
        let of_a = audit.cluster_events(&a);
        assert_eq!(of_a.len(), 2, "one per quota");
        assert_eq!(of_a[0].action, "egress_bytes_per_second");
        assert!(of_a[0].granted, "a throttled request is served");
        assert_eq!(of_a[1].action, "max_connections");
        assert!(!of_a[1].granted);
        assert_eq!(of_a[1].principal.as_deref(), Some("alice"));
        assert_eq!(
            audit.cluster_events(&b).len(),
            1,
            "another cluster is not held back"
        );
        assert_eq!(audit.emitted(EventType::QuotaBreached), 3);
    }
}
