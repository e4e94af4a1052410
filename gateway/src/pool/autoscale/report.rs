//! The reports of `simulate` and `tune`: `report.json` for machines, `report.html` for people,
//! and the charts as SVG files beside them in `charts/` (the same drawings the HTML holds
//! inline):
//!
//! - `charts/N-NAME.svg`, one per policy: the demand (the busiest signal's load, in brokers'
//!   worth) against the capacity (brokers serving), the brokers asked for, every scale event
//!   and the time short of capacity;
//! - `charts/pareto.svg`: cost against seconds short of capacity for every policy (every
//!   candidate of a tuning), the Pareto front joined, the recommendation and the current
//!   policy marked.
//!
//! Hand-written SVG: a few polylines and circles need no plotting library.

use std::fmt::Write as _;
use std::path::Path;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;

use super::policy::{Policy, Signal};
use super::simulate::{Capacity, Outcome};
use super::trace::{Revenue, Sample};
use super::tune::{describe_value, pareto_front, Candidate, Change, Tuning};

/// One policy's run over the trace.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Where the policy came from (its file name), or its role (`recommended`).
    pub name: String,
    pub policy: Policy,
    pub outcome: Outcome,
    /// The same policy under the tuner's stress, when it was re-checked.
    pub under_stress: Option<Outcome>,
}

/// What `tune` adds to the report.
pub struct Tuned<'a> {
    pub tuning: &'a Tuning,
    /// The recommendation's difference to the current policy.
    pub diff: &'a [Change],
    /// Which of the runs is the current policy (the recommendation is
    /// [`Tuning::recommendation`]).
    pub current_run: usize,
}

#[derive(Serialize)]
struct Report<'a> {
    trace: TraceSummary,
    capacity: &'a Capacity,
    /// What the tenants' usage over the trace bills; each run's margin is this minus its cost.
    revenue: &'a Revenue,
    runs: Vec<RunView<'a>>,
    /// Indices into `runs` of the Pareto front of cost against seconds short (simulate; a
    /// tuning has its own over every candidate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pareto_front: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tune: Option<TuneView<'a>>,
    /// The chart files, relative to the report.
    charts: Vec<String>,
}

#[derive(Serialize)]
struct RunView<'a> {
    #[serde(flatten)]
    run: &'a Run,
    margin: Decimal,
    chart: String,
}

#[derive(Serialize)]
struct TuneView<'a> {
    objectives: &'a super::tune::Objectives,
    stress: &'a super::tune::Stress,
    stress_applied: &'a str,
    candidates: usize,
    stress_checked: usize,
    met: bool,
    met_under_stress: bool,
    recommended: Ranked<'a>,
    /// The first of the ranking (the cheapest meeting the objectives on the trace).
    ranked_top: Ranked<'a>,
    pareto_front: Vec<Ranked<'a>>,
    /// Field by field, the recommended policy against the current one.
    diff: &'a [Change],
}

#[derive(Serialize)]
struct Ranked<'a> {
    /// Its place in `candidates.json` (0 first).
    rank: usize,
    #[serde(flatten)]
    candidate: &'a Candidate,
}

#[derive(Serialize)]
struct TraceSummary {
    samples: usize,
    from: u64,
    to: u64,
}

/// Writes `dir/report.json`, `dir/report.html` and `dir/charts/*.svg`.
pub fn write(
    dir: &Path,
    trace: &[Sample],
    capacity: &Capacity,
    runs: &[Run],
    revenue: &Revenue,
    tuned: Option<&Tuned>,
) -> std::io::Result<()> {
    let charts_dir = dir.join("charts");
    std::fs::create_dir_all(&charts_dir)?;
    let demand = Demand::of(trace, capacity);
    let mut charts = Vec::new();
    let mut run_charts = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let file = format!("charts/{}-{}.svg", i + 1, slug(&run.name));
        let svg = run_chart(trace, capacity, &demand, run);
        std::fs::write(dir.join(&file), &svg)?;
        charts.push(file.clone());
        run_charts.push((file, svg));
    }
    let pareto = match tuned {
        Some(t) => tuning_pareto_chart(t, runs),
        None => runs_pareto_chart(runs),
    };
    std::fs::write(charts_dir.join("pareto.svg"), &pareto)?;
    charts.push("charts/pareto.svg".to_owned());

    let report = Report {
        trace: TraceSummary {
            samples: trace.len(),
            from: trace.first().map_or(0, |s| s.time),
            to: trace.last().map_or(0, |s| s.time),
        },
        capacity,
        revenue,
        runs: runs
            .iter()
            .zip(&run_charts)
            .map(|(run, (chart, _))| RunView {
                run,
                margin: revenue.total - run.outcome.cost,
                chart: chart.clone(),
            })
            .collect(),
        pareto_front: tuned.is_none().then(|| runs_front(runs)),
        tune: tuned.map(|t| {
            let ranked = |rank: usize| Ranked {
                rank,
                candidate: &t.tuning.candidates[rank],
            };
            TuneView {
                objectives: &t.tuning.objectives,
                stress: &t.tuning.stress,
                stress_applied: &t.tuning.stress_applied,
                candidates: t.tuning.candidates.len(),
                stress_checked: t.tuning.stress_checked,
                met: t.tuning.met,
                met_under_stress: t.tuning.met_under_stress,
                recommended: ranked(t.tuning.recommended),
                ranked_top: ranked(0),
                pareto_front: t.tuning.pareto_front.iter().map(|&i| ranked(i)).collect(),
                diff: t.diff,
            }
        }),
        charts,
    };
    let json = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), json)?;
    let html = html(trace, runs, revenue, tuned, &run_charts, &pareto);
    std::fs::write(dir.join("report.html"), html)
}

fn runs_front(runs: &[Run]) -> Vec<usize> {
    pareto_front(
        &runs
            .iter()
            .map(|r| (r.outcome.cost, r.outcome.short_seconds))
            .collect::<Vec<_>>(),
    )
}

/// A file name from a run's name: its last path part, in characters every file system takes.
fn slug(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let mut slug = String::new();
    for c in last.chars().take(60) {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "policy".to_owned()
    } else {
        slug.to_owned()
    }
}

const STYLE: &str = "body{font:14px sans-serif;margin:2em;max-width:1000px}\
    table{border-collapse:collapse;margin:0.5em 0}\
    td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
    th:first-child,td:first-child{text-align:left}.bad{color:#b00}.good{color:#070}";

fn html(
    trace: &[Sample],
    runs: &[Run],
    revenue: &Revenue,
    tuned: Option<&Tuned>,
    run_charts: &[(String, String)],
    pareto: &str,
) -> String {
    let title = if tuned.is_some() {
        "Autoscaling tuning"
    } else {
        "Autoscaling simulation"
    };
    let mut out = format!(
        "<!doctype html><meta charset=utf-8><title>Tollgate: {title}</title>\
         <style>{STYLE}</style><h1>{title}</h1>"
    );
    let _ = write!(
        out,
        "<p>{} samples, {} s. Short: seconds in which some signal's load exceeded what the \
         serving brokers carry. Reversals: a scale-up and a scale-down within 10 minutes of \
         each other. Money is exact; shown to 4 places.</p>",
        trace.len(),
        trace.last().map_or(0, |s| s.time) - trace.first().map_or(0, |s| s.time)
    );
    if let Some(t) = tuned {
        tuning_section(&mut out, t, runs);
    }
    out.push_str(
        "<h2>Policies on the trace</h2><table><tr><th>policy</th><th>cost</th>\
         <th>margin</th><th>broker-hours</th><th>short (s)</th><th>max utilization</th>\
         <th>p99 latency (ms)</th><th>scale events</th><th>reversals</th>",
    );
    let stressed = runs.iter().any(|r| r.under_stress.is_some());
    if stressed {
        out.push_str("<th>under stress: cost</th><th>short (s)</th><th>p99 (ms)</th>");
    }
    out.push_str("</tr>");
    for run in runs {
        let o = &run.outcome;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{:.2}</td>\
             <td>{}</td><td>{}</td><td>{}</td>",
            escape(&run.name),
            o.cost.round_dp(4),
            (revenue.total - o.cost).round_dp(4),
            o.broker_seconds as f64 / 3_600.0,
            o.short_seconds,
            o.max_utilization,
            o.p99_latency_ms,
            o.decisions.len(),
            o.reversals
        );
        if stressed {
            match &run.under_stress {
                Some(s) => {
                    let _ = write!(
                        out,
                        "<td>{}</td><td>{}</td><td>{}</td>",
                        s.cost.round_dp(4),
                        s.short_seconds,
                        s.p99_latency_ms
                    );
                }
                None => out.push_str("<td></td><td></td><td></td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    revenue_section(&mut out, revenue);
    let _ = write!(
        out,
        "<h2>Cost against time short of capacity</h2><p>{}</p>{pareto}",
        if tuned.is_some() {
            "Every candidate (grey); the Pareto front (blue, joined): no other candidate is \
             both cheaper and less short. The recommendation is ringed red, the current \
             policy is the orange square."
        } else {
            "Every policy; the Pareto front (blue, joined): no other policy is both cheaper \
             and less short."
        }
    );
    for (run, (file, svg)) in runs.iter().zip(run_charts) {
        let _ = write!(
            out,
            "<h2>{}</h2><p>Demand (grey: the busiest signal's load, in brokers' worth) \
             against capacity (blue: brokers serving); dashed: brokers asked for; \
             triangles: scale events (green up, red down); red band: short of capacity. \
             <a href=\"{file}\">{file}</a></p>{svg}",
            escape(&run.name),
        );
    }
    out
}

fn tuning_section(out: &mut String, t: &Tuned, runs: &[Run]) {
    let tuning = t.tuning;
    let o = &tuning.objectives;
    let mut objectives = match o.short_seconds {
        0 => "never short of capacity".to_owned(),
        n => format!("at most {n} s short of capacity"),
    };
    if let Some(p) = o.p99_latency_ms {
        let _ = write!(objectives, ", p99 at most {p} ms");
    }
    if let Some(r) = o.reversals {
        let _ = write!(objectives, ", at most {r} reversals");
    }
    let verdict = match (tuning.met, tuning.met_under_stress) {
        (true, true) => "<span class=good>meets the objectives on the trace and under stress\
                         </span>"
            .to_owned(),
        (true, false) => "<span class=bad>meets the objectives on the trace but no candidate \
                          meeting them there does under stress: it is the one least short \
                          under stress</span>"
            .to_owned(),
        _ => "<span class=bad>no candidate meets the objectives on the trace: it is the one \
              least short</span>"
            .to_owned(),
    };
    let _ = write!(
        out,
        "<h2>Recommendation</h2><p>{} candidates; objectives: {objectives}. Stress applied: \
         <b>{}</b>; candidates re-checked under it, cheapest first: {}. The recommended \
         policy (rank {}) {verdict}. It is in <a href=recommended-policy.json>\
         recommended-policy.json</a>; every candidate in <a href=candidates.json>\
         candidates.json</a>.</p>",
        tuning.candidates.len(),
        escape(&tuning.stress_applied),
        tuning.stress_checked,
        tuning.recommended + 1,
    );
    out.push_str(
        "<table><tr><th></th><th>rank</th><th>cost</th><th>margin</th><th>short (s)</th>\
         <th>p99 (ms)</th><th>reversals</th><th>under stress: cost</th><th>short (s)</th>\
         <th>p99 (ms)</th><th>reversals</th></tr>",
    );
    let mut rows = vec![("ranked top (cheapest on the trace)", 0)];
    if tuning.recommended != 0 {
        rows.push(("recommended", tuning.recommended));
    } else {
        rows[0].0 = "recommended (ranked top)";
    }
    for (label, i) in rows {
        let c = &tuning.candidates[i];
        let f = &c.figures;
        let _ = write!(
            out,
            "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td>",
            i + 1,
            f.cost.round_dp(4),
            c.margin.round_dp(4),
            f.short_seconds,
            f.p99_latency_ms,
            f.reversals
        );
        match &c.under_stress {
            Some(s) => {
                let _ = write!(
                    out,
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    s.cost.round_dp(4),
                    s.short_seconds,
                    s.p99_latency_ms,
                    s.reversals
                );
            }
            None => out.push_str("<td colspan=4>not re-checked</td></tr>"),
        }
    }
    if let Some(current) = runs.get(t.current_run) {
        let o = &current.outcome;
        let _ = write!(
            out,
            "<tr><td>{}</td><td></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            escape(&current.name),
            o.cost.round_dp(4),
            (tuning.revenue - o.cost).round_dp(4),
            o.short_seconds,
            o.p99_latency_ms,
            o.reversals
        );
        match &current.under_stress {
            Some(s) => {
                let _ = write!(
                    out,
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    s.cost.round_dp(4),
                    s.short_seconds,
                    s.p99_latency_ms,
                    s.reversals
                );
            }
            None => out.push_str("<td colspan=4></td></tr>"),
        }
    }
    out.push_str("</table>");
    let current_name = runs.get(t.current_run).map_or("current", |r| &r.name);
    if t.diff.is_empty() {
        let _ = write!(
            out,
            "<p>The recommended policy is the same as {}.</p>",
            escape(current_name)
        );
    } else {
        let _ = write!(
            out,
            "<h3>What changes from {}</h3><table><tr><th>field</th><th>current</th>\
             <th>recommended</th></tr>",
            escape(current_name)
        );
        for c in t.diff {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.field),
                escape(&describe_value(&c.current)),
                escape(&describe_value(&c.recommended))
            );
        }
        out.push_str("</table>");
    }
}

fn revenue_section(out: &mut String, revenue: &Revenue) {
    let _ = write!(
        out,
        "<h2>Margin</h2><p>What the tenants' usage over the trace bills at the rate card \
         ({}), against each policy's pool cost above (margin = revenue - cost).</p>\
         <table><tr><th>dimension</th><th>quantity</th><th>rate</th><th>amount</th></tr>",
        escape(&revenue.currency)
    );
    for l in &revenue.lines {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            l.dimension,
            l.quantity.round_dp(4),
            l.dimension.unit(),
            l.rate,
            l.amount.round_dp(4)
        );
    }
    let _ = write!(
        out,
        "<tr><th>revenue</th><td></td><td></td><th>{}</th></tr></table>",
        revenue.total.round_dp(4)
    );
    if !revenue.left_out.is_empty() {
        out.push_str("<p>Left out:</p><ul>");
        for why in &revenue.left_out {
            let _ = write!(out, "<li>{}</li>", escape(why));
        }
        out.push_str("</ul>");
    }
}

/// Chart size in SVG units, and the margins for the axes' labels.
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 30.0;
const TOP: f64 = 20.0;
const RIGHT: f64 = 20.0;
/// Columns drawn at most: a month at 10 s is 259,200 samples; each column shows the busiest
/// of its samples, so a five-minute burst is not stepped over.
const POINTS: usize = 1_500;

fn svg_open(out: &mut String, height: f64) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\" stroke=\"#ccc\"/>",
        w = LEFT + WIDTH + RIGHT,
        h = TOP + height + BOTTOM
    );
}

/// The trace's demand in brokers' worth of load (the busiest signal's load over one broker's
/// capacity), per column of the chart.
struct Demand {
    t0: u64,
    t1: u64,
    /// (first time, last time, the column's highest demand)
    columns: Vec<(u64, u64, f64)>,
}

impl Demand {
    fn of(trace: &[Sample], capacity: &Capacity) -> Demand {
        let per = trace.len().div_ceil(POINTS).max(1);
        Demand {
            t0: trace.first().map_or(0, |s| s.time),
            t1: trace.last().map_or(0, |s| s.time),
            columns: trace
                .chunks(per)
                .map(|c| {
                    (
                        c[0].time,
                        c[c.len() - 1].time,
                        c.iter().map(|s| worth(s, capacity)).fold(0.0, f64::max),
                    )
                })
                .collect(),
        }
    }

    fn x(&self, t: u64) -> f64 {
        LEFT + t.saturating_sub(self.t0) as f64 / (self.t1 - self.t0).max(1) as f64 * WIDTH
    }

    fn peak(&self) -> f64 {
        self.columns.iter().map(|c| c.2).fold(0.0, f64::max)
    }
}

/// A time since the trace's start as the axis shows it, in days, hours or seconds by how long
/// the whole trace is (`span`), so the labels of one chart share a unit.
fn elapsed(seconds: u64, span: u64) -> String {
    if span >= 2 * 86_400 {
        format!("{:.1} d", seconds as f64 / 86_400.0)
    } else if span >= 7_200 {
        format!("{:.1} h", seconds as f64 / 3_600.0)
    } else {
        format!("{seconds} s")
    }
}

/// A sample's load in brokers' worth: its busiest signal's load over what one broker carries.
/// Above the brokers serving, the pool is short (the simulator's definition).
fn worth(s: &Sample, capacity: &Capacity) -> f64 {
    let load = s.load();
    Signal::ALL
        .iter()
        .map(|sig| load.get(*sig) as f64 / capacity.per_broker.get(*sig) as f64)
        .fold(0.0, f64::max)
}

fn run_chart(trace: &[Sample], capacity: &Capacity, demand: &Demand, run: &Run) -> String {
    let o = &run.outcome;
    let first = o
        .decisions
        .first()
        .map_or(o.serving.first().map_or(0, |s| s.1), |d| d.from_brokers);
    let most = demand
        .peak()
        .max(f64::from(run.policy.max_brokers))
        .max(f64::from(first))
        .max(1.0)
        .ceil();
    let y = |n: f64| TOP + HEIGHT - n / most * HEIGHT;
    let x = |t: u64| demand.x(t);
    let end = LEFT + WIDTH;
    let mut out = String::new();
    svg_open(&mut out, HEIGHT);
    // Axes and labels: brokers up the side, time since the trace's start along the bottom.
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{end}\" y2=\"{b}\" stroke=\"#888\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"16\" y=\"{my}\" text-anchor=\"middle\" \
         transform=\"rotate(-90 16 {my})\">brokers</text>",
        b = TOP + HEIGHT,
        my = TOP + HEIGHT / 2.0,
    );
    // A light line and a label every few brokers, ten at most.
    let every = (most / 10.0).ceil().max(1.0);
    let mut n = 0.0;
    while n <= most {
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{yn:.1}\" x2=\"{end}\" y2=\"{yn:.1}\" stroke=\"#eee\"/>\
             <text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{n}</text>",
            yn = y(n),
            lx = LEFT - 4.0,
            ty = y(n) + 4.0,
        );
        n += every;
    }
    let span = demand.t1 - demand.t0;
    for k in 0..=4u64 {
        let t = demand.t0 + span * k / 4;
        let anchor = match k {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            TOP + HEIGHT + 16.0,
            elapsed(t - demand.t0, span)
        );
    }
    // Short of capacity: a red band under every column where demand exceeded the brokers
    // serving at some sample.
    let mut serving = o.serving.iter().peekable();
    let mut now_serving = first;
    let mut short_from: Option<u64> = None;
    let per = trace.len().div_ceil(POINTS).max(1);
    for (column, samples) in demand.columns.iter().zip(trace.chunks(per)) {
        let mut short = false;
        for s in samples {
            while serving.peek().is_some_and(|(t, _)| *t <= s.time) {
                now_serving = serving.next().expect("peeked").1;
            }
            short |= worth(s, capacity) > f64::from(now_serving);
        }
        match (short, short_from) {
            (true, None) => short_from = Some(column.0),
            (false, Some(from)) => {
                band(&mut out, x(from), x(column.0));
                short_from = None;
            }
            _ => {}
        }
    }
    if let Some(from) = short_from {
        band(&mut out, x(from), end);
    }
    // Demand.
    let mut points = String::new();
    for (from, to, d) in &demand.columns {
        let _ = write!(points, "{:.1},{:.1} ", x(*from), y(*d));
        if to != from {
            let _ = write!(points, "{:.1},{:.1} ", x(*to), y(*d));
        }
    }
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"#999\" points=\"{}\"/>",
        points.trim_end()
    );
    // Capacity: brokers serving, a step line.
    let steps = |changes: &mut dyn Iterator<Item = (u64, u32)>, start: u32| {
        let mut line = format!("{LEFT:.1},{:.1} ", y(f64::from(start)));
        let mut size = start;
        for (t, n) in changes {
            let _ = write!(
                line,
                "{:.1},{:.1} {:.1},{:.1} ",
                x(t),
                y(f64::from(size)),
                x(t),
                y(f64::from(n))
            );
            size = n;
        }
        let _ = write!(line, "{end:.1},{:.1}", y(f64::from(size)));
        line
    };
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\"{}\"/>",
        steps(&mut o.serving.iter().copied(), first)
    );
    // Brokers asked for: a dashed step line.
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"#e08000\" stroke-dasharray=\"4 3\" points=\"{}\"/>",
        steps(
            &mut o.decisions.iter().map(|d| (d.time, d.to_brokers)),
            first
        )
    );
    // Scale events: a triangle each along the top, one per pixel and direction at most.
    let mut drawn = std::collections::HashSet::new();
    for d in &o.decisions {
        let up = d.to_brokers > d.from_brokers;
        let px = x(d.time).round() as i64;
        if !drawn.insert((px, up)) {
            continue;
        }
        let (tip, base, colour) = if up {
            (TOP - 12.0, TOP - 4.0, "#080")
        } else {
            (TOP - 4.0, TOP - 12.0, "#c00")
        };
        let _ = write!(
            out,
            "<polygon points=\"{a:.1},{base:.1} {b:.1},{base:.1} {px},{tip:.1}\" \
             fill=\"{colour}\"><title>{}</title></polygon>",
            escape(&format!(
                "{}: {} -> {}",
                elapsed(d.time.saturating_sub(demand.t0), span),
                d.from_brokers,
                d.to_brokers
            )),
            a = px as f64 - 3.0,
            b = px as f64 + 3.0,
        );
    }
    out.push_str("</svg>");
    out
}

fn band(out: &mut String, from: f64, to: f64) {
    let _ = write!(
        out,
        "<rect x=\"{from:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\" fill=\"#d00\" \
         opacity=\"0.7\"/>",
        TOP + HEIGHT - 6.0,
        (to - from).max(1.0)
    );
}

/// A point of the Pareto chart.
struct Point {
    cost: Decimal,
    short: u64,
}

/// A point drawn apart, with its label.
struct Mark<'a> {
    point: Point,
    label: &'a str,
    shape: MarkShape,
}

enum MarkShape {
    Ring,
    Square,
    Dot,
}

const PARETO_HEIGHT: f64 = 320.0;

fn pareto_chart(points: &[Point], front: &[usize], marks: &[Mark]) -> String {
    let all = points.iter().chain(marks.iter().map(|m| &m.point));
    let (mut lo, mut hi, mut most) = (f64::MAX, f64::MIN, 0u64);
    for p in all {
        let c = p.cost.to_f64().unwrap_or(0.0);
        lo = lo.min(c);
        hi = hi.max(c);
        most = most.max(p.short);
    }
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if hi <= lo {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let most = most.max(1);
    let x = |p: &Point| LEFT + (p.cost.to_f64().unwrap_or(0.0) - lo) / (hi - lo) * WIDTH;
    let y = |p: &Point| TOP + PARETO_HEIGHT - p.short as f64 / most as f64 * PARETO_HEIGHT;
    let mut out = String::new();
    svg_open(&mut out, PARETO_HEIGHT);
    let b = TOP + PARETO_HEIGHT;
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{e}\" y2=\"{b}\" stroke=\"#888\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\" stroke=\"#888\"/>\
         <text x=\"{lx}\" y=\"{b}\" text-anchor=\"end\">0 s</text>\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\">{most} s</text>\
         <text x=\"16\" y=\"{my}\" text-anchor=\"middle\" \
         transform=\"rotate(-90 16 {my})\">short</text>\
         <text x=\"{LEFT}\" y=\"{ly}\">{lo:.2}</text>\
         <text x=\"{e}\" y=\"{ly}\" text-anchor=\"end\">{hi:.2}</text>\
         <text x=\"{mx}\" y=\"{ly}\" text-anchor=\"middle\">cost</text>",
        e = LEFT + WIDTH,
        lx = LEFT - 4.0,
        ty = TOP + 4.0,
        my = TOP + PARETO_HEIGHT / 2.0,
        ly = b + 16.0,
        mx = LEFT + WIDTH / 2.0,
    );
    for p in points {
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#bbb\"/>",
            x(p),
            y(p)
        );
    }
    // The front, cheapest first, joined as a staircase: between two of its points the
    // cheaper one's shortness holds until the dearer one improves on it.
    let mut line = String::new();
    let mut last: Option<&Point> = None;
    for &i in front {
        let p = &points[i];
        if let Some(q) = last {
            let _ = write!(line, "{:.1},{:.1} ", x(p), y(q));
        }
        let _ = write!(line, "{:.1},{:.1} ", x(p), y(p));
        last = Some(p);
    }
    let _ = write!(
        out,
        "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"1.5\" points=\"{}\"/>",
        line.trim_end()
    );
    for &i in front {
        let p = &points[i];
        let _ = write!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"#1f5fbf\"><title>cost {}, \
             short {} s</title></circle>",
            x(p),
            y(p),
            p.cost.round_dp(4),
            p.short
        );
    }
    for m in marks {
        let (px, py) = (x(&m.point), y(&m.point));
        let shape = match m.shape {
            MarkShape::Ring => format!(
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"8\" fill=\"none\" stroke=\"#d00\" \
                 stroke-width=\"2\"/>"
            ),
            MarkShape::Square => format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" fill=\"#e08000\"/>",
                px - 4.5,
                py - 4.5
            ),
            MarkShape::Dot => {
                format!("<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"#333\"/>")
            }
        };
        let anchor = if px > LEFT + WIDTH * 0.8 {
            "end"
        } else {
            "start"
        };
        let dx = if anchor == "end" { -10.0 } else { 10.0 };
        let _ = write!(
            out,
            "{shape}<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            px + dx,
            py - 8.0,
            escape(m.label)
        );
    }
    out.push_str("</svg>");
    out
}

fn tuning_pareto_chart(t: &Tuned, runs: &[Run]) -> String {
    let tuning = t.tuning;
    let points: Vec<Point> = tuning
        .candidates
        .iter()
        .map(|c| Point {
            cost: c.figures.cost,
            short: c.figures.short_seconds,
        })
        .collect();
    let mut marks = Vec::new();
    if let Some(current) = runs.get(t.current_run) {
        marks.push(Mark {
            point: Point {
                cost: current.outcome.cost,
                short: current.outcome.short_seconds,
            },
            label: "current",
            shape: MarkShape::Square,
        });
    }
    let r = tuning.recommendation();
    marks.push(Mark {
        point: Point {
            cost: r.figures.cost,
            short: r.figures.short_seconds,
        },
        label: "recommended",
        shape: MarkShape::Ring,
    });
    pareto_chart(&points, &tuning.pareto_front, &marks)
}

fn runs_pareto_chart(runs: &[Run]) -> String {
    let points: Vec<Point> = runs
        .iter()
        .map(|r| Point {
            cost: r.outcome.cost,
            short: r.outcome.short_seconds,
        })
        .collect();
    let marks: Vec<Mark> = runs
        .iter()
        .map(|r| Mark {
            point: Point {
                cost: r.outcome.cost,
                short: r.outcome.short_seconds,
            },
            label: &r.name,
            shape: MarkShape::Dot,
        })
        .collect();
    pareto_chart(&points, &runs_front(runs), &marks)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_files_are_named_after_the_policys_file_in_safe_characters() {
        assert_eq!(slug("/tmp/policies/calm.json"), "calm.json");
        assert_eq!(
            slug("current (the default policy)"),
            "current-the-default-policy"
        );
        assert_eq!(slug("C:\\p\\a b.json"), "a-b.json");
        assert_eq!(slug("(((/"), "policy");
    }
}
