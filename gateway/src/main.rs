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
    Dev(Box<DevArgs>),
    /// The gateway against an existing Kafka pool.
    Serve(Box<ServeArgs>),
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
    /// the objectives on the trace and under stress: DIR/recommended-policy.json,
    /// DIR/policy-diff.txt, DIR/candidates.json, DIR/report.json, DIR/report.html,
    /// DIR/charts/*.svg.
    Tune(TuneArgs),
}

/// What the tenants' usage over a trace bills, for the margin (simulate and tune).
#[derive(Args)]
struct MarginArgs {
    /// The rate card the tenants' usage is priced at (JSON, as `serve --rate-card`); the
    /// documented rates when not given.
    #[arg(long, env = "TOLLGATE_RATE_CARD")]
    rate_card: Option<PathBuf>,
    /// Tenant clusters that existed throughout the trace, billed per cluster-hour; a trace
    /// does not record them, so cluster-hours are left out of the revenue without it.
    #[arg(long)]
    clusters: Option<u64>,
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
    /// The policy in force (JSON), compared with the recommendation field by field; fields
    /// the grid does not vary (interval, mode) are taken from it. The documented default
    /// policy when not given.
    #[arg(long)]
    current: Option<PathBuf>,
    /// The recommendation must meet the objectives with brokers this many times slower to
    /// start than the capacity file says...
    #[arg(long, default_value_t = 2)]
    stress_start_multiplier: u32,
    /// ...and with every load signal this many percent above the trace.
    #[arg(long, default_value_t = 20)]
    stress_load_percent: u32,
    #[command(flatten)]
    margin: MarginArgs,
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
    /// Partitions the tenants have, the same in every sample (what partition-hours bill).
    #[arg(long, default_value_t = 0)]
    partitions: u64,
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
    #[command(flatten)]
    margin: MarginArgs,
    /// Where the reports go.
    #[arg(long)]
    out: PathBuf,
}

fn autoscale(command: AutoscaleCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::IsTerminal;
    use tollgate_gateway::pool::autoscale::{report, simulate, trace, tune, Load, Policy};
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    };
    let read_trace = |path: &PathBuf| {
        trace::parse(&read(path)?).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let read_capacity = |path: &PathBuf| {
        simulate::Capacity::from_json(&read(path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let revenue = |samples: &[trace::Sample], m: &MarginArgs| -> anyhow::Result<trace::Revenue> {
        let rates = match &m.rate_card {
            Some(path) => serde_json::from_str::<tollgate_billing::RateCard>(&read(path)?)
                .with_context(|| format!("rate card {}", path.display()))?,
            None => tollgate_billing::RateCard::default(),
        };
        rates
            .validate()
            .map_err(|e| anyhow::anyhow!("rate card: {e}"))?;
        trace::Usage::of(samples)
            .and_then(|u| u.bill(&rates, m.clusters))
            .map_err(anyhow::Error::msg)
    };
    let say_revenue = |r: &trace::Revenue| {
        let priced: Vec<&str> = r.lines.iter().map(|l| l.dimension.as_str()).collect();
        let left: Vec<&str> = r
            .left_out
            .iter()
            .map(|l| l.split(':').next().unwrap_or(l))
            .collect();
        eprintln!(
            "revenue: the tenants' usage bills {} {} ({}; left out: {})",
            r.total.round_dp(4),
            r.currency,
            priced.join(", "),
            left.join(", ")
        );
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
            let mut samples = trace::synthetic(shape, a.days * 86_400, a.step_seconds, &peak);
            for s in &mut samples {
                s.partitions = a.partitions;
            }
            std::fs::write(&a.out, trace::to_csv(&samples))
                .with_context(|| format!("writing {}", a.out.display()))?;
            eprintln!("{} samples written to {}", samples.len(), a.out.display());
        }
        AutoscaleCommand::Simulate(a) => {
            let samples = read_trace(&a.trace)?;
            let capacity = read_capacity(&a.capacity)?;
            let revenue = revenue(&samples, &a.margin)?;
            say_revenue(&revenue);
            let mut runs = Vec::new();
            for path in &a.policy {
                let policy =
                    Policy::from_json(&read(path)?).with_context(|| path.display().to_string())?;
                let outcome = simulate::simulate(&samples, &policy, &capacity);
                eprintln!(
                    "{}: cost {}, margin {}, short {} s, {} scale events, {} reversals, p99 {} ms",
                    path.display(),
                    outcome.cost.round_dp(4),
                    (revenue.total - outcome.cost).round_dp(4),
                    outcome.short_seconds,
                    outcome.decisions.len(),
                    outcome.reversals,
                    outcome.p99_latency_ms
                );
                runs.push(report::Run {
                    name: path.display().to_string(),
                    policy,
                    outcome,
                    under_stress: None,
                });
            }
            report::write(&a.out, &samples, &capacity, &runs, &revenue, None)
                .with_context(|| format!("writing the report in {}", a.out.display()))?;
            eprintln!("report: {}", a.out.join("report.html").display());
        }
        AutoscaleCommand::Tune(a) => {
            let samples = read_trace(&a.trace)?;
            let capacity = read_capacity(&a.capacity)?;
            let grid: tune::Grid = match &a.grid {
                Some(path) => serde_json::from_str(&read(path)?)
                    .with_context(|| format!("grid {}", path.display()))?,
                None => tune::Grid::default(),
            };
            let (current, current_name) = match &a.current {
                Some(path) => (
                    Policy::from_json(&read(path)?).with_context(|| path.display().to_string())?,
                    format!("current ({})", path.display()),
                ),
                None => (Policy::default(), "current (the default policy)".to_owned()),
            };
            anyhow::ensure!(
                a.stress_start_multiplier >= 1,
                "--stress-start-multiplier must be at least 1 (1: brokers start as fast as the \
                 capacity file says)"
            );
            let revenue = revenue(&samples, &a.margin)?;
            let tuner = tune::Tuner {
                grid,
                objectives: tune::Objectives {
                    short_seconds: a.slo_short_seconds,
                    p99_latency_ms: a.slo_p99_ms,
                    reversals: a.slo_reversals,
                },
                stress: tune::Stress {
                    start_multiplier: a.stress_start_multiplier,
                    load_percent: a.stress_load_percent,
                },
                current,
                revenue: revenue.total,
            };
            let started = std::time::Instant::now();
            // On a terminal, one line redrawn; in a log, a line every tenth.
            let bar = std::io::stderr().is_terminal();
            let progress = |done: usize, total: usize| {
                const WIDTH: usize = 30;
                if bar {
                    if done * WIDTH / total != (done - 1) * WIDTH / total || done == 1 {
                        let filled = done * WIDTH / total;
                        eprint!(
                            "\rtune: [{}{}] {done}/{total} policies, {:.1} s",
                            "#".repeat(filled),
                            ".".repeat(WIDTH - filled),
                            started.elapsed().as_secs_f64()
                        );
                    }
                } else if done % (total / 10).max(1) == 0 || done == total {
                    eprintln!("tune: {done} of {total} policies simulated");
                }
            };
            let tuning = tune::tune(&samples, &capacity, &tuner, &progress);
            if bar {
                eprintln!();
            }
            let tuning = tuning.map_err(anyhow::Error::msg)?;
            let best = tuning.recommendation();
            let f = &best.figures;
            eprintln!(
                "tune: {} candidates over {} samples in {:.1} s; {} re-checked under stress \
                 ({}); {}: cost {}, short {} s, p99 {} ms, {} reversals",
                tuning.candidates.len(),
                samples.len(),
                started.elapsed().as_secs_f64(),
                tuning.stress_checked,
                tuning.stress_applied,
                match (tuning.met, tuning.met_under_stress) {
                    (true, true) => "recommended",
                    (true, false) =>
                        "none meets the objectives under stress; least short under stress",
                    _ => "no candidate met the objectives; least short",
                },
                f.cost.round_dp(4),
                f.short_seconds,
                f.p99_latency_ms,
                f.reversals
            );
            if let Some(s) = &best.under_stress {
                eprintln!(
                    "tune: under stress it costs {}, short {} s, p99 {} ms, {} reversals",
                    s.cost.round_dp(4),
                    s.short_seconds,
                    s.p99_latency_ms,
                    s.reversals
                );
            }
            let current_outcome = simulate::simulate(&samples, &tuner.current, &capacity);
            let (stressed_trace, stressed_capacity) = tuner.stress.apply(&samples, &capacity);
            let under_stress = |policy: &Policy| {
                Some(simulate::simulate(
                    &stressed_trace,
                    policy,
                    &stressed_capacity,
                ))
            };
            say_revenue(&revenue);
            eprintln!(
                "margin: recommended {} (cost {}), {} {} (cost {})",
                best.margin.round_dp(4),
                f.cost.round_dp(4),
                current_name,
                (revenue.total - current_outcome.cost).round_dp(4),
                current_outcome.cost.round_dp(4)
            );
            let diff = tune::diff(&tuner.current, &best.policy);
            let mut diff_text = format!(
                "# recommended-policy.json against {current_name}: {} fields differ\n",
                diff.len()
            );
            eprintln!(
                "tune: the recommendation differs from {current_name} in {} fields{}",
                diff.len(),
                if diff.is_empty() { "" } else { ":" }
            );
            for change in &diff {
                let line = tune::describe_change(change);
                eprintln!("  {line}");
                diff_text.push_str(&line);
                diff_text.push('\n');
            }

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
            write("policy-diff.txt", diff_text)?;
            let runs = [
                report::Run {
                    name: "recommended".to_owned(),
                    policy: best.policy.clone(),
                    outcome: simulate::simulate(&samples, &best.policy, &capacity),
                    under_stress: under_stress(&best.policy),
                },
                report::Run {
                    name: current_name,
                    policy: tuner.current.clone(),
                    outcome: current_outcome,
                    under_stress: under_stress(&tuner.current),
                },
            ];
            let tuned = report::Tuned {
                tuning: &tuning,
                diff: &diff,
                current_run: 1,
            };
            report::write(&a.out, &samples, &capacity, &runs, &revenue, Some(&tuned))
                .with_context(|| format!("writing the report in {}", a.out.display()))?;
            write("candidates.json", serde_json::to_string_pretty(&tuning)?)?;
            eprintln!(
                "recommended policy: {}; report: {}",
                a.out.join("recommended-policy.json").display(),
                a.out.join("report.html").display()
            );
        }
    }
    Ok(())
}

#[derive(Args)]
struct CommonArgs {
    /// A TOML file of settings: each key a flag's long name, each value what the flag takes
    /// (deploy/tollgate.example.toml). Flags and their environment variables override it.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
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
    /// TLS on the Kafka listener (every lane): the certificate chain, PEM, server certificate
    /// first. Re-read when it changes, without dropping connections. Needs --tls-key.
    #[arg(long, env = "TOLLGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM (PKCS#8, RSA or EC).
    #[arg(long, env = "TOLLGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: the CA certificates (PEM) client certificates must chain to. A client that
    /// presents a valid one is authenticated by it (Kafka's SSL), with the principal that
    /// --tls-principal-rules make of its subject; clients without one go on to SASL.
    #[arg(long, env = "TOLLGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) of --tls-client-ca: a revoked client certificate fails
    /// the handshake. Re-read when it changes.
    #[arg(long, env = "TOLLGATE_TLS_CLIENT_CRL", requires = "tls_client_ca")]
    tls_client_crl: Option<PathBuf>,
    /// How a client certificate's subject (RFC 2253, as Kafka writes it) becomes a principal:
    /// Kafka's ssl.principal.mapping.rules, e.g. `RULE:^CN=([^,]+),.*$/$1/L,DEFAULT`.
    #[arg(
        long,
        env = "TOLLGATE_TLS_PRINCIPAL_RULES",
        default_value = "DEFAULT",
        requires = "tls_client_ca"
    )]
    tls_principal_rules: tollgate_gateway::identity::certificate::PrincipalRules,
    /// The PROXY protocol (version 2) on the Kafka listener, from the load balancers in
    /// --proxy-trusted-cidrs only: `optional` reads a header when a trusted peer sends one,
    /// `required` refuses connections without one; allowlists and logs then see the client's
    /// address.
    #[arg(
        long,
        env = "TOLLGATE_PROXY_PROTOCOL",
        value_enum,
        default_value = "off"
    )]
    proxy_protocol: tollgate_gateway::listener::proxy_protocol::Mode,
    /// The load balancers whose PROXY headers are believed (CIDRs, comma-separated).
    #[arg(long, env = "TOLLGATE_PROXY_TRUSTED_CIDRS", value_delimiter = ',')]
    proxy_trusted_cidrs: Vec<String>,
    /// Address of the admin HTTP API.
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9080")]
    admin_listen: SocketAddr,
    /// Where the admin store, secrets and (for `dev`) the pool's storage live.
    #[arg(long, env = "TOLLGATE_DATA_DIR", default_value = "./.tollgate")]
    data_dir: PathBuf,
    /// Bearer token for the admin API; generated and kept in the data dir when not given.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Region named in ARNs, and the one clients sign for with MSK IAM access keys (SigV4).
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
    /// Serve Prometheus's `/metrics` on this address too, without authentication (on the
    /// admin listener it needs the admin token).
    #[arg(long, env = "TOLLGATE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Topics with series of their own per cluster; the rest share one series whose topic
    /// label is `(overflow)`.
    #[arg(
        long,
        env = "TOLLGATE_METRICS_TOPICS_PER_CLUSTER",
        default_value_t = tollgate_gateway::telemetry::metrics::DEFAULT_TOPICS_PER_CLUSTER
    )]
    metrics_topics_per_cluster: usize,
    /// Count nothing for metrics: only to measure what metrics cost.
    #[arg(long, hide = true)]
    no_metrics: bool,
    /// Export the metrics and sampled request traces over OTLP/HTTP (protobuf) to this
    /// receiver, e.g. `http://127.0.0.1:4318` (`/v1/metrics` and `/v1/traces` under it).
    #[arg(long, env = "TOLLGATE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// How often the metrics are exported, in milliseconds.
    #[arg(
        long,
        env = "TOLLGATE_OTLP_INTERVAL_MS",
        default_value_t = tollgate_gateway::telemetry::otlp::DEFAULT_INTERVAL.as_millis() as u64,
        requires = "otlp_endpoint"
    )]
    otlp_interval_ms: u64,
    /// The fraction of requests traced, from 0 to 1.
    #[arg(
        long,
        env = "TOLLGATE_OTLP_TRACE_RATIO",
        default_value_t = tollgate_gateway::telemetry::otlp::DEFAULT_TRACE_RATIO,
        requires = "otlp_endpoint"
    )]
    otlp_trace_ratio: f64,
    /// CA certificates (PEM) an https receiver's certificate must chain to; the system's
    /// otherwise.
    #[arg(long, env = "TOLLGATE_OTLP_CA", requires = "otlp_endpoint")]
    otlp_ca: Option<PathBuf>,
    /// Audit events as JSON lines appended to FILE, or written to stdout with `-`.
    #[arg(long, env = "TOLLGATE_AUDIT_LOG")]
    audit_log: Option<String>,
    /// Audit events produced to this topic on the pool (made if missing; outside every
    /// tenant's namespace, so no tenant can read it).
    #[arg(long, env = "TOLLGATE_AUDIT_TOPIC")]
    audit_topic: Option<String>,
    /// Audit events in gzip-compressed objects under s3://bucket/prefix/year=/month=/day=/hour=/
    /// (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
    #[arg(long, env = "TOLLGATE_AUDIT_S3_URL")]
    audit_s3_url: Option<String>,
    /// The S3-compatible store's endpoint (path-style requests), e.g. http://127.0.0.1:9000.
    #[arg(long, env = "TOLLGATE_AUDIT_S3_ENDPOINT", requires = "audit_s3_url")]
    audit_s3_endpoint: Option<String>,
    /// The store's region for SigV4; AWS_REGION, else us-east-1, when not given.
    #[arg(long, env = "TOLLGATE_AUDIT_S3_REGION", requires = "audit_s3_url")]
    audit_s3_region: Option<String>,
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
    /// TLS towards the pool: the CA certificates (PEM) the brokers' certificates chain to. The
    /// brokers' names in --pool-bootstrap and in their metadata must be in their certificates.
    #[arg(long, env = "TOLLGATE_POOL_TLS_CA")]
    pool_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for brokers that ask for one; needs --pool-tls-key.
    #[arg(long, env = "TOLLGATE_POOL_TLS_CERT", requires_all = ["pool_tls_key", "pool_tls_ca"])]
    pool_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --pool-tls-cert.
    #[arg(long, env = "TOLLGATE_POOL_TLS_KEY", requires = "pool_tls_cert")]
    pool_tls_key: Option<PathBuf>,
    /// SASL towards the pool: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, with
    /// --pool-sasl-username and --pool-sasl-password: the gateway's own login, never a tenant's.
    #[arg(
        long,
        env = "TOLLGATE_POOL_SASL_MECHANISM",
        requires_all = ["pool_sasl_username", "pool_sasl_password"]
    )]
    pool_sasl_mechanism: Option<tollgate_gateway::pool::security::PoolMechanism>,
    #[arg(
        long,
        env = "TOLLGATE_POOL_SASL_USERNAME",
        requires = "pool_sasl_mechanism"
    )]
    pool_sasl_username: Option<String>,
    #[arg(
        long,
        env = "TOLLGATE_POOL_SASL_PASSWORD",
        hide_env_values = true,
        requires = "pool_sasl_mechanism"
    )]
    pool_sasl_password: Option<String>,
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
    /// TLS and SASL towards the pool; the files are read now, so a bad one stops the start.
    fn pool_security(&self) -> anyhow::Result<tollgate_gateway::pool::security::PoolSecurity> {
        use tollgate_gateway::pool::security::{PoolSasl, PoolSecurity};
        let sasl = match (
            self.pool_sasl_mechanism,
            &self.pool_sasl_username,
            &self.pool_sasl_password,
        ) {
            (Some(mechanism), Some(username), Some(password)) => Some(PoolSasl {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        let client = self
            .pool_tls_cert
            .as_deref()
            .zip(self.pool_tls_key.as_deref());
        PoolSecurity::new(self.pool_tls_ca.as_deref(), client, sasl)
            .map_err(|e| anyhow::anyhow!("TLS towards the pool (--pool-tls-*): {e}"))
    }

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
        use tollgate_gateway::listener::proxy_protocol::{Mode, ProxyProtocol};
        let trusted = tollgate_gateway::identity::allowlist::parse_list(&a.proxy_trusted_cidrs)
            .map_err(|e| anyhow::anyhow!("--proxy-trusted-cidrs: {e}"))?;
        if a.proxy_protocol != Mode::Off && trusted.is_empty() {
            anyhow::bail!(
                "--proxy-protocol {:?} needs --proxy-trusted-cidrs: the load balancers whose \
                 headers are believed",
                a.proxy_protocol
            );
        }
        let audit = tollgate_gateway::telemetry::audit::AuditConfig::from_flags(
            a.audit_log.as_deref(),
            a.audit_topic.as_deref(),
            a.audit_s3_url.as_deref(),
            a.audit_s3_endpoint.as_deref(),
            a.audit_s3_region.as_deref(),
        )?;
        let proxy = ProxyProtocol {
            mode: a.proxy_protocol,
            trusted,
        };
        Ok(Common {
            kafka_listen: a.kafka_listen,
            proxy,
            advertise: a.advertise,
            lanes: a.lanes.map(usize::from),
            tls: match (a.tls_cert, a.tls_key) {
                (Some(cert), Some(key)) => Some(tollgate_gateway::listener::tls::TlsFiles {
                    cert,
                    key,
                    client_ca: a.tls_client_ca,
                    client_crl: a.tls_client_crl,
                }),
                _ => None,
            },
            principal_rules: a.tls_principal_rules,
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
            telemetry: tollgate_gateway::telemetry::TelemetryConfig {
                metrics_listen: a.metrics_listen,
                metrics: !a.no_metrics,
                topics_per_cluster: a.metrics_topics_per_cluster,
                audit,
                otlp: a.otlp_endpoint.map(|endpoint| {
                    tollgate_gateway::telemetry::otlp::OtlpConfig {
                        endpoint,
                        interval: Duration::from_millis(a.otlp_interval_ms),
                        trace_ratio: a.otlp_trace_ratio,
                        certificate: a.otlp_ca,
                    }
                }),
            },
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

/// The command line, with the defaults of `dev` and `serve` taken from their configuration
/// file when one is named (`--config`, `TOLLGATE_CONFIG`); a bad file is an error that names
/// it, a bad command line exits as clap does.
fn parse_cli() -> Result<Cli, tollgate_gateway::config_file::ConfigError> {
    use clap::{CommandFactory, FromArgMatches};
    use tollgate_gateway::config_file;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cmd = Cli::command();
    let subcommand = args
        .get(1)
        .and_then(|a| a.to_str())
        .unwrap_or_default()
        .to_owned();
    if matches!(subcommand.as_str(), "dev" | "serve") {
        if let Some(path) = config_file::named(&args) {
            args = config_file::apply(&cmd, &subcommand, &path, args)?;
        }
    }
    let matches = cmd.get_matches_from(args);
    Ok(Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Dev(a) => match Common::try_from(a.common) {
            Ok(common) => run::dev(common, a.tansu, a.brokers).await,
            Err(e) => Err(e),
        },
        Command::Serve(a) => {
            let a = *a;
            match a.scaling().and_then(|s| Ok((s, a.pool_security()?))) {
                Ok((scaling, security)) => match Common::try_from(a.common) {
                    Ok(common) => {
                        run::serve(common, a.pool_bootstrap, a.pool_kind, scaling, security).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// The example configuration in deploy/ is one `tollgate serve` takes, and what it says is
    /// what the gateway gets; a flag still overrides it.
    #[test]
    fn the_deployment_example_configures_serve() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/tollgate.example.toml"
        );
        let cmd = Cli::command();
        let args = ["tollgate", "serve", "--lanes", "2"].map(std::ffi::OsString::from);
        let args = tollgate_gateway::config_file::apply(
            &cmd,
            "serve",
            std::path::Path::new(example),
            args.to_vec(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let matches = cmd
            .try_get_matches_from(args)
            .unwrap_or_else(|e| panic!("{e}"));
        let Command::Serve(a) = Cli::from_arg_matches(&matches).unwrap().command else {
            panic!("not serve")
        };
        assert_eq!(a.pool_bootstrap.len(), 3);
        assert_eq!(a.common.kafka_listen, "0.0.0.0:9092".parse().unwrap());
        assert_eq!(a.common.advertise, ["kafka.tollgate.example.com:9092"]);
        assert_eq!(a.common.data_dir, PathBuf::from("/var/lib/tollgate"));
        assert_eq!(a.common.lanes, Some(2), "the command line wins");
        let common = Common::try_from(a.common).unwrap();
        assert_eq!(common.limits.sasl_deadline, Duration::from_secs(10));
    }
}
