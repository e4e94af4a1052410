//! One client connection, from its first byte to its close.
//!
//! The reader half reads whole frames, decodes and authorizes each request and dispatches it
//! to the pool in arrival order; the writer half writes the answers in that same order (Kafka
//! requires it), so a client may pipeline as many requests as `max_in_flight` allows while the
//! pool works on them.
//!
//! Until SASL authentication succeeds only ApiVersions, SaslHandshake and SaslAuthenticate are
//! even decoded, frames are limited to `max_sasl_frame_bytes`, and the whole exchange must end
//! within [`Limits::sasl_deadline`] of the accept. After it, the connection lives while the
//! token's session lasts and its cluster exists, and is closed when either ends (KIP-368),
//! unless the client re-authenticated in time, or after [`Limits::idle_timeout`] without a
//! request. A client that takes no bytes of its answers for [`Limits::write_stall`] is closed
//! ([`stall`]).
//!
//! What one connection may cost is bounded before the work is done: a request's frame size
//! (records only in Produce), its array elements (counted while decoding, before any
//! per-element work), and the request bytes in flight per connection and per cluster, which
//! are held by reading the socket no further until earlier answers are written (back-pressure,
//! never more buffering).
//!
//! Anything the gateway does not handle is refused by closing the connection, as Kafka does
//! for a request it cannot parse: there is no valid answer to a request of an API or version
//! that was not offered, and a client that sends one is either broken or probing.

mod stall;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestKind, ResponseKind, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::api::relay::RelayError;
use crate::api::{self, versions, Answer, Ctx, Reply};
use crate::frame::{decode_request_header, Frame, FrameReader, RawHeader};
use crate::identity::authz::Session;
use crate::identity::sasl::{self, Exchange, Mechanism, Step};
use crate::limits::Limits;
use crate::quotas::meter::{millis, ClusterMeter, Kind, Mute};
use crate::quotas::throttle::{set_throttle, Pending};
use crate::state::Gateway;
use crate::telemetry::metrics::{ClusterMetrics, Metrics, Outcome};

/// Why a connection ended, for the log.
#[derive(Debug, thiserror::Error)]
pub enum CloseReason {
    #[error("client closed the connection")]
    ClientClosed,
    #[error("{0}")]
    Frame(#[from] crate::frame::FrameError),
    #[error("refused {api} v{version}: {why}")]
    Refused { api: i16, version: i16, why: String },
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("session expired")]
    SessionExpired,
    #[error("no SASL authentication within {0:?} of connecting")]
    SaslDeadline(std::time::Duration),
    #[error("idle for {0:?}")]
    Idle(std::time::Duration),
    #[error("cluster was deleted")]
    ClusterGone,
    #[error("the credential was revoked")]
    Revoked,
    /// A request refused that has no response to carry the refusal (an acks=0 produce).
    #[error("refused without a response to say so: {0}")]
    Unanswerable(String),
    /// Over a connection quota of its cluster (`max_connections`, `connections_per_second`).
    #[error("closed by quota: {0}")]
    OverQuota(String),
    #[error("pool error: {0}")]
    Upstream(#[from] crate::pool::UpstreamError),
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("gateway is shutting down")]
    Shutdown,
}

/// An answer waiting its turn to be written.
enum Outgoing {
    Ready(Frame),
    Pending {
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        reply: crate::pool_admin::BoxFuture<'static, Result<Answer, crate::pool::UpstreamError>>,
        /// The request's share of the bytes in flight, given back once its answer is written.
        _held: InFlight,
        timed: Timed,
    },
}

/// A request being timed and counted until its answer is written.
struct Timed {
    started: Instant,
    /// Its cluster's counters; `None` with metrics off.
    cluster: Option<Arc<ClusterMetrics>>,
    /// Throttled by the cluster's quotas when it was read (a fetch's egress throttle is
    /// seen in its answer).
    throttled: bool,
    /// Its span, when it is one of the requests sampled for tracing.
    traced: Option<crate::telemetry::otlp::Traced>,
}

impl Timed {
    /// Counts the request as ended `outcome`, and how long it took.
    fn end(self, metrics: &Metrics, api: ApiKey, outcome: Outcome) {
        if let Some(cluster) = &self.cluster {
            cluster.request(api, outcome);
            metrics.took(api, self.started.elapsed());
        }
        if let Some(traced) = self.traced {
            traced.end(outcome, self.started.elapsed());
        }
    }

    fn answered(self, metrics: &Metrics, api: ApiKey, throttled: bool) {
        let outcome = if self.throttled || throttled {
            Outcome::Throttled
        } else {
            Outcome::Ok
        };
        self.end(metrics, api, outcome);
    }
}

/// A request's bytes counted against its connection's and its cluster's budget.
struct InFlight {
    _connection: OwnedSemaphorePermit,
    _cluster: OwnedSemaphorePermit,
}

/// How often an authenticated connection with nothing to read checks that its cluster and its
/// credential still exist: a deleted cluster's or a revoked credential's connections close
/// within this long (plus the cluster sync's second on other instances).
const CLUSTER_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Read buffer kept between a client's frames (see [`FrameReader`]): enough for the produce
/// requests of a busy producer, small enough for many thousands of connections.
const CLIENT_READ_RETAIN: usize = 1024 * 1024;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Serves one client connection until it closes, fails, or `shutdown` fires.
pub async fn serve<S>(
    gw: Gateway,
    stream: S,
    peer: String,
    certified: Option<crate::identity::mtls::Certified>,
    mut shutdown: tokio::sync::broadcast::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let _counted = gw.signals().connection();
    let (reader, writer) = tokio::io::split(stream);
    let mut reader = FrameReader::new(reader, CLIENT_READ_RETAIN);
    let (tx, rx) = mpsc::channel::<Outgoing>(gw.config().max_in_flight.max(1));
    let limits = gw.config().limits.clone();
    let mut writer_task = tokio::spawn(write_loop(
        stall::StallTimeout::new(writer, limits.write_stall),
        rx,
        gw.metrics().clone(),
    ));
    let mut conn = Connection {
        id: NEXT_CLIENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        source: peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()),
        connection_bytes: Arc::new(tokio::sync::Semaphore::new(
            limits.connection_bytes_in_flight,
        )),
        cluster_bytes: None,
        quota_meter: None,
        mute: Default::default(),
        limits,
        gw,
        session: None,
        exchange: None,
        raw_token_next: false,
        checked: None,
        certified,
        quota_slot: None,
        tx,
    };
    // The writer ending first (the pool failed an answer, or the client stopped reading) ends
    // the connection too: a client waiting on an answer that will never come is better told
    // by a close, which every client treats as retriable.
    let (reason, written) = tokio::select! {
        r = conn.read_loop(&mut reader) => (r, None),
        w = &mut writer_task => (CloseReason::Shutdown, Some(w)),
        _ = shutdown.recv() => (CloseReason::Shutdown, None),
    };
    drop(conn);
    // Let answers already dispatched reach the client before closing.
    let written = match written {
        Some(w) => w,
        None => writer_task.await,
    };
    match (&reason, written) {
        (_, Ok(Err(e))) => tracing::info!(%peer, reason = %e, "connection closed"),
        (CloseReason::ClientClosed, _) => tracing::debug!(%peer, "connection closed"),
        // Counted per cluster (`Counts::refused`); a client at its quota retries often.
        (CloseReason::OverQuota(_), _) => tracing::debug!(%peer, %reason, "connection closed"),
        _ => tracing::info!(%peer, %reason, "connection closed"),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Outgoing>,
    metrics: Metrics,
) -> Result<(), CloseReason> {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            let frame = match out {
                Outgoing::Ready(frame) => frame,
                Outgoing::Pending {
                    api,
                    version,
                    correlation_id,
                    reply,
                    _held,
                    timed,
                } => {
                    // Flush what is written before waiting on the pool.
                    writer.flush().await.map_err(CloseReason::Write)?;
                    let answer = match reply.await {
                        Ok(answer) => answer,
                        Err(e) => {
                            timed.end(&metrics, api, Outcome::Failed);
                            return Err(e.into());
                        }
                    };
                    match answer {
                        Answer::Message(body) => {
                            let throttled =
                                matches!(&body, ResponseKind::Fetch(r) if r.throttle_time_ms > 0);
                            let frame = Frame::response(api, version, correlation_id, &body)
                                .map_err(|e| {
                                    CloseReason::Upstream(crate::pool::UpstreamError::Encode(
                                        e.to_string(),
                                    ))
                                })?;
                            timed.answered(&metrics, api, throttled);
                            frame
                        }
                        Answer::Relay(relay) => {
                            let throttled = relay.throttle_time_ms > 0;
                            let written = relay.write_to(&mut writer, correlation_id).await;
                            match written {
                                Ok(()) => timed.answered(&metrics, api, throttled),
                                Err(RelayError::Pool(e)) => {
                                    timed.end(&metrics, api, Outcome::Failed);
                                    return Err(CloseReason::Upstream(e));
                                }
                                Err(RelayError::Write(e)) => return Err(CloseReason::Write(e)),
                            }
                            next = rx.try_recv().ok();
                            continue;
                        }
                    }
                }
            };
            let mut frame = frame;
            writer
                .write_all_buf(&mut frame)
                .await
                .map_err(CloseReason::Write)?;
            next = rx.try_recv().ok();
        }
        writer.flush().await.map_err(CloseReason::Write)?;
    }
    writer.shutdown().await.map_err(CloseReason::Write)
}

/// Numbers client connections, for [`Ctx::client`].
static NEXT_CLIENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Connection {
    id: u64,
    gw: Gateway,
    limits: Limits,
    /// Request bytes of this connection in flight ([`Limits::connection_bytes_in_flight`]).
    connection_bytes: Arc<tokio::sync::Semaphore>,
    /// The session's cluster's budget, looked up once per cluster rather than per request.
    cluster_bytes: Option<(uuid::Uuid, Arc<tokio::sync::Semaphore>)>,
    /// The session's cluster's rate meter, looked up once per cluster like `cluster_bytes`.
    quota_meter: Option<(uuid::Uuid, Arc<ClusterMeter>)>,
    /// Until when this client is throttled: nothing more is read from it before then.
    mute: Arc<Mute>,
    session: Option<Arc<Session>>,
    /// Set by a successful SaslHandshake, taken by each SaslAuthenticate that follows until the
    /// exchange ends (one message for tokens, two for SCRAM).
    exchange: Option<Exchange>,
    /// After a v0 handshake the exchange's messages are not Kafka requests but raw SASL frames.
    raw_token_next: bool,
    /// The cluster record the session's credential was last found standing in; a new record
    /// (a user deleted, a token revoked, anything changed) is checked again.
    checked: Option<Arc<crate::tenancy::Cluster>>,
    /// The client certificate the TLS handshake verified, if the client presented one: the
    /// identity of a client that sends requests without SASL.
    certified: Option<crate::identity::mtls::Certified>,
    /// This connection's place in its cluster's connection quota, from authentication on.
    quota_slot: Option<crate::quotas::limits::ConnectionSlot>,
    tx: mpsc::Sender<Outgoing>,
    /// The client's address, which its cluster's `allowed_cidrs` are checked against.
    source: Option<std::net::IpAddr>,
}

impl Connection {
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
    ) -> CloseReason {
        // Absolute: a peer trickling a frame a byte at a time does not extend it.
        let sasl_deadline = Instant::now() + self.limits.sasl_deadline;
        loop {
            let idle_deadline = Instant::now() + self.limits.idle_timeout;
            let limit = if self.session.is_some() {
                self.gw.config().max_frame_bytes
            } else {
                self.gw.config().max_sasl_frame_bytes
            };
            // `FrameReader::next` keeps what it read when dropped, so waking to check the
            // session loses nothing.
            let read = loop {
                let wake = match &self.session {
                    None => sasl_deadline,
                    Some(_) => idle_deadline.min(Instant::now() + CLUSTER_CHECK),
                };
                tokio::select! {
                    read = reader.next(limit) => break read,
                    _ = tokio::time::sleep_until(wake) => {}
                }
                if let Some(reason) = self.ended(sasl_deadline, idle_deadline) {
                    return reason;
                }
            };
            let frame = match read {
                Ok(Some(frame)) => frame,
                Ok(None) => return CloseReason::ClientClosed,
                Err(e) => return e.into(),
            };
            // A throttled client's request waits unread (Kafka mutes its channel); what it
            // sends meanwhile stays in the socket.
            if let Some(until) = self.mute.until() {
                tokio::time::sleep_until(until).await;
            }
            if let Err(reason) = self.on_frame(frame).await {
                return reason;
            }
        }
    }

    /// Why the connection must close now, if it must: no authentication in time, the session
    /// or its cluster gone, or idle too long.
    fn ended(&self, sasl_deadline: Instant, idle_deadline: Instant) -> Option<CloseReason> {
        let now = Instant::now();
        let Some(session) = &self.session else {
            return (now >= sasl_deadline)
                .then_some(CloseReason::SaslDeadline(self.limits.sasl_deadline));
        };
        if now_ms() >= session.expires_at_ms {
            return Some(CloseReason::SessionExpired);
        }
        let Some(cluster) = self.gw.registry().get(&session.cluster.id) else {
            return Some(CloseReason::ClusterGone);
        };
        if !cluster.credentials.stands(&session.used) || self.certificate_revoked(session) {
            return Some(CloseReason::Revoked);
        }
        (now >= idle_deadline).then_some(CloseReason::Idle(self.limits.idle_timeout))
    }

    /// Whether a revocation list published since the handshake names the client certificate
    /// the session was made from.
    fn certificate_revoked(&self, session: &Session) -> bool {
        matches!(
            session.used,
            crate::identity::credentials::Used::Certificate { .. }
        ) && self.certified.as_ref().is_some_and(|c| c.revoked_since())
    }

    /// Whether the session's credential still stands in `cluster`, its cluster's current
    /// record; looked at again only when the record changed, so the hot path compares a pointer.
    fn still_admitted(
        &mut self,
        session: &Session,
        cluster: &Arc<crate::tenancy::Cluster>,
    ) -> bool {
        if self
            .checked
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, cluster))
        {
            return true;
        }
        let stands = cluster.credentials.stands(&session.used);
        if stands {
            self.checked = Some(Arc::clone(cluster));
        }
        stands
    }

    /// Counts `bytes` of a request against the connection's and the cluster's budgets,
    /// waiting (reading nothing more from this client) until earlier requests' answers are
    /// written. A request larger than a budget takes all of it.
    async fn hold(&mut self, cluster: &uuid::Uuid, bytes: usize) -> Result<InFlight, CloseReason> {
        let closed = |_| CloseReason::Shutdown;
        let want = |budget: usize| bytes.clamp(1, budget.max(1)) as u32;
        let connection = self
            .connection_bytes
            .clone()
            .acquire_many_owned(want(self.limits.connection_bytes_in_flight))
            .await
            .map_err(closed)?;
        let budget = match &self.cluster_bytes {
            Some((id, budget)) if id == cluster => budget.clone(),
            _ => {
                let budget = self.gw.cluster_bytes(cluster);
                self.cluster_bytes = Some((*cluster, budget.clone()));
                budget
            }
        };
        let cluster = budget
            .acquire_many_owned(want(self.limits.cluster_bytes_in_flight))
            .await
            .map_err(closed)?;
        Ok(InFlight {
            _connection: connection,
            _cluster: cluster,
        })
    }

    /// Charges a request against its cluster's rate quotas as they are now, mutes the
    /// connection for the throttle, and says what its answer still needs (a fetch's bytes
    /// charged, the throttle written in).
    fn charge(&mut self, cluster: &crate::tenancy::Cluster, request: &RequestKind) -> Pending {
        let meter = match &self.quota_meter {
            Some((id, meter)) if *id == cluster.id => meter.clone(),
            _ => {
                let registry = self.gw.registry();
                let meter = self
                    .gw
                    .quota_meters()
                    .cluster(&cluster.id, registry.len(), |id| registry.get(id).is_some());
                self.quota_meter = Some((cluster.id, meter.clone()));
                meter
            }
        };
        let quotas = &cluster.quotas;
        let mut throttle = meter.charge(Kind::Requests, 1, quotas);
        if let RequestKind::Produce(req) = request {
            throttle = throttle.max(meter.charge_produce(req, quotas));
        }
        self.mute.extend(throttle);
        Pending {
            throttle,
            egress: matches!(request, RequestKind::Fetch(_)).then(|| (meter, *quotas)),
            mute: self.mute.clone(),
        }
    }

    async fn send(&self, out: Outgoing) -> Result<(), CloseReason> {
        self.tx.send(out).await.map_err(|_| {
            CloseReason::Write(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "writer ended",
            ))
        })
    }

    async fn send_now(
        &self,
        api: ApiKey,
        version: i16,
        correlation_id: i32,
        body: ResponseKind,
    ) -> Result<(), CloseReason> {
        let frame = Frame::response(api, version, correlation_id, &body).map_err(|e| {
            CloseReason::Upstream(crate::pool::UpstreamError::Encode(e.to_string()))
        })?;
        self.send(Outgoing::Ready(frame)).await
    }

    /// Refuses a request by closing the connection, as Kafka does for one it cannot parse:
    /// there is no valid answer to an API or version that was not offered (a bare error code
    /// is no response of any API, and clients fail decoding it). Answers already dispatched
    /// are still written.
    fn refuse(raw: RawHeader, why: impl Into<String>) -> CloseReason {
        CloseReason::Refused {
            api: raw.api_key,
            version: raw.api_version,
            why: why.into(),
        }
    }

    async fn on_frame(&mut self, mut frame: Bytes) -> Result<(), CloseReason> {
        let started = Instant::now();
        if self.raw_token_next {
            return self.authenticate_raw(frame).await;
        }
        let raw = match RawHeader::peek(&frame) {
            Ok(raw) => raw,
            Err(e) => {
                return Err(CloseReason::Refused {
                    api: -1,
                    version: -1,
                    why: e.to_string(),
                })
            }
        };
        let Ok(api) = ApiKey::try_from(raw.api_key) else {
            return Err(Self::refuse(raw, "unknown API key"));
        };
        let version = raw.api_version;
        // ApiVersions of a version we do not know is answered, not refused (KIP-511): the
        // client learns what we support and retries.
        if api == ApiKey::ApiVersions {
            let (_, header) =
                decode_request_header(&mut frame).map_err(|e| CloseReason::Refused {
                    api: raw.api_key,
                    version,
                    why: e.to_string(),
                })?;
            let answer_version = if (0..=4).contains(&version) {
                version
            } else {
                0
            };
            let req = if answer_version == version {
                ApiVersionsRequest::decode(&mut frame, version).unwrap_or_default()
            } else {
                ApiVersionsRequest::default()
            };
            let resp = versions::api_versions(self.gw.router(), &req, version);
            return self
                .send_now(
                    api,
                    answer_version,
                    header.correlation_id,
                    ResponseKind::ApiVersions(resp),
                )
                .await;
        }
        let sasl = matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
        if self.session.is_none() && !sasl {
            // Kafka's SSL: a certified client's first request other than SASL authenticates it.
            let Some(certified) = &self.certified else {
                return Err(Self::refuse(raw, "request before SASL authentication"));
            };
            let session = crate::identity::mtls::session(&self.gw, &certified.client, self.source);
            const MECHANISM: &str = "SSL";
            match &session {
                Ok(session) => self.audit_authentication(MECHANISM, Ok(session)),
                Err(e) => {
                    self.gw
                        .metrics()
                        .authentication_failed(e.cluster(), MECHANISM);
                    self.audit_authentication(MECHANISM, Err((e.cluster(), e)));
                }
            }
            let session = session.map_err(|e| CloseReason::AuthFailed(e.to_string()))?;
            self.admitted(session)?;
        }
        if !versions::is_supported(self.gw.router(), api, version) {
            return Err(Self::refuse(raw, "API or version not offered"));
        }
        if api != ApiKey::Produce && frame.len() > self.limits.max_control_frame_bytes {
            return Err(Self::refuse(
                raw,
                format!(
                    "request of {} bytes; requests without records may have at most {}",
                    frame.len(),
                    self.limits.max_control_frame_bytes
                ),
            ));
        }
        let size = frame.len();
        let (_, header) = decode_request_header(&mut frame).map_err(|e| CloseReason::Refused {
            api: raw.api_key,
            version,
            why: e.to_string(),
        })?;
        let request = kafka_protocol::protocol::types::with_element_budget(
            self.limits.max_request_elements,
            || RequestKind::decode(api, &mut frame, version),
        )
        .map_err(|e| CloseReason::Refused {
            api: raw.api_key,
            version,
            why: format!(
                "malformed request: {e} (at most {} array elements)",
                self.limits.max_request_elements
            ),
        })?;
        let correlation_id = header.correlation_id;
        match request {
            RequestKind::SaslHandshake(req) => self.handshake(version, correlation_id, req).await,
            RequestKind::SaslAuthenticate(req) => {
                self.authenticate(version, correlation_id, req).await
            }
            request => {
                let Some(session) = self.session.clone() else {
                    return Err(Self::refuse(raw, "request before SASL authentication"));
                };
                if now_ms() >= session.expires_at_ms {
                    return Err(CloseReason::SessionExpired);
                }
                let Some(cluster) = self.gw.registry().get(&session.cluster.id) else {
                    return Err(CloseReason::ClusterGone);
                };
                if !self.still_admitted(&session, &cluster) || self.certificate_revoked(&session) {
                    return Err(CloseReason::Revoked);
                }
                self.gw.signals().request();
                let held = self.hold(&session.cluster.id, size).await?;
                let mut pending = self.charge(&cluster, &request);
                let timed = Timed {
                    started,
                    cluster: session.metrics.clone(),
                    throttled: !pending.throttle.is_zero(),
                    traced: self.gw.tracer().and_then(|t| {
                        t.start(
                            api,
                            version,
                            correlation_id,
                            Some(session.cluster.id),
                            self.source,
                        )
                    }),
                };
                let ctx = Ctx {
                    gw: self.gw.clone(),
                    client: crate::pool::Caller::tenant(self.id, session.cluster.id)
                        .with_client_id(header.client_id.as_deref()),
                    session,
                };
                let metrics = self.gw.metrics();
                let reply = match api::handle(&ctx, version, request).await {
                    Ok(reply) => reply,
                    Err(e) => {
                        timed.end(metrics, api, Outcome::Failed);
                        return Err(e.into());
                    }
                };
                match reply {
                    Reply::Now(mut body) => {
                        set_throttle(&mut body, millis(pending.throttle));
                        timed.answered(metrics, api, false);
                        self.send_now(api, version, correlation_id, *body).await
                    }
                    Reply::Later(reply) => {
                        if api != ApiKey::Fetch {
                            pending.egress = None;
                        }
                        let reply = if pending.needed() {
                            pending.answer(reply)
                        } else {
                            reply
                        };
                        self.send(Outgoing::Pending {
                            api,
                            version,
                            correlation_id,
                            reply,
                            _held: held,
                            timed,
                        })
                        .await
                    }
                    Reply::Nothing => {
                        timed.answered(metrics, api, false);
                        Ok(())
                    }
                    Reply::Close(why) => {
                        timed.end(metrics, api, Outcome::Refused);
                        Err(CloseReason::Unanswerable(why))
                    }
                }
            }
        }
    }

    async fn handshake(
        &mut self,
        version: i16,
        correlation_id: i32,
        req: SaslHandshakeRequest,
    ) -> Result<(), CloseReason> {
        let mechanisms = sasl::MECHANISMS
            .iter()
            .map(|m| StrBytes::from_static_str(m))
            .collect();
        let mut resp = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
        match Mechanism::parse(req.mechanism.as_str()) {
            Some(m) => {
                self.exchange = Some(Exchange::Start(m));
                self.raw_token_next = version == 0;
            }
            None => resp.error_code = ResponseError::UnsupportedSaslMechanism.code(),
        }
        self.send_now(
            ApiKey::SaslHandshake,
            version,
            correlation_id,
            ResponseKind::SaslHandshake(resp),
        )
        .await
    }

    /// A SASL message after a v0 handshake, as a raw frame. Challenges and the last server
    /// message are answered as raw frames (an empty one when there is nothing to say);
    /// failure closes the connection, which is all v0 can say.
    async fn authenticate_raw(&mut self, message: Bytes) -> Result<(), CloseReason> {
        self.raw_token_next = false;
        let exchange = self
            .exchange
            .take()
            .expect("a v0 handshake set the exchange");
        let step = self
            .sasl_step(exchange, &message)
            .map_err(|e| CloseReason::AuthFailed(e.to_string()))?;
        let reply = match step {
            Step::Challenge(challenge, next) => {
                self.exchange = Some(next);
                self.raw_token_next = true;
                challenge
            }
            Step::Done(session, last) => {
                self.admitted(*session)?;
                last
            }
        };
        let mut frame = bytes::BytesMut::with_capacity(4 + reply.len());
        frame.extend_from_slice(&(reply.len() as u32).to_be_bytes());
        frame.extend_from_slice(&reply);
        self.send(Outgoing::Ready(Frame::from_bytes(frame.freeze())))
            .await
    }

    /// Takes one SASL message, and counts and audits how the exchange ended, if it did.
    fn sasl_step(&self, exchange: Exchange, message: &[u8]) -> Result<Step, sasl::AuthError> {
        let (mechanism, cluster) = exchange.describe();
        let step = sasl::step(
            &self.gw,
            exchange,
            message,
            self.session.as_deref(),
            self.source,
        );
        match &step {
            Ok(Step::Challenge(..)) => {}
            Ok(Step::Done(session, _)) => self.audit_authentication(mechanism, Ok(session)),
            Err(e) => {
                let cluster = cluster.or(e.cluster());
                self.gw.metrics().authentication_failed(cluster, mechanism);
                self.audit_authentication(mechanism, Err((cluster, e)));
            }
        }
        step
    }

    /// An audit event for an authentication that ended. A failure names the cluster only
    /// where the credential named one that exists, and says why in the words the client was
    /// told (which never hold a secret).
    fn audit_authentication(
        &self,
        mechanism: &'static str,
        outcome: Result<&Session, (Option<uuid::Uuid>, &sasl::AuthError)>,
    ) {
        use crate::telemetry::audit::{Event, EventType, Reason};
        let client_address = self.source.map(|ip| ip.to_string());
        let event = match outcome {
            Ok(session) => Event {
                kind: EventType::AuthenticationSucceeded,
                tenant: Some(session.cluster.tenant.clone()),
                cluster: Some(session.cluster.id),
                principal: Some(session.principal.clone()),
                client_address,
                action: mechanism.into(),
                resource: Some(session.cluster.arn(&self.gw.config().region)),
                granted: true,
                reason: None,
            },
            Err((cluster, error)) => Event {
                kind: EventType::AuthenticationFailed,
                tenant: None,
                cluster,
                principal: None,
                client_address,
                action: mechanism.into(),
                resource: None,
                granted: false,
                reason: Some(Reason::of(error)),
            },
        };
        self.gw.audit().emit(event);
    }

    /// A session proven: it takes its place in the cluster's connection quota (kept at a
    /// re-authentication) and replaces the one before it.
    fn admitted(&mut self, session: Session) -> Result<(), CloseReason> {
        tracing::debug!(
            principal = %session.principal,
            cluster = %session.cluster.id,
            "authenticated"
        );
        self.take_quota_slot(&session)?;
        self.checked = None;
        self.session = Some(Arc::new(session));
        Ok(())
    }

    /// Counts the connection against its cluster's connection quotas once, when it first
    /// authenticates (a re-authentication keeps its place); over them, it closes without an
    /// answer, as Kafka closes a connection over its quotas, and the client reconnects later.
    fn take_quota_slot(&mut self, session: &Session) -> Result<(), CloseReason> {
        if self.quota_slot.is_none() {
            let slot = self.gw.quota_counts().connect(&self.gw, &session.cluster);
            self.quota_slot = Some(slot.map_err(CloseReason::OverQuota)?);
        }
        Ok(())
    }

    async fn authenticate(
        &mut self,
        version: i16,
        correlation_id: i32,
        req: SaslAuthenticateRequest,
    ) -> Result<(), CloseReason> {
        let Some(exchange) = self.exchange.take() else {
            let resp = SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "SaslAuthenticate must follow a successful SaslHandshake",
                )));
            self.send_now(
                ApiKey::SaslAuthenticate,
                version,
                correlation_id,
                ResponseKind::SaslAuthenticate(resp),
            )
            .await?;
            return Err(CloseReason::AuthFailed(
                "authenticate without handshake".into(),
            ));
        };
        let step = self.sasl_step(exchange, &req.auth_bytes);
        let resp = match step {
            Ok(Step::Challenge(challenge, next)) => {
                self.exchange = Some(next);
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(challenge))
            }
            Ok(Step::Done(session, last)) => {
                let lifetime = (session.expires_at_ms - now_ms()).max(0);
                self.admitted(*session)?;
                SaslAuthenticateResponse::default()
                    .with_auth_bytes(Bytes::from(last))
                    .with_session_lifetime_ms(lifetime)
            }
            Err(e) => {
                let message = e.to_string();
                let resp = SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_string(message.clone())));
                self.send_now(
                    ApiKey::SaslAuthenticate,
                    version,
                    correlation_id,
                    ResponseKind::SaslAuthenticate(resp),
                )
                .await?;
                return Err(CloseReason::AuthFailed(message));
            }
        };
        self.send_now(
            ApiKey::SaslAuthenticate,
            version,
            correlation_id,
            ResponseKind::SaslAuthenticate(resp),
        )
        .await
    }
}
