//! `/v1/tokens`: mints the JWTs Kafka clients present over SASL.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::http::{json_response, no_content, now, read_json, rfc3339, ApiError, ApiResult};
use super::store::{IssuedToken, StoreError};
use super::Admin;
use crate::identity::policy::{Policy, Statement};
use crate::telemetry::audit::admin::{self as audit, Changed};

/// Amazon MSK's IAM sessions last at most 12 hours; clients re-authenticate (KIP-368) sooner.
const MAX_TTL_SECONDS: i64 = 12 * 3600;
const DEFAULT_TTL_SECONDS: i64 = 3600;
const MAX_PRINCIPAL_CHARS: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueToken {
    cluster: String,
    principal: String,
    // Parsed in a second step so that its errors can say they are about the policy.
    policy: serde_json::Value,
    #[serde(default)]
    ttl_seconds: Option<i64>,
}

/// Parses and validates a policy document. `Statement` is "one or many", which serde reports only as "did
/// not match any variant"; on failure we parse the statements one by one to say which one is
/// wrong and why (an unsupported `Condition`, a misspelt `Effect`, ...).
pub(super) fn parse_policy(value: serde_json::Value) -> Result<Policy, ApiError> {
    let statements = match value.get("Statement") {
        Some(serde_json::Value::Array(list)) => list.clone(),
        Some(one) => vec![one.clone()],
        None => Vec::new(),
    };
    let policy: Policy = serde_json::from_value(value).map_err(|e| {
        let detail = statements
            .into_iter()
            .enumerate()
            .find_map(|(i, st)| {
                serde_json::from_value::<Statement>(st)
                    .err()
                    .map(|e| format!("statement {i}: {e}"))
            })
            .unwrap_or_else(|| e.to_string());
        ApiError::invalid(format!("policy is not a valid policy document: {detail}"))
    })?;
    policy
        .validate()
        .map_err(|e| ApiError::invalid(format!("policy: {e}")))?;
    Ok(policy)
}

/// A principal's problem, if it has one: 1 to 256 printable characters.
pub(super) fn check_principal(principal: &str) -> Result<(), ApiError> {
    if principal.is_empty()
        || principal.chars().count() > MAX_PRINCIPAL_CHARS
        || principal.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "principal must be 1 to {MAX_PRINCIPAL_CHARS} printable characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct TokenJson {
    token: String,
    /// The token's id (its `jti`), what `DELETE /v1/tokens/{jti}` revokes it by.
    jti: Uuid,
    expires_at: String,
}

pub(super) async fn issue(admin: &Admin, request: Request<Incoming>) -> ApiResult {
    let body: IssueToken = read_json(request).await?;
    let cluster_id = Uuid::parse_str(&body.cluster).map_err(|_| {
        ApiError::invalid(format!(
            "cluster {:?} is not a cluster id (a UUID)",
            body.cluster
        ))
    })?;
    let principal = body.principal;
    check_principal(&principal)?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid(format!(
            "ttl_seconds must be between 1 and {MAX_TTL_SECONDS} (12 hours), not {ttl}"
        )));
    }
    let policy = parse_policy(body.policy)?;

    let cluster = admin
        .blocking(move |inner| Ok(inner.store.cluster(cluster_id)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster {cluster_id}")))?;
    let (token, claims) = admin
        .inner
        .tokens
        .issue(&cluster.tenant, cluster.id, &principal, policy, now(), ttl)
        .map_err(ApiError::internal)?;
    let issued = IssuedToken {
        cluster: cluster.id,
        principal: claims.sub.clone(),
        expires_at: claims.exp,
    };
    let jti = claims.jti;
    admin
        .blocking(move |inner| Ok(inner.store.record_token(jti, &issued, now())?))
        .await?;
    tracing::info!(
        cluster = %cluster.id,
        principal = %claims.sub,
        jti = %claims.jti,
        exp = claims.exp,
        "token issued"
    );
    Ok(audit::tag(
        json_response(
            StatusCode::CREATED,
            &TokenJson {
                token,
                jti,
                expires_at: rfc3339(claims.exp)?,
            },
        ),
        Changed {
            created: Some(jti.to_string()),
            cluster: Some(cluster.id),
            tenant: Some(cluster.tenant.clone()),
        },
    ))
}

/// Revokes a token the admin API issued: it is refused from now on, and connections that
/// authenticated with it close at their next check (within seconds, on every instance).
/// Revoking twice, or a token that has expired, changes nothing and succeeds.
pub(super) async fn revoke(admin: &Admin, jti: &str) -> ApiResult {
    let jti = Uuid::parse_str(jti)
        .map_err(|_| ApiError::not_found(format!("no token {jti:?} (a token id is a UUID)")))?;
    let now = now();
    let token = admin
        .blocking(move |inner| {
            let _writes = inner.write_lock();
            let Some(token) = inner.store.issued_token(jti)? else {
                return Err(ApiError::not_found(format!(
                    "no token {jti} was issued here, or it expired long ago"
                )));
            };
            if token.expires_at > now {
                let cluster = inner.store.change_cluster(token.cluster, |c| {
                    c.credentials.prune_revoked(now);
                    c.credentials.revoked_tokens.insert(jti, token.expires_at);
                    Ok(())
                });
                match cluster {
                    Ok(cluster) => inner.registry.upsert(cluster),
                    // A deleted cluster's tokens are refused already.
                    Err(StoreError::NoSuchCluster(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(token)
        })
        .await?;
    tracing::info!(%jti, cluster = %token.cluster, principal = %token.principal, "token revoked");
    Ok(audit::tag(
        no_content(),
        Changed {
            cluster: Some(token.cluster),
            ..Changed::default()
        },
    ))
}
