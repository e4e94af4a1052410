//! The admin API: HTTP/1 and JSON, for operators and provisioning scripts.
//!
//! Every `/v1` request must carry `Authorization: Bearer <admin token>`; errors are
//! `{"error": {"code": "...", "message": "..."}}`; times are RFC 3339 in UTC.
//!
//! | method | path | answer |
//! |---|---|---|
//! | `GET` | `/healthz` | 200 `{"status": "ok"}`, no token needed |
//! | `POST` | `/v1/tenants` | 201 tenant; 409 if the id is taken |
//! | `GET` | `/v1/tenants` | 200 `{"tenants": [...]}` |
//! | `GET` | `/v1/tenants/{id}` | 200 tenant |
//! | `POST` | `/v1/clusters` | 201 cluster; 404 unknown tenant; 409 name taken in the tenant |
//! | `GET` | `/v1/clusters[?tenant=]` | 200 `{"clusters": [...]}` |
//! | `GET` | `/v1/clusters/{id}` | 200 cluster |
//! | `PATCH` | `/v1/clusters/{id}` | 200 cluster, with the new `max_message_bytes` |
//! | `DELETE` | `/v1/clusters/{id}` | 204; 502 `pool_unavailable` if the pool kept its topics |
//! | `POST` | `/v1/tokens` | 201 `{"token", "jti", "expires_at"}` |
//! | `DELETE` | `/v1/tokens/{jti}` | 204; its connections close within seconds; 404 unknown id |
//! | `POST` | `/v1/clusters/{id}/scram-users` | 201 user (no keys); 409 the name is taken |
//! | `GET` | `/v1/clusters/{id}/scram-users` | 200 `{"scram_users": [...]}` |
//! | `DELETE` | `/v1/clusters/{id}/scram-users/{username}` | 204; its connections close within seconds |
//! | `POST` | `/v1/clusters/{id}/access-keys` | 201 key with `secret_access_key` (shown once) |
//! | `GET` | `/v1/clusters/{id}/access-keys` | 200 `{"access_keys": [...]}`, no secrets |
//! | `DELETE` | `/v1/clusters/{id}/access-keys/{key id}` | 204; its connections close within seconds |
//! | `POST` | `/v1/clusters/{id}/certificate-principals` | 201; 409 bound to a cluster already |
//! | `GET` | `/v1/clusters/{id}/certificate-principals` | 200 `{"certificate_principals": [...]}` |
//! | `DELETE` | `/v1/clusters/{id}/certificate-principals/{principal}` | 204 (percent-encoded principal) |
//! | `GET` | `/v1/usage?cluster=&from=&to=` | 200 `{"cluster", "hours": [...], "storage_estimated"}` |
//! | `GET` | `/v1/usage/principals?cluster=&from=&to=` | 200 `{"cluster", "principals": [...]}` |
//! | `GET` | `/v1/billing/report?tenant=&from=&to=[&format=csv]` | 200 the tenant's report, JSON or CSV |
//! | `GET` | `/v1/pool` | 200 `{"brokers", "desired_brokers", "policy", "utilization"}` |
//! | `GET` | `/v1/pool/events?from=&to=` | 200 `{"events": [...]}`; 404 without an autoscaler |
//! | `GET` | `/v1/pool/history?from=&to=[&format=csv]` | 200 `{"samples": [...]}` or CSV, the trace format |
//! | `PUT` | `/v1/pool/policy` | 200 the policy now in force; 400 saying what to change |
//! | `GET` | `/metrics` | 200 every series, Prometheus text (also on `--metrics-listen`, without a token) |
//! | `GET` | `/v1/clusters/{id}/audit-events[?since=<event id or time>]` | 200 `{"events": [...]}`, the cluster's last audit events on this instance, for the same credential as its metrics |
//! | `GET` | `/v1/clusters/{id}/metrics` | 200 the cluster's series, for a Kafka bearer credential of the cluster allowed `kafka-cluster:DescribeCluster` instead of the admin token; 401 without one, 403 otherwise |
//!
//! Anything else is a 404 (unknown path) or 405 (known path, other method). Bodies are limited
//! to 1 MiB (413) and must be JSON without unknown fields (400).
//!
//! The store is the source of truth; the [`Registry`] the data path reads is updated only after
//! the store committed, under one lock, so the two never disagree about which clusters exist.

mod access_keys;
pub mod billing;
mod certificate_principals;
mod clusters;
mod http;
mod metrics;
pub mod pool;
mod scram_users;
pub mod store;
mod tenants;
mod tokens;
mod usage;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::identity::token::Tokens;
use crate::pool_admin::{BoxFuture, PoolAdmin};
use crate::tenancy::Registry;

use self::http::{authorized, json_response, ApiError, ApiResult, Body};
pub use self::store::{ClusterRecord, Store, StoreError};

/// More concurrent admin connections than any operator needs; the bound keeps a misbehaving
/// script from exhausting the gateway's file descriptors, which the Kafka listener shares.
const MAX_CONNECTIONS: usize = 256;

/// A client that opens a connection and sends nothing is dropped after this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept errors other than a peer giving up are resource exhaustion (file descriptors,
/// memory); we back off and retry, and give up after this many in a row (about half a minute).
const MAX_ACCEPT_FAILURES: u32 = 40;

/// `quota_use` of a cluster's JSON: what it uses of its quotas on this instance.
#[derive(Debug, serde::Serialize)]
pub struct QuotaUse {
    #[serde(flatten)]
    rates: crate::quotas::meter::Usage,
    /// Authenticated connections open now on this instance, and on the other instances
    /// sharing Redis as this one last heard (`max_connections` holds to their sum).
    connections: u64,
    connections_elsewhere: u64,
    /// How often each count quota refused something since the gateway started.
    refused: crate::quotas::limits::Refused,
    /// The bytes the cluster stores on the pool, which `storage_limit_bytes` holds to, and
    /// whether they were measured from the pool's log sizes or estimated.
    stored_bytes: u64,
    stored_bytes_source: crate::metering::StorageSource,
}

/// What the admin API needs to know about its deployment.
#[derive(Clone)]
pub struct AdminConfig {
    /// The bearer token every `/v1` request must present.
    pub admin_token: String,
    /// The region named in cluster ARNs.
    pub region: String,
    /// The gateway's Kafka bootstrap address, shown to users in cluster JSON.
    pub bootstrap: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("admin_token", &"<redacted>")
            .field("region", &self.region)
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// The admin API's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    config: AdminConfig,
    store: Store,
    registry: Registry,
    tokens: Arc<Tokens>,
    pool: Arc<dyn PoolAdmin>,
    /// Where metered usage is read from; set once at startup.
    usage: std::sync::OnceLock<Arc<dyn tollgate_meter::store::UsageStore>>,
    /// The ledger and rate card behind the billing report; set once at startup.
    billing: std::sync::OnceLock<billing::Billing>,
    /// The pool and its autoscaler, for the `/v1/pool` endpoints; set once at startup.
    pool_view: std::sync::OnceLock<pool::PoolView>,
    /// The data path (its quota state and stored bytes), which cluster JSON shows; set once
    /// the Kafka listener runs.
    quotas: std::sync::OnceLock<crate::state::Gateway>,
    /// Held from a store write until the registry reflects it, so that two concurrent changes
    /// to one cluster (a PATCH racing a DELETE) reach the registry in the order they committed.
    writes: Mutex<()>,
}

impl Inner {
    fn write_lock(&self) -> MutexGuard<'_, ()> {
        // The guarded value is `()`: a panic elsewhere leaves nothing inconsistent behind it.
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes a live cluster's credentials under the write lock, then hands the record to the
    /// data path: what every credential endpoint does. `change` sees the registry as it is
    /// under the lock, for checks across clusters.
    fn change_credentials(
        &self,
        cluster: uuid::Uuid,
        change: impl FnOnce(
            &Registry,
            &mut crate::identity::credentials::Credentials,
        ) -> Result<(), StoreError>,
    ) -> Result<(), ApiError> {
        let _writes = self.write_lock();
        let record = self
            .store
            .change_cluster(cluster, |c| change(&self.registry, &mut c.credentials))?;
        self.registry.upsert(record);
        Ok(())
    }
}

impl Admin {
    /// Builds the admin API over an open store. The caller fills `registry` from the store
    /// first (with [`Store::load_clusters`]), before the Kafka listener starts, and should
    /// call [`Admin::retry_pending_cleanups`] once the pool is reachable.
    ///
    /// An empty `admin_token` locks every `/v1` endpoint rather than opening them.
    pub fn new(
        config: AdminConfig,
        store: Store,
        registry: Registry,
        tokens: Arc<Tokens>,
        pool: Arc<dyn PoolAdmin>,
    ) -> Admin {
        if config.admin_token.is_empty() {
            tracing::warn!("the admin token is empty; every /v1 request will be refused");
        }
        Admin {
            inner: Arc::new(Inner {
                config,
                store,
                registry,
                tokens,
                pool,
                usage: std::sync::OnceLock::new(),
                billing: std::sync::OnceLock::new(),
                pool_view: std::sync::OnceLock::new(),
                quotas: std::sync::OnceLock::new(),
                writes: Mutex::new(()),
            }),
        }
    }

    /// Attaches the ledger and rates the billing report reads.
    pub fn with_billing(self, billing: billing::Billing) -> Admin {
        let _ = self.inner.billing.set(billing);
        self
    }

    /// Attaches the pool (and its autoscaler, if one runs) the pool endpoints read.
    pub fn with_pool(self, view: pool::PoolView) -> Admin {
        let _ = self.inner.pool_view.set(view);
        self
    }

    /// Attaches the data path whose quota state cluster JSON shows as `quota_use`.
    pub fn with_quotas(self, gateway: crate::state::Gateway) -> Admin {
        let _ = self.inner.quotas.set(gateway);
        self
    }

    /// A cluster's use of its quotas on this instance (rates, throttles, open connections,
    /// refusals), once the data path is attached.
    fn quota_use(&self, cluster: &uuid::Uuid) -> Option<QuotaUse> {
        self.inner.quotas.get().map(|gw| QuotaUse {
            rates: gw.quota_meters().usage(cluster),
            connections: gw.quota_counts().connections(cluster),
            connections_elsewhere: gw.quota_counts().connections_elsewhere(cluster),
            refused: gw.quota_counts().refused(cluster),
            stored_bytes: gw.metering().stored_bytes(cluster),
            stored_bytes_source: gw.metering().storage_source(),
        })
    }

    /// Where the data path's stored bytes come from, once it is attached.
    fn storage_source(&self) -> Option<crate::metering::StorageSource> {
        self.inner
            .quotas
            .get()
            .map(|gw| gw.metering().storage_source())
    }

    /// Attaches the usage store the usage endpoints read.
    pub fn with_usage(self, usage: Arc<dyn tollgate_meter::store::UsageStore>) -> Admin {
        let _ = self.inner.usage.set(usage);
        self
    }

    /// Retries the pool cleanup of clusters whose DELETE could not remove their topics (for
    /// instance because the gateway stopped in between). Returns how many are still pending.
    pub async fn retry_pending_cleanups(&self) -> Result<usize, StoreError> {
        // A read transaction, no fsync, once at startup: cheap enough to run inline.
        let pending = self.inner.store.cluster_records()?;
        let mut failed = 0;
        for record in pending.iter().filter(|r| r.owes_cleanup()) {
            if clusters::clean_up(self, &record.cluster).await.is_err() {
                failed += 1;
            }
        }
        Ok(failed)
    }

    /// Runs blocking store work off the async worker threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let admin = self.clone();
        tokio::task::spawn_blocking(move || work(&admin.inner))
            .await
            .map_err(ApiError::internal)?
    }

    async fn handle(
        self,
        request: Request<Incoming>,
        peer: Option<std::net::IpAddr>,
    ) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let response = self
            .route(request, peer)
            .await
            .unwrap_or_else(ApiError::into_response);
        if let Some(gw) = self.inner.quotas.get() {
            crate::telemetry::audit::admin::record(
                gw.audit(),
                &method,
                &path,
                peer,
                &response,
                |id| gw.registry().get(id).is_some(),
            );
        }
        tracing::debug!(%method, %path, status = response.status().as_u16(), "admin request");
        response
    }

    async fn route(&self, request: Request<Incoming>, peer: Option<std::net::IpAddr>) -> ApiResult {
        let path = request.uri().path().to_owned();
        // A tenant's own view, with a Kafka credential of its cluster instead of the admin
        // token: routed before the admin token is asked for.
        match path
            .strip_prefix("/v1/")
            .map(|rest| rest.split('/').collect::<Vec<_>>())
            .as_deref()
        {
            Some(["clusters", id, "metrics"]) => {
                let answer = match *request.method() {
                    Method::GET => metrics::tenant(self, id, &request, peer),
                    _ => Err(ApiError::method_not_allowed("GET")),
                };
                return Ok(metrics::closing(
                    answer.unwrap_or_else(ApiError::into_response),
                ));
            }
            Some(["clusters", id, "audit-events"]) => {
                let answer = match *request.method() {
                    Method::GET => metrics::tenant_audit(self, id, &request, peer),
                    _ => Err(ApiError::method_not_allowed("GET")),
                };
                return Ok(metrics::closing(
                    answer.unwrap_or_else(ApiError::into_response),
                ));
            }
            _ => {}
        }
        if path == "/healthz" {
            return match *request.method() {
                Method::GET => Ok(json_response(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ok"}),
                )),
                _ => Err(ApiError::method_not_allowed("GET")),
            };
        }
        if path == "/metrics" {
            if !authorized(&request, &self.inner.config.admin_token) {
                return Err(ApiError::unauthorized());
            }
            return match *request.method() {
                Method::GET => metrics::operator(self),
                _ => Err(ApiError::method_not_allowed("GET")),
            };
        }
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Err(ApiError::not_found(format!("no such endpoint: {path}")));
        };
        // Before routing, so that callers without the token cannot map the API's surface.
        if !authorized(&request, &self.inner.config.admin_token) {
            return Err(ApiError::unauthorized());
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let method = request.method().clone();
        match segments.as_slice() {
            ["tenants"] => match method {
                Method::GET => tenants::list(self).await,
                Method::POST => tenants::create(self, request).await,
                _ => Err(ApiError::method_not_allowed("GET, POST")),
            },
            ["tenants", id] => match method {
                Method::GET => tenants::get(self, id).await,
                _ => Err(ApiError::method_not_allowed("GET")),
            },
            ["clusters"] => match method {
                Method::GET => clusters::list(self, request.uri().query()).await,
                Method::POST => clusters::create(self, request).await,
                _ => Err(ApiError::method_not_allowed("GET, POST")),
            },
            ["clusters", id] => match method {
                Method::GET => clusters::get(self, id).await,
                Method::PATCH => clusters::patch(self, id, request).await,
                Method::DELETE => clusters::delete(self, id).await,
                _ => Err(ApiError::method_not_allowed("GET, PATCH, DELETE")),
            },
            ["tokens"] => match method {
                Method::POST => tokens::issue(self, request).await,
                _ => Err(ApiError::method_not_allowed("POST")),
            },
            ["tokens", jti] => match method {
                Method::DELETE => tokens::revoke(self, jti).await,
                _ => Err(ApiError::method_not_allowed("DELETE")),
            },
            ["clusters", id, "scram-users"] => {
                let id = clusters::parse_id(id)?;
                match method {
                    Method::GET => scram_users::list(self, id).await,
                    Method::POST => scram_users::create(self, id, request).await,
                    _ => Err(ApiError::method_not_allowed("GET, POST")),
                }
            }
            ["clusters", id, "access-keys"] => {
                let id = clusters::parse_id(id)?;
                match method {
                    Method::GET => access_keys::list(self, id).await,
                    Method::POST => access_keys::create(self, id, request).await,
                    _ => Err(ApiError::method_not_allowed("GET, POST")),
                }
            }
            ["clusters", id, "access-keys", key] => {
                let id = clusters::parse_id(id)?;
                match method {
                    Method::DELETE => access_keys::delete(self, id, key).await,
                    _ => Err(ApiError::method_not_allowed("DELETE")),
                }
            }
            ["clusters", id, "certificate-principals"] => {
                let id = clusters::parse_id(id)?;
                match method {
                    Method::GET => certificate_principals::list(self, id).await,
                    Method::POST => certificate_principals::create(self, id, request).await,
                    _ => Err(ApiError::method_not_allowed("GET, POST")),
                }
            }
            ["clusters", id, "certificate-principals", principal] => {
                let id = clusters::parse_id(id)?;
                match method {
                    Method::DELETE => certificate_principals::delete(self, id, principal).await,
                    _ => Err(ApiError::method_not_allowed("DELETE")),
                }
            }
            ["clusters", id, "scram-users", username] => {
                let id = clusters::parse_id(id)?;
                match method {
                    Method::DELETE => scram_users::delete(self, id, username).await,
                    _ => Err(ApiError::method_not_allowed("DELETE")),
                }
            }
            ["usage"] => match method {
                Method::GET => usage::hourly(self, request.uri().query()).await,
                _ => Err(ApiError::method_not_allowed("GET")),
            },
            ["billing", "report"] => match method {
                Method::GET => billing::report(self, request.uri().query()).await,
                _ => Err(ApiError::method_not_allowed("GET")),
            },
            ["pool"] => match method {
                Method::GET => pool::get(self).await,
                _ => Err(ApiError::method_not_allowed("GET")),
            },
            ["pool", "events"] => match method {
                Method::GET => pool::events(self, request.uri().query()).await,
                _ => Err(ApiError::method_not_allowed("GET")),
            },
            ["pool", "history"] => match method {
                Method::GET => pool::history(self, request.uri().query()).await,
                _ => Err(ApiError::method_not_allowed("GET")),
            },
            ["pool", "policy"] => match method {
                Method::PUT => pool::put_policy(self, request).await,
                _ => Err(ApiError::method_not_allowed("PUT")),
            },
            ["usage", "principals"] => match method {
                Method::GET => usage::principals(self, request.uri().query()).await,
                _ => Err(ApiError::method_not_allowed("GET")),
            },
            _ => Err(ApiError::not_found(format!("no such endpoint: {path}"))),
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` completes, then stops accepting, lets
/// every request already received finish, and returns once all connections are closed.
///
/// Returns an error only when accepting keeps failing for about half a minute (the process is
/// out of file descriptors or memory); failures of single connections are logged and survived.
pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handler = move |request, peer| {
        let admin = admin.clone();
        Box::pin(async move { admin.handle(request, peer).await }) as BoxFuture<'static, _>
    };
    serve_with(listener, handler, shutdown).await
}

/// Serves `/metrics` alone on `listener`, without authentication (`--metrics-listen`: a port
/// for the operator's Prometheus, reachable only from where the operator lets it be).
pub async fn serve_metrics(
    listener: TcpListener,
    gateway: crate::state::Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handler = move |request: Request<Incoming>, _peer| {
        let response = match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                metrics::exposition(&gateway, crate::telemetry::metrics::Scope::All)
            }
            (_, "/metrics") => ApiError::method_not_allowed("GET").into_response(),
            (_, path) => ApiError::not_found(format!("no such endpoint: {path}")).into_response(),
        };
        Box::pin(std::future::ready(response)) as BoxFuture<'static, _>
    };
    serve_with(listener, handler, shutdown).await
}

/// Answers a request; told the client's address.
trait Handler:
    Fn(Request<Incoming>, Option<std::net::IpAddr>) -> BoxFuture<'static, Response<Body>>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<F> Handler for F where
    F: Fn(Request<Incoming>, Option<std::net::IpAddr>) -> BoxFuture<'static, Response<Body>>
        + Clone
        + Send
        + Sync
        + 'static
{
}

async fn serve_with(
    listener: TcpListener,
    handler: impl Handler,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut failures = 0u32;
    let mut result = Ok(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        // Reap finished connections so the set does not grow with every one ever served.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((stream, slot)) => {
                failures = 0;
                connections.spawn(serve_connection(
                    stream,
                    handler.clone(),
                    stopped.clone(),
                    slot,
                ));
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(error = %e, "admin API: a connection failed before it was accepted");
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_ACCEPT_FAILURES {
                    tracing::error!(error = %e, "admin API: accept keeps failing; stopping");
                    result = Err(e);
                    break;
                }
                let pause = Duration::from_millis(50 << failures.min(4));
                tracing::warn!(error = %e, ?pause, "admin API: accept failed; backing off");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    // Closing the socket now makes new clients fail fast instead of queueing in the backlog.
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    result
}

async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, OwnedSemaphorePermit)> {
    // Waiting for a slot before accepting leaves excess clients in the kernel's backlog
    // rather than holding sockets we will not serve.
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| std::io::Error::other("connection semaphore closed"))?;
    let (stream, _) = listener.accept().await?;
    Ok((stream, slot))
}

fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

async fn serve_connection(
    stream: TcpStream,
    handler: impl Handler,
    mut stopped: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let service = service_fn(move |request| {
        let answer = handler(request, peer);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "admin API connection ended with an error");
            }
        }
        // The guard `wait_for` returns must not live across the await below (it is not Send);
        // an error means the sender is gone, which only happens once `serve` returns: stop too.
        () = async { drop(stopped.wait_for(|stop| *stop).await) } => {
            // Finishes the request in flight, if any, then closes; idle connections close now.
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin API connection ended with an error");
            }
        }
    }
}
