//! `/v1/clusters/{id}/certificate-principals`: client certificate principals bound to a cluster.
//!
//! A principal is what `--tls-principal-rules` make of a client certificate's subject (by
//! default the subject itself, e.g. `CN=alice,OU=eng,O=Acme`). A certificate names no cluster,
//! so a principal is bound to one cluster at most: binding it to a second is refused.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::http::{json_response, no_content, now, read_json, rfc3339, ApiError, ApiResult};
use super::scram_users::percent_decode;
use super::store::StoreError;
use super::tokens::{check_principal, parse_policy};
use super::Admin;
use crate::identity::credentials::CertificateBinding;
use crate::telemetry::audit::admin::{self as audit, Changed};

/// The most principals one cluster may bind: each is carried in every sync of its cluster.
const MAX_BINDINGS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Bind {
    principal: String,
    policy: serde_json::Value,
}

#[derive(Debug, Serialize)]
struct BindingJson {
    cluster: Uuid,
    principal: String,
    created_at: String,
}

pub(super) async fn create(admin: &Admin, cluster: Uuid, request: Request<Incoming>) -> ApiResult {
    let body: Bind = read_json(request).await?;
    check_principal(&body.principal)?;
    let policy = parse_policy(body.policy)?;
    let binding = CertificateBinding {
        id: Uuid::new_v4(),
        policy,
        created_at: now(),
    };
    let principal = body.principal;
    let (name, bound) = (principal.clone(), binding.clone());
    admin
        .blocking(move |inner| {
            inner.change_credentials(cluster, |registry, credentials| {
                if let Some(other) = registry.by_certificate_principal(&name) {
                    return Err(StoreError::Conflict(format!(
                        "principal {name:?} is bound to cluster {} already; a certificate \
                         names no cluster, so a principal belongs to one",
                        other.id
                    )));
                }
                let bindings = &mut credentials.certificate_principals;
                if bindings.len() >= MAX_BINDINGS {
                    return Err(StoreError::Invalid(format!(
                        "cluster {cluster} binds {MAX_BINDINGS} principals, the most it may"
                    )));
                }
                bindings.insert(name.clone(), bound);
                Ok(())
            })?;
            Ok(())
        })
        .await?;
    tracing::info!(%cluster, %principal, "certificate principal bound");
    let changed = Changed {
        created: Some(principal.clone()),
        ..Changed::default()
    };
    Ok(audit::tag(
        json_response(
            StatusCode::CREATED,
            &BindingJson {
                cluster,
                principal,
                created_at: rfc3339(binding.created_at)?,
            },
        ),
        changed,
    ))
}

pub(super) async fn list(admin: &Admin, cluster: Uuid) -> ApiResult {
    let c = admin
        .blocking(move |inner| Ok(inner.store.cluster(cluster)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster {cluster}")))?;
    let bindings = c
        .credentials
        .certificate_principals
        .iter()
        .map(|(principal, b)| {
            Ok(BindingJson {
                cluster,
                principal: principal.clone(),
                created_at: rfc3339(b.created_at)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "certificate_principals": bindings }),
    ))
}

/// Unbinds the principal (percent-encoded in the path: subjects hold `,`, `=` and spaces); its
/// connections close at their next check.
pub(super) async fn delete(admin: &Admin, cluster: Uuid, principal: &str) -> ApiResult {
    let principal = percent_decode(principal)?;
    let name = principal.clone();
    admin
        .blocking(move |inner| {
            inner.change_credentials(cluster, |_, credentials| {
                credentials
                    .certificate_principals
                    .remove(&name)
                    .map(drop)
                    .ok_or_else(|| {
                        StoreError::NotFound(format!(
                            "cluster {cluster} has not bound principal {name:?}"
                        ))
                    })
            })?;
            Ok(())
        })
        .await?;
    tracing::info!(%cluster, %principal, "certificate principal unbound");
    Ok(no_content())
}
