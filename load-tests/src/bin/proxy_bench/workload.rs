//! The three measurements, each with the same librdkafka settings whatever the path:
//!
//! - [`produce`]: N records of S bytes as fast as the producer goes (acks=all, idempotent,
//!   linger 5 ms), timed from the first send to the end of the final flush.
//! - [`consume`]: one member of a fresh consumer group reads them all back, timed from the
//!   first record to the last (the group join before it is reported apart).
//! - [`latency`]: records sent at a fixed rate; each one's latency is its delivery report's
//!   time minus its send time.
//!
//! Each starts with one record sent and flushed, so connection setup (SASL, metadata, producer
//! id) is not counted as throughput or latency, and each stops at its deadline.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;

/// Where clients connect, and how they authenticate.
#[derive(Clone)]
pub struct Endpoint {
    pub bootstrap: String,
    /// SASL PLAIN user name and password (the gateway's token), or plaintext without SASL.
    pub sasl: Option<(String, String)>,
    /// TLS, verifying the server's certificate (host name included) against this CA
    /// (`ssl.ca.location`); `None`: no TLS.
    pub ca: Option<std::path::PathBuf>,
}

/// librdkafka properties given with `--client-config`, applied to every client on every path.
static OVERRIDES: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// Sets the `--client-config` properties; call once, before any client is made.
pub fn set_overrides(pairs: Vec<(String, String)>) {
    let _ = OVERRIDES.set(pairs);
}

/// `c` with the `--client-config` properties applied over the benchmark's own.
fn overridden(mut c: ClientConfig) -> ClientConfig {
    for (k, v) in OVERRIDES.get().into_iter().flatten() {
        c.set(k, v);
    }
    c
}

impl Endpoint {
    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "proxy-bench")
            .set("statistics.interval.ms", STATS_INTERVAL_MS);
        if let Ok(debug) = std::env::var("TOLLGATE_BENCH_CLIENT_DEBUG") {
            // librdkafka's debug contexts (e.g. "broker,fetch,cgrp"); its log goes to stderr.
            c.set("debug", debug)
                .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        let protocol = match (&self.sasl, &self.ca) {
            (Some(_), Some(_)) => "SASL_SSL",
            (Some(_), None) => "SASL_PLAINTEXT",
            (None, Some(_)) => "SSL",
            (None, None) => "PLAINTEXT",
        };
        c.set("security.protocol", protocol);
        if let Some((user, password)) = &self.sasl {
            c.set("sasl.mechanisms", "PLAIN")
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        if let Some(ca) = &self.ca {
            c.set("ssl.ca.location", ca.display().to_string());
        }
        overridden(c)
    }

    fn producer_config(&self, size: usize) -> ClientConfig {
        let mut c = self.config();
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set(
                "message.max.bytes",
                (size + 4096).max(1_000_000).to_string(),
            );
        overridden(c)
    }
}

/// How often librdkafka reports its statistics (request round trips, request counts).
const STATS_INTERVAL_MS: &str = "500";

/// What librdkafka saw of the broker it talked to (the pool, or the gateway), from its
/// statistics, sampled every 500 ms while the client ran.
#[derive(Serialize, Clone, Debug, Default)]
pub struct ClientStats {
    /// Mean request round trip (request sent to response received), over the samples.
    pub rtt_avg_ms: f64,
    /// The highest per-sample p99 round trip.
    pub rtt_p99_max_ms: f64,
    /// Round trips sampled.
    pub rtt_count: i64,
    /// Produce or Fetch requests sent, as of the last sample.
    pub requests: i64,
    /// Bytes sent and received on broker connections, as of the last sample.
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

/// The few fields of librdkafka's statistics JSON the benchmark keeps.
#[derive(serde::Deserialize)]
struct RawStats {
    #[serde(default)]
    brokers: std::collections::HashMap<String, RawBroker>,
}

#[derive(serde::Deserialize)]
struct RawBroker {
    #[serde(default)]
    source: String,
    #[serde(default)]
    req: std::collections::HashMap<String, i64>,
    #[serde(default)]
    txbytes: u64,
    #[serde(default)]
    rxbytes: u64,
    rtt: Option<RawWindow>,
}

#[derive(serde::Deserialize)]
struct RawWindow {
    avg: i64,
    p99: i64,
    cnt: i64,
}

#[derive(Default)]
struct StatsAcc {
    rtt_sum_us: f64,
    rtt_count: i64,
    rtt_p99_max_us: i64,
    produce: i64,
    fetch: i64,
    tx_bytes: u64,
    rx_bytes: u64,
}

impl StatsAcc {
    fn add(&mut self, raw: RawStats) {
        let (mut produce, mut fetch, mut tx, mut rx) = (0, 0, 0, 0);
        // "logical" entries (the group coordinator handle) duplicate a real broker's traffic.
        for b in raw.brokers.values().filter(|b| b.source != "logical") {
            if let Some(w) = b.rtt.as_ref().filter(|w| w.cnt > 0) {
                self.rtt_sum_us += (w.avg * w.cnt) as f64;
                self.rtt_count += w.cnt;
                self.rtt_p99_max_us = self.rtt_p99_max_us.max(w.p99);
            }
            produce += b.req.get("Produce").copied().unwrap_or(0);
            fetch += b.req.get("Fetch").copied().unwrap_or(0);
            tx += b.txbytes;
            rx += b.rxbytes;
        }
        (self.produce, self.fetch, self.tx_bytes, self.rx_bytes) = (produce, fetch, tx, rx);
    }

    fn report(&self, fetch: bool) -> Option<ClientStats> {
        (self.rtt_count > 0).then(|| ClientStats {
            rtt_avg_ms: self.rtt_sum_us / self.rtt_count as f64 / 1e3,
            rtt_p99_max_ms: self.rtt_p99_max_us as f64 / 1e3,
            rtt_count: self.rtt_count,
            requests: if fetch { self.fetch } else { self.produce },
            tx_bytes: self.tx_bytes,
            rx_bytes: self.rx_bytes,
        })
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Throughput {
    pub messages: u64,
    /// Payload bytes (records' values; no keys, headers or framing).
    pub bytes: u64,
    pub seconds: f64,
    /// 10^6 bytes per second.
    pub mb_per_s: f64,
    pub messages_per_s: f64,
    /// Consume only: seconds from subscribing to the first record (group join, first fetch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_record_after_s: Option<f64>,
    /// Errors librdkafka reported on the way (transient ones included), with the first few.
    pub client_errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_error_samples: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_stats: Option<ClientStats>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Latency {
    /// Records per second asked for.
    pub target_rate: f64,
    /// Records per second actually sent.
    pub achieved_rate: f64,
    pub messages: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub client_errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_error_samples: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_stats: Option<ClientStats>,
}

/// Delivery reports and client errors, shared with librdkafka's threads.
struct Ctx {
    origin: Instant,
    /// Microseconds from send to delivery report, per delivered record sent at or after
    /// `record_from_ns`.
    latencies: Mutex<Vec<u32>>,
    record_from_ns: AtomicUsize,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
    stats: Mutex<StatsAcc>,
}

impl Ctx {
    fn new() -> Ctx {
        Ctx {
            origin: Instant::now(),
            latencies: Mutex::default(),
            record_from_ns: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_failure: Mutex::default(),
            errors: AtomicU64::new(0),
            error_samples: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    fn now_ns(&self) -> usize {
        self.origin.elapsed().as_nanos() as usize
    }

    fn reset(&self) {
        self.latencies.lock().expect("poisoned").clear();
        self.delivered.store(0, Ordering::SeqCst);
        self.failed.store(0, Ordering::SeqCst);
        self.errors.store(0, Ordering::SeqCst);
        self.error_samples.lock().expect("poisoned").clear();
        *self.stats.lock().expect("poisoned") = StatsAcc::default();
    }

    fn client_stats(&self, fetch: bool) -> Option<ClientStats> {
        self.stats.lock().expect("poisoned").report(fetch)
    }

    fn errors(&self) -> (u64, Vec<String>) {
        (
            self.errors.load(Ordering::SeqCst),
            self.error_samples.lock().expect("poisoned").clone(),
        )
    }

    /// Fails when any record was not delivered, naming the first failure.
    fn check_delivered(&self, expected: u64) -> Result<()> {
        let failed = self.failed.load(Ordering::SeqCst);
        let delivered = self.delivered.load(Ordering::SeqCst);
        if failed > 0 || delivered != expected {
            let first = self.first_failure.lock().expect("poisoned").clone();
            bail!(
                "{delivered} of {expected} records delivered, {failed} failed; first failure: {}",
                first.unwrap_or_else(|| "none reported".into())
            );
        }
        Ok(())
    }
}

impl ClientContext for Ctx {
    fn stats_raw(&self, statistics: &[u8]) {
        if let Ok(raw) = serde_json::from_slice::<RawStats>(statistics) {
            self.stats.lock().expect("poisoned").add(raw);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.error_samples.lock().expect("poisoned");
        if samples.len() < 5 {
            samples.push(format!("{error}: {reason}"));
        }
    }

    // librdkafka's own log lines are not wanted on the benchmark's output (errors come through
    // `error` above) unless its debug output was asked for.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, line: &str) {
        if std::env::var_os("TOLLGATE_BENCH_CLIENT_DEBUG").is_some() {
            eprintln!("librdkafka {level:?} {fac}: {line}");
        }
    }
}

impl ProducerContext for Ctx {
    /// Send time, in nanoseconds since `origin`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        match result {
            Ok(_) => {
                if sent_ns >= self.record_from_ns.load(Ordering::Relaxed) {
                    let micros = (self.now_ns().saturating_sub(sent_ns) / 1_000) as u32;
                    self.latencies.lock().expect("poisoned").push(micros);
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_failure.lock().expect("poisoned");
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {}

/// Creates `name` with `partitions` partitions (replication factor 1) through `ep`.
pub fn create_topic(ep: &Endpoint, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<_> = ep
        .config()
        .create_with_context(Ctx::new())
        .context("creating an admin client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                admin.create_topics([&topic], &opts),
            )
            .await
        })
        .map_err(|_| anyhow!("CreateTopics {name} timed out after 30 s"))?
        .with_context(|| format!("CreateTopics {name}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("CreateTopics {topic}: {code}"),
        }
    }
    Ok(())
}

/// Deletes `name` through `ep`.
pub fn delete_topic(ep: &Endpoint, name: &str) -> Result<()> {
    let admin: AdminClient<_> = ep
        .config()
        .create_with_context(Ctx::new())
        .context("creating an admin client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(30), admin.delete_topics(&[name], &opts)).await
        })
        .map_err(|_| anyhow!("DeleteTopics {name} timed out after 30 s"))?
        .with_context(|| format!("DeleteTopics {name}"))?;
    for r in results {
        if let Err((topic, code)) = r {
            bail!("DeleteTopics {topic}: {code}");
        }
    }
    Ok(())
}

fn payload(size: usize) -> Vec<u8> {
    // Not all zeros, in case anything on the way compresses.
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

fn producer(ep: &Endpoint, size: usize) -> Result<ThreadedProducer<Ctx>> {
    ep.producer_config(size)
        .create_with_context(Ctx::new())
        .context("creating a producer")
}

/// Spreads records over partitions: runs of about 256 KiB go to one partition, then the next.
///
/// librdkafka's default sticky partitioner picks the next partition at random, so a short run
/// fills a few partitions and leaves others empty; the mock cluster keeps only the last 5 MiB
/// of a partition, so every partition must take its share for all records to be read back.
/// Runs of 256 KiB still make full batches, as the sticky partitioner does.
#[derive(Clone, Copy)]
pub struct Spread {
    pub partitions: i32,
    run: u64,
}

impl Spread {
    pub fn new(partitions: i32, size: usize) -> Spread {
        Spread {
            partitions: partitions.max(1),
            run: (256 * 1024 / size.max(1) as u64).max(1),
        }
    }

    fn partition(self, i: u64) -> i32 {
        ((i / self.run) % self.partitions as u64) as i32
    }
}

/// Sends one record to `partition`, waiting while the local queue is full.
fn send(
    p: &ThreadedProducer<Ctx>,
    topic: &str,
    partition: i32,
    value: &[u8],
    deadline: Instant,
) -> Result<()> {
    let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, p.context().now_ns())
        .partition(partition)
        .payload(value);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if Instant::now() > deadline {
                    bail!("the producer's queue stayed full until the deadline");
                }
                record = r;
                std::thread::sleep(Duration::from_micros(100));
            }
            Err((e, _)) => bail!("producing to {topic}: {e}"),
        }
    }
}

fn flush(p: &ThreadedProducer<Ctx>, deadline: Instant) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    p.flush(left).map_err(|e| {
        let (count, samples) = p.context().errors();
        anyhow!(
            "flush did not finish before the deadline: {e}; {} delivered so far; librdkafka \
             reported {count} errors{}{}",
            p.context().delivered.load(Ordering::SeqCst),
            if samples.is_empty() { "" } else { ", first: " },
            samples.join("; ")
        )
    })
}

/// Sends and flushes one record, then forgets it: connection setup is not measured.
fn warm_up(p: &ThreadedProducer<Ctx>, topic: &str, value: &[u8], deadline: Instant) -> Result<()> {
    send(p, topic, 0, value, deadline)?;
    flush(p, deadline).context("warm-up record")?;
    p.context()
        .check_delivered(1)
        .context("warm-up record not delivered")?;
    p.context().reset();
    Ok(())
}

/// Produces `messages` records of `size` bytes as fast as possible.
pub fn produce(
    ep: &Endpoint,
    topic: &str,
    spread: Spread,
    messages: u64,
    size: usize,
    deadline: Instant,
) -> Result<Throughput> {
    let value = payload(size);
    let p = producer(ep, size)?;
    warm_up(&p, topic, &value, deadline)?;
    let start = Instant::now();
    for i in 0..messages {
        send(&p, topic, spread.partition(i), &value, deadline)?;
    }
    flush(&p, deadline)?;
    let seconds = start.elapsed().as_secs_f64();
    p.context().check_delivered(messages)?;
    let (client_errors, client_error_samples) = p.context().errors();
    let bytes = messages * size as u64;
    Ok(Throughput {
        messages,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        messages_per_s: messages as f64 / seconds,
        first_record_after_s: None,
        client_errors,
        client_error_samples,
        client_stats: p.context().client_stats(false),
    })
}

/// One consumer in group `group` reads `messages` records of `topic` from the beginning.
pub fn consume(
    ep: &Endpoint,
    topic: &str,
    group: &str,
    messages: u64,
    deadline: Instant,
) -> Result<Throughput> {
    let mut config = ep.config();
    config
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.partition.eof", "false");
    let c: BaseConsumer<Ctx> = overridden(config)
        .create_with_context(Ctx::new())
        .context("creating a consumer")?;
    c.subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    let subscribed = Instant::now();
    let mut first = None;
    let (mut got, mut bytes) = (0u64, 0u64);
    let mut last_error = None;
    while got < messages {
        if Instant::now() > deadline {
            bail!(
                "{got} of {messages} records consumed before the deadline; last error: {}; {}",
                last_error.unwrap_or_else(|| "none".to_string()),
                positions(&c, topic)
            );
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                got += 1;
                bytes += m.payload_len() as u64;
            }
            Some(Err(e)) => last_error = Some(e.to_string()),
            None => {}
        }
    }
    let end = Instant::now();
    let first = first.unwrap_or(end);
    let seconds = (end - first).as_secs_f64().max(1e-6);
    let (client_errors, client_error_samples) = c.context().errors();
    Ok(Throughput {
        messages: got,
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        messages_per_s: got as f64 / seconds,
        first_record_after_s: Some((first - subscribed).as_secs_f64()),
        client_errors,
        client_error_samples,
        client_stats: c.context().client_stats(true),
    })
}

/// Where a stuck consumer stands: per assigned partition, its position and the high watermark.
fn positions(c: &BaseConsumer<Ctx>, topic: &str) -> String {
    let Ok(assigned) = c.position() else {
        return "positions unknown".into();
    };
    let parts: Vec<String> = assigned
        .elements()
        .iter()
        .map(|e| {
            let high = c
                .fetch_watermarks(topic, e.partition(), Duration::from_secs(2))
                .map_or_else(|e| format!("? ({e})"), |(_, h)| h.to_string());
            format!("{}: at {:?} of {high}", e.partition(), e.offset())
        })
        .collect();
    format!(
        "partitions (position of high watermark): {}",
        parts.join(", ")
    )
}

/// Seconds of each latency run sent at the full rate before latencies are recorded.
pub const LATENCY_WARM_UP_S: f64 = 0.5;

/// Sends records of `size` bytes at `rate` per second for `seconds` and reports the spread
/// of their delivery latencies.
pub fn latency(
    ep: &Endpoint,
    topic: &str,
    spread: Spread,
    size: usize,
    rate: f64,
    seconds: f64,
    deadline: Instant,
) -> Result<Latency> {
    let value = payload(size);
    let p = producer(ep, size)?;
    warm_up(&p, topic, &value, deadline)?;
    // The first records at the full rate find connections, batches and the pool's partition
    // logs cold; they are sent but not counted.
    let warm = (rate * LATENCY_WARM_UP_S) as u64;
    let total = warm + (rate * seconds).max(1.0) as u64;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut measured_from = None;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            if sent == warm {
                let ctx = p.context();
                ctx.record_from_ns.store(ctx.now_ns(), Ordering::SeqCst);
                measured_from = Some(Instant::now());
            }
            send(&p, topic, spread.partition(sent), &value, deadline)?;
            sent += 1;
        }
        if Instant::now() > deadline {
            bail!("{sent} of {total} records sent before the deadline");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let sending = measured_from.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
    flush(&p, deadline)?;
    p.context().check_delivered(total)?;
    let mut lat = std::mem::take(&mut *p.context().latencies.lock().expect("poisoned"));
    lat.sort_unstable();
    let (client_errors, client_error_samples) = p.context().errors();
    let measured = total - warm;
    Ok(Latency {
        target_rate: rate,
        achieved_rate: measured as f64 / sending,
        messages: measured,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        p999_ms: percentile(&lat, 0.999),
        max_ms: lat.last().map_or(f64::NAN, |&m| f64::from(m) / 1e3),
        client_errors,
        client_error_samples,
        client_stats: p.context().client_stats(false),
    })
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1e3
}

#[cfg(test)]
mod tests {
    use super::{percentile, Endpoint, Spread};

    #[test]
    fn tls_endpoints_use_sasl_ssl_and_trust_the_ca() {
        let ep = |sasl: bool, ca: bool| Endpoint {
            bootstrap: "127.0.0.1:9092".into(),
            sasl: sasl.then(|| ("u".to_owned(), "token".to_owned())),
            ca: ca.then(|| "/tmp/ca.pem".into()),
        };
        let tls = ep(true, true).config();
        assert_eq!(tls.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(tls.get("ssl.ca.location"), Some("/tmp/ca.pem"));
        assert_eq!(tls.get("sasl.mechanisms"), Some("PLAIN"));
        let plain = ep(true, false).config();
        assert_eq!(plain.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(plain.get("ssl.ca.location"), None);
        assert_eq!(
            ep(false, false).config().get("security.protocol"),
            Some("PLAINTEXT")
        );
    }

    #[test]
    fn spreads_runs_over_every_partition() {
        let s = Spread::new(3, 1024);
        let parts: Vec<i32> = (0..1024).step_by(256).map(|i| s.partition(i)).collect();
        assert_eq!(parts, [0, 1, 2, 0]);
        assert_eq!(s.partition(255), 0);
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
