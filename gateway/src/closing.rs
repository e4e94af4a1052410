//! Closing hours into the ledger.
//!
//! Once a minute, every cluster's unclosed hours (those the usage store saw change since they
//! were last billed, however old) and its recent usage (the last [`LOOKBACK`], for hours
//! written before the store tracked unclosed ones) are handed to the ledger, which bills each
//! hour whose grace period has passed, and turns usage that grew after an hour was billed (a
//! late flush, a backlog from a Redis outage, a restarted gateway's catch-up) into adjustment
//! lines. Re-running it is harmless: the ledger is idempotent, and with several gateways only
//! one bills an hour.
//!
//! One cluster failing does not stop the others. An hour whose usage went below its bill is
//! held (see [`tollgate_billing::HeldHour`]): logged as an error every pass, left unclosed, and
//! closed as usual once its usage is back above the bill.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tollgate_billing::{CloseSummary, Ledger, RateCard};
use tollgate_meter::store::UsageStore;
use tollgate_meter::{hour_of, HourlyUsage, HOUR};
use uuid::Uuid;

use crate::admin::Store;

pub const EVERY: Duration = Duration::from_secs(60);
pub const LOOKBACK: i64 = 48 * HOUR;

pub struct Closer {
    pub store: Store,
    pub usage: Arc<dyn UsageStore>,
    pub ledger: Arc<Ledger>,
    pub rates: RateCard,
}

/// What one pass did, for the log (and for whoever runs a pass by hand).
#[derive(Debug, Default)]
pub struct Pass {
    pub summary: CloseSummary,
    /// Clusters whose closing failed (the usage store or ledger did not answer), with why; the
    /// other clusters were closed all the same, and the next pass retries these.
    pub failed: Vec<(Uuid, String)>,
}

impl Closer {
    /// One pass over every cluster, deleted ones included. One cluster's failure, or one held
    /// hour, does not keep the others from closing: see [`Pass`] and
    /// [`CloseSummary::held`]. Errs only when the list of clusters cannot be read.
    pub async fn close(&self, now: i64) -> Result<Pass, String> {
        let store = self.store.clone();
        let records = tokio::task::spawn_blocking(move || store.cluster_records())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut pass = Pass::default();
        for record in records {
            // A cluster deleted long ago has nothing recent; only late hours can still come.
            let recent = record.deleted_at.is_none_or(|d| d + LOOKBACK + HOUR >= now);
            let id = record.cluster.id;
            match self.close_cluster(id, recent, now).await {
                Ok(s) => {
                    pass.summary.billed += s.billed;
                    pass.summary.adjusted += s.adjusted;
                    pass.summary.unchanged += s.unchanged;
                    pass.summary.open += s.open;
                    pass.summary.held.extend(s.held);
                }
                Err(e) => pass.failed.push((id, e)),
            }
        }
        Ok(pass)
    }

    /// Closes one cluster's unclosed hours, whatever their age, and (if `recent`) every hour of
    /// the last [`LOOKBACK`]; then tells the usage store which unclosed hours are billed as
    /// they stand. An hour still open, held, or grown since it was read stays unclosed.
    async fn close_cluster(
        &self,
        id: Uuid,
        recent: bool,
        now: i64,
    ) -> Result<CloseSummary, String> {
        let unclosed = self.usage.unclosed(id).await.map_err(|e| e.to_string())?;
        let window = hour_of(now - LOOKBACK);
        let mut rows = if recent {
            self.usage
                .hourly(id, window, now + 1)
                .await
                .map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        let before_window = |h: &&i64| !recent || **h < window;
        for &hour in unclosed.iter().filter(before_window) {
            let late = self.usage.hourly(id, hour, hour + HOUR);
            rows.extend(late.await.map_err(|e| e.to_string())?);
        }
        if rows.is_empty() && unclosed.is_empty() {
            return Ok(CloseSummary::default());
        }
        let summary = self
            .ledger
            .close_due(&rows, &self.rates, now)
            .await
            .map_err(|e| e.to_string())?;
        let held: HashSet<i64> = summary.held.iter().map(|h| h.hour).collect();
        let closed: Vec<HourlyUsage> = unclosed
            .iter()
            .filter(|&&h| now >= self.ledger.closes_at(h) && !held.contains(&h))
            .map(|&h| {
                // An hour the store lists without usage (zeros added) has no row and no bill.
                let row = rows.iter().find(|r| r.hour == h);
                row.copied().unwrap_or_else(|| HourlyUsage::zero(id, h))
            })
            .collect();
        self.usage
            .mark_closed(&closed)
            .await
            .map_err(|e| e.to_string())?;
        Ok(summary)
    }

    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = &mut shutdown => return,
            }
            match self.close(tollgate_meter::flusher::unix_now()).await {
                Ok(pass) => {
                    for (cluster, error) in &pass.failed {
                        tracing::warn!(%cluster, %error, "closing a cluster's hours failed; retrying next pass");
                    }
                    // A held hour will not heal by itself unless the lost usage comes back:
                    // it needs a person, so it is an error, repeated every pass.
                    for held in &pass.summary.held {
                        tracing::error!(cluster = %held.cluster, hour = held.hour, "{held}");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "closing hours into the ledger failed; retrying next pass")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::{Cluster, Tenant, DEFAULT_MAX_MESSAGE_BYTES};
    use tollgate_billing::RedbLedger;
    use tollgate_meter::embedded::EmbeddedStore;
    use tollgate_meter::store::Flush;

    /// 2024-01-01T00:00:00Z.
    const START: i64 = 1_704_067_200;

    struct Fixture {
        closer: Closer,
        usage: Arc<EmbeddedStore>,
        dir: std::path::PathBuf,
        seq: u64,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Fixture {
        /// Clusters with ids 1..=n, created at `START`.
        fn new(n: u128) -> Fixture {
            let dir = std::env::temp_dir().join(format!("tollgate-closing-{}", Uuid::new_v4()));
            let store = Store::open(&dir).unwrap();
            store
                .create_tenant(&Tenant {
                    id: "acme".into(),
                    name: "Acme".into(),
                    created_at: START,
                })
                .unwrap();
            for i in 1..=n {
                store
                    .create_cluster(&Cluster {
                        id: Uuid::from_u128(i),
                        tenant: "acme".into(),
                        name: format!("c{i}"),
                        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
                        quotas: Default::default(),
                        allowed_cidrs: None,
                        credentials: Default::default(),
                        created_at: START,
                    })
                    .unwrap();
            }
            let usage = Arc::new(EmbeddedStore::open(&dir).unwrap());
            let ledger = RedbLedger::open(&dir.join("ledger")).unwrap();
            let closer = Closer {
                store,
                usage: usage.clone(),
                ledger: Arc::new(Ledger::new(Arc::new(ledger), Duration::ZERO)),
                rates: RateCard::default(),
            };
            Fixture {
                closer,
                usage,
                dir,
                seq: 0,
            }
        }

        /// Adds a whole hour of cluster `i`'s usage, with `bytes_in` bytes produced.
        async fn add(&mut self, i: u128, hour: i64, bytes_in: u64) {
            self.seq += 1;
            let row = HourlyUsage {
                cluster_seconds: 3_600,
                bytes_in,
                ..HourlyUsage::zero(Uuid::from_u128(i), hour)
            };
            let flush = Flush {
                instance: "gw".into(),
                seq: self.seq,
                bytes: vec![row],
                principals: Vec::new(),
                accruals: Vec::new(),
            };
            self.usage.apply(&flush).await.unwrap();
        }

        async fn billed(&self, i: u128, hour: i64) -> usize {
            let ledger = &self.closer.ledger;
            let entries = ledger.entries(Uuid::from_u128(i), hour, hour + HOUR);
            entries.await.unwrap().len()
        }
    }

    /// Issue 13: a cluster whose usage shrank below its bill used to end the pass with an
    /// error, so every cluster after it (ids 2 and 3 here) was never closed.
    #[tokio::test]
    async fn a_shrunk_cluster_does_not_stop_the_others() {
        let mut f = Fixture::new(3);
        let hour = START + HOUR;
        let now = hour + 2 * HOUR;
        // Cluster 1's hour was billed at 100 bytes in; the store now holds 40 (it lost some).
        let billed = HourlyUsage {
            cluster_seconds: 3_600,
            bytes_in: 100,
            ..HourlyUsage::zero(Uuid::from_u128(1), hour)
        };
        let ledger = f.closer.ledger.clone();
        ledger
            .close_hour(&billed, &f.closer.rates, now)
            .await
            .unwrap();
        f.add(1, hour, 40).await;
        f.add(2, hour, 7).await;
        f.add(3, hour, 9).await;

        let pass = f.closer.close(now).await.unwrap();
        assert!(pass.failed.is_empty(), "{:?}", pass.failed);
        assert_eq!(pass.summary.billed, 2);
        assert_eq!(pass.summary.held.len(), 1);
        assert_eq!(pass.summary.held[0].cluster, Uuid::from_u128(1));
        assert_eq!(f.billed(2, hour).await, 5);
        assert_eq!(f.billed(3, hour).await, 5);
        // The held hour keeps its original bill, and is retried (and reported) every pass.
        assert_eq!(f.billed(1, hour).await, 5);
        let again = f.closer.close(now + 60).await.unwrap();
        assert_eq!(again.summary.held.len(), 1);
        assert_eq!(again.summary.unchanged, 2);
    }

    /// Issue 13: the closer looked at the last 48 hours only, so an hour whose usage reached
    /// the store later (a backlog after a long Redis outage, a gateway down for days catching
    /// up) never reached the ledger, nor did growth of an hour billed more than 48 hours ago.
    #[tokio::test]
    async fn hours_older_than_the_lookback_still_close() {
        let mut f = Fixture::new(2);
        let now = START + 10 * 24 * HOUR;
        let old = START + HOUR;
        let older = START + 2 * HOUR;
        // Cluster 1's old hour was billed in time; cluster 2's was never seen.
        f.add(1, old, 10).await;
        assert_eq!(
            f.closer.close(old + 2 * HOUR).await.unwrap().summary.billed,
            1
        );
        assert_eq!(f.billed(1, old).await, 5);
        // Days later, a backlog lands: growth of cluster 1's old hour, and cluster 2's hours.
        f.add(1, old, 5).await;
        f.add(2, old, 7).await;
        f.add(2, older, 0).await;
        let pass = f.closer.close(now).await.unwrap();
        assert!(pass.failed.is_empty(), "{:?}", pass.failed);
        assert_eq!((pass.summary.billed, pass.summary.adjusted), (2, 1));
        assert_eq!(
            f.billed(1, old).await,
            5 + 2,
            "an adjustment per grown dimension"
        );
        assert_eq!(f.billed(2, old).await, 5);
        assert_eq!(f.billed(2, older).await, 5);
        for i in [1, 2] {
            assert!(f
                .usage
                .unclosed(Uuid::from_u128(i))
                .await
                .unwrap()
                .is_empty());
        }
        // Nothing is left to do, and nothing is billed twice.
        let again = f.closer.close(now + 60).await.unwrap();
        assert_eq!((again.summary.billed, again.summary.adjusted), (0, 0));
    }

    /// A held hour stays unclosed, so it is retried, however old it gets.
    #[tokio::test]
    async fn a_held_hour_stays_unclosed_until_it_heals() {
        let mut f = Fixture::new(1);
        let hour = START + HOUR;
        let c = Uuid::from_u128(1);
        let billed = HourlyUsage {
            cluster_seconds: 3_600,
            bytes_in: 100,
            ..HourlyUsage::zero(c, hour)
        };
        let ledger = f.closer.ledger.clone();
        ledger
            .close_hour(&billed, &f.closer.rates, hour + HOUR)
            .await
            .unwrap();
        f.add(1, hour, 40).await;
        let late = hour + 5 * 24 * HOUR;
        assert_eq!(f.closer.close(late).await.unwrap().summary.held.len(), 1);
        assert_eq!(f.usage.unclosed(c).await.unwrap(), vec![hour]);
        f.add(1, hour, 70).await;
        let pass = f.closer.close(late + 60).await.unwrap();
        assert_eq!((pass.summary.adjusted, pass.summary.held.len()), (1, 0));
        assert!(f.usage.unclosed(c).await.unwrap().is_empty());
    }
}
