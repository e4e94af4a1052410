//! Kafka's framing: a big-endian `i32` length, then that many bytes.
//!
//! Frames are read whole before anything decodes them, and the length is checked against the
//! limit before a byte of the body is allocated, so a client claiming a 2 GiB frame costs us
//! four bytes of reading, not 2 GiB of memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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

/// Reads one frame. `Ok(None)` is a clean close between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(len);
    if size < 0 {
        return Err(FrameError::Negative(size));
    }
    let size = size as usize;
    if size > limit {
        return Err(FrameError::TooLarge { size, limit });
    }
    let mut buf = BytesMut::zeroed(size);
    match reader.read_exact(&mut buf).await {
        Ok(_) => Ok(Some(buf.freeze())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(e.into()),
    }
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> std::io::Result<()> {
    writer.write_all(frame).await
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

/// Encodes `[length][response header][body]` for a response to `api` at `version`.
pub fn encode_response<M: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> anyhow::Result<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = api.response_header_version(version);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

/// Encodes `[length][request header][body]`. The correlation id is left for the upstream
/// connection to fill in (see [`set_correlation_id`]).
pub fn encode_request<M: Encodable>(
    api: ApiKey,
    version: i16,
    client_id: &str,
    body: &M,
) -> anyhow::Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_client_id(Some(kafka_protocol::protocol::StrBytes::from_string(
            client_id.to_owned(),
        )));
    let header_version = api.request_header_version(version);
    let size = header.compute_size(header_version)? + body.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version)?;
    body.encode(&mut buf, version)?;
    Ok(buf)
}

/// Overwrites the correlation id of a frame made by [`encode_request`].
pub fn set_correlation_id(frame: &mut [u8], id: i32) {
    frame[8..12].copy_from_slice(&id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::MetadataRequest;

    #[tokio::test]
    async fn limit_is_checked_before_reading_the_body() {
        let mut input: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        let err = read_frame(&mut input, 1024).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        let mut negative: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut negative, 1024).await,
            Err(FrameError::Negative(-1))
        ));
    }

    #[tokio::test]
    async fn truncated_and_clean_eof() {
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 1024).await.unwrap().is_none());
        let mut short: &[u8] = &[0, 0, 0, 10, 1, 2];
        assert!(matches!(
            read_frame(&mut short, 1024).await,
            Err(FrameError::Truncated)
        ));
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
