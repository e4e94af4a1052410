//! `proxy-bench`: what the gateway costs, measured with one client (librdkafka) against one
//! pool, directly and through the gateway, and what metering, quotas, metrics or TLS cost the
//! gateway.
//!
//! For each pool (librdkafka's mock cluster, in this process; tansu with its memory engine) and
//! each path (direct, gateway, and a second gateway to compare with: `--no-metering`, or with
//! `--compare no-quotas` metering on and every quota off, or with `--compare no-metrics`
//! `--no-metrics`: [`WITHOUT`], the gateway less one thing; or with `--compare plaintext` the
//! gateway path serving TLS and the second the same build in plaintext) it measures produce and
//! consume throughput, delivery latency at half of the direct produce throughput (with
//! `--compare plaintext`, of the slowest path's), and the gateway process's CPU time; then
//! prints a table with the ratios and writes it all as JSON.
//!
//! The gateway path's cluster has its quotas enforced but set far above what a run reaches
//! (`--quotas unbound`, the default; `tollgate_load_tests::admin::QuotaSetting`): the
//! gateway's defaults (Amazon MSK Serverless's limits: 5 MiB/s per partition, 200 MiB/s in,
//! 15,000 requests/s) would throttle the runs, whose figures would then measure the quotas.
//! After the runs each gateway's `quota_use` is read back: a cluster that was throttled or
//! refused anything makes the run's figures invalid, which the table, the JSON
//! (`quotas_bound`) and the exit status (4) say. With `--redis-url` (or `--start-redis`) both
//! gateways share rate quotas through Redis, as instances of one deployment do.
//!
//!     cargo build --release -p tollgate-gateway
//!     cargo run --release -p tollgate-load-tests --bin proxy-bench -- --out target/proxy-bench.json
//!     cargo run --release -p tollgate-load-tests --bin proxy-bench -- --compare no-quotas --start-redis
//!     cargo run --release -p tollgate-load-tests --bin proxy-bench -- --pools mock --compare no-metrics --pin
//!     cargo run --release -p tollgate-load-tests --bin proxy-bench -- --pools mock --compare plaintext --pin
//!
//! Modules: `bench` (one pool's rounds over the three paths), `pool` (the pools and topic
//! creation), `gateway` (the gateway processes: less one thing or not, TLS or not, their
//! quotas, Redis), `tls` (the certificates for `--compare plaintext`),
//! `workload` (the three measurements), `report` (figures, medians, ratios, table, JSON). Child
//! processes, the admin API client and the gateway launcher are the library's
//! (`tollgate_load_tests`). The figures and how to read them are in `load-tests/README.md`.

/// A progress line on stderr, stamped with the seconds since the run started.
macro_rules! progress {
    ($($arg:tt)*) => {
        tollgate_load_tests::progress("proxy-bench", format_args!($($arg)*))
    };
}

mod bench;
mod gateway;
mod malloc;
mod pin;
mod pool;
mod report;
mod tls;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use tollgate_load_tests::admin::QuotaSetting;
use tollgate_load_tests::procs;

use crate::pool::PoolKind;
use crate::report::{PathKind, Report};

/// Measures the gateway's cost against direct access to the same pool with the same client.
#[derive(Parser, Debug)]
#[command(name = "proxy-bench")]
pub struct Args {
    /// The gateway binary; default: `tollgate` next to this binary (target/release).
    #[arg(long, env = "TOLLGATE_BIN")]
    pub tollgate: Option<PathBuf>,
    /// The tansu binary (a path, or a name on PATH).
    #[arg(long, env = "TOLLGATE_TANSU", default_value = "tansu")]
    pub tansu: String,
    /// Pools to run against, in order.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_POOLS",
        value_delimiter = ',',
        default_value = "mock,tansu"
    )]
    pub pools: Vec<PoolKind>,
    /// Records produced (and consumed back) per throughput run. Default: 500,000 on the mock
    /// cluster (fast enough that fewer make runs too short to time well), 200,000 on tansu
    /// (whose fetches take ~0.2 s each, so consuming is slow).
    #[arg(long, env = "TOLLGATE_BENCH_MESSAGES")]
    pub messages: Option<u64>,
    /// Bytes per record value.
    #[arg(long, env = "TOLLGATE_BENCH_SIZE", default_value_t = 1024)]
    pub size: usize,
    /// Partitions of each benchmark topic. Default: 6 on tansu; on the mock cluster, which
    /// keeps only the last 5 MiB of each partition, enough that a throughput run fills each
    /// partition to about a third of that (at least 6).
    #[arg(long, env = "TOLLGATE_BENCH_PARTITIONS")]
    pub partitions: Option<i32>,
    /// Rounds: each path's throughput and latency runs are repeated this many times, the
    /// paths taking turns in a rotating order, and the medians are reported.
    #[arg(long, env = "TOLLGATE_BENCH_ROUNDS", default_value_t = 3)]
    pub rounds: u32,
    /// After the throughput rounds, read the last round's records back this many more times on
    /// every path, each time with a fresh group and the paths taking turns. These reads count
    /// in the consume medians: the same records, in the same pool state, without the pool's
    /// memory growing a round's worth each time (the mock cluster deletes nothing).
    #[arg(long, env = "TOLLGATE_BENCH_CONSUME_ROUNDS", default_value_t = 0)]
    pub consume_rounds: u32,
    /// Seconds each latency run sends for.
    #[arg(long, env = "TOLLGATE_BENCH_LATENCY_SECONDS", default_value_t = 3.0)]
    pub latency_seconds: f64,
    /// Records per second of the latency runs; default: half of the pool's direct produce
    /// throughput (with `--compare plaintext`, half of the slowest path's, so that the TLS path
    /// is not measured beyond what its clients can send).
    #[arg(long, env = "TOLLGATE_BENCH_LATENCY_RATE")]
    pub latency_rate: Option<f64>,
    /// Hard limit of each phase (produce, consume, latency), in seconds.
    #[arg(long, env = "TOLLGATE_BENCH_PHASE_TIMEOUT", default_value_t = 90)]
    pub phase_timeout: u64,
    /// Hard limit of the whole run, in seconds: past it the run kills what it started and
    /// exits with status 3.
    #[arg(long, env = "TOLLGATE_BENCH_MAX_SECONDS", default_value_t = 900)]
    pub max_seconds: u64,
    /// Before each measured phase, wait up to this many seconds for the rest of the machine
    /// to go quiet (other processes using under a quarter of a core over a second). On a
    /// shared machine other builds and tests take cores from the benchmark; 0 does not wait.
    #[arg(long, env = "TOLLGATE_BENCH_QUIET_WAIT", default_value_t = 0)]
    pub quiet_wait: u64,
    /// Run the mock cluster with three brokers, partition leaders and group coordinators
    /// spread over them, and give the gateway all three. Off by default: the gateway routes
    /// each request whole to one broker, so the mock cluster has one broker leading everything.
    #[arg(long, env = "TOLLGATE_BENCH_SPREAD_LEADERS")]
    pub spread_leaders: bool,
    /// A librdkafka property for every client on every path, KEY=VALUE (repeatable), e.g.
    /// `--client-config fetch.wait.max.ms=100`. It replaces the benchmark's own setting.
    #[arg(long = "client-config", value_parser = key_value)]
    pub client_config: Vec<(String, String)>,
    /// `--lanes` for the gateways: nodes presented per address. Default: the gateway's, one
    /// per pool broker (1, or 3 with `--spread-leaders`).
    #[arg(long, env = "TOLLGATE_BENCH_LANES")]
    pub lanes: Option<usize>,
    /// Leave glibc's malloc as it is in the benchmark's process, which holds the mock cluster
    /// (see `malloc.rs`: by default the benchmark re-executes itself so that freed memory is
    /// reused, and warms the memory the mock's runs keep).
    #[arg(long, env = "TOLLGATE_BENCH_MALLOC_AS_IS")]
    pub malloc_as_is: bool,
    /// Give the gateway cores of its own, as it has when deployed: the clients run on CPU 0 on
    /// every path, the pool (tansu's process, or the mock cluster's thread) on CPU 1 when the
    /// machine has three CPUs or more, else beside the clients on CPU 0, and the gateway on the
    /// rest (`taskset`). Without it every process shares every core, and the CPU the gateway
    /// uses is taken from the client and the pool: on a 2-core machine that, not the gateway's
    /// latency, sets the throughput ratio.
    #[arg(long, env = "TOLLGATE_BENCH_PIN")]
    pub pin: bool,
    /// The quotas of the gateway path's cluster (and of the second path's, but with
    /// `--compare no-quotas`): `unbound`, every quota set far above anything a run reaches
    /// (2^50 bytes, 2^40 counts), so the gateway does all its quota accounting and none binds;
    /// `off`, every quota null; or `defaults`, the gateway's own (Amazon MSK Serverless's:
    /// 5 MiB/s per partition, 200 MiB/s in, 400 out, 15,000 requests/s), which the runs here
    /// exceed, so that the figures then measure the quotas. `defaults` sends no quotas at all,
    /// as against a gateway build without them.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_QUOTAS",
        value_enum,
        default_value_t = QuotaSetting::Unbound
    )]
    pub quotas: QuotaSetting,
    /// The second gateway path, to compare the gateway path with: `no-metering` (the same
    /// quotas, `--no-metering`: what metering costs), `no-quotas` (metering on, every quota
    /// null: what quota accounting costs, with `--quotas unbound`), `no-metrics` (the same
    /// quotas, `--no-metrics`: what counting and timing for metrics costs) or `plaintext` (the
    /// gateway path serves TLS, `--tls-cert`/`--tls-key` with a certificate made at run time
    /// by the `openssl` command, its clients on SASL_SSL; the second path is the same build,
    /// metering and quotas in plaintext: what TLS costs).
    #[arg(
        long,
        env = "TOLLGATE_BENCH_COMPARE",
        value_enum,
        default_value_t = Compare::NoMetering
    )]
    pub compare: Compare,
    /// Redis for both gateways (`tollgate serve --redis-url`): rate quotas are then leased
    /// through it every 100 ms, as instances of one deployment share them, and usage and
    /// clusters are kept there too. Give a Redis of its own (the gateways sync their clusters
    /// through it, so a Redis used before carries the old runs' clusters into every gateway):
    /// see `--start-redis`.
    #[arg(long, env = "TOLLGATE_BENCH_REDIS_URL", conflicts_with = "start_redis")]
    pub redis_url: Option<String>,
    /// Start a fresh `redis-server` (on PATH; Debian's package) per pool, on a free loopback
    /// port without persistence, and give it to both gateways as with `--redis-url`. Its CPU
    /// time is reported per phase (`redis_s`); under `--pin` it runs on the gateway's CPUs.
    #[arg(long, env = "TOLLGATE_BENCH_START_REDIS")]
    pub start_redis: bool,
    /// Where the JSON report goes.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_OUT",
        default_value = "target/proxy-bench.json"
    )]
    pub out: PathBuf,
}

/// `--compare`: what the second gateway path is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compare {
    /// `--no-metering`, same quotas.
    NoMetering,
    /// Metering on, every quota null.
    NoQuotas,
    /// `--no-metrics`, same quotas.
    NoMetrics,
    /// The gateway path over TLS, the second path the same gateway in plaintext.
    Plaintext,
}

/// A second gateway path that is the gateway path less one thing it does, to measure what that
/// thing costs: every path's figures are measured alike, and the summary reports the gateway
/// path against this one.
pub struct Without {
    pub compare: Compare,
    /// The thing, as the summary names it.
    pub what: &'static str,
    pub path: PathKind,
    /// How the second gateway differs from the gateway path's, for the table's heading.
    pub differs: &'static str,
    /// The gateway's hidden flag that turns the thing off; `None` where the thing is the
    /// cluster's (its quotas).
    pub flag: Option<&'static str>,
    /// The second path's cluster's quotas; `None`: the run's `--quotas`, as the gateway path's.
    pub quotas: Option<QuotaSetting>,
}

/// Every `--compare` that measures the gateway less one thing (`plaintext` does not: there the
/// gateway path is the one with more).
pub const WITHOUT: [Without; 3] = [
    Without {
        compare: Compare::NoMetering,
        what: "metering",
        path: PathKind::GatewayNoMetering,
        differs: "--no-metering, same quotas",
        flag: Some("--no-metering"),
        quotas: None,
    },
    Without {
        compare: Compare::NoQuotas,
        what: "quota accounting",
        path: PathKind::GatewayNoQuotas,
        differs: "metering on, every quota null",
        flag: None,
        quotas: Some(QuotaSetting::Off),
    },
    Without {
        compare: Compare::NoMetrics,
        what: "metrics",
        path: PathKind::GatewayNoMetrics,
        differs: "--no-metrics, same quotas",
        flag: Some("--no-metrics"),
        quotas: None,
    },
];

impl Compare {
    /// What the second path goes without; `None` for `plaintext`.
    pub fn without(self) -> Option<&'static Without> {
        WITHOUT.iter().find(|w| w.compare == self)
    }
}

/// Exit status of a run whose gateway clusters were throttled or refused by their quotas
/// (other than with `--quotas defaults`, which asks for that).
const EXIT_QUOTAS_BOUND: u8 = 4;

fn main() -> ExitCode {
    tollgate_load_tests::start_clock();
    let args = Args::parse();
    let tune = !args.malloc_as_is && !malloc::tuned();
    let pin = (args.pin && !pin::pinned()).then_some(pin::BENCH_CPUS);
    if tune || pin.is_some() {
        let e = malloc::reexec(tune, pin);
        eprintln!("proxy-bench: could not re-execute (GLIBC_TUNABLES, taskset): {e}");
        if pin.is_some() {
            return ExitCode::FAILURE;
        }
    }
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
        Ok(bound) if bound && args.quotas != QuotaSetting::Defaults => {
            eprintln!(
                "proxy-bench: QUOTAS BOUND: a gateway path's cluster was throttled or refused \
                 by its quotas (see the table and `quotas_bound` in the report); its figures \
                 measure the quotas, not the gateway"
            );
            ExitCode::from(EXIT_QUOTAS_BOUND)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmark and writes its report; true when a gateway path's quotas bound.
fn run(args: &Args) -> Result<bool> {
    if args.messages == Some(0)
        || args.size == 0
        || args.rounds == 0
        || args.partitions.is_some_and(|p| p < 1)
    {
        bail!("--messages, --size, --rounds and --partitions must be positive");
    }
    let tollgate = gateway_binary(args)?;
    workload::set_overrides(args.client_config.clone());
    let work = std::env::temp_dir().join(format!("proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // `--compare plaintext`: the gateway path's certificate, one for the whole run.
    let tls = match args.compare {
        Compare::Plaintext => {
            Some(tls::make(&work.join("tls")).context("making the TLS gateway's certificates")?)
        }
        Compare::NoMetering | Compare::NoQuotas | Compare::NoMetrics => None,
    };
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
            rounds: args.rounds,
            consume_rounds: args.consume_rounds,
            acks: "all",
            idempotence: true,
            linger_ms: 5,
            latency_seconds: args.latency_seconds,
            latency_load: match (args.latency_rate, args.compare) {
                (Some(_), _) => "--latency-rate records/s, same rate on every path",
                (None, Compare::Plaintext) => {
                    "half of the slowest path's produce throughput (records/s), same rate on \
                     every path"
                }
                (None, _) => {
                    "half of direct produce throughput (records/s), same rate on every path"
                }
            },
            spread_leaders: args.spread_leaders,
            lanes: args.lanes,
            client_config: args
                .client_config
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            librdkafka: rdkafka::util::get_rdkafka_version().1,
            gateway: tollgate.display().to_string(),
            pin: pin::placement(args).map(|p| p.describe()),
            quotas: args.quotas,
            compare: args.compare,
            gateway_tls: tls.is_some(),
            tls_certificate: tls.as_ref().map(|t| t.description.clone()),
            redis: args.start_redis || args.redis_url.is_some(),
            redis_started: args.start_redis,
            malloc: if malloc::tuned() {
                malloc::TUNABLES.into()
            } else {
                "default".into()
            },
        },
        pools: Vec::new(),
    };
    for &kind in &args.pools {
        progress!("pool {}", kind.name());
        let result = bench::pool(args, kind, &tollgate, tls.as_ref(), &work.join(kind.name()));
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
    Ok(report.quotas_bound())
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
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
