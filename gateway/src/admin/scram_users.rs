//! `/v1/clusters/{id}/scram-users`: a cluster's SASL/SCRAM users.
//!
//! The password is salted and stretched here and then dropped: the store, Redis and the logs
//! only ever see the salt, the iteration count, `StoredKey` and `ServerKey`.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::http::{json_response, no_content, now, read_json, rfc3339, ApiError, ApiResult};
use super::store::StoreError;
use super::tokens::parse_policy;
use super::Admin;
use crate::identity::credentials::{check_username, ScramUser, MAX_SCRAM_USERS};
use crate::identity::scram::{self, Mechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::telemetry::audit::admin::{self as audit, Changed};

/// Long enough that a guessed password is not the weak point; Kafka itself sets no minimum.
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_CHARS: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: String,
    password: String,
    mechanism: String,
    policy: serde_json::Value,
    #[serde(default)]
    iterations: Option<u32>,
}

#[derive(Debug, Serialize)]
struct UserJson {
    cluster: Uuid,
    username: String,
    /// What a client puts in `sasl.username`: the user name and its cluster.
    sasl_username: String,
    mechanism: Mechanism,
    iterations: u32,
    created_at: String,
}

fn to_json(cluster: Uuid, username: &str, user: &ScramUser) -> Result<UserJson, ApiError> {
    Ok(UserJson {
        cluster,
        username: username.to_owned(),
        sasl_username: format!("{username}@{cluster}"),
        mechanism: user.credential.mechanism,
        iterations: user.credential.iterations,
        created_at: rfc3339(user.created_at)?,
    })
}

pub(super) async fn create(admin: &Admin, cluster: Uuid, request: Request<Incoming>) -> ApiResult {
    let body: CreateUser = read_json(request).await?;
    check_username(&body.username).map_err(ApiError::invalid)?;
    let mechanism = Mechanism::parse(&body.mechanism).ok_or_else(|| {
        ApiError::invalid(format!(
            "mechanism {:?} is not SCRAM-SHA-256 or SCRAM-SHA-512",
            body.mechanism
        ))
    })?;
    let chars = body.password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(ApiError::invalid(format!(
            "password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
        )));
    }
    let iterations = body.iterations.unwrap_or(MIN_ITERATIONS);
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(ApiError::invalid(format!(
            "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, not {iterations}"
        )));
    }
    let policy = parse_policy(body.policy)?;
    let username = body.username;
    let password = body.password;
    let created = admin
        .blocking(move |inner| {
            // Stretching the password is the slow part (milliseconds); done off the runtime.
            let user = ScramUser {
                id: Uuid::new_v4(),
                credential: scram::Credential::new(mechanism, &password, iterations),
                policy,
                created_at: now(),
            };
            inner.change_credentials(cluster, |_, credentials| {
                let users = &mut credentials.scram_users;
                if users.contains_key(&username) {
                    return Err(StoreError::Conflict(format!(
                        "cluster {cluster} has a SCRAM user {username:?} already"
                    )));
                }
                if users.len() >= MAX_SCRAM_USERS {
                    return Err(StoreError::Invalid(format!(
                        "cluster {cluster} has {MAX_SCRAM_USERS} SCRAM users, the most it may have"
                    )));
                }
                users.insert(username.clone(), user.clone());
                Ok(())
            })?;
            to_json(cluster, &username, &user)
        })
        .await?;
    tracing::info!(%cluster, username = %created.username, mechanism = created.mechanism.name(), "SCRAM user created");
    let changed = Changed {
        created: Some(created.username.clone()),
        ..Changed::default()
    };
    Ok(audit::tag(
        json_response(StatusCode::CREATED, &created),
        changed,
    ))
}

pub(super) async fn list(admin: &Admin, cluster: Uuid) -> ApiResult {
    let c = admin
        .blocking(move |inner| Ok(inner.store.cluster(cluster)?))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cluster {cluster}")))?;
    let users = c
        .credentials
        .scram_users
        .iter()
        .map(|(name, user)| to_json(cluster, name, user))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "scram_users": users }),
    ))
}

/// Deletes the user; its open connections close at their next check (within seconds).
pub(super) async fn delete(admin: &Admin, cluster: Uuid, username: &str) -> ApiResult {
    let username = percent_decode(username)?;
    let name = username.clone();
    admin
        .blocking(move |inner| {
            inner.change_credentials(cluster, |_, credentials| {
                credentials
                    .scram_users
                    .remove(&name)
                    .map(drop)
                    .ok_or_else(|| {
                        StoreError::NotFound(format!(
                            "cluster {cluster} has no SCRAM user {name:?}"
                        ))
                    })
            })?;
            Ok(())
        })
        .await?;
    tracing::info!(%cluster, %username, "SCRAM user deleted");
    Ok(no_content())
}

/// A path segment's `%XX` escapes decoded, so user names with any character can be deleted.
pub(super) fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::invalid(format!("bad %-escape in {segment:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid(format!("{segment:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("alice").unwrap(), "alice");
        assert_eq!(percent_decode("a%40b%2Cc%20d").unwrap(), "a@b,c d");
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
        assert!(percent_decode("a%4").is_err());
        assert!(percent_decode("a%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
