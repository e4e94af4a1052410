//! A cluster's quotas and limits (issue 13; CONTRACT, "Quotas and limits"): what one tenant's
//! cluster may take of the shared pool, with Amazon MSK Serverless's published limits as the
//! defaults.
//!
//! - [`Quotas`]: the limits of one cluster, as the admin API sets them and the admin store
//!   keeps them with the cluster.
//! - [`limits`]: the count quotas (partitions, partition mutations, connections, groups,
//!   storage) and what enforces them.
//! - [`rate`]: a rate held to a quota (token bucket, Kafka's throttle time), arithmetic only;
//!   [`meter`]: each cluster's byte and request rates on this instance, the connection's mute,
//!   and the use the admin API shows; [`throttle`]: what requests and answers are charged, and
//!   `throttle_time_ms`.
//! - [`shared`]: the rate quotas held across the instances sharing Redis, leased in slices;
//!   [`lease`]: an instance's slices, arithmetic only.

pub mod lease;
pub mod limits;
pub mod meter;
pub mod rate;
pub mod shared;
pub mod throttle;

use serde::{Deserialize, Serialize};

/// One cluster's limits. `None` is no limit. A stored cluster without quotas (made before
/// they existed) has the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    pub ingress_bytes_per_second: Option<u64>,
    pub egress_bytes_per_second: Option<u64>,
    pub partition_ingress_bytes_per_second: Option<u64>,
    pub partition_egress_bytes_per_second: Option<u64>,
    pub max_connections: Option<u64>,
    pub connections_per_second: Option<u64>,
    pub requests_per_second: Option<u64>,
    pub max_partitions: Option<u64>,
    pub partition_mutations_per_5_minutes: Option<u64>,
    pub max_consumer_groups: Option<u64>,
    pub storage_limit_bytes: Option<u64>,
}

const MIB: u64 = 1024 * 1024;

impl Default for Quotas {
    /// Amazon MSK Serverless's limits per cluster: 200 MiB/s in and 400 MiB/s out, 5 and 10
    /// MiB/s per partition, 3,000 connections, 100 new connections a second, 2,400 partitions
    /// (leaders), 250 partition creations and deletions per 5 minutes, 500 consumer groups;
    /// 15,000 requests a second; no storage limit (MSK Serverless keeps what retention allows).
    fn default() -> Self {
        Quotas {
            ingress_bytes_per_second: Some(200 * MIB),
            egress_bytes_per_second: Some(400 * MIB),
            partition_ingress_bytes_per_second: Some(5 * MIB),
            partition_egress_bytes_per_second: Some(10 * MIB),
            max_connections: Some(3_000),
            connections_per_second: Some(100),
            requests_per_second: Some(15_000),
            max_partitions: Some(2_400),
            partition_mutations_per_5_minutes: Some(250),
            max_consumer_groups: Some(500),
            storage_limit_bytes: None,
        }
    }
}

/// The names of the quotas, as the admin API and the CONTRACT spell them.
pub const NAMES: [&str; 11] = [
    "ingress_bytes_per_second",
    "egress_bytes_per_second",
    "partition_ingress_bytes_per_second",
    "partition_egress_bytes_per_second",
    "max_connections",
    "connections_per_second",
    "requests_per_second",
    "max_partitions",
    "partition_mutations_per_5_minutes",
    "max_consumer_groups",
    "storage_limit_bytes",
];

impl Quotas {
    fn slot(&mut self, name: &str) -> Option<&mut Option<u64>> {
        Some(match name {
            "ingress_bytes_per_second" => &mut self.ingress_bytes_per_second,
            "egress_bytes_per_second" => &mut self.egress_bytes_per_second,
            "partition_ingress_bytes_per_second" => &mut self.partition_ingress_bytes_per_second,
            "partition_egress_bytes_per_second" => &mut self.partition_egress_bytes_per_second,
            "max_connections" => &mut self.max_connections,
            "connections_per_second" => &mut self.connections_per_second,
            "requests_per_second" => &mut self.requests_per_second,
            "max_partitions" => &mut self.max_partitions,
            "partition_mutations_per_5_minutes" => &mut self.partition_mutations_per_5_minutes,
            "max_consumer_groups" => &mut self.max_consumer_groups,
            "storage_limit_bytes" => &mut self.storage_limit_bytes,
            _ => return None,
        })
    }

    /// Applies the keys of an admin request's `"quotas"` object: each a positive integer, or
    /// `null` for no limit; keys not given keep their value. Nothing changes unless every key
    /// is valid.
    pub fn apply(
        &mut self,
        changes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        let mut next = *self;
        for (name, value) in changes {
            let slot = next.slot(name).ok_or_else(|| {
                format!(
                    "quotas: unknown quota {name:?}; the quotas are {}",
                    NAMES.join(", ")
                )
            })?;
            *slot = match value {
                serde_json::Value::Null => None,
                v => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                    format!("quotas: {name} must be a positive integer or null (no limit), not {v}")
                })?),
            };
        }
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_are_msk_serverless_limits() {
        let q = Quotas::default();
        assert_eq!(q.ingress_bytes_per_second, Some(209_715_200));
        assert_eq!(q.egress_bytes_per_second, Some(419_430_400));
        assert_eq!(q.partition_ingress_bytes_per_second, Some(5_242_880));
        assert_eq!(q.partition_egress_bytes_per_second, Some(10_485_760));
        assert_eq!(q.storage_limit_bytes, None);
        // Every name is a field, and serialises under it.
        let json = serde_json::to_value(q).unwrap();
        for name in NAMES {
            assert!(json.get(name).is_some(), "{name}");
        }
        assert_eq!(json.as_object().unwrap().len(), NAMES.len());
    }

    #[test]
    fn changes_apply_key_by_key_and_null_lifts_a_limit() {
        let mut q = Quotas::default();
        q.apply(&map(
            json!({"ingress_bytes_per_second": 1_000_000, "max_connections": null}),
        ))
        .unwrap();
        assert_eq!(q.ingress_bytes_per_second, Some(1_000_000));
        assert_eq!(q.max_connections, None);
        assert_eq!(q.egress_bytes_per_second, Some(419_430_400), "untouched");
    }

    #[test]
    fn bad_changes_say_what_is_wrong_and_change_nothing() {
        let mut q = Quotas::default();
        for (change, says) in [
            (json!({"ingress_bytes_per_second": 0}), "positive integer"),
            (json!({"ingress_bytes_per_second": -5}), "positive integer"),
            (json!({"ingress_bytes_per_second": 1.5}), "positive integer"),
            (
                json!({"ingress_bytes_per_second": "fast"}),
                "positive integer",
            ),
            (
                json!({"max_connections": 10, "bandwidth": 5}),
                "unknown quota \"bandwidth\"",
            ),
        ] {
            let e = q.apply(&map(change.clone())).unwrap_err();
            assert!(e.contains(says), "{change}: {e}");
            assert_eq!(q, Quotas::default(), "{change} changed something");
        }
    }

    #[test]
    fn a_stored_cluster_without_quotas_has_the_defaults() {
        let q: Quotas = serde_json::from_value(json!({})).unwrap();
        assert_eq!(q, Quotas::default());
        let q: Quotas = serde_json::from_value(json!({"max_partitions": null})).unwrap();
        assert_eq!(q.max_partitions, None);
        assert_eq!(q.max_connections, Some(3_000));
    }
}
