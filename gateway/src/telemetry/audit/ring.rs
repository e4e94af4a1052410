//! The tenant's view: the last [`TENANT_EVENTS_KEPT`] events of each cluster, kept in memory
//! on this instance, read by the cluster's own credential (`GET
//! /v1/clusters/{id}/audit-events`). A cluster's events are only ever in its own ring.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::event::{EventType, Record};
use crate::tenancy::Registry;

/// Events kept per cluster: enough to see what happened around an incident (a burst of
/// refused logins, a quota hit), small enough that thousands of clusters stay within tens of
/// MiB (an event is a few hundred bytes). The sinks keep the full history.
pub const TENANT_EVENTS_KEPT: usize = 256;

/// Rings of clusters that no longer exist are dropped once rings outnumber the live clusters
/// this many times over (and by [`SLACK`]): a scan of the table is then rare.
const PRUNE_FACTOR: usize = 2;
const SLACK: usize = 16;

#[derive(Default)]
pub(super) struct Rings {
    clusters: Mutex<HashMap<Uuid, VecDeque<Arc<Record>>>>,
}

impl Rings {
    /// Keeps `record` in its cluster's ring, if it names one. `registry`, once known, says
    /// which clusters still exist.
    pub(super) fn push(&self, record: &Arc<Record>, registry: Option<&Registry>) {
        let Some(cluster) = record.cluster else {
            return;
        };
        let mut clusters = self.clusters.lock().expect("poisoned");
        if !clusters.contains_key(&cluster) {
            if let Some(registry) = registry {
                if clusters.len() > PRUNE_FACTOR * registry.len() + SLACK {
                    clusters.retain(|id, _| registry.get(id).is_some());
                }
            }
        }
        let ring = clusters.entry(cluster).or_default();
        if ring.len() == TENANT_EVENTS_KEPT {
            ring.pop_front();
        }
        ring.push_back(record.clone());
    }

    /// The cluster's events, oldest first.
    pub(super) fn events(&self, cluster: &Uuid) -> Vec<Arc<Record>> {
        self.clusters
            .lock()
            .expect("poisoned")
            .get(cluster)
            .map(|ring| ring.iter().cloned().collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub(super) fn clusters(&self) -> usize {
        self.clusters.lock().expect("poisoned").len()
    }
}

/// Where a tenant's reading starts (`?since=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// After the event with this id; everything kept when it is no longer kept.
    Event(Uuid),
    /// After this time (milliseconds since the Unix epoch).
    Time(i64),
}

/// `since` was neither an event id nor an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("since must be an event id (a UUID) or an RFC 3339 time, not {0:?}")]
pub struct BadSince(pub String);

impl Since {
    pub fn parse(text: &str) -> Result<Since, BadSince> {
        if let Ok(id) = Uuid::parse_str(text) {
            return Ok(Since::Event(id));
        }
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
            .map(Since::Time)
            .ok_or_else(|| BadSince(text.chars().take(64).collect()))
    }
}

/// The events a tenant sees of `events` (its cluster's, oldest first) after `since`.
/// The admin API is the operator's: its client addresses are not shown to tenants.
pub(super) fn view(events: Vec<Arc<Record>>, since: Option<&Since>) -> Vec<Record> {
    let start = match since {
        None => 0,
        Some(Since::Event(id)) => events.iter().position(|e| e.id == *id).map_or(0, |i| i + 1),
        Some(Since::Time(t)) => events.partition_point(|e| e.time <= *t),
    };
    events[start..]
        .iter()
        .map(|e| {
            let mut e = Record::clone(e);
            if e.kind == EventType::AdminChange {
                e.client_address = None;
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::audit::event::Event;

    fn record(cluster: Option<Uuid>, time: i64) -> Arc<Record> {
        let mut e = Event::new(EventType::AuthorizationDenied, "kafka-cluster:ReadData");
        e.cluster = cluster;
        Arc::new(Record::new(e, "s".into(), time))
    }

    #[test]
    fn each_cluster_sees_its_own_events_only() {
        let rings = Rings::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for t in 0..5 {
            rings.push(&record(Some(a), t), None);
        }
        rings.push(&record(Some(b), 9), None);
        rings.push(&record(None, 10), None);
        let of_a = rings.events(&a);
        assert_eq!(of_a.len(), 5);
        assert!(of_a.iter().all(|e| e.cluster == Some(a)));
        let of_b = rings.events(&b);
        assert_eq!(of_b.len(), 1);
        assert_eq!(of_b[0].cluster, Some(b));
        assert!(rings.events(&Uuid::new_v4()).is_empty());
        assert_eq!(rings.clusters(), 2, "events of no cluster are in no ring");
    }

    #[test]
    fn a_ring_keeps_the_newest_and_is_bounded() {
        let rings = Rings::default();
        let a = Uuid::new_v4();
        let n = TENANT_EVENTS_KEPT as i64 + 10;
        for t in 0..n {
            rings.push(&record(Some(a), t), None);
        }
        let events = rings.events(&a);
        assert_eq!(events.len(), TENANT_EVENTS_KEPT);
        assert_eq!(events.first().unwrap().time, 10);
        assert_eq!(events.last().unwrap().time, n - 1, "newest last");
    }

    #[test]
    fn rings_of_deleted_clusters_are_dropped() {
        let rings = Rings::default();
        let registry = Registry::default();
        let live = Uuid::new_v4();
        registry.upsert(crate::tenancy::Cluster {
            id: live,
            tenant: "acme".into(),
            name: "live".into(),
            max_message_bytes: 1 << 20,
            created_at: 0,
            quotas: Default::default(),
            allowed_cidrs: None,
            credentials: Default::default(),
        });
        for _ in 0..(PRUNE_FACTOR + SLACK + 5) {
            rings.push(&record(Some(Uuid::new_v4()), 0), Some(&registry));
        }
        rings.push(&record(Some(live), 0), Some(&registry));
        assert!(rings.clusters() <= PRUNE_FACTOR + SLACK + 1);
        assert_eq!(rings.events(&live).len(), 1);
    }

    #[test]
    fn since_an_event_or_a_time() {
        let events: Vec<_> = (0..5)
            .map(|t| record(Some(Uuid::nil()), t * 1000))
            .collect();
        let times = |v: Vec<Record>| v.iter().map(|e| e.time).collect::<Vec<_>>();
        assert_eq!(times(view(events.clone(), None)).len(), 5);
        let after_second = Since::Event(events[1].id);
        assert_eq!(
            times(view(events.clone(), Some(&after_second))),
            [2000, 3000, 4000]
        );
        let unknown = Since::Event(Uuid::new_v4());
        assert_eq!(times(view(events.clone(), Some(&unknown))).len(), 5);
        let last = Since::Event(events[4].id);
        assert!(view(events.clone(), Some(&last)).is_empty());
        let at = Since::parse("1970-01-01T00:00:02Z").unwrap();
        assert_eq!(at, Since::Time(2000));
        assert_eq!(times(view(events.clone(), Some(&at))), [3000, 4000]);
        assert_eq!(
            Since::parse(&events[0].id.to_string()).unwrap(),
            Since::Event(events[0].id)
        );
        assert!(Since::parse("yesterday").is_err());
        assert!(Since::parse("").is_err());
    }

    #[test]
    fn tenants_do_not_see_the_operators_address() {
        let mut e = Event::new(EventType::AdminChange, "PATCH /v1/clusters/{id}");
        e.client_address = Some("192.0.2.1:4000".into());
        e.cluster = Some(Uuid::nil());
        let admin = Arc::new(Record::new(e, "s".into(), 0));
        let mut e = Event::new(EventType::AuthenticationFailed, "SCRAM-SHA-512");
        e.client_address = Some("198.51.100.2:5000".into());
        let login = Arc::new(Record::new(e, "s".into(), 1));
        let seen = view(vec![admin, login], None);
        assert_eq!(seen[0].client_address, None);
        assert_eq!(seen[1].client_address.as_deref(), Some("198.51.100.2:5000"));
    }
}
