//! The gateway over raw Kafka protocol, in front of a real tansu broker (memory engine).
//!
//! These tests speak the wire protocol by hand, as mini-redis's `tests/server.rs` does, so they
//! can send what no well-behaved client would: oversized and truncated frames, unknown API
//! keys, lying array lengths, garbage SASL, other tenants' names. The end-to-end suite in
//! `tests/e2e/` covers the same ground with real clients.
//!
//! tansu comes from `TOLLGATE_TANSU` or `tansu` on PATH (`scripts/install-deps.sh` installs
//! it); without it these tests fail, by design: the pool is never mocked.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_gateway::frame::{encode_request, set_correlation_id};
use tollgate_gateway::identity::policy::Policy;
use tollgate_gateway::identity::token::Tokens;
use tollgate_gateway::listener::Listener;
use tollgate_gateway::metering::Metering;
use tollgate_gateway::pool::{Pool, Timeouts};
use tollgate_gateway::state::{Gateway, GatewayConfig, Node};
use tollgate_gateway::tenancy::{Cluster, Registry};
use tollgate_meter::embedded::EmbeddedStore;
use tollgate_meter::store::UsageStore;
use uuid::Uuid;

const TOPIC_DENIED: i16 = 29;
const MESSAGE_TOO_LARGE: i16 = 10;
const SASL_FAILED: i16 = 58;
const UNKNOWN_TOPIC_ID: i16 = 100;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn allow_all() -> Policy {
    serde_json::from_str(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#,
    )
    .unwrap()
}

fn read_only() -> Policy {
    serde_json::from_str(
        r#"{"Statement":[{"Effect":"Allow","Action":["kafka-cluster:Connect","kafka-cluster:Describe*","kafka-cluster:ReadData","kafka-cluster:*Group"],"Resource":"*"}]}"#,
    )
    .unwrap()
}

/// A tansu broker and a gateway in front of it, with two tenants' clusters.
struct Stack {
    addr: String,
    tokens: Arc<Tokens>,
    registry: Registry,
    a: Cluster,
    b: Cluster,
    metering: Arc<Metering>,
    usage: Arc<EmbeddedStore>,
    _tansu: tokio::process::Child,
}

impl Stack {
    async fn start() -> Stack {
        let tansu = std::env::var("TOLLGATE_TANSU").unwrap_or_else(|_| "tansu".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = tokio::process::Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run tansu ({tansu}): {e}; run scripts/install-deps.sh")
            });
        let pool = Pool::new(Timeouts::default());
        let pool_addr = format!("127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..100 {
            if pool.add_broker(&pool_addr).await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "tansu did not come up on {pool_addr}");

        let registry = Registry::default();
        let cluster = |tenant: &str| Cluster {
            id: Uuid::new_v4(),
            tenant: tenant.into(),
            name: "orders".into(),
            max_message_bytes: 4096,
            quotas: Default::default(),
            allowed_cidrs: None,
            credentials: Default::default(),
            created_at: now(),
        };
        let (a, b) = (cluster("acme"), cluster("globex"));
        registry.upsert(a.clone());
        registry.upsert(b.clone());
        let tokens = Arc::new(Tokens::hs256(
            "tollgate",
            b"test key, 32 bytes long.........",
        ));
        let usage_dir = std::env::temp_dir().join(format!("tollgate-usage-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&usage_dir).unwrap();
        let usage = Arc::new(EmbeddedStore::open(&usage_dir).unwrap());
        let metering = Arc::new(Metering::new(usage.clone(), 3600));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Gateway::new(
            GatewayConfig {
                nodes: vec![Node {
                    id: 1,
                    host: "127.0.0.1".into(),
                    port: i32::from(addr.port()),
                }],
                lanes: 1,
                region: "local".into(),
                max_frame_bytes: 1024 * 1024,
                max_sasl_frame_bytes: 64 * 1024,
                max_in_flight: 16,
                limits: Default::default(),
                pool_kind: tollgate_gateway::pool::PoolKind::Stateless,
            },
            pool,
            registry.clone(),
            tokens.clone(),
            metering.clone(),
        );
        tokio::spawn(
            Listener {
                listeners: vec![listener],
                gateway,
                max_connections: 64,
                tls: None,
                principal_rules: Default::default(),
                proxy: Default::default(),
            }
            .run(std::future::pending()),
        );
        Stack {
            addr: addr.to_string(),
            tokens,
            registry,
            a,
            b,
            metering,
            usage,
            _tansu: child,
        }
    }

    fn token(&self, cluster: &Cluster, policy: Policy, ttl: i64) -> String {
        self.tokens
            .issue(&cluster.tenant, cluster.id, "svc", policy, now(), ttl)
            .unwrap()
            .0
    }

    async fn client(&self) -> Client {
        Client {
            stream: TcpStream::connect(&self.addr).await.unwrap(),
            next_id: 1,
        }
    }

    async fn authed(&self, cluster: &Cluster, policy: Policy) -> Client {
        let mut c = self.client().await;
        let code = c.authenticate(&self.token(cluster, policy, 600)).await;
        assert_eq!(code, 0, "authentication failed");
        c
    }
}

/// A hand-rolled Kafka client: one request at a time.
struct Client {
    stream: TcpStream,
    next_id: i32,
}

impl Client {
    async fn send_raw(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).await.unwrap();
    }

    /// Reads one response frame; `None` when the gateway closed the connection.
    async fn read_frame(&mut self) -> Option<Bytes> {
        let read = async {
            let len = self.stream.read_i32().await.ok()?;
            let mut buf = vec![0u8; len as usize];
            self.stream.read_exact(&mut buf).await.ok()?;
            Some(Bytes::from(buf))
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("the gateway neither answered nor closed")
    }

    async fn call<Req: Encodable + 'static, Resp: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Option<Resp> {
        let mut frame = encode_request(api, version, "test", req).unwrap();
        let id = self.next_id;
        self.next_id += 1;
        set_correlation_id(&mut frame, id);
        self.send_raw(&frame).await;
        let mut body = self.read_frame().await?;
        let header =
            ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
        assert_eq!(header.correlation_id, id, "correlation id");
        Some(Resp::decode(&mut body, version).unwrap())
    }

    async fn authenticate(&mut self, token: &str) -> i16 {
        let hs: SaslHandshakeResponse = self
            .call(
                ApiKey::SaslHandshake,
                1,
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("OAUTHBEARER")),
            )
            .await
            .expect("handshake answered");
        assert_eq!(hs.error_code, 0);
        let msg = format!("n,,\x01auth=Bearer {token}\x01\x01");
        let resp: Option<SaslAuthenticateResponse> = self
            .call(
                ApiKey::SaslAuthenticate,
                2,
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(msg)),
            )
            .await;
        resp.expect("authenticate answered").error_code
    }

    async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    async fn metadata(&mut self, topics: Option<Vec<&str>>) -> MetadataResponse {
        let req = MetadataRequest::default().with_topics(topics.map(|t| {
            t.into_iter()
                .map(|n| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(n.into()))))
                })
                .collect()
        }));
        self.call(ApiKey::Metadata, 12, &req)
            .await
            .expect("metadata answered")
    }

    async fn create_topic(&mut self, name: &str) -> i16 {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_num_partitions(1)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000);
        let resp: CreateTopicsResponse = self
            .call(ApiKey::CreateTopics, 5, &req)
            .await
            .expect("create answered");
        resp.topics[0].error_code
    }

    /// Produces one batch of one record; returns the error code and the batch's wire size.
    async fn produce(&mut self, topic: &str, value_len: usize) -> i16 {
        self.produce_sized(topic, value_len).await.0
    }

    async fn produce_sized(&mut self, topic: &str, value_len: usize) -> (i16, u64) {
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: now() * 1000,
            key: None,
            value: Some(Bytes::from(vec![b'x'; value_len])),
            headers: Default::default(),
        };
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let size = batch.len() as u64;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.freeze()))])]);
        let resp: ProduceResponse = self
            .call(ApiKey::Produce, 9, &req)
            .await
            .expect("produce answered");
        (resp.responses[0].partition_responses[0].error_code, size)
    }
}

fn topic_names(m: &MetadataResponse) -> Vec<String> {
    m.topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

/// Checks the gateway still serves a well-behaved client.
async fn still_serving(stack: &Stack) {
    let mut c = stack.authed(&stack.a, allow_all()).await;
    let m = c.metadata(None).await;
    assert_eq!(m.error_code, 0);
}

#[tokio::test]
async fn malformed_frames_are_refused_and_others_keep_being_served() {
    let stack = Stack::start().await;

    // A length prefix far over the limit: closed before any body is read.
    let mut c = stack.client().await;
    c.send_raw(&[0x7f, 0xff, 0xff, 0xff]).await;
    assert!(c.is_closed().await, "oversized frame");
    still_serving(&stack).await;

    // A frame cut short, then the client goes away mid-frame.
    let mut c = stack.client().await;
    c.send_raw(&[0, 0, 0, 100, 0, 18, 0, 3]).await;
    drop(c);
    still_serving(&stack).await;

    // An unknown API key: closed without an answer, as Kafka does (a bare error code would
    // be no valid response of any API; clients fail decoding it).
    let mut c = stack.client().await;
    c.send_raw(&[0, 0, 0, 10, 0x27, 0x0f, 0, 0, 0, 0, 0, 7, 0xff, 0xff])
        .await;
    assert!(
        c.read_frame().await.is_none(),
        "no answer to an unknown API key"
    );

    // Anything but SASL before authentication.
    let mut c = stack.client().await;
    let resp: Option<MetadataResponse> = c
        .call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert!(resp.is_none(), "metadata before authentication must close");

    // Garbage in SaslAuthenticate: a clear error, then close.
    let mut c = stack.client().await;
    let code = c.authenticate("not-a-jwt").await;
    assert_eq!(code, SASL_FAILED);
    assert!(c.is_closed().await);

    // An authenticated request whose array claims 2^31-1 elements in a few bytes. Before the
    // patch in vendor/kafka-protocol this aborted the whole process.
    let mut c = stack.authed(&stack.a, allow_all()).await;
    let mut frame =
        encode_request(ApiKey::Metadata, 4, "test", &MetadataRequest::default()).unwrap();
    frame.truncate(frame.len() - 5); // drop topics (null: -1) and the auto-create flag
    frame.put_i32(i32::MAX);
    frame.put_u8(0);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    c.send_raw(&frame).await;
    assert!(c.is_closed().await, "lying array length");
    still_serving(&stack).await;

    // An array that really carries more elements than a request may (one more than the
    // default budget, each a one-byte empty topic name in Metadata v9's compact form): refused
    // when its length is read, before the elements are decoded.
    let elements = tollgate_gateway::limits::Limits::default().max_request_elements + 1;
    let mut c = stack.authed(&stack.a, allow_all()).await;
    let mut frame =
        encode_request(ApiKey::Metadata, 9, "test", &MetadataRequest::default()).unwrap();
    // v9 ends with topics (a one-byte compact length), three flags and the tagged fields.
    frame.truncate(frame.len() - 5);
    put_uvarint(&mut frame, elements as u32 + 1);
    for _ in 0..elements {
        frame.put_u8(1); // compact string of length 0
        frame.put_u8(0); // the topic's tagged fields
    }
    frame.put_slice(&[1, 0, 0, 0]);
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    c.send_raw(&frame).await;
    assert!(c.is_closed().await, "more array elements than the budget");
    still_serving(&stack).await;
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[tokio::test]
async fn tokens_must_be_valid_current_and_for_a_live_cluster() {
    let stack = Stack::start().await;
    let expired = stack.token(&stack.a, allow_all(), -10);
    assert_eq!(
        stack.client().await.authenticate(&expired).await,
        SASL_FAILED
    );

    let forger = Tokens::hs256("tollgate", b"some other key, also 32 bytes...");
    let (forged, _) = forger
        .issue("acme", stack.a.id, "svc", allow_all(), now(), 600)
        .unwrap();
    assert_eq!(
        stack.client().await.authenticate(&forged).await,
        SASL_FAILED
    );

    // A token naming a cluster of another tenant is refused too.
    let (wrong_tenant, _) = stack
        .tokens
        .issue("acme", stack.b.id, "svc", allow_all(), now(), 600)
        .unwrap();
    assert_eq!(
        stack.client().await.authenticate(&wrong_tenant).await,
        SASL_FAILED
    );

    // Deleting the cluster ends its connections at their next request.
    let mut c = stack.authed(&stack.b, allow_all()).await;
    stack.registry.remove(&stack.b.id);
    let resp: Option<MetadataResponse> = c
        .call(ApiKey::Metadata, 12, &MetadataRequest::default())
        .await;
    assert!(resp.is_none(), "a deleted cluster's connection must close");
    let token = stack.token(&stack.b, allow_all(), 600);
    assert_eq!(stack.client().await.authenticate(&token).await, SASL_FAILED);
}

#[tokio::test]
async fn tenants_see_only_their_own_topics_by_their_own_names() {
    let stack = Stack::start().await;
    let mut a = stack.authed(&stack.a, allow_all()).await;
    let mut b = stack.authed(&stack.b, allow_all()).await;
    assert_eq!(a.create_topic("orders").await, 0);
    assert_eq!(b.create_topic("orders").await, 0);
    assert_eq!(a.create_topic("a-only").await, 0);

    let seen_a = a.metadata(None).await;
    let mut names = topic_names(&seen_a);
    names.sort();
    assert_eq!(names, ["a-only", "orders"]);
    assert_eq!(
        seen_a.cluster_id.as_deref(),
        Some(stack.a.id.as_hyphenated().to_string().as_str())
    );
    assert_eq!(seen_a.brokers.len(), 1);
    assert_eq!(seen_a.brokers[0].node_id.0, 1);
    assert!(seen_a
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .all(|p| p.leader_id.0 == 1 && p.replica_nodes.iter().all(|r| r.0 == 1)));

    let seen_b = b.metadata(None).await;
    assert_eq!(topic_names(&seen_b), ["orders"]);
    // B asking for A's physical name gets B's own (nonexistent) topic of that name.
    let physical = format!("{}orders", stack.a.namespace().prefix());
    let probe = b.metadata(Some(vec![&physical])).await;
    assert_eq!(probe.topics.len(), 1);
    assert_ne!(probe.topics[0].error_code, 0, "{probe:?}");
    assert!(probe.topics[0].partitions.is_empty());
    // B asking by A's topic id learns nothing either.
    let a_orders = seen_a
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "orders"))
        .unwrap();
    let by_id = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_topic_id(a_orders.topic_id)
    ]));
    let answer: MetadataResponse = b.call(ApiKey::Metadata, 12, &by_id).await.unwrap();
    assert_eq!(answer.topics.len(), 1);
    assert_eq!(answer.topics[0].error_code, UNKNOWN_TOPIC_ID);
    assert!(answer.topics[0].name.is_none());
}

#[tokio::test]
async fn produce_is_authorized_and_size_limited() {
    let stack = Stack::start().await;
    let mut a = stack.authed(&stack.a, allow_all()).await;
    assert_eq!(a.create_topic("events").await, 0);
    assert_eq!(a.produce("events", 100).await, 0);
    // The cluster allows 4096-byte batches.
    assert_eq!(a.produce("events", 8000).await, MESSAGE_TOO_LARGE);

    let mut reader = stack.authed(&stack.a, read_only()).await;
    assert_eq!(reader.produce("events", 100).await, TOPIC_DENIED);
    // Denied, but the connection goes on serving what is allowed.
    assert_eq!(
        reader.metadata(Some(vec!["events"])).await.topics[0].error_code,
        0
    );
}

fn fetch_by_id(id: Uuid) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])])
}

#[tokio::test]
async fn fetch_by_topic_id_reads_own_topics_and_nothing_else() {
    let stack = Stack::start().await;
    let mut a = stack.authed(&stack.a, allow_all()).await;
    let mut b = stack.authed(&stack.b, allow_all()).await;
    assert_eq!(a.create_topic("ledger").await, 0);
    assert_eq!(a.produce("ledger", 50).await, 0);
    let meta = a.metadata(Some(vec!["ledger"])).await;
    let id = meta.topics[0].topic_id;
    assert!(!id.is_nil());

    let own: FetchResponse = a.call(ApiKey::Fetch, 13, &fetch_by_id(id)).await.unwrap();
    assert_eq!(own.responses.len(), 1);
    assert_eq!(own.responses[0].topic_id, id);
    let part = &own.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    assert!(part.records.as_ref().is_some_and(|r| !r.is_empty()));

    let foreign: FetchResponse = b.call(ApiKey::Fetch, 13, &fetch_by_id(id)).await.unwrap();
    assert_eq!(foreign.responses.len(), 1);
    let part = &foreign.responses[0].partitions[0];
    assert_eq!(part.error_code, UNKNOWN_TOPIC_ID);
    assert!(part.records.as_ref().is_none_or(|r| r.is_empty()));
}

fn fetch_by_name(topic: &str, offset: i64) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(100)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// Flushes the gateway's counters into the usage store, as the flusher task does every second.
async fn flush(stack: &Stack) {
    use tollgate_meter::flusher::{ClusterSource, ClusterState, Flusher};
    struct NoClusters;
    impl ClusterSource for NoClusters {
        fn clusters(&self) -> tollgate_meter::store::BoxFuture<'_, Vec<ClusterState>> {
            Box::pin(async { Vec::new() })
        }
    }
    let mut f = Flusher::new(
        Uuid::new_v4().to_string(),
        stack.metering.counter_set().clone(),
        stack.usage.clone(),
    );
    f.tick(&NoClusters, now()).await.unwrap();
}

#[tokio::test]
async fn bytes_in_and_out_are_exactly_the_batches_on_the_wire() {
    let stack = Stack::start().await;
    let mut a = stack.authed(&stack.a, allow_all()).await;
    assert_eq!(a.create_topic("metered").await, 0);
    let mut expected_in = 0;
    for len in [10, 100, 1000, 3000] {
        let (code, size) = a.produce_sized("metered", len).await;
        assert_eq!(code, 0);
        expected_in += size;
    }
    // Refused batches are not metered: too large, or not allowed.
    assert_eq!(a.produce("metered", 8000).await, MESSAGE_TOO_LARGE);
    let mut reader = stack.authed(&stack.a, read_only()).await;
    assert_eq!(reader.produce("metered", 10).await, TOPIC_DENIED);

    // Read everything back; the fetch returns the same batches.
    let resp: FetchResponse = reader
        .call(ApiKey::Fetch, 12, &fetch_by_name("metered", 0))
        .await
        .unwrap();
    let delivered = resp.responses[0].partitions[0]
        .records
        .as_ref()
        .map_or(0, |r| r.len() as u64);
    assert_eq!(
        delivered, expected_in,
        "the pool returns the batches as produced"
    );

    flush(&stack).await;
    let rows = stack.usage.hourly(stack.a.id, 0, i64::MAX).await.unwrap();
    let bytes_in: u64 = rows.iter().map(|r| r.bytes_in).sum();
    let bytes_out: u64 = rows.iter().map(|r| r.bytes_out).sum();
    assert_eq!(bytes_in, expected_in);
    assert_eq!(bytes_out, delivered);
    // Per principal: both tokens are principal "svc"; B's cluster used nothing.
    let p = stack
        .usage
        .principals(stack.a.id, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(p.iter().map(|p| p.bytes_in).sum::<u64>(), expected_in);
    assert!(stack
        .usage
        .hourly(stack.b.id, 0, i64::MAX)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn sasl_handshake_v0_then_a_raw_token() {
    let stack = Stack::start().await;
    let raw = |token: &str| {
        let msg = format!("\0svc\0{token}");
        let mut frame = BytesMut::new();
        frame.put_i32(msg.len() as i32);
        frame.put_slice(msg.as_bytes());
        frame
    };
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));

    let mut c = stack.client().await;
    let hs: SaslHandshakeResponse = c.call(ApiKey::SaslHandshake, 0, &handshake).await.unwrap();
    assert_eq!(hs.error_code, 0);
    c.send_raw(&raw(&stack.token(&stack.a, allow_all(), 600)))
        .await;
    let answer = c.read_frame().await.expect("an empty frame on success");
    assert!(answer.is_empty());
    assert_eq!(c.metadata(None).await.error_code, 0);

    let mut c = stack.client().await;
    let _: SaslHandshakeResponse = c.call(ApiKey::SaslHandshake, 0, &handshake).await.unwrap();
    c.send_raw(&raw("not-a-token")).await;
    assert!(c.is_closed().await, "a bad raw token closes the connection");
}
