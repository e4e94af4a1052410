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
    // A tenant's scrape reads its own cluster, not a scan of every cluster's; a deleted
    // cluster's counters (pruned by metering's reconciliation) are never shown meanwhile.
    let counted = match scope {
        Scope::All => metrics.clusters(),
        Scope::Cluster(id) => metrics.existing(&id).map(|m| (id, m)).into_iter().collect(),
    };
    for (id, cluster) in counted {
        if registry.get(&id).is_none() {
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
    let mut clusters = match scope {
        Scope::All => registry.all(),
        Scope::Cluster(id) => registry.get(&id).into_iter().collect(),
    };
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
    let mut meters = match scope {
        Scope::All => gw.quota_meters().all(),
        Scope::Cluster(id) => gw
            .quota_meters()
            .existing(&id)
            .map(|m| (id, m))
            .into_iter()
            .collect(),
    };
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
            (Some(id), scope) => scope.includes(id) && registry.get(id).is_some(),
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

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiKey;
    use uuid::Uuid;

    use super::super::{text, Outcome};
    use super::*;

    fn names_and_clusters(families: &[Family]) -> (Vec<&'static str>, Vec<String>) {
        let names = families
            .iter()
            .filter(|f| !f.samples.is_empty())
            .map(|f| f.name)
            .collect();
        let mut clusters: Vec<String> = families
            .iter()
            .flat_map(|f| &f.samples)
            .flat_map(|s| &s.labels)
            .filter(|(n, _)| *n == "cluster")
            .map(|(_, v)| v.clone())
            .collect();
        clusters.sort();
        clusters.dedup();
        (names, clusters)
    }

    #[test]
    fn a_tenant_sees_its_cluster_alone_and_deleted_clusters_vanish() {
        let ctx = crate::api::testing::ctx(r#"{"Statement": []}"#);
        let gw = &ctx.gw;
        let a = ctx.session.cluster.id;
        let b = Uuid::from_u128(0xb);
        let mut other = (*ctx.session.cluster).clone();
        other.id = b;
        other.name = "other".into();
        gw.registry().upsert(other);
        let prefix = |id: Uuid| crate::tenancy::Namespace::of(id).prefix().to_owned();
        let ma = gw.metrics().cluster(a).unwrap();
        let mb = gw.metrics().cluster(b).unwrap();
        ma.topic(&format!("{}orders", prefix(a))).produced(100, 4);
        mb.topic(&format!("{}secret", prefix(b))).produced(7, 1);
        ma.request(ApiKey::Produce, Outcome::Ok);
        mb.request(ApiKey::Fetch, Outcome::Throttled);
        gw.metrics()
            .took(ApiKey::Produce, std::time::Duration::from_millis(3));
        gw.metrics().authentication_failed(Some(b), "PLAIN");
        gw.metrics().authentication_failed(None, "SCRAM-SHA-512");

        let tenant = collect(gw, Scope::Cluster(a));
        let (names, clusters) = names_and_clusters(&tenant);
        assert_eq!(clusters, vec![a.to_string()]);
        assert!(
            !names.contains(&"tollgate_request_duration_seconds"),
            "{names:?}"
        );
        let exposed = text::encode(&tenant);
        assert!(exposed.contains(r#"tollgate_topic_bytes_in_total{cluster="00000000-0000-0000-0000-00000000000a",topic="orders"} 100"#), "{exposed}");
        assert!(exposed.contains(r#"tollgate_topic_messages_in_total{cluster="00000000-0000-0000-0000-00000000000a",topic="orders"} 4"#), "{exposed}");
        assert!(
            !exposed.contains("secret") && !exposed.contains("PLAIN") && !exposed.contains("SCRAM"),
            "{exposed}"
        );

        let operator = collect(gw, Scope::All);
        let (names, clusters) = names_and_clusters(&operator);
        assert_eq!(clusters, vec![a.to_string(), b.to_string()]);
        assert!(names.contains(&"tollgate_request_duration_seconds"));
        let exposed = text::encode(&operator);
        assert!(exposed.contains(r#"tollgate_requests_total{cluster="00000000-0000-0000-0000-00000000000b",api="Fetch",outcome="throttled"} 1"#), "{exposed}");
        assert!(
            exposed
                .contains(r#"tollgate_authentication_failures_total{mechanism="SCRAM-SHA-512"} 1"#),
            "{exposed}"
        );

        // Deleted: its series go with it, the other cluster's stay.
        gw.registry().remove(&b);
        let (_, clusters) = names_and_clusters(&collect(gw, Scope::All));
        assert_eq!(clusters, vec![a.to_string()]);
    }
}
