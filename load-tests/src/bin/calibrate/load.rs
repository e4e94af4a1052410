//! The clients that make the load, all librdkafka through the gateway: a producer sending at
//! a target rate (every record's send and acknowledgement times kept), and consumers reading
//! a topic as fast as they can (the bytes counted as they arrive).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

/// How records are sent: what a series loads the pool with.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Bytes per record value.
    pub record_bytes: usize,
    /// librdkafka's `linger.ms`.
    pub linger_ms: u32,
    /// One record per batch (`batch.num.messages=1`): each produce request carries one record,
    /// so that the series loads the pool with requests rather than bytes.
    pub one_record_per_request: bool,
}

/// One record's fate, in nanoseconds since the run's origin.
#[derive(Debug, Clone, Copy)]
pub struct Fate {
    pub sent_ns: u64,
    /// When its delivery report came (acknowledged, failed, or purged when the step ended).
    pub done_ns: u64,
    pub acked: bool,
}

/// Delivery reports, shared with librdkafka's threads.
struct Reports {
    origin: Instant,
    fates: Mutex<Vec<Fate>>,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Reports {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

impl ClientContext for Reports {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("poisoned");
        first.get_or_insert_with(|| format!("{error}: {reason}"));
    }

    // librdkafka's log is not wanted on the calibration's output; errors come through `error`.
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
}

impl ProducerContext for Reports {
    /// Send time, ns since the origin.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let fate = Fate {
            sent_ns: sent_ns as u64,
            done_ns: self.now_ns(),
            acked: result.is_ok(),
        };
        self.fates.lock().expect("poisoned").push(fate);
    }
}

/// What a producer step reports once it is over.
pub struct Produced {
    pub fates: Vec<Fate>,
    /// Errors librdkafka reported (transient ones included), and the first.
    pub client_errors: u64,
    pub first_error: Option<String>,
}

/// A producer step running on its own thread.
pub struct ProduceStep {
    /// When sending started (after the producer connected and one record went through).
    pub started: Instant,
    handle: JoinHandle<Result<Produced>>,
}

impl ProduceStep {
    /// Waits for the step to end (its drain included).
    pub fn finish(self) -> Result<Produced> {
        self.handle
            .join()
            .map_err(|_| anyhow!("the producer thread panicked"))?
    }
}

/// Starts a producer that sends `rate` records per second of `shape` to `topic` for `run`,
/// then waits up to `drain` for the acknowledgements; what is still unacknowledged then is
/// purged (reported as not acked, at the time of the purge). Returns once sending starts:
/// connecting, authenticating and a first record are done before, unmeasured.
pub fn produce(
    config: &ClientConfig,
    topic: &str,
    shape: Shape,
    rate: f64,
    run: Duration,
    drain: Duration,
    origin: Instant,
) -> Result<ProduceStep> {
    let mut config = config.clone();
    config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", shape.linger_ms.to_string());
    if shape.one_record_per_request {
        config.set("batch.num.messages", "1");
    }
    let reports = Reports {
        origin,
        fates: Mutex::default(),
        errors: AtomicU64::new(0),
        first_error: Mutex::default(),
    };
    let producer: ThreadedProducer<Reports> = config
        .create_with_context(reports)
        .context("creating a producer")?;
    let value = payload(shape.record_bytes);
    let topic = topic.to_owned();
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || -> Result<Produced> {
        let record = |p: &ThreadedProducer<Reports>| {
            BaseRecord::<(), [u8], usize>::with_opaque_to(&topic, p.context().now_ns() as usize)
                .payload(&value)
        };
        // Warm-up: one record through before the clock starts.
        producer
            .send(record(&producer))
            .map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))?;
        producer
            .flush(Duration::from_secs(30))
            .context("the first record was not acknowledged in 30 s")?;
        producer.context().fates.lock().expect("poisoned").clear();
        let started = Instant::now();
        let _ = ready_tx.send(started);
        let end = started + run;
        let mut sent = 0u64;
        'sending: loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let due = ((now - started).as_secs_f64() * rate) as u64;
            while sent < due {
                match producer.send(record(&producer)) {
                    Ok(()) => sent += 1,
                    // The client's queue is full: it is behind; the acknowledgements show it.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue 'sending;
                    }
                    Err((e, _)) => bail!("producing to {topic}: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = producer.flush(drain);
        producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        let _ = producer.flush(Duration::from_secs(5));
        let ctx = producer.context();
        let fates = std::mem::take(&mut *ctx.fates.lock().expect("poisoned"));
        Ok(Produced {
            fates,
            client_errors: ctx.errors.load(Ordering::Relaxed),
            first_error: ctx.first_error.lock().expect("poisoned").clone(),
        })
    });
    match ready_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(started) => Ok(ProduceStep { started, handle }),
        Err(_) => match handle.join() {
            Ok(Err(e)) => Err(e),
            _ => bail!("the producer did not get its first record through in 60 s"),
        },
    }
}

/// How readers take a topic's partitions.
#[derive(Debug, Clone, Copy)]
pub enum Take {
    /// As members of a consumer group (the group joins and commits, as an application's
    /// consumers do).
    Group(&'static str),
    /// Each reader assigned every `readers`-th of `partitions` partitions from the start, no
    /// group: nothing rebalances while they read. At a partition's end a reader starts it
    /// again, so there is always more to read.
    Assigned { partitions: i32 },
}

/// Consumers reading a topic from its start, each on its own thread, counting payload bytes
/// as they arrive.
pub struct Readers {
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Readers {
    /// `readers` consumers of `topic` with `config`, taking its partitions as `take` says.
    pub fn start(
        config: &ClientConfig,
        topic: &str,
        take: Take,
        readers: usize,
    ) -> Result<Readers> {
        let readers = readers.max(1);
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for reader in 0..readers {
            let mut config = config.clone();
            config.set("auto.offset.reset", "earliest");
            match take {
                Take::Group(group) => config
                    .set("group.id", group)
                    .set("enable.auto.commit", "true")
                    .set("enable.partition.eof", "false"),
                Take::Assigned { .. } => config
                    .set("group.id", "calibrate-unused")
                    .set("enable.auto.commit", "false")
                    .set("enable.partition.eof", "true"),
            };
            let consumer: BaseConsumer<DefaultConsumerContext> =
                config.create().context("creating a consumer")?;
            match take {
                Take::Group(_) => consumer
                    .subscribe(&[topic])
                    .with_context(|| format!("subscribing to {topic}"))?,
                Take::Assigned { partitions } => {
                    let mut mine = TopicPartitionList::new();
                    for p in (0..partitions).filter(|p| *p as usize % readers == reader) {
                        mine.add_partition_offset(topic, p, Offset::Beginning)?;
                    }
                    consumer
                        .assign(&mine)
                        .with_context(|| format!("assigning partitions of {topic}"))?;
                }
            }
            let (bytes, stop) = (bytes.clone(), stop.clone());
            let topic = topic.to_owned();
            handles.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            bytes.fetch_add(m.payload_len() as u64, Ordering::Relaxed);
                        }
                        Some(Err(KafkaError::PartitionEOF(p))) => {
                            let _ =
                                consumer.seek(&topic, p, Offset::Beginning, Duration::from_secs(1));
                        }
                        _ => {}
                    }
                }
            }));
        }
        Ok(Readers {
            bytes,
            stop,
            handles,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// Creates `name` with `partitions` partitions.
pub fn create_topic(config: &ClientConfig, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config.create().context("creating an admin client")?;
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
        if let Err((topic, code)) = r {
            bail!("CreateTopics {topic}: {code}");
        }
    }
    Ok(())
}

/// A record value: not all one byte, in case anything on the way compresses.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}
