//! Property tests: reports against an independent, exact computation of the contract's
//! formulas; half-to-even totals; month lengths; the ledger's idempotence and adjustments.
//!
//! The independent side uses exact rationals (`BigRational`) and the `time` crate's calendar,
//! never the crate's own `rating` or `calendar` code. A report decimal must be within the
//! documented precision of the exact value: rounded once to `Decimal`'s 96-bit mantissa, so
//! off by at most 10^-27 of the value, or 10^-28 absolute for values below one.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};
use proptest::prelude::*;
use rust_decimal::Decimal;
use support::ScratchDir;
use time::{Month, OffsetDateTime};
use tollgate_billing::report::{self, ReportRequest};
use tollgate_billing::{calendar, Dimension, Ledger, LedgerStore, RateCard, RedbLedger, Report};
use tollgate_meter::HourlyUsage;
use uuid::Uuid;

const H: i64 = 3_600;

// ---- the independent computation -------------------------------------------------------

fn big(n: impl Into<BigInt>) -> BigRational {
    BigRational::from_integer(n.into())
}

fn exact(d: Decimal) -> BigRational {
    BigRational::new(d.mantissa().into(), BigInt::from(10).pow(d.scale()))
}

/// Hours in the month of `hour`, from the `time` crate.
fn month_hours(hour: i64) -> u32 {
    let t = OffsetDateTime::from_unix_timestamp(hour).unwrap();
    u32::from(t.month().length(t.year())) * 24
}

/// The contract's quantity of `dimension` for one hourly row.
fn contract_quantity(dimension: Dimension, row: &HourlyUsage) -> BigRational {
    let gb = big(1u64 << 30);
    match dimension {
        Dimension::ClusterHours => big(row.cluster_seconds) / big(3600),
        Dimension::PartitionHours => big(row.partition_seconds) / big(3600),
        Dimension::StorageGbMonths => {
            big(row.storage_byte_seconds) / (gb * big(3600) * big(month_hours(row.hour)))
        }
        Dimension::DataInGb => big(row.bytes_in) / gb,
        Dimension::DataOutGb => big(row.bytes_out) / gb,
    }
}

/// Within the documented precision of a value rounded once to 28 significant digits.
fn assert_close(what: &str, got: Decimal, want: &BigRational) {
    let err = (exact(got) - want).abs();
    let relative = want.abs() / big(BigInt::from(10).pow(27));
    let absolute = BigRational::new(BigInt::one(), BigInt::from(10).pow(28));
    let tolerance = if relative > absolute {
        relative
    } else {
        absolute
    };
    assert!(
        err <= tolerance,
        "{what}: got {got}, exact {} (~{:?})",
        want,
        want.to_f64()
    );
    // A value with a short decimal expansion comes out exactly.
    let short = BigInt::from(10).pow(20) % want.denom() == BigInt::zero()
        && want.abs() < big(100_000_000u64);
    if short {
        assert_eq!(&exact(got), want, "{what}: {got} should be exact");
    }
}

/// Half-to-even rounding to the cent, on an exact rational.
fn round_cents_half_even(x: &BigRational) -> BigRational {
    let scaled = x * big(100);
    let floor = scaled.floor();
    let frac = &scaled - &floor;
    let half = BigRational::new(BigInt::one(), BigInt::from(2));
    let up = if frac > half {
        true
    } else if frac < half {
        false
    } else {
        floor.to_integer() % BigInt::from(2) != BigInt::zero()
    };
    let cents = if up { floor + big(1) } else { floor };
    cents / big(100)
}

// ---- inputs -----------------------------------------------------------------------------

fn first_hour_of(year: i32, month: u8) -> i64 {
    let month = Month::try_from(month).unwrap();
    time::Date::from_calendar_date(year, month, 1)
        .unwrap()
        .midnight()
        .assume_utc()
        .unix_timestamp()
}

fn rate() -> impl Strategy<Value = Decimal> {
    (0i64..10_000_000, 0u32..9).prop_map(|(m, s)| Decimal::new(m, s))
}

fn rate_card() -> impl Strategy<Value = RateCard> {
    (rate(), rate(), rate(), rate(), rate()).prop_map(|(a, b, c, d, e)| RateCard {
        currency: "EUR".into(),
        cluster_hours: a,
        partition_hours: b,
        storage_gb_months: c,
        data_in_gb: d,
        data_out_gb: e,
    })
}

/// A start hour shortly before a month boundary, in years with and without Feb 29th.
fn window_start() -> impl Strategy<Value = i64> {
    (1990i32..2110, 1u8..=12, 0i64..72).prop_map(|(y, m, back)| first_hour_of(y, m) - back * H)
}

prop_compose! {
    fn row(start: i64, clusters: usize)(
        c in 0..clusters,
        offset in 0i64..24 * 70,
        cluster_seconds in 0u64..=3_600,
        partition_seconds in 0u64..=3_600 * 10_000,
        bytes_in in 0u64..1 << 45,
        bytes_out in 0u64..1 << 45,
        storage_byte_seconds in 0u64..(1 << 44) * 3_600,
    ) -> HourlyUsage {
        HourlyUsage {
            cluster: Uuid::from_u128(c as u128 + 1),
            hour: start + offset * H,
            cluster_seconds,
            partition_seconds,
            bytes_in,
            bytes_out,
            storage_byte_seconds,
        }
    }
}

fn clusters(n: usize) -> Vec<(Uuid, String)> {
    (0..n)
        .map(|i| (Uuid::from_u128(i as u128 + 1), format!("cluster-{i}")))
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    start: i64,
    rows: Vec<HourlyUsage>,
    rates: RateCard,
    request: ReportRequest,
}

fn case() -> impl Strategy<Value = Case> {
    (window_start(), 1usize..4)
        .prop_flat_map(|(start, n)| {
            (
                Just(start),
                Just(n),
                proptest::collection::vec(row(start, n), 0..40),
                rate_card(),
                -24i64..24 * 40,
                0i64..24 * 70,
                0i64..3_600,
                0i64..24 * 80,
            )
        })
        .prop_map(|(start, n, rows, rates, from_h, len_h, skew, now_h)| {
            let from = start + from_h * H + skew;
            let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
            Case {
                start,
                rows,
                rates,
                request: ReportRequest {
                    tenant: "acme".into(),
                    // One more cluster than has usage: it must get no lines.
                    clusters: clusters(n + 1),
                    from: t(from),
                    to: t(from + len_h * H),
                    now: t(start + now_h * H),
                    grace: Duration::from_secs(900),
                },
            }
        })
}

/// The whole report, recomputed from the rows with the contract's formulas.
fn check_against_contract(case: &Case, report: &Report) {
    let req = &case.request;
    let (from, to) = (req.from.unix_timestamp(), req.to.unix_timestamp());
    // Hours that start in [from, to).
    let in_period = |hour: i64| hour >= from && hour < to;

    let mut quantities: BTreeMap<(usize, Dimension), BigRational> = BTreeMap::new();
    for row in case.rows.iter().filter(|r| in_period(r.hour)) {
        let pos = req
            .clusters
            .iter()
            .position(|(id, _)| *id == row.cluster)
            .unwrap();
        for d in Dimension::ALL {
            *quantities.entry((pos, d)).or_insert_with(BigRational::zero) +=
                contract_quantity(d, row);
        }
    }
    let expected: Vec<(usize, Dimension)> = quantities.keys().copied().collect();
    let got: Vec<(usize, Dimension)> = report
        .lines
        .iter()
        .map(|l| {
            let pos = req
                .clusters
                .iter()
                .position(|(id, _)| *id == l.cluster)
                .unwrap();
            (pos, l.dimension)
        })
        .collect();
    assert_eq!(
        got, expected,
        "one line per active cluster and dimension, in order"
    );

    let mut exact_total = BigRational::zero();
    for (line, ((pos, d), quantity)) in report.lines.iter().zip(&quantities) {
        assert_eq!(line.cluster_name, req.clusters[*pos].1);
        assert_eq!(line.unit, d.unit());
        let rate = case.rates.rate(*d);
        assert_eq!(line.rate, rate);
        let amount = quantity * exact(rate);
        assert_close("quantity", line.quantity, quantity);
        assert_close("amount", line.amount, &amount);
        exact_total += amount;
    }
    // total_exact adds up to one rounding per line.
    let lines = big(report.lines.len().max(1) as u64);
    let err = (exact(report.total_exact) - &exact_total).abs();
    let tolerance = (exact_total.abs() / big(BigInt::from(10).pow(27))
        + BigRational::new(BigInt::one(), BigInt::from(10).pow(28)))
        * lines;
    assert!(
        err <= tolerance,
        "total_exact {} vs {exact_total}",
        report.total_exact
    );
    assert_eq!(exact(report.total), round_cents_half_even(&exact_total));
    assert_eq!(report.total.scale(), 2);
    assert_eq!(report.currency, case.rates.currency);

    let mut open = false;
    let mut hour = from.div_euclid(H) * H;
    while hour < to {
        if hour >= from && hour + H + 900 > req.now.unix_timestamp() {
            open = true;
        }
        hour += H;
    }
    assert_eq!(report.provisional, open);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn report_lines_follow_the_contract_formulas(case in case()) {
        let report = report::build(&case.request, &case.rates, &[], &case.rows).unwrap();
        check_against_contract(&case, &report);
        // What goes out as JSON comes back the same.
        let back: Report = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        prop_assert_eq!(&back, &report);
        let csv = report.to_csv();
        prop_assert_eq!(csv.lines().count(), report.lines.len() + 1);
        let _ = case.start;
    }

    #[test]
    fn month_lengths_match_the_time_crate(hour in -5_000_000_000i64..10_000_000_000) {
        let hour = hour.div_euclid(H) * H;
        prop_assert_eq!(calendar::hours_in_month(hour), month_hours(hour));
    }

    /// 1 GB stored through every hour of any month is exactly one GB-month, whatever the
    /// month's length; each single hour is exactly 1/(hours in month).
    #[test]
    fn a_month_of_one_gb_is_one_gb_month(year in 1900i32..2200, month in 1u8..=12) {
        let first = first_hour_of(year, month);
        let hours = month_hours(first) as i64;
        let gb_hour = (1u64 << 30) * 3_600;
        let rows: Vec<HourlyUsage> = (0..hours)
            .map(|i| HourlyUsage {
                storage_byte_seconds: gb_hour,
                ..HourlyUsage::zero(Uuid::from_u128(1), first + i * H)
            })
            .collect();
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let request = ReportRequest {
            tenant: "t".into(),
            clusters: clusters(1),
            from: t(first),
            to: t(first + hours * H),
            now: t(first + 2 * hours * H),
            grace: Duration::ZERO,
        };
        let report = report::build(&request, &RateCard::default(), &[], &rows).unwrap();
        let storage = &report.lines[2];
        prop_assert_eq!(storage.dimension, Dimension::StorageGbMonths);
        prop_assert_eq!(storage.quantity, Decimal::ONE);
        prop_assert_eq!(storage.amount, Decimal::new(1, 1));
        prop_assert_eq!(report.total.to_string(), "0.10");
        // One hour, the first and the last of the month.
        for hour in [first, first + (hours - 1) * H] {
            let one = report::build(&request, &RateCard::default(), &[], &rows[..1].iter().map(|r| HourlyUsage { hour, ..*r }).collect::<Vec<_>>()).unwrap();
            assert_close("one hour", one.lines[2].quantity, &BigRational::new(BigInt::one(), BigInt::from(hours)));
        }
    }
}

#[test]
fn month_boundaries_by_hand() {
    let gb_hour = (1u64 << 30) * 3_600;
    for (at, hours) in [
        ("2023-02-15T12:00:00Z", 672), // February, 28 days
        ("2024-02-29T23:00:00Z", 696), // February, 29 days
        ("2024-04-01T00:00:00Z", 720), // April, 30 days
        ("2024-01-31T23:00:00Z", 744), // January, 31 days
        ("2024-12-31T23:00:00Z", 744), // the last hour of the year
        ("2025-01-01T00:00:00Z", 744), // the first of the next
        ("2100-02-01T00:00:00Z", 672), // not a leap year
        ("2000-02-01T00:00:00Z", 696), // a leap year
    ] {
        let hour = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp();
        assert_eq!(calendar::hours_in_month(hour), hours, "{at}");
        let row = HourlyUsage {
            storage_byte_seconds: gb_hour * hours as u64,
            ..HourlyUsage::zero(Uuid::from_u128(1), hour)
        };
        let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let request = ReportRequest {
            tenant: "t".into(),
            clusters: clusters(1),
            from: t(hour),
            to: t(hour + H),
            now: t(hour + 2 * H),
            grace: Duration::ZERO,
        };
        let report = report::build(&request, &RateCard::default(), &[], &[row]).unwrap();
        // A month's worth of GB-hours in one hour of that month: exactly one GB-month.
        assert_eq!(report.lines[2].quantity, Decimal::ONE, "{at}");
    }
}

/// Hand-picked totals on exact midpoints: the total rounds half to even, and rounds the sum
/// of the lines, not each line.
#[test]
fn totals_round_half_to_even_on_midpoints() {
    // data_in_gb at 0.001 per GB makes k GB cost exactly k/1000.
    let rates = RateCard {
        data_in_gb: Decimal::new(1, 3),
        ..RateCard {
            cluster_hours: Decimal::ZERO,
            partition_hours: Decimal::ZERO,
            storage_gb_months: Decimal::ZERO,
            data_out_gb: Decimal::ZERO,
            ..RateCard::default()
        }
    };
    let hour = 1_704_067_200;
    let t = |s: i64| OffsetDateTime::from_unix_timestamp(s).unwrap();
    for (gbs, exact_total, total) in [
        (&[1125u64][..], "1.125", "1.12"),
        (&[1135], "1.135", "1.14"),
        (&[2345], "2.345", "2.34"),
        (&[2355], "2.355", "2.36"),
        (&[5], "0.005", "0.00"),
        (&[15], "0.015", "0.02"),
        (&[5, 5], "0.01", "0.01"),     // per-line rounding would say 0.00
        (&[1124, 1], "1.125", "1.12"), // across two clusters
        (&[2, 3, 1120], "1.125", "1.12"), // and three
    ] {
        let rows: Vec<HourlyUsage> = gbs
            .iter()
            .enumerate()
            .map(|(i, gb)| HourlyUsage {
                bytes_in: gb << 30,
                ..HourlyUsage::zero(Uuid::from_u128(i as u128 + 1), hour)
            })
            .collect();
        let request = ReportRequest {
            tenant: "t".into(),
            clusters: clusters(gbs.len()),
            from: t(hour),
            to: t(hour + H),
            now: t(hour + 2 * H),
            grace: Duration::ZERO,
        };
        let report = report::build(&request, &rates, &[], &rows).unwrap();
        assert_eq!(report.total_exact.to_string(), exact_total);
        assert_eq!(report.total.to_string(), total, "{exact_total}");
    }
}

// ---- the ledger -------------------------------------------------------------------------

/// A row split into two flushes: `first` arrives before the hour is billed, `late` after.
fn split(row: &HourlyUsage, pct: u8) -> (HourlyUsage, HourlyUsage) {
    let part = |v: u64| (u128::from(v) * u128::from(pct) / 100) as u64;
    let first = HourlyUsage {
        cluster_seconds: part(row.cluster_seconds),
        partition_seconds: part(row.partition_seconds),
        bytes_in: part(row.bytes_in),
        bytes_out: part(row.bytes_out),
        storage_byte_seconds: part(row.storage_byte_seconds),
        ..*row
    };
    let late = HourlyUsage {
        cluster_seconds: row.cluster_seconds - first.cluster_seconds,
        partition_seconds: row.partition_seconds - first.partition_seconds,
        bytes_in: row.bytes_in - first.bytes_in,
        bytes_out: row.bytes_out - first.bytes_out,
        storage_byte_seconds: row.storage_byte_seconds - first.storage_byte_seconds,
        ..*row
    };
    (first, late)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Close every hour, deliver late flushes, close again (and again): the ledger holds one
    /// original per (cluster, hour, dimension), adjustments only for growth, and the report
    /// built from it equals the report built from the usage itself.
    #[test]
    fn ledger_bills_once_adjusts_late_usage_and_reports_like_usage(
        case in case(),
        pcts in proptest::collection::vec(0u8..=100, 40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = ScratchDir::new("prop");
        let store: Arc<dyn LedgerStore> = Arc::new(RedbLedger::open(dir.path()).unwrap());
        let grace = case.request.grace;
        let ledger = Ledger::new(store, grace);
        let after_all = case.start + 24 * 80 * H;
        let (early, late): (Vec<_>, Vec<_>) = case
            .rows
            .iter()
            .zip(&pcts)
            .map(|(r, p)| split(r, *p))
            .unzip();
        let mut delivered = early.clone();
        runtime.block_on(async {
            let first = ledger.close_due(&delivered, &case.rates, after_all).await.unwrap();
            prop_assert_eq!(first.adjusted + first.unchanged + first.open, 0);
            delivered.extend(late.iter().copied());
            let second = ledger.close_due(&delivered, &case.rates, after_all).await.unwrap();
            prop_assert_eq!(second.billed, 0);
            let third = ledger.close_due(&delivered, &case.rates, after_all).await.unwrap();
            prop_assert_eq!((third.billed, third.adjusted), (0, 0));

            for (cluster, _) in &case.request.clusters {
                let entries = ledger.entries(*cluster, i64::MIN, i64::MAX).await.unwrap();
                let mut per_key: BTreeMap<(i64, Dimension), Vec<(u32, u64)>> = BTreeMap::new();
                for e in &entries {
                    per_key.entry((e.hour, e.dimension)).or_default().push((e.seq, e.billed_usage));
                }
                for ((hour, d), seqs) in &per_key {
                    // seq 0, then at most one adjustment (one late flush), only for growth.
                    let merged: u64 = case.rows.iter()
                        .filter(|r| r.cluster == *cluster && r.hour == *hour)
                        .map(|r| d.base_units(r)).sum();
                    let billed: u64 = seqs.iter().map(|(_, b)| b).sum();
                    prop_assert_eq!(billed, merged);
                    prop_assert_eq!(seqs[0].0, 0);
                    prop_assert!(seqs.len() <= 2);
                    if let Some((seq, b)) = seqs.get(1) {
                        prop_assert_eq!(*seq, 1);
                        prop_assert!(*b > 0);
                    }
                }
                // Every hour with usage has all five dimensions billed.
                let hours: std::collections::BTreeSet<i64> = per_key.keys().map(|(h, _)| *h).collect();
                prop_assert_eq!(per_key.len(), hours.len() * 5);
            }

            let from_usage = report::build(&case.request, &case.rates, &[], &case.rows).unwrap();
            let from_ledger = ledger.report(&case.request, &[], &case.rates).await.unwrap();
            prop_assert_eq!(&from_ledger, &from_usage);
            // Usage the ledger already covers adds nothing.
            let both = ledger.report(&case.request, &delivered, &case.rates).await.unwrap();
            prop_assert_eq!(&both, &from_usage);
            Ok(())
        })?;
    }
}
