//! A reply on its way from a broker ([`PendingReply`]), taken whole or as it arrives
//! ([`BodyStream`]).
//!
//! Either way the connection it travels on stays leased until all of the answer has arrived,
//! and a reply given up on midway closes it: the rest of the answer would hold up whatever is
//! sent on it next.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::protocol::Decodable;
use tokio::sync::{mpsc, oneshot};

use super::connection::Arrival;
use super::error::UpstreamError;
use super::lease::Lease;

/// A reply still on its way from a broker.
///
/// Dropping it unread is fine: a fetch's connection goes back to its lane once the broker has
/// answered (or is closed if the broker does not answer in time).
pub struct PendingReply {
    addr: String,
    timeout: Duration,
    /// When the request was queued for writing; the timeout runs from here.
    sent: Instant,
    /// Requests held ahead of this one on its connection ([`Lease::ahead`]).
    ahead: u32,
    /// `None` once answered or timed out.
    rx: Option<oneshot::Receiver<Result<Arrival, UpstreamError>>>,
    lease: Option<Lease>,
}

impl PendingReply {
    /// A reply to a request queued now on `lease`'s connection, failing after `timeout`.
    pub(super) fn new(
        addr: String,
        timeout: Duration,
        rx: oneshot::Receiver<Result<Arrival, UpstreamError>>,
        lease: Lease,
    ) -> Self {
        PendingReply {
            addr,
            timeout,
            sent: Instant::now(),
            ahead: lease.ahead,
            rx: Some(rx),
            lease: Some(lease),
        }
    }

    /// Sets how long, from dispatch, to wait for the answer: for a fetch, its `max_wait_ms`
    /// and a margin (times one more than the requests held ahead of it on a shared connection). When it passes, the request fails with [`UpstreamError::Timeout`] and the
    /// connection it travelled on is closed (other requests on it fail with
    /// [`UpstreamError::Io`]): a broker that stopped answering would otherwise hold every
    /// later request sent on it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn deadline(&self) -> tokio::time::Instant {
        // Each request ahead on the connection may take its own whole wait before the broker
        // reads this one. A timeout too long to add is as good as none: a year.
        let at = (self.timeout.checked_mul(self.ahead.saturating_add(1)))
            .and_then(|t| self.sent.checked_add(t))
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
    /// [`Broker::dispatch_streamed`](super::Broker::dispatch_streamed) and is large, else in
    /// one chunk. The timeout covers the start of the answer; each later chunk gets as long
    /// again.
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

#[cfg(test)]
mod tests {
    //! Against real tansu brokers (memory engine), as the integration tests are: the pool is
    //! never mocked. tansu comes from `TOLLGATE_TANSU` or `tansu` on PATH.

    use super::*;
    use crate::pool::connection::STREAM_MIN;
    use crate::pool::testing::*;
    use crate::pool::Caller;
    use kafka_protocol::messages::{ApiKey, FetchResponse};

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

        let pending = broker
            .dispatch_streamed(Caller::GATEWAY, ApiKey::Fetch, FETCH, &req)
            .await;
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
        let pending = broker
            .dispatch_streamed(Caller::GATEWAY, ApiKey::Fetch, FETCH, &req)
            .await;
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
}
