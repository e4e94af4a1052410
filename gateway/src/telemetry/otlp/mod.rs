//! OpenTelemetry export (`--otlp-endpoint URL`): the metrics and sampled request traces,
//! posted as OTLP/HTTP protobuf to a receiver (an OpenTelemetry Collector, or any backend that
//! takes OTLP).
//!
//! - Metrics: every `interval`, the collection `GET /metrics` shows the operator
//!   ([`metrics::collect`] with [`Scope::All`]) becomes one `ExportMetricsServiceRequest`
//!   ([`convert`]) posted to `<endpoint>/v1/metrics`. The registry already aggregates, so no
//!   OpenTelemetry SDK runs beside it: an export is a snapshot, cumulative from the process's
//!   start, and one that fails is superseded by the next.
//! - Traces: the gateway holds a [`Tracer`]; a sampled request becomes a SERVER span
//!   ([`trace`]), exported in batches of [`trace::TRACE_BATCH`] to `<endpoint>/v1/traces`
//!   at least every [`trace::TRACE_FLUSH`].
//! - Delivery ([`http`]) retries as the OTLP/HTTP spec asks, never on the data path; a failing
//!   receiver is logged once when it starts failing and once when it recovers.
//! - `tollgate_otlp_exports_total{signal,outcome}` (`ok`, `rejected`, `failed`) and
//!   `tollgate_otlp_spans_dropped_total` (spans that never reached the receiver: queue full,
//!   export failed or rejected) are in the operator's collection.
//!
//! Assembly: [`Otlp::new`] validates the configuration; [`Otlp::tracer`] goes to the gateway;
//! [`Otlp::run`] exports until its stop, then exports once more.

pub mod convert;
pub mod http;
#[cfg(test)]
mod test_receiver;
pub mod trace;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::http::{Client, Delivery, Endpoint, Signal, Tls};
use crate::state::Gateway;
use crate::telemetry::metrics::{self, Collect, Family, Kind, Scope, Value};
pub use trace::{RequestSpan, Traced, Tracer, DEFAULT_TRACE_RATIO};

/// How often metrics are exported unless configured: as often as Prometheus is commonly told to
/// scrape, so that dashboards fed either way move alike. Values are cumulative, so a longer
/// interval loses no count, only resolution.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// The shortest interval accepted: each export walks every cluster's topics as a scrape does,
/// and more than ten a second would cost the data path CPU for no dashboard's benefit.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long a trace batch is retried. While it is, new spans queue and then drop, so retrying
/// longer would only trade recent spans for old ones.
const TRACE_RETRY_FOR: Duration = Duration::from_secs(15);

/// How long a stop waits for each signal's last export: a receiver that is down must not hold
/// the gateway's exit (orchestrators allow 30 s from SIGTERM to SIGKILL, which draining the
/// connections needs too).
pub const SHUTDOWN_EXPORT: Duration = Duration::from_secs(5);

/// What `--otlp-*` configure.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The receiver's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it
    /// (`http://127.0.0.1:4318`); signals go to `/v1/metrics` and `/v1/traces` under it.
    pub endpoint: String,
    /// How often metrics are exported.
    pub interval: Duration,
    /// The fraction of requests traced, from 0 (none) to 1 (all).
    pub trace_ratio: f64,
    /// The CA certificates (PEM) an https receiver's certificate is checked against; the
    /// system's bundle when not given.
    pub certificate: Option<PathBuf>,
}

impl OtlpConfig {
    /// The defaults, to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            interval: DEFAULT_INTERVAL,
            trace_ratio: DEFAULT_TRACE_RATIO,
            certificate: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    #[error("--otlp-endpoint {url:?}: {reason}")]
    Endpoint { url: String, reason: String },
    #[error("--otlp-trace-ratio {0}: expected a fraction of requests from 0 to 1")]
    TraceRatio(String),
    #[error("--otlp-interval {0:?} is shorter than the {MIN_INTERVAL:?} allowed")]
    Interval(Duration),
    #[error("--otlp-endpoint over https: {0}")]
    Tls(String),
}

/// How an export ended, as `tollgate_otlp_exports_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Delivered whole.
    Ok,
    /// Answered with an error retrying cannot fix, or delivered with some data rejected.
    Rejected,
    /// No answer that counts before the export's time ran out.
    Failed,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Rejected, Outcome::Failed];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
        }
    }
}

/// What the exporter did, for the operator's collection.
#[derive(Default)]
pub(crate) struct Stats {
    /// Per signal (as in [`Signal::ALL`]), per outcome (as in [`Outcome::ALL`]).
    exports: [[AtomicU64; 3]; 2],
    spans_dropped: AtomicU64,
}

impl Stats {
    fn exported(&self, signal: Signal, outcome: Outcome) {
        self.exports[signal as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn spans_dropped(&self, n: u64) {
        self.spans_dropped.fetch_add(n, Ordering::Relaxed);
    }

    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.spans_dropped.load(Ordering::Relaxed)
    }
}

impl Collect for Stats {
    fn collect(&self, scope: Scope, out: &mut Vec<Family>) {
        if !scope.operator() {
            return;
        }
        let mut exports = Family::new(
            "tollgate_otlp_exports_total",
            "OTLP exports by signal (metrics, traces) and outcome (ok, rejected, failed).",
            Kind::Counter,
        );
        for signal in Signal::ALL {
            for outcome in Outcome::ALL {
                let n = self.exports[signal as usize][outcome as usize].load(Ordering::Relaxed);
                exports.push(
                    vec![
                        ("signal", signal.label().to_owned()),
                        ("outcome", outcome.label().to_owned()),
                    ],
                    Value::Int(n),
                );
            }
        }
        let mut dropped = Family::new(
            "tollgate_otlp_spans_dropped_total",
            "Sampled request spans that never reached the OTLP receiver (queue full, export failed or rejected).",
            Kind::Counter,
        );
        dropped.push(
            vec![],
            Value::Int(self.spans_dropped.load(Ordering::Relaxed)),
        );
        out.push(exports);
        out.push(dropped);
    }
}

/// One signal's exports' recent history, so that an outage is logged when it starts and when
/// it ends, not at every export.
struct Health {
    signal: Signal,
    url: String,
    /// Since when exports are not delivered whole, how the last one ended, and how many ended
    /// so.
    trouble: Option<(Instant, Outcome, u64)>,
}

impl Health {
    fn new(signal: Signal, endpoint: &Endpoint) -> Health {
        Health {
            signal,
            url: endpoint.url(signal),
            trouble: None,
        }
    }

    fn record(&mut self, stats: &Stats, outcome: Outcome, why: &str) {
        stats.exported(self.signal, outcome);
        let signal = self.signal.label();
        match (outcome, &mut self.trouble) {
            (Outcome::Ok, None) => {}
            (Outcome::Ok, Some((since, _, exports))) => {
                tracing::info!(
                    signal,
                    url = %self.url,
                    exports_not_delivered = *exports,
                    after = ?since.elapsed(),
                    "OTLP export recovered"
                );
                self.trouble = None;
            }
            (bad, Some((_, last, exports))) if *last == bad => {
                *exports += 1;
                tracing::debug!(signal, url = %self.url, error = %why, "OTLP export still {}", bad.label());
            }
            (bad, trouble) => {
                tracing::warn!(
                    signal,
                    url = %self.url,
                    error = %why,
                    "OTLP export {}; not logged again until it recovers (see tollgate_otlp_exports_total)",
                    bad.label()
                );
                let since = trouble.map_or_else(Instant::now, |(since, _, _)| since);
                let exports = trouble.map_or(0, |(_, _, n)| n) + 1;
                *trouble = Some((since, bad, exports));
            }
        }
    }
}

/// The exporter, configured and not yet running.
pub struct Otlp {
    endpoint: Arc<Endpoint>,
    tls: Option<Tls>,
    interval: Duration,
    tracer: Tracer,
    spans: mpsc::Receiver<Span>,
    stats: Arc<Stats>,
    resource: Resource,
    /// When the cumulative counters began, in Unix nanoseconds.
    started: u64,
}

impl Otlp {
    /// Checks `config` (the URL, the ratio, the interval, the CA file) without connecting:
    /// a receiver that is not up yet is retried, not refused.
    pub fn new(config: OtlpConfig) -> Result<Otlp, OtlpError> {
        let endpoint = Endpoint::parse(&config.endpoint).map_err(|reason| OtlpError::Endpoint {
            url: config.endpoint.clone(),
            reason,
        })?;
        if !(0.0..=1.0).contains(&config.trace_ratio) {
            return Err(OtlpError::TraceRatio(config.trace_ratio.to_string()));
        }
        if config.interval < MIN_INTERVAL {
            return Err(OtlpError::Interval(config.interval));
        }
        let tls = if endpoint.https() {
            Some(http::tls(&endpoint, config.certificate.as_deref()).map_err(OtlpError::Tls)?)
        } else {
            None
        };
        let stats = Arc::new(Stats::default());
        let (tracer, spans) = Tracer::new(config.trace_ratio, stats.clone());
        Ok(Otlp {
            endpoint: Arc::new(endpoint),
            tls,
            interval: config.interval,
            tracer,
            spans,
            stats,
            // A process is one instance: its counters start at zero with it.
            resource: convert::resource(&uuid::Uuid::new_v4().to_string()),
            started: unix_nanos(SystemTime::now()),
        })
    }

    /// The handle the data path traces requests with.
    pub fn tracer(&self) -> Tracer {
        self.tracer.clone()
    }

    /// Exports `gw`'s metrics every interval and the tracer's spans as they come, until `stop`
    /// resolves; then each signal once more (the metrics as they stand, the spans still
    /// queued), within [`SHUTDOWN_EXPORT`]. Stop it after the listeners have drained, so that
    /// the last requests are in the last export.
    pub async fn run(self, gw: Gateway, stop: impl Future<Output = ()>) {
        let Otlp {
            endpoint,
            tls,
            interval,
            tracer,
            spans,
            stats,
            resource,
            started,
        } = self;
        // The gateway holds the clones that matter; once they are gone, the span queue closes.
        drop(tracer);
        gw.metrics().register(stats.clone());
        tracing::info!(
            metrics = %endpoint.url(Signal::Metrics),
            traces = %endpoint.url(Signal::Traces),
            ?interval,
            "OTLP export on"
        );
        let (stopping, stopped) = watch::channel(false);
        let exporter = |signal| Exporter {
            client: Client::new(endpoint.clone(), tls.clone()),
            health: Health::new(signal, &endpoint),
            stats: stats.clone(),
            resource: resource.clone(),
        };
        tokio::join!(
            async move {
                stop.await;
                let _ = stopping.send(true);
            },
            exporter(Signal::Metrics).metrics(gw, interval, started, stopped.clone()),
            exporter(Signal::Traces).traces(spans, stopped),
        );
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a stop too.
    let _ = stopped.wait_for(|s| *s).await;
}

/// One signal's export loop.
struct Exporter {
    client: Client,
    health: Health,
    stats: Arc<Stats>,
    resource: Resource,
}

impl Exporter {
    async fn metrics(
        mut self,
        gw: Gateway,
        interval: Duration,
        started: u64,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = until_stopped(&mut stopped) => break,
                _ = tick.tick() => {}
            }
            let request = self.metrics_body(&gw, started);
            // The next export carries the same counts and newer: retrying past it is pointless.
            let deadline = Instant::now() + interval;
            let delivery = tokio::select! {
                d = self.client.export(Signal::Metrics, request, deadline) => d,
                _ = until_stopped(&mut stopped) => {
                    self.client.reset();
                    break;
                }
            };
            self.metrics_delivered(delivery);
        }
        let request = self.metrics_body(&gw, started);
        let delivery = self
            .client
            .export(Signal::Metrics, request, Instant::now() + SHUTDOWN_EXPORT)
            .await;
        self.metrics_delivered(delivery);
    }

    fn metrics_body(&self, gw: &Gateway, started: u64) -> Bytes {
        let families = metrics::collect(gw, Scope::All);
        let times = convert::Times {
            start: started,
            now: unix_nanos(SystemTime::now()),
        };
        Bytes::from(convert::metrics_request(&families, &self.resource, times).encode_to_vec())
    }

    fn metrics_delivered(&mut self, delivery: Delivery) {
        let (outcome, why) = match delivery {
            Delivery::Delivered(answer) => {
                match ExportMetricsServiceResponse::decode(answer)
                    .ok()
                    .and_then(|r| r.partial_success)
                    .filter(|p| p.rejected_data_points > 0)
                {
                    Some(p) => (
                        Outcome::Rejected,
                        format!(
                            "{} data points rejected: {}",
                            p.rejected_data_points, p.error_message
                        ),
                    ),
                    None => (Outcome::Ok, String::new()),
                }
            }
            Delivery::Rejected(why) => (Outcome::Rejected, why),
            Delivery::Failed(why) => (Outcome::Failed, why),
        };
        self.health.record(&self.stats, outcome, &why);
    }

    async fn traces(mut self, mut spans: mpsc::Receiver<Span>, mut stopped: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(trace::TRACE_BATCH);
        // A batch whose export a stop interrupted: sent again with the last.
        let mut interrupted = None;
        let mut tick = tokio::time::interval(trace::TRACE_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let room = trace::TRACE_BATCH - batch.len();
            let due = tokio::select! {
                _ = until_stopped(&mut stopped) => break,
                n = spans.recv_many(&mut batch, room) => {
                    if n == 0 {
                        break; // every tracer is gone
                    }
                    batch.len() >= trace::TRACE_BATCH
                }
                _ = tick.tick() => true,
            };
            if !due || batch.is_empty() {
                continue;
            }
            let (request, count) = self.traces_body(std::mem::take(&mut batch));
            let deadline = Instant::now() + TRACE_RETRY_FOR;
            let delivery = tokio::select! {
                d = self.client.export(Signal::Traces, request.clone(), deadline) => d,
                _ = until_stopped(&mut stopped) => {
                    self.client.reset();
                    interrupted = Some((request, count));
                    break;
                }
            };
            self.traces_delivered(delivery, count);
        }
        // What is queued now is all there will be: the listeners have stopped.
        while let Ok(span) = spans.try_recv() {
            batch.push(span);
        }
        let deadline = Instant::now() + SHUTDOWN_EXPORT;
        let mut last = Vec::from_iter(interrupted);
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(trace::TRACE_BATCH));
            last.push(self.traces_body(std::mem::replace(&mut batch, rest)));
        }
        for (request, count) in last {
            let delivery = self.client.export(Signal::Traces, request, deadline).await;
            self.traces_delivered(delivery, count);
        }
    }

    fn traces_body(&self, spans: Vec<Span>) -> (Bytes, u64) {
        let count = spans.len() as u64;
        let request = trace::traces_request(spans, &self.resource);
        (Bytes::from(request.encode_to_vec()), count)
    }

    fn traces_delivered(&mut self, delivery: Delivery, count: u64) {
        let (outcome, why, lost) = match delivery {
            Delivery::Delivered(answer) => {
                match ExportTraceServiceResponse::decode(answer)
                    .ok()
                    .and_then(|r| r.partial_success)
                    .filter(|p| p.rejected_spans > 0)
                {
                    Some(p) => (
                        Outcome::Rejected,
                        format!("{} spans rejected: {}", p.rejected_spans, p.error_message),
                        u64::try_from(p.rejected_spans).unwrap_or(0).min(count),
                    ),
                    None => (Outcome::Ok, String::new(), 0),
                }
            }
            Delivery::Rejected(why) => (Outcome::Rejected, why, count),
            Delivery::Failed(why) => (Outcome::Failed, why, count),
        };
        self.stats.spans_dropped(lost);
        self.health.record(&self.stats, outcome, &why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    use test_receiver::Receiver;
    use uuid::Uuid;

    const ALLOW_ALL: &str =
        r#"{"Statement":[{"Effect":"Allow","Action":"kafka-cluster:*","Resource":"*"}]}"#;

    fn attribute(kvs: &[KeyValue], key: &str) -> Option<String> {
        kvs.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                Any::StringValue(s) => Some(s.clone()),
                Any::IntValue(n) => Some(n.to_string()),
                _ => None,
            }
        })
    }

    /// The integer value of `name`'s point whose attributes include `attrs`.
    fn sum_value(
        req: &ExportMetricsServiceRequest,
        name: &str,
        attrs: &[(&str, &str)],
    ) -> Option<i64> {
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let m = metrics.iter().find(|m| m.name == name)?;
        let Some(metric::Data::Sum(sum)) = &m.data else {
            panic!("{name} is not a sum")
        };
        sum.data_points
            .iter()
            .find(|p| {
                attrs
                    .iter()
                    .all(|(k, v)| attribute(&p.attributes, k).as_deref() == Some(*v))
            })
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(n)) => n,
                other => panic!("{name}: not an integer: {other:?}"),
            })
    }

    #[test]
    fn configurations_are_checked_before_anything_runs() {
        let bad = |change: fn(&mut OtlpConfig)| {
            let mut c = OtlpConfig::new("http://127.0.0.1:4318");
            change(&mut c);
            Otlp::new(c).err().expect("refused").to_string()
        };
        assert!(bad(|c| c.endpoint = "127.0.0.1:4318".into()).contains("--otlp-endpoint"));
        assert!(bad(|c| c.trace_ratio = 1.5).contains("--otlp-trace-ratio 1.5"));
        assert!(bad(|c| c.trace_ratio = f64::NAN).contains("--otlp-trace-ratio"));
        assert!(bad(|c| c.interval = Duration::ZERO).contains("--otlp-interval"));
        assert!(bad(|c| {
            c.endpoint = "https://127.0.0.1:4318".into();
            c.certificate = Some("/nonexistent/ca.pem".into());
        })
        .contains("/nonexistent/ca.pem"));
        assert!(Otlp::new(OtlpConfig::new("http://127.0.0.1:4318")).is_ok());
    }

    #[tokio::test]
    async fn a_receiver_gets_the_gateway_s_counts_and_spans() {
        // The first metrics export meets a receiver that is briefly unavailable.
        let receiver = Receiver::start(|path, n| {
            if path == "/v1/metrics" && n == 0 {
                test_receiver::unavailable()
            } else {
                test_receiver::ok()
            }
        })
        .await;
        let ctx = crate::api::testing::ctx(ALLOW_ALL);
        let gw = ctx.gw.clone();
        let cluster = Uuid::from_u128(0xa);
        let counters = gw.metrics().cluster(cluster).unwrap();
        counters
            .topics
            .get(b"pool-name-of-orders", || Some("orders".into()))
            .produced(1_234, 5);
        counters.request(ApiKey::Produce, crate::telemetry::metrics::Outcome::Ok);

        let mut config = OtlpConfig::new(format!("http://{}", receiver.addr));
        // One export at the start, one at the stop: nothing in between.
        config.interval = Duration::from_secs(3_600);
        config.trace_ratio = 1.0;
        let otlp = Otlp::new(config).unwrap();
        let tracer = otlp.tracer();
        let stats = otlp.stats.clone();
        let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(otlp.run(gw.clone(), async move {
            let _ = stopping.await;
        }));

        let first = receiver.next("/v1/metrics").await;
        assert_eq!(
            first.content_type.as_deref(),
            Some("application/x-protobuf")
        );
        // The refused attempt and its retry carry the same export.
        let retried = receiver.next("/v1/metrics").await;
        assert_eq!(first.body, retried.body);
        let req = ExportMetricsServiceRequest::decode(retried.body.clone()).unwrap();
        let resource = req.resource_metrics[0].resource.as_ref().unwrap();
        assert_eq!(
            attribute(&resource.attributes, "service.name").as_deref(),
            Some("tollgate")
        );
        let topic = [("cluster", cluster.to_string()), ("topic", "orders".into())];
        let topic: Vec<(&str, &str)> = topic.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            sum_value(&req, "tollgate_topic_bytes_in_total", &topic),
            Some(1_234)
        );
        assert_eq!(
            sum_value(&req, "tollgate_topic_messages_in_total", &topic),
            Some(5)
        );
        assert_eq!(
            sum_value(
                &req,
                "tollgate_requests_total",
                &[("api", "Produce"), ("outcome", "ok")]
            ),
            Some(1)
        );

        // A stop abandons an export still waiting for its answer; this one is to count.
        tokio::time::timeout(Duration::from_secs(10), async {
            while stats.exports[Signal::Metrics as usize][Outcome::Ok as usize]
                .load(Ordering::Relaxed)
                == 0
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first export's answer is read");

        // Counted after the first export, traced, then stopped: the last export has them.
        counters
            .topics
            .get(b"pool-name-of-orders", || None)
            .produced(766, 1);
        for api in [ApiKey::Produce, ApiKey::Fetch, ApiKey::Metadata] {
            assert!(tracer.sampled());
            tracer.request(RequestSpan {
                api,
                api_version: 4,
                correlation_id: 1,
                cluster: Some(cluster),
                outcome: crate::telemetry::metrics::Outcome::Ok,
                took: Duration::from_millis(2),
                client: None,
            });
        }
        stop.send(()).unwrap();
        let last = receiver.next("/v1/metrics").await;
        let traces = receiver.next("/v1/traces").await;
        run.await.unwrap();

        let req = ExportMetricsServiceRequest::decode(last.body).unwrap();
        assert_eq!(
            sum_value(&req, "tollgate_topic_bytes_in_total", &topic),
            Some(2_000)
        );
        assert_eq!(
            sum_value(&req, "tollgate_topic_messages_in_total", &topic),
            Some(6)
        );
        // The exporter counts itself: the first export, delivered on its retry.
        assert_eq!(
            sum_value(
                &req,
                "tollgate_otlp_exports_total",
                &[("signal", "metrics"), ("outcome", "ok")]
            ),
            Some(1)
        );
        let req = ExportTraceServiceRequest::decode(traces.body).unwrap();
        let names: Vec<_> = req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["Produce", "Fetch", "Metadata"]);

        let families = metrics::collect(&gw, Scope::All);
        let exports = families
            .iter()
            .find(|f| f.name == "tollgate_otlp_exports_total")
            .unwrap();
        let count = |signal: &str, outcome: &str| {
            exports
                .samples
                .iter()
                .find(|s| {
                    s.labels.contains(&("signal", signal.into()))
                        && s.labels.contains(&("outcome", outcome.into()))
                })
                .map(|s| s.value.clone())
        };
        assert_eq!(count("metrics", "ok"), Some(Value::Int(2)));
        assert_eq!(count("traces", "ok"), Some(Value::Int(1)));
        assert_eq!(count("metrics", "failed"), Some(Value::Int(0)));
        // A tenant's view has none of the exporter's series.
        let tenant = metrics::collect(&gw, Scope::Cluster(cluster));
        assert!(tenant
            .iter()
            .any(|f| f.name == "tollgate_topic_bytes_in_total"));
        assert!(tenant.iter().all(|f| !f.name.starts_with("tollgate_otlp")));
    }

    #[tokio::test]
    async fn a_receiver_that_is_down_fails_the_export_and_loses_the_spans() {
        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut config = OtlpConfig::new(format!("http://127.0.0.1:{port}"));
        config.trace_ratio = 1.0;
        let otlp = Otlp::new(config).unwrap();
        let stats = otlp.stats.clone();
        let tracer = otlp.tracer();
        tracer.request(RequestSpan {
            api: ApiKey::Fetch,
            api_version: 12,
            correlation_id: 9,
            cluster: None,
            outcome: crate::telemetry::metrics::Outcome::Refused,
            took: Duration::ZERO,
            client: None,
        });
        let gw = crate::api::testing::ctx(ALLOW_ALL).gw;
        // Stopped at once: only the last exports run, and fail within SHUTDOWN_EXPORT.
        otlp.run(gw, async {}).await;
        let failed = |signal: Signal| {
            stats.exports[signal as usize][Outcome::Failed as usize].load(Ordering::Relaxed)
        };
        assert_eq!(failed(Signal::Metrics), 1);
        assert_eq!(failed(Signal::Traces), 1);
        assert_eq!(stats.dropped(), 1);
    }

    #[test]
    fn an_outage_is_counted_per_export() {
        let stats = Stats::default();
        let mut health = Health::new(
            Signal::Metrics,
            &Endpoint::parse("http://127.0.0.1:4318").unwrap(),
        );
        health.record(&stats, Outcome::Failed, "connection refused");
        health.record(&stats, Outcome::Failed, "connection refused");
        assert!(matches!(health.trouble, Some((_, Outcome::Failed, 2))));
        health.record(&stats, Outcome::Rejected, "HTTP 404");
        assert!(matches!(health.trouble, Some((_, Outcome::Rejected, 3))));
        health.record(&stats, Outcome::Ok, "");
        assert!(health.trouble.is_none());
        let n = |o: Outcome| stats.exports[0][o as usize].load(Ordering::Relaxed);
        assert_eq!(
            (n(Outcome::Ok), n(Outcome::Rejected), n(Outcome::Failed)),
            (1, 1, 2)
        );
    }
}
