//! One PUT to the object store: HTTP/1.1 over a fresh TCP connection (TLS for `https://`
//! endpoints, verified against the system's roots). Objects are written about once a minute,
//! so a connection per object costs nothing worth a connection pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::telemetry::audit::config::{AuditError, Endpoint};

/// How long one PUT may take, connecting included: an object is at most a few MiB.
const PUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Error answers are short XML documents; more is not read.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Where the roots for `https://` endpoints come from unless `SSL_CERT_FILE` says: Debian's
/// (and most distributions') bundle, which the container image installs.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

pub struct Client {
    endpoint: Endpoint,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Result<Client, AuditError> {
        let tls = if endpoint.tls {
            Some(tls_connector(&endpoint.host)?)
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
        tokio::time::timeout(PUT_TIMEOUT, self.send(request))
            .await
            .map_err(|_| format!("no answer within {PUT_TIMEOUT:?}"))?
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(), String> {
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.endpoint.authority()))?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.endpoint.authority()))?;
                exchange(TokioIo::new(tls), request).await
            }
            None => exchange(TokioIo::new(tcp), request).await,
        }
    }
}

async fn exchange<S>(io: TokioIo<S>, request: Request<Full<Bytes>>) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let outcome = match answer {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY)
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
        Err(e) => Err(e),
    };
    driver.abort();
    outcome
}

fn tls_connector(
    host: &str,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    ),
    AuditError,
> {
    use rustls_pki_types::pem::PemObject;
    let file = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| SYSTEM_ROOTS.to_owned());
    let fail = |why: String| AuditError::S3Tls(host.to_owned(), why);
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(&file).map_err(|e| {
        fail(format!(
            "reading the trusted roots {file}: {e} (set SSL_CERT_FILE)"
        ))
    })?;
    // A bundle may hold certificates rustls cannot use; the others still count.
    for cert in certs.flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(fail(format!("{file} holds no usable certificate")));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| fail(format!("not a TLS server name: {e}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}
