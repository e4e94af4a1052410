//! Assembling a running gateway: `tollgate dev` (with its own tansu pool) and `tollgate serve`
//! (against an existing pool). Both share [`start`], which wires the admin store, the
//! registry, the token keys, the Kafka listener and the admin API, and tears them down in
//! order on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::admin::{self, Admin, AdminConfig, Store};
use crate::devpool::DevPool;
use crate::identity::token::Tokens;
use crate::listener::Listener;
use crate::metering::{Metering, Source, DEFAULT_RETENTION_SECONDS};
use crate::pool::autoscale::actuator::command::CommandScaler;
use crate::pool::autoscale::actuator::kubernetes::{self, KubernetesScaler};
use crate::pool::autoscale::actuator::{Discovery, ExternalPool, Scaler};
use crate::pool::{Pool, PoolKind, Timeouts};
use crate::pool_admin::RouterPoolAdmin;
use crate::state::{presented_nodes, Gateway, GatewayConfig, Node};
use crate::tenancy::Registry;

/// How often the pool's brokers are checked: a broker that dies is out of the routing within
/// about this long even when no request touches it, and one that starts is taken in.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Settings both commands share.
#[derive(Debug, Clone)]
pub struct Common {
    pub kafka_listen: SocketAddr,
    /// The gateway nodes (`host:port`) clients are told to connect to; the listen address
    /// when empty.
    pub advertise: Vec<String>,
    /// Nodes per advertised address; one per pool broker given when not set.
    pub lanes: Option<usize>,
    /// TLS on the Kafka listener (`--tls-cert`, `--tls-key`, `--tls-client-ca`, ...).
    pub tls: Option<crate::listener::tls::TlsFiles>,
    /// How client certificates' subjects become principals (`--tls-principal-rules`).
    pub principal_rules: crate::identity::certificate::PrincipalRules,
    /// Whose PROXY protocol headers the Kafka listener believes.
    pub proxy: crate::listener::proxy_protocol::ProxyProtocol,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub admin_token: Option<String>,
    pub region: String,
    pub issuer: String,
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// Usage goes to Redis when set (several gateways), else to `usage.redb` in the data dir.
    pub redis_url: Option<String>,
    /// How often counted usage is flushed to the store.
    pub flush_interval: std::time::Duration,
    /// Prices; the documented defaults unless a rate card file is given.
    pub rates: tollgate_billing::RateCard,
    /// How long after its end an hour waits for late usage before it is billed.
    pub billing_grace: std::time::Duration,
    /// The HS256 token signing key, shared by every instance; generated in the data dir when
    /// not given.
    pub token_signing_key_file: Option<PathBuf>,
    /// False only in benchmarks measuring metering's cost (`--no-metering`).
    pub metering: bool,
    /// What one client, source or request may cost.
    pub limits: crate::limits::Limits,
    /// Turns the autoscaler on with this policy (`--autoscale-policy FILE`).
    pub autoscale_policy: Option<crate::pool::autoscale::Policy>,
    /// Metrics, traces and audit events.
    pub telemetry: crate::telemetry::TelemetryConfig,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a secret kept in the data dir, or makes and keeps a new one (mode 0600).
fn secret_file(path: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let secret = hex(&rand::random::<[u8; 32]>());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    Ok(secret)
}

fn split_host_port(addr: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{addr:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("{addr:?} has no valid port"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), i32::from(port)))
}

/// Binds the Kafka listener of every lane: lane `l` on `listen`'s port + `l` (each on a
/// system-given port when `listen`'s port is 0). Nodes need addresses of their own: older
/// librdkafka (Debian's 2.0.2, which kcat uses, among them; librdkafka issue #4212) gives a
/// node it has not met the connection of another node with the same host:port, and never
/// fetches from either.
async fn bind_lanes(listen: SocketAddr, lanes: usize) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(lanes);
    for l in 0..lanes {
        let port = match listen.port() {
            0 => 0,
            p => u16::try_from(usize::from(p) + l).ok().with_context(|| {
                format!("--kafka-listen port {p} plus {lanes} lanes goes past 65535")
            })?,
        };
        let addr = SocketAddr::new(listen.ip(), port);
        listeners.push(TcpListener::bind(addr).await.with_context(|| {
            format!(
                "binding the Kafka listener of lane {l} on {addr} (lane l listens on \
                 --kafka-listen's port + l; --lanes sets how many)"
            )
        })?);
    }
    Ok(listeners)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs `tollgate dev`: a tansu pool of `brokers` in the data dir, then the gateway on it.
pub async fn dev(common: Common, tansu: String, brokers: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.data_dir)
        .with_context(|| format!("creating {}", common.data_dir.display()))?;
    let pool = Pool::new(Timeouts::default());
    let devpool = Arc::new(DevPool::start(&tansu, &common.data_dir, brokers, &pool).await?);
    tracing::info!(brokers = ?devpool.addrs().await, "local pool is up");
    let actuator: Arc<dyn crate::pool::autoscale::Actuator> = devpool.clone();
    let result = start(common, pool, PoolKind::Stateless, Some(actuator)).await;
    devpool.shutdown().await;
    result
}

/// What resizes a `tollgate serve` pool (`--pool-scale-*`, `--pool-discover`).
pub struct Scaling {
    pub scaler: ScalerConfig,
    /// Default: the pool's metadata for a leader-based pool, the bootstrap list (in order) for
    /// a stateless one.
    pub discovery: Option<Discovery>,
    pub ready_timeout: std::time::Duration,
}

pub enum ScalerConfig {
    Command(CommandScaler),
    Kubernetes(kubernetes::Target, kubernetes::ApiConfig),
}

/// Runs `tollgate serve`: the gateway on a pool someone else runs.
pub async fn serve(
    common: Common,
    bootstrap: Vec<String>,
    kind: String,
    scaling: Option<Scaling>,
    security: crate::pool::security::PoolSecurity,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.data_dir)
        .with_context(|| format!("creating {}", common.data_dir.display()))?;
    let pool = Pool::secured(Timeouts::default(), Arc::new(security));
    for addr in &bootstrap {
        if let Err(e) = pool.add_broker(addr).await {
            tracing::warn!(broker = %addr, error = %e, "pool bootstrap broker unreachable");
            // Known from now on, and taken in when it answers (see `Pool::run_prober`).
            pool.add_configured(addr);
        }
    }
    let (scaler, discovery, ready_timeout) = match scaling {
        Some(s) => {
            let scaler = match s.scaler {
                ScalerConfig::Command(c) => Scaler::Command(c),
                ScalerConfig::Kubernetes(target, api) => Scaler::Kubernetes(
                    KubernetesScaler::new(target, api).map_err(anyhow::Error::msg)?,
                ),
            };
            (Some(scaler), s.discovery, s.ready_timeout)
        }
        None => (None, None, std::time::Duration::ZERO),
    };
    // An explicit discovery finds the brokers before the pool's kind can be told.
    let (mut scaler, mut external) = match (scaler, discovery) {
        (Some(scaler), Some(discovery)) => {
            let configured = bootstrap.clone();
            let external =
                ExternalPool::start(pool.clone(), scaler, discovery, configured, ready_timeout)
                    .await
                    .map_err(|e| anyhow::anyhow!("starting the pool actuator: {e}"))?;
            (None, Some(external))
        }
        (scaler, _) => (scaler, None),
    };
    let reached: Vec<String> = pool.brokers().iter().map(|b| b.addr().to_owned()).collect();
    anyhow::ensure!(
        !reached.is_empty(),
        "no pool broker answered: {bootstrap:?}"
    );
    let kind = match kind.as_str() {
        "auto" => detect_kind(&pool).await?,
        other => other.parse::<PoolKind>().map_err(anyhow::Error::msg)?,
    };
    tracing::info!(?kind, brokers = ?reached, "pool");
    if let Some(scaler) = scaler.take() {
        let discovery = match kind {
            PoolKind::Leader => Discovery::Metadata,
            PoolKind::Stateless => Discovery::List(bootstrap.clone()),
        };
        let configured = match kind {
            PoolKind::Leader => bootstrap.clone(),
            PoolKind::Stateless => Vec::new(),
        };
        external = Some(
            ExternalPool::start(pool.clone(), scaler, discovery, configured, ready_timeout)
                .await
                .map_err(|e| anyhow::anyhow!("starting the pool actuator: {e}"))?,
        );
    }
    let external = external.map(Arc::new);
    let discovering = external
        .clone()
        .map(|e| tokio::spawn(e.run(std::future::pending())));
    let actuator = external.map(|e| e as Arc<dyn crate::pool::autoscale::Actuator>);
    let result = start(common, pool, kind, actuator).await;
    if let Some(task) = discovering {
        task.abort();
    }
    result
}

/// Tells a stateless pool from a leader-based one by asking each reachable broker who the
/// pool's brokers are: Kafka brokers name each other under distinct node ids; tansu brokers
/// each name only themselves, all under the same id.
async fn detect_kind(pool: &Pool) -> anyhow::Result<PoolKind> {
    let mut seen: std::collections::HashMap<i32, String> = std::collections::HashMap::new();
    for broker in pool.brokers() {
        let (_, max) = pool
            .versions(kafka_protocol::messages::ApiKey::Metadata)
            .context("the pool does not support Metadata")?;
        let req =
            kafka_protocol::messages::MetadataRequest::default().with_topics(Some(Vec::new()));
        let resp = broker
            .call(max.min(12), &req)
            .await
            .with_context(|| format!("asking {} for the pool's brokers", broker.addr()))?;
        for b in resp.brokers {
            let addr = format!("{}:{}", b.host.as_str(), b.port);
            match seen.get(&b.node_id.0) {
                Some(known) if *known != addr => return Ok(PoolKind::Stateless),
                _ => {
                    seen.insert(b.node_id.0, addr);
                }
            }
        }
    }
    Ok(PoolKind::Leader)
}

/// Runs the gateway on `pool`; `actuator` resizes the pool when the autoscaler decides.
async fn start(
    common: Common,
    pool: Pool,
    pool_kind: PoolKind,
    actuator: Option<Arc<dyn crate::pool::autoscale::Actuator>>,
) -> anyhow::Result<()> {
    let admin_token = match common.admin_token.clone() {
        Some(t) if !t.is_empty() => t,
        _ => secret_file(&common.data_dir.join("admin-token"))?,
    };
    let signing_key = match &common.token_signing_key_file {
        Some(path) => {
            let key = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token signing key {}", path.display()))?;
            let key = key.trim().to_owned();
            anyhow::ensure!(
                key.len() >= 32,
                "the token signing key in {} is shorter than 32 characters",
                path.display()
            );
            key
        }
        None => secret_file(&common.data_dir.join("token-signing.key"))?,
    };
    let tokens = Arc::new(Tokens::hs256(common.issuer.clone(), signing_key.as_bytes()));

    let store = Store::open(&common.data_dir).context("opening the admin store")?;
    let usage: Arc<dyn tollgate_meter::store::UsageStore> = match &common.redis_url {
        Some(url) => Arc::new(
            tollgate_meter::redis_store::RedisStore::connect(
                url,
                std::time::Duration::from_secs(2),
            )
            .context("configuring the Redis usage store")?,
        ),
        None => Arc::new(
            tollgate_meter::embedded::EmbeddedStore::open(&common.data_dir)
                .context("opening the usage store")?,
        ),
    };
    let mut metering = Metering::new(usage.clone(), DEFAULT_RETENTION_SECONDS);
    if !common.metering {
        tracing::warn!("metering is off (--no-metering): bytes are not counted");
        metering = metering.disabled();
    }
    let metering = Arc::new(metering);
    let ledger_store: Arc<dyn tollgate_billing::LedgerStore> = match &common.redis_url {
        Some(url) => Arc::new(
            tollgate_billing::RedisLedger::connect(
                url,
                tollgate_billing::RedisLedger::DEFAULT_PREFIX,
            )
            .await
            .context("configuring the Redis ledger")?,
        ),
        None => Arc::new(
            tollgate_billing::RedbLedger::open(&common.data_dir).context("opening the ledger")?,
        ),
    };
    let ledger = Arc::new(tollgate_billing::Ledger::new(
        ledger_store,
        common.billing_grace,
    ));
    let closer = crate::closing::Closer {
        store: store.clone(),
        usage: usage.clone(),
        ledger: ledger.clone(),
        rates: common.rates.clone(),
    };
    let registry = Registry::default();
    let clusters = store
        .load_clusters(&registry)
        .context("loading clusters from the admin store")?;
    let store_for_sync = store.clone();
    let registry_for_sync = registry.clone();

    // By default one lane per pool broker given: a client then keeps as many requests in
    // flight as it would on the pool itself, each to one broker. More lanes than brokers add
    // fetch concurrency but cut produce requests smaller (see load-tests/README.md).
    let lanes = common
        .lanes
        .unwrap_or_else(|| pool.all_brokers().len().max(1));
    // The certificate is loaded before anything listens, so a bad pair stops the start with
    // a message naming the file.
    let tls = match &common.tls {
        Some(files) => Some(crate::listener::tls::Reloading::load(files.clone()).context(
            "TLS on the Kafka listener (--tls-cert, --tls-key, --tls-client-ca, --tls-client-crl)",
        )?),
        None => None,
    };
    let kafka = bind_lanes(common.kafka_listen, lanes).await?;
    let admin_listener = TcpListener::bind(common.admin_listen)
        .await
        .with_context(|| format!("binding the admin API on {}", common.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    // Checked before anything listens, so a bad URL or CA file stops the start.
    let otlp = match &common.telemetry.otlp {
        Some(config) => Some(crate::telemetry::otlp::Otlp::new(config.clone())?),
        None => None,
    };
    let (audit, audit_delivery) =
        crate::telemetry::audit::Audit::configured(common.telemetry.audit.clone())
            .context("audit delivery (--audit-log, --audit-topic, --audit-s3-*)")?;
    let metrics_listener = match common.telemetry.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-listen on {addr}"))?,
        ),
        None => None,
    };
    let (nodes, advertised) = if common.advertise.is_empty() {
        // This instance alone, as bound (ports asked as 0 are whatever the system gave).
        let mut nodes = Vec::with_capacity(lanes);
        for (l, listener) in kafka.iter().enumerate() {
            let addr = listener.local_addr()?;
            nodes.push(Node {
                id: l as i32 + 1,
                host: addr.ip().to_string(),
                port: i32::from(addr.port()),
            });
        }
        (nodes, kafka[0].local_addr()?.to_string())
    } else {
        let addresses = common
            .advertise
            .iter()
            .map(|addr| split_host_port(addr))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            addresses
                .iter()
                .all(|(_, port)| port + lanes as i32 - 1 <= 65535),
            "an advertised port plus {lanes} lanes goes past 65535"
        );
        (
            presented_nodes(&addresses, lanes),
            common.advertise.join(","),
        )
    };

    let gateway = Gateway::new(
        GatewayConfig {
            nodes,
            lanes,
            region: common.region.clone().into(),
            max_frame_bytes: common.max_frame_bytes,
            max_sasl_frame_bytes: 512 * 1024,
            max_in_flight: 64,
            limits: common.limits.clone(),
            pool_kind,
        },
        pool.clone(),
        registry.clone(),
        tokens.clone(),
        metering.clone(),
    )
    .with_telemetry(
        crate::telemetry::metrics::Metrics::new(
            common.telemetry.metrics,
            common.telemetry.topics_per_cluster,
        ),
        audit.clone(),
    );
    let gateway = match &otlp {
        Some(otlp) => gateway.with_tracer(otlp.tracer()),
        None => gateway,
    };
    let flusher = tollgate_meter::flusher::Flusher::new(
        uuid::Uuid::new_v4().to_string(),
        metering.counter_set().clone(),
        usage.clone(),
    );
    let source = Arc::new(Source {
        store: store.clone(),
        metering: metering.clone(),
    });
    let admin = Admin::new(
        AdminConfig {
            admin_token: admin_token.clone(),
            region: common.region.clone(),
            bootstrap: advertised.clone(),
        },
        store,
        registry,
        tokens,
        Arc::new(RouterPoolAdmin {
            gateway: gateway.clone(),
        }),
    )
    .with_usage(usage.clone())
    .with_billing(crate::admin::billing::Billing {
        ledger,
        rates: common.rates.clone(),
        grace: common.billing_grace,
    });
    let autoscaler = match common.autoscale_policy.clone() {
        Some(policy) => {
            let mut autoscaler =
                crate::pool::autoscale::Autoscaler::new(policy, gateway.signals().clone())
                    .with_audit(audit.clone());
            if let Some(actuator) = actuator {
                autoscaler = autoscaler.with_actuator(actuator);
            }
            if let Some(url) = &common.redis_url {
                // Instances share the pool: their loads are summed and one decides.
                let instance = format!(
                    "{}/{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "tollgate".into()),
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                let shared = crate::pool::autoscale::shared::Shared::new(url, instance)
                    .context("configuring the autoscaler's Redis")?;
                autoscaler = autoscaler.with_shared(shared);
            }
            Some(autoscaler)
        }
        None => None,
    };
    gateway
        .metrics()
        .register(Arc::new(crate::telemetry::metrics::pool::PoolCollector {
            pool: pool.clone(),
            autoscaler: autoscaler.clone(),
            last_flush: flusher.flushed_at(),
            flush_failures: flusher.failures(),
            started: tollgate_meter::flusher::unix_now(),
        }));
    let admin = admin
        .with_pool(crate::admin::pool::PoolView {
            pool: pool.clone(),
            autoscaler: autoscaler.clone(),
        })
        .with_quotas(gateway.clone());
    match admin.retry_pending_cleanups().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            clusters = n,
            "deleted clusters still have topics on the pool"
        ),
        Err(e) => tracing::warn!(error = %e, "could not check for pending cleanups"),
    }

    println!("Tollgate is running.");
    println!(
        "  Kafka bootstrap: {advertised} (nodes: {})",
        gateway
            .config()
            .nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.port))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("  Admin API:       http://{admin_addr}");
    if let Some(listener) = &metrics_listener {
        println!(
            "  Metrics:         http://{}/metrics",
            listener.local_addr()?
        );
    }
    // A token given from outside (a Kubernetes Secret, say) is not echoed into the logs that
    // collect stdout; one the data dir keeps is shown, as `dev`'s quickstart uses it.
    match common.admin_token.as_deref() {
        Some(t) if !t.is_empty() => println!("  Admin token:     (as given by --admin-token)"),
        _ => println!(
            "  Admin token:     {admin_token} (kept in {})",
            common.data_dir.join("admin-token").display()
        ),
    }
    println!("  Data dir:        {}", common.data_dir.display());
    println!("  Clusters loaded: {clusters}");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let closer_task = tokio::spawn(closer.run(stopped(stop_rx.clone())));
    let sync_task = match &common.redis_url {
        Some(url) => {
            let sync = crate::sync::ClusterSync::new(url, store_for_sync, registry_for_sync)
                .context("configuring cluster sync through Redis")?;
            Some(tokio::spawn(sync.run(stopped(stop_rx.clone()))))
        }
        None => None,
    };
    let quotas_task = match &common.redis_url {
        Some(url) => {
            let instance = uuid::Uuid::new_v4().simple().to_string();
            let shared = crate::quotas::shared::SharedQuotas::new(
                url,
                instance,
                gateway.quota_meters().clone(),
            )
            .context("configuring shared quotas through Redis")?
            .with_counts(gateway.quota_counts().clone());
            Some(tokio::spawn(shared.run(stopped(stop_rx.clone()))))
        }
        None => None,
    };
    let autoscaler_task = autoscaler.map(|a| {
        let pool = pool.clone();
        let brokers = move || u32::try_from(pool.brokers().len()).unwrap_or(u32::MAX);
        let metering = metering.clone();
        let partitions = move || metering.total_partitions();
        tokio::spawn(a.run(brokers, partitions, stopped(stop_rx.clone())))
    });
    let prober_task = tokio::spawn(pool.run_prober(PROBE_INTERVAL, stopped(stop_rx.clone())));
    let refresh_task = tokio::spawn(
        metering
            .clone()
            .run_refresh(gateway.clone(), stopped(stop_rx.clone())),
    );
    // The flusher stops after the listeners, so the last requests' bytes are in its last flush.
    let (flusher_stop, flusher_rx) = tokio::sync::watch::channel(false);
    let flusher_task = tokio::spawn(flusher.run(
        source,
        common.flush_interval,
        std::time::Duration::from_secs(10),
        stopped(flusher_rx),
    ));
    if let Some(certs) = &tls {
        tokio::spawn(certs.clone().watch(stopped(stop_rx.clone())));
    }
    // Stopped after the listeners (its own stop), so the last requests are in its last export.
    let (otlp_stop, otlp_rx) = tokio::sync::watch::channel(false);
    let otlp_task = otlp.map(|otlp| tokio::spawn(otlp.run(gateway.clone(), stopped(otlp_rx))));
    // Stopped after the listeners and the admin API, so their last events are delivered.
    let (audit_stop, audit_rx) = tokio::sync::watch::channel(false);
    let audit_task = audit_delivery.start(&gateway, stopped(audit_rx));
    let lag_task = tokio::spawn(crate::telemetry::lag::run(
        gateway.clone(),
        stopped(stop_rx.clone()),
    ));
    let metrics_task = metrics_listener.map(|listener| {
        tokio::spawn(admin::serve_metrics(
            listener,
            gateway.clone(),
            stopped(stop_rx.clone()),
        ))
    });
    let kafka_task = tokio::spawn(
        Listener {
            listeners: kafka,
            gateway,
            max_connections: common.max_connections,
            tls: tls.clone(),
            principal_rules: Arc::new(common.principal_rules.clone()),
            proxy: common.proxy.clone(),
        }
        .run(stopped(stop_rx.clone())),
    );
    let admin_task = tokio::spawn(admin::serve(admin_listener, admin, stopped(stop_rx)));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = kafka_task.await;
    let _ = refresh_task.await;
    let _ = prober_task.await;
    if let Some(t) = autoscaler_task {
        let _ = t.await;
    }
    let _ = closer_task.await;
    if let Some(t) = sync_task {
        let _ = t.await;
    }
    if let Some(t) = quotas_task {
        let _ = t.await;
    }
    let _ = lag_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    match admin_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "admin API ended with an error"),
        Err(e) => tracing::warn!(error = %e, "admin API task failed"),
        Ok(Ok(())) => {}
    }
    // Usage, audit events and the last export are written out together: the bill's flush
    // does not wait behind an audit sink or an OTLP receiver that is down.
    let _ = audit_stop.send(true);
    let _ = otlp_stop.send(true);
    let _ = flusher_stop.send(true);
    let otlp_task = async {
        if let Some(t) = otlp_task {
            let _ = t.await;
        }
    };
    let _ = tokio::join!(audit_task, otlp_task, flusher_task);
    Ok(())
}
