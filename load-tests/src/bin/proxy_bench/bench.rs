//! One pool's runs: the three paths (direct, gateway, and the gateway to compare with: without
//! metering, quotas or metrics, or in plaintext while the gateway path serves TLS), each measured
//! `--rounds` times with the paths taking turns in a rotating order, so that drift on a shared
//! machine (other builds, the pool's memory filling) does not favour one path.
//!
//! First the throughput rounds (produce N records to a fresh topic, read them back with a fresh
//! group); with `--consume-rounds K`, K more reads of the last round's records on every path,
//! the paths taking turns (the same records in the same pool state, and no memory growing on
//! the mock); then the latency rounds, at half the median direct produce rate, each on a fresh
//! topic. Topics are deleted once measured where the pool can. Both gateways run for the whole
//! pool, started before the first round (with `--start-redis`, after a Redis of the pool's
//! own); after the last, each gateway is asked what its cluster used of its quotas.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use tollgate_load_tests::procs::{self, Child};

use crate::gateway::{self, Gateway, Setup, Started};
use crate::pool::{Pool, PoolKind, MOCK_THREADS};
use crate::report::{CpuUse, PathKind, PathResult, Phase, PoolResult, Stat, ThroughputRound};
use crate::workload::{self, Endpoint, Spread};
use crate::{Args, Compare};

/// One path under test and how to reach it.
struct Lane {
    result: PathResult,
    /// None when the path cannot run (not supported, failed to start, its gateway died).
    endpoint: Option<Endpoint>,
    gateway: Option<Box<Gateway>>,
    /// Client-visible names start with this.
    base: String,
    /// What the gateway puts before client-visible names on the pool.
    pool_prefix: String,
}

impl Lane {
    fn gateway_process(&mut self) -> Option<&mut Child> {
        self.gateway.as_mut().map(|g| &mut g.process)
    }

    /// Records `e` for `what`; stops the lane when its gateway has died.
    fn failed(&mut self, what: &str, e: anyhow::Error) {
        let died = self
            .gateway_process()
            .and_then(|g| g.exited().map(|exit| (exit, g.log_tail(15))));
        match died {
            Some((exit, log)) => {
                let e = e.context(format!("{exit}; its log ends:\n{log}"));
                self.result.failed(what, &e);
                self.endpoint = None;
            }
            None => self.result.failed(what, &e),
        }
    }
}

pub fn pool(
    args: &Args,
    kind: PoolKind,
    tollgate: &Path,
    tls: Option<&crate::tls::Files>,
    work: &Path,
) -> PoolResult {
    let mut result = PoolResult {
        pool: kind.name(),
        description: String::new(),
        messages: messages(args, kind),
        partitions: partitions(args, kind),
        latency_partitions: latency_partitions(args),
        skipped: None,
        paths: Vec::new(),
        summary: None,
    };
    let pool_cpus = crate::pin::placement(args).and_then(|p| p.pool);
    let started = std::fs::create_dir_all(work)
        .map_err(anyhow::Error::from)
        .and_then(|()| match kind {
            PoolKind::Mock => {
                if crate::malloc::tuned() {
                    // What the throughput runs of every path keep (the mock deletes nothing).
                    let kept = messages(args, kind) * args.size as u64 * 3 * args.rounds as u64;
                    let warmed = crate::malloc::warm(kept + kept / 4);
                    progress!(
                        "mock: {} MB of memory warmed for its logs",
                        warmed / 1_000_000
                    );
                }
                Pool::mock(args.spread_leaders, pool_cpus.as_deref())
            }
            PoolKind::Tansu => Pool::tansu(&args.tansu, work, pool_cpus.as_deref()),
        });
    let mut pool = match started {
        Ok(p) => p,
        Err(e) => {
            progress!("pool {} skipped: {e:#}", kind.name());
            result.skipped = Some(format!("{e:#}"));
            return result;
        }
    };
    // With --start-redis, a Redis of the pool's own, before the gateways that use it.
    let mut redis_url = args.redis_url.clone();
    if args.start_redis {
        let cpus = crate::pin::placement(args).map(|p| p.gateway);
        match pool.start_redis(cpus.as_deref(), work) {
            Ok(url) => redis_url = Some(url),
            Err(e) => {
                progress!("pool {} skipped: {e:#}", kind.name());
                result.skipped = Some(format!("{e:#}"));
                return result;
            }
        }
    }
    result.description = pool.describe();
    // The gateway's own default: a lane per pool broker it is given.
    let gateway_lanes = args
        .lanes
        .unwrap_or_else(|| pool.gateway_bootstrap.split(',').count());

    let mut lanes = vec![Lane {
        result: PathResult::new(PathKind::Direct),
        endpoint: Some(Endpoint {
            bootstrap: pool.bootstrap.clone(),
            sasl: None,
            ca: None,
        }),
        gateway: None,
        base: "direct".into(),
        pool_prefix: String::new(),
    }];
    // The second gateway: the gateway path's less one thing (`crate::WITHOUT`), or in plaintext
    // (the same build and quotas) while the gateway path serves TLS.
    let (second, second_without, second_quotas) = match args.compare.without() {
        Some(w) => (w.path, w.flag, w.quotas.unwrap_or(args.quotas)),
        None => (PathKind::GatewayPlaintext, None, args.quotas),
    };
    for (path, without, quotas, tls) in [
        (PathKind::Gateway, None, args.quotas, tls),
        (second, second_without, second_quotas, None),
    ] {
        let mut lane = Lane {
            result: PathResult::new(path),
            endpoint: None,
            gateway: None,
            base: path.name().into(),
            pool_prefix: String::new(),
        };
        let dir = work.join(path.name());
        let setup = Setup {
            bin: tollgate,
            pool_bootstrap: &pool.gateway_bootstrap,
            without,
            tls,
            quotas,
            redis_url: redis_url.as_deref(),
            lanes: gateway_lanes,
            cpus: crate::pin::placement(args).map(|p| p.gateway),
            cluster: path.name(),
        };
        match gateway::start(setup, &dir) {
            Ok(Started::Running(gw)) => {
                progress!(
                    "{} {}: gateway pid {}, cluster {}",
                    kind.name(),
                    path.name(),
                    gw.process.pid(),
                    gw.tenancy.cluster_id
                );
                lane.endpoint = Some(gw.endpoint.clone());
                lane.pool_prefix = gw.tenancy.pool_prefix.clone();
                if let Some(files) = tls {
                    // What a client with OpenSSL's defaults (librdkafka's) gets from it.
                    let addr = gw.endpoint.bootstrap.parse();
                    let negotiated = addr
                        .map_err(anyhow::Error::from)
                        .and_then(|addr| crate::tls::negotiated(addr, &files.ca));
                    lane.result.tls = Some(match negotiated {
                        Ok(n) => n,
                        Err(e) => format!("TLS (what a client negotiates is not known: {e:#})"),
                    });
                    progress!(
                        "{} {}: serves {}",
                        kind.name(),
                        path.name(),
                        lane.result.tls.as_deref().unwrap_or_default()
                    );
                }
                lane.gateway = Some(gw);
            }
            Ok(Started::NotSupported(why)) => {
                lane.result.status = "not supported";
                lane.result.error = Some(why);
            }
            Err(e) => lane.result.failed("start", &e),
        }
        lanes.push(lane);
    }

    let phase_limit = Duration::from_secs(args.phase_timeout);
    let spread = Spread::new(result.partitions, args.size);
    let n = result.messages;
    for round in 0..args.rounds {
        for i in rotation(round, lanes.len()) {
            throughput_round(args, &pool, &mut lanes[i], round, n, spread, phase_limit);
        }
    }
    if args.consume_rounds > 0 {
        let last = format!("r{}", args.rounds - 1);
        for extra in 0..args.consume_rounds {
            for i in rotation(extra, lanes.len()) {
                consume_round(
                    &pool,
                    &mut lanes[i],
                    &last,
                    args.rounds + extra,
                    n,
                    args,
                    phase_limit,
                );
            }
        }
        for lane in &mut lanes {
            if let Some(ep) = lane.endpoint.clone() {
                let topic = format!("{}-{last}", lane.base);
                if let Err(e) = pool.delete_topic(&ep, &topic) {
                    lane.failed(&format!("delete topic {topic}"), e);
                }
            }
        }
    }

    let half_rate = |lane: &Lane| {
        Stat::of(
            lane.result
                .throughput_rounds
                .iter()
                .filter_map(|r| r.produce.as_ref())
                .map(|p| p.result.messages_per_s),
        )
        .map(|s| 0.5 * s.median)
    };
    let direct_rate = half_rate(&lanes[0]);
    // `--compare plaintext`: half of the slowest path's, so that every path carries the same
    // load well below what it can (TLS clients can produce far less than plaintext ones; at
    // half of direct their latency would be that of a queue that only grows).
    let auto_rate = match args.compare {
        Compare::Plaintext => direct_rate.map(|direct| {
            let slowest = lanes
                .iter()
                .skip(1)
                .filter_map(half_rate)
                .fold(direct, f64::min);
            if slowest < direct {
                progress!(
                    "{}: latency at {slowest:.0} records/s, half of the slowest path's produce \
                     rate (half of direct's: {direct:.0})",
                    kind.name()
                );
            }
            slowest
        }),
        Compare::NoMetering | Compare::NoQuotas | Compare::NoMetrics => direct_rate,
    };
    let latency_rate = args.latency_rate.or(auto_rate);
    match latency_rate {
        Some(rate) => {
            let spread = Spread::new(latency_partitions(args), args.size);
            for round in 0..args.rounds {
                for i in rotation(round, lanes.len()) {
                    latency_round(args, &pool, &mut lanes[i], round, rate, spread, phase_limit);
                }
            }
        }
        None => progress!(
            "{}: no direct produce throughput, so no latency runs",
            kind.name()
        ),
    }

    // A run whose quotas bound measured the quotas: each gateway says what its cluster used.
    for lane in &mut lanes {
        let Some(gw) = &lane.gateway else { continue };
        match gw.quota_use() {
            Ok(q) => {
                let bound = q.bound();
                if !bound.is_empty() {
                    progress!(
                        "{} {}: QUOTAS BOUND: {}",
                        kind.name(),
                        lane.result.path.name(),
                        bound.join(", ")
                    );
                }
                lane.result.set_quota_use(q);
            }
            Err(e) => lane.failed("reading the cluster's quota use", e),
        }
    }

    if let Some(death) = pool.died() {
        result.skipped = Some(format!("the pool died during the run: {death}"));
    }
    result.paths = lanes.into_iter().map(|l| l.result).collect();
    result.summarize();
    if let Some(summary) = &mut result.summary {
        // The rate the latency runs were given (`--latency-rate`, or the slowest path's).
        summary.latency_rate = latency_rate.or(summary.latency_rate);
    }
    result
}

/// Lane indices for `round`: 0 1 2, then 1 2 0, then 2 0 1, ...
fn rotation(round: u32, lanes: usize) -> Vec<usize> {
    (0..lanes).map(|i| (i + round as usize) % lanes).collect()
}

/// Records per throughput run on `kind`: see `Args::messages`.
fn messages(args: &Args, kind: PoolKind) -> u64 {
    match (args.messages, kind) {
        (Some(n), _) => n,
        (None, PoolKind::Mock) => 500_000,
        (None, PoolKind::Tansu) => 200_000,
    }
}

/// Partitions per throughput topic on `kind`: see `Args::partitions`.
fn partitions(args: &Args, kind: PoolKind) -> i32 {
    match (args.partitions, kind) {
        (Some(p), _) => p,
        (None, PoolKind::Tansu) => DEFAULT_PARTITIONS,
        (None, PoolKind::Mock) => {
            const MOCK_PARTITION_KEEPS: u64 = 5 << 20;
            let bytes = messages(args, kind) * args.size as u64;
            (3 * bytes)
                .div_ceil(MOCK_PARTITION_KEEPS)
                .clamp(DEFAULT_PARTITIONS as u64, 1000) as i32
        }
    }
}

/// Partitions per latency topic. Latency runs read nothing back, so the mock cluster's 5 MiB
/// per partition does not matter, and few partitions keep what it holds in memory small.
fn latency_partitions(args: &Args) -> i32 {
    args.partitions.unwrap_or(DEFAULT_PARTITIONS)
}

const DEFAULT_PARTITIONS: i32 = 6;

/// Creates the lane's topic `<base>-<suffix>`; false (and the error recorded) when it failed.
fn create(pool: &Pool, lane: &mut Lane, suffix: &str, partitions: i32) -> bool {
    let Some(ep) = lane.endpoint.clone() else {
        return false;
    };
    let topic = format!("{}-{suffix}", lane.base);
    let created = pool.create_topic(
        &ep,
        &topic,
        &format!("{}{topic}", lane.pool_prefix),
        partitions,
    );
    match created {
        Ok(()) => true,
        Err(e) => {
            lane.failed(&format!("create topic {topic}"), e);
            false
        }
    }
}

fn throughput_round(
    args: &Args,
    pool: &Pool,
    lane: &mut Lane,
    round: u32,
    messages: u64,
    spread: Spread,
    phase_limit: Duration,
) {
    let suffix = format!("r{round}");
    progress!(
        "{} {} round {round}: creating the topic",
        pool.kind.name(),
        lane.result.path.name()
    );
    if !create(pool, lane, &suffix, spread.partitions) {
        return;
    }
    let Some(ep) = lane.endpoint.clone() else {
        return;
    };
    let topic = format!("{}-{suffix}", lane.base);
    let group = format!("{topic}-group");
    let path = lane.result.path.name();
    let note = |what: &str| progress!("{} {path} round {round}: {what}", pool.kind.name());
    let mut r = ThroughputRound {
        round,
        produce: None,
        consume: None,
    };

    note("produce");
    wait_quiet(Duration::from_secs(args.quiet_wait));
    let deadline = Instant::now() + phase_limit;
    match measured(pool, lane.gateway_process(), || {
        workload::produce(&ep, &topic, spread, messages, args.size, deadline)
    }) {
        (Ok(t), cpu) => r.produce = Some(phase(t.bytes, t, cpu)),
        (Err(e), _) => {
            lane.failed(&format!("round {round} produce"), e);
            lane.result.throughput_rounds.push(r);
            return;
        }
    }

    note("consume");
    wait_quiet(Duration::from_secs(args.quiet_wait));
    let deadline = Instant::now() + phase_limit;
    match measured(pool, lane.gateway_process(), || {
        workload::consume(&ep, &topic, &group, messages, deadline)
    }) {
        (Ok(t), cpu) => r.consume = Some(phase(t.bytes, t, cpu)),
        (Err(e), _) => lane.failed(&format!("round {round} consume"), e),
    }
    lane.result.throughput_rounds.push(r);
    // The last round's records are read again by the consume rounds, which delete the topic.
    let keep = round + 1 == args.rounds && args.consume_rounds > 0;
    if !keep {
        if let Err(e) = pool.delete_topic(&ep, &topic) {
            lane.failed(&format!("round {round} delete topic"), e);
        }
    }
}

/// Reads the records of the throughput round `suffix` back once more, with a fresh group, as
/// throughput round `round` (a consume without a produce).
fn consume_round(
    pool: &Pool,
    lane: &mut Lane,
    suffix: &str,
    round: u32,
    messages: u64,
    args: &Args,
    phase_limit: Duration,
) {
    let Some(ep) = lane.endpoint.clone() else {
        return;
    };
    let topic = format!("{}-{suffix}", lane.base);
    let group = format!("{topic}-group-{round}");
    progress!(
        "{} {} round {round}: consume {topic} again",
        pool.kind.name(),
        lane.result.path.name()
    );
    wait_quiet(Duration::from_secs(args.quiet_wait));
    let deadline = Instant::now() + phase_limit;
    let mut r = ThroughputRound {
        round,
        produce: None,
        consume: None,
    };
    match measured(pool, lane.gateway_process(), || {
        workload::consume(&ep, &topic, &group, messages, deadline)
    }) {
        (Ok(t), cpu) => r.consume = Some(phase(t.bytes, t, cpu)),
        (Err(e), _) => lane.failed(&format!("round {round} consume"), e),
    }
    lane.result.throughput_rounds.push(r);
}

fn latency_round(
    args: &Args,
    pool: &Pool,
    lane: &mut Lane,
    round: u32,
    rate: f64,
    spread: Spread,
    phase_limit: Duration,
) {
    let suffix = format!("latency-r{round}");
    if !create(pool, lane, &suffix, spread.partitions) {
        return;
    }
    let Some(ep) = lane.endpoint.clone() else {
        return;
    };
    progress!(
        "{} {}: latency at {rate:.0} records/s",
        pool.kind.name(),
        lane.result.path.name()
    );
    let topic = format!("{}-{suffix}", lane.base);
    wait_quiet(Duration::from_secs(args.quiet_wait));
    let deadline = Instant::now() + phase_limit;
    let size = args.size;
    let seconds = args.latency_seconds;
    match measured(pool, lane.gateway_process(), || {
        workload::latency(&ep, &topic, spread, size, rate, seconds, deadline)
    }) {
        (Ok(l), cpu) => {
            let bytes = l.messages * size as u64;
            lane.result.latency_rounds.push(phase(bytes, l, cpu));
        }
        (Err(e), _) => lane.failed("latency", e),
    }
    if let Err(e) = pool.delete_topic(&ep, &topic) {
        lane.failed(&format!("round {round} delete topic"), e);
    }
}

/// Waits up to `limit` for the machine's other processes (all but this one and its children)
/// to use under a quarter of a core, measured over one second; returns at once when `limit`
/// is zero.
fn wait_quiet(limit: Duration) {
    let deadline = Instant::now() + limit;
    let ours = || procs::own_cpu_seconds() + procs::children_cpu_seconds();
    let mut waited = false;
    while Instant::now() < deadline {
        let (Some(all0), ours0) = (procs::machine_busy_seconds(), ours()) else {
            return;
        };
        std::thread::sleep(Duration::from_secs(1));
        let (Some(all1), ours1) = (procs::machine_busy_seconds(), ours()) else {
            return;
        };
        let others = (all1 - all0) - (ours1 - ours0);
        if others < 0.25 {
            if waited {
                progress!("the machine is quiet again");
            }
            return;
        }
        if !waited {
            progress!(
                "other processes use {others:.2} cores; waiting up to {} s for quiet",
                limit.as_secs()
            );
            waited = true;
        }
    }
}

/// Runs `f`, noting the CPU time the gateway, this process and the pool's process use meanwhile.
fn measured<T>(
    pool: &Pool,
    gateway: Option<&mut Child>,
    f: impl FnOnce() -> Result<T>,
) -> (Result<T>, CpuUse) {
    let gateway = gateway.as_deref();
    let gw = || gateway.and_then(|c| c.cpu_seconds().ok());
    let all = procs::machine_busy_seconds;
    let mock = || {
        matches!(pool.kind, PoolKind::Mock).then(|| procs::own_threads_cpu_seconds(MOCK_THREADS))
    };
    let (gw0, own0, pool0, all0) = (gw(), procs::own_cpu_seconds(), pool.cpu_seconds(), all());
    let redis0 = pool.redis_cpu_seconds();
    let mock0 = mock();
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let start = Instant::now();
    let result = f();
    let wall_s = start.elapsed().as_secs_f64();
    let (gw1, own1, pool1, all1) = (gw(), procs::own_cpu_seconds(), pool.cpu_seconds(), all());
    let redis_s = diff(redis0, pool.redis_cpu_seconds());
    let mock1 = mock();
    let (gateway_s, bench_process_s, pool_process_s) =
        (diff(gw0, gw1), own1 - own0, diff(pool0, pool1));
    let cpu = CpuUse {
        wall_s,
        gateway_s,
        gateway_s_per_gb: None,
        bench_process_s,
        mock_threads_s: diff(mock0, mock1),
        pool_process_s,
        redis_s,
        others_s: diff(all0, all1).map(|m| {
            (m - gateway_s.unwrap_or(0.0)
                - bench_process_s
                - pool_process_s.unwrap_or(0.0)
                - redis_s.unwrap_or(0.0))
            .max(0.0)
        }),
    };
    (result, cpu)
}

fn phase<T>(bytes: u64, result: T, mut cpu: CpuUse) -> Phase<T> {
    cpu.gateway_s_per_gb = cpu
        .gateway_s
        .map(|s| s / (bytes as f64 / (1u64 << 30) as f64));
    Phase { result, cpu }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rotation_turns() {
        assert_eq!(super::rotation(0, 3), [0, 1, 2]);
        assert_eq!(super::rotation(1, 3), [1, 2, 0]);
        assert_eq!(super::rotation(4, 3), [1, 2, 0]);
    }
}
