//! Kafka's framing: a big-endian `i32` length, then that many bytes.
//!
//! Frames are read whole before anything decodes them, and the length is checked against the
//! limit before a byte of the body is allocated, so a client claiming a 2 GiB frame costs us
//! four bytes of reading, not 2 GiB of memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FetchResponse, ProduceRequest, RequestHeader, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("frame length {0} is negative")]
    Negative(i32),
    #[error("connection closed mid-frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Bytes asked of the socket at a time when no frame is pending: small frames (most requests)
/// arrive several to a read.
const READ_CHUNK: usize = 64 * 1024;

/// Reads frames from one stream into a buffer it reuses.
///
/// Each frame is split off the buffer without copying. The buffer is never zeroed, and once
/// the frames taken from it are dropped (answered, forwarded) its memory is used again, so a
/// steady stream of large frames does not cost a fresh allocation, and its page faults, each.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// The most buffer memory kept between frames: a connection that once sent one large
    /// frame does not hold that much memory for the rest of its life.
    retain: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, retain: usize) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::new(),
            retain,
        }
    }

    /// Reads one frame. `Ok(None)` is a clean close between frames.
    pub async fn next(&mut self, limit: usize) -> Result<Option<Bytes>, FrameError> {
        loop {
            let wanted = if self.buf.len() >= 4 {
                let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if size < 0 {
                    return Err(FrameError::Negative(size));
                }
                let size = size as usize;
                if size > limit {
                    return Err(FrameError::TooLarge { size, limit });
                }
                if self.buf.len() >= 4 + size {
                    self.buf.advance(4);
                    let frame = self.buf.split_to(size).freeze();
                    if size > self.retain && self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    return Ok(Some(frame));
                }
                // Room for the rest of this frame, checked against the limit above.
                (4 + size - self.buf.len()).max(READ_CHUNK)
            } else {
                READ_CHUNK
            };
            self.buf.reserve(wanted);
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// Reads until at least `n` bytes are buffered. `Ok(false)` is a clean close with nothing
    /// buffered; a close with part of them is [`FrameError::Truncated`].
    pub async fn fill(&mut self, n: usize) -> Result<bool, FrameError> {
        while self.buf.len() < n {
            self.buf.reserve((n - self.buf.len()).max(READ_CHUNK));
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(false)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
        Ok(true)
    }

    /// What is read and not yet taken.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the first `n` buffered bytes (at most [`FrameReader::buffered`]'s length).
    pub fn take(&mut self, n: usize) -> Bytes {
        self.buf.split_to(n).freeze()
    }

    /// The next bytes of a frame being streamed, of which `left` are still to come (so the
    /// next frame is never taken): at least `min` of them (all `left` if fewer), since each
    /// chunk costs its reader a wake-up, and at most `most`.
    pub async fn chunk(
        &mut self,
        left: usize,
        min: usize,
        most: usize,
    ) -> Result<Bytes, FrameError> {
        if self.buf.is_empty() {
            // Room for the rest of the frame: one allocation per frame (reused once its chunks
            // are dropped), and each read takes whatever the socket has.
            self.buf.reserve(left);
        }
        while self.buf.len() < min.min(left) {
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Err(FrameError::Truncated);
            }
        }
        let n = self.buf.len().min(left).min(most);
        Ok(self.buf.split_to(n).freeze())
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Byte fields at least this long are referenced from the frame they arrived in rather than
/// copied into the frame being encoded; below it, a copy is cheaper than another iovec.
const BORROW_MIN: usize = 1024;

/// An encoded frame, length prefix included, ready to write.
///
/// It is a list of byte runs: what the gateway encoded itself, and between those runs the record
/// batches of the message, which are slices of the frames they were read from (a produce
/// request's, a pool's fetch answers). Writing it with [`tokio::io::AsyncWriteExt::write_all_buf`]
/// hands the runs to the kernel in one vectored write, so records cross the gateway without being
/// copied in user space.
#[derive(Debug, Default)]
pub struct Frame {
    /// The first run: length prefix and header, patchable in place.
    head: BytesMut,
    rest: Vec<Bytes>,
    /// The first run of `rest` not yet consumed by [`Buf::advance`].
    next: usize,
}

impl Frame {
    /// A frame from bytes already encoded, length prefix included.
    pub fn from_bytes(bytes: Bytes) -> Self {
        Frame::from_runs(vec![bytes])
    }

    /// Bytes already encoded, in runs written one after another (a frame, or a part of one).
    pub fn from_runs(mut runs: Vec<Bytes>) -> Self {
        runs.retain(|r| !r.is_empty());
        Frame {
            head: BytesMut::new(),
            rest: runs,
            next: 0,
        }
    }

    /// Encodes `[length][request header][body]`. The correlation id is left for the upstream
    /// writer to set ([`Frame::set_correlation_id`]).
    pub fn request<M: Encodable + 'static>(
        api: ApiKey,
        version: i16,
        client_id: &str,
        body: &M,
    ) -> anyhow::Result<Frame> {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_string(
                client_id.to_owned(),
            )));
        let borrowable = record_fields(body);
        let mut buf = FrameBuf::new(&borrowable);
        buf.put_i32(0);
        header.encode(&mut buf, api.request_header_version(version))?;
        body.encode(&mut buf, version)?;
        Ok(buf.finish())
    }

    /// Encodes `[length][response header][body]`.
    pub fn response(
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &ResponseKind,
    ) -> anyhow::Result<Frame> {
        let header = ResponseHeader::default().with_correlation_id(correlation_id);
        let header_version = api.response_header_version(version);
        // Only fetch answers carry records; the rest are encoded into one buffer.
        let ResponseKind::Fetch(resp) = body else {
            let mut buf = BytesMut::with_capacity(256);
            buf.put_i32(0);
            header.encode(&mut buf, header_version)?;
            body.encode(&mut buf, version)?;
            let len = (buf.len() - 4) as i32;
            buf[..4].copy_from_slice(&len.to_be_bytes());
            return Ok(Frame {
                head: buf,
                ..Frame::default()
            });
        };
        let borrowable = fetch_records(resp);
        let mut buf = FrameBuf::new(&borrowable);
        buf.put_i32(0);
        header.encode(&mut buf, header_version)?;
        resp.encode(&mut buf, version)?;
        Ok(buf.finish())
    }

    /// Overwrites the correlation id of a request frame made by [`Frame::request`].
    pub fn set_correlation_id(&mut self, id: i32) {
        set_correlation_id(&mut self.head, id);
    }

    /// Bytes left to write.
    pub fn len(&self) -> usize {
        self.head.len() + self.rest[self.next..].iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame in one buffer (a copy): for tests, and callers that must edit it.
    pub fn to_bytes_mut(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        for run in &self.rest[self.next..] {
            out.extend_from_slice(run);
        }
        out
    }
}

impl Buf for Frame {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        if !self.head.is_empty() {
            return &self.head;
        }
        self.rest.get(self.next).map_or(&[], |b| &b[..])
    }

    fn advance(&mut self, mut cnt: usize) {
        let from_head = cnt.min(self.head.len());
        self.head.advance(from_head);
        cnt -= from_head;
        while cnt > 0 {
            let run = &mut self.rest[self.next];
            if cnt < run.len() {
                run.advance(cnt);
                return;
            }
            cnt -= run.len();
            self.next += 1;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let head = (!self.head.is_empty()).then_some(&self.head[..]);
        let runs = head
            .into_iter()
            .chain(self.rest[self.next..].iter().map(|b| &b[..]));
        let mut n = 0;
        for (slot, run) in dst.iter_mut().zip(runs) {
            *slot = std::io::IoSlice::new(run);
            n += 1;
        }
        n
    }
}

/// The [`kafka_protocol`] encoding target behind [`Frame`]: small writes go to a buffer, and a
/// slice that is one of `borrowable` (by address and length, so certainly the same bytes) is
/// taken by reference instead.
struct FrameBuf<'a> {
    frame: Frame,
    /// Bytes encoded before `tail`, in `frame`.
    frozen: usize,
    tail: BytesMut,
    borrowable: &'a [Bytes],
    /// Where in `borrowable` the next borrow is expected: encoding goes in order.
    cursor: usize,
}

impl<'a> FrameBuf<'a> {
    fn new(borrowable: &'a [Bytes]) -> Self {
        FrameBuf {
            frame: Frame::default(),
            frozen: 0,
            tail: BytesMut::with_capacity(256),
            borrowable,
            cursor: 0,
        }
    }

    /// Moves `tail` into the frame as a run of its own.
    fn seal_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        self.frozen += self.tail.len();
        let run = std::mem::take(&mut self.tail);
        if self.frame.head.is_empty() && self.frame.rest.is_empty() {
            self.frame.head = run;
        } else {
            self.frame.rest.push(run.freeze());
        }
    }

    fn try_borrow(&mut self, src: &[u8]) -> bool {
        if src.len() < BORROW_MIN {
            return false;
        }
        let same = |b: &Bytes| b.as_ptr() == src.as_ptr() && b.len() == src.len();
        let Some(i) = self.borrowable[self.cursor..].iter().position(same) else {
            return false;
        };
        let run = self.borrowable[self.cursor + i].clone();
        self.cursor += i + 1;
        self.seal_tail();
        self.frozen += run.len();
        self.frame.rest.push(run);
        true
    }

    /// Everything in one buffer again: only for an encoder that seeks back past a borrowed run,
    /// which message encoders never do (record encoders do, and records are not encoded here).
    fn flatten(&mut self) {
        if self.frozen == 0 {
            return;
        }
        let mut all = self.frame.to_bytes_mut();
        all.extend_from_slice(&self.tail);
        self.tail = all;
        self.frame = Frame::default();
        self.frozen = 0;
    }

    fn finish(mut self) -> Frame {
        self.seal_tail();
        let mut frame = self.frame;
        let len = (frame.len() - 4) as i32;
        frame.head[..4].copy_from_slice(&len.to_be_bytes());
        frame
    }
}

// The one use of unsafe in the workspace (see `[workspace.lints]`): `BufMut` is an unsafe
// trait, and kafka-protocol encodes into any `BufMut`. Copying record batches instead cost 24%
// of the gateway's CPU under load (perf, proxy-bench).
//
// SAFETY: every method hands over to `tail`, a `BytesMut`, whose own implementation upholds
// the contract; borrowed runs are never exposed through `chunk_mut`.
#[allow(unsafe_code)]
unsafe impl BufMut for FrameBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialized `cnt` bytes of `tail.chunk_mut()`.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut bytes::buf::UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if !self.try_borrow(src) {
            self.tail.extend_from_slice(src);
        }
    }
}

impl ByteBufMut for FrameBuf<'_> {
    fn offset(&self) -> usize {
        self.frozen + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.frozen {
            self.flatten();
        }
        self.tail.resize(offset - self.frozen, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        if r.start < self.frozen {
            self.flatten();
        }
        let at = self.frozen;
        &mut self.tail[r.start - at..r.end - at]
    }
}

/// The record batches of a request, in encoding order: what its frame may reference.
fn record_fields(body: &dyn std::any::Any) -> Vec<Bytes> {
    let Some(req) = body.downcast_ref::<ProduceRequest>() else {
        return Vec::new();
    };
    req.topic_data
        .iter()
        .flat_map(|t| &t.partition_data)
        .filter_map(|p| p.records.clone())
        .filter(|r| r.len() >= BORROW_MIN)
        .collect()
}

fn fetch_records(resp: &FetchResponse) -> Vec<Bytes> {
    resp.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| r.len() >= BORROW_MIN)
        .collect()
}

/// Why a request's header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("request is {0} bytes, too short for a header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("malformed request header: {0}")]
    Malformed(String),
}

/// The fixed start of every request header, readable without knowing the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RawHeader {
    /// Reads the key, version and correlation id, which sit at fixed offsets in every header
    /// version: enough to answer even a request we refuse to decode.
    pub fn peek(frame: &[u8]) -> Result<Self, HeaderError> {
        if frame.len() < 8 {
            return Err(HeaderError::Short(frame.len()));
        }
        let mut b = &frame[..8];
        Ok(RawHeader {
            api_key: b.get_i16(),
            api_version: b.get_i16(),
            correlation_id: b.get_i32(),
        })
    }
}

/// Decodes a request header, leaving `frame` at the start of the body.
pub fn decode_request_header(frame: &mut Bytes) -> Result<(ApiKey, RequestHeader), HeaderError> {
    let raw = RawHeader::peek(frame)?;
    let api = ApiKey::try_from(raw.api_key).map_err(|_| HeaderError::UnknownApi(raw.api_key))?;
    let header_version = api.request_header_version(raw.api_version);
    let header = RequestHeader::decode(frame, header_version)
        .map_err(|e| HeaderError::Malformed(e.to_string()))?;
    Ok((api, header))
}

/// [`Frame::request`] in one buffer: for tests and tools that edit or inspect what they send.
pub fn encode_request<M: Encodable + 'static>(
    api: ApiKey,
    version: i16,
    client_id: &str,
    body: &M,
) -> anyhow::Result<BytesMut> {
    Ok(Frame::request(api, version, client_id, body)?.to_bytes_mut())
}

/// Overwrites the correlation id of a frame made by [`encode_request`].
pub fn set_correlation_id(frame: &mut [u8], id: i32) {
    frame[8..12].copy_from_slice(&id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;
    use kafka_protocol::protocol::StrBytes;

    async fn read_all(input: &[u8], limit: usize) -> Result<Vec<Bytes>, FrameError> {
        let mut reader = FrameReader::new(input, 16);
        let mut frames = Vec::new();
        while let Some(f) = reader.next(limit).await? {
            frames.push(f);
        }
        Ok(frames)
    }

    #[tokio::test]
    async fn limit_is_checked_before_reading_the_body() {
        let err = read_all(&[0x7f, 0xff, 0xff, 0xff], 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert!(matches!(
            read_all(&[0xff, 0xff, 0xff, 0xff], 1024).await,
            Err(FrameError::Negative(-1))
        ));
    }

    #[tokio::test]
    async fn truncated_and_clean_eof() {
        assert!(read_all(&[], 1024).await.unwrap().is_empty());
        assert!(matches!(
            read_all(&[0, 0, 0, 10, 1, 2], 1024).await,
            Err(FrameError::Truncated)
        ));
        assert!(matches!(
            read_all(&[0, 0], 1024).await,
            Err(FrameError::Truncated)
        ));
    }

    /// Frames arriving several to a read, and one frame over many reads, come out whole and
    /// in order; a frame larger than what is retained still reads.
    #[tokio::test]
    async fn frames_across_and_within_reads() {
        let bodies: Vec<Vec<u8>> = vec![
            vec![],
            b"abc".to_vec(),
            (0..200_000u32).map(|i| i as u8).collect(),
            b"z".to_vec(),
        ];
        let mut wire = Vec::new();
        for b in &bodies {
            wire.extend_from_slice(&(b.len() as i32).to_be_bytes());
            wire.extend_from_slice(b);
        }
        let (mut tx, rx) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&wire).await.unwrap();
        });
        let mut reader = FrameReader::new(rx, 100);
        for b in &bodies {
            assert_eq!(reader.next(1 << 20).await.unwrap().unwrap(), b[..]);
        }
        writer.await.unwrap();
        assert!(reader.next(1 << 20).await.unwrap().is_none());
    }

    fn batch(n: usize, seed: u8) -> Bytes {
        (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect()
    }

    fn produce_with(records: &[Bytes]) -> ProduceRequest {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        let partitions = records
            .iter()
            .zip(0..)
            .map(|(r, i)| {
                PartitionProduceData::default()
                    .with_index(i)
                    .with_records(Some(r.clone()))
            })
            .collect();
        ProduceRequest::default()
            .with_acks(-1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(kafka_protocol::messages::TopicName(
                    StrBytes::from_static_str("t"),
                ))
                .with_partition_data(partitions)])
    }

    /// Whether some run of `frame` is `b` itself (same memory), not a copy.
    fn references(frame: &Frame, b: &Bytes) -> bool {
        frame
            .rest
            .iter()
            .any(|r| r.as_ptr() == b.as_ptr() && r.len() == b.len())
    }

    /// A produce request with large and small batches, at a flexible and a non-flexible
    /// version: the frame decodes back to the same request, large batches are referenced and
    /// small ones copied, and writing it vectored through a narrow pipe yields the same bytes.
    #[tokio::test]
    async fn produce_frames_reference_large_batches() {
        let records = vec![
            batch(5000, 3),
            batch(10, 5),
            batch(BORROW_MIN, 7),
            batch(70_000, 11),
        ];
        let req = produce_with(&records);
        for version in [3, 9] {
            let mut frame = Frame::request(ApiKey::Produce, version, "c", &req).unwrap();
            frame.set_correlation_id(77);
            assert!(references(&frame, &records[0]));
            assert!(!references(&frame, &records[1]));
            assert!(references(&frame, &records[2]));
            assert!(references(&frame, &records[3]));
            let flat = frame.to_bytes_mut();
            assert_eq!(flat.len(), frame.len());
            let mut body = flat.clone().freeze();
            assert_eq!(body.get_i32() as usize, flat.len() - 4);
            let (api, header) = decode_request_header(&mut body).unwrap();
            assert_eq!((api, header.correlation_id), (ApiKey::Produce, 77));
            assert_eq!(ProduceRequest::decode(&mut body, version).unwrap(), req);

            let (mut tx, mut rx) = tokio::io::duplex(1000);
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tx.write_all_buf(&mut frame).await.unwrap();
                assert_eq!(frame.remaining(), 0);
            });
            let mut written = Vec::new();
            rx.read_to_end(&mut written).await.unwrap();
            writer.await.unwrap();
            assert_eq!(written, flat[..]);
        }
    }

    /// A fetch answer is encoded with its batches referenced, and decodes back the same.
    #[test]
    fn fetch_answers_reference_batches() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        let records = [batch(4096, 13), batch(3, 17)];
        let resp = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(kafka_protocol::messages::TopicName(
                StrBytes::from_static_str("t"),
            ))
            .with_partitions(
                records
                    .iter()
                    .zip(0..)
                    .map(|(r, i)| {
                        PartitionData::default()
                            .with_partition_index(i)
                            .with_records(Some(r.clone()))
                    })
                    .collect(),
            )]);
        for version in [4, 12] {
            let body = ResponseKind::Fetch(resp.clone());
            let frame = Frame::response(ApiKey::Fetch, version, 9, &body).unwrap();
            assert!(references(&frame, &records[0]));
            let mut flat = frame.to_bytes_mut().freeze();
            assert_eq!(flat.get_i32() as usize, flat.len());
            let header =
                ResponseHeader::decode(&mut flat, ApiKey::Fetch.response_header_version(version))
                    .unwrap();
            assert_eq!(header.correlation_id, 9);
            assert_eq!(FetchResponse::decode(&mut flat, version).unwrap(), resp);
        }
    }

    #[test]
    fn request_round_trip_and_correlation_patch() {
        let req = MetadataRequest::default();
        let mut frame = encode_request(ApiKey::Metadata, 12, "tollgate", &req).unwrap();
        set_correlation_id(&mut frame, 4242);
        let mut body = frame.split_off(4).freeze();
        let (api, header) = decode_request_header(&mut body).unwrap();
        assert_eq!(api, ApiKey::Metadata);
        assert_eq!(header.correlation_id, 4242);
        assert_eq!(header.request_api_version, 12);
        let back = MetadataRequest::decode(&mut body, 12).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn headers_of_garbage_are_errors() {
        assert!(matches!(
            RawHeader::peek(&[0, 1]),
            Err(HeaderError::Short(2))
        ));
        let mut unknown = Bytes::from_static(&[0x27, 0x0f, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            decode_request_header(&mut unknown),
            Err(HeaderError::UnknownApi(9999))
        ));
        // A v2 header whose client id claims more bytes than there are.
        let mut lying = Bytes::from_static(&[0, 3, 0, 12, 0, 0, 0, 1, 0x7f, 0xff]);
        assert!(matches!(
            decode_request_header(&mut lying),
            Err(HeaderError::Malformed(_))
        ));
    }
}
