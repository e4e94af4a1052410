//! What the pool's tests share: real tansu brokers (memory engine), as the integration tests
//! use, and a fake broker only where a real one cannot show what is under test (how many
//! requests reached it, what their headers carried). tansu comes from `TOLLGATE_TANSU` or
//! `tansu` on PATH.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponseTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest,
    FetchResponse, FindCoordinatorResponse, MetadataResponse, ProduceRequest, ProduceResponse,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use uuid::Uuid;

use super::{Broker, Caller, PendingReply, Pool, Timeouts};
use crate::frame::{decode_request_header, Frame, FrameReader};

/// Fetch by topic name (v13 names topics by id).
pub(crate) const FETCH: i16 = 12;
pub(crate) const PRODUCE: i16 = 9;
pub(crate) const METADATA: i16 = 12;
pub(crate) const CREATE_TOPICS: i16 = 5;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker, killed when dropped.
pub(crate) struct Tansu {
    pub(crate) addr: String,
    child: tokio::process::Child,
}

impl Tansu {
    pub(crate) async fn start() -> Tansu {
        Tansu::start_on(free_port()).await
    }

    pub(crate) async fn start_on(port: u16) -> Tansu {
        let tansu = std::env::var("TOLLGATE_TANSU").unwrap_or_else(|_| "tansu".into());
        let url = format!("tcp://127.0.0.1:{port}");
        let child = tokio::process::Command::new(&tansu)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run tansu ({tansu}): {e}; run scripts/install-deps.sh")
            });
        let addr = format!("127.0.0.1:{port}");
        eventually("tansu accepts connections", || async {
            TcpStream::connect(&addr).await.is_ok()
        })
        .await;
        Tansu { addr, child }
    }

    pub(crate) async fn kill(mut self) {
        self.child.kill().await.expect("tansu killed");
    }
}

/// Waits for `cond`, giving up (failing the test) after 15 s.
pub(crate) async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    for _ in 0..150 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 15 s");
}

pub(crate) async fn live_broker(tansu: &Tansu) -> (Pool, Arc<Broker>) {
    let pool = Pool::new(Timeouts::default());
    pool.add_broker(&tansu.addr).await.expect("tansu answers");
    let broker = pool.broker(&tansu.addr).expect("added");
    (pool, broker)
}

pub(crate) fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.into()))
}

pub(crate) async fn create_topic(broker: &Broker, topic: &str) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(10_000);
    let resp: CreateTopicsResponse = broker.call(CREATE_TOPICS, &req).await.unwrap();
    assert_eq!(resp.topics[0].error_code, 0, "create {topic}");
}

/// A fetch of partition 0 from offset 0: on an empty partition, answered after
/// `max_wait_ms`.
pub(crate) fn fetch_request(topic: &str, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])])
}

pub(crate) async fn fetch(broker: &Broker, topic: &str, max_wait_ms: i32) -> PendingReply {
    let req = fetch_request(topic, max_wait_ms);
    let pending = broker
        .dispatch_for(Caller::GATEWAY, ApiKey::Fetch, FETCH, &req, true)
        .await;
    pending.expect("fetch sent").expect("a reply")
}

/// The fetched partition's error code, and whether it returned records.
pub(crate) fn fetched(resp: &FetchResponse) -> (i16, bool) {
    let p = &resp.responses[0].partitions[0];
    let records = p.records.as_ref().is_some_and(|r| !r.is_empty());
    (p.error_code, records)
}

pub(crate) async fn produce(broker: &Broker, topic: &str) -> i16 {
    produce_values(broker, topic, &[Bytes::from_static(b"hello")]).await
}

/// Produces one batch of records with these values; the partition's error code.
pub(crate) async fn produce_values(broker: &Broker, topic: &str, values: &[Bytes]) -> i16 {
    produce_for(broker, 0, topic, values).await
}

/// One uncompressed v2 record batch of `values`, without a producer id.
pub(crate) fn batch(values: &[Bytes]) -> Bytes {
    let record = |value: &Bytes| Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 0,
        key: None,
        value: Some(value.clone()),
        headers: Default::default(),
    };
    let records: Vec<Record> = values.iter().map(record).collect();
    let mut batch = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut batch, &records, &options).unwrap();
    batch.freeze()
}

/// [`produce_values`] for client connection `client`.
pub(crate) async fn produce_for(
    broker: &Broker,
    client: u64,
    topic: &str,
    values: &[Bytes],
) -> i16 {
    let batch = batch(values);
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let pending = broker.dispatch_for(
        Caller {
            connection: client,
            ..Caller::GATEWAY
        },
        ApiKey::Produce,
        PRODUCE,
        &req,
        true,
    );
    let pending = pending.await.unwrap().expect("a reply");
    let resp: ProduceResponse = pending.decode(PRODUCE).await.unwrap();
    resp.responses[0].partition_responses[0].error_code
}

/// A pool broker that answers ApiVersions, Metadata (listing `topics`) and FindCoordinator
/// (naming itself), and, if made with [`FakeBroker::acking_produces`], acknowledges every
/// Produce as a Kafka broker acknowledges a batch it already has; it ignores every other
/// request, and records what reached it. Only for what
/// a real broker cannot show: how many requests reached it, and what their headers carried.
pub(crate) struct FakeBroker {
    pub(crate) addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepting: tokio::task::JoinHandle<()>,
}

/// A request that reached a [`FakeBroker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) api: ApiKey,
    pub(crate) client_id: Option<String>,
}

impl FakeBroker {
    /// Listens on a free port; each Metadata answer is held `metadata_delay` first.
    pub(crate) async fn start(topics: Vec<(Uuid, String)>, metadata_delay: Duration) -> Self {
        Self::listen(topics, metadata_delay, false).await
    }

    /// [`FakeBroker::start`], acknowledging every partition of every Produce with no error.
    pub(crate) async fn acking_produces(topics: Vec<(Uuid, String)>) -> Self {
        Self::listen(topics, Duration::ZERO, true).await
    }

    async fn listen(topics: Vec<(Uuid, String)>, metadata_delay: Duration, acks: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let topics = Arc::new(topics);
        let recorded = seen.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (topics, seen) = (topics.clone(), recorded.clone());
                tokio::spawn(async move {
                    let mut socket = FrameReader::new(socket, 1 << 20);
                    while let Ok(Some(mut frame)) = socket.next(1 << 20).await {
                        let (api, header) = decode_request_header(&mut frame).unwrap();
                        seen.lock().unwrap().push(Seen {
                            api,
                            client_id: header.client_id.as_ref().map(|c| c.to_string()),
                        });
                        let version = header.request_api_version;
                        let body = match api {
                            ApiKey::ApiVersions => ResponseKind::ApiVersions(versions()),
                            ApiKey::Metadata => {
                                tokio::time::sleep(metadata_delay).await;
                                ResponseKind::Metadata(metadata(addr, &topics))
                            }
                            ApiKey::FindCoordinator => {
                                ResponseKind::FindCoordinator(coordinator(addr))
                            }
                            ApiKey::Produce if acks => {
                                let req = <ProduceRequest as kafka_protocol::protocol::Decodable>::decode(&mut frame, version)
                                    .unwrap();
                                ResponseKind::Produce(acknowledge(&req))
                            }
                            _ => continue,
                        };
                        let id = header.correlation_id;
                        let out = Frame::response(api, version, id, &body).unwrap();
                        let out = out.to_bytes_mut();
                        if socket.get_mut().write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeBroker {
            addr: addr.to_string(),
            seen,
            accepting,
        }
    }

    /// Every request that reached it, in order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many `api` requests reached it.
    pub(crate) fn count(&self, api: ApiKey) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.api == api)
            .count()
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

fn versions() -> ApiVersionsResponse {
    let api = |key: ApiKey, max: i16| {
        ApiVersion::default()
            .with_api_key(key as i16)
            .with_min_version(0)
            .with_max_version(max)
    };
    ApiVersionsResponse::default().with_api_keys(vec![
        api(ApiKey::ApiVersions, 3),
        api(ApiKey::Metadata, 12),
        api(ApiKey::FindCoordinator, 4),
    ])
}

fn metadata(addr: SocketAddr, topics: &[(Uuid, String)]) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(StrBytes::from_string(addr.ip().to_string()))
            .with_port(i32::from(addr.port()))])
        .with_topics(
            topics
                .iter()
                .map(|(id, topic)| {
                    MetadataResponseTopic::default()
                        .with_name(Some(name(topic)))
                        .with_topic_id(*id)
                })
                .collect(),
        )
}

fn acknowledge(req: &ProduceRequest) -> ProduceResponse {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    ProduceResponse::default().with_responses(
        req.topic_data
            .iter()
            .map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| PartitionProduceResponse::default().with_index(p.index))
                            .collect(),
                    )
            })
            .collect(),
    )
}

fn coordinator(addr: SocketAddr) -> FindCoordinatorResponse {
    FindCoordinatorResponse::default().with_coordinators(vec![Coordinator::default()
        .with_node_id(BrokerId(1))
        .with_host(StrBytes::from_string(addr.ip().to_string()))
        .with_port(i32::from(addr.port()))])
}

/// A real redis-server of our own on a free loopback port, without persistence, killed when
/// dropped (`redis-server` on PATH, from scripts/install-deps.sh).
pub(crate) struct RedisServer {
    pub(crate) url: String,
    _child: tokio::process::Child,
}

impl RedisServer {
    pub(crate) async fn start() -> RedisServer {
        let port = free_port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server: {e}; run scripts/install-deps.sh")
            });
        eventually("redis-server answers PING", || async {
            let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)).await else {
                return false;
            };
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 5];
            c.write_all(b"PING\r\n").await.is_ok()
                && c.read_exact(&mut buf).await.is_ok()
                && &buf == b"+PONG"
        })
        .await;
        RedisServer {
            url: format!("redis://127.0.0.1:{port}/"),
            _child: child,
        }
    }
}
