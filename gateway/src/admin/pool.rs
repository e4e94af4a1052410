//! The pool and its autoscaler: `GET /v1/pool`, `GET /v1/pool/events`, `GET /v1/pool/history`
//! and `PUT /v1/pool/policy` (CONTRACT, "Pool and autoscaling").
//!
//! Event times are RFC 3339, as everywhere in this API. History samples keep `time` in Unix
//! seconds: they are the trace format `tollgate autoscale simulate` and `tune` read as they
//! are (JSON here, or CSV with `format=csv`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use time::OffsetDateTime;

use super::http::{
    json_response, parse_time, query_pairs, read_json, rfc3339, ApiError, ApiResult,
};
use super::Admin;
use crate::pool::autoscale::{trace, Autoscaler, Policy};
use crate::pool::Pool;

/// What the pool endpoints read: the pool's brokers, and the autoscaler if one runs.
#[derive(Clone)]
pub struct PoolView {
    pub pool: Pool,
    pub autoscaler: Option<Autoscaler>,
}

fn view(admin: &Admin) -> Result<&PoolView, ApiError> {
    admin
        .inner
        .pool_view
        .get()
        .ok_or_else(|| ApiError::not_found("this gateway does not report on its pool"))
}

fn autoscaler(admin: &Admin) -> Result<&Autoscaler, ApiError> {
    view(admin)?.autoscaler.as_ref().ok_or_else(|| {
        ApiError::not_found("the autoscaler is off: start the gateway with --autoscale-policy FILE")
    })
}

/// `GET /v1/pool`.
pub async fn get(admin: &Admin) -> ApiResult {
    let view = view(admin)?;
    let brokers: Vec<_> = view
        .pool
        .members_with_state()
        .into_iter()
        .map(|(broker, state)| {
            let (requests, bytes) = broker.sent();
            json!({"address": broker.addr(), "state": state.name(),
                   "requests_sent": requests, "bytes_sent": bytes})
        })
        .collect();
    let deciding = view
        .autoscaler
        .as_ref()
        .and_then(|a| a.deciding())
        .map_or(json!(null), |d| json!(d));
    let (desired, policy, utilization) = match &view.autoscaler {
        Some(a) => {
            let (desired, latest) = a.latest();
            let utilization: serde_json::Map<String, serde_json::Value> = latest
                .map(|d| {
                    d.utilization
                        .iter()
                        .map(|(s, u)| (s.name().to_owned(), json!(u)))
                        .collect()
                })
                .unwrap_or_default();
            (
                json!(desired.unwrap_or(brokers.len() as u32)),
                json!(a.policy()),
                json!(utilization),
            )
        }
        None => (json!(brokers.len()), json!(null), json!({})),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"brokers": brokers, "desired_brokers": desired, "policy": policy,
                "utilization": utilization, "deciding": deciding}),
    ))
}

/// A query's `from` and `to` (RFC 3339, both optional) as Unix seconds, and its other pairs.
struct Period {
    from: u64,
    to: u64,
    rest: Vec<(String, String)>,
}

fn period(query: Option<&str>, extra: &[&str]) -> Result<Period, ApiError> {
    let mut allowed = vec!["from", "to"];
    allowed.extend_from_slice(extra);
    let (mut from, mut to, mut rest) = (0, u64::MAX, Vec::new());
    for (k, v) in query_pairs(query, &allowed)? {
        let seconds = |t: OffsetDateTime| u64::try_from(t.unix_timestamp()).unwrap_or(0);
        match k.as_str() {
            "from" => from = seconds(parse_time("from", &v)?),
            "to" => to = seconds(parse_time("to", &v)?),
            _ => rest.push((k, v)),
        }
    }
    Ok(Period { from, to, rest })
}

/// `GET /v1/pool/events?from=&to=`.
pub async fn events(admin: &Admin, query: Option<&str>) -> ApiResult {
    let Period { from, to, .. } = period(query, &[])?;
    let events = autoscaler(admin)?
        .pool_events(from, to)
        .await
        .into_iter()
        .map(|e| {
            let d = e.decision;
            Ok(json!({
                "time": rfc3339(i64::try_from(d.time).unwrap_or(i64::MAX))?,
                "from_brokers": d.from_brokers,
                "to_brokers": d.to_brokers,
                "signal": d.signal,
                "reason": d.reason,
                "applied": e.applied,
            }))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json_response(StatusCode::OK, &json!({"events": events})))
}

/// `GET /v1/pool/history?from=&to=[&format=csv]`.
pub async fn history(admin: &Admin, query: Option<&str>) -> ApiResult {
    let Period { from, to, rest } = period(query, &["format"])?;
    let samples = autoscaler(admin)?.history(from, to);
    match rest
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
    {
        None | Some("json") => Ok(json_response(StatusCode::OK, &json!({"samples": samples}))),
        Some("csv") => {
            let mut response = Response::new(Full::new(Bytes::from(trace::to_csv(&samples))));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/csv"));
            Ok(response)
        }
        Some(other) => Err(ApiError::invalid(format!("format {other:?}: json or csv"))),
    }
}

/// `PUT /v1/pool/policy`.
pub async fn put_policy(admin: &Admin, request: Request<Incoming>) -> ApiResult {
    let autoscaler = autoscaler(admin)?;
    let policy: Policy = read_json(request).await?;
    policy
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    autoscaler
        .put_policy(policy.clone())
        .await
        .map_err(ApiError::unavailable)?;
    tracing::info!(?policy, "autoscaling policy replaced");
    Ok(json_response(StatusCode::OK, &policy))
}
