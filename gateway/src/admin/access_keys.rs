//! `/v1/clusters/{id}/access-keys`: MSK IAM access keys of a cluster.
//!
//! Clients sign with a key as with AWS credentials (Amazon's `aws-msk-iam-sasl-signer`
//! libraries, or aws-msk-iam-auth's `AWS_MSK_IAM` mechanism), for the gateway's `--region`. The
//! secret is answered once, when the key is made; listings never show it.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::http::{json_response, no_content, now, read_json, rfc3339, ApiError, ApiResult};
use super::store::StoreError;
use super::tokens::{check_principal, parse_policy};
use super::Admin;
use crate::identity::credentials::{new_access_key_id, new_secret, AccessKey};
use crate::telemetry::audit::admin::{self as audit, Changed};

/// The most access keys one cluster may have: each is carried in every sync of its cluster.
const MAX_ACCESS_KEYS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    principal: String,
    policy: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct KeyJson {
    cluster: Uuid,
    access_key_id: String,
    /// Only in the answer that made the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<String>,
    principal: String,
    /// The region clients sign for: the gateway's `--region`.
    region: String,
    created_at: String,
}

fn to_json(admin: &Admin, cluster: Uuid, id: &str, key: &AccessKey) -> Result<KeyJson, ApiError> {
    Ok(KeyJson {
        cluster,
        access_key_id: id.to_owned(),
        secret_access_key: None,
        principal: key.principal.clone(),
        region: admin.inner.config.region.clone(),
        created_at: rfc3339(key.created_at)?,
    })
}

pub(super) async fn create(admin: &Admin, cluster: Uuid, request: Request<Incoming>) -> ApiResult {
    let body: CreateKey = read_json(request).await?;
    check_principal(&body.principal)?;
    let policy = parse_policy(body.policy)?;
    let key = AccessKey {
        secret: new_secret(),
        principal: body.principal,
        policy,
        created_at: now(),
    };
    let id = new_access_key_id();
    let (key_id, stored) = (id.clone(), key.clone());
    admin
        .blocking(move |inner| {
            inner.change_credentials(cluster, |registry, credentials| {
                // 85 random bits make a clash practically impossible; refusing one keeps the
                // index from ever pointing two clusters at one key.
                if registry.by_access_key(&key_id).is_some() {
                    return Err(StoreError::Conflict(
                        "access key id clash; try again".into(),
                    ));
                }
                let keys = &mut credentials.access_keys;
                if keys.len() >= MAX_ACCESS_KEYS {
                    return Err(StoreError::Invalid(format!(
                        "cluster {cluster} has {MAX_ACCESS_KEYS} access keys, the most it may have"
                    )));
                }
                keys.insert(key_id.clone(), stored);
                Ok(())
            })?;
            Ok(())
        })
        .await?;
    tracing::info!(%cluster, access_key_id = %id, principal = %key.principal, "access key created");
    let mut json = to_json(admin, cluster, &id, &key)?;
    json.secret_access_key = Some(key.secret);
    Ok(audit::tag(
        json_response(StatusCode::CREATED, &json),
        Changed {
            created: Some(id),
            ..Changed::default()
        },
    ))
}

pub(super) async fn list(admin: &Admin, cluster: Uuid) -> ApiResult {
    let c = admin
        .blocking(move |inner| Ok(inner.store.cluster(cluster)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster {cluster}")))?;
    let keys = c
        .credentials
        .access_keys
        .iter()
        .map(|(id, key)| to_json(admin, cluster, id, key))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "access_keys": keys }),
    ))
}

/// Deletes the key; connections that signed with it close at their next check.
pub(super) async fn delete(admin: &Admin, cluster: Uuid, key_id: &str) -> ApiResult {
    let id = key_id.to_owned();
    admin
        .blocking(move |inner| {
            inner.change_credentials(cluster, |_, credentials| {
                credentials
                    .access_keys
                    .remove(&id)
                    .map(drop)
                    .ok_or_else(|| {
                        StoreError::NotFound(format!("cluster {cluster} has no access key {id:?}"))
                    })
            })?;
            Ok(())
        })
        .await?;
    tracing::info!(%cluster, access_key_id = %key_id, "access key deleted");
    Ok(no_content())
}
