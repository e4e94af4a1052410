//! The gateway's side of metering: what the meter cannot see for itself.
//!
//! - Bytes are counted on the data path into per-session [`Counters`] (see `api::produce` and
//!   `api::fetch`).
//! - Partition counts are reconciled against the pool's metadata every
//!   [`RECONCILE_EVERY`], and at once after a tenant creates or deletes topics or partitions,
//!   so partition-seconds follow the pool, not just what passed through this gateway.
//! - Stored bytes: the pool (tansu) has no DescribeLogDirs, so storage is *estimated* as the
//!   bytes produced to the cluster within the retention window (default seven days, Kafka's
//!   default `retention.ms`), from the usage store itself. The usage API marks it as estimated.
//!   It overcounts topics deleted or compacted inside the window and undercounts topics with a
//!   longer retention; a pool that reports log sizes should replace it.
//! - [`Source`] tells the flusher which clusters exist and existed, from the admin store, and
//!   what they hold: nothing known (`None`, not zero) until the first reconciliation and the
//!   first storage estimate since start have succeeded, so a restart's gap is never billed at
//!   zero (the flusher accrues it at the counts kept beside the clock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use tokio::sync::Notify;
use tollgate_meter::counters::{CounterSet, Counters};
use tollgate_meter::flusher::{ClusterSource, ClusterState};
use tollgate_meter::store::{BoxFuture, Counts, UsageStore};
use tollgate_meter::{hour_of, HOUR};
use uuid::Uuid;

use crate::admin::Store;
use crate::pool::UpstreamError;
use crate::state::Gateway;

pub const RECONCILE_EVERY: Duration = Duration::from_secs(10);
const STORAGE_EVERY: Duration = Duration::from_secs(60);
pub const DEFAULT_RETENTION_SECONDS: i64 = 7 * 24 * 3600;

/// Metering state shared by the data path, the flusher and the admin API. Cheap to share
/// behind an `Arc`.
pub struct Metering {
    /// Off only to measure what metering costs (`--no-metering`, a benchmark switch).
    enabled: bool,
    counters: CounterSet,
    usage: Arc<dyn UsageStore>,
    partitions: RwLock<HashMap<Uuid, u64>>,
    stored_bytes: RwLock<HashMap<Uuid, u64>>,
    /// Whether `partitions` and `stored_bytes` hold a reconciliation's and an estimate's
    /// figures yet; before that their zeros mean "not known", not "none".
    reconciled: AtomicBool,
    estimated: AtomicBool,
    topics_changed: Notify,
    retention_seconds: i64,
}

impl Metering {
    pub fn new(usage: Arc<dyn UsageStore>, retention_seconds: i64) -> Self {
        Metering {
            enabled: true,
            counters: CounterSet::default(),
            usage,
            partitions: RwLock::default(),
            stored_bytes: RwLock::default(),
            reconciled: AtomicBool::new(false),
            estimated: AtomicBool::new(false),
            topics_changed: Notify::new(),
            retention_seconds,
        }
    }

    pub fn counter_set(&self) -> &CounterSet {
        &self.counters
    }

    /// Turns byte counting off, for benchmarks that measure its cost.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// The counters a newly authenticated connection adds to; `None` with metering off.
    pub fn counters(&self, cluster: Uuid, principal: &str) -> Option<Arc<Counters>> {
        self.enabled
            .then(|| self.counters.counters(cluster, principal))
    }

    pub fn usage(&self) -> &Arc<dyn UsageStore> {
        &self.usage
    }

    /// Called after a tenant changed its topics: reconcile soon, not in ten seconds.
    pub fn topics_changed(&self) {
        self.topics_changed.notify_one();
    }

    pub fn partitions(&self, cluster: &Uuid) -> u64 {
        self.partitions
            .read()
            .expect("poisoned")
            .get(cluster)
            .copied()
            .unwrap_or(0)
    }

    /// Every live cluster's partitions on the pool, as last reconciled: the pool's
    /// partitions the autoscaler records.
    pub fn total_partitions(&self) -> u64 {
        self.partitions.read().expect("poisoned").values().sum()
    }

    /// Counts every live cluster's partitions on the pool.
    pub async fn reconcile_partitions(&self, gw: &Gateway) -> Result<(), UpstreamError> {
        let (_, max) = gw
            .router()
            .pool()
            .versions(ApiKey::Metadata)
            .ok_or(UpstreamError::NoBrokers)?;
        let req = MetadataRequest::default().with_topics(None);
        let resp: MetadataResponse = gw.router().call_any(max.min(12), &req).await?;
        let clusters = gw.registry().all();
        let mut counts: HashMap<Uuid, u64> = clusters.iter().map(|c| (c.id, 0)).collect();
        for topic in &resp.topics {
            let Some(name) = topic.name.as_ref() else {
                continue;
            };
            if let Some(c) = clusters.iter().find(|c| c.namespace().owns(&name.0)) {
                *counts.entry(c.id).or_default() += topic.partitions.len() as u64;
            }
        }
        *self.partitions.write().expect("poisoned") = counts;
        self.reconciled.store(true, Ordering::Release);
        Ok(())
    }

    /// Re-estimates every live cluster's stored bytes (see the module docs).
    pub async fn estimate_storage(&self, gw: &Gateway, now: i64) {
        let from = hour_of(now - self.retention_seconds);
        let to = hour_of(now) + HOUR;
        let mut estimates = HashMap::new();
        for c in gw.registry().all() {
            match self.usage.hourly(c.id, from, to).await {
                Ok(rows) => {
                    estimates.insert(c.id, rows.iter().map(|r| r.bytes_in).sum());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "storage estimate skipped");
                    return;
                }
            }
        }
        *self.stored_bytes.write().expect("poisoned") = estimates;
        self.estimated.store(true, Ordering::Release);
    }

    /// `cluster`'s stored bytes as last estimated (0 before the first estimate).
    pub fn stored_bytes(&self, cluster: &Uuid) -> u64 {
        self.stored_bytes
            .read()
            .expect("poisoned")
            .get(cluster)
            .copied()
            .unwrap_or(0)
    }

    /// Sets a cluster's stored bytes, as an estimate or a measurement would.
    #[cfg(test)]
    pub(crate) fn set_stored_bytes(&self, cluster: Uuid, bytes: u64) {
        self.stored_bytes
            .write()
            .expect("poisoned")
            .insert(cluster, bytes);
        self.estimated.store(true, Ordering::Release);
    }

    /// What `cluster` holds as far as this gateway knows, for accrual: `None` until partitions
    /// have been reconciled and storage estimated since start. Clusters absent from the pool
    /// (deleted ones) hold nothing once those have run.
    pub fn counts(&self, cluster: &Uuid) -> Option<Counts> {
        let known =
            self.reconciled.load(Ordering::Acquire) && self.estimated.load(Ordering::Acquire);
        known.then(|| Counts {
            partitions: self.partitions(cluster),
            stored_bytes: self.stored_bytes(cluster),
        })
    }

    /// Keeps partition counts and storage estimates fresh until `shutdown`.
    pub async fn run_refresh(
        self: Arc<Self>,
        gw: Gateway,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut storage_due = tokio::time::Instant::now();
        loop {
            if let Err(e) = self.reconcile_partitions(&gw).await {
                tracing::debug!(error = %e, "partition reconciliation failed; keeping the last counts");
            }
            if tokio::time::Instant::now() >= storage_due {
                self.estimate_storage(&gw, tollgate_meter::flusher::unix_now())
                    .await;
                storage_due = tokio::time::Instant::now() + STORAGE_EVERY;
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                _ = self.topics_changed.notified() => {}
                _ = &mut shutdown => return,
            }
        }
    }
}

/// The flusher's view of the clusters: every cluster in the admin store, deleted ones
/// included (their deletion ends their accrual).
pub struct Source {
    pub store: Store,
    pub metering: Arc<Metering>,
}

impl ClusterSource for Source {
    fn clusters(&self) -> BoxFuture<'_, Vec<ClusterState>> {
        Box::pin(async move {
            let store = self.store.clone();
            let records = match tokio::task::spawn_blocking(move || store.cluster_records()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot list clusters for metering");
                    return Vec::new();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster listing task failed");
                    return Vec::new();
                }
            };
            records
                .into_iter()
                .map(|r| ClusterState {
                    cluster: r.cluster.id,
                    created_at: r.cluster.created_at,
                    deleted_at: r.deleted_at,
                    counts: self.metering.counts(&r.cluster.id),
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_meter::embedded::EmbeddedStore;

    /// Issue 13: before its first reconciliation a restarted gateway reported 0 partitions and
    /// 0 stored bytes, and the flusher billed the gap since it stopped at those.
    #[tokio::test]
    async fn counts_are_unknown_until_reconciled_and_estimated() {
        let dir = std::env::temp_dir().join(format!("tollgate-metering-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let usage: Arc<dyn UsageStore> = Arc::new(EmbeddedStore::open(&dir).unwrap());
        let m = Metering::new(usage, DEFAULT_RETENTION_SECONDS);
        let c = Uuid::new_v4();
        assert_eq!(m.counts(&c), None);
        m.set_stored_bytes(c, 42);
        assert_eq!(m.counts(&c), None, "partitions not reconciled yet");
        m.partitions.write().unwrap().insert(c, 3);
        m.reconciled.store(true, Ordering::Release);
        assert_eq!(
            m.counts(&c),
            Some(Counts {
                partitions: 3,
                stored_bytes: 42
            })
        );
        // A cluster the pool has nothing of, once known, holds nothing.
        assert_eq!(m.counts(&Uuid::new_v4()), Some(Counts::default()));
        drop(m);
        let _ = std::fs::remove_dir_all(dir);
    }
}
