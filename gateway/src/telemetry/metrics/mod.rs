//! The gateway's metrics: what the data path counts, and how a scrape or an export reads it.
//!
//! - [`Metrics`] is the registry, shared by every connection: a [`ClusterMetrics`] per cluster
//!   (found once per authentication and kept on the session, as the meter's counters are),
//!   request latency histograms per API, authentication failures, and the [`Collect`]ors that
//!   other parts register (consumer lag, the pool, the meter, audit delivery).
//! - [`model`] is the snapshot both expositions read: [`text`] for Prometheus, the OTLP
//!   exporter for OpenTelemetry. A tenant's view is the same collection with
//!   [`Scope::Cluster`].
//! - [`topics`] holds per-topic counters behind a lock-free map; [`histogram`] the latency
//!   buckets.
//!
//! Names follow `../shared/CONTRACT.md` ("Observability"); the families are listed in
//! [`collect`].

pub mod collect;
pub mod histogram;
pub mod model;
pub mod pool;
pub mod text;
pub mod topics;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use uuid::Uuid;

pub use collect::collect;
use histogram::Histogram;
pub use model::{Collect, Family, Kind, Sample, Scope, Value};
use topics::Topics;

/// API keys are below this (92 is the highest Kafka 4 defines); a slot per key keeps the
/// request counters an index, not a lookup.
const API_SLOTS: usize = 96;

/// Topics with series of their own per cluster before the rest share one overflow series:
/// enough for MSK Serverless's 2,400 partitions as single-partition topics is not needed for
/// dashboards, and a tenant making topics in a loop must not grow the operator's scrape
/// without bound.
pub const DEFAULT_TOPICS_PER_CLUSTER: usize = 1_000;

/// How a request ended, for `tollgate_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered, not throttled.
    Ok,
    /// Answered with a throttle time from the cluster's quotas.
    Throttled,
    /// The pool failed it (no answer from its broker, or one the gateway could not read).
    Failed,
    /// Refused with no answer to carry the refusal, so the connection closes (an acks=0
    /// produce a quota or policy refuses). Requests refused before they reach a handler (not
    /// offered, malformed, over a frame limit, a revoked or expired session) close the
    /// connection uncounted: they are the connection's end, not a request's outcome.
    Refused,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Throttled,
        Outcome::Failed,
        Outcome::Refused,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Throttled => "throttled",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
        }
    }
}

fn api_slot(api: ApiKey) -> Option<usize> {
    usize::try_from(api as i16).ok().filter(|s| *s < API_SLOTS)
}

/// One cluster's counters on this instance.
#[derive(Debug)]
pub struct ClusterMetrics {
    requests: Vec<[AtomicU64; 4]>,
    pub topics: Topics,
    /// The cluster's prefix on the pool, stripped for the tenant's topic names.
    prefix: String,
}

impl ClusterMetrics {
    fn new(cluster: Uuid, topic_cap: usize) -> Self {
        ClusterMetrics {
            requests: (0..API_SLOTS).map(|_| Default::default()).collect(),
            topics: Topics::new(topic_cap),
            prefix: crate::tenancy::Namespace::of(cluster).prefix().to_owned(),
        }
    }

    /// The counters of the topic the pool calls `pool_name` (the data path's name for it).
    pub fn topic(&self, pool_name: &str) -> Arc<topics::TopicCounters> {
        self.topics.get(pool_name.as_bytes(), || {
            pool_name
                .strip_prefix(self.prefix.as_str())
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        })
    }

    pub fn request(&self, api: ApiKey, outcome: Outcome) {
        if let Some(slot) = api_slot(api) {
            self.requests[slot][outcome as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (API, outcome, count) of every count above zero.
    fn requests(&self) -> Vec<(ApiKey, Outcome, u64)> {
        ApiKey::iter()
            .filter_map(|api| Some((api, api_slot(api)?)))
            .flat_map(|(api, slot)| {
                Outcome::ALL.into_iter().filter_map(move |o| {
                    let n = self.requests[slot][o as usize].load(Ordering::Relaxed);
                    (n > 0).then_some((api, o, n))
                })
            })
            .collect()
    }
}

/// The registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Off only to measure what metrics cost (`--no-metrics`, a benchmark switch): the data
    /// path then holds no cluster counters and times nothing.
    enabled: bool,
    topic_cap: usize,
    clusters: RwLock<HashMap<Uuid, Arc<ClusterMetrics>>>,
    durations: Vec<Histogram>,
    /// Failed authentications by (cluster, when the credential named one that exists;
    /// mechanism). Rare, and bounded by clusters times mechanisms.
    auth_failures: Mutex<HashMap<(Option<Uuid>, &'static str), u64>>,
    collectors: RwLock<Vec<Arc<dyn Collect>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true, DEFAULT_TOPICS_PER_CLUSTER)
    }
}

impl Metrics {
    pub fn new(enabled: bool, topic_cap: usize) -> Self {
        Metrics {
            inner: Arc::new(Inner {
                enabled,
                topic_cap,
                clusters: Default::default(),
                durations: (0..API_SLOTS)
                    .map(|_| Histogram::new(histogram::REQUEST_SECONDS))
                    .collect(),
                auth_failures: Default::default(),
                collectors: Default::default(),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The cluster's counters, made at first use; `None` with metrics off. Called once per
    /// authentication, not per request.
    pub fn cluster(&self, id: Uuid) -> Option<Arc<ClusterMetrics>> {
        if !self.inner.enabled {
            return None;
        }
        if let Some(m) = self.inner.clusters.read().expect("poisoned").get(&id) {
            return Some(m.clone());
        }
        let mut clusters = self.inner.clusters.write().expect("poisoned");
        Some(
            clusters
                .entry(id)
                .or_insert_with(|| Arc::new(ClusterMetrics::new(id, self.inner.topic_cap)))
                .clone(),
        )
    }

    /// The cluster's counters if it has any yet.
    pub fn existing(&self, id: &Uuid) -> Option<Arc<ClusterMetrics>> {
        self.inner
            .clusters
            .read()
            .expect("poisoned")
            .get(id)
            .cloned()
    }

    /// Drops the series of clusters `live` denies (deleted clusters).
    pub fn retain_clusters(&self, live: impl Fn(&Uuid) -> bool) {
        self.inner
            .clusters
            .write()
            .expect("poisoned")
            .retain(|id, _| live(id));
        self.inner
            .auth_failures
            .lock()
            .expect("poisoned")
            .retain(|(cluster, _), _| cluster.as_ref().is_none_or(&live));
    }

    /// How long a request took from its decoding to its answer's being written.
    pub fn took(&self, api: ApiKey, took: Duration) {
        if !self.inner.enabled {
            return;
        }
        if let Some(slot) = api_slot(api) {
            self.inner.durations[slot].observe(took);
        }
    }

    pub fn authentication_failed(&self, cluster: Option<Uuid>, mechanism: &'static str) {
        *self
            .inner
            .auth_failures
            .lock()
            .expect("poisoned")
            .entry((cluster, mechanism))
            .or_default() += 1;
    }

    /// Adds a source of families to every collection from now on.
    pub fn register(&self, collector: Arc<dyn Collect>) {
        self.inner
            .collectors
            .write()
            .expect("poisoned")
            .push(collector);
    }

    fn clusters(&self) -> Vec<(Uuid, Arc<ClusterMetrics>)> {
        let mut all: Vec<_> = self
            .inner
            .clusters
            .read()
            .expect("poisoned")
            .iter()
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }

    fn authentication_failures(&self) -> Vec<((Option<Uuid>, &'static str), u64)> {
        let mut all: Vec<_> = self
            .inner
            .auth_failures
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        all.sort();
        all
    }

    fn durations(&self) -> Vec<(ApiKey, model::Buckets)> {
        ApiKey::iter()
            .filter_map(|api| Some((api, self.inner.durations[api_slot(api)?].snapshot()?)))
            .collect()
    }

    fn collectors(&self) -> Vec<Arc<dyn Collect>> {
        self.inner.collectors.read().expect("poisoned").clone()
    }
}
