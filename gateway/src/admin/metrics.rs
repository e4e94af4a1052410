//! `/metrics` for the operator and `/v1/clusters/{id}/metrics` for a cluster's tenant (MSK's
//! open monitoring): the same collection, the tenant's filtered to its cluster.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use uuid::Uuid;

use super::http::{json_response, query_pairs, ApiError, ApiResult, Body};
use super::Admin;
use crate::identity::authz::{Action, Session};
use crate::state::Gateway;
use crate::telemetry::metrics::{collect, text, Scope};

/// The Prometheus text of `scope`.
pub fn exposition(gw: &Gateway, scope: Scope) -> Response<Body> {
    let body = text::encode(&collect(gw, scope));
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(text::CONTENT_TYPE));
    response
}

/// Closes the connection after a tenant's answer: the admin listener's connection slots are
/// the operator's too, and a tenant must not hold them with idle keep-alive connections.
pub fn closing(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn gateway(admin: &Admin) -> Result<&Gateway, ApiError> {
    admin
        .inner
        .quotas
        .get()
        .ok_or_else(|| ApiError::unavailable("this gateway serves no Kafka listener"))
}

/// Every series, for the operator (the admin token was checked by the router).
pub fn operator(admin: &Admin) -> ApiResult {
    Ok(exposition(gateway(admin)?, Scope::All))
}

/// One cluster's series, for a Kafka credential of that cluster that may
/// `kafka-cluster:DescribeCluster`: a bearer token (a Tollgate JWT or an MSK IAM signer
/// token), checked as the Kafka listener checks it, allowlist included.
pub fn tenant(
    admin: &Admin,
    id: &str,
    request: &Request<Incoming>,
    peer: Option<std::net::IpAddr>,
) -> ApiResult {
    let gw = gateway(admin)?;
    let cluster = tenant_cluster(gw, id, request, peer)?;
    Ok(exposition(gw, Scope::Cluster(cluster)))
}

/// The cluster's last audit events on this instance, for the same credential as its metrics.
pub fn tenant_audit(
    admin: &Admin,
    id: &str,
    request: &Request<Incoming>,
    peer: Option<std::net::IpAddr>,
) -> ApiResult {
    let gw = gateway(admin)?;
    let cluster = tenant_cluster(gw, id, request, peer)?;
    let query = query_pairs(request.uri().query(), &["since"])?;
    let since = query
        .iter()
        .find(|(k, _)| k == "since")
        .map(|(_, v)| v.as_str());
    let events = gw
        .audit()
        .tenant_events(cluster, since)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(json_response(StatusCode::OK, &events))
}

/// The cluster `id` names, if the request's bearer credential is of it and may
/// `kafka-cluster:DescribeCluster`. An unknown cluster and another tenant's are refused alike:
/// the answer must not tell which cluster ids exist.
fn tenant_cluster(
    gw: &Gateway,
    id: &str,
    request: &Request<Incoming>,
    peer: Option<std::net::IpAddr>,
) -> Result<Uuid, ApiError> {
    let session = tenant_session(gw, request, peer)?;
    let granted = Uuid::parse_str(id).is_ok_and(|id| id == session.cluster.id)
        && session.may_cluster(Action::DescribeCluster);
    if !granted {
        return Err(forbidden());
    }
    Ok(session.cluster.id)
}

/// The session a tenant's bearer credential makes, as on the Kafka listener.
pub fn tenant_session(
    gw: &Gateway,
    request: &Request<Incoming>,
    peer: Option<std::net::IpAddr>,
) -> Result<Session, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a Kafka credential of the cluster as `Authorization: Bearer <token>`",
            )
        })?;
    crate::identity::sasl::bearer_session(gw, token, peer)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "the credential does not allow kafka-cluster:DescribeCluster on this cluster",
    )
}
