//! Time-based dimensions: cluster-seconds, partition-seconds and storage byte-seconds.
//!
//! These are integrals over time, so they are not counted by ticking: each cluster has an
//! accrual clock, the second up to which its time-based usage has been recorded, kept in the
//! usage store beside the usage itself. Each flush accrues `[clock, now)` (whole seconds, split
//! at hour boundaries) with the partition count and stored bytes known at that moment, and
//! moves the clock in the same atomic write. So:
//!
//! - a gateway that was down for a while catches up on its first flush (the cluster existed all
//!   along; its partitions are taken to be what they were when last seen);
//! - a cluster's clock starts at its creation and stops at its deletion, so cluster-seconds are
//!   exactly its lifetime;
//! - with several gateways, a store applies an accrual only if the clock it starts from is the
//!   stored one, so each second is accrued by exactly one of them.

use uuid::Uuid;

use crate::{hour_of, HourlyUsage, HOUR};

/// Splits `[from, to)` (Unix seconds) at hour boundaries and returns one usage row per hour
/// touched, holding the time-based dimensions for a cluster that had `partitions` partitions
/// and stored `stored_bytes` bytes throughout.
pub fn accrue(
    cluster: Uuid,
    from: i64,
    to: i64,
    partitions: u64,
    stored_bytes: u64,
) -> Vec<HourlyUsage> {
    let mut rows = Vec::new();
    let mut start = from;
    while start < to {
        let hour = hour_of(start);
        let end = to.min(hour + HOUR);
        let seconds = (end - start) as u64;
        let mut row = HourlyUsage::zero(cluster, hour);
        row.cluster_seconds = seconds;
        row.partition_seconds = partitions.saturating_mul(seconds);
        row.storage_byte_seconds = stored_bytes.saturating_mul(seconds);
        rows.push(row);
        start = end;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_hour_boundaries_exactly() {
        let c = Uuid::from_u128(9);
        let rows = accrue(c, 3600 - 10, 2 * 3600 + 5, 3, 100);
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].hour, rows[0].cluster_seconds), (0, 10));
        assert_eq!((rows[1].hour, rows[1].cluster_seconds), (3600, 3600));
        assert_eq!((rows[2].hour, rows[2].cluster_seconds), (7200, 5));
        assert_eq!(rows[1].partition_seconds, 3 * 3600);
        assert_eq!(rows[1].storage_byte_seconds, 100 * 3600);
        let rows = accrue(c, 2 * 3600, 2 * 3600 + 5, 1, 0);
        assert_eq!((rows[0].hour, rows[0].cluster_seconds), (7200, 5));
    }

    #[test]
    fn nothing_to_accrue() {
        let c = Uuid::from_u128(9);
        assert!(accrue(c, 10, 10, 1, 1).is_empty());
        assert!(accrue(c, 10, 5, 1, 1).is_empty());
    }

    #[test]
    fn a_day_sums_to_a_day() {
        let c = Uuid::from_u128(9);
        let rows = accrue(c, 1234, 1234 + 86_400, 2, 0);
        assert_eq!(rows.len(), 25);
        assert_eq!(rows.iter().map(|r| r.cluster_seconds).sum::<u64>(), 86_400);
        assert!(rows.iter().all(|r| r.cluster_seconds <= 3600));
    }
}
