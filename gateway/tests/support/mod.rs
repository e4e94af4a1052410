//! Shared by the pool tests (`pool_faults`, `stateless_pool`): an idempotent producer and a
//! consumer running through the gateway on their own threads, each recording what its client
//! saw; a reader of a whole topic (the ground truth, read directly from the pool); and the
//! checks that every acknowledged record was consumed exactly once.
//!
//! Record values start with the record's id in decimal (8 digits), so that what was produced
//! and what was consumed can be matched whatever the partition and offset.
//!
//! Every wait has a deadline: a test that goes wrong fails with what it saw, it does not hang.
//! `TOLLGATE_TEST_CLIENT_DEBUG=broker,protocol,...` turns on librdkafka's debug log (stderr).

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Ends the test process when it overstays `limit`, after killing the children it started, so
/// that a hang in a client library cannot hold the test run forever.
pub fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("test still running after {} s: stopping", limit.as_secs());
        tollgate_load_tests::procs::kill_all_children();
        std::process::exit(101);
    });
}

/// A scratch directory for one test run, under the system's temp dir.
pub fn scratch_dir(test: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("tollgate-{test}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the scratch dir");
    dir
}

/// Milliseconds since `t0`, for progress lines.
pub fn stamp(t0: Instant) -> String {
    format!("[{:6.1} s]", t0.elapsed().as_secs_f64())
}

/// An error librdkafka reported through its error callback.
#[derive(Debug, Clone)]
pub struct ClientError {
    pub code: Option<RDKafkaErrorCode>,
    pub text: String,
}

/// What a client's context collected: errors librdkafka reported through its error callback
/// (connection-level: transport failures, all brokers down, ...).
#[derive(Default)]
struct Seen {
    client_errors: Mutex<Vec<ClientError>>,
    /// id -> result of its delivery report (producers only).
    acked: Mutex<Vec<u64>>,
    failed: Mutex<Vec<(u64, String)>>,
}

#[derive(Clone, Default)]
struct Ctx(Arc<Seen>);

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if debug().is_some() || (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            eprintln!("librdkafka {level:?} {fac}: {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        lock(&self.0.client_errors).push(ClientError {
            code: error.rdkafka_error_code(),
            text: format!("{error}: {reason}"),
        });
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => lock(&self.0.acked).push(record_id(m.payload())),
            Err((e, m)) => lock(&self.0.failed).push((record_id(m.payload()), e.to_string())),
        }
    }
}

impl ConsumerContext for Ctx {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn debug() -> Option<String> {
    std::env::var("TOLLGATE_TEST_CLIENT_DEBUG").ok()
}

fn with_debug(mut c: ClientConfig) -> ClientConfig {
    if let Some(contexts) = debug() {
        c.set("debug", contexts)
            .set_log_level(RDKafkaLogLevel::Debug);
    }
    c
}

/// The value of record `id`: the id in 8 decimal digits, padded to `size` bytes.
fn record_value(id: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{id:08}").into_bytes();
    v.resize(size.max(8), b'.');
    v
}

/// The id at the start of a record value; `u64::MAX` when there is none.
fn record_id(payload: Option<&[u8]>) -> u64 {
    let p = payload.unwrap_or_default();
    let digits = p.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return u64::MAX;
    }
    p[..digits]
        .iter()
        .fold(0, |n, b| n * 10 + u64::from(b - b'0'))
}

/// Creates `topic` with `partitions` partitions through `config`'s bootstrap (the gateway).
pub fn create_topic(config: &ClientConfig, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<Ctx> = with_debug(config.clone())
        .create_with_context(Ctx::default())
        .map_err(|e| format!("creating an admin client: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), admin.create_topics([&new], &opts)).await
        })
        .map_err(|_| format!("CreateTopics {topic} did not answer in 20 s"))?
        .map_err(|e| format!("CreateTopics {topic}: {e}"))?;
    for r in results {
        if let Err((t, code)) = r {
            return Err(format!("CreateTopics {t}: {code}"));
        }
    }
    Ok(())
}

/// How the producer runs.
pub struct ProduceSpec {
    pub topic: String,
    pub partitions: i32,
    /// Records to send at most; record `i` goes to partition `i % partitions`.
    pub records: u64,
    /// Records per second.
    pub rate: f64,
    /// Bytes per record value.
    pub size: usize,
    /// Stops sending early when set.
    pub stop: Arc<AtomicBool>,
    /// librdkafka's `message.timeout.ms`: how long a record may take to be acknowledged,
    /// retries included, before its delivery fails. Each produce request may take 10 s
    /// (`request.timeout.ms`); once sending stops, the producer waits this long plus 10 s for
    /// the last delivery reports.
    pub message_timeout: Duration,
}

/// What the producer saw.
#[derive(Debug, Default)]
pub struct Produced {
    pub sent: u64,
    /// Ids whose delivery report succeeded.
    pub acked: Vec<u64>,
    /// Ids whose delivery report failed, with the error.
    pub failed: Vec<(u64, String)>,
    /// Records still without a delivery report when the flush timed out.
    pub unreported: i32,
    /// Errors librdkafka reported through the error callback.
    pub client_errors: Vec<ClientError>,
    /// The idempotent producer's fatal error, if it raised one.
    pub fatal: Option<String>,
    /// Sending failed outright (not a delivery report), e.g. the client could not be made.
    pub send_errors: Vec<String>,
}

/// Starts an idempotent producer (acks=all) on its own thread; its result arrives on the
/// returned channel once it has stopped and flushed.
pub fn spawn_producer(config: &ClientConfig, spec: ProduceSpec) -> mpsc::Receiver<Produced> {
    let mut config = with_debug(config.clone());
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set(
            "message.timeout.ms",
            spec.message_timeout.as_millis().to_string(),
        )
        .set("request.timeout.ms", "10000")
        .set("client.id", "pool-test-producer");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(produce(config, spec));
    });
    rx
}

fn produce(config: ClientConfig, spec: ProduceSpec) -> Produced {
    let ctx = Ctx::default();
    let mut out = Produced::default();
    let producer: rdkafka::producer::BaseProducer<Ctx> =
        match config.create_with_context(ctx.clone()) {
            Ok(p) => p,
            Err(e) => {
                out.send_errors.push(format!("creating the producer: {e}"));
                return out;
            }
        };
    let start = Instant::now();
    let hard_stop = start + Duration::from_secs_f64(spec.records as f64 / spec.rate) * 2;
    for id in 0..spec.records {
        if spec.stop.load(Ordering::Relaxed) || Instant::now() > hard_stop {
            break;
        }
        let due = start + Duration::from_secs_f64(id as f64 / spec.rate);
        while Instant::now() < due {
            producer.poll(Duration::from_millis(1));
        }
        let value = record_value(id, spec.size);
        let mut record = BaseRecord::to(&spec.topic)
            .payload(&value)
            .partition((id % spec.partitions as u64) as i32);
        loop {
            match producer.send::<(), _>(record) {
                Ok(()) => {
                    out.sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                    if Instant::now() > hard_stop {
                        out.send_errors
                            .push(format!("record {id}: queue full until the end"));
                        break;
                    }
                }
                Err((e, _)) => {
                    out.send_errors.push(format!("record {id}: {e}"));
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    if producer
        .flush(spec.message_timeout + Duration::from_secs(10))
        .is_err()
    {
        out.unreported = producer.in_flight_count();
    }
    producer.poll(Duration::ZERO);
    out.fatal = producer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{code}: {reason}"));
    out.acked = std::mem::take(&mut *lock(&ctx.0.acked));
    out.failed = std::mem::take(&mut *lock(&ctx.0.failed));
    out.client_errors = std::mem::take(&mut *lock(&ctx.0.client_errors));
    out
}

/// One record as a consumer saw it.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    pub id: u64,
    pub partition: i32,
    pub offset: i64,
}

/// What a consumer saw.
#[derive(Debug, Default)]
pub struct Consumption {
    pub records: Vec<Consumed>,
    /// Errors `poll` returned (these reach the application).
    pub errors: Vec<String>,
    /// The same, as codes, for the retriable check.
    pub error_codes: Vec<Option<RDKafkaErrorCode>>,
    /// Errors librdkafka reported through the error callback.
    pub client_errors: Vec<ClientError>,
}

/// A consumer on its own thread, all partitions of a topic assigned from the beginning (no
/// group). It shares what it has consumed so far, and stops when told or at its deadline.
pub struct ConsumerHandle {
    progress: Arc<Mutex<Consumption>>,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<()>,
}

pub fn spawn_consumer(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    deadline: Instant,
) -> ConsumerHandle {
    let mut config = with_debug(config.clone());
    config
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100")
        .set("client.id", "pool-test-consumer")
        // librdkafka wants a group even for assigned partitions; nothing is committed to it.
        .set("group.id", "pool-test-consumer")
        .set("enable.auto.commit", "false");
    let progress = Arc::new(Mutex::new(Consumption::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, done) = mpsc::channel();
    let (p, s, topic) = (progress.clone(), stop.clone(), topic.to_owned());
    std::thread::spawn(move || {
        consume(config, &topic, partitions, deadline, &p, &s);
        let _ = tx.send(());
    });
    ConsumerHandle {
        progress,
        stop,
        done,
    }
}

fn consume(
    config: ClientConfig,
    topic: &str,
    partitions: i32,
    deadline: Instant,
    progress: &Mutex<Consumption>,
    stop: &AtomicBool,
) {
    let ctx = Ctx::default();
    let consumer: BaseConsumer<Ctx> = match config.create_with_context(ctx.clone()) {
        Ok(c) => c,
        Err(e) => {
            lock(progress)
                .errors
                .push(format!("creating the consumer: {e}"));
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let _ = tpl.add_partition_offset(topic, p, Offset::Beginning);
    }
    if let Err(e) = consumer.assign(&tpl) {
        lock(progress).errors.push(format!("assign: {e}"));
        return;
    }
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => lock(progress).records.push(Consumed {
                id: record_id(m.payload()),
                partition: m.partition(),
                offset: m.offset(),
            }),
            Some(Err(e)) => {
                let mut p = lock(progress);
                p.error_codes.push(e.rdkafka_error_code());
                p.errors.push(e.to_string());
            }
            None => {}
        }
    }
    lock(progress).client_errors = std::mem::take(&mut *lock(&ctx.0.client_errors));
}

impl ConsumerHandle {
    /// Distinct ids consumed so far.
    pub fn distinct_ids(&self) -> HashSet<u64> {
        lock(&self.progress).records.iter().map(|r| r.id).collect()
    }

    /// Waits until every id in `want` has been consumed, then `settle` longer (to catch late
    /// duplicates), or until `deadline`; then stops the consumer and returns what it saw.
    pub fn drain(
        self,
        want: &HashSet<u64>,
        settle: Duration,
        deadline: Instant,
    ) -> (Consumption, bool) {
        let mut complete = false;
        while Instant::now() < deadline {
            let seen = self.distinct_ids();
            if want.iter().all(|id| seen.contains(id)) {
                complete = true;
                std::thread::sleep(settle);
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.stop.store(true, Ordering::Relaxed);
        // The poll loop notices within its 100 ms poll; closing the client may take a while.
        let exited = self.done.recv_timeout(Duration::from_secs(10)).is_ok();
        let mut out = std::mem::take(&mut *lock(&self.progress));
        if !exited {
            out.errors
                .push("the consumer thread did not stop within 10 s".into());
            out.error_codes.push(None);
        }
        (out, complete)
    }
}

/// Waits up to `produce_within` for the producer to finish, then drains the consumer (see
/// [`ConsumerHandle::drain`]) until it has every acknowledged record; logs both.
pub fn finish_clients(
    producer: mpsc::Receiver<Produced>,
    consumer: ConsumerHandle,
    t0: Instant,
    log_tail: impl Fn() -> String,
    produce_within: Duration,
    settle: Duration,
    drain_within: Duration,
) -> (Produced, Consumption, bool) {
    let produced = producer.recv_timeout(produce_within).unwrap_or_else(|_| {
        panic!(
            "the producer did not finish in time; gateway log:\n{}",
            log_tail()
        )
    });
    eprintln!(
        "{} produced: {} sent, {} acknowledged, {} failed",
        stamp(t0),
        produced.sent,
        produced.acked.len(),
        produced.failed.len()
    );
    let acked: HashSet<u64> = produced.acked.iter().copied().collect();
    let (consumed, complete) = consumer.drain(&acked, settle, Instant::now() + drain_within);
    eprintln!(
        "{} consumed {} records (all acknowledged ones: {complete})",
        stamp(t0),
        consumed.records.len()
    );
    (produced, consumed, complete)
}

/// Reads every record of `topic` up to the high watermarks (asked for first), directly from
/// `bootstrap` without SASL: the ground truth of what the pool holds.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<Consumed>, String> {
    let deadline = Instant::now() + timeout;
    let mut config = with_debug(ClientConfig::new());
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.partition.eof", "false")
        .set("client.id", "pool-test-reader")
        .set("group.id", "pool-test-reader")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer<Ctx> = config
        .create_with_context(Ctx::default())
        .map_err(|e| format!("creating the direct reader: {e}"))?;
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        if high > low {
            ends.insert(p, high);
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(low));
        }
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut out = Vec::new();
    while ends
        .iter()
        .any(|(p, high)| next.get(p).copied().unwrap_or(0) < *high)
    {
        if Instant::now() > deadline {
            return Err(format!(
                "read {} records of {topic} in {} s; positions {next:?}, ends {ends:?}",
                out.len(),
                timeout.as_secs()
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                out.push(Consumed {
                    id: record_id(m.payload()),
                    partition: m.partition(),
                    offset: m.offset(),
                });
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None => {}
        }
    }
    Ok(out)
}

/// Kafka's retriable error codes, and librdkafka's local transient ones: what a client may see
/// while a pool moves leaders or loses a broker, and retries by itself.
pub fn retriable(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode as E;
    matches!(
        code,
        Some(
            E::UnknownTopicOrPartition
                | E::LeaderNotAvailable
                | E::NotLeaderForPartition
                | E::RequestTimedOut
                | E::ReplicaNotAvailable
                | E::NetworkException
                | E::CoordinatorLoadInProgress
                | E::CoordinatorNotAvailable
                | E::NotCoordinator
                | E::NotEnoughReplicas
                | E::NotEnoughReplicasAfterAppend
                | E::KafkaStorageError
                | E::FencedLeaderEpoch
                | E::UnknownLeaderEpoch
                | E::OffsetNotAvailable
                | E::PreferredLeaderNotAvailable
                | E::BrokerTransportFailure
                | E::AllBrokersDown
                | E::OperationTimedOut
                | E::TimedOutQueue
                | E::Retry
        )
    )
}

/// The outcome of one run, checked: `failures` lists each broken promise with its evidence.
pub struct Verdict {
    pub summary: String,
    pub failures: Vec<String>,
}

/// Checks a run: no delivery failed or went unreported, the producer raised no fatal error,
/// every acknowledged id was consumed exactly once, the consumer got no non-retriable error.
/// `log` is the topic as the pool holds it (read directly), for telling duplicates written to
/// the log from duplicates delivered twice by the consumer.
pub fn verdict(
    produced: &Produced,
    consumed: &Consumption,
    complete: bool,
    log: &Result<Vec<Consumed>, String>,
) -> Verdict {
    let mut failures = Vec::new();
    let acked: HashSet<u64> = produced.acked.iter().copied().collect();
    if !produced.send_errors.is_empty() {
        failures.push(format!(
            "producing failed outright {} times, e.g. {:?}",
            produced.send_errors.len(),
            sample(&produced.send_errors)
        ));
    }
    if !produced.failed.is_empty() {
        // Per error: how many, and the lowest and highest id (ids are sent in order, so they
        // tell when the failures started and ended).
        let mut by_error: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
        for (id, e) in &produced.failed {
            let entry = by_error.entry(e.as_str()).or_insert((0, *id, *id));
            entry.0 += 1;
            entry.1 = entry.1.min(*id);
            entry.2 = entry.2.max(*id);
        }
        let by_error: Vec<String> = by_error
            .iter()
            .map(|(e, (n, lo, hi))| format!("{n} x {e:?} (ids {lo}..={hi})"))
            .collect();
        failures.push(format!(
            "{} of {} delivery reports failed: {}",
            produced.failed.len(),
            produced.sent,
            by_error.join(", ")
        ));
    }
    if produced.unreported > 0 {
        failures.push(format!(
            "{} records had no delivery report when the flush timed out",
            produced.unreported
        ));
    }
    if let Some(fatal) = &produced.fatal {
        failures.push(format!(
            "the idempotent producer raised a fatal error: {fatal}"
        ));
    }

    let mut count: HashMap<u64, Vec<Consumed>> = HashMap::new();
    for r in &consumed.records {
        count.entry(r.id).or_default().push(*r);
    }
    let mut missing: Vec<u64> = acked
        .iter()
        .filter(|id| !count.contains_key(id))
        .copied()
        .collect();
    missing.sort_unstable();
    if !missing.is_empty() {
        failures.push(format!(
            "{} of {} acknowledged records were never consumed through the gateway{} (ids {:?})",
            missing.len(),
            acked.len(),
            if complete { "" } else { " before the deadline" },
            sample(&missing)
        ));
    }
    let mut dups: Vec<(u64, Vec<Consumed>)> = count
        .iter()
        .filter(|(_, rs)| rs.len() > 1)
        .map(|(id, rs)| (*id, rs.clone()))
        .collect();
    dups.sort_unstable_by_key(|(id, _)| *id);
    if !dups.is_empty() {
        let redelivered = dups
            .iter()
            .filter(|(_, rs)| {
                rs.iter()
                    .all(|r| (r.partition, r.offset) == (rs[0].partition, rs[0].offset))
            })
            .count();
        failures.push(format!(
            "{} records were consumed more than once through the gateway ({} at the same \
             partition and offset, i.e. delivered twice by the consumer; {} at different \
             offsets, i.e. written twice); e.g. {:?}",
            dups.len(),
            redelivered,
            dups.len() - redelivered,
            dups.iter()
                .take(5)
                .map(|(id, rs)| format!(
                    "{id} at {:?}",
                    rs.iter()
                        .map(|r| (r.partition, r.offset))
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
        ));
    }
    let stray: Vec<u64> = count
        .keys()
        .filter(|id| !acked.contains(id))
        .copied()
        .collect();
    for (who, errors) in [
        ("producer", &produced.client_errors),
        ("consumer", &consumed.client_errors),
    ] {
        let bad: Vec<&str> = errors
            .iter()
            .filter(|e| !retriable(e.code))
            .map(|e| e.text.as_str())
            .collect();
        if !bad.is_empty() {
            failures.push(format!(
                "the {who}'s error callback reported {} non-retriable errors, e.g. {:?}",
                bad.len(),
                sample(&bad)
            ));
        }
    }
    let fatal_errors: Vec<&String> = consumed
        .errors
        .iter()
        .zip(&consumed.error_codes)
        .filter(|(_, code)| !retriable(**code))
        .map(|(e, _)| e)
        .collect();
    if !fatal_errors.is_empty() {
        failures.push(format!(
            "the consumer got {} non-retriable errors, e.g. {:?}",
            fatal_errors.len(),
            sample(&fatal_errors)
        ));
    }

    let log_summary = match log {
        Ok(log) => {
            let mut in_log: HashMap<u64, usize> = HashMap::new();
            for r in log {
                *in_log.entry(r.id).or_default() += 1;
            }
            let written_twice = in_log.values().filter(|n| **n > 1).count();
            let lost = acked.iter().filter(|id| !in_log.contains_key(id)).count();
            if written_twice > 0 {
                failures.push(format!(
                    "the pool's log holds {written_twice} records more than once (read directly)"
                ));
            }
            format!(
                "the pool's log (read directly): {} records, {} distinct, {written_twice} \
                 written more than once, {lost} acknowledged ones absent",
                log.len(),
                in_log.len()
            )
        }
        Err(e) => format!("the pool's log could not be read directly: {e}"),
    };
    let summary = format!(
        "producer: {} sent, {} acknowledged, {} failed, {} unreported, {} client errors {:?}\n\
         consumer: {} records, {} distinct, {} acknowledged ids missing, {} duplicated ids, \
         {} consumed but not acknowledged, {} poll errors {:?}, {} client errors {:?}\n{log_summary}",
        produced.sent,
        produced.acked.len(),
        produced.failed.len(),
        produced.unreported,
        produced.client_errors.len(),
        sample(&produced.client_errors)
            .iter()
            .map(|e| &e.text)
            .collect::<Vec<_>>(),
        consumed.records.len(),
        count.len(),
        missing.len(),
        dups.len(),
        stray.len(),
        consumed.errors.len(),
        sample(&consumed.errors),
        consumed.client_errors.len(),
        sample(&consumed.client_errors)
            .iter()
            .map(|e| &e.text)
            .collect::<Vec<_>>(),
    );
    Verdict { summary, failures }
}

/// The first few items, for messages.
fn sample<T: Clone>(items: &[T]) -> Vec<T> {
    items.iter().take(5).cloned().collect()
}
