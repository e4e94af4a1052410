//! `GET /v1/billing/report?tenant=&from=&to=[&format=csv]`: what a tenant owes for a period,
//! from the ledger for closed hours and from metered usage for hours not yet closed.

use hyper::{Response, StatusCode};
use time::OffsetDateTime;
use tollgate_billing::{Ledger, RateCard, ReportRequest};
use tollgate_meter::hour_of;

use super::http::{parse_time, query_pairs, ApiError, ApiResult, Body};
use super::Admin;

/// What the report needs besides the admin store.
pub struct Billing {
    pub ledger: std::sync::Arc<Ledger>,
    pub rates: RateCard,
    pub grace: std::time::Duration,
}

pub(super) async fn report(admin: &Admin, query: Option<&str>) -> ApiResult {
    let (mut tenant, mut from, mut to, mut csv) = (None, None, None, false);
    for (k, v) in query_pairs(query, &["tenant", "from", "to", "format"])? {
        match k.as_str() {
            "tenant" => tenant = Some(v),
            "from" => from = Some(parse_time("from", &v)?),
            "to" => to = Some(parse_time("to", &v)?),
            _ => match v.as_str() {
                "csv" => csv = true,
                "json" => csv = false,
                other => {
                    return Err(ApiError::invalid(format!(
                        "unknown format {other:?}; use json or csv"
                    )))
                }
            },
        }
    }
    let tenant = tenant.ok_or_else(|| ApiError::invalid("tenant is required"))?;
    let from = from.ok_or_else(|| ApiError::invalid("from is required"))?;
    let to = to.ok_or_else(|| ApiError::invalid("to is required"))?;
    if to < from {
        return Err(ApiError::invalid("to is before from"));
    }
    let billing = admin
        .inner
        .billing
        .get()
        .ok_or_else(|| ApiError::internal("billing is not configured"))?;
    let usage = admin
        .inner
        .usage
        .get()
        .ok_or_else(|| ApiError::internal("usage store is not configured"))?;

    let wanted = tenant.clone();
    let (known, records) = admin
        .blocking(move |inner| {
            Ok((
                inner.store.tenant(&wanted)?.is_some(),
                inner.store.cluster_records()?,
            ))
        })
        .await?;
    if !known {
        return Err(ApiError::not_found(format!("no tenant {tenant}")));
    }
    // Deleted clusters too: their usage before deletion is owed.
    let clusters: Vec<_> = records
        .into_iter()
        .filter(|r| r.cluster.tenant == tenant)
        .map(|r| (r.cluster.id, r.cluster.name))
        .collect();
    let (first, end) = (hour_of(from.unix_timestamp()), to.unix_timestamp());
    let mut rows = Vec::new();
    for (id, _) in &clusters {
        rows.extend(
            usage
                .hourly(*id, first, end)
                .await
                .map_err(|e| ApiError::pool_unavailable(e.to_string()))?,
        );
    }
    let request = ReportRequest {
        tenant,
        clusters,
        from,
        to,
        now: OffsetDateTime::now_utc(),
        grace: billing.grace,
    };
    let report = billing
        .ledger
        .report(&request, &rows, &billing.rates)
        .await
        .map_err(|e| ApiError::pool_unavailable(e.to_string()))?;
    let (content_type, body) = if csv {
        (tollgate_billing::report::CSV_CONTENT_TYPE, report.to_csv())
    } else {
        (
            "application/json",
            report.to_json().map_err(ApiError::internal)?,
        )
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .map_err(ApiError::internal)
}
