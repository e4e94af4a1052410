//! Usage metering: what each cluster used, per hour, in base units.
//!
//! - [`HourlyUsage`]: one cluster's usage in one clock hour (UTC), the unit everything else
//!   (the usage API, billing) is built from.
//! - [`counters`]: the data path's lock-free byte counters, per cluster and principal.
//! - [`accrual`]: cluster-, partition- and storage-seconds, integrated over time.
//! - [`flusher`]: moves counts and accruals into a store every interval, exactly once.
//! - [`store`]: the [`store::UsageStore`] contract; [`embedded`] is the default store,
//!   [`redis_store`] the one several gateways share.
//!
//! Every quantity is an integer in its base unit: bytes, seconds, byte-seconds. A GB is 2^30
//! bytes; conversions to billable units happen only when pricing, in `billing`.

pub mod accrual;
pub mod counters;
pub mod embedded;
pub mod flusher;
pub mod redis_store;
pub mod store;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Seconds in an hour; hours are keyed by their first second since the Unix epoch.
pub const HOUR: i64 = 3600;

/// One cluster's usage in one UTC hour. Counters only grow; two partial counts of the same
/// hour (from two gateways, or two flushes) combine with [`HourlyUsage::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HourlyUsage {
    pub cluster: Uuid,
    /// Unix seconds of the hour's first second (a multiple of 3600).
    pub hour: i64,
    /// Seconds of the hour during which the cluster existed (0..=3600).
    pub cluster_seconds: u64,
    /// The integral over the hour of the cluster's partition count.
    pub partition_seconds: u64,
    /// Record batch bytes, as on the wire, of produce requests the pool accepted.
    pub bytes_in: u64,
    /// Record batch bytes delivered to the cluster's clients in fetch responses.
    pub bytes_out: u64,
    /// The integral over the hour of the bytes the pool stores for the cluster.
    pub storage_byte_seconds: u64,
}

impl HourlyUsage {
    pub fn zero(cluster: Uuid, hour: i64) -> Self {
        HourlyUsage {
            cluster,
            hour: hour_of(hour),
            cluster_seconds: 0,
            partition_seconds: 0,
            bytes_in: 0,
            bytes_out: 0,
            storage_byte_seconds: 0,
        }
    }

    /// Adds another count of the same cluster and hour.
    pub fn add(&mut self, other: &HourlyUsage) {
        debug_assert_eq!((self.cluster, self.hour), (other.cluster, other.hour));
        self.cluster_seconds += other.cluster_seconds;
        self.partition_seconds += other.partition_seconds;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.storage_byte_seconds += other.storage_byte_seconds;
    }

    pub fn is_zero(&self) -> bool {
        self.cluster_seconds == 0
            && self.partition_seconds == 0
            && self.bytes_in == 0
            && self.bytes_out == 0
            && self.storage_byte_seconds == 0
    }
}

/// The hour (its first second) that a Unix time falls in.
pub fn hour_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(HOUR) * HOUR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(3599), 0);
        assert_eq!(hour_of(3600), 3600);
        assert_eq!(hour_of(-1), -3600);
    }

    #[test]
    fn add_combines_counts() {
        let c = Uuid::from_u128(1);
        let mut a = HourlyUsage::zero(c, 7200);
        let mut b = HourlyUsage::zero(c, 7300);
        assert_eq!(b.hour, 7200);
        b.bytes_in = 10;
        b.storage_byte_seconds = 5;
        a.add(&b);
        a.add(&b);
        assert_eq!(a.bytes_in, 20);
        assert_eq!(a.storage_byte_seconds, 10);
        assert!(!a.is_zero());
        assert!(HourlyUsage::zero(c, 0).is_zero());
    }
}
