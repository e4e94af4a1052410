//! The billing report of one tenant for a period: `GET /v1/billing/report`.
//!
//! JSON, exactly as the contract shows it (decimals as strings, `provisional` present only
//! when true):
//!
//! ```json
//! {"tenant": "acme", "from": "...", "to": "...", "currency": "USD",
//!  "lines": [{"cluster": "<id>", "cluster_name": "orders", "dimension": "cluster_hours",
//!             "quantity": "1.5", "unit": "hour", "rate": "0.75", "amount": "1.125"}],
//!  "total_exact": "1.125", "total": "1.12"}
//! ```
//!
//! or CSV (`format=csv`): a `cluster,cluster_name,dimension,quantity,unit,rate,amount` header
//! and one record per line, RFC 4180 (CRLF line ends, fields quoted when they must be).
//!
//! **Which hours.** An hour belongs to the period when it starts in `[from, to)`.
//!
//! **Lines.** One per cluster and dimension (and rate, should the ledger hold one dimension at
//! two rates because the rate card changed mid-period), for every cluster with usage or ledger
//! entries in the period, all five dimensions each, in the order of the request's clusters and
//! then [`Dimension::ALL`]. A line's quantity and amount are computed from the exact sum of the
//! integer usage it covers (see [`crate::rating`]): `amount = quantity × rate` as exact
//! rationals, rounded once to 28 significant digits. Summing per-hour amounts instead would
//! round 744 times a month and make the line differ from `quantity × rate` in its last digits;
//! by linearity both are the same rational, and the single rounding is the closer one.
//!
//! **Ledger and usage.** Hours the ledger billed count what it billed, adjustments included.
//! Usage the ledger does not cover yet (open hours, or late flushes not adjusted yet) is added
//! at the current rate card, so the report covers all usage in the period.
//!
//! **Totals.** `total_exact` is the sum of the line amounts; `total` is that rounded
//! half-to-even to the cent. `provisional` is true when the period includes an hour that is
//! not closed yet (its end plus the grace period is after `now`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tollgate_meter::{HourlyUsage, HOUR};
use uuid::Uuid;

use crate::ledger::{closes_at, merge_rows, LedgerEntry};
use crate::rates::RateCard;
use crate::rating::{Dimension, Measure};
use crate::Error;

/// The `Content-Type` of [`Report::to_csv`].
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// The CSV header row, as the contract gives it.
pub const CSV_HEADER: &str = "cluster,cluster_name,dimension,quantity,unit,rate,amount";

/// What to report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRequest {
    pub tenant: String,
    /// The tenant's clusters and their names, deleted ones included (a deleted cluster's usage
    /// before its deletion is still owed). Lines follow this order; usage or ledger entries of
    /// clusters not listed here are ignored.
    pub clusters: Vec<(Uuid, String)>,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// The clock, for deciding which hours are closed.
    pub now: OffsetDateTime,
    /// How long after its end an hour stays open for late flushes (the ledger's grace).
    pub grace: Duration,
}

impl ReportRequest {
    /// The period's hours as `[first, end)` in Unix seconds: those starting in `[from, to)`.
    pub fn hours(&self) -> (i64, i64) {
        (ceil_hour(self.from), ceil_hour(self.to))
    }
}

/// The first hour boundary at or after `t`.
fn ceil_hour(t: OffsetDateTime) -> i64 {
    let secs = t.unix_timestamp() + i64::from(t.nanosecond() > 0);
    let floor = tollgate_meter::hour_of(secs);
    if floor == secs {
        floor
    } else {
        floor + HOUR
    }
}

/// A tenant's bill for a period. See the module docs for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub tenant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub currency: String,
    pub lines: Vec<ReportLine>,
    /// The sum of the line amounts, unrounded.
    pub total_exact: Decimal,
    /// `total_exact` rounded half-to-even to the cent, always with two decimals.
    pub total: Decimal,
    /// Present, and true, when the period includes an hour not yet closed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub provisional: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One cluster's usage of one dimension over the period, priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    pub cluster: Uuid,
    pub cluster_name: String,
    pub dimension: Dimension,
    pub quantity: Decimal,
    pub unit: String,
    pub rate: Decimal,
    pub amount: Decimal,
}

impl Report {
    /// The contract's JSON.
    pub fn to_json(&self) -> Result<String, Error> {
        Ok(serde_json::to_string(self)?)
    }

    /// The contract's CSV: header and lines, RFC 4180.
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 * (self.lines.len() + 1));
        out.push_str(CSV_HEADER);
        out.push_str("\r\n");
        for line in &self.lines {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "{},{},{},{},{},{},{}\r\n",
                line.cluster,
                csv_field(&line.cluster_name),
                line.dimension,
                line.quantity,
                csv_field(&line.unit),
                line.rate,
                line.amount
            );
        }
        out
    }
}

/// A field quoted per RFC 4180 when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// The total: half-to-even to the cent, shown with exactly two decimals.
pub fn round_total(exact: Decimal) -> Decimal {
    let mut total = exact.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
    total.rescale(2);
    total
}

/// Exact units per cluster (by its position in the request) and dimension, apart per rate.
/// Nearly everything is priced at the rate card's rate, so that case is a flat array; only
/// ledger entries billed at another rate (the card changed mid-period) go to a map.
struct Accruals {
    /// `None` for a cluster with nothing in the period; per dimension, `None` until something
    /// accrued at the card's rate.
    at_card: Vec<Option<[Option<u128>; 5]>>,
    other: BTreeMap<(usize, Dimension, Decimal), u128>,
}

impl Accruals {
    fn new(clusters: usize) -> Accruals {
        Accruals {
            at_card: vec![None; clusters],
            other: BTreeMap::new(),
        }
    }

    fn add(
        &mut self,
        pos: usize,
        dimension: Dimension,
        rate: Decimal,
        rates: &RateCard,
        units: u128,
    ) -> Result<(), Error> {
        let dims = self.at_card[pos].get_or_insert([None; 5]);
        let slot = if rate == rates.rate(dimension) {
            dims[dimension.code() as usize].get_or_insert(0)
        } else {
            self.other.entry((pos, dimension, rate)).or_insert(0)
        };
        *slot = slot
            .checked_add(units)
            .ok_or(Error::Overflow("summing usage"))?;
        Ok(())
    }

    /// The lines of cluster `pos`: nothing if it had nothing in the period; otherwise, per
    /// dimension, one line per rate in ascending order, or a zero line at the card's rate.
    fn lines(&self, pos: usize, rates: &RateCard) -> Vec<(Dimension, Decimal, u128)> {
        let Some(dims) = &self.at_card[pos] else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(5);
        for dimension in Dimension::ALL {
            let card = rates.rate(dimension);
            let mut priced: Vec<(Decimal, u128)> = self
                .other
                .range((pos, dimension, Decimal::MIN)..=(pos, dimension, Decimal::MAX))
                .map(|(&(_, _, rate), &units)| (rate, units))
                .collect();
            match dims[dimension.code() as usize] {
                Some(units) => priced.push((card, units)),
                None if priced.is_empty() => priced.push((card, 0)),
                None => {}
            }
            priced.sort_by_key(|&(rate, _)| rate);
            out.extend(
                priced
                    .into_iter()
                    .map(|(rate, units)| (dimension, rate, units)),
            );
        }
        out
    }
}

/// Builds the report from ledger entries and usage rows (either may be empty; see the module
/// docs). Pure: the caller fetches both, e.g. through [`crate::Ledger::report`].
pub fn build(
    request: &ReportRequest,
    rates: &RateCard,
    ledger: &[LedgerEntry],
    usage: &[HourlyUsage],
) -> Result<Report, Error> {
    if request.from > request.to {
        return Err(Error::InvalidPeriod(format!(
            "from ({}) is after to ({})",
            request.from, request.to
        )));
    }
    let (first, end) = request.hours();
    let in_period = |hour: i64| hour >= first && hour < end;
    let position: HashMap<Uuid, usize> = request
        .clusters
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();

    let mut accruals = Accruals::new(request.clusters.len());
    // What the ledger billed per cluster-hour, to find usage it does not cover yet.
    let mut billed: HashMap<(Uuid, i64), [u128; 5]> = HashMap::new();
    for entry in ledger.iter().filter(|e| in_period(e.hour)) {
        let Some(&pos) = position.get(&entry.cluster) else {
            continue;
        };
        if entry.currency != rates.currency {
            return Err(Error::CurrencyMismatch {
                ledger: entry.currency.clone(),
                rates: rates.currency.clone(),
            });
        }
        let d = entry.dimension;
        billed.entry((entry.cluster, entry.hour)).or_default()[d.code() as usize] +=
            u128::from(entry.billed_usage);
        let units = Measure::of_hour(d, entry.hour, entry.billed_usage).units;
        accruals.add(pos, d, entry.rate, rates, units)?;
    }

    // Rows of hours the ledger has not billed at all count whole, without merging (the common
    // case, and the only one for a report from usage alone). Rows of billed hours are merged
    // per hour first, then count for what exceeds the bill.
    let mut partly_billed = Vec::new();
    for row in usage {
        let hour = tollgate_meter::hour_of(row.hour);
        let Some(&pos) = position.get(&row.cluster) else {
            continue;
        };
        if !in_period(hour) {
            continue;
        }
        if !billed.is_empty() && billed.contains_key(&(row.cluster, hour)) {
            partly_billed.push(*row);
            continue;
        }
        for d in Dimension::ALL {
            let units = Measure::of_hour(d, hour, d.base_units(row)).units;
            accruals.add(pos, d, rates.rate(d), rates, units)?;
        }
    }
    for row in merge_rows(&partly_billed)? {
        let pos = position[&row.cluster];
        let already = billed[&(row.cluster, row.hour)];
        for d in Dimension::ALL {
            let used = d.base_units(&row);
            // More billed than metered happens when the caller passes only some of the rows;
            // the ledger is the record for what it covers.
            let pending = u128::from(used).saturating_sub(already[d.code() as usize]);
            // Fits in u64: at most `used`.
            let units = Measure::of_hour(d, row.hour, pending as u64).units;
            accruals.add(pos, d, rates.rate(d), rates, units)?;
        }
    }

    let mut lines = Vec::new();
    let mut total_exact = Decimal::ZERO;
    for (pos, (cluster, name)) in request.clusters.iter().enumerate() {
        for (dimension, rate, units) in accruals.lines(pos, rates) {
            let measure = Measure { dimension, units };
            let amount = measure.amount(rate)?;
            total_exact = total_exact
                .checked_add(amount)
                .ok_or(Error::Overflow("adding up the total"))?;
            lines.push(ReportLine {
                cluster: *cluster,
                cluster_name: name.clone(),
                dimension,
                quantity: measure.quantity()?,
                unit: dimension.unit().to_owned(),
                rate: rate.normalize(),
                amount,
            });
        }
    }

    let provisional =
        first < end && closes_at(end - HOUR, request.grace) > request.now.unix_timestamp();
    Ok(Report {
        tenant: request.tenant.clone(),
        from: request.from.to_offset(time::UtcOffset::UTC),
        to: request.to.to_offset(time::UtcOffset::UTC),
        currency: rates.currency.clone(),
        lines,
        total_exact: total_exact.normalize(),
        total: round_total(total_exact),
        provisional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn request(clusters: &[(u128, &str)]) -> ReportRequest {
        ReportRequest {
            tenant: "acme".into(),
            clusters: clusters
                .iter()
                .map(|(id, name)| (Uuid::from_u128(*id), (*name).to_owned()))
                .collect(),
            from: datetime!(2024-01-01 00:00 UTC),
            to: datetime!(2024-02-01 00:00 UTC),
            now: datetime!(2024-03-01 00:00 UTC),
            grace: Duration::from_secs(600),
        }
    }

    fn row(cluster: u128, at: OffsetDateTime, cluster_seconds: u64) -> HourlyUsage {
        HourlyUsage {
            cluster_seconds,
            ..HourlyUsage::zero(Uuid::from_u128(cluster), at.unix_timestamp())
        }
    }

    #[test]
    fn contract_example() {
        let usage = [row(1, datetime!(2024-01-05 10:00 UTC), 5_400)];
        let report = build(
            &request(&[(1, "orders")]),
            &RateCard::default(),
            &[],
            &usage,
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "tenant": "acme",
                "from": "2024-01-01T00:00:00Z",
                "to": "2024-02-01T00:00:00Z",
                "currency": "USD",
                "lines": [
                    {"cluster": Uuid::from_u128(1), "cluster_name": "orders",
                     "dimension": "cluster_hours", "quantity": "1.5", "unit": "hour",
                     "rate": "0.75", "amount": "1.125"},
                    {"cluster": Uuid::from_u128(1), "cluster_name": "orders",
                     "dimension": "partition_hours", "quantity": "0", "unit": "partition-hour",
                     "rate": "0.0015", "amount": "0"},
                    {"cluster": Uuid::from_u128(1), "cluster_name": "orders",
                     "dimension": "storage_gb_months", "quantity": "0", "unit": "GB-month",
                     "rate": "0.1", "amount": "0"},
                    {"cluster": Uuid::from_u128(1), "cluster_name": "orders",
                     "dimension": "data_in_gb", "quantity": "0", "unit": "GB",
                     "rate": "0.1", "amount": "0"},
                    {"cluster": Uuid::from_u128(1), "cluster_name": "orders",
                     "dimension": "data_out_gb", "quantity": "0", "unit": "GB",
                     "rate": "0.05", "amount": "0"},
                ],
                "total_exact": "1.125",
                "total": "1.12",
            })
        );
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn csv_has_the_contract_header_and_quotes_names() {
        let usage = [row(1, datetime!(2024-01-05 10:00 UTC), 3_600)];
        let report = build(
            &request(&[(1, "a,\"b\"")]),
            &RateCard::default(),
            &[],
            &usage,
        )
        .unwrap();
        let csv = report.to_csv();
        let mut lines = csv.split("\r\n");
        assert_eq!(lines.next(), Some(CSV_HEADER));
        assert_eq!(
            lines.next().unwrap(),
            format!(
                "{},\"a,\"\"b\"\"\",cluster_hours,1,hour,0.75,0.75",
                Uuid::from_u128(1)
            )
        );
        assert_eq!(csv.matches("\r\n").count(), 6);
        assert!(csv.ends_with("\r\n"));
    }

    #[test]
    fn only_hours_starting_in_the_period_count() {
        let mut req = request(&[(1, "orders")]);
        req.from = datetime!(2024-01-01 00:30 UTC);
        req.to = datetime!(2024-01-01 02:00:00.5 UTC);
        let usage = [
            row(1, datetime!(2024-01-01 00:00 UTC), 1),
            row(1, datetime!(2024-01-01 01:00 UTC), 10),
            row(1, datetime!(2024-01-01 02:00 UTC), 100),
            row(1, datetime!(2024-01-01 03:00 UTC), 1000),
        ];
        let report = build(&req, &RateCard::default(), &[], &usage).unwrap();
        assert_eq!(
            report.lines[0].quantity,
            Measure {
                dimension: Dimension::ClusterHours,
                units: 110
            }
            .quantity()
            .unwrap()
        );
    }

    #[test]
    fn provisional_while_an_hour_is_open() {
        let mut req = request(&[(1, "orders")]);
        req.now = datetime!(2024-02-01 00:09 UTC);
        let report = build(&req, &RateCard::default(), &[], &[]).unwrap();
        assert!(report.provisional);
        assert!(report.to_json().unwrap().contains("\"provisional\":true"));
        req.now = datetime!(2024-02-01 00:10 UTC);
        let report = build(&req, &RateCard::default(), &[], &[]).unwrap();
        assert!(!report.provisional);
        assert!(!report.to_json().unwrap().contains("provisional"));
        assert!(report.lines.is_empty());
        assert_eq!(report.total.to_string(), "0.00");
    }

    #[test]
    fn rejects_a_reversed_period_and_ignores_foreign_clusters() {
        let mut req = request(&[(1, "orders")]);
        let usage = [row(2, datetime!(2024-01-05 10:00 UTC), 3_600)];
        let report = build(&req, &RateCard::default(), &[], &usage).unwrap();
        assert!(report.lines.is_empty());
        std::mem::swap(&mut req.from, &mut req.to);
        assert!(matches!(
            build(&req, &RateCard::default(), &[], &usage),
            Err(Error::InvalidPeriod(_))
        ));
    }

    fn billed(cluster: u128, at: OffsetDateTime, seconds: u64, rate: &str) -> LedgerEntry {
        LedgerEntry {
            cluster: Uuid::from_u128(cluster),
            hour: at.unix_timestamp(),
            dimension: Dimension::ClusterHours,
            seq: 0,
            billed_usage: seconds,
            quantity: Decimal::ZERO,
            rate: dec(rate),
            amount: Decimal::ZERO,
            currency: "USD".into(),
            billed_at: 0,
        }
    }

    #[test]
    fn ledger_rates_stay_apart_and_uncovered_usage_is_added() {
        let at = datetime!(2024-01-05 10:00 UTC);
        let later = datetime!(2024-01-05 11:00 UTC);
        // Billed at last month's 0.5; a late flush of 1800 s more in the same hour, and a
        // whole hour the ledger has not seen, both at today's 0.75.
        let ledger = [billed(1, at, 1_800, "0.50")];
        let usage = [row(1, at, 1_000), row(1, at, 2_600), row(1, later, 3_600)];
        let report = build(
            &request(&[(1, "orders")]),
            &RateCard::default(),
            &ledger,
            &usage,
        )
        .unwrap();
        let hours: Vec<(String, String, String)> = report
            .lines
            .iter()
            .filter(|l| l.dimension == Dimension::ClusterHours)
            .map(|l| {
                (
                    l.quantity.to_string(),
                    l.rate.to_string(),
                    l.amount.to_string(),
                )
            })
            .collect();
        assert_eq!(
            hours,
            [
                ("0.5".into(), "0.5".into(), "0.25".into()),
                ("1.5".into(), "0.75".into(), "1.125".into()),
            ]
        );
        assert_eq!(report.total_exact, dec("1.375"));
        assert_eq!(report.lines.len(), 6);
    }

    #[test]
    fn a_ledger_in_another_currency_is_refused() {
        let mut entry = billed(1, datetime!(2024-01-05 10:00 UTC), 1, "1");
        entry.currency = "EUR".into();
        let err = build(&request(&[(1, "o")]), &RateCard::default(), &[entry], &[]).unwrap_err();
        assert!(matches!(err, Error::CurrencyMismatch { .. }), "{err}");
    }

    #[test]
    fn totals_round_half_to_even() {
        for (exact, total) in [
            ("1.125", "1.12"),
            ("1.135", "1.14"),
            ("0.005", "0.00"),
            ("0.015", "0.02"),
            ("1.1250000000000000000000000001", "1.13"),
            ("2.5", "2.50"),
            ("0", "0.00"),
        ] {
            assert_eq!(round_total(dec(exact)).to_string(), total, "{exact}");
        }
    }
}
