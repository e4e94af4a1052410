//! Stored bytes per cluster: measured where the pool says what it holds, estimated where it
//! cannot.
//!
//! - **Measured**: DescribeLogDirs gives each partition's size on each broker. A stateless pool
//!   (tansu on shared storage) holds one copy, so any broker answers for all of it. A leader
//!   pool (Apache Kafka) holds a copy per replica, each broker reporting its own: a partition
//!   counts once, at its leader's size, as a tenant of a managed Kafka is billed for the data it
//!   stored, not for the replication the operator chose. Retention, deletion and compaction
//!   show in the next measurement.
//! - **Estimated**, the labelled fallback for a pool without DescribeLogDirs (stock tansu,
//!   librdkafka's mock cluster) or one whose log directories cannot be read: the bytes produced
//!   to the cluster within the retention window, from the usage store. It overcounts topics
//!   deleted or compacted inside the window and undercounts topics kept longer.

use std::collections::HashMap;

use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, MetadataResponse,
};
use serde::Serialize;
use tollgate_meter::{hour_of, HOUR};
use uuid::Uuid;

use crate::pool::{PoolKind, UpstreamError};
use crate::state::Gateway;

/// The newest DescribeLogDirs the gateway speaks (v4 adds the directories' total and usable
/// bytes, which it does not need, and nothing else).
const MAX_VERSION: i16 = 4;

/// Where a cluster's stored bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageSource {
    /// Nothing measured or estimated since the gateway started.
    Unknown,
    /// The pool's own log sizes (DescribeLogDirs).
    Measured,
    /// Bytes produced within the retention window.
    Estimated,
}

/// Why a measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("the pool does not answer DescribeLogDirs")]
    Unsupported,
    #[error("broker {broker}'s log directory {dir:?} answered error {code}")]
    LogDir {
        broker: String,
        dir: String,
        code: i16,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// Every cluster's stored bytes on the pool, from its log sizes. `metadata` is a Metadata
/// answer for every topic, just taken: it names the brokers and each partition's leader.
pub async fn measure(
    gw: &Gateway,
    metadata: &MetadataResponse,
) -> Result<HashMap<Uuid, u64>, MeasureError> {
    let router = gw.router();
    let (min, max) = router
        .pool()
        .versions(ApiKey::DescribeLogDirs)
        .ok_or(MeasureError::Unsupported)?;
    let version = max.min(MAX_VERSION);
    if version < min {
        return Err(MeasureError::Unsupported);
    }
    // Every topic: the pool's own topics (the gateway's bookkeeping) are skipped below, and
    // naming thousands of tenant topics would make a request as large as the answer.
    let req = DescribeLogDirsRequest::default().with_topics(None);
    let sizes = match router.kind() {
        PoolKind::Stateless => {
            let resp = router.call_any(version, &req).await?;
            partition_sizes(&[(None, "any".to_owned(), resp)], &HashMap::new())?
        }
        PoolKind::Leader => {
            let mut reports = Vec::with_capacity(metadata.brokers.len());
            for b in &metadata.brokers {
                let addr = format!("{}:{}", b.host.as_str(), b.port);
                let resp = router.call_at(&addr, version, &req).await?;
                reports.push((Some(b.node_id.0), addr, resp));
            }
            let leaders = metadata
                .topics
                .iter()
                .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), &t.partitions)))
                .flat_map(|(name, partitions)| {
                    partitions
                        .iter()
                        .map(move |p| ((name.clone(), p.partition_index), p.leader_id.0))
                })
                .collect();
            partition_sizes(&reports, &leaders)?
        }
    };
    let clusters = gw.registry().all();
    let mut stored: HashMap<Uuid, u64> = clusters.iter().map(|c| (c.id, 0)).collect();
    for ((topic, _), bytes) in sizes {
        if let Some(c) = clusters.iter().find(|c| c.namespace().owns(&topic)) {
            *stored.entry(c.id).or_default() += bytes;
        }
    }
    Ok(stored)
}

/// Each partition's size from the brokers' DescribeLogDirs answers (`node` is the broker's id
/// on a leader pool, `None` on a stateless one): the leader's replica where `leaders` names
/// one that reported it, else the largest replica reported. Future replicas (a partition being
/// moved between a broker's directories) are copies in progress and never count.
fn partition_sizes(
    reports: &[(Option<i32>, String, DescribeLogDirsResponse)],
    leaders: &HashMap<(String, i32), i32>,
) -> Result<HashMap<(String, i32), u64>, MeasureError> {
    let mut leader_size: HashMap<(String, i32), u64> = HashMap::new();
    let mut largest: HashMap<(String, i32), u64> = HashMap::new();
    for (node, broker, resp) in reports {
        if resp.error_code != 0 {
            return Err(MeasureError::LogDir {
                broker: broker.clone(),
                dir: String::new(),
                code: resp.error_code,
            });
        }
        for dir in &resp.results {
            // A directory the broker cannot read leaves its partitions unknown: a measurement
            // without them would bill too little, so none is taken.
            if dir.error_code != 0 {
                return Err(MeasureError::LogDir {
                    broker: broker.clone(),
                    dir: dir.log_dir.to_string(),
                    code: dir.error_code,
                });
            }
            for t in &dir.topics {
                for p in t.partitions.iter().filter(|p| !p.is_future_key) {
                    let key = (t.name.0.to_string(), p.partition_index);
                    let size = u64::try_from(p.partition_size).unwrap_or(0);
                    if node.is_some() && leaders.get(&key) == node.as_ref() {
                        leader_size.insert(key.clone(), size);
                    }
                    let max = largest.entry(key).or_default();
                    *max = (*max).max(size);
                }
            }
        }
    }
    largest.extend(leader_size);
    Ok(largest)
}

/// Every live cluster's stored bytes estimated as the bytes produced to it within
/// `retention_seconds` before `now`; `None` if the usage store cannot say.
pub async fn estimate(
    gw: &Gateway,
    usage: &dyn tollgate_meter::store::UsageStore,
    retention_seconds: i64,
    now: i64,
) -> Option<HashMap<Uuid, u64>> {
    let from = hour_of(now - retention_seconds);
    let to = hour_of(now) + HOUR;
    let mut estimates = HashMap::new();
    for c in gw.registry().all() {
        match usage.hourly(c.id, from, to).await {
            Ok(rows) => {
                estimates.insert(c.id, rows.iter().map(|r| r.bytes_in).sum());
            }
            Err(e) => {
                tracing::debug!(error = %e, "storage estimate skipped");
                return None;
            }
        }
    }
    Some(estimates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn report(dir_error: i16, parts: &[(&str, i32, i64, bool)]) -> DescribeLogDirsResponse {
        let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
        for (name, index, size, future) in parts {
            let p = DescribeLogDirsPartition::default()
                .with_partition_index(*index)
                .with_partition_size(*size)
                .with_is_future_key(*future);
            match topics.iter_mut().find(|t| t.name.0.as_str() == *name) {
                Some(t) => t.partitions.push(p),
                None => topics.push(
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(StrBytes::from_string((*name).to_owned())))
                        .with_partitions(vec![p]),
                ),
            }
        }
        DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
            .with_error_code(dir_error)
            .with_log_dir(StrBytes::from_static_str("/data"))
            .with_topics(topics)])
    }

    fn key(t: &str, p: i32) -> (String, i32) {
        (t.to_owned(), p)
    }

    #[test]
    fn a_stateless_pool_reports_each_partition_once() {
        let r = report(
            0,
            &[("a", 0, 100, false), ("a", 1, 0, false), ("b", 0, 7, false)],
        );
        let sizes = partition_sizes(&[(None, "any".to_owned(), r)], &HashMap::new()).unwrap();
        assert_eq!(sizes.len(), 3);
        assert_eq!(sizes[&key("a", 0)], 100);
        assert_eq!(sizes[&key("a", 1)], 0);
        assert_eq!(sizes[&key("b", 0)], 7);
    }

    #[test]
    fn a_replicated_partition_counts_once_at_its_leaders_size() {
        // Broker 2 leads a-0 and lags behind: the follower on 1 has more, the leader counts.
        let one = report(0, &[("a", 0, 120, false), ("a", 1, 50, false)]);
        let two = report(0, &[("a", 0, 100, false), ("a", 1, 50, false)]);
        // A replica being moved inside broker 3 is a copy in progress, never counted.
        let three = report(0, &[("a", 1, 50, false), ("a", 1, 900, true)]);
        let leaders = HashMap::from([(key("a", 0), 2), (key("a", 1), 3)]);
        let sizes = partition_sizes(
            &[
                (Some(1), "b1".to_owned(), one),
                (Some(2), "b2".to_owned(), two),
                (Some(3), "b3".to_owned(), three),
            ],
            &leaders,
        )
        .unwrap();
        assert_eq!(sizes[&key("a", 0)], 100);
        assert_eq!(sizes[&key("a", 1)], 50);
    }

    #[test]
    fn without_a_reporting_leader_the_largest_replica_counts() {
        let one = report(0, &[("a", 0, 120, false)]);
        let two = report(0, &[("a", 0, 100, false)]);
        // The leader (node 9) did not report the partition; -1 is "no leader".
        let leaders = HashMap::from([(key("a", 0), 9)]);
        let sizes = partition_sizes(
            &[
                (Some(1), "b1".to_owned(), one),
                (Some(2), "b2".to_owned(), two),
            ],
            &leaders,
        )
        .unwrap();
        assert_eq!(sizes[&key("a", 0)], 120);
    }

    #[test]
    fn an_unreadable_log_directory_fails_the_measurement() {
        let ok = report(0, &[("a", 0, 1, false)]);
        let offline = report(56, &[]);
        let err = partition_sizes(
            &[
                (Some(1), "b1".to_owned(), ok),
                (Some(2), "b2".to_owned(), offline),
            ],
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(
            matches!(err, MeasureError::LogDir { code: 56, ref broker, .. } if broker == "b2"),
            "{err}"
        );
    }
}
