//! One pool size's measurements on a running `tollgate dev`, in this order:
//!
//! 1. **bytes in**: a producer of large batches (1 KiB records, linger 5 ms) at a rising
//!    payload rate, a consumer group following the topic meanwhile (bytes out as they come);
//! 2. **bytes out**: [`READERS`] readers going through that topic from its start as fast as
//!    they can, over and over (one step: there is no rate to offer a reader);
//! 3. **requests**: a producer of one small record per request at a rising record rate;
//! 4. **connections**: connections authenticated and left idle, held in rising numbers, while a
//!    light producer ([`PROBE_RATE`]) measures the latency;
//! 5. (on the first pool size only) **broker start**: a tansu broker started with the pool's
//!    command line on the pool's store, timed to its first ApiVersions answer.
//!
//! A rising series stops at its first step over capacity, then measures one step halfway
//! between that one and the last step under ([`REFINE_ABOVE`]).
//!
//! Each step: the clients connect and get a first record through (unmeasured), run
//! `warm_up`, then `measure` is the window every figure comes from: records acknowledged in it,
//! the latency of records sent in it, the gateway's own per-second load samples inside it, and
//! the CPU time every process used in it.

use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use tollgate_load_tests::calibration::{self, find_knee, Knee, Over, Step};
use tollgate_load_tests::dev::{DevStack, LoadSample};
use tollgate_load_tests::procs::{self, Child};

use crate::load::{self, Readers, Shape, Take};
use crate::wire;

/// The bytes series' records: batched as a throughput client batches them.
pub const BYTES_SHAPE: Shape = Shape {
    record_bytes: 1024,
    linger_ms: 5,
    one_record_per_request: false,
};

/// The requests series' records: one small record per request, so that the pool's cost per
/// request, not per byte, sets the limit.
pub const REQUESTS_SHAPE: Shape = Shape {
    record_bytes: 100,
    linger_ms: 0,
    one_record_per_request: true,
};

/// Records per second the connections series' probe sends (one per request): light enough to
/// load nothing, frequent enough for a p99 over a few seconds.
pub const PROBE_RATE: f64 = 100.0;

/// Readers for bytes out, sharing the topic's partitions: 2 and 3 read alike on one broker
/// (30-45 MB/s in quick trials, within the noise).
pub const READERS: usize = 2;

/// The readers' `fetch.wait.max.ms`. tansu holds a fetch a good part of its wait even when it
/// has records (~190 ms at librdkafka's default of 500 ms), so a reader with the default
/// spends much of its time waiting: 21-30 MB/s where 20 ms reads 32-45 MB/s (one broker, quick
/// trials). A consumer catching up sets it low the same way.
pub const READER_FETCH_WAIT_MS: &str = "20";

/// A rising ramp that crossed its knee between steps further apart than this ratio measures
/// one more step halfway between (x1.8 steps leave the knee somewhere in an 80% gap; one more
/// step halves that, for one step's time).
pub const REFINE_ABOVE: f64 = 1.25;

/// How long the readers go on after their window, so that the gateway has sampled the window's
/// last second too (reads are bursty: a window of 3 s has 3 samples, not 2).
const TAIL: Duration = Duration::from_millis(1_200);

/// Partitions of every calibration topic: more than the largest pool measured (3), so every
/// broker serves some.
pub const PARTITIONS: i32 = 6;

/// A rising series of offered loads: as given, or from `start` times `factor` per step, until
/// the first step over capacity or `max_steps`.
#[derive(Debug, Clone)]
pub enum Ramp {
    Given(Vec<f64>),
    Rising {
        start: f64,
        factor: f64,
        max_steps: usize,
    },
}

impl Ramp {
    fn offered(&self, i: usize) -> Option<f64> {
        match self {
            Ramp::Given(steps) => steps.get(i).copied(),
            Ramp::Rising {
                start,
                factor,
                max_steps,
            } => (i < *max_steps).then(|| start * factor.powi(i as i32)),
        }
    }

    /// Given steps all run; a rising ramp stops at the first step over.
    fn stops_at_knee(&self) -> bool {
        matches!(self, Ramp::Rising { .. })
    }
}

/// How a pool size is measured.
#[derive(Debug, Clone)]
pub struct Plan {
    pub warm_up: Duration,
    pub measure: Duration,
    /// Longest wait for the acknowledgements after a step stops sending.
    pub drain: Duration,
    /// Payload bytes per second.
    pub bytes: Ramp,
    /// Records (requests) per second.
    pub requests: Ramp,
    /// Idle connections held, in rising numbers (0 first: the baseline).
    pub connections: Vec<u64>,
    /// Broker starts to time (on the first pool size).
    pub starts: usize,
    pub tansu: String,
    /// Longest wait, before each series, for the rest of the machine to go quiet.
    pub quiet_wait: Duration,
}

/// The gateway's load over a window: the mean of its per-second samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signals {
    pub bytes_in: f64,
    pub bytes_out: f64,
    pub requests: f64,
    pub connections: f64,
}

/// CPU seconds used in a window (user + system).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// The `tollgate dev` process.
    pub gateway: f64,
    /// Its tansu brokers.
    pub pool: f64,
    /// This process: the clients.
    pub clients: f64,
    /// Everything else on the machine (other people's builds on a shared machine).
    pub others: f64,
    /// The window's length.
    pub seconds: f64,
}

/// One measured step.
#[derive(Debug, Clone)]
pub struct Measured {
    pub step: Step,
    pub p50_ms: f64,
    pub gateway: Signals,
    /// Payload bytes per second the following consumers read (bytes series only).
    pub read_per_second: f64,
    pub cpu: Cpu,
    pub over: Option<Over>,
    pub client_errors: u64,
    pub first_error: Option<String>,
}

/// A series of steps and where it stopped following.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub steps: Vec<Measured>,
    pub knee: Option<Knee>,
}

impl Series {
    /// Adds a step in order of offered load, judges every step again and finds the knee;
    /// whether the new step is over.
    fn add(&mut self, m: Measured) -> bool {
        let offered = m.step.offered;
        let at = self.steps.partition_point(|s| s.step.offered <= offered);
        self.steps.insert(at, m);
        let steps = self.steps();
        for (m, verdict) in self.steps.iter_mut().zip(calibration::verdicts(&steps)) {
            m.over = verdict;
        }
        self.knee = find_knee(&steps);
        self.steps[at].over.is_some()
    }

    /// The offered load halfway (geometrically) between the last step under and the first
    /// over, when they are further apart than [`REFINE_ABOVE`].
    fn between_knee_steps(&self) -> Option<f64> {
        let knee = self.knee?;
        let (over, _) = knee.first_over?;
        let (low, high) = (
            self.steps[knee.step].step.offered,
            self.steps[over].step.offered,
        );
        (knee.bound == calibration::Bound::Knee && high > low * REFINE_ABOVE)
            .then(|| (low * high).sqrt())
    }

    pub fn steps(&self) -> Vec<Step> {
        self.steps.iter().map(|s| s.step).collect()
    }
}

/// Bytes out: what the readers took, as fast as they could.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Payload bytes per second the readers took.
    pub per_second: f64,
    pub gateway: Signals,
    pub cpu: Cpu,
    /// Seconds from starting the readers to their first record.
    pub first_record_after: f64,
}

/// Everything measured on one pool size.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub brokers: usize,
    /// From starting `tollgate dev` to its Kafka listener accepting.
    pub startup: Duration,
    pub bytes: Series,
    pub read: Read,
    pub requests: Series,
    pub connections: Series,
    /// Seconds from starting a tansu broker to its first answer.
    pub starts: Vec<f64>,
}

/// A point in time and the counters that windows are differences of.
struct Mark {
    at: Instant,
    unix: f64,
    gateway: f64,
    pool: f64,
    clients: f64,
    machine: f64,
    read: u64,
}

fn mark(stack: &DevStack, readers: Option<&Readers>) -> Mark {
    let (gateway, pool) = stack.cpu_seconds();
    Mark {
        at: Instant::now(),
        unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        gateway,
        pool,
        clients: procs::own_cpu_seconds(),
        machine: procs::machine_busy_seconds().unwrap_or(f64::NAN),
        read: readers.map_or(0, Readers::bytes),
    }
}

fn cpu_between(a: &Mark, b: &Mark) -> Cpu {
    let (gateway, pool, clients) = (
        b.gateway - a.gateway,
        b.pool - a.pool,
        b.clients - a.clients,
    );
    Cpu {
        gateway,
        pool,
        clients,
        others: (b.machine - a.machine - gateway - pool - clients).max(0.0),
        seconds: (b.at - a.at).as_secs_f64(),
    }
}

/// The mean of the gateway's samples that lie inside the window. The autoscaler samples about
/// once a second and stamps each sample with the whole second its tick fell in, so a sample
/// stamped `t` covers about the second before a tick somewhere in `t .. t + 1`: those stamped
/// from the window's start (rounded up) to a second before its end (rounded down) cover only
/// the window and, at its start, the step's warm-up; with `tail` (the load went on for
/// [`TAIL`] after the window) the one stamped with the end's second too. NaN when there are
/// none.
fn signals_between(samples: &[LoadSample], a: &Mark, b: &Mark, tail: bool) -> Signals {
    let end = b.unix.floor() as u64;
    let last = if tail { end } else { end.saturating_sub(1) };
    let first = a.unix.ceil() as u64;
    let inside: Vec<&LoadSample> = samples
        .iter()
        .filter(|s| (first..=last).contains(&s.time))
        .collect();
    let n = inside.len() as f64;
    let mean = |f: fn(&LoadSample) -> u64| {
        if inside.is_empty() {
            f64::NAN
        } else {
            inside.iter().map(|s| f(s) as f64).sum::<f64>() / n
        }
    };
    Signals {
        bytes_in: mean(|s| s.bytes_in_per_second),
        bytes_out: mean(|s| s.bytes_out_per_second),
        requests: mean(|s| s.requests_per_second),
        connections: mean(|s| s.connections),
    }
}

fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What a producer step gave: records acknowledged per second in the window, latencies of
/// records sent in it, and the window's marks.
struct Produced {
    acked_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    gateway: Signals,
    read_per_second: f64,
    cpu: Cpu,
    client_errors: u64,
    first_error: Option<String>,
}

/// Sends `rate` records per second of `shape` and measures the window.
fn produce_step(
    stack: &DevStack,
    config: &ClientConfig,
    topic: &str,
    shape: Shape,
    rate: f64,
    plan: &Plan,
    readers: Option<&Readers>,
) -> Result<Produced> {
    let origin = Instant::now();
    let step = load::produce(
        config,
        topic,
        shape,
        rate,
        plan.warm_up + plan.measure,
        plan.drain,
        origin,
    )?;
    sleep_until(step.started + plan.warm_up);
    let a = mark(stack, readers);
    sleep_until(step.started + plan.warm_up + plan.measure);
    let b = mark(stack, readers);
    let produced = step.finish()?;
    let samples = stack.history()?;
    let from = (a.at - origin).as_nanos() as u64;
    let to = (b.at - origin).as_nanos() as u64;
    let seconds = (b.at - a.at).as_secs_f64();
    let acked = produced
        .fates
        .iter()
        .filter(|f| f.acked && (from..to).contains(&f.done_ns))
        .count();
    let mut latencies: Vec<f64> = produced
        .fates
        .iter()
        .filter(|f| (from..to).contains(&f.sent_ns))
        .map(|f| f.done_ns.saturating_sub(f.sent_ns) as f64 / 1e6)
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(Produced {
        acked_per_second: acked as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        gateway: signals_between(&samples, &a, &b, false),
        read_per_second: (b.read - a.read) as f64 / seconds,
        cpu: cpu_between(&a, &b),
        client_errors: produced.client_errors,
        first_error: produced.first_error,
    })
}

/// Which signal a produce series loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BytesIn,
    Requests,
}

/// A produce series: steps of a rising rate until the first over (or as given).
fn produce_series(
    stack: &DevStack,
    kind: Kind,
    ramp: &Ramp,
    plan: &Plan,
) -> Result<(Series, String)> {
    let config = stack.gateway.client_config();
    let (topic, shape, follow) = match kind {
        Kind::BytesIn => ("calibrate-bytes", BYTES_SHAPE, true),
        Kind::Requests => ("calibrate-requests", REQUESTS_SHAPE, false),
    };
    load::create_topic(&config, topic, PARTITIONS)?;
    let readers = if follow {
        Some(Readers::start(
            &config,
            topic,
            Take::Group("calibrate-follow"),
            1,
        )?)
    } else {
        None
    };
    let mut series = Series::default();
    // The ramp's steps in turn; once a rising ramp is over, one step between the knee's.
    let (mut i, mut refined) = (0, false);
    let mut next = ramp.offered(0);
    while let Some(offered) = next {
        let rate = match kind {
            Kind::BytesIn => offered / shape.record_bytes as f64,
            Kind::Requests => offered,
        };
        let p = produce_step(stack, &config, topic, shape, rate, plan, readers.as_ref())
            .with_context(|| format!("{kind:?} step {offered:.0}/s"))?;
        let (achieved, signal) = match kind {
            Kind::BytesIn => (
                p.acked_per_second * shape.record_bytes as f64,
                p.gateway.bytes_in,
            ),
            Kind::Requests => (p.acked_per_second, p.gateway.requests),
        };
        let m = Measured {
            step: Step {
                offered,
                achieved,
                p99_ms: p.p99_ms,
                signal,
            },
            p50_ms: p.p50_ms,
            gateway: p.gateway,
            read_per_second: p.read_per_second,
            cpu: p.cpu,
            over: None,
            client_errors: p.client_errors,
            first_error: p.first_error,
        };
        progress!(
            "{} brokers, {kind:?}: offered {} -> {} (gateway {}), p50 {:.1} ms, p99 {:.1} ms{}",
            stack.brokers,
            crate::report::rate(kind == Kind::BytesIn, offered),
            crate::report::rate(kind == Kind::BytesIn, achieved),
            crate::report::rate(kind == Kind::BytesIn, signal),
            p.p50_ms,
            p.p99_ms,
            if m.client_errors > 0 {
                format!(", {} client errors", m.client_errors)
            } else {
                String::new()
            }
        );
        let over = series.add(m);
        next = if refined {
            None
        } else if over && ramp.stops_at_knee() {
            refined = true;
            series.between_knee_steps()
        } else {
            i += 1;
            ramp.offered(i)
        };
    }
    Ok((series, topic.to_owned()))
}

/// Reads `topic` from its start, over and over, as fast as [`READERS`] readers go.
fn read(stack: &DevStack, topic: &str, plan: &Plan) -> Result<Read> {
    let mut config = stack.gateway.client_config();
    config.set("fetch.wait.max.ms", READER_FETCH_WAIT_MS);
    let started = Instant::now();
    let take = Take::Assigned {
        partitions: PARTITIONS,
    };
    let readers = Readers::start(&config, topic, take, READERS)?;
    let deadline = started + Duration::from_secs(60);
    while readers.bytes() == 0 {
        if Instant::now() > deadline {
            bail!("no record read from {topic} in 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let first_record_after = started.elapsed().as_secs_f64();
    std::thread::sleep(plan.warm_up);
    let a = mark(stack, Some(&readers));
    std::thread::sleep(plan.measure);
    let b = mark(stack, Some(&readers));
    std::thread::sleep(TAIL);
    drop(readers);
    let samples = stack.history()?;
    let read = Read {
        per_second: (b.read - a.read) as f64 / (b.at - a.at).as_secs_f64(),
        gateway: signals_between(&samples, &a, &b, true),
        cpu: cpu_between(&a, &b),
        first_record_after,
    };
    progress!(
        "{} brokers, bytes out: {} (gateway {})",
        stack.brokers,
        crate::report::rate(true, read.per_second),
        crate::report::rate(true, read.gateway.bytes_out),
    );
    Ok(read)
}

/// Idle authenticated connections in rising numbers, with a light producer's latency.
fn connection_series(stack: &DevStack, plan: &Plan) -> Result<Series> {
    let config = stack.gateway.client_config();
    let topic = "calibrate-probe";
    load::create_topic(&config, topic, PARTITIONS)?;
    let (user, password) = stack.gateway.sasl_plain();
    let mut held: Vec<TcpStream> = Vec::new();
    let mut failed = 0u64;
    let mut first_failure = None;
    let mut series = Series::default();
    for &wanted in &plan.connections {
        let mut failures_in_a_row = 0;
        while (held.len() as u64) + failed < wanted && failures_in_a_row < 20 {
            match wire::sasl_plain(stack.gateway.kafka, &user, &password) {
                Ok(s) => {
                    held.push(s);
                    failures_in_a_row = 0;
                }
                Err(e) => {
                    failed += 1;
                    failures_in_a_row += 1;
                    first_failure.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        let p = produce_step(
            stack,
            &config,
            topic,
            REQUESTS_SHAPE,
            PROBE_RATE,
            plan,
            None,
        )
        .with_context(|| format!("probe with {wanted} connections held"))?;
        let m = Measured {
            step: Step {
                offered: wanted as f64,
                achieved: held.len() as f64,
                p99_ms: p.p99_ms,
                signal: p.gateway.connections,
            },
            p50_ms: p.p50_ms,
            gateway: p.gateway,
            read_per_second: 0.0,
            cpu: p.cpu,
            over: None,
            client_errors: p.client_errors,
            first_error: p.first_error.or_else(|| first_failure.clone()),
        };
        progress!(
            "{} brokers, connections: {wanted} wanted, {} held (gateway counts {:.0}), probe p50 \
             {:.1} ms, p99 {:.1} ms{}",
            stack.brokers,
            held.len(),
            p.gateway.connections,
            p.p50_ms,
            p.p99_ms,
            first_failure
                .as_ref()
                .map(|e| format!("; {failed} failed, first: {e}"))
                .unwrap_or_default()
        );
        if series.add(m) {
            break;
        }
    }
    Ok(series)
}

/// Times `n` tansu broker starts on the pool's store, with the pool's command line
/// (`gateway/src/devpool.rs`), from spawning to its first ApiVersions answer.
fn broker_starts(stack: &DevStack, tansu: &str, n: usize) -> Result<Vec<f64>> {
    let program = procs::resolve(tansu).with_context(|| format!("tansu not found: {tansu}"))?;
    let dir = stack.pool_dir();
    let mut starts = Vec::new();
    for i in 0..n {
        let addr = procs::free_addr()?;
        let url = format!("tcp://{addr}");
        let mut cmd = std::process::Command::new(&program);
        cmd.arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(["--cluster-id", "tollgate-dev"])
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env_remove("CLUSTER_ID")
            .env("RUST_LOG", "warn")
            .current_dir(&dir);
        let started = Instant::now();
        let mut broker = Child::spawn_command(
            "tansu (start timing)",
            cmd,
            dir.join(format!("calibrate-start-{i}.log")),
        )?;
        loop {
            if wire::answers(addr, Duration::from_millis(200)) {
                starts.push(started.elapsed().as_secs_f64());
                break;
            }
            if let Some(exit) = broker.exited() {
                bail!("{exit} before answering:\n{}", broker.log_tail(10));
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("tansu did not answer in 30 s:\n{}", broker.log_tail(10));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        broker.kill();
    }
    progress!(
        "broker start (tansu on the pool's store to its first answer): {}",
        starts
            .iter()
            .map(|s| format!("{s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(starts)
}

/// Waits up to `limit` for the rest of the machine to use under a quarter of a core over a
/// second, besides `stack` and this process; says so when it had to wait.
fn wait_quiet(stack: &DevStack, limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let started = Instant::now();
    let mut others = f64::NAN;
    while started.elapsed() < limit {
        let a = mark(stack, None);
        std::thread::sleep(Duration::from_secs(1));
        others = cpu_between(&a, &mark(stack, None)).others;
        if others < 0.25 {
            break;
        }
    }
    if started.elapsed() > Duration::from_secs(2) {
        progress!(
            "waited {:.0} s for other processes to leave the cores (now {others:.2} cores)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Measures one pool size on `stack`; `time_starts`: also time broker starts.
pub fn run(stack: &DevStack, plan: &Plan, time_starts: bool) -> Result<Run> {
    wait_quiet(stack, plan.quiet_wait);
    let (bytes, topic) = produce_series(stack, Kind::BytesIn, &plan.bytes, plan)?;
    wait_quiet(stack, plan.quiet_wait);
    let read = read(stack, &topic, plan)?;
    wait_quiet(stack, plan.quiet_wait);
    let (requests, _) = produce_series(stack, Kind::Requests, &plan.requests, plan)?;
    wait_quiet(stack, plan.quiet_wait);
    let connections = connection_series(stack, plan)?;
    let starts = if time_starts {
        broker_starts(stack, &plan.tansu, plan.starts)?
    } else {
        Vec::new()
    };
    Ok(Run {
        brokers: stack.brokers,
        startup: stack.startup,
        bytes,
        read,
        requests,
        connections,
        starts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps() {
        let r = Ramp::Rising {
            start: 2.0,
            factor: 1.5,
            max_steps: 3,
        };
        assert_eq!(
            (0..4).map(|i| r.offered(i)).collect::<Vec<_>>(),
            [Some(2.0), Some(3.0), Some(4.5), None]
        );
        assert!(r.stops_at_knee());
        let g = Ramp::Given(vec![1.0, 5.0]);
        assert_eq!(g.offered(1), Some(5.0));
        assert_eq!(g.offered(2), None);
        assert!(!g.stops_at_knee());
    }

    fn measured(offered: f64, achieved: f64, p99_ms: f64) -> Measured {
        Measured {
            step: Step {
                offered,
                achieved,
                p99_ms,
                signal: achieved,
            },
            p50_ms: p99_ms / 2.0,
            gateway: Signals::default(),
            read_per_second: 0.0,
            cpu: Cpu::default(),
            over: None,
            client_errors: 0,
            first_error: None,
        }
    }

    #[test]
    fn a_step_between_the_knee_steps_goes_in_order_and_moves_the_knee() {
        let mut s = Series::default();
        assert!(!s.add(measured(2.0, 2.0, 10.0)));
        assert!(!s.add(measured(3.6, 3.6, 12.0)));
        assert!(s.add(measured(6.48, 4.0, 900.0)));
        let between = s.between_knee_steps().unwrap();
        assert!((between - (3.6f64 * 6.48).sqrt()).abs() < 1e-9);
        assert!(!s.add(measured(between, between, 20.0)));
        let offered: Vec<f64> = s.steps.iter().map(|m| m.step.offered).collect();
        assert_eq!(offered, [2.0, 3.6, between, 6.48]);
        let knee = s.knee.unwrap();
        assert_eq!((knee.step, knee.capacity), (2, between));
        assert_eq!(s.steps[3].over, Some(Over::Behind));
        // Steps closer than REFINE_ABOVE are not split again.
        let mut close = Series::default();
        close.add(measured(10.0, 10.0, 10.0));
        close.add(measured(12.0, 5.0, 10.0));
        assert_eq!(close.between_knee_steps(), None);
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
