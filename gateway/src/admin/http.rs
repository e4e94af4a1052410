//! The HTTP plumbing every admin endpoint shares: the error shape, JSON in and out, the body
//! limit, the admin token check, and RFC 3339 times.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::store::StoreError;

/// Admin requests are small JSON documents; a policy is the largest thing anyone sends.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a client may take to send a body once its headers arrived, so a trickling client
/// cannot hold a connection (and a graceful shutdown) open forever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

pub type Body = Full<Bytes>;

/// An answer other than success, rendered as `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 405: the methods the resource does accept.
    pub allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as `Authorization: Bearer <token>`",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this resource accepts {allow}"),
            )
        }
    }

    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "already_exists", message)
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    }

    pub fn timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} seconds",
                BODY_TIMEOUT.as_secs()
            ),
        )
    }

    pub fn pool_unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "pool_unavailable", message)
    }

    /// A store other instances share (Redis) could not be reached; nothing was changed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A fault on our side. The details go to the log, not to the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "admin API internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the gateway log",
        )
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = json_response(self.status, &body);
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        // The body we refused may still be on its way; reading it just to keep the connection
        // would defeat the limit, and leaving it unread would leave the connection stuck.
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TenantExists(_)
            | StoreError::ClusterExists(..)
            | StoreError::Conflict(_) => ApiError::exists(e.to_string()),
            StoreError::NoSuchTenant(_)
            | StoreError::NoSuchCluster(_)
            | StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
            StoreError::Invalid(message) => ApiError::invalid(message),
            StoreError::DataDir { .. } | StoreError::Db(_) | StoreError::Corrupt(_) => {
                ApiError::internal(e)
            }
        }
    }
}

pub type ApiResult = Result<Response<Body>, ApiError>;

pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        // Our own response types always serialize; this keeps a bug from becoming a panic.
        Err(e) => ApiError::internal(e).into_response(),
    }
}

pub fn no_content() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] before buffering it, and parses
/// it as `T`. Unknown fields are refused by `T`'s `deny_unknown_fields`.
pub async fn read_json<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, ApiError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::too_large());
    }
    let limited = Limited::new(request.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => return Err(ApiError::timeout()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::too_large())
        }
        Ok(Err(e)) => {
            return Err(ApiError::invalid(format!(
                "cannot read the request body: {e}"
            )))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("invalid JSON request body: {e}")))
}

/// Does the request carry `Authorization: Bearer <expected>`? An empty `expected` matches
/// nothing, so a misconfigured gateway locks its admin API rather than opening it.
pub fn authorized<B>(request: &Request<B>, expected: &str) -> bool {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    // The scheme is case-insensitive (RFC 9110 section 11.1).
    let Some((scheme, presented)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"Bearer ") && ct_eq(presented, expected.as_bytes())
}

/// Compares in time that depends only on the presented token's length, so response timing
/// does not reveal how many leading bytes of a guess were right.
fn ct_eq(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = (presented.len() != expected.len()) as u8;
    for (i, &p) in presented.iter().enumerate() {
        // Indexing modulo the expected length keeps the loop's length independent of it.
        diff |= p ^ expected[i % expected.len()];
    }
    diff == 0
}

/// The query string's `key=value` pairs, percent-decoded. Refuses keys not in `allowed`, so a
/// misspelt filter is an error rather than silently ignored.
pub fn query_pairs(
    query: Option<&str>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (k, v) = (percent_decode(k)?, percent_decode(v)?);
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "unknown query parameter {k:?}; expected one of {allowed:?}"
            )));
        }
        pairs.push((k, v));
    }
    Ok(pairs)
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::invalid(format!("malformed percent-encoding in query {s:?}"));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let digit = |b: u8| (b as char).to_digit(16).ok_or_else(bad);
                out.push((digit(hex[0])? * 16 + digit(hex[1])?) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// A query parameter `name` holding an RFC 3339 time.
pub fn parse_time(name: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|e| ApiError::invalid(format!("{name} is not an RFC 3339 time: {e}")))
}

/// Seconds since the epoch as RFC 3339 UTC, e.g. `2024-05-01T12:00:00Z`.
pub fn rfc3339(unix_seconds: i64) -> Result<String, ApiError> {
    OffsetDateTime::from_unix_timestamp(unix_seconds)
        .map_err(ApiError::internal)?
        .format(&Rfc3339)
        .map_err(ApiError::internal)
}

pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder();
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn bearer_check() {
        assert!(authorized(&request(Some("Bearer s3cret")), "s3cret"));
        assert!(authorized(&request(Some("bearer s3cret")), "s3cret"));
        assert!(!authorized(&request(Some("Bearer s3cre")), "s3cret"));
        assert!(!authorized(&request(Some("Bearer s3cret2")), "s3cret"));
        assert!(!authorized(&request(Some("Basic s3cret")), "s3cret"));
        assert!(!authorized(&request(Some("Bearer")), "s3cret"));
        assert!(!authorized(&request(None), "s3cret"));
        assert!(!authorized(&request(Some("Bearer ")), ""));
    }

    #[test]
    fn query_decoding() {
        let pairs = query_pairs(Some("tenant=ac%2Dme&tenant=a+b"), &["tenant"]).unwrap();
        assert_eq!(
            pairs,
            [
                ("tenant".into(), "ac-me".into()),
                ("tenant".into(), "a b".into())
            ]
        );
        assert!(query_pairs(Some("tenent=acme"), &["tenant"]).is_err());
        assert!(query_pairs(Some("tenant=%"), &["tenant"]).is_err());
        assert!(query_pairs(Some("tenant=%zz"), &["tenant"]).is_err());
        assert!(query_pairs(Some("tenant=%+1"), &["tenant"]).is_err());
        assert!(query_pairs(Some("tenant=%ff"), &["tenant"]).is_err());
        assert!(query_pairs(Some("tenant=%e2%82"), &["tenant"]).is_err());
        assert!(query_pairs(None, &["tenant"]).unwrap().is_empty());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800).unwrap(), "2024-05-01T12:00:00Z");
        assert!(rfc3339(i64::MAX).is_err());
    }
}
