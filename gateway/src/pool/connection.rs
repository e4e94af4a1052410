//! One multiplexed connection to a pool broker.
//!
//! Requests from any number of callers are written in the order they are queued, each under a
//! correlation id of the gateway's own, and the replies are matched back by that id. A writer
//! task and a reader task own the socket's halves. Whatever closes the connection first (a
//! failed write or read, the broker closing it, a request on it timing out) fails every request
//! still waiting on it: a broker that stopped answering one request would hold every later one.
//!
//! The reader hands a large answer to a caller that asked for it as it arrives
//! ([`Arrival::Streaming`]), in chunks, rather than whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::error::UpstreamError;
use super::security::{PoolSecurity, PoolStream};
use crate::frame::{Frame, FrameReader};

/// The largest response we accept from the pool: a fetch can legitimately be large.
const MAX_RESPONSE_FRAME: usize = 256 * 1024 * 1024;
/// Read buffer kept between a pool connection's answers (see [`FrameReader`]): fetch answers
/// of a few MB reuse one buffer.
const UPSTREAM_READ_RETAIN: usize = 16 * 1024 * 1024;
/// Requests waiting for a broker connection's writer; bounds memory when a broker is slow.
const OUTBOUND_QUEUE: usize = 1024;
/// Answers at least this large are streamed to callers that asked
/// ([`Broker::dispatch_streamed`](super::Broker::dispatch_streamed)): below it, waiting for the
/// whole answer costs less than the hand-offs.
pub(super) const STREAM_MIN: usize = 64 * 1024;
/// How much of a streamed answer is read before its header must have been seen.
const HEADER_PEEK: usize = 4096;
/// Chunks of a streamed answer read ahead of its caller.
const STREAM_CHUNKS: usize = 16;
/// The least a chunk of a streamed answer holds (unless the answer ends sooner): each chunk
/// costs a hand-off between tasks and a write, so a few socket reads make one.
const STREAM_CHUNK: usize = 256 * 1024;
/// The most a chunk holds: what a slow reader makes wait, in [`STREAM_CHUNKS`] of them.
const STREAM_CHUNK_MAX: usize = 1024 * 1024;

/// How an answer reaches its caller: whole, or (a large one, for a caller that asked) as it
/// arrives, so the gateway can pass it on while the broker is still sending it.
pub(super) enum Arrival {
    Whole(Bytes),
    /// `len` bytes of body (the response header already read), in chunks.
    Streaming {
        len: usize,
        rx: mpsc::Receiver<Bytes>,
    },
}

pub(super) type ReplyTx = oneshot::Sender<Result<Arrival, UpstreamError>>;

/// A request waiting to be written to one broker.
pub(super) struct Outbound {
    pub(super) frame: Frame,
    pub(super) api: ApiKey,
    pub(super) version: i16,
    /// `None` for requests that get no response (produce with acks=0).
    pub(super) reply: Option<ReplyTx>,
    /// The caller takes a large answer as a stream.
    pub(super) stream: bool,
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
pub(super) struct Connection {
    pub(super) tx: mpsc::Sender<Outbound>,
    shared: Arc<Shared>,
}

impl Connection {
    pub(super) async fn open(
        addr: &str,
        connect_timeout: Duration,
        security: &PoolSecurity,
    ) -> Result<Self, UpstreamError> {
        match security.connect(addr, connect_timeout).await? {
            // The plaintext halves need no lock between them; TLS's share one session.
            PoolStream::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                Ok(Self::run(addr, read, write))
            }
            PoolStream::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                Ok(Self::run(addr, read, write))
            }
        }
    }

    fn run<R, W>(addr: &str, read: R, write: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
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
        Connection { tx, shared }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.shared.is_dead()
    }

    pub(super) fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Closes the connection because a request on it got no answer in time.
    pub(super) fn abandon(&self, reason: &str) {
        let failed = self.shared.close(reason);
        tracing::warn!(broker = %self.shared.addr, reason, failed, "closing pool connection");
    }

    /// Closes the connection, which its owner is done with.
    pub(super) fn close(&self, reason: &str) {
        self.shared.close(reason);
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    write: W,
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

async fn read_loop<R: AsyncRead + Unpin>(read: R, shared: Arc<Shared>) {
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
async fn read_answers<R: AsyncRead + Unpin>(read: R, shared: &Shared) -> Result<(), String> {
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
