//! Audit events: who authenticated or failed to, what a policy refused, what the admin API
//! changed, which quota refused or throttled whom, how the pool was scaled. JSON lines in a
//! versioned, CloudEvents-like schema (README.md "Audit events", `deploy/audit-event.schema.json`)
//! that has no place for a credential.
//!
//! - [`event`]: the event as emitted ([`Event`]) and as delivered ([`Record`]).
//! - [`Audit`]: the handle the gateway emits through (`gw.audit().emit(..)`). Cheap to clone;
//!   emitting never blocks: the event is counted, kept in its cluster's ring ([`ring`], what the
//!   tenant reads with [`Audit::tenant_events`]), and queued for delivery, or dropped and
//!   counted when the queue is full.
//! - [`denials`], [`quota`], [`admin`], [`scaling`]: the emitters' helpers: a connection's
//!   authorization denials (held back when repeated), quota breaches (one per cluster and
//!   quota a minute), admin API changes (one per request, never its body), pool resizes.
//! - Delivery ([`Delivery::start`]): one task fans events out to the sinks, each with its own
//!   buffer and retries: a file or stdout (`--audit-log`), a topic on the pool
//!   (`--audit-topic`), an S3-compatible object store ([`s3`], `--audit-s3-url`).
//!
//! Metrics (operator only): `tollgate_audit_events_total{type}`,
//! `tollgate_audit_events_delivered_total{sink}`, `tollgate_audit_events_dropped_total{sink}`.

pub mod admin;
pub mod config;
mod delivery;
pub mod denials;
pub mod event;
mod file;
pub mod quota;
mod repeat;
pub mod ring;
pub mod s3;
pub mod scaling;
mod topic;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, watch};
use uuid::Uuid;

pub use config::{AuditConfig, AuditError, LogTarget, S3Config};
pub use delivery::SinkName;
pub use denials::ConnectionAudit;
pub use event::{Event, EventType, Reason, Record, SecretFree};
pub use quota::{Breach, Who};
pub use ring::{BadSince, Since, TENANT_EVENTS_KEPT};

use crate::state::Gateway;
use crate::telemetry::metrics::{Collect, Family, Kind, Scope, Value};
use crate::tenancy::Registry;
use delivery::{Outlets, SinkCounts};
use repeat::Repeats;

/// Events queued for the delivery task: a burst of thousands (a storm of refused logins)
/// waits for it rather than being dropped; at a few hundred bytes each, a few MiB.
pub const QUEUE_EVENTS: usize = 10_000;

/// The gateway's audit log. Cheap to clone; emitting never waits.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    /// `tollgate/<instance>`.
    source: Arc<str>,
    emitted: [AtomicU64; 6],
    /// The sinks configured, each of which loses an event the queue drops.
    sinks: Vec<SinkName>,
    counts: Arc<SinkCounts>,
    /// To the delivery task; none without sinks.
    queue: Option<mpsc::Sender<Arc<Record>>>,
    rings: ring::Rings,
    /// Known once delivery starts: fills in the tenant of events that name only a cluster,
    /// and tells which clusters' rings may go.
    registry: OnceLock<Registry>,
    quotas: Mutex<Repeats<(Uuid, &'static str)>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("source", &self.inner.source)
            .field("sinks", &self.inner.sinks)
            .finish_non_exhaustive()
    }
}

impl Default for Audit {
    /// An audit log without sinks: events are counted and kept for their tenants only.
    fn default() -> Self {
        Audit::build(&instance_name(None), Vec::new(), None)
    }
}

/// `$HOSTNAME` (or `tollgate`) and eight random hex digits, unless given: two processes on one
/// host, or one restarted, never share a name (object keys must not collide).
fn instance_name(given: Option<&str>) -> String {
    match given {
        Some(name) => name.to_owned(),
        None => format!(
            "{}-{}",
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "tollgate".into()),
            &Uuid::new_v4().simple().to_string()[..8]
        ),
    }
}

impl Audit {
    fn build(
        instance: &str,
        sinks: Vec<SinkName>,
        queue: Option<mpsc::Sender<Arc<Record>>>,
    ) -> Audit {
        Audit {
            inner: Arc::new(Inner {
                source: format!("tollgate/{instance}").into(),
                emitted: Default::default(),
                sinks,
                counts: Default::default(),
                queue,
                rings: Default::default(),
                registry: OnceLock::new(),
                quotas: Mutex::new(Repeats::new(quota::QUOTA_EVENT_INTERVAL, quota::QUOTA_KEYS)),
            }),
        }
    }

    /// The audit log `config` describes, and its delivery, to be started once the gateway
    /// holds the log ([`Gateway::with_telemetry`]). Files are opened and the object store's
    /// settings checked now, so a start with a bad sink fails saying why.
    pub fn configured(config: AuditConfig) -> Result<(Audit, Delivery), AuditError> {
        let instance = instance_name(config.instance.as_deref());
        let log = config.log.as_ref().map(file::LogSink::open).transpose()?;
        let s3 = match config.s3 {
            Some(s3) => {
                let credentials =
                    s3::sign::Credentials::from_env().ok_or(AuditError::S3Credentials)?;
                Some(s3::S3Sink::new(s3, credentials, &instance)?)
            }
            None => None,
        };
        let mut sinks = Vec::new();
        if log.is_some() {
            sinks.push(SinkName::Log);
        }
        if config.topic.is_some() {
            sinks.push(SinkName::Topic);
        }
        if s3.is_some() {
            sinks.push(SinkName::S3);
        }
        let (queue, rx) = if sinks.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(QUEUE_EVENTS);
            (Some(tx), Some(rx))
        };
        let audit = Audit::build(&instance, sinks, queue);
        let delivery = Delivery {
            audit: audit.clone(),
            queue: rx,
            log,
            topic: config.topic,
            s3,
        };
        Ok((audit, delivery))
    }

    /// `tollgate/<instance>`: the events' `source`.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Records `event` now: counts it, keeps it for its cluster's tenant, and queues it for the
    /// sinks. Never blocks; a full queue drops the event, counted for every sink.
    pub fn emit(&self, mut event: Event) {
        let inner = &self.inner;
        let registry = inner.registry.get();
        if event.tenant.is_none() {
            if let (Some(cluster), Some(registry)) = (event.cluster, registry) {
                event.tenant = registry.get(&cluster).map(|c| c.tenant.clone());
            }
        }
        inner.emitted[event.kind.slot()].fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(Record::new(event, inner.source.clone(), event::now_ms()));
        inner.rings.push(&record, registry);
        if let Some(queue) = &inner.queue {
            if queue.try_send(record).is_err() {
                for sink in &inner.sinks {
                    inner.counts.dropped(*sink, 1);
                }
            }
        }
    }

    /// `GET /v1/clusters/{id}/audit-events[?since=]`: `{"events": [...]}`, the cluster's
    /// events kept on this instance, oldest first, after `since` (an event id or an RFC 3339
    /// time, percent-decoded) when given. The caller has checked that the credential is the
    /// cluster's.
    pub fn tenant_events(
        &self,
        cluster: Uuid,
        since: Option<&str>,
    ) -> Result<serde_json::Value, BadSince> {
        let since = since.map(Since::parse).transpose()?;
        let events = ring::view(self.inner.rings.events(&cluster), since.as_ref());
        Ok(serde_json::json!({ "events": events }))
    }

    /// The cluster's events kept on this instance, oldest first, as delivered.
    pub fn cluster_events(&self, cluster: &Uuid) -> Vec<Record> {
        self.inner
            .rings
            .events(cluster)
            .iter()
            .map(|r| Record::clone(r))
            .collect()
    }

    /// Events of `kind` emitted since the gateway started.
    pub fn emitted(&self, kind: EventType) -> u64 {
        self.inner.emitted[kind.slot()].load(Ordering::Relaxed)
    }

    /// Whether a breach of `quota` by `cluster` is due an event now.
    fn quota_due(&self, cluster: Uuid, quota: &'static str) -> bool {
        self.inner
            .quotas
            .lock()
            .expect("poisoned")
            .due((cluster, quota), std::time::Instant::now())
    }

    fn same(&self, other: &Audit) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// The sinks of an audit log, until [`Delivery::start`] runs them.
pub struct Delivery {
    audit: Audit,
    queue: Option<mpsc::Receiver<Arc<Record>>>,
    log: Option<file::LogSink>,
    topic: Option<String>,
    s3: Option<s3::S3Sink>,
}

impl Delivery {
    /// Starts delivering to the sinks, and hooks the log up to `gw` (its registry, its metrics,
    /// its quota meters' throttles). Delivery runs until `stop`, then delivers what was emitted
    /// before it (each sink gets [`delivery::SHUTDOWN_GRACE`]); the returned task ends once it
    /// has. Stop it after everything that emits (listeners, admin API, autoscaler) has stopped.
    pub fn start(
        self,
        gw: &Gateway,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let audit = self.audit;
        if !gw.audit().same(&audit) {
            tracing::error!(
                "the gateway emits to another audit log than the one being delivered: \
                 build it with Gateway::with_telemetry(.., audit)"
            );
        }
        let _ = audit.inner.registry.set(gw.registry().clone());
        gw.metrics().register(Arc::new(Counters(audit.clone())));
        gw.quota_meters().report_to(audit.clone());
        let Some(queue) = self.queue else {
            return tokio::spawn(async {});
        };
        let (stopping_tx, stopping) = watch::channel(None);
        let counts = audit.inner.counts.clone();
        let mut sinks = Vec::new();
        let mut tasks = Vec::new();
        let mut outlet = |name: SinkName| {
            let (tx, rx) = mpsc::channel(delivery::SINK_BUFFER_EVENTS);
            sinks.push((name, tx));
            rx
        };
        if let Some(sink) = self.log {
            let rx = outlet(SinkName::Log);
            tasks.push(tokio::spawn(delivery::run(
                sink,
                rx,
                counts.clone(),
                stopping.clone(),
            )));
        }
        if let Some(topic) = self.topic {
            let rx = outlet(SinkName::Topic);
            let sink = topic::TopicSink::new(gw.clone(), topic);
            tasks.push(tokio::spawn(delivery::run(
                sink,
                rx,
                counts.clone(),
                stopping.clone(),
            )));
        }
        if let Some(sink) = self.s3 {
            let rx = outlet(SinkName::S3);
            tasks.push(tokio::spawn(delivery::run(
                sink,
                rx,
                counts.clone(),
                stopping.clone(),
            )));
        }
        let outlets = Outlets { sinks, counts };
        tokio::spawn(async move {
            delivery::dispatch(queue, outlets, stopping_tx, stop).await;
            for task in tasks {
                let _ = task.await;
            }
        })
    }
}

/// The audit log's counters, for the operator's scrape.
struct Counters(Audit);

impl Collect for Counters {
    fn collect(&self, scope: Scope, out: &mut Vec<Family>) {
        if !scope.operator() {
            return;
        }
        let inner = &self.0.inner;
        let mut emitted = Family::new(
            "tollgate_audit_events_total",
            "Audit events emitted, by type.",
            Kind::Counter,
        );
        for kind in EventType::ALL {
            emitted.push(
                vec![("type", kind.name().to_owned())],
                Value::Int(self.0.emitted(kind)),
            );
        }
        let mut delivered = Family::new(
            "tollgate_audit_events_delivered_total",
            "Audit events a sink delivered.",
            Kind::Counter,
        );
        let mut dropped = Family::new(
            "tollgate_audit_events_dropped_total",
            "Audit events a sink lost: its buffer or the queue was full, or it was still \
             failing at shutdown.",
            Kind::Counter,
        );
        for sink in &inner.sinks {
            let (d, x) = inner.counts.of(*sink);
            delivered.push(vec![("sink", sink.label().to_owned())], Value::Int(d));
            dropped.push(vec![("sink", sink.label().to_owned())], Value::Int(x));
        }
        out.push(emitted);
        if !inner.sinks.is_empty() {
            out.push(delivered);
            out.push(dropped);
        }
    }
}

#[cfg(test)]
impl Audit {
    /// An audit log whose queue the test reads: the events exactly as the sinks would get
    /// them, through the real queue.
    pub(crate) fn capturing(capacity: usize) -> (Audit, mpsc::Receiver<Arc<Record>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Audit::build("test", vec![SinkName::Log], Some(tx)), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitting_never_waits_and_a_full_queue_drops_counted() {
        let (audit, mut rx) = Audit::capturing(3);
        for _ in 0..10 {
            audit.emit(Event::new(EventType::AuthenticationFailed, "PLAIN"));
        }
        assert_eq!(audit.emitted(EventType::AuthenticationFailed), 10);
        assert_eq!(audit.inner.counts.of(SinkName::Log), (0, 7));
        let mut queued = 0;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 3);
        // Room again: the next one goes.
        audit.emit(Event::new(EventType::AuthenticationSucceeded, "PLAIN"));
        assert!(rx.try_recv().unwrap().granted);
        // A queue nobody reads any more drops too, never blocks.
        drop(rx);
        audit.emit(Event::new(EventType::AuthenticationFailed, "PLAIN"));
        assert_eq!(audit.inner.counts.of(SinkName::Log), (0, 8));
    }

    #[test]
    fn the_counters_are_the_operators_only() {
        let (audit, _rx) = Audit::capturing(1);
        audit.emit(Event::new(EventType::PoolScaled, "resize"));
        audit.emit(Event::new(EventType::PoolScaled, "resize"));
        let counters = Counters(audit);
        let mut families = Vec::new();
        counters.collect(Scope::Cluster(Uuid::new_v4()), &mut families);
        assert!(families.is_empty());
        counters.collect(Scope::All, &mut families);
        let names: Vec<&str> = families.iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "tollgate_audit_events_total",
                "tollgate_audit_events_delivered_total",
                "tollgate_audit_events_dropped_total"
            ]
        );
        let scaled = families[0]
            .samples
            .iter()
            .find(|s| s.labels[0].1 == "tollgate.pool.scaled")
            .unwrap();
        assert_eq!(scaled.value, Value::Int(2));
        assert_eq!(families[2].samples[0].labels, [("sink", "log".to_owned())]);
        assert_eq!(families[2].samples[0].value, Value::Int(1));
    }

    #[test]
    fn the_tenant_view_is_its_clusters_events_newest_last() {
        let audit = Audit::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for n in 0..3 {
            audit.emit(
                Event::new(EventType::AuthenticationFailed, "SCRAM-SHA-512")
                    .with_cluster(a)
                    .with_principal(format!("user-{n}")),
            );
        }
        audit.emit(Event::new(EventType::AuthenticationFailed, "PLAIN").with_cluster(b));
        audit.emit(Event::new(EventType::PoolScaled, "resize"));
        let view = audit.tenant_events(a, None).unwrap();
        let events = view["events"].as_array().unwrap();
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e["cluster"] == a.to_string()));
        assert_eq!(events[2]["principal"], "user-2");
        let first = events[0]["id"].as_str().unwrap();
        let after = audit.tenant_events(a, Some(first)).unwrap();
        assert_eq!(after["events"].as_array().unwrap().len(), 2);
        assert!(audit.tenant_events(a, Some("not a time")).is_err());
        let of_b = audit.tenant_events(b, None).unwrap();
        assert_eq!(of_b["events"].as_array().unwrap().len(), 1);
        assert_eq!(
            audit.tenant_events(Uuid::new_v4(), None).unwrap(),
            serde_json::json!({"events": []})
        );
    }
}
