//! One cluster's hourly usage rows for a period: `GET /v1/usage`.
//!
//! ```json
//! {"cluster": "<id>", "hours": [{"hour": "2024-01-05T10:00:00Z", "cluster_seconds": 3600,
//!   "partition_seconds": 10800, "bytes_in": 1024, "bytes_out": 0, "storage_byte_seconds": 0}]}
//! ```
//!
//! Integers in base units, one row per hour that has usage, oldest first. As in reports, an
//! hour belongs to the period when it starts in `[from, to)`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_meter::HourlyUsage;
use uuid::Uuid;

use crate::ledger::merge_rows;
use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub cluster: Uuid,
    pub hours: Vec<UsageHour>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageHour {
    #[serde(with = "time::serde::rfc3339")]
    pub hour: OffsetDateTime,
    pub cluster_seconds: u64,
    pub partition_seconds: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub storage_byte_seconds: u64,
}

impl UsageReport {
    /// `cluster`'s rows among `rows` (other clusters' are ignored), merged per hour (gateways
    /// flush partial counts), without empty hours, sorted.
    pub fn new(
        cluster: Uuid,
        rows: &[HourlyUsage],
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<UsageReport, Error> {
        if from > to {
            return Err(Error::InvalidPeriod(format!(
                "from ({from}) is after to ({to})"
            )));
        }
        let request_hours = crate::ReportRequest {
            tenant: String::new(),
            clusters: Vec::new(),
            from,
            to,
            now: to,
            grace: std::time::Duration::ZERO,
        }
        .hours();
        let (first, end) = request_hours;
        let mine: Vec<HourlyUsage> = rows
            .iter()
            .filter(|r| r.cluster == cluster)
            .filter(|r| {
                let hour = tollgate_meter::hour_of(r.hour);
                hour >= first && hour < end
            })
            .copied()
            .collect();
        let mut merged = merge_rows(&mine)?;
        merged.retain(|r| !r.is_zero());
        merged.sort_by_key(|r| r.hour);
        let hours = merged
            .into_iter()
            .map(|r| {
                // In the period, so within the range of `from` and `to`.
                let hour = OffsetDateTime::from_unix_timestamp(r.hour)
                    .map_err(|e| Error::InvalidPeriod(e.to_string()))?;
                Ok(UsageHour {
                    hour,
                    cluster_seconds: r.cluster_seconds,
                    partition_seconds: r.partition_seconds,
                    bytes_in: r.bytes_in,
                    bytes_out: r.bytes_out,
                    storage_byte_seconds: r.storage_byte_seconds,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(UsageReport { cluster, hours })
    }

    pub fn to_json(&self) -> Result<String, Error> {
        Ok(serde_json::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn merges_filters_and_sorts() {
        let c = Uuid::from_u128(1);
        let at = |t: OffsetDateTime, bytes_in| HourlyUsage {
            bytes_in,
            ..HourlyUsage::zero(c, t.unix_timestamp())
        };
        let rows = [
            at(datetime!(2024-01-01 02:00 UTC), 5),
            at(datetime!(2024-01-01 01:00 UTC), 1),
            at(datetime!(2024-01-01 02:00 UTC), 2),
            at(datetime!(2024-01-01 03:00 UTC), 0),
            at(datetime!(2024-01-01 05:00 UTC), 9),
            HourlyUsage {
                bytes_in: 4,
                ..HourlyUsage::zero(Uuid::from_u128(2), 3_600)
            },
        ];
        let report = UsageReport::new(
            c,
            &rows,
            datetime!(2024-01-01 00:00 UTC),
            datetime!(2024-01-01 05:00 UTC),
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        let row = |hour: &str, bytes_in: u64| {
            serde_json::json!({"hour": hour, "cluster_seconds": 0, "partition_seconds": 0,
                "bytes_in": bytes_in, "bytes_out": 0, "storage_byte_seconds": 0})
        };
        assert_eq!(
            json,
            serde_json::json!({"cluster": c, "hours": [
                row("2024-01-01T01:00:00Z", 1),
                row("2024-01-01T02:00:00Z", 7),
            ]})
        );
    }
}
