//! The flusher's promises: exact counts through store failures, including failures that
//! happen after the store has applied a flush (a reply lost to a timeout).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tollgate_meter::counters::CounterSet;
use tollgate_meter::embedded::EmbeddedStore;
use tollgate_meter::flusher::{ClusterSource, ClusterState, Flusher};
use tollgate_meter::store::{
    Applied, BoxFuture, Counts, Flush, PrincipalUsage, StoreError, UsageStore,
};
use tollgate_meter::HourlyUsage;
use uuid::Uuid;

/// A real embedded store behind a switch that makes calls fail, either before touching the
/// store (unreachable) or after applying (the reply was lost). The failures are injected
/// because a lost reply cannot be produced on demand otherwise; the Redis tests stop a real
/// server instead.
struct Flaky {
    inner: EmbeddedStore,
    fail_before: AtomicUsize,
    fail_after: AtomicUsize,
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl UsageStore for Flaky {
    fn apply<'a>(&'a self, flush: &'a Flush) -> BoxFuture<'a, Result<Applied, StoreError>> {
        Box::pin(async move {
            if take(&self.fail_before) {
                return Err(StoreError::Unavailable("injected: unreachable".into()));
            }
            let applied = self.inner.apply(flush).await?;
            if take(&self.fail_after) {
                return Err(StoreError::Unavailable("injected: reply lost".into()));
            }
            Ok(applied)
        })
    }
    fn clocks<'a>(&'a self, c: &'a [Uuid]) -> BoxFuture<'a, Result<Vec<Option<i64>>, StoreError>> {
        self.inner.clocks(c)
    }
    fn last_counts<'a>(
        &'a self,
        c: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Option<Counts>>, StoreError>> {
        self.inner.last_counts(c)
    }
    fn hourly(
        &self,
        c: Uuid,
        f: i64,
        t: i64,
    ) -> BoxFuture<'_, Result<Vec<HourlyUsage>, StoreError>> {
        self.inner.hourly(c, f, t)
    }
    fn principals(
        &self,
        c: Uuid,
        f: i64,
        t: i64,
    ) -> BoxFuture<'_, Result<Vec<PrincipalUsage>, StoreError>> {
        self.inner.principals(c, f, t)
    }
    fn unclosed(&self, c: Uuid) -> BoxFuture<'_, Result<Vec<i64>, StoreError>> {
        self.inner.unclosed(c)
    }
    fn mark_closed<'a>(&'a self, rows: &'a [HourlyUsage]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.mark_closed(rows)
    }
}

struct Fixed(Vec<ClusterState>);

impl ClusterSource for Fixed {
    fn clusters(&self) -> BoxFuture<'_, Vec<ClusterState>> {
        Box::pin(async move { self.0.clone() })
    }
}

fn store() -> Arc<Flaky> {
    let dir = std::env::temp_dir().join(format!("tollgate-flusher-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    Arc::new(Flaky {
        inner: EmbeddedStore::open(&dir).unwrap(),
        fail_before: AtomicUsize::new(0),
        fail_after: AtomicUsize::new(0),
    })
}

async fn totals(store: &Flaky, c: Uuid) -> HourlyUsage {
    let mut t = HourlyUsage::zero(c, 0);
    for r in store.hourly(c, 0, i64::MAX).await.unwrap() {
        t.cluster_seconds += r.cluster_seconds;
        t.partition_seconds += r.partition_seconds;
        t.bytes_in += r.bytes_in;
        t.bytes_out += r.bytes_out;
        t.storage_byte_seconds += r.storage_byte_seconds;
    }
    t
}

#[tokio::test]
async fn every_byte_once_through_unreachable_stores_and_lost_replies() {
    let c = Uuid::new_v4();
    let store = store();
    let counters = CounterSet::default();
    let svc = counters.counters(c, "svc");
    let mut flusher = Flusher::new("gw-1", counters.clone(), store.clone());
    let source = Fixed(vec![ClusterState {
        cluster: c,
        created_at: 1000,
        deleted_at: None,
        counts: Some(Counts {
            partitions: 3,
            stored_bytes: 10,
        }),
    }]);

    let mut now = 1000;
    let mut expected_in = 0;
    for round in 0..40u64 {
        svc.add_in(round + 1);
        svc.add_out(2);
        expected_in += round + 1;
        match round % 8 {
            3 => store.fail_before.store(2, Ordering::SeqCst),
            5 => store.fail_after.store(1, Ordering::SeqCst),
            _ => {}
        }
        now += 1;
        let _ = flusher.tick(&source, now).await;
    }
    // The store works again: the backlog drains.
    now += 1;
    flusher.tick(&source, now).await.unwrap();
    assert_eq!(flusher.backlog(), 0);

    let t = totals(&store, c).await;
    assert_eq!(t.bytes_in, expected_in);
    assert_eq!(t.bytes_out, 80);
    // Exactly the seconds from creation to the last tick, accrued once.
    assert_eq!(t.cluster_seconds, (now - 1000) as u64);
    assert_eq!(t.partition_seconds, 3 * (now - 1000) as u64);
    assert_eq!(t.storage_byte_seconds, 10 * (now - 1000) as u64);
    let by_principal: u64 = store
        .principals(c, 0, i64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|p| p.bytes_in)
        .sum();
    assert_eq!(by_principal, expected_in);
}

#[tokio::test]
async fn accrual_stops_at_deletion_and_catches_up_after_downtime() {
    let c = Uuid::new_v4();
    let store = store();
    let source = Fixed(vec![ClusterState {
        cluster: c,
        created_at: 3000,
        deleted_at: Some(3000 + 7200),
        counts: Some(Counts {
            partitions: 1,
            stored_bytes: 0,
        }),
    }]);
    let mut flusher = Flusher::new("gw", CounterSet::default(), store.clone());
    flusher.tick(&source, 3010).await.unwrap();
    // A long gap (the gateway was down), then well past the deletion.
    flusher.tick(&source, 3000 + 100_000).await.unwrap();
    flusher.tick(&source, 3000 + 100_001).await.unwrap();
    assert_eq!(totals(&store, c).await.cluster_seconds, 7200);
    // A second instance starting later accrues nothing more.
    let mut other = Flusher::new("gw-2", CounterSet::default(), store.clone());
    other.tick(&source, 3000 + 200_000).await.unwrap();
    assert_eq!(totals(&store, c).await.cluster_seconds, 7200);
}

fn state(c: Uuid, counts: Option<(u64, u64)>) -> ClusterState {
    ClusterState {
        cluster: c,
        created_at: 1000,
        deleted_at: None,
        counts: counts.map(|(partitions, stored_bytes)| Counts {
            partitions,
            stored_bytes,
        }),
    }
}

/// Issue 13: a restarted gateway billed the gap at 0 partitions and 0 stored bytes, the
/// counts it reports before its first reconciliation with the pool.
#[tokio::test]
async fn a_restart_gap_accrues_at_the_counts_the_cluster_had_when_accrual_stopped() {
    let c = Uuid::new_v4();
    let store = store();
    let mut before = Flusher::new("gw-1", CounterSet::default(), store.clone());
    before
        .tick(&Fixed(vec![state(c, Some((3, 10)))]), 1010)
        .await
        .unwrap();
    // The gateway stops at 1010 and starts again at 5000, not yet reconciled.
    let mut after = Flusher::new("gw-2", CounterSet::default(), store.clone());
    let unknown = Fixed(vec![state(c, None)]);
    after.tick(&unknown, 5000).await.unwrap();
    let t = totals(&store, c).await;
    assert_eq!(t.cluster_seconds, 4000);
    assert_eq!(t.partition_seconds, 3 * 4000);
    assert_eq!(t.storage_byte_seconds, 10 * 4000);
    // Still not reconciled a second later: the last known counts go on.
    after.tick(&unknown, 5001).await.unwrap();
    // Reconciled: the counts it now knows apply to the time it watched.
    after
        .tick(&Fixed(vec![state(c, Some((5, 7)))]), 5011)
        .await
        .unwrap();
    let t = totals(&store, c).await;
    assert_eq!(t.cluster_seconds, 4011);
    assert_eq!(t.partition_seconds, 3 * 4001 + 5 * 10);
    assert_eq!(t.storage_byte_seconds, 10 * 4001 + 7 * 10);
}

/// With no counts kept beside the clock (a store from before they were kept), accrual waits
/// for the first counts known and then accrues the whole gap at them, once.
#[tokio::test]
async fn without_kept_counts_accrual_waits_for_known_counts() {
    let c = Uuid::new_v4();
    let store = store();
    let mut flusher = Flusher::new("gw", CounterSet::default(), store.clone());
    flusher
        .tick(&Fixed(vec![state(c, None)]), 2000)
        .await
        .unwrap();
    flusher
        .tick(&Fixed(vec![state(c, None)]), 2500)
        .await
        .unwrap();
    assert_eq!(totals(&store, c).await, HourlyUsage::zero(c, 0));
    flusher
        .tick(&Fixed(vec![state(c, Some((4, 2)))]), 3000)
        .await
        .unwrap();
    let t = totals(&store, c).await;
    assert_eq!(t.cluster_seconds, 2000);
    assert_eq!(t.partition_seconds, 4 * 2000);
    assert_eq!(t.storage_byte_seconds, 2 * 2000);
}
