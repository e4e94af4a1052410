//! Resizing through the Kubernetes API (`--pool-scale-kubernetes KIND/NAME`): the `scale`
//! subresource of a Deployment, a StatefulSet or a Strimzi KafkaNodePool, read with GET and
//! changed with a JSON merge patch of `spec.replicas`, as `kubectl scale` does. The gateway's
//! service account needs `get` and `patch` on that subresource (deploy/kubernetes/ grants
//! them).
//!
//! In a pod, the API server, the token and its CA come from the service account
//! (`KUBERNETES_SERVICE_HOST`, `/var/run/secrets/kubernetes.io/serviceaccount/`). The token is
//! read again for every request, because Kubernetes rotates projected tokens.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::http_client::{self, Roots, Tls};

/// Where a pod's service account credentials are mounted.
pub const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How long one API request may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// The most of an API answer read.
const MAX_ANSWER: usize = 1 << 20;

/// What is scaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    kind: Kind,
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deployment,
    StatefulSet,
    KafkaNodePool,
}

impl Target {
    /// Parses `KIND/NAME`: `deployment/...`, `statefulset/...` or `kafkanodepool/...`.
    pub fn parse(text: &str) -> Result<Target, String> {
        let (kind, name) = text.split_once('/').ok_or_else(|| {
            format!("--pool-scale-kubernetes {text:?}: expected KIND/NAME, e.g. statefulset/tansu or kafkanodepool/brokers")
        })?;
        let kind = match kind.to_ascii_lowercase().as_str() {
            "deployment" | "deployments" | "deploy" => Kind::Deployment,
            "statefulset" | "statefulsets" | "sts" => Kind::StatefulSet,
            "kafkanodepool" | "kafkanodepools" | "knp" => Kind::KafkaNodePool,
            other => {
                return Err(format!(
                    "--pool-scale-kubernetes {text:?}: cannot scale a {other:?} (deployment, statefulset or kafkanodepool)"
                ))
            }
        };
        // A DNS-1123 subdomain, as Kubernetes requires of these names.
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !name.starts_with(['-', '.'])
            && !name.ends_with(['-', '.']);
        if !valid {
            return Err(format!(
                "--pool-scale-kubernetes {text:?}: {name:?} is not a Kubernetes object name"
            ));
        }
        Ok(Target {
            kind,
            name: name.to_owned(),
        })
    }

    /// The API path of the target's scale subresource in `namespace`.
    fn scale_path(&self, namespace: &str) -> String {
        let (group, resource) = match self.kind {
            Kind::Deployment => ("apis/apps/v1", "deployments"),
            Kind::StatefulSet => ("apis/apps/v1", "statefulsets"),
            // Strimzi serves v1 since 0.49, and only v1 from 1.0.
            Kind::KafkaNodePool => ("apis/kafka.strimzi.io/v1", "kafkanodepools"),
        };
        format!(
            "/{group}/namespaces/{namespace}/{resource}/{}/scale",
            self.name
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::KafkaNodePool => "kafkanodepool",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

/// How to reach the API server.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// `https://host:port` (or `http://` for `kubectl proxy` on loopback); from
    /// `KUBERNETES_SERVICE_HOST` and `_PORT` when not given.
    pub url: Option<String>,
    /// The bearer token's file; the service account's when not given. None there either: no
    /// token (`kubectl proxy` adds its own).
    pub token_file: Option<PathBuf>,
    /// The CA that signed the API server's certificate; the service account's when not given.
    pub ca_file: Option<PathBuf>,
    /// The namespace; the service account's when not given.
    pub namespace: Option<String>,
}

/// The scale subresource of one object, through the API server.
pub struct KubernetesScaler {
    target: Target,
    namespace: String,
    host: String,
    port: u16,
    /// None: plain HTTP.
    tls: Option<Tls>,
    token_file: Option<PathBuf>,
}

impl KubernetesScaler {
    pub fn new(target: Target, config: ApiConfig) -> Result<KubernetesScaler, String> {
        let sa = Path::new(SERVICE_ACCOUNT);
        let url = match config.url {
            Some(url) => url,
            None => {
                let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
                    "--pool-scale-kubernetes: not in a Kubernetes pod (no KUBERNETES_SERVICE_HOST); give --pool-scale-kubernetes-api".to_owned()
                })?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "--pool-scale-kubernetes-api {url:?}: expected https://HOST:PORT"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) => (h, p),
                Err(_) => (rest, if https { 443 } else { 80 }),
            },
            _ => (rest, if https { 443 } else { 80 }),
        };
        let host = host.trim_matches(['[', ']']).to_owned();
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "--pool-scale-kubernetes-api {url:?}: expected a scheme, host and port only"
            ));
        }
        let tls = if https {
            let ca = config.ca_file.unwrap_or_else(|| sa.join("ca.crt"));
            Some(Tls::new(Roots::CaFile(&ca), &host)?)
        } else {
            None
        };
        let namespace = match config.namespace {
            Some(ns) => ns,
            None => std::fs::read_to_string(sa.join("namespace"))
                .map(|ns| ns.trim().to_owned())
                .map_err(|e| {
                    format!(
                        "--pool-scale-namespace not given and the service account's namespace is unreadable: {e}"
                    )
                })?,
        };
        let token_file = config.token_file.or_else(|| {
            let f = sa.join("token");
            f.exists().then_some(f)
        });
        Ok(KubernetesScaler {
            target,
            namespace,
            host,
            port,
            tls,
            token_file,
        })
    }

    /// The replicas the object asks for now (`spec.replicas`).
    pub async fn replicas(&self) -> Result<u32, String> {
        let path = self.target.scale_path(&self.namespace);
        let body = self.call(Method::GET, &path, None).await?;
        read_replicas(&body).ok_or_else(|| format!("GET {path}: no spec.replicas in the answer"))
    }

    /// Asks for `n` replicas.
    pub async fn scale(&self, n: u32) -> Result<(), String> {
        let path = self.target.scale_path(&self.namespace);
        let patch = json!({"spec": {"replicas": n}}).to_string();
        let body = self.call(Method::PATCH, &path, Some(patch)).await?;
        match read_replicas(&body) {
            Some(r) if r == n => {
                tracing::info!(target = %self.target, replicas = n, "pool scaled through the Kubernetes API");
                Ok(())
            }
            other => Err(format!(
                "PATCH {path}: asked for {n} replicas, the answer says {other:?}"
            )),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Bytes, String> {
        let what = format!("{method} {path}");
        http_client::within(REQUEST_TIMEOUT, self.call_inner(method, path, body))
            .await
            .map_err(|e| format!("{what}: {e}"))
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Bytes, String> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, format!("{}:{}", self.host, self.port))
            .header(ACCEPT, "application/json");
        if let Some(file) = &self.token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|e| format!("reading the token {}: {e}", file.display()))?;
            req = req.header(AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/merge-patch+json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let answer = http_client::send(&self.host, self.port, self.tls.as_ref(), req).await?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        // The API server explains refusals in a Status object's message.
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        let hint = match status {
            StatusCode::UNAUTHORIZED => " (the service account token was refused)",
            StatusCode::FORBIDDEN => {
                " (the service account needs get and patch on this scale subresource: see deploy/kubernetes/rbac.yaml)"
            }
            StatusCode::NOT_FOUND => " (no such object in this namespace)",
            _ => "",
        };
        Err(format!("{status}: {message}{hint}"))
    }
}

fn read_replicas(body: &[u8]) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    u32::try_from(v.get("spec")?.get("replicas")?.as_u64()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_scale_subresource() {
        let t = Target::parse("statefulset/tansu").unwrap();
        assert_eq!(
            t.scale_path("tollgate"),
            "/apis/apps/v1/namespaces/tollgate/statefulsets/tansu/scale"
        );
        assert_eq!(
            Target::parse("deployment/gw").unwrap().scale_path("a"),
            "/apis/apps/v1/namespaces/a/deployments/gw/scale"
        );
        assert_eq!(
            Target::parse("kafkanodepool/brokers")
                .unwrap()
                .scale_path("kafka"),
            "/apis/kafka.strimzi.io/v1/namespaces/kafka/kafkanodepools/brokers/scale"
        );
        for (bad, says) in [
            ("tansu", "KIND/NAME"),
            ("pod/tansu", "cannot scale"),
            ("statefulset/Tansu", "not a Kubernetes object name"),
            ("statefulset/", "not a Kubernetes object name"),
            ("statefulset/a/b", "not a Kubernetes object name"),
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_api_address_is_checked() {
        let target = Target::parse("statefulset/tansu").unwrap();
        let config = |url: &str| ApiConfig {
            url: Some(url.to_owned()),
            namespace: Some("ns".into()),
            ..ApiConfig::default()
        };
        let k = KubernetesScaler::new(target.clone(), config("http://127.0.0.1:8001")).unwrap();
        assert_eq!((k.host.as_str(), k.port), ("127.0.0.1", 8001));
        assert!(KubernetesScaler::new(target.clone(), config("ftp://x"))
            .err()
            .unwrap()
            .contains("expected https://"));
        let e = KubernetesScaler::new(
            target,
            ApiConfig {
                ca_file: Some("/nonexistent/ca.crt".into()),
                ..config("https://10.96.0.1:443")
            },
        )
        .err()
        .unwrap();
        assert!(e.contains("/nonexistent/ca.crt"), "{e}");
    }
}
