//! What a run found: per pool and path the raw figures, per pool the ratios against the issue's
//! targets; printed as a table and written as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::workload::{Latency, Throughput};

/// Throughput through the gateway at least this share of direct.
pub const TARGET_THROUGHPUT_RATIO: f64 = 0.95;
/// Added p99 delivery latency at half load below this many milliseconds.
pub const TARGET_ADDED_P99_MS: f64 = 1.0;
/// Gateway CPU below this many seconds per GB (2^30 bytes) proxied.
pub const TARGET_CPU_S_PER_GB: f64 = 2.0;
/// Metering on vs off: a throughput ratio at least this high is read as "no measurable loss".
/// Back-to-back runs of the same path on this 2-core machine differ by about this much.
pub const METERING_NOISE_RATIO: f64 = 0.97;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Serialize)]
pub struct Report {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    pub pools: Vec<PoolResult>,
}

#[derive(Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    /// /proc/loadavg when the run started: other work on the machine skews the figures.
    pub loadavg_at_start: String,
}

#[derive(Serialize)]
pub struct Settings {
    pub messages: u64,
    pub size: usize,
    /// As asked; each pool reports the count it used.
    pub partitions: Option<i32>,
    pub acks: &'static str,
    pub idempotence: bool,
    pub linger_ms: u32,
    pub latency_seconds: f64,
    pub latency_load: &'static str,
    pub spread_leaders: bool,
    pub librdkafka: String,
    pub gateway: String,
}

#[derive(Serialize)]
pub struct PoolResult {
    pub pool: &'static str,
    pub description: String,
    /// Partitions of each benchmark topic.
    pub partitions: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub paths: Vec<PathResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    Direct,
    Gateway,
    GatewayNoMetering,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Gateway => "gateway",
            PathKind::GatewayNoMetering => "gateway-no-metering",
        }
    }
}

#[derive(Serialize)]
pub struct PathResult {
    pub path: PathKind,
    /// "ok", "error" or "not supported".
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produce: Option<Phase<Throughput>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<Phase<Throughput>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Phase<Latency>>,
}

impl PathResult {
    pub fn new(path: PathKind) -> Self {
        PathResult {
            path,
            status: "ok",
            error: None,
            produce: None,
            consume: None,
            latency: None,
        }
    }

    pub fn failed(&mut self, phase: &str, e: &anyhow::Error) {
        self.status = "error";
        let text = format!("{phase}: {e:#}");
        self.error = Some(match self.error.take() {
            Some(before) => format!("{before}\n{text}"),
            None => text,
        });
    }
}

/// One measurement and the CPU time spent during it.
#[derive(Serialize)]
pub struct Phase<T> {
    #[serde(flatten)]
    pub result: T,
    pub cpu: CpuUse,
}

#[derive(Serialize, Default, Clone, Copy)]
pub struct CpuUse {
    pub wall_s: f64,
    /// The gateway process, all threads, user + system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_s: Option<f64>,
    /// `gateway_s` per 2^30 payload bytes moved through the gateway in the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_s_per_gb: Option<f64>,
    /// This process: the clients and, on the mock pool, the pool itself.
    pub bench_process_s: f64,
    /// The pool's own process (tansu).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_process_s: Option<f64>,
}

#[derive(Serialize, Default)]
pub struct Summary {
    /// Gateway (metering on) over direct, MB/s.
    pub produce_ratio: Option<f64>,
    pub consume_ratio: Option<f64>,
    /// Records per second of the latency runs: half of direct produce throughput.
    pub latency_rate: Option<f64>,
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
    /// Gateway CPU over the produce and consume phases per 2^30 payload bytes they moved.
    pub gateway_cpu_s_per_gb: Option<f64>,
    pub gateway_cpu_s_per_gb_no_metering: Option<f64>,
    /// Metering on over metering off, MB/s.
    pub metering_produce_ratio: Option<f64>,
    pub metering_consume_ratio: Option<f64>,
    pub targets: Targets,
}

#[derive(Serialize, Default)]
pub struct Targets {
    pub throughput_at_least_095_of_direct: Verdict,
    pub added_p99_under_1ms_at_half_load: Verdict,
    pub cpu_under_2s_per_gb: Verdict,
    pub metering_no_measurable_throughput_loss: Verdict,
}

#[derive(Serialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Met,
    Missed,
    #[default]
    NotMeasured,
}

impl Verdict {
    fn of(value: Option<bool>) -> Verdict {
        match value {
            Some(true) => Verdict::Met,
            Some(false) => Verdict::Missed,
            None => Verdict::NotMeasured,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        }
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn both<T>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> bool) -> Option<bool> {
    Some(f(a?, b?))
}

impl PoolResult {
    fn path(&self, kind: PathKind) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.path == kind)
    }

    fn mb(&self, kind: PathKind, consume: bool) -> Option<f64> {
        let p = self.path(kind)?;
        let phase = if consume { &p.consume } else { &p.produce };
        phase.as_ref().map(|t| t.result.mb_per_s)
    }

    fn lat(&self, kind: PathKind) -> Option<&Latency> {
        self.path(kind)?.latency.as_ref().map(|l| &l.result)
    }

    fn cpu_per_gb(&self, kind: PathKind) -> Option<f64> {
        let p = self.path(kind)?;
        let (prod, cons) = (p.produce.as_ref()?, p.consume.as_ref()?);
        let cpu = prod.cpu.gateway_s? + cons.cpu.gateway_s?;
        let bytes = (prod.result.bytes + cons.result.bytes) as f64;
        Some(cpu / (bytes / GIB))
    }

    pub fn summarize(&mut self) {
        use PathKind::*;
        let produce_ratio = ratio(self.mb(Gateway, false), self.mb(Direct, false));
        let consume_ratio = ratio(self.mb(Gateway, true), self.mb(Direct, true));
        let (d, g) = (self.lat(Direct), self.lat(Gateway));
        let added_p50_ms = d.zip(g).map(|(d, g)| g.p50_ms - d.p50_ms);
        let added_p99_ms = d.zip(g).map(|(d, g)| g.p99_ms - d.p99_ms);
        let metering_produce_ratio =
            ratio(self.mb(Gateway, false), self.mb(GatewayNoMetering, false));
        let metering_consume_ratio =
            ratio(self.mb(Gateway, true), self.mb(GatewayNoMetering, true));
        let cpu = self.cpu_per_gb(Gateway);
        self.summary = Some(Summary {
            produce_ratio,
            consume_ratio,
            latency_rate: d.map(|d| d.target_rate),
            added_p50_ms,
            added_p99_ms,
            gateway_cpu_s_per_gb: cpu,
            gateway_cpu_s_per_gb_no_metering: self.cpu_per_gb(GatewayNoMetering),
            metering_produce_ratio,
            metering_consume_ratio,
            targets: Targets {
                throughput_at_least_095_of_direct: Verdict::of(both(
                    produce_ratio,
                    consume_ratio,
                    |p, c| p >= TARGET_THROUGHPUT_RATIO && c >= TARGET_THROUGHPUT_RATIO,
                )),
                added_p99_under_1ms_at_half_load: Verdict::of(
                    added_p99_ms.map(|a| a < TARGET_ADDED_P99_MS),
                ),
                cpu_under_2s_per_gb: Verdict::of(cpu.map(|c| c < TARGET_CPU_S_PER_GB)),
                metering_no_measurable_throughput_loss: Verdict::of(both(
                    metering_produce_ratio,
                    metering_consume_ratio,
                    |p, c| p >= METERING_NOISE_RATIO && c >= METERING_NOISE_RATIO,
                )),
            },
        });
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".into(),
    }
}

fn signed(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:+.decimals$}"),
        _ => "-".into(),
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "\n{} records x {} B, acks=all, idempotent, linger 5 ms; latency at half of direct \
             produce throughput for {} s; librdkafka {}",
            s.messages, s.size, s.latency_seconds, s.librdkafka
        );
        for pool in self.pools.iter().filter(|p| p.skipped.is_none()) {
            let _ = writeln!(
                out,
                "{}: {}; {} partitions per topic",
                pool.pool, pool.description, pool.partitions
            );
        }
        let _ = writeln!(
            out,
            "\n{:<6} {:<20} {:>12} {:>12} {:>8} {:>8} {:>9} {:>12}",
            "pool",
            "path",
            "produce MB/s",
            "consume MB/s",
            "p50 ms",
            "p99 ms",
            "lat msg/s",
            "gw CPU s/GB"
        );
        for pool in &self.pools {
            if let Some(why) = &pool.skipped {
                let _ = writeln!(out, "{:<6} skipped: {why}", pool.pool);
                continue;
            }
            for p in &pool.paths {
                if p.status == "not supported" {
                    let _ = writeln!(
                        out,
                        "{:<6} {:<20} not supported: {}",
                        pool.pool,
                        p.path.name(),
                        p.error.as_deref().unwrap_or_default()
                    );
                    continue;
                }
                let lat = p.latency.as_ref().map(|l| &l.result);
                let _ = writeln!(
                    out,
                    "{:<6} {:<20} {:>12} {:>12} {:>8} {:>8} {:>9} {:>12}",
                    pool.pool,
                    p.path.name(),
                    num(p.produce.as_ref().map(|t| t.result.mb_per_s), 1),
                    num(p.consume.as_ref().map(|t| t.result.mb_per_s), 1),
                    num(lat.map(|l| l.p50_ms), 2),
                    num(lat.map(|l| l.p99_ms), 2),
                    num(lat.map(|l| l.achieved_rate), 0),
                    num(pool.cpu_per_gb(p.path), 2),
                );
                if let Some(e) = &p.error {
                    for line in e.lines().take(6) {
                        let _ = writeln!(out, "{:<6}   ! {line}", "");
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "\nrequest round trips seen by the client (librdkafka statistics):\n{:<6} {:<20} {:>26} {:>26}",
            "pool", "path", "produce avg/p99 ms, reqs", "consume avg/p99 ms, reqs"
        );
        for pool in self.pools.iter().filter(|p| p.skipped.is_none()) {
            for p in pool.paths.iter().filter(|p| p.status != "not supported") {
                let rtt = |t: Option<&Phase<Throughput>>| match t
                    .and_then(|t| t.result.client_stats.as_ref())
                {
                    Some(c) => format!(
                        "{:.2}/{:.2}, {}",
                        c.rtt_avg_ms, c.rtt_p99_max_ms, c.requests
                    ),
                    None => "-".into(),
                };
                let _ = writeln!(
                    out,
                    "{:<6} {:<20} {:>26} {:>26}",
                    pool.pool,
                    p.path.name(),
                    rtt(p.produce.as_ref()),
                    rtt(p.consume.as_ref()),
                );
            }
        }
        let _ = writeln!(out);
        for pool in &self.pools {
            let Some(sm) = &pool.summary else { continue };
            let t = &sm.targets;
            let _ = writeln!(
                out,
                "{}: gateway/direct produce {} consume {}; added latency p50 {} ms, p99 {} ms; \
                 gateway CPU {} s/GB ({} without metering); metering on/off produce {} consume {}",
                pool.pool,
                num(sm.produce_ratio, 3),
                num(sm.consume_ratio, 3),
                signed(sm.added_p50_ms, 2),
                signed(sm.added_p99_ms, 2),
                num(sm.gateway_cpu_s_per_gb, 2),
                num(sm.gateway_cpu_s_per_gb_no_metering, 2),
                num(sm.metering_produce_ratio, 3),
                num(sm.metering_consume_ratio, 3),
            );
            let _ = writeln!(
                out,
                "{:width$}  targets: throughput >= {TARGET_THROUGHPUT_RATIO} of direct {}; \
                 added p99 < {TARGET_ADDED_P99_MS} ms {}; CPU < {TARGET_CPU_S_PER_GB} s/GB {}; \
                 metering costs no measurable throughput (on/off >= {METERING_NOISE_RATIO}) {}",
                "",
                t.throughput_at_least_095_of_direct.label(),
                t.added_p99_under_1ms_at_half_load.label(),
                t.cpu_under_2s_per_gb.label(),
                t.metering_no_measurable_throughput_loss.label(),
                width = pool.pool.len(),
            );
        }
        out
    }
}
