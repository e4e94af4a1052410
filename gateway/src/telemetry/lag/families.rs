//! The lag's families (listed in [`super`]), collected per cluster in the scope asked for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::committed::ClusterLag;
use super::{Lag, Registered};
use crate::telemetry::metrics::topics::OVERFLOW_TOPIC;
use crate::telemetry::metrics::{Collect, Family, Kind, Scope, Value};

/// Series labelled by partition per cluster, for the group series
/// (`kafka_consumergroup_lag` and `_current_offset` count one per group and partition) and
/// again for `kafka_topic_partition_current_offset`. Enough for MSK Serverless's 2,400
/// partitions read by two groups; a tenant with hundreds of groups over many partitions must
/// not grow the operator's scrape without bound. Past the cap a group's partitions get no
/// series of their own but still count in its `kafka_consumergroup_lag_sum` and its group
/// series (sum, max and time lag), which stay exact.
pub const PARTITION_SERIES_PER_CLUSTER: usize = 5_000;

impl Collect for Registered {
    fn collect(&self, scope: Scope, out: &mut Vec<Family>) {
        if let Some(inner) = self.0.upgrade() {
            Lag { inner }.collect_at(scope, Instant::now(), out);
        }
    }
}

impl Lag {
    fn collect_at(&self, scope: Scope, now: Instant, out: &mut Vec<Family>) {
        if !self.inner.metrics.enabled() {
            return;
        }
        self.drop_deleted();
        let mut families = Families::default();
        let mut clusters = self.inner.registry.all();
        clusters.retain(|c| scope.includes(&c.id));
        clusters.sort_by_key(|c| c.id);
        for cluster in clusters {
            let marks = self.marks(&cluster.id);
            let state = self.existing(&cluster.id);
            let mut state = state.as_ref().map(|s| s.lock().expect("poisoned"));
            if let Some(state) = state.as_mut() {
                state.sample(now, |topic, partition| marks.get(topic, partition));
            }
            families.cluster(
                &cluster.id.to_string(),
                &marks,
                state.as_deref(),
                now,
                PARTITION_SERIES_PER_CLUSTER,
            );
        }
        out.extend(families.into_vec());
    }

    /// The cluster's high watermarks as this instance knows them.
    pub(super) fn marks(&self, cluster: &uuid::Uuid) -> Marks {
        let Some(metrics) = self.inner.metrics.existing(cluster) else {
            return Marks::default();
        };
        Marks(
            metrics
                .topics
                .each()
                .into_iter()
                // The overflow's partitions are several topics' at once: no watermark of any.
                .filter(|(topic, _)| &**topic != OVERFLOW_TOPIC)
                .map(|(topic, counters)| (topic, counters.high_watermarks()))
                .filter(|(_, marks)| !marks.is_empty())
                .collect(),
        )
    }
}

/// High watermarks by tenant topic name, each topic's by partition in ascending order.
#[derive(Debug, Default)]
pub(super) struct Marks(BTreeMap<Arc<str>, Vec<(i32, i64)>>);

impl Marks {
    pub(super) fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        let marks = self.0.get(topic)?;
        let i = marks.binary_search_by_key(&partition, |(p, _)| *p).ok()?;
        Some(marks[i].1)
    }
}

struct Families {
    lag: Family,
    lag_sum: Family,
    current_offset: Family,
    topic_offset: Family,
    max_lag: Family,
    sum_lag: Family,
    time_lag: Family,
}

impl Default for Families {
    fn default() -> Self {
        Families {
            lag: Family::new(
                "kafka_consumergroup_lag",
                "How many records the group is behind: the partition's high watermark minus the group's committed offset.",
                Kind::Gauge,
            ),
            lag_sum: Family::new(
                "kafka_consumergroup_lag_sum",
                "The group's lag summed over the topic's partitions.",
                Kind::Gauge,
            ),
            current_offset: Family::new(
                "kafka_consumergroup_current_offset",
                "The group's committed offset in the partition.",
                Kind::Gauge,
            ),
            topic_offset: Family::new(
                "kafka_topic_partition_current_offset",
                "The partition's high watermark (the offset its next record gets).",
                Kind::Gauge,
            ),
            max_lag: Family::new(
                "tollgate_consumergroup_max_lag",
                "The group's largest lag over its partitions (MSK's MaxOffsetLag).",
                Kind::Gauge,
            ),
            sum_lag: Family::new(
                "tollgate_consumergroup_sum_lag",
                "The group's lag summed over all its partitions (MSK's SumOffsetLag).",
                Kind::Gauge,
            ),
            time_lag: Family::new(
                "tollgate_consumergroup_estimated_max_time_lag_seconds",
                "How long ago the high watermark was at the group's committed offset, the largest over its partitions, estimated from the high watermark's history (MSK's EstimatedMaxTimeLag).",
                Kind::Gauge,
            ),
        }
    }
}

impl Families {
    /// Adds one cluster's series: its partitions' high watermarks from `marks`, and its groups'
    /// from `state`, at most `cap` series labelled by partition of each.
    fn cluster(
        &mut self,
        cluster: &str,
        marks: &Marks,
        state: Option<&ClusterLag>,
        now: Instant,
        cap: usize,
    ) {
        let partitions = marks
            .0
            .iter()
            .flat_map(|(topic, marks)| marks.iter().map(move |(p, hwm)| (topic, *p, *hwm)));
        for (topic, partition, hwm) in partitions.take(cap) {
            self.topic_offset.push(
                vec![
                    ("cluster", cluster.to_owned()),
                    ("topic", topic.to_string()),
                    ("partition", partition.to_string()),
                ],
                Value::Int(hwm as u64),
            );
        }
        let Some(state) = state else {
            return;
        };
        let mut room = cap;
        for (group, offsets) in state.groups() {
            let group_labels = || {
                vec![
                    ("cluster", cluster.to_owned()),
                    ("consumergroup", group.to_owned()),
                ]
            };
            let mut by_topic: BTreeMap<&str, u64> = BTreeMap::new();
            let mut max: Option<u64> = None;
            let mut behind: Option<f64> = None;
            for (topic, partition, committed) in offsets {
                let labels = || {
                    let mut l = group_labels();
                    l.push(("topic", topic.to_owned()));
                    l.push(("partition", partition.to_string()));
                    l
                };
                let labelled = room > 0;
                if labelled {
                    room -= 1;
                    self.current_offset
                        .push(labels(), Value::Int(committed as u64));
                }
                // No high watermark known here yet: the lag is unknown, not 0.
                let Some(hwm) = marks.get(topic, partition) else {
                    continue;
                };
                let lag = hwm.saturating_sub(committed).max(0) as u64;
                if labelled {
                    self.lag.push(labels(), Value::Int(lag));
                }
                *by_topic.entry(topic).or_default() += lag;
                max = Some(max.unwrap_or(0).max(lag));
                let seconds = if lag == 0 {
                    Some(0.0)
                } else {
                    state
                        .history(topic, partition)
                        .and_then(|h| h.seconds_behind(now, hwm, committed))
                };
                if let Some(s) = seconds {
                    behind = Some(behind.unwrap_or(0.0).max(s));
                }
            }
            let Some(max) = max else {
                continue;
            };
            for (topic, sum) in &by_topic {
                let mut labels = group_labels();
                labels.push(("topic", topic.to_string()));
                self.lag_sum.push(labels, Value::Int(*sum));
            }
            self.max_lag.push(group_labels(), Value::Int(max));
            self.sum_lag
                .push(group_labels(), Value::Int(by_topic.values().sum()));
            if let Some(seconds) = behind {
                self.time_lag.push(group_labels(), Value::Float(seconds));
            }
        }
    }

    fn into_vec(self) -> Vec<Family> {
        vec![
            self.lag,
            self.lag_sum,
            self.current_offset,
            self.topic_offset,
            self.max_lag,
            self.sum_lag,
            self.time_lag,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Metrics;
    use crate::tenancy::{Cluster, Namespace, Registry};
    use std::time::Duration;
    use uuid::Uuid;

    fn cluster(id: u128) -> Cluster {
        Cluster {
            id: Uuid::from_u128(id),
            tenant: "acme".into(),
            name: format!("c{id}"),
            max_message_bytes: 1 << 20,
            created_at: 0,
            quotas: Default::default(),
            allowed_cidrs: None,
            credentials: Default::default(),
        }
    }

    /// A sample as `name{labels} value`, labels in their order.
    fn shown(families: &[Family], name: &str) -> Vec<String> {
        families
            .iter()
            .filter(|f| f.name == name)
            .flat_map(|f| &f.samples)
            .map(|s| {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let value = match &s.value {
                    Value::Int(v) => v.to_string(),
                    Value::Float(v) => format!("{v:.1}"),
                    other => format!("{other:?}"),
                };
                format!("{{{}}} {value}", labels.join(","))
            })
            .collect()
    }

    fn collected(lag: &Lag, scope: Scope) -> Vec<Family> {
        let mut out = Vec::new();
        lag.collect_at(scope, Instant::now(), &mut out);
        out
    }

    /// A gateway's registry and metrics with clusters 0xa and 0xb, and their lag.
    fn setup() -> (Registry, Metrics, Lag) {
        let registry = Registry::default();
        registry.upsert(cluster(0xa));
        registry.upsert(cluster(0xb));
        let metrics = Metrics::default();
        let lag = Lag::new(registry.clone(), metrics.clone());
        (registry, metrics, lag)
    }

    fn mark(metrics: &Metrics, cluster: u128, topic: &str, partition: i32, hwm: i64) {
        let id = Uuid::from_u128(cluster);
        let pool = Namespace::of(id).topic(topic).unwrap();
        metrics
            .cluster(id)
            .unwrap()
            .topics
            .get(pool.as_bytes(), || Some(topic.to_owned()))
            .high_watermark(partition, hwm);
    }

    #[test]
    fn lag_is_the_high_watermark_minus_the_committed_offset_never_below_zero() {
        let (_, metrics, lag) = setup();
        let a = Uuid::from_u128(0xa);
        mark(&metrics, 0xa, "orders", 0, 100);
        mark(&metrics, 0xa, "orders", 1, 50);
        mark(&metrics, 0xa, "audit", 0, 7);
        lag.committed(a, "billing", "orders", 0, 40);
        // Committed past the watermark this instance knows: 0, not negative.
        lag.committed(a, "billing", "orders", 1, 60);
        lag.committed(a, "billing", "audit", 0, 7);
        // No watermark known: an offset but no lag.
        lag.committed(a, "billing", "unseen", 0, 3);
        let families = collected(&lag, Scope::All);
        let c = "cluster=00000000-0000-0000-0000-00000000000a";
        assert_eq!(
            shown(&families, "kafka_consumergroup_lag"),
            vec![
                format!("{{{c},consumergroup=billing,topic=audit,partition=0}} 0"),
                format!("{{{c},consumergroup=billing,topic=orders,partition=0}} 60"),
                format!("{{{c},consumergroup=billing,topic=orders,partition=1}} 0"),
            ]
        );
        assert_eq!(
            shown(&families, "kafka_consumergroup_current_offset").len(),
            4,
            "every committed offset, the unseen topic's too"
        );
        assert_eq!(
            shown(&families, "kafka_consumergroup_lag_sum"),
            vec![
                format!("{{{c},consumergroup=billing,topic=audit}} 0"),
                format!("{{{c},consumergroup=billing,topic=orders}} 60"),
            ]
        );
        assert_eq!(
            shown(&families, "kafka_topic_partition_current_offset"),
            vec![
                format!("{{{c},topic=audit,partition=0}} 7"),
                format!("{{{c},topic=orders,partition=0}} 100"),
                format!("{{{c},topic=orders,partition=1}} 50"),
            ]
        );
        assert_eq!(
            shown(&families, "tollgate_consumergroup_max_lag"),
            vec![format!("{{{c},consumergroup=billing}} 60")]
        );
        assert_eq!(
            shown(&families, "tollgate_consumergroup_sum_lag"),
            vec![format!("{{{c},consumergroup=billing}} 60")]
        );
    }

    #[test]
    fn the_time_lag_is_the_largest_estimate_over_the_groups_partitions() {
        let (_, metrics, lag) = setup();
        let a = Uuid::from_u128(0xa);
        let t0 = Instant::now();
        mark(&metrics, 0xa, "orders", 0, 100);
        mark(&metrics, 0xa, "orders", 1, 10);
        lag.committed(a, "g", "orders", 0, 100);
        lag.committed(a, "g", "orders", 1, 10);
        let collect = |at: Instant| {
            let mut out = Vec::new();
            lag.collect_at(Scope::All, at, &mut out);
            out
        };
        // Caught up: 0 s behind.
        let families = collect(t0);
        assert_eq!(
            shown(
                &families,
                "tollgate_consumergroup_estimated_max_time_lag_seconds"
            ),
            vec!["{cluster=00000000-0000-0000-0000-00000000000a,consumergroup=g} 0.0"]
        );
        // 60 s later partition 0 has moved on by 600 records at a steady rate, partition 1
        // by 10 in the last 20 s; the group committed neither.
        mark(&metrics, 0xa, "orders", 0, 400);
        collect(t0 + Duration::from_secs(30));
        mark(&metrics, 0xa, "orders", 0, 700);
        collect(t0 + Duration::from_secs(40));
        mark(&metrics, 0xa, "orders", 1, 20);
        let families = collect(t0 + Duration::from_secs(60));
        // Partition 0 left 100 right after t0 (interpolated: 60 s ago); partition 1 left 10
        // between 40 s and 60 s (interpolated: at 40 s, 20 s ago). The group: 60 s.
        assert_eq!(
            shown(
                &families,
                "tollgate_consumergroup_estimated_max_time_lag_seconds"
            ),
            vec!["{cluster=00000000-0000-0000-0000-00000000000a,consumergroup=g} 60.0"]
        );
    }

    #[test]
    fn partitions_past_the_cap_count_in_the_group_series_only() {
        let (_, metrics, lag) = setup();
        let a = Uuid::from_u128(0xa);
        for p in 0..4 {
            mark(&metrics, 0xa, "t", p, 10);
            lag.committed(a, "g", "t", p, p as i64);
        }
        let state = lag.existing(&a).unwrap();
        let state = state.lock().unwrap();
        let mut families = Families::default();
        let marks = lag.marks(&a);
        families.cluster("a", &marks, Some(&state), Instant::now(), 3);
        let out = families.into_vec();
        assert_eq!(shown(&out, "kafka_consumergroup_lag").len(), 3);
        assert_eq!(shown(&out, "kafka_consumergroup_current_offset").len(), 3);
        assert_eq!(shown(&out, "kafka_topic_partition_current_offset").len(), 3);
        // 10 + 9 + 8 + 7: the fourth partition counts.
        assert_eq!(
            shown(&out, "kafka_consumergroup_lag_sum"),
            vec!["{cluster=a,consumergroup=g,topic=t} 34"]
        );
        assert_eq!(
            shown(&out, "tollgate_consumergroup_sum_lag"),
            vec!["{cluster=a,consumergroup=g} 34"]
        );
    }

    #[test]
    fn a_tenant_sees_only_its_cluster_and_a_deleted_clusters_lag_goes() {
        let (registry, metrics, lag) = setup();
        let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
        mark(&metrics, 0xa, "t", 0, 10);
        mark(&metrics, 0xb, "t", 0, 10);
        lag.committed(a, "ga", "t", 0, 1);
        lag.committed(b, "gb", "t", 0, 2);
        let labels = |scope| {
            collected(&lag, scope)
                .iter()
                .flat_map(|f| f.samples.clone())
                .map(|s| s.labels[0].1.clone())
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(labels(Scope::Cluster(a)), [a.to_string()].into());
        assert_eq!(labels(Scope::Cluster(b)), [b.to_string()].into());
        assert_eq!(labels(Scope::All), [a.to_string(), b.to_string()].into());
        registry.remove(&b);
        assert_eq!(labels(Scope::All), [a.to_string()].into());
        assert!(
            lag.existing(&b).is_none(),
            "the deleted cluster's state is dropped"
        );
        assert!(lag.existing(&a).is_some());
    }

    #[test]
    fn the_registered_collector_does_not_keep_the_lag_alive() {
        let (_, metrics, lag) = setup();
        mark(&metrics, 0xa, "t", 0, 10);
        lag.committed(Uuid::from_u128(0xa), "g", "t", 0, 1);
        let registered = Registered(Arc::downgrade(&lag.inner));
        let mut out = Vec::new();
        registered.collect(Scope::All, &mut out);
        assert_eq!(shown(&out, "kafka_consumergroup_lag").len(), 1);
        drop(lag);
        let mut out = Vec::new();
        registered.collect(Scope::All, &mut out);
        assert!(out.is_empty());
    }
}
