//! What a run found: per pool and path the figures of every round and their medians and, for
//! the gateway paths, their cluster's quotas and what it used of them; per pool the ratios
//! against the targets and whether quotas bound; printed as a table and written as
//! JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::workload::{Latency, Throughput};

/// Throughput through the gateway at least this share of direct.
pub const TARGET_THROUGHPUT_RATIO: f64 = 0.95;
/// Added p99 delivery latency at half load below this many milliseconds.
pub const TARGET_ADDED_P99_MS: f64 = 1.0;
/// Gateway CPU below this many seconds per GB (2^30 bytes) proxied.
pub const TARGET_CPU_S_PER_GB: f64 = 2.0;
/// The gateway with and without one thing (`crate::WITHOUT`: metering, quota accounting,
/// metrics): a median throughput ratio at least this high counts as no loss; below it, the
/// loss counts as measurable only when the "on" path's best round is below the "off" path's
/// worst (the rounds' ranges do not overlap).
pub const NO_LOSS_RATIO: f64 = 0.97;

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
    /// As asked; each pool reports the count it used.
    pub messages: Option<u64>,
    pub size: usize,
    /// As asked; each pool reports the count it used.
    pub partitions: Option<i32>,
    pub rounds: u32,
    /// Extra reads of the last round's records (`--consume-rounds`), in the consume medians.
    pub consume_rounds: u32,
    pub acks: &'static str,
    pub idempotence: bool,
    pub linger_ms: u32,
    pub latency_seconds: f64,
    pub latency_load: &'static str,
    pub spread_leaders: bool,
    /// Gateway nodes per address (`--lanes`); the gateway's default when absent.
    pub lanes: Option<usize>,
    /// `--client-config` properties applied to every client.
    pub client_config: Vec<String>,
    pub librdkafka: String,
    pub gateway: String,
    /// `GLIBC_TUNABLES` of the benchmark's process (the mock cluster's memory), or "default".
    pub malloc: String,
    /// Which CPUs ran what (`--pin`); `None`: every process on every core.
    pub pin: Option<String>,
    /// `--quotas`: the gateway path's cluster's quotas (and the second path's, but with
    /// `--compare no-quotas`).
    pub quotas: tollgate_load_tests::admin::QuotaSetting,
    /// `--compare`: the second gateway path (`gateway-no-metering`, `gateway-no-quotas`,
    /// `gateway-no-metrics` or `gateway-plaintext`).
    pub compare: crate::Compare,
    /// Whether the gateway path served TLS (`--compare plaintext`; clients on SASL_SSL).
    pub gateway_tls: bool,
    /// The certificate it served, and what made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_certificate: Option<String>,
    /// Whether both gateways ran with `--redis-url` (rate quotas leased through Redis).
    pub redis: bool,
    /// Whether that Redis was the benchmark's own (`--start-redis`, one per pool).
    pub redis_started: bool,
}

#[derive(Serialize)]
pub struct PoolResult {
    pub pool: &'static str,
    pub description: String,
    /// Records per throughput run.
    pub messages: u64,
    /// Partitions of each throughput topic.
    pub partitions: i32,
    /// Partitions of each latency topic.
    pub latency_partitions: i32,
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
    /// Metering on, every quota null (`--compare no-quotas`).
    GatewayNoQuotas,
    /// `--no-metrics`, the same quotas (`--compare no-metrics`).
    GatewayNoMetrics,
    /// The same gateway as the gateway path, in plaintext while that one serves TLS
    /// (`--compare plaintext`).
    GatewayPlaintext,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Gateway => "gateway",
            PathKind::GatewayNoMetering => "gateway-no-metering",
            PathKind::GatewayNoQuotas => "gateway-no-quotas",
            PathKind::GatewayNoMetrics => "gateway-no-metrics",
            PathKind::GatewayPlaintext => "gateway-plaintext",
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
    /// A path whose gateway served TLS: the protocol, cipher suite and key exchange a client
    /// with OpenSSL's defaults (as librdkafka here) negotiated with it (`openssl s_client`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// Over the rounds (filled in by [`PoolResult::summarize`]).
    pub medians: Medians,
    /// A gateway path's cluster's quotas, as its gateway held them after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quotas: Option<serde_json::Value>,
    /// What the cluster used of its quotas over the run, as its gateway showed it after
    /// (`GET /v1/clusters/{id}`, `quota_use`: rates of the last second, throttles, refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_use: Option<serde_json::Value>,
    /// Of `quota_use`, responses throttled for a rate quota and things refused for a count
    /// quota, every quota summed: anything but 0 means the quotas bound and the path's
    /// figures measure them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_throttles: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_refusals: Option<u64>,
    /// The quotas that throttled or refused anything, with how often.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quotas_bound_by: Vec<String>,
    pub throughput_rounds: Vec<ThroughputRound>,
    pub latency_rounds: Vec<Phase<Latency>>,
}

impl PathResult {
    pub fn new(path: PathKind) -> Self {
        PathResult {
            path,
            status: "ok",
            error: None,
            tls: None,
            medians: Medians::default(),
            quotas: None,
            quota_use: None,
            quota_throttles: None,
            quota_refusals: None,
            quotas_bound_by: Vec::new(),
            throughput_rounds: Vec::new(),
            latency_rounds: Vec::new(),
        }
    }

    pub fn failed(&mut self, what: &str, e: &anyhow::Error) {
        self.status = "error";
        let text = format!("{what}: {e:#}");
        self.error = Some(match self.error.take() {
            Some(before) => format!("{before}\n{text}"),
            None => text,
        });
    }

    /// Records what the path's cluster used of its quotas over the run.
    pub fn set_quota_use(&mut self, q: crate::gateway::QuotaUse) {
        self.quota_throttles = q.throttles();
        self.quota_refusals = q.refusals();
        self.quotas_bound_by = q.bound();
        self.quotas = Some(q.quotas);
        self.quota_use = q.quota_use;
    }

    /// The path's name in the printed tables: the JSON's, or "gateway (TLS)".
    pub fn label(&self) -> &'static str {
        match (self.path, &self.tls) {
            (PathKind::Gateway, Some(_)) => "gateway (TLS)",
            (path, _) => path.name(),
        }
    }

    /// Whether the path's quotas throttled or refused anything; `None`: not known.
    fn quotas_bound(&self) -> Option<bool> {
        match (self.quota_throttles, self.quota_refusals) {
            (Some(t), Some(r)) => Some(t + r > 0),
            _ => None,
        }
    }

    fn produces(&self) -> impl Iterator<Item = &Phase<Throughput>> {
        self.throughput_rounds
            .iter()
            .filter_map(|r| r.produce.as_ref())
    }

    fn consumes(&self) -> impl Iterator<Item = &Phase<Throughput>> {
        self.throughput_rounds
            .iter()
            .filter_map(|r| r.consume.as_ref())
    }

    /// `of`'s CPU (the gateway's, Redis's) over every produce and consume phase per 2^30
    /// payload bytes they moved.
    fn cpu_per_gb(&self, of: fn(&CpuUse) -> Option<f64>) -> Option<f64> {
        cpu_per_gb(self.produces().chain(self.consumes()), of)
    }

    fn compute_medians(&mut self) {
        let lat = || self.latency_rounds.iter().map(|l| &l.result);
        self.medians = Medians {
            produce_mb_per_s: Stat::of(self.produces().map(|p| p.result.mb_per_s)),
            produce_messages_per_s: Stat::of(self.produces().map(|p| p.result.messages_per_s)),
            consume_mb_per_s: Stat::of(self.consumes().map(|p| p.result.mb_per_s)),
            latency_p50_ms: Stat::of(lat().map(|l| l.p50_ms)),
            latency_p99_ms: Stat::of(lat().map(|l| l.p99_ms)),
            latency_achieved_rate: Stat::of(lat().map(|l| l.achieved_rate)),
            produce_rtt_avg_ms: Stat::of(
                self.produces()
                    .filter_map(|p| p.result.client_stats.as_ref().map(|c| c.rtt_avg_ms)),
            ),
            consume_rtt_avg_ms: Stat::of(
                self.consumes()
                    .filter_map(|p| p.result.client_stats.as_ref().map(|c| c.rtt_avg_ms)),
            ),
            consume_mock_cpu_s_per_gb: Stat::of(
                self.consumes()
                    .filter_map(|p| Some(p.cpu.mock_threads_s? / (p.result.bytes as f64 / GIB))),
            ),
            produce_client_cpu_s_per_gb: Stat::of(self.produces().map(|p| {
                (p.cpu.bench_process_s - p.cpu.mock_threads_s.unwrap_or(0.0))
                    / (p.result.bytes as f64 / GIB)
            })),
            consume_client_cpu_s_per_gb: Stat::of(self.consumes().filter_map(|p| {
                Some(
                    (p.cpu.bench_process_s - p.cpu.mock_threads_s?) / (p.result.bytes as f64 / GIB),
                )
            })),
            gateway_cpu_s_per_gb: self.cpu_per_gb(|c| c.gateway_s),
            produce_gateway_cpu_s_per_gb: cpu_per_gb(self.produces(), |c| c.gateway_s),
            consume_gateway_cpu_s_per_gb: cpu_per_gb(self.consumes(), |c| c.gateway_s),
            redis_cpu_s_per_gb: self.cpu_per_gb(|c| c.redis_s),
        };
    }
}

/// `of`'s CPU over `phases` per 2^30 payload bytes they moved; `None` when a phase lacks it.
fn cpu_per_gb<'a>(
    phases: impl Iterator<Item = &'a Phase<Throughput>>,
    of: fn(&CpuUse) -> Option<f64>,
) -> Option<f64> {
    let (mut cpu, mut bytes) = (0.0, 0u64);
    for p in phases {
        cpu += of(&p.cpu)?;
        bytes += p.result.bytes;
    }
    (bytes > 0).then(|| cpu / (bytes as f64 / GIB))
}

/// One round's throughput runs: produce N records, then read them back.
#[derive(Serialize)]
pub struct ThroughputRound {
    pub round: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produce: Option<Phase<Throughput>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<Phase<Throughput>>,
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
    /// The whole phase: client set-up, warm-up record, measured part, tear-down.
    pub wall_s: f64,
    /// The gateway process, all threads, user + system, over the whole phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_s: Option<f64>,
    /// `gateway_s` per 2^30 payload bytes moved through the gateway in the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_s_per_gb: Option<f64>,
    /// This process: the clients and, on the mock pool, the pool itself.
    pub bench_process_s: f64,
    /// Of `bench_process_s`, the mock cluster's own threads (`rdk:mock`): the pool's share
    /// when it runs in this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mock_threads_s: Option<f64>,
    /// The pool's own process (tansu).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_process_s: Option<f64>,
    /// The Redis the benchmark started (`--start-redis`), which both gateways use: what
    /// leasing quotas (and keeping usage) through it cost on its side. A Redis given with
    /// `--redis-url` is in `others_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_s: Option<f64>,
    /// Everything else the machine ran meanwhile (other builds and tests on a shared machine
    /// take cores from the benchmark and skew its figures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub others_s: Option<f64>,
}

/// Median, lowest and highest over the rounds.
#[derive(Serialize, Clone, Copy, Debug)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: impl Iterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

#[derive(Serialize, Default)]
pub struct Medians {
    pub produce_mb_per_s: Option<Stat>,
    pub produce_messages_per_s: Option<Stat>,
    pub consume_mb_per_s: Option<Stat>,
    pub latency_p50_ms: Option<Stat>,
    pub latency_p99_ms: Option<Stat>,
    pub latency_achieved_rate: Option<Stat>,
    pub produce_rtt_avg_ms: Option<Stat>,
    pub consume_rtt_avg_ms: Option<Stat>,
    /// CPU seconds per 2^30 bytes consumed of the mock cluster's threads, and of the rest of
    /// this process (the clients): on the mock pool, where the two share a process.
    pub consume_mock_cpu_s_per_gb: Option<Stat>,
    pub consume_client_cpu_s_per_gb: Option<Stat>,
    /// CPU seconds per 2^30 bytes produced of this process less the mock cluster's threads: the
    /// producing client (on tansu the process holds nothing else).
    pub produce_client_cpu_s_per_gb: Option<Stat>,
    /// Not a median: all produce and consume phases' gateway CPU over all their bytes.
    pub gateway_cpu_s_per_gb: Option<f64>,
    /// The same over the produce phases alone, and over the consume phases alone.
    pub produce_gateway_cpu_s_per_gb: Option<f64>,
    pub consume_gateway_cpu_s_per_gb: Option<f64>,
    /// The same of the Redis the benchmark started (`--start-redis`): leasing quotas and
    /// keeping usage, on Redis's side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_s_per_gb: Option<f64>,
}

#[derive(Serialize, Default)]
pub struct Summary {
    /// Gateway (metering on) over direct, medians of MB/s.
    pub produce_ratio: Option<f64>,
    pub consume_ratio: Option<f64>,
    /// Records per second of the latency runs: half of direct produce throughput (with
    /// `--compare plaintext`, of the slowest path's; or `--latency-rate`).
    pub latency_rate: Option<f64>,
    /// Gateway minus direct, medians of the rounds' percentiles.
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
    pub gateway_cpu_s_per_gb: Option<f64>,
    /// `--compare no-metering|no-quotas|no-metrics`: the gateway path against the same gateway
    /// less one thing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without: Option<Cost>,
    /// `--compare plaintext` (the gateway path over TLS, gateway-plaintext the same build
    /// without): gateway-plaintext over direct, medians of MB/s, and its added p50 and p99
    /// over direct; TLS over plaintext, medians of MB/s; the plaintext gateway's CPU per GB
    /// and what TLS adds to it (gateway minus gateway-plaintext; run-to-run noise included);
    /// the latency TLS adds (medians of the rounds' percentiles, gateway minus
    /// gateway-plaintext); and what TLS adds to the clients' CPU per GB (this process less the
    /// mock's threads, medians; consuming on the mock pool only).
    pub plaintext_produce_ratio: Option<f64>,
    pub plaintext_consume_ratio: Option<f64>,
    pub plaintext_added_p50_ms: Option<f64>,
    pub plaintext_added_p99_ms: Option<f64>,
    pub gateway_cpu_s_per_gb_plaintext: Option<f64>,
    pub tls_produce_ratio: Option<f64>,
    pub tls_consume_ratio: Option<f64>,
    pub tls_cpu_s_per_gb_added: Option<f64>,
    /// The same over the produce phases alone (the gateway decrypts what clients send), and
    /// over the consume phases alone (it encrypts what they read).
    pub tls_produce_cpu_s_per_gb_added: Option<f64>,
    pub tls_consume_cpu_s_per_gb_added: Option<f64>,
    pub tls_added_p50_ms: Option<f64>,
    pub tls_added_p99_ms: Option<f64>,
    pub tls_client_produce_cpu_s_per_gb_added: Option<f64>,
    pub tls_client_consume_cpu_s_per_gb_added: Option<f64>,
    /// Over the gateway paths: responses throttled and things refused by their clusters'
    /// quotas, summed; `quotas_bound` is whether there were any (then the figures measure the
    /// quotas, not the gateway), `None` when a gateway did not say.
    pub quota_throttles: Option<u64>,
    pub quota_refusals: Option<u64>,
    pub quotas_bound: Option<bool>,
    /// Cores' worth of CPU that other processes on the machine used during the pool's
    /// measured phases, on average and in the busiest phase.
    pub other_load_cores_avg: Option<f64>,
    pub other_load_cores_max: Option<f64>,
    pub targets: Targets,
}

#[derive(Serialize, Default)]
pub struct Targets {
    pub throughput_at_least_095_of_direct: Verdict,
    pub added_p99_under_1ms_at_half_load: Verdict,
    pub cpu_under_2s_per_gb: Verdict,
}

/// What one thing costs the gateway (`crate::WITHOUT`): the gateway path with it against the
/// second path, the same gateway without it.
#[derive(Serialize, Debug, PartialEq)]
pub struct Cost {
    /// The thing: "metering", "quota accounting", "metrics".
    pub what: &'static str,
    /// The second path, without it.
    pub path: PathKind,
    /// The second path's gateway CPU per GB.
    pub gateway_cpu_s_per_gb: Option<f64>,
    /// The gateway path over the second, medians of MB/s.
    pub produce_ratio: Option<f64>,
    pub consume_ratio: Option<f64>,
    /// What the thing adds to the gateway's CPU per GB: the gateway path's less the second's
    /// (run-to-run noise included: compare it with the spread of several runs).
    pub cpu_s_per_gb_added: Option<f64>,
    /// Whether it costs no throughput the benchmark resolves (see [`NO_LOSS_RATIO`]).
    pub no_measurable_throughput_loss: Verdict,
}

#[derive(Serialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
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

fn ratio(a: Option<Stat>, b: Option<Stat>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
        _ => None,
    }
}

/// Whether the thing a path goes without (`on` has it) costs no measurable throughput against
/// `off`; see [`NO_LOSS_RATIO`].
fn no_measurable_loss(on: Option<Stat>, off: Option<Stat>) -> Option<bool> {
    let (on, off) = (on?, off?);
    Some(on.median >= NO_LOSS_RATIO * off.median || on.max >= off.min)
}

impl PoolResult {
    fn path(&self, kind: PathKind) -> Option<&Medians> {
        self.paths
            .iter()
            .find(|p| p.path == kind)
            .map(|p| &p.medians)
    }

    pub fn summarize(&mut self) {
        use PathKind::*;
        for p in &mut self.paths {
            p.compute_medians();
        }
        let (d, g, pt) = (
            self.path(Direct),
            self.path(Gateway),
            self.path(GatewayPlaintext),
        );
        let get = |m: Option<&Medians>, f: fn(&Medians) -> Option<Stat>| m.and_then(f);
        let produce = |m| get(m, |m| m.produce_mb_per_s);
        let consume = |m| get(m, |m| m.consume_mb_per_s);
        let p50 = |m| get(m, |m| m.latency_p50_ms);
        let p99 = |m| get(m, |m| m.latency_p99_ms);
        let diff = |a: Option<Stat>, b: Option<Stat>| Some(a?.median - b?.median);
        let produce_ratio = ratio(produce(g), produce(d));
        let consume_ratio = ratio(consume(g), consume(d));
        let added_p99_ms = diff(p99(g), p99(d));
        let cpu = g.and_then(|g| g.gateway_cpu_s_per_gb);
        let no_loss = |off| match (
            no_measurable_loss(produce(g), produce(off)),
            no_measurable_loss(consume(g), consume(off)),
        ) {
            (Some(p), Some(c)) => Some(p && c),
            _ => None,
        };
        // The second path, when it is the gateway path's less one thing.
        let without = crate::WITHOUT.iter().find(|w| self.path(w.path).is_some());
        let without = without.map(|w| {
            let off = self.path(w.path);
            let cpu_off = off.and_then(|m| m.gateway_cpu_s_per_gb);
            Cost {
                what: w.what,
                path: w.path,
                gateway_cpu_s_per_gb: cpu_off,
                produce_ratio: ratio(produce(g), produce(off)),
                consume_ratio: ratio(consume(g), consume(off)),
                cpu_s_per_gb_added: cpu.zip(cpu_off).map(|(on, off)| on - off),
                no_measurable_throughput_loss: Verdict::of(no_loss(off)),
            }
        });
        let cpu_plaintext = pt.and_then(|m| m.gateway_cpu_s_per_gb);
        // The gateway paths that ran (a build without --no-metering has none to ask).
        let gateways = || {
            self.paths
                .iter()
                .filter(|p| p.path != Direct && p.status != "not supported")
        };
        let total = |f: fn(&PathResult) -> Option<u64>| gateways().map(f).sum::<Option<u64>>();
        let bound: Vec<Option<bool>> = gateways().map(PathResult::quotas_bound).collect();
        let quotas_bound = if bound.contains(&Some(true)) {
            Some(true)
        } else if bound.contains(&None) {
            None
        } else {
            Some(false)
        };
        let (mut others, mut wall, mut busiest) = (0.0, 0.0, None::<f64>);
        for p in &self.paths {
            let phases = p
                .throughput_rounds
                .iter()
                .flat_map(|r| {
                    [
                        r.produce.as_ref().map(|p| p.cpu),
                        r.consume.as_ref().map(|p| p.cpu),
                    ]
                })
                .flatten()
                .chain(p.latency_rounds.iter().map(|l| l.cpu));
            for cpu in phases {
                if let Some(o) = cpu.others_s {
                    others += o;
                    wall += cpu.wall_s;
                    let cores = o / cpu.wall_s.max(1e-9);
                    busiest = Some(busiest.map_or(cores, |b| b.max(cores)));
                }
            }
        }
        let summary = Summary {
            other_load_cores_avg: (wall > 0.0).then(|| others / wall),
            other_load_cores_max: busiest,
            produce_ratio,
            consume_ratio,
            latency_rate: d
                .and_then(|d| d.produce_messages_per_s)
                .map(|s| 0.5 * s.median),
            added_p50_ms: diff(p50(g), p50(d)),
            added_p99_ms,
            gateway_cpu_s_per_gb: cpu,
            without,
            plaintext_produce_ratio: ratio(produce(pt), produce(d)),
            plaintext_consume_ratio: ratio(consume(pt), consume(d)),
            plaintext_added_p50_ms: diff(p50(pt), p50(d)),
            plaintext_added_p99_ms: diff(p99(pt), p99(d)),
            gateway_cpu_s_per_gb_plaintext: cpu_plaintext,
            tls_produce_ratio: ratio(produce(g), produce(pt)),
            tls_consume_ratio: ratio(consume(g), consume(pt)),
            tls_cpu_s_per_gb_added: cpu.zip(cpu_plaintext).map(|(on, off)| on - off),
            tls_produce_cpu_s_per_gb_added: g
                .and_then(|g| g.produce_gateway_cpu_s_per_gb)
                .zip(pt.and_then(|p| p.produce_gateway_cpu_s_per_gb))
                .map(|(on, off)| on - off),
            tls_consume_cpu_s_per_gb_added: g
                .and_then(|g| g.consume_gateway_cpu_s_per_gb)
                .zip(pt.and_then(|p| p.consume_gateway_cpu_s_per_gb))
                .map(|(on, off)| on - off),
            tls_added_p50_ms: diff(p50(g), p50(pt)),
            tls_added_p99_ms: diff(p99(g), p99(pt)),
            tls_client_produce_cpu_s_per_gb_added: diff(
                get(g, |m| m.produce_client_cpu_s_per_gb),
                get(pt, |m| m.produce_client_cpu_s_per_gb),
            ),
            tls_client_consume_cpu_s_per_gb_added: diff(
                get(g, |m| m.consume_client_cpu_s_per_gb),
                get(pt, |m| m.consume_client_cpu_s_per_gb),
            ),
            quota_throttles: total(|p| p.quota_throttles),
            quota_refusals: total(|p| p.quota_refusals),
            quotas_bound,
            targets: Targets {
                throughput_at_least_095_of_direct: Verdict::of(
                    produce_ratio
                        .zip(consume_ratio)
                        .map(|(p, c)| p.min(c) >= TARGET_THROUGHPUT_RATIO),
                ),
                added_p99_under_1ms_at_half_load: Verdict::of(
                    added_p99_ms.map(|a| a < TARGET_ADDED_P99_MS),
                ),
                cpu_under_2s_per_gb: Verdict::of(cpu.map(|c| c < TARGET_CPU_S_PER_GB)),
            },
        };
        self.summary = Some(summary);
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

/// "median (min-max)".
fn spread(s: Option<Stat>, decimals: usize) -> String {
    match s {
        Some(s) if s.n > 1 => format!(
            "{:.d$} ({:.d$}-{:.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        ),
        Some(s) => format!("{:.d$}", s.median, d = decimals),
        None => "-".into(),
    }
}

impl Report {
    /// Whether some pool's gateway paths were throttled or refused by their quotas.
    pub fn quotas_bound(&self) -> bool {
        self.pools
            .iter()
            .any(|p| p.summary.as_ref().and_then(|s| s.quotas_bound) == Some(true))
    }

    /// Two figures per pool and path, for the paths `figures` gives them for; nothing when none.
    fn pair_table(
        &self,
        out: &mut String,
        title: &str,
        heads: (&str, &str),
        figures: impl Fn(&PathResult) -> Option<(Option<Stat>, Option<Stat>)>,
    ) {
        let rows: Vec<_> = self
            .pools
            .iter()
            .filter(|pool| pool.skipped.is_none())
            .flat_map(|pool| pool.paths.iter().map(move |p| (pool.pool, p)))
            .filter_map(|(pool, p)| Some((pool, p.label(), figures(p)?)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\n{title}:\n{:<6} {:<20} {:>20} {:>20}",
            "pool", "path", heads.0, heads.1
        );
        for (pool, path, (a, b)) in rows {
            let _ = writeln!(
                out,
                "{:<6} {:<20} {:>20} {:>20}",
                pool,
                path,
                spread(a, 2),
                spread(b, 2)
            );
        }
    }

    /// `--compare plaintext`: TLS against plaintext, the same gateway build, and both against
    /// direct.
    fn tls_summary(&self, out: &mut String, pool: &PoolResult, sm: &Summary) {
        let width = pool.pool.len();
        let m = |kind| pool.path(kind);
        let lat =
            |kind, f: fn(&Medians) -> Option<Stat>| num(m(kind).and_then(f).map(|s| s.median), 2);
        let p50 = |kind| lat(kind, |m| m.latency_p50_ms);
        let p99 = |kind| lat(kind, |m| m.latency_p99_ms);
        let _ = writeln!(
            out,
            "{:width$}  TLS against plaintext (the same gateway): produce {} consume {}; gateway \
             CPU {} s/GB over TLS, {} in plaintext: TLS adds {} s/GB (noise included)",
            "",
            num(sm.tls_produce_ratio, 3),
            num(sm.tls_consume_ratio, 3),
            num(sm.gateway_cpu_s_per_gb, 2),
            num(sm.gateway_cpu_s_per_gb_plaintext, 2),
            signed(sm.tls_cpu_s_per_gb_added, 3),
        );
        let dir = |kind, f: fn(&Medians) -> Option<f64>| num(m(kind).and_then(f), 2);
        let _ =
            writeln!(
            out,
            "{:width$}  gateway CPU producing {} s/GB over TLS, {} in plaintext (TLS adds {}); \
             consuming {} and {} (TLS adds {})",
            "",
            dir(PathKind::Gateway, |m| m.produce_gateway_cpu_s_per_gb),
            dir(PathKind::GatewayPlaintext, |m| m.produce_gateway_cpu_s_per_gb),
            signed(sm.tls_produce_cpu_s_per_gb_added, 3),
            dir(PathKind::Gateway, |m| m.consume_gateway_cpu_s_per_gb),
            dir(PathKind::GatewayPlaintext, |m| m.consume_gateway_cpu_s_per_gb),
            signed(sm.tls_consume_cpu_s_per_gb_added, 3),
        );
        let _ = writeln!(
            out,
            "{:width$}  latency p50 / p99 at {} records/s, ms: TLS {} / {}, plaintext {} / {}, \
             direct {} / {}; TLS adds {} ms at p50, {} ms at p99",
            "",
            num(sm.latency_rate, 0),
            p50(PathKind::Gateway),
            p99(PathKind::Gateway),
            p50(PathKind::GatewayPlaintext),
            p99(PathKind::GatewayPlaintext),
            p50(PathKind::Direct),
            p99(PathKind::Direct),
            signed(sm.tls_added_p50_ms, 2),
            signed(sm.tls_added_p99_ms, 2),
        );
        let _ = writeln!(
            out,
            "{:width$}  plaintext gateway/direct produce {} consume {}, added p50 {} ms, p99 {} \
             ms; TLS adds the clients {} s/GB of CPU producing, {} consuming",
            "",
            num(sm.plaintext_produce_ratio, 3),
            num(sm.plaintext_consume_ratio, 3),
            signed(sm.plaintext_added_p50_ms, 2),
            signed(sm.plaintext_added_p99_ms, 2),
            signed(sm.tls_client_produce_cpu_s_per_gb_added, 3),
            signed(sm.tls_client_consume_cpu_s_per_gb_added, 3),
        );
        if let Some(tls) = pool.paths.iter().find_map(|p| p.tls.as_deref()) {
            let _ = writeln!(out, "{:width$}  negotiated: {tls}", "");
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "\nrecords of {} B, acks=all, idempotent, linger 5 ms; latency runs of {} s at {}; {} \
             rounds{}, medians (min-max); librdkafka {}",
            s.size,
            s.latency_seconds,
            s.latency_load,
            s.rounds,
            match s.consume_rounds {
                0 => String::new(),
                n => format!(" (and {n} more reads of the last round's records)"),
            },
            s.librdkafka
        );
        let _ = writeln!(
            out,
            "gateway cluster's quotas: {}; compared with: {}; Redis: {}",
            match s.quotas {
                tollgate_load_tests::admin::QuotaSetting::Unbound =>
                    "unbound (every quota set, 2^50 bytes or 2^40, none binding)",
                tollgate_load_tests::admin::QuotaSetting::Off => "off (every quota null)",
                tollgate_load_tests::admin::QuotaSetting::Defaults =>
                    "the gateway's defaults (MSK Serverless's)",
            },
            match s.compare.without() {
                Some(w) => format!("{} ({})", w.path.name(), w.differs),
                None => "gateway-plaintext (the same build, metering and quotas, without TLS; \
                         the gateway path serves TLS, its clients on SASL_SSL)"
                    .to_owned(),
            },
            match (s.redis, s.redis_started) {
                (false, _) => "no (quotas per instance)",
                (true, true) => "both gateways, rate quotas leased through it (started per pool)",
                (true, false) => "both gateways, rate quotas leased through it (--redis-url)",
            }
        );
        for pool in self.pools.iter().filter(|p| p.skipped.is_none()) {
            let _ = writeln!(
                out,
                "{}: {}; {} records per throughput run, {} partitions per throughput topic, {} \
                 per latency topic",
                pool.pool,
                pool.description,
                pool.messages,
                pool.partitions,
                pool.latency_partitions
            );
        }
        let _ = writeln!(
            out,
            "\n{:<6} {:<20} {:>19} {:>20} {:>8} {:>20} {:>8} {:>7}",
            "pool", "path", "produce MB/s", "consume MB/s", "p50 ms", "p99 ms", "lat/s", "CPU/GB"
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
                        p.label(),
                        p.error.as_deref().unwrap_or_default()
                    );
                    continue;
                }
                let m = &p.medians;
                let _ = writeln!(
                    out,
                    "{:<6} {:<20} {:>19} {:>20} {:>8} {:>20} {:>8} {:>7}",
                    pool.pool,
                    p.label(),
                    spread(m.produce_mb_per_s, 0),
                    spread(m.consume_mb_per_s, 0),
                    num(m.latency_p50_ms.map(|s| s.median), 2),
                    spread(m.latency_p99_ms, 2),
                    num(m.latency_achieved_rate.map(|s| s.median), 0),
                    num(m.gateway_cpu_s_per_gb, 2),
                );
                if let Some(e) = &p.error {
                    for line in e.lines().take(8) {
                        let _ = writeln!(out, "{:<6}   ! {line}", "");
                    }
                }
                if !p.quotas_bound_by.is_empty() {
                    let _ = writeln!(
                        out,
                        "{:<6}   ! QUOTAS BOUND: {}: these figures measure the quotas",
                        "",
                        p.quotas_bound_by.join(", ")
                    );
                }
            }
        }
        self.pair_table(
            &mut out,
            "mean request round trip seen by the client (librdkafka statistics), ms",
            ("produce", "consume"),
            |p| {
                (p.status != "not supported")
                    .then_some((p.medians.produce_rtt_avg_ms, p.medians.consume_rtt_avg_ms))
            },
        );
        self.pair_table(
            &mut out,
            "the benchmark process's CPU per GB consumed, s (the mock cluster's threads; the \
             clients)",
            ("mock cluster", "clients"),
            |p| {
                let m = &p.medians;
                m.consume_mock_cpu_s_per_gb
                    .is_some()
                    .then_some((m.consume_mock_cpu_s_per_gb, m.consume_client_cpu_s_per_gb))
            },
        );
        if self.settings.gateway_tls {
            // What TLS costs the clients (on CPU 0 under --pin, beside the mock cluster, so it
            // is taken from the throughput of the TLS path).
            self.pair_table(
                &mut out,
                "the clients' CPU per GB, s (this process less the mock cluster's threads; \
                 consuming on the mock pool only)",
                ("produce", "consume"),
                |p| {
                    let m = &p.medians;
                    (p.status != "not supported")
                        .then_some((m.produce_client_cpu_s_per_gb, m.consume_client_cpu_s_per_gb))
                },
            );
        }
        let _ = writeln!(out);
        for pool in &self.pools {
            let Some(sm) = &pool.summary else { continue };
            let t = &sm.targets;
            let (compared, cpu_off, ratios) = match &sm.without {
                Some(c) => (
                    c.what,
                    c.gateway_cpu_s_per_gb,
                    (c.produce_ratio, c.consume_ratio),
                ),
                None => (
                    "TLS",
                    sm.gateway_cpu_s_per_gb_plaintext,
                    (sm.tls_produce_ratio, sm.tls_consume_ratio),
                ),
            };
            let _ = writeln!(
                out,
                "{}: gateway/direct produce {} consume {}; added latency p50 {} ms, p99 {} ms \
                 at {} records/s; gateway CPU {} s/GB ({} without {compared}); {compared} \
                 on/off produce {} consume {}",
                pool.pool,
                num(sm.produce_ratio, 3),
                num(sm.consume_ratio, 3),
                signed(sm.added_p50_ms, 2),
                signed(sm.added_p99_ms, 2),
                num(sm.latency_rate, 0),
                num(sm.gateway_cpu_s_per_gb, 2),
                num(cpu_off, 2),
                num(ratios.0, 3),
                num(ratios.1, 3),
            );
            if self.settings.compare == crate::Compare::Plaintext {
                self.tls_summary(&mut out, pool, sm);
            }
            if let Some(c) = &sm.without {
                let _ = writeln!(
                    out,
                    "{:width$}  gateway CPU with {} less without: {} s/GB (gateway minus {}, \
                     noise included)",
                    "",
                    c.what,
                    signed(c.cpu_s_per_gb_added, 3),
                    c.path.name(),
                    width = pool.pool.len(),
                );
            }
            let redis: Vec<String> = pool
                .paths
                .iter()
                .filter_map(|p| {
                    let s = p.medians.redis_cpu_s_per_gb?;
                    Some(format!("{} {s:.3}", p.path.name()))
                })
                .collect();
            if !redis.is_empty() {
                let _ = writeln!(
                    out,
                    "{:width$}  Redis's CPU per GB during each path's throughput phases, s: {} \
                     (direct: its idle baseline)",
                    "",
                    redis.join(", "),
                    width = pool.pool.len(),
                );
            }
            let _ = writeln!(
                out,
                "{:width$}  {}",
                "",
                match sm.quotas_bound {
                    Some(false) => "quotas: no gateway path was throttled or refused".to_owned(),
                    Some(true) => format!(
                        "!!! QUOTAS BOUND: the gateway paths were throttled {} times and refused \
                         {} (see each path's quotas_bound_by): their figures measure the quotas, \
                         not the gateway",
                        sm.quota_throttles.map_or("?".into(), |n| n.to_string()),
                        sm.quota_refusals.map_or("?".into(), |n| n.to_string()),
                    ),
                    None =>
                        "quotas: whether they bound is not known (a gateway did not say)".to_owned(),
                },
                width = pool.pool.len(),
            );
            let _ = writeln!(
                out,
                "{:width$}  other processes used {} cores on average during the measurements \
                 (busiest phase {})",
                "",
                num(sm.other_load_cores_avg, 2),
                num(sm.other_load_cores_max, 2),
                width = pool.pool.len(),
            );
            let _ = writeln!(
                out,
                "{:width$}  targets{}: throughput >= {TARGET_THROUGHPUT_RATIO} of direct {}; \
                 added p99 < {TARGET_ADDED_P99_MS} ms {}; CPU < {TARGET_CPU_S_PER_GB} s/GB {}{}",
                "",
                if compared == "TLS" {
                    " (the gateway path, over TLS)"
                } else {
                    ""
                },
                t.throughput_at_least_095_of_direct.label(),
                t.added_p99_under_1ms_at_half_load.label(),
                t.cpu_under_2s_per_gb.label(),
                sm.without.as_ref().map_or(String::new(), |c| format!(
                    "; no measurable throughput lost to {} {}",
                    c.what,
                    c.no_measurable_throughput_loss.label()
                )),
                width = pool.pool.len(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_median_and_range() {
        let s = Stat::of([3.0, 1.0, 2.0, f64::NAN].into_iter()).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Stat::of([1.0, 2.0].into_iter()).unwrap().median, 1.5);
        assert!(Stat::of(std::iter::empty()).is_none());
    }

    /// A path with one round: produce and consume at `mb_per_s`, 1 GiB each, the gateway
    /// using `cpu_s` on each.
    fn path(kind: PathKind, mb_per_s: f64, cpu_s: Option<f64>) -> PathResult {
        let phase = || Phase {
            result: Throughput {
                bytes: 1 << 30,
                mb_per_s,
                ..Throughput::default()
            },
            cpu: CpuUse {
                gateway_s: cpu_s,
                ..CpuUse::default()
            },
        };
        let mut p = PathResult::new(kind);
        p.throughput_rounds.push(ThroughputRound {
            round: 0,
            produce: Some(phase()),
            consume: Some(phase()),
        });
        p
    }

    fn quota_use(throttles: u64) -> crate::gateway::QuotaUse {
        crate::gateway::QuotaUse {
            quotas: serde_json::json!({}),
            quota_use: Some(serde_json::json!({
                "throttles": {"ingress": 0, "partition_ingress": throttles},
                "refused": {"connections": 0},
            })),
        }
    }

    fn pool(paths: Vec<PathResult>) -> PoolResult {
        let mut pool = PoolResult {
            pool: "mock",
            description: String::new(),
            messages: 1,
            partitions: 1,
            latency_partitions: 1,
            skipped: None,
            paths,
            summary: None,
        };
        pool.summarize();
        pool
    }

    #[test]
    fn quotas_on_off_ratios_and_whether_they_bound() {
        let mut gw = path(PathKind::Gateway, 90.0, Some(0.6));
        gw.set_quota_use(quota_use(0));
        let mut off = path(PathKind::GatewayNoQuotas, 100.0, Some(0.5));
        off.set_quota_use(quota_use(0));
        let p = pool(vec![path(PathKind::Direct, 120.0, None), gw, off]);
        let s = p.summary.as_ref().unwrap();
        let cost = s.without.as_ref().unwrap();
        assert_eq!(
            (cost.what, cost.path),
            ("quota accounting", PathKind::GatewayNoQuotas)
        );
        assert_eq!(
            (cost.produce_ratio, cost.consume_ratio),
            (Some(0.9), Some(0.9))
        );
        assert_eq!(cost.gateway_cpu_s_per_gb, Some(0.5));
        assert!((cost.cpu_s_per_gb_added.unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(cost.no_measurable_throughput_loss, Verdict::Missed);
        assert_eq!(
            (s.quota_throttles, s.quota_refusals, s.quotas_bound),
            (Some(0), Some(0), Some(false))
        );
        assert!(p.paths[1].quotas_bound_by.is_empty());

        // One throttle on one gateway path: the quotas bound.
        let mut gw = path(PathKind::Gateway, 90.0, Some(0.6));
        gw.set_quota_use(quota_use(7));
        let mut off = path(PathKind::GatewayNoMetering, 100.0, Some(0.5));
        off.set_quota_use(quota_use(0));
        let p = pool(vec![path(PathKind::Direct, 120.0, None), gw, off]);
        let s = p.summary.as_ref().unwrap();
        assert_eq!((s.quota_throttles, s.quotas_bound), (Some(7), Some(true)));
        assert_eq!(
            p.paths[1].quotas_bound_by,
            ["partition_ingress throttled 7"]
        );
        let cost = s.without.as_ref().unwrap();
        assert_eq!(
            (cost.what, cost.path, cost.produce_ratio),
            ("metering", PathKind::GatewayNoMetering, Some(0.9))
        );

        // A gateway that did not say: not known.
        let mut gw = path(PathKind::Gateway, 90.0, Some(0.6));
        gw.set_quota_use(quota_use(0));
        let p = pool(vec![gw, path(PathKind::GatewayNoQuotas, 100.0, None)]);
        assert_eq!(p.summary.as_ref().unwrap().quotas_bound, None);
    }

    #[test]
    fn tls_against_plaintext() {
        let mut tls = path(PathKind::Gateway, 80.0, Some(1.5));
        tls.tls = Some("TLSv1.3, TLS_AES_256_GCM_SHA384".into());
        // The TLS path decrypts more on produce than it encrypts on consume.
        tls.throughput_rounds[0]
            .produce
            .as_mut()
            .unwrap()
            .cpu
            .gateway_s = Some(2.5);
        let plain = path(PathKind::GatewayPlaintext, 100.0, Some(0.5));
        let p = pool(vec![path(PathKind::Direct, 125.0, None), tls, plain]);
        let s = p.summary.as_ref().unwrap();
        assert_eq!(s.tls_produce_ratio, Some(0.8));
        assert_eq!(s.tls_consume_ratio, Some(0.8));
        assert_eq!(s.produce_ratio, Some(80.0 / 125.0));
        assert_eq!(s.plaintext_produce_ratio, Some(0.8));
        assert_eq!(s.gateway_cpu_s_per_gb, Some(2.0));
        assert_eq!(s.gateway_cpu_s_per_gb_plaintext, Some(0.5));
        assert_eq!(s.tls_cpu_s_per_gb_added, Some(1.5));
        assert_eq!(s.tls_produce_cpu_s_per_gb_added, Some(2.0));
        assert_eq!(s.tls_consume_cpu_s_per_gb_added, Some(1.0));
        assert_eq!(s.without, None);
        assert_eq!(p.paths[1].label(), "gateway (TLS)");
        assert_eq!(p.paths[2].label(), "gateway-plaintext");
        let json = serde_json::to_value(&p.paths[1]).unwrap();
        assert_eq!(json["path"], "gateway");
        assert_eq!(json["tls"], "TLSv1.3, TLS_AES_256_GCM_SHA384");
        assert_eq!(
            serde_json::to_value(PathKind::GatewayPlaintext).unwrap(),
            "gateway-plaintext"
        );
    }

    /// A report of one mock pool with `paths`, run with `--compare compare`.
    fn report(compare: crate::Compare, paths: Vec<PathResult>) -> Report {
        Report {
            date: String::new(),
            command: String::new(),
            machine: Machine {
                cores: 2,
                cpu: String::new(),
                loadavg_at_start: String::new(),
            },
            settings: Settings {
                messages: None,
                size: 1024,
                partitions: None,
                rounds: 1,
                consume_rounds: 0,
                acks: "all",
                idempotence: true,
                linger_ms: 5,
                latency_seconds: 3.0,
                latency_load: "",
                spread_leaders: false,
                lanes: None,
                client_config: Vec::new(),
                librdkafka: String::new(),
                gateway: String::new(),
                malloc: String::new(),
                pin: None,
                quotas: tollgate_load_tests::admin::QuotaSetting::Unbound,
                compare,
                gateway_tls: false,
                tls_certificate: None,
                redis: false,
                redis_started: false,
            },
            pools: vec![pool(paths)],
        }
    }

    #[test]
    fn metrics_on_off_in_the_summary_and_the_table() {
        let gw = path(PathKind::Gateway, 98.0, Some(0.55));
        let off = path(PathKind::GatewayNoMetrics, 100.0, Some(0.5));
        let r = report(
            crate::Compare::NoMetrics,
            vec![path(PathKind::Direct, 120.0, None), gw, off],
        );
        let cost = r.pools[0]
            .summary
            .as_ref()
            .unwrap()
            .without
            .as_ref()
            .unwrap();
        assert_eq!(
            (cost.what, cost.path, cost.produce_ratio, cost.consume_ratio),
            (
                "metrics",
                PathKind::GatewayNoMetrics,
                Some(0.98),
                Some(0.98)
            )
        );
        assert_eq!(cost.gateway_cpu_s_per_gb, Some(0.5));
        assert_eq!(cost.no_measurable_throughput_loss, Verdict::Met);
        let table = r.table();
        assert!(
            table.contains("compared with: gateway-no-metrics (--no-metrics, same quotas)"),
            "{table}"
        );
        for line in [
            "gateway CPU 0.55 s/GB (0.50 without metrics); metrics on/off produce 0.980 consume",
            "gateway CPU with metrics less without: +0.050 s/GB (gateway minus gateway-no-metrics",
        ] {
            assert!(table.contains(line), "{line:?} not in {table}");
        }
        assert!(
            table.contains("no measurable throughput lost to metrics met"),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["settings"]["compare"], "no-metrics");
        assert_eq!(json["pools"][0]["paths"][2]["path"], "gateway-no-metrics");
        assert_eq!(json["pools"][0]["summary"]["without"]["what"], "metrics");
        assert_eq!(
            json["pools"][0]["summary"]["without"]["no_measurable_throughput_loss"],
            "met"
        );
    }

    #[test]
    fn every_comparison_but_plaintext_goes_without_one_thing_of_its_own() {
        use clap::ValueEnum;
        let mut paths = Vec::new();
        for &c in crate::Compare::value_variants() {
            match c.without() {
                Some(w) => {
                    assert_eq!(w.compare, c);
                    // The path is named after the flag value: `--compare no-metrics`,
                    // `gateway-no-metrics`.
                    let flag = c.to_possible_value().unwrap();
                    assert_eq!(w.path.name(), format!("gateway-{}", flag.get_name()));
                    paths.push(w.path);
                }
                None => assert_eq!(c, crate::Compare::Plaintext),
            }
        }
        // Each entry of the table is some comparison's (the names above are distinct).
        assert_eq!(paths.len(), crate::WITHOUT.len());
    }

    #[test]
    fn metering_loss_needs_disjoint_ranges_below_the_ratio() {
        let s = |median, min, max| {
            Some(Stat {
                median,
                min,
                max,
                n: 3,
            })
        };
        assert_eq!(
            no_measurable_loss(s(98.0, 97.0, 99.0), s(100.0, 99.5, 101.0)),
            Some(true)
        );
        assert_eq!(
            no_measurable_loss(s(90.0, 85.0, 96.0), s(100.0, 95.0, 105.0)),
            Some(true)
        );
        assert_eq!(
            no_measurable_loss(s(90.0, 85.0, 92.0), s(100.0, 95.0, 105.0)),
            Some(false)
        );
        assert_eq!(no_measurable_loss(None, s(1.0, 1.0, 1.0)), None);
    }
}
