//! `tollgate`: the command line. See `tollgate --help` and the README.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

use tollgate_gateway::limits::Limits;
use tollgate_gateway::run::{self, Common};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Serverless Kafka on your own broker pool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local all-in-one stack: a tansu pool in the data dir, the gateway, the admin API.
    Dev(DevArgs),
    /// The gateway against an existing Kafka pool.
    Serve(ServeArgs),
    /// Autoscaling policies replayed against load traces, offline.
    #[command(subcommand)]
    Autoscale(AutoscaleCommand),
}

#[derive(Subcommand)]
enum AutoscaleCommand {
    /// Writes a synthetic load trace (CSV, the history's format).
    Trace(TraceArgs),
    /// Replays a trace against one or more policies: DIR/report.json and DIR/report.html.
    Simulate(SimulateArgs),
    /// Replays a trace against every policy of a grid and recommends the cheapest that meets
    /// the objectives: DIR/recommended-policy.json, DIR/report.json, DIR/report.html.
    Tune(TuneArgs),
}

#[derive(Args)]
struct TuneArgs {
    /// The trace: CSV or the JSON of `GET /v1/pool/history`.
    #[arg(long)]
    trace: PathBuf,
    /// One broker's capacity, start and drain seconds, price and latency curve (JSON).
    #[arg(long)]
    capacity: PathBuf,
    /// The values to try per policy field (JSON); 720 candidates around common practice when
    /// not given.
    #[arg(long)]
    grid: Option<PathBuf>,
    /// Seconds short of capacity the recommended policy may have over the trace.
    #[arg(long, default_value_t = 0)]
    slo_short_seconds: u64,
    /// p99 latency (ms, from the capacity curve) the recommended policy must stay within.
    #[arg(long)]
    slo_p99_ms: Option<u32>,
    /// Reversals (a scale-up and a scale-down within 10 minutes) it may have.
    #[arg(long)]
    slo_reversals: Option<usize>,
    /// Where the reports go.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct TraceArgs {
    /// flat, diurnal, weekly, bursts, flash-crowd or ramp.
    #[arg(long)]
    synthetic: String,
    /// How long the trace is.
    #[arg(long, default_value_t = 1)]
    days: u64,
    /// Seconds between samples (the live history keeps one every 10 s).
    #[arg(long, default_value_t = 10)]
    step_seconds: u64,
    /// Bytes in per second at the shape's peak.
    #[arg(long, default_value_t = 50 * 1024 * 1024)]
    peak_bytes_in_per_second: u64,
    /// Bytes out per second at the peak.
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    peak_bytes_out_per_second: u64,
    /// Requests per second at the peak.
    #[arg(long, default_value_t = 10_000)]
    peak_requests_per_second: u64,
    /// Client connections at the peak.
    #[arg(long, default_value_t = 2_000)]
    peak_connections: u64,
    /// Where to write the trace.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct SimulateArgs {
    /// The trace: CSV or the JSON of `GET /v1/pool/history`.
    #[arg(long)]
    trace: PathBuf,
    /// One broker's capacity, start and drain seconds, price and latency curve (JSON).
    #[arg(long)]
    capacity: PathBuf,
    /// A policy (JSON); repeat to compare several.
    #[arg(long, required = true)]
    policy: Vec<PathBuf>,
    /// Where the reports go.
    #[arg(long)]
    out: PathBuf,
}

fn autoscale(command: AutoscaleCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use tollgate_gateway::pool::autoscale::{report, simulate, trace, tune, Load, Policy};
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    match command {
        AutoscaleCommand::Trace(a) => {
            let shape = trace::Shape::parse(&a.synthetic).map_err(anyhow::Error::msg)?;
            let peak = Load {
                bytes_in_per_second: a.peak_bytes_in_per_second,
                bytes_out_per_second: a.peak_bytes_out_per_second,
                requests_per_second: a.peak_requests_per_second,
                connections: a.peak_connections,
            };
            let samples = trace::synthetic(shape, a.days * 86_400, a.step_seconds, &peak);
            std::fs::write(&a.out, trace::to_csv(&samples))
                .with_context(|| format!("writing {}", a.out.display()))?;
            eprintln!("{} samples written to {}", samples.len(), a.out.display());
        }
        AutoscaleCommand::Simulate(a) => {
            let samples = trace::parse(&read(&a.trace)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.trace.display()))?;
            let capacity = simulate::Capacity::from_json(&read(&a.capacity)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.capacity.display()))?;
            let mut runs = Vec::new();
            for path in &a.policy {
                let policy =
                    Policy::from_json(&read(path)?).with_context(|| path.display().to_string())?;
                let outcome = simulate::simulate(&samples, &policy, &capacity);
                eprintln!(
                    "{}: cost {}, short {} s, {} scale events, {} reversals, p99 {} ms",
                    path.display(),
                    outcome.cost.round_dp(4),
                    outcome.short_seconds,
                    outcome.decisions.len(),
                    outcome.reversals,
                    outcome.p99_latency_ms
                );
                runs.push(report::Run {
                    name: path.display().to_string(),
                    policy,
                    outcome,
                });
            }
            report::write(&a.out, &samples, &capacity, &runs)
                .with_context(|| format!("writing the report in {}", a.out.display()))?;
            eprintln!("report: {}", a.out.join("report.html").display());
        }
        AutoscaleCommand::Tune(a) => {
            let samples = trace::parse(&read(&a.trace)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.trace.display()))?;
            let capacity = simulate::Capacity::from_json(&read(&a.capacity)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.capacity.display()))?;
            let grid: tune::Grid = match &a.grid {
                Some(path) => serde_json::from_str(&read(path)?)
                    .with_context(|| format!("grid {}", path.display()))?,
                None => tune::Grid::default(),
            };
            let objectives = tune::Objectives {
                short_seconds: a.slo_short_seconds,
                p99_latency_ms: a.slo_p99_ms,
                reversals: a.slo_reversals,
            };
            let started = std::time::Instant::now();
            let progress = |done: usize, total: usize| {
                if done % (total / 10).max(1) == 0 || done == total {
                    eprintln!("tune: {done} of {total} policies simulated");
                }
            };
            let tuning = tune::tune(&samples, &capacity, &grid, objectives, &progress)
                .map_err(anyhow::Error::msg)?;
            let best = &tuning.candidates[0];
            eprintln!(
                "tune: {} candidates over {} samples in {:.1} s; {}: cost {}, short {} s, p99 {} ms, {} reversals",
                tuning.candidates.len(),
                samples.len(),
                started.elapsed().as_secs_f64(),
                if tuning.met {
                    "recommended"
                } else {
                    "no candidate met the objectives; least short"
                },
                best.cost.round_dp(4),
                best.short_seconds,
                best.p99_latency_ms,
                best.reversals
            );
            std::fs::create_dir_all(&a.out)
                .with_context(|| format!("creating {}", a.out.display()))?;
            let write = |name: &str, text: String| {
                let path = a.out.join(name);
                std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
            };
            write(
                "recommended-policy.json",
                serde_json::to_string_pretty(&best.policy)?,
            )?;
            let runs: Vec<report::Run> = [
                ("recommended", &best.policy),
                ("default", &Policy::default()),
            ]
            .into_iter()
            .map(|(name, policy)| report::Run {
                name: name.to_owned(),
                policy: policy.clone(),
                outcome: simulate::simulate(&samples, policy, &capacity),
            })
            .collect();
            report::write(&a.out, &samples, &capacity, &runs)
                .with_context(|| format!("writing the report in {}", a.out.display()))?;
            write("candidates.json", serde_json::to_string_pretty(&tuning)?)?;
            eprintln!(
                "recommended policy: {}",
                a.out.join("recommended-policy.json").display()
            );
        }
    }
    Ok(())
}

#[derive(Args)]
struct CommonArgs {
    /// Address of the Kafka listener tenants' clients connect to.
    #[arg(long, env = "TOLLGATE_KAFKA_LISTEN", default_value = "127.0.0.1:9092")]
    kafka_listen: SocketAddr,
    /// The gateway nodes clients are told about (Metadata, FindCoordinator), host:port[,...];
    /// defaults to the Kafka listen address. Several gateway instances serving the same
    /// tenants are given the same list (each serves every request, whichever node a client
    /// picks), so a client may bootstrap from any of them.
    #[arg(long, env = "TOLLGATE_ADVERTISE", value_delimiter = ',')]
    advertise: Vec<String>,
    /// Nodes each advertised address presents (1-64): a client keeps a fetch (and a few
    /// produces) in flight per node, and partitions are put on nodes by the pool broker
    /// serving them. Lane l listens on the Kafka port + l. Default: one per pool broker given
    /// (`--pool-bootstrap`, or `dev --brokers`).
    #[arg(long, env = "TOLLGATE_LANES", value_parser = clap::value_parser!(u16).range(1..=64))]
    lanes: Option<u16>,
    /// Address of the admin HTTP API.
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9080")]
    admin_listen: SocketAddr,
    /// Where the admin store, secrets and (for `dev`) the pool's storage live.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./.tollgate")]
    data_dir: PathBuf,
    /// Bearer token for the admin API; generated and kept in the data dir when not given.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Region named in ARNs.
    #[arg(long, env = "TOLLGATE_REGION", default_value = "local")]
    region: String,
    /// Issuer of the tokens this gateway signs and accepts.
    #[arg(long, env = "TOLLGATE_ISSUER", default_value = "tollgate")]
    issuer: String,
    /// Largest request an authenticated client may send, in bytes.
    #[arg(long, env = "TOLLGATE_MAX_FRAME_BYTES", default_value_t = 32 * 1024 * 1024)]
    max_frame_bytes: usize,
    /// Most client connections served at once.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Redis for usage shared by several gateways (redis://host:port/); without it usage is
    /// kept in the data dir.
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    redis_url: Option<String>,
    /// How often counted usage is flushed to its store, in milliseconds.
    #[arg(long, env = "TOLLGATE_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    flush_interval_ms: u64,
    /// A rate card (JSON: currency, cluster_hours, partition_hours, storage_gb_months,
    /// data_in_gb, data_out_gb, decimals as strings); the documented rates when not given.
    #[arg(long, env = "TOLLGATE_RATE_CARD")]
    rate_card: Option<PathBuf>,
    /// Turns the autoscaler on with the policy in FILE (JSON, CONTRACT "Pool and
    /// autoscaling"): it samples the load every `interval_seconds`, decides, and records its
    /// decisions (`GET /v1/pool/events`) and the load (`GET /v1/pool/history`). `dev` starts
    /// and drains tansu brokers; `serve` resizes the pool with --pool-scale-command or
    /// --pool-scale-kubernetes, and without either only records. With --redis-url, give every
    /// instance the same policy: their loads are summed and one decides.
    #[arg(long, env = "TOLLGATE_AUTOSCALE_POLICY")]
    autoscale_policy: Option<PathBuf>,
    /// Seconds after its end an hour waits for late usage before it is billed.
    #[arg(long, env = "TOLLGATE_BILLING_GRACE_SECONDS", default_value_t = 600)]
    billing_grace_seconds: u64,
    /// File holding the token signing key (at least 32 characters); every gateway instance
    /// serving the same tenants needs the same key. Generated in the data dir when not given.
    #[arg(long, env = "TOLLGATE_TOKEN_SIGNING_KEY_FILE")]
    token_signing_key_file: Option<PathBuf>,
    /// Milliseconds a new connection has to finish SASL authentication.
    #[arg(long, env = "TOLLGATE_SASL_TIMEOUT_MS", default_value_t = 10_000)]
    sasl_timeout_ms: u64,
    /// Milliseconds an authenticated connection may go without a request before it is closed
    /// (Kafka's connections.max.idle.ms).
    #[arg(long, env = "TOLLGATE_IDLE_TIMEOUT_MS", default_value_t = 600_000)]
    idle_timeout_ms: u64,
    /// Milliseconds a client may take no bytes of its answers before it is closed.
    #[arg(long, env = "TOLLGATE_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    write_timeout_ms: u64,
    /// Most open connections from one source address (0: no limit).
    #[arg(
        long,
        env = "TOLLGATE_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 3_000
    )]
    max_connections_per_source: usize,
    /// New connections per second from one source address, bursts of twice that (0: no limit).
    #[arg(
        long,
        env = "TOLLGATE_CONNECTION_ATTEMPTS_PER_SOURCE",
        default_value_t = 100
    )]
    connection_attempts_per_source: u32,
    /// Longest a fetch may wait at the pool for data, in milliseconds; a client's larger
    /// max_wait_ms is lowered to it.
    #[arg(long, env = "TOLLGATE_MAX_FETCH_WAIT_MS", default_value_t = 5_000)]
    max_fetch_wait_ms: u64,
    /// Most array elements (topics, partitions, groups, ids) in one request.
    #[arg(long, env = "TOLLGATE_MAX_REQUEST_ELEMENTS", default_value_t = 10_000)]
    max_request_elements: usize,
    /// Count no bytes: only to measure what metering costs. Usage and bills will be wrong.
    #[arg(long, hide = true)]
    no_metering: bool,
}

#[derive(Args)]
struct DevArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The tansu binary.
    #[arg(long, env = "TOLLGATE_TANSU", default_value = "tansu")]
    tansu: String,
    /// Initial number of pool brokers.
    #[arg(long, env = "TOLLGATE_BROKERS", default_value_t = 1)]
    brokers: usize,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The pool's bootstrap brokers, host:port[,host:port...]. May be left out when
    /// --pool-discover lists the brokers (list:, ordinal:, dns:).
    #[arg(
        long,
        env = "TOLLGATE_POOL_BOOTSTRAP",
        value_delimiter = ',',
        required_unless_present = "pool_discover"
    )]
    pool_bootstrap: Vec<String>,
    /// How the pool places partitions: `leader` (Apache Kafka: each partition has a leader,
    /// learned from metadata), `stateless` (tansu brokers on one shared store, each serving
    /// every partition: the gateway spreads partitions over the live ones, and bootstrap
    /// brokers not up yet join when they answer), or `auto` (stateless when two brokers claim
    /// the same node id, as tansu brokers do).
    #[arg(long, env = "TOLLGATE_POOL_KIND", default_value = "auto")]
    pool_kind: String,
    // The help cannot show the placeholder itself: clap prints it as a line break.
    /// Resize the pool by running this shell command when the autoscaler decides; the
    /// placeholder n in curly braces is replaced by the number of brokers, as in `kubectl
    /// scale statefulset/tansu --replicas=` followed by it (README.md shows it whole).
    #[arg(
        long,
        env = "TOLLGATE_POOL_SCALE_COMMAND",
        conflicts_with = "pool_scale_kubernetes"
    )]
    pool_scale_command: Option<String>,
    /// Resize the pool through the Kubernetes API: the scale subresource of
    /// `deployment/NAME`, `statefulset/NAME` or `kafkanodepool/NAME` (Strimzi).
    #[arg(long, env = "TOLLGATE_POOL_SCALE_KUBERNETES")]
    pool_scale_kubernetes: Option<String>,
    /// The namespace of --pool-scale-kubernetes; default: the pod's service account's.
    #[arg(long, env = "TOLLGATE_POOL_SCALE_NAMESPACE")]
    pool_scale_namespace: Option<String>,
    /// The Kubernetes API server, https://HOST:PORT (or http:// for `kubectl proxy`); default:
    /// the one a pod is given (KUBERNETES_SERVICE_HOST).
    #[arg(long, env = "TOLLGATE_POOL_SCALE_KUBERNETES_API")]
    pool_scale_kubernetes_api: Option<String>,
    /// The bearer token file for the API; default: the pod's service account token.
    #[arg(long, env = "TOLLGATE_POOL_SCALE_KUBERNETES_TOKEN_FILE")]
    pool_scale_kubernetes_token_file: Option<PathBuf>,
    /// The CA file for the API's certificate; default: the pod's service account CA.
    #[arg(long, env = "TOLLGATE_POOL_SCALE_KUBERNETES_CA_FILE")]
    pool_scale_kubernetes_ca_file: Option<PathBuf>,
    /// Where the pool's brokers are: `list:HOST:PORT,...` or `ordinal:NAME-{i}.HOST:PORT` (a
    /// pool of n is the first n; the leaving ones are drained before the pool is asked for
    /// fewer), `dns:HOST:PORT` (every address the name resolves to, looked up every 2 s), or
    /// `metadata` (the brokers the pool names; the default for leader-based pools).
    #[arg(long, env = "TOLLGATE_POOL_DISCOVER")]
    pool_discover: Option<String>,
    /// How long a resize waits for the brokers it asked for to answer.
    #[arg(
        long,
        env = "TOLLGATE_POOL_SCALE_TIMEOUT_SECONDS",
        default_value_t = 600
    )]
    pool_scale_timeout_seconds: u64,
}

impl ServeArgs {
    /// The pool's actuator settings, checked; None without a scale command or target.
    fn scaling(&self) -> anyhow::Result<Option<run::Scaling>> {
        use tollgate_gateway::pool::autoscale::actuator::{command, kubernetes, Discovery};
        let timeout = std::time::Duration::from_secs(self.pool_scale_timeout_seconds);
        let scaler = match (&self.pool_scale_command, &self.pool_scale_kubernetes) {
            (Some(cmd), _) => run::ScalerConfig::Command(
                command::CommandScaler::new(cmd, timeout).map_err(anyhow::Error::msg)?,
            ),
            (None, Some(target)) => run::ScalerConfig::Kubernetes(
                kubernetes::Target::parse(target).map_err(anyhow::Error::msg)?,
                kubernetes::ApiConfig {
                    url: self.pool_scale_kubernetes_api.clone(),
                    token_file: self.pool_scale_kubernetes_token_file.clone(),
                    ca_file: self.pool_scale_kubernetes_ca_file.clone(),
                    namespace: self.pool_scale_namespace.clone(),
                },
            ),
            (None, None) => {
                anyhow::ensure!(
                    self.pool_discover.is_none(),
                    "--pool-discover finds the brokers an actuator starts: give \
                     --pool-scale-command or --pool-scale-kubernetes too"
                );
                return Ok(None);
            }
        };
        let discovery = self
            .pool_discover
            .as_deref()
            .map(Discovery::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        Ok(Some(run::Scaling {
            scaler,
            discovery,
            ready_timeout: timeout,
        }))
    }
}

impl TryFrom<CommonArgs> for Common {
    type Error = anyhow::Error;

    fn try_from(a: CommonArgs) -> anyhow::Result<Self> {
        let rates = match &a.rate_card {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading rate card {}: {e}", path.display()))?;
                let card: tollgate_billing::RateCard = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("rate card {}: {e}", path.display()))?;
                card
            }
            None => tollgate_billing::RateCard::default(),
        };
        rates
            .validate()
            .map_err(|e| anyhow::anyhow!("rate card: {e}"))?;
        let autoscale_policy = match &a.autoscale_policy {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("reading autoscaling policy {}: {e}", path.display())
                })?;
                Some(
                    tollgate_gateway::pool::autoscale::Policy::from_json(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                )
            }
            None => None,
        };
        Ok(Common {
            kafka_listen: a.kafka_listen,
            advertise: a.advertise,
            lanes: a.lanes.map(usize::from),
            admin_listen: a.admin_listen,
            data_dir: a.data_dir,
            admin_token: a.admin_token,
            region: a.region,
            issuer: a.issuer,
            max_frame_bytes: a.max_frame_bytes,
            max_connections: a.max_connections,
            redis_url: a.redis_url,
            flush_interval: std::time::Duration::from_millis(a.flush_interval_ms.max(10)),
            rates,
            billing_grace: std::time::Duration::from_secs(a.billing_grace_seconds),
            token_signing_key_file: a.token_signing_key_file,
            metering: !a.no_metering,
            autoscale_policy,
            limits: Limits {
                sasl_deadline: Duration::from_millis(a.sasl_timeout_ms),
                idle_timeout: Duration::from_millis(a.idle_timeout_ms),
                write_stall: Duration::from_millis(a.write_timeout_ms),
                connections_per_source: a.max_connections_per_source,
                connection_attempts_per_source: a.connection_attempts_per_source,
                max_fetch_wait: Duration::from_millis(a.max_fetch_wait_ms),
                max_request_elements: a.max_request_elements,
                ..Limits::default()
            },
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(a) => match Common::try_from(a.common) {
            Ok(common) => run::dev(common, a.tansu, a.brokers).await,
            Err(e) => Err(e),
        },
        Command::Serve(a) => match a.scaling() {
            Ok(scaling) => match Common::try_from(a.common) {
                Ok(common) => run::serve(common, a.pool_bootstrap, a.pool_kind, scaling).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Command::Autoscale(a) => autoscale(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
