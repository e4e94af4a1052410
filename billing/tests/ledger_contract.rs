//! The `LedgerStore` contract, and the `Ledger` on top of it, checked against both stores with
//! the same suite: the embedded redb file and a real redis-server.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use support::{RedisServer, ScratchDir};
use tollgate_billing::{
    CloseOutcome, Dimension, Error, Ledger, LedgerEntry, LedgerStore, RateCard, RedbLedger,
    RedisLedger,
};
use tollgate_meter::HourlyUsage;
use uuid::Uuid;

const H: i64 = 3_600;
/// 2024-01-01T00:00:00Z, a Monday in a 31-day month.
const JAN_2024: i64 = 1_704_067_200;

fn entry(cluster: Uuid, hour: i64, dimension: Dimension, seq: u32, billed: u64) -> LedgerEntry {
    LedgerEntry {
        cluster,
        hour,
        dimension,
        seq,
        billed_usage: billed,
        quantity: Decimal::new(billed as i64, 3),
        rate: Decimal::new(75, 2),
        amount: Decimal::new(billed as i64 * 75, 5),
        currency: "USD".into(),
        billed_at: hour + 2 * H,
    }
}

fn usage(cluster: Uuid, hour: i64, cluster_seconds: u64, bytes_in: u64) -> HourlyUsage {
    HourlyUsage {
        cluster_seconds,
        partition_seconds: cluster_seconds * 3,
        bytes_in,
        storage_byte_seconds: 1 << 40,
        ..HourlyUsage::zero(cluster, hour)
    }
}

/// Every check, in order, each on clusters of its own.
async fn contract(store: Arc<dyn LedgerStore>) {
    appends_and_reads_back(&*store).await;
    conflicting_batches_write_nothing(&*store).await;
    reads_are_half_open_ranges_per_cluster(&*store).await;
    refuses_invalid_batches(&*store).await;
    orders_many_adjustments_numerically(&*store).await;
    closing_is_idempotent_and_late_usage_adjusts(store.clone()).await;
    concurrent_closes_bill_once(store.clone()).await;
    a_shrunk_hour_is_held_and_the_rest_close(store.clone()).await;
}

async fn appends_and_reads_back(store: &dyn LedgerStore) {
    let c = Uuid::new_v4();
    assert!(store.entries(c, 0, i64::MAX).await.unwrap().is_empty());
    store.append(Vec::new()).await.unwrap();
    // Written out of order; read back sorted by (hour, dimension, seq).
    let batch = vec![
        entry(c, JAN_2024 + H, Dimension::DataOutGb, 0, 7),
        entry(c, JAN_2024, Dimension::StorageGbMonths, 0, 5),
        entry(c, JAN_2024, Dimension::ClusterHours, 0, 3_600),
        entry(c, -H, Dimension::ClusterHours, 0, 1),
    ];
    store.append(batch.clone()).await.unwrap();
    let read = store.entries(c, i64::MIN, i64::MAX).await.unwrap();
    let mut expected = batch;
    expected.sort_by_key(LedgerEntry::key);
    assert_eq!(read, expected);
}

async fn conflicting_batches_write_nothing(store: &dyn LedgerStore) {
    let c = Uuid::new_v4();
    let first = entry(c, JAN_2024, Dimension::ClusterHours, 0, 3_600);
    store.append(vec![first.clone()]).await.unwrap();
    let fresh = entry(c, JAN_2024, Dimension::PartitionHours, 0, 1);
    let mut clash = entry(c, JAN_2024, Dimension::ClusterHours, 0, 1_800);
    clash.amount = Decimal::ONE;
    let err = store
        .append(vec![fresh, clash])
        .await
        .expect_err("a batch with an existing key must fail");
    match err {
        Error::Conflict {
            cluster,
            hour,
            dimension,
            seq,
        } => assert_eq!(
            (cluster, hour, dimension, seq),
            (c, JAN_2024, Dimension::ClusterHours, 0)
        ),
        other => panic!("expected a conflict, got {other}"),
    }
    // Neither the fresh entry nor the clashing one was written; the original is intact.
    assert_eq!(store.entries(c, 0, i64::MAX).await.unwrap(), vec![first]);
}

async fn reads_are_half_open_ranges_per_cluster(store: &dyn LedgerStore) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for c in [a, b] {
        let batch = (0..5)
            .map(|i| entry(c, JAN_2024 + i * H, Dimension::DataInGb, 0, i as u64))
            .collect();
        store.append(batch).await.unwrap();
    }
    let read = store
        .entries(a, JAN_2024 + H, JAN_2024 + 3 * H)
        .await
        .unwrap();
    let hours: Vec<i64> = read.iter().map(|e| e.hour - JAN_2024).collect();
    assert_eq!(hours, [H, 2 * H]);
    assert!(read.iter().all(|e| e.cluster == a));
    assert!(store
        .entries(a, JAN_2024 + 3 * H, JAN_2024 + 3 * H)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .entries(a, JAN_2024 + 3 * H, JAN_2024)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.entries(b, 0, i64::MAX).await.unwrap().len(), 5);
    assert!(store
        .entries(Uuid::new_v4(), 0, i64::MAX)
        .await
        .unwrap()
        .is_empty());
}

async fn refuses_invalid_batches(store: &dyn LedgerStore) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mixed = vec![
        entry(a, JAN_2024, Dimension::DataInGb, 0, 1),
        entry(b, JAN_2024, Dimension::DataInGb, 0, 1),
    ];
    assert!(matches!(
        store.append(mixed).await,
        Err(Error::InvalidBatch(_))
    ));
    let twice = vec![
        entry(a, JAN_2024, Dimension::DataInGb, 0, 1),
        entry(a, JAN_2024, Dimension::DataInGb, 0, 2),
    ];
    assert!(matches!(
        store.append(twice).await,
        Err(Error::InvalidBatch(_))
    ));
    assert!(store.entries(a, 0, i64::MAX).await.unwrap().is_empty());
    assert!(store.entries(b, 0, i64::MAX).await.unwrap().is_empty());
}

async fn orders_many_adjustments_numerically(store: &dyn LedgerStore) {
    let c = Uuid::new_v4();
    for seq in 0..12 {
        store
            .append(vec![entry(c, JAN_2024, Dimension::DataOutGb, seq, 1)])
            .await
            .unwrap();
    }
    let seqs: Vec<u32> = store
        .entries(c, JAN_2024, JAN_2024 + H)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (0..12).collect::<Vec<_>>());
}

async fn closing_is_idempotent_and_late_usage_adjusts(store: Arc<dyn LedgerStore>) {
    let grace = Duration::from_secs(600);
    let ledger = Ledger::new(store, grace);
    let rates = RateCard::default();
    let c = Uuid::new_v4();
    let hour = JAN_2024;
    let first = usage(c, hour, 1_800, 1 << 30);

    // Not before the hour's end plus grace.
    let closes_at = hour + H + 600;
    assert_eq!(ledger.closes_at(hour), closes_at);
    assert!(matches!(
        ledger.close_hour(&first, &rates, closes_at - 1).await,
        Err(Error::HourOpen { .. })
    ));
    assert!(ledger.entries(c, hour, hour + H).await.unwrap().is_empty());

    let CloseOutcome::Billed(billed) = ledger.close_hour(&first, &rates, closes_at).await.unwrap()
    else {
        panic!("the first close bills");
    };
    assert_eq!(billed.len(), 5);
    assert!(billed
        .iter()
        .all(|e| e.seq == 0 && e.billed_at == closes_at));
    let cluster_hours = &billed[0];
    assert_eq!(cluster_hours.dimension, Dimension::ClusterHours);
    assert_eq!(cluster_hours.quantity, Decimal::new(5, 1));
    assert_eq!(cluster_hours.amount, Decimal::new(375, 3));

    // Idempotent: the same usage again, even much later, changes nothing.
    for later in [closes_at, closes_at + 86_400] {
        assert_eq!(
            ledger.close_hour(&first, &rates, later).await.unwrap(),
            CloseOutcome::Unchanged
        );
    }
    assert_eq!(ledger.entries(c, hour, hour + H).await.unwrap(), billed);

    // A late flush grows cluster_seconds (and partition_seconds with it) and bytes_in:
    // adjustments for exactly those, for the difference only.
    let late = usage(c, hour, 3_600, 3 << 29);
    let CloseOutcome::Adjusted(adjusted) = ledger
        .close_hour(&late, &rates, closes_at + 10)
        .await
        .unwrap()
    else {
        panic!("late usage adjusts");
    };
    let summary: Vec<(Dimension, u32, u64)> = adjusted
        .iter()
        .map(|e| (e.dimension, e.seq, e.billed_usage))
        .collect();
    assert_eq!(
        summary,
        [
            (Dimension::ClusterHours, 1, 1_800),
            (Dimension::PartitionHours, 1, 5_400),
            (Dimension::DataInGb, 1, 1 << 29),
        ]
    );
    assert_eq!(adjusted[2].amount, Decimal::new(5, 2));
    assert_eq!(
        ledger
            .close_hour(&late, &rates, closes_at + 20)
            .await
            .unwrap(),
        CloseOutcome::Unchanged
    );
    // The originals are untouched: append-only.
    let all = ledger.entries(c, hour, hour + H).await.unwrap();
    assert_eq!(all.len(), 8);
    for original in &billed {
        assert!(all.contains(original));
    }

    // Fewer usage than billed is a partial count: refused, nothing written.
    assert!(matches!(
        ledger.close_hour(&first, &rates, closes_at + 30).await,
        Err(Error::UsageShrank { .. })
    ));
    assert_eq!(ledger.entries(c, hour, hour + H).await.unwrap().len(), 8);

    // close_due merges partial rows per hour and leaves open hours alone.
    let c2 = Uuid::new_v4();
    let rows = [
        usage(c2, hour, 1_000, 0),
        usage(c2, hour, 2_600, 0),
        usage(c2, hour + 5 * H, 3_600, 0),
    ];
    let summary = ledger.close_due(&rows, &rates, closes_at).await.unwrap();
    assert_eq!((summary.billed, summary.open), (1, 1));
    let e = ledger.entries(c2, hour, hour + H).await.unwrap();
    assert_eq!(e[0].billed_usage, 3_600);
    let summary = ledger.close_due(&rows, &rates, closes_at).await.unwrap();
    assert_eq!((summary.billed, summary.unchanged, summary.open), (0, 1, 1));
}

/// Issue 13: one cluster whose usage shrank used to end `close_due` with an error, so the
/// clusters and hours after it in the same run were never billed.
async fn a_shrunk_hour_is_held_and_the_rest_close(store: Arc<dyn LedgerStore>) {
    let rates = RateCard::default();
    let ledger = Ledger::new(store, Duration::ZERO);
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let hour = JAN_2024 + 7 * H;
    let now = hour + 3 * H;
    ledger
        .close_hour(&usage(b, hour, 3_600, 100), &rates, now)
        .await
        .unwrap();
    // b's hour lost bytes (a flushed usage store); a, c and b's next hour are new.
    let rows = [
        usage(a, hour, 3_600, 1),
        usage(b, hour, 3_600, 40),
        usage(b, hour + H, 3_600, 2),
        usage(c, hour, 3_600, 3),
    ];
    let summary = ledger.close_due(&rows, &rates, now).await.unwrap();
    assert_eq!(summary.billed, 3, "{summary:?}");
    assert_eq!(summary.held.len(), 1);
    let held = &summary.held[0];
    assert_eq!((held.cluster, held.hour), (b, hour));
    assert_eq!(
        (held.dimension, held.billed, held.usage),
        (Dimension::DataInGb, 100, 40)
    );
    for cluster in [a, c] {
        assert_eq!(
            ledger.entries(cluster, hour, hour + H).await.unwrap().len(),
            5
        );
    }
    assert_eq!(
        ledger
            .entries(b, hour + H, hour + 2 * H)
            .await
            .unwrap()
            .len(),
        5
    );
    // The held hour keeps its bill untouched, and is reported again on the next run.
    let b_hour = ledger.entries(b, hour, hour + H).await.unwrap();
    assert_eq!(b_hour.len(), 5);
    assert!(b_hour.iter().all(|e| e.seq == 0));
    let again = ledger.close_due(&rows, &rates, now + 60).await.unwrap();
    assert_eq!((again.unchanged, again.held.len()), (3, 1));
    // Once the usage is back above the bill, the hour closes with an adjustment as usual.
    let grown = [usage(b, hour, 3_600, 150)];
    let healed = ledger.close_due(&grown, &rates, now + 120).await.unwrap();
    assert_eq!((healed.adjusted, healed.held.len()), (1, 0));
}

async fn concurrent_closes_bill_once(store: Arc<dyn LedgerStore>) {
    let rates = RateCard::default();
    for _ in 0..10 {
        let a = Ledger::new(store.clone(), Duration::ZERO);
        let b = a.clone();
        let c = Uuid::new_v4();
        let row = usage(c, JAN_2024, 3_600, 5);
        let now = JAN_2024 + H;
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let rates = rates.clone();
                async move { a.close_hour(&row, &rates, now).await }
            }),
            tokio::spawn({
                let rates = rates.clone();
                async move { b.close_hour(&row, &rates, now).await }
            }),
        );
        let outcomes = [ra.unwrap().unwrap(), rb.unwrap().unwrap()];
        let billed = outcomes
            .iter()
            .filter(|o| matches!(o, CloseOutcome::Billed(_)))
            .count();
        assert_eq!(billed, 1, "{outcomes:?}");
        assert!(outcomes.contains(&CloseOutcome::Unchanged));
        assert_eq!(store.entries(c, 0, i64::MAX).await.unwrap().len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_ledger_keeps_the_contract() {
    let dir = ScratchDir::new("redb");
    let store = RedbLedger::open(dir.path()).unwrap();
    contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ledger_keeps_the_contract() {
    let server = RedisServer::start();
    let store = RedisLedger::connect(&server.url(), RedisLedger::DEFAULT_PREFIX)
        .await
        .unwrap();
    contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_ledger_survives_reopening() {
    let dir = ScratchDir::new("redb-reopen");
    let c = Uuid::new_v4();
    let written = vec![entry(c, JAN_2024, Dimension::DataInGb, 0, 9)];
    {
        let store = RedbLedger::open(dir.path()).unwrap();
        store.append(written.clone()).await.unwrap();
    }
    let store = RedbLedger::open(dir.path()).unwrap();
    assert_eq!(store.entries(c, 0, i64::MAX).await.unwrap(), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ledgers_are_shared_between_gateways_and_separated_by_prefix() {
    let server = RedisServer::start();
    let one = RedisLedger::connect(&server.url(), "t:one").await.unwrap();
    let two = RedisLedger::connect(&server.url(), "t:one").await.unwrap();
    let other = RedisLedger::connect(&server.url(), "t:other")
        .await
        .unwrap();
    let c = Uuid::new_v4();
    let written = vec![entry(c, JAN_2024, Dimension::DataInGb, 0, 9)];
    one.append(written.clone()).await.unwrap();
    assert_eq!(two.entries(c, 0, i64::MAX).await.unwrap(), written);
    assert!(matches!(
        two.append(written.clone()).await,
        Err(Error::Conflict { .. })
    ));
    assert!(other.entries(c, 0, i64::MAX).await.unwrap().is_empty());
}
