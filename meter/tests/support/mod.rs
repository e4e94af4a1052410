//! The [`UsageStore`] contract, checked against every store (`embedded.rs`, `redis.rs`): each
//! store gets the same calls and must give the same answers.

use tollgate_meter::store::{Accrual, Counts, Flush, PrincipalUsage, UsageStore};
use tollgate_meter::{accrual::accrue, HourlyUsage};
use uuid::Uuid;

pub fn bytes(cluster: Uuid, hour: i64, bytes_in: u64, bytes_out: u64) -> HourlyUsage {
    let mut u = HourlyUsage::zero(cluster, hour);
    u.bytes_in = bytes_in;
    u.bytes_out = bytes_out;
    u
}

pub fn flush(instance: &str, seq: u64, rows: Vec<HourlyUsage>) -> Flush {
    Flush {
        instance: instance.into(),
        seq,
        principals: rows
            .iter()
            .map(|r| PrincipalUsage {
                cluster: r.cluster,
                principal: "svc".into(),
                hour: r.hour,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
            })
            .collect(),
        bytes: rows,
        accruals: Vec::new(),
    }
}

pub async fn check(store: &dyn UsageStore) {
    let c = Uuid::new_v4();
    let other = Uuid::new_v4();

    // Counts add up, per hour, across instances.
    let f1 = flush("a", 1, vec![bytes(c, 3600, 100, 10)]);
    assert!(store.apply(&f1).await.unwrap().fresh);
    let f2 = flush("b", 1, vec![bytes(c, 3600, 5, 1), bytes(c, 7200, 7, 0)]);
    assert!(store.apply(&f2).await.unwrap().fresh);
    let rows = store.hourly(c, 0, 3 * 3600).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].hour, rows[0].bytes_in, rows[0].bytes_out),
        (3600, 105, 11)
    );
    assert_eq!((rows[1].hour, rows[1].bytes_in), (7200, 7));

    // A retried flush (same instance and seq) counts once; so does any older one.
    assert!(!store.apply(&f1).await.unwrap().fresh);
    assert!(
        !store
            .apply(&flush("a", 1, vec![bytes(c, 3600, 999, 0)]))
            .await
            .unwrap()
            .fresh
    );
    assert_eq!(store.hourly(c, 3600, 7200).await.unwrap()[0].bytes_in, 105);

    // The range is half-open and other clusters are not mixed in.
    assert_eq!(store.hourly(c, 7200, 7200).await.unwrap().len(), 0);
    assert_eq!(store.hourly(c, 7200, 10800).await.unwrap().len(), 1);
    assert!(store.hourly(other, 0, 100_000).await.unwrap().is_empty());

    // Per-principal bytes.
    let p = store.principals(c, 0, 10800).await.unwrap();
    let total_in: u64 = p.iter().map(|p| p.bytes_in).sum();
    assert_eq!(total_in, 112);
    assert!(p.iter().all(|p| p.principal == "svc"));

    // Accruals move the clock, and only from where it stands.
    assert_eq!(store.clocks(&[other]).await.unwrap(), vec![None]);
    let acc = |from: i64, to: i64| Accrual {
        cluster: other,
        from,
        to,
        counts: Counts {
            partitions: 2,
            stored_bytes: 1000,
        },
        rows: accrue(other, from, to, 2, 1000),
    };
    let mut f = flush("a", 2, vec![]);
    f.accruals = vec![acc(3500, 3700)];
    let applied = store.apply(&f).await.unwrap();
    assert!(applied.fresh && applied.stale_accruals.is_empty());
    assert_eq!(store.clocks(&[other]).await.unwrap(), vec![Some(3700)]);
    // The counts it accrued at are kept beside the clock.
    assert_eq!(
        store.last_counts(&[other, c]).await.unwrap(),
        vec![
            Some(Counts {
                partitions: 2,
                stored_bytes: 1000
            }),
            None
        ]
    );
    // Another instance that read the clock before the move: skipped, bytes still applied.
    let mut late = flush("b", 2, vec![bytes(other, 3600, 1, 0)]);
    late.accruals = vec![acc(3500, 3800)];
    let applied = store.apply(&late).await.unwrap();
    assert!(applied.fresh);
    assert_eq!(applied.stale_accruals, vec![other]);
    let mut next = flush("b", 3, vec![]);
    next.accruals = vec![acc(3700, 3800)];
    assert!(store.apply(&next).await.unwrap().stale_accruals.is_empty());
    let rows = store.hourly(other, 0, 7200).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            rows[0].hour,
            rows[0].cluster_seconds,
            rows[0].partition_seconds
        ),
        (0, 100, 200)
    );
    assert_eq!((rows[1].hour, rows[1].cluster_seconds), (3600, 200));
    assert_eq!(rows[1].storage_byte_seconds, 200 * 1000);
    assert_eq!(rows[1].bytes_in, 1);

    unclosed_hours_are_kept_until_closed_unchanged(store).await;
}

/// Every hour a flush adds to is unclosed, however old, until the closer marks it closed with
/// the usage it billed; a change after that read keeps it unclosed.
async fn unclosed_hours_are_kept_until_closed_unchanged(store: &dyn UsageStore) {
    let c = Uuid::new_v4();
    assert!(store.unclosed(c).await.unwrap().is_empty());
    let old = 3600;
    let recent = 400 * 3600;
    let f = flush("uc", 1, vec![bytes(c, recent, 1, 0), bytes(c, old, 2, 0)]);
    store.apply(&f).await.unwrap();
    assert_eq!(store.unclosed(c).await.unwrap(), vec![old, recent]);

    let read = store.hourly(c, 0, i64::MAX).await.unwrap();
    // More usage for the old hour lands between the closer's read and its mark.
    store
        .apply(&flush("uc", 2, vec![bytes(c, old, 5, 0)]))
        .await
        .unwrap();
    store.mark_closed(&read).await.unwrap();
    assert_eq!(store.unclosed(c).await.unwrap(), vec![old]);
    let read = store.hourly(c, old, old + 3600).await.unwrap();
    store.mark_closed(&read).await.unwrap();
    assert!(store.unclosed(c).await.unwrap().is_empty());

    // An hour that only ever got zeros is closed by a zero row.
    store
        .apply(&flush("uc", 3, vec![bytes(c, 7200, 0, 0)]))
        .await
        .unwrap();
    assert_eq!(store.unclosed(c).await.unwrap(), vec![7200]);
    store
        .mark_closed(&[HourlyUsage::zero(c, 7200)])
        .await
        .unwrap();
    assert!(store.unclosed(c).await.unwrap().is_empty());
}
