//! Posting one signal's export to the receiver as the OTLP/HTTP specification asks: a binary
//! protobuf body (`application/x-protobuf`) to `<endpoint>/v1/<signal>`, retried with
//! exponential backoff and jitter after 429, 502, 503 and 504 answers (waiting what a
//! `Retry-After` asks) and after connection failures; any other answer is final.
//!
//! The connection is kept between exports (HTTP/1.1 keep-alive) and made anew after any
//! failure. Plain HTTP, or HTTPS with rustls against a given CA file or the system's bundle.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use tokio::time::Instant;

pub use crate::http_client::Tls;
use crate::http_client::{self, Roots};

/// One attempt's limit, connecting included: the OTLP exporters' default
/// (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first retry's wait, doubled per retry up to [`MAX_BACKOFF`]. The spec leaves the numbers
/// to the exporter: 1 s recovers soon after a collector's restart, and 30 s is where the
/// OpenTelemetry SDKs cap theirs.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The least wait before a retry, whatever a `Retry-After` says: a receiver answering
/// "0" at every try is still not hammered.
const MIN_RETRY_WAIT: Duration = Duration::from_millis(100);

/// The most of a receiver's answer read: an `Export*ServiceResponse` or a `google.rpc.Status`
/// is a few hundred bytes; a receiver that sends more is not believed past this.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What is exported, and where under the endpoint it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Metrics,
    Traces,
}

impl Signal {
    pub const ALL: [Signal; 2] = [Signal::Metrics, Signal::Traces];

    pub fn label(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Traces => "/v1/traces",
        }
    }
}

/// The receiver's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it: `http://host:4318`,
/// with a path prefix kept if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    https: bool,
    /// Without an IPv6 address's brackets.
    host: String,
    port: u16,
    /// `host:port` as written, for the Host header.
    authority: String,
    /// The URL's path without its trailing slash ("" for none).
    prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:4318"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("scheme {other:?}: expected http or https")),
            None => return Err("no scheme: expected e.g. http://127.0.0.1:4318".into()),
        };
        let authority = uri
            .authority()
            .ok_or("no host: expected e.g. http://127.0.0.1:4318")?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        if uri.query().is_some() {
            return Err("a query string is not supported".into());
        }
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Endpoint {
            https,
            host,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    pub fn https(&self) -> bool {
        self.https
    }

    fn path(&self, signal: Signal) -> String {
        format!("{}{}", self.prefix, signal.path())
    }

    /// The full URL a signal is posted to, for logs.
    pub fn url(&self, signal: Signal) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path(signal))
    }
}

/// The TLS client for an https endpoint: trusting the PEM certificates in `ca_file`, or the
/// system's bundle when none is given. Either is read as a bundle: one given may well be the
/// system's own.
pub fn tls(endpoint: &Endpoint, ca_file: Option<&Path>) -> Result<Tls, String> {
    let bundle = match ca_file {
        Some(path) => path,
        None => http_client::system_bundle().ok_or_else(|| {
            format!(
                "no system CA bundle found (looked at {}); give the receiver's CA file",
                http_client::SYSTEM_CA_BUNDLES.join(", ")
            )
        })?,
    };
    Tls::new(Roots::Bundle(bundle), &endpoint.host)
}

/// How one export ended, after whatever retries it took.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A 2xx answer; its body (an `Export*ServiceResponse`, possibly a partial success).
    Delivered(Bytes),
    /// An answer that retrying cannot change (400, 401, 404, 413, ...).
    Rejected(String),
    /// Still failing when the export's time ran out.
    Failed(String),
}

/// `google.rpc.Status`, which an OTLP/HTTP receiver puts in the body of an error answer.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

enum Attempt {
    Answer {
        status: StatusCode,
        retry_after: Option<Duration>,
        body: Bytes,
    },
    /// No answer: connecting, TLS, the exchange or the time limit failed.
    Broken(String),
}

/// One signal's connection to the receiver.
pub struct Client {
    endpoint: Arc<Endpoint>,
    tls: Option<Tls>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(endpoint: Arc<Endpoint>, tls: Option<Tls>) -> Client {
        Client {
            endpoint,
            tls,
            conn: None,
        }
    }

    /// Forgets the connection (after an export was abandoned midway, its state is unknown).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// Posts `body` until it is answered for good, or until the next try could not start
    /// before `deadline`.
    pub async fn export(&mut self, signal: Signal, body: Bytes, deadline: Instant) -> Delivery {
        let path = self.endpoint.path(signal);
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (why, asked) = match self
                .attempt(&path, body.clone(), left.min(ATTEMPT_TIMEOUT))
                .await
            {
                Attempt::Answer { status, body, .. } if status.is_success() => {
                    return Delivery::Delivered(body)
                }
                Attempt::Answer {
                    status,
                    retry_after,
                    body,
                } => {
                    let why = format!("HTTP {status}{}", rpc_message(&body));
                    if !retryable(status) {
                        return Delivery::Rejected(why);
                    }
                    (why, retry_after)
                }
                Attempt::Broken(why) => (why, None),
            };
            // Equal jitter: half the backoff, plus up to as much again at random, so that
            // instances that failed together do not retry together.
            let wait = asked
                .unwrap_or_else(|| backoff / 2 + backoff.mul_f64(rand::random::<f64>() / 2.0))
                .max(MIN_RETRY_WAIT);
            if Instant::now() + wait >= deadline {
                return Delivery::Failed(why);
            }
            tracing::debug!(signal = signal.label(), error = %why, ?wait, "OTLP export retrying");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn attempt(&mut self, path: &str, body: Bytes, limit: Duration) -> Attempt {
        if limit.is_zero() {
            return Attempt::Broken("no time left".into());
        }
        match http_client::within(limit, self.exchange(path, body)).await {
            Ok(attempt) => attempt,
            Err(why) => {
                self.conn = None;
                Attempt::Broken(why)
            }
        }
    }

    async fn exchange(&mut self, path: &str, body: Bytes) -> Result<Attempt, String> {
        // A kept connection the receiver closed while idle fails at once; one made now is
        // tried before the failure counts.
        if let Some(mut conn) = self.conn.take() {
            if conn.ready().await.is_ok() {
                if let Ok(attempt) = self.send(&mut conn, path, body.clone()).await {
                    self.conn = Some(conn);
                    return Ok(attempt);
                }
            }
        }
        let mut conn = self.connect().await?;
        let attempt = self.send(&mut conn, path, body).await?;
        self.conn = Some(conn);
        Ok(attempt)
    }

    async fn send(
        &self,
        conn: &mut SendRequest<Full<Bytes>>,
        path: &str,
        body: Bytes,
    ) -> Result<Attempt, String> {
        let request = Request::post(path)
            .header(HOST, &self.endpoint.authority)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let answer = conn
            .send_request(request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_BACKOFF));
        let body = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok(Attempt::Answer {
            status,
            retry_after,
            body,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let e = &self.endpoint;
        http_client::connect(&e.host, e.port, self.tls.as_ref()).await
    }
}

/// The OTLP/HTTP spec's retryable answers: throttled, or a gateway or the receiver briefly
/// unavailable.
fn retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// ": <message>" from an error answer's `google.rpc.Status`, if it has one.
fn rpc_message(body: &[u8]) -> String {
    use prost::Message;
    match RpcStatus::decode(body) {
        Ok(s) if !s.message.is_empty() => format!(": {}", s.message),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_base_urls() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert!(!e.https());
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 4318));
        assert_eq!(e.url(Signal::Metrics), "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(e.url(Signal::Traces), "http://127.0.0.1:4318/v1/traces");

        let e = Endpoint::parse("https://otel.example/collector/").unwrap();
        assert!(e.https());
        assert_eq!(e.port, 443);
        assert_eq!(e.path(Signal::Traces), "/collector/v1/traces");

        let e = Endpoint::parse("http://[::1]:4318/").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.authority, "[::1]:4318");
        assert_eq!(e.path(Signal::Metrics), "/v1/metrics");
    }

    #[test]
    fn bad_endpoints_say_what_is_wrong() {
        for (url, says) in [
            ("127.0.0.1:4318", "scheme"),
            ("grpc://127.0.0.1:4317", "scheme"),
            ("http://", "URL"),
            ("http://u:p@host:4318", "credentials"),
            ("http://host:4318/?x=1", "query"),
            ("", "URL"),
        ] {
            let err = Endpoint::parse(url).unwrap_err();
            assert!(err.contains(says), "{url:?}: {err}");
        }
    }

    #[test]
    fn only_throttling_and_unavailability_are_retried() {
        for s in [429, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 500, 501] {
            assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn an_error_answer_s_status_message_is_read() {
        use prost::Message;
        let body = RpcStatus {
            code: 3,
            message: "bad metric".into(),
        }
        .encode_to_vec();
        assert_eq!(rpc_message(&body), ": bad metric");
        assert_eq!(rpc_message(b"\xff\xff not protobuf"), "");
        assert_eq!(rpc_message(b""), "");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("tollgate-otlp-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = Endpoint::parse("https://127.0.0.1:4318").unwrap();
        let err = tls(&e, Some(&empty)).err().unwrap();
        assert!(err.contains("no usable certificate"), "{err}");
        let err = tls(&e, Some(&dir.join("missing.pem"))).err().unwrap();
        assert!(err.contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
