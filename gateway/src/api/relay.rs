//! Fetch answers passed on to the client while they arrive from the pool (cut-through).
//!
//! A fetch answer of a few MB takes as long to arrive from the pool as to go out to the client,
//! so buffering it whole before writing it doubles the time a consumer waits for each fetch
//! (strace of a consume run: an 8.3 MB answer ~8 ms in, then ~9 ms out). [`Relay`] rewrites
//! the answer as it streams: it reads the fields around the records, rewrites what tenancy
//! requires, exactly as the buffered path in [`super::fetch`] does (topic names back to the
//! tenant's, no fetch session, no preferred read replica, no leader hints or tags we do not
//! know), and forwards record bytes as they come, without copying them.
//!
//! A Kafka frame starts with its length, so the rewritten answer's length must be known before
//! its first byte goes out, while some of what the rewriting removes is only seen at the end:
//!
//! - Before v12 an answer has no tagged fields and every rewrite keeps its field's size except
//!   the topic names, and every topic is the cluster's, so each name loses exactly the
//!   cluster's prefix: the topic count, near the start, gives the exact length.
//! - From v12 tags are stripped and a name's length varint may shrink. The answer is declared
//!   at the length it has with nothing stripped (less the prefixes), and what stripping saved
//!   is made up at the very end, in the top-level tagged fields: with a non-minimal varint
//!   count of zero when up to 5 bytes are missing, else with one tagged field the message does
//!   not define ([`PAD_TAG`]) holding zeros, which every client skips, as KIP-482 requires of
//!   unknown tags. In the usual answer nothing is stripped and the end is the plain empty tag
//!   list.
//!
//! What the relay cannot follow (an answer for a topic not asked for, a malformed answer, a
//! pool connection lost midway) ends the client's connection: once the length is written,
//! nothing else can be said, and clients retry on a new connection.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use super::split::leader_moved;
use crate::frame::Frame;
use crate::pool::{BodyStream, UpstreamError};
use crate::quotas::meter::PartitionKey;
use crate::telemetry::metrics::ClusterMetrics;

/// The tag of the padding field: far above any tag Kafka's FetchResponse defines (0, for node
/// endpoints), and two bytes as a varint.
pub const PAD_TAG: u32 = 0x3fff;

/// Why a relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Pool(#[from] UpstreamError),
    #[error("writing to the client: {0}")]
    Write(#[from] std::io::Error),
}

/// A pool's fetch answer on its way to a client.
pub struct Relay {
    pub version: i16,
    pub body: BodyStream,
    /// The broker's address, for errors.
    pub addr: String,
    /// The cluster's prefix of pool topic names.
    pub prefix: String,
    /// (pool name, topic id) of every topic the fetch asked for.
    pub forwarded: Vec<(String, Uuid)>,
    /// Told what went through, once all of it has.
    pub done: Box<dyn FnOnce(Relayed) + Send>,
    /// The least `throttle_time_ms` the client is told (its cluster's quotas); the pool's is
    /// kept when longer.
    pub throttle_time_ms: i32,
    /// Whether [`Relayed::partitions`] is wanted (a partition egress quota is set).
    pub per_partition: bool,
    /// The cluster's metrics, counted into while the answer streams through (bytes out per
    /// topic, each partition's high watermark); `None` with metrics off.
    pub metrics: Option<Arc<ClusterMetrics>>,
}

/// What a relayed answer carried.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Pool names of topics with partitions answered with an error saying their leader moved.
    pub moved: Vec<String>,
    /// Bytes of complete record batches: what the client was sent to consume.
    pub delivered: u64,
    /// Those bytes by partition, as the tenant names it, if asked for and not zero.
    pub partitions: Vec<(PartitionKey, u64)>,
}

impl Relay {
    /// Writes the rewritten answer to `w` under `correlation_id`. The caller flushes.
    pub async fn write_to<W: AsyncWrite + Unpin>(
        self,
        w: &mut W,
        correlation_id: i32,
    ) -> Result<(), RelayError> {
        let Relay {
            version,
            body,
            addr,
            prefix,
            forwarded,
            done,
            throttle_time_ms: throttled,
            per_partition,
            metrics,
        } = self;
        let malformed = |reason: &str| UpstreamError::Decode {
            addr: addr.clone(),
            reason: format!("FetchResponse v{version}: {reason}"),
        };
        let flexible = version >= 12;
        let by_id = version >= 13;
        let body_len = body.len();
        let mut input = Input::new(body, &malformed);
        let mut out = Output::new(w);

        let throttle_time_ms = input.i32().await?;
        let error_code = if version >= 7 {
            let code = input.i16().await?;
            input.i32().await?; // session id: none is ever made
            code
        } else {
            0
        };
        let topics = input.array_len(flexible).await?;
        let names_shrink = if by_id { 0 } else { topics * prefix.len() };
        let header_len = if flexible { 5 } else { 4 };
        let frame_len = body_len
            .checked_sub(names_shrink)
            .map(|l| l + header_len)
            .filter(|&l| l <= i32::MAX as usize)
            .ok_or_else(|| malformed("more topics than bytes"))?;
        out.put_i32(frame_len as i32);
        out.put_i32(correlation_id);
        if flexible {
            out.put_u8(0);
        }
        out.put_i32(throttle_time_ms.max(throttled));
        if version >= 7 {
            out.put_i16(error_code);
            out.put_i32(0);
        }
        out.put_nullable_len(Some(topics), flexible);

        let mut moved: Vec<String> = Vec::new();
        let mut delivered = 0u64;
        let mut by_partition = Vec::new();
        for _ in 0..topics {
            let mut tenant_topic = (TopicName::default(), Uuid::nil());
            let physical = if by_id {
                let id = Uuid::from_slice(&input.bytes(16).await?).expect("16 bytes");
                let Some((name, _)) = forwarded.iter().find(|(_, i)| *i == id) else {
                    return Err(malformed("an answer for a topic not asked for").into());
                };
                out.put_slice(id.as_bytes());
                tenant_topic.1 = id;
                name.clone()
            } else {
                let name = input.string(flexible).await?;
                let tenant = std::str::from_utf8(&name)
                    .ok()
                    .filter(|n| forwarded.iter().any(|(f, _)| f == n))
                    .and_then(|n| n.strip_prefix(prefix.as_str()))
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| malformed("an answer for a topic not asked for"))?;
                out.put_string(tenant, flexible);
                if per_partition {
                    tenant_topic.0 = TopicName(StrBytes::from_string(tenant.to_owned()));
                }
                String::from_utf8_lossy(&name).into_owned()
            };
            let counters = metrics.as_ref().map(|m| m.topic(&physical));
            let partitions = input.array_len(flexible).await?;
            out.put_nullable_len(Some(partitions), flexible);
            for _ in 0..partitions {
                let index = input.i32().await?;
                out.put_i32(index);
                let error_code = input.i16().await?;
                out.put_i16(error_code);
                if leader_moved(error_code) && !moved.contains(&physical) {
                    moved.push(physical.clone());
                }
                // High watermark, last stable offset, log start offset (v5+).
                let offsets = if version >= 5 { 24 } else { 16 };
                let offsets = input.bytes(offsets).await?;
                if let Some(counters) = counters.as_ref().filter(|_| error_code == 0) {
                    let mark = i64::from_be_bytes(offsets[..8].try_into().expect("8 bytes"));
                    counters.high_watermark(index, mark);
                }
                out.put_slice(&offsets);
                let aborted = input.nullable_len(flexible).await?;
                out.put_nullable_len(aborted, flexible);
                for _ in 0..aborted.unwrap_or(0) {
                    out.put_slice(&input.bytes(16).await?); // producer id, first offset
                    if flexible {
                        input.skip_tags().await?;
                        out.put_u8(0);
                    }
                }
                if version >= 11 {
                    input.i32().await?;
                    out.put_i32(-1); // preferred read replica: a pool broker id
                }
                let records = input.nullable_len(flexible).await?;
                out.put_nullable_len(records, flexible);
                if let Some(n) = records {
                    let mut walk = BatchWalk::new(n);
                    input
                        .forward(n, &mut out, |at, piece| walk.feed(at, piece))
                        .await?;
                    delivered += walk.complete;
                    if let Some(counters) = &counters {
                        counters.consumed(walk.complete);
                    }
                    if per_partition && walk.complete > 0 {
                        let (name, id) = &tenant_topic;
                        by_partition.push(((name.clone(), *id, index), walk.complete));
                    }
                }
                if flexible {
                    // DivergingEpoch (0) and SnapshotId (2) say where the log stands and are
                    // kept; CurrentLeader (1, KIP-951) names a pool broker, and tags we do
                    // not know may: both are dropped.
                    let count = input.uvarint().await?;
                    let mut kept = Vec::new();
                    for _ in 0..count {
                        let tag = input.uvarint().await?;
                        let size = input.uvarint().await? as usize;
                        let data = input.bytes(size).await?;
                        if tag == 0 || tag == 2 {
                            kept.push((tag, data));
                        }
                    }
                    out.put_uvarint(kept.len() as u32);
                    for (tag, data) in kept {
                        out.put_uvarint(tag);
                        out.put_uvarint(data.len() as u32);
                        out.put_slice(&data);
                    }
                }
            }
            if flexible {
                input.skip_tags().await?;
                out.put_u8(0);
            }
        }
        if flexible {
            // Node endpoints (v16+) name pool brokers; unknown tags may.
            input.skip_tags().await?;
            let missing = (4 + frame_len)
                .checked_sub(out.written + out.buffered())
                .filter(|&m| m >= 1)
                .ok_or_else(|| malformed("rewritten answer outgrew its length"))?;
            put_padding(&mut out.pending, missing);
        }
        if !input.at_end() {
            return Err(malformed("bytes after the answer").into());
        }
        out.flush().await?;
        if out.written != 4 + frame_len {
            return Err(malformed("rewritten answer does not match its length").into());
        }
        done(Relayed {
            moved,
            delivered,
            partitions: by_partition,
        });
        Ok(())
    }
}

/// Closes a top-level tag list `missing` bytes long (at least 1) that carries nothing a client
/// will read.
fn put_padding(buf: &mut BytesMut, missing: usize) {
    if missing <= 5 {
        put_uvarint_in(buf, 0, missing);
        return;
    }
    // One field: count (1 byte), tag (2), size varint (`n` bytes), `size` zeros.
    let rest = missing - 3;
    let (n, size) = (1..=5)
        .map(|n| (n, rest - n))
        .find(|&(n, size)| uvarint_len(size as u32) <= n)
        .expect("a size varint of 5 bytes fits any size");
    buf.put_u8(1);
    put_uvarint_in(buf, PAD_TAG, 2);
    put_uvarint_in(buf, size as u32, n);
    buf.put_bytes(0, size);
}

fn uvarint_len(v: u32) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5,
    }
}

/// `v` as an unsigned varint of exactly `len` bytes (non-minimal when `len` is more than it
/// needs: continuation bits over zero groups, which decoders read as the same value).
fn put_uvarint_in(buf: &mut BytesMut, mut v: u32, len: usize) {
    debug_assert!(len >= uvarint_len(v) && len <= 5);
    for i in 0..len {
        let group = (v & 0x7f) as u8;
        v >>= 7;
        buf.put_u8(if i + 1 < len { group | 0x80 } else { group });
    }
}

/// Walks the record batch headers of one partition's records as they stream past, counting
/// the bytes of complete batches: what [`crate::records::complete_batch_bytes`] counts of the
/// same bytes whole.
struct BatchWalk {
    /// Length of the records.
    total: usize,
    /// Where the next batch starts.
    next: usize,
    /// The next batch's length field, as far as it has been seen.
    length: [u8; 4],
    have: usize,
    done: bool,
    complete: u64,
}

/// Where a v2 batch's length field starts, and how much of the batch it does not count.
const LENGTH_AT: usize = 8;
const BATCH_OVERHEAD: usize = 12;

impl BatchWalk {
    fn new(total: usize) -> Self {
        BatchWalk {
            total,
            next: 0,
            length: [0; 4],
            have: 0,
            done: false,
            complete: 0,
        }
    }

    /// Takes the records' bytes `at..at + piece.len()`; pieces come in order.
    fn feed(&mut self, at: usize, piece: &[u8]) {
        let end = at + piece.len();
        while !self.done {
            if self.total - self.next < BATCH_OVERHEAD {
                self.done = true;
                break;
            }
            let wanted = self.next + LENGTH_AT + self.have;
            if wanted >= end {
                break;
            }
            let from = wanted - at;
            let take = (4 - self.have).min(piece.len() - from);
            self.length[self.have..self.have + take].copy_from_slice(&piece[from..from + take]);
            self.have += take;
            if self.have < 4 {
                break;
            }
            self.have = 0;
            let size = usize::try_from(i32::from_be_bytes(self.length))
                .ok()
                .and_then(|l| l.checked_add(BATCH_OVERHEAD))
                .filter(|&s| s <= self.total - self.next);
            match size {
                Some(size) => {
                    self.complete += size as u64;
                    self.next += size;
                }
                // A truncated last batch (or nonsense): clients stop here too.
                None => self.done = true,
            }
        }
    }
}

/// The pool's answer, read field by field across the chunks it arrives in.
struct Input<'a> {
    body: BodyStream,
    cur: Bytes,
    malformed: &'a (dyn Fn(&str) -> UpstreamError + Sync),
}

impl<'a> Input<'a> {
    fn new(body: BodyStream, malformed: &'a (dyn Fn(&str) -> UpstreamError + Sync)) -> Self {
        Input {
            body,
            cur: Bytes::new(),
            malformed,
        }
    }

    async fn more(&mut self) -> Result<(), UpstreamError> {
        match self.body.next().await? {
            Some(chunk) => {
                self.cur = chunk;
                Ok(())
            }
            None => Err((self.malformed)("answer ends early")),
        }
    }

    fn at_end(&self) -> bool {
        self.cur.is_empty() && self.body.is_done()
    }

    /// The next `n` bytes, in one piece (copied only when they straddle chunks).
    async fn bytes(&mut self, n: usize) -> Result<Bytes, UpstreamError> {
        if self.cur.len() >= n {
            return Ok(self.cur.split_to(n));
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            if self.cur.is_empty() {
                self.more().await?;
            }
            let take = (n - out.len()).min(self.cur.len());
            out.extend_from_slice(&self.cur.split_to(take));
        }
        Ok(out.freeze())
    }

    async fn u8(&mut self) -> Result<u8, UpstreamError> {
        if self.cur.is_empty() {
            self.more().await?;
        }
        Ok(self.cur.get_u8())
    }

    async fn i16(&mut self) -> Result<i16, UpstreamError> {
        Ok(self.bytes(2).await?.get_i16())
    }

    async fn i32(&mut self) -> Result<i32, UpstreamError> {
        Ok(self.bytes(4).await?.get_i32())
    }

    async fn uvarint(&mut self) -> Result<u32, UpstreamError> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.u8().await?;
            value |= u32::from(byte & 0x7f)
                .checked_shl(shift)
                .ok_or_else(|| (self.malformed)("varint too long"))?;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err((self.malformed)("varint too long"))
    }

    /// A nullable array's (or bytes') length: `i32` with -1 for null, or from v12 a varint of
    /// length + 1 with 0 for null.
    async fn nullable_len(&mut self, flexible: bool) -> Result<Option<usize>, UpstreamError> {
        if flexible {
            let n = self.uvarint().await?;
            Ok(n.checked_sub(1).map(|n| n as usize))
        } else {
            let n = self.i32().await?;
            match n {
                -1 => Ok(None),
                n if n < 0 => Err((self.malformed)("negative length")),
                n => Ok(Some(n as usize)),
            }
        }
    }

    async fn array_len(&mut self, flexible: bool) -> Result<usize, UpstreamError> {
        self.nullable_len(flexible)
            .await?
            .ok_or_else(|| (self.malformed)("null array"))
    }

    async fn string(&mut self, flexible: bool) -> Result<Bytes, UpstreamError> {
        let len = if flexible {
            self.array_len(true).await?
        } else {
            usize::try_from(self.i16().await?).map_err(|_| (self.malformed)("null name"))?
        };
        self.bytes(len).await
    }

    async fn skip_tags(&mut self) -> Result<(), UpstreamError> {
        let count = self.uvarint().await?;
        for _ in 0..count {
            self.uvarint().await?;
            let size = self.uvarint().await? as usize;
            self.skip(size).await?;
        }
        Ok(())
    }

    async fn skip(&mut self, mut n: usize) -> Result<(), UpstreamError> {
        while n > 0 {
            if self.cur.is_empty() {
                self.more().await?;
            }
            let take = n.min(self.cur.len());
            self.cur.advance(take);
            n -= take;
        }
        Ok(())
    }

    /// Passes the next `n` bytes to `out` as they arrive, showing each piece to `seen` with its
    /// offset.
    async fn forward<W: AsyncWrite + Unpin>(
        &mut self,
        n: usize,
        out: &mut Output<'_, W>,
        mut seen: impl FnMut(usize, &[u8]),
    ) -> Result<(), RelayError> {
        let mut at = 0;
        while at < n {
            if self.cur.is_empty() {
                // Out goes what is here before waiting for more: the client's copy overlaps
                // the pool's.
                out.flush().await?;
                self.more().await?;
            }
            let piece = self.cur.split_to((n - at).min(self.cur.len()));
            seen(at, &piece);
            at += piece.len();
            out.put_run(piece).await?;
        }
        Ok(())
    }
}

/// The client's side: small fields gather in `pending`; record runs are kept by reference, and
/// everything is written with vectored writes ([`Frame::from_runs`]) when the input has to
/// wait, or [`FLUSH_AT`] bytes have gathered, so records are never copied in user space.
struct Output<'a, W> {
    w: &'a mut W,
    pending: BytesMut,
    runs: Vec<Bytes>,
    /// Bytes in `runs`.
    held: usize,
    /// Bytes handed to `w`.
    written: usize,
}

/// Record runs shorter than this are copied into `pending` rather than kept as runs of their
/// own: an iovec costs more than a small copy.
const RUN_MIN: usize = 1024;
/// Held output past which it is written without waiting for the input to run dry.
const FLUSH_AT: usize = 1024 * 1024;

impl<'a, W: AsyncWrite + Unpin> Output<'a, W> {
    fn new(w: &'a mut W) -> Self {
        Output {
            w,
            pending: BytesMut::with_capacity(256),
            runs: Vec::new(),
            held: 0,
            written: 0,
        }
    }

    /// Bytes taken and not yet written.
    fn buffered(&self) -> usize {
        self.held + self.pending.len()
    }

    fn put_u8(&mut self, v: u8) {
        self.pending.put_u8(v);
    }

    fn put_i16(&mut self, v: i16) {
        self.pending.put_i16(v);
    }

    fn put_i32(&mut self, v: i32) {
        self.pending.put_i32(v);
    }

    fn put_slice(&mut self, b: &[u8]) {
        self.pending.put_slice(b);
    }

    fn put_uvarint(&mut self, v: u32) {
        put_uvarint_in(&mut self.pending, v, uvarint_len(v));
    }

    /// An array's or a byte field's length (Kafka encodes both alike); `None` is null.
    fn put_nullable_len(&mut self, n: Option<usize>, flexible: bool) {
        match (n, flexible) {
            (Some(n), true) => self.put_uvarint(n as u32 + 1),
            (None, true) => self.put_u8(0),
            (Some(n), false) => self.put_i32(n as i32),
            (None, false) => self.put_i32(-1),
        }
    }

    fn put_string(&mut self, s: &str, flexible: bool) {
        if flexible {
            self.put_uvarint(s.len() as u32 + 1);
        } else {
            self.put_i16(s.len() as i16);
        }
        self.put_slice(s.as_bytes());
    }

    fn seal_pending(&mut self) {
        if !self.pending.is_empty() {
            let small = self.pending.split().freeze();
            self.held += small.len();
            self.runs.push(small);
        }
    }

    async fn put_run(&mut self, run: Bytes) -> std::io::Result<()> {
        if run.len() < RUN_MIN {
            self.pending.put_slice(&run);
        } else {
            self.seal_pending();
            self.held += run.len();
            self.runs.push(run);
        }
        if self.buffered() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.seal_pending();
        if self.runs.is_empty() {
            return Ok(());
        }
        let mut frame = Frame::from_runs(std::mem::take(&mut self.runs));
        self.w.write_all_buf(&mut frame).await?;
        self.written += self.held;
        self.held = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::complete_batch_bytes;

    fn batches(sizes: &[usize], truncate: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for &size in sizes {
            let mut b = vec![7u8; size];
            b[LENGTH_AT..LENGTH_AT + 4]
                .copy_from_slice(&((size - BATCH_OVERHEAD) as i32).to_be_bytes());
            out.extend_from_slice(&b);
        }
        out.truncate(out.len() - truncate);
        out
    }

    #[test]
    fn the_batch_walk_counts_what_the_whole_count_counts_however_the_bytes_are_cut() {
        let cases = [
            batches(&[100, 61, 5000, 70], 0),
            batches(&[100, 61, 5000, 70], 30),
            batches(&[100, 61, 5000, 70], 66),
            batches(&[12, 12, 13], 0),
            vec![1, 2, 3],
            vec![0xff; 40],
            Vec::new(),
        ];
        for records in &cases {
            let whole = complete_batch_bytes(records);
            for cut in [1, 2, 3, 5, 9, 11, 64, 4096, usize::MAX] {
                let mut walk = BatchWalk::new(records.len());
                for (i, piece) in records.chunks(cut.min(records.len().max(1))).enumerate() {
                    walk.feed(i * cut.min(records.len().max(1)), piece);
                }
                assert_eq!(walk.complete, whole, "cut every {cut} bytes");
            }
        }
    }

    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
        PartitionData,
    };
    use kafka_protocol::messages::{BrokerId, FetchResponse, ProducerId, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use std::collections::BTreeMap;

    const PREFIX: &str = "tg-0123456789abcdef0123456789abcdef-";
    /// Long enough that, prefixed, its length needs a two-byte varint and, bare, one.
    const LONG: &str = "a-topic-name-long-enough-that-the-prefix-pushes-its-compact-length-past-one-byte-of-varint-x";

    fn name(n: &str) -> TopicName {
        TopicName(StrBytes::from_string(n.to_owned()))
    }

    fn tags(entries: &[(i32, &[u8])]) -> BTreeMap<i32, Bytes> {
        entries
            .iter()
            .map(|(t, b)| (*t, Bytes::copy_from_slice(b)))
            .collect()
    }

    fn ids() -> [Uuid; 2] {
        [Uuid::from_u128(0x11), Uuid::from_u128(0x22)]
    }

    /// An answer as a pool broker sends it, with everything the rewrite must change set.
    fn pool_answer(version: i16) -> FetchResponse {
        let flexible = version >= 12;
        let records = Bytes::from(batches(&[5000, 100, 70], 30));
        let partition = |index: i32, error_code: i16, records: Option<Bytes>| {
            let mut p = PartitionData::default()
                .with_partition_index(index)
                .with_error_code(error_code)
                .with_high_watermark(90)
                .with_last_stable_offset(80)
                .with_log_start_offset(if version >= 5 { 3 } else { -1 })
                .with_aborted_transactions(Some(vec![AbortedTransaction::default()
                    .with_producer_id(ProducerId(7))
                    .with_first_offset(4)
                    .with_unknown_tagged_fields(if flexible {
                        tags(&[(4, b"x")])
                    } else {
                        BTreeMap::new()
                    })]))
                .with_records(records);
            if version >= 11 {
                p.preferred_read_replica = BrokerId(2);
            }
            if flexible {
                p.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(2))
                    .with_leader_epoch(5);
                p.diverging_epoch = EpochEndOffset::default().with_epoch(3).with_end_offset(10);
                p.unknown_tagged_fields = tags(&[(9, b"pool-broker-2:9092")]);
            }
            p
        };
        let topic = |n: &str, id: Uuid, partitions| {
            let mut t = FetchableTopicResponse::default().with_partitions(partitions);
            if version >= 13 {
                t.topic_id = id;
            } else {
                t.topic = name(&format!("{PREFIX}{n}"));
            }
            if flexible {
                t.unknown_tagged_fields = tags(&[(3, b"t")]);
            }
            t
        };
        let [orders, long] = ids();
        let mut resp = FetchResponse::default()
            .with_throttle_time_ms(7)
            .with_responses(vec![
                topic(
                    "orders",
                    orders,
                    vec![
                        partition(0, 0, Some(records.clone())),
                        partition(1, 6, None), // NOT_LEADER_OR_FOLLOWER
                    ],
                ),
                topic(LONG, long, vec![partition(0, 0, Some(Bytes::new()))]),
            ]);
        if version >= 7 {
            resp.session_id = 77;
        }
        if version >= 16 {
            resp.node_endpoints = vec![NodeEndpoint::default()
                .with_node_id(BrokerId(2))
                .with_host(StrBytes::from_static_str("pool-broker-2"))
                .with_port(9092)];
        }
        if flexible {
            resp.unknown_tagged_fields = tags(&[(5, b"pool-broker-2:9092")]);
        }
        resp
    }

    /// What the client must see: the pool's answer rewritten for the tenant, field by field.
    fn tenant_view(mut resp: FetchResponse, version: i16) -> FetchResponse {
        resp.session_id = 0;
        resp.node_endpoints.clear();
        resp.unknown_tagged_fields.clear();
        for t in &mut resp.responses {
            if version < 13 {
                t.topic = name(t.topic.0.strip_prefix(PREFIX).unwrap());
            }
            t.unknown_tagged_fields.clear();
            for p in &mut t.partitions {
                p.unknown_tagged_fields.clear();
                p.current_leader = LeaderIdAndEpoch::default();
                p.preferred_read_replica = BrokerId(-1);
                for a in p.aborted_transactions.iter_mut().flatten() {
                    a.unknown_tagged_fields.clear();
                }
            }
        }
        resp
    }

    fn forwarded() -> Vec<(String, Uuid)> {
        let [orders, long] = ids();
        vec![
            (format!("{PREFIX}orders"), orders),
            (format!("{PREFIX}{LONG}"), long),
        ]
    }

    async fn relay(
        version: i16,
        body: Bytes,
        cut: usize,
    ) -> (Result<(), RelayError>, Vec<u8>, Option<Relayed>) {
        let (result, out, relayed, _) = relay_counted(version, body, cut).await;
        (result, out, relayed)
    }

    /// [`relay`], counting into the metrics of the cluster [`PREFIX`] belongs to.
    async fn relay_counted(
        version: i16,
        body: Bytes,
        cut: usize,
    ) -> (
        Result<(), RelayError>,
        Vec<u8>,
        Option<Relayed>,
        Arc<ClusterMetrics>,
    ) {
        let cluster = Uuid::from_u128(0x0123456789abcdef0123456789abcdef);
        let metrics = crate::telemetry::metrics::Metrics::default()
            .cluster(cluster)
            .expect("metrics on");
        let chunks = body.chunks(cut).map(Bytes::copy_from_slice).collect();
        let seen = Arc::new(std::sync::Mutex::new(None));
        let seen_by_done = seen.clone();
        let relay = Relay {
            version,
            body: BodyStream::from_chunks(chunks),
            addr: "pool:9092".into(),
            prefix: PREFIX.into(),
            forwarded: forwarded(),
            done: Box::new(move |r| *seen_by_done.lock().unwrap() = Some(r)),
            throttle_time_ms: 0,
            per_partition: true,
            metrics: Some(metrics.clone()),
        };
        let mut out = Vec::new();
        let result = relay.write_to(&mut out, 4242).await;
        let relayed = seen.lock().unwrap().take();
        (result, out, relayed, metrics)
    }

    use std::sync::Arc;

    #[tokio::test]
    async fn relayed_answers_are_the_tenants_view_in_every_version_however_they_arrive() {
        use kafka_protocol::messages::{ApiKey, ResponseHeader};
        for version in 4..=18 {
            let answer = pool_answer(version);
            let mut body = BytesMut::new();
            answer.encode(&mut body, version).unwrap();
            let body = body.freeze();
            let want = tenant_view(answer, version);
            for cut in [1, 7, 100, 4096, body.len()] {
                let (result, out, relayed, metrics) =
                    relay_counted(version, body.clone(), cut).await;
                result.unwrap_or_else(|e| panic!("v{version} cut {cut}: {e}"));
                let mut out = Bytes::from(out);
                let len = out.get_i32();
                assert_eq!(len as usize, out.len(), "v{version}: the declared length");
                let header = ResponseHeader::decode(
                    &mut out,
                    ApiKey::Fetch.response_header_version(version),
                )
                .unwrap();
                assert_eq!(header.correlation_id, 4242);
                let mut got = FetchResponse::decode(&mut out, version)
                    .unwrap_or_else(|e| panic!("v{version} cut {cut}: {e}"));
                assert!(out.is_empty(), "v{version}: nothing after the answer");
                if let Some(pad) = got.unknown_tagged_fields.remove(&(PAD_TAG as i32)) {
                    assert!(pad.iter().all(|&b| b == 0), "padding is zeros");
                }
                assert_eq!(got, want, "v{version} cut {cut}");
                let relayed = relayed.expect("done was told");
                assert_eq!(relayed.moved, vec![format!("{PREFIX}orders")]);
                assert_eq!(relayed.delivered, 5100, "complete batches only");
                // Counted per topic as it streamed, under the tenant's names, with the high
                // watermarks of the partitions answered without error.
                type Seen = (String, u64, Vec<(i32, i64)>);
                let topics: Vec<Seen> = metrics
                    .topics
                    .each()
                    .iter()
                    .map(|(n, c)| {
                        (
                            n.to_string(),
                            c.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
                            c.high_watermarks(),
                        )
                    })
                    .collect();
                let mut want_topics = vec![
                    (LONG.to_owned(), 0, vec![(0, 90)]),
                    ("orders".to_owned(), 5100, vec![(0, 90)]),
                ];
                want_topics.sort();
                assert_eq!(topics, want_topics, "v{version} cut {cut}");
                // By partition, as the tenant names it: by name before v13, by id from it.
                let total: u64 = relayed.partitions.iter().map(|(_, n)| n).sum();
                assert_eq!(total, 5100, "v{version}");
                for ((name, id, _), _) in &relayed.partitions {
                    if version < 13 {
                        assert!(["orders", LONG].contains(&name.0.as_str()), "{name:?}");
                        assert!(id.is_nil());
                    } else {
                        assert!(name.0.is_empty() && ids().contains(id), "{id}");
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn answers_the_relay_cannot_follow_are_errors_not_panics() {
        for version in [4, 11, 12, 16] {
            let mut body = BytesMut::new();
            pool_answer(version).encode(&mut body, version).unwrap();
            let body = body.freeze();
            // Cut short, or with bytes left over: the relay stops, nothing is told done.
            for broken in [body.slice(..body.len() - 1), body.slice(..20), {
                let mut more = BytesMut::from(&body[..]);
                more.put_u8(0);
                more.freeze()
            }] {
                let (result, _, relayed) = relay(version, broken, 64).await;
                assert!(result.is_err(), "v{version}");
                assert!(relayed.is_none());
            }
            // Another cluster's topic (or one not asked for).
            let mut other = pool_answer(version);
            other.responses[0].topic = name("tg-ffffffffffffffffffffffffffffffff-orders");
            other.responses[0].topic_id = Uuid::from_u128(0x99);
            let mut body = BytesMut::new();
            other.encode(&mut body, version).unwrap();
            let (result, out, _) = relay(version, body.freeze(), 64).await;
            let err = result.expect_err("another tenant's topic is refused");
            assert!(err.to_string().contains("not asked for"), "{err}");
            assert!(
                !String::from_utf8_lossy(&out).contains("ffffffff"),
                "nothing of it reaches the client"
            );
        }
    }

    #[test]
    fn padding_is_a_tag_list_of_exactly_the_missing_length() {
        // Decoded as Java's and librdkafka's readers do: groups of 7 bits while the top bit is
        // set, so a non-minimal encoding reads as the same value.
        fn varint(b: &mut Bytes) -> u32 {
            let mut v = 0;
            for shift in (0..35).step_by(7) {
                let byte = b.get_u8();
                v |= u32::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return v;
                }
            }
            panic!("varint longer than 5 bytes")
        }
        for missing in 1..400 {
            let mut buf = BytesMut::new();
            put_padding(&mut buf, missing);
            assert_eq!(buf.len(), missing);
            let mut b = buf.freeze();
            let count = varint(&mut b);
            for _ in 0..count {
                assert_eq!(varint(&mut b), PAD_TAG);
                let size = varint(&mut b) as usize;
                assert!(b[..size].iter().all(|&z| z == 0));
                b.advance(size);
            }
            assert!(b.is_empty(), "{missing}: nothing after the tag list");
        }
    }
}
