//! One pool broker ([`Broker`]): its connections, and the verbs that send it requests.
//!
//! A Kafka broker (tansu too) handles one connection's requests strictly one after another: it
//! reads the next request only once it has answered the last. Each pool broker therefore gets
//! its connections by [`Lane`]:
//!
//! - Produce: [`PRODUCE_CONNECTIONS`] multiplexed connections, each client connection keeping
//!   to one of them ([`Broker::dispatch_for`]), so its produces reach the broker in the order it
//!   sent them, while other clients' produces are not queued behind them (Apache Kafka answers
//!   a produce with acks=all only once it is replicated, and reads nothing more from that
//!   connection meanwhile).
//! - Control: one multiplexed connection, shared by every client connection, for requests a
//!   broker answers at once (never JoinGroup or SyncGroup, which it may hold for minutes, nor
//!   topic changes, which it answers once the controller has made them).
//!   Requests from any number of clients are written in the order they are dispatched, each under
//!   a correlation id of the gateway's own, and the replies are matched back by that id. A
//!   thousand tenant connections cost each broker at most nine connections per gateway (plus
//!   the fetch connections below).
//! - Fetch: a set of exclusive connections, for fetches, JoinGroups and SyncGroups. A fetch
//!   long-polls (up to its `max_wait_ms`), so on a shared connection it would hold every other
//!   client's fetch to that broker until it ends. Each fetch borrows an idle connection, or
//!   opens one, and gives it back when its answer has arrived ([`super::lease`]). Past its
//!   cluster's share (32 of 64 per broker, or the broker's 64 once it holds 4), a request
//!   shares the least loaded of its own cluster's connections rather than wait for one to come
//!   free: dispatching never blocks on other tenants' requests, and the pool sees a bounded
//!   number of connections.
//!
//! A request that gets no answer in time ([`PendingReply::with_timeout`], else
//! [`Timeouts::request`]) closes the connection it travelled on and fails the other requests
//! waiting on it, as Kafka clients do: a broker that stopped answering one request would hold
//! every later one. After a failed connect, further connects to that broker fail at once with
//! the same error for 250 ms, so a broker that refuses or blackholes connections costs one
//! connect timeout, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::connection::{Connection, Outbound};
use super::error::UpstreamError;
use super::lease::{Borrowed, FetchLane, Lease, Opening};
use super::stream::PendingReply;
use crate::frame::Frame;

/// Produce connections per broker, each shared by the client connections keeping to it.
pub const PRODUCE_CONNECTIONS: usize = 8;
/// How long after a failed connect further connects fail at once with its error.
const CONNECT_FAILURE_HOLD: Duration = Duration::from_millis(250);

/// The client id of the gateway's own requests (probes, metadata refreshes, coordinator and
/// topic id lookups, the admin API's), and the start of every other.
const GATEWAY_CLIENT_ID: &str = "tollgate";
/// `tollgate/` and a cluster id, hyphenated.
const CLUSTER_CLIENT_ID_LEN: usize = GATEWAY_CLIENT_ID.len() + 1 + 36;
/// The most of a client's own client id a JoinGroup carries ([`ClientTag`]): librdkafka's and
/// Java's defaults (`rdkafka`, `consumer-<group>-<n>`) and typical service names fit.
const CLIENT_TAG_LEN: usize = 48;
/// `tollgate/<cluster id>/` and a client tag.
const MAX_CLIENT_ID_LEN: usize = CLUSTER_CLIENT_ID_LEN + 1 + CLIENT_TAG_LEN;

/// Who a request goes to the pool for.
///
/// Requests sent on a tenant's behalf carry the client id `tollgate/<cluster id>`, so the
/// pool's own quotas, logs and metrics can tell the clusters apart; the gateway's own requests
/// carry `tollgate`. The client id a tenant's client sent is free text the tenant chooses and
/// is not passed on as it is; only JoinGroup carries a tidied prefix of it
/// (`tollgate/<cluster id>/<tag>`, [`ClientTag`]), because the group coordinator names the
/// member after it (`<client id>-<uuid>`) and the consumer assignors order members by that
/// name: librdkafka's and Java's range and round-robin assignors give the member whose
/// `client.id` sorts first the first partitions, as they do against Kafka directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The client connection, unique in this process: its produces keep to one of each
    /// broker's produce connections, so they arrive in order.
    pub connection: u64,
    /// The tenant cluster the request is for; `None` for the gateway's own requests.
    pub cluster: Option<Uuid>,
    /// The client's own client id, tidied, for JoinGroup.
    pub tag: ClientTag,
}

/// A prefix of a client's client id, at most [`CLIENT_TAG_LEN`] bytes of `[A-Za-z0-9._-]`
/// (any other byte becomes `_`): nothing the pool's logs could misread, and the same order
/// as the client ids themselves for the ids clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTag {
    bytes: [u8; CLIENT_TAG_LEN],
    len: u8,
}

impl ClientTag {
    pub const NONE: ClientTag = ClientTag {
        bytes: [0; CLIENT_TAG_LEN],
        len: 0,
    };

    pub fn new(client_id: &str) -> ClientTag {
        let mut tag = ClientTag::NONE;
        for (slot, b) in tag.bytes.iter_mut().zip(client_id.bytes()) {
            *slot = if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                b
            } else {
                b'_'
            };
            tag.len += 1;
        }
        tag
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("ASCII")
    }
}

impl Caller {
    /// The gateway itself.
    pub const GATEWAY: Caller = Caller {
        connection: 0,
        cluster: None,
        tag: ClientTag::NONE,
    };

    /// Client connection `connection`, of cluster `cluster`.
    pub fn tenant(connection: u64, cluster: Uuid) -> Caller {
        Caller {
            connection,
            cluster: Some(cluster),
            tag: ClientTag::NONE,
        }
    }

    /// This caller, for a client whose own client id is `client_id`.
    pub fn with_client_id(self, client_id: Option<&str>) -> Caller {
        Caller {
            tag: client_id.map_or(ClientTag::NONE, ClientTag::new),
            ..self
        }
    }

    /// The client id the pool sees for `api`, written into `buf` (no allocation on the
    /// request path).
    fn client_id(self, api: ApiKey, buf: &mut [u8; MAX_CLIENT_ID_LEN]) -> &str {
        let Some(cluster) = self.cluster else {
            return GATEWAY_CLIENT_ID;
        };
        let (prefix, rest) = buf.split_at_mut(GATEWAY_CLIENT_ID.len() + 1);
        prefix[..GATEWAY_CLIENT_ID.len()].copy_from_slice(GATEWAY_CLIENT_ID.as_bytes());
        prefix[GATEWAY_CLIENT_ID.len()] = b'/';
        cluster.hyphenated().encode_lower(&mut rest[..36]);
        let mut len = CLUSTER_CLIENT_ID_LEN;
        let tag = self.tag.as_str();
        if api == ApiKey::JoinGroup && !tag.is_empty() {
            buf[len] = b'/';
            buf[len + 1..len + 1 + tag.len()].copy_from_slice(tag.as_bytes());
            len += 1 + tag.len();
        }
        std::str::from_utf8(&buf[..len]).expect("ASCII")
    }

    /// `body` as a request frame from this caller.
    fn request<M: Encodable + 'static>(
        self,
        api: ApiKey,
        version: i16,
        body: &M,
    ) -> Result<Frame, UpstreamError> {
        let mut buf = [0; MAX_CLIENT_ID_LEN];
        Frame::request(api, version, self.client_id(api, &mut buf), body)
            .map_err(|e| UpstreamError::Encode(e.to_string()))
    }
}

/// Which of a broker's connections a request travels on.
///
/// A Kafka broker handles one connection's requests strictly one after another, so a
/// long-polling Fetch would hold up everything queued behind it on the same connection.
/// Produce and everything else (metadata, groups, admin) therefore get a multiplexed connection
/// each, and every Fetch a connection to itself (see the module docs). Separate lanes also bound
/// the damage when a broker drops a connection over one bad request (tansu 0.6 does, on
/// DescribeGroups against its SQLite engine): the data lanes carry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// One multiplexed connection, so one client's produces keep their order.
    Produce = 0,
    /// A connection per request in flight, for requests a broker may hold for long (fetches
    /// long-poll, JoinGroup and SyncGroup wait for the rebalance, topic changes for the
    /// controller), shared only within a cluster past its share ([`super::lease`]).
    Fetch = 1,
    /// One multiplexed connection for everything else.
    Control = 2,
}

impl Lane {
    pub fn of(api: ApiKey) -> Lane {
        match api {
            ApiKey::Produce => Lane::Produce,
            // A JoinGroup is held by the broker until the group has rejoined (minutes, during
            // a rebalance), and Apache Kafka reads nothing more from that connection meanwhile:
            // on the shared control connection it would stall every other tenant's
            // heartbeats and commits, and their groups would rebalance too.
            ApiKey::Fetch | ApiKey::JoinGroup | ApiKey::SyncGroup => Lane::Fetch,
            // Apache Kafka answers these only once the change is done (CreateTopics,
            // DeleteTopics and CreatePartitions when the controller has applied it, within the
            // request's timeout_ms; DeleteRecords when every replica has moved its log start),
            // so they are held too, if usually for less.
            ApiKey::CreateTopics
            | ApiKey::DeleteTopics
            | ApiKey::CreatePartitions
            | ApiKey::DeleteRecords => Lane::Fetch,
            _ => Lane::Control,
        }
    }
}

/// One pool broker, identified by its address (tansu brokers all share one node id).
pub struct Broker {
    pub(super) addr: String,
    produce: [tokio::sync::Mutex<Option<Connection>>; PRODUCE_CONNECTIONS],
    control: tokio::sync::Mutex<Option<Connection>>,
    fetch: Arc<FetchLane>,
    /// The prober's own connection ([`Pool::run_prober`](super::Pool::run_prober)).
    pub(super) probe_conn: Mutex<Option<Connection>>,
    /// A [`Pool::suspect`](super::Pool::suspect) check is under way.
    pub(super) checking: std::sync::atomic::AtomicBool,
    /// Held across a connect, so a broker that does not accept costs one connect at a time,
    /// and the connects queued behind a failed one fail at once.
    connecting: tokio::sync::Mutex<()>,
    /// The last connect, if it failed: when, and how.
    connect_failure: Mutex<Option<(Instant, UpstreamError)>>,
    timeouts: Timeouts,
    /// TLS and SASL towards the broker.
    pub(super) security: Arc<super::security::PoolSecurity>,
    /// Requests and their bytes sent to this broker since the gateway started (counters, as
    /// `GET /v1/pool` shows them): how the load spreads over the pool.
    requests_sent: std::sync::atomic::AtomicU64,
    bytes_sent: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// How long a request waits for its answer unless [`PendingReply::with_timeout`] says
    /// otherwise. Past it the request fails and its connection is closed.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(60),
        }
    }
}

impl Broker {
    pub fn new(addr: impl Into<String>, timeouts: Timeouts) -> Self {
        Self::secured(addr, timeouts, Default::default())
    }

    /// A broker reached with `security` (TLS, SASL).
    pub fn secured(
        addr: impl Into<String>,
        timeouts: Timeouts,
        security: Arc<super::security::PoolSecurity>,
    ) -> Self {
        Broker {
            addr: addr.into(),
            produce: Default::default(),
            control: Default::default(),
            fetch: Default::default(),
            probe_conn: Default::default(),
            checking: Default::default(),
            connecting: Default::default(),
            connect_failure: Default::default(),
            timeouts,
            security,
            requests_sent: Default::default(),
            bytes_sent: Default::default(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Requests, and bytes, sent to this broker so far.
    pub fn sent(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.requests_sent.load(Relaxed),
            self.bytes_sent.load(Relaxed),
        )
    }

    fn recent_connect_failure(&self) -> Option<UpstreamError> {
        match &*self.connect_failure.lock().expect("poisoned") {
            Some((at, e)) if at.elapsed() < CONNECT_FAILURE_HOLD => Some(e.clone()),
            _ => None,
        }
    }

    pub(super) fn record_connect<T>(&self, result: &Result<T, UpstreamError>) {
        *self.connect_failure.lock().expect("poisoned") =
            result.as_ref().err().map(|e| (Instant::now(), e.clone()));
    }

    async fn open(&self) -> Result<Connection, UpstreamError> {
        if let Some(e) = self.recent_connect_failure() {
            return Err(e);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(e) = self.recent_connect_failure() {
            return Err(e);
        }
        let result = Connection::open(&self.addr, self.timeouts.connect, &self.security).await;
        self.record_connect(&result);
        result
    }

    /// A connection of `lane`; on the produce lane, the one client connection `connection`
    /// keeps to.
    async fn lease(&self, lane: Lane, caller: Caller) -> Result<Lease, UpstreamError> {
        let slot = match lane {
            Lane::Produce => {
                &self.produce[(caller.connection % PRODUCE_CONNECTIONS as u64) as usize]
            }
            Lane::Control => &self.control,
            Lane::Fetch => return self.fetch_lease(caller.cluster).await,
        };
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Lease::shared(c.clone()));
        }
        let c = self.open().await?;
        *slot = Some(c.clone());
        Ok(Lease::shared(c))
    }

    /// A fetch connection for a request of `cluster` ([`FetchLane`] says how they are shared).
    async fn fetch_lease(&self, cluster: Option<Uuid>) -> Result<Lease, UpstreamError> {
        let (conn, ahead) = match self.fetch.borrow(cluster) {
            Borrowed::Conn(c, ahead) => (c, ahead),
            Borrowed::Open => {
                let _slot = Opening(&self.fetch, cluster);
                let c = self.open().await?;
                self.fetch.lend_new(&c, cluster);
                (c, 0)
            }
        };
        Ok(Lease {
            conn,
            fetch: Some(self.fetch.clone()),
            busy: false,
            exclusive: ahead == 0,
            ahead,
        })
    }

    /// Queues `body` for this broker, sent for `caller` (whose client id it carries).
    /// Requests dispatched one after another from one task reach the broker in that order
    /// (fetches excepted: each may take a connection of its own), which idempotent producers
    /// rely on: a client connection's produces all travel on the same connection. Returns
    /// `None` for requests that expect no answer.
    pub async fn dispatch_for<M: Encodable + 'static>(
        &self,
        caller: Caller,
        api: ApiKey,
        version: i16,
        body: &M,
        expects_reply: bool,
    ) -> Result<Option<PendingReply>, UpstreamError> {
        let frame = caller.request(api, version, body)?;
        let lease = self.lease(Lane::of(api), caller).await?;
        self.send(lease, api, version, frame, expects_reply, false)
            .await
    }

    /// [`Broker::dispatch_for`] for a caller that reads the answer with
    /// [`PendingReply::stream`]: a large answer on a connection of its own is then handed over
    /// as it arrives.
    pub async fn dispatch_streamed<M: Encodable + 'static>(
        &self,
        caller: Caller,
        api: ApiKey,
        version: i16,
        body: &M,
    ) -> Result<PendingReply, UpstreamError> {
        let frame = caller.request(api, version, body)?;
        let lease = self.lease(Lane::of(api), caller).await?;
        let stream = lease.exclusive;
        let pending = self.send(lease, api, version, frame, true, stream).await?;
        Ok(pending.expect("a reply was asked for"))
    }

    async fn send(
        &self,
        mut lease: Lease,
        api: ApiKey,
        version: i16,
        frame: Frame,
        expects_reply: bool,
        stream: bool,
    ) -> Result<Option<PendingReply>, UpstreamError> {
        let (reply, rx) = if expects_reply {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        {
            use std::sync::atomic::Ordering::Relaxed;
            self.requests_sent.fetch_add(1, Relaxed);
            self.bytes_sent.fetch_add(frame.len() as u64, Relaxed);
        }
        lease
            .conn
            .tx
            .send(Outbound {
                frame,
                api,
                version,
                reply,
                stream,
            })
            .await
            .map_err(|_| UpstreamError::Io {
                addr: self.addr.clone(),
                reason: "connection closed".into(),
            })?;
        lease.busy = lease.fetch.is_some() && expects_reply;
        Ok(rx.map(|rx| PendingReply::new(self.addr.clone(), self.timeouts.request, rx, lease)))
    }

    /// Sends a request of the gateway's own (client id `tollgate`) and waits for its decoded
    /// response.
    pub async fn call<R: Request + 'static>(
        &self,
        version: i16,
        req: &R,
    ) -> Result<R::Response, UpstreamError> {
        self.call_on(None, version, req).await
    }

    /// [`Broker::call`] on `conn`, or on the request's lane.
    async fn call_on<R: Request + 'static>(
        &self,
        conn: Option<&Connection>,
        version: i16,
        req: &R,
    ) -> Result<R::Response, UpstreamError> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| UpstreamError::Encode("api key".into()))?;
        let frame = Caller::GATEWAY.request(api, version, req)?;
        let lease = match conn {
            Some(c) => Lease::shared(c.clone()),
            None => self.lease(Lane::of(api), Caller::GATEWAY).await?,
        };
        let pending = self
            .send(lease, api, version, frame, true, false)
            .await?
            .expect("a reply was asked for");
        pending.decode(version).await
    }

    /// What this broker supports, per API key.
    pub async fn api_versions(&self) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        self.api_versions_on(None).await
    }

    pub(super) async fn api_versions_on(
        &self,
        conn: Option<&Connection>,
    ) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(GATEWAY_CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp: ApiVersionsResponse = self.call_on(conn, 3, &req).await?;
        // KIP-511: a broker that does not know v3 answers UNSUPPORTED_VERSION in the v0 format;
        // ask again in v0, which every broker understands (Kafka before 2.4, librdkafka's mock).
        if resp.error_code == kafka_protocol::ResponseError::UnsupportedVersion.code() {
            resp = self
                .call_on(conn, 0, &ApiVersionsRequest::default())
                .await?;
        }
        if resp.error_code != 0 {
            return Err(UpstreamError::Decode {
                addr: self.addr.clone(),
                reason: format!("ApiVersions error code {}", resp.error_code),
            });
        }
        Ok(resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    /// How many produce connections are open.
    #[cfg(test)]
    pub(super) async fn produce_connections(&self) -> usize {
        let mut open = 0;
        for slot in &self.produce {
            open += usize::from(slot.lock().await.as_ref().is_some_and(|c| !c.is_closed()));
        }
        open
    }

    /// How many fetch connections are open (idle, lent).
    #[cfg(test)]
    pub(super) fn fetch_connections(&self) -> (usize, usize) {
        self.fetch.open_connections()
    }

    #[cfg(test)]
    pub(super) fn set_fetch_caps(&self, caps: super::lease::FetchCaps) {
        self.fetch.set_caps(caps)
    }
}

#[cfg(test)]
mod tests {
    //! Against real tansu brokers (memory engine), as the integration tests are; a stand-in
    //! only where a real broker cannot show what is under test, as each such test says. tansu
    //! comes from `TOLLGATE_TANSU` or `tansu` on PATH.

    use super::*;
    use crate::pool::testing::*;
    use crate::pool::Pool;
    use bytes::Bytes;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

    #[tokio::test]
    async fn each_client_keeps_to_one_produce_connection_and_clients_spread_over_several() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "t").await;
        let hello = [Bytes::from_static(b"hello")];
        for _ in 0..3 {
            assert_eq!(produce_for(&broker, 7, "t", &hello).await, 0);
        }
        assert_eq!(
            broker.produce_connections().await,
            1,
            "one client, one connection"
        );
        for client in 0..2 * PRODUCE_CONNECTIONS as u64 {
            assert_eq!(produce_for(&broker, client, "t", &hello).await, 0);
        }
        assert_eq!(
            broker.produce_connections().await,
            PRODUCE_CONNECTIONS,
            "many clients, every produce connection, no more"
        );
    }

    /// No real broker can be made to stop answering, so a listener that accepts connections and
    /// never answers stands in for a hung broker here. Only the timeout path is under test.
    #[tokio::test]
    async fn a_timeout_closes_the_connection_and_fails_the_other_requests_on_it() {
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = hung.local_addr().unwrap().to_string();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = hung.accept().await {
                sockets.push(socket);
            }
        });
        let broker = Broker::new(&addr, Timeouts::default());
        let req = MetadataRequest::default();
        let metadata =
            || broker.dispatch_for(Caller::GATEWAY, ApiKey::Metadata, METADATA, &req, true);
        let first = metadata().await.unwrap().unwrap();
        let second = metadata().await.unwrap().unwrap();
        let timed_out = first
            .with_timeout(Duration::from_millis(200))
            .body()
            .await
            .unwrap_err();
        assert!(
            matches!(timed_out, UpstreamError::Timeout { .. }),
            "{timed_out}"
        );
        // Failed now, rather than left behind a request the broker will never answer.
        let failed = second
            .with_timeout(Duration::from_secs(30))
            .body()
            .await
            .unwrap_err();
        assert!(matches!(failed, UpstreamError::Io { .. }), "{failed}");
        assert!(!timed_out.nothing_sent() && !failed.nothing_sent());

        let closed = broker.control.lock().await.clone().unwrap();
        assert!(closed.is_closed());
        let _third = metadata().await.unwrap().unwrap();
        let open = broker.control.lock().await.clone().unwrap();
        assert!(!open.same(&closed) && !open.is_closed(), "a new connection");
        held.abort();
    }

    /// A listener stands in for a broker that comes back: only whether a connect is attempted
    /// is under test, and nothing is ever answered.
    #[tokio::test]
    async fn a_failed_connect_fails_the_next_ones_at_once() {
        let addr = format!("127.0.0.1:{}", free_port());
        let broker = Broker::new(&addr, Timeouts::default());
        let req = MetadataRequest::default();
        let refused = broker
            .dispatch_for(Caller::GATEWAY, ApiKey::Metadata, METADATA, &req, true)
            .await
            .err()
            .expect("nothing listens");
        assert!(
            matches!(refused, UpstreamError::Connect { .. }),
            "{refused}"
        );
        assert!(refused.nothing_sent());

        // Something listens now, but so soon after the failure no lane tries again.
        let _listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        let again = broker
            .dispatch_for(Caller::GATEWAY, ApiKey::Metadata, METADATA, &req, true)
            .await
            .err()
            .expect("not tried");
        assert_eq!(again.to_string(), refused.to_string());
        let again = broker
            .dispatch_for(
                Caller::GATEWAY,
                ApiKey::Fetch,
                FETCH,
                &fetch_request("t", 0),
                true,
            )
            .await
            .err()
            .expect("not tried");
        assert_eq!(again.to_string(), refused.to_string());

        tokio::time::sleep(CONNECT_FAILURE_HOLD).await;
        assert!(broker
            .dispatch_for(Caller::GATEWAY, ApiKey::Metadata, METADATA, &req, true)
            .await
            .is_ok());
    }

    #[test]
    fn requests_a_broker_may_hold_never_take_the_shared_control_connection() {
        for api in [
            ApiKey::Fetch,
            ApiKey::JoinGroup,
            ApiKey::SyncGroup,
            ApiKey::CreateTopics,
            ApiKey::DeleteTopics,
            ApiKey::CreatePartitions,
            ApiKey::DeleteRecords,
        ] {
            assert_eq!(Lane::of(api), Lane::Fetch, "{api:?}");
        }
        for api in [ApiKey::Heartbeat, ApiKey::OffsetCommit, ApiKey::Metadata] {
            assert_eq!(Lane::of(api), Lane::Control, "{api:?}");
        }
        assert_eq!(Lane::of(ApiKey::Produce), Lane::Produce);
    }

    #[test]
    fn the_client_id_names_the_cluster_or_the_gateway() {
        let cluster = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let mut buf = [0; MAX_CLIENT_ID_LEN];
        let tenant = Caller::tenant(7, cluster).with_client_id(Some("c0 orders/\u{e9}"));
        assert_eq!(
            tenant.client_id(ApiKey::Produce, &mut buf),
            "tollgate/01234567-89ab-cdef-0123-456789abcdef"
        );
        // JoinGroup names the member: the client's own id, tidied, sorts the members.
        assert_eq!(
            tenant.client_id(ApiKey::JoinGroup, &mut buf),
            "tollgate/01234567-89ab-cdef-0123-456789abcdef/c0_orders___"
        );
        let long = "x".repeat(500);
        let tagged = Caller::tenant(7, cluster).with_client_id(Some(&long));
        assert_eq!(
            tagged.client_id(ApiKey::JoinGroup, &mut buf).len(),
            MAX_CLIENT_ID_LEN
        );
        assert_eq!(
            Caller::tenant(7, cluster)
                .with_client_id(None)
                .client_id(ApiKey::JoinGroup, &mut buf),
            "tollgate/01234567-89ab-cdef-0123-456789abcdef"
        );
        assert_eq!(
            Caller::GATEWAY.client_id(ApiKey::JoinGroup, &mut buf),
            "tollgate"
        );
        let order = |id: &str| ClientTag::new(id).as_str().to_owned();
        assert!(order("c0") < order("c1") && order("consumer-1") < order("consumer-2"));
    }

    /// What reached the broker is what is under test, which only a fake broker records.
    #[tokio::test]
    async fn requests_for_a_cluster_carry_its_client_id_and_the_gateways_own_carry_tollgate() {
        let fake = FakeBroker::start(Vec::new(), Duration::ZERO).await;
        let pool = Pool::new(Timeouts::default());
        pool.add_broker(&fake.addr).await.expect("the fake answers");
        let broker = pool.broker(&fake.addr).unwrap();
        let cluster = Uuid::new_v4();
        let tenant = Caller::tenant(3, cluster);
        let req = MetadataRequest::default();

        let pending = broker.dispatch_for(tenant, ApiKey::Metadata, METADATA, &req, true);
        pending.await.unwrap().unwrap().body().await.unwrap();
        let pending = broker.dispatch_streamed(tenant, ApiKey::Metadata, METADATA, &req);
        pending.await.unwrap().body().await.unwrap();
        let _: MetadataResponse = broker.call(METADATA, &req).await.unwrap();

        let own = Some("tollgate".to_string());
        let theirs = Some(format!("tollgate/{}", cluster.hyphenated()));
        let seen = |api, client_id: &Option<String>| Seen {
            api,
            client_id: client_id.clone(),
        };
        assert_eq!(
            fake.seen(),
            [
                seen(ApiKey::ApiVersions, &own),
                seen(ApiKey::Metadata, &theirs),
                seen(ApiKey::Metadata, &theirs),
                seen(ApiKey::Metadata, &own),
            ]
        );
    }
}
