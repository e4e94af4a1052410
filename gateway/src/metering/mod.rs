//! The gateway's side of metering: what the meter cannot see for itself.
//!
//! - Bytes are counted on the data path into per-session [`Counters`] (see `api::produce` and
//!   `api::fetch`).
//! - Partition counts are reconciled against the pool's metadata every
//!   [`RECONCILE_EVERY`], and at once after a tenant creates or deletes topics or partitions,
//!   so partition-seconds follow the pool, not just what passed through this gateway.
//! - Stored bytes are measured from the pool's log sizes at the same times, or estimated where
//!   the pool cannot say ([`storage`]); [`StorageSource`] labels which.
//! - [`Source`] tells the flusher which clusters exist and existed, from the admin store, and
//!   what they hold: nothing known (`None`, not zero) until the first reconciliation and the
//!   first storage figures since start, so a restart's gap is never billed at zero (the
//!   flusher accrues it at the counts kept beside the clock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse};
use tokio::sync::Notify;
use tollgate_meter::counters::{CounterSet, Counters};
use tollgate_meter::flusher::{ClusterSource, ClusterState};
use tollgate_meter::store::{BoxFuture, Counts, UsageStore};
use uuid::Uuid;

use crate::admin::Store;
use crate::pool::UpstreamError;
use crate::state::Gateway;

pub mod storage;

pub use storage::StorageSource;

pub const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// How often storage is estimated where it cannot be measured: an estimate reads an hour's
/// usage rows per cluster, and moves with the hour, not the second.
const ESTIMATE_EVERY: Duration = Duration::from_secs(60);
pub const DEFAULT_RETENTION_SECONDS: i64 = 7 * 24 * 3600;

/// Metering state shared by the data path, the flusher and the admin API. Cheap to share
/// behind an `Arc`.
pub struct Metering {
    /// Off only to measure what metering costs (`--no-metering`, a benchmark switch).
    enabled: bool,
    counters: CounterSet,
    usage: Arc<dyn UsageStore>,
    partitions: RwLock<HashMap<Uuid, u64>>,
    stored: RwLock<Stored>,
    /// Whether `partitions` holds a reconciliation's figures yet; before that its zeros mean
    /// "not known", not "none" (as `Stored::source` does for stored bytes).
    reconciled: AtomicBool,
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
            stored: RwLock::new(Stored {
                bytes: HashMap::new(),
                source: StorageSource::Unknown,
            }),
            reconciled: AtomicBool::new(false),
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

    /// Called after a tenant changed its topics or deleted records: reconcile and measure
    /// soon, not in ten seconds.
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

    /// Counts every live cluster's partitions on the pool; returns the pool's answer, which
    /// names every topic, its partitions' leaders and the brokers.
    pub async fn reconcile_partitions(
        &self,
        gw: &Gateway,
    ) -> Result<MetadataResponse, UpstreamError> {
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
        // Deleted clusters' and topics' series go (the pool's full list is at hand only
        // here), whether or not anything scrapes.
        let live: std::collections::HashSet<Uuid> = clusters.iter().map(|c| c.id).collect();
        gw.metrics().retain_clusters(|id| live.contains(id));
        let on_pool: std::collections::HashSet<&[u8]> = resp
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref())
            .map(|n| n.0.as_bytes())
            .collect();
        for cluster in &clusters {
            if let Some(metrics) = gw.metrics().existing(&cluster.id) {
                metrics.topics.retain(|name| on_pool.contains(name));
            }
        }
        Ok(resp)
    }

    /// Measures every live cluster's stored bytes from the pool's log sizes, given a Metadata
    /// answer for every topic. Where the pool cannot say, falls back to the estimate, unless
    /// a measurement was had before: a pool that measured and failed once keeps the last
    /// measurement rather than flip to a figure of another kind.
    async fn measure_storage(&self, gw: &Gateway, metadata: &MetadataResponse) -> bool {
        match storage::measure(gw, metadata).await {
            Ok(bytes) => {
                self.set_stored(bytes, StorageSource::Measured);
                true
            }
            Err(e) => {
                let source = self.storage_source();
                if source == StorageSource::Measured {
                    tracing::warn!(error = %e, "stored bytes not measured; keeping the last measurement");
                } else if !matches!(e, storage::MeasureError::Unsupported) {
                    tracing::warn!(error = %e, "stored bytes not measured; estimating them");
                }
                false
            }
        }
    }

    /// Re-estimates every live cluster's stored bytes (see [`storage`]).
    pub async fn estimate_storage(&self, gw: &Gateway, now: i64) {
        if let Some(bytes) =
            storage::estimate(gw, self.usage.as_ref(), self.retention_seconds, now).await
        {
            self.set_stored(bytes, StorageSource::Estimated);
        }
    }

    fn set_stored(&self, bytes: HashMap<Uuid, u64>, source: StorageSource) {
        *self.stored.write().expect("poisoned") = Stored { bytes, source };
    }

    /// `cluster`'s stored bytes as last measured or estimated (0 before either).
    pub fn stored_bytes(&self, cluster: &Uuid) -> u64 {
        self.stored
            .read()
            .expect("poisoned")
            .bytes
            .get(cluster)
            .copied()
            .unwrap_or(0)
    }

    /// Whether the stored bytes are measured, estimated or not known yet.
    pub fn storage_source(&self) -> StorageSource {
        self.stored.read().expect("poisoned").source
    }

    /// Sets a cluster's stored bytes, as a measurement would.
    #[cfg(test)]
    pub(crate) fn set_stored_bytes(&self, cluster: Uuid, bytes: u64) {
        let mut stored = self.stored.write().expect("poisoned");
        stored.bytes.insert(cluster, bytes);
        stored.source = StorageSource::Measured;
    }

    /// What `cluster` holds as far as this gateway knows, for accrual: `None` until partitions
    /// have been reconciled and storage measured or estimated since start. Clusters absent
    /// from the pool (deleted ones) hold nothing once those have run.
    pub fn counts(&self, cluster: &Uuid) -> Option<Counts> {
        let known = self.reconciled.load(Ordering::Acquire)
            && self.storage_source() != StorageSource::Unknown;
        known.then(|| Counts {
            partitions: self.partitions(cluster),
            stored_bytes: self.stored_bytes(cluster),
        })
    }

    /// Keeps partition counts and stored bytes fresh until `shutdown`: both every
    /// [`RECONCILE_EVERY`] and after a tenant changed its topics or deleted records, so a
    /// deletion frees room under `storage_limit_bytes` at once.
    pub async fn run_refresh(
        self: Arc<Self>,
        gw: Gateway,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut estimate_due = tokio::time::Instant::now();
        loop {
            let measured = match self.reconcile_partitions(&gw).await {
                Ok(metadata) => self.measure_storage(&gw, &metadata).await,
                Err(e) => {
                    tracing::debug!(error = %e, "partition reconciliation failed; keeping the last counts");
                    false
                }
            };
            let fallback = !measured && self.storage_source() != StorageSource::Measured;
            if fallback && tokio::time::Instant::now() >= estimate_due {
                self.estimate_storage(&gw, tollgate_meter::flusher::unix_now())
                    .await;
                estimate_due = tokio::time::Instant::now() + ESTIMATE_EVERY;
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                _ = self.topics_changed.notified() => {}
                _ = &mut shutdown => return,
            }
        }
    }
}

/// Every cluster's stored bytes and where they came from, replaced whole by each
/// measurement or estimate.
struct Stored {
    bytes: HashMap<Uuid, u64>,
    source: StorageSource,
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
