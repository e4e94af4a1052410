//! Usage: what a cluster used, per hour, and per principal.
//!
//! Deleted clusters' usage stays readable: it is billed after the fact.

use hyper::StatusCode;
use serde_json::json;
use tollgate_meter::hour_of;
use uuid::Uuid;

use super::http::{json_response, parse_time, query_pairs, rfc3339, ApiError, ApiResult};
use super::Admin;

/// The query every usage endpoint takes: `cluster`, `from`, `to` (RFC 3339).
struct Period {
    cluster: Uuid,
    from: i64,
    to: i64,
}

async fn period(admin: &Admin, query: Option<&str>) -> Result<Period, ApiError> {
    let (mut cluster, mut from, mut to) = (None, None, None);
    for (k, v) in query_pairs(query, &["cluster", "from", "to"])? {
        match k.as_str() {
            "cluster" => {
                cluster = Some(
                    Uuid::parse_str(&v)
                        .map_err(|_| ApiError::not_found(format!("no cluster {v}")))?,
                )
            }
            "from" => from = Some(parse_time("from", &v)?.unix_timestamp()),
            _ => to = Some(parse_time("to", &v)?.unix_timestamp()),
        }
    }
    let cluster = cluster.ok_or_else(|| ApiError::invalid("cluster is required"))?;
    let from = from.ok_or_else(|| ApiError::invalid("from is required"))?;
    let to = to.ok_or_else(|| ApiError::invalid("to is required"))?;
    if to < from {
        return Err(ApiError::invalid("to is before from"));
    }
    let known = admin
        .blocking(move |inner| Ok(inner.store.cluster_record(cluster)?.is_some()))
        .await?;
    if !known {
        return Err(ApiError::not_found(format!("no cluster {cluster}")));
    }
    // Every hour that overlaps the period.
    Ok(Period {
        cluster,
        from: hour_of(from),
        to,
    })
}

fn usage_store(admin: &Admin) -> Result<&dyn tollgate_meter::store::UsageStore, ApiError> {
    admin
        .inner
        .usage
        .get()
        .map(|u| u.as_ref())
        .ok_or_else(|| ApiError::internal("usage store is not configured"))
}

/// `GET /v1/usage?cluster=&from=&to=`
pub(super) async fn hourly(admin: &Admin, query: Option<&str>) -> ApiResult {
    let p = period(admin, query).await?;
    let rows = usage_store(admin)?
        .hourly(p.cluster, p.from, p.to)
        .await
        .map_err(|e| ApiError::pool_unavailable(e.to_string()))?;
    let hours = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "hour": rfc3339(r.hour)?,
                "cluster_seconds": r.cluster_seconds,
                "partition_seconds": r.partition_seconds,
                "bytes_in": r.bytes_in,
                "bytes_out": r.bytes_out,
                "storage_byte_seconds": r.storage_byte_seconds,
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "cluster": p.cluster.as_hyphenated().to_string(),
            "hours": hours,
            // Whether the stored bytes behind storage_byte_seconds are, as of now, estimated
            // from bytes produced within the retention window rather than measured from the
            // pool's log sizes (see the gateway's metering::storage).
            "storage_estimated": admin.storage_source() != Some(crate::metering::StorageSource::Measured),
        }),
    ))
}

/// `GET /v1/usage/principals?cluster=&from=&to=`: bytes in and out per principal and hour.
pub(super) async fn principals(admin: &Admin, query: Option<&str>) -> ApiResult {
    let p = period(admin, query).await?;
    let rows = usage_store(admin)?
        .principals(p.cluster, p.from, p.to)
        .await
        .map_err(|e| ApiError::pool_unavailable(e.to_string()))?;
    let principals = rows
        .iter()
        .map(|r| {
            Ok(json!({
                "principal": r.principal,
                "hour": rfc3339(r.hour)?,
                "bytes_in": r.bytes_in,
                "bytes_out": r.bytes_out,
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "cluster": p.cluster.as_hyphenated().to_string(),
            "principals": principals,
        }),
    ))
}
