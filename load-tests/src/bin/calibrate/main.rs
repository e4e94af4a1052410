//! `calibrate`: measures what one pool broker carries, through the gateway, and writes the
//! capacity file `tollgate autoscale simulate` and `tune` read.
//!
//! For each pool size (1, 2, 3 brokers by default) it starts `tollgate dev --brokers N` (tansu
//! brokers on one SQLite file), drives stepped load through the gateway with librdkafka
//! clients (`measure`), finds each signal's knee (`tollgate_load_tests::calibration`), prints
//! the tables (`report`) and writes the file from the smallest pool.
//!
//!     cargo build --release -p tollgate-gateway
//!     cargo run --release -p tollgate-load-tests --bin calibrate -- --out target/capacity.json
//!
//! Modules: `measure` (the series on one pool size), `load` (the librdkafka clients), `wire`
//! (ApiVersions and SASL by hand, for idle connections and broker start timing), `report`.
//! The figures of a run and how to read them are in `load-tests/README.md`.

/// A progress line on stderr, stamped with the seconds since the run started.
macro_rules! progress {
    ($($arg:tt)*) => {
        tollgate_load_tests::progress("calibrate", format_args!($($arg)*))
    };
}

mod load;
mod measure;
mod report;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rust_decimal::Decimal;
use tollgate_load_tests::calibration::{self, CapacityFile, PerBroker};
use tollgate_load_tests::dev::DevLaunch;
use tollgate_load_tests::procs;

use crate::measure::{Plan, Ramp, Run};

/// Measures one pool broker's capacity per signal through the gateway, and writes the
/// capacity file of `tollgate autoscale simulate --capacity`.
#[derive(Parser, Debug)]
#[command(name = "calibrate")]
struct Args {
    /// The gateway binary; default: `tollgate` next to this binary (target/release).
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate: Option<PathBuf>,
    /// The tansu binary (a path, or a name on PATH).
    #[arg(long, env = "TOLLGATE_TANSU", default_value = "tansu")]
    tansu: String,
    /// Pool sizes to measure, in order; the file's per-broker figures come from the smallest.
    /// Default: 1,2,3 (with --quick: 1).
    #[arg(long, env = "TOLLGATE_CALIBRATE_BROKERS", value_delimiter = ',')]
    brokers: Vec<usize>,
    /// Payload MB/s (10^6 bytes) of the bytes-in steps, all run. Default: from 2 MB/s, x1.8 a
    /// step, until the first step over capacity (at most 9 steps).
    #[arg(long, env = "TOLLGATE_CALIBRATE_STEPS", value_delimiter = ',')]
    steps: Vec<f64>,
    /// Requests per second of the requests steps, all run. Default: from 250/s, x1.8 a step,
    /// until the first step over capacity (at most 9 steps).
    #[arg(long, env = "TOLLGATE_CALIBRATE_REQUEST_STEPS", value_delimiter = ',')]
    request_steps: Vec<f64>,
    /// Idle authenticated connections held at each connections step; the first is the
    /// baseline. Default: 0,500,2000 (with --quick: 0,100).
    #[arg(
        long,
        env = "TOLLGATE_CALIBRATE_CONNECTION_STEPS",
        value_delimiter = ','
    )]
    connection_steps: Vec<u64>,
    /// Seconds each step is measured for, after its warm-up. Default: 3 (with --quick: 2).
    #[arg(long, env = "TOLLGATE_CALIBRATE_MEASURE_SECONDS")]
    measure_seconds: Option<f64>,
    /// Seconds each step runs at its rate before the measuring starts.
    #[arg(
        long,
        env = "TOLLGATE_CALIBRATE_WARM_UP_SECONDS",
        default_value_t = 1.0
    )]
    warm_up_seconds: f64,
    /// Tansu broker starts to time, on the first pool size. Default: 3 (with --quick: 1).
    #[arg(long, env = "TOLLGATE_CALIBRATE_STARTS")]
    starts: Option<usize>,
    /// Price of one broker-hour written to the file, a decimal. The default is the price of an
    /// on-demand 2-vCPU, 8 GiB cloud instance in round figures; put your own.
    #[arg(long, env = "TOLLGATE_CALIBRATE_PRICE_PER_BROKER_HOUR", default_value = "0.21", value_parser = price)]
    price_per_broker_hour: Decimal,
    /// Where the capacity file goes.
    #[arg(
        long,
        env = "TOLLGATE_CALIBRATE_OUT",
        default_value = "target/capacity.json"
    )]
    out: PathBuf,
    /// Before each series, wait up to this many seconds for the rest of the machine to go
    /// quiet (other processes using under a quarter of a core over a second). On a shared
    /// machine other builds and tests take cores from the pool; 0 does not wait.
    #[arg(long, env = "TOLLGATE_CALIBRATE_QUIET_WAIT", default_value_t = 0)]
    quiet_wait: u64,
    /// A smoke test (~1 minute): one pool size, fewer and shorter steps, far apart.
    #[arg(long, env = "TOLLGATE_CALIBRATE_QUICK")]
    quick: bool,
    /// Hard limit of the whole run, in seconds: past it the run kills what it started and
    /// exits with status 3.
    #[arg(long, env = "TOLLGATE_CALIBRATE_MAX_SECONDS", default_value_t = 900)]
    max_seconds: u64,
}

fn price(s: &str) -> Result<Decimal, String> {
    Decimal::from_str(s)
        .ok()
        .filter(|p| !p.is_sign_negative())
        .ok_or_else(|| format!("{s:?} is not a decimal of at least 0"))
}

fn main() -> ExitCode {
    tollgate_load_tests::start_clock();
    let args = Args::parse();
    let limit = Duration::from_secs(args.max_seconds);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "calibrate: still running after {} s (--max-seconds); stopping",
            limit.as_secs()
        );
        // The gateway's brokers are its children: by pid, before the gateway goes.
        for pid in procs::running_children() {
            for below in procs::descendants(pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &below.to_string()])
                    .status();
            }
        }
        procs::kill_all_children();
        std::process::exit(3);
    });
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calibrate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The plan from the flags and `--quick`.
fn plan(args: &Args) -> Result<(Vec<usize>, Plan)> {
    let quick = args.quick;
    let mut brokers = if args.brokers.is_empty() {
        if quick {
            vec![1]
        } else {
            vec![1, 2, 3]
        }
    } else {
        args.brokers.clone()
    };
    brokers.dedup();
    if brokers.contains(&0) {
        bail!("--brokers: a pool has at least one broker");
    }
    let measure = args
        .measure_seconds
        .unwrap_or(if quick { 2.0 } else { 3.0 });
    // The gateway samples its load once a second; a window needs whole seconds of samples
    // inside it (`measure::signals_between`).
    if !(measure >= 2.0 && args.warm_up_seconds >= 0.0) {
        bail!("--measure-seconds must be at least 2 and --warm-up-seconds at least 0");
    }
    // Quick: three steps far apart, enough to cross the knee of the local pool (and one
    // between the knee's two steps).
    let (factor, max_steps) = if quick { (3.0, 3) } else { (1.8, 9) };
    let ramp = |given: &[f64], scale: f64, start: f64| {
        if given.is_empty() {
            Ramp::Rising {
                start,
                factor,
                max_steps,
            }
        } else {
            Ramp::Given(given.iter().map(|v| v * scale).collect())
        }
    };
    if args
        .steps
        .iter()
        .chain(&args.request_steps)
        .any(|v| v.is_nan() || *v <= 0.0)
    {
        bail!("--steps and --request-steps must be above 0");
    }
    let connections = if args.connection_steps.is_empty() {
        if quick {
            vec![0, 100]
        } else {
            vec![0, 500, 2000]
        }
    } else {
        args.connection_steps.clone()
    };
    Ok((
        brokers,
        Plan {
            warm_up: Duration::from_secs_f64(args.warm_up_seconds),
            measure: Duration::from_secs_f64(measure),
            drain: Duration::from_secs(5),
            bytes: ramp(&args.steps, 1e6, if quick { 4e6 } else { 2e6 }),
            requests: ramp(&args.request_steps, 1.0, if quick { 400.0 } else { 250.0 }),
            connections,
            starts: args.starts.unwrap_or(if quick { 1 } else { 3 }),
            tansu: args.tansu.clone(),
            quiet_wait: Duration::from_secs(args.quiet_wait),
        },
    ))
}

fn run(args: &Args) -> Result<()> {
    let tollgate = gateway_binary(args)?;
    if procs::resolve(&args.tansu).is_none() {
        bail!(
            "tansu not found ({}): install it (shared/POOL.md: cargo install tansu --version \
             0.6.0 --locked --features \"dynostore libsql postgres\") or pass --tansu PATH",
            args.tansu
        );
    }
    let (brokers, plan) = plan(args)?;
    let work = std::env::temp_dir().join(format!("calibrate-{}", std::process::id()));
    let started = Instant::now();
    let mut runs: Vec<Run> = Vec::new();
    let smallest = *brokers.iter().min().context("no pool size")?;
    for &n in &brokers {
        progress!("starting tollgate dev --brokers {n}");
        // On failure the data dir stays, with the stack's and the brokers' logs.
        let dir = work.join(format!("brokers-{n}"));
        let logs = || format!("logs in {}", dir.display());
        let stack = DevLaunch::new(&tollgate, &args.tansu, n, dir.clone())
            .start()
            .with_context(logs)?;
        progress!(
            "tollgate dev with {n} brokers up in {:.1} s",
            stack.startup.as_secs_f64()
        );
        let measured = measure::run(
            &stack,
            &plan,
            n == smallest && !runs.iter().any(|r| r.brokers == n),
        );
        drop(stack);
        runs.push(measured.with_context(logs)?);
    }
    let base = runs
        .iter()
        .find(|r| r.brokers == smallest)
        .context("no run of the smallest pool")?;
    let file = capacity_file(base, args.price_per_broker_hour)?;
    let settings = format!(
        "Steps of {:.0} s measured after {:.0} s at the rate; {} pool sizes in {:.0} s; command: `{}`.",
        plan.measure.as_secs_f64(),
        plan.warm_up.as_secs_f64(),
        runs.len(),
        started.elapsed().as_secs_f64(),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!("{}", report::tables(&runs, &file, base, &settings));
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, file.to_json())
        .with_context(|| format!("writing {}", args.out.display()))?;
    progress!("capacity file written to {}", args.out.display());
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// The capacity file from the smallest pool's run, its figures divided by its size.
fn capacity_file(base: &Run, price: Decimal) -> Result<CapacityFile> {
    let n = base.brokers as f64;
    let knee = |series: &measure::Series, name: &str| {
        series
            .knee
            .with_context(|| format!("the {name} series measured no step"))
    };
    let bytes = knee(&base.bytes, "bytes-in")?;
    let requests = knee(&base.requests, "requests")?;
    let connections = knee(&base.connections, "connections")?;
    let start = base.starts.iter().copied().fold(0.0, f64::max);
    let per_broker = |figure: f64, name: &str| {
        calibration::whole(figure / n).with_context(|| {
            format!(
                "no {name} figure from the gateway ({figure}): it counted nothing in the \
                 window, or sampled nothing (a longer --measure-seconds helps)"
            )
        })
    };
    Ok(CapacityFile {
        per_broker: PerBroker {
            bytes_in_per_second: per_broker(bytes.capacity, "bytes in")?,
            bytes_out_per_second: per_broker(base.read.gateway.bytes_out, "bytes out")?,
            requests_per_second: per_broker(requests.capacity, "requests")?,
            connections: per_broker(connections.capacity, "connections")?,
        },
        // Whole seconds, rounded up; at least 1 (the simulator's unit).
        start_seconds: (start.ceil() as u32).max(1),
        drain_seconds: calibration::DRAIN_SECONDS,
        price_per_broker_hour: price.normalize().to_string(),
        latency_ms: calibration::latency_curve(&base.bytes.steps(), &bytes),
    })
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
