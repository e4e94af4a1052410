//! Prometheus's text exposition format (0.0.4), written from a snapshot.

use std::fmt::Write;

use super::model::{Family, Kind, Value};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes every family with its HELP and TYPE lines. Families with no samples are left out
/// (a tenant's view must not list the names of series it cannot see any of, nor should
/// `promtool check metrics` see empty families).
pub fn encode(families: &[Family]) -> String {
    let mut out = String::with_capacity(4096);
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        let kind = match family.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        // HELP text escapes backslash and newline only.
        let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {} {help}", family.name);
        let _ = writeln!(out, "# TYPE {} {kind}", family.name);
        for sample in &family.samples {
            match &sample.value {
                Value::Histogram(h) => {
                    let bounds = h.bounds.iter().map(|b| format_float(*b));
                    for (le, count) in bounds
                        .chain(std::iter::once("+Inf".to_owned()))
                        .zip(&h.cumulative)
                    {
                        let _ = write!(out, "{}_bucket", family.name);
                        labels(&mut out, &sample.labels, Some(&le));
                        let _ = writeln!(out, " {count}");
                    }
                    let _ = write!(out, "{}_sum", family.name);
                    labels(&mut out, &sample.labels, None);
                    let _ = writeln!(out, " {}", format_float(h.sum));
                    let _ = write!(out, "{}_count", family.name);
                    labels(&mut out, &sample.labels, None);
                    let _ = writeln!(out, " {}", h.count());
                }
                value => {
                    out.push_str(family.name);
                    labels(&mut out, &sample.labels, None);
                    let _ = match value {
                        Value::Int(v) => writeln!(out, " {v}"),
                        Value::Signed(v) => writeln!(out, " {v}"),
                        Value::Float(v) => writeln!(out, " {}", format_float(*v)),
                        Value::Histogram(_) => unreachable!("matched above"),
                    };
                }
            }
        }
    }
    out
}

fn labels(out: &mut String, labels: &[(&'static str, String)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (name, value) in labels
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .chain(le.map(|le| ("le", le)))
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        // Label values escape backslash, double quote and newline. Topic and group names are
        // the tenant's own strings: escaped, they cannot forge another series.
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn format_float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        // Rust's shortest round-trip form, which Prometheus parses back exactly.
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{Buckets, Family, Kind, Value};
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_in_the_text_format() {
        let mut bytes = Family::new("t_bytes_total", "Bytes.\nIn.", Kind::Counter);
        bytes.push(
            vec![("cluster", "c1".into()), ("topic", "a\"b\\c\nd".into())],
            Value::Int(18_446_744_073_709_551_615),
        );
        let empty = Family::new("t_unseen", "None.", Kind::Gauge);
        let mut lag = Family::new("t_lag", "Lag.", Kind::Gauge);
        lag.push(vec![], Value::Signed(-3));
        let mut latency = Family::new("t_seconds", "Latency.", Kind::Histogram);
        latency.push(
            vec![("api", "Produce".into())],
            Value::Histogram(Buckets {
                bounds: &[0.005, 0.5],
                cumulative: vec![1, 3, 4],
                sum: 2.25,
            }),
        );
        let text = encode(&[bytes, empty, lag, latency]);
        assert_eq!(
            text,
            "# HELP t_bytes_total Bytes.\\nIn.\n\
             # TYPE t_bytes_total counter\n\
             t_bytes_total{cluster=\"c1\",topic=\"a\\\"b\\\\c\\nd\"} 18446744073709551615\n\
             # HELP t_lag Lag.\n\
             # TYPE t_lag gauge\n\
             t_lag -3\n\
             # HELP t_seconds Latency.\n\
             # TYPE t_seconds histogram\n\
             t_seconds_bucket{api=\"Produce\",le=\"0.005\"} 1\n\
             t_seconds_bucket{api=\"Produce\",le=\"0.5\"} 3\n\
             t_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 4\n\
             t_seconds_sum{api=\"Produce\"} 2.25\n\
             t_seconds_count{api=\"Produce\"} 4\n"
        );
    }
}
