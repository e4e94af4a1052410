//! Connections to the pool's brokers.
//!
//! Each pool broker gets one multiplexed connection shared by every client connection: requests
//! from any number of clients are written to it in the order they are dispatched, each under a
//! correlation id of the gateway's own, and the replies are matched back by that id. Clients
//! never get a socket of their own on the pool, so a thousand tenant connections cost the pool
//! one connection per gateway.
//!
//! [`Pool`] is the changeable set of brokers. Which broker serves which request is the
//! router's decision (see [`crate::router`]); this module only moves bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::frame::{encode_request, read_frame, set_correlation_id};

/// The largest response we accept from the pool: a fetch can legitimately be large.
const MAX_RESPONSE_FRAME: usize = 256 * 1024 * 1024;
/// Requests waiting for a broker connection's writer; bounds memory when a broker is slow.
const OUTBOUND_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error, Clone)]
pub enum UpstreamError {
    #[error("pool broker {addr} is unreachable: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to pool broker {addr} failed: {reason}")]
    Io { addr: String, reason: String },
    #[error("pool broker {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("could not encode a request for the pool: {0}")]
    Encode(String),
    #[error("pool broker {addr} sent a response we could not decode: {reason}")]
    Decode { addr: String, reason: String },
    #[error("the pool has no live brokers")]
    NoBrokers,
}

/// A request waiting to be written to one broker.
struct Outbound {
    frame: BytesMut,
    api: ApiKey,
    version: i16,
    /// `None` for requests that get no response (produce with acks=0).
    reply: Option<oneshot::Sender<Result<Bytes, UpstreamError>>>,
}

struct Waiting {
    api: ApiKey,
    version: i16,
    reply: oneshot::Sender<Result<Bytes, UpstreamError>>,
}

/// Requests written and not yet answered. `dead` is set, under the same lock, by whichever half
/// of the connection fails first, so no request can be registered after the drain that fails
/// the others, and a later caller sees the connection as closed and reconnects.
#[derive(Default)]
struct Waiters {
    map: HashMap<i32, Waiting>,
    dead: Option<String>,
}

impl Waiters {
    /// Marks the connection dead and fails every waiting request.
    fn fail(&mut self, addr: &str, reason: String) {
        self.dead.get_or_insert(reason.clone());
        for (_, w) in self.map.drain() {
            let _ = w.reply.send(Err(UpstreamError::Io {
                addr: addr.to_owned(),
                reason: reason.clone(),
            }));
        }
    }
}

/// One multiplexed connection. Dropping the last handle closes it.
#[derive(Clone)]
struct Connection {
    tx: mpsc::Sender<Outbound>,
    waiters: Arc<Mutex<Waiters>>,
}

impl Connection {
    async fn open(addr: &str, connect_timeout: Duration) -> Result<Self, UpstreamError> {
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::Connect {
                addr: addr.to_owned(),
                reason: "connect timed out".into(),
            })?
            .map_err(|e| UpstreamError::Connect {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let waiters: Arc<Mutex<Waiters>> = Arc::default();
        let addr: Arc<str> = addr.into();
        tokio::spawn(write_loop(write, rx, waiters.clone(), addr.clone()));
        tokio::spawn(read_loop(read, waiters.clone(), addr));
        Ok(Connection { tx, waiters })
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.waiters.lock().expect("poisoned").dead.is_some()
    }
}

async fn write_loop(
    write: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    waiters: Arc<Mutex<Waiters>>,
    addr: Arc<str>,
) {
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    let next_id = AtomicI32::new(0);
    let fail_all = |reason: String| waiters.lock().expect("poisoned").fail(&addr, reason);
    while let Some(first) = rx.recv().await {
        // Write everything already queued before flushing: under load, many requests share
        // one syscall.
        let mut next = Some(first);
        while let Some(mut out) = next.take() {
            let id = next_id.fetch_add(1, Ordering::Relaxed) & i32::MAX;
            set_correlation_id(&mut out.frame, id);
            tracing::trace!(broker = %addr, api = ?out.api, version = out.version, id, "to pool");
            if let Some(reply) = out.reply {
                let mut w = waiters.lock().expect("poisoned");
                if let Some(reason) = w.dead.clone() {
                    let _ = reply.send(Err(UpstreamError::Io {
                        addr: addr.to_string(),
                        reason,
                    }));
                    return;
                }
                w.map.insert(
                    id,
                    Waiting {
                        api: out.api,
                        version: out.version,
                        reply,
                    },
                );
            }
            if let Err(e) = write.write_all(&out.frame).await {
                fail_all(e.to_string());
                return;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = write.flush().await {
            fail_all(e.to_string());
            return;
        }
    }
}

async fn read_loop(
    mut read: tokio::net::tcp::OwnedReadHalf,
    waiters: Arc<Mutex<Waiters>>,
    addr: Arc<str>,
) {
    let reason = loop {
        let mut frame = match read_frame(&mut read, MAX_RESPONSE_FRAME).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break "closed by the broker".to_string(),
            Err(e) => break e.to_string(),
        };
        if frame.len() < 4 {
            break "response shorter than a header".to_string();
        }
        let id = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        tracing::trace!(broker = %addr, id, len = frame.len(), "from pool");
        let Some(w) = waiters.lock().expect("poisoned").map.remove(&id) else {
            break format!("response to unknown correlation id {id}");
        };
        let header_version = w.api.response_header_version(w.version);
        let result = ResponseHeader::decode(&mut frame, header_version)
            .map(|_| frame)
            .map_err(|e| UpstreamError::Decode {
                addr: addr.to_string(),
                reason: e.to_string(),
            });
        let _ = w.reply.send(result);
    };
    tracing::warn!(broker = %addr, %reason, "pool connection closed");
    waiters.lock().expect("poisoned").fail(&addr, reason);
}

/// Which of a broker's connections a request travels on.
///
/// A Kafka broker handles one connection's requests strictly one after another, so a
/// long-polling Fetch would hold up every produce queued behind it on the same connection.
/// Produce, Fetch and everything else (metadata, groups, admin) therefore get a connection
/// each. It also bounds the damage when a broker drops a connection over one bad request
/// (tansu 0.6 does, on DescribeGroups against its SQLite engine): the data lanes carry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Produce = 0,
    Fetch = 1,
    Control = 2,
}

impl Lane {
    pub fn of(api: ApiKey) -> Lane {
        match api {
            ApiKey::Produce => Lane::Produce,
            ApiKey::Fetch => Lane::Fetch,
            _ => Lane::Control,
        }
    }
}

/// One pool broker, identified by its address (tansu brokers all share one node id).
pub struct Broker {
    addr: String,
    lanes: [tokio::sync::Mutex<Option<Connection>>; 3],
    timeouts: Timeouts,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
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

/// A reply still on its way from a broker.
pub struct PendingReply {
    addr: String,
    timeout: Duration,
    rx: oneshot::Receiver<Result<Bytes, UpstreamError>>,
}

impl PendingReply {
    pub async fn body(self) -> Result<Bytes, UpstreamError> {
        match tokio::time::timeout(self.timeout, self.rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(UpstreamError::Io {
                addr: self.addr,
                reason: "connection closed before the response".into(),
            }),
            Err(_) => Err(UpstreamError::Timeout {
                addr: self.addr,
                timeout: self.timeout,
            }),
        }
    }

    pub async fn decode<R: Decodable>(self, version: i16) -> Result<R, UpstreamError> {
        let addr = self.addr.clone();
        let mut body = self.body().await?;
        R::decode(&mut body, version).map_err(|e| UpstreamError::Decode {
            addr,
            reason: format!(
                "{} v{version}: {e}",
                std::any::type_name::<R>()
                    .rsplit("::")
                    .next()
                    .unwrap_or_default()
            ),
        })
    }
}

impl Broker {
    pub fn new(addr: impl Into<String>, timeouts: Timeouts) -> Self {
        Broker {
            addr: addr.into(),
            lanes: Default::default(),
            timeouts,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connection(&self, lane: Lane) -> Result<Connection, UpstreamError> {
        let mut slot = self.lanes[lane as usize].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Connection::open(&self.addr, self.timeouts.connect).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Queues `body` for this broker. Requests dispatched one after another from one task reach
    /// the broker in that order, which idempotent producers rely on. Returns `None` for
    /// requests that expect no answer.
    pub async fn dispatch<M: Encodable>(
        &self,
        api: ApiKey,
        version: i16,
        body: &M,
        expects_reply: bool,
    ) -> Result<Option<PendingReply>, UpstreamError> {
        let frame = encode_request(api, version, "tollgate", body)
            .map_err(|e| UpstreamError::Encode(e.to_string()))?;
        let conn = self.connection(Lane::of(api)).await?;
        let (reply, rx) = if expects_reply {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        conn.tx
            .send(Outbound {
                frame,
                api,
                version,
                reply,
            })
            .await
            .map_err(|_| UpstreamError::Io {
                addr: self.addr.clone(),
                reason: "connection closed".into(),
            })?;
        Ok(rx.map(|rx| PendingReply {
            addr: self.addr.clone(),
            timeout: self.timeouts.request,
            rx,
        }))
    }

    /// Sends a request and waits for its decoded response.
    pub async fn call<R: Request>(
        &self,
        version: i16,
        req: &R,
    ) -> Result<R::Response, UpstreamError> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| UpstreamError::Encode("api key".into()))?;
        let pending = self
            .dispatch(api, version, req, true)
            .await?
            .expect("a reply was asked for");
        pending.decode(version).await
    }

    /// What this broker supports, per API key.
    pub async fn api_versions(&self) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("tollgate"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp: ApiVersionsResponse = self.call(3, &req).await?;
        // KIP-511: a broker that does not know v3 answers UNSUPPORTED_VERSION in the v0 format;
        // ask again in v0, which every broker understands (Kafka before 2.4, librdkafka's mock).
        if resp.error_code == kafka_protocol::ResponseError::UnsupportedVersion.code() {
            resp = self.call(0, &ApiVersionsRequest::default()).await?;
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
}

/// The pool's live brokers and what they all support. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    brokers: RwLock<Vec<Arc<Broker>>>,
    /// The intersection over all brokers ever added, per API key: a request version we forward
    /// must be understood by whichever broker ends up serving it.
    versions: RwLock<HashMap<i16, (i16, i16)>>,
    timeouts: Timeouts,
}

impl Pool {
    pub fn new(timeouts: Timeouts) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                brokers: RwLock::default(),
                versions: RwLock::default(),
                timeouts,
            }),
        }
    }

    /// Adds a broker after learning its API versions. Adding an address twice is a no-op.
    pub async fn add_broker(&self, addr: &str) -> Result<(), UpstreamError> {
        if self.broker(addr).is_some() {
            return Ok(());
        }
        let broker = Arc::new(Broker::new(addr, self.inner.timeouts));
        let versions = broker.api_versions().await?;
        {
            let mut all = self.inner.versions.write().expect("poisoned");
            let first = self.inner.brokers.read().expect("poisoned").is_empty() && all.is_empty();
            if first {
                *all = versions;
            } else {
                all.retain(|k, _| versions.contains_key(k));
                for (k, (min, max)) in all.iter_mut() {
                    let (bmin, bmax) = versions[k];
                    *min = (*min).max(bmin);
                    *max = (*max).min(bmax);
                }
            }
        }
        self.inner.brokers.write().expect("poisoned").push(broker);
        tracing::info!(broker = addr, "pool broker added");
        Ok(())
    }

    pub fn remove_broker(&self, addr: &str) {
        self.inner
            .brokers
            .write()
            .expect("poisoned")
            .retain(|b| b.addr != addr);
    }

    pub fn brokers(&self) -> Vec<Arc<Broker>> {
        self.inner.brokers.read().expect("poisoned").clone()
    }

    pub fn broker(&self, addr: &str) -> Option<Arc<Broker>> {
        self.inner
            .brokers
            .read()
            .expect("poisoned")
            .iter()
            .find(|b| b.addr == addr)
            .cloned()
    }

    /// The versions of `api` every pool broker supports.
    pub fn versions(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.inner
            .versions
            .read()
            .expect("poisoned")
            .get(&(api as i16))
            .copied()
            .filter(|(min, max)| min <= max)
    }
}
