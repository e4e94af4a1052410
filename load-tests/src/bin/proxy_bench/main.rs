//! `proxy-bench`: what the gateway costs, measured with one client (librdkafka) against one
//! pool, directly and through the gateway (with metering, and without it).
//!
//! For each pool (librdkafka's mock cluster, in this process; tansu with its memory engine) and
//! each path (direct, gateway, gateway with `--no-metering`) it measures produce and consume
//! throughput, delivery latency at half of the direct produce throughput, and the gateway
//! process's CPU time; then prints a table with the ratios and writes it all as JSON.
//!
//!     cargo build --release -p tollgate-gateway
//!     cargo run --release -p tollgate-load-tests --bin proxy-bench -- --out target/proxy-bench.json
//!
//! Modules: `pool` (the pools and partition placement), `gateway` (the gateway process),
//! `admin` (provisioning over the admin API), `workload` (the three measurements), `procs`
//! (child processes and their CPU time), `report` (figures, ratios, table, JSON).

mod admin;
mod gateway;
mod pool;
mod procs;
mod report;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::gateway::Started;
use crate::pool::{Pool, PoolKind};
use crate::procs::Child;
use crate::report::{CpuUse, PathKind, PathResult, Phase, PoolResult, Report};
use crate::workload::Endpoint;

/// Measures the gateway's cost against direct access to the same pool with the same client.
#[derive(Parser, Debug)]
#[command(name = "proxy-bench")]
struct Args {
    /// The gateway binary; default: `tollgate` next to this binary (target/release).
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate: Option<PathBuf>,
    /// The tansu binary (a path, or a name on PATH).
    #[arg(long, env = "TOLLGATE_TANSU", default_value = "tansu")]
    tansu: String,
    /// Pools to run against, in order.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_POOLS",
        value_delimiter = ',',
        default_value = "mock,tansu"
    )]
    pools: Vec<PoolKind>,
    /// Records produced (and consumed back) per throughput run.
    #[arg(long, env = "TOLLGATE_BENCH_MESSAGES", default_value_t = 200_000)]
    messages: u64,
    /// Bytes per record value.
    #[arg(long, env = "TOLLGATE_BENCH_SIZE", default_value_t = 1024)]
    size: usize,
    /// Partitions of each benchmark topic. Default: 6 on tansu; on the mock cluster, which
    /// keeps only the last 5 MiB of each partition, enough that a throughput run fills each
    /// partition to about a third of that (at least 6).
    #[arg(long, env = "TOLLGATE_BENCH_PARTITIONS")]
    partitions: Option<i32>,
    /// Seconds each latency run sends for.
    #[arg(long, env = "TOLLGATE_BENCH_LATENCY_SECONDS", default_value_t = 5.0)]
    latency_seconds: f64,
    /// Records per second of the latency runs; default: half of the pool's direct produce
    /// throughput.
    #[arg(long, env = "TOLLGATE_BENCH_LATENCY_RATE")]
    latency_rate: Option<f64>,
    /// Hard limit of each phase (produce, consume, latency), in seconds.
    #[arg(long, env = "TOLLGATE_BENCH_PHASE_TIMEOUT", default_value_t = 90)]
    phase_timeout: u64,
    /// Hard limit of the whole run, in seconds: past it the run kills what it started and
    /// exits with status 3.
    #[arg(long, env = "TOLLGATE_BENCH_MAX_SECONDS", default_value_t = 900)]
    max_seconds: u64,
    /// Leave the mock cluster's partition leaders and group coordinators spread over its three
    /// brokers and give the gateway all of them. Off by default: the gateway routes each
    /// request whole to one broker, so every benchmark partition is led by one broker, the only
    /// one the gateway knows.
    #[arg(long, env = "TOLLGATE_BENCH_SPREAD_LEADERS")]
    spread_leaders: bool,
    /// Where the JSON report goes.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_OUT",
        default_value = "target/proxy-bench.json"
    )]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let limit = Duration::from_secs(args.max_seconds);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "proxy-bench: still running after {} s (--max-seconds); stopping",
            limit.as_secs()
        );
        procs::kill_all_children();
        std::process::exit(3);
    });
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.messages == 0 || args.size == 0 || args.partitions.is_some_and(|p| p < 1) {
        bail!("--messages, --size and --partitions must be positive");
    }
    let tollgate = gateway_binary(args)?;
    let work = std::env::temp_dir().join(format!("proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let started = Instant::now();
    let mut report = Report {
        date: now_utc(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: report::Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: cpu_model(),
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        },
        settings: report::Settings {
            messages: args.messages,
            size: args.size,
            partitions: args.partitions,
            acks: "all",
            idempotence: true,
            linger_ms: 5,
            latency_seconds: args.latency_seconds,
            latency_load: "half of direct produce throughput (records/s), same rate on every path",
            spread_leaders: args.spread_leaders,
            librdkafka: rdkafka::util::get_rdkafka_version().1,
            gateway: tollgate.display().to_string(),
        },
        pools: Vec::new(),
    };
    for &kind in &args.pools {
        eprintln!("proxy-bench: pool {}", kind.name());
        let result = bench_pool(args, kind, &tollgate, &work.join(kind.name()));
        report.pools.push(result);
    }
    let table = report.table();
    println!("{table}");
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "proxy-bench: {:.0} s; report in {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn gateway_binary(args: &Args) -> Result<PathBuf> {
    let path = match &args.tollgate {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("tollgate"),
    };
    if !path.is_file() {
        bail!(
            "gateway binary {} not found: build it with `cargo build --release -p \
             tollgate-gateway`, or pass --tollgate PATH (env TOLLGATE_BIN)",
            path.display()
        );
    }
    Ok(path)
}

fn bench_pool(args: &Args, kind: PoolKind, tollgate: &Path, work: &Path) -> PoolResult {
    let mut result = PoolResult {
        pool: kind.name(),
        description: String::new(),
        partitions: partitions(args, kind),
        skipped: None,
        paths: Vec::new(),
        summary: None,
    };
    let started = std::fs::create_dir_all(work)
        .map_err(anyhow::Error::from)
        .and_then(|()| match kind {
            PoolKind::Mock => Pool::mock(args.spread_leaders),
            PoolKind::Tansu => Pool::tansu(&args.tansu, work),
        });
    let mut pool = match started {
        Ok(p) => p,
        Err(e) => {
            eprintln!("proxy-bench: pool {} skipped: {e:#}", kind.name());
            result.skipped = Some(format!("{e:#}"));
            return result;
        }
    };
    result.description = pool.describe();
    result.partitions = partitions(args, kind);

    let direct = Endpoint {
        bootstrap: pool.bootstrap.clone(),
        sasl: None,
    };
    let names = Names {
        topic: format!("direct-{}", kind.name()),
        group: format!("direct-{}-group", kind.name()),
        pool_prefix: String::new(),
    };
    let d = bench_path(
        args,
        &mut pool,
        PathKind::Direct,
        &direct,
        &names,
        None,
        None,
    );
    let rate = args
        .latency_rate
        .or_else(|| d.produce.as_ref().map(|p| 0.5 * p.result.messages_per_s));
    result.paths.push(d);

    for (kind, metering) in [
        (PathKind::Gateway, true),
        (PathKind::GatewayNoMetering, false),
    ] {
        let dir = work.join(kind.name());
        let mut r = PathResult::new(kind);
        match gateway::start(tollgate, &pool.gateway_bootstrap, metering, &dir) {
            Ok(Started::Running(mut gw)) => {
                let names = Names {
                    topic: format!("bench-{}", kind.name()),
                    group: format!("bench-{}-group", kind.name()),
                    pool_prefix: gw.tenancy.pool_prefix.clone(),
                };
                r = bench_path(
                    args,
                    &mut pool,
                    kind,
                    &gw.endpoint.clone(),
                    &names,
                    Some(&mut gw.process),
                    rate,
                );
                if let Some(exit) = gw.process.exited() {
                    r.failed(
                        "gateway",
                        &anyhow::anyhow!("{exit}:\n{}", gw.process.log_tail(20)),
                    );
                }
                eprintln!(
                    "proxy-bench: {} cluster {}",
                    kind.name(),
                    gw.tenancy.cluster_id
                );
            }
            Ok(Started::NotSupported(why)) => {
                r.status = "not supported";
                r.error = Some(why);
            }
            Err(e) => r.failed("start", &e),
        }
        result.paths.push(r);
    }
    if let Some(death) = pool.died() {
        result.skipped = Some(format!("the pool died during the run: {death}"));
    }
    result.summarize();
    result
}

/// Partitions per benchmark topic on `kind`: see `Args::partitions`.
fn partitions(args: &Args, kind: PoolKind) -> i32 {
    match (args.partitions, kind) {
        (Some(p), _) => p,
        (None, PoolKind::Tansu) => 6,
        (None, PoolKind::Mock) => {
            const MOCK_PARTITION_KEEPS: u64 = 5 << 20;
            let bytes = args.messages * args.size as u64;
            (3 * bytes).div_ceil(MOCK_PARTITION_KEEPS).clamp(6, 1000) as i32
        }
    }
}

/// Client-visible topic and group names, and the prefix the gateway gives them on the pool.
struct Names {
    topic: String,
    group: String,
    pool_prefix: String,
}

fn bench_path(
    args: &Args,
    pool: &mut Pool,
    kind: PathKind,
    ep: &Endpoint,
    names: &Names,
    mut gateway: Option<&mut Child>,
    latency_rate: Option<f64>,
) -> PathResult {
    let mut r = PathResult::new(kind);
    let phase_limit = Duration::from_secs(args.phase_timeout);
    let label = format!("{} {}", pool.kind.name(), kind.name());
    let note = |what: &str| eprintln!("proxy-bench: {label}: {what}");

    note("creating the topic");
    if let Err(e) = pool.create_topic(
        ep,
        &names.topic,
        &format!("{}{}", names.pool_prefix, names.topic),
        partitions(args, pool.kind),
        &format!("{}{}", names.pool_prefix, names.group),
    ) {
        r.failed("create topic", &explain(e, &mut gateway));
        return r;
    }

    let spread = workload::Spread::new(partitions(args, pool.kind), args.size);
    note("produce");
    let deadline = Instant::now() + phase_limit;
    match measured(pool, gateway.as_deref(), || {
        workload::produce(ep, &names.topic, spread, args.messages, args.size, deadline)
    }) {
        (Ok(t), cpu) => r.produce = Some(phase(t.bytes, t, cpu)),
        (Err(e), _) => {
            r.failed("produce", &explain(e, &mut gateway));
            return r;
        }
    }

    note("consume");
    let deadline = Instant::now() + phase_limit;
    match measured(pool, gateway.as_deref(), || {
        workload::consume(ep, &names.topic, &names.group, args.messages, deadline)
    }) {
        (Ok(t), cpu) => r.consume = Some(phase(t.bytes, t, cpu)),
        (Err(e), _) => r.failed("consume", &explain(e, &mut gateway)),
    }

    let rate = latency_rate.or_else(|| r.produce.as_ref().map(|p| 0.5 * p.result.messages_per_s));
    let Some(rate) = rate else {
        return r;
    };
    note(&format!("latency at {rate:.0} records/s"));
    let deadline = Instant::now() + phase_limit;
    let size = args.size;
    match measured(pool, gateway.as_deref(), || {
        workload::latency(
            ep,
            &names.topic,
            spread,
            size,
            rate,
            args.latency_seconds,
            deadline,
        )
    }) {
        (Ok(l), cpu) => {
            let bytes = l.messages * size as u64;
            r.latency = Some(phase(bytes, l, cpu));
        }
        (Err(e), _) => r.failed("latency", &explain(e, &mut gateway)),
    }
    r
}

/// Runs `f`, noting the CPU time the gateway, this process and the pool's process use meanwhile.
fn measured<T>(
    pool: &Pool,
    gateway: Option<&Child>,
    f: impl FnOnce() -> Result<T>,
) -> (Result<T>, CpuUse) {
    let gw = |g: Option<&Child>| g.and_then(|c| c.cpu_seconds().ok());
    let (gw0, own0, pool0) = (gw(gateway), procs::own_cpu_seconds(), pool.cpu_seconds());
    let start = Instant::now();
    let result = f();
    let wall_s = start.elapsed().as_secs_f64();
    let (gw1, own1, pool1) = (gw(gateway), procs::own_cpu_seconds(), pool.cpu_seconds());
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let cpu = CpuUse {
        wall_s,
        gateway_s: diff(gw0, gw1),
        gateway_s_per_gb: None,
        bench_process_s: own1 - own0,
        pool_process_s: diff(pool0, pool1),
    };
    (result, cpu)
}

fn phase<T>(bytes: u64, result: T, mut cpu: CpuUse) -> Phase<T> {
    cpu.gateway_s_per_gb = cpu
        .gateway_s
        .map(|s| s / (bytes as f64 / (1u64 << 30) as f64));
    Phase { result, cpu }
}

/// Adds the gateway's fate (exited, and its last log lines) to an error when it died.
fn explain(e: anyhow::Error, gateway: &mut Option<&mut Child>) -> anyhow::Error {
    match gateway.as_deref_mut() {
        Some(g) => match g.exited() {
            Some(exit) => e.context(format!("{exit}; its log ends:\n{}", g.log_tail(15))),
            None => e,
        },
        None => e,
    }
}

fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default()
}
