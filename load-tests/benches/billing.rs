//! Billing benchmarks: rating a month of hourly usage for 1,000 clusters, and one tenant's
//! monthly report.
//!
//! Run: `cargo bench -p tollgate-load-tests --bench billing -- --warm-up-time 1 --measurement-time 5`
//! Figures from a run are in `load-tests/README.md`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use time::macros::datetime;
use time::OffsetDateTime;
use tollgate_billing::ledger::CloseOutcome;
use tollgate_billing::report::{self, ReportRequest};
use tollgate_billing::{rating, Ledger, LedgerEntry, LedgerStore, RateCard, RedbLedger, Report};
use tollgate_meter::HourlyUsage;
use uuid::Uuid;

const H: i64 = 3_600;
/// January 2024: 744 hours, the longest month.
const MONTH_START: OffsetDateTime = datetime!(2024-01-01 00:00 UTC);
const MONTH_END: OffsetDateTime = datetime!(2024-02-01 00:00 UTC);
const MONTH_HOURS: i64 = 744;

/// A small deterministic generator, so every run rates the same usage.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn cluster_id(i: usize) -> Uuid {
    Uuid::from_u128(0x7011_6a7e_0000_0000_0000_0000_0000_0000 + i as u128)
}

/// A month of plausible hourly usage: clusters that exist all hour, tens of partitions, up to
/// 10 GB in and out an hour, up to 1 TB stored.
fn month_of_usage(clusters: usize) -> Vec<HourlyUsage> {
    let mut rng = SplitMix(42);
    let start = MONTH_START.unix_timestamp();
    let mut rows = Vec::with_capacity(clusters * MONTH_HOURS as usize);
    for c in 0..clusters {
        let partitions = 1 + rng.below(100);
        let stored = rng.below(1 << 40);
        for h in 0..MONTH_HOURS {
            rows.push(HourlyUsage {
                cluster: cluster_id(c),
                hour: start + h * H,
                cluster_seconds: 3_600,
                partition_seconds: partitions * 3_600,
                bytes_in: rng.below(10 << 30),
                bytes_out: rng.below(10 << 30),
                storage_byte_seconds: (stored + rng.below(1 << 30)) * 3_600,
            });
        }
    }
    rows
}

fn request(clusters: usize) -> ReportRequest {
    ReportRequest {
        tenant: "acme".into(),
        clusters: (0..clusters)
            .map(|c| (cluster_id(c), format!("cluster-{c}")))
            .collect(),
        from: MONTH_START,
        to: MONTH_END,
        now: datetime!(2024-02-02 00:00 UTC),
        grace: Duration::from_secs(900),
    }
}

/// The ledger entries closing `rows` would write, priced as `Ledger::close_hour` prices them.
fn ledger_entries(rows: &[HourlyUsage], rates: &RateCard) -> Vec<LedgerEntry> {
    let mut out = Vec::with_capacity(rows.len() * 5);
    for row in rows {
        for r in rating::rate_hour(row, rates).unwrap() {
            out.push(LedgerEntry {
                cluster: row.cluster,
                hour: row.hour,
                dimension: r.dimension,
                seq: 0,
                billed_usage: r.base_units,
                quantity: r.quantity,
                rate: r.rate,
                amount: r.amount,
                currency: rates.currency.clone(),
                billed_at: row.hour + 2 * H,
            });
        }
    }
    out
}

fn rating_month(c: &mut Criterion) {
    let rates = RateCard::default();
    let rows = month_of_usage(1_000);
    let mut group = c.benchmark_group("rating");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows.len() as u64));
    // What closing every hour prices: 744,000 rows x 5 dimensions, one amount each.
    group.bench_function("month_1000_clusters_per_hour", |b| {
        b.iter(|| {
            let mut total = rust_decimal::Decimal::ZERO;
            for row in &rows {
                for r in rating::rate_hour(row, &rates).unwrap() {
                    total += r.amount;
                }
            }
            total
        })
    });
    // The same month rolled up into one line per cluster and dimension, with totals.
    let req = request(1_000);
    group.bench_function("month_1000_clusters_report", |b| {
        b.iter(|| report::build(&req, &rates, &[], &rows).unwrap())
    });
    group.finish();
}

fn tenant_report(c: &mut Criterion) {
    let rates = RateCard::default();
    let rows = month_of_usage(10);
    let entries = ledger_entries(&rows, &rates);
    let req = request(10);
    let mut group = c.benchmark_group("report");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("tenant_month_10_clusters_from_usage", |b| {
        b.iter(|| report::build(&req, &rates, &[], &rows).unwrap())
    });
    group.bench_function("tenant_month_10_clusters_from_ledger", |b| {
        b.iter(|| report::build(&req, &rates, &entries, &[]).unwrap())
    });
    let report: Report = report::build(&req, &rates, &entries, &[]).unwrap();
    group.bench_function("render_json", |b| b.iter(|| report.to_json().unwrap()));
    group.bench_function("render_csv", |b| b.iter(|| report.to_csv()));

    // End to end on the embedded store: read a month of ledger entries, then build.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", Uuid::new_v4()));
    let store = RedbLedger::open(&dir).unwrap();
    runtime.block_on(async {
        for cluster in 0..10 {
            let batch: Vec<LedgerEntry> = entries
                .iter()
                .filter(|e| e.cluster == cluster_id(cluster))
                .cloned()
                .collect();
            store.append(batch).await.unwrap();
        }
    });
    let ledger = Ledger::new(Arc::new(store), req.grace);
    group.bench_function("tenant_month_10_clusters_redb", |b| {
        b.iter(|| runtime.block_on(ledger.report(&req, &[], &rates)).unwrap())
    });
    group.finish();

    // Closing one cluster-hour on the embedded store: a range read and a committed append
    // (an fsync). The closing task does 1,000 of these an hour for 1,000 clusters.
    let mut group = c.benchmark_group("ledger");
    let mut hour = MONTH_END.unix_timestamp();
    group.bench_function("close_hour_redb", |b| {
        b.iter_batched(
            || {
                hour += H;
                HourlyUsage {
                    cluster_seconds: 3_600,
                    bytes_in: 1 << 30,
                    ..HourlyUsage::zero(cluster_id(0), hour)
                }
            },
            |row| {
                let outcome = runtime
                    .block_on(ledger.close_hour(&row, &rates, row.hour + 2 * H))
                    .unwrap();
                assert!(matches!(outcome, CloseOutcome::Billed(_)));
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, rating_month, tenant_report);
criterion_main!(benches);
