//! One PUT to the object store: HTTP/1.1 over a fresh TCP connection (TLS for `https://`
//! endpoints, verified against the system's roots). Objects are written about once a minute,
//! so a connection per object costs nothing worth a connection pool.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};

use crate::http_client::{self, Roots, Tls};
use crate::telemetry::audit::config::{AuditError, Endpoint};

/// How long one PUT may take, connecting included: an object is at most a few MiB.
const PUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Error answers are short XML documents; more is not read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Where the roots for `https://` endpoints come from unless `SSL_CERT_FILE` says: Debian's
/// (and most distributions') bundle, which the container image installs.
const SYSTEM_ROOTS: &str = http_client::DEBIAN_CA_BUNDLE;

pub struct Client {
    endpoint: Endpoint,
    tls: Option<Tls>,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Result<Client, AuditError> {
        let tls = if endpoint.tls {
            let file = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| SYSTEM_ROOTS.to_owned());
            let tls = Tls::new(Roots::Bundle(Path::new(&file)), &endpoint.host).map_err(|why| {
                AuditError::S3Tls(endpoint.host.clone(), format!("{why} (set SSL_CERT_FILE)"))
            })?;
            Some(tls)
        } else {
            None
        };
        Ok(Client { endpoint, tls })
    }

    /// PUTs `body` at `path` with `headers` (signed, `host` among them); Ok on a 2xx answer.
    pub async fn put(
        &self,
        path: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<(), String> {
        let mut request = Request::builder().method(Method::PUT).uri(path);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        http_client::within(PUT_TIMEOUT, self.send(request)).await
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(), String> {
        let (host, port) = (self.endpoint.host.as_str(), self.endpoint.port);
        let answer = http_client::send(host, port, self.tls.as_ref(), request).await?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let body = Limited::new(answer.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        // S3 names the refusal in <Code>: AccessDenied, NoSuchBucket, SignatureDoesNotMatch.
        let text = String::from_utf8_lossy(&body);
        let code = text
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(code, _)| format!(" ({code})"))
            .unwrap_or_default();
        Err(format!("the object store answered {status}{code}"))
    }
}
