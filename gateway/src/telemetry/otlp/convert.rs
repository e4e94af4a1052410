//! The metrics snapshot ([`Family`]) in OTLP's terms: one `ExportMetricsServiceRequest` per
//! export, free of I/O so that it is tested on values alone.
//!
//! - counters become monotonic cumulative Sums whose start is the process's start (the
//!   registry's counters begin at zero with the process);
//! - gauges become Gauges;
//! - histograms become cumulative Histograms with explicit bounds; OTLP counts each bucket on
//!   its own where Prometheus (and [`Buckets`]) count cumulatively, so the counts are
//!   differenced.
//!
//! Names stay the Prometheus names, so that a receiver finds what `GET /metrics` shows; labels
//! become attributes. Counts stay integers (`as_int`): a byte count above 2^53 survives exactly.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::telemetry::metrics::model::Buckets;
use crate::telemetry::metrics::{Family, Kind, Value};

/// The instrumentation scope every metric and span is reported under.
pub const SCOPE_NAME: &str = "tollgate";

/// Who is reporting: OpenTelemetry's `service.*` resource attributes.
pub fn resource(instance: &str) -> Resource {
    Resource {
        attributes: vec![
            string("service.name", "tollgate"),
            string("service.instance.id", instance),
            string("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Default::default()
    }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

pub fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
    }
}

/// Times in nanoseconds since the Unix epoch, as OTLP counts them.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// When the cumulative counters began: the process's start.
    pub start: u64,
    /// When the snapshot was taken.
    pub now: u64,
}

/// One export of `families`.
pub fn metrics_request(
    families: &[Family],
    resource: &Resource,
    times: Times,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: families.iter().filter_map(|f| metric(f, times)).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The family as one metric, or `None` when it has no sample OTLP can carry.
fn metric(family: &Family, times: Times) -> Option<Metric> {
    let data = match family.kind {
        Kind::Counter => metric::Data::Sum(Sum {
            data_points: number_points(family, Some(times.start), times.now),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        // A gauge is a reading, not an accumulation: it has no start.
        Kind::Gauge => metric::Data::Gauge(Gauge {
            data_points: number_points(family, None, times.now),
        }),
        Kind::Histogram => metric::Data::Histogram(Histogram {
            data_points: family
                .samples
                .iter()
                .filter_map(|s| match &s.value {
                    Value::Histogram(b) => histogram_point(b, attributes(&s.labels), times),
                    _ => None,
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    };
    let empty = match &data {
        metric::Data::Sum(s) => s.data_points.is_empty(),
        metric::Data::Gauge(g) => g.data_points.is_empty(),
        metric::Data::Histogram(h) => h.data_points.is_empty(),
        _ => true,
    };
    if empty {
        return None;
    }
    Some(Metric {
        name: family.name.to_owned(),
        description: family.help.to_owned(),
        unit: unit(family.name).to_owned(),
        metadata: Vec::new(),
        data: Some(data),
    })
}

fn number_points(family: &Family, start: Option<u64>, now: u64) -> Vec<NumberDataPoint> {
    family
        .samples
        .iter()
        .filter_map(|s| {
            let value = match s.value {
                // Above i64::MAX (9.2 EB of bytes) a count no longer fits OTLP's integer; it
                // stays at the largest it can say rather than wrapping negative.
                Value::Int(n) => {
                    number_data_point::Value::AsInt(i64::try_from(n).unwrap_or(i64::MAX))
                }
                Value::Signed(n) => number_data_point::Value::AsInt(n),
                Value::Float(x) => number_data_point::Value::AsDouble(x),
                // A histogram sample in a counter or gauge family is the collector's mistake;
                // it is left out rather than misreported.
                Value::Histogram(_) => return None,
            };
            Some(NumberDataPoint {
                attributes: attributes(&s.labels),
                start_time_unix_nano: start.unwrap_or(0),
                time_unix_nano: now,
                value: Some(value),
                ..Default::default()
            })
        })
        .collect()
}

/// OTLP's buckets: each bound's own count, then the count above the last bound. `None` when
/// the snapshot's shape is not one bucket per bound plus +Inf.
fn histogram_point(
    buckets: &Buckets,
    attributes: Vec<KeyValue>,
    times: Times,
) -> Option<HistogramDataPoint> {
    if buckets.cumulative.len() != buckets.bounds.len() + 1 {
        return None;
    }
    let mut below = 0;
    let bucket_counts = buckets
        .cumulative
        .iter()
        .map(|&at_or_below| {
            let own = at_or_below.saturating_sub(below);
            below = at_or_below.max(below);
            own
        })
        .collect();
    Some(HistogramDataPoint {
        attributes,
        start_time_unix_nano: times.start,
        time_unix_nano: times.now,
        count: buckets.count(),
        sum: Some(buckets.sum),
        bucket_counts,
        explicit_bounds: buckets.bounds.to_vec(),
        ..Default::default()
    })
}

fn attributes(labels: &[(&'static str, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| string(k, v)).collect()
}

/// The UCUM unit the name states (`tollgate_topic_bytes_in_total` counts bytes, `By`;
/// `tollgate_request_duration_seconds` seconds, `s`); counts of things have none.
fn unit(name: &str) -> &'static str {
    let words = || name.split('_');
    if words().any(|w| w == "bytes") {
        "By"
    } else if words().any(|w| w == "seconds") {
        "s"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    const TIMES: Times = Times {
        start: 1_000,
        now: 2_000,
    };

    fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    fn export(families: &[Family]) -> Vec<Metric> {
        let req = metrics_request(families, &resource("i-1"), TIMES);
        assert_eq!(req.resource_metrics.len(), 1);
        let scopes = &req.resource_metrics[0].scope_metrics;
        assert_eq!(scopes.len(), 1);
        assert_eq!(scopes[0].scope.as_ref().unwrap().name, "tollgate");
        scopes[0].metrics.clone()
    }

    fn attrs(kvs: &[KeyValue]) -> Vec<(String, String)> {
        kvs.iter()
            .map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Any::StringValue(s)) => (kv.key.clone(), s.clone()),
                    other => panic!("{}: not a string: {other:?}", kv.key),
                },
            )
            .collect()
    }

    #[test]
    fn counters_are_monotonic_cumulative_sums_with_exact_integers() {
        let mut f = Family::new("tollgate_topic_bytes_in_total", "Bytes.", Kind::Counter);
        // 2^53 + 1: the first integer a double cannot hold.
        let big = (1u64 << 53) + 1;
        f.push(
            labels(&[("cluster", "c1"), ("topic", "orders")]),
            Value::Int(big),
        );
        f.push(
            labels(&[("cluster", "c1"), ("topic", "audit")]),
            Value::Int(0),
        );
        let metrics = export(&[f]);
        assert_eq!(metrics.len(), 1);
        let m = &metrics[0];
        assert_eq!(m.name, "tollgate_topic_bytes_in_total");
        assert_eq!(m.description, "Bytes.");
        assert_eq!(m.unit, "By");
        let Some(metric::Data::Sum(sum)) = &m.data else {
            panic!("not a sum: {:?}", m.data)
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &sum.data_points[0];
        assert_eq!(
            p.value,
            Some(number_data_point::Value::AsInt(i64::try_from(big).unwrap()))
        );
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (1_000, 2_000));
        assert_eq!(
            attrs(&p.attributes),
            vec![
                ("cluster".to_owned(), "c1".to_owned()),
                ("topic".to_owned(), "orders".to_owned())
            ]
        );
        assert_eq!(
            sum.data_points[1].value,
            Some(number_data_point::Value::AsInt(0))
        );
    }

    #[test]
    fn a_count_past_i64_saturates_instead_of_wrapping() {
        let mut f = Family::new("tollgate_x_total", "", Kind::Counter);
        f.push(vec![], Value::Int(u64::MAX));
        let Some(metric::Data::Sum(sum)) = &export(&[f])[0].data else {
            panic!()
        };
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsInt(i64::MAX))
        );
    }

    #[test]
    fn gauges_have_no_start_and_floats_stay_doubles() {
        let mut g = Family::new("tollgate_connections", "Open.", Kind::Gauge);
        g.push(labels(&[("cluster", "c1")]), Value::Int(3));
        g.push(labels(&[("cluster", "c2")]), Value::Signed(-2));
        let mut t = Family::new("tollgate_throttle_seconds_total", "", Kind::Counter);
        t.push(labels(&[("quota", "produce")]), Value::Float(1.25));
        let metrics = export(&[g, t]);
        let Some(metric::Data::Gauge(gauge)) = &metrics[0].data else {
            panic!("not a gauge: {:?}", metrics[0].data)
        };
        assert_eq!(metrics[0].unit, "");
        let values: Vec<_> = gauge.data_points.iter().map(|p| p.value).collect();
        assert_eq!(
            values,
            vec![
                Some(number_data_point::Value::AsInt(3)),
                Some(number_data_point::Value::AsInt(-2))
            ]
        );
        assert!(gauge
            .data_points
            .iter()
            .all(|p| p.start_time_unix_nano == 0 && p.time_unix_nano == 2_000));
        assert_eq!(metrics[1].unit, "s");
        let Some(metric::Data::Sum(sum)) = &metrics[1].data else {
            panic!()
        };
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(1.25))
        );
    }

    #[test]
    fn histogram_buckets_are_counted_each_on_its_own() {
        let mut h = Family::new(
            "tollgate_request_duration_seconds",
            "Latency.",
            Kind::Histogram,
        );
        h.push(
            labels(&[("api", "Produce")]),
            Value::Histogram(Buckets {
                bounds: &[0.001, 0.01, 0.1],
                cumulative: vec![2, 2, 7, 9],
                sum: 0.5,
            }),
        );
        let metrics = export(&[h]);
        let Some(metric::Data::Histogram(hist)) = &metrics[0].data else {
            panic!("not a histogram: {:?}", metrics[0].data)
        };
        assert_eq!(
            hist.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &hist.data_points[0];
        assert_eq!(p.bucket_counts, vec![2, 0, 5, 2]);
        assert_eq!(p.explicit_bounds, vec![0.001, 0.01, 0.1]);
        assert_eq!(p.count, 9);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
        assert_eq!(p.sum, Some(0.5));
        assert_eq!(p.start_time_unix_nano, 1_000);
        assert_eq!(
            attrs(&p.attributes),
            vec![("api".to_owned(), "Produce".to_owned())]
        );
    }

    #[test]
    fn malformed_and_empty_samples_are_left_out() {
        let mut h = Family::new("h", "", Kind::Histogram);
        // One bound needs two cumulative counts.
        h.push(
            vec![],
            Value::Histogram(Buckets {
                bounds: &[1.0],
                cumulative: vec![1],
                sum: 0.0,
            }),
        );
        h.push(vec![], Value::Int(1));
        let mut c = Family::new("c_total", "", Kind::Counter);
        c.push(
            vec![],
            Value::Histogram(Buckets {
                bounds: &[],
                cumulative: vec![1],
                sum: 0.0,
            }),
        );
        let empty = Family::new("e_total", "", Kind::Counter);
        assert!(export(&[h, c, empty]).is_empty());
    }

    #[test]
    fn the_resource_says_who_reports() {
        let r = resource("instance-7");
        let attrs = attrs(&r.attributes);
        assert!(attrs.contains(&("service.name".into(), "tollgate".into())));
        assert!(attrs.contains(&("service.instance.id".into(), "instance-7".into())));
        assert!(attrs.contains(&("service.version".into(), env!("CARGO_PKG_VERSION").into())));
    }

    #[test]
    fn a_request_survives_protobuf_encoding() {
        let mut f = Family::new("tollgate_topic_messages_in_total", "", Kind::Counter);
        f.push(labels(&[("topic", "t")]), Value::Int(42));
        let mut h = Family::new("tollgate_request_duration_seconds", "", Kind::Histogram);
        h.push(
            vec![],
            Value::Histogram(Buckets {
                bounds: &[0.5],
                cumulative: vec![1, 3],
                sum: 1.75,
            }),
        );
        let req = metrics_request(&[f, h], &resource("i"), TIMES);
        let bytes = req.encode_to_vec();
        let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, req);
    }
}
