//! One collection: every family the gateway publishes, for one [`Scope`].
//!
//! Per cluster (a tenant sees its own, `cluster` is the cluster id):
//! - `tollgate_topic_bytes_in_total{cluster,topic}`: record batch bytes the pool accepted.
//! - `tollgate_topic_bytes_out_total{cluster,topic}`: record batch bytes delivered to consumers.
//! - `tollgate_topic_messages_in_total{cluster,topic}`: records the pool accepted.
//! - `tollgate_connections{cluster}`: client connections open on this instance.
//! - `tollgate_requests_total{cluster,api,outcome}`: requests by Kafka API and outcome
//!   (`ok`, `throttled`, `failed`, `refused`).
//! - `tollgate_throttle_seconds_total{cluster,quota}`: time clients were told to wait, by quota.
//! - `tollgate_authentication_failures_total{cluster,mechanism}`: failed authentications that
//!   named an existing cluster (the operator also sees those that named none, without
//!   `cluster`).
//! - `tollgate_partitions{cluster}`, `tollgate_stored_bytes{cluster}`: what the pool holds for
//!   the cluster, as metering last measured it.
//!
//! For the operator only: `tollgate_request_duration_seconds{api}` (latency, all clusters),
//! and what the registered [`Collect`]ors add (consumer lag per cluster, the pool, the meter,
//! audit delivery).

use std::sync::atomic::Ordering;

use super::model::{Family, Kind, Scope, Value};
use super::Metrics;
use crate::state::Gateway;

/// Every family `scope` may see, ready for an exposition.
pub fn collect(gw: &Gateway, scope: Scope) -> Vec<Family> {
    let metrics = gw.metrics();
    let registry = gw.registry();
    // Deleted clusters' series go with them.
    metrics.retain_clusters(|id| registry.get(id).is_some());

    let mut bytes_in = Family::new(
        "tollgate_topic_bytes_in_total",
        "Record batch bytes the pool accepted, per topic.",
        Kind::Counter,
    );
    let mut bytes_out = Family::new(
        "tollgate_topic_bytes_out_total",
        "Record batch bytes delivered to consumers, per topic.",
        Kind::Counter,
    );
    let mut messages_in = Family::new(
        "tollgate_topic_messages_in_total",
        "Records the pool accepted, per topic.",
        Kind::Counter,
    );
    let mut requests = Family::new(
        "tollgate_requests_total",
        "Kafka requests by API and outcome (ok, throttled, failed, refused).",
        Kind::Counter,
    );
    for (id, cluster) in metrics.clusters() {
        if !scope.includes(&id) {
            continue;
        }
        let cluster_label = id.to_string();
        for (topic, counters) in cluster.topics.each() {
            let labels = || {
                vec![
                    ("cluster", cluster_label.clone()),
                    ("topic", topic.to_string()),
                ]
            };
            let load = |a: &std::sync::atomic::AtomicU64| Value::Int(a.load(Ordering::Relaxed));
            bytes_in.push(labels(), load(&counters.bytes_in));
            bytes_out.push(labels(), load(&counters.bytes_out));
            messages_in.push(labels(), load(&counters.messages_in));
        }
        for (api, outcome, n) in cluster.requests() {
            requests.push(
                vec![
                    ("cluster", cluster_label.clone()),
                    ("api", format!("{api:?}")),
                    ("outcome", outcome.label().to_owned()),
                ],
                Value::Int(n),
            );
        }
    }

    let mut connections = Family::new(
        "tollgate_connections",
        "Client connections open on this gateway instance.",
        Kind::Gauge,
    );
    let mut partitions = Family::new(
        "tollgate_partitions",
        "Partitions the cluster has on the pool, as last reconciled.",
        Kind::Gauge,
    );
    let mut stored = Family::new(
        "tollgate_stored_bytes",
        "Bytes the cluster stores on the pool, as last measured.",
        Kind::Gauge,
    );
    let mut clusters = registry.all();
    clusters.retain(|c| scope.includes(&c.id));
    clusters.sort_by_key(|c| c.id);
    for cluster in &clusters {
        let label = || vec![("cluster", cluster.id.to_string())];
        connections.push(
            label(),
            Value::Int(gw.quota_counts().connections(&cluster.id)),
        );
        partitions.push(label(), Value::Int(gw.metering().partitions(&cluster.id)));
        stored.push(label(), Value::Int(gw.metering().stored_bytes(&cluster.id)));
    }

    let mut throttle = Family::new(
        "tollgate_throttle_seconds_total",
        "Seconds clients were told to wait (throttle_time_ms), by the quota that throttled them.",
        Kind::Counter,
    );
    let mut meters = gw.quota_meters().all();
    meters.sort_by_key(|(id, _)| *id);
    for (id, meter) in meters {
        if !scope.includes(&id) || registry.get(&id).is_none() {
            continue;
        }
        for (quota, ns) in meter.throttled_ns() {
            if ns > 0 {
                throttle.push(
                    vec![("cluster", id.to_string()), ("quota", quota.to_owned())],
                    Value::Float(ns as f64 / 1e9),
                );
            }
        }
    }

    let mut failures = Family::new(
        "tollgate_authentication_failures_total",
        "Failed authentications, by mechanism; with the cluster the credential named, if it exists.",
        Kind::Counter,
    );
    for ((cluster, mechanism), n) in metrics.authentication_failures() {
        let visible = match (&cluster, scope) {
            (Some(id), scope) => scope.includes(id),
            (None, scope) => scope.operator(),
        };
        if visible {
            let mut labels = Vec::with_capacity(2);
            if let Some(id) = cluster {
                labels.push(("cluster", id.to_string()));
            }
            labels.push(("mechanism", mechanism.to_owned()));
            failures.push(labels, Value::Int(n));
        }
    }

    let mut out = vec![
        bytes_in,
        bytes_out,
        messages_in,
        connections,
        requests,
        throttle,
        failures,
        partitions,
        stored,
    ];
    if scope.operator() {
        out.push(durations(metrics));
    }
    for collector in metrics.collectors() {
        collector.collect(scope, &mut out);
    }
    out
}

fn durations(metrics: &Metrics) -> Family {
    let mut family = Family::new(
        "tollgate_request_duration_seconds",
        "Time from a request's decoding to its answer's being written, by Kafka API.",
        Kind::Histogram,
    );
    for (api, buckets) in metrics.durations() {
        family.push(vec![("api", format!("{api:?}"))], Value::Histogram(buckets));
    }
    family
}
