//! Request traces: a sampled request becomes one SERVER span, buffered and exported in batches.
//!
//! The data path asks [`Tracer::start`] once per request when it reads it: one random draw,
//! and `None` for a request not sampled, which then costs nothing more. A sampled request's
//! [`Traced`] ends with its answer; its span is queued without waiting, and dropped (and
//! counted) when the queue is full, so a slow or absent receiver never holds a request.
//! ([`Tracer::sampled`] and [`Tracer::request`] do the same in two steps, for a caller that
//! knows everything at the end.)

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::ApiKey;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::convert::{int, scope, string};
use super::Stats;
use crate::telemetry::metrics::Outcome;

/// Spans per export: the OpenTelemetry SDK's batch span processor's default
/// (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`), which receivers are sized for.
pub const TRACE_BATCH: usize = 512;

/// Spans waiting for export before new ones are dropped: the SDK's default queue
/// (`OTEL_BSP_MAX_QUEUE_SIZE`), four batches, which rides out a receiver's few seconds of
/// trouble at a 1% ratio of tens of thousands of requests a second.
pub const SPAN_QUEUE: usize = 2_048;

/// How long a span waits for a batch to fill before it is sent anyway: the SDK's
/// `OTEL_BSP_SCHEDULE_DELAY`.
pub const TRACE_FLUSH: Duration = Duration::from_secs(5);

/// Fraction of requests traced unless configured: enough to see every busy API's latency
/// shape, while exporting costs a small fraction of what the requests themselves cost.
pub const DEFAULT_TRACE_RATIO: f64 = 0.01;

/// Which requests are traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampler {
    Never,
    Always,
    /// A draw below this is sampled: the ratio of 2^64.
    Below(u64),
}

impl Sampler {
    fn new(ratio: f64) -> Sampler {
        if ratio.is_nan() || ratio <= 0.0 {
            Sampler::Never
        } else if ratio >= 1.0 {
            Sampler::Always
        } else {
            // Float-to-integer casts saturate; ratio < 1 keeps this below 2^64.
            Sampler::Below((ratio * 18_446_744_073_709_551_616.0) as u64)
        }
    }

    #[inline]
    fn sampled(self) -> bool {
        match self {
            Sampler::Never => false,
            Sampler::Always => true,
            Sampler::Below(threshold) => rand::random::<u64>() < threshold,
        }
    }
}

/// What the connection knows about a request when its answer is written.
#[derive(Debug, Clone)]
pub struct RequestSpan {
    pub api: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    /// The authenticated session's cluster; `None` before authentication.
    pub cluster: Option<Uuid>,
    pub outcome: Outcome,
    /// From the request's decoding to its answer's being written (what the latency histogram
    /// observes); the span ends now.
    pub took: Duration,
    /// The client's address (after the PROXY protocol, when trusted).
    pub client: Option<IpAddr>,
}

/// Hands sampled requests' spans to the exporter. Cheap to clone.
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

struct Inner {
    sampler: Sampler,
    spans: mpsc::Sender<Span>,
    stats: Arc<Stats>,
}

impl Tracer {
    pub(super) fn new(ratio: f64, stats: Arc<Stats>) -> (Tracer, mpsc::Receiver<Span>) {
        let (spans, queued) = mpsc::channel(SPAN_QUEUE);
        let tracer = Tracer {
            inner: Arc::new(Inner {
                sampler: Sampler::new(ratio),
                spans,
                stats,
            }),
        };
        (tracer, queued)
    }

    /// Whether this request is traced: one random draw, nothing else. Call [`Tracer::request`]
    /// only when it says yes.
    #[inline]
    pub fn sampled(&self) -> bool {
        self.inner.sampler.sampled()
    }

    /// A request just read, traced if it is sampled: `None` (after one random draw) when not.
    #[inline]
    pub fn start(
        &self,
        api: ApiKey,
        api_version: i16,
        correlation_id: i32,
        cluster: Option<Uuid>,
        client: Option<IpAddr>,
    ) -> Option<Traced> {
        if !self.sampled() {
            return None;
        }
        Some(Traced {
            tracer: self.clone(),
            api,
            api_version,
            correlation_id,
            cluster,
            client,
        })
    }

    /// Queues the span of a sampled request that ends now; never waits.
    pub fn request(&self, request: RequestSpan) {
        let span = request_span(&request, SystemTime::now());
        if self.inner.spans.try_send(span).is_err() {
            self.inner.stats.spans_dropped(1);
        }
    }
}

/// A sampled request until its answer is written.
pub struct Traced {
    tracer: Tracer,
    api: ApiKey,
    api_version: i16,
    correlation_id: i32,
    cluster: Option<Uuid>,
    client: Option<IpAddr>,
}

impl Traced {
    /// The request ended now, `took` after it was read.
    pub fn end(self, outcome: Outcome, took: Duration) {
        self.tracer.request(RequestSpan {
            api: self.api,
            api_version: self.api_version,
            correlation_id: self.correlation_id,
            cluster: self.cluster,
            outcome,
            took,
            client: self.client,
        });
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Random identifiers; OTLP reads an all-zero id as none, so one is never sent.
fn random_id<const N: usize>() -> [u8; N] {
    let mut id: [u8; N] = rand::random();
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

/// The span of `request`, ended at `end`. Named after the Kafka API, with OpenTelemetry's
/// messaging attributes and Tollgate's own.
pub(super) fn request_span(request: &RequestSpan, end: SystemTime) -> Span {
    let end_ns = unix_nanos(end);
    let start_ns =
        end_ns.saturating_sub(u64::try_from(request.took.as_nanos()).unwrap_or(u64::MAX));
    let api = format!("{:?}", request.api);
    let mut attributes = vec![
        string("messaging.system", "kafka"),
        string("messaging.operation.name", &api),
        int("tollgate.api_version", i64::from(request.api_version)),
        int("tollgate.correlation_id", i64::from(request.correlation_id)),
        string("tollgate.outcome", request.outcome.label()),
    ];
    if let Some(cluster) = request.cluster {
        attributes.push(string("tollgate.cluster", &cluster.to_string()));
    }
    if let Some(client) = request.client {
        attributes.push(string("client.address", &client.to_string()));
    }
    let status = match request.outcome {
        Outcome::Failed | Outcome::Refused => Status {
            code: status::StatusCode::Error as i32,
            message: request.outcome.label().to_owned(),
        },
        // An answered request, throttled or not, is left unset as the specification asks of
        // instrumentation that saw no error.
        Outcome::Ok | Outcome::Throttled => Status::default(),
    };
    Span {
        trace_id: random_id::<16>().to_vec(),
        span_id: random_id::<8>().to_vec(),
        name: api,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: end_ns,
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

/// One export of `spans`.
pub(super) fn traces_request(spans: Vec<Span>, resource: &Resource) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    fn request(outcome: Outcome) -> RequestSpan {
        RequestSpan {
            api: ApiKey::Produce,
            api_version: 9,
            correlation_id: 77,
            cluster: Some(Uuid::from_u128(0xa)),
            outcome,
            took: Duration::from_millis(3),
            client: Some("127.0.0.1".parse().unwrap()),
        }
    }

    fn attribute<'a>(span: &'a Span, key: &str) -> &'a Any {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .unwrap_or_else(|| panic!("no attribute {key}"))
    }

    #[test]
    fn ratios_at_and_past_the_ends_never_or_always_sample() {
        for ratio in [0.0, -1.0, f64::NAN] {
            let s = Sampler::new(ratio);
            assert_eq!(s, Sampler::Never);
            assert!((0..10_000).all(|_| !s.sampled()));
        }
        for ratio in [1.0, 2.0, f64::INFINITY] {
            let s = Sampler::new(ratio);
            assert_eq!(s, Sampler::Always);
            assert!((0..10_000).all(|_| s.sampled()));
        }
    }

    #[test]
    fn a_ratio_samples_about_that_fraction() {
        let s = Sampler::new(0.25);
        let n = 200_000;
        let hits = (0..n).filter(|_| s.sampled()).count();
        // Sixteen standard deviations of a binomial(200000, 0.25) either side: never flaky,
        // still far from 0.2 or 0.3.
        let sd = (n as f64 * 0.25 * 0.75).sqrt();
        assert!(
            (hits as f64 - n as f64 * 0.25).abs() < 16.0 * sd,
            "{hits} of {n}"
        );
    }

    #[test]
    fn an_unsampled_tracer_queues_nothing() {
        let stats = Arc::new(Stats::default());
        let (tracer, mut queued) = Tracer::new(0.0, stats.clone());
        let mut traced = 0;
        for _ in 0..1_000 {
            if tracer.sampled() {
                tracer.request(request(Outcome::Ok));
                traced += 1;
            }
        }
        assert_eq!(traced, 0);
        assert!(queued.try_recv().is_err());
        assert_eq!(stats.dropped(), 0);
    }

    #[test]
    fn a_started_request_is_queued_when_it_ends_and_only_if_sampled() {
        let stats = Arc::new(Stats::default());
        let (never, mut none) = Tracer::new(0.0, stats.clone());
        assert!(never.start(ApiKey::Fetch, 12, 1, None, None).is_none());
        assert!(none.try_recv().is_err());
        let (always, mut queued) = Tracer::new(1.0, stats);
        let traced = always
            .start(ApiKey::Fetch, 12, 5, Some(Uuid::from_u128(0xb)), None)
            .expect("sampled");
        assert!(queued.try_recv().is_err(), "queued before it ended");
        traced.end(Outcome::Failed, Duration::from_millis(7));
        let span = queued.try_recv().unwrap();
        assert_eq!(span.name, "Fetch");
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            7_000_000
        );
        assert_eq!(
            attribute(&span, "tollgate.correlation_id"),
            &Any::IntValue(5)
        );
        assert_eq!(span.status.unwrap().code, status::StatusCode::Error as i32);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let stats = Arc::new(Stats::default());
        let (tracer, mut queued) = Tracer::new(1.0, stats.clone());
        for _ in 0..SPAN_QUEUE + 3 {
            assert!(tracer.sampled());
            tracer.request(request(Outcome::Ok));
        }
        assert_eq!(stats.dropped(), 3);
        let mut n = 0;
        while queued.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, SPAN_QUEUE);
    }

    #[test]
    fn a_request_becomes_a_server_span_named_after_its_api() {
        let end = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let span = request_span(&request(Outcome::Throttled), end);
        assert_eq!(span.name, "Produce");
        assert_eq!(span.kind, span::SpanKind::Server as i32);
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.span_id.len(), 8);
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(
            span.end_time_unix_nano - span.start_time_unix_nano,
            3_000_000
        );
        assert_eq!(
            attribute(&span, "messaging.system"),
            &Any::StringValue("kafka".into())
        );
        assert_eq!(
            attribute(&span, "messaging.operation.name"),
            &Any::StringValue("Produce".into())
        );
        assert_eq!(
            attribute(&span, "tollgate.cluster"),
            &Any::StringValue(Uuid::from_u128(0xa).to_string())
        );
        assert_eq!(
            attribute(&span, "tollgate.outcome"),
            &Any::StringValue("throttled".into())
        );
        assert_eq!(attribute(&span, "tollgate.api_version"), &Any::IntValue(9));
        assert_eq!(
            attribute(&span, "client.address"),
            &Any::StringValue("127.0.0.1".into())
        );
        assert_eq!(span.status.as_ref().unwrap().code, 0);
        // Two spans never share ids.
        let other = request_span(&request(Outcome::Ok), end);
        assert_ne!(other.trace_id, span.trace_id);
        assert_ne!(other.span_id, span.span_id);
    }

    #[test]
    fn failed_and_refused_requests_are_errors() {
        for outcome in [Outcome::Failed, Outcome::Refused] {
            let span = request_span(&request(outcome), SystemTime::now());
            let status = span.status.unwrap();
            assert_eq!(status.code, status::StatusCode::Error as i32);
            assert_eq!(status.message, outcome.label());
        }
        let mut anonymous = request(Outcome::Refused);
        anonymous.cluster = None;
        anonymous.client = None;
        let span = request_span(&anonymous, SystemTime::now());
        assert!(span
            .attributes
            .iter()
            .all(|kv| kv.key != "tollgate.cluster" && kv.key != "client.address"));
    }

    #[test]
    fn a_batch_survives_protobuf_encoding() {
        let spans = vec![
            request_span(&request(Outcome::Ok), SystemTime::now()),
            request_span(&request(Outcome::Failed), SystemTime::now()),
        ];
        let req = traces_request(spans, &super::super::convert::resource("i"));
        let back = ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, req);
        assert_eq!(back.resource_spans[0].scope_spans[0].spans.len(), 2);
    }
}
