//! The byte and request rates of each cluster on this gateway instance, held to its quotas:
//! [`Meters`] finds a cluster's [`ClusterMeter`] (once per connection, not per request), which
//! charges what a request uses and says how long to throttle its client; [`Mute`] is the
//! connection's "read nothing before" instant; [`Usage`] is what the admin API shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_protocol::messages::{ProduceRequest, TopicName};
use serde::Serialize;
use tokio::time::Instant;

use super::lease::Lease;
use super::rate::{Bucket, Sampled};
use super::shared::Link;
use super::throttle::produce_bytes;
use super::Quotas;

/// The longest one response throttles its client. Kafka's windowed rate forgets what is older
/// than its window (11 samples of 1 s), so its throttle times stay within about that; the
/// debt past the cap is kept, so the client's next request is throttled again and the quota
/// holds, while a client never waits so long on one answer that its requests time out
/// (librdkafka's `request.timeout.ms` is 30 s).
pub const MAX_THROTTLE: Duration = Duration::from_secs(11);

/// The instant every meter's nanoseconds count from.
fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // Two seconds back, so that the first charges have their whole allowance.
    *ORIGIN.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(2)).unwrap_or(now)
    })
}

fn now_ns() -> u64 {
    ns_at(Instant::now())
}

fn ns_at(at: Instant) -> u64 {
    at.saturating_duration_since(origin()).as_nanos() as u64
}

/// What a throttle was for, to count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ingress,
    Egress,
    Requests,
}

/// One rate of a cluster: its bucket, its lease of the quota shared with other instances,
/// its last second, and its throttle events.
#[derive(Debug, Default)]
struct Meter {
    bucket: Bucket,
    lease: Arc<Lease>,
    sampled: Sampled,
    throttles: AtomicU64,
    /// Nanoseconds its throttles told clients to wait, for `tollgate_throttle_seconds_total`.
    throttled_ns: AtomicU64,
}

impl Meter {
    /// Charges against the local bucket alone without `link` (one instance), against the
    /// leases while Redis answers, else against the local bucket at this instance's share.
    fn charge(&self, now: u64, amount: u64, quota: Option<u64>, link: Option<&Link>) -> Duration {
        self.sampled.add(now, amount);
        let Some(quota) = quota else {
            if link.is_some() {
                self.lease.set_quota(None);
            }
            return Duration::ZERO;
        };
        let wait = match link {
            None => self.bucket.charge(now, amount, quota),
            Some(link) if link.up() => self.lease.charge(amount, quota),
            Some(_) => {
                // Noted, so that the first exchange after an outage (or the first at all)
                // asks for a slice.
                self.lease.note(amount, quota);
                self.bucket.charge(now, amount, self.lease.fallback(quota))
            }
        };
        if wait == 0 {
            return Duration::ZERO;
        }
        self.throttles.fetch_add(1, Ordering::Relaxed);
        let wait = Duration::from_nanos(wait).min(MAX_THROTTLE);
        self.throttled_ns
            .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
        wait
    }
}

/// Topics a cluster's meter keeps partition buckets for before it drops those whose buckets
/// are all at full allowance (which is exact: a new bucket is a full one).
const TOPIC_BUCKETS: usize = 1_024;

/// Partition indexes a meter keeps a bucket for: MSK Serverless's 2,400 partitions of a
/// cluster fit in one topic many times over. A partition past it cannot exist on the pool
/// (its topic would pass `max_partitions`), so the pool refuses it and nothing is charged.
const MAX_PARTITION_INDEX: usize = 1 << 16;

/// A partition as the tenant names it: by name, or from Produce v13 and Fetch v13 by topic id
/// (the name then empty).
pub type PartitionKey = (TopicName, uuid::Uuid, i32);

/// Per-partition buckets of one rate (`partition_*_bytes_per_second`), by topic and then by
/// partition index: a request names each topic once and its partitions together, so the
/// topic is hashed once and each partition is an index. A lock taken once per request, only
/// while the quota is set.
#[derive(Debug, Default)]
struct PartitionBuckets {
    topics: Mutex<HashMap<(TopicName, uuid::Uuid), Vec<Bucket>>>,
    throttles: AtomicU64,
    throttled_ns: AtomicU64,
}

impl PartitionBuckets {
    /// Charges each partition its bytes; the longest wait wins and counts one throttle.
    fn charge(&self, parts: impl IntoIterator<Item = (PartitionKey, u64)>, quota: u64) -> Duration {
        let now = now_ns();
        let mut topics = self.topics.lock().expect("poisoned");
        if topics.len() > TOPIC_BUCKETS {
            topics.retain(|_, buckets| buckets.iter().any(|b| !b.is_full(now)));
        }
        let mut wait = 0;
        let mut current: Option<(TopicName, uuid::Uuid, &mut Vec<Bucket>)> = None;
        for ((name, id, index), bytes) in parts {
            let Some(index) = usize::try_from(index)
                .ok()
                .filter(|i| *i < MAX_PARTITION_INDEX)
            else {
                continue;
            };
            let buckets = match current.take() {
                Some((n, i, buckets)) if i == id && n == name => {
                    current = Some((n, i, buckets));
                    &mut current.as_mut().expect("just set").2
                }
                _ => {
                    let buckets = topics.entry((name.clone(), id)).or_default();
                    current = Some((name, id, buckets));
                    &mut current.as_mut().expect("just set").2
                }
            };
            if buckets.len() <= index {
                buckets.resize_with(index + 1, Bucket::default);
            }
            wait = wait.max(buckets[index].charge(now, bytes, quota));
        }
        drop(current);
        drop(topics);
        if wait == 0 {
            return Duration::ZERO;
        }
        self.throttles.fetch_add(1, Ordering::Relaxed);
        let wait = Duration::from_nanos(wait).min(MAX_THROTTLE);
        self.throttled_ns
            .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
        wait
    }
}

/// One cluster's rates on this instance. Shared by its connections.
#[derive(Debug, Default)]
pub struct ClusterMeter {
    ingress: Meter,
    egress: Meter,
    requests: Meter,
    /// Each partition's ingress and egress, per instance (a partition's traffic mostly
    /// takes one instance: its producers' and consumers' connections).
    partitions_in: PartitionBuckets,
    partitions_out: PartitionBuckets,
    /// Set when instances share quotas through Redis.
    link: Option<Arc<Link>>,
    /// Where its throttles are reported as audit events.
    audit: crate::telemetry::audit::quota::Throttles,
}

impl ClusterMeter {
    /// The leases of the cluster's shared rate quotas.
    pub fn leases(&self) -> [(Kind, &Arc<Lease>); 3] {
        [
            (Kind::Ingress, &self.ingress.lease),
            (Kind::Egress, &self.egress.lease),
            (Kind::Requests, &self.requests.lease),
        ]
    }

    /// Charges `amount` of `kind` against the cluster's `quotas`, as they are now, and
    /// returns how long its client is to be throttled (zero: not at all).
    pub fn charge(&self, kind: Kind, amount: u64, quotas: &Quotas) -> Duration {
        let now = now_ns();
        let link = self.link.as_deref();
        let (meter, name, quota) = match kind {
            Kind::Ingress => (
                &self.ingress,
                "ingress_bytes_per_second",
                quotas.ingress_bytes_per_second,
            ),
            Kind::Egress => (
                &self.egress,
                "egress_bytes_per_second",
                quotas.egress_bytes_per_second,
            ),
            Kind::Requests => (
                &self.requests,
                "requests_per_second",
                quotas.requests_per_second,
            ),
        };
        let wait = meter.charge(now, amount, quota, link);
        self.audit.throttled(name, quota, wait);
        wait
    }

    /// Charges a Produce request's record bytes against the cluster's ingress quota and each
    /// partition's against the partition ingress quota; the longest throttle wins.
    pub fn charge_produce(&self, req: &ProduceRequest, quotas: &Quotas) -> Duration {
        let cluster = self.charge(Kind::Ingress, produce_bytes(req), quotas);
        let Some(quota) = quotas.partition_ingress_bytes_per_second else {
            return cluster;
        };
        let parts = req.topic_data.iter().flat_map(|t| {
            t.partition_data.iter().map(|p| {
                let bytes = p.records.as_ref().map_or(0, |r| r.len() as u64);
                ((t.name.clone(), t.topic_id, p.index), bytes)
            })
        });
        let partitions = self.partitions_in.charge(parts, quota);
        self.audit.throttled(
            "partition_ingress_bytes_per_second",
            Some(quota),
            partitions,
        );
        cluster.max(partitions)
    }

    /// Charges the bytes a fetch answer delivered from each partition against the partition
    /// egress quota (the cluster's egress is charged with [`ClusterMeter::charge`]).
    pub fn charge_fetched(
        &self,
        parts: impl IntoIterator<Item = (PartitionKey, u64)>,
        quotas: &Quotas,
    ) -> Duration {
        match quotas.partition_egress_bytes_per_second {
            Some(quota) => {
                let wait = self.partitions_out.charge(parts, quota);
                self.audit
                    .throttled("partition_egress_bytes_per_second", Some(quota), wait);
                wait
            }
            None => Duration::ZERO,
        }
    }

    /// How long its throttles have told clients to wait, in nanoseconds, by quota (the
    /// `quota` label of `tollgate_throttle_seconds_total`).
    pub fn throttled_ns(&self) -> [(&'static str, u64); 5] {
        let ns = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("ingress", ns(&self.ingress.throttled_ns)),
            ("egress", ns(&self.egress.throttled_ns)),
            ("requests", ns(&self.requests.throttled_ns)),
            ("partition_ingress", ns(&self.partitions_in.throttled_ns)),
            ("partition_egress", ns(&self.partitions_out.throttled_ns)),
        ]
    }

    /// What the cluster used in the last second, and its throttles so far.
    pub fn usage(&self) -> Usage {
        let now = now_ns();
        Usage {
            ingress_bytes_per_second: self.ingress.sampled.last_second(now),
            egress_bytes_per_second: self.egress.sampled.last_second(now),
            requests_per_second: self.requests.sampled.last_second(now),
            throttles: Throttles {
                ingress: self.ingress.throttles.load(Ordering::Relaxed),
                egress: self.egress.throttles.load(Ordering::Relaxed),
                requests: self.requests.throttles.load(Ordering::Relaxed),
                partition_ingress: self.partitions_in.throttles.load(Ordering::Relaxed),
                partition_egress: self.partitions_out.throttles.load(Ordering::Relaxed),
            },
        }
    }
}

/// A cluster's use of its rate quotas on this gateway instance, for the admin API: the last
/// whole second's rates, and how many responses were throttled for each since the instance
/// started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub ingress_bytes_per_second: u64,
    pub egress_bytes_per_second: u64,
    pub requests_per_second: u64,
    pub throttles: Throttles,
}

/// Throttled responses, by the quota that throttled them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Throttles {
    pub ingress: u64,
    pub egress: u64,
    pub requests: u64,
    /// Produce requests over `partition_ingress_bytes_per_second` on some partition.
    pub partition_ingress: u64,
    /// Fetch answers over `partition_egress_bytes_per_second` on some partition.
    pub partition_egress: u64,
}

/// Every cluster's meter on this instance. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Meters {
    inner: Arc<Mutex<HashMap<uuid::Uuid, Arc<ClusterMeter>>>>,
    /// Set once, before any meter is made, when quotas are shared through Redis.
    link: Arc<std::sync::OnceLock<Arc<Link>>>,
    /// Where throttles are reported, once the audit log is delivered; meters made before
    /// that see it too.
    audit: Arc<std::sync::OnceLock<crate::telemetry::audit::Audit>>,
}

impl Meters {
    /// Makes the meters made from now on share their rate quotas over the returned link
    /// ([`super::shared`]).
    pub fn share(&self) -> Arc<Link> {
        self.link.get_or_init(Default::default).clone()
    }

    /// Reports throttles to `audit` from now on (one event per cluster and quota a minute).
    pub fn report_to(&self, audit: crate::telemetry::audit::Audit) {
        let _ = self.audit.set(audit);
    }

    /// Every cluster's meter, for the exchange of leases.
    pub fn all(&self) -> Vec<(uuid::Uuid, Arc<ClusterMeter>)> {
        let meters = self.inner.lock().expect("poisoned");
        meters.iter().map(|(id, m)| (*id, m.clone())).collect()
    }

    /// The cluster's meter, made at its first use. Connections keep it, so this runs once per
    /// connection, not per request. Meters of clusters `live` denies are dropped once they
    /// outnumber `expected` (the registry's size) twice over, so deleted clusters' go.
    pub fn cluster(
        &self,
        id: &uuid::Uuid,
        expected: usize,
        live: impl Fn(&uuid::Uuid) -> bool,
    ) -> Arc<ClusterMeter> {
        let mut meters = self.inner.lock().expect("poisoned");
        if meters.len() > 2 * expected + 16 {
            meters.retain(|id, _| live(id));
        }
        meters
            .entry(*id)
            .or_insert_with(|| {
                Arc::new(ClusterMeter {
                    link: self.link.get().cloned(),
                    audit: crate::telemetry::audit::quota::Throttles::new(*id, self.audit.clone()),
                    ..ClusterMeter::default()
                })
            })
            .clone()
    }

    /// The cluster's meter, if it has one here (not made by asking).
    pub fn existing(&self, id: &uuid::Uuid) -> Option<Arc<ClusterMeter>> {
        self.inner.lock().expect("poisoned").get(id).cloned()
    }

    /// The cluster's use, if it has used anything here.
    pub fn usage(&self, id: &uuid::Uuid) -> Usage {
        let meter = self.inner.lock().expect("poisoned").get(id).cloned();
        meter.map(|m| m.usage()).unwrap_or_default()
    }
}

/// When a throttled connection may be read again: Kafka mutes a throttled client's channel,
/// and librdkafka does not wait on its own, so not reading is what holds the client to the
/// quota. Set from the reader and from answers resolving on the writer's side.
#[derive(Debug, Default)]
pub struct Mute {
    until_ns: AtomicU64,
}

impl Mute {
    /// Reads nothing more for `wait` from now (or longer, if already muted longer).
    pub fn extend(&self, wait: Duration) {
        if !wait.is_zero() {
            let until = now_ns().saturating_add(wait.as_nanos() as u64);
            self.until_ns.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// The instant reading may resume, if it is still ahead.
    pub fn until(&self) -> Option<Instant> {
        let until = self.until_ns.load(Ordering::Relaxed);
        (until > now_ns()).then(|| origin() + Duration::from_nanos(until))
    }
}

/// A throttle as a response's `throttle_time_ms`.
pub fn millis(wait: Duration) -> i32 {
    // Rounded up: a client told 0 ms was not throttled.
    wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(ingress: u64) -> Quotas {
        Quotas {
            ingress_bytes_per_second: Some(ingress),
            ..Quotas::default()
        }
    }

    #[test]
    fn throttles_are_counted_capped_and_follow_quota_changes() {
        let m = ClusterMeter::default();
        assert_eq!(
            m.charge(Kind::Ingress, 1_000, &quotas(1_000)),
            Duration::ZERO
        );
        let wait = m.charge(Kind::Ingress, 500, &quotas(1_000));
        // The clock moved a little between the charges.
        assert!(
            wait <= Duration::from_millis(500) && wait > Duration::from_millis(450),
            "{wait:?}"
        );
        // A quota lifted (null) throttles nothing more.
        let mut unlimited = quotas(1);
        unlimited.ingress_bytes_per_second = None;
        assert_eq!(m.charge(Kind::Ingress, 1 << 40, &unlimited), Duration::ZERO);
        // Lowered far below the use: capped.
        assert_eq!(m.charge(Kind::Ingress, 1 << 30, &quotas(1)), MAX_THROTTLE);
        let usage = m.usage();
        assert_eq!(usage.throttles.ingress, 2);
        assert_eq!(usage.throttles.egress, 0);
        // The waits told, summed: the first wait and the cap.
        let [(_, ingress_ns), (_, egress_ns), ..] = m.throttled_ns();
        assert_eq!(ingress_ns, (wait + MAX_THROTTLE).as_nanos() as u64);
        assert_eq!(egress_ns, 0);
    }

    #[test]
    fn throttles_are_audited_once_a_minute_per_quota_even_for_meters_made_before() {
        use crate::telemetry::audit::{Audit, EventType};
        let meters = Meters::default();
        let c = uuid::Uuid::from_u128(7);
        let early = meters.cluster(&c, 1, |_| true);
        let audit = Audit::default();
        early.charge(Kind::Ingress, 1_000, &quotas(1_000));
        early.charge(Kind::Ingress, 1_000, &quotas(1_000));
        assert_eq!(
            audit.emitted(EventType::QuotaBreached),
            0,
            "not reported yet"
        );
        meters.report_to(audit.clone());
        for _ in 0..20 {
            assert!(!early.charge(Kind::Ingress, 1_000, &quotas(1_000)).is_zero());
        }
        let egress = Quotas {
            egress_bytes_per_second: Some(10),
            ..Quotas::default()
        };
        early.charge(Kind::Egress, 1_000, &egress);
        let events = audit.cluster_events(&c);
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_ref()).collect();
        assert_eq!(
            actions,
            ["ingress_bytes_per_second", "egress_bytes_per_second"]
        );
        assert!(events
            .iter()
            .all(|e| e.granted && e.kind == EventType::QuotaBreached));
        assert!(
            events[0]
                .reason
                .as_ref()
                .unwrap()
                .as_str()
                .starts_with("throttled "),
            "{:?}",
            events[0].reason
        );
    }

    #[test]
    fn each_partition_is_held_to_its_quota_and_the_cluster_to_its_own() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let produce = |sizes: &[(i32, usize)]| {
            ProduceRequest::default().with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName("t".into()))
                .with_partition_data(
                    sizes
                        .iter()
                        .map(|&(index, n)| {
                            PartitionProduceData::default()
                                .with_index(index)
                                .with_records(Some(vec![0u8; n].into()))
                        })
                        .collect(),
                )])
        };
        let quotas = Quotas {
            ingress_bytes_per_second: Some(1_000_000),
            partition_ingress_bytes_per_second: Some(1_000),
            ..Quotas::default()
        };
        let m = ClusterMeter::default();
        // Each partition has its own second of allowance.
        assert_eq!(
            m.charge_produce(&produce(&[(0, 1_000), (1, 1_000)]), &quotas),
            Duration::ZERO
        );
        // Partition 0 goes 2,000 B over: 2 s, less the instants between; partition 1 is not
        // over, and the cluster is far under its own quota.
        let wait = m.charge_produce(&produce(&[(0, 2_000), (1, 10)]), &quotas);
        assert!(
            wait > Duration::from_millis(1_990) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        let usage = m.usage();
        assert_eq!(usage.throttles.partition_ingress, 1);
        assert_eq!(usage.throttles.ingress, 0);
        // Lifted: no partition throttles.
        let lifted = Quotas {
            partition_ingress_bytes_per_second: None,
            ..quotas
        };
        assert_eq!(
            m.charge_produce(&produce(&[(0, 100_000)]), &lifted),
            Duration::ZERO
        );
    }

    #[test]
    fn partitions_are_buckets_by_topic_and_index_and_bounded() {
        let b = PartitionBuckets::default();
        let part = |topic: &'static str, index: i32, bytes: u64| {
            ((TopicName(topic.into()), uuid::Uuid::nil(), index), bytes)
        };
        // Two topics interleaved, each partition its own allowance of 1,000 B.
        let parts = [
            part("a", 0, 1_000),
            part("b", 0, 1_000),
            part("a", 1, 1_000),
        ];
        assert_eq!(b.charge(parts, 1_000), Duration::ZERO);
        let wait = b.charge([part("b", 0, 500)], 1_000);
        assert!(wait > Duration::from_millis(490), "{wait:?}");
        assert_eq!(b.charge([part("a", 2, 1_000)], 1_000), Duration::ZERO);
        // An index no pool partition can have (or a negative one) is not charged, and no
        // bucket is made for it: a request cannot make the gateway allocate 2^31 buckets.
        let bogus = [part("c", i32::MAX, 1 << 40), part("c", -1, 1 << 40)];
        assert_eq!(b.charge(bogus, 1_000), Duration::ZERO);
        let topics = b.topics.lock().unwrap();
        assert!(topics.values().all(|v| v.len() <= 3), "{topics:?}");
        assert_eq!(b.throttles.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn meters_of_gone_clusters_are_dropped() {
        let meters = Meters::default();
        let kept = uuid::Uuid::new_v4();
        let first = meters.cluster(&kept, 1, |_| true);
        assert!(Arc::ptr_eq(&first, &meters.cluster(&kept, 1, |_| true)));
        for _ in 0..20 {
            meters.cluster(&uuid::Uuid::new_v4(), 1, |id| *id == kept);
        }
        let count = meters.inner.lock().unwrap().len();
        assert!(count <= 19, "{count}");
        assert!(Arc::ptr_eq(&first, &meters.cluster(&kept, 1, |_| true)));
    }

    #[test]
    fn a_mute_only_extends() {
        let mute = Mute::default();
        assert!(mute.until().is_none());
        mute.extend(Duration::from_secs(60));
        let first = mute.until().unwrap();
        mute.extend(Duration::from_secs(1));
        assert_eq!(mute.until().unwrap(), first);
        assert!(first > Instant::now() + Duration::from_secs(59));
    }

    #[test]
    fn throttle_milliseconds_round_up() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_nanos(1)), 1);
        assert_eq!(millis(Duration::from_micros(1_500)), 2);
        assert_eq!(millis(Duration::from_secs(3)), 3_000);
    }
}
