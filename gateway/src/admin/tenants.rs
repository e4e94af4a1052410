//! `/v1/tenants`: the customers that own clusters.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::http::{json_response, now, read_json, rfc3339, ApiError, ApiResult};
use super::Admin;
use crate::telemetry::audit::admin::{self as audit, Changed};
use crate::tenancy::{valid_tenant_id, Tenant};

/// A display name, not an identifier: anything printable goes, within reason.
const MAX_NAME_CHARS: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    id: String,
    name: String,
}

#[derive(Debug, Serialize)]
struct TenantJson<'a> {
    id: &'a str,
    name: &'a str,
    created_at: String,
}

fn to_json(tenant: &Tenant) -> Result<TenantJson<'_>, ApiError> {
    Ok(TenantJson {
        id: &tenant.id,
        name: &tenant.name,
        created_at: rfc3339(tenant.created_at)?,
    })
}

pub(super) async fn create(admin: &Admin, request: Request<Incoming>) -> ApiResult {
    let body: CreateTenant = read_json(request).await?;
    if !valid_tenant_id(&body.id) {
        return Err(ApiError::invalid(format!(
            "tenant id {:?} must be 1 to 32 lowercase letters, digits or hyphens",
            body.id
        )));
    }
    let name = body.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "tenant name must be 1 to {MAX_NAME_CHARS} printable characters"
        )));
    }
    let tenant = Tenant {
        id: body.id,
        name: name.to_owned(),
        created_at: now(),
    };
    let tenant = admin
        .blocking(move |inner| {
            inner.store.create_tenant(&tenant)?;
            Ok(tenant)
        })
        .await?;
    tracing::info!(tenant = %tenant.id, "tenant created");
    Ok(audit::tag(
        json_response(StatusCode::CREATED, &to_json(&tenant)?),
        Changed {
            created: Some(tenant.id.clone()),
            ..Changed::default()
        },
    ))
}

pub(super) async fn list(admin: &Admin) -> ApiResult {
    let tenants = admin.blocking(|inner| Ok(inner.store.tenants()?)).await?;
    let tenants = tenants.iter().map(to_json).collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "tenants": tenants }),
    ))
}

pub(super) async fn get(admin: &Admin, id: &str) -> ApiResult {
    let key = id.to_owned();
    match admin
        .blocking(move |inner| Ok(inner.store.tenant(&key)?))
        .await?
    {
        Some(tenant) => Ok(json_response(StatusCode::OK, &to_json(&tenant)?)),
        None => Err(ApiError::not_found(format!("no tenant {id:?}"))),
    }
}
