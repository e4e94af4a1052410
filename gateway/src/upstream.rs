//! Connections to the pool's brokers, and which brokers are live.
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
//!   broker answers at once (never JoinGroup or SyncGroup, which it may hold for minutes).
//!   Requests from any number of clients are written in the order they are dispatched, each under
//!   a correlation id of the gateway's own, and the replies are matched back by that id. A
//!   thousand tenant connections cost each broker at most nine connections per gateway (plus
//!   the fetch connections below).
//! - Fetch: a set of exclusive connections, for fetches, JoinGroups and SyncGroups. A fetch long-polls (up to its `max_wait_ms`), so on a
//!   shared connection it would hold every other client's fetch to that broker until it ends.
//!   Each fetch borrows an idle connection, or opens one, and gives it back when its answer has
//!   arrived. Past `FETCH_CONNECTIONS` (64) per broker, fetches share the least loaded one rather
//!   than wait for one to come free: dispatching never blocks on other clients' fetches, and the
//!   pool sees a bounded number of connections.
//!
//! A request that gets no answer in time ([`PendingReply::with_timeout`], else
//! [`Timeouts::request`]) closes the connection it travelled on and fails the other requests
//! waiting on it, as Kafka clients do: a broker that stopped answering one request would hold
//! every later one. After a failed connect, further connects to that broker fail at once with
//! the same error for 250 ms, so a broker that refuses or blackholes connections costs one
//! connect timeout, not one per request.
//!
//! [`Pool`] is the changeable set of brokers and which of them are live:
//!
//! - [`Pool::add_broker`] registers a broker that must answer now; [`Pool::add_configured`] one
//!   that may come later, as down. [`Pool::remove_broker`] forgets one.
//! - [`Pool::brokers`] lists the live ones (what routing uses), [`Pool::all_brokers`] every
//!   registered one, [`Pool::broker`] finds one by address, live or not.
//! - [`Pool::mark_down`] is for a caller that found a broker unreachable; [`Pool::run_prober`]
//!   brings down brokers back when they answer, and notices live ones that stopped answering.
//! - [`Pool::generation`] changes with every change of membership or liveness, so callers can
//!   drop what they cached about the pool.
//! - [`Pool::versions`] is what every broker that ever answered supports.
//!
//! Which broker serves which request is the router's decision (see [`crate::router`]); this
//! module only moves bytes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::frame::{Frame, FrameReader};

/// The largest response we accept from the pool: a fetch can legitimately be large.
const MAX_RESPONSE_FRAME: usize = 256 * 1024 * 1024;
/// Read buffer kept between a pool connection's answers (see [`FrameReader`]): fetch answers
/// of a few MB reuse one buffer.
const UPSTREAM_READ_RETAIN: usize = 16 * 1024 * 1024;
/// Requests waiting for a broker connection's writer; bounds memory when a broker is slow.
const OUTBOUND_QUEUE: usize = 1024;
/// Fetch connections per broker before fetches start sharing them.
const FETCH_CONNECTIONS: usize = 64;
/// Produce connections per broker, each shared by the client connections keeping to it.
pub const PRODUCE_CONNECTIONS: usize = 8;
/// How long after a failed connect further connects fail at once with its error.
const CONNECT_FAILURE_HOLD: Duration = Duration::from_millis(250);
/// The prober's connect timeout: a broker on the same network accepts well within it.
const PROBE_CONNECT: Duration = Duration::from_secs(1);
/// How long the prober waits for ApiVersions on a connection of its own.
const PROBE_ANSWER: Duration = Duration::from_secs(2);
/// Answers at least this large are streamed to callers that asked ([`Broker::dispatch_streamed`]):
/// below it, waiting for the whole answer costs less than the hand-offs.
const STREAM_MIN: usize = 64 * 1024;
/// How much of a streamed answer is read before its header must have been seen.
const HEADER_PEEK: usize = 4096;
/// Chunks of a streamed answer read ahead of its caller.
const STREAM_CHUNKS: usize = 16;
/// The least a chunk of a streamed answer holds (unless the answer ends sooner): each chunk
/// costs a hand-off between tasks and a write, so a few socket reads make one.
const STREAM_CHUNK: usize = 256 * 1024;
/// The most a chunk holds: what a slow reader makes wait, in [`STREAM_CHUNKS`] of them.
const STREAM_CHUNK_MAX: usize = 1024 * 1024;

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

impl UpstreamError {
    /// True only when the request certainly never reached a broker, so sending it again, to
    /// this broker or another, cannot make it happen twice. An `Io` error may come after the
    /// request was written, and a `Timeout` or `Decode` after the broker acted on it.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect { .. } | UpstreamError::NoBrokers | UpstreamError::Encode(_)
        )
    }
}

/// How an answer reaches its caller: whole, or (a large one, for a caller that asked) as it
/// arrives, so the gateway can pass it on while the broker is still sending it.
enum Arrival {
    Whole(Bytes),
    /// `len` bytes of body (the response header already read), in chunks.
    Streaming {
        len: usize,
        rx: mpsc::Receiver<Bytes>,
    },
}

type ReplyTx = oneshot::Sender<Result<Arrival, UpstreamError>>;

/// A request waiting to be written to one broker.
struct Outbound {
    frame: Frame,
    api: ApiKey,
    version: i16,
    /// `None` for requests that get no response (produce with acks=0).
    reply: Option<ReplyTx>,
    /// The caller takes a large answer as a stream.
    stream: bool,
}

struct Waiting {
    api: ApiKey,
    version: i16,
    reply: ReplyTx,
    stream: bool,
}

/// Requests written and not yet answered. `dead` is set, under the same lock, by whatever closes
/// the connection first, so no request can be registered after the drain that fails the others,
/// and a later caller sees the connection as closed and reconnects.
#[derive(Default)]
struct Waiters {
    map: HashMap<i32, Waiting>,
    dead: Option<String>,
}

impl Waiters {
    /// Marks the connection dead and fails every waiting request; returns how many there were.
    fn fail(&mut self, addr: &str, reason: &str) -> usize {
        self.dead.get_or_insert_with(|| reason.to_owned());
        let failed = self.map.len();
        for (_, w) in self.map.drain() {
            let _ = w.reply.send(Err(UpstreamError::Io {
                addr: addr.to_owned(),
                reason: reason.to_owned(),
            }));
        }
        failed
    }
}

/// What a connection's handles and its two tasks share.
struct Shared {
    addr: Arc<str>,
    waiters: Mutex<Waiters>,
    /// The writer and reader tasks, which own the socket's halves.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    fn is_dead(&self) -> bool {
        self.waiters.lock().expect("poisoned").dead.is_some()
    }

    /// Marks the connection dead, fails the requests waiting on it, and drops the socket by
    /// stopping the tasks that own it. Requests still queued for the writer are dropped with
    /// it, which their callers see as an `Io` error. Returns how many requests were waiting.
    fn close(&self, reason: &str) -> usize {
        let failed = self
            .waiters
            .lock()
            .expect("poisoned")
            .fail(&self.addr, reason);
        for task in self.tasks.lock().expect("poisoned").drain(..) {
            task.abort();
        }
        failed
    }
}

/// One multiplexed connection. Dropping the last handle closes it.
#[derive(Clone)]
struct Connection {
    tx: mpsc::Sender<Outbound>,
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
            addr: addr.into(),
            waiters: Mutex::default(),
            tasks: Mutex::default(),
        });
        let writer = tokio::spawn(write_loop(write, rx, shared.clone()));
        let reader = tokio::spawn(read_loop(read, shared.clone()));
        shared
            .tasks
            .lock()
            .expect("poisoned")
            .extend([writer.abort_handle(), reader.abort_handle()]);
        // The reader may have failed before its handle was stored; stop the writer too.
        if shared.is_dead() {
            shared.close("closed by the broker");
        }
        Ok(Connection { tx, shared })
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.shared.is_dead()
    }

    fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Closes the connection because a request on it got no answer in time.
    fn abandon(&self, reason: &str) {
        let failed = self.shared.close(reason);
        tracing::warn!(broker = %self.shared.addr, reason, failed, "closing pool connection");
    }
}

async fn write_loop(
    write: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    shared: Arc<Shared>,
) {
    let addr = shared.addr.clone();
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    let mut next_id: i32 = 0;
    let fail = |e: std::io::Error| {
        let failed = shared.close(&e.to_string());
        tracing::warn!(broker = %addr, error = %e, failed, "pool connection failed on write");
    };
    while let Some(first) = rx.recv().await {
        // Write everything already queued before flushing: under load, many requests share
        // one syscall.
        let mut next = Some(first);
        while let Some(mut out) = next.take() {
            let id = next_id;
            next_id = next_id.wrapping_add(1) & i32::MAX;
            out.frame.set_correlation_id(id);
            tracing::trace!(broker = %addr, api = ?out.api, version = out.version, id, "to pool");
            if let Some(reply) = out.reply {
                let mut w = shared.waiters.lock().expect("poisoned");
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
                        stream: out.stream,
                    },
                );
            }
            if let Err(e) = write.write_all_buf(&mut out.frame).await {
                fail(e);
                return;
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = write.flush().await {
            fail(e);
            return;
        }
    }
    // Every handle is gone, so nobody waits for an answer: stop reading too, or a broker that
    // never closes its side would keep the reader (and the socket) forever.
    shared.close("no longer used");
}

async fn read_loop(read: tokio::net::tcp::OwnedReadHalf, shared: Arc<Shared>) {
    let reason = match read_answers(read, &shared).await {
        Ok(()) => "closed by the broker".to_string(),
        Err(reason) => reason,
    };
    let addr = shared.addr.clone();
    let failed = shared.close(&reason);
    // Brokers close idle connections (Kafka after connections.max.idle.ms): only a close that
    // fails requests is news.
    if failed > 0 {
        tracing::warn!(broker = %addr, %reason, failed, "pool connection closed");
    } else {
        tracing::debug!(broker = %addr, %reason, "idle pool connection closed");
    }
}

/// Reads answers and hands each to its waiter until the broker closes (`Ok`) or something
/// goes wrong (the reason).
async fn read_answers(read: tokio::net::tcp::OwnedReadHalf, shared: &Shared) -> Result<(), String> {
    let addr = &shared.addr;
    let mut read = FrameReader::new(read, UPSTREAM_READ_RETAIN);
    loop {
        // Length and correlation id first: who the answer is for decides how it is read.
        if !read.fill(4).await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let b = read.buffered();
        let size = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if !(4..=MAX_RESPONSE_FRAME as i32).contains(&size) {
            return Err(format!("response frame of {size} bytes"));
        }
        let size = size as usize;
        read.fill(8).await.map_err(|e| e.to_string())?;
        let b = read.buffered();
        let id = i32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        tracing::trace!(broker = %addr, id, len = size, "from pool");
        let Some(w) = shared.waiters.lock().expect("poisoned").map.remove(&id) else {
            return Err(format!("response to unknown correlation id {id}"));
        };
        let header_version = w.api.response_header_version(w.version);
        if w.stream && size >= STREAM_MIN && read.buffered().len() < 4 + size {
            read.fill(4 + size.min(HEADER_PEEK))
                .await
                .map_err(|e| e.to_string())?;
            let header = response_header_len(&read.buffered()[4..], header_version);
            if let Some(header) = header.filter(|&h| h <= size) {
                read.take(4 + header);
                let mut left = size - header;
                let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
                let listening = w
                    .reply
                    .send(Ok(Arrival::Streaming { len: left, rx }))
                    .is_ok();
                let mut chunks = 0;
                while left > 0 {
                    chunks += 1;
                    let chunk = read
                        .chunk(left, STREAM_CHUNK, STREAM_CHUNK_MAX)
                        .await
                        .map_err(|e| e.to_string())?;
                    left -= chunk.len();
                    // A caller that stopped listening mid-answer gave up on the request: the
                    // rest of it is read and dropped.
                    if listening && tx.send(chunk).await.is_err() {
                        return Err("the answer's reader went away".into());
                    }
                }
                tracing::trace!(broker = %addr, id, len = size, chunks, "streamed from pool");
                continue;
            }
        }
        let mut frame = match read.next(MAX_RESPONSE_FRAME).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(crate::frame::FrameError::Truncated.to_string()),
            Err(e) => return Err(e.to_string()),
        };
        let result = ResponseHeader::decode(&mut frame, header_version)
            .map(|_| Arrival::Whole(frame))
            .map_err(|e| UpstreamError::Decode {
                addr: addr.to_string(),
                reason: e.to_string(),
            });
        let _ = w.reply.send(result);
    }
}

/// The length of a response header at the start of `b`, if all of it is there.
fn response_header_len(b: &[u8], header_version: i16) -> Option<usize> {
    let mut at = 4; // correlation id
    if b.len() < at {
        return None;
    }
    if header_version >= 1 {
        let tags = uvarint(b, &mut at)?;
        for _ in 0..tags {
            uvarint(b, &mut at)?;
            let size = uvarint(b, &mut at)? as usize;
            at = at.checked_add(size).filter(|&end| end <= b.len())?;
        }
    }
    Some(at)
}

/// An unsigned varint of `b` at `*at`, advancing past it.
fn uvarint(b: &[u8], at: &mut usize) -> Option<u32> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        value |= u32::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
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
    /// long-poll, JoinGroup and SyncGroup wait for the rebalance), up to 64 per broker.
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
            _ => Lane::Control,
        }
    }
}

/// A broker's fetch connections.
#[derive(Default)]
struct FetchLane {
    state: Mutex<FetchConns>,
}

#[derive(Default)]
struct FetchConns {
    /// Connections with nothing in flight; the most recently given back is lent first, so the
    /// others can sit idle until the broker closes them.
    idle: Vec<Connection>,
    /// Connections carrying fetches, each with how many (more than one only past the cap).
    lent: Vec<(Connection, usize)>,
    /// Connects in progress, counted against the cap.
    opening: usize,
}

enum Borrowed {
    /// A connection, and whether this fetch has it to itself.
    Conn(Connection, bool),
    /// None to lend: open one (a slot is reserved in `opening`).
    Open,
}

impl FetchLane {
    fn borrow(&self) -> Borrowed {
        let mut s = self.state.lock().expect("poisoned");
        s.idle.retain(|c| !c.is_closed());
        s.lent.retain(|(c, _)| !c.is_closed());
        if let Some(c) = s.idle.pop() {
            s.lent.push((c.clone(), 1));
            return Borrowed::Conn(c, true);
        }
        if s.lent.len() + s.opening < FETCH_CONNECTIONS || s.lent.is_empty() {
            s.opening += 1;
            return Borrowed::Open;
        }
        let (c, n) = s
            .lent
            .iter_mut()
            .min_by_key(|(_, n)| *n)
            .expect("lent is not empty");
        *n += 1;
        Borrowed::Conn(c.clone(), false)
    }

    fn lend_new(&self, c: &Connection) {
        self.state
            .lock()
            .expect("poisoned")
            .lent
            .push((c.clone(), 1));
    }

    fn give_back(&self, c: &Connection) {
        let mut s = self.state.lock().expect("poisoned");
        let Some(i) = s.lent.iter().position(|(l, _)| l.same(c)) else {
            return;
        };
        s.lent[i].1 -= 1;
        if s.lent[i].1 == 0 {
            let (c, _) = s.lent.swap_remove(i);
            if !c.is_closed() {
                s.idle.push(c);
            }
        }
    }
}

/// Releases the slot a fetch connection's connect reserved, however the connect ends (the
/// dispatching future may be dropped mid-connect).
struct Opening<'a>(&'a FetchLane);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("poisoned").opening -= 1;
    }
}

/// The connection a request was sent on, held until its answer arrives.
struct Lease {
    conn: Connection,
    /// Set for fetch connections, which go back to their lane when the lease ends.
    fetch: Option<Arc<FetchLane>>,
    /// A fetch connection with a request in flight: if the lease ends before the answer came,
    /// the connection is closed rather than lent to a fetch that would queue behind it.
    busy: bool,
    /// No other request shares the connection while this one is in flight: its answer may be
    /// streamed, at the pace of whoever reads it, without holding up anyone else's.
    exclusive: bool,
}

impl Lease {
    fn shared(conn: Connection) -> Lease {
        Lease {
            conn,
            fetch: None,
            busy: false,
            exclusive: false,
        }
    }

    /// The request's answer has arrived, or its connection is closed: the lease may end
    /// without closing anything.
    fn settle(&mut self) {
        self.busy = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(lane) = &self.fetch {
            if self.busy {
                self.conn
                    .abandon("a fetch was given up on before its answer arrived");
            }
            lane.give_back(&self.conn);
        }
    }
}

/// One pool broker, identified by its address (tansu brokers all share one node id).
pub struct Broker {
    addr: String,
    produce: [tokio::sync::Mutex<Option<Connection>>; PRODUCE_CONNECTIONS],
    control: tokio::sync::Mutex<Option<Connection>>,
    fetch: Arc<FetchLane>,
    /// The prober's own connection ([`Pool::run_prober`]).
    probe_conn: Mutex<Option<Connection>>,
    /// A [`Pool::suspect`] check is under way.
    checking: std::sync::atomic::AtomicBool,
    /// Held across a connect, so a broker that does not accept costs one connect at a time,
    /// and the connects queued behind a failed one fail at once.
    connecting: tokio::sync::Mutex<()>,
    /// The last connect, if it failed: when, and how.
    connect_failure: Mutex<Option<(Instant, UpstreamError)>>,
    timeouts: Timeouts,
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

/// A reply still on its way from a broker.
///
/// Dropping it unread is fine: a fetch's connection goes back to its lane once the broker has
/// answered (or is closed if the broker does not answer in time).
pub struct PendingReply {
    addr: String,
    timeout: Duration,
    /// When the request was queued for writing; the timeout runs from here.
    sent: Instant,
    /// `None` once answered or timed out.
    rx: Option<oneshot::Receiver<Result<Arrival, UpstreamError>>>,
    lease: Option<Lease>,
}

impl PendingReply {
    /// Sets how long, from dispatch, to wait for the answer: for a fetch, its `max_wait_ms`
    /// and a margin. When it passes, the request fails with [`UpstreamError::Timeout`] and the
    /// connection it travelled on is closed (other requests on it fail with
    /// [`UpstreamError::Io`]): a broker that stopped answering would otherwise hold every
    /// later request sent on it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn deadline(&self) -> tokio::time::Instant {
        // A timeout too long to add is as good as none: a year.
        let at = (self.sent.checked_add(self.timeout))
            .unwrap_or_else(|| self.sent + Duration::from_secs(365 * 24 * 3600));
        tokio::time::Instant::from_std(at)
    }

    /// The answer's body, whole.
    pub async fn body(self) -> Result<Bytes, UpstreamError> {
        let mut stream = self.stream().await?;
        if let Some(whole) = stream.whole() {
            return Ok(whole);
        }
        let mut body = bytes::BytesMut::with_capacity(stream.len());
        while let Some(chunk) = stream.next().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// The answer's body as it arrives: streamed if it was dispatched with
    /// [`Broker::dispatch_streamed`] and is large, else in one chunk. The timeout covers the
    /// start of the answer; each later chunk gets as long again.
    pub async fn stream(mut self) -> Result<BodyStream, UpstreamError> {
        let deadline = self.deadline();
        let rx = self.rx.take().expect("a pending reply is read once");
        let answer = tokio::time::timeout_at(deadline, rx).await;
        let mut lease = self.lease.take();
        let answer = match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(UpstreamError::Io {
                addr: self.addr.clone(),
                reason: "connection closed before the response".into(),
            }),
            Err(_) => {
                if let Some(lease) = &mut lease {
                    lease.settle();
                    lease
                        .conn
                        .abandon(&format!("no answer within {:?}", self.timeout));
                }
                Err(UpstreamError::Timeout {
                    addr: self.addr.clone(),
                    timeout: self.timeout,
                })
            }
        };
        let (first, rx, len) = match answer {
            // The connection stays busy until the last chunk: the lease goes with the stream.
            Ok(Arrival::Streaming { len, rx }) => (None, Some(rx), len),
            Ok(Arrival::Whole(body)) => {
                // All read: the connection is free.
                if let Some(mut lease) = lease.take() {
                    lease.settle();
                }
                let len = body.len();
                (Some(body), None, len)
            }
            // Closed already if the answer cannot come.
            Err(e) => {
                if let Some(lease) = &mut lease {
                    lease.settle();
                }
                return Err(e);
            }
        };
        let mut stream = BodyStream {
            addr: self.addr.clone(),
            chunk_timeout: self.timeout,
            len,
            left: len,
            first,
            rx,
            lease,
        };
        stream.done_if_finished();
        Ok(stream)
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

/// An answer's body as it arrives from the broker ([`PendingReply::stream`]).
///
/// Dropping it before the end closes the connection it arrives on: the rest of the answer
/// would otherwise hold up whatever is sent on it next.
pub struct BodyStream {
    addr: String,
    chunk_timeout: Duration,
    len: usize,
    /// Bytes not yet handed out.
    left: usize,
    /// An answer that came whole.
    first: Option<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
    /// Held until the last chunk has arrived.
    lease: Option<Lease>,
}

impl BodyStream {
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All of the body has been handed out.
    pub fn is_done(&self) -> bool {
        self.left == 0
    }

    /// A body that arrives in `chunks`, as from a broker: for tests of its readers.
    #[cfg(test)]
    pub fn from_chunks(chunks: Vec<Bytes>) -> BodyStream {
        let len = chunks.iter().map(Bytes::len).sum();
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.try_send(c).expect("room for every chunk");
        }
        BodyStream {
            addr: "test".into(),
            chunk_timeout: Duration::from_secs(5),
            len,
            left: len,
            first: None,
            rx: Some(rx),
            lease: None,
        }
    }

    /// The whole body, if it came whole and nothing was read yet.
    fn whole(&mut self) -> Option<Bytes> {
        let whole = self.first.take()?;
        self.left = 0;
        Some(whole)
    }

    /// The next chunk, `None` at the end. A broker that goes quiet mid-answer for as long as
    /// the request's timeout fails it, and its connection is closed.
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        if self.left == 0 {
            return Ok(None);
        }
        let chunk = match self.first.take() {
            Some(chunk) => chunk,
            None => {
                let io = |reason: &str| UpstreamError::Io {
                    addr: self.addr.clone(),
                    reason: reason.into(),
                };
                let rx = self.rx.as_mut().ok_or_else(|| io("answer ended early"))?;
                match tokio::time::timeout(self.chunk_timeout, rx.recv()).await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => return Err(io("connection closed mid-answer")),
                    Err(_) => {
                        if let Some(lease) = &self.lease {
                            lease.conn.abandon("the answer stalled");
                        }
                        return Err(UpstreamError::Timeout {
                            addr: self.addr.clone(),
                            timeout: self.chunk_timeout,
                        });
                    }
                }
            }
        };
        self.left = self.left.saturating_sub(chunk.len());
        self.done_if_finished();
        Ok(Some(chunk))
    }

    /// Once all of the answer has arrived, its connection is free for the next request.
    fn done_if_finished(&mut self) {
        if self.left == 0 {
            if let Some(mut lease) = self.lease.take() {
                lease.settle();
            }
        }
    }
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        let (Some(rx), Some(mut lease)) = (self.rx.take(), self.lease.take()) else {
            return;
        };
        // On a shared lane an unread answer holds up nobody. A fetch connection stays busy
        // until its answer arrives: wait for it, then give the connection back.
        if !lease.busy {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // dropping the busy lease closes the connection
        };
        let deadline = self.deadline();
        runtime.spawn(async move {
            if let Ok(Ok(_)) = tokio::time::timeout_at(deadline, rx).await {
                lease.settle();
            }
        });
    }
}

impl Broker {
    pub fn new(addr: impl Into<String>, timeouts: Timeouts) -> Self {
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
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn recent_connect_failure(&self) -> Option<UpstreamError> {
        match &*self.connect_failure.lock().expect("poisoned") {
            Some((at, e)) if at.elapsed() < CONNECT_FAILURE_HOLD => Some(e.clone()),
            _ => None,
        }
    }

    fn record_connect<T>(&self, result: &Result<T, UpstreamError>) {
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
        let result = Connection::open(&self.addr, self.timeouts.connect).await;
        self.record_connect(&result);
        result
    }

    /// A connection of `lane`; on the produce lane, the one `client` keeps to.
    async fn lease(&self, lane: Lane, client: u64) -> Result<Lease, UpstreamError> {
        let slot = match lane {
            Lane::Produce => &self.produce[(client % PRODUCE_CONNECTIONS as u64) as usize],
            Lane::Control => &self.control,
            Lane::Fetch => return self.fetch_lease().await,
        };
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Lease::shared(c.clone()));
        }
        let c = self.open().await?;
        *slot = Some(c.clone());
        Ok(Lease::shared(c))
    }

    async fn fetch_lease(&self) -> Result<Lease, UpstreamError> {
        let (conn, exclusive) = match self.fetch.borrow() {
            Borrowed::Conn(c, exclusive) => (c, exclusive),
            Borrowed::Open => {
                let _slot = Opening(&self.fetch);
                let c = self.open().await?;
                self.fetch.lend_new(&c);
                (c, true)
            }
        };
        Ok(Lease {
            conn,
            fetch: Some(self.fetch.clone()),
            busy: false,
            exclusive,
        })
    }

    /// Queues `body` for this broker. Requests dispatched one after another from one task reach
    /// the broker in that order (fetches excepted: each may take a connection of its own),
    /// which idempotent producers rely on. Returns `None` for requests that expect no answer.
    pub async fn dispatch<M: Encodable + 'static>(
        &self,
        api: ApiKey,
        version: i16,
        body: &M,
        expects_reply: bool,
    ) -> Result<Option<PendingReply>, UpstreamError> {
        self.dispatch_for(0, api, version, body, expects_reply)
            .await
    }

    /// [`Broker::dispatch`] for client connection `client`: its produces all travel on the
    /// same connection, so they reach the broker in the order it dispatched them.
    pub async fn dispatch_for<M: Encodable + 'static>(
        &self,
        client: u64,
        api: ApiKey,
        version: i16,
        body: &M,
        expects_reply: bool,
    ) -> Result<Option<PendingReply>, UpstreamError> {
        let frame = Frame::request(api, version, "tollgate", body)
            .map_err(|e| UpstreamError::Encode(e.to_string()))?;
        let lease = self.lease(Lane::of(api), client).await?;
        self.send(lease, api, version, frame, expects_reply, false)
            .await
    }

    /// [`Broker::dispatch`] for a caller that reads the answer with [`PendingReply::stream`]:
    /// a large answer on a connection of its own is then handed over as it arrives.
    pub async fn dispatch_streamed<M: Encodable + 'static>(
        &self,
        api: ApiKey,
        version: i16,
        body: &M,
    ) -> Result<PendingReply, UpstreamError> {
        let frame = Frame::request(api, version, "tollgate", body)
            .map_err(|e| UpstreamError::Encode(e.to_string()))?;
        let lease = self.lease(Lane::of(api), 0).await?;
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
        Ok(rx.map(|rx| PendingReply {
            addr: self.addr.clone(),
            timeout: self.timeouts.request,
            sent: Instant::now(),
            rx: Some(rx),
            lease: Some(lease),
        }))
    }

    /// Sends a request and waits for its decoded response.
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
        let frame = Frame::request(api, version, "tollgate", req)
            .map_err(|e| UpstreamError::Encode(e.to_string()))?;
        let lease = match conn {
            Some(c) => Lease::shared(c.clone()),
            None => self.lease(Lane::of(api), 0).await?,
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

    async fn api_versions_on(
        &self,
        conn: Option<&Connection>,
    ) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("tollgate"))
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

    /// Asks for ApiVersions on the broker's probe connection (opened if needed), which no
    /// other request uses.
    async fn probe_kept(&self) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        let kept = self.probe_conn.lock().expect("poisoned").clone();
        let conn = match kept.filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.addr, PROBE_CONNECT).await?;
                *self.probe_conn.lock().expect("poisoned") = Some(c.clone());
                c
            }
        };
        self.api_versions_on(Some(&conn)).await
    }

    fn drop_probe_connection(&self) {
        if let Some(c) = self.probe_conn.lock().expect("poisoned").take() {
            c.abandon("probe unanswered");
        }
    }

    /// Asks for ApiVersions on a connection of its own, with short timeouts: whether the broker
    /// answers at all, whatever its lanes are busy with, and however recently a connect failed.
    async fn probe(&self) -> Result<HashMap<i16, (i16, i16)>, UpstreamError> {
        let conn = Connection::open(&self.addr, PROBE_CONNECT).await;
        self.record_connect(&conn);
        let conn = conn?;
        let answer = tokio::time::timeout(PROBE_ANSWER, self.api_versions_on(Some(&conn))).await;
        conn.shared.close("probe done");
        answer.unwrap_or_else(|_| {
            Err(UpstreamError::Timeout {
                addr: self.addr.clone(),
                timeout: PROBE_ANSWER,
            })
        })
    }

    /// How many produce connections are open.
    #[cfg(test)]
    async fn produce_connections(&self) -> usize {
        let mut open = 0;
        for slot in &self.produce {
            open += usize::from(slot.lock().await.as_ref().is_some_and(|c| !c.is_closed()));
        }
        open
    }

    /// How many fetch connections are open (idle or lent).
    #[cfg(test)]
    fn fetch_connections(&self) -> (usize, usize) {
        let mut s = self.fetch.state.lock().expect("poisoned");
        s.idle.retain(|c| !c.is_closed());
        s.lent.retain(|(c, _)| !c.is_closed());
        (s.idle.len(), s.lent.len())
    }
}

/// The pool's brokers, which of them are live, and what they all support. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    members: RwLock<Vec<Member>>,
    /// The intersection over every broker that ever answered, per API key: a request version
    /// we forward must be understood by whichever broker ends up serving it. `None` until one
    /// answers.
    versions: RwLock<Option<HashMap<i16, (i16, i16)>>>,
    generation: AtomicU64,
    timeouts: Timeouts,
}

struct Member {
    broker: Arc<Broker>,
    live: bool,
    /// Its versions are in the intersection.
    answered: bool,
}

impl Pool {
    pub fn new(timeouts: Timeouts) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                members: RwLock::default(),
                versions: RwLock::default(),
                generation: AtomicU64::new(0),
                timeouts,
            }),
        }
    }

    /// Counts a change of membership or liveness; called with `members` locked for writing.
    fn changed(&self) {
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// Adds a broker after learning its API versions, live. Adding a live address again is a
    /// no-op; a registered but down one is asked again, and is live if it answers.
    pub async fn add_broker(&self, addr: &str) -> Result<(), UpstreamError> {
        if self.is_live(addr) {
            return Ok(());
        }
        let broker = self
            .broker(addr)
            .unwrap_or_else(|| Arc::new(Broker::new(addr, self.inner.timeouts)));
        let versions = broker.api_versions().await?;
        self.answered(&broker, &versions, true);
        Ok(())
    }

    /// Registers a broker that may not be reachable yet, down, without asking it anything: no
    /// request is routed to it until the prober ([`Pool::run_prober`]) hears from it.
    /// Registering an address twice is a no-op.
    pub fn add_configured(&self, addr: &str) {
        let mut members = self.inner.members.write().expect("poisoned");
        if members.iter().any(|m| m.broker.addr == addr) {
            return;
        }
        members.push(Member {
            broker: Arc::new(Broker::new(addr, self.inner.timeouts)),
            live: false,
            answered: false,
        });
        self.changed();
        tracing::info!(
            broker = addr,
            "pool broker registered, down until it answers"
        );
    }

    /// Records that `broker` answered ApiVersions: its versions join the intersection the first
    /// time, and it is live. `register` adds it if missing (`add_broker`); otherwise a broker
    /// removed while it was being probed stays removed.
    fn answered(&self, broker: &Arc<Broker>, versions: &HashMap<i16, (i16, i16)>, register: bool) {
        let mut members = self.inner.members.write().expect("poisoned");
        let i = match members.iter().position(|m| m.broker.addr == broker.addr) {
            Some(i) => i,
            None if register => {
                members.push(Member {
                    broker: broker.clone(),
                    live: false,
                    answered: false,
                });
                members.len() - 1
            }
            None => return,
        };
        let member = &mut members[i];
        if !member.answered {
            member.answered = true;
            let mut all = self.inner.versions.write().expect("poisoned");
            match &mut *all {
                None => *all = Some(versions.clone()),
                Some(all) => {
                    all.retain(|k, _| versions.contains_key(k));
                    for (k, (min, max)) in all.iter_mut() {
                        let (bmin, bmax) = versions[k];
                        *min = (*min).max(bmin);
                        *max = (*max).min(bmax);
                    }
                }
            }
        }
        if !member.live {
            member.live = true;
            self.changed();
            tracing::info!(broker = %broker.addr, "pool broker is live");
        }
    }

    /// Records that a request found `addr` unreachable (a connect failed, a connection
    /// dropped): no request is routed to it until the prober hears from it again.
    pub fn mark_down(&self, addr: &str, reason: &str) {
        let mut members = self.inner.members.write().expect("poisoned");
        if let Some(m) = members.iter_mut().find(|m| m.broker.addr == addr && m.live) {
            m.live = false;
            self.changed();
            tracing::warn!(broker = addr, reason, "pool broker is down");
        }
    }

    /// A request to `addr` failed on an open connection (dropped, or no answer in time): asks
    /// the broker at once on a fresh connection, and marks it down only if that fails too.
    /// One check per broker at a time, however many requests failed.
    pub fn suspect(&self, addr: &str) {
        let Some(broker) = self.broker(addr) else {
            return;
        };
        if broker.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            broker.checking.store(false, Ordering::Release);
            return;
        };
        let pool = self.clone();
        runtime.spawn(async move {
            match broker.probe().await {
                Ok(versions) => pool.answered(&broker, &versions, false),
                Err(e) => pool.mark_down(&broker.addr, &e.to_string()),
            }
            broker.checking.store(false, Ordering::Release);
        });
    }

    pub fn remove_broker(&self, addr: &str) {
        let mut members = self.inner.members.write().expect("poisoned");
        let before = members.len();
        members.retain(|m| m.broker.addr != addr);
        if members.len() != before {
            self.changed();
            tracing::info!(broker = addr, "pool broker removed");
        }
    }

    /// The live brokers: the ones to route requests to.
    pub fn brokers(&self) -> Vec<Arc<Broker>> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .filter(|m| m.live)
            .map(|m| m.broker.clone())
            .collect()
    }

    /// Every registered broker, live or down.
    pub fn all_brokers(&self) -> Vec<Arc<Broker>> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .map(|m| m.broker.clone())
            .collect()
    }

    /// The registered broker at `addr`, live or down.
    pub fn broker(&self, addr: &str) -> Option<Arc<Broker>> {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .find(|m| m.broker.addr == addr)
            .map(|m| m.broker.clone())
    }

    pub fn is_live(&self, addr: &str) -> bool {
        self.inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .any(|m| m.broker.addr == addr && m.live)
    }

    /// Changes whenever a broker is added, removed, goes down or comes back: a caller that
    /// cached something about the pool (coordinators, a topic's broker) drops it when this is
    /// not the value it cached under.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The versions of `api` every pool broker that ever answered supports.
    pub fn versions(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.inner
            .versions
            .read()
            .expect("poisoned")
            .as_ref()?
            .get(&(api as i16))
            .copied()
            .filter(|(min, max)| min <= max)
    }

    /// Watches every registered broker until `stop` completes. Every `interval`:
    ///
    /// - a down broker is asked for ApiVersions on a connection of its own (1 s to connect);
    ///   when it answers it is live again.
    /// - a live broker is asked for ApiVersions on its probe connection, which carries nothing
    ///   else, so no tenant's request can delay it. If that answer does not come, a fresh
    ///   connection decides, and the broker is down if that fails too. A broker that died
    ///   while no request touched it is noticed within about one interval.
    pub async fn run_prober(self, interval: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = self.probe_all(interval) => {}
            }
        }
    }

    async fn probe_all(&self, interval: Duration) {
        let members: Vec<(Arc<Broker>, bool)> = self
            .inner
            .members
            .read()
            .expect("poisoned")
            .iter()
            .map(|m| (m.broker.clone(), m.live))
            .collect();
        // Dropping the set (when `stop` completes mid-round) aborts the probes.
        let mut probes = tokio::task::JoinSet::new();
        for (broker, live) in members {
            let pool = self.clone();
            probes.spawn(async move { pool.probe(&broker, live, interval).await });
        }
        while probes.join_next().await.is_some() {}
    }

    async fn probe(&self, broker: &Arc<Broker>, live: bool, interval: Duration) {
        if live {
            // On the broker's probe connection, which carries nothing but probes: tenants'
            // requests (long polls, held JoinGroups) can never queue a probe behind them.
            let wait = interval.max(PROBE_ANSWER);
            if let Ok(Ok(_)) = tokio::time::timeout(wait, broker.probe_kept()).await {
                return;
            }
            broker.drop_probe_connection();
        }
        match broker.probe().await {
            Ok(versions) => self.answered(broker, &versions, false),
            Err(e) => self.mark_down(&broker.addr, &e.to_string()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Against real tansu brokers (memory engine), as the integration tests are: the pool is
    //! never mocked. tansu comes from `TOLLGATE_TANSU` or `tansu` on PATH.

    use super::*;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
        MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
    };
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Fetch by topic name (v13 names topics by id).
    const FETCH: i16 = 12;
    const PRODUCE: i16 = 9;
    const METADATA: i16 = 12;
    const CREATE_TOPICS: i16 = 5;

    fn free_port() -> u16 {
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

        async fn start_on(port: u16) -> Tansu {
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

        async fn kill(mut self) {
            self.child.kill().await.expect("tansu killed");
        }
    }

    /// Waits for `cond`, giving up (failing the test) after 15 s.
    async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
        for _ in 0..150 {
            if cond().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: not within 15 s");
    }

    async fn live_broker(tansu: &Tansu) -> (Pool, Arc<Broker>) {
        let pool = Pool::new(Timeouts::default());
        pool.add_broker(&tansu.addr).await.expect("tansu answers");
        let broker = pool.broker(&tansu.addr).expect("added");
        (pool, broker)
    }

    fn name(topic: &str) -> TopicName {
        TopicName(StrBytes::from_string(topic.into()))
    }

    async fn create_topic(broker: &Broker, topic: &str) {
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
    fn fetch_request(topic: &str, max_wait_ms: i32) -> FetchRequest {
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

    async fn fetch(broker: &Broker, topic: &str, max_wait_ms: i32) -> PendingReply {
        let req = fetch_request(topic, max_wait_ms);
        let pending = broker.dispatch(ApiKey::Fetch, FETCH, &req, true).await;
        pending.expect("fetch sent").expect("a reply")
    }

    /// The fetched partition's error code, and whether it returned records.
    fn fetched(resp: &FetchResponse) -> (i16, bool) {
        let p = &resp.responses[0].partitions[0];
        let records = p.records.as_ref().is_some_and(|r| !r.is_empty());
        (p.error_code, records)
    }

    async fn produce(broker: &Broker, topic: &str) -> i16 {
        produce_values(broker, topic, &[Bytes::from_static(b"hello")]).await
    }

    /// Produces one batch of records with these values; the partition's error code.
    async fn produce_values(broker: &Broker, topic: &str, values: &[Bytes]) -> i16 {
        produce_for(broker, 0, topic, values).await
    }

    /// [`produce_values`] for client connection `client`.
    async fn produce_for(broker: &Broker, client: u64, topic: &str, values: &[Bytes]) -> i16 {
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
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.freeze()))])]);
        let pending = broker.dispatch_for(client, ApiKey::Produce, PRODUCE, &req, true);
        let pending = pending.await.unwrap().expect("a reply");
        let resp: ProduceResponse = pending.decode(PRODUCE).await.unwrap();
        resp.responses[0].partition_responses[0].error_code
    }

    #[tokio::test]
    async fn long_polling_fetches_hold_up_no_other_request() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "quiet").await;
        create_topic(&broker, "busy").await;

        let first = fetch(&broker, "quiet", 2000).await;
        let second = fetch(&broker, "quiet", 2000).await;
        assert_eq!(
            broker.fetch_connections(),
            (0, 2),
            "a connection per long poll"
        );
        let first = tokio::spawn(first.decode::<FetchResponse>(FETCH));
        let second = tokio::spawn(second.decode::<FetchResponse>(FETCH));

        // Sharing a connection with either long poll, these would wait for it to end.
        let quick: FetchResponse = fetch(&broker, "quiet", 0)
            .await
            .decode(FETCH)
            .await
            .unwrap();
        assert_eq!(produce(&broker, "busy").await, 0);
        let metadata: MetadataResponse = broker
            .call(METADATA, &MetadataRequest::default())
            .await
            .unwrap();
        assert!(
            !first.is_finished() && !second.is_finished(),
            "the long polls are still waiting"
        );
        assert_eq!(fetched(&quick), (0, false));
        assert_eq!(metadata.brokers.len(), 1);

        for long in [first, second] {
            let resp = long.await.unwrap().expect("the long poll ends empty");
            assert_eq!(fetched(&resp), (0, false));
        }
        // Given back, not closed: the next fetches reuse them.
        assert_eq!(broker.fetch_connections(), (3, 0));
        let again: FetchResponse = fetch(&broker, "busy", 0).await.decode(FETCH).await.unwrap();
        assert_eq!(fetched(&again), (0, true));
        assert_eq!(broker.fetch_connections(), (3, 0));
    }

    #[tokio::test]
    async fn a_dropped_fetch_gives_its_connection_back_once_answered() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "quiet").await;

        drop(fetch(&broker, "quiet", 500).await);
        // Not idle while the broker still owes the answer: a fetch lent it would queue.
        assert_eq!(broker.fetch_connections(), (0, 1));
        eventually("the connection is idle again", || async {
            broker.fetch_connections() == (1, 0)
        })
        .await;
    }

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

    #[tokio::test]
    async fn a_large_answer_streams_and_holds_its_connection_until_the_last_chunk() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "big").await;
        // Larger than a chunk can be, so it comes in several.
        let value = Bytes::from(vec![b'v'; 400_000]);
        let values = [value.clone(), value.clone(), value];
        assert_eq!(produce_values(&broker, "big", &values).await, 0);
        let req = fetch_request("big", 0);

        let pending = broker.dispatch_streamed(ApiKey::Fetch, FETCH, &req).await;
        let mut stream = pending.unwrap().stream().await.unwrap();
        assert!(
            stream.len() > STREAM_MIN,
            "a large answer: {}",
            stream.len()
        );
        let mut body = bytes::BytesMut::new();
        let mut chunks = 0;
        while let Some(chunk) = stream.next().await.unwrap() {
            if chunks == 0 {
                assert_eq!(broker.fetch_connections(), (0, 1), "busy mid-answer");
            }
            chunks += 1;
            body.extend_from_slice(&chunk);
        }
        assert!(chunks > 1, "the answer came in {chunks} chunk(s)");
        assert_eq!(broker.fetch_connections(), (1, 0), "free after the last");
        let resp = FetchResponse::decode(&mut body.freeze(), FETCH).unwrap();
        let records = resp.responses[0].partitions[0].records.as_ref().unwrap();
        assert!(
            records.len() > 1_200_000,
            "all three records: {}",
            records.len()
        );

        // Given up on midway: the rest would hold up the connection's next fetch, so it goes.
        let pending = broker.dispatch_streamed(ApiKey::Fetch, FETCH, &req).await;
        let mut stream = pending.unwrap().stream().await.unwrap();
        stream.next().await.unwrap().expect("a first chunk");
        assert!(!stream.is_done());
        drop(stream);
        eventually("the half-read connection is closed", || async {
            broker.fetch_connections() == (0, 0)
        })
        .await;
        let again: FetchResponse = fetch(&broker, "big", 0).await.decode(FETCH).await.unwrap();
        assert_eq!(
            fetched(&again),
            (0, true),
            "the next fetch gets a fresh connection"
        );
    }

    #[tokio::test]
    async fn a_fetch_past_its_timeout_closes_its_connection() {
        let tansu = Tansu::start().await;
        let (_pool, broker) = live_broker(&tansu).await;
        create_topic(&broker, "quiet").await;

        let late = fetch(&broker, "quiet", 3000)
            .await
            .with_timeout(Duration::from_millis(300))
            .decode::<FetchResponse>(FETCH)
            .await
            .unwrap_err();
        assert!(matches!(late, UpstreamError::Timeout { .. }), "{late}");
        assert!(!late.nothing_sent());
        assert_eq!(broker.fetch_connections(), (0, 0), "closed, not given back");

        let resp: FetchResponse = fetch(&broker, "quiet", 0)
            .await
            .decode(FETCH)
            .await
            .unwrap();
        assert_eq!(fetched(&resp), (0, false));
        assert_eq!(broker.fetch_connections(), (1, 0), "on a new connection");
    }

    #[tokio::test]
    async fn the_prober_follows_a_broker_up_and_down() {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let pool = Pool::new(Timeouts::default());
        pool.add_configured(&addr);
        assert!(!pool.is_live(&addr));
        assert!(pool.brokers().is_empty());
        assert_eq!(pool.all_brokers().len(), 1);

        let (stop, stopped) = oneshot::channel::<()>();
        let prober = tokio::spawn(pool.clone().run_prober(Duration::from_millis(200), async {
            let _ = stopped.await;
        }));
        // A few rounds find nothing listening.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!pool.is_live(&addr));
        assert_eq!(pool.versions(ApiKey::Fetch), None, "nobody answered yet");

        let before = pool.generation();
        let tansu = Tansu::start_on(port).await;
        eventually("the prober finds the broker", || async {
            pool.is_live(&addr)
        })
        .await;
        assert!(pool.generation() > before);
        assert_eq!(pool.brokers().len(), 1);
        assert!(pool.versions(ApiKey::Fetch).is_some());

        // Nothing but the prober talks to it: the prober alone notices it is gone.
        let before = pool.generation();
        tansu.kill().await;
        eventually("the prober finds the broker gone", || async {
            !pool.is_live(&addr)
        })
        .await;
        assert!(pool.generation() > before);
        assert!(pool.brokers().is_empty());
        assert_eq!(pool.all_brokers().len(), 1);

        stop.send(()).unwrap();
        prober.await.unwrap();
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
        let metadata = || broker.dispatch(ApiKey::Metadata, METADATA, &req, true);
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
            .dispatch(ApiKey::Metadata, METADATA, &req, true)
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
            .dispatch(ApiKey::Metadata, METADATA, &req, true)
            .await
            .err()
            .expect("not tried");
        assert_eq!(again.to_string(), refused.to_string());
        let again = broker
            .dispatch(ApiKey::Fetch, FETCH, &fetch_request("t", 0), true)
            .await
            .err()
            .expect("not tried");
        assert_eq!(again.to_string(), refused.to_string());

        tokio::time::sleep(CONNECT_FAILURE_HOLD).await;
        assert!(broker
            .dispatch(ApiKey::Metadata, METADATA, &req, true)
            .await
            .is_ok());
    }
}
