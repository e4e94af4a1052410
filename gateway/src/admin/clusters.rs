//! `/v1/clusters`: a tenant's virtual Kafka clusters, each a namespace on the shared pool.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::http::{
    json_response, no_content, now, query_pairs, read_json, rfc3339, ApiError, ApiResult,
};
use super::Admin;
use crate::quotas::Quotas;
use crate::telemetry::audit::admin::{self as audit, Changed};
use crate::tenancy::{
    valid_cluster_name, Cluster, DEFAULT_MAX_MESSAGE_BYTES, LIMIT_MAX_MESSAGE_BYTES,
};

/// Below a KiB a record batch has hardly room for its own header (61 bytes) and a record;
/// such a value is almost surely a unit mistake (KiB for bytes).
const MIN_MAX_MESSAGE_BYTES: i32 = 1024;

/// A pool that does not answer must not hold a DELETE (and a graceful shutdown) forever; the
/// cleanup is retried by repeating the DELETE.
const POOL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCluster {
    tenant: String,
    name: String,
    // Wider than i32 so an out-of-range value gets our message rather than serde's.
    #[serde(default)]
    max_message_bytes: Option<i64>,
    /// Any of the quotas (`null`: no limit); the others take the defaults.
    #[serde(default)]
    quotas: Option<serde_json::Map<String, serde_json::Value>>,
    /// The networks its clients may connect from; absent or `null`: anywhere.
    #[serde(default)]
    allowed_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchCluster {
    #[serde(default)]
    max_message_bytes: Option<i64>,
    /// The quotas to change (`null`: no limit); the others keep their values.
    #[serde(default)]
    quotas: Option<serde_json::Map<String, serde_json::Value>>,
    /// A new allowlist; `null`: anywhere again; absent: unchanged.
    #[serde(default, deserialize_with = "present")]
    allowed_cidrs: Option<Option<Vec<String>>>,
}

/// A field given, even as `null` (`Some(None)`), as against one left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Serialize)]
struct ClusterJson<'a> {
    id: Uuid,
    tenant: &'a str,
    name: &'a str,
    arn: String,
    bootstrap: &'a str,
    max_message_bytes: i32,
    created_at: String,
    quotas: &'a Quotas,
    /// `null`: clients may connect from anywhere.
    allowed_cidrs: Option<&'a [crate::identity::allowlist::Cidr]>,
    /// Use of the quotas on this instance (absent before the data path runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_use: Option<super::QuotaUse>,
}

fn to_json<'a>(admin: &'a Admin, cluster: &'a Cluster) -> Result<ClusterJson<'a>, ApiError> {
    Ok(ClusterJson {
        id: cluster.id,
        tenant: &cluster.tenant,
        name: &cluster.name,
        arn: cluster.arn(&admin.inner.config.region),
        bootstrap: &admin.inner.config.bootstrap,
        max_message_bytes: cluster.max_message_bytes,
        created_at: rfc3339(cluster.created_at)?,
        quotas: &cluster.quotas,
        allowed_cidrs: cluster.allowed_cidrs.as_deref(),
        quota_use: admin.quota_use(&cluster.id),
    })
}

fn max_message_bytes(requested: Option<i64>) -> Result<i32, ApiError> {
    let Some(requested) = requested else {
        return Ok(DEFAULT_MAX_MESSAGE_BYTES);
    };
    i32::try_from(requested)
        .ok()
        .filter(|n| (MIN_MAX_MESSAGE_BYTES..=LIMIT_MAX_MESSAGE_BYTES).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "max_message_bytes must be between {MIN_MAX_MESSAGE_BYTES} and \
                 {LIMIT_MAX_MESSAGE_BYTES}, not {requested}"
            ))
        })
}

/// A path id that is not a UUID names no cluster: that is a 404, like any unknown id.
pub(super) fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(format!("no cluster {id:?}")))
}

pub(super) async fn create(admin: &Admin, request: Request<Incoming>) -> ApiResult {
    let body: CreateCluster = read_json(request).await?;
    if !valid_cluster_name(&body.name) {
        return Err(ApiError::invalid(format!(
            "cluster name {:?} must be 1 to 64 letters, digits or hyphens, starting with a letter",
            body.name
        )));
    }
    let mut quotas = Quotas::default();
    if let Some(changes) = &body.quotas {
        quotas.apply(changes).map_err(ApiError::invalid)?;
    }
    let allowed_cidrs = body
        .allowed_cidrs
        .as_deref()
        .map(crate::identity::allowlist::parse_list)
        .transpose()
        .map_err(ApiError::invalid)?;
    let cluster = Cluster {
        id: Uuid::new_v4(),
        tenant: body.tenant,
        name: body.name,
        max_message_bytes: max_message_bytes(body.max_message_bytes)?,
        created_at: now(),
        quotas,
        allowed_cidrs,
        credentials: Default::default(),
    };
    let cluster = admin
        .blocking(move |inner| {
            let _writes = inner.write_lock();
            inner.store.create_cluster(&cluster)?;
            inner.registry.upsert(cluster.clone());
            Ok(cluster)
        })
        .await?;
    tracing::info!(cluster = %cluster.id, tenant = %cluster.tenant, name = %cluster.name, "cluster created");
    Ok(audit::tag(
        json_response(StatusCode::CREATED, &to_json(admin, &cluster)?),
        Changed {
            created: Some(cluster.id.to_string()),
            cluster: Some(cluster.id),
            tenant: Some(cluster.tenant.clone()),
        },
    ))
}

pub(super) async fn list(admin: &Admin, query: Option<&str>) -> ApiResult {
    let mut tenant = None;
    for (_, value) in query_pairs(query, &["tenant"])? {
        if tenant.replace(value).is_some() {
            return Err(ApiError::invalid("give at most one tenant"));
        }
    }
    let clusters = admin
        .blocking(move |inner| {
            if let Some(t) = &tenant {
                if inner.store.tenant(t)?.is_none() {
                    return Err(ApiError::not_found(format!("no tenant {t:?}")));
                }
            }
            Ok(inner.store.clusters(tenant.as_deref())?)
        })
        .await?;
    let clusters = clusters
        .iter()
        .map(|c| to_json(admin, c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "clusters": clusters }),
    ))
}

pub(super) async fn get(admin: &Admin, id: &str) -> ApiResult {
    let id = parse_id(id)?;
    match admin
        .blocking(move |inner| Ok(inner.store.cluster(id)?))
        .await?
    {
        Some(cluster) => Ok(json_response(StatusCode::OK, &to_json(admin, &cluster)?)),
        None => Err(ApiError::not_found(format!("no cluster {id}"))),
    }
}

pub(super) async fn patch(admin: &Admin, id: &str, request: Request<Incoming>) -> ApiResult {
    let id = parse_id(id)?;
    let body: PatchCluster = read_json(request).await?;
    if body.max_message_bytes.is_none() && body.quotas.is_none() && body.allowed_cidrs.is_none() {
        return Err(ApiError::invalid(
            "nothing to change: PATCH accepts max_message_bytes, quotas and allowed_cidrs",
        ));
    }
    let allowed_cidrs = body
        .allowed_cidrs
        .map(|list| {
            list.as_deref()
                .map(crate::identity::allowlist::parse_list)
                .transpose()
        })
        .transpose()
        .map_err(ApiError::invalid)?;
    let limit = body
        .max_message_bytes
        .map(|n| max_message_bytes(Some(n)))
        .transpose()?;
    let quotas = body.quotas;
    let cluster = admin
        .blocking(move |inner| {
            let _writes = inner.write_lock();
            let cluster = inner.store.update_cluster(id, |c| {
                if let Some(changes) = &quotas {
                    c.quotas.apply(changes)?;
                }
                if let Some(limit) = limit {
                    c.max_message_bytes = limit;
                }
                if let Some(allowed) = &allowed_cidrs {
                    c.allowed_cidrs = allowed.clone();
                }
                Ok(())
            })?;
            inner.registry.upsert(cluster.clone());
            Ok(cluster)
        })
        .await?;
    tracing::info!(cluster = %cluster.id, max_message_bytes = cluster.max_message_bytes, quotas = ?cluster.quotas, allowed_cidrs = ?cluster.allowed_cidrs, "cluster updated");
    Ok(json_response(StatusCode::OK, &to_json(admin, &cluster)?))
}

/// Tombstones the cluster and takes it out of the registry before asking the pool to delete
/// its topics: the data path stops serving (and metering) the cluster first, so the cleanup is
/// not racing clients that are still creating topics in it.
pub(super) async fn delete(admin: &Admin, id: &str) -> ApiResult {
    let id = parse_id(id)?;
    let deleted_at = now();
    let cluster = admin
        .blocking(move |inner| {
            let _writes = inner.write_lock();
            let cluster = inner.store.delete_cluster(id, deleted_at)?;
            inner.registry.remove(&id);
            Ok(cluster)
        })
        .await?;
    tracing::info!(cluster = %cluster.id, tenant = %cluster.tenant, name = %cluster.name, "cluster deleted");
    clean_up(admin, &cluster).await?;
    // The registry no longer has it: whose it was goes with the event.
    Ok(audit::tag(
        no_content(),
        Changed {
            tenant: Some(cluster.tenant.clone()),
            ..Changed::default()
        },
    ))
}

/// Deletes a deleted cluster's topics from the pool and records that it is done.
pub(super) async fn clean_up(admin: &Admin, cluster: &Cluster) -> Result<(), ApiError> {
    let id = cluster.id;
    let retry = "the cluster is deleted; repeat the DELETE to retry removing its topics";
    let outcome = tokio::time::timeout(
        POOL_TIMEOUT,
        admin
            .inner
            .pool
            .delete_namespace_topics(cluster.namespace()),
    )
    .await;
    match outcome {
        Ok(Ok(topics)) => {
            tracing::info!(cluster = %id, topics, "cluster's topics deleted from the pool");
        }
        Ok(Err(message)) => {
            tracing::warn!(cluster = %id, error = %message, "deleting a cluster's topics failed");
            return Err(ApiError::pool_unavailable(format!(
                "the pool did not delete the cluster's topics ({message}); {retry}"
            )));
        }
        Err(_) => {
            tracing::warn!(cluster = %id, "deleting a cluster's topics timed out");
            return Err(ApiError::pool_unavailable(format!(
                "the pool did not answer within {} seconds; {retry}",
                POOL_TIMEOUT.as_secs()
            )));
        }
    }
    let cleaned_at = now();
    admin
        .blocking(move |inner| Ok(inner.store.mark_cleaned(id, cleaned_at)?))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_limits() {
        assert_eq!(max_message_bytes(None), Ok(DEFAULT_MAX_MESSAGE_BYTES));
        assert_eq!(max_message_bytes(Some(1024)), Ok(1024));
        assert_eq!(
            max_message_bytes(Some(LIMIT_MAX_MESSAGE_BYTES as i64)),
            Ok(LIMIT_MAX_MESSAGE_BYTES)
        );
        for bad in [
            1023,
            0,
            -1,
            LIMIT_MAX_MESSAGE_BYTES as i64 + 1,
            i64::MAX,
            i64::MIN,
        ] {
            assert!(max_message_bytes(Some(bad)).is_err(), "{bad}");
        }
    }
}
