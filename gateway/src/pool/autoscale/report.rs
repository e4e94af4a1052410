//! The simulator's report: `report.json` for machines and `report.html` for people, one entry
//! per policy, with the pool's size over time drawn against the load.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::policy::Policy;
use super::simulate::{Capacity, Outcome};
use super::trace::Sample;

/// One policy's run over the trace.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Where the policy came from (its file name).
    pub name: String,
    pub policy: Policy,
    pub outcome: Outcome,
}

#[derive(Serialize)]
struct Report<'a> {
    trace: TraceSummary,
    capacity: &'a Capacity,
    runs: &'a [Run],
}

#[derive(Serialize)]
struct TraceSummary {
    samples: usize,
    from: u64,
    to: u64,
}

/// Writes `dir/report.json` and `dir/report.html`.
pub fn write(
    dir: &Path,
    trace: &[Sample],
    capacity: &Capacity,
    runs: &[Run],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let report = Report {
        trace: TraceSummary {
            samples: trace.len(),
            from: trace.first().map_or(0, |s| s.time),
            to: trace.last().map_or(0, |s| s.time),
        },
        capacity,
        runs,
    };
    let json = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    std::fs::write(dir.join("report.html"), html(trace, runs))
}

/// Chart size in SVG units.
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 160.0;
/// Points drawn per line at most: a month at 10 s is 259,200 samples.
const POINTS: usize = 1_500;

fn html(trace: &[Sample], runs: &[Run]) -> String {
    let mut out = String::from(
        "<!doctype html><meta charset=utf-8><title>Tollgate autoscaling simulation</title>\
         <style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
         th:first-child,td:first-child{text-align:left}</style>\
         <h1>Autoscaling simulation</h1>",
    );
    let _ = write!(
        out,
        "<p>{} samples, {} s. Short: seconds in which some signal's load exceeded what the \
         serving brokers carry. Reversals: a scale-up and a scale-down within 10 minutes of \
         each other.</p><table><tr><th>policy</th><th>cost</th><th>broker-hours</th>\
         <th>short (s)</th><th>max utilization</th><th>p99 latency (ms)</th>\
         <th>scale events</th><th>reversals</th></tr>",
        trace.len(),
        trace.last().map_or(0, |s| s.time) - trace.first().map_or(0, |s| s.time)
    );
    for run in runs {
        let o = &run.outcome;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.2}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&run.name),
            o.cost.round_dp(4),
            o.broker_seconds as f64 / 3_600.0,
            o.short_seconds,
            o.max_utilization,
            o.p99_latency_ms,
            o.decisions.len(),
            o.reversals
        );
    }
    out.push_str("</table>");
    let (t0, t1) = (
        trace.first().map_or(0, |s| s.time),
        trace.last().map_or(1, |s| s.time).max(1),
    );
    let x = |t: u64| (t.saturating_sub(t0)) as f64 / (t1 - t0).max(1) as f64 * WIDTH;
    let busiest = trace
        .iter()
        .map(|s| s.bytes_in_per_second)
        .max()
        .unwrap_or(1)
        .max(1);
    let step = (trace.len() / POINTS).max(1);
    let load: String = trace
        .iter()
        .step_by(step)
        .map(|s| {
            format!(
                "{:.1},{:.1} ",
                x(s.time),
                HEIGHT - s.bytes_in_per_second as f64 / busiest as f64 * HEIGHT
            )
        })
        .collect();
    for run in runs {
        let most = run.policy.max_brokers.max(1);
        let mut brokers = String::new();
        let mut size = run
            .outcome
            .decisions
            .first()
            .map_or(run.policy.min_brokers, |d| d.from_brokers);
        let y = |n: u32| HEIGHT - f64::from(n) / f64::from(most) * HEIGHT;
        let _ = write!(brokers, "0,{:.1} ", y(size));
        for d in &run.outcome.decisions {
            let _ = write!(brokers, "{:.1},{:.1} ", x(d.time), y(size));
            size = d.to_brokers;
            let _ = write!(brokers, "{:.1},{:.1} ", x(d.time), y(size));
        }
        let _ = write!(brokers, "{WIDTH:.1},{:.1}", y(size));
        let _ = write!(
            out,
            "<h2>{}</h2><p>Brokers (blue, 0 to {most}) against bytes in (grey).</p>\
             <svg width={WIDTH} height={HEIGHT} viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
             style=\"border:1px solid #ccc\"><polyline fill=none stroke=#bbb points=\"{load}\"/>\
             <polyline fill=none stroke=#1f5fbf stroke-width=2 points=\"{brokers}\"/></svg>",
            escape(&run.name)
        );
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
