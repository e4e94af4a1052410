//! Load traces: the pool's load over time, as `GET /v1/pool/history` exports it and as the
//! simulator replays it, and synthetic ones of the shapes operators plan for; and what the
//! tenants' usage over a trace bills at a rate card ([`Usage`], [`Revenue`]), the other side
//! of the pool's cost.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_billing::rating::{self, Dimension};
use tollgate_billing::RateCard;

use super::decide::Load;

/// One sample of the pool's load (CONTRACT: the trace format).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Seconds since the Unix epoch, or since the trace's start for a synthetic one.
    pub time: u64,
    /// Brokers the pool had (0 in a synthetic trace, which has no pool).
    #[serde(default)]
    pub brokers: u32,
    pub bytes_in_per_second: u64,
    pub bytes_out_per_second: u64,
    pub requests_per_second: u64,
    pub connections: u64,
    #[serde(default)]
    pub partitions: u64,
}

impl Sample {
    pub fn load(&self) -> Load {
        Load {
            bytes_in_per_second: self.bytes_in_per_second,
            bytes_out_per_second: self.bytes_out_per_second,
            requests_per_second: self.requests_per_second,
            connections: self.connections,
        }
    }
}

/// The CSV header of a trace, in the CONTRACT's column order.
pub const CSV_HEADER: &str = "time,brokers,bytes_in_per_second,bytes_out_per_second,\
requests_per_second,connections,partitions";

/// A trace as CSV, header first.
pub fn to_csv(samples: &[Sample]) -> String {
    let mut out = String::with_capacity(64 * (samples.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for s in samples {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            s.time,
            s.brokers,
            s.bytes_in_per_second,
            s.bytes_out_per_second,
            s.requests_per_second,
            s.connections,
            s.partitions
        ));
    }
    out
}

/// Reads a trace from CSV (as [`to_csv`] writes it) or JSON (`{"samples": [...]}`, as
/// `GET /v1/pool/history` answers), in time order.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let trimmed = text.trim_start();
    let samples = if trimmed.starts_with('{') {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct History {
            samples: Vec<Sample>,
        }
        serde_json::from_str::<History>(trimmed)
            .map_err(|e| format!("trace (JSON): {e}"))?
            .samples
    } else {
        let mut lines = trimmed.lines().enumerate();
        match lines.next() {
            Some((_, header)) if header.trim() == CSV_HEADER => {}
            _ => return Err(format!("trace (CSV): the first line must be {CSV_HEADER}")),
        }
        let mut samples = Vec::new();
        for (n, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let number = |i: usize| -> Result<u64, String> {
                fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(|| {
                    format!(
                        "trace (CSV) line {}: field {} is not a whole number",
                        n + 1,
                        i + 1
                    )
                })
            };
            if fields.len() != 7 {
                return Err(format!(
                    "trace (CSV) line {}: 7 fields expected, {} found",
                    n + 1,
                    fields.len()
                ));
            }
            samples.push(Sample {
                time: number(0)?,
                brokers: u32::try_from(number(1)?)
                    .map_err(|_| format!("trace (CSV) line {}: brokers out of range", n + 1))?,
                bytes_in_per_second: number(2)?,
                bytes_out_per_second: number(3)?,
                requests_per_second: number(4)?,
                connections: number(5)?,
                partitions: number(6)?,
            });
        }
        samples
    };
    if let Some(w) = samples.windows(2).find(|w| w[1].time <= w[0].time) {
        return Err(format!(
            "trace: times must increase ({} follows {})",
            w[1].time, w[0].time
        ));
    }
    Ok(samples)
}

/// What the tenants used over a trace, in base units, as the meter would have counted it. Each
/// sample's rates hold until the next sample; the last sample has no length (as in the
/// simulator, so revenue and cost cover the same seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Seconds the trace covers.
    pub seconds: u64,
    /// Record bytes produced (the `bytes_in_per_second` signal counts what billing's
    /// `data_in_gb` does).
    pub bytes_in: u64,
    /// Record bytes fetched.
    pub bytes_out: u64,
    /// Partitions times seconds.
    pub partition_seconds: u64,
}

impl Usage {
    /// Sums a trace's usage; an error only past `u64` (16 EiB).
    pub fn of(trace: &[Sample]) -> Result<Usage, String> {
        let mut usage = Usage::default();
        let overflow = || "trace: usage over the trace does not fit in 64 bits".to_owned();
        for pair in trace.windows(2) {
            let (s, step) = (&pair[0], pair[1].time - pair[0].time);
            let add = |total: u64, rate: u64| {
                rate.checked_mul(step)
                    .and_then(|n| total.checked_add(n))
                    .ok_or_else(overflow)
            };
            usage.seconds += step;
            usage.bytes_in = add(usage.bytes_in, s.bytes_in_per_second)?;
            usage.bytes_out = add(usage.bytes_out, s.bytes_out_per_second)?;
            usage.partition_seconds = add(usage.partition_seconds, s.partitions)?;
        }
        Ok(usage)
    }

    /// What this usage bills at `rates`, priced as billing prices a metered hour (exact
    /// fractions, one rounding). `clusters`: how many tenant clusters existed throughout, for
    /// cluster-hours, which a trace does not record. Storage is never in a trace, so it is left
    /// out, and the answer says so.
    pub fn bill(&self, rates: &RateCard, clusters: Option<u64>) -> Result<Revenue, String> {
        let mut lines = Vec::new();
        let mut left_out = vec![format!(
            "{}: a trace records no stored bytes",
            Dimension::StorageGbMonths
        )];
        let mut priced = |dimension: Dimension, base_units: u64| -> Result<(), String> {
            // The hour only weighs storage (by its month's length), which is not priced here.
            let r = rating::rate(dimension, 0, base_units, rates.rate(dimension))
                .map_err(|e| format!("pricing the trace's {dimension}: {e}"))?;
            lines.push(RevenueLine {
                dimension,
                base_units,
                quantity: r.quantity,
                rate: r.rate,
                amount: r.amount,
            });
            Ok(())
        };
        match clusters {
            Some(n) => priced(
                Dimension::ClusterHours,
                n.checked_mul(self.seconds)
                    .ok_or("trace: cluster-seconds do not fit in 64 bits")?,
            )?,
            None => left_out.push(format!(
                "{}: a trace does not say how many clusters the tenants had (--clusters N)",
                Dimension::ClusterHours
            )),
        }
        if self.partition_seconds > 0 {
            priced(Dimension::PartitionHours, self.partition_seconds)?;
        } else {
            left_out.push(format!(
                "{}: every sample of the trace has 0 partitions",
                Dimension::PartitionHours
            ));
        }
        priced(Dimension::DataInGb, self.bytes_in)?;
        priced(Dimension::DataOutGb, self.bytes_out)?;
        let total = lines
            .iter()
            .try_fold(Decimal::ZERO, |sum, l| sum.checked_add(l.amount))
            .ok_or("trace: revenue overflows a decimal")?;
        Ok(Revenue {
            currency: rates.currency.clone(),
            usage: *self,
            lines,
            total,
            left_out,
        })
    }
}

/// What the tenants' usage over a trace bills at a rate card: the pool's cost is set against it
/// (margin = revenue - cost).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Revenue {
    pub currency: String,
    pub usage: Usage,
    /// One per dimension priced, in billing's report order.
    pub lines: Vec<RevenueLine>,
    /// The sum of the lines, exact.
    pub total: Decimal,
    /// The dimensions not priced, and why.
    pub left_out: Vec<String>,
}

/// One dimension of the revenue, as a bill line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevenueLine {
    pub dimension: Dimension,
    /// In the dimension's base unit (seconds, partition-seconds, bytes).
    pub base_units: u64,
    /// In the dimension's unit (hours, partition-hours, GB).
    pub quantity: Decimal,
    pub rate: Decimal,
    pub amount: Decimal,
}

/// Load shapes operators plan for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The peak all the time.
    Flat,
    /// A day's cycle: a tenth of the peak at night, the peak in the afternoon.
    Diurnal,
    /// The diurnal cycle on weekdays, a third of it at weekends.
    Weekly,
    /// The diurnal cycle with bursts to twice the peak for five minutes every few hours.
    Bursts,
    /// A tenth of the peak, then ten times it for half an hour in the middle of the trace.
    FlashCrowd,
    /// From nothing to the peak over the whole trace.
    Ramp,
}

impl Shape {
    pub fn parse(name: &str) -> Result<Shape, String> {
        Ok(match name {
            "flat" => Shape::Flat,
            "diurnal" => Shape::Diurnal,
            "weekly" => Shape::Weekly,
            "bursts" => Shape::Bursts,
            "flash-crowd" => Shape::FlashCrowd,
            "ramp" => Shape::Ramp,
            other => {
                return Err(format!(
                    "unknown shape {other:?}: flat, diurnal, weekly, bursts, flash-crowd or ramp"
                ))
            }
        })
    }

    /// The share of the peak at `t` seconds into a trace of `length` seconds, in parts per
    /// thousand (integers, so a trace is the same on every machine).
    fn permille(self, t: u64, length: u64) -> u64 {
        const DAY: u64 = 86_400;
        // A day as a triangle: 100 at 04:00, 1000 at 16:00.
        let diurnal = |t: u64| {
            let hour_s = (t + DAY - 4 * 3_600) % DAY;
            let half = DAY / 2;
            let rise = if hour_s < half { hour_s } else { DAY - hour_s };
            100 + 900 * rise / half
        };
        match self {
            Shape::Flat => 1_000,
            Shape::Diurnal => diurnal(t),
            Shape::Weekly => {
                let weekend = (t / DAY) % 7 >= 5;
                diurnal(t) / if weekend { 3 } else { 1 }
            }
            Shape::Bursts => {
                // Five minutes of every four hours, at twice the peak.
                if t % (4 * 3_600) < 300 {
                    2_000
                } else {
                    diurnal(t)
                }
            }
            Shape::FlashCrowd => {
                let middle = length / 2;
                if (middle..middle + 1_800).contains(&t) {
                    10_000
                } else {
                    100
                }
            }
            Shape::Ramp => 1_000 * t / length.max(1),
        }
    }
}

/// A synthetic trace of `shape` over `seconds`, one sample every `step` seconds, scaled to
/// `peak` (the load at 1,000 per mille). Deterministic: the same arguments give the same trace.
pub fn synthetic(shape: Shape, seconds: u64, step: u64, peak: &Load) -> Vec<Sample> {
    let step = step.max(1);
    (0..seconds / step)
        .map(|i| {
            let t = i * step;
            let m = shape.permille(t, seconds);
            let at = |peak: u64| peak.saturating_mul(m) / 1_000;
            Sample {
                time: t,
                brokers: 0,
                bytes_in_per_second: at(peak.bytes_in_per_second),
                bytes_out_per_second: at(peak.bytes_out_per_second),
                requests_per_second: at(peak.requests_per_second),
                connections: at(peak.connections),
                partitions: 0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peak() -> Load {
        Load {
            bytes_in_per_second: 1_000,
            bytes_out_per_second: 2_000,
            requests_per_second: 100,
            connections: 10,
        }
    }

    #[test]
    fn a_trace_goes_through_csv_and_json_unchanged() {
        let trace = synthetic(Shape::Diurnal, 86_400, 600, &peak());
        assert_eq!(trace.len(), 144);
        assert_eq!(parse(&to_csv(&trace)).unwrap(), trace);
        let json = serde_json::json!({ "samples": trace }).to_string();
        assert_eq!(parse(&json).unwrap(), trace);
    }

    #[test]
    fn bad_traces_are_refused_saying_where() {
        for (text, says) in [
            ("time,brokers\n1,2\n", "the first line must be"),
            (
                &format!("{CSV_HEADER}\n1,2,3\n"),
                "line 2: 7 fields expected, 3 found",
            ),
            (
                &format!("{CSV_HEADER}\n1,2,3,4,5,x,7\n"),
                "line 2: field 6 is not a whole number",
            ),
            (
                &format!("{CSV_HEADER}\n10,1,1,1,1,1,1\n5,1,1,1,1,1,1\n"),
                "times must increase (5 follows 10)",
            ),
            (r#"{"samples": [{"time": 1}]}"#, "missing field"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn a_small_traces_usage_bills_as_computed_by_hand() {
        // Three samples 1,800 s apart; the last has no length, so the trace covers an hour.
        const MIB: u64 = 1 << 20;
        let sample = |time, bytes_in, bytes_out, partitions| Sample {
            time,
            bytes_in_per_second: bytes_in,
            bytes_out_per_second: bytes_out,
            partitions,
            ..Sample::default()
        };
        let mut trace = vec![
            sample(0, MIB, 2 * MIB, 10),
            sample(1_800, 3 * MIB, 0, 30),
            sample(3_600, 999 * MIB, 999 * MIB, 999),
        ];
        let usage = Usage::of(&trace).unwrap();
        assert_eq!(
            usage,
            Usage {
                seconds: 3_600,
                bytes_in: 7_200 * MIB,
                bytes_out: 3_600 * MIB,
                partition_seconds: 72_000,
            }
        );
        // Two clusters for an hour at $0.75: 1.5. 20 partition-hours at $0.0015: 0.03.
        // 7,200 MiB in is 7.03125 GiB at $0.10: 0.703125. 3,600 MiB out is 3.515625 GiB at
        // $0.05: 0.17578125.
        let bill = usage.bill(&RateCard::default(), Some(2)).unwrap();
        let amounts: Vec<(Dimension, String)> = bill
            .lines
            .iter()
            .map(|l| (l.dimension, l.amount.to_string()))
            .collect();
        assert_eq!(
            amounts,
            [
                (Dimension::ClusterHours, "1.5".to_owned()),
                (Dimension::PartitionHours, "0.03".to_owned()),
                (Dimension::DataInGb, "0.703125".to_owned()),
                (Dimension::DataOutGb, "0.17578125".to_owned()),
            ]
        );
        assert_eq!(bill.total.to_string(), "2.40890625");
        assert_eq!(bill.left_out.len(), 1, "{:?}", bill.left_out);
        assert!(bill.left_out[0].starts_with("storage_gb_months"));

        // Without --clusters and without partitions, both are said to be left out.
        for s in &mut trace {
            s.partitions = 0;
        }
        let bill = Usage::of(&trace)
            .unwrap()
            .bill(&RateCard::default(), None)
            .unwrap();
        assert_eq!(bill.total.to_string(), "0.87890625");
        let left: Vec<&str> = bill
            .left_out
            .iter()
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert_eq!(
            left,
            ["storage_gb_months", "cluster_hours", "partition_hours"]
        );
    }

    #[test]
    fn the_shapes_have_the_loads_they_promise() {
        let day = synthetic(Shape::Diurnal, 86_400, 3_600, &peak());
        let at = |h: usize| day[h].bytes_in_per_second;
        assert_eq!((at(4), at(16)), (100, 1_000), "night low, afternoon peak");
        let week = synthetic(Shape::Weekly, 7 * 86_400, 3_600, &peak());
        assert_eq!(
            week[5 * 24 + 16].bytes_in_per_second,
            333,
            "a weekend afternoon"
        );
        let crowd = synthetic(Shape::FlashCrowd, 7_200, 60, &peak());
        assert_eq!(crowd[0].connections, 1);
        assert_eq!(crowd[60].connections, 100);
        let ramp = synthetic(Shape::Ramp, 1_000, 100, &peak());
        assert_eq!(ramp[5].requests_per_second, 50);
        assert!(Shape::parse("sawtooth")
            .unwrap_err()
            .contains("flash-crowd"));
    }
}
