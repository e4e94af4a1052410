//! Consumer lag: how far each consumer group is behind the partitions it reads, per cluster,
//! in the names kafka_exporter made standard and the group figures MSK reports.
//!
//! Families (`cluster` is the cluster id; `consumergroup` and `topic` the tenant's own names):
//! - `kafka_consumergroup_lag{cluster,consumergroup,topic,partition}`: high watermark minus
//!   committed offset, never below 0.
//! - `kafka_consumergroup_lag_sum{cluster,consumergroup,topic}`: the same summed over the
//!   topic's partitions.
//! - `kafka_consumergroup_current_offset{cluster,consumergroup,topic,partition}`: the committed
//!   offset.
//! - `kafka_topic_partition_current_offset{cluster,topic,partition}`: the high watermark.
//! - `tollgate_consumergroup_max_lag{cluster,consumergroup}` (MSK's MaxOffsetLag) and
//!   `tollgate_consumergroup_sum_lag{cluster,consumergroup}` (SumOffsetLag).
//! - `tollgate_consumergroup_estimated_max_time_lag_seconds{cluster,consumergroup}` (MSK's
//!   EstimatedMaxTimeLag): for each partition, how long ago its high watermark was at the
//!   committed offset, the largest over the group's partitions ([`history`]).
//!
//! Where the figures come from:
//! - [`committed`]: committed offsets, noted as the OffsetCommit and TxnOffsetCommit answers
//!   pass through this instance ([`commit`]), and replaced by the pool's own every
//!   [`reconcile::RECONCILE_EVERY`], since other instances carry other commits and groups
//!   committed before this process started must show too.
//! - High watermarks are the per-topic counters' ([`crate::telemetry::metrics::topics`]),
//!   which produce and fetch answers raise and the reconciliation's ListOffsets feeds.
//! - [`families`]: the [`crate::telemetry::metrics::Collect`] that turns both into series,
//!   with a cap per cluster.
//! - [`reconcile`]: the pool calls (ListGroups, OffsetFetch, ListOffsets) and the loop.

pub mod commit;
pub mod committed;
pub mod families;
pub mod history;
pub mod reconcile;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

use uuid::Uuid;

use super::metrics::Metrics;
use crate::tenancy::Registry;
use committed::ClusterLag;

pub use commit::Commit;
pub use reconcile::{reconcile_once, run, Round, RECONCILE_EVERY};

/// The consumer lag of every cluster on this instance. Cheap to clone; the gateway holds one
/// ([`crate::state::Gateway::lag`]).
#[derive(Clone)]
pub struct Lag {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    metrics: Metrics,
    /// Each cluster's groups behind a lock of its own: commits are a few per consumer every
    /// few seconds, so a lock per cluster is cheap, and a scrape of one cluster never waits
    /// on another's commits.
    clusters: RwLock<HashMap<Uuid, Arc<Mutex<ClusterLag>>>>,
    /// Rounds of reconciliation so far, which pick the window of groups a round fetches when a
    /// cluster has more than [`reconcile::GROUPS_PER_ROUND`].
    rounds: AtomicU64,
}

/// What the registry holds of the lag: a weak handle, so the lag (which holds the registry's
/// [`Metrics`] for the high watermarks) and the registry do not keep each other alive.
struct Registered(Weak<Inner>);

impl Lag {
    /// The lag of `registry`'s clusters, reading high watermarks from `metrics`, and
    /// registered with `metrics` as a collector of the families above.
    pub fn new(registry: Registry, metrics: Metrics) -> Self {
        let inner = Arc::new(Inner {
            registry,
            metrics: metrics.clone(),
            clusters: Default::default(),
            rounds: AtomicU64::new(0),
        });
        metrics.register(Arc::new(Registered(Arc::downgrade(&inner))));
        Lag { inner }
    }

    /// Notes an offset the pool stored for a group (the tenant's names), as its commit
    /// answer told it.
    pub fn committed(&self, cluster: Uuid, group: &str, topic: &str, partition: i32, offset: i64) {
        self.note(cluster, group, [(topic, partition, offset)]);
    }

    fn note<'a>(
        &self,
        cluster: Uuid,
        group: &str,
        offsets: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) {
        if !self.inner.metrics.enabled() {
            return;
        }
        let now = Instant::now();
        let state = self.cluster(cluster);
        let mut state = state.lock().expect("poisoned");
        for (topic, partition, offset) in offsets {
            state.note(group, topic, partition, offset, now);
        }
    }

    /// The cluster's state, made at first use.
    fn cluster(&self, id: Uuid) -> Arc<Mutex<ClusterLag>> {
        if let Some(c) = self.inner.clusters.read().expect("poisoned").get(&id) {
            return c.clone();
        }
        self.inner
            .clusters
            .write()
            .expect("poisoned")
            .entry(id)
            .or_default()
            .clone()
    }

    /// The cluster's state if it has any.
    fn existing(&self, id: &Uuid) -> Option<Arc<Mutex<ClusterLag>>> {
        self.inner
            .clusters
            .read()
            .expect("poisoned")
            .get(id)
            .cloned()
    }

    /// Drops the state of clusters the registry no longer has (deleted ones).
    fn drop_deleted(&self) {
        let registry = &self.inner.registry;
        let gone = {
            let clusters = self.inner.clusters.read().expect("poisoned");
            clusters.keys().any(|id| registry.get(id).is_none())
        };
        if gone {
            self.inner
                .clusters
                .write()
                .expect("poisoned")
                .retain(|id, _| registry.get(id).is_some());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_noted_with_metrics_off() {
        let lag = Lag::new(Registry::default(), Metrics::new(false, 10));
        lag.committed(Uuid::from_u128(0xa), "g", "t", 0, 1);
        assert!(lag.existing(&Uuid::from_u128(0xa)).is_none());
    }
}
