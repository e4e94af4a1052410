//! The meter: counters in, flushes out.
//!
//! Every interval (a second by default) the flusher drains the data path's counters into a
//! new [`Flush`], adds each cluster's time-based accrual, and applies it to the store. A flush
//! that fails is kept and retried *verbatim* (same seq, same contents) until the store takes it:
//! if a timed-out attempt did land, the retry is recognised as a duplicate and nothing is
//! counted twice; if it did not, the retry counts it once. Counts made meanwhile go into the
//! next flush, which waits its turn. So the gateway keeps serving and counting while the store
//! is down, and the backlog lands when it returns.
//!
//! Time-based dimensions accrue at the counts the cluster held. A gateway learns them only
//! once it has reconciled with the pool, after starting; until then a cluster's state says
//! `counts: None`, never zero. A span this flusher did not watch itself (the gap while the
//! gateway was down, or time another instance left) accrues at the counts the store kept
//! beside the clock, those of the last accrual before the gap: tenants change their topics
//! only through a gateway, so with none running the partitions stood still, and those counts
//! were taken at the gap's start. With nothing kept (the cluster's first accrual, or a store
//! from before counts were kept) and nothing known yet, the cluster waits: its clock stays, so
//! the whole gap is accrued, once, at the first counts known.
//!
//! On shutdown the flusher drains the counters one last time and retries the backlog for a
//! bounded time. A crash loses at most what was counted since the last successful flush.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::accrual::accrue;
use crate::counters::CounterSet;
use crate::store::{Accrual, Counts, Flush, PrincipalUsage, StoreError, UsageStore};
use crate::{hour_of, HourlyUsage};

/// What the meter needs to know of a cluster to accrue its time-based usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterState {
    pub cluster: Uuid,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; accrual stops here.
    pub deleted_at: Option<i64>,
    /// What the cluster holds now: its partitions and the bytes the pool stores for it.
    /// `None` while the gateway does not know yet (before its first reconciliation with the
    /// pool since it started), which is not the same as holding nothing.
    pub counts: Option<Counts>,
}

/// Where the meter learns which clusters exist and what they hold. The gateway implements it
/// over its admin store and its view of the pool.
pub trait ClusterSource: Send + Sync + 'static {
    /// Every cluster that may still need accruing: live ones, and deleted ones whose deletion
    /// may not be accrued yet.
    fn clusters(&self) -> crate::store::BoxFuture<'_, Vec<ClusterState>>;
}

pub struct Flusher {
    instance: String,
    counters: CounterSet,
    store: Arc<dyn UsageStore>,
    next_seq: u64,
    /// Flushes not yet known to be stored, oldest first. Only the last may still be extended,
    /// and only while it has never been attempted.
    queue: VecDeque<Pending>,
    /// Per cluster, where this flusher last moved the clock to. A clock found there means the
    /// span since was watched by this flusher, so the counts it knows now apply to it.
    accrued_to: HashMap<Uuid, i64>,
    /// Unix seconds of the last tick that stored everything (0: none yet), for the flush lag
    /// the gateway's metrics report.
    flushed_at: Arc<AtomicI64>,
    /// Ticks that could not store what they had (the store unreachable), for the metrics.
    failures: Arc<AtomicU64>,
}

struct Pending {
    flush: Flush,
    attempted: bool,
}

impl Flusher {
    pub fn new(
        instance: impl Into<String>,
        counters: CounterSet,
        store: Arc<dyn UsageStore>,
    ) -> Self {
        Flusher {
            instance: instance.into(),
            counters,
            store,
            next_seq: 1,
            queue: VecDeque::new(),
            accrued_to: HashMap::new(),
            flushed_at: Arc::default(),
            failures: Arc::default(),
        }
    }

    /// How many flushes have failed so far; kept up to date while the flusher runs.
    pub fn failures(&self) -> Arc<AtomicU64> {
        self.failures.clone()
    }

    /// When the last flush stored everything, in Unix seconds (0: not yet); kept up to date
    /// while the flusher runs.
    pub fn flushed_at(&self) -> Arc<AtomicI64> {
        self.flushed_at.clone()
    }

    /// Flushes not yet stored.
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// Moves the counters' contents into the queue, counted in the hour `now` falls in.
    fn collect(&mut self, now: i64) {
        let deltas = self.counters.drain();
        if deltas.is_empty() {
            return;
        }
        let hour = hour_of(now);
        if self.queue.back().is_none_or(|p| p.attempted) {
            let flush = Flush {
                instance: self.instance.clone(),
                seq: self.next_seq,
                bytes: Vec::new(),
                principals: Vec::new(),
                accruals: Vec::new(),
            };
            self.next_seq += 1;
            self.queue.push_back(Pending {
                flush,
                attempted: false,
            });
        }
        let flush = &mut self.queue.back_mut().expect("just ensured").flush;
        let mut bytes: HashMap<(Uuid, i64), HourlyUsage> = flush
            .bytes
            .drain(..)
            .map(|u| ((u.cluster, u.hour), u))
            .collect();
        let mut principals: HashMap<(Uuid, i64, String), PrincipalUsage> = flush
            .principals
            .drain(..)
            .map(|p| ((p.cluster, p.hour, p.principal.clone()), p))
            .collect();
        for d in deltas {
            let row = bytes
                .entry((d.cluster, hour))
                .or_insert_with(|| HourlyUsage::zero(d.cluster, hour));
            row.bytes_in += d.bytes_in;
            row.bytes_out += d.bytes_out;
            let p = principals
                .entry((d.cluster, hour, d.principal.to_string()))
                .or_insert_with(|| PrincipalUsage {
                    cluster: d.cluster,
                    principal: d.principal.to_string(),
                    hour,
                    bytes_in: 0,
                    bytes_out: 0,
                });
            p.bytes_in += d.bytes_in;
            p.bytes_out += d.bytes_out;
        }
        flush.bytes = bytes.into_values().collect();
        flush.principals = principals.into_values().collect();
    }

    /// Adds time-based accruals up to `now` to a flush about to be attempted for the first
    /// time. Clocks are read from the store so that several instances never accrue the same
    /// second (the store re-checks them atomically).
    async fn add_accruals(
        &mut self,
        clusters: &[ClusterState],
        now: i64,
    ) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = clusters.iter().map(|c| c.cluster).collect();
        let clocks = self.store.clocks(&ids).await?;
        let last = self.store.last_counts(&ids).await?;
        let mut accruals = Vec::new();
        for ((c, clock), last) in clusters.iter().zip(clocks).zip(last) {
            let from = clock.unwrap_or(c.created_at);
            let to = c.deleted_at.map_or(now, |d| d.min(now));
            if to <= from {
                continue;
            }
            let watched = clock.is_some() && self.accrued_to.get(&c.cluster) == Some(&from);
            let counts = if watched {
                c.counts.or(last)
            } else {
                last.or(c.counts)
            };
            let Some(counts) = counts else {
                // Not known yet: accruing now would bill the gap at zero.
                continue;
            };
            accruals.push(Accrual {
                cluster: c.cluster,
                from,
                to,
                counts,
                rows: accrue(c.cluster, from, to, counts.partitions, counts.stored_bytes),
            });
        }
        if accruals.is_empty() {
            return Ok(());
        }
        if self.queue.back().is_none_or(|p| p.attempted) {
            self.queue.push_back(Pending {
                flush: Flush {
                    instance: self.instance.clone(),
                    seq: self.next_seq,
                    bytes: Vec::new(),
                    principals: Vec::new(),
                    accruals: Vec::new(),
                },
                attempted: false,
            });
            self.next_seq += 1;
        }
        self.queue.back_mut().expect("just ensured").flush.accruals = accruals;
        Ok(())
    }

    /// One round: collect, accrue, and apply the backlog in order until one fails.
    pub async fn tick(&mut self, source: &dyn ClusterSource, now: i64) -> Result<(), StoreError> {
        self.collect(now);
        // Accrue only when nothing older is waiting: a waiting flush may hold accruals whose
        // clock moves this one would have to start from.
        if self.queue.iter().all(|p| !p.attempted) {
            let clusters = source.clusters().await;
            self.add_accruals(&clusters, now).await?;
        }
        while let Some(front) = self.queue.front_mut() {
            front.attempted = true;
            let applied = self.store.apply(&front.flush).await?;
            for acc in &front.flush.accruals {
                if applied.stale_accruals.contains(&acc.cluster) {
                    self.accrued_to.remove(&acc.cluster);
                } else {
                    self.accrued_to.insert(acc.cluster, acc.to);
                }
            }
            if !applied.stale_accruals.is_empty() {
                tracing::debug!(
                    clusters = applied.stale_accruals.len(),
                    "accruals skipped: another instance accrued first"
                );
            }
            self.queue.pop_front();
        }
        Ok(())
    }

    /// Runs ticks every `interval` until `shutdown` resolves, then flushes one last time,
    /// retrying for at most `drain_timeout`.
    pub async fn run(
        mut self,
        source: Arc<dyn ClusterSource>,
        interval: Duration,
        drain_timeout: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = timer.tick() => {}
                _ = &mut shutdown => break,
            }
            let now = unix_now();
            let ticked = self.tick(source.as_ref(), now).await;
            match &ticked {
                Ok(()) => self.flushed_at.store(now, Ordering::Relaxed),
                Err(_) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            match ticked {
                Ok(()) if failing => {
                    tracing::info!("usage store reachable again; backlog flushed");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, backlog = self.backlog(), "usage flush failed; counting on and retrying");
                    }
                    failing = true;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + drain_timeout;
        loop {
            match self.tick(source.as_ref(), unix_now()).await {
                Ok(()) => {
                    tracing::info!("usage flushed");
                    return;
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::error!(error = %e, backlog = self.backlog(), "usage not flushed at shutdown; it is lost");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
